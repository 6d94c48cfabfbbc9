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

/// A local directory as a place: the canonical, absolute, UTF-8 form of directory `place`
/// (made first with `create`; `what` names it in messages). Refuses a NUL, a `..` part, and
/// (without `create`, so for places found in pointers and locators) a relative path. For
/// backends that keep their data under directories: the filesystem and memory backends, the
/// example plugin.
pub fn local_dir(place: &str, create: bool, what: &str) -> StorageResult<std::path::PathBuf> {
    let invalid = |why: &str| {
        StorageError::InvalidConfig(format!(
            "{what} {} is invalid: {why}",
            crate::layout::shown(place)
        ))
    };
    let trimmed = place.trim();
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
    if !create && !path.is_absolute() {
        return Err(invalid("it is not an absolute path"));
    }
    let absolute = std::path::absolute(path)
        .map_err(|e| StorageError::io(format!("making {} absolute", path.display()), &e))?;
    if create {
        std::fs::create_dir_all(&absolute)
            .map_err(|e| StorageError::io(format!("creating {}", absolute.display()), &e))?;
    }
    let canonical = std::fs::canonicalize(&absolute)
        .map_err(|e| StorageError::io(format!("{what} {}", absolute.display()), &e))?;
    if !canonical.is_dir() {
        return Err(invalid("it is not a directory"));
    }
    if canonical.to_str().is_none() {
        return Err(invalid("it is not valid UTF-8: use a UTF-8 path"));
    }
    Ok(canonical)
}

/// What a backend on the kit can do with stored handles and savepoints: every capability but
/// `PERSISTENT` and `HIGHLY_AVAILABLE`, which depend on the store.
pub const CAPABILITIES: cairn_plugin_api::Capabilities = cairn_plugin_api::Capabilities::SAVEPOINTS
    .union(cairn_plugin_api::Capabilities::SHARED_SCOPE)
    .union(cairn_plugin_api::Capabilities::TASK_OWNED)
    .union(cairn_plugin_api::Capabilities::STORED_HANDLES)
    .union(cairn_plugin_api::Capabilities::CORRUPT_FOR_TESTING);
