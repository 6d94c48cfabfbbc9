//! Helpers shared by the test modules.

use std::path::Path;

use cairn_plugin_api::{
    read_handle_fully, CheckpointLocation, CheckpointStorage, Scope, StateHandle, StorageError,
    StoragePlugin,
};
use cairn_storage_memory::MemoryPlugin;

/// Open an instance with an options document; panics on error.
pub fn open(options: &str) -> Box<dyn CheckpointStorage> {
    MemoryPlugin::open(options).unwrap_or_else(|e| panic!("open({options:?}): {e}"))
}

/// Open an instance and return its error.
pub fn open_err(options: &str) -> StorageError {
    match MemoryPlugin::open(options) {
        Ok(_) => panic!("open({options:?}) succeeded, expected an error"),
        Err(e) => e,
    }
}

/// An options line setting `key` to the path `dir`.
pub fn dir_option(key: &str, dir: &Path) -> String {
    format!("{key} = {:?}\n", dir.to_str().expect("utf-8 temp dir"))
}

/// Write `bytes` to a new stream of `loc` in one call and close it.
pub fn write_stream(
    loc: &dyn CheckpointLocation,
    bytes: &[u8],
) -> Result<Option<StateHandle>, StorageError> {
    let mut out = loc.create_stream(Scope::Exclusive)?;
    out.write(bytes)?;
    assert_eq!(out.pos()?, bytes.len() as u64);
    out.close_and_get_handle()
}

/// `n` bytes of a recognisable pattern.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Read a handle back through the storage and check it holds `expected`.
pub fn assert_reads_back(storage: &dyn CheckpointStorage, handle: &StateHandle, expected: &[u8]) {
    let got = read_handle_fully(storage, handle).expect("read back");
    assert_eq!(got, expected, "{handle:?}");
    // And through the backend's own input stream, not only the inline shortcut.
    let mut input = storage.open_handle(handle).expect("open_handle");
    let mut all = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        let n = input.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    assert_eq!(all, expected);
}

/// Begin checkpoint `id` of `job`, write one stream and commit metadata `meta`; returns the
/// pointer.
pub fn complete_checkpoint(
    storage: &dyn CheckpointStorage,
    job: &str,
    id: u64,
    meta: &[u8],
) -> String {
    let job = storage.job(job).expect("job");
    let loc = job.begin_checkpoint(id).expect("begin_checkpoint");
    write_stream(loc.as_ref(), b"state").expect("stream");
    loc.commit(meta).expect("commit").pointer
}
