//! [`FsStore`]: the kit's blob store over a directory, with the durability a checkpoint needs
//! and no way out of the directory.
//!
//! A key `a/b/c` is the file `<root>/a/b/c`. Directories are created when a file needs them and
//! removed when their last file goes, so the store behaves like an object store: a key prefix
//! exists while something is under it.
//!
//! # Durability
//!
//! - `put` writes a temporary file (`.tmp-<uuid>`, a scratch name the kit cleans up), fsyncs
//!   it, and then either hard-links it to the key ([`PutMode::Create`]: a link fails if the key
//!   exists, so of two writers, even in two processes, one wins) or renames it over the key;
//!   then it fsyncs the directory. After a crash at any instant the key is absent or complete.
//! - A [`BlobWriter`] writes the file in place through a buffer of `write-buffer` bytes and
//!   fsyncs it when it finishes; dropping an unfinished writer deletes the file.
//! - `sync` fsyncs each prefix's directory and every directory above it up to the root, so
//!   that files and directories created since are findable after a power failure.
//!
//! Every fsync error is fatal and never retried: after a failed fsync the kernel may have
//! dropped the dirty pages, so a retry could report success for bytes that are not on disk.
//!
//! # No way out
//!
//! No operation follows a symbolic link. Every directory on the way from the root to a key is
//! checked with `lstat` and must be a real directory; files are opened with `O_NOFOLLOW`; a
//! listing skips a symbolic link wherever it is and names it in a warning, so a `chk-99` link to
//! a directory elsewhere, or a `shared/` that is a link, is neither listed nor deleted through.
//! Keys come from the kit, which parses every untrusted string before it becomes a key, and the
//! root is canonical. What is out of scope: someone who can write into the directory *while*
//! cairn works in it could swap a directory for a link between the check and the use; they
//! could as well edit the checkpoints themselves.
//!
//! # A root that disappears
//!
//! If the root directory is removed or renamed while a job runs, the next write creates it
//! again (with everything below it that the write needs), so the next checkpoint succeeds; the
//! checkpoints that went with the old directory are gone from this storage's listings.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use cairn_plugin_api::{StorageError, StorageResult};
use cairn_plugin_kit::{Blob, BlobStore, BlobWriter, Listed, PutMode, Root};

/// Prefix of temporary files: a scratch name (starting with `.`) that the kit never makes.
const TEMP_PREFIX: &str = ".tmp-";

/// How often a write retries when a directory it just created is removed under it by a
/// concurrent delete of the directory's last file.
const CREATE_ATTEMPTS: usize = 4;

/// A blob store over the directory `root` (see the module docs).
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
    write_buffer: usize,
}

fn fsync_error(path: &Path, e: &io::Error) -> StorageError {
    StorageError::Io(format!(
        "fsync of {} failed (not retried): {e}",
        path.display()
    ))
}

fn symlink_refused(path: &Path) -> StorageError {
    StorageError::InvalidConfig(format!(
        "{} is a symbolic link; cairn never follows one inside its directories",
        path.display()
    ))
}

impl FsStore {
    /// A store over `root`, which must be absolute and canonical. `write_buffer` is the buffer
    /// of each writer.
    pub fn new(root: PathBuf, write_buffer: usize) -> Self {
        FsStore { root, write_buffer }
    }

