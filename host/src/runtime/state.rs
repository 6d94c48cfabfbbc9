//! Keyed state with copy-on-write pages: a snapshot is a clone of one `Arc`, and the task goes
//! on changing its state while the snapshot is written elsewhere.
//!
//! # Layout
//!
//! Entries `(key, value)` live in **pages** of about [`PAGE_BYTES`] encoded bytes (one entry
//! per page when values are that large). Pages hang off **chunks** of [`CHUNK_PAGES`] pages,
//! and the chunks off one **root**: `Arc<Vec<Arc<Chunk>>>`, each chunk an `Arc<Vec<Arc<Page>>>`.
//! An index (`HashMap<key, (page, slot)>`) finds a key's entry; it is not part of a snapshot
//! and is rebuilt on restore.
//!
//! # Snapshots
//!
//! [`KeyedState::snapshot`] clones the root `Arc`: O(1). The first change after it copies the
//! root's vector of chunk pointers, then the chunk's vector of page pointers, then the page
//! (`Arc::make_mut` on each level), so a change costs a copy of what it touches and the
//! snapshot keeps seeing the state as it was. The writer ([`write_snapshot`]) consumes its view
//! page by page and drops each page once written, so a page the task changes after the writer
//! passed it is no longer shared and is not copied: the memory a snapshot costs is the pages
//! changed before the writer reached them.
//!
//! # Changed pages
//!
//! Every page carries the epoch of its last change, and every snapshot the epoch it was taken
//! at, so the pages changed since any earlier snapshot are known ([`StateSnapshot::changed_since`]);
//! incremental checkpoints upload only those, as *page records* that carry the page's id and
//! capacity ([`write_page_records`]), and a restore from page records rebuilds the very same
//! pages ([`KeyedState::from_pages`]), so the next incremental checkpoint goes on from them.
//!
//! # Encoding
//!
//! ```text
//! header: magic "CKS1" | version u16 LE (1) | 0u16 | entries u64 LE | pages u64 LE | epoch u64 LE
//! page:   entries u32 LE | body length u32 LE | body: (key, value) encoded with postcard, repeated
//! ```
//!
//! Pages are framed so a reader can check the structure without knowing the types
//! ([`check_encoding`]) and decode in bounded memory while streaming.
//!
//! A page record (the unit of incremental checkpoints, see `incremental.rs` for the object
//! around them) is a page with its place:
//!
//! ```text
//! record: page id u32 LE | capacity u32 LE | entries u32 LE | body length u32 LE | body
//! ```

use std::{collections::HashMap, hash::BuildHasherDefault, io::Read, sync::Arc};

use rustc_hash::FxHasher;
use serde::{de::DeserializeOwned, Serialize};

use super::{
    api::JobError,
    codec::{decode_front, encode_into},
};

/// The encoded size a page aims for.
pub const PAGE_BYTES: usize = 4096;

/// Entries per page at most (small values).
const MAX_PAGE_ENTRIES: usize = 256;

/// Pages per chunk.
pub const CHUNK_PAGES: usize = 1024;

const MAGIC: &[u8; 4] = b"CKS1";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 4 + 2 + 2 + 8 + 8 + 8;

/// Writes go out in pieces of about this size.
pub const WRITE_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    page: u32,
    index: u32,
}

#[derive(Clone)]
struct Page<K, V> {
    entries: Vec<(K, V)>,
    capacity: u32,
    /// The epoch of the last change.
    modified: u64,
}

type Chunk<K, V> = Vec<Arc<Page<K, V>>>;
type Root<K, V> = Vec<Arc<Chunk<K, V>>>;

/// The state of one keyed task: a value per key, with O(1) snapshots (see the module docs).
pub struct KeyedState<K, V> {
    index: HashMap<K, Slot, BuildHasherDefault<FxHasher>>,
    root: Arc<Root<K, V>>,
    pages: usize,
    /// Pages that may have room for another entry (checked when used), and whether a page is
    /// in that list.
    with_room: Vec<u32>,
    listed: Vec<bool>,
    /// The epoch changes are stamped with; a snapshot takes it and starts the next.
    epoch: u64,
    scratch: Vec<u8>,
}

impl<K, V> Default for KeyedState<K, V>
where
    K: Clone + Eq + std::hash::Hash + Serialize,
    V: Clone + Serialize,
{
    fn default() -> Self {
        Self::new()
    }
}

