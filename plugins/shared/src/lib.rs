//! Code shared by cairn's bundled storage backends.
//!
//! It lives in its own crate because a plugin crate cannot be a library of another plugin: every
//! plugin crate calls `export_storage_plugin!`, so linking two of them into one cdylib defines
//! the export symbols twice and fails to link. This crate exports no plugin.
//!
//! Third-party plugins (and the object-store plugin, which proves they are possible) do not use
//! it: they depend on `cairn-plugin-api` alone.

#![warn(missing_docs)]

pub mod metafile;
