//! cairn's object-store checkpoint storage: S3, Google Cloud Storage, Azure Blob Storage, the
//! local filesystem and memory, through the [`object_store`] crate.
//!
//! It depends on `cairn-plugin-api` and crates.io crates only, never on another crate of
//! cairn's: it is the proof that a third party can build a backend from the API alone.
//!
//! A URL picks the store (`[storage.options] url = "s3://bucket/prefix"`), and checkpoints
//! take the filesystem backend's layout as keys under it:
//!
//! ```text
//! <url>/<job-id>/chk-<n>/_metadata     the commit point of checkpoint n
//! <url>/<job-id>/chk-<n>/<object>      its EXCLUSIVE state
//! <url>/<job-id>/shared/<object>       SHARED (incremental) state
//! <url>/<job-id>/taskowned/<object>    task-owned state
//! <target>/savepoint-<job6>-<hex12>/   a self-contained savepoint
//! ```
//!
//! Options: `url` (required: `s3://`, `gs://`, `az://`, `file:///dir` or `memory://`),
//! `savepoint-url` (the default savepoint target), `endpoint`, `region`, `access-key-id`,
//! `secret-access-key`, `session-token`, `service-account` (GCS), `allow-http`, `path-style`
//! (S3: path-style requests, the default, or virtual-hosted ones), `inline-threshold` (default
//! 20KiB, at most 1MiB), `part-size` (default 8MiB, 5MiB to 512MiB), `max-retries` (default 5,
//! at most 20), `retry-timeout` (default 30s), `request-timeout` (default 60s) and
//! `connect-timeout` (default 5s). Unset credentials come from the environment as the
//! `object_store` builders' `from_env` read it (`AWS_*`, `GOOGLE_*`, `AZURE_*`). The README has
//! the table.
//!
//! # Choices, and why
//!
//! - **The commit is a conditional create** (`PutMode::Create`, the `job` module). Two
//!   writers, even on two hosts, cannot both commit one checkpoint: the store lets one create
//!   `_metadata` and answers the other "already exists". Flink on S3 writes `_metadata` with a
//!   plain PUT and relies on there being one JobManager. The metadata is framed with a magic
//!   number, its length and a CRC32C, so a damaged object is `Corrupt`, not a wrong answer.
//! - **No request per small write** (the `stream` module). A stream buffers in memory: at or
//!   under the inline threshold it gives an inline handle and costs no request; up to one part
//!   it costs one PUT; above that, a multipart upload ships full parts in the background, a few
//!   at a time. Every stored handle carries the CRC32C of its bytes, and reads verify it.
//! - **Bounded retries.** `object_store` retries transient failures with backoff, bounded by
//!   `max-retries` and `retry-timeout`, and logs each retry; the logs reach the host like any
//!   plugin event. A checkpoint whose store is down fails in seconds, and the coordinator's own
//!   failure handling takes over.
//! - **The plugin owns its runtime** (the `store` module): a two-worker tokio runtime created at
//!   open. Storage calls block on it; nothing async crosses the boundary.
//! - **Locators are relative** to the URL, so a bucket can be copied or mirrored whole and its
//!   checkpoints still resolve; only savepoints, which live wherever their target was, carry
//!   their full place. Every locator, pointer and job id is parsed strictly (the `layout`
//!   module), so no key can climb out of its prefix.
//!
//! # Why not the filesystem backend on a mounted bucket
//!
//! A FUSE-mounted bucket pretends to have directories, rename and fsync; the filesystem
//! backend's crash-consistent commit depends on exactly those, and mounts emulate them with
//! copies and many requests. Speaking the object store's own language gives an atomic commit
//! (conditional create) and no directory calls at all.
//!
//! # What is absent
//!
//! Multipart uploads abandoned by a crashed process are not listed here (S3 lifecycle rules
//! remove them); garbage collection of orphaned objects and uncommitted `chk-*` prefixes is the
//! host's job, built on `list_objects` and `list_uncommitted`. Uncommitted locations with no
//! object are invisible (an object store has no empty directories), which is harmless.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod job;
mod layout;
mod metafile;
mod options;
mod storage;
mod store;
mod stream;

use cairn_plugin_api::{
    Capabilities, CheckpointStorage, Manifest, StaticManifest, StoragePlugin, StorageResult,
};

/// What every instance can do. `PERSISTENT` is added for every URL but `memory://`, and
/// `HIGHLY_AVAILABLE` for `s3://`, `gs://` and `az://`.
const COMMON_CAPABILITIES: Capabilities = Capabilities::SAVEPOINTS
    .union(Capabilities::SHARED_SCOPE)
    .union(Capabilities::TASK_OWNED)
    .union(Capabilities::STORED_HANDLES)
    .union(Capabilities::CORRUPT_FOR_TESTING);

/// The object-store storage plugin. The host loads it from the shared library through
/// [`cairn_plugin_api::export_storage_plugin!`]; tests and embedders can call it in-process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObjectStorePlugin;

const MANIFEST: StaticManifest = StaticManifest::new(
    "object-store",
    env!("CARGO_PKG_VERSION"),
    "checkpoints in S3, GCS or Azure Blob Storage (or file://, memory://) via object_store",
    COMMON_CAPABILITIES
        .union(Capabilities::PERSISTENT)
        .union(Capabilities::HIGHLY_AVAILABLE),
)
.with_test_options(
    "url = \"file://{scratch}/store\"\nsavepoint-url = \"file://{scratch}/savepoints\"\n",
);

impl StoragePlugin for ObjectStorePlugin {
    // The manifest as constants: the export macro writes it into the library's manifest
    // section, so the host finds this plugin without loading it (API 1.1).
    const STATIC_MANIFEST: Option<StaticManifest> = Some(MANIFEST);

    fn manifest() -> Manifest {
        MANIFEST.to_manifest()
    }

    fn open(options: &str) -> StorageResult<Box<dyn CheckpointStorage>> {
        let options = options::Options::parse(options)?;
        Ok(Box::new(storage::ObjStorage::open(options)?))
    }
}

cairn_plugin_api::export_storage_plugin!(ObjectStorePlugin);

#[cfg(test)]
mod tests;

/// The layout's parsers of untrusted strings, for the fuzz targets in `tests/fuzz`. Not an API:
/// it may change in any release.
#[doc(hidden)]
pub mod fuzzing {
    /// The place (printed) that `locator` names under the store URL `base`, or why either is
    /// refused.
    pub fn locator_place(base: &str, locator: &str) -> Result<String, String> {
        let base = crate::layout::Place::parse(base)?;
        crate::layout::locator_place(&base, locator)
            .map(|p| p.to_string())
            .map_err(|e| e.to_string())
    }

    /// The location place (printed) that `pointer` names, or why it is refused.
    pub fn pointer_place(pointer: &str) -> Result<String, String> {
        crate::layout::pointer_place(pointer)
            .map(|p| p.to_string())
            .map_err(|e| e.to_string())
    }

    /// Whether `id` is a job id this plugin accepts.
    pub fn job_id(id: &str) -> Result<(), String> {
        crate::layout::validate_job_id(id).map_err(|e| e.to_string())
    }
}