fn alloc_error(what: &str, e: std::collections::TryReserveError) -> JobError {
    JobError(format!("out of memory growing keyed state ({what}): {e}"))
}

impl<K, V> KeyedState<K, V>
where
    K: Clone + Eq + std::hash::Hash + Serialize,
    V: Clone + Serialize,
{
    /// An empty state at epoch 1.
    pub fn new() -> Self {
        KeyedState {
            index: HashMap::default(),
            root: Arc::new(Vec::new()),
            pages: 0,
            with_room: Vec::new(),
            listed: Vec::new(),
            epoch: 1,
            scratch: Vec::new(),
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no key has state.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Number of pages.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// The epoch the next snapshot will have.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        let slot = *self.index.get(key)?;
        Some(&self.page(slot.page).entries[slot.index as usize].1)
    }

    /// Whether `key` has a value.
    pub fn contains(&self, key: &K) -> bool {
        self.index.contains_key(key)
    }

    /// Every entry, in page order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.root
            .iter()
            .flat_map(|c| c.iter())
            .flat_map(|p| p.entries.iter().map(|(k, v)| (k, v)))
    }

    /// The value of `key`, to change (copying its page if a snapshot still holds it).
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let slot = *self.index.get(key)?;
        Some(self.value_mut(slot))
    }

    /// Set the value of `key`; returns the old one.
    pub fn insert(&mut self, key: K, value: V) -> Result<Option<V>, JobError> {
        if let Some(&slot) = self.index.get(&key) {
            return Ok(Some(std::mem::replace(self.value_mut(slot), value)));
        }
        self.insert_new(key, value).map(|_| None)
    }

    /// Remove `key`'s value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let slot = self.index.remove(key)?;
        let page = self.page_mut(slot.page);
        let (_, value) = page.entries.swap_remove(slot.index as usize);
        let moved = page
            .entries
            .get(slot.index as usize)
            .map(|(k, _)| k.clone());
        if let Some(moved) = moved {
            if let Some(s) = self.index.get_mut(&moved) {
                s.index = slot.index;
            }
        }
        self.list_with_room(slot.page);
        Some(value)
    }

    /// A consistent view of the state as it is now, for [`write_snapshot`]; O(1). Changes made
    /// after it are stamped with the next epoch.
    pub fn snapshot(&mut self) -> StateSnapshot<K, V> {
        let snap = StateSnapshot {
            root: self.root.clone(),
            entries: self.index.len() as u64,
            epoch: self.epoch,
        };
        self.epoch += 1;
        snap
    }

    fn page(&self, page: u32) -> &Page<K, V> {
        let p = page as usize;
        &self.root[p / CHUNK_PAGES][p % CHUNK_PAGES]
    }

    fn page_mut(&mut self, page: u32) -> &mut Page<K, V> {
        let p = page as usize;
        let root = Arc::make_mut(&mut self.root);
        let chunk = Arc::make_mut(&mut root[p / CHUNK_PAGES]);
        let page = Arc::make_mut(&mut chunk[p % CHUNK_PAGES]);
        page.modified = self.epoch;
        page
    }

    fn value_mut(&mut self, slot: Slot) -> &mut V {
        &mut self.page_mut(slot.page).entries[slot.index as usize].1
    }

    fn insert_new(&mut self, key: K, value: V) -> Result<Slot, JobError> {
        self.index
            .try_reserve(1)
            .map_err(|e| alloc_error("index", e))?;
        let page = loop {
            match self.with_room.last().copied() {
                Some(p) => {
                    let page = self.page(p);
                    if page.entries.len() < page.capacity as usize {
                        break p;
                    }
                    self.with_room.pop();
                    self.listed[p as usize] = false;
                }
                None => break self.new_page(&key, &value)?,
            }
        };
        let key_copy = key.clone();
        let entries = &mut self.page_mut(page).entries;
        entries.try_reserve(1).map_err(|e| alloc_error("page", e))?;
        entries.push((key, value));
        let slot = Slot {
            page,
            index: (entries.len() - 1) as u32,
        };
        self.index.insert(key_copy, slot);
        Ok(slot)
    }

    /// A new page sized for entries like this one.
    fn new_page(&mut self, key: &K, value: &V) -> Result<u32, JobError> {
        self.scratch.clear();
        let _ = encode_into(key, &mut self.scratch);
        let _ = encode_into(value, &mut self.scratch);
        let per_entry = self.scratch.len().max(1);
        let capacity = (PAGE_BYTES / per_entry).clamp(1, MAX_PAGE_ENTRIES) as u32;
        let id = u32::try_from(self.pages)
            .map_err(|_| JobError("keyed state has more pages than it can address".into()))?;
        let root = Arc::make_mut(&mut self.root);
        if self.pages % CHUNK_PAGES == 0 {
            root.try_reserve(1).map_err(|e| alloc_error("chunks", e))?;
            let mut chunk = Vec::new();
            chunk
                .try_reserve_exact(CHUNK_PAGES)
                .map_err(|e| alloc_error("chunk", e))?;
            root.push(Arc::new(chunk));
        }
        let chunk = Arc::make_mut(root.last_mut().expect("a chunk was just ensured"));
        let mut entries = Vec::new();
        entries
            .try_reserve_exact(capacity as usize)
            .map_err(|e| alloc_error("page", e))?;
        chunk.push(Arc::new(Page {
            entries,
            capacity,
            modified: self.epoch,
        }));
        self.pages += 1;
        self.listed
            .try_reserve(1)
            .map_err(|e| alloc_error("page list", e))?;
        self.listed.push(false);
        self.list_with_room(id);
        Ok(id)
    }

    fn list_with_room(&mut self, page: u32) {
        if !std::mem::replace(&mut self.listed[page as usize], true) {
            self.with_room.push(page);
        }
    }
}

