//! Incremental checkpoints: a keyed task uploads only the pages changed since the checkpoint
//! its barrier names as the *base*, into one SHARED object, and its state in the checkpoint is
//! the *chain* of segments (byte ranges of objects) that hold each page's newest version.
//!
//! # Objects and segments
//!
//! A task writes at most one object per checkpoint (Flink's file merging, FLIP-306: every
//! changed page of the task goes into it, however many keys changed), so a checkpoint stores at
//! most one state object per task, plus its metadata:
//!
//! ```text
//! object:  header | segment
//! header:  magic "CKSG" | version u16 LE (1) | 0u16 | checkpoint id u64 LE | subtask u32 LE
//!          | 0u32 | epoch u64 LE                                            (32 bytes)
//! segment: page records (see `state.rs`), in page id order
//! ```
//!
//! The metadata names the segment by a [`SegmentRecord`]: the object's handle (what the plugin
//! API gives: locator, size, CRC32C of the whole object), the checkpoint that wrote it, the
//! range's offset and length, the CRC32C of the range, its page count, and how many of its
//! pages are live (not changed again later in the chain). The header binds the object to its
//! checkpoint and subtask, so metadata pointing a task at another task's object is refused.
//!
//! # Reading a chain
//!
//! The plugin API reads whole objects only, checked at the end. A reader therefore streams each
//! object of the chain, newest first: it checks the header, skips to the segment's offset,
//! walks its records checking the range's CRC32C and length, keeps the pages not seen in a
//! newer segment, and reads on to the end so the backend's and the host's whole-object checks
//! run too ([`ChainReader`]). Every page id below the task's page count must be found, the live
//! counts must match the records, and the entries must add up. The pages keep their ids and
//! capacities ([`KeyedState::from_pages`]), so a task restored from a chain it owns goes on
//! extending it, and the [`Chain`] (which object holds each page) comes back with the state.
//!
//! # Chains on the task side
//!
//! A task keeps the [`Chain`] of each of its recent checkpoints whose upload finished. A barrier
//! names its base (the newest completed checkpoint when it was triggered, or none for a full
//! checkpoint); the new chain is the base's plus the new segment, with segments whose pages
//! were all changed since dropped. A chain is never based on a checkpoint that did not
//! complete, so a checkpoint references only objects of completed checkpoints and its own.

use std::{collections::HashMap, io::Read, sync::Arc};

use cairn_plugin_api::{CheckpointStorage, StateHandle, StorageError};
use serde::{de::DeserializeOwned, Serialize};

use super::{
    codec::check_owner,
    restore::CheckedReader,
    state::{
        decode_page, KeyedState, RecordHeader, RecordsWritten, RestoredPage, RECORD_HEADER_LEN,
    },
};
use crate::metadata::{HandleRecord, SegmentRecord, TaskState};

const MAGIC: &[u8; 4] = b"CKSG";
const VERSION: u16 = 1;

/// The length of an object's header; its segment starts here.
pub const OBJECT_HEADER_LEN: usize = 32;

/// `checkpointing.full-every` when it is not set: a full checkpoint at least every this many
/// checkpoints, so a restore reads at most this many objects per task.
pub const DEFAULT_FULL_EVERY: u32 = 20;

/// How a keyed task writes its state for one barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateWrite {
    /// One EXCLUSIVE stream in the whole-state encoding (`incremental = false`, and savepoints,
    /// which are self-contained).
    Whole,
    /// Every page, into one SHARED object: the start of a new chain.
    Full {
        /// The newest completed checkpoint when it was triggered: later deltas extend it or a
        /// newer one, so the task drops the chains of older checkpoints (`None`: none yet).
        keep_from: Option<u64>,
    },
    /// The pages changed since completed checkpoint `base`, extending its chain.
    Delta {
        /// The completed checkpoint whose chain is extended.
        base: u64,
    },
}

