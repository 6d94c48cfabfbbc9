//! The stable boundary between the cairn host and its checkpoint storage plugins.
//!
//! A storage backend is a shared library that the host loads at run time. This crate is the only
//! thing a backend and the host have in common, and it is organised in three layers:
//!
//! 1. **The raw ABI** (`abi`, private): an abi_stable root module (a prefix type, so later minor
//!    versions can append functions), `#[sabi_trait]` objects and `R*` types. Nothing outside this
//!    crate names these types, so the ABI layer could be replaced (for example by stabby) without
//!    touching a plugin or the host.
//! 2. **The safe trait** a plugin author implements: [`StoragePlugin`], which opens a
//!    [`CheckpointStorage`], and the objects it hands out ([`JobStorage`], [`CheckpointLocation`],
//!    [`OutputStream`], [`InputStream`]). They use std types and [`StorageError`].
//!    [`export_storage_plugin!`] turns an implementation into layer 1. A plugin author writes no
//!    `unsafe` and names no abi_stable type.
//! 3. **The host-side wrapper** ([`host`]): it loads a library, checks it, and presents it through
//!    the same safe traits as layer 2, so the host and the conformance harness use one trait
//!    whether a backend is linked in or loaded.
//!
//! # Why values and objects, and not a filesystem interface
//!
//! Flink's storage abstraction hands out locations and streams, not paths, and so does this one:
//! an object store has no directories, no rename and no fsync, so a path-based interface would
//! force every backend to emulate POSIX. Only the operations a checkpoint needs cross the
//! boundary: open a stream, write, close to a [`StateHandle`], commit metadata once, resolve a
//! pointer, dispose. Conveniences built on top (copying a checkpoint, verifying every handle,
//! garbage collection) belong to the host, so that every backend gets them for free and the
//! implementor surface stays small.
//!
//! # Why the metadata is committed in one call
//!
//! Flink writes `_metadata` through a stream and commits when that stream closes. Here the whole
//! metadata document is handed over in one [`CheckpointLocation::commit`] call. Metadata is small
//! (it holds handles, not state), and one call makes the single atomic commit point obvious: a
//! backend can write-temp-then-rename or conditionally create, and there is no half-written
//! metadata stream to clean up after a panic.

#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod abi;
mod error;
mod export;
mod handle;
pub mod host;
mod job_id;
mod logging;
mod manifest;
mod options;
pub mod section;
mod storage;
mod version;

pub use error::{ErrorKind, StorageError, StorageResult};
pub use handle::{Scope, StateHandle};
pub use job_id::{JobId, JobIdError};
pub use manifest::{Capabilities, Manifest, OptionInfo, OptionSpec, StaticManifest};
pub use options::{did_you_mean, parse_duration, parse_options, parse_size};
pub use storage::{
    read_handle_fully, CheckpointLocation, CheckpointStorage, CompletedCheckpoint, InlineInput,
    InputStream, JobStorage, LeaseRecord, OutputStream, ResolvedCheckpoint, StorageInfo,
    StoragePlugin, StoredObject, MAX_LEASE_RECORD_BYTES,
};
pub use version::{unsupported_since, ApiVersion, API_1_0, API_1_1, API_VERSION};

/// Items used by the code that [`export_storage_plugin!`] generates. Not part of the API: they
/// may change in any release, and nothing outside this crate's macro may name them.
#[doc(hidden)]
pub mod __private {
    pub use crate::abi::Api11Export;
    pub use crate::export::{api_1_1, export_module, probe_word, ExportedModule};
    pub use crate::section::{section_bytes, section_len};
}
