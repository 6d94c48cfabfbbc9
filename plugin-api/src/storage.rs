//! The safe traits a storage plugin implements (layer 2), and that the host uses for linked-in
//! and loaded backends alike.
//!
//! The shapes follow Flink: a [`CheckpointStorage`] gives per-job access ([`JobStorage`]), which
//! gives checkpoint and savepoint locations ([`CheckpointLocation`]), which give output streams
//! ([`OutputStream`]). Every method of API 1.0 is required: there are no default methods for a
//! wrapper to fall back to silently. Methods appended in a later minor version have a provided
//! default that returns `Unsupported` (see `version.rs` for the rule), which is also what the
//! host gets from an older plugin that lacks them. [`StoragePlugin::STATIC_MANIFEST`] is a
//! constant with a default, and its absence has an explicit, documented meaning (the host
//! probes the library instead).

use crate::{
    error::{StorageError, StorageResult},
    handle::{Scope, StateHandle},
    manifest::{Capabilities, Manifest, StaticManifest},
};

/// The entry point of a plugin. Implement it on a unit struct and pass that struct to
/// [`export_storage_plugin!`](crate::export_storage_plugin).
pub trait StoragePlugin: 'static {
    /// The manifest as constants, which the export macro writes into the library's manifest
    /// section, so a host lists the search path and finds this plugin by name without loading
    /// it, and loads it only when it is used. `None` (the default, and every plugin written for
    /// API 1.0) writes an empty section: a host then loads the library to call
    /// [`StoragePlugin::manifest`], which works but runs the library's initialisers whenever any
    /// plugin is looked up. When set, `manifest()` must return the same manifest (return
    /// [`StaticManifest::to_manifest`]); a host refuses a library whose two manifests differ.
    ///
    /// Since API 1.1.
    const STATIC_MANIFEST: Option<StaticManifest> = None;

    /// The plugin's identity card. Called before any storage call; must not fail or block.
    fn manifest() -> Manifest;

    /// Open a storage instance with the `[storage.options]` table, given as a TOML document
    /// (parse it with [`parse_options`](crate::parse_options)). Reject unknown or invalid options
    /// with [`StorageError::InvalidConfig`] naming the option.
    fn open(options: &str) -> StorageResult<Box<dyn CheckpointStorage>>;

    /// Check an options document with the same rules as [`StoragePlugin::open`], with no side
    /// effect on storage: nothing is created, written or removed (no directory, no bucket), so
    /// `cairn config check` can say "`run` will start" about a file. Checks that need the
    /// storage itself (reachability, credentials) belong to `open`, not here.
    ///
    /// Since API 1.1. The default answers `Unsupported`, as the host does for a 1.0 plugin.
    fn validate(options: &str) -> StorageResult<()> {
        let _ = options;
        Err(crate::version::unsupported_since(
            crate::version::API_1_1,
            "validate",
        ))
    }
}

/// What an opened storage instance reports about its configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StorageInfo {
    /// The capabilities of this instance, which may be narrower than the manifest's (for example
    /// the memory backend is persistent only when a checkpoint directory is configured).
    pub capabilities: Capabilities,
    /// Streams of at most this many bytes give inline handles.
    pub inline_threshold: u64,
    /// Streams larger than this fail with `CapacityExceeded` at close, if there is a limit.
    pub max_state_size: Option<u64>,
    /// Where checkpoints go, for people: a directory, a URL.
    pub location: String,
}

/// A checkpoint whose metadata commit has completed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CompletedCheckpoint {
    /// The checkpoint id.
    pub checkpoint_id: u64,
    /// The external pointer: [`CheckpointStorage::resolve`] turns it back into the metadata.
    pub pointer: String,
}

/// The metadata of a completed checkpoint, found from its pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCheckpoint {
    /// The pointer, normalised by the backend.
    pub pointer: String,
    /// The exact bytes given to [`CheckpointLocation::commit`].
    pub metadata: Vec<u8>,
}

/// An opened storage backend. Thread-safe: many threads create streams at once.
pub trait CheckpointStorage: Send + Sync {
    /// This instance's configuration.
    fn info(&self) -> StorageInfo;

    /// Per-job access. Creates the job's base locations (once); streams never create
    /// directories. Job ids that could escape the storage root are `InvalidConfig`.
    fn job(&self, job_id: &str) -> StorageResult<Box<dyn JobStorage>>;

    /// The metadata of the completed checkpoint or savepoint at `pointer`. For persistent
    /// backends this works from a fresh process. Empty or malformed pointers are
    /// `InvalidConfig`; pointers to nothing (or to an uncommitted location) are `NotFound`;
    /// metadata that fails its checksum is `Corrupt`.
    fn resolve(&self, pointer: &str) -> StorageResult<ResolvedCheckpoint>;

    /// Open a handle for reading. The stream verifies the handle's checksum and returns
    /// `Corrupt`, naming the handle, instead of end-of-file if the bytes do not match.
    fn open_handle(&self, handle: &StateHandle) -> StorageResult<Box<dyn InputStream>>;

    /// Delete the state behind a handle. Idempotent: state that is already gone is success.
    fn discard(&self, handle: &StateHandle) -> StorageResult<()>;

