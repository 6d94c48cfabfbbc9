//! Integration tests of the filesystem storage, in-process through the safe traits. The `dlopen`
//! path is covered by the workspace harness. Every test gets its own `TempDir`.

/// Helpers: opening a storage in a temporary directory, test data, reading and writing streams.
mod util;

/// Output and input streams: inline vs stored at every size boundary, checksums, cleanup.
mod streams;

/// Checkpoint locations: commit, resolve, list, dispose, dispose on failure.
mod checkpoints;

/// Savepoint locations: explicit target, default target, neither.
mod savepoints;

/// `[storage.options]` parsing, defaults and the manifest.
mod options;

/// Job ids, locators and pointers that try to leave the storage directories.
mod escapes;
