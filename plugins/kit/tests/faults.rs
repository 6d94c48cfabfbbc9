use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use cairn_plugin_api::{Scope, StorageError, StorageResult};
use cairn_plugin_kit::{Blob, BlobStore, BlobWriter, Listed, MemStore, PutMode};

use crate::util::World;

/// A memory store whose writers fail at their second write, or whose commit puts fail, and
/// which counts the writers dropped without finishing.
#[derive(Default)]
struct Failing {
    inner: MemStore,
    fail_writes: bool,
    fail_create: bool,
    aborted: Arc<AtomicUsize>,
}

struct Writer {
    inner: Option<Box<dyn BlobWriter>>,
    writes: usize,
    fail: bool,
    aborted: Arc<AtomicUsize>,
}

impl BlobWriter for Writer {
    fn write(&mut self, bytes: &[u8]) -> StorageResult<()> {
        self.writes += 1;
        if self.fail && self.writes > 1 {
            return Err(StorageError::Io("disk on fire".into()));
        }
        self.inner.as_mut().unwrap().write(bytes)
    }
    fn finish(mut self: Box<Self>) -> StorageResult<()> {
        self.inner.take().unwrap().finish()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.inner.is_some() {
            self.aborted.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl BlobStore for Failing {
    fn put(&self, key: &str, bytes: &[u8], mode: PutMode) -> StorageResult<()> {
        if self.fail_create && mode == PutMode::Create {
            return Err(StorageError::Io(format!("{key}: quota")));
        }
        self.inner.put(key, bytes, mode)
    }
    fn writer(&self, key: &str) -> StorageResult<Box<dyn BlobWriter>> {
        Ok(Box::new(Writer {
            inner: Some(self.inner.writer(key)?),
            writes: 0,
            fail: self.fail_writes,
            aborted: self.aborted.clone(),
        }))
    }
    fn get(&self, key: &str) -> StorageResult<Blob> {
        self.inner.get(key)
    }
    fn delete(&self, key: &str) -> StorageResult<()> {
        self.inner.delete(key)
    }
    fn list(&self, prefix: &str) -> StorageResult<Vec<Listed>> {
        self.inner.list(prefix)
    }
    fn sync(&self, prefixes: &[&str]) -> StorageResult<()> {
        self.inner.sync(prefixes)
    }
}

#[test]
fn a_failed_write_breaks_the_stream_and_aborts_its_writer() {
    let store = Arc::new(Failing {
        fail_writes: true,
        ..Failing::default()
    });
    let storage = World::default().open(10, Some(store.clone()));
    let loc = storage.job("job").unwrap().begin_checkpoint(1).unwrap();
    let mut s = loc.create_stream(Scope::Exclusive).unwrap();
    s.write(&[1; 5]).unwrap();
    // Past the threshold: the writer gets the buffered bytes, then this write, which fails.
    assert!(s.write(&[2; 20]).is_err());
    assert_eq!(store.aborted.load(Ordering::SeqCst), 1);
    let err = s.close_and_get_handle().unwrap_err();
    assert!(err.to_string().contains("an earlier write"), "{err}");
    assert!(store.inner.list("").unwrap().is_empty());
}

#[test]
fn a_dropped_stream_aborts_and_a_failed_commit_is_not_listed() {
    let store = Arc::new(Failing {
        fail_create: true,
        ..Failing::default()
    });
    let storage = World::default().open(10, Some(store.clone()));
    let job = storage.job("job").unwrap();
    let loc = job.begin_checkpoint(1).unwrap();
    let mut s = loc.create_stream(Scope::Exclusive).unwrap();
    s.write(&[3; 100]).unwrap();
    drop(s);
    assert_eq!(store.aborted.load(Ordering::SeqCst), 1);
    let err = loc.commit(b"meta").unwrap_err();
    assert!(matches!(err, StorageError::Io(_)), "{err}");
    // Not committed: not listed, and the location can be cleaned up.
    assert!(job.list_completed().unwrap().is_empty());
    loc.dispose_on_failure().unwrap();
}
