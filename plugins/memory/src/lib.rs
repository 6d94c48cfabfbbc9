//! cairn's memory checkpoint storage: Flink's `JobManagerCheckpointStorage` as a plugin.
//!
//! # What it does
//!
//! Every state stream is buffered in the host's memory and closes to an *inline* handle, so the
//! bytes travel inside the handle and the host stores them in the checkpoint metadata. A
//! completed checkpoint is therefore nothing but its metadata, which this backend keeps in the
//! storage instance (a map per job). It is gone when the instance is dropped or the process
//! exits, exactly like Flink's JobManager storage keeps checkpoints on the JobManager heap.
//!
//! | Flink | here |
//! |---|---|
//! | `JobManagerCheckpointStorage` | [`MemoryPlugin`], opened into a storage instance |
//! | `new JobManagerCheckpointStorage(maxStateSize)` (default 5 MiB) | `storage.options.max-state-size` (default 5 MiB, at most 1 GiB) |
//! | `state.checkpoints.dir` with JobManager storage (metadata persisted, state inline) | `storage.options.checkpoint-dir` |
//! | `state.savepoints.dir` | `storage.options.savepoint-dir` |
//! | `MemoryCheckpointOutputStream` failing at close when too large | `CapacityExceeded` at close |
//! | `MemoryBackendCheckpointStorageAccess` | the per-job access handed out by `job()` |
//!
//! # Choices
//!
//! - **Inline only.** The inline threshold equals `max-state-size`: a stream either fits and is
//!   inline, or fails at close with `CapacityExceeded` naming its size, the limit and the option
//!   to raise. The backend never produces stored handles, so it has no files to garbage-collect
//!   and no checksums of its own to keep: inline bytes are covered by the metadata's checksum.
//!   A stream that passes the limit stops buffering at once, so a runaway writer does not eat
//!   the host's memory, but its writes keep succeeding (as in Flink) and the error comes at close.
//! - **Metadata on disk only if asked.** With `checkpoint-dir`, a commit also writes
//!   `<checkpoint-dir>/<job-id>/chk-<n>/_metadata` with the filesystem backend's crash-consistent
//!   commit (and file format), and the pointer is that directory. Since all state is inline in the metadata, such
//!   a pointer resolves from a fresh process, so the instance reports itself `PERSISTENT`. The
//!   directory is then the truth: listing reads it, and checkpoint ids continue after a restart.
//!   Without it, pointers look like `memory:<job-id>/chk-<n>` and mean nothing to another
//!   instance.
//! - **Savepoints always go to a directory** (`savepoint-<job>-<random>/_metadata`), because a
//!   savepoint that dies with the process would be useless. They are self-contained: their
//!   state is inline in their `_metadata`.
//! - **No statics.** All state hangs off the storage instance, so two instances share nothing
//!   and tests can open as many as they like.
//!
//! # Why not keep large state in memory too
//!
//! Keeping stored handles in a map would let state grow past the limit, but the state would
//! still have to be copied into metadata to survive anything, and the host's memory would grow
//! with every retained checkpoint. Flink draws the same line: large state belongs in the
//! filesystem backend.

#![warn(missing_docs)]

mod job;
mod location;
mod options;
mod persist;
mod pointer;
mod storage;
mod stream;

use cairn_plugin_api::{
    Capabilities, CheckpointStorage, Manifest, StaticManifest, StoragePlugin, StorageResult,
};

pub use options::{DEFAULT_MAX_STATE_SIZE, MAX_MAX_STATE_SIZE};

/// What every memory storage instance can do; an instance with a checkpoint directory is also
/// `PERSISTENT`.
const MANIFEST_CAPABILITIES: Capabilities = Capabilities::SAVEPOINTS
    .union(Capabilities::SHARED_SCOPE)
    .union(Capabilities::TASK_OWNED);

/// The memory storage plugin. Open it with the `[storage.options]` table:
///
/// ```toml
/// max-state-size = "5MiB"          # per stream: bytes, or a size ("5MiB"; "5MB" is 5,000,000)
/// checkpoint-dir = "/var/cairn/chk" # optional: persist metadata (then pointers are paths)
/// savepoint-dir = "/var/cairn/sp"   # optional: default savepoint target
/// ```
pub struct MemoryPlugin;

const MANIFEST: StaticManifest = StaticManifest::new(
    "memory",
    env!("CARGO_PKG_VERSION"),
    "state in the host's memory, gone when it exits (Flink's JobManager storage)",
    MANIFEST_CAPABILITIES,
)
.with_test_options("savepoint-dir = \"{scratch}/savepoints\"\n");

impl StoragePlugin for MemoryPlugin {
    // The manifest as constants: the export macro writes it into the library's manifest
    // section, so the host finds this plugin without loading it (API 1.1).
    const STATIC_MANIFEST: Option<StaticManifest> = Some(MANIFEST);

    fn manifest() -> Manifest {
        MANIFEST.to_manifest()
    }

    fn open(options: &str) -> StorageResult<Box<dyn CheckpointStorage>> {
        let config = options::Config::parse(options)?;
        tracing::debug!("memory storage opened: {config:?}");
        Ok(Box::new(storage::MemoryStorage::new(config)))
    }
}

cairn_plugin_api::export_storage_plugin!(MemoryPlugin);
