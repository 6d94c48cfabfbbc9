use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use cairn_plugin_api::{Capabilities, CheckpointStorage, StorageError, StorageResult};
use cairn_plugin_kit::{BlobStore, Checkpoints, MemStore, Places, Root, Settings};

/// Places named `mem:<name>`, each a memory store of its own, shared by every instance opened
/// from one `World`.
#[derive(Clone, Default)]
pub struct World {
    places: Arc<Mutex<HashMap<String, MemStore>>>,
}

impl Places for World {
    fn open(&self, place: &str, create: bool) -> StorageResult<Root> {
        let name = place.trim_end_matches('/').to_string();
        let mut places = self.places.lock().unwrap();
        let store = match places.get(&name) {
            Some(s) => s.clone(),
            None if create => places.entry(name.clone()).or_default().clone(),
            None => return Err(StorageError::NotFound(format!("no place {name}"))),
        };
        Ok(store.root(&name))
    }
}

impl World {
    /// A storage over the base `mem:base` with a threshold of `threshold` bytes.
    pub fn open(
        &self,
        threshold: u64,
        base: Option<Arc<dyn BlobStore>>,
    ) -> Box<dyn CheckpointStorage> {
        let root = match base {
            Some(store) => Root {
                store,
                shown: "mem:base".into(),
            },
            None => self.open_place("mem:base"),
        };
        Box::new(Checkpoints::new(
            root,
            Arc::new(self.clone()),
            Some("mem:savepoints".to_string()),
            Settings {
                inline_threshold: threshold,
                stored: true,
                // Savepoints are left to the backends whose targets are directories (the
                // filesystem, memory and example plugins run the savepoint cases on the kit).
                capabilities: cairn_plugin_kit::CAPABILITIES.difference(Capabilities::SAVEPOINTS)
                    | Capabilities::PERSISTENT,
                location: String::new(),
            },
        ))
    }

    fn open_place(&self, name: &str) -> Root {
        Places::open(self, name, true).unwrap()
    }
}
