//! Incremental checkpoints (issue 15) through `cairn run`, on the filesystem plugin and on a
//! real S3 server (SeaweedFS): exactly once after a failover and after `kill -9` + `--from
//! latest`; the shared-state registry never deletes an object a listed checkpoint references,
//! across subsumption, failover and restart, and deletes every object no checkpoint references
//! any more; a `no-claim` restore keeps the restored checkpoint's files, a `claim` one deletes
//! them once subsumed; one SHARED object per task per checkpoint, however many keys changed.
//!
//! What the storage holds is read through the plugin itself (its listing of completed
//! checkpoints and of stored objects), so the same assertions run on both backends.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use cairn_harness::s3::{unique_prefix, S3Server};
use cairn_host::{metadata::CheckpointMetadata, runtime::keyed_counter};
use cairn_plugin_api::{CheckpointStorage, StateHandle};
use serde_json::Value;

use crate::util::{
    cairn_ok, dir_with_plugins, fs_options, json_of, kill_after_checkpoints, lib, load,
    run_until_line, FS_PLUGIN,
};

/// Enough keys (about 2,000 pages) that a checkpoint interval changes a fraction of the pages.
const KEYS: u64 = 100_000;
const PARALLELISM: u32 = 2;
const JOB: &str = "inc";
const OBJECT_STORE: &str = "cairn-storage-object-cdylib";

/// A job directory and the storage its checkpoints go to.
struct Job {
    dir: tempfile::TempDir,
    package: &'static str,
    options: String,
    /// The config's storage part, kept for `reconfigure`.
    storage: String,
}

impl Job {
    /// A job on the filesystem plugin, `checkpointing` added to `[checkpointing]` and `rest`
    /// after the `[job]` keys.
    fn fs(checkpointing: &str, rest: &str) -> Job {
        let dir = dir_with_plugins(&[FS_PLUGIN]);
        let options = fs_options(&dir.path().join("checkpoints"));
        let storage = "[plugins]\nsearch-path = [\"plugins\"]\n".to_string();
        write_config(dir.path(), &storage, checkpointing, rest);
        Job {
            dir,
            package: FS_PLUGIN.0,
            options,
            storage,
        }
    }

    /// The same on the object-store plugin, into a prefix of its own on the shared SeaweedFS.
    fn s3(checkpointing: &str, rest: &str) -> Job {
        let ep = S3Server::get().endpoint().clone();
        let options = ep.plugin_options(&unique_prefix("incremental"), "");
        let dir = tempfile::tempdir().unwrap();
        let storage = format!(
            "[storage]\npath = {:?}\n[storage.options]\n{options}",
            lib(OBJECT_STORE).display().to_string()
        );
        write_config(dir.path(), &storage, checkpointing, rest);
        Job {
            dir,
            package: OBJECT_STORE,
            options,
            storage,
        }
    }

