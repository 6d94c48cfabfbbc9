//! Per-job access: checkpoint and savepoint locations, task-owned streams, and the list of
//! completed checkpoints.
//!
//! A job's in-memory state ([`JobState`]) belongs to the storage instance, so every
//! [`MemoryJob`] handed out for one job id sees the same completed checkpoints. With a
//! checkpoint directory the directory is the truth instead: listing reads it, so checkpoints
//! committed by an earlier process are listed too and checkpoint ids continue after a restart.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use cairn_plugin_api::{
    CheckpointLocation, CompletedCheckpoint, JobStorage, OutputStream, StorageError, StorageResult,
    StoredObject,
};

use crate::{
    location::{MemoryLocation, Target},
    options::{absolute_dir, Config},
    persist,
    pointer::{chk_name, parse_chk_name, Pointer},
    stream::MemoryOutputStream,
};

/// The longest job id accepted.
const MAX_JOB_ID_LEN: usize = 128;

/// Check a job id: 1 to 128 ASCII letters, digits, '-', '_' or '.', not starting with '.'.
/// Job ids become directory names, so nothing else may pass.
pub fn validate_job_id(job_id: &str) -> StorageResult<()> {
    let ok = !job_id.is_empty()
        && job_id.len() <= MAX_JOB_ID_LEN
        && !job_id.starts_with('.')
        && job_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidConfig(format!(
            "job id {job_id:?} is invalid: use 1 to {MAX_JOB_ID_LEN} ASCII letters, digits, '-', \
             '_' or '.', not starting with '.'"
        )))
    }
}

/// What a storage instance keeps about one job.
pub struct JobState {
    /// The job id, validated.
    pub id: String,
    /// `<checkpoint-dir>/<job-id>`, when a checkpoint directory is configured.
    pub dir: Option<PathBuf>,
    /// Metadata of completed checkpoints, when no checkpoint directory is configured.
    completed: Mutex<BTreeMap<u64, Vec<u8>>>,
    /// Numbers streams for messages.
    next_stream: AtomicU64,
}

impl JobState {
    /// The state of job `id`; creates the job's directory under `checkpoint_dir` if there is one.
    pub fn create(id: &str, checkpoint_dir: Option<&Path>) -> StorageResult<JobState> {
        let dir = checkpoint_dir.map(|base| base.join(id));
        if let Some(dir) = &dir {
            persist::create_dir(dir)?;
        }
        Ok(JobState {
            id: id.to_string(),
            dir,
            completed: Mutex::new(BTreeMap::new()),
            next_stream: AtomicU64::new(1),
        })
    }

    /// The in-memory completed checkpoints. A panic while the lock was held cannot leave the
    /// map half-updated (every update is one insert or remove), so a poisoned lock is used as is.
    pub fn completed(&self) -> MutexGuard<'_, BTreeMap<u64, Vec<u8>>> {
        self.completed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A number for the next stream's name.
    pub fn next_stream_number(&self) -> u64 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }
}

/// [`JobStorage`] of the memory backend.
pub struct MemoryJob {
    config: Arc<Config>,
    state: Arc<JobState>,
}

impl MemoryJob {
    /// Access to the job whose state is `state`.
    pub fn new(config: Arc<Config>, state: Arc<JobState>) -> Self {
        Self { config, state }
    }
}

impl JobStorage for MemoryJob {
    fn begin_checkpoint(&self, checkpoint_id: u64) -> StorageResult<Box<dyn CheckpointLocation>> {
        let target = match &self.state.dir {
            None => {
                if self.state.completed().contains_key(&checkpoint_id) {
                    return Err(StorageError::AlreadyExists(format!(
                        "{}: checkpoint {checkpoint_id} of job '{}' is completed already",
                        Pointer::memory(&self.state.id, checkpoint_id),
                        self.state.id
                    )));
                }
                Target::Memory
            }
            Some(job_dir) => {
                // Not created here: an aborted checkpoint then leaves no directory behind. The
                // commit creates it.
                let dir = job_dir.join(chk_name(checkpoint_id));
                if persist::is_committed(&dir) {
                    return Err(StorageError::AlreadyExists(format!(
                        "{}: checkpoint {checkpoint_id} of job '{}' is completed already",
                        dir.display(),
                        self.state.id
                    )));
                }
                Target::CheckpointDir { dir }
            }
        };
        Ok(Box::new(MemoryLocation::new(
            target,
            checkpoint_id,
            self.state.clone(),
            self.config.max_state_size,
        )))
    }

