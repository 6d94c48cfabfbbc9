//! The opened storage: [`FsStorage`], the plugin's [`CheckpointStorage`].
//!
//! It holds the validated settings (shared with every job, location and stream through an
//! `Arc`) and implements the calls that work from a pointer or a handle alone: `resolve`,
//! `open_handle`, `discard` and `dispose`. Those only read the filesystem and the string they
//! are given, so they work the same from a fresh process.
//!
//! Deleting is deliberately narrow. [`remove_location`] removes only entries this plugin writes
//! (`_metadata`, its temporary files and generated state files) and then the empty directory; a
//! directory holding anything else is refused before anything is removed. `dispose` also insists
//! that the pointer is one of this storage's `<dir>/<job>/chk-<n>` directories or a directory
//! named like a savepoint, so a wrong pointer cannot delete a user's files.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::Arc,
};

use cairn_plugin_api::{
    CheckpointStorage, InlineInput, InputStream, JobStorage, ResolvedCheckpoint, StateHandle,
    StorageError, StorageInfo, StorageResult,
};

use cairn_storage_shared::metafile::{self, METADATA_FILE, TEMP_PREFIX};

use crate::{
    error::{FsError, FsResult},
    job::FsJob,
    layout::{self, SHARED_DIR, TASK_OWNED_DIR},
    options::Options,
    stream::FsInputStream,
    CAPABILITIES,
};

/// The configuration every object of one storage instance shares.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The checkpoint base directory: absolute, canonical and UTF-8.
    pub(crate) base: PathBuf,
    /// The default savepoint target: absolute, maybe not existing yet.
    pub(crate) savepoint_dir: Option<PathBuf>,
    /// Streams of at most this many bytes give inline handles.
    pub(crate) inline_threshold: u64,
    /// Bytes a stream buffers before it writes to its file.
    pub(crate) write_buffer: u64,
}

/// The filesystem checkpoint storage.
#[derive(Debug)]
pub(crate) struct FsStorage {
    settings: Arc<Settings>,
}

impl FsStorage {
    /// Open the storage: make `dir` absolute, create it, and settle the other options.
    pub(crate) fn open(options: Options) -> FsResult<Self> {
        let absolute = std::path::absolute(&options.dir).map_err(|e| {
            FsError::io(
                format!(
                    "storage.options.dir: making {} absolute",
                    options.dir.display()
                ),
                e,
            )
        })?;
        fs::create_dir_all(&absolute).map_err(|e| {
            FsError::io(
                format!("storage.options.dir: creating {}", absolute.display()),
                e,
            )
        })?;
        let base = fs::canonicalize(&absolute).map_err(|e| {
            FsError::io(
                format!("storage.options.dir: resolving {}", absolute.display()),
                e,
            )
        })?;
        if base.to_str().is_none() {
            return Err(FsError::InvalidOption {
                key: "dir",
                detail: format!("= {} is not valid UTF-8: use a UTF-8 path", base.display()),
            });
        }
        let savepoint_dir = options
            .savepoint_dir
            .map(|dir| {
                std::path::absolute(&dir).map_err(|e| {
                    FsError::io(
                        format!(
                            "storage.options.savepoint-dir: making {} absolute",
                            dir.display()
                        ),
                        e,
                    )
                })
            })
            .transpose()?;
        tracing::debug!(base = %base.display(), "filesystem checkpoint storage opened");
        Ok(FsStorage {
            settings: Arc::new(Settings {
                base,
                savepoint_dir,
                inline_threshold: options.inline_threshold,
                write_buffer: options.write_buffer,
            }),
        })
    }

    fn job_inner(&self, job_id: &str) -> FsResult<FsJob> {
        layout::validate_job_id(job_id)?;
        let job_dir = self.settings.base.join(job_id);
        // Created once here; streams never create directories.
        for dir in [job_dir.join(SHARED_DIR), job_dir.join(TASK_OWNED_DIR)] {
            fs::create_dir_all(&dir)
                .map_err(|e| FsError::io(format!("creating {}", dir.display()), e))?;
        }
        Ok(FsJob::new(
            self.settings.clone(),
            job_id.to_string(),
            job_dir,
        ))
    }

    fn resolve_inner(&self, pointer: &str) -> FsResult<ResolvedCheckpoint> {
        let dir = layout::pointer_dir(pointer)?;
        if !dir.is_dir() {
            return Err(FsError::io(
                format!("no checkpoint at {}", dir.display()),
                io::Error::from(io::ErrorKind::NotFound),
            ));
        }
        let metadata = metafile::read(&dir)?;
        Ok(ResolvedCheckpoint {
            pointer: path_string(&dir),
            metadata,
        })
    }

    fn open_inner(&self, handle: &StateHandle) -> FsResult<Box<dyn InputStream>> {
        match handle {
            StateHandle::Inline(bytes) => Ok(Box::new(InlineInput::new(bytes.clone()))),
            StateHandle::Stored {
                locator,
                size,
                crc32c,
            } => {
                let path = layout::locator_path(&self.settings.base, locator)?;
                Ok(Box::new(FsInputStream::open(
                    path, locator, *size, *crc32c,
                )?))
            }
        }
    }