/// The header of the object a task writes for one checkpoint.
pub(crate) fn object_header(checkpoint_id: u64, subtask: u32, epoch: u64) -> [u8; 32] {
    let mut h = [0u8; OBJECT_HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&checkpoint_id.to_le_bytes());
    h[16..20].copy_from_slice(&subtask.to_le_bytes());
    h[24..32].copy_from_slice(&epoch.to_le_bytes());
    h
}

fn check_object_header(
    h: &[u8; OBJECT_HEADER_LEN],
    seg: &SegmentRecord,
    subtask: u32,
) -> Result<(), String> {
    if &h[..4] != MAGIC {
        return Err("the object does not start with the state segment magic number".into());
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    if version != VERSION {
        return Err(format!(
            "state object format {version} is not one this cairn reads (it reads {VERSION})"
        ));
    }
    let checkpoint = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
    let task = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"));
    if checkpoint != seg.checkpoint_id || task != subtask {
        return Err(format!(
            "the object was written by task {task} for checkpoint {checkpoint}, but the metadata \
             names it as task {subtask}'s of checkpoint {}",
            seg.checkpoint_id
        ));
    }
    Ok(())
}

/// The segment record of an object just written.
pub(crate) fn new_segment(
    handle: &StateHandle,
    checkpoint_id: u64,
    written: &RecordsWritten,
) -> SegmentRecord {
    SegmentRecord {
        object: HandleRecord::from(handle),
        checkpoint_id,
        offset: OBJECT_HEADER_LEN as u64,
        length: written.bytes,
        crc32c: written.crc32c,
        pages: written.ids.len() as u64,
        live_pages: written.ids.len() as u64,
    }
}

/// Which segment holds each page's newest version, after one checkpoint of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chain {
    /// The checkpoint it is the state of.
    pub(crate) checkpoint_id: u64,
    /// The epoch of that checkpoint's snapshot: pages changed later have a later epoch.
    pub(crate) epoch: u64,
    /// The segments, oldest first, with their live counts.
    pub(crate) segments: Vec<SegmentRecord>,
    /// For every page id, the index in `segments` of its newest version.
    pub(crate) owner: Vec<u32>,
}

impl Chain {
    /// The chain of a full checkpoint: one segment with every page.
    pub(crate) fn full(checkpoint_id: u64, epoch: u64, segment: SegmentRecord) -> Self {
        let pages = segment.pages as usize;
        Chain {
            checkpoint_id,
            epoch,
            segments: vec![segment],
            owner: vec![0; pages],
        }
    }

    /// This chain extended by checkpoint `checkpoint_id`, whose snapshot at `epoch` wrote the
    /// pages `ids` (ascending) into `segment` (`None` when no page changed), for a state of
    /// `pages` pages. Segments left with no live page drop out.
    pub(crate) fn extend(
        &self,
        checkpoint_id: u64,
        epoch: u64,
        segment: Option<SegmentRecord>,
        ids: &[u32],
        pages: usize,
    ) -> Result<Chain, String> {
        let mut next = self.clone();
        next.checkpoint_id = checkpoint_id;
        next.epoch = epoch;
        if let Some(segment) = segment {
            let new = next.segments.len() as u32;
            for &id in ids {
                let id = id as usize;
                match id.cmp(&next.owner.len()) {
                    std::cmp::Ordering::Less => {
                        let old = next.owner[id] as usize;
                        next.segments[old].live_pages -= 1;
                        next.owner[id] = new;
                    }
                    std::cmp::Ordering::Equal => next.owner.push(new),
                    std::cmp::Ordering::Greater => {
                        return Err(format!(
                            "page {id} is new, but page {} was never written",
                            next.owner.len()
                        ))
                    }
                }
            }
            next.segments.push(segment);
            // Drop the segments nothing is read from any more, and renumber the owners.
            if next.segments.iter().any(|s| s.live_pages == 0) {
                let mut renumber = Vec::with_capacity(next.segments.len());
                let mut kept = 0u32;
                for s in &next.segments {
                    renumber.push(kept);
                    kept += u32::from(s.live_pages > 0);
                }
                next.segments.retain(|s| s.live_pages > 0);
                for o in &mut next.owner {
                    *o = renumber[*o as usize];
                }
            }
        }
        if next.owner.len() != pages {
            return Err(format!(
                "the chain covers {} pages, the state has {pages}",
                next.owner.len()
            ));
        }
        Ok(next)
    }
}

