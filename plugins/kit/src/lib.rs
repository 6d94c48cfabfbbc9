//! `cairn-plugin-kit`: what every cairn storage backend needs, written once.
//!
//! A backend provides a small, synchronous, object-store-shaped [`BlobStore`] (put with a
//! create-only mode that is the commit point, a writer for large objects whose drop aborts,
//! get, delete, list by prefix, and a durability barrier) and [`Places`] (open the store rooted
//! at a directory or URL). [`Checkpoints`] implements the six plugin-API traits on top of them:
//!
//! - one key layout, and strict parsing of locators and pointers ([`layout`]);
//! - the job-id rule ([`cairn_plugin_api::JobId`], the one the host's config check uses);
//! - the inline threshold, and CRC32C streams computed as the bytes arrive (`stream`);
//! - one metadata frame ([`frame`]) and commit-once;
//! - listings of completed and uncommitted checkpoints, completed and uncommitted savepoints
//!   and objects;
//! - the job's lease register (a compare-and-swap record on the store's create-only put,
//!   `lease`), on which the host keeps one live writer per job;
//! - dispose order (`_metadata` first), idempotent discards, `corrupt_for_testing`;
//! - the common options (`inline-threshold`, with size strings) merged with the plugin's own
//!   ([`options`]).
//!
//! A complete plugin is a store, its `Places`, and an `open` that parses options and returns a
//! [`Checkpoints`]; `tests/example-plugin` is one in under 80 lines.
//!
//! # Why a blob store, and not the plugin API itself
//!
//! The plugin API is Flink's upper interface (storage, job, location, stream): every backend
//! behind it needs the same state machines, names, checksums and commit rules, and writing them
//! once per backend gave six job-id rules with three results. Flink makes its *FileSystem*
//! pluggable and writes checkpoint storage once on top; `object_store` asks a backend for a
//! handful of methods. The kit does the same. A backend that needs something the blob shape
//! cannot express (say, a store with server-side copies) can still implement the plugin API
//! directly; nothing in the host depends on the kit.
//!
//! # Why synchronous
//!
//! The plugin API is blocking and no async runtime may cross the boundary. A backend whose
//! client is async (object-store) owns a runtime and blocks on it inside its store, where it can
//! also keep parts in flight; the kit stays free of any runtime.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod blob;
pub mod frame;
pub mod layout;
mod lease;
mod mem;
pub mod options;
mod storage;
mod stream;

pub use blob::{buffered_writer, Blob, BlobStore, BlobWriter, Listed, Places, PutMode, Root};
pub use mem::MemStore;
pub use storage::{Checkpoints, Settings};

use std::path::Path;

use cairn_plugin_api::{StorageError, StorageResult};

/// A directory option's value as a path: a path as written, or a `file://` URL (Flink's usual
/// form, `file:///data/ckpt`, also `file://localhost/...`) as its absolute path. Any other URL
/// scheme is refused, naming the plugin that takes it (`s3://` → object-store); `what` names
/// the option in messages.
pub fn dir_path<'a>(place: &'a str, what: &str) -> StorageResult<&'a str> {
    let trimmed = place.trim();
    if let Some(rest) = trimmed.strip_prefix("file://") {
        let path = rest.strip_prefix("localhost").unwrap_or(rest);
        if !path.starts_with('/') {
            return Err(StorageError::InvalidConfig(format!(
                "{what} {} is invalid: a file:// URL needs an absolute path, as in \
                 file:///data/checkpoints",
                crate::layout::shown(place)
            )));
        }
        return Ok(path);
    }
    let scheme = trimmed.split_once("://").map(|(s, _)| s).filter(|s| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    if let Some(scheme) = scheme {
        let hint = match scheme.to_ascii_lowercase().as_str() {
            "s3" | "s3a" | "gs" | "az" | "abfs" | "memory" => {
                "use the object-store plugin for it (plugin = \"object-store\", url = ...)"
            }
            _ => "cairn has no bundled plugin for this scheme",
        };
        return Err(StorageError::InvalidConfig(format!(
            "{what} {} is invalid: it is a {scheme}:// URL, and this plugin takes a directory \
             path or a file:// URL; {hint}",
            crate::layout::shown(place)
        )));
    }
    Ok(trimmed)
}

