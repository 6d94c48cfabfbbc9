//! `cairn checkpoints copy`: a completed checkpoint or savepoint copied to another storage
//! (for example filesystem → S3), as a checkpoint or savepoint of the same id there.
//!
//! Every stored object the metadata references is read from the source with its checksum
//! checked (backend and host), written to a location begun at the destination, and read back
//! from the destination with its checksum checked again: state handles and channel state as
//! exclusive state of the copy, and the objects an incremental checkpoint's segments lie in
//! (some written by earlier checkpoints) each once, byte for byte, as SHARED state, so the copy
//! references nothing of the source. Only when every handle is
//! there does the copy commit, with metadata naming the new handles; on any failure the
//! destination's location is disposed, and a copy that is killed leaves an uncommitted location
//! that readers never see (and `checkpoints gc` removes). The caller holds the destination job's
//! lease.

use std::{collections::HashMap, time::Instant};

use cairn_plugin_api::{
    read_handle_fully, CheckpointLocation, CheckpointStorage, Scope, StateHandle, StorageError,
};
use serde::Serialize;

use crate::metadata::{CheckpointMetadata, HandleRecord, SnapshotKind};

/// What a copy did: the `Serialize` report `checkpoints copy` renders.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    /// The checkpoint id, the same at both ends.
    pub id: u64,
    /// `checkpoint` or `savepoint`.
    pub kind: SnapshotKind,
    /// The source pointer.
    pub from: String,
    /// The pointer of the copy.
    pub pointer: String,
    /// Objects copied (inline ones included; an object several segments lie in counts once).
    pub handles: usize,
    /// Bytes of state copied.
    pub state_bytes: u64,
    /// How long it took.
    pub duration_ms: u64,
}

/// Why a copy failed. Nothing is committed at the destination in any case.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The source could not be read, or did not verify.
    #[error("reading {what} from the source: {error}")]
    Source {
        /// What was read.
        what: String,
        /// Why it failed.
        error: String,
    },
    /// The destination refused or failed.
    #[error("writing {what} to the destination: {error}; nothing was committed there")]
    Destination {
        /// What was written.
        what: String,
        /// Why it failed.
        error: String,
    },
    /// The checkpoint belongs to another job than the destination's.
    #[error(
        "{pointer} is a checkpoint of job '{source_job}', but the destination config's job.id is \
         '{destination_job}': the copy would not restore there; use a destination config with \
         job.id = '{source_job}'"
    )]
    OtherJob {
        /// The pointer.
        pointer: String,
        /// Its job.
        source_job: String,
        /// The destination's job.
        destination_job: String,
    },
}

/// Where the copy goes.
pub struct Destination<'a> {
    /// The destination storage.
    pub storage: &'a dyn CheckpointStorage,
    /// Its job id (must be the checkpoint's).
    pub job_id: &'a str,
    /// Where a savepoint goes (the destination config's `[savepoints] dir`, or the plugin's
    /// default when `None`).
    pub savepoint_target: Option<String>,
}

/// Copy the completed checkpoint or savepoint at `pointer` of `source` to `to`, calling
/// `on_progress(bytes_done, bytes_total)` as handles are copied.
pub fn copy(
    source: &dyn CheckpointStorage,
    pointer: &str,
    to: &Destination<'_>,
    on_progress: &dyn Fn(u64, u64),
) -> Result<CopyReport, CopyError> {
    let started = Instant::now();
    let src = |what: &str, e: &dyn std::fmt::Display| CopyError::Source {
        what: what.to_string(),
        error: e.to_string(),
    };
    let resolved = source
        .resolve(pointer)
        .map_err(|e| src(&format!("{pointer}'s metadata"), &e))?;
    let meta = CheckpointMetadata::decode(&resolved.metadata)
        .map_err(|e| src(&format!("{pointer}'s metadata"), &e))?;
    if meta.job_id != to.job_id {
        return Err(CopyError::OtherJob {
            pointer: pointer.to_string(),
            source_job: meta.job_id,
            destination_job: to.job_id.to_string(),
        });
    }
    let dst = |what: &str, e: &dyn std::fmt::Display| CopyError::Destination {
        what: what.to_string(),
        error: e.to_string(),
    };
    let job = to
        .storage
        .job(to.job_id)
        .map_err(|e| dst(&format!("job '{}'", to.job_id), &e))?;
    let what = match meta.kind {
        SnapshotKind::Checkpoint => format!("checkpoint {}", meta.checkpoint_id),
        SnapshotKind::Savepoint => format!("savepoint {}", meta.checkpoint_id),
    };
    if meta.kind == SnapshotKind::Checkpoint {
        let there = job
            .list_completed()
            .map_err(|e| dst("the list of completed checkpoints", &e))?;
        if let Some(c) = there.iter().find(|c| c.checkpoint_id == meta.checkpoint_id) {
            return Err(dst(
                &what,
                &format!(
                    "the destination has a completed checkpoint {} already ({})",
                    c.checkpoint_id, c.pointer
                ),
            ));
        }
    }
    let location = match meta.kind {
        SnapshotKind::Checkpoint => job.begin_checkpoint(meta.checkpoint_id),
        SnapshotKind::Savepoint => {
            job.begin_savepoint(meta.checkpoint_id, to.savepoint_target.as_deref())
        }
    }
    .map_err(|e| dst(&format!("the location of {what}"), &e))?;
    match write_all(
        source,
        to.storage,
        location.as_ref(),
        &meta,
        &what,
        on_progress,
    ) {
        Ok((copied, handles)) => {
            let bytes = copied.encode();
            let done = location.commit(&bytes).map_err(|e| {
                let _ = location.dispose_on_failure();
                dst(&format!("the metadata of {what} (the commit)"), &e)
            })?;
            Ok(CopyReport {
                id: meta.checkpoint_id,
                kind: meta.kind,
                from: pointer.to_string(),
                pointer: done.pointer,
                handles,
                state_bytes: meta.state_size(),
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            })
        }
        Err(e) => {
            if let Err(cleanup) = location.dispose_on_failure() {
                tracing::warn!("removing the uncommitted copy of {what}: {cleanup}");
            }
            Err(e)
        }
    }
}

