//! The host's integration tests: one binary, its modules listed here.

// Shared helpers: plugin libraries built for tests, copies into temporary directories.
mod util;

// The loader's refusals, each with its own error kind, through real shared libraries.
mod loader;

// Containment: plugin panics become errors and the host keeps working; plugin logs reach the
// host's subscriber; several plugins live side by side.
mod containment;

// The filesystem plugin through the real dlopen path: round trips, corruption, escapes, and a
// checkpoint resolved from a second process.
mod filesystem;

// The `cairn` binary: `plugins list` and `plugins info`.
mod cli;

// `cairn plugins verify` on the bundled plugins and on every misbehaving fixture.
mod verify;
