use std::{
    fs,
    path::{Path, PathBuf},
};

use cairn_plugin_api::{CheckpointStorage, OutputStream, StateHandle, StorageError, StoragePlugin};
use cairn_storage_fs::FsPlugin;
use tempfile::TempDir;

/// A storage opened on `<tmp>/checkpoints`, and the temporary directory that holds it.
pub struct Env {
    pub tmp: TempDir,
    pub storage: Box<dyn CheckpointStorage>,
}

impl Env {
    /// A storage with default options.
    pub fn new() -> Self {
        Self::with("")
    }

    /// A storage with extra option lines after `dir = ...`.
    pub fn with(extra: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let storage = open(&tmp.path().join("checkpoints"), extra);
        Env { tmp, storage }
    }

    /// The base directory as the storage reports it (canonical).
    pub fn base(&self) -> PathBuf {
        PathBuf::from(self.storage.info().location)
    }

    /// A second, independent instance on the same directory, as a fresh process would open it.
    pub fn reopen(&self) -> Box<dyn CheckpointStorage> {
        open(&self.tmp.path().join("checkpoints"), "")
    }

    /// Where a stored handle's bytes are on disk.
    pub fn file_of(&self, handle: &StateHandle) -> PathBuf {
        match handle {
            StateHandle::Stored { locator, .. } if Path::new(locator).is_absolute() => {
                PathBuf::from(locator)
            }
            StateHandle::Stored { locator, .. } => self.base().join(locator),
            StateHandle::Inline(_) => panic!("inline handle has no file"),
        }
    }
}

/// Open the plugin on `dir` with extra option lines.
pub fn open(dir: &Path, extra: &str) -> Box<dyn CheckpointStorage> {
    FsPlugin::open(&options(dir, extra)).unwrap()
}

/// An options document for `dir` plus extra lines.
pub fn options(dir: &Path, extra: &str) -> String {
    format!("dir = {:?}\n{extra}\n", dir.to_str().unwrap())
}

/// Deterministic pseudo-random bytes (xorshift), different for each seed.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Write `bytes` in chunks whose sizes cycle through `chunks`, checking `pos()` after each.
pub fn write_chunked(stream: &mut dyn OutputStream, bytes: &[u8], chunks: &[usize]) {
    let mut at = 0;
    for &chunk in chunks.iter().cycle() {
        if at == bytes.len() {
            break;
        }
        let end = (at + chunk).min(bytes.len());
        stream.write(&bytes[at..end]).unwrap();
        at = end;
        assert_eq!(stream.pos().unwrap(), at as u64);
    }
}

/// Read everything from the plugin's own input stream (without the host's second check).
pub fn read_raw(
    storage: &dyn CheckpointStorage,
    handle: &StateHandle,
) -> Result<Vec<u8>, StorageError> {
    let mut input = storage.open_handle(handle)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// The names of the entries of `dir` (empty if it does not exist), sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}