    fn begin_savepoint(
        &self,
        checkpoint_id: u64,
        target: Option<&str>,
    ) -> StorageResult<Box<dyn CheckpointLocation>> {
        let base = match (target, &self.config.savepoint_dir) {
            (Some(t), _) => absolute_dir("the savepoint target", t)?,
            (None, Some(d)) => d.clone(),
            (None, None) => {
                return Err(StorageError::InvalidConfig(format!(
                    "savepoint {checkpoint_id} of job '{}' has no target directory: pass a \
                     target, or set storage.options.savepoint-dir (the memory backend writes \
                     savepoints to a directory)",
                    self.state.id
                )))
            }
        };
        persist::create_dir(&base)?;
        let prefix: String = self.state.id.chars().take(6).collect();
        let random = uuid::Uuid::new_v4().simple().to_string();
        let dir = base.join(format!("savepoint-{prefix}-{}", &random[..12]));
        fs::create_dir(&dir).map_err(|e| {
            StorageError::io(
                format!("creating savepoint directory {}", dir.display()),
                &e,
            )
        })?;
        persist::sync_dir(&base)?;
        tracing::debug!(
            "savepoint {checkpoint_id} of job '{}' goes to {}",
            self.state.id,
            dir.display()
        );
        Ok(Box::new(MemoryLocation::new(
            Target::Savepoint { dir },
            checkpoint_id,
            self.state.clone(),
            self.config.max_state_size,
        )))
    }

    fn create_task_owned_stream(&self) -> StorageResult<Box<dyn OutputStream>> {
        let name = format!(
            "task-owned stream #{} of job '{}'",
            self.state.next_stream_number(),
            self.state.id
        );
        Ok(Box::new(MemoryOutputStream::new(
            name,
            self.config.max_state_size,
        )))
    }

    fn list_completed(&self) -> StorageResult<Vec<CompletedCheckpoint>> {
        match &self.state.dir {
            None => Ok(self
                .state
                .completed()
                .keys()
                .map(|&id| CompletedCheckpoint {
                    checkpoint_id: id,
                    pointer: Pointer::memory(&self.state.id, id),
                })
                .collect()),
            Some(job_dir) => list_dir(job_dir),
        }
    }

    fn list_uncommitted(&self) -> StorageResult<Vec<u64>> {
        // Uncommitted locations live in memory and die with the process; the checkpoint
        // directory only ever receives committed metadata.
        Ok(Vec::new())
    }

    fn list_objects(&self) -> StorageResult<Vec<StoredObject>> {
        // Every handle of this backend is inline: nothing is stored outside the metadata.
        Ok(Vec::new())
    }
}

/// The committed `chk-<n>` directories under `job_dir`, in ascending id order.
fn list_dir(job_dir: &Path) -> StorageResult<Vec<CompletedCheckpoint>> {
    let entries = match fs::read_dir(job_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(StorageError::io(
                format!("listing {}", job_dir.display()),
                &e,
            ))
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| StorageError::io(format!("listing {}", job_dir.display()), &e))?;
        let Some(id) = entry.file_name().to_str().and_then(parse_chk_name) else {
            continue;
        };
        let dir = entry.path();
        if persist::is_committed(&dir) {
            out.push(CompletedCheckpoint {
                checkpoint_id: id,
                pointer: dir.display().to_string(),
            });
        }
    }
    out.sort_by_key(|c| c.checkpoint_id);
    Ok(out)
}