    /// Remove a completed checkpoint or savepoint location: its metadata first (so it stops
    /// being complete), then its exclusive state. SHARED state is left to the host's registry.
    /// Idempotent.
    fn dispose(&self, pointer: &str) -> StorageResult<()>;

    /// Damage the stored bytes behind `handle` (flip one bit), so the conformance harness can
    /// check that reading them back gives `Corrupt`. Only called when the instance reports
    /// [`Capabilities::CORRUPT_FOR_TESTING`]; backends without it return `Unsupported`. The host
    /// never calls it outside `cairn plugins verify`.
    fn corrupt_for_testing(&self, handle: &StateHandle) -> StorageResult<()>;
}

/// Access to one job's checkpoints.
pub trait JobStorage: Send + Sync {
    /// A new location for checkpoint `checkpoint_id`. A location whose metadata was committed
    /// already is `AlreadyExists`.
    fn begin_checkpoint(&self, checkpoint_id: u64) -> StorageResult<Box<dyn CheckpointLocation>>;

    /// A new savepoint location under `target`, or under the backend's default savepoint
    /// location. With neither, `InvalidConfig`; without savepoint support, `Unsupported`.
    fn begin_savepoint(
        &self,
        checkpoint_id: u64,
        target: Option<&str>,
    ) -> StorageResult<Box<dyn CheckpointLocation>>;

    /// A stream for state owned by a task rather than by a checkpoint (Flink's task-owned
    /// state). Its handle lives until discarded.
    fn create_task_owned_stream(&self) -> StorageResult<Box<dyn OutputStream>>;

    /// The completed checkpoints of this job, in ascending id order. Locations without a
    /// committed metadata are never listed.
    fn list_completed(&self) -> StorageResult<Vec<CompletedCheckpoint>>;

    /// Every state object this job has stored and not deleted: exclusive state in committed and
    /// uncommitted checkpoint locations, SHARED and task-owned state; not metadata, not
    /// savepoints, not inline state. The host compares it with what completed checkpoints
    /// reference to find orphans, and the harness uses it to check that dropped streams leave
    /// nothing behind. Backends without stored handles return an empty list.
    fn list_objects(&self) -> StorageResult<Vec<StoredObject>>;

    /// Ids of checkpoint locations of this job that exist but were never committed: left by a
    /// crash or by a checkpoint that was aborted before its clean-up finished. Garbage collection
    /// removes each with `begin_checkpoint(id)` then `dispose_on_failure()`, so `begin_checkpoint`
    /// must accept such an id. Backends whose uncommitted locations do not outlive the process
    /// return an empty list.
    fn list_uncommitted(&self) -> StorageResult<Vec<u64>>;

    /// Since API 1.1. Pointers of this job's savepoint locations under `target` (or under the
    /// backend's default savepoint location) that exist but were never committed: left by a
    /// savepoint interrupted by a crash. Garbage collection removes each with
    /// [`CheckpointStorage::dispose`], which must accept such a pointer. Savepoints of other
    /// jobs, and any location whose owner cannot be told for sure, are never listed. With
    /// neither a target nor a default, an empty list.
    ///
    /// The default returns `Unsupported`, as the host's wrapper does for a plugin built against
    /// API 1.0.
    fn list_uncommitted_savepoints(&self, target: Option<&str>) -> StorageResult<Vec<String>> {
        let _ = target;
        Err(crate::version::unsupported_since(
            crate::version::API_1_1,
            "list_uncommitted_savepoints",
        ))
    }

    /// Since API 1.1. Pointers of this job's *completed* savepoints under `target` (or under
    /// the backend's default savepoint location), in any order, for `cairn checkpoints list` and
    /// so that checkpoint ids never repeat a savepoint's. Uncommitted locations and savepoints
    /// of other jobs are never listed; a location whose name carries only a prefix of the job
    /// id (written by older versions) may be, so the caller checks the job id in the metadata.
    /// With neither a target nor a default, an empty list.
    ///
    /// The default returns `Unsupported`, as the host's wrapper does for a plugin built against
    /// API 1.0.
    fn list_savepoints(&self, target: Option<&str>) -> StorageResult<Vec<String>> {
        let _ = target;
        Err(crate::version::unsupported_since(
            crate::version::API_1_1,
            "list_savepoints",
        ))
    }

    /// Since API 1.1. The job's lease record, as last written with
    /// [`JobStorage::write_lease`], and its version; `None` if none was ever written. The
    /// record is the host's (it says who holds the job and until when); the backend stores its
    /// bytes and nothing else. See ARCHITECTURE.md, "The job lease", for the protocol on top.
    ///
    /// The default returns `Unsupported`, as the host's wrapper does for a plugin built against
    /// API 1.0; the host then falls back to a lock file on the local machine.
    fn read_lease(&self) -> StorageResult<Option<LeaseRecord>> {
        Err(crate::version::unsupported_since(
            crate::version::API_1_1,
            "read_lease",
        ))
    }