/// Read `len` bytes into `buf` (resized), or say which part ended early.
fn read_exactly(r: &mut dyn Read, buf: &mut Vec<u8>, len: usize, what: &str) -> Result<(), String> {
    buf.clear();
    buf.try_reserve(len)
        .map_err(|e| format!("{what} of {len} bytes: {e}"))?;
    buf.resize(len, 0);
    r.read_exact(buf)
        .map_err(|e| format!("the object ends early ({what}): {e}"))
}

/// Read to the end of `r`, so that the whole-object checks run.
fn drain(r: &mut dyn Read) -> Result<(), String> {
    std::io::copy(r, &mut std::io::sink())
        .map(|_| ())
        .map_err(|e| format!("reading the rest of the object: {e}"))
}

/// What [`scan_segment`] hands each page record to: its header and its body.
pub(crate) type RecordVisitor<'a> = dyn FnMut(&RecordHeader, &[u8]) -> Result<(), String> + 'a;

/// Walk the page records of `seg` in the object `r` streams (from its first byte): the header
/// is checked, each record's header and body go to `each`, the range's length, CRC32C and page
/// count are checked, and the object is read to its end.
pub(crate) fn scan_segment(
    r: &mut dyn Read,
    seg: &SegmentRecord,
    subtask: u32,
    each: &mut RecordVisitor<'_>,
) -> Result<(), String> {
    let mut header = [0u8; OBJECT_HEADER_LEN];
    r.read_exact(&mut header)
        .map_err(|e| format!("the object ends early (its header): {e}"))?;
    check_object_header(&header, seg, subtask)?;
    let skip = seg
        .offset
        .checked_sub(OBJECT_HEADER_LEN as u64)
        .ok_or_else(|| {
            format!(
                "the segment starts at {}, inside the object's header",
                seg.offset
            )
        })?;
    std::io::copy(&mut r.take(skip), &mut std::io::sink())
        .map_err(|e| format!("skipping to the segment at {}: {e}", seg.offset))?;
    let mut left = seg.length;
    let mut crc = 0u32;
    let mut pages = 0u64;
    let mut body = Vec::new();
    let mut h = [0u8; RECORD_HEADER_LEN];
    while left > 0 {
        if left < RECORD_HEADER_LEN as u64 {
            return Err(format!(
                "the segment ends inside a page record ({left} bytes left)"
            ));
        }
        r.read_exact(&mut h)
            .map_err(|e| format!("the object ends early (a page record): {e}"))?;
        let record = RecordHeader::parse(&h)?;
        left -= RECORD_HEADER_LEN as u64;
        if u64::from(record.body) > left {
            return Err(format!(
                "page {} has a {} byte body, the segment has {left} bytes left",
                record.id, record.body
            ));
        }
        read_exactly(r, &mut body, record.body as usize, "a page body")?;
        left -= u64::from(record.body);
        crc = crc32c::crc32c_append(crc32c::crc32c_append(crc, &h), &body);
        pages += 1;
        each(&record, &body).map_err(|e| format!("page {}: {e}", record.id))?;
    }
    if crc != seg.crc32c {
        return Err(format!(
            "the segment's bytes have crc32c {crc:08x}, the metadata says {:08x}",
            seg.crc32c
        ));
    }
    if pages != seg.pages {
        return Err(format!(
            "the segment holds {pages} pages, the metadata says {}",
            seg.pages
        ));
    }
    drain(r)
}

/// A task's state read back from its chain, newest segment first (see the module docs).
pub(crate) struct ChainReader<K, V> {
    subtask: u32,
    parallelism: u32,
    pages: Vec<Option<RestoredPage<K, V>>>,
    owner: Vec<u32>,
}

