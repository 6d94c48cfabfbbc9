//! Every barrier mode end to end (issue 11), in-process through the filesystem plugin and
//! through the `cairn` binary: unaligned checkpoints whose channel state is replayed in order
//! across a failover and a `kill -9`, at-least-once, savepoints that stay aligned, the switch
//! after `aligned-checkpoint-timeout`, and the bound on in-flight data.
//!
//! Backpressure comes from `[job] operator-rate` below the source rate (unlimited for the
//! sequenced job, whose records are big enough that a full exchange holds a few hundred), so the
//! exchange fills whatever the machine's speed. Failovers are injected with `Command::Fail` when a
//! checkpoint with channel state has completed, so no test depends on timing.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use cairn_host::{
    config::Config,
    job::{Job, JobEnd, JobError, Next, NoSink, Source, TaskContext},
    metadata::{Barriers, CheckpointMetadata, SnapshotKind},
    runtime::{self, keyed_counter, CheckpointReport, Command, RunOptions, Status, StopWhen},
};
use cairn_plugin_api::CheckpointStorage;

use crate::util::{
    cairn, cairn_ok, dir_with_plugins, fs_options, json_of, kill_after_checkpoints, load,
    resume_latest_exactly, FS_PLUGIN,
};

/// Keys of the sequenced job: record `n` of a source has key `n % KEYS`.
const KEYS: u64 = 16;

/// Source `subtask` emits `(subtask, n, padding)` for `n` in `next..end`; the padding makes a
/// record big enough that a full exchange holds a few hundred records, not tens of thousands.
struct Numbers {
    subtask: u32,
    next: u64,
    end: u64,
    pad: usize,
}

impl Source for Numbers {
    type Record = (u32, u64, Vec<u8>);
    type Offset = u64;
    fn next(&mut self) -> Result<Next<Self::Record>, JobError> {
        if self.next >= self.end {
            return Ok(Next::End);
        }
        let n = self.next;
        self.next += 1;
        Ok(Next::Record((self.subtask, n, vec![n as u8; self.pad])))
    }
    fn offset(&self) -> u64 {
        self.next
    }
}

/// Per key, per source: the last number seen, how many records were counted, and every
/// departure from the order the source emitted them in (a number that is not the next one of
/// that source for that key: a gap is a lost record, a repeat a duplicate).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Seen {
    last: Vec<Option<u64>>,
    counted: Vec<u64>,
    gaps: u64,
    repeats: u64,
}

/// A job that checks, key by key, that each source's records arrive in their order, each once.
struct Sequenced {
    per_source: u64,
    pad: usize,
    sources: usize,
}

impl Job for Sequenced {
    type Source = Numbers;
    type Key = u64;
    type State = Seen;
    type Sink = NoSink;
    fn kind(&self) -> &str {
        "sequenced"
    }
    fn source(&self, ctx: &TaskContext, offset: Option<u64>) -> Result<Numbers, JobError> {
        Ok(Numbers {
            subtask: ctx.subtask,
            next: offset.unwrap_or(0),
            end: self.per_source,
            pad: self.pad,
        })
    }
    fn key(&self, record: &(u32, u64, Vec<u8>)) -> u64 {
        record.1 % KEYS
    }
    fn process(
        &self,
        p: &mut cairn_host::job::Process<'_, Self>,
        (s, n, _): (u32, u64, Vec<u8>),
    ) -> Result<(), JobError> {
        let sources = self.sources;
        let seen = p.state.get_or_insert_with(|| Seen {
            last: vec![None; sources],
            counted: vec![0; sources],
            gaps: 0,
            repeats: 0,
        })?;
        let s = s as usize;
        let expected = seen.last[s].map_or(n % KEYS, |l| l + KEYS);
        if n > expected {
            seen.gaps += 1;
        } else if n < expected {
            seen.repeats += 1;
        }
        seen.last[s] = Some(n);
        seen.counted[s] += 1;
        Ok(())
    }
    fn summarize(&self, end: &JobEnd<'_, Self>) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        let (mut gaps, mut repeats, mut counted) = (0u64, 0u64, 0u64);
        for state in end.states {
            for (k, seen) in state.iter() {
                gaps += seen.gaps;
                repeats += seen.repeats;
                let n: u64 = seen.counted.iter().sum();
                counted += n;
                out.insert(format!("key_{k}"), n.into());
            }
        }
        out.insert("gaps".into(), gaps.into());
        out.insert("repeats".into(), repeats.into());
        out.insert("counted".into(), counted.into());
        out
    }
}

