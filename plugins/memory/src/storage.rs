//! The storage instance: per-job access, pointers, handles.
//!
//! Everything an instance knows lives in the [`MemoryStorage`] value that `open` returns, never
//! in a static, so two instances in one process (or two loads of the plugin) share nothing, and
//! dropping the instance forgets its in-memory checkpoints.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
};

use cairn_plugin_api::{
    Capabilities, CheckpointStorage, InlineInput, InputStream, JobStorage, ResolvedCheckpoint,
    StateHandle, StorageError, StorageInfo, StorageResult,
};

use crate::{
    job::{validate_job_id, JobState, MemoryJob},
    options::Config,
    persist,
    pointer::{is_savepoint_name, parse_chk_name, Pointer},
    MANIFEST_CAPABILITIES,
};

/// [`CheckpointStorage`] of the memory backend.
pub struct MemoryStorage {
    config: Arc<Config>,
    jobs: Mutex<HashMap<String, Arc<JobState>>>,
}

impl MemoryStorage {
    /// An instance with a validated configuration.
    pub fn new(config: Config) -> Self {
        Self {
            config: Arc::new(config),
            jobs: Mutex::new(HashMap::new()),
        }
    }

    fn known_job(&self, job_id: &str) -> Option<Arc<JobState>> {
        // Each update of the map is one insert, so a poisoned lock holds a whole map.
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(job_id)
            .cloned()
    }

    /// Dispose a directory pointer after checking it names a location of ours, so that a
    /// mistyped pointer can never delete an unrelated directory.
    fn dispose_dir(&self, pointer: &str, dir: &Path) -> StorageResult<()> {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if parse_chk_name(name).is_some() {
            let job_dir = dir.parent();
            let job_ok = job_dir
                .and_then(|j| j.file_name())
                .and_then(|n| n.to_str())
                .is_some_and(|j| validate_job_id(j).is_ok());
            let base = job_dir.and_then(Path::parent);
            match &self.config.checkpoint_dir {
                Some(cp) if job_ok && base == Some(cp.as_path()) => {}
                Some(cp) => {
                    return Err(StorageError::InvalidConfig(format!(
                        "pointer '{pointer}' is not a checkpoint under this instance's \
                         checkpoint-dir {}; refusing to delete it",
                        cp.display()
                    )))
                }
                None => {
                    return Err(StorageError::InvalidConfig(format!(
                        "pointer '{pointer}' is a checkpoint directory, but \
                         storage.options.checkpoint-dir is not set; refusing to delete it"
                    )))
                }
            }
        } else if !is_savepoint_name(name) {
            return Err(StorageError::InvalidConfig(format!(
                "pointer '{pointer}' names neither a checkpoint directory \
                 (<checkpoint-dir>/<job-id>/chk-<n>) nor a savepoint directory \
                 (savepoint-<job>-<random>); refusing to delete it"
            )));
        }
        persist::remove_location_dir(dir)?;
        tracing::debug!("disposed {}", dir.display());
        Ok(())
    }
}

impl CheckpointStorage for MemoryStorage {
    fn info(&self) -> StorageInfo {
        let (capabilities, location) = match &self.config.checkpoint_dir {
            None => (MANIFEST_CAPABILITIES, "memory".to_string()),
            Some(dir) => (
                MANIFEST_CAPABILITIES | Capabilities::PERSISTENT,
                format!("memory (metadata in {})", dir.display()),
            ),
        };
        StorageInfo {
            capabilities,
            inline_threshold: self.config.max_state_size,
            max_state_size: Some(self.config.max_state_size),
            location,
        }
    }

    fn job(&self, job_id: &str) -> StorageResult<Box<dyn JobStorage>> {
        validate_job_id(job_id)?;
        let state = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            match jobs.get(job_id) {
                Some(state) => state.clone(),
                None => {
                    // Created once per job and instance: this is where the job's directory is
                    // made, never when a stream is created.
                    let state = Arc::new(JobState::create(
                        job_id,
                        self.config.checkpoint_dir.as_deref(),
                    )?);
                    jobs.insert(job_id.to_string(), state.clone());
                    state
                }
            }
        };
        Ok(Box::new(MemoryJob::new(self.config.clone(), state)))
    }

    fn resolve(&self, pointer: &str) -> StorageResult<ResolvedCheckpoint> {
        match Pointer::parse(pointer)? {
            Pointer::Memory {
                job_id,
                checkpoint_id,
            } => {
                let metadata = self
                    .known_job(&job_id)
                    .and_then(|job| job.completed().get(&checkpoint_id).cloned());
                match metadata {
                    Some(metadata) => Ok(ResolvedCheckpoint {
                        pointer: pointer.to_string(),
                        metadata,
                    }),
                    None => Err(StorageError::NotFound(format!(
                        "{pointer}: no completed checkpoint with this pointer in this storage \
                         instance; memory checkpoints do not outlive the process that took \
                         them (set storage.options.checkpoint-dir to persist their metadata)"
                    ))),
                }
            }
            Pointer::Dir(dir) => {
                let metadata = persist::read(&dir)?;
                Ok(ResolvedCheckpoint {
                    pointer: dir.display().to_string(),
                    metadata,
                })
            }
        }
    }

    fn open_handle(&self, handle: &StateHandle) -> StorageResult<Box<dyn InputStream>> {
        match handle {
            StateHandle::Inline(bytes) => Ok(Box::new(InlineInput::new(bytes.clone()))),
            StateHandle::Stored { .. } => Err(stored_handle_error(handle)),
        }
    }

    fn discard(&self, handle: &StateHandle) -> StorageResult<()> {
        match handle {
            // The bytes live in the metadata that holds the handle; nothing to delete.
            StateHandle::Inline(_) => Ok(()),
            StateHandle::Stored { .. } => Err(stored_handle_error(handle)),
        }
    }

    fn dispose(&self, pointer: &str) -> StorageResult<()> {
        match Pointer::parse(pointer)? {
            Pointer::Memory {
                job_id,
                checkpoint_id,
            } => {
                if let Some(job) = self.known_job(&job_id) {
                    job.completed().remove(&checkpoint_id);
                }
                Ok(())
            }
            Pointer::Dir(dir) => self.dispose_dir(pointer, &dir),
        }
    }

    fn corrupt_for_testing(&self, handle: &StateHandle) -> StorageResult<()> {
        Err(StorageError::Unsupported(format!(
            "the memory backend stores no bytes outside the metadata, so {} cannot be damaged \
             on its own (the metadata's checksum covers inline state)",
            handle.describe()
        )))
    }
}

/// The memory backend never writes stored handles, so one that reaches it was written by
/// another backend. `Unsupported` says so; `NotFound` would read as lost state, and a silent
/// `Ok` from `discard` would leak the other backend's files.
fn stored_handle_error(handle: &StateHandle) -> StorageError {
    StorageError::Unsupported(format!(
        "{}: the memory backend keeps all state inline and has no stored handles; this handle \
         was written by another backend, so open or discard it with that backend",
        handle.describe()
    ))
}
