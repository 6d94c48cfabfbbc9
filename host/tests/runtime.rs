//! The runtime in-process, through real plugins: snapshot isolation, two-phase commit across
//! failover and failed checkpoints, commands, and the example job of `host/examples/`.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
};

use cairn_host::{
    config::Config,
    job::{Job, JobError, Next, Process, Source, TaskContext, TwoPhaseCommitSink},
    metadata::CheckpointMetadata,
    runtime::{self, keyed_counter, Command, RunError, RunOptions, Status, StopWhen},
};
use cairn_plugin_api::{read_handle_fully, CheckpointStorage};

use crate::util::{fs_options, lib, load};

// The example job, compiled into this test so that running the suite runs it.
#[allow(dead_code)] // reason: its `main` is for `cargo run --example`
#[path = "../examples/sensor_max.rs"]
mod sensor_max;

fn config(dir: &Path, extra: &str) -> Config {
    let text = format!(
        "[checkpointing]\ninterval = \"50ms\"\nnum-retained = 5\n\
         externalized-retention = \"retain-on-cancellation\"\n\n{extra}"
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

/// Every retained checkpoint holds exactly the state at its barrier: each key's value is the
/// value after the records its sources had emitted before the barrier, byte for byte, although
/// the tasks went on changing those values while the snapshots were written.
#[test]
fn every_checkpoint_is_the_state_at_its_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, bytes) = (3000u64, 1024u64);
    let config = config(
        dir.path(),
        &format!(
            "[job]\nid = \"iso\"\nkeys = {keys}\nstate-bytes-per-key = {bytes}\nrate = 300000\n"
        ),
    );
    let storage = fs_storage(dir.path());
    let records = 600_000;
    let summary = runtime::run(
        &config,
        storage,
        &RunOptions {
            stop_when: StopWhen::Records(records),
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(summary.status, Status::Finished);
    let expected = keyed_counter::expected_counts(keys, 2, records);
    assert_eq!(
        summary.details["counts_sha256"],
        keyed_counter::counts_digest(&expected)
    );
    // A finished job discards its checkpoints, so check them as they were reported: rerun the
    // same job, keeping them this time (stopped, with retain-on-cancellation).
    let dir = tempfile::tempdir().unwrap();
    let storage = fs_storage(dir.path());
    let config = self::config(
        dir.path(),
        &format!(
            "[job]\nid = \"iso\"\nkeys = {keys}\nstate-bytes-per-key = {bytes}\nrate = 300000\n"
        ),
    );
    runtime::run(
        &config,
        storage.clone(),
        &RunOptions {
            stop_when: StopWhen::After(std::time::Duration::from_secs(2)),
            ..RunOptions::default()
        },
    )
    .unwrap();
    let job = storage.job("iso").unwrap();
    let completed = job.list_completed().unwrap();
    assert!(!completed.is_empty());
    for c in completed {
        let meta = metadata(storage.as_ref(), &c.pointer);
        let offsets: Vec<u64> = meta
            .source_offsets
            .iter()
            .map(|o| o.as_u64().unwrap())
            .collect();
        let counts = keyed_counter::counts_at(keys, 2, &offsets);
        let mut seen = 0;
        for t in &meta.tasks {
            for h in &t.handles {
                let state = read_handle_fully(storage.as_ref(), &h.to_handle().unwrap()).unwrap();
                for (k, v) in keyed_counter::decode_values(&state).unwrap() {
                    let n = counts.get(&k).copied().unwrap_or(0);
                    assert_eq!(
                        v,
                        keyed_counter::value_after(k, n, bytes as usize),
                        "checkpoint {}: key {k} is not its value after {n} records",
                        c.checkpoint_id
                    );
                    seen += 1;
                }
            }
        }
        // Every counted key is in the snapshot (others may still be being prefilled).
        assert!(seen >= counts.len(), "checkpoint {}", c.checkpoint_id);
    }
}

/// A test sink whose transactions live in memory shared with the test, so every begin,
/// pre-commit, commit and abort can be checked, in order with checkpoint completions.
#[derive(Default)]
struct Ledger {
    log: Vec<Entry>,
    open: BTreeMap<(u32, u64), Vec<u64>>,
    prepared: BTreeMap<(u32, u64), Vec<u64>>,
    committed: BTreeMap<(u32, u64), Vec<u64>>,
    next: BTreeMap<u32, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    PreCommit(u32, u64),
    Commit(u32, u64),
    Abort(u32, u64),
    Completed(u64),
}

struct LedgerSink {
    subtask: u32,
    ledger: Arc<Mutex<Ledger>>,
}

impl TwoPhaseCommitSink for LedgerSink {
    type Input = u64;
    type Transaction = u64;

    fn begin_transaction(&mut self) -> Result<u64, JobError> {
        let mut l = self.ledger.lock().unwrap();
        let seq = *l
            .next
            .entry(self.subtask)
            .and_modify(|n| *n += 1)
            .or_insert(1);
        l.open.insert((self.subtask, seq), Vec::new());
        Ok(seq)
    }
    fn write(&mut self, txn: &mut u64, record: u64) -> Result<(), JobError> {
        let mut l = self.ledger.lock().unwrap();
        l.open
            .get_mut(&(self.subtask, *txn))
            .ok_or("write into a transaction that is not open")?
            .push(record);
        Ok(())
    }
    fn pre_commit(&mut self, txn: &mut u64) -> Result<(), JobError> {
        let mut l = self.ledger.lock().unwrap();
        let records = l
            .open
            .remove(&(self.subtask, *txn))
            .ok_or("pre-commit of no open txn")?;
        l.prepared.insert((self.subtask, *txn), records);
        l.log.push(Entry::PreCommit(self.subtask, *txn));
        Ok(())
    }
    fn commit(&mut self, txn: u64) -> Result<(), JobError> {
        let mut l = self.ledger.lock().unwrap();
        let key = (self.subtask, txn);
        if let Some(records) = l.prepared.remove(&key) {
            l.committed.insert(key, records);
        } else if !l.committed.contains_key(&key) {
            return Err(JobError(format!("commit of unknown transaction {key:?}")));
        }
        l.log.push(Entry::Commit(self.subtask, txn));
        Ok(())
    }
    fn abort(&mut self, txn: u64) -> Result<(), JobError> {
        let mut l = self.ledger.lock().unwrap();
        let key = (self.subtask, txn);
        assert!(
            !l.committed.contains_key(&key),
            "abort of committed {key:?}"
        );
        l.open.remove(&key);
        l.prepared.remove(&key);
        l.log.push(Entry::Abort(self.subtask, txn));
        Ok(())
    }
    fn abort_unknown(&mut self, keep: &[u64]) -> Result<(), JobError> {
        let mut l = self.ledger.lock().unwrap();
        let stale: Vec<(u32, u64)> = l
            .open
            .keys()
            .chain(l.prepared.keys())
            .filter(|(s, t)| *s == self.subtask && !keep.contains(t))
            .copied()
            .collect();
        for key in stale {
            l.open.remove(&key);
            l.prepared.remove(&key);
            l.log.push(Entry::Abort(key.0, key.1));
        }
        Ok(())
    }
}

/// Numbers 0.. up to `end`, dealt to the sources; every number goes to the sink once.
struct Numbers {
    n: u64,
    step: u64,
    end: u64,
}

impl Source for Numbers {
    type Record = u64;
    type Offset = u64;
    fn next(&mut self) -> Result<Next<u64>, JobError> {
        let n = self.n;
        self.n = (n + self.step).min(self.end);
        Ok(if n < self.end {
            Next::Record(n)
        } else {
            Next::End
        })
    }
    fn offset(&self) -> u64 {
        self.n
    }
}

struct ToLedger {
    end: u64,
    ledger: Arc<Mutex<Ledger>>,
}

impl Job for ToLedger {
    type Source = Numbers;
    type Key = u64;
    type State = u64;
    type Sink = LedgerSink;
    fn kind(&self) -> &str {
        "to-ledger"
    }
    fn source(&self, ctx: &TaskContext, offset: Option<u64>) -> Result<Numbers, JobError> {
        Ok(Numbers {
            n: offset.unwrap_or(ctx.subtask.into()),
            step: ctx.parallelism.into(),
            end: self.end,
        })
    }
    fn key(&self, n: &u64) -> u64 {
        n % 7
    }
    fn process(&self, p: &mut Process<'_, Self>, n: u64) -> Result<(), JobError> {
        *p.state.get_or_insert_with(|| 0)? += 1;
        p.emit(n);
        Ok(())
    }
    fn sink(&self, ctx: &TaskContext) -> Result<Option<LedgerSink>, JobError> {
        Ok(Some(LedgerSink {
            subtask: ctx.subtask,
            ledger: self.ledger.clone(),
        }))
    }
}

/// Every commit comes after a checkpoint completed since its pre-commit; nothing is committed
/// and aborted; every transaction ends committed or aborted.
fn check_ledger(l: &Ledger) {
    for (i, e) in l.log.iter().enumerate() {
        if let Entry::Commit(s, t) = e {
            let pre = l.log[..i]
                .iter()
                .position(|x| *x == Entry::PreCommit(*s, *t))
                .unwrap_or_else(|| panic!("commit of ({s}, {t}) before its pre-commit"));
            assert!(
                l.log[pre..i]
                    .iter()
                    .any(|x| matches!(x, Entry::Completed(_))),
                "({s}, {t}) committed before any checkpoint completed after its pre-commit: {:?}",
                l.log
            );
            assert!(
                !l.log.contains(&Entry::Abort(*s, *t)),
                "({s}, {t}) committed and aborted"
            );
        }
    }
    assert!(
        l.prepared.is_empty(),
        "pre-committed, never resolved: {:?}",
        l.prepared.keys()
    );
}

#[test]
fn two_phase_commit_is_exactly_once_across_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let config = config(
        dir.path(),
        "[job]\nid = \"tpc\"\nrate = 20000\nfail-after-checkpoints = 3\n\n\
         [restart]\nattempts = 1\ndelay = \"10ms\"\n",
    );
    let on_checkpoint = |r: &runtime::CheckpointReport| {
        ledger.lock().unwrap().log.push(Entry::Completed(r.id));
    };
    let end = 20_000;
    let summary = runtime::run_job(
        ToLedger {
            end,
            ledger: ledger.clone(),
        },
        &config,
        fs_storage(dir.path()),
        &RunOptions {
            on_checkpoint: &on_checkpoint,
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(summary.status, Status::Finished);
    assert_eq!(summary.attempts, 2, "the injected failure fails over once");
    let l = ledger.lock().unwrap();
    check_ledger(&l);
    let mut all: Vec<u64> = l.committed.values().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..end).collect::<Vec<_>>(),
        "each record committed exactly once"
    );
    assert!(
        l.log.iter().any(|e| matches!(e, Entry::Abort(..))),
        "the failover aborted what the restored checkpoint did not hold"
    );
    assert!(
        l.open.values().all(Vec::is_empty),
        "open transactions hold nothing"
    );
}

#[test]
fn a_checkpoint_that_fails_aborts_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let text = format!(
        "[storage]\npath = {:?}\n[storage.options]\npanic-in = \"commit\"\n\n\
         [checkpointing]\ninterval = \"50ms\"\n\n[job]\nid = \"fails\"\nrate = 2000\n\n\
         [restart]\nattempts = 1\ndelay = \"10ms\"\n",
        lib("cairn-fixture-panicking").display().to_string()
    );
    let config = Config::parse(&text, &dir.path().join("cairn.toml")).unwrap();
    let on_checkpoint = |r: &runtime::CheckpointReport| {
        ledger.lock().unwrap().log.push(Entry::Completed(r.id));
    };
    let err = runtime::run_with_config(
        ToLedger {
            end: u64::MAX,
            ledger: ledger.clone(),
        },
        &config,
        &RunOptions {
            on_checkpoint: &on_checkpoint,
            ..RunOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, RunError::Failed { attempts: 2, .. }), "{err}");
    let l = ledger.lock().unwrap();
    assert!(
        l.committed.is_empty(),
        "no checkpoint completed, so nothing is committed"
    );
    assert!(
        l.log.iter().any(|e| matches!(e, Entry::PreCommit(..))),
        "checkpoints got as far as the sinks' pre-commit: {:?}",
        l.log
    );
    // Every transaction pre-committed for a failed checkpoint of the first attempt was aborted
    // when the job restarted; the second attempt's end leaves its own for the next restore.
    let first_pre: Vec<&Entry> = l
        .log
        .iter()
        .take_while(|e| !matches!(e, Entry::Abort(..)))
        .filter(|e| matches!(e, Entry::PreCommit(..)))
        .collect();
    for e in first_pre {
        let Entry::PreCommit(s, t) = e else {
            unreachable!()
        };
        assert!(
            l.log.contains(&Entry::Abort(*s, *t)),
            "({s}, {t}) was not aborted"
        );
    }
}

