//! [`MemStore`]: a [`BlobStore`] in the process's memory. The memory backend keeps its
//! checkpoints' metadata in one; the fixtures and the kit's own tests build a complete backend
//! on it.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use cairn_plugin_api::{StorageError, StorageResult};

use crate::blob::{Blob, BlobStore, BlobWriter, Listed, PutMode, Root};

/// A blob store in memory: a sorted map of keys to bytes. Clones share the map.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    objects: Arc<Mutex<BTreeMap<String, Arc<Vec<u8>>>>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The store as a [`Root`] shown as `shown` (for example `memory://`).
    pub fn root(self, shown: &str) -> Root {
        Root {
            store: Arc::new(self),
            shown: shown.to_string(),
        }
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Vec<u8>>>> {
        // Every update is one insert or remove, so a poisoned lock holds a whole map.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl BlobStore for MemStore {
    fn put(&self, key: &str, bytes: &[u8], mode: PutMode) -> StorageResult<()> {
        let mut map = self.map();
        if mode == PutMode::Create && map.contains_key(key) {
            return Err(StorageError::AlreadyExists(format!("{key} exists already")));
        }
        map.insert(key.to_string(), Arc::new(bytes.to_vec()));
        Ok(())
    }

    fn writer(&self, key: &str) -> StorageResult<Box<dyn BlobWriter>> {
        let (store, key) = (self.clone(), key.to_string());
        Ok(crate::blob::buffered_writer(move |bytes| {
            store.map().insert(key, Arc::new(bytes));
            Ok(())
        }))
    }

    fn get(&self, key: &str) -> StorageResult<Blob> {
        let bytes = self
            .map()
            .get(key)
            .cloned()
            .ok_or_else(|| StorageError::NotFound(format!("{key}: no such object")))?;
        Ok(Blob::from_bytes(bytes.as_ref().clone()))
    }

    fn delete(&self, key: &str) -> StorageResult<()> {
        self.map().remove(key);
        Ok(())
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<Listed>> {
        let from = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok(self
            .map()
            .range(from.clone()..)
            .take_while(|(k, _)| k.starts_with(&from))
            .map(|(k, v)| Listed {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    fn sync(&self, _prefixes: &[&str]) -> StorageResult<()> {
        Ok(())
    }
}
