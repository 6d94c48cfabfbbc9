//! `example-dir`: a complete, small cairn storage plugin, written to be read in one sitting.
//!
//! It keeps checkpoints as plain files under one directory, the `root` option:
//!
//! ```text
//! <root>/<job-id>/chk-<n>/_metadata    the commit point of checkpoint n (absent until the commit)
//! <root>/<job-id>/chk-<n>/<file>       EXCLUSIVE state of checkpoint n
//! <root>/<job-id>/shared/<file>        SHARED (incremental) state
//! <root>/<job-id>/taskowned/<file>     task-owned state
//! ```
//!
//! `<file>` is a random UUID (32 hex digits). Streams of at most `inline-threshold` bytes never
//! reach the disk: their bytes travel inside the handle, and so inside the checkpoint metadata.
//!
//! # How the crate is laid out
//!
//! - this file: the plugin's entry point ([`ExamplePlugin`]), its manifest and its options, and
//!   the one line that exports it, [`cairn_plugin_api::export_storage_plugin!`];
//! - `layout`: every name on disk (job ids, locators, pointers) and how untrusted strings are
//!   checked before they become paths. No I/O;
//! - `storage`: the storage, job and checkpoint-location objects, which create, commit, list
//!   and delete files;
//! - `stream`: the output stream (write, close to a handle) and the input stream (read back,
//!   checking the checksum).
//!
//! # What a backend must guarantee, and where this one does it
//!
//! - **Inline or stored.** Nothing written gives no handle; at most `inline-threshold` bytes an
//!   inline handle; more a stored handle carrying a locator, the size and the CRC32C of the
//!   bytes (`stream`).
//! - **Checksums.** Reading a stored handle checks the size and the CRC32C before it reports the
//!   end of the stream, and a mismatch is a `Corrupt` error that names the handle. Wrong bytes
//!   are never returned as if they were right (`stream`).
//! - **One atomic commit.** The metadata is written to a temporary file, synced, and then
//!   hard-linked to `_metadata`. A hard link fails if `_metadata` exists, so a location commits
//!   at most once, even with two processes racing, and a reader sees either no `_metadata` or a
//!   complete one (`storage`).
//! - **Clean-up.** A stream dropped without taking its handle deletes its file; `discard`,
//!   `dispose` and `dispose_on_failure` are idempotent: something already gone is success.
//! - **Typed errors.** `NotFound`, `AlreadyExists`, `Corrupt`, `InvalidConfig`, ... each with a
//!   message that names the file, handle, pointer or option.
//!
//! # What is deliberately absent
//!
//! - **Savepoints.** `begin_savepoint` returns `Unsupported`, and the manifest does not claim the
//!   `SAVEPOINTS` capability, so `cairn plugins verify` skips the savepoint cases and says why.
//!   The bundled filesystem plugin (`plugins/filesystem`) shows how to add them.
//! - **A private error enum.** A larger plugin keeps one (with `thiserror`) and maps it into
//!   [`cairn_plugin_api::StorageError`] at its edge; this one builds `StorageError` values
//!   directly, which is enough for a few hundred lines.
//! - **Garbage collection.** Finding orphaned files is the host's job: it compares
//!   [`JobStorage::list_objects`](cairn_plugin_api::JobStorage::list_objects) with what completed
//!   checkpoints reference.
//!
//! It depends on `cairn-plugin-api` and ordinary crates only, and writes no `unsafe`.

mod layout;
mod storage;
mod stream;

use std::path::PathBuf;

use cairn_plugin_api::{
    parse_options, Capabilities, CheckpointStorage, Manifest, StaticManifest, StorageError,
    StoragePlugin, StorageResult,
};

/// What this backend can do. The manifest and every opened instance report the same set; the
/// conformance suite picks its cases from it.
const CAPABILITIES: Capabilities = Capabilities::PERSISTENT
    .union(Capabilities::SHARED_SCOPE)
    .union(Capabilities::TASK_OWNED)
    .union(Capabilities::STORED_HANDLES)
    .union(Capabilities::CORRUPT_FOR_TESTING);

/// The default `inline-threshold`: streams up to 16 KiB travel inside the metadata.
const DEFAULT_INLINE_THRESHOLD: u64 = 16 * 1024;

/// The largest `inline-threshold` accepted. Inline bytes live in the metadata, which the host
/// reads whole, so it must stay small.
const MAX_INLINE_THRESHOLD: u64 = 1024 * 1024;

/// The plugin. [`StoragePlugin`] is implemented on a unit struct: the host calls its two
/// associated functions, and everything else hangs off the storage object that `open` returns.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExamplePlugin;

/// The manifest, as constants: the export macro writes it into the library's manifest section,
/// so the host finds the plugin by name without loading it (API 1.1).
const MANIFEST: StaticManifest = StaticManifest::new(
    // The name users write in `[storage] plugin = "example-dir"`.
    "example-dir",
    env!("CARGO_PKG_VERSION"),
    "example third-party plugin: checkpoints as plain files under a root directory",
    CAPABILITIES,
)
// `cairn plugins verify` opens the plugin with these options when it is given none,
// replacing `{scratch}` with an empty temporary directory.
.with_test_options("root = \"{scratch}/example-dir\"\n");

impl StoragePlugin for ExamplePlugin {
    const STATIC_MANIFEST: Option<StaticManifest> = Some(MANIFEST);

    fn manifest() -> Manifest {
        MANIFEST.to_manifest()
    }

    fn open(options: &str) -> StorageResult<Box<dyn CheckpointStorage>> {
        let options = Options::parse(options)?;
        Ok(Box::new(storage::DirStorage::open(&options)?))
    }
}