/// Copy every object `meta` references into `location`: its state handles and channel state
/// as exclusive state of the copy, and the objects its segments lie in (an incremental
/// checkpoint's chain, some written by earlier checkpoints) as SHARED state, each object once
/// however many segments lie in it, byte for byte, so the segments' offsets and checksums hold
/// at the destination. The copy is self-contained: it references nothing of the source. Returns
/// the metadata naming the copies, and how many objects there were.
fn write_all(
    source: &dyn CheckpointStorage,
    destination: &dyn CheckpointStorage,
    location: &dyn CheckpointLocation,
    meta: &CheckpointMetadata,
    what: &str,
    on_progress: &dyn Fn(u64, u64),
) -> Result<(CheckpointMetadata, usize), CopyError> {
    let mut copier = Copier {
        source,
        destination,
        location,
        total: meta.state_size(),
        done: 0,
        copied: HashMap::new(),
        count: 0,
        on_progress,
    };
    let mut copied = meta.clone();
    for task in &mut copied.tasks {
        let name = format!("{what}, {}[{}]", task.operator, task.subtask);
        for record in &mut task.handles {
            *record = copier.copy(record, Scope::Exclusive, &name)?;
        }
        for channel in &mut task.channel_state {
            let name = format!("{name} channel state of input {}", channel.channel);
            channel.handle = copier.copy(&channel.handle, Scope::Exclusive, &name)?;
        }
        for segment in &mut task.segments {
            let name = format!("{name} segment of checkpoint {}", segment.checkpoint_id);
            segment.object = copier.copy(&segment.object, Scope::Shared, &name)?;
        }
    }
    Ok((copied, copier.count))
}

/// One copy's progress: the stored objects copied so far, by their source locator, so an object
/// that several records name (segments of one chain) is copied once.
struct Copier<'a> {
    source: &'a dyn CheckpointStorage,
    destination: &'a dyn CheckpointStorage,
    location: &'a dyn CheckpointLocation,
    total: u64,
    done: u64,
    copied: HashMap<String, HandleRecord>,
    count: usize,
    on_progress: &'a dyn Fn(u64, u64),
}

impl Copier<'_> {
    /// Read `record`'s object from the source (checked) and write it into the copy's location
    /// in `scope` (checked again), unless an earlier record named the same object.
    fn copy(
        &mut self,
        record: &HandleRecord,
        scope: Scope,
        name: &str,
    ) -> Result<HandleRecord, CopyError> {
        let locator = match record {
            HandleRecord::Stored { locator, .. } => Some(locator.clone()),
            HandleRecord::Inline { .. } => None,
        };
        if let Some(done) = locator.as_ref().and_then(|l| self.copied.get(l)) {
            return Ok(done.clone());
        }
        let handle = record.to_handle().map_err(|e| CopyError::Source {
            what: name.to_string(),
            error: e.to_string(),
        })?;
        let bytes = read_handle_fully(self.source, &handle).map_err(|e| CopyError::Source {
            what: format!("{name} {}", handle.describe()),
            error: e.to_string(),
        })?;
        let written = write_one(self.destination, self.location, scope, &bytes).map_err(|e| {
            CopyError::Destination {
                what: format!("{name} ({} bytes)", bytes.len()),
                error: e.to_string(),
            }
        })?;
        let new = HandleRecord::from(&written);
        if let Some(locator) = locator {
            self.copied.insert(locator, new.clone());
        }
        self.count += 1;
        self.done += bytes.len() as u64;
        (self.on_progress)(self.done.min(self.total), self.total);
        Ok(new)
    }
}

/// Write `bytes` as one stream of `location` in `scope`, then read them back through the
/// destination and check them.
fn write_one(
    destination: &dyn CheckpointStorage,
    location: &dyn CheckpointLocation,
    scope: Scope,
    bytes: &[u8],
) -> Result<StateHandle, StorageError> {
    let mut stream = location.create_stream(scope)?;
    // In pieces, as the runtime writes snapshots, so no backend sees one huge write.
    for piece in bytes.chunks(4 << 20) {
        stream.write(piece)?;
    }
    let handle = stream
        .close_and_get_handle()?
        .unwrap_or_else(|| StateHandle::Inline(Vec::new()));
    let back = read_handle_fully(destination, &handle)?;
    if back != bytes {
        return Err(StorageError::Corrupt(format!(
            "{} read back differs from what was written",
            handle.describe()
        )));
    }
    Ok(handle)
}