    /// Flip the lowest bit of the middle byte of a stored handle's file, in place.
    fn corrupt_inner(&self, handle: &StateHandle) -> FsResult<()> {
        use std::io::{Read, Seek, SeekFrom, Write};
        let StateHandle::Stored { locator, .. } = handle else {
            return Err(FsError::Storage(StorageError::Unsupported(
                "an inline handle has no stored bytes to corrupt; its bytes live in the metadata"
                    .to_string(),
            )));
        };
        let path = layout::locator_path(&self.settings.base, locator)?;
        let what = || format!("corrupting handle '{locator}' ({})", path.display());
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| FsError::io(what(), e))?;
        let len = file.metadata().map_err(|e| FsError::io(what(), e))?.len();
        if len == 0 {
            return Err(FsError::io(what(), io::Error::other("the file is empty")));
        }
        let at = len / 2;
        let mut byte = [0u8; 1];
        file.seek(SeekFrom::Start(at))
            .and_then(|_| file.read_exact(&mut byte))
            .and_then(|_| file.seek(SeekFrom::Start(at)))
            .and_then(|_| file.write_all(&[byte[0] ^ 0x01]))
            .and_then(|_| file.sync_all())
            .map_err(|e| FsError::io(what(), e))
    }

    fn discard_inner(&self, handle: &StateHandle) -> FsResult<()> {
        let StateHandle::Stored { locator, .. } = handle else {
            return Ok(());
        };
        let path = layout::locator_path(&self.settings.base, locator)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(FsError::io(
                format!("discarding handle '{locator}' ({})", path.display()),
                e,
            )),
        }
    }

    fn dispose_inner(&self, pointer: &str) -> FsResult<()> {
        let dir = layout::pointer_dir(pointer)?;
        let refuse = || FsError::InvalidPointer {
            pointer: pointer.to_string(),
            why: format!(
                "it is neither a checkpoint directory of this storage ({}/<job>/chk-<n>) nor a \
                 savepoint directory (savepoint-<job>-<hex>); refusing to delete it",
                self.settings.base.display()
            ),
        };
        // Judge the real directory, not a symlink to it.
        let real = match fs::canonicalize(&dir) {
            Ok(real) => real,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Already gone is success, but only for something we could have deleted.
                return match layout::classify_location(&self.settings.base, &dir) {
                    Some(_) => Ok(()),
                    None => Err(refuse()),
                };
            }
            Err(e) => return Err(FsError::io(format!("resolving {}", dir.display()), e)),
        };
        if layout::classify_location(&self.settings.base, &real).is_none() {
            return Err(refuse());
        }
        remove_location(&real, true)
    }
}

impl CheckpointStorage for FsStorage {
    fn info(&self) -> StorageInfo {
        StorageInfo {
            capabilities: CAPABILITIES,
            inline_threshold: self.settings.inline_threshold,
            max_state_size: None,
            location: path_string(&self.settings.base),
        }
    }

    fn job(&self, job_id: &str) -> StorageResult<Box<dyn JobStorage>> {
        Ok(Box::new(self.job_inner(job_id)?))
    }

    fn resolve(&self, pointer: &str) -> StorageResult<ResolvedCheckpoint> {
        Ok(self.resolve_inner(pointer)?)
    }

    fn open_handle(&self, handle: &StateHandle) -> StorageResult<Box<dyn InputStream>> {
        Ok(self.open_inner(handle)?)
    }

    fn discard(&self, handle: &StateHandle) -> StorageResult<()> {
        Ok(self.discard_inner(handle)?)
    }

    fn dispose(&self, pointer: &str) -> StorageResult<()> {
        Ok(self.dispose_inner(pointer)?)
    }

    fn corrupt_for_testing(&self, handle: &StateHandle) -> StorageResult<()> {
        Ok(self.corrupt_inner(handle)?)
    }
}

/// Remove a location directory: `_metadata` first (and fsync, so the location stops being
/// complete before anything else goes), then its state files and temporary files, then the
/// directory. Refuses a directory holding anything this plugin does not write, before removing
/// anything, and a committed one unless `committed_ok`. A missing directory is success.
pub(crate) fn remove_location(dir: &Path, committed_ok: bool) -> FsResult<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FsError::io(format!("listing {}", dir.display()), e)),
    };
    let mut committed = false;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| FsError::io(format!("listing {}", dir.display()), e))?;
        let is_file = entry
            .file_type()
            .map_err(|e| FsError::io(format!("inspecting {}", entry.path().display()), e))?
            .is_file();
        let name = entry.file_name();
        match name.to_str() {
            Some(METADATA_FILE) if is_file => committed = true,
            Some(n) if is_file && (layout::is_state_file_name(n) || n.starts_with(TEMP_PREFIX)) => {
                files.push(entry.path())
            }
            _ => {
                return Err(FsError::ForeignEntry {
                    dir: dir.to_path_buf(),
                    entry: name.to_string_lossy().into_owned(),
                })
            }
        }
    }
    if committed {
        if !committed_ok {
            return Err(FsError::DisposeCommitted {
                path: dir.to_path_buf(),
            });
        }
        remove_if_present(&dir.join(METADATA_FILE))?;
        metafile::sync_dir(dir)?;
    }
    for file in files {
        remove_if_present(&file)?;
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FsError::io(
            format!("removing directory {}", dir.display()),
            e,
        )),
    }
}

fn remove_if_present(path: &Path) -> FsResult<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FsError::io(format!("removing {}", path.display()), e)),
    }
}

/// A path as the string handed out in pointers and locators. Every such path is below the
/// UTF-8 base directory or a UTF-8 savepoint target, so nothing is lost.
pub(crate) fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