#[test]
fn commands_take_a_savepoint_and_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &format!(
            "[savepoints]\ndir = {:?}\n\n[job]\nid = \"cmd\"\nrate = 5000\n",
            dir.path().join("savepoints").display().to_string()
        ),
    );
    let (tx, rx) = crossbeam_channel::unbounded();
    let storage = fs_storage(dir.path());
    let runner = {
        let storage = storage.clone();
        std::thread::spawn(move || {
            runtime::run(
                &config,
                storage,
                &RunOptions {
                    commands: Some(rx),
                    ..RunOptions::default()
                },
            )
        })
    };
    let (reply, answer) = crossbeam_channel::bounded(1);
    tx.send(Command::Savepoint {
        target: None,
        reply,
    })
    .unwrap();
    let pointer = answer.recv().unwrap().expect("a savepoint").pointer;
    assert!(Path::new(&pointer).join("_metadata").is_file(), "{pointer}");
    let meta = metadata(storage.as_ref(), &pointer);
    assert_eq!(meta.kind, cairn_host::metadata::SnapshotKind::Savepoint);
    tx.send(Command::Cancel).unwrap();
    let summary = runner.join().unwrap().unwrap();
    assert_eq!(summary.status, Status::Stopped);
}

#[test]
fn the_example_job_runs_exactly_once_through_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "[job]\nid = \"sensors\"\nrate = 50000\nfail-after-records = 20000\n\n\
         [restart]\nattempts = 1\ndelay = \"10ms\"\n",
    );
    let readings = 60_000;
    let mut expected = BTreeMap::new();
    for n in 0..readings {
        let (sensor, t) = ((n % 16) as u16, (n * 7919 % 40_000) as i32);
        let max = expected.entry(sensor).or_insert(t);
        *max = (*max).max(t);
    }
    let summary = runtime::run_job(
        sensor_max::SensorMax(readings),
        &config,
        fs_storage(dir.path()),
        &RunOptions::default(),
    )
    .unwrap();
    assert_eq!(summary.status, Status::Finished);
    assert_eq!(summary.attempts, 2);
    assert_eq!(summary.records_counted, readings);
    for (sensor, max) in expected {
        assert_eq!(
            summary.details[&format!("sensor_{sensor}")],
            max,
            "sensor {sensor}"
        );
    }
}