/// A config with `checkpointing` and `job` lines added; the source rate is unlimited unless
/// `job` sets one.
fn config(dir: &Path, checkpointing: &str, job: &str) -> Config {
    let rate = if job.contains("\nrate =") || job.starts_with("rate =") {
        ""
    } else {
        "rate = \"unlimited\"\n"
    };
    let text = format!(
        "[checkpointing]\ninterval = \"50ms\"\nnum-retained = 5\n\
         externalized-retention = \"retain-on-cancellation\"\n{checkpointing}\n\
         [job]\nparallelism = 2\n{rate}{job}\n\
         [restart]\nattempts = 1\ndelay = \"10ms\"\n"
    );
    Config::parse(&text, &dir.join("cairn.toml")).unwrap()
}

fn fs_storage(dir: &Path) -> Arc<dyn CheckpointStorage> {
    let plugin = load("cairn-storage-fs-cdylib");
    Arc::from(plugin.open(&fs_options(&dir.join("checkpoints"))).unwrap())
}

fn metadata(storage: &dyn CheckpointStorage, pointer: &str) -> CheckpointMetadata {
    CheckpointMetadata::decode(&storage.resolve(pointer).unwrap().metadata).unwrap()
}

/// What a run reported: every checkpoint, and the pointer each failover restored from.
#[derive(Default)]
struct Seen2 {
    checkpoints: Vec<CheckpointReport>,
    restored: Vec<Option<String>>,
}

/// Run `job`, failing it over once, as soon as a checkpoint for which `fail_on` holds has
/// completed (if `fail_on` is given).
fn run_failing_over<J: Job>(
    job: J,
    config: &Config,
    storage: Arc<dyn CheckpointStorage>,
    stop_when: StopWhen,
    fail_on: Option<&(dyn Fn(&CheckpointReport) -> bool + Sync)>,
) -> (runtime::Summary, Seen2) {
    let seen = Mutex::new(Seen2::default());
    let (tx, rx) = crossbeam_channel::unbounded();
    let failed = Mutex::new(false);
    let on_checkpoint = |c: &CheckpointReport| {
        seen.lock().unwrap().checkpoints.push(c.clone());
        let mut failed = failed.lock().unwrap();
        if fail_on.is_some_and(|f| f(c)) && !*failed {
            *failed = true;
            let _ = tx.send(Command::Fail(format!(
                "injected by the test after checkpoint {}",
                c.id
            )));
        }
    };
    let on_failover = |_: u32, _: &str, from: Option<&str>| {
        seen.lock().unwrap().restored.push(from.map(str::to_string));
    };
    let summary = runtime::run_job(
        job,
        config,
        storage,
        &RunOptions {
            stop_when,
            commands: Some(rx),
            on_checkpoint: &on_checkpoint,
            on_failover: &on_failover,
            ..RunOptions::default()
        },
    )
    .unwrap();
    (summary, seen.into_inner().unwrap())
}

fn has_channel_state(c: &CheckpointReport) -> bool {
    c.channel_state_bytes > 0
}

/// The checkpoint a failover restored from, as it was reported.
fn restored_checkpoint(seen: &Seen2) -> &CheckpointReport {
    assert_eq!(seen.restored.len(), 1, "one failover");
    let pointer = seen.restored[0]
        .as_deref()
        .expect("restored from a checkpoint");
    seen.checkpoints
        .iter()
        .find(|c| c.pointer == pointer)
        .expect("the restored checkpoint was reported")
}

