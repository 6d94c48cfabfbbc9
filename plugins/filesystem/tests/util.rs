use std::path::{Path, PathBuf};

use cairn_plugin_api::{CheckpointStorage, Scope, StateHandle, StoragePlugin};
use cairn_storage_fs::FsPlugin;
use tempfile::TempDir;

/// A storage opened on `<tmp>/checkpoints` with savepoints in `<tmp>/savepoints`.
pub struct Env {
    pub tmp: TempDir,
    pub storage: Box<dyn CheckpointStorage>,
}

impl Env {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let storage = open(tmp.path());
        Env { tmp, storage }
    }

    /// The base directory as the storage reports it (canonical).
    pub fn base(&self) -> PathBuf {
        PathBuf::from(self.storage.info().location)
    }

    pub fn reopen(&self) -> Box<dyn CheckpointStorage> {
        open(self.tmp.path())
    }
}

pub fn options(tmp: &Path) -> String {
    format!(
        "dir = {:?}\nsavepoint-dir = {:?}\n",
        tmp.join("checkpoints").to_str().unwrap(),
        tmp.join("savepoints").to_str().unwrap()
    )
}

pub fn open(tmp: &Path) -> Box<dyn CheckpointStorage> {
    FsPlugin::open(&options(tmp)).unwrap()
}

/// Deterministic bytes, different for each seed.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Commit checkpoint `id` of `job` with one stored stream of each scope; returns the pointer
/// and the handles.
pub fn checkpoint(
    storage: &dyn CheckpointStorage,
    job: &str,
    id: u64,
) -> (String, Vec<StateHandle>) {
    let j = storage.job(job).unwrap();
    let loc = j.begin_checkpoint(id).unwrap();
    let mut handles = Vec::new();
    for scope in [Scope::Exclusive, Scope::Shared] {
        let mut s = loc.create_stream(scope).unwrap();
        s.write(&data(50_000, id)).unwrap();
        handles.push(s.close_and_get_handle().unwrap().unwrap());
    }
    let mut t = j.create_task_owned_stream().unwrap();
    t.write(&data(30_000, id + 1)).unwrap();
    handles.push(t.close_and_get_handle().unwrap().unwrap());
    let metadata = serde_json::to_vec(&handles).unwrap();
    (loc.commit(&metadata).unwrap().pointer, handles)
}

/// Every file under `dir`, relative, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let e = e.unwrap();
            let p = e.path();
            let ft = e.file_type().unwrap();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if ft.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
