//! `verify` on a running job, made deterministic: a storage whose "running job" subsumes a
//! checkpoint at an exact moment of the verify (when a given handle is opened, or before the
//! metadata is resolved), the way the coordinator's background discard can.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Mutex,
};

use cairn_host::metadata::{CheckpointMetadata, HandleRecord, SnapshotKind, TaskState};
use cairn_plugin_api::{
    Capabilities, CheckpointStorage, CompletedCheckpoint, InlineInput, InputStream, JobStorage,
    ResolvedCheckpoint, StateHandle, StorageError, StorageInfo, StorageResult,
};
use indicatif::ProgressBar;

use super::{verify_pointers, Verdict};

/// A tiny storage: metadata by pointer, state objects by locator (`<pointer>/<n>`).
#[derive(Default)]
struct Job {
    metadata: Mutex<BTreeMap<String, Vec<u8>>>,
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    /// When this locator is opened, this pointer is disposed first.
    subsume_on_open: Mutex<Option<(String, String)>>,
    /// When this pointer is resolved, it is disposed first.
    subsume_on_resolve: Mutex<Option<String>>,
}

impl Job {
    /// A checkpoint `chk-<id>` with two stored handles of one task.
    fn add(&self, id: u64) -> String {
        let pointer = format!("chk-{id}");
        let mut handles = Vec::new();
        for n in 0..2 {
            let bytes = format!("state {n} of checkpoint {id}").into_bytes();
            let locator = format!("{pointer}/{n}");
            handles.push(HandleRecord::Stored {
                locator: locator.clone(),
                size: bytes.len() as u64,
                crc32c: crc32c::crc32c(&bytes),
            });
            self.objects.lock().unwrap().insert(locator, bytes);
        }
        let m = CheckpointMetadata {
            checkpoint_id: id,
            kind: SnapshotKind::Checkpoint,
            job_id: "job".to_string(),
            job_kind: "keyed-counter".to_string(),
            config_fingerprint: String::new(),
            job_settings: String::new(),
            barriers: Default::default(),
            triggered_at_ms: 0,
            completed_at_ms: 0,
            tasks: vec![TaskState {
                operator: "counter".to_string(),
                subtask: 0,
                handles,
                records: 0,
                sink: None,
                epoch: 0,
                entries: 0,
                pages: 0,
                changed_pages: 0,
                ..TaskState::default()
            }],
            source_offsets: vec![serde_json::json!(0)],
        };
        self.metadata
            .lock()
            .unwrap()
            .insert(pointer.clone(), m.encode());
        pointer
    }

    fn listed(&self) -> Vec<CompletedCheckpoint> {
        self.metadata
            .lock()
            .unwrap()
            .keys()
            .map(|p| CompletedCheckpoint {
                checkpoint_id: p[4..].parse().unwrap(),
                pointer: p.clone(),
            })
            .collect()
    }

    fn remove(&self, pointer: &str) {
        self.metadata.lock().unwrap().remove(pointer);
        let prefix = format!("{pointer}/");
        self.objects
            .lock()
            .unwrap()
            .retain(|l, _| !l.starts_with(&prefix));
    }

    fn verify(&self, pointers: &[String]) -> Vec<(String, Verdict)> {
        let at_start: BTreeSet<String> = self.listed().into_iter().map(|c| c.pointer).collect();
        verify_pointers(
            self,
            pointers,
            &at_start,
            &|| Ok(self.listed()),
            &ProgressBar::hidden(),
            &|_, _| Ok(()),
        )
        .unwrap()
    }
}

impl CheckpointStorage for Job {
    fn info(&self) -> StorageInfo {
        StorageInfo {
            capabilities: Capabilities::STORED_HANDLES,
            inline_threshold: 0,
            max_state_size: None,
            location: "test".to_string(),
        }
    }

    fn job(&self, _: &str) -> StorageResult<Box<dyn JobStorage>> {
        Err(StorageError::Unsupported("not needed".into()))
    }

    fn resolve(&self, pointer: &str) -> StorageResult<ResolvedCheckpoint> {
        if self.subsume_on_resolve.lock().unwrap().as_deref() == Some(pointer) {
            self.remove(pointer);
        }
        let metadata = self.metadata.lock().unwrap().get(pointer).cloned();
        metadata
            .map(|metadata| ResolvedCheckpoint {
                pointer: pointer.to_string(),
                metadata,
            })
            .ok_or_else(|| StorageError::NotFound(format!("no checkpoint at {pointer}")))
    }

