//! The shared library of the object-store storage plugin: only the export line; the plugin is
//! the `cairn-storage-object` library.

cairn_plugin_api::export_storage_plugin!(object::ObjectStorePlugin);