impl<K, V> ChainReader<K, V>
where
    K: Clone + Eq + std::hash::Hash + Serialize + DeserializeOwned,
    V: Clone + Serialize + DeserializeOwned,
{
    /// A reader for `task` of a job with `parallelism` tasks.
    pub(crate) fn new(task: &TaskState, parallelism: u32) -> Result<Self, String> {
        let n = usize::try_from(task.pages)
            .ok()
            .filter(|&n| n <= u32::MAX as usize)
            .ok_or_else(|| format!("{} pages are more than keyed state addresses", task.pages))?;
        // Each page needs a record of at least its header in some segment.
        let bytes: u64 = task.segments.iter().map(|s| s.length).sum();
        if task.pages > bytes / RECORD_HEADER_LEN as u64 {
            return Err(format!(
                "it claims {} pages in {bytes} bytes of segments",
                task.pages
            ));
        }
        let mut pages = Vec::new();
        pages
            .try_reserve_exact(n)
            .map_err(|e| format!("a table of {n} pages: {e}"))?;
        pages.resize_with(n, || None);
        Ok(ChainReader {
            subtask: task.subtask,
            parallelism,
            pages,
            owner: vec![u32::MAX; n],
        })
    }

    /// Read segment `index` of the chain from the object `r` streams. Segments must come newest
    /// first.
    pub(crate) fn read_segment(
        mut self,
        index: usize,
        seg: &SegmentRecord,
        r: &mut dyn Read,
    ) -> Result<Self, String> {
        let (subtask, parallelism, n) = (self.subtask, self.parallelism, self.pages.len());
        let mut live = 0u64;
        let mut accept = |k: &K| check_owner(k, subtask, parallelism);
        scan_segment(r, seg, subtask, &mut |record, body| {
            let id = record.id as usize;
            let slot = self
                .pages
                .get_mut(id)
                .ok_or_else(|| format!("the task has {n} pages, not page {id}"))?;
            if slot.is_none() {
                *slot = Some(decode_page(record, body, &mut accept)?);
                self.owner[id] = index as u32;
                live += 1;
            }
            Ok(())
        })?;
        if live != seg.live_pages {
            return Err(format!(
                "{live} of its pages are live, the metadata says {}",
                seg.live_pages
            ));
        }
        Ok(self)
    }

    /// The state and its chain, once every segment was read.
    pub(crate) fn finish(
        self,
        task: &TaskState,
        checkpoint_id: u64,
    ) -> Result<(KeyedState<K, V>, Chain), String> {
        if let Some(missing) = self.pages.iter().position(Option::is_none) {
            return Err(format!("no segment holds page {missing}"));
        }
        let pages: Vec<RestoredPage<K, V>> =
            self.pages.into_iter().map(|p| p.expect("all")).collect();
        let entries: u64 = pages.iter().map(|p| p.entries.len() as u64).sum();
        if entries != task.entries {
            return Err(format!(
                "its pages hold {entries} entries, the metadata says {}",
                task.entries
            ));
        }
        let state = KeyedState::from_pages(pages, task.epoch)?;
        let chain = Chain {
            checkpoint_id,
            epoch: task.epoch,
            segments: task.segments.clone(),
            owner: self.owner,
        };
        Ok((state, chain))
    }
}

/// Read a segmented task's state straight from `storage` (no deadline: for tools and tests;
/// a restore reads through the coordinator's bounded calls).
pub fn read_segmented_task<K, V>(
    storage: &dyn CheckpointStorage,
    task: &TaskState,
    checkpoint_id: u64,
    parallelism: u32,
) -> Result<KeyedState<K, V>, String>
where
    K: Clone + Eq + std::hash::Hash + Serialize + DeserializeOwned,
    V: Clone + Serialize + DeserializeOwned,
{
    let mut reader = ChainReader::<K, V>::new(task, parallelism)?;
    for (i, seg) in task.segments.iter().enumerate().rev() {
        let handle = seg.object.to_handle().map_err(|e| e.to_string())?;
        let input = storage
            .open_handle(&handle)
            .map_err(|e| format!("{}: {e}", handle.describe()))?;
        let mut r = std::io::BufReader::with_capacity(1 << 20, CheckedReader::new(&handle, input));
        reader = reader
            .read_segment(i, seg, &mut r)
            .map_err(|e| format!("{}: {e}", handle.describe()))?;
    }
    Ok(reader.finish(task, checkpoint_id)?.0)
}

