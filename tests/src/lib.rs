//! cairn's storage conformance harness.
//!
//! - [`suite`] runs the conformance cases ([`cases`]) against any backend behind the safe
//!   `CheckpointStorage` trait: a plugin loaded through the real `dlopen` path by the host's
//!   loader (`cairn plugins verify`, and the workspace tests), or one linked in. Capabilities
//!   decide which cases apply; skipped cases are reported with the reason.
//! - [`artifacts`] builds the plugin libraries that tests load, once per test process, with a
//!   nested `cargo build`. A clean `cargo test` builds no shared library by itself.
//! - `fixtures/` holds misbehaving plugins that prove the host survives them.

#![warn(missing_docs)]

pub mod artifacts;
pub mod cases;
pub mod suite;
