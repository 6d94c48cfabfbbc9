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
//! `savepoint-url` (the default savepoint target), `endpoint`, S3's `region`, `access-key-id`,
//! `secret-access-key`, `session-token` and `path-style` (path-style requests, the default, or
//! virtual-hosted ones), Azure's `account`, `access-key`, `connection-string` and
//! `use-emulator`, GCS's `service-account` and `anonymous`, `allow-http`, `inline-threshold` (default
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

mod blob;
mod layout;
mod options;
mod store;

use std::sync::Arc;

use cairn_plugin_api::{
    Capabilities, CheckpointStorage, Manifest, OptionSpec, StaticManifest, StoragePlugin,
    StorageResult,
};
use cairn_plugin_kit::{Checkpoints, Places, Settings};
use object_store::ObjectStore;

pub use blob::{ObjPlaces, ObjStore, MAX_PARTS_IN_FLIGHT, PREFETCH_CHUNKS};

/// The object-store storage plugin. The host loads it from `libcairn_storage_object.so` (the
/// `cdylib` crate next to this one); tests and the benchmark baseline use it as a library.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObjectStorePlugin;

const MANIFEST: StaticManifest = StaticManifest::new(
    "object-store",
    env!("CARGO_PKG_VERSION"),
    "checkpoints in S3, GCS or Azure Blob Storage (or file://, memory://) via object_store",
    cairn_plugin_kit::CAPABILITIES
        .union(Capabilities::PERSISTENT)
        .union(Capabilities::HIGHLY_AVAILABLE),
)
.with_test_options(
    "url = \"file://{scratch}/store\"\nsavepoint-url = \"file://{scratch}/savepoints\"\n",
)
.with_options(&[
    OptionSpec::no_default(
        "url",
        "required: where checkpoints go, s3://, gs://, az://, file:// or memory:// and a prefix",
    ),
    OptionSpec::no_default(
        "savepoint-url",
        "the default savepoint target: a URL in the same kind of store, or a local directory",
    ),
    OptionSpec::no_default(
        "endpoint",
        "s3, gs, az: the service's URL, e.g. http://127.0.0.1:8333; on az the blob service URL \
         (Azurite: http://127.0.0.1:10000/devstoreaccount1); on gs it needs service-account or \
         anonymous (default: the service's)",
    ),
    OptionSpec::no_default(
        "region",
        "s3: the signing region (default: from the environment)",
    ),
    OptionSpec::no_default(
        "access-key-id",
        "s3: with secret-access-key, both or neither (default: from the environment)",
    ),
    OptionSpec::no_default(
        "secret-access-key",
        "s3: with access-key-id (default: from the environment)",
    ),
    OptionSpec::no_default("session-token", "s3: temporary credentials"),
    OptionSpec::no_default(
        "account",
        "az: the storage account name (default: from the environment)",
    ),
    OptionSpec::no_default(
        "access-key",
        "az: the account key, base64 (default: from the environment)",
    ),
    OptionSpec::no_default(
        "connection-string",
        "az: an Azure connection string (AccountName, AccountKey, BlobEndpoint or \
         DefaultEndpointsProtocol and EndpointSuffix, or UseDevelopmentStorage=true), instead \
         of account, access-key and endpoint",
    ),
    OptionSpec::new(
        "use-emulator",
        "false",
        "az: Azurite at http://127.0.0.1:10000 with its well-known account and key, unless \
         account, access-key or endpoint say otherwise",
    ),
    OptionSpec::no_default(
        "service-account",
        "gs: path to a service-account JSON key (default: from the environment)",
    ),
    OptionSpec::new(
        "anonymous",
        "false",
        "gs: send no credentials (a public bucket, or an emulator)",
    ),
    OptionSpec::new(
        "allow-http",
        "false",
        "s3, gs, az: allow plain http:// endpoints",
    ),
    OptionSpec::new(
        "path-style",
        "true",
        "s3: path-style requests (endpoint/bucket/key); false for virtual-hosted",
    ),
    cairn_plugin_kit::options::INLINE_THRESHOLD,
    OptionSpec::new(
        "part-size",
        "8MiB",
        "a stream buffers up to this much, then uploads parts of this size; 5MiB to 512MiB",
    ),
    OptionSpec::new("max-retries", "5", "retries of one request, 0 to 20"),
    OptionSpec::new(
        "retry-timeout",
        "30s",
        "no retry starts after this long; at most 5m",
    ),
    OptionSpec::new("request-timeout", "60s", "one request's timeout"),
    OptionSpec::new("connect-timeout", "5s", "the connection timeout"),
]);