/// Under backpressure, an unaligned checkpoint holds the records in flight; after a failover
/// they are replayed before any new input, each channel in its order: every key sees every
/// source's numbers in sequence, none lost, none twice.
#[test]
fn unaligned_failover_replays_channel_state_in_order_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "unaligned = true\n",
        "id = \"seq\"\noperator-rate = 4000\n",
    );
    let per_source = 6000;
    let (summary, seen) = run_failing_over(
        Sequenced {
            per_source,
            pad: 200,
            sources: 2,
        },
        &config,
        fs_storage(dir.path()),
        StopWhen::Never,
        Some(&has_channel_state),
    );
    assert_eq!(summary.status, Status::Finished);
    assert_eq!(summary.attempts, 2);
    let restored = restored_checkpoint(&seen);
    assert_eq!(restored.barriers, Barriers::Unaligned);
    assert!(
        restored.channel_state_bytes > 0,
        "no channel state restored"
    );
    let d = &summary.details;
    assert_eq!(d["gaps"], 0, "records lost: {d:?}");
    assert_eq!(d["repeats"], 0, "records out of order or twice: {d:?}");
    assert_eq!(d["counted"], 2 * per_source);
    for k in 0..KEYS {
        assert_eq!(d[&format!("key_{k}")], 2 * per_source / KEYS, "key {k}");
    }
    assert_eq!(summary.records_counted, 2 * per_source);
    assert!(summary.checkpoint_barriers.unaligned > 0);
    assert!(summary.channel_state_bytes > 0);
}

/// At-least-once: barriers are not aligned; after a failover no record is lost (every key's
/// count is at least its reference, and every source's numbers arrive without a gap), though
/// some may be counted twice.
#[test]
fn at_least_once_failover_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "mode = \"at-least-once\"\n",
        "id = \"alo\"\noperator-rate = 4000\n",
    );
    let per_source = 6000;
    let (summary, seen) = run_failing_over(
        Sequenced {
            per_source,
            pad: 200,
            sources: 2,
        },
        &config,
        fs_storage(dir.path()),
        StopWhen::Never,
        Some(&|_| true),
    );
    assert_eq!(summary.status, Status::Finished);
    assert_eq!(summary.attempts, 2);
    assert_eq!(
        restored_checkpoint(&seen).barriers,
        Barriers::AtLeastOnce,
        "the restored checkpoint says how its barriers went"
    );
    assert!(seen
        .checkpoints
        .iter()
        .all(|c| c.barriers == Barriers::AtLeastOnce && c.channel_state_bytes == 0));
    let d = &summary.details;
    assert_eq!(d["gaps"], 0, "records lost: {d:?}");
    assert!(d["counted"].as_u64().unwrap() >= 2 * per_source, "{d:?}");
    for k in 0..KEYS {
        let n = d[&format!("key_{k}")].as_u64().unwrap();
        assert!(n >= 2 * per_source / KEYS, "key {k}: {n}");
    }
    let b = &summary.checkpoint_barriers;
    assert!(
        b.at_least_once > 0 && b.aligned == 0 && b.unaligned == 0,
        "{b:?}"
    );
}

/// The keyed counter under `unaligned = true` and backpressure, failed over after a checkpoint
/// with channel state: its digest is the one of an uninterrupted run.
#[test]
fn unaligned_keyed_counter_failover_matches_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "unaligned = true\n",
        "id = \"kc\"\nkeys = 300\nrate = 40000\noperator-rate = 20000\n",
    );
    let records = 40_000;
    let (summary, seen) = run_failing_over(
        keyed_counter::KeyedCounter::new(&config.job, Some(records)),
        &config,
        fs_storage(dir.path()),
        StopWhen::Records(records),
        Some(&has_channel_state),
    );
    assert_eq!(summary.status, Status::Finished);
    assert_eq!(summary.attempts, 2);
    assert!(restored_checkpoint(&seen).channel_state_bytes > 0);
    assert_eq!(
        summary.details["counts_sha256"],
        keyed_counter::counts_digest(&keyed_counter::expected_counts(300, 2, records))
    );
    assert_eq!(summary.records_counted, records);
}

