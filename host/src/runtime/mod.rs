//! The dataflow runtime and the coordinator loop that checkpoints it.
//!
//! [`run`] runs the built-in keyed-counter job (see [`keyed_counter`]) until it finishes (a
//! `--records` bound), is stopped (a `--duration`, Ctrl-C or SIGTERM), or fails for good. Each
//! *attempt* starts the tasks (`tasks.rs`) from a state, and the loop here drives the
//! [`Coordinator`]: it triggers checkpoints by handing barriers to the sources, collects the
//! tasks' acknowledgements, commits the metadata through the storage plugin when all have
//! acknowledged, expires checkpoints that take too long, discards subsumed ones in the
//! background, and fails the job over (restart from the latest completed checkpoint, under
//! `[restart]`) when a task fails or the checkpoint failures exceed what is tolerated.
//!
//! Every call into the plugin that happens on the coordinator's own thread (begin, commit) runs
//! on a helper thread with a deadline, so a hanging plugin fails the checkpoint like a timeout
//! and never hangs the coordinator. Snapshot writes happen on the task threads; a task stuck in
//! the plugin makes its checkpoint expire.

pub mod keyed_counter;
mod tasks;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use cairn_plugin_api::{
    read_handle_fully, CheckpointLocation, CheckpointStorage, CompletedCheckpoint, JobStorage,
    StateHandle, StorageError,
};
use crossbeam_channel::{bounded, unbounded};
use serde::Serialize;

use self::tasks::{Ack, Barrier, Counter, Exit, Shared, Source};
use crate::{
    config::{Config, ExternalizedRetention},
    coordinator::{Action, Coordinator, FailureReason, Policy, Retained, Verdict},
    metadata::{CheckpointMetadata, HandleRecord, SnapshotKind, TaskState},
};

/// Where to restore from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreFrom {
    /// The newest completed checkpoint of the job.
    Latest,
    /// The checkpoint or savepoint at this pointer.
    Pointer(String),
}

/// When the run ends on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopWhen {
    /// Only when stopped from outside.
    Never,
    /// After this long (a stop, as if cancelled).
    After(Duration),
    /// When the sources have emitted this many records in total and all were counted.
    Records(u64),
}

/// A snapshot of the run, for progress displays.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    /// Records counted since the run started (all attempts).
    pub records: u64,
    /// Records per second over the last interval.
    pub records_per_sec: f64,
    /// The attempt, from 1.
    pub attempt: u32,
    /// The last completed checkpoint: id, milliseconds it took, bytes of state.
    pub last_checkpoint: Option<(u64, u64, u64)>,
    /// Checkpoints completed in this run.
    pub completed: u64,
    /// Checkpoint failures in this run.
    pub failures: u64,
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The sources ran out and every record was counted.
    Finished,
    /// Stopped by a duration, Ctrl-C or SIGTERM.
    Cancelled,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The job id.
    pub job_id: String,
    /// How it ended.
    pub status: Status,
    /// Attempts (1 + failovers).
    pub attempts: u32,
    /// Checkpoints completed in this run.
    pub checkpoints_completed: u64,
    /// Checkpoint failures in this run.
    pub checkpoints_failed: u64,
    /// The newest completed checkpoint, if the job's checkpoints were kept.
    pub latest_checkpoint: Option<RetainedView>,
    /// Whether the job's completed checkpoints were kept (`externalized-retention`).
    pub checkpoints_kept: bool,
    /// The savepoint taken before stopping (`savepoints.on-sigterm`), if one was.
    pub final_savepoint: Option<String>,
    /// The pointer the run restored from at start, if any.
    pub restored_from: Option<String>,
    /// Records counted (in the final attempt's state: restored counts plus new ones).
    pub records_counted: u64,
    /// SHA-256 of every key's final count (finished runs only).
    pub counts_sha256: Option<String>,
    /// The final counts (finished runs only).
    #[serde(skip)]
    pub counts: Option<BTreeMap<u64, u64>>,
}

