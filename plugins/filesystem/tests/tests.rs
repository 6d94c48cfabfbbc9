//! Integration tests of the filesystem storage: the conformance suite in process and through
//! `dlopen`, and what only a directory has (symbolic links, fsyncs, a base that disappears).
//! Every test gets its own `TempDir`.

/// Helpers: a storage in a temporary directory, test data.
mod util;

/// The conformance suite, in process and through the shared library.
mod conformance;

/// Symbolic links anywhere in the layout are never followed, listed or deleted through.
mod symlinks;

/// The directory layout on disk, the crash-consistent commit, and a base directory removed or
/// renamed while in use.
mod disk;

/// `[storage.options]`: defaults and the messages of refused values.
mod options;
