//! The shared-state registry: which SHARED objects the job's checkpoints reference, and when
//! one may be discarded. Like the [coordinator](crate::coordinator), it is a state machine with
//! no I/O and no threads; the runtime tells it what happened and discards what it hands back.
//!
//! # The rule
//!
//! A SHARED object is discarded only when
//! - no checkpoint that exists in the storage references it: a checkpoint stays a *holder* of
//!   its objects from its registration until its metadata is known to be gone (`disposed`), so a
//!   failed dispose keeps its objects, and a crash between the two leaves orphans (for `gc`),
//!   never a completed checkpoint without its state;
//! - no checkpoint in flight may use it: an object that loses its last holder is *doomed*
//!   with a fence, the next checkpoint id at that moment, and handed out only once no
//!   checkpoint below the fence is pending. Checkpoints triggered later extend the newest
//!   completed checkpoint, which does not reference a doomed object; one triggered earlier that
//!   completes registers its references, which saves the object.
//! - the references of every holder are known: while a checkpoint whose metadata could not be
//!   read is a holder (`unknown`), nothing is discarded, since it may reference anything.
//!
//! # Where the references come from
//!
//! At start the runtime registers every completed checkpoint the storage lists, from its
//! metadata (never from memory of an earlier run); then each checkpoint it commits, from the
//! metadata it just committed. A checkpoint that is never subsumed (the one a run restored in
//! no-claim mode) simply stays a holder, so its objects outlive any number of checkpoints.

use std::collections::{BTreeMap, BTreeSet};

use cairn_plugin_api::StateHandle;

#[derive(Debug)]
struct Entry {
    handle: StateHandle,
    holders: BTreeSet<u64>,
}

/// The registry's state (see the module docs).
#[derive(Debug, Default)]
pub struct SharedRegistry {
    objects: BTreeMap<String, Entry>,
    /// The locators each holder references.
    holders: BTreeMap<u64, Vec<String>>,
    /// Holders whose references are unknown (their metadata could not be read).
    unknown: BTreeSet<u64>,
    /// Objects without holders, each with its fence, waiting for earlier checkpoints in flight.
    doomed: BTreeMap<String, (StateHandle, u64)>,
    pending: BTreeSet<u64>,
    /// One more than the highest checkpoint id begun.
    next_id: u64,
}

/// Figures for progress displays and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct RegistryStats {
    /// SHARED objects referenced by at least one holder.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Objects waiting to be discarded.
    pub doomed: u64,
    /// Holders whose references are unknown.
    pub unknown_holders: u64,
}

fn locator(h: &StateHandle) -> Option<&str> {
    match h {
        StateHandle::Stored { locator, .. } => Some(locator),
        StateHandle::Inline(_) => None,
    }
}