/// What a segment was found to hold by [`verify_segments`]: each record's page id and entries.
#[derive(Debug)]
struct Scanned {
    ids: Vec<u32>,
    entries: Vec<u32>,
}

/// Segments already read in one verification, so an object that several checkpoints reference
/// is read once.
#[derive(Debug, Default)]
pub struct SegmentCache {
    seen: HashMap<(String, u64, u64, u32), Arc<Scanned>>,
}

/// A problem [`verify_segments`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentProblem {
    /// What is wrong, naming the object.
    pub text: String,
    /// The storage said the object does not exist.
    pub not_found: bool,
}

/// Check a segmented task's chain without knowing its types: every object is read whole (size
/// and CRC32C against its handle, by the backend and again by the host), every segment's
/// header, range CRC32C, length and records, and across the chain the live counts, that every
/// page is found and that the entries add up. `progress` is told the bytes of each object read.
pub fn verify_segments(
    storage: &dyn CheckpointStorage,
    task: &TaskState,
    cache: &mut SegmentCache,
    progress: &dyn Fn(&StateHandle, u64),
) -> Vec<SegmentProblem> {
    let mut problems = Vec::new();
    let name = format!("{}[{}]", task.operator, task.subtask);
    let other = |text: String| SegmentProblem {
        text,
        not_found: false,
    };
    let mut scanned: Vec<Option<Arc<Scanned>>> = Vec::with_capacity(task.segments.len());
    for seg in &task.segments {
        let handle = match seg.object.to_handle() {
            Ok(h) => h,
            Err(e) => {
                problems.push(other(format!("{name}: {e}")));
                scanned.push(None);
                continue;
            }
        };
        let key = seg
            .stored_locator()
            .map(|l| (l.to_string(), seg.offset, seg.length, seg.crc32c));
        if let Some(hit) = key.as_ref().and_then(|k| cache.seen.get(k)) {
            scanned.push(Some(hit.clone()));
            continue;
        }
        let what = format!(
            "{name} segment of checkpoint {} in {}: ",
            seg.checkpoint_id,
            handle.describe()
        );
        let input = match storage.open_handle(&handle) {
            Ok(i) => i,
            Err(e) => {
                problems.push(SegmentProblem {
                    text: format!("{what}{e}"),
                    not_found: matches!(e, StorageError::NotFound(_)),
                });
                scanned.push(None);
                continue;
            }
        };
        let mut found = Scanned {
            ids: Vec::new(),
            entries: Vec::new(),
        };
        let mut r = std::io::BufReader::with_capacity(1 << 20, CheckedReader::new(&handle, input));
        let result = scan_segment(&mut r, seg, task.subtask, &mut |record, _| {
            found.ids.push(record.id);
            found.entries.push(record.entries);
            Ok(())
        });
        match result {
            Ok(()) => {
                progress(&handle, handle.size());
                let found = Arc::new(found);
                if let Some(k) = key {
                    cache.seen.insert(k, found.clone());
                }
                scanned.push(Some(found));
            }
            Err(e) => {
                // A stream that says "not found" midway is reported by its message; only a
                // failed open is a clean "not found".
                problems.push(other(format!("{what}{e}")));
                scanned.push(None);
            }
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    // Across the chain, newest first: which version of each page is live.
    let n = task.pages as usize;
    let mut seen = vec![false; n];
    let mut entries = 0u64;
    for (seg, found) in task.segments.iter().zip(&scanned).rev() {
        let found = found
            .as_ref()
            .expect("no problems, so every segment was scanned");
        let mut live = 0u64;
        for (&id, &e) in found.ids.iter().zip(&found.entries) {
            match seen.get_mut(id as usize) {
                None => {
                    problems.push(other(format!(
                        "{name}: the segment of checkpoint {} holds page {id}, the task has {n} pages",
                        seg.checkpoint_id
                    )));
                    return problems;
                }
                Some(s) if !*s => {
                    *s = true;
                    live += 1;
                    entries += u64::from(e);
                }
                Some(_) => {}
            }
        }
        if live != seg.live_pages {
            problems.push(other(format!(
                "{name}: {live} pages of the segment of checkpoint {} are live, the metadata says {}",
                seg.checkpoint_id, seg.live_pages
            )));
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        problems.push(other(format!("{name}: no segment holds page {missing}")));
    } else if entries != task.entries {
        problems.push(other(format!(
            "{name}: its pages hold {entries} entries, the metadata says {}",
            task.entries
        )));
    }
    problems
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::runtime::state::write_page_records;

    /// The error of a read expected to fail.
    fn refused(r: Result<(State, Chain), String>) -> String {
        match r {
            Ok(_) => panic!("a bad chain was read"),
            Err(e) => e,
        }
    }

    type State = KeyedState<u64, u64>;

    /// The object task 0 writes for checkpoint `id`: the header, then the page records of the
    /// pages changed after `after` (every page for `None`), with its segment and page ids.
    /// The epoch of the snapshot comes last.
    fn object(
        state: &mut State,
        id: u64,
        after: Option<u64>,
    ) -> (Vec<u8>, SegmentRecord, Vec<u32>, u64) {
        let view = state.snapshot();
        let epoch = view.epoch();
        let header = object_header(id, 0, epoch);
        let mut bytes = Vec::new();
        let written = write_page_records(view, after, &header, &mut |buf: Vec<u8>| {
            bytes.extend_from_slice(&buf);
            Ok(buf)
        })
        .unwrap();
        let handle = StateHandle::Stored {
            locator: format!("j/shared/{id}"),
            size: bytes.len() as u64,
            crc32c: crc32c::crc32c(&bytes),
        };
        let ids = written.ids.clone();
        (bytes, new_segment(&handle, id, &written), ids, epoch)
    }

    fn task(state: &State, epoch: u64, chain: &Chain) -> TaskState {
        TaskState {
            subtask: 0,
            pages: state.pages() as u64,
            entries: state.len() as u64,
            epoch,
            segments: chain.segments.clone(),
            ..TaskState::default()
        }
    }

    /// Read `task`'s chain from `objects` (by the checkpoint that wrote each), newest first.
    fn read(
        task: &TaskState,
        objects: &BTreeMap<u64, Vec<u8>>,
        id: u64,
    ) -> Result<(State, Chain), String> {
        let mut reader = ChainReader::<u64, u64>::new(task, 1)?;
        for (i, seg) in task.segments.iter().enumerate().rev() {
            let mut bytes = &objects[&seg.checkpoint_id][..];
            reader = reader.read_segment(i, seg, &mut bytes)?;
        }
        reader.finish(task, id)
    }

    fn sorted(state: &State) -> Vec<(u64, u64)> {
        let mut all: Vec<_> = state.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort_unstable();
        all
    }

    #[test]
    fn a_delta_holds_only_the_changed_pages_and_the_chain_reads_back_the_same_state() {
        let mut state = State::new();
        for k in 0..5000 {
            state.insert(k, k).unwrap();
        }
        let mut objects = BTreeMap::new();
        let (a, seg_a, _, epoch1) = object(&mut state, 1, None);
        let pages = state.pages();
        assert!(pages > 10, "{pages} pages");
        let chain1 = Chain::full(1, epoch1, seg_a);
        objects.insert(1, a);
        *state.get_mut(&7).unwrap() = 70;
        *state.get_mut(&4000).unwrap() = 40;
        let (b, seg_b, ids, epoch2) = object(&mut state, 2, Some(epoch1));
        assert!(!ids.is_empty() && ids.len() <= 2, "{ids:?}");
        assert!(b.len() * 5 < objects[&1].len(), "the delta is not small");
        let chain2 = chain1.extend(2, epoch2, Some(seg_b), &ids, pages).unwrap();
        assert_eq!(chain2.segments.len(), 2);
        assert_eq!(chain2.segments[0].live_pages, (pages - ids.len()) as u64);
        objects.insert(2, b);

        let t = task(&state, epoch2, &chain2);
        let (restored, chain) = read(&t, &objects, 2).unwrap();
        assert_eq!(sorted(&restored), sorted(&state));
        assert_eq!(chain, chain2);
        // The restored pages keep their ids: the next delta holds only the page changed now.
        let mut restored = restored;
        *restored.get_mut(&7).unwrap() = 71;
        let view = restored.snapshot();
        assert_eq!(view.changed_since(epoch2).len(), 1);
    }

    #[test]
    fn a_damaged_or_misnamed_segment_is_refused() {
        let mut state = State::new();
        for k in 0..2000 {
            state.insert(k, k).unwrap();
        }
        let (mut a, seg, _, epoch) = object(&mut state, 1, None);
        let chain = Chain::full(1, epoch, seg);
        let t = task(&state, chain.epoch, &chain);
        // A flipped byte inside the range: its CRC32C no longer matches the metadata.
        let last = a.len() - 1;
        a[last] ^= 1;
        let e = refused(read(&t, &BTreeMap::from([(1, a.clone())]), 1));
        assert!(e.contains("crc32c") || e.contains("page"), "{e}");
        a[last] ^= 1;
        // Metadata naming the object as another checkpoint's.
        let mut other = t.clone();
        other.segments[0].checkpoint_id = 9;
        let e = refused(read(&other, &BTreeMap::from([(9, a.clone())]), 9));
        assert!(e.contains("written by task 0 for checkpoint 1"), "{e}");
        // A live count that does not add up.
        let mut other = t.clone();
        other.segments[0].live_pages -= 1;
        let e = refused(read(&other, &BTreeMap::from([(1, a)]), 1));
        assert!(e.contains("live"), "{e}");
    }

    fn seg(id: u64, pages: u64) -> SegmentRecord {
        SegmentRecord {
            object: HandleRecord::from(&StateHandle::Stored {
                locator: format!("j/shared/{id}"),
                size: 100,
                crc32c: 0,
            }),
            checkpoint_id: id,
            offset: OBJECT_HEADER_LEN as u64,
            length: 68,
            crc32c: 0,
            pages,
            live_pages: pages,
        }
    }

    #[test]
    fn a_segment_whose_pages_all_changed_again_drops_out_of_the_chain() {
        let c1 = Chain::full(1, 1, seg(1, 3));
        let c2 = c1.extend(2, 2, Some(seg(2, 2)), &[0, 1], 3).unwrap();
        assert_eq!(c2.owner, vec![1, 1, 0]);
        let c3 = c2.extend(3, 3, Some(seg(3, 2)), &[2, 3], 4).unwrap();
        // Checkpoint 1's segment has no live page left: it is no longer referenced.
        assert_eq!(
            c3.segments
                .iter()
                .map(|s| s.checkpoint_id)
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(c3.owner, vec![0, 0, 1, 1]);
        // Nothing changed: the same segments under the new id.
        let c4 = c3.extend(4, 4, None, &[], 4).unwrap();
        assert_eq!((c4.checkpoint_id, &c4.segments), (4, &c3.segments));
        // A page that skips an id, or a page count that does not match, is refused.
        assert!(c3.extend(5, 5, Some(seg(5, 1)), &[9], 10).is_err());
        assert!(c3.extend(5, 5, None, &[], 7).is_err());
    }
}
