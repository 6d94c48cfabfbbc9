//! Per-job access ([`FsJob`]) and checkpoint and savepoint locations ([`FsLocation`]).
//!
//! # Commit and durability
//!
//! A location's commit is [`metafile::commit`](cairn_storage_shared::metafile::commit): `_metadata` appears atomically and at most once.
//! Before it, the location fsyncs the directories whose entries the metadata may refer to (the
//! location itself, its parent, and for checkpoints the job's `shared/` and `taskowned/`), so
//! that after a power failure a committed `_metadata` never points at a state file whose
//! directory entry was lost. State files themselves are fsynced when their stream closes.
//!
//! # Crashed attempts
//!
//! `begin_checkpoint` reuses a `chk-<n>` directory left uncommitted by a crashed attempt (its
//! stray files have fresh random names, so they cannot collide) and refuses a committed one.

use std::{fs, io, path::PathBuf, sync::Arc};

use cairn_plugin_api::{
    CheckpointLocation, CompletedCheckpoint, JobStorage, OutputStream, Scope, StorageResult,
    StoredObject,
};

use cairn_storage_shared::metafile;

use crate::{
    error::{FsError, FsResult},
    layout::{self, StreamDir, SHARED_DIR, TASK_OWNED_DIR},
    storage::{path_string, remove_location, Settings},
    stream::FsOutputStream,
};

/// One job's checkpoints, under `<dir>/<job-id>/`.
#[derive(Debug)]
pub(crate) struct FsJob {
    settings: Arc<Settings>,
    job_id: String,
    job_dir: PathBuf,
}

impl FsJob {
    /// Access to a job whose id was validated and whose directories exist.
    pub(crate) fn new(settings: Arc<Settings>, job_id: String, job_dir: PathBuf) -> Self {
        FsJob {
            settings,
            job_id,
            job_dir,
        }
    }

    fn begin_checkpoint_inner(&self, checkpoint_id: u64) -> FsResult<FsLocation> {
        let base = &self.settings.base;
        let exclusive = StreamDir::checkpoint(base, &self.job_id, checkpoint_id);
        let dir = exclusive.dir.clone();
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if metafile::is_committed(&dir) {
                    return Err(FsError::AlreadyCommitted {
                        path: dir,
                        id: checkpoint_id,
                    });
                }
                if !dir.is_dir() {
                    return Err(FsError::io(
                        format!("creating checkpoint directory {}", dir.display()),
                        e,
                    ));
                }
                tracing::debug!(dir = %dir.display(), "reusing the directory of an uncommitted attempt");
            }
            Err(e) => {
                return Err(FsError::io(
                    format!("creating checkpoint directory {}", dir.display()),
                    e,
                ))
            }
        }
        Ok(FsLocation {
            settings: self.settings.clone(),
            checkpoint_id,
            dir: dir.clone(),
            shared: StreamDir::shared(base, &self.job_id),
            exclusive,
            sync_before_commit: vec![
                dir,
                self.job_dir.clone(),
                self.job_dir.join(SHARED_DIR),
                self.job_dir.join(TASK_OWNED_DIR),
            ],
        })
    }

    fn begin_savepoint_inner(
        &self,
        checkpoint_id: u64,
        target: Option<&str>,
    ) -> FsResult<FsLocation> {
        let target = match target {
            Some(t) => {
                let invalid = |why: &str| FsError::InvalidSavepointTarget {
                    target: t.to_string(),
                    why: why.to_string(),
                };
                if t.trim().is_empty() {
                    return Err(invalid("it is empty: give a directory path"));
                }
                if t.contains('\0') {
                    return Err(invalid("it contains a NUL byte"));
                }
                std::path::absolute(t)
                    .map_err(|e| FsError::io(format!("making savepoint target {t} absolute"), e))?
            }
            None => self
                .settings
                .savepoint_dir
                .clone()
                .ok_or(FsError::NoSavepointTarget)?,
        };
        fs::create_dir_all(&target).map_err(|e| {
            FsError::io(format!("creating savepoint target {}", target.display()), e)
        })?;
        let target = fs::canonicalize(&target).map_err(|e| {
            FsError::io(
                format!("resolving savepoint target {}", target.display()),
                e,
            )
        })?;
        if target.to_str().is_none() {
            return Err(FsError::InvalidSavepointTarget {
                target: path_string(&target),
                why: "it is not valid UTF-8: use a UTF-8 path".into(),
            });
        }
        let dir = target.join(layout::new_savepoint_dir_name(&self.job_id));
        fs::create_dir(&dir).map_err(|e| {
            FsError::io(format!("creating savepoint directory {}", dir.display()), e)
        })?;
        let here = StreamDir::savepoint(&dir);
        Ok(FsLocation {
            settings: self.settings.clone(),
            checkpoint_id,
            dir: dir.clone(),
            exclusive: here.clone(),
            // A savepoint is self-contained: its SHARED state goes into its own directory.
            shared: here,
            sync_before_commit: vec![dir, target],
        })
    }

    fn list_completed_inner(&self) -> FsResult<Vec<CompletedCheckpoint>> {
        let entries = match fs::read_dir(&self.job_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(FsError::io(
                    format!("listing {}", self.job_dir.display()),
                    e,
                ))
            }
        };
        let mut completed = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| FsError::io(format!("listing {}", self.job_dir.display()), e))?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(layout::parse_checkpoint_dir_name)
            else {
                continue;
            };
            let path = entry.path();
            if metafile::is_committed(&path) {
                completed.push(CompletedCheckpoint {
                    checkpoint_id: id,
                    pointer: path_string(&path),
                });
            }
        }
        completed.sort_by_key(|c| c.checkpoint_id);
        Ok(completed)
    }

    /// State files in `dir` (none if it does not exist), named by `locator_prefix`.
    fn state_files_in(
        dir: &std::path::Path,
        locator_prefix: &str,
        out: &mut Vec<StoredObject>,
    ) -> FsResult<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(FsError::io(format!("listing {}", dir.display()), e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| FsError::io(format!("listing {}", dir.display()), e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| layout::is_state_file_name(n)) else {
                continue;
            };
            let meta = entry
                .metadata()
                .map_err(|e| FsError::io(format!("reading {}", entry.path().display()), e))?;
            if meta.is_file() {
                out.push(StoredObject {
                    locator: format!("{locator_prefix}{name}"),
                    size: meta.len(),
                });
            }
        }
        Ok(())
    }

    /// `chk-<n>` directories without a committed `_metadata`.
    fn list_uncommitted_inner(&self) -> FsResult<Vec<u64>> {
        let entries = match fs::read_dir(&self.job_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(FsError::io(
                    format!("listing {}", self.job_dir.display()),
                    e,
                ))
            }
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| FsError::io(format!("listing {}", self.job_dir.display()), e))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(layout::parse_checkpoint_dir_name)
            {
                if entry.path().is_dir() && !metafile::is_committed(&entry.path()) {
                    ids.push(id);
                }
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn list_objects_inner(&self) -> FsResult<Vec<StoredObject>> {
        let base = &self.settings.base;
        let mut out = Vec::new();
        let dirs = [
            StreamDir::shared(base, &self.job_id),
            StreamDir::task_owned(base, &self.job_id),
        ];
        for d in &dirs {
            Self::state_files_in(&d.dir, &d.locator_prefix, &mut out)?;
        }
        let entries = match fs::read_dir(&self.job_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(FsError::io(
                    format!("listing {}", self.job_dir.display()),
                    e,
                ))
            }
        };
        for entry in entries {
            let entry =
                entry.map_err(|e| FsError::io(format!("listing {}", self.job_dir.display()), e))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(layout::parse_checkpoint_dir_name)
            {
                let d = StreamDir::checkpoint(base, &self.job_id, id);
                Self::state_files_in(&d.dir, &d.locator_prefix, &mut out)?;
            }
        }
        out.sort();
        Ok(out)
    }
}

