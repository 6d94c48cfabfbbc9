//! Checkpoint and savepoint locations: where streams come from, and the one commit.
//!
//! A location's phase (open, committed, disposed) sits behind a mutex, so a commit and a
//! `dispose_on_failure` racing on one location are ordered, and a location commits at most once.
//! State never lands in the location itself: every stream closes to an inline handle that the
//! host puts in the metadata, so the metadata is the whole checkpoint.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use cairn_plugin_api::{
    CheckpointLocation, CompletedCheckpoint, OutputStream, Scope, StorageError, StorageResult,
};

use crate::{job::JobState, persist, pointer::Pointer, stream::MemoryOutputStream};

/// Where a location's metadata goes.
#[derive(Debug)]
pub enum Target {
    /// A checkpoint kept in the storage instance's memory.
    Memory,
    /// A checkpoint whose metadata is persisted at `<checkpoint-dir>/<job-id>/chk-<n>`.
    CheckpointDir {
        /// The `chk-<n>` directory; created by the commit.
        dir: PathBuf,
    },
    /// A savepoint directory, created when the location was begun.
    Savepoint {
        /// The `savepoint-...` directory.
        dir: PathBuf,
    },
}

#[derive(Debug)]
enum Phase {
    /// Takes streams; not committed. `touched_disk` is set once a commit attempt may have left
    /// files in a checkpoint directory, so that `dispose_on_failure` knows to remove them.
    Open {
        touched_disk: bool,
    },
    Committed,
    Disposed,
}

/// [`CheckpointLocation`] of the memory backend.
pub struct MemoryLocation {
    target: Target,
    checkpoint_id: u64,
    job: Arc<JobState>,
    max_state_size: u64,
    /// For messages, for example `checkpoint memory:job/chk-3`.
    name: String,
    phase: Mutex<Phase>,
}

impl MemoryLocation {
    /// A new open location.
    pub fn new(
        target: Target,
        checkpoint_id: u64,
        job: Arc<JobState>,
        max_state_size: u64,
    ) -> Self {
        let name = match &target {
            Target::Memory => format!("checkpoint {}", Pointer::memory(&job.id, checkpoint_id)),
            Target::CheckpointDir { dir } => format!("checkpoint {}", dir.display()),
            Target::Savepoint { dir } => format!("savepoint {}", dir.display()),
        };
        Self {
            target,
            checkpoint_id,
            job,
            max_state_size,
            name,
            phase: Mutex::new(Phase::Open {
                touched_disk: false,
            }),
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        // Every phase change is a single assignment, so a poisoned lock holds a whole value.
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn commit_target(&self, metadata: &[u8], touched_disk: &mut bool) -> StorageResult<String> {
        match &self.target {
            Target::Memory => {
                let checkpoint_id = self.checkpoint_id;
                let pointer = Pointer::memory(&self.job.id, checkpoint_id);
                let mut completed = self.job.completed();
                if completed.contains_key(&checkpoint_id) {
                    return Err(StorageError::AlreadyExists(format!(
                        "{pointer}: checkpoint {checkpoint_id} was committed already; a \
                         checkpoint commits once"
                    )));
                }
                completed.insert(checkpoint_id, metadata.to_vec());
                Ok(pointer)
            }
            Target::CheckpointDir { dir } => {
                let created = !dir.exists();
                persist::create_dir(dir)?;
                *touched_disk |= created;
                match persist::commit(dir, metadata) {
                    // Committed by someone else: nothing of ours to clean up.
                    Err(e @ StorageError::AlreadyExists(_)) => Err(e),
                    Err(e) => {
                        *touched_disk = true;
                        Err(e)
                    }
                    Ok(()) => Ok(dir.display().to_string()),
                }
            }
            Target::Savepoint { dir } => {
                persist::commit(dir, metadata)?;
                Ok(dir.display().to_string())
            }
        }
    }
}

impl CheckpointLocation for MemoryLocation {
    fn create_stream(&self, scope: Scope) -> StorageResult<Box<dyn OutputStream>> {
        match *self.phase() {
            Phase::Open { .. } => {}
            Phase::Committed => {
                return Err(StorageError::Other(format!(
                    "{} is committed; it takes no new streams",
                    self.name
                )))
            }
            Phase::Disposed => {
                return Err(StorageError::Other(format!(
                    "{} was disposed after a failure; it takes no new streams",
                    self.name
                )))
            }
        }
        let scope = match scope {
            Scope::Exclusive => "exclusive",
            Scope::Shared => "shared",
        };
        let name = format!(
            "stream #{} ({scope}) of {}",
            self.job.next_stream_number(),
            self.name
        );
        Ok(Box::new(MemoryOutputStream::new(name, self.max_state_size)))
    }

    fn commit(&self, metadata: &[u8]) -> StorageResult<CompletedCheckpoint> {
        let mut phase = self.phase();
        let mut touched_disk = match *phase {
            Phase::Open { touched_disk } => touched_disk,
            Phase::Committed => {
                return Err(StorageError::AlreadyExists(format!(
                    "{} was committed already; a checkpoint commits once",
                    self.name
                )))
            }
            Phase::Disposed => {
                return Err(StorageError::NotFound(format!(
                    "{} was disposed after a failure; it cannot be committed",
                    self.name
                )))
            }
        };
        let result = self.commit_target(metadata, &mut touched_disk);
        *phase = match &result {
            Ok(_) => Phase::Committed,
            Err(_) => Phase::Open { touched_disk },
        };
        let pointer = result?;
        tracing::debug!(
            "committed {} ({} bytes of metadata)",
            self.name,
            metadata.len()
        );
        Ok(CompletedCheckpoint {
            checkpoint_id: self.checkpoint_id,
            pointer,
        })
    }

    fn dispose_on_failure(&self) -> StorageResult<()> {
        let mut phase = self.phase();
        let touched_disk = match *phase {
            Phase::Open { touched_disk } => touched_disk,
            // A committed location is complete: only `dispose(pointer)` removes it, so a late
            // failure report cannot delete a checkpoint that `list_completed` already shows.
            Phase::Committed => {
                tracing::debug!("dispose_on_failure of committed {} ignored", self.name);
                return Ok(());
            }
            Phase::Disposed => return Ok(()),
        };
        match &self.target {
            Target::Memory => {}
            Target::CheckpointDir { dir } => {
                if touched_disk {
                    persist::remove_location_dir(dir)?;
                }
            }
            Target::Savepoint { dir } => persist::remove_location_dir(dir)?,
        }
        *phase = Phase::Disposed;
        Ok(())
    }
}