impl StoragePlugin for ObjectStorePlugin {
    // The manifest as constants: the export macro writes it into the library's manifest
    // section, so the host finds this plugin without loading it (API 1.1).
    const STATIC_MANIFEST: Option<StaticManifest> = Some(MANIFEST);

    fn manifest() -> Manifest {
        MANIFEST.to_manifest()
    }

    fn open(document: &str) -> StorageResult<Box<dyn CheckpointStorage>> {
        Ok(Box::new(open(document)?))
    }

    /// The options' own rules (unknown options, options of another scheme, ranges), and the
    /// client built from them; no request is made and no runtime is started.
    fn validate(document: &str) -> StorageResult<()> {
        store::Stores::open(options::Options::parse(document)?).map(drop)
    }
}

/// Open the storage an options document describes: start the runtime and build the storage
/// URL's client. No request is made: a wrong endpoint or credential shows at the first call
/// that needs the store.
pub fn open(document: &str) -> StorageResult<Checkpoints> {
    let options = options::Options::parse(document)?;
    let mut capabilities = cairn_plugin_kit::CAPABILITIES;
    if options.url.scheme != layout::Scheme::Memory {
        capabilities |= Capabilities::PERSISTENT;
    }
    if options.url.scheme.is_cloud() {
        capabilities |= Capabilities::HIGHLY_AVAILABLE;
    }
    let url = options.url.clone();
    let savepoint_url = options.savepoint_url.as_ref().map(|p| p.to_string());
    let inline_threshold = options.inline_threshold;
    let ctx = Arc::new(blob::Ctx {
        part_size: usize::try_from(options.part_size).unwrap_or(usize::MAX),
        stores: store::Stores::open(options)?,
        rt: store::Runtime::start()?,
    });
    let places = ObjPlaces { ctx };
    let base = places.open_place(url.clone())?;
    tracing::debug!(url = %url.url(), "object-store checkpoint storage opened");
    let places: Arc<dyn Places> = Arc::new(places);
    Ok(Checkpoints::new(
        base,
        places,
        savepoint_url,
        Settings {
            inline_threshold,
            stored: true,
            capabilities,
            location: url.url(),
        },
    ))
}

/// The client this plugin builds for an options document, for a baseline that must talk to the
/// same store the same way (`cairn bench storage`): the `object_store` client of the `url`,
/// the key prefix under it, and the part size.
pub fn client(document: &str) -> StorageResult<(Arc<dyn ObjectStore>, String, u64)> {
    let options = options::Options::parse(document)?;
    let url = options.url.clone();
    let part_size = options.part_size;
    let store = store::Stores::open(options)?.for_place(&url)?;
    Ok((store, url.prefix.clone(), part_size))
}

/// The URL and path parser of untrusted strings, for the fuzz targets in `tests/fuzz`. Not an
/// API: it may change in any release.
#[doc(hidden)]
pub mod fuzzing {
    /// The place `s` names, as (scheme, bucket, key prefix), or why it is refused.
    pub fn place(s: &str) -> Result<(String, String, String), String> {
        crate::layout::Place::parse(s).map(|p| (p.scheme.name().to_string(), p.bucket, p.prefix))
    }
}
