//! The storage, job and checkpoint-location objects: everything that creates, commits, lists
//! and deletes files and directories.
//!
//! The filesystem is the only state. The objects hold paths and settings, never a lock or a
//! cache, so many threads can use one instance at once (the traits require `Send + Sync`), two
//! instances on one root see the same checkpoints, and a new process finds everything an old
//! one committed.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use cairn_plugin_api::{
    CheckpointLocation, CheckpointStorage, CompletedCheckpoint, InlineInput, InputStream,
    JobStorage, OutputStream, ResolvedCheckpoint, Scope, StateHandle, StorageError, StorageInfo,
    StorageResult, StoredObject,
};

use crate::{
    layout::{self, METADATA_FILE, SHARED_DIR, TASK_OWNED_DIR},
    stream::{DirInput, DirOutput},
    Options, CAPABILITIES,
};

/// What every object of one opened instance shares.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The root directory: absolute, canonical and valid UTF-8 (pointers are strings).
    pub(crate) root: PathBuf,
    /// Streams of at most this many bytes give inline handles.
    pub(crate) inline_threshold: u64,
}

/// The opened storage: the plugin's [`CheckpointStorage`].
#[derive(Debug)]
pub(crate) struct DirStorage {
    settings: Arc<Settings>,
}

impl DirStorage {
    /// Create the root directory if needed, and settle the options.
    pub(crate) fn open(options: &Options) -> StorageResult<Self> {
        let root = &options.root;
        fs::create_dir_all(root).map_err(|e| {
            StorageError::io(
                format_args!("storage.options.root: creating {}", root.display()),
                &e,
            )
        })?;
        // Canonical, so that pointers are absolute and compare equal however `root` was spelt.
        let root = fs::canonicalize(root).map_err(|e| {
            StorageError::io(
                format_args!("storage.options.root: resolving {}", root.display()),
                &e,
            )
        })?;
        if root.to_str().is_none() {
            return Err(StorageError::InvalidConfig(format!(
                "storage.options.root: {} is not valid UTF-8",
                root.display()
            )));
        }
        Ok(Self {
            settings: Arc::new(Settings {
                root,
                inline_threshold: options.inline_threshold,
            }),
        })
    }

    /// The path of a stored handle's file; inline handles have none.
    fn stored_path(&self, handle: &StateHandle) -> StorageResult<Option<PathBuf>> {
        match handle {
            StateHandle::Inline(_) => Ok(None),
            StateHandle::Stored { locator, .. } => {
                layout::locator_path(&self.settings.root, locator).map(Some)
            }
        }
    }
}

impl CheckpointStorage for DirStorage {
    fn info(&self) -> StorageInfo {
        StorageInfo {
            capabilities: CAPABILITIES,
            inline_threshold: self.settings.inline_threshold,
            max_state_size: None,
            location: self.settings.root.display().to_string(),
        }
    }

    fn job(&self, job_id: &str) -> StorageResult<Box<dyn JobStorage>> {
        layout::check_job_id(job_id)?;
        let dir = self.settings.root.join(job_id);
        // The job's base directories are created here, once; streams never create directories.
        for sub in [SHARED_DIR, TASK_OWNED_DIR] {
            let path = dir.join(sub);
            fs::create_dir_all(&path)
                .map_err(|e| StorageError::io(format_args!("creating {}", path.display()), &e))?;
        }
        sync_dir(&self.settings.root)?;
        sync_dir(&dir)?;
        Ok(Box::new(DirJob {
            settings: self.settings.clone(),
            job_id: job_id.to_string(),
            dir,
        }))
    }

