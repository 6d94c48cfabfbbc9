//! cairn's storage test harness.
//!
//! - [`artifacts`] builds the plugin libraries that tests load through the real `dlopen` path,
//!   once per test process, with a nested `cargo build`. A clean `cargo test` builds no shared
//!   library by itself, so every test that loads a plugin gets its file from here.
//! - The conformance suite (public functions that each take any backend) and the misbehaving
//!   fixture plugins (`fixtures/`) live alongside.

#![warn(missing_docs)]

pub mod artifacts;