    /// Since API 1.1. Replace the job's lease record with `record`, only if its version is
    /// still `expected` (`None`: only if there is no record), atomically against every other
    /// writer, in this process or on another host: of two writers with the same `expected`,
    /// exactly one succeeds and the other gets `AlreadyExists`. Returns the new version, which
    /// differs from every earlier one. A record longer than [`MAX_LEASE_RECORD_BYTES`] may be
    /// refused with `InvalidConfig`. A write whose answer is lost (a timeout) may still have
    /// happened; the host reads the record back to find out.
    ///
    /// The default returns `Unsupported`, as the host's wrapper does for a plugin built against
    /// API 1.0.
    fn write_lease(&self, record: &[u8], expected: Option<&str>) -> StorageResult<String> {
        let _ = (record, expected);
        Err(crate::version::unsupported_since(
            crate::version::API_1_1,
            "write_lease",
        ))
    }
}

/// Since API 1.1. The largest lease record a backend must store (the host's are a few hundred
/// bytes).
pub const MAX_LEASE_RECORD_BYTES: usize = 64 * 1024;

/// Since API 1.1. A job's lease record and its version, as [`JobStorage::read_lease`] returns
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The bytes last written with [`JobStorage::write_lease`].
    pub bytes: Vec<u8>,
    /// Its version, opaque to the host: pass it to [`JobStorage::write_lease`] as `expected`.
    pub version: String,
}

/// A stored state object, as [`JobStorage::list_objects`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct StoredObject {
    /// The locator a stored handle to this object would carry.
    pub locator: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Where one checkpoint's state and metadata go.
pub trait CheckpointLocation: Send + Sync {
    /// A new output stream for state of the given scope.
    fn create_stream(&self, scope: Scope) -> StorageResult<Box<dyn OutputStream>>;

    /// The atomic commit point. Before it completes the checkpoint does not exist for readers;
    /// after it, it is complete. A second commit to the same location is `AlreadyExists`.
    fn commit(&self, metadata: &[u8]) -> StorageResult<CompletedCheckpoint>;

    /// Remove what was written for a checkpoint that failed before its commit. Idempotent.
    fn dispose_on_failure(&self) -> StorageResult<()>;
}

/// A stream of state bytes being written.
///
/// Dropping a stream without [`OutputStream::close_and_get_handle`] deletes what it wrote.
pub trait OutputStream: Send {
    /// Append bytes. After close, `Other` ("stream is closed").
    fn write(&mut self, buf: &[u8]) -> StorageResult<()>;

    /// Number of bytes written so far.
    fn pos(&self) -> StorageResult<u64>;

    /// Finish the stream. `None` if nothing was written; an inline handle at or under the
    /// inline threshold; a stored handle above it. A second call is an error.
    fn close_and_get_handle(&mut self) -> StorageResult<Option<StateHandle>>;
}

/// A stream of state bytes being read.
pub trait InputStream: Send {
    /// Read into `buf`, returning how many bytes were read; `0` means end of stream, and is
    /// returned only after the checksum matched.
    fn read(&mut self, buf: &mut [u8]) -> StorageResult<usize>;
}

/// An [`InputStream`] over the bytes of an inline handle, for backends to return from
/// [`CheckpointStorage::open_handle`].
#[derive(Debug)]
pub struct InlineInput {
    bytes: Vec<u8>,
    pos: usize,
}

impl InlineInput {
    /// A stream over `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self { bytes, pos: 0 }
    }
}

impl InputStream for InlineInput {
    fn read(&mut self, buf: &mut [u8]) -> StorageResult<usize> {
        let n = buf.len().min(self.bytes.len() - self.pos);
        buf[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Read all the bytes behind `handle` and check them against the handle itself: its size, and
/// for stored handles its CRC32C. This second check is the host's own, so a backend that returns
/// wrong bytes is caught even if it does not notice.
pub fn read_handle_fully(
    storage: &dyn CheckpointStorage,
    handle: &StateHandle,
) -> StorageResult<Vec<u8>> {
    if let StateHandle::Inline(bytes) = handle {
        return Ok(bytes.clone());
    }
    let mut input = storage.open_handle(handle)?;
    let expected = handle.size();
    let mut out = Vec::with_capacity(expected.min(64 << 20) as usize);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if n > buf.len() {
            return Err(StorageError::Corrupt(format!(
                "{}: backend reported reading {n} bytes into a {} byte buffer",
                handle.describe(),
                buf.len()
            )));
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() as u64 > expected {
            return Err(StorageError::Corrupt(format!(
                "{}: more bytes than the handle's size",
                handle.describe()
            )));
        }
    }
    if out.len() as u64 != expected {
        return Err(StorageError::Corrupt(format!(
            "{}: read {} bytes, the handle says {expected}",
            handle.describe(),
            out.len()
        )));
    }
    if let StateHandle::Stored { crc32c, .. } = handle {
        let got = crc32c_of(&out);
        if got != *crc32c {
            return Err(StorageError::Corrupt(format!(
                "{}: checksum mismatch, read bytes have crc32c {got:08x}",
                handle.describe()
            )));
        }
    }
    Ok(out)
}

/// CRC32C (Castagnoli) of `bytes`, the checksum every stored handle carries.
fn crc32c_of(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}
