//! The cairn host: it finds and loads storage plugins, reads the config file, and (in later
//! modules) coordinates checkpoints of a running job.
//!
//! The `cairn` binary (`src/main.rs`) is a thin command-line layer over this library, so
//! everything it does can be driven from Rust and tested without spawning processes.
//!
//! Modules:
//! - [`loader`]: plugin discovery and loading; the only place that opens shared libraries.
//! - [`config`]: the TOML config file, with errors that name the file, line and key.

#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod config;
pub mod loader;