// The one line that turns `ExamplePlugin` into a loadable plugin: it exports the API version
// probe and the root module the host looks up, and guards every call against panics.
cairn_plugin_api::export_storage_plugin!(ExamplePlugin);

/// The `[storage.options]` table. `deny_unknown_fields` makes a misspelt option an error that
/// names it; `kebab-case` matches the style of cairn's own config keys.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Options {
    /// The directory that holds every job's checkpoints. Created if missing; a relative path is
    /// taken from the host's current directory.
    root: PathBuf,
    /// Streams of at most this many bytes give inline handles (0: only empty streams, which
    /// give no handle at all).
    #[serde(default = "default_inline_threshold")]
    inline_threshold: u64,
}

fn default_inline_threshold() -> u64 {
    DEFAULT_INLINE_THRESHOLD
}

impl Options {
    /// Parse the options document and check the values serde cannot check.
    fn parse(document: &str) -> StorageResult<Self> {
        let options: Options = parse_options(document)?;
        if options.root.as_os_str().is_empty() {
            return Err(StorageError::InvalidConfig(
                "storage.options.root is empty; give the directory that should hold checkpoints"
                    .to_string(),
            ));
        }
        if options.inline_threshold > MAX_INLINE_THRESHOLD {
            return Err(StorageError::InvalidConfig(format!(
                "storage.options.inline-threshold = {} is above the maximum of {MAX_INLINE_THRESHOLD} bytes",
                options.inline_threshold
            )));
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    //! In-process tests: the crate is also an `rlib`, so the plugin can be called directly,
    //! without a host. `cairn plugins verify` covers the same code through the real loading
    //! path.

    use cairn_plugin_api::{
        read_handle_fully, ErrorKind, Scope, StateHandle, StorageError, StoragePlugin,
    };

    use super::ExamplePlugin;

    fn open(root: &std::path::Path) -> Box<dyn cairn_plugin_api::CheckpointStorage> {
        let options = format!(
            "root = {:?}\ninline-threshold = 100\n",
            root.display().to_string()
        );
        ExamplePlugin::open(&options).expect("open")
    }

    #[test]
    fn options_are_checked_and_named() {
        let err = ExamplePlugin::open("root = \"/tmp/x\"\ninline-treshold = 5\n").err();
        assert!(
            matches!(&err, Some(StorageError::InvalidConfig(m)) if m.contains("inline-treshold")),
            "{err:?}"
        );
        let err = ExamplePlugin::open("").err();
        assert!(
            matches!(&err, Some(StorageError::InvalidConfig(m)) if m.contains("root")),
            "{err:?}"
        );
        let err = ExamplePlugin::open("root = \"/tmp/x\"\ninline-threshold = 2000000\n").err();
        assert!(
            matches!(&err, Some(StorageError::InvalidConfig(m)) if m.contains("inline-threshold")),
            "{err:?}"
        );
    }

    #[test]
    fn a_checkpoint_commits_once_and_resolves_from_a_new_instance() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path());
        let job = storage.job("job-1").unwrap();
        let location = job.begin_checkpoint(7).unwrap();

        let mut small = location.create_stream(Scope::Exclusive).unwrap();
        small.write(b"tiny").unwrap();
        let small = small.close_and_get_handle().unwrap().unwrap();
        assert!(small.is_inline());

        let state = vec![42u8; 1000];
        let mut big = location.create_stream(Scope::Shared).unwrap();
        big.write(&state[..300]).unwrap();
        big.write(&state[300..]).unwrap();
        assert_eq!(big.pos().unwrap(), 1000);
        let big = big.close_and_get_handle().unwrap().unwrap();
        assert!(!big.is_inline());

        assert!(job.list_completed().unwrap().is_empty());
        let completed = location.commit(b"metadata").unwrap();
        let again = location.commit(b"other").unwrap_err();
        assert_eq!(again.kind(), ErrorKind::AlreadyExists);

        let fresh = open(dir.path());
        assert_eq!(
            fresh.resolve(&completed.pointer).unwrap().metadata,
            b"metadata"
        );
        assert_eq!(read_handle_fully(fresh.as_ref(), &big).unwrap(), state);
        let listed = fresh.job("job-1").unwrap().list_completed().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0], completed);

        fresh.dispose(&completed.pointer).unwrap();
        fresh.dispose(&completed.pointer).unwrap();
        let gone = fresh.resolve(&completed.pointer).unwrap_err();
        assert_eq!(gone.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn a_flipped_bit_is_corrupt_naming_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path());
        let job = storage.job("job-1").unwrap();
        let mut stream = job.create_task_owned_stream().unwrap();
        stream.write(&[7u8; 500]).unwrap();
        let handle = stream.close_and_get_handle().unwrap().unwrap();
        storage.corrupt_for_testing(&handle).unwrap();

        let mut input = storage.open_handle(&handle).unwrap();
        let mut buf = [0u8; 64];
        let err = loop {
            match input.read(&mut buf) {
                Ok(0) => panic!("corrupt bytes read to a clean end"),
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        let StateHandle::Stored { locator, .. } = &handle else {
            unreachable!("500 bytes are above the threshold")
        };
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.message().contains(locator.as_str()), "{err}");
    }

    #[test]
    fn a_dropped_stream_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path());
        let job = storage.job("job-1").unwrap();
        let location = job.begin_checkpoint(1).unwrap();
        let mut stream = location.create_stream(Scope::Exclusive).unwrap();
        stream.write(&[1u8; 5000]).unwrap();
        assert_eq!(job.list_objects().unwrap().len(), 1);
        drop(stream);
        assert!(job.list_objects().unwrap().is_empty());
    }
}
