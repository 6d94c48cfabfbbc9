//! The small thing a backend provides: a synchronous, object-store-shaped [`BlobStore`], and
//! [`Places`], which opens the store rooted at a place (a directory, a URL).
//!
//! Keys are relative to the store's root: parts joined by `/`, each part non-empty, free of
//! `/`, control characters, `.` and `..`. The kit makes every key itself (never from untrusted
//! text without checking it first), so a store may map a key to a path or an object name
//! directly. A key part that starts with `.` is never made by the kit: a store may use such
//! names for scratch objects (the temporary file of an interrupted `put`), and the kit deletes
//! them together with the location they are in.

use std::{io::Read, sync::Arc};

use cairn_plugin_api::StorageResult;

/// How [`BlobStore::put`] treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Replace it.
    Overwrite,
    /// Fail with `AlreadyExists` if it exists, atomically: of two writers, one wins. This is
    /// the checkpoint's commit point (a no-replace link on a filesystem, a conditional create on
    /// an object store, a unique key in a database).
    Create,
}

/// An object as listed: its key (relative to the store's root) and size.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    /// The key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// An object being read: its size, and its bytes.
pub struct Blob {
    /// The size of the object, known at open.
    pub size: u64,
    /// The bytes, from the start.
    pub reader: Box<dyn Read + Send>,
}

impl Blob {
    /// A blob over bytes in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Blob {
            size: bytes.len() as u64,
            reader: Box::new(std::io::Cursor::new(bytes)),
        }
    }

    /// Read all of it.
    pub fn read_all(mut self, what: &str) -> StorageResult<Vec<u8>> {
        let mut out = Vec::with_capacity(self.size.min(64 << 20) as usize);
        self.reader
            .read_to_end(&mut out)
            .map_err(|e| cairn_plugin_api::StorageError::io(what, &e))?;
        Ok(out)
    }
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blob({} bytes)", self.size)
    }
}

/// A large object being written. Nothing of it is visible (or, once dropped, left anywhere)
/// until [`BlobWriter::finish`] returns: dropping a writer aborts it and removes what it wrote.
pub trait BlobWriter: Send {
    /// Append bytes.
    fn write(&mut self, bytes: &[u8]) -> StorageResult<()>;

    /// Complete the object, durably (after it returns, the bytes survive a crash once the
    /// names are synced, see [`BlobStore::sync`]). A failed finish leaves nothing behind.
    fn finish(self: Box<Self>) -> StorageResult<()>;
}

/// A synchronous blob store: the one thing a backend must provide. Every method may be called
/// from many threads at once.
///
/// Errors are [`cairn_plugin_api::StorageError`]s with a message naming the key (and the
/// path, URL or table behind it): `NotFound` for a missing object, `AlreadyExists` for a
/// [`PutMode::Create`] that lost, `Io` for the rest.
pub trait BlobStore: Send + Sync + 'static {
    /// Store `bytes` at `key` in one piece. With [`PutMode::Create`] this is the commit point.
    fn put(&self, key: &str, bytes: &[u8], mode: PutMode) -> StorageResult<()>;

    /// A writer for a large object at `key` (replacing one, if any, when it finishes).
    fn writer(&self, key: &str) -> StorageResult<Box<dyn BlobWriter>>;

    /// The object at `key`; `NotFound` if there is none.
    fn get(&self, key: &str) -> StorageResult<Blob>;

    /// Delete the object at `key`. An absent object is success.
    fn delete(&self, key: &str) -> StorageResult<()>;

    /// Every object whose key starts with `prefix/` (every object, for an empty prefix), in
    /// any order. A prefix with nothing under it is an empty list, not an error.
    fn list(&self, prefix: &str) -> StorageResult<Vec<Listed>>;

    /// The durability barrier before a commit: after it returns, every object finished under
    /// each of `prefixes` is durable *and findable* after a crash (a filesystem fsyncs the
    /// directories; an object store whose writes are durable when they return does nothing).
    fn sync(&self, prefixes: &[&str]) -> StorageResult<()>;
}

/// A [`BlobStore`] rooted somewhere, and how that root is written in pointers and locators.
#[derive(Clone)]
pub struct Root {
    /// The store.
    pub store: Arc<dyn BlobStore>,
    /// The root as pointers and locators spell it, normalised: `/var/cairn`, `s3://bucket/x`,
    /// `memory://`. Opening it again with [`Places::open`] must give the same text.
    pub shown: String,
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Root({})", self.shown)
    }
}

impl Root {
    /// `key` under this root, as a pointer or locator spells it.
    pub fn show(&self, key: &str) -> String {
        if self.shown.ends_with('/') {
            format!("{}{key}", self.shown)
        } else {
            format!("{}/{key}", self.shown)
        }
    }
}

/// Opens the store rooted at a place: a savepoint target as a user wrote it, or the part of a
/// pointer or locator before the location (which may have been tampered with, so parse it
/// strictly and refuse anything odd with `InvalidConfig`).
pub trait Places: Send + Sync + 'static {
    /// The store rooted at `place`. With `create`, make it if it is missing (a savepoint
    /// target); without, opening must write nothing (and a missing place may be `NotFound`).
    fn open(&self, place: &str, create: bool) -> StorageResult<Root>;
}

impl<F> Places for F
where
    F: Fn(&str, bool) -> StorageResult<Root> + Send + Sync + 'static,
{
    fn open(&self, place: &str, create: bool) -> StorageResult<Root> {
        self(place, create)
    }
}

/// A [`BlobWriter`] that keeps the bytes in memory and hands them to `put` when it finishes:
/// enough for a store whose objects fit in memory (a database row, say). Dropping it stores
/// nothing.
pub fn buffered_writer<F>(put: F) -> Box<dyn BlobWriter>
where
    F: FnOnce(Vec<u8>) -> StorageResult<()> + Send + 'static,
{
    struct Buffered<F> {
        bytes: Vec<u8>,
        put: F,
    }
    impl<F: FnOnce(Vec<u8>) -> StorageResult<()> + Send + 'static> BlobWriter for Buffered<F> {
        fn write(&mut self, bytes: &[u8]) -> StorageResult<()> {
            self.bytes.extend_from_slice(bytes);
            Ok(())
        }
        fn finish(self: Box<Self>) -> StorageResult<()> {
            (self.put)(self.bytes)
        }
    }
    Box::new(Buffered {
        bytes: Vec::new(),
        put,
    })
}