/// A retained checkpoint, for the summary.
#[derive(Debug, Clone, Serialize)]
pub struct RetainedView {
    /// Its id.
    pub id: u64,
    /// Its pointer.
    pub pointer: String,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The restore point is unusable.
    #[error("cannot restore: {0}")]
    Restore(String),
    /// A storage call needed to start failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// Failed over more often than `[restart] attempts` allows.
    #[error("the job failed after {attempts} attempts; last failure: {last}")]
    Failed {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
}

/// The state an attempt starts from.
#[derive(Debug, Clone, Default)]
struct StartState {
    offsets: Vec<u64>,
    counts: Vec<BTreeMap<u64, u64>>,
    pointer: Option<String>,
}

/// Options of one run.
pub struct RunOptions<'a> {
    /// Restore at start.
    pub from: Option<RestoreFrom>,
    /// When to end.
    pub stop_when: StopWhen,
    /// Set from outside (signal handler) to stop the job.
    pub cancel: Arc<AtomicBool>,
    /// Set from outside (SIGTERM with `savepoints.on-sigterm`) to take a savepoint, then stop.
    pub stop_with_savepoint: Arc<AtomicBool>,
    /// Called about four times a second.
    pub on_progress: &'a dyn Fn(&Progress),
    /// Called when a checkpoint completes: id, pointer, milliseconds, state bytes.
    pub on_checkpoint: &'a dyn Fn(u64, &str, u64, u64),
    /// Called when the job fails over and will restart: the failed attempt's number, the
    /// reason, and the checkpoint it restarts from (`None`: from the beginning).
    pub on_failover: &'a dyn Fn(u32, &str, Option<&str>),
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Run `f` on a helper thread and wait at most `deadline` for it. A call that does not return in
/// time is abandoned (its thread keeps running) and reported as `Timeout`.
/// What to do with the result of a call that was abandoned at its deadline.
type Undo<T> = Box<dyn FnOnce(Result<T, StorageError>) + Send>;

/// Also gives up early, with `Timeout`, when `cancel` is set. The abandoned call's eventual
/// result goes to `abandoned`, if given, so that its effects can be undone.
fn bounded_call<T: Send + 'static>(
    what: &str,
    deadline: Duration,
    cancel: &AtomicBool,
    abandoned: Option<Undo<T>>,
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("plugin-{what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| StorageError::Other(format!("cannot start a thread for {what}: {e}")))?;
    let until = Instant::now() + deadline;
    loop {
        let slice = until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(50));
        match rx.recv_timeout(slice) {
            Ok(result) => return result,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(StorageError::Other(format!(
                    "{what}: the call's thread died"
                )))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let cancelled = cancel.load(Ordering::Relaxed);
        if cancelled || Instant::now() >= until {
            if let Some(undo) = abandoned {
                // Whatever the call does later, its result is handled, never lost.
                std::thread::spawn(move || {
                    if let Ok(result) = rx.recv() {
                        undo(result);
                    }
                });
            }
            let why = if cancelled {
                "the job is stopping".to_string()
            } else {
                format!(
                    "it did not return within {}",
                    humantime::format_duration(deadline)
                )
            };
            return Err(StorageError::Timeout(format!(
                "{what} was abandoned: {why}"
            )));
        }
    }
}

/// Read and check the metadata at `pointer` for this job.
pub fn load_checkpoint(
    storage: &dyn CheckpointStorage,
    config: &Config,
    pointer: &str,
) -> Result<CheckpointMetadata, RunError> {
    let resolved = storage
        .resolve(pointer)
        .map_err(|e| RunError::Restore(e.to_string()))?;
    let meta = CheckpointMetadata::decode(&resolved.metadata)
        .map_err(|e| RunError::Restore(format!("{pointer}: {e}")))?;
    if meta.job_id != config.job.id {
        return Err(RunError::Restore(format!(
            "{pointer} belongs to job '{}', not to job.id = '{}'",
            meta.job_id, config.job.id
        )));
    }
    if meta.config_fingerprint != keyed_counter::fingerprint(&config.job) {
        let taken = if meta.job_settings.is_empty() {
            "other settings".to_string()
        } else {
            meta.job_settings.clone()
        };
        return Err(RunError::Restore(format!(
            "{pointer} was taken with {taken}, but the config says {}; restore it with the settings it was taken with",
            keyed_counter::describe(&config.job)
        )));
    }
    Ok(meta)
}

fn start_state(
    storage: &dyn CheckpointStorage,
    config: &Config,
    pointer: &str,
) -> Result<StartState, RunError> {
    let meta = load_checkpoint(storage, config, pointer)?;
    let p = config.job.parallelism as usize;
    if meta.source_offsets.len() != p {
        return Err(RunError::Restore(format!(
            "{pointer} has {} source offsets for parallelism {p}",
            meta.source_offsets.len()
        )));
    }
    let mut counts = vec![BTreeMap::new(); p];
    let mut seen = vec![false; p];
    for task in meta.tasks.iter().filter(|t| t.operator == "counter") {
        let i = task.subtask as usize;
        if i >= p || std::mem::replace(&mut seen[i], true) {
            return Err(RunError::Restore(format!(
                "{pointer} has state for counter {} twice or out of range (parallelism {p})",
                task.subtask
            )));
        }
        let slot = &mut counts[i];
        for record in &task.handles {
            let handle = record
                .to_handle()
                .map_err(|e| RunError::Restore(format!("{pointer}: {e}")))?;
            let bytes = read_handle_fully(storage, &handle).map_err(|e| {
                RunError::Restore(format!(
                    "{pointer}: reading counter {} state: {e}",
                    task.subtask
                ))
            })?;
            let decoded = keyed_counter::decode_state(&bytes).map_err(|e| {
                RunError::Restore(format!("{pointer}: counter {} state: {e}", task.subtask))
            })?;
            if let Some(k) = decoded
                .keys()
                .find(|&&k| keyed_counter::owner_of(k, p as u32) != i)
            {
                return Err(RunError::Restore(format!(
                    "{pointer}: counter {i} holds key {k}, which belongs to counter {}",
                    keyed_counter::owner_of(*k, p as u32)
                )));
            }
            slot.extend(decoded);
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(RunError::Restore(format!(
            "{pointer} has no state for counter {missing}"
        )));
    }
    Ok(StartState {
        offsets: meta.source_offsets,
        counts,
        pointer: Some(pointer.to_string()),
    })
}

/// A checkpoint in flight.
struct InFlight {
    location: Arc<dyn CheckpointLocation>,
    savepoint: bool,
    started: Instant,
    triggered_at_ms: u64,
    offsets: Vec<Option<u64>>,
    counters: Vec<Option<(StateHandle, u64)>>,
}

/// How an attempt ended.
enum AttemptEnd {
    Finished(BTreeMap<u64, u64>),
    Cancelled,
    Failover(String),
}

/// Run the job. See the module docs.
pub fn run(
    config: &Config,
    storage: Arc<dyn CheckpointStorage>,
    opts: &RunOptions<'_>,
) -> Result<Summary, RunError> {
    let job: Arc<dyn JobStorage> = Arc::from(storage.job(&config.job.id)?);
    let existing = job.list_completed()?;
    let next_id = existing
        .iter()
        .map(|c| c.checkpoint_id)
        .max()
        .map_or(1, |m| m + 1);
    let retained: Vec<Retained> = existing
        .iter()
        .map(|c| Retained {
            id: c.checkpoint_id,
            pointer: c.pointer.clone(),
        })
        .collect();
    let initial = match &opts.from {
        None => None,
        Some(RestoreFrom::Latest) => match existing.last() {
            Some(c) => Some(c.pointer.clone()),
            None => {
                return Err(RunError::Restore(format!(
                    "--from latest: job '{}' has no completed checkpoint in {}",
                    config.job.id,
                    storage.info().location
                )))
            }
        },
        Some(RestoreFrom::Pointer(p)) => Some(p.clone()),
    };
    let p = config.job.parallelism as usize;
    let fresh = StartState {
        offsets: vec![0; p],
        counts: vec![BTreeMap::new(); p],
        pointer: None,
    };
    let mut state = match &initial {
        Some(pointer) => start_state(storage.as_ref(), config, pointer)?,
        None => fresh.clone(),
    };
    let restored_from = state.pointer.clone();
    if let Some(pointer) = &restored_from {
        tracing::info!(pointer = %pointer, "restoring from checkpoint");
    }

    let mut coordinator = Coordinator::new(
        Policy::from_config(&config.checkpointing),
        next_id,
        retained,
    );
    let mut runner = Runner {
        config,
        storage: storage.clone(),
        job,
        opts,
        started: Instant::now(),
        records_before: 0,
        progress: Progress::default(),
        background: Vec::new(),
        injected: false,
        last_completed: None,
        deferred: Vec::new(),
        stopping_with_savepoint: false,
        final_savepoint: None,
    };
    let mut attempt = 0u32;
    let (end, attempts) = loop {
        attempt += 1;
        runner.progress.attempt = attempt;
        match runner.attempt(&mut coordinator, &state) {
            AttemptEnd::Failover(reason) => {
                tracing::warn!(attempt, "job failed: {reason}");
                if attempt > config.restart.attempts {
                    runner.finish_background();
                    runner.on_terminal(&coordinator, Terminal::Failed);
                    return Err(RunError::Failed {
                        attempts: attempt,
                        last: reason,
                    });
                }
                // Restart from this run's newest completed checkpoint; before there is one, from
                // where the run started (never from a newer checkpoint of an earlier run).
                let from = runner.last_completed.clone().or_else(|| initial.clone());
                (opts.on_failover)(attempt, &reason, from.as_deref());
                if runner.sleep_or_cancel(config.restart.delay) {
                    break (AttemptEnd::Cancelled, attempt);
                }
                state = match &from {
                    Some(pointer) => match start_state(storage.as_ref(), config, pointer) {
                        Ok(s) => s,
                        Err(e) => {
                            runner.finish_background();
                            runner.on_terminal(&coordinator, Terminal::Failed);
                            return Err(e);
                        }
                    },
                    None => fresh.clone(),
                };
            }
            other => break (other, attempt),
        }
    };
    let terminal = match end {
        AttemptEnd::Finished(_) => Terminal::Finished,
        _ => Terminal::Cancelled,
    };
    runner.finish_background();
    runner.on_terminal(&coordinator, terminal);
    let keeps = keeps_checkpoints(config.checkpointing.externalized_retention, terminal);
    let counts = match end {
        AttemptEnd::Finished(c) => Some(c),
        _ => None,
    };
    Ok(Summary {
        job_id: config.job.id.clone(),
        status: if terminal == Terminal::Finished {
            Status::Finished
        } else {
            Status::Cancelled
        },
        attempts,
        checkpoints_completed: runner.progress.completed,
        checkpoints_failed: runner.progress.failures,
        latest_checkpoint: coordinator
            .latest()
            .filter(|_| keeps)
            .map(|r| RetainedView {
                id: r.id,
                pointer: r.pointer.clone(),
            }),
        checkpoints_kept: keeps,
        final_savepoint: runner.final_savepoint.clone(),
        restored_from,
        records_counted: counts
            .as_ref()
            .map_or(runner.records_before, |c| c.values().sum()),
        counts_sha256: counts.as_ref().map(keyed_counter::counts_digest),
        counts,
    })
}

/// How a run ended, for `externalized-retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Terminal {
    Finished,
    Cancelled,
    Failed,
}

/// Whether the job's completed checkpoints stay when it ends this way (Flink's
/// `ExternalizedCheckpointCleanup`): a finished job needs none; a cancelled one keeps them only
/// with retain-on-cancellation; a failed one keeps them when they are externalized at all.
fn keeps_checkpoints(retention: ExternalizedRetention, terminal: Terminal) -> bool {
    match (terminal, retention) {
        (Terminal::Finished, _) => false,
        (Terminal::Cancelled, r) => r == ExternalizedRetention::RetainOnCancellation,
        (Terminal::Failed, r) => r != ExternalizedRetention::NoExternalized,
    }
}

struct Runner<'a> {
    config: &'a Config,
    storage: Arc<dyn CheckpointStorage>,
    job: Arc<dyn JobStorage>,
    opts: &'a RunOptions<'a>,
    started: Instant,
    records_before: u64,
    progress: Progress,
    background: Vec<JoinHandle<()>>,
    injected: bool,
    /// The pointer of the newest checkpoint completed in this run.
    last_completed: Option<String>,
    /// Locations to clean once the attempt's tasks have stopped.
    deferred: Vec<Arc<dyn CheckpointLocation>>,
    /// A stop-with-savepoint is under way.
    stopping_with_savepoint: bool,
    /// Its savepoint, once taken.
    final_savepoint: Option<String>,
}