impl<K, V> KeyedState<K, V>
where
    K: Clone + Eq + std::hash::Hash + Serialize,
    V: Clone + Serialize,
{
    /// The state whose page `i` is `pages[i]`, as the snapshot taken at `epoch` had it: the
    /// same pages with the same ids, so changed-page tracking goes on from that snapshot (every
    /// page counts as unchanged since `epoch`). A key in two pages is refused.
    pub fn from_pages(pages: Vec<RestoredPage<K, V>>, epoch: u64) -> Result<Self, String> {
        let mut state = KeyedState::new();
        let n = pages.len();
        u32::try_from(n).map_err(|_| format!("{n} pages are more than keyed state addresses"))?;
        let entries: usize = pages.iter().map(|p| p.entries.len()).sum();
        state
            .index
            .try_reserve(entries)
            .map_err(|e| alloc_error("index", e).0)?;
        state.listed = vec![false; n];
        let mut root: Root<K, V> = Vec::with_capacity(n.div_ceil(CHUNK_PAGES));
        for (i, page) in pages.into_iter().enumerate() {
            if i % CHUNK_PAGES == 0 {
                root.push(Arc::new(Vec::with_capacity(CHUNK_PAGES.min(n - i))));
            }
            for (index, (k, _)) in page.entries.iter().enumerate() {
                let slot = Slot {
                    page: i as u32,
                    index: index as u32,
                };
                if state.index.insert(k.clone(), slot).is_some() {
                    return Err(format!("a key appears twice (again in page {i})"));
                }
            }
            if page.entries.len() < page.capacity as usize {
                state.listed[i] = true;
                state.with_room.push(i as u32);
            }
            let chunk = Arc::get_mut(root.last_mut().expect("a chunk was just pushed"))
                .expect("the chunk is not shared yet");
            chunk.push(Arc::new(Page {
                entries: page.entries,
                capacity: page.capacity,
                modified: epoch,
            }));
        }
        state.root = Arc::new(root);
        state.pages = n;
        state.epoch = epoch + 1;
        Ok(state)
    }
}

/// The state of the key being processed, handed to [`Job::process`](super::api::Job::process).
pub struct ValueState<'a, K, V> {
    state: &'a mut KeyedState<K, V>,
    key: &'a K,
    slot: Option<Slot>,
}