    /// The store as a kit [`Root`], shown as its directory.
    pub fn into_root(self) -> Root {
        Root {
            shown: self.root.to_string_lossy().into_owned(),
            store: Arc::new(self),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The path of `key`, after checking that no directory on the way is a symbolic link or
    /// anything but a directory. With `create`, missing directories are made; without, a
    /// missing one is `NotFound`. Returns the path of the key itself.
    fn resolve(&self, key: &str, create: bool) -> StorageResult<PathBuf> {
        let parts: Vec<&str> = key.split('/').collect();
        let (file, dirs) = parts.split_last().expect("split gives one part at least");
        let mut path = self.root.clone();
        self.check_dir(&path, create)?;
        for dir in dirs {
            path.push(dir);
            self.check_dir(&path, create)?;
        }
        path.push(file);
        Ok(path)
    }

    /// `path` must be a real directory; with `create`, a missing one is made.
    fn check_dir(&self, path: &Path, create: bool) -> StorageResult<()> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => Err(symlink_refused(path)),
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(StorageError::Io(format!(
                "{} is not a directory",
                path.display()
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                match fs::create_dir_all(path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                    Err(e) => Err(StorageError::io(format!("creating {}", path.display()), &e)),
                }
            }
            Err(e) => Err(StorageError::io(path.display(), &e)),
        }
    }

    /// Create `key`'s file with `create_new` (which never follows a link), making missing
    /// directories, and retrying if a concurrent delete removes a directory just made.
    fn create_file(&self, key: &str) -> StorageResult<(PathBuf, File)> {
        let mut last = None;
        for _ in 0..CREATE_ATTEMPTS {
            let path = self.resolve(key, true)?;
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok((path, file)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => last = Some((path, e)),
                Err(e) => return Err(StorageError::io(format!("creating {}", path.display()), &e)),
            }
        }
        let (path, e) = last.expect("the loop ran");
        Err(StorageError::io(format!("creating {}", path.display()), &e))
    }

    /// Remove the empty directories above `path`, up to (not including) the root.
    fn prune(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    fn walk(&self, dir: &Path, key: &str, out: &mut Vec<Listed>) -> StorageResult<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StorageError::io(format!("listing {}", dir.display()), &e)),
        };
        for entry in entries {
            let entry =
                entry.map_err(|e| StorageError::io(format!("listing {}", dir.display()), &e))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                tracing::warn!("skipping {}: its name is not UTF-8", path.display());
                continue;
            };
            let child = if key.is_empty() {
                name
            } else {
                format!("{key}/{name}")
            };
            // `DirEntry::metadata` does not follow a symbolic link.
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io(path.display(), &e)),
            };
            if meta.file_type().is_symlink() {
                tracing::warn!(
                    "skipping {}: it is a symbolic link, which cairn never follows or lists",
                    path.display()
                );
            } else if meta.is_dir() {
                self.walk(&path, &child, out)?;
            } else if meta.is_file() {
                out.push(Listed {
                    key: child,
                    size: meta.len(),
                });
            }
        }
        Ok(())
    }

    fn write_temp(&self, dir: &Path, bytes: &[u8]) -> StorageResult<PathBuf> {
        let temp = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| StorageError::io(format!("creating {}", temp.display()), &e))?;
        let written = file
            .write_all(bytes)
            .map_err(|e| StorageError::io(format!("writing {}", temp.display()), &e))
            .and_then(|()| file.sync_all().map_err(|e| fsync_error(&temp, &e)));
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        Ok(temp)
    }
}

