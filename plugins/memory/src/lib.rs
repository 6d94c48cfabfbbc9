//! cairn's memory checkpoint storage: Flink's `JobManagerCheckpointStorage`, as the plugin kit
//! in inline-only mode.
//!
//! Every state stream is buffered in the host's memory and closes to an *inline* handle, so the
//! bytes travel inside the handle and the host stores them in the checkpoint metadata. A
//! completed checkpoint is nothing but its metadata, which this backend keeps in the storage
//! instance (the kit's [`MemStore`]), gone when the instance is dropped or the process exits.
//!
//! | Flink | here |
//! |---|---|
//! | `JobManagerCheckpointStorage` | [`MemoryPlugin`] |
//! | `new JobManagerCheckpointStorage(maxStateSize)` (default 5 MiB) | `max-state-size` (default 5 MiB, at most 1 GiB) |
//! | `state.checkpoints.dir` with JobManager storage | `checkpoint-dir`: metadata persisted, state inline |
//! | `state.savepoints.dir` | `savepoint-dir` |
//! | `MemoryCheckpointOutputStream` failing at close when too large | `CapacityExceeded` at close |
//!
//! With `checkpoint-dir`, metadata goes to `<checkpoint-dir>/<job-id>/chk-<n>/_metadata` through
//! the filesystem backend's store (same crash-consistent commit, same frame), pointers are
//! paths, and the instance is `PERSISTENT`: all state is inline, so a pointer resolves from a
//! fresh process. Savepoints always go to a directory (through the same store), because a
//! savepoint that dies with the process would be useless.
//!
//! # Why not keep large state in memory too
//!
//! Stored handles in a map would let state grow past the limit, but the state would still have
//! to be copied into metadata to survive anything, and the host's memory would grow with every
//! retained checkpoint. Flink draws the same line: large state belongs in the filesystem
//! backend.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::sync::Arc;

use cairn_plugin_api::{
    Capabilities, CheckpointStorage, Manifest, StaticManifest, StoragePlugin, StorageResult,
};
use cairn_plugin_kit::{
    options::{self, CommonSpec},
    Checkpoints, MemStore, Places, Settings,
};
use cairn_storage_fs::{Dirs, FsStore, DEFAULT_WRITE_BUFFER};

/// Flink's default for `JobManagerCheckpointStorage`: 5 MiB per state stream.
pub const DEFAULT_MAX_STATE_SIZE: u64 = 5 * 1024 * 1024;

/// The largest `max-state-size`: every byte is held in the host's memory and copied into the
/// metadata, so anything bigger belongs in the filesystem backend.
pub const MAX_MAX_STATE_SIZE: u64 = 1024 * 1024 * 1024;

/// What every instance can do; one with a checkpoint directory is also `PERSISTENT`.
const CAPABILITIES: Capabilities = Capabilities::SAVEPOINTS
    .union(Capabilities::SHARED_SCOPE)
    .union(Capabilities::TASK_OWNED);

/// The memory storage plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryPlugin;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Own {
    max_state_size: Option<toml::Value>,
    checkpoint_dir: Option<toml::Value>,
    savepoint_dir: Option<toml::Value>,
}

const MANIFEST: StaticManifest = StaticManifest::new(
    "memory",
    env!("CARGO_PKG_VERSION"),
    "state in the host's memory, gone when it exits (Flink's JobManager storage)",
    CAPABILITIES,
)
.with_test_options("savepoint-dir = \"{scratch}/savepoints\"\n")
.with_options(&[
    cairn_plugin_api::OptionSpec::new(
        "max-state-size",
        "5MiB",
        "the largest stream; a larger one fails at close with capacity exceeded; at most 1GiB",
    ),
    cairn_plugin_api::OptionSpec::no_default(
        "checkpoint-dir",
        "if set, completed metadata (which holds all state) is persisted in this directory, a \
         path or a file:// URL, and resolves from a new process",
    ),
    cairn_plugin_api::OptionSpec::no_default(
        "savepoint-dir",
        "the default savepoint target directory (savepoints always go to files)",
    ),
]);

impl StoragePlugin for MemoryPlugin {
    // The manifest as constants: the export macro writes it into the library's manifest
    // section, so the host finds this plugin without loading it (API 1.1).
    const STATIC_MANIFEST: Option<StaticManifest> = Some(MANIFEST);

    fn manifest() -> Manifest {
        MANIFEST.to_manifest()
    }

    fn validate(document: &str) -> StorageResult<()> {
        parse(document).map(drop)
    }

    fn open(document: &str) -> StorageResult<Box<dyn CheckpointStorage>> {
        let MemOptions {
            max_state_size,
            checkpoint_dir,
            savepoint_dir,
        } = parse(document)?;
        let dirs = Dirs {
            write_buffer: DEFAULT_WRITE_BUFFER as usize,
        };
        let (base, capabilities, location) = match checkpoint_dir {
            None => (
                MemStore::new().root("memory://"),
                CAPABILITIES,
                "memory".to_string(),
            ),
            Some(path) => {
                let location = format!("memory (metadata in {})", path.display());
                let root = FsStore::new(path, dirs.write_buffer).into_root();
                (root, CAPABILITIES | Capabilities::PERSISTENT, location)
            }
        };
        let places: Arc<dyn Places> = Arc::new(dirs);
        Ok(Box::new(Checkpoints::new(
            base,
            places,
            savepoint_dir,
            Settings {
                inline_threshold: max_state_size,
                stored: false,
                capabilities,
                location,
            },
        )))
    }
}

/// The options, checked.
struct MemOptions {
    max_state_size: u64,
    /// Where metadata persists: absolute, canonical if it exists (not made yet).
    checkpoint_dir: Option<std::path::PathBuf>,
    savepoint_dir: Option<String>,
}

/// Check an options document, creating nothing: what `open` and `validate` share.
fn parse(document: &str) -> StorageResult<MemOptions> {
    let (_, own): (_, Own) = options::parse(document, CommonSpec::NONE)?;
    let max_state_size = match &own.max_state_size {
        Some(v) => options::size("max-state-size", v, 1, MAX_MAX_STATE_SIZE)?,
        None => DEFAULT_MAX_STATE_SIZE,
    };
    let dir = |key: &str, v: &Option<toml::Value>| -> StorageResult<Option<String>> {
        v.as_ref().map(|v| options::string(key, v)).transpose()
    };
    let checkpoint_dir = dir("checkpoint-dir", &own.checkpoint_dir)?;
    let savepoint_dir = dir("savepoint-dir", &own.savepoint_dir)?
        .map(|d| {
            let path = cairn_plugin_kit::dir_path(&d, "storage.options.savepoint-dir")?;
            std::path::absolute(path)
                .map(|p| p.to_string_lossy().into_owned())
                .map_err(|e| {
                    cairn_plugin_api::StorageError::io(
                        format!("storage.options.savepoint-dir {d}"),
                        &e,
                    )
                })
        })
        .transpose()?;
    let checkpoint_dir = checkpoint_dir
        .map(|d| cairn_plugin_kit::base_dir(&d, "storage.options.checkpoint-dir"))
        .transpose()?;
    Ok(MemOptions {
        max_state_size,
        checkpoint_dir,
        savepoint_dir,
    })
}
