//! cairn's storage conformance suite, as a library.
//!
//! - [`suite`] runs the conformance cases ([`cases`]) against any backend behind the safe
//!   `CheckpointStorage` trait: linked in (a plugin author's `#[test]`:
//!   [`assert_passes`]), or loaded through `dlopen` ([`assert_library_passes`], and
//!   `cairn plugins verify`). Capabilities decide which cases apply; skipped cases are reported
//!   with the reason.
//! - [`bench`] holds the storage benchmark workloads that `cairn bench storage` runs against a
//!   loaded plugin and its companion runs against a linked-in one, so both sides of a ratio run
//!   the same code.
//!
//! It depends on `cairn-plugin-api` alone. Test *infrastructure* (nested cargo builds of plugin
//! libraries, the S3 test server, the misbehaving fixtures) is the separate `cairn-harness`, so
//! that the `cairn` binary, which depends on this crate, holds none of it.

#![warn(missing_docs)]

pub mod bench;
pub mod cases;
pub mod suite;

pub use suite::{assert_library_passes, assert_passes};