/// Savepoints are aligned whatever `unaligned` says, even while checkpoints are unaligned.
#[test]
fn savepoints_stay_aligned_under_unaligned() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "unaligned = true\n",
        &format!(
            "id = \"sp\"\noperator-rate = 4000\n\n[savepoints]\ndir = {:?}\n",
            dir.path().join("savepoints").display().to_string()
        ),
    );
    let storage = fs_storage(dir.path());
    let (tx, rx) = crossbeam_channel::unbounded();
    let (unaligned_tx, unaligned_rx) = crossbeam_channel::bounded::<()>(1);
    let on_checkpoint = move |c: &CheckpointReport| {
        if !c.savepoint && c.channel_state_bytes > 0 {
            let _ = unaligned_tx.try_send(());
        }
    };
    let runner = {
        let storage = storage.clone();
        std::thread::spawn(move || {
            runtime::run_job(
                Sequenced {
                    per_source: u64::MAX,
                    pad: 200,
                    sources: 2,
                },
                &config,
                storage,
                &RunOptions {
                    commands: Some(rx),
                    on_checkpoint: &on_checkpoint,
                    ..RunOptions::default()
                },
            )
        })
    };
    // Once a checkpoint was unaligned (the exchange is full), ask for a savepoint.
    unaligned_rx.recv().unwrap();
    let (reply, answer) = crossbeam_channel::bounded(1);
    tx.send(Command::Savepoint {
        target: None,
        reply,
    })
    .unwrap();
    let savepoint = answer.recv().unwrap().expect("a savepoint");
    assert_eq!(savepoint.barriers, Barriers::Aligned);
    assert_eq!(savepoint.channel_state_bytes, 0);
    let pointer = savepoint.pointer;
    tx.send(Command::Cancel).unwrap();
    let summary = runner.join().unwrap().unwrap();
    assert_eq!(summary.status, Status::Stopped);
    let meta = metadata(storage.as_ref(), &pointer);
    assert_eq!(meta.kind, SnapshotKind::Savepoint);
    assert_eq!(meta.barriers, Barriers::Aligned);
    assert_eq!(meta.channel_state_bytes(), 0);
    for t in &meta.tasks {
        assert_eq!(t.barriers, Barriers::Aligned, "task {}", t.subtask);
        assert!(t.channel_state.is_empty());
    }
    assert!(summary.checkpoint_barriers.unaligned > 0);
}

