//! cairn's filesystem checkpoint storage: Flink's `FileSystemCheckpointStorage` as a plugin.
//!
//! Checkpoints go to a directory on a local or mounted filesystem:
//!
//! ```text
//! <dir>/<job-id>/chk-<n>/_metadata     the commit point of checkpoint n
//! <dir>/<job-id>/chk-<n>/<file>        its EXCLUSIVE state
//! <dir>/<job-id>/shared/<file>         SHARED (incremental) state
//! <dir>/<job-id>/taskowned/<file>      task-owned state
//! <target>/savepoint-<job6>-<hex12>/   a self-contained savepoint
//! ```
//!
//! Options (`[storage.options]`): `dir` (required; relative paths are taken from the current
//! directory and it is created if missing), `savepoint-dir` (the default savepoint target),
//! `inline-threshold` (default 20KiB, at most 1MiB; 0 means only empty state is inline) and
//! `write-buffer` (default 4KiB, 512B to 64MiB). Sizes are integers (bytes) or strings such as
//! `"20KiB"`.
//!
//! # Choices, and why
//!
//! - **A crash-consistent commit** ([`cairn_storage_shared::metafile`]). Flink writes `_metadata` in place, so a crash
//!   can leave a torn file that looks complete. Here the metadata is framed (magic, length,
//!   CRC32C), written to a temporary file, fsynced, and hard-linked into place, which fails if
//!   `_metadata` exists: a location commits at most once, even between two processes. Fsync
//!   errors are fatal and never retried.
//! - **Checksums on every stored byte.** Flink does not check state files. Here each stored
//!   handle carries the CRC32C of its bytes, computed while writing, and reading verifies size
//!   and checksum before it reports end-of-file (the `stream` module).
//! - **Small state stays in memory and inside the metadata.** As in Flink, a stream buffers
//!   `max(write-buffer, inline-threshold)` bytes and creates its file only when that overflows,
//!   so a stream at or under the threshold never touches the disk and gives an inline handle.
//! - **No directories on the hot path.** Base directories are created when a job is opened;
//!   creating a stream does no I/O at all.
//! - **Locators that cannot escape.** A handle comes back from metadata that may have been
//!   edited, so its locator is parsed strictly on every use (the `layout` module): state under the base
//!   directory is named relative to it (`<job>/chk-<n>/<file>`), savepoint state by an absolute
//!   path whose shape only this plugin produces. Job ids are restricted to safe names.
//! - **Narrow deletes.** `dispose` and `dispose_on_failure` remove only files this plugin
//!   writes, `_metadata` first, and refuse a directory that holds anything else.
//!
//! # Why not `std::fs` paths in handles, or an object-store abstraction
//!
//! Absolute paths in handles (Flink's choice) would let a tampered handle read or delete any
//! file, and would break when the base directory moves; relative locators avoid both. An
//! object-store abstraction over the local filesystem would lose what makes this backend
//! trustworthy (fsync, hard-link commits, directory fsync), and the object-store plugin covers
//! `file://` URLs for anyone who wants that model.
//!
//! # What is absent
//!
//! Garbage collection of orphaned files and uncommitted `chk-*` directories is the host's job
//! (it builds on `list_completed` and the layout above); shared state is discarded only through
//! handles, as the host's shared-state registry decides. Windows paths are not tested.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod job;
mod layout;
mod options;
mod storage;
mod stream;

use cairn_plugin_api::{
    Capabilities, CheckpointStorage, Manifest, StaticManifest, StoragePlugin, StorageResult,
};

/// What this backend can do; the manifest and every opened instance report the same set.
const CAPABILITIES: Capabilities = Capabilities::PERSISTENT
    .union(Capabilities::SAVEPOINTS)
    .union(Capabilities::SHARED_SCOPE)
    .union(Capabilities::TASK_OWNED)
    .union(Capabilities::STORED_HANDLES)
    .union(Capabilities::CORRUPT_FOR_TESTING);

/// The filesystem storage plugin. The host loads it from the shared library through
/// [`cairn_plugin_api::export_storage_plugin!`]; tests and embedders can call it in-process.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsPlugin;

const MANIFEST: StaticManifest = StaticManifest::new(
    "filesystem",
    env!("CARGO_PKG_VERSION"),
    "checkpoints on a local or mounted filesystem (Flink's FileSystem storage)",
    CAPABILITIES,
)
.with_test_options("dir = \"{scratch}/checkpoints\"\nsavepoint-dir = \"{scratch}/savepoints\"\n");

impl StoragePlugin for FsPlugin {
    // The manifest as constants: the export macro writes it into the library's manifest
    // section, so the host finds this plugin without loading it (API 1.1).
    const STATIC_MANIFEST: Option<StaticManifest> = Some(MANIFEST);

    fn manifest() -> Manifest {
        MANIFEST.to_manifest()
    }

    fn open(options: &str) -> StorageResult<Box<dyn CheckpointStorage>> {
        let options = options::Options::parse(options)?;
        Ok(Box::new(storage::FsStorage::open(options)?))
    }
}

cairn_plugin_api::export_storage_plugin!(FsPlugin);

/// The layout's parsers of untrusted strings, for the fuzz targets in `tests/fuzz`. Not an API:
/// it may change in any release.
#[doc(hidden)]
pub mod fuzzing {
    use std::path::{Path, PathBuf};

    /// The file `locator` names under `base`, or why it is refused.
    pub fn locator_path(base: &Path, locator: &str) -> Result<PathBuf, String> {
        crate::layout::locator_path(base, locator).map_err(|e| e.to_string())
    }

    /// The location directory `pointer` names, or why it is refused.
    pub fn pointer_dir(pointer: &str) -> Result<PathBuf, String> {
        crate::layout::pointer_dir(pointer).map_err(|e| e.to_string())
    }

    /// Whether `id` is a job id this plugin accepts.
    pub fn job_id(id: &str) -> Result<(), String> {
        crate::layout::validate_job_id(id).map_err(|e| e.to_string())
    }
}
