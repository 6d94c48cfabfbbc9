//! The shared library of the memory storage plugin: only the export line; the plugin is the
//! `cairn-storage-memory` library.

cairn_plugin_api::export_storage_plugin!(memory::MemoryPlugin);