/// With `aligned-checkpoint-timeout = "50ms"` and a slow operator, checkpoints start aligned and
/// switch (the metadata says so, with channel state); without backpressure they stay aligned.
#[test]
fn the_aligned_checkpoint_timeout_switches_only_under_backpressure() {
    let dir = tempfile::tempdir().unwrap();
    let storage = fs_storage(dir.path());
    let config = config(
        dir.path(),
        "unaligned = true\naligned-checkpoint-timeout = \"50ms\"\n",
        "id = \"switch\"\noperator-rate = 4000\n",
    );
    let (summary, seen) = run_failing_over(
        Sequenced {
            per_source: 5000,
            pad: 200,
            sources: 2,
        },
        &config,
        storage.clone(),
        StopWhen::Never,
        Some(&|c| c.barriers == Barriers::UnalignedAfterTimeout),
    );
    assert_eq!(summary.status, Status::Finished);
    let switched = restored_checkpoint(&seen);
    assert_eq!(switched.barriers, Barriers::UnalignedAfterTimeout);
    assert!(summary.checkpoint_barriers.unaligned_after_timeout > 0);
    assert_eq!(summary.checkpoint_barriers.unaligned, 0);
    assert_eq!(summary.details["gaps"], 0);
    assert_eq!(summary.details["repeats"], 0);
    assert_eq!(summary.details["counted"], 10_000);

    // No backpressure: a rate the operator keeps up with, and a timeout far above what an
    // aligned checkpoint takes then, so every checkpoint stays aligned.
    let dir = tempfile::tempdir().unwrap();
    let storage = fs_storage(dir.path());
    let config = self::config(
        dir.path(),
        "unaligned = true\naligned-checkpoint-timeout = \"5s\"\n",
        "id = \"noswitch\"\nrate = 4000\n",
    );
    let seen = Mutex::new(Vec::new());
    let on_checkpoint = |c: &CheckpointReport| seen.lock().unwrap().push(c.clone());
    let summary = runtime::run_job(
        Sequenced {
            per_source: 2000,
            pad: 200,
            sources: 2,
        },
        &config,
        storage.clone(),
        &RunOptions {
            on_checkpoint: &on_checkpoint,
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(summary.status, Status::Finished);
    let seen = seen.into_inner().unwrap();
    assert!(!seen.is_empty());
    for c in &seen {
        assert_eq!(c.barriers, Barriers::Aligned, "checkpoint {}", c.id);
        assert_eq!(c.channel_state_bytes, 0);
    }
}

/// A job directory for the `cairn` binary, with the filesystem plugin in `plugins/`.
fn setup(checkpointing: &str, job: &str) -> tempfile::TempDir {
    let dir = dir_with_plugins(&[FS_PLUGIN]);
    let config = format!(
        "[plugins]\nsearch-path = [\"plugins\"]\n\n\
         [checkpointing]\ninterval = \"100ms\"\nnum-retained = 3\n\
         externalized-retention = \"retain-on-cancellation\"\n{checkpointing}\n\
         [job]\nid = \"it\"\nkeys = 500\nparallelism = 2\n{job}"
    );
    std::fs::write(dir.path().join("cairn.toml"), config).unwrap();
    dir
}

/// Past `max-in-flight-data`, an unaligned checkpoint fails with a message naming the bound,
/// and the job goes on under `tolerable-failures`, still exactly-once.
#[test]
fn past_the_in_flight_bound_the_checkpoint_fails_and_the_job_goes_on() {
    let dir = setup(
        "unaligned = true\nmax-in-flight-data = \"1KiB\"\ntolerable-failures = 1000\n",
        "rate = 40000\noperator-rate = 20000\n",
    );
    let out = cairn_ok(&["run", "--records", "20000", "--json"], dir.path());
    let summary = json_of(&out);
    assert_eq!(summary["status"], "finished", "{summary}");
    assert_eq!(summary["attempts"], 1);
    assert!(
        summary["checkpoints_failed"].as_u64().unwrap() > 0,
        "{summary}"
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("past checkpointing.max-in-flight-data = 1KiB"),
        "{log}"
    );
    assert_eq!(
        summary["counts_sha256"],
        keyed_counter::counts_digest(&keyed_counter::expected_counts(500, 2, 20000))
    );
}

/// `kill -9` during an unaligned run under backpressure, then `--from latest`: the checkpoint
/// restored holds channel state (`checkpoints show --json` says how much, per task) and the
/// digest is the one of an uninterrupted run.
#[test]
fn kill_dash_nine_then_from_latest_restores_channel_state_exactly_once() {
    let dir = setup(
        "unaligned = true\n",
        "rate = 20000\noperator-rate = 10000\n",
    );
    let records = 60_000u64;
    // Kill without warning once two checkpoints of this run are complete.
    kill_after_checkpoints(&["run", "--records", &records.to_string()], dir.path(), 2);

    let show = json_of(&cairn_ok(
        &["checkpoints", "show", "latest", "--json"],
        dir.path(),
    ));
    let meta = &show["metadata"];
    assert_eq!(meta["barriers"], "unaligned", "{show}");
    let per_task: Vec<u64> = meta["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["channel_state_bytes"].as_u64().unwrap())
        .collect();
    assert!(per_task.iter().sum::<u64>() > 0, "{per_task:?}");
    let latest = meta["id"].as_u64().unwrap();
    let text =
        String::from_utf8_lossy(&cairn_ok(&["checkpoints", "show", "latest"], dir.path()).stdout)
            .to_string();
    assert!(text.contains("barriers:     unaligned"), "{text}");
    assert!(text.contains("of channel state"), "{text}");

    resume_latest_exactly(
        dir.path(),
        records,
        latest,
        &keyed_counter::counts_digest(&keyed_counter::expected_counts(500, 2, records)),
    );
}

/// The keys that shape unaligned checkpoints are refused without `unaligned = true`, never
/// accepted and ignored; `force-unaligned` is accepted with it, and `run` says what it does.
#[test]
fn unaligned_keys_without_unaligned_are_refused() {
    let dir = setup("aligned-checkpoint-timeout = \"1s\"\n", "");
    let out = cairn(&["config", "check"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "checkpointing.aligned-checkpoint-timeout = \"1s\" applies only with unaligned = true"
        ),
        "{err}"
    );
    let dir = setup(
        "unaligned = true\nforce-unaligned = true\n",
        "rate = 40000\noperator-rate = 20000\n",
    );
    let out = cairn_ok(&["run", "--records", "20000"], dir.path());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("barriers: exactly-once, unaligned"), "{log}");
    assert!(
        log.contains("refuses unaligned checkpoints nowhere"),
        "{log}"
    );
    assert!(!log.contains("accepted but not yet applied"), "{log}");
    // Each checkpoint's line, and the summary, say how its barriers went.
    assert!(log.contains("(unaligned, "), "{log}");
    assert!(log.contains(" of channel state, barriers "), "{log}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" unaligned; "), "{text}");
    assert!(
        text.contains(" of channel state in all; longest alignment "),
        "{text}"
    );
}

/// `checkpoints copy` of an unaligned checkpoint carries its channel state over: copied inside
/// the run's checkpoint callback (so the checkpoint is still retained), then read from the
/// destination alone, with the source's storage gone.
#[test]
fn a_copied_unaligned_checkpoint_holds_its_own_channel_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "unaligned = true\n",
        "id = \"kc\"\nkeys = 300\nrate = 40000\noperator-rate = 20000\n",
    );
    // Every handle stored, so channel state is a stored object the copy must move.
    let stored = |d: &Path| format!("{}inline-threshold = \"0B\"\n", fs_options(d));
    let plugin = load("cairn-storage-fs-cdylib");
    let source: Arc<dyn CheckpointStorage> =
        Arc::from(plugin.open(&stored(&dir.path().join("source"))).unwrap());
    let destination = plugin.open(&stored(&dir.path().join("copy"))).unwrap();
    let copied = Mutex::new(None);
    let (tx, rx) = crossbeam_channel::unbounded();
    let on_checkpoint = |c: &CheckpointReport| {
        let mut copied = copied.lock().unwrap();
        if copied.is_none() && !c.savepoint && c.channel_state_bytes > 0 {
            let to = cairn_host::copy::Destination {
                storage: destination.as_ref(),
                job_id: "kc",
                savepoint_target: None,
            };
            *copied = Some(cairn_host::copy::copy(
                source.as_ref(),
                &c.pointer,
                &to,
                &|_, _| {},
            ));
            let _ = tx.send(Command::Cancel);
        }
    };
    runtime::run_job(
        keyed_counter::KeyedCounter::new(&config.job, None),
        &config,
        source.clone(),
        &RunOptions {
            stop_when: StopWhen::Never,
            commands: Some(rx),
            on_checkpoint: &on_checkpoint,
            ..RunOptions::default()
        },
    )
    .unwrap();
    let report = copied
        .into_inner()
        .unwrap()
        .expect("a checkpoint with channel state completed")
        .unwrap();
    drop(source);
    std::fs::remove_dir_all(dir.path().join("source")).unwrap();
    let meta = metadata(destination.as_ref(), &report.pointer);
    let channel: Vec<_> = meta.tasks.iter().flat_map(|t| &t.channel_state).collect();
    assert!(!channel.is_empty(), "{meta:?}");
    for c in channel {
        let handle = c.handle.to_handle().unwrap();
        let bytes = cairn_plugin_api::read_handle_fully(destination.as_ref(), &handle)
            .unwrap_or_else(|e| {
                panic!("channel state of input {} not in the copy: {e}", c.channel)
            });
        assert_eq!(bytes.len() as u64, c.bytes);
    }
}