    fn resolve(&self, pointer: &str) -> StorageResult<ResolvedCheckpoint> {
        let (job_id, id) = layout::parse_pointer(&self.settings.root, pointer)?;
        let dir = checkpoint_dir(&self.settings.root, &job_id, id);
        let path = dir.join(METADATA_FILE);
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            // No `_metadata`: never committed, or disposed. Either way, not a checkpoint.
            io::ErrorKind::NotFound => {
                StorageError::NotFound(format!("no completed checkpoint at {pointer}"))
            }
            _ => StorageError::io(format_args!("reading {}", path.display()), &e),
        })?;
        Ok(ResolvedCheckpoint {
            pointer: pointer_of(&dir),
            metadata: decode_metadata(&bytes, &path)?,
        })
    }

    fn open_handle(&self, handle: &StateHandle) -> StorageResult<Box<dyn InputStream>> {
        let (locator, size, crc32c) = match handle {
            StateHandle::Inline(bytes) => return Ok(Box::new(InlineInput::new(bytes.clone()))),
            StateHandle::Stored {
                locator,
                size,
                crc32c,
            } => (locator, *size, *crc32c),
        };
        let path = layout::locator_path(&self.settings.root, locator)?;
        // A missing file is `NotFound` (for example a discarded handle), naming the handle.
        let file = File::open(&path).map_err(|e| {
            StorageError::io(
                format_args!("{}: opening {}", handle.describe(), path.display()),
                &e,
            )
        })?;
        Ok(Box::new(DirInput::new(
            file,
            handle.describe(),
            size,
            crc32c,
        )))
    }

    fn discard(&self, handle: &StateHandle) -> StorageResult<()> {
        let Some(path) = self.stored_path(handle)? else {
            return Ok(()); // inline state lives in the metadata; nothing to delete
        };
        remove_file_if_present(&path)
    }

    fn dispose(&self, pointer: &str) -> StorageResult<()> {
        let (job_id, id) = layout::parse_pointer(&self.settings.root, pointer)?;
        let dir = checkpoint_dir(&self.settings.root, &job_id, id);
        // `_metadata` first: from this instant the checkpoint no longer exists, even if removing
        // its state fails half-way. The directory holds only this checkpoint's EXCLUSIVE state
        // (SHARED state lives in `shared/`, left to the host's registry).
        remove_file_if_present(&dir.join(METADATA_FILE))?;
        remove_dir_if_present(&dir)
    }

    fn corrupt_for_testing(&self, handle: &StateHandle) -> StorageResult<()> {
        let Some(path) = self.stored_path(handle)? else {
            return Err(StorageError::Unsupported(format!(
                "{} carries its bytes itself; only stored handles can be damaged",
                handle.describe()
            )));
        };
        let describe = |e: io::Error| {
            StorageError::io(
                format_args!("{}: damaging {}", handle.describe(), path.display()),
                &e,
            )
        };
        let mut bytes = fs::read(&path).map_err(describe)?;
        let middle = bytes.len() / 2;
        let Some(byte) = bytes.get_mut(middle) else {
            return Err(StorageError::Corrupt(format!(
                "{}: the file is empty",
                handle.describe()
            )));
        };
        *byte ^= 0x01;
        fs::write(&path, &bytes).map_err(describe)
    }
}

/// One job's checkpoints, under `<root>/<job-id>`.
#[derive(Debug)]
struct DirJob {
    settings: Arc<Settings>,
    job_id: String,
    dir: PathBuf,
}

impl JobStorage for DirJob {
    fn begin_checkpoint(&self, checkpoint_id: u64) -> StorageResult<Box<dyn CheckpointLocation>> {
        let dir = checkpoint_dir(&self.settings.root, &self.job_id, checkpoint_id);
        if exists(&dir.join(METADATA_FILE))? {
            return Err(StorageError::AlreadyExists(format!(
                "checkpoint {checkpoint_id} of job {} is already committed at {}",
                self.job_id,
                dir.display()
            )));
        }
        fs::create_dir_all(&dir)
            .map_err(|e| StorageError::io(format_args!("creating {}", dir.display()), &e))?;
        Ok(Box::new(DirLocation {
            settings: self.settings.clone(),
            job_id: self.job_id.clone(),
            job_dir: self.dir.clone(),
            checkpoint_id,
            dir,
        }))
    }

    fn begin_savepoint(
        &self,
        _checkpoint_id: u64,
        _target: Option<&str>,
    ) -> StorageResult<Box<dyn CheckpointLocation>> {
        Err(StorageError::Unsupported(
            "the example-dir plugin does not write savepoints; use the filesystem plugin for them"
                .to_string(),
        ))
    }

    fn create_task_owned_stream(&self) -> StorageResult<Box<dyn OutputStream>> {
        Ok(Box::new(DirOutput::new(
            self.settings.clone(),
            self.dir.join(TASK_OWNED_DIR),
            format!("{}/{TASK_OWNED_DIR}", self.job_id),
        )))
    }

