//! The kit's integration tests: the conformance suite over a complete backend made of the kit and
//! its in-memory store, and the kit's own rules where the suite cannot see them.

/// A backend of the kit over `MemStore`, with savepoint targets as further memory stores.
mod util;

/// The conformance suite, in process.
mod conformance;

/// Streams and commits against a store that fails where a test says.
mod faults;
