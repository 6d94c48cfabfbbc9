//! The on-disk part of the memory backend: metadata files of checkpoints (when a checkpoint
//! directory is configured) and of savepoints.
//!
//! The `_metadata` format and its crash-consistent commit are the filesystem backend's, so that
//! a savepoint written by either backend can be read by the other ([`cairn_storage_shared::metafile`] explains
//! why it is a copy for now). This module adds only what the memory backend needs around it:
//! directory creation and removal.

use std::{fs, io, path::Path};

use cairn_plugin_api::{StorageError, StorageResult};
use cairn_storage_shared::metafile::TEMP_PREFIX;
pub use cairn_storage_shared::metafile::{commit, is_committed, read, sync_dir, METADATA_FILE};

/// Create `dir` (and its parents) if missing, then make the new entry durable in its parent.
pub fn create_dir(dir: &Path) -> StorageResult<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)
        .map_err(|e| StorageError::io(format!("creating {}", dir.display()), &e))?;
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Remove a location directory: `_metadata` first (so the location stops being complete at
/// once), then leftover temporary files of an interrupted commit, then the directory itself.
/// Anything else in the directory is not ours: it is left alone, and the call fails saying so.
/// A directory that is already gone is success.
pub fn remove_location_dir(dir: &Path) -> StorageResult<()> {
    let metadata = dir.join(METADATA_FILE);
    match fs::remove_file(&metadata) {
        Ok(()) => sync_dir(dir)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(StorageError::io(
                format!("removing {}", metadata.display()),
                &e,
            ))
        }
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::io(format!("listing {}", dir.display()), &e)),
    };
    let mut foreign = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| StorageError::io(format!("listing {}", dir.display()), &e))?;
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX)) {
            match fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StorageError::io(
                        format!("removing {}", entry.path().display()),
                        &e,
                    ))
                }
            }
        } else {
            foreign.push(name.to_string_lossy().into_owned());
        }
    }
    if !foreign.is_empty() {
        foreign.sort();
        return Err(StorageError::Io(format!(
            "{}: not removed, it holds files the memory backend did not write: {}",
            dir.display(),
            foreign.join(", ")
        )));
    }
    match fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::io(format!("removing {}", dir.display()), &e)),
    }
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}