fn sync_dir(dir: &Path) -> StorageResult<()> {
    match File::open(dir) {
        Ok(d) => d.sync_all().map_err(|e| fsync_error(dir, &e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(format!("opening {}", dir.display()), &e)),
    }
}

impl BlobStore for FsStore {
    fn put(&self, key: &str, bytes: &[u8], mode: PutMode) -> StorageResult<()> {
        let path = self.resolve(key, true)?;
        let dir = path.parent().expect("a key has a parent").to_path_buf();
        let temp = self.write_temp(&dir, bytes)?;
        let placed = match mode {
            PutMode::Create => fs::hard_link(&temp, &path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    StorageError::AlreadyExists(format!("{} exists already", path.display()))
                } else {
                    StorageError::io(format!("linking {}", path.display()), &e)
                }
            }),
            PutMode::Overwrite => fs::rename(&temp, &path)
                .map_err(|e| StorageError::io(format!("renaming to {}", path.display()), &e)),
        };
        // The temporary name goes whether the link succeeded or not (after a rename it is gone).
        let _ = fs::remove_file(&temp);
        placed?;
        sync_dir(&dir)
    }

    fn writer(&self, key: &str) -> StorageResult<Box<dyn BlobWriter>> {
        let (path, file) = self.create_file(key)?;
        Ok(Box::new(FsWriter {
            file: Some(BufWriter::with_capacity(self.write_buffer, file)),
            path,
            store: self.clone(),
        }))
    }

    fn get(&self, key: &str) -> StorageResult<Blob> {
        let path = self.resolve(key, false)?;
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => symlink_refused(&path),
                _ => StorageError::io(path.display(), &e),
            })?;
        let size = file
            .metadata()
            .map_err(|e| StorageError::io(path.display(), &e))?
            .len();
        Ok(Blob {
            size,
            reader: Box::new(file),
        })
    }

    fn delete(&self, key: &str) -> StorageResult<()> {
        let path = match self.resolve(key, false) {
            Ok(path) => path,
            Err(StorageError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        // `remove_file` removes a link itself, never what it points to.
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StorageError::io(format!("removing {}", path.display()), &e)),
        }
        self.prune(&path);
        Ok(())
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<Listed>> {
        let mut out = Vec::new();
        if prefix.is_empty() {
            self.walk(&self.root, "", &mut out)?;
            return Ok(out);
        }
        let dir = match self.resolve(prefix, false) {
            Ok(dir) => dir,
            Err(StorageError::NotFound(_)) => return Ok(out),
            Err(e @ StorageError::InvalidConfig(_)) => {
                tracing::warn!("skipping {prefix}: {e}");
                return Ok(out);
            }
            Err(e) => return Err(e),
        };
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                tracing::warn!(
                    "skipping {}: it is a symbolic link, which cairn never follows or lists",
                    dir.display()
                );
            }
            Ok(m) if m.is_dir() => self.walk(&dir, prefix, &mut out)?,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(dir.display(), &e)),
        }
        Ok(out)
    }

    fn sync(&self, prefixes: &[&str]) -> StorageResult<()> {
        let mut dirs = std::collections::BTreeSet::new();
        for prefix in prefixes {
            let mut dir = self.root.clone();
            dirs.insert(dir.clone());
            for part in prefix.split('/').filter(|p| !p.is_empty()) {
                dir.push(part);
                match fs::symlink_metadata(&dir) {
                    Ok(m) if m.is_dir() => {
                        dirs.insert(dir.clone());
                    }
                    _ => break,
                }
            }
        }
        // Deepest first, so a directory's entry in its parent is synced after its own entries.
        for dir in dirs.iter().rev() {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

/// A file being written (see the module docs).
struct FsWriter {
    file: Option<BufWriter<File>>,
    path: PathBuf,
    store: FsStore,
}

impl BlobWriter for FsWriter {
    fn write(&mut self, bytes: &[u8]) -> StorageResult<()> {
        let file = self.file.as_mut().expect("finish consumes the writer");
        file.write_all(bytes)
            .map_err(|e| StorageError::io(format!("writing {}", self.path.display()), &e))
    }

    fn finish(mut self: Box<Self>) -> StorageResult<()> {
        let file = self.file.take().expect("finish runs once");
        let file = file
            .into_inner()
            .map_err(|e| StorageError::io(format!("writing {}", self.path.display()), e.error()));
        let synced = file.and_then(|f| f.sync_all().map_err(|e| fsync_error(&self.path, &e)));
        if let Err(e) = synced {
            self.abort();
            return Err(e);
        }
        Ok(())
    }
}

impl FsWriter {
    fn abort(&mut self) {
        self.file = None;
        match fs::remove_file(&self.path) {
            Ok(()) => self.store.prune(&self.path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                "could not delete {}, the file of an abandoned state stream: {e}",
                self.path.display()
            ),
        }
    }
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            self.abort();
        }
    }
}