/// `place` checked as a local directory path and made absolute: not empty, no NUL, no `..`
/// part, a `file://` URL read as its path ([`dir_path`]).
fn absolute_dir(place: &str, what: &str) -> StorageResult<std::path::PathBuf> {
    let invalid = |why: &str| {
        StorageError::InvalidConfig(format!(
            "{what} {} is invalid: {why}",
            crate::layout::shown(place)
        ))
    };
    let trimmed = dir_path(place, what)?;
    if trimmed.is_empty() {
        return Err(invalid("it is empty: give a directory path"));
    }
    if trimmed.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    let path = Path::new(trimmed);
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(invalid("it has a '..' part"));
    }
    std::path::absolute(path)
        .map_err(|e| StorageError::io(format!("making {} absolute", path.display()), &e))
}

/// A local directory as a place: the canonical, absolute, UTF-8 form of directory `place`
/// (made first with `create`; `what` names it in messages). Refuses a NUL, a `..` part, a URL
/// other than `file://` ([`dir_path`]), and (without `create`, so for places found in pointers
/// and locators) a relative path. For backends that keep their data under directories: the
/// filesystem and memory backends, the example plugin.
pub fn local_dir(place: &str, create: bool, what: &str) -> StorageResult<std::path::PathBuf> {
    if !create && !Path::new(dir_path(place, what)?).is_absolute() {
        return Err(StorageError::InvalidConfig(format!(
            "{what} {} is invalid: it is not an absolute path",
            crate::layout::shown(place)
        )));
    }
    let absolute = absolute_dir(place, what)?;
    if create {
        std::fs::create_dir_all(&absolute)
            .map_err(|e| StorageError::io(format!("creating {}", absolute.display()), &e))?;
    }
    existing_dir(&absolute, place, what)
}

/// The canonical form of the existing directory `absolute` (which `place` named).
fn existing_dir(absolute: &Path, place: &str, what: &str) -> StorageResult<std::path::PathBuf> {
    let invalid = |why: &str| {
        StorageError::InvalidConfig(format!(
            "{what} {} is invalid: {why}",
            crate::layout::shown(place)
        ))
    };
    let canonical = std::fs::canonicalize(absolute)
        .map_err(|e| StorageError::io(format!("{what} {}", absolute.display()), &e))?;
    if !canonical.is_dir() {
        return Err(invalid("it is not a directory"));
    }
    if canonical.to_str().is_none() {
        return Err(invalid("it is not valid UTF-8: use a UTF-8 path"));
    }
    Ok(canonical)
}

/// A base directory as a place, **without creating it**: like [`local_dir`] with `create`, but
/// a directory that does not exist yet is returned as its absolute path and left to the store,
/// which makes directories when a file needs them. So opening storage to read (`checkpoints
/// list` in an empty folder) or to check options creates nothing.
pub fn base_dir(place: &str, what: &str) -> StorageResult<std::path::PathBuf> {
    let absolute = absolute_dir(place, what)?;
    match std::fs::symlink_metadata(&absolute) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if absolute.to_str().is_none() {
                return Err(StorageError::InvalidConfig(format!(
                    "{what} {} is invalid: it is not valid UTF-8: use a UTF-8 path",
                    crate::layout::shown(place)
                )));
            }
            Ok(absolute)
        }
        _ => existing_dir(&absolute, place, what),
    }
}

/// What a backend on the kit can do with stored handles and savepoints: every capability but
/// `PERSISTENT` and `HIGHLY_AVAILABLE`, which depend on the store.
pub const CAPABILITIES: cairn_plugin_api::Capabilities = cairn_plugin_api::Capabilities::SAVEPOINTS
    .union(cairn_plugin_api::Capabilities::SHARED_SCOPE)
    .union(cairn_plugin_api::Capabilities::TASK_OWNED)
    .union(cairn_plugin_api::Capabilities::STORED_HANDLES)
    .union(cairn_plugin_api::Capabilities::CORRUPT_FOR_TESTING);