    fn open_handle(&self, handle: &StateHandle) -> StorageResult<Box<dyn InputStream>> {
        let StateHandle::Stored { locator, .. } = handle else {
            unreachable!("the test writes stored handles only")
        };
        let hook = self.subsume_on_open.lock().unwrap().clone();
        if let Some((at, pointer)) = hook {
            if &at == locator {
                self.remove(&pointer);
            }
        }
        let bytes = self.objects.lock().unwrap().get(locator).cloned();
        bytes
            .map(|b| Box::new(InlineInput::new(b)) as Box<dyn InputStream>)
            .ok_or_else(|| StorageError::NotFound(format!("state object {locator} not found")))
    }

    fn discard(&self, _: &StateHandle) -> StorageResult<()> {
        Ok(())
    }

    fn dispose(&self, pointer: &str) -> StorageResult<()> {
        self.remove(pointer);
        Ok(())
    }

    fn corrupt_for_testing(&self, _: &StateHandle) -> StorageResult<()> {
        Err(StorageError::Unsupported("not needed".into()))
    }
}

fn all(job: &Job) -> Vec<String> {
    job.listed().into_iter().map(|c| c.pointer).collect()
}

fn is_removed(v: &Verdict) -> bool {
    matches!(v, Verdict::Removed(p) if p.iter().any(|p| p.not_found))
}

#[test]
fn a_checkpoint_subsumed_between_two_handle_reads_is_removed_not_damaged() {
    let job = Job::default();
    let pointers: Vec<String> = (1..=3).map(|id| job.add(id)).collect();
    // The first handle of chk-1 reads fine; as the second is opened, the job subsumes chk-1.
    *job.subsume_on_open.lock().unwrap() = Some(("chk-1/1".into(), "chk-1".into()));
    let results = job.verify(&pointers);
    assert!(is_removed(&results[0].1), "{results:?}");
    assert_eq!(results[1].1, Verdict::Ok);
    assert_eq!(results[2].1, Verdict::Ok);
}

#[test]
fn a_checkpoint_subsumed_before_its_metadata_is_read_is_removed_not_damaged() {
    let job = Job::default();
    let pointers: Vec<String> = (1..=2).map(|id| job.add(id)).collect();
    *job.subsume_on_resolve.lock().unwrap() = Some("chk-1".into());
    let results = job.verify(&all(&job));
    assert_eq!(
        results.iter().map(|r| &r.0).collect::<Vec<_>>(),
        [&pointers[0], &pointers[1]]
    );
    assert!(is_removed(&results[0].1), "{results:?}");
    assert_eq!(results[1].1, Verdict::Ok);
}

#[test]
fn a_missing_object_of_a_checkpoint_still_listed_is_damage() {
    let job = Job::default();
    let pointers: Vec<String> = (1..=2).map(|id| job.add(id)).collect();
    job.objects.lock().unwrap().remove("chk-2/0");
    let results = job.verify(&pointers);
    assert_eq!(results[0].1, Verdict::Ok);
    match &results[1].1 {
        Verdict::Damaged(problems) => {
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].not_found && problems[0].text.contains("chk-2/0"),
                "{problems:?}"
            );
        }
        other => panic!("expected damage, got {other:?}"),
    }
}

#[test]
fn a_missing_pointer_that_was_never_listed_is_damage() {
    // A savepoint (or another job's pointer) is not in the job's list at any time: "not found"
    // cannot mean it was subsumed.
    let job = Job::default();
    job.add(1);
    let results = job.verify(&["savepoint-x".to_string()]);
    assert!(
        matches!(&results[0].1, Verdict::Damaged(p) if p[0].not_found),
        "{results:?}"
    );
}

#[test]
fn corruption_in_a_checkpoint_that_disappears_is_still_damage() {
    // Only "not found" can be explained by a subsume; a checksum mismatch cannot.
    let job = Job::default();
    let pointers: Vec<String> = (1..=2).map(|id| job.add(id)).collect();
    job.objects.lock().unwrap().get_mut("chk-1/0").unwrap()[0] ^= 1;
    *job.subsume_on_open.lock().unwrap() = Some(("chk-1/1".into(), "chk-1".into()));
    let results = job.verify(&pointers);
    match &results[0].1 {
        Verdict::Damaged(problems) => {
            assert!(
                problems
                    .iter()
                    .any(|p| !p.not_found && p.text.contains("checksum")),
                "{problems:?}"
            );
        }
        other => panic!("expected damage, got {other:?}"),
    }
}