impl<'a, K, V> ValueState<'a, K, V>
where
    K: Clone + Eq + std::hash::Hash + Serialize,
    V: Clone + Serialize,
{
    pub(crate) fn new(state: &'a mut KeyedState<K, V>, key: &'a K) -> Self {
        let slot = state.index.get(key).copied();
        ValueState { state, key, slot }
    }

    /// The key's value, if it has one.
    pub fn get(&self) -> Option<&V> {
        let slot = self.slot?;
        Some(&self.state.page(slot.page).entries[slot.index as usize].1)
    }

    /// The key's value, to change in place.
    pub fn get_mut(&mut self) -> Option<&mut V> {
        let slot = self.slot?;
        Some(self.state.value_mut(slot))
    }

    /// The key's value, created with `init` if it has none.
    pub fn get_or_insert_with(&mut self, init: impl FnOnce() -> V) -> Result<&mut V, JobError> {
        self.get_or_try_insert_with(|| Ok(init()))
    }

    /// The key's value, created with `init` (which may fail) if it has none.
    pub fn get_or_try_insert_with(
        &mut self,
        init: impl FnOnce() -> Result<V, JobError>,
    ) -> Result<&mut V, JobError> {
        let slot = match self.slot {
            Some(s) => s,
            None => {
                let s = self.state.insert_new(self.key.clone(), init()?)?;
                self.slot = Some(s);
                s
            }
        };
        Ok(self.state.value_mut(slot))
    }

    /// Set the key's value.
    pub fn set(&mut self, value: V) -> Result<(), JobError> {
        match self.slot {
            Some(s) => *self.state.value_mut(s) = value,
            None => self.slot = Some(self.state.insert_new(self.key.clone(), value)?),
        }
        Ok(())
    }

    /// Remove the key's value.
    pub fn clear(&mut self) -> Option<V> {
        self.slot.take()?;
        self.state.remove(self.key)
    }
}

/// A consistent, immutable view of a [`KeyedState`], taken at a barrier.
pub struct StateSnapshot<K, V> {
    root: Arc<Root<K, V>>,
    entries: u64,
    epoch: u64,
}

impl<K, V> StateSnapshot<K, V> {
    /// The epoch it was taken at.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Entries it holds.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Pages it holds.
    pub fn pages(&self) -> usize {
        self.root.iter().map(|c| c.len()).sum()
    }

    /// The ids of the pages changed after the snapshot taken at `epoch` (all pages for 0).
    pub fn changed_since(&self, epoch: u64) -> Vec<u32> {
        let mut ids = Vec::new();
        for (c, chunk) in self.root.iter().enumerate() {
            for (i, page) in chunk.iter().enumerate() {
                if page.modified > epoch {
                    ids.push((c * CHUNK_PAGES + i) as u32);
                }
            }
        }
        ids
    }

    /// Every entry, in page order (for tests and checks).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.root
            .iter()
            .flat_map(|c| c.iter())
            .flat_map(|p| p.entries.iter().map(|(k, v)| (k, v)))
    }
}

/// Encode `snapshot` into buffers of about [`WRITE_BYTES`] and hand each full buffer to `write`,
/// which gives back a buffer to fill next (the same one, emptied, or another, so that writing
/// and encoding can overlap); each page is released once encoded. Returns the bytes written.
pub fn write_snapshot<K: Serialize + Clone, V: Serialize + Clone>(
    snapshot: StateSnapshot<K, V>,
    write: &mut dyn FnMut(Vec<u8>) -> Result<Vec<u8>, String>,
) -> Result<u64, String> {
    let non_empty = snapshot
        .root
        .iter()
        .flat_map(|c| c.iter())
        .filter(|p| !p.entries.is_empty())
        .count() as u64;
    let mut buf: Vec<u8> = Vec::new();
    buf.try_reserve_exact(WRITE_BYTES + PAGE_BYTES)
        .map_err(|e| format!("cannot allocate the snapshot write buffer: {e}"))?;
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&VERSION.to_le_bytes());
    buf.extend_from_slice(&0u16.to_le_bytes());
    buf.extend_from_slice(&snapshot.entries.to_le_bytes());
    buf.extend_from_slice(&non_empty.to_le_bytes());
    buf.extend_from_slice(&snapshot.epoch.to_le_bytes());
    let mut total = 0u64;
    let mut written_entries = 0u64;
    // Own the root and the chunks (copying the pointer vectors if the task still shares them),
    // so each page's `Arc` is dropped as soon as it is encoded.
    let root = Arc::try_unwrap(snapshot.root).unwrap_or_else(|shared| (*shared).clone());
    for chunk in root {
        let chunk = Arc::try_unwrap(chunk).unwrap_or_else(|shared| (*shared).clone());
        for page in chunk {
            if page.entries.is_empty() {
                continue;
            }
            let start = buf.len();
            buf.extend_from_slice(&(page.entries.len() as u32).to_le_bytes());
            buf.extend_from_slice(&0u32.to_le_bytes());
            let body = encode_body(&page.entries, &mut buf)?;
            buf[start + 4..start + 8].copy_from_slice(&body.to_le_bytes());
            written_entries += page.entries.len() as u64;
            drop(page);
            flush_full(&mut buf, &mut total, write)?;
        }
    }
    if !buf.is_empty() {
        total += buf.len() as u64;
        write(buf)?;
    }
    if written_entries != snapshot.entries {
        return Err(format!(
            "snapshot holds {written_entries} entries, its index said {}",
            snapshot.entries
        ));
    }
    Ok(total)
}