    /// The same storage and job, other checkpointing settings.
    fn reconfigure(&self, checkpointing: &str, rest: &str) {
        write_config(self.path(), &self.storage, checkpointing, rest);
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn storage(&self) -> Box<dyn CheckpointStorage> {
        load(self.package).open(&self.options).unwrap()
    }

    /// The completed checkpoints the storage lists, with their metadata, oldest first.
    fn listed(&self) -> Vec<CheckpointMetadata> {
        let storage = self.storage();
        let job = storage.job(JOB).unwrap();
        job.list_completed()
            .unwrap()
            .into_iter()
            .map(|c| {
                let resolved = storage.resolve(&c.pointer).unwrap();
                CheckpointMetadata::decode(&resolved.metadata).unwrap()
            })
            .collect()
    }

    /// The stored SHARED objects, by locator, with their sizes.
    fn shared_objects(&self) -> BTreeMap<String, u64> {
        let storage = self.storage();
        let job = storage.job(JOB).unwrap();
        job.list_objects()
            .unwrap()
            .into_iter()
            .filter(|o| o.locator.split('/').any(|part| part == "shared"))
            .map(|o| (o.locator, o.size))
            .collect()
    }

    /// The checkpoint that wrote the SHARED object `locator`, from the object's own header
    /// (magic, version, then the checkpoint id).
    fn written_by(&self, locator: &str, size: u64) -> u64 {
        let storage = self.storage();
        let handle = StateHandle::Stored {
            locator: locator.to_string(),
            size,
            crc32c: 0,
        };
        // Only the header is read: the whole-object check at the end never runs.
        let mut input = storage.open_handle(&handle).unwrap();
        let mut header = [0u8; 16];
        let mut got = 0;
        while got < header.len() {
            let n = input.read(&mut header[got..]).unwrap();
            assert!(n > 0, "{locator} ends inside its header");
            got += n;
        }
        assert_eq!(&header[..4], b"CKSG", "{locator} is not a state object");
        u64::from_le_bytes(header[8..16].try_into().unwrap())
    }
}

/// `num-retained` is 1 unless `checkpointing` sets it.
fn write_config(dir: &Path, storage: &str, checkpointing: &str, rest: &str) {
    let retained = if checkpointing.contains("num-retained") {
        ""
    } else {
        "num-retained = 1\n"
    };
    let config = format!(
        "{storage}\n[checkpointing]\ninterval = \"100ms\"\n{retained}\
         externalized-retention = \"retain-on-cancellation\"\nincremental = true\n{checkpointing}\n\
         [job]\nid = \"{JOB}\"\nkeys = {KEYS}\nparallelism = {PARALLELISM}\nrate = 4000\n{rest}"
    );
    std::fs::write(dir.join("cairn.toml"), config).unwrap();
}

/// The records a checkpoint's state reflects: its sources' offsets, which count records.
fn records_of(meta: &CheckpointMetadata) -> u64 {
    meta.source_offsets
        .iter()
        .map(|o| o.as_u64().expect("a record count"))
        .sum()
}

fn digest(records: u64) -> String {
    keyed_counter::counts_digest(&keyed_counter::expected_counts(KEYS, PARALLELISM, records))
}

/// The SHARED objects `meta` references (locator and size).
fn references(meta: &CheckpointMetadata) -> BTreeMap<String, u64> {
    meta.shared_objects()
        .into_iter()
        .map(|(h, _)| match h {
            StateHandle::Stored { locator, size, .. } => (locator, size),
            StateHandle::Inline(_) => unreachable!("shared_objects lists stored objects"),
        })
        .collect()
}

/// Every SHARED object a listed checkpoint references is stored, with its size; the union.
fn assert_referenced_exist(job: &Job, what: &str) -> BTreeMap<String, u64> {
    let present = job.shared_objects();
    let mut all = BTreeMap::new();
    for meta in job.listed() {
        for (locator, size) in references(&meta) {
            assert_eq!(
                present.get(&locator),
                Some(&size),
                "{what}: checkpoint {} references {locator} ({size} bytes), which is not stored \
                 (stored: {present:?})",
                meta.checkpoint_id
            );
            all.insert(locator, size);
        }
    }
    all
}

/// Exactly the SHARED objects the listed checkpoints reference are stored: none missing, none
/// left over.
fn assert_exactly_referenced(job: &Job, what: &str) {
    let referenced = assert_referenced_exist(job, what);
    let present = job.shared_objects();
    let left: Vec<_> = present
        .keys()
        .filter(|l| !referenced.contains_key(*l))
        .collect();
    assert!(
        left.is_empty(),
        "{what}: SHARED objects no listed checkpoint references are still stored: {left:?}"
    );
}

/// Item 4: each listed checkpoint's tasks hold their state only as segments, and each task
/// wrote at most one object for the checkpoint, whatever the number of changed keys.
fn assert_one_object_per_task(job: &Job) {
    for meta in job.listed() {
        for t in &meta.tasks {
            assert!(
                t.handles.is_empty(),
                "{}: whole state handles",
                meta.checkpoint_id
            );
            assert!(t.is_segmented(), "{}: no segments", meta.checkpoint_id);
            let own: BTreeSet<_> = t
                .segments
                .iter()
                .filter(|s| s.checkpoint_id == meta.checkpoint_id)
                .filter_map(|s| s.stored_locator())
                .collect();
            assert!(
                own.len() <= 1,
                "checkpoint {} task {} wrote {} objects",
                meta.checkpoint_id,
                t.subtask,
                own.len()
            );
        }
    }
}

/// The `checkpoint N completed` lines of a log, in order.
fn completed_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(crate::util::without_ansi)
        .filter(|l| crate::util::completed_checkpoint(l).is_some())
        .collect()
}

/// How a completed line says the checkpoint relates to the chain: `Some(base)` for an
/// incremental one, `None` for a full one.
fn base_of(line: &str) -> Option<u64> {
    let rest = line.split("(incremental on checkpoint ").nth(1)?;
    rest.split(':').next()?.parse().ok()
}

/// `cairn run --from latest --records RECORDS --json` (no claim mode given): it must finish
/// with the digest of an uninterrupted run. Its output and summary.
fn resume_exactly(job: &Job, records: u64) -> (std::process::Output, Value) {
    let records_arg = records.to_string();
    let out = cairn_ok(
        &[
            "run",
            "--from",
            "latest",
            "--records",
            &records_arg,
            "--json",
        ],
        job.path(),
    );
    let summary = json_of(&out);
    assert_eq!(summary["status"], "finished", "{summary}");
    assert_eq!(summary["counts_sha256"], digest(records), "{summary}");
    (out, summary)
}

