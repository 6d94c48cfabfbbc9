//! The shared library of the filesystem storage plugin: only the export line; the plugin is the
//! `cairn-storage-fs` library.

cairn_plugin_api::export_storage_plugin!(fs::FsPlugin);