impl Runner<'_> {
    fn should_stop(&self) -> bool {
        self.opts.cancel.load(Ordering::Relaxed)
            || matches!(self.opts.stop_when, StopWhen::After(d) if self.started.elapsed() >= d)
    }

    /// Sleep `d`, waking early to stop. True if the run is to stop.
    fn sleep_or_cancel(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.should_stop() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.should_stop()
    }

    /// Discard in the background, in parallel.
    fn discard_in_background(
        &mut self,
        pointers: Vec<String>,
        failed: Vec<Arc<dyn CheckpointLocation>>,
    ) {
        if pointers.is_empty() && failed.is_empty() {
            return;
        }
        let storage = self.storage.clone();
        let handle = std::thread::spawn(move || {
            std::thread::scope(|s| {
                for pointer in &pointers {
                    let storage = storage.clone();
                    s.spawn(move || {
                        if let Err(e) = storage.dispose(pointer) {
                            tracing::warn!(pointer = %pointer, "discarding a subsumed checkpoint failed: {e}");
                        }
                    });
                }
                for location in &failed {
                    s.spawn(move || {
                        if let Err(e) = location.dispose_on_failure() {
                            tracing::warn!("cleaning a failed checkpoint failed: {e}");
                        }
                    });
                }
            });
        });
        self.background.push(handle);
        self.background.retain(|h| !h.is_finished());
    }

    /// Wait (bounded) for background discards, so they are not cut off by the exit.
    fn finish_background(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for h in self.background.drain(..) {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }

    /// Apply `externalized-retention` when the job ends.
    fn on_terminal(&mut self, coordinator: &Coordinator, terminal: Terminal) {
        if keeps_checkpoints(self.config.checkpointing.externalized_retention, terminal) {
            return;
        }
        let pointers: Vec<String> = coordinator.retained().map(|r| r.pointer.clone()).collect();
        if !pointers.is_empty() {
            tracing::info!(
                count = pointers.len(),
                "discarding the job's checkpoints (the job {}; checkpointing.externalized-retention = {})",
                match terminal {
                    Terminal::Finished => "finished",
                    Terminal::Cancelled => "was stopped",
                    Terminal::Failed => "failed",
                },
                self.config.checkpointing.externalized_retention
            );
            self.discard_in_background(pointers, Vec::new());
            self.finish_background();
        }
    }

    fn attempt(&mut self, coordinator: &mut Coordinator, state: &StartState) -> AttemptEnd {
        let config = self.config;
        let p = config.job.parallelism as usize;
        let (ack_tx, ack_rx) = unbounded();
        let (exit_tx, exit_rx) = unbounded();
        let shared = Shared {
            stop: Arc::new(AtomicBool::new(false)),
            processed: Arc::new(AtomicU64::new(0)),
            acks: ack_tx,
            exits: exit_tx,
        };
        let records = match self.opts.stop_when {
            StopWhen::Records(n) => Some(n),
            _ => None,
        };
        let mut counter_inputs = Vec::new();
        let mut counter_outputs = Vec::new();
        for _ in 0..p {
            let (tx, rx) = bounded(1024);
            counter_inputs.push(tx);
            counter_outputs.push(rx);
        }
        let mut barrier_senders = Vec::new();
        let mut threads = Vec::new();
        for s in 0..p {
            let (btx, brx) = unbounded();
            barrier_senders.push(btx);
            let source = Source {
                subtask: s as u32,
                parallelism: p as u32,
                keys: config.job.keys,
                offset: state.offsets.get(s).copied().unwrap_or(0),
                quota: keyed_counter::quota(records, p as u32, s as u32),
                rate: config.job.rate.map(|r| r as f64 / p as f64),
                barriers: brx,
                outputs: counter_inputs.clone(),
                shared: shared.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("source-{s}"))
                    .spawn(move || source.run()),
            );
        }
        drop(counter_inputs);
        for (c, input) in counter_outputs.into_iter().enumerate() {
            let fail_after = if c == 0 && !self.injected {
                config.job.fail_after_records
            } else {
                None
            };
            let counter = Counter {
                subtask: c as u32,
                inputs: p,
                counts: state.counts.get(c).cloned().unwrap_or_default(),
                state_bytes_per_key: config.job.state_bytes_per_key,
                input,
                fail_after,
                shared: shared.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("counter-{c}"))
                    .spawn(move || counter.run()),
            );
        }
        if let Some(Err(e)) = threads.iter().find(|t| t.is_err()) {
            shared.stop.store(true, Ordering::Relaxed);
            return AttemptEnd::Failover(format!("cannot start task threads: {e}"));
        }
        let end = self.drive(coordinator, &shared, &barrier_senders, &ack_rx, &exit_rx);
        if let AttemptEnd::Failover(_) = &end {
            self.injected = true;
        }
        // Stop and wait (bounded) for the tasks; a task stuck in a plugin call is abandoned.
        shared.stop.store(true, Ordering::Relaxed);
        drop(barrier_senders);
        let deadline = Instant::now() + Duration::from_secs(5);
        for t in threads.into_iter().flatten() {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!(
                    "a task did not stop within 5s (stuck in a plugin call?); abandoning it"
                );
            }
        }
        self.records_before += shared.processed.load(Ordering::Relaxed);
        let deferred = std::mem::take(&mut self.deferred);
        self.discard_in_background(Vec::new(), deferred);
        end
    }

    fn drive(
        &mut self,
        coordinator: &mut Coordinator,
        shared: &Shared,
        barrier_senders: &[crossbeam_channel::Sender<Arc<Barrier>>],
        ack_rx: &crossbeam_channel::Receiver<Ack>,
        exit_rx: &crossbeam_channel::Receiver<Exit>,
    ) -> AttemptEnd {
        let p = self.config.job.parallelism as usize;
        let timeout = self.config.checkpointing.timeout;
        let mut in_flight: BTreeMap<u64, InFlight> = BTreeMap::new();
        let mut finished_counters: Vec<Option<BTreeMap<u64, u64>>> = vec![None; p];
        let mut last_progress = Instant::now();
        let mut last_records = self.records_before;
        let end = loop {
            if self.should_stop() {
                break AttemptEnd::Cancelled;
            }
            if !self.stopping_with_savepoint
                && self.opts.stop_with_savepoint.load(Ordering::Relaxed)
            {
                tracing::info!("stop requested: taking a savepoint first");
                self.stopping_with_savepoint = true;
                coordinator.request_savepoint();
            }
            let now = self.started.elapsed();
            let mut failed_over = None;
            for action in coordinator.poll(now) {
                let outcome = match action {
                    Action::Trigger { id, savepoint } => {
                        let job = self.job.clone();
                        let target = self
                            .config
                            .savepoints
                            .dir
                            .as_ref()
                            .map(|d| d.to_string_lossy().into_owned());
                        // A location begun after its deadline is cleaned when the call returns.
                        let undo: Undo<Box<dyn CheckpointLocation>> = Box::new(|begun| {
                            if let Ok(location) = begun {
                                let _ = location.dispose_on_failure();
                            }
                        });
                        let begun = bounded_call(
                            "begin_checkpoint",
                            timeout,
                            &self.opts.cancel,
                            Some(undo),
                            move || {
                                if savepoint {
                                    job.begin_savepoint(id, target.as_deref())
                                } else {
                                    job.begin_checkpoint(id)
                                }
                            },
                        );
                        match begun {
                            Ok(location) => {
                                let location: Arc<dyn CheckpointLocation> = Arc::from(location);
                                let barrier = Arc::new(Barrier {
                                    id,
                                    location: location.clone(),
                                });
                                for tx in barrier_senders {
                                    let _ = tx.send(barrier.clone());
                                }
                                in_flight.insert(
                                    id,
                                    InFlight {
                                        location,
                                        savepoint,
                                        started: Instant::now(),
                                        triggered_at_ms: epoch_ms(),
                                        offsets: vec![None; p],
                                        counters: vec![None; p],
                                    },
                                );
                                None
                            }
                            Err(e) => self.fail(
                                coordinator,
                                id,
                                FailureReason::Declined(e.to_string()),
                                None,
                            ),
                        }
                    }
                    Action::Expire { id } => {
                        // Tasks may still write into an expired location: clean it after they
                        // stop, at the end of the attempt.
                        if let Some(f) = in_flight.remove(&id) {
                            self.deferred.push(f.location);
                        }
                        tracing::warn!(
                            id,
                            "checkpoint expired after {}",
                            humantime::format_duration(timeout)
                        );
                        self.fail(coordinator, id, FailureReason::Expired, None)
                    }
                };
                if outcome.is_some() {
                    failed_over = outcome;
                    break;
                }
            }
            if let Some(end) = failed_over {
                break end;
            }
            let wait = coordinator
                .next_wakeup(now)
                .map_or(Duration::from_millis(250), |at| at.saturating_sub(now))
                .min(Duration::from_millis(250));
            crossbeam_channel::select! {
                recv(ack_rx) -> ack => {
                    if let Ok(ack) = ack {
                        if let Some(end) = self.on_ack(coordinator, &mut in_flight, ack) {
                            break end;
                        }
                    }
                }
                recv(exit_rx) -> exit => match exit {
                    Ok(Exit::Counter { subtask, result: Ok(counts) }) => {
                        finished_counters[subtask as usize] = Some(counts);
                        if finished_counters.iter().all(Option::is_some) {
                            if shared.stop.load(Ordering::Relaxed) {
                                break AttemptEnd::Cancelled;
                            }
                            let mut all = BTreeMap::new();
                            for c in finished_counters.iter_mut() {
                                all.append(c.as_mut().expect("all finished"));
                            }
                            break AttemptEnd::Finished(all);
                        }
                    }
                    Ok(Exit::Counter { result: Err(e), .. }) => break AttemptEnd::Failover(e),
                    Ok(Exit::Source { subtask, result: Err(e) }) => {
                        break AttemptEnd::Failover(format!("source {subtask}: {e}"));
                    }
                    Ok(Exit::Source { result: Ok(()), .. }) | Err(_) => {}
                },
                default(wait) => {}
            }
            if last_progress.elapsed() >= Duration::from_millis(250) {
                let records = self.records_before + shared.processed.load(Ordering::Relaxed);
                let secs = last_progress.elapsed().as_secs_f64();
                self.progress.records = records;
                self.progress.records_per_sec = (records - last_records) as f64 / secs;
                self.progress.failures = coordinator.total_failures();
                last_records = records;
                last_progress = Instant::now();
                (self.opts.on_progress)(&self.progress);
            }
        };
        // Whatever was in flight will never complete in this attempt; its locations are cleaned
        // once the tasks have stopped writing into them.
        self.deferred
            .extend(in_flight.into_values().map(|f| f.location));
        coordinator.abort_all();
        end
    }

    /// Count a failure and clean its location. `Some` if the job must fail over.
    fn fail(
        &mut self,
        coordinator: &mut Coordinator,
        id: u64,
        reason: FailureReason,
        location: Option<Arc<dyn CheckpointLocation>>,
    ) -> Option<AttemptEnd> {
        if self.stopping_with_savepoint && coordinator.is_savepoint(id) {
            tracing::error!(
                id,
                "the savepoint before stopping failed ({reason}); stopping without it"
            );
            self.discard_in_background(Vec::new(), location.into_iter().collect());
            let _ = coordinator.on_failed(id, &reason);
            return Some(AttemptEnd::Cancelled);
        }
        tracing::warn!(id, "checkpoint failed: {reason}");
        let verdict = coordinator.on_failed(id, &reason);
        self.progress.failures = coordinator.total_failures();
        self.discard_in_background(Vec::new(), location.into_iter().collect());
        (verdict == Verdict::FailJob).then(|| {
            AttemptEnd::Failover(format!(
                "checkpoint {id} {reason}, and checkpoint failures in a row exceed \
                     checkpointing.tolerable-failures"
            ))
        })
    }

    fn on_ack(
        &mut self,
        coordinator: &mut Coordinator,
        in_flight: &mut BTreeMap<u64, InFlight>,
        ack: Ack,
    ) -> Option<AttemptEnd> {
        let id = match &ack {
            Ack::Source { id, .. } | Ack::Counter { id, .. } => *id,
        };
        let Some(flight) = in_flight.get_mut(&id) else {
            // A late acknowledgement of an expired or aborted checkpoint: drop its state.
            if let Ack::Counter {
                result: Ok((handle, _)),
                ..
            } = ack
            {
                let storage = self.storage.clone();
                std::thread::spawn(move || {
                    let _ = storage.discard(&handle);
                });
            }
            return None;
        };
        match ack {
            Ack::Source {
                subtask, offset, ..
            } => flight.offsets[subtask as usize] = Some(offset),
            Ack::Counter {
                subtask,
                result: Ok(state),
                ..
            } => flight.counters[subtask as usize] = Some(state),
            Ack::Counter {
                result: Err(why), ..
            } => {
                let location = in_flight.remove(&id).map(|f| f.location);
                return self.fail(coordinator, id, FailureReason::Declined(why), location);
            }
        }
        if flight.offsets.iter().any(Option::is_none) || flight.counters.iter().any(Option::is_none)
        {
            return None;
        }
        let flight = in_flight.remove(&id).expect("present");
        let metadata = CheckpointMetadata {
            checkpoint_id: id,
            kind: if flight.savepoint {
                SnapshotKind::Savepoint
            } else {
                SnapshotKind::Checkpoint
            },
            job_id: self.config.job.id.clone(),
            job_kind: keyed_counter::JOB_KIND.to_string(),
            config_fingerprint: keyed_counter::fingerprint(&self.config.job),
            job_settings: keyed_counter::describe(&self.config.job),
            triggered_at_ms: flight.triggered_at_ms,
            completed_at_ms: epoch_ms(),
            tasks: flight
                .counters
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let (handle, records) = c.as_ref().expect("all acknowledged");
                    TaskState {
                        operator: "counter".to_string(),
                        subtask: i as u32,
                        handles: vec![HandleRecord::from(handle)],
                        records: *records,
                    }
                })
                .collect(),
            source_offsets: flight
                .offsets
                .iter()
                .map(|o| o.expect("all acknowledged"))
                .collect(),
        };
        let size = metadata.state_size();
        let bytes = metadata.encode();
        let location = flight.location.clone();
        let remaining = self
            .config
            .checkpointing
            .timeout
            .saturating_sub(flight.started.elapsed());
        // A commit abandoned at its deadline may still complete later: then the checkpoint,
        // already counted as failed, is disposed; if it fails, its location is cleaned. Nothing
        // touches the location while the commit may still be running.
        let storage = self.storage.clone();
        let undo_location = flight.location.clone();
        let undo: Undo<CompletedCheckpoint> = Box::new(move |late| match late {
            Ok(done) => {
                tracing::warn!(pointer = %done.pointer, "a commit abandoned at its deadline completed late; disposing it");
                let _ = storage.dispose(&done.pointer);
            }
            Err(_) => {
                let _ = undo_location.dispose_on_failure();
            }
        });
        // The commit gets at least a second (or the whole timeout, if shorter) of its own.
        let deadline = remaining.max(Duration::from_secs(1).min(self.config.checkpointing.timeout));
        let committed: Result<CompletedCheckpoint, StorageError> = bounded_call(
            "commit",
            deadline,
            &self.opts.cancel,
            Some(undo),
            move || location.commit(&bytes),
        );
        match committed {
            Ok(done) => {
                let took = flight.started.elapsed().as_millis() as u64;
                let subsumed =
                    coordinator.on_committed(id, done.pointer.clone(), self.started.elapsed());
                self.progress.completed += 1;
                if !flight.savepoint {
                    self.last_completed = Some(done.pointer.clone());
                } else if self.stopping_with_savepoint {
                    tracing::info!(pointer = %done.pointer, "savepoint taken; stopping");
                    self.final_savepoint = Some(done.pointer.clone());
                    (self.opts.on_checkpoint)(id, &done.pointer, took, size);
                    return Some(AttemptEnd::Cancelled);
                }
                self.progress.last_checkpoint = Some((id, took, size));
                (self.opts.on_checkpoint)(id, &done.pointer, took, size);
                let pointers = subsumed.into_iter().map(|r| r.pointer).collect();
                self.discard_in_background(pointers, Vec::new());
                None
            }
            // An abandoned commit cleans up after itself (above); a failed one is cleaned now.
            Err(e) => {
                let location = (!matches!(e, StorageError::Timeout(_))).then_some(flight.location);
                self.fail(
                    coordinator,
                    id,
                    FailureReason::Finalize(e.to_string()),
                    location,
                )
            }
        }
    }
}