/// Run until a failover happened and then `after` more checkpoints completed, then Ctrl-C.
fn run_through_a_failover(job: &Job, after: usize) -> std::process::Output {
    let mut failed = false;
    let mut since = 0;
    run_until_line(
        &["run"],
        job.path(),
        "-INT",
        "a failover and then checkpoints",
        |line| {
            if line.starts_with("attempt 1 failed:") {
                failed = true;
            } else if failed && crate::util::completed_checkpoint(line).is_some() {
                since += 1;
            }
            since >= after
        },
    )
}

#[test]
fn incremental_checkpoints_after_a_failover_are_exactly_once_and_all_go_when_the_job_ends() {
    let job = Job::fs(
        "full-every = 1000\n",
        "fail-after-checkpoints = 2\n\n[restart]\nattempts = 2\ndelay = \"50ms\"\n",
    );
    let records = 24_000u64;
    let out = cairn_ok(
        &["run", "--records", &records.to_string(), "--json"],
        job.path(),
    );
    let summary = json_of(&out);
    assert_eq!(summary["status"], "finished", "{summary}");
    assert_eq!(summary["attempts"], 2, "{summary}");
    assert_eq!(summary["counts_sha256"], digest(records), "{summary}");
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    let (before, after) = log
        .split_once("attempt 1 failed:")
        .unwrap_or_else(|| panic!("no failover: {log}"));
    // The failover restored an incremental checkpoint (only the first of the run is full)...
    let last = completed_lines(before.as_bytes())
        .pop()
        .unwrap_or_else(|| panic!("nothing completed before the failover: {log}"));
    assert!(base_of(&last).is_some(), "{last}");
    let restored = crate::util::completed_checkpoint(&last).unwrap();
    // ... and the next checkpoint extends the restored chain.
    let first_after = completed_lines(after.as_bytes())
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("nothing completed after the failover: {log}"));
    assert_eq!(base_of(&first_after), Some(restored), "{first_after}");
    // A finished job keeps no checkpoint, and so no SHARED object.
    assert!(job.listed().is_empty());
    let left: Vec<_> = job
        .shared_objects()
        .into_iter()
        .map(|(l, size)| (job.written_by(&l, size), l))
        .collect();
    assert!(
        left.is_empty(),
        "left (checkpoint, object): {left:?}\n{log}"
    );
}

#[test]
fn kill_dash_nine_then_from_latest_is_exactly_once_and_no_claim_keeps_the_restored_files() {
    let job = Job::fs("full-every = 1000\nnum-retained = 2\n", "");
    kill_after_checkpoints(&["run"], job.path(), 4);
    let listed = job.listed();
    let latest = listed.last().expect("a checkpoint survived").clone();
    assert!(latest.is_incremental(), "{latest:?}");
    let kept = references(&latest);
    assert_referenced_exist(&job, "after kill -9");
    assert_one_object_per_task(&job);

    // Restored without claim (the default): exactly once, and its files stay.
    let records = records_of(&latest) + 8_000;
    let (out, summary) = resume_exactly(&job, records);
    assert_eq!(summary["claim_mode"], "no-claim", "{summary}");
    let lines = completed_lines(&out.stderr);
    assert!(!lines.is_empty(), "no checkpoint completed");
    // The first checkpoint after a no-claim restore is full.
    assert_eq!(base_of(&lines[0]), None, "{}", lines[0]);
    assert!(lines[1..].iter().all(|l| base_of(l).is_some()), "{lines:?}");
    let first_new = crate::util::completed_checkpoint(&lines[0]).unwrap();
    // The run's own checkpoints went when it finished; the restored one is the user's.
    let after = job.listed();
    assert_eq!(
        after.iter().map(|m| m.checkpoint_id).collect::<Vec<_>>(),
        vec![latest.checkpoint_id]
    );
    assert_referenced_exist(&job, "after the no-claim run");
    // Anything else stored is what the killed run was writing or discarding when it died (for
    // `gc`): never an object of the resumed run, which cleaned up after itself.
    for (locator, size) in job.shared_objects() {
        if kept.contains_key(&locator) {
            continue;
        }
        let by = job.written_by(&locator, size);
        assert!(
            by < first_new,
            "{locator} of checkpoint {by} is left after the run (restored {}, the run's first \
             {first_new})",
            latest.checkpoint_id
        );
    }
    let out = cairn_ok(&["checkpoints", "verify", "--json"], job.path());
    assert_eq!(json_of(&out)["ok"], true);
}