/// Hand `buf` to `write` once it holds [`WRITE_BYTES`] or more (counting them in `total`),
/// and take back an empty buffer with room for the next ones.
fn flush_full(
    buf: &mut Vec<u8>,
    total: &mut u64,
    write: &mut dyn FnMut(Vec<u8>) -> Result<Vec<u8>, String>,
) -> Result<(), String> {
    if buf.len() < WRITE_BYTES {
        return Ok(());
    }
    *total += buf.len() as u64;
    let mut next = write(std::mem::take(buf))?;
    next.clear();
    next.try_reserve(WRITE_BYTES + PAGE_BYTES)
        .map_err(|e| format!("cannot allocate the snapshot write buffer: {e}"))?;
    *buf = next;
    Ok(())
}

/// The length of a page record's header.
pub const RECORD_HEADER_LEN: usize = 16;

/// What [`write_page_records`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsWritten {
    /// Bytes of page records (the prefix not counted).
    pub bytes: u64,
    /// CRC32C of those bytes.
    pub crc32c: u32,
    /// The id of every page written, in order.
    pub ids: Vec<u32>,
    /// Entries in them.
    pub entries: u64,
}

fn encode_body<K: Serialize, V: Serialize>(
    entries: &[(K, V)],
    buf: &mut Vec<u8>,
) -> Result<u32, String> {
    let start = buf.len();
    for (k, v) in entries {
        encode_into(k, buf)?;
        encode_into(v, buf)?;
    }
    u32::try_from(buf.len() - start).map_err(|_| "a state page encodes to more than 4 GiB".into())
}

/// Encode, as page records, the pages of `snapshot` changed after the snapshot taken at epoch
/// `after`, or every page (empty ones too) for `None`; `prefix` goes first. Buffers of about
/// [`WRITE_BYTES`] go to `write` as in [`write_snapshot`]. The view is released at once except
/// for the pages written, and each of those once encoded, so the task's changes meanwhile copy
/// as little as possible.
pub fn write_page_records<K: Serialize + Clone, V: Serialize + Clone>(
    snapshot: StateSnapshot<K, V>,
    after: Option<u64>,
    prefix: &[u8],
    write: &mut dyn FnMut(Vec<u8>) -> Result<Vec<u8>, String>,
) -> Result<RecordsWritten, String> {
    // The pages to write, each with its id; everything else of the view is dropped here.
    let mut pages: Vec<(u32, Arc<Page<K, V>>)> = Vec::new();
    let root = Arc::try_unwrap(snapshot.root).unwrap_or_else(|shared| (*shared).clone());
    for (c, chunk) in root.into_iter().enumerate() {
        let chunk = Arc::try_unwrap(chunk).unwrap_or_else(|shared| (*shared).clone());
        for (i, page) in chunk.into_iter().enumerate() {
            if after.is_none_or(|e| page.modified > e) {
                let id = u32::try_from(c * CHUNK_PAGES + i)
                    .map_err(|_| "keyed state has more pages than it can address".to_string())?;
                pages
                    .try_reserve(1)
                    .map_err(|e| format!("cannot list the pages to write: {e}"))?;
                pages.push((id, page));
            }
        }
    }
    let mut buf: Vec<u8> = Vec::new();
    buf.try_reserve_exact(WRITE_BYTES + PAGE_BYTES + prefix.len())
        .map_err(|e| format!("cannot allocate the snapshot write buffer: {e}"))?;
    buf.extend_from_slice(prefix);
    let mut written = RecordsWritten {
        bytes: 0,
        crc32c: 0,
        ids: Vec::with_capacity(pages.len()),
        entries: 0,
    };
    let mut total = 0u64;
    for (id, page) in pages {
        let start = buf.len();
        buf.extend_from_slice(&id.to_le_bytes());
        buf.extend_from_slice(&page.capacity.to_le_bytes());
        buf.extend_from_slice(&(page.entries.len() as u32).to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        let body = encode_body(&page.entries, &mut buf)?;
        buf[start + 12..start + 16].copy_from_slice(&body.to_le_bytes());
        written.crc32c = crc32c::crc32c_append(written.crc32c, &buf[start..]);
        written.bytes += (buf.len() - start) as u64;
        written.entries += page.entries.len() as u64;
        written.ids.push(id);
        drop(page);
        flush_full(&mut buf, &mut total, write)?;
    }
    if !buf.is_empty() {
        total += buf.len() as u64;
        write(buf)?;
    }
    debug_assert_eq!(total, written.bytes + prefix.len() as u64);
    Ok(written)
}

/// The header of a page record, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// The page's id.
    pub id: u32,
    /// Entries the page has room for.
    pub capacity: u32,
    /// Entries in it.
    pub entries: u32,
    /// Bytes of its body.
    pub body: u32,
}

