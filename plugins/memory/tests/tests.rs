//! Integration tests of the memory storage: the conformance suite in process and through
//! `dlopen`, in both configurations, and what is particular to it (the size limit, metadata on
//! disk with `checkpoint-dir`). Every test gets its own `TempDir`.

/// The conformance suite.
mod conformance;

/// The size limit, persistence with `checkpoint-dir`, and options.
mod memory;