    fn list_completed(&self) -> StorageResult<Vec<CompletedCheckpoint>> {
        let mut completed = Vec::new();
        for name in list_dir(&self.dir)? {
            let Some(checkpoint_id) = layout::parse_checkpoint_dir_name(&name) else {
                continue;
            };
            let dir = self.dir.join(&name);
            // Only a committed location has `_metadata`; anything else is not listed.
            if exists(&dir.join(METADATA_FILE))? {
                completed.push(CompletedCheckpoint {
                    checkpoint_id,
                    pointer: pointer_of(&dir),
                });
            }
        }
        completed.sort_by_key(|c| c.checkpoint_id);
        Ok(completed)
    }

    fn list_uncommitted(&self) -> StorageResult<Vec<u64>> {
        // A `chk-<n>` directory without `_metadata` was begun and never committed. The host's
        // garbage collection removes it with begin_checkpoint(n) + dispose_on_failure().
        let mut ids = Vec::new();
        for name in list_dir(&self.dir)? {
            if let Some(checkpoint_id) = layout::parse_checkpoint_dir_name(&name) {
                if !exists(&self.dir.join(&name).join(METADATA_FILE))? {
                    ids.push(checkpoint_id);
                }
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn list_objects(&self) -> StorageResult<Vec<StoredObject>> {
        let mut objects = Vec::new();
        for place in list_dir(&self.dir)? {
            let is_state_dir = place == SHARED_DIR
                || place == TASK_OWNED_DIR
                || layout::parse_checkpoint_dir_name(&place).is_some();
            if !is_state_dir {
                continue;
            }
            let dir = self.dir.join(&place);
            for name in list_dir(&dir)? {
                if !layout::is_state_file_name(&name) {
                    continue; // `_metadata` and its temporary files are not state
                }
                let path = dir.join(&name);
                let size = match fs::metadata(&path) {
                    Ok(meta) => meta.len(),
                    // Deleted between the listing and now: it is not stored any more.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(StorageError::io(
                            format_args!("reading {}", path.display()),
                            &e,
                        ))
                    }
                };
                objects.push(StoredObject {
                    locator: format!("{}/{place}/{name}", self.job_id),
                    size,
                });
            }
        }
        objects.sort();
        Ok(objects)
    }
}

/// Where checkpoint `checkpoint_id` of one job goes: `<root>/<job-id>/chk-<n>`.
#[derive(Debug)]
struct DirLocation {
    settings: Arc<Settings>,
    job_id: String,
    job_dir: PathBuf,
    checkpoint_id: u64,
    dir: PathBuf,
}

impl CheckpointLocation for DirLocation {
    fn create_stream(&self, scope: Scope) -> StorageResult<Box<dyn OutputStream>> {
        let (dir, place) = match scope {
            Scope::Exclusive => (
                self.dir.clone(),
                layout::checkpoint_dir_name(self.checkpoint_id),
            ),
            Scope::Shared => (self.job_dir.join(SHARED_DIR), SHARED_DIR.to_string()),
        };
        Ok(Box::new(DirOutput::new(
            self.settings.clone(),
            dir,
            format!("{}/{place}", self.job_id),
        )))
    }

    fn commit(&self, metadata: &[u8]) -> StorageResult<CompletedCheckpoint> {
        let target = self.dir.join(METADATA_FILE);
        let temp = self.dir.join(format!(
            "{METADATA_FILE}.tmp-{}",
            layout::new_state_file_name()
        ));
        write_synced(&temp, &encode_metadata(metadata))?;
        // Every state file was synced when its stream closed. Sync the directories that name
        // them too, so that after a crash a committed checkpoint never points at a lost file.
        for dir in [
            &self.dir,
            &self.job_dir.join(SHARED_DIR),
            &self.job_dir.join(TASK_OWNED_DIR),
            &self.job_dir,
        ] {
            sync_dir(dir)?;
        }
        // The commit point. `hard_link` fails if `_metadata` exists, so two commits (from two
        // threads or two processes) cannot both succeed, and `_metadata` appears complete or
        // not at all.
        let linked = fs::hard_link(&temp, &target);
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StorageError::AlreadyExists(format!(
                    "checkpoint {} of job {} is already committed at {}",
                    self.checkpoint_id,
                    self.job_id,
                    target.display()
                )))
            }
            Err(e) => {
                return Err(StorageError::io(
                    format_args!("committing {}", target.display()),
                    &e,
                ))
            }
        }
        sync_dir(&self.dir)?;
        Ok(CompletedCheckpoint {
            checkpoint_id: self.checkpoint_id,
            pointer: pointer_of(&self.dir),
        })
    }

    fn dispose_on_failure(&self) -> StorageResult<()> {
        if exists(&self.dir.join(METADATA_FILE))? {
            return Err(StorageError::AlreadyExists(format!(
                "checkpoint {} of job {} is committed; dispose it by its pointer {}",
                self.checkpoint_id,
                self.job_id,
                pointer_of(&self.dir)
            )));
        }
        remove_dir_if_present(&self.dir)
    }
}

