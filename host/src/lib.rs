//! The cairn host: it finds and loads storage plugins, reads the config file, and (in later
//! modules) coordinates checkpoints of a running job.
//!
//! The `cairn` binary (`src/main.rs`) is a thin command-line layer over this library, so
//! everything it does can be driven from Rust and tested without spawning processes.
//!
//! Modules:
//! - [`loader`]: plugin discovery and loading; the only place that opens shared libraries.
//! - [`config`]: the TOML config file, with errors that name the file, line and key.
//! - [`metadata`]: the versioned, checksummed checkpoint metadata format.
//! - [`coordinator`]: the checkpoint coordinator's rules, as a clock-free state machine.
//! - [`copy`]: a checkpoint or savepoint copied to another storage, every checksum checked.
//! - [`lease`]: the job lease, one live writer per job in the storage itself.
//! - [`runtime`]: the dataflow runtime (sources, keyed exchange, keyed state with asynchronous
//!   snapshots, two-phase-commit sinks) and the loop that drives the coordinator against a
//!   storage plugin; the built-in jobs.
//! - [`control`]: the control socket of a running job (`cairn status`, `savepoint`, `stop`,
//!   `cancel`) and [`control::Services`], which serves it and the metrics while a job runs.
//! - [`metrics`]: the job's Prometheus metrics and the HTTP endpoint that serves them.
//! - [`words`]: counts with the right plural, for every message.
//! - [`job`]: the job API, for running a job of your own (`runtime::api`).

#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod config;
pub mod control;
pub mod coordinator;
pub mod copy;
pub mod lease;
pub mod loader;
pub mod metadata;
pub mod metrics;
pub mod runtime;
pub mod words;

pub use runtime::api as job;
