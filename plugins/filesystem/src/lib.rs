//! cairn's filesystem checkpoint storage: Flink's `FileSystemCheckpointStorage`, as the plugin
//! kit over a directory ([`FsStore`]).
//!
//! ```text
//! <dir>/<job-id>/chk-<n>/_metadata     the commit point of checkpoint n
//! <dir>/<job-id>/chk-<n>/<file>        its EXCLUSIVE state
//! <dir>/<job-id>/shared/<file>         SHARED (incremental) state
//! <dir>/<job-id>/taskowned/<file>      task-owned state
//! <target>/savepoint-<job-id>-<hex12>/ a self-contained savepoint
//! ```
//!
//! Options (`[storage.options]`): `dir` (required; relative paths are taken from the current
//! directory, and it is created if missing), `savepoint-dir` (the default savepoint target),
//! `inline-threshold` (default 20KiB, at most 1MiB; 0 means only empty state is inline) and
//! `write-buffer` (default 4KiB, 512B to 64MiB). Sizes are integers (bytes) or strings such as
//! `"20KiB"`.
//!
//! Everything a backend must do (streams, checksums, the commit, listings, pointers) is the
//! kit's; this crate adds what a directory needs: a crash-consistent commit (temporary file,
//! fsync, no-replace hard link, directory fsync), fsync of every state file and of the
//! directories before a commit, and paths that never follow a symbolic link (the `store`
//! module has the details).
//!
//! # Why not the object-store plugin's `file://`
//!
//! `object_store`'s local filesystem has neither the directory fsyncs nor a symlink-free walk;
//! this backend is the one to trust with a local disk, and `file://` is there for people who
//! want one configuration shape for local and cloud storage.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod store;

use std::sync::Arc;

use cairn_plugin_api::{
    Capabilities, CheckpointStorage, Manifest, OptionSpec, StaticManifest, StorageError,
    StoragePlugin, StorageResult,
};
use cairn_plugin_kit::{
    options::{self, CommonSpec},
    Checkpoints, Places, Root, Settings,
};

pub use cairn_plugin_kit::local_dir as open_dir;
pub use store::FsStore;

/// What this backend can do; the manifest and every opened instance report the same set.
pub const CAPABILITIES: Capabilities =
    cairn_plugin_kit::CAPABILITIES.union(Capabilities::PERSISTENT);

/// Default of `write-buffer`: Flink's `state.storage.fs.write-buffer-size`.
pub const DEFAULT_WRITE_BUFFER: u64 = 4 * 1024;
const MIN_WRITE_BUFFER: u64 = 512;
const MAX_WRITE_BUFFER: u64 = 64 * 1024 * 1024;

/// The filesystem storage plugin. The host loads it from `libcairn_storage_fs.so` (the
/// `cdylib` crate next to this one); tests, benchmarks and other plugins use it as a library.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsPlugin;

/// The plugin's own options, besides the kit's `inline-threshold`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Own {
    dir: Option<toml::Value>,
    savepoint_dir: Option<toml::Value>,
    write_buffer: Option<toml::Value>,
}

/// Directories by path, as the kit's [`Places`]: savepoint targets, and the places that
/// pointers and savepoint locators name.
#[derive(Debug, Clone, Copy)]
pub struct Dirs {
    /// The buffer of each file writer.
    pub write_buffer: usize,
}

impl Places for Dirs {
    fn open(&self, place: &str, create: bool) -> StorageResult<Root> {
        Ok(FsStore::new(open_dir(place, create, "directory")?, self.write_buffer).into_root())
    }
}

const MANIFEST: StaticManifest = StaticManifest::new(
    "filesystem",
    env!("CARGO_PKG_VERSION"),
    "checkpoints on a local or mounted filesystem (Flink's FileSystem storage)",
    CAPABILITIES,
)
.with_test_options("dir = \"{scratch}/checkpoints\"\nsavepoint-dir = \"{scratch}/savepoints\"\n")
.with_options(&[
    OptionSpec::no_default(
        "dir",
        "required: the checkpoint base directory, a path or a file:// URL; made when the first \
         checkpoint is written",
    ),
    OptionSpec::no_default(
        "savepoint-dir",
        "the default savepoint target directory, a path or a file:// URL",
    ),
    options::INLINE_THRESHOLD,
    OptionSpec::new(
        "write-buffer",
        "4KiB",
        "the buffer of each file writer; 512B to 64MiB",
    ),
]);

impl StoragePlugin for FsPlugin {
    // The manifest as constants: the export macro writes it into the library's manifest
    // section, so the host finds this plugin without loading it (API 1.1).
    const STATIC_MANIFEST: Option<StaticManifest> = Some(MANIFEST);

    fn manifest() -> Manifest {
        MANIFEST.to_manifest()
    }

    fn open(document: &str) -> StorageResult<Box<dyn CheckpointStorage>> {
        Ok(Box::new(open(document)?))
    }

    fn validate(document: &str) -> StorageResult<()> {
        parse(document).map(drop)
    }
}

/// The options, checked.
struct FsOptions {
    common: options::Common,
    /// The base directory: absolute, and canonical if it exists (not made yet).
    base: std::path::PathBuf,
    savepoint_dir: Option<String>,
    write_buffer: usize,
}

/// Check an options document, creating nothing: what `open` and `validate` share.
fn parse(document: &str) -> StorageResult<FsOptions> {
    let (common, own): (_, Own) = options::parse(document, CommonSpec::ALL)?;
    let dir = options::string(
        "dir",
        own.dir
            .as_ref()
            .ok_or_else(|| options::missing("dir", "set it to the checkpoint base directory"))?,
    )?;
    let savepoint_dir = own
        .savepoint_dir
        .as_ref()
        .map(|v| options::string("savepoint-dir", v))
        .transpose()?;
    let write_buffer = match &own.write_buffer {
        Some(v) => options::size("write-buffer", v, MIN_WRITE_BUFFER, MAX_WRITE_BUFFER)?,
        None => DEFAULT_WRITE_BUFFER,
    } as usize;
    // Not made here: the store makes it with the first file, so opening to read or to check
    // creates nothing.
    let base = cairn_plugin_kit::base_dir(&dir, "storage.options.dir")?;
    // Relative savepoint targets are taken from the current directory now, not at each use.
    let savepoint_dir = savepoint_dir
        .map(|d| {
            let path = cairn_plugin_kit::dir_path(&d, "storage.options.savepoint-dir")?;
            std::path::absolute(path)
                .map(|p| p.to_string_lossy().into_owned())
                .map_err(|e| StorageError::io(format!("storage.options.savepoint-dir {d}"), &e))
        })
        .transpose()?;
    Ok(FsOptions {
        common,
        base,
        savepoint_dir,
        write_buffer,
    })
}

/// Open the storage an options document describes.
pub fn open(document: &str) -> StorageResult<Checkpoints> {
    let FsOptions {
        common,
        base,
        savepoint_dir,
        write_buffer,
    } = parse(document)?;
    tracing::debug!(base = %base.display(), "filesystem checkpoint storage opened");
    Ok(Checkpoints::new(
        FsStore::new(base, write_buffer).into_root(),
        Arc::new(Dirs { write_buffer }),
        savepoint_dir,
        Settings {
            inline_threshold: common.inline_threshold,
            stored: true,
            capabilities: CAPABILITIES,
            location: String::new(),
        },
    ))
}