impl JobStorage for FsJob {
    fn begin_checkpoint(&self, checkpoint_id: u64) -> StorageResult<Box<dyn CheckpointLocation>> {
        Ok(Box::new(self.begin_checkpoint_inner(checkpoint_id)?))
    }

    fn begin_savepoint(
        &self,
        checkpoint_id: u64,
        target: Option<&str>,
    ) -> StorageResult<Box<dyn CheckpointLocation>> {
        Ok(Box::new(self.begin_savepoint_inner(checkpoint_id, target)?))
    }

    fn create_task_owned_stream(&self) -> StorageResult<Box<dyn OutputStream>> {
        let target = StreamDir::task_owned(&self.settings.base, &self.job_id);
        Ok(Box::new(FsOutputStream::new(
            &target,
            self.settings.inline_threshold,
            self.settings.write_buffer,
        )))
    }

    fn list_completed(&self) -> StorageResult<Vec<CompletedCheckpoint>> {
        Ok(self.list_completed_inner()?)
    }

    fn list_objects(&self) -> StorageResult<Vec<StoredObject>> {
        Ok(self.list_objects_inner()?)
    }

    fn list_uncommitted(&self) -> StorageResult<Vec<u64>> {
        Ok(self.list_uncommitted_inner()?)
    }
}

/// Where one checkpoint or savepoint goes.
#[derive(Debug)]
pub(crate) struct FsLocation {
    settings: Arc<Settings>,
    checkpoint_id: u64,
    /// The location directory, which receives `_metadata`.
    dir: PathBuf,
    /// Where EXCLUSIVE streams go.
    exclusive: StreamDir,
    /// Where SHARED streams go.
    shared: StreamDir,
    /// Directories to fsync before the commit (see the module docs).
    sync_before_commit: Vec<PathBuf>,
}

impl FsLocation {
    fn commit_inner(&self, metadata: &[u8]) -> FsResult<CompletedCheckpoint> {
        if metafile::is_committed(&self.dir) {
            return Err(FsError::AlreadyCommitted {
                path: self.dir.clone(),
                id: self.checkpoint_id,
            });
        }
        if !self.dir.is_dir() {
            return Err(FsError::io(
                format!(
                    "committing to {} (was the location disposed?)",
                    self.dir.display()
                ),
                io::Error::from(io::ErrorKind::NotFound),
            ));
        }
        for dir in &self.sync_before_commit {
            metafile::sync_dir(dir)?;
        }
        metafile::commit(&self.dir, metadata)?;
        Ok(CompletedCheckpoint {
            checkpoint_id: self.checkpoint_id,
            pointer: path_string(&self.dir),
        })
    }
}

impl CheckpointLocation for FsLocation {
    fn create_stream(&self, scope: Scope) -> StorageResult<Box<dyn OutputStream>> {
        let target = match scope {
            Scope::Exclusive => &self.exclusive,
            Scope::Shared => &self.shared,
        };
        Ok(Box::new(FsOutputStream::new(
            target,
            self.settings.inline_threshold,
            self.settings.write_buffer,
        )))
    }

    fn commit(&self, metadata: &[u8]) -> StorageResult<CompletedCheckpoint> {
        Ok(self.commit_inner(metadata)?)
    }

    fn dispose_on_failure(&self) -> StorageResult<()> {
        Ok(remove_location(&self.dir, false)?)
    }
}