impl SharedRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checkpoint `id` exists and references `objects` (stored SHARED objects; inline handles
    /// are ignored). Registering an id again adds to its references.
    pub fn register(&mut self, id: u64, objects: impl IntoIterator<Item = StateHandle>) {
        let refs = self.holders.entry(id).or_default();
        for handle in objects {
            let Some(l) = locator(&handle).map(str::to_string) else {
                continue;
            };
            self.doomed.remove(&l);
            let entry = self.objects.entry(l.clone()).or_insert_with(|| Entry {
                handle,
                holders: BTreeSet::new(),
            });
            if entry.holders.insert(id) {
                refs.push(l);
            }
        }
        self.next_id = self.next_id.max(id.saturating_add(1));
    }

    /// Checkpoint `id` exists, but its metadata could not be read: until it is disposed,
    /// nothing is discarded.
    pub fn register_unknown(&mut self, id: u64) {
        self.holders.entry(id).or_default();
        self.unknown.insert(id);
        self.next_id = self.next_id.max(id.saturating_add(1));
    }

    /// Checkpoint `id` was triggered.
    pub fn begin(&mut self, id: u64) {
        self.pending.insert(id);
        self.next_id = self.next_id.max(id.saturating_add(1));
    }

    /// Checkpoint `id` completed or failed (a completed one is [registered](Self::register)
    /// first).
    pub fn end(&mut self, id: u64) {
        self.pending.remove(&id);
    }

    /// Every checkpoint in flight ended (the attempt stopped).
    pub fn end_all(&mut self) {
        self.pending.clear();
    }

    /// Checkpoint `id`'s metadata is gone from the storage: it holds nothing any more, and the
    /// objects it was the last holder of are doomed.
    pub fn disposed(&mut self, id: u64) {
        self.unknown.remove(&id);
        let Some(refs) = self.holders.remove(&id) else {
            return;
        };
        for l in refs {
            let orphaned = match self.objects.get_mut(&l) {
                Some(entry) => {
                    entry.holders.remove(&id);
                    entry.holders.is_empty()
                }
                None => false,
            };
            if orphaned {
                let entry = self.objects.remove(&l).expect("just seen");
                self.doomed.insert(l, (entry.handle, self.next_id));
            }
        }
    }

    /// The doomed objects that may be discarded now (each handed out once).
    pub fn ready(&mut self) -> Vec<StateHandle> {
        if !self.unknown.is_empty() {
            return Vec::new();
        }
        let oldest_pending = self.pending.first().copied().unwrap_or(u64::MAX);
        let due: Vec<String> = self
            .doomed
            .iter()
            .filter(|(_, (_, fence))| oldest_pending >= *fence)
            .map(|(l, _)| l.clone())
            .collect();
        due.into_iter()
            .filter_map(|l| self.doomed.remove(&l).map(|(h, _)| h))
            .collect()
    }

    /// Whether `locator` is referenced by a holder.
    pub fn is_referenced(&self, locator: &str) -> bool {
        self.objects.contains_key(locator)
    }

    /// The holders of `locator`.
    pub fn holders_of(&self, locator: &str) -> Vec<u64> {
        self.objects
            .get(locator)
            .map(|e| e.holders.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Why nothing is discarded, if that is so: the holders whose references are unknown.
    pub fn blocked_by(&self) -> Vec<u64> {
        self.unknown.iter().copied().collect()
    }

    /// Figures.
    pub fn stats(&self) -> RegistryStats {
        RegistryStats {
            objects: self.objects.len() as u64,
            bytes: self.objects.values().map(|e| e.handle.size()).sum(),
            doomed: self.doomed.len() as u64,
            unknown_holders: self.unknown.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str) -> StateHandle {
        StateHandle::Stored {
            locator: format!("job/shared/{name}"),
            size: 10,
            crc32c: 0,
        }
    }

    fn names(handles: Vec<StateHandle>) -> Vec<String> {
        let mut v: Vec<String> = handles
            .iter()
            .map(|h| locator(h).unwrap().rsplit('/').next().unwrap().to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn an_object_goes_when_its_last_holder_is_disposed_and_not_before() {
        let mut r = SharedRegistry::new();
        r.register(1, [h("a"), h("b")]);
        r.register(2, [h("a"), h("c")]);
        r.disposed(1);
        assert_eq!(names(r.ready()), vec!["b"], "a is still held by 2");
        assert!(r.is_referenced("job/shared/a"));
        r.disposed(2);
        assert_eq!(names(r.ready()), vec!["a", "c"]);
        assert!(r.ready().is_empty(), "each object is handed out once");
        assert_eq!(r.stats(), RegistryStats::default());
    }

    #[test]
    fn a_holder_never_disposed_keeps_its_objects_for_ever() {
        let mut r = SharedRegistry::new();
        // Checkpoint 5 was restored in no-claim mode: it is registered, never disposed.
        r.register(5, [h("a"), h("b")]);
        for id in 6..100 {
            r.begin(id);
            r.register(id, [h(&format!("x{id}"))]);
            r.end(id);
            if id > 6 {
                r.disposed(id - 1);
            }
            let gone = names(r.ready());
            assert!(!gone.contains(&"a".to_string()) && !gone.contains(&"b".to_string()));
        }
        assert_eq!(r.holders_of("job/shared/a"), vec![5]);
    }

    #[test]
    fn a_doomed_object_waits_for_checkpoints_in_flight_and_one_that_completes_saves_it() {
        let mut r = SharedRegistry::new();
        r.register(1, [h("a")]);
        r.begin(2);
        r.begin(3);
        r.register(2, [h("b")]);
        r.end(2);
        r.disposed(1);
        // 3 was triggered before "a" lost its last holder: it may use it.
        assert!(r.ready().is_empty());
        r.register(3, [h("a"), h("b")]);
        r.end(3);
        assert!(r.ready().is_empty(), "3 completed with a reference to a");
        assert_eq!(r.holders_of("job/shared/a"), vec![3]);
        // A checkpoint begun after the doom does not hold it back.
        r.disposed(2);
        r.disposed(3);
        r.begin(4);
        assert_eq!(names(r.ready()), vec!["a", "b"]);
    }

    #[test]
    fn a_failed_checkpoint_in_flight_releases_the_fence() {
        let mut r = SharedRegistry::new();
        r.register(1, [h("a")]);
        r.begin(2);
        r.disposed(1);
        assert!(r.ready().is_empty());
        r.end(2);
        assert_eq!(names(r.ready()), vec!["a"]);
        r.register(3, [h("c")]);
        r.begin(4);
        r.disposed(3);
        r.end_all();
        assert_eq!(names(r.ready()), vec!["c"]);
    }

    #[test]
    fn an_unreadable_holder_blocks_every_discard_until_it_is_gone() {
        let mut r = SharedRegistry::new();
        r.register(1, [h("a")]);
        r.register_unknown(2);
        r.disposed(1);
        assert!(r.ready().is_empty());
        assert_eq!(r.blocked_by(), vec![2]);
        r.disposed(2);
        assert_eq!(names(r.ready()), vec!["a"]);
    }

    #[test]
    fn inline_handles_and_repeated_references_are_counted_once() {
        let mut r = SharedRegistry::new();
        r.register(1, [h("a"), h("a"), StateHandle::Inline(vec![1, 2])]);
        assert_eq!(r.stats().objects, 1);
        assert_eq!(r.stats().bytes, 10);
        r.disposed(1);
        assert_eq!(names(r.ready()), vec!["a"]);
    }
}