#[test]
fn the_registry_keeps_what_is_referenced_across_failover_and_restart_and_claim_hands_over() {
    let job = Job::fs(
        "full-every = 3\n",
        "fail-after-checkpoints = 3\n\n[restart]\nattempts = 2\ndelay = \"50ms\"\n",
    );
    let out = run_through_a_failover(&job, 5);
    let lines = completed_lines(&out.stderr);
    // A full checkpoint at least every full-every = 3: no chain is deeper than 2.
    let mut depth = 0;
    for l in &lines {
        depth = if base_of(l).is_some() { depth + 1 } else { 0 };
        assert!(depth < 3, "{lines:?}");
    }
    assert!(lines.iter().any(|l| base_of(l).is_some()), "{lines:?}");
    assert_exactly_referenced(&job, "after a failover and a stop");
    assert_one_object_per_task(&job);

    // A new process claims the checkpoint: its first checkpoint extends the restored chain.
    job.reconfigure("full-every = 1000\n", "");
    let restored = job.listed().pop().expect("a checkpoint was kept");
    let lines = claim_run(&job, 3);
    assert_eq!(
        base_of(&lines[0]),
        Some(restored.checkpoint_id),
        "{lines:?}"
    );
    assert_exactly_referenced(&job, "after the first claim run");
    // With num-retained = 1, what the listed checkpoint reads from earlier checkpoints (the
    // claimed one's objects among them) is held for it although they were subsumed.
    let newest = job.listed().pop().unwrap();
    assert!(
        newest
            .tasks
            .iter()
            .flat_map(|t| &t.segments)
            .any(|s| s.checkpoint_id <= restored.checkpoint_id),
        "{newest:?}"
    );
    assert_one_object_per_task(&job);

    // Another claims that run's last checkpoint and takes only full checkpoints: once it is
    // subsumed, nothing references its objects, which only a registry rebuilt from the stored
    // metadata knows of; they all go, and nothing else.
    job.reconfigure("full-every = 1\n", "");
    let restored = job.listed().pop().expect("a checkpoint was kept");
    let restored_objects = references(&restored);
    assert!(!restored_objects.is_empty());
    let lines = claim_run(&job, 3);
    assert!(lines.iter().all(|l| base_of(l).is_none()), "{lines:?}");
    let now = job.listed();
    assert!(
        now.iter()
            .all(|m| m.checkpoint_id != restored.checkpoint_id),
        "the claimed checkpoint was not subsumed"
    );
    assert_exactly_referenced(&job, "after the second claim run");
    let present = job.shared_objects();
    let kept: Vec<_> = restored_objects
        .keys()
        .filter(|l| present.contains_key(*l))
        .collect();
    assert!(
        kept.is_empty(),
        "objects of the claimed checkpoint outlived it: {kept:?}"
    );
}

/// `cairn run --from latest --claim-mode claim` until `n` checkpoints completed, then Ctrl-C;
/// its completed lines.
fn claim_run(job: &Job, n: usize) -> Vec<String> {
    let mut seen = 0;
    let out = run_until_line(
        &["run", "--from", "latest", "--claim-mode", "claim"],
        job.path(),
        "-INT",
        &format!("{n} checkpoints"),
        |line| {
            seen += usize::from(crate::util::completed_checkpoint(line).is_some());
            seen >= n
        },
    );
    completed_lines(&out.stderr)
}

#[test]
fn on_s3_incremental_checkpoints_restore_exactly_and_keep_exactly_what_is_referenced() {
    let job = Job::s3(
        "full-every = 3\n",
        "fail-after-checkpoints = 3\n\n[restart]\nattempts = 2\ndelay = \"50ms\"\n",
    );
    run_through_a_failover(&job, 4);
    assert_exactly_referenced(&job, "on s3, after a failover and a stop");
    assert_one_object_per_task(&job);
    let restored = job.listed().pop().expect("a checkpoint was kept");
    let kept = references(&restored);
    assert!(!kept.is_empty());

    // No claim: exactly once, and the restored checkpoint with every object it references stays
    // while the run's own go.
    let records = records_of(&restored) + 8_000;
    let (out, _) = resume_exactly(&job, records);
    let listed: Vec<u64> = job.listed().iter().map(|m| m.checkpoint_id).collect();
    assert_eq!(listed, vec![restored.checkpoint_id]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_exactly_referenced(&job, &format!("on s3, after the no-claim run ({log})"));
    assert_eq!(job.shared_objects(), kept);

    // Claim, with full checkpoints only: once subsumed, the restored checkpoint and its
    // objects go.
    job.reconfigure("full-every = 1\n", "");
    let lines = claim_run(&job, 3);
    assert!(lines.iter().all(|l| base_of(l).is_none()), "{lines:?}");
    assert!(job
        .listed()
        .iter()
        .all(|m| m.checkpoint_id != restored.checkpoint_id));
    assert_exactly_referenced(&job, "on s3, after the claim run");
    let present = job.shared_objects();
    assert!(kept.keys().all(|l| !present.contains_key(l)), "{present:?}");
}