/// `<root>/<job-id>/chk-<n>`, for a job id that was checked.
fn checkpoint_dir(root: &Path, job_id: &str, checkpoint_id: u64) -> PathBuf {
    root.join(job_id)
        .join(layout::checkpoint_dir_name(checkpoint_id))
}

/// The pointer of a checkpoint directory: its path (valid UTF-8, because the root is).
fn pointer_of(dir: &Path) -> String {
    dir.to_string_lossy().into_owned()
}

/// The first bytes of every `_metadata` file, with the format version in the last digit.
const METADATA_MAGIC: &[u8; 8] = b"CAIRNEX1";
/// Magic, CRC32C (4 bytes) and length (8 bytes), little-endian.
const METADATA_HEADER_LEN: usize = 8 + 4 + 8;

/// Frame metadata so that a torn or edited `_metadata` is detected: magic, CRC32C, length.
fn encode_metadata(metadata: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(METADATA_HEADER_LEN + metadata.len());
    out.extend_from_slice(METADATA_MAGIC);
    out.extend_from_slice(&crc32c::crc32c(metadata).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    out.extend_from_slice(metadata);
    out
}

/// The metadata inside a `_metadata` file, or `Corrupt` naming the file.
fn decode_metadata(file: &[u8], path: &Path) -> StorageResult<Vec<u8>> {
    let corrupt = |why: String| StorageError::Corrupt(format!("{}: {why}", path.display()));
    if file.len() < METADATA_HEADER_LEN || &file[..8] != METADATA_MAGIC {
        return Err(corrupt("not an example-dir metadata file".to_string()));
    }
    let crc = u32::from_le_bytes(file[8..12].try_into().expect("4 bytes"));
    let len = u64::from_le_bytes(file[12..20].try_into().expect("8 bytes"));
    let body = &file[METADATA_HEADER_LEN..];
    if body.len() as u64 != len {
        return Err(corrupt(format!(
            "the header says {len} bytes of metadata, the file holds {}",
            body.len()
        )));
    }
    let actual = crc32c::crc32c(body);
    if actual != crc {
        return Err(corrupt(format!(
            "checksum mismatch: expected crc32c {crc:08x}, the bytes have {actual:08x}"
        )));
    }
    Ok(body.to_vec())
}

/// Write a new file and sync it to disk. Fails if the file exists.
fn write_synced(path: &Path, bytes: &[u8]) -> StorageResult<()> {
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        });
    result.map_err(|e| StorageError::io(format_args!("writing {}", path.display()), &e))
}

/// Sync a directory, which makes the names created or removed in it durable. A failed sync is
/// an error and is not retried: after a failed fsync the kernel may have dropped the data.
fn sync_dir(dir: &Path) -> StorageResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(format_args!("syncing directory {}", dir.display()), &e))
}

/// Whether a path exists, with errors other than "not found" reported.
fn exists(path: &Path) -> StorageResult<bool> {
    path.try_exists()
        .map_err(|e| StorageError::io(format_args!("checking {}", path.display()), &e))
}

/// The names in a directory, or none if it does not exist.
fn list_dir(dir: &Path) -> StorageResult<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(StorageError::io(
                format_args!("listing {}", dir.display()),
                &e,
            ))
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| StorageError::io(format_args!("listing {}", dir.display()), &e))?;
        // Names this plugin writes are ASCII; anything else is not ours.
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// Delete a file; one that is already gone is success.
fn remove_file_if_present(path: &Path) -> StorageResult<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StorageError::io(
            format_args!("deleting {}", path.display()),
            &e,
        )),
        _ => Ok(()),
    }
}

/// Delete a checkpoint directory and what is in it; one that is already gone is success. Only
/// called with `<root>/<job-id>/chk-<n>` paths built from checked names.
fn remove_dir_if_present(dir: &Path) -> StorageResult<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StorageError::io(
            format_args!("deleting {}", dir.display()),
            &e,
        )),
        _ => Ok(()),
    }
}
