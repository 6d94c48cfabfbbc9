//! `cairn checkpoints copy`: a completed checkpoint or savepoint copied to another storage
//! (for example filesystem → S3), as a checkpoint or savepoint of the same id there.
//!
//! Every stored handle is read back from the source with its checksum checked (backend and
//! host), written to a location begun at the destination as exclusive state of the copy, and
//! read back from the destination with its checksum checked again. Only when every handle is
//! there does the copy commit, with metadata naming the new handles; on any failure the
//! destination's location is disposed, and a copy that is killed leaves an uncommitted location
//! that readers never see (and `checkpoints gc` removes). The caller holds the destination job's
//! lease.

use std::time::Instant;

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
    /// Handles copied (inline ones included).
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

/// Copy every handle of `meta` into `location`; the metadata naming the copies, and how many
/// handles there were.
fn write_all(
    source: &dyn CheckpointStorage,
    destination: &dyn CheckpointStorage,
    location: &dyn CheckpointLocation,
    meta: &CheckpointMetadata,
    what: &str,
    on_progress: &dyn Fn(u64, u64),
) -> Result<(CheckpointMetadata, usize), CopyError> {
    let total = meta.state_size();
    let mut done = 0;
    let mut count = 0;
    let mut copied = meta.clone();
    for task in &mut copied.tasks {
        let name = format!("{what}, {}[{}]", task.operator, task.subtask);
        for record in &mut task.handles {
            count += 1;
            let handle = record.to_handle().map_err(|e| CopyError::Source {
                what: name.clone(),
                error: e.to_string(),
            })?;
            let bytes = read_handle_fully(source, &handle).map_err(|e| CopyError::Source {
                what: format!("{name} {}", handle.describe()),
                error: e.to_string(),
            })?;
            let written =
                write_one(destination, location, &bytes).map_err(|e| CopyError::Destination {
                    what: format!("{name} ({} bytes)", bytes.len()),
                    error: e.to_string(),
                })?;
            *record = HandleRecord::from(&written);
            done += bytes.len() as u64;
            on_progress(done, total);
        }
    }
    Ok((copied, count))
}

/// Write `bytes` as one exclusive stream of `location`, then read them back through the
/// destination and check them.
fn write_one(
    destination: &dyn CheckpointStorage,
    location: &dyn CheckpointLocation,
    bytes: &[u8],
) -> Result<StateHandle, StorageError> {
    let mut stream = location.create_stream(Scope::Exclusive)?;
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