impl RecordHeader {
    /// Parse and check a record header.
    pub fn parse(h: &[u8; RECORD_HEADER_LEN]) -> Result<Self, String> {
        let at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().expect("4 bytes"));
        let r = RecordHeader {
            id: at(0),
            capacity: at(4),
            entries: at(8),
            body: at(12),
        };
        if r.capacity == 0 || r.capacity as usize > MAX_PAGE_ENTRIES || r.entries > r.capacity {
            return Err(format!(
                "page {} holds {} entries with room for {} (at most {MAX_PAGE_ENTRIES})",
                r.id, r.entries, r.capacity
            ));
        }
        if (r.entries == 0) != (r.body == 0) {
            return Err(format!(
                "page {} holds {} entries in {} bytes",
                r.id, r.entries, r.body
            ));
        }
        Ok(r)
    }
}

/// A page read back from page records, for [`KeyedState::from_pages`].
pub struct RestoredPage<K, V> {
    /// Entries it has room for.
    pub capacity: u32,
    /// Its entries.
    pub entries: Vec<(K, V)>,
}

/// Decode the body of a page record holding `n` entries; `accept` is asked about every key.
pub fn decode_page<K: DeserializeOwned, V: DeserializeOwned>(
    header: &RecordHeader,
    body: &[u8],
    accept: &mut dyn FnMut(&K) -> Result<(), String>,
) -> Result<RestoredPage<K, V>, String> {
    let mut entries = Vec::new();
    entries
        .try_reserve_exact(header.capacity as usize)
        .map_err(|e| format!("page {}: {e}", header.id))?;
    let mut rest = body;
    for _ in 0..header.entries {
        let (k, tail): (K, &[u8]) = decode_front(rest)?;
        let (v, tail): (V, &[u8]) = decode_front(tail)?;
        rest = tail;
        accept(&k)?;
        entries.push((k, v));
    }
    if !rest.is_empty() {
        return Err(format!(
            "page {}: {} bytes left after its entries",
            header.id,
            rest.len()
        ));
    }
    Ok(RestoredPage {
        capacity: header.capacity,
        entries,
    })
}

/// What a structurally valid encoding holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodingSummary {
    /// Entries.
    pub entries: u64,
    /// Pages.
    pub pages: u64,
    /// The epoch of the snapshot.
    pub epoch: u64,
}

fn read_exact(r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<(), String> {
    r.read_exact(buf)
        .map_err(|e| format!("keyed state ends early ({what}): {e}"))
}

fn read_header(r: &mut dyn Read) -> Result<EncodingSummary, String> {
    let mut h = [0u8; HEADER_LEN];
    read_exact(r, &mut h, "header")?;
    if &h[..4] != MAGIC {
        return Err("keyed state does not start with its magic number".to_string());
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    if version != VERSION {
        return Err(format!(
            "keyed state format {version} is not one this cairn reads (it reads {VERSION})"
        ));
    }
    let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
    Ok(EncodingSummary {
        entries: u64_at(8),
        pages: u64_at(16),
        epoch: u64_at(24),
    })
}

/// Read pages from `r`, handing each page's entry count and body to `each`.
fn read_pages(
    r: &mut dyn Read,
    header: &EncodingSummary,
    mut each: impl FnMut(u32, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let mut body = Vec::new();
    let mut entries = 0u64;
    for page in 0..header.pages {
        let mut h = [0u8; 8];
        read_exact(r, &mut h, "page header")?;
        let n = u32::from_le_bytes(h[..4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(h[4..].try_into().expect("4 bytes")) as usize;
        if n == 0 {
            return Err(format!("keyed state page {page} is empty"));
        }
        body.clear();
        body.try_reserve(len)
            .map_err(|e| format!("keyed state page {page} of {len} bytes: {e}"))?;
        body.resize(len, 0);
        read_exact(r, &mut body, "page body")?;
        entries += u64::from(n);
        if entries > header.entries {
            return Err(format!(
                "keyed state holds more entries than its header's {}",
                header.entries
            ));
        }
        each(n, &body).map_err(|e| format!("keyed state page {page}: {e}"))?;
    }
    if entries != header.entries {
        return Err(format!(
            "keyed state holds {entries} entries, its header says {}",
            header.entries
        ));
    }
    let mut extra = [0u8; 1];
    match r.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => Err("keyed state has bytes after its last page".to_string()),
        Err(e) => Err(format!("reading keyed state: {e}")),
    }
}

/// Check the framing of encoded keyed state without knowing its types.
pub fn check_encoding(bytes: &[u8]) -> Result<EncodingSummary, String> {
    let mut r = bytes;
    let header = read_header(&mut r)?;
    // A page needs at least 9 bytes, so the header's page count is bounded by the length.
    if header.pages > bytes.len() as u64 / 9 {
        return Err(format!(
            "keyed state claims {} pages in {} bytes",
            header.pages,
            bytes.len()
        ));
    }
    read_pages(&mut r, &header, |_, _| Ok(()))?;
    Ok(header)
}

/// Check the state bytes of a task of `operator` as metadata names it: keyed tasks' state with
/// [`check_encoding`]; the keyed counter of metadata format 1 (`counter`) in that format's
/// layout (magic `KCS1`, entry size, entry count, entries).
pub fn check_task_state(operator: &str, bytes: &[u8]) -> Result<(), String> {
    match operator {
        crate::metadata::KEYED_OPERATOR => check_encoding(bytes).map(|_| ()),
        "counter" => {
            if bytes.len() < 16 || &bytes[..4] != b"KCS1" {
                return Err("counter state does not start with its magic number".to_string());
            }
            let entry = u64::from(u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")));
            let n = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
            if entry < 16 || (bytes.len() as u64 - 16) != n.saturating_mul(entry) {
                return Err(format!(
                    "counter state holds {} bytes for {n} entries of {entry}",
                    bytes.len() - 16
                ));
            }
            Ok(())
        }
        other => Err(format!("state of an unknown operator '{other}'")),
    }
}

/// Decode keyed state from `r`; `accept` is asked about every key (a task refuses keys it does
/// not own).
pub fn read_state<K, V>(
    r: &mut dyn Read,
    mut accept: impl FnMut(&K) -> Result<(), String>,
) -> Result<KeyedState<K, V>, String>
where
    K: Clone + Eq + std::hash::Hash + Serialize + DeserializeOwned,
    V: Clone + Serialize + DeserializeOwned,
{
    let header = read_header(r)?;
    let mut state = KeyedState::new();
    read_pages(r, &header, |n, body| {
        let mut rest = body;
        for _ in 0..n {
            let (k, tail): (K, &[u8]) = decode_front(rest)?;
            let (v, tail): (V, &[u8]) = decode_front(tail)?;
            rest = tail;
            accept(&k)?;
            if state.insert(k, v).map_err(|e| e.0)?.is_some() {
                return Err("a key appears twice".to_string());
            }
        }
        if rest.is_empty() {
            Ok(())
        } else {
            Err(format!("{} bytes left after its entries", rest.len()))
        }
    })?;
    state.epoch = header.epoch + 1;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(snap: StateSnapshot<u64, Vec<u8>>) -> Vec<u8> {
        let mut out = Vec::new();
        write_snapshot(snap, &mut |b| {
            out.extend_from_slice(&b);
            Ok(b)
        })
        .unwrap();
        out
    }

    fn filled(n: u64, size: usize) -> KeyedState<u64, Vec<u8>> {
        let mut s = KeyedState::new();
        for k in 0..n {
            s.insert(k, vec![k as u8; size]).unwrap();
        }
        s
    }

    #[test]
    fn a_snapshot_never_sees_later_changes() {
        let mut s = filled(500, 100);
        let snap = s.snapshot();
        for k in 0..500 {
            s.get_mut(&k).unwrap()[0] = 0xff;
        }
        s.remove(&7);
        s.insert(1000, vec![1; 100]).unwrap();
        assert_eq!(snap.entries(), 500);
        for (k, v) in snap.iter() {
            assert_eq!(v, &vec![*k as u8; 100], "key {k}");
        }
        let bytes = encode(snap);
        let back: KeyedState<u64, Vec<u8>> = read_state(&mut bytes.as_slice(), |_| Ok(())).unwrap();
        assert_eq!(back.len(), 500);
        for k in 0..500u64 {
            assert_eq!(back.get(&k).unwrap(), &vec![k as u8; 100]);
        }
        // And the live state has the changes.
        assert_eq!(s.get(&3).unwrap()[0], 0xff);
        assert!(s.get(&7).is_none());
        assert_eq!(s.len(), 500);
    }

    #[test]
    fn a_snapshot_written_while_the_state_changes_holds_the_state_at_the_snapshot() {
        let mut s = filled(2000, 512);
        let snap = s.snapshot();
        let writer = std::thread::spawn(move || encode(snap));
        for round in 1..=20u8 {
            for k in (0..2000).step_by(3) {
                s.get_mut(&k).unwrap()[round as usize] = round;
            }
        }
        let bytes = writer.join().unwrap();
        let back: KeyedState<u64, Vec<u8>> = read_state(&mut bytes.as_slice(), |_| Ok(())).unwrap();
        for k in 0..2000u64 {
            assert_eq!(back.get(&k).unwrap(), &vec![k as u8; 512], "key {k}");
        }
        assert_eq!(s.get(&0).unwrap()[20], 20);
    }

    #[test]
    fn changed_pages_are_tracked_per_epoch() {
        let mut s = filled(1000, 1000); // 4 entries a page
        let first = s.snapshot();
        assert_eq!(first.changed_since(0).len(), first.pages());
        s.get_mut(&0).unwrap()[1] = 9;
        s.get_mut(&999).unwrap()[1] = 9;
        let second = s.snapshot();
        let changed = second.changed_since(first.epoch());
        assert_eq!(changed.len(), 2, "{changed:?}");
        let third = s.snapshot();
        assert!(third.changed_since(second.epoch()).is_empty());
    }

    #[test]
    fn removal_keeps_the_index_right() {
        let mut s = filled(300, 8);
        for k in (0..300).step_by(3) {
            assert_eq!(s.remove(&k), Some(vec![k as u8; 8]));
        }
        for k in 0..300u64 {
            assert_eq!(s.get(&k).is_some(), k % 3 != 0, "key {k}");
            if k % 3 != 0 {
                assert_eq!(s.get(&k).unwrap(), &vec![k as u8; 8]);
            }
        }
        for k in 1000..1100 {
            s.insert(k, vec![1; 8]).unwrap();
        }
        assert_eq!(s.len(), 300);
        let bytes = encode(s.snapshot());
        assert_eq!(check_encoding(&bytes).unwrap().entries, 300);
    }

    #[test]
    fn damaged_encodings_are_refused() {
        let bytes = encode(filled(50, 64).snapshot());
        assert!(check_encoding(&bytes).is_ok());
        for len in 0..bytes.len() {
            assert!(check_encoding(&bytes[..len]).is_err(), "truncated to {len}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(check_encoding(&extra).is_err());
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(check_encoding(&bad).is_err());
        let mut wrong_count = bytes.clone();
        wrong_count[8] ^= 1;
        assert!(check_encoding(&wrong_count).is_err());
        let refused: Result<KeyedState<u64, Vec<u8>>, _> = read_state(&mut bytes.as_slice(), |k| {
            if *k == 7 {
                Err("not mine".to_string())
            } else {
                Ok(())
            }
        });
        assert!(refused.err().expect("refused").contains("not mine"));
    }
}
