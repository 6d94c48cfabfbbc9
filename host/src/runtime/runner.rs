//! The coordinator loop: it runs a job's attempts and drives the [`Coordinator`] against the
//! storage plugin.
//!
//! Each *attempt* starts the tasks from a state (fresh, or restored from a checkpoint). The loop
//! then triggers checkpoints (beginning a location, handing barriers to the sources, and to
//! keyed tasks whose inputs have all ended), collects acknowledgements, commits the metadata when
//! every task has acknowledged, tells the tasks the checkpoint is complete (their sinks commit),
//! expires checkpoints that take too long, discards subsumed ones in the background, and fails
//! the job over (restart from the latest completed checkpoint, under `[restart]`) when a task
//! fails or checkpoint failures exceed what is tolerated. When the input ends, a job with a sink
//! takes a final checkpoint and waits for its commit before it finishes.
//!
//! Every plugin call made here goes through [`PluginCalls`], with a deadline.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use cairn_plugin_api::{CheckpointStorage, JobStorage, StorageError};
use crossbeam_channel::{bounded, never, unbounded, Receiver, Sender};
use serde_json::Value;

use super::{
    api::{Job, JobEnd, OffsetOf},
    calls::{Location, PluginCalls},
    exchange::{Barrier, Control, Gate},
    memory,
    report::{
        CheckpointReport, Command, Progress, RestoreFrom, RetainedView, RunError, RunOptions,
        Status, StopWhen, Summary,
    },
    restore::{context, fingerprint_of, load_metadata, start_state, LoadError, StartState},
    state::KeyedState,
    tasks::{
        offset_from, Final, KeyedTask, Shared, SinkRunner, SourceTask, TaskEvent, TaskSnapshot,
        CHANNEL_BYTES,
    },
};
use crate::{
    config::{Config, ExternalizedRetention},
    coordinator::{Action, Coordinator, FailureReason, Policy, Retained, Verdict},
    metadata::{CheckpointMetadata, HandleRecord, SnapshotKind, TaskState, KEYED_OPERATOR},
};

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A savepoint asked for, waiting for its trigger.
struct SavepointRequest {
    target: Option<String>,
    reply: Option<Sender<Result<String, String>>>,
    then_stop: bool,
}

/// A checkpoint in flight.
struct InFlight {
    barrier: Arc<Barrier>,
    started: Instant,
    triggered: Duration,
    triggered_at_ms: u64,
    offsets: Vec<Option<Value>>,
    tasks: Vec<Option<TaskSnapshot>>,
    request: Option<SavepointRequest>,
}

/// How an attempt ended.
enum AttemptEnd<J: Job> {
    Finished {
        states: Vec<KeyedState<J::Key, J::State>>,
        offsets: Vec<OffsetOf<J>>,
    },
    Cancelled,
    Failover(String),
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

/// Run `job` with the checkpointing, restart and retention settings of `config`, checkpointing
/// through `storage`. See the module docs; `opts` says where to restore from, when to stop,
/// and what to call on progress, checkpoints, failovers and at the end.
pub fn run_job<J: Job>(
    job: J,
    config: &Config,
    storage: Arc<dyn CheckpointStorage>,
    opts: &RunOptions<'_>,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    if let Some(bytes) = job.state_estimate() {
        memory::check_fits(bytes, &memory::Machine::current()).map_err(RunError::Job)?;
    }
    let job_id = config.job.id.clone();
    let calls = PluginCalls::new(storage, config.checkpointing.timeout, opts.cancel.clone());
    let location = calls.info()?.location;
    let job_storage = calls.job(&job_id)?;
    let existing = calls.list_completed(&job_storage, &job_id)?;
    let next_id = existing
        .iter()
        .map(|c| c.checkpoint_id)
        .max()
        .map_or(1, |m| m.saturating_add(1));
    let retained: Vec<Retained> = existing
        .iter()
        .map(|c| Retained {
            id: c.checkpoint_id,
            pointer: c.pointer.clone(),
        })
        .collect();
    let initial: Option<(u64, String)> = match &opts.from {
        None => None,
        Some(RestoreFrom::Latest) => match existing.last() {
            Some(c) => Some((c.checkpoint_id, c.pointer.clone())),
            None => {
                return Err(RunError::Restore(format!(
                    "--from latest: job '{job_id}' has no completed checkpoint in {location}"
                )))
            }
        },
        Some(RestoreFrom::Pointer(p)) => Some((0, p.clone())),
    };
    let settings = job.settings();
    let mut runner = Runner {
        config,
        fingerprint: fingerprint_of(job.kind(), &settings),
        settings,
        job: Arc::new(job),
        calls,
        job_storage,
        location,
        opts,
        started,
        progress: Progress::default(),
        background: Vec::new(),
        injected_records: false,
        injected_checkpoints: false,
        last_completed: None,
        deferred: Vec::new(),
        stopping_with_savepoint: false,
        final_savepoint: None,
        savepoint_queue: VecDeque::new(),
        records_counted: 0,
    };
    let p = config.job.parallelism as usize;
    let mut state = match &initial {
        Some((_, pointer)) => runner.restore(pointer, false)?,
        None => StartState::fresh(p),
    };
    let restored_from = initial.as_ref().map(|(_, p)| p.clone());
    if let Some(pointer) = &restored_from {
        tracing::info!(pointer = %pointer, "restored from checkpoint");
    }
    let mut coordinator = Coordinator::new(
        Policy::from_config(&config.checkpointing),
        next_id,
        retained,
    );
    let mut attempt = 0u32;
    let (end, attempts) = loop {
        attempt += 1;
        runner.progress.attempt = attempt;
        match runner.attempt(&mut coordinator, state) {
            AttemptEnd::Failover(reason) => {
                tracing::warn!(attempt, "job failed: {reason}");
                runner
                    .opts
                    .counters
                    .failovers
                    .fetch_add(1, Ordering::Relaxed);
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
                (opts.on_failover)(attempt, &reason, from.as_ref().map(|(_, p)| p.as_str()));
                if runner.sleep_or_cancel(config.restart.delay) {
                    break (None, attempt);
                }
                state = match &from {
                    Some((_, pointer)) => match runner.restore(pointer, true) {
                        Ok(s) => s,
                        Err(e) => {
                            runner.finish_background();
                            runner.on_terminal(&coordinator, Terminal::Failed);
                            return Err(e);
                        }
                    },
                    None => StartState::fresh(p),
                };
            }
            AttemptEnd::Cancelled => break (None, attempt),
            AttemptEnd::Finished { states, offsets } => break (Some((states, offsets)), attempt),
        }
    };
    let terminal = if end.is_some() {
        Terminal::Finished
    } else {
        Terminal::Cancelled
    };
    let keeps = keeps_checkpoints(config.checkpointing.externalized_retention, terminal);
    let details = match &end {
        Some((states, offsets)) => runner.job.summarize(&JobEnd {
            states,
            offsets,
        }),
        None => serde_json::Map::new(),
    };
    let counters = &opts.counters;
    let first = counters.first_record_us.load(Ordering::Relaxed);
    let summary = Summary {
        job_id: config.job.id.clone(),
        job_kind: runner.job.kind().to_string(),
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
        records_counted: runner.records_counted,
        records_processed: counters.records.load(Ordering::Relaxed),
        first_record_ms: (first != u64::MAX).then(|| first as f64 / 1000.0),
        details,
    };
    // Report first, then wait for the discards and discard: a crash (or a plugin hanging) while
    // discarding never loses the report.
    (opts.on_summary)(&summary);
    runner.finish_background();
    runner.on_terminal(&coordinator, terminal);
    Ok(summary)
}

struct Runner<'a, J: Job> {
    config: &'a Config,
    job: Arc<J>,
    settings: String,
    fingerprint: String,
    calls: Arc<PluginCalls>,
    job_storage: Arc<dyn JobStorage>,
    /// Where the storage keeps checkpoints, for messages.
    location: String,
    opts: &'a RunOptions<'a>,
    started: Instant,
    progress: Progress,
    background: Vec<JoinHandle<()>>,
    injected_records: bool,
    injected_checkpoints: bool,
    /// The newest checkpoint completed in this run: id and pointer.
    last_completed: Option<(u64, String)>,
    /// Locations to clean once the attempt's tasks have stopped.
    deferred: Vec<Location>,
    /// A stop-with-savepoint is under way.
    stopping_with_savepoint: bool,
    /// Its savepoint, once taken.
    final_savepoint: Option<String>,
    savepoint_queue: VecDeque<SavepointRequest>,
    /// Records the last attempt's state reflects.
    records_counted: u64,
}

/// The channels and handles of a running attempt.
struct Attempt<J: Job> {
    gates: Vec<Arc<Gate>>,
    barriers: Vec<Sender<Arc<Barrier>>>,
    events: Receiver<TaskEvent>,
    finals: Receiver<Final<J>>,
    has_sink: bool,
    /// Which keyed tasks' inputs have all ended, and each ended source's final offset.
    input_ended: Vec<bool>,
    source_ended: Vec<Option<Value>>,
    /// Checkpoints from this id on cover the whole input (set once it ended).
    final_from: Option<u64>,
    /// The final checkpoint whose commits are awaited, and which sinks committed it.
    final_commit: Option<(u64, Vec<bool>)>,
    completed: u64,
}

impl<J: Job> Runner<'_, J> {
    fn should_stop(&self) -> bool {
        self.opts.cancel.load(Ordering::Relaxed)
            || matches!(self.opts.stop_when, StopWhen::After(d) if self.started.elapsed() >= d)
    }

    /// Sleep `d`, waking early to stop. True if the run is to stop.
    fn sleep_or_cancel(&self, d: Duration) -> bool {
        let until = Instant::now().checked_add(d);
        while until.is_none_or(|u| Instant::now() < u) {
            if self.should_stop() {
                return true;
            }
            let left = until.map_or(Duration::from_millis(20), |u| {
                u.saturating_duration_since(Instant::now())
            });
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
        self.should_stop()
    }

    /// The state to start from `pointer`. On a failover, a checkpoint of this run that is gone
    /// from the storage is explained (the job's folder disappeared) rather than reported as a
    /// bare "not found".
    fn restore(&self, pointer: &str, failover: bool) -> Result<StartState<J>, RunError> {
        let p = self.config.job.parallelism;
        let restored = match load_metadata(&self.calls, self.job.as_ref(), &self.config.job.id, pointer) {
            Ok(meta) => start_state::<J>(&self.calls, p, pointer, meta).map_err(|e| (false, e)),
            Err(LoadError::Resolve(err)) => {
                let not_found = matches!(err, StorageError::NotFound(_));
                Err((not_found, LoadError::Resolve(err).into_run_error(pointer)))
            }
            Err(refused) => Err((false, refused.into_run_error(pointer))),
        };
        match restored {
            Ok(s) => Ok(s),
            Err((not_found, e)) => {
                let ours = self.last_completed.as_ref().is_some_and(|(_, p)| p == pointer);
                if failover && (not_found || (ours && !self.still_listed(pointer))) {
                    Err(RunError::Restore(self.vanished(pointer, &e)))
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Whether the checkpoint at `pointer` is still among the job's completed checkpoints.
    fn still_listed(&self, pointer: &str) -> bool {
        self.calls
            .list_completed(&self.job_storage, &self.config.job.id)
            .map(|all| all.iter().any(|c| c.pointer == pointer))
            .unwrap_or(false)
    }

    fn vanished(&self, pointer: &str, e: &RunError) -> String {
        let id = self
            .last_completed
            .as_ref()
            .filter(|(_, p)| p == pointer)
            .map_or(String::new(), |(id, _)| format!("checkpoint {id} "));
        let listing = match self
            .calls
            .list_completed(&self.job_storage, &self.config.job.id)
        {
            Ok(all) if all.is_empty() => format!(
                "no completed checkpoint of job '{}' is listed there now",
                self.config.job.id
            ),
            Ok(all) => format!(
                "the storage lists only checkpoints {:?} now",
                all.iter().map(|c| c.checkpoint_id).collect::<Vec<_>>()
            ),
            Err(le) => format!("listing the job's checkpoints fails too: {le}"),
        };
        let detail = e.to_string();
        let detail = detail.strip_prefix("cannot restore: ").unwrap_or(&detail);
        format!(
            "the job cannot restart from {id}{pointer}: the job's checkpoint folder in {} \
             disappeared while the job was running (removed, renamed or replaced: {listing}; \
             {detail})",
            self.location
        )
    }

    /// Discard in the background, in parallel.
    fn discard_in_background(&mut self, pointers: Vec<String>, failed: Vec<Location>) {
        if pointers.is_empty() && failed.is_empty() {
            return;
        }
        let calls = self.calls.clone();
        let handle = std::thread::spawn(move || {
            std::thread::scope(|s| {
                for pointer in &pointers {
                    let calls = &calls;
                    s.spawn(move || {
                        if let Err(e) = calls.dispose(pointer) {
                            tracing::warn!(pointer = %pointer, "discarding a checkpoint failed: {e}");
                        }
                    });
                }
                for location in &failed {
                    let calls = &calls;
                    s.spawn(move || {
                        if let Err(e) = calls.dispose_on_failure(location) {
                            tracing::warn!("cleaning a failed checkpoint failed: {e}");
                        }
                    });
                }
            });
        });
        self.background.push(handle);
        self.background.retain(|h| !h.is_finished());
    }

    /// Wait for background discards, so they are not cut off by the exit. Each of their plugin
    /// calls has a deadline, so this ends.
    fn finish_background(&mut self) {
        for h in self.background.drain(..) {
            let _ = h.join();
        }
    }

    /// Apply `externalized-retention` when the job ends. The newest checkpoint goes last, after
    /// the others are gone: a crash in between leaves the newest, so a resume never goes back
    /// to an older checkpoint (and never repeats output its sinks committed).
    fn on_terminal(&mut self, coordinator: &Coordinator, terminal: Terminal) {
        if keeps_checkpoints(self.config.checkpointing.externalized_retention, terminal) {
            return;
        }
        let mut pointers: Vec<String> = coordinator.retained().map(|r| r.pointer.clone()).collect();
        let Some(newest) = pointers.pop() else {
            return;
        };
        tracing::info!(
            count = pointers.len() + 1,
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
        self.discard_in_background(vec![newest], Vec::new());
        self.finish_background();
    }

    fn attempt(&mut self, coordinator: &mut Coordinator, state: StartState<J>) -> AttemptEnd<J> {
        let config = self.config;
        let p = config.job.parallelism as usize;
        let counters = self.opts.counters.clone();
        counters.state_entries.store(0, Ordering::Relaxed);
        let (event_tx, event_rx) = unbounded();
        let (final_tx, final_rx) = unbounded();
        let shared = Shared {
            stop: Arc::new(AtomicBool::new(false)),
            events: event_tx,
            counters: counters.clone(),
            run_started: self.started,
        };
        let records_at_start: u64 = state.records.iter().sum();
        let processed_before = counters.records.load(Ordering::Relaxed);
        let gates: Vec<Arc<Gate>> = (0..p).map(|_| Gate::new(p, CHANNEL_BYTES)).collect();
        let StartState {
            checkpoint_id,
            offsets,
            states,
            sinks,
            records,
        } = state;
        // Every task thread holds a clone of `done`; the receiver disconnects when all ended.
        let (done_tx, done_rx) = bounded::<()>(0);
        let mut barrier_senders = Vec::new();
        let mut spawned: Result<(), String> = Ok(());
        let mut has_sink = false;
        for (s, offset) in offsets.into_iter().enumerate() {
            let ctx = context(s, p as u32);
            let source = match self.job.source(&ctx, offset) {
                Ok(source) => source,
                Err(e) => {
                    spawned = Err(format!("creating source {s}: {e}"));
                    break;
                }
            };
            let (btx, brx) = unbounded();
            barrier_senders.push(btx);
            let task = SourceTask {
                job: self.job.clone(),
                ctx,
                source,
                rate: config.job.rate.map(|r| r as f64 / p as f64),
                barriers: brx,
                outputs: gates.clone(),
                shared: shared.clone(),
            };
            let done = done_tx.clone();
            if let Err(e) = std::thread::Builder::new()
                .name(format!("source-{s}"))
                .spawn(move || {
                    task.run();
                    drop(done);
                })
            {
                spawned = Err(format!("cannot start a source thread: {e}"));
                break;
            }
        }
        if spawned.is_ok() {
            for (c, ((keyed, sink_state), records)) in
                states.into_iter().zip(sinks).zip(records).enumerate()
            {
                let ctx = context(c, p as u32);
                let sink = match self.job.sink(&ctx) {
                    Ok(None) => None,
                    Ok(Some(sink)) => match SinkRunner::start(sink, sink_state) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            spawned = Err(format!("starting the sink of keyed task {c}: {e}"));
                            break;
                        }
                    },
                    Err(e) => {
                        spawned = Err(format!("creating the sink of keyed task {c}: {e}"));
                        break;
                    }
                };
                has_sink |= sink.is_some();
                let fail_after = if c == 0 && !self.injected_records {
                    config.job.fail_after_records
                } else {
                    None
                };
                let task = KeyedTask {
                    job: self.job.clone(),
                    ctx,
                    gate: gates[c].clone(),
                    inputs: p,
                    state: keyed,
                    sink,
                    records,
                    last_barrier: checkpoint_id,
                    fail_after,
                    prefill: self.job.prefill(&ctx),
                    finals: final_tx.clone(),
                    shared: shared.clone(),
                };
                let done = done_tx.clone();
                if let Err(e) = std::thread::Builder::new()
                    .name(format!("keyed-{c}"))
                    .spawn(move || {
                        task.run();
                        drop(done);
                    })
                {
                    spawned = Err(format!("cannot start a keyed task thread: {e}"));
                    break;
                }
            }
        }
        drop(done_tx);
        let end = match spawned {
            Err(e) => AttemptEnd::Failover(e),
            Ok(()) => {
                let mut a = Attempt {
                    gates: gates.clone(),
                    barriers: barrier_senders,
                    events: event_rx,
                    finals: final_rx,
                    has_sink,
                    input_ended: vec![false; p],
                    source_ended: vec![None; p],
                    final_from: None,
                    final_commit: None,
                    completed: 0,
                };
                let end = self.drive(coordinator, &mut a);
                drop(a);
                end
            }
        };
        if let AttemptEnd::Failover(_) = &end {
            self.injected_records = true;
        }
        // Stop and wait (bounded) for the tasks; a task stuck in a plugin call is abandoned.
        shared.stop.store(true, Ordering::Relaxed);
        for g in &gates {
            g.close();
        }
        if let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
            done_rx.recv_timeout(Duration::from_secs(5))
        {
            tracing::warn!("a task did not stop within 5s (stuck in a plugin call?); abandoning it");
        }
        self.records_counted =
            records_at_start + (counters.records.load(Ordering::Relaxed) - processed_before);
        let deferred = std::mem::take(&mut self.deferred);
        self.discard_in_background(Vec::new(), deferred);
        end
    }

    fn drive(&mut self, coordinator: &mut Coordinator, a: &mut Attempt<J>) -> AttemptEnd<J> {
        let p = self.config.job.parallelism as usize;
        let timeout = self.config.checkpointing.timeout;
        let mut in_flight: BTreeMap<u64, InFlight> = BTreeMap::new();
        let mut last_progress = Instant::now();
        let mut last_records = self.opts.counters.records.load(Ordering::Relaxed);
        let never_commands = never();
        let commands = self.opts.commands.as_ref().unwrap_or(&never_commands);
        let end = loop {
            if self.should_stop() {
                break AttemptEnd::Cancelled;
            }
            if !self.stopping_with_savepoint
                && self.opts.stop_with_savepoint.load(Ordering::Relaxed)
            {
                self.stop_with_savepoint(coordinator);
            }
            let now = self.started.elapsed();
            let mut outcome = None;
            for action in coordinator.poll(now) {
                outcome = match action {
                    Action::Trigger { id, savepoint } => {
                        self.trigger(coordinator, a, &mut in_flight, id, savepoint, timeout)
                    }
                    Action::Expire { id } => {
                        // Tasks may still write into an expired location: clean it after they
                        // stop, at the end of the attempt.
                        let request = in_flight.remove(&id).and_then(|f| {
                            self.deferred.push(f.barrier.location.clone());
                            f.request
                        });
                        tracing::warn!(
                            id,
                            "checkpoint expired after {}",
                            humantime::format_duration(timeout)
                        );
                        self.fail(coordinator, id, FailureReason::Expired, None, request)
                    }
                };
                if outcome.is_some() {
                    break;
                }
            }
            if let Some(end) = outcome {
                break end;
            }
            self.opts
                .counters
                .checkpoints_in_flight
                .store(in_flight.len() as u64, Ordering::Relaxed);
            let wait = coordinator
                .next_wakeup(now)
                .map_or(Duration::from_millis(250), |at| at.saturating_sub(now))
                .min(Duration::from_millis(250));
            let step = crossbeam_channel::select! {
                recv(a.events) -> event => match event {
                    Ok(event) => self.on_event(coordinator, a, &mut in_flight, event),
                    Err(_) => None,
                },
                recv(commands) -> command => match command {
                    Ok(command) => self.on_command(coordinator, command),
                    Err(_) => None,
                },
                default(wait) => None,
            };
            if let Some(end) = step {
                break end;
            }
            if last_progress.elapsed() >= Duration::from_millis(250) {
                let records = self.opts.counters.records.load(Ordering::Relaxed);
                let secs = last_progress.elapsed().as_secs_f64();
                self.progress.records = records;
                self.progress.records_per_sec = records.saturating_sub(last_records) as f64 / secs;
                self.progress.failures = coordinator.total_failures();
                last_records = records;
                last_progress = Instant::now();
                (self.opts.on_progress)(&self.progress);
            }
        };
        // Whatever was in flight will never complete in this attempt; its locations are cleaned
        // once the tasks have stopped writing into them, and savepoint requests are answered.
        for f in in_flight.into_values() {
            self.deferred.push(f.barrier.location.clone());
            if let Some(reply) = f.request.and_then(|r| r.reply) {
                let _ = reply.send(Err("the job stopped or failed over first".to_string()));
            }
        }
        let _ = p;
        coordinator.abort_all();
        end
    }

    fn stop_with_savepoint(&mut self, coordinator: &mut Coordinator) {
        tracing::info!("stop requested: taking a savepoint first");
        self.stopping_with_savepoint = true;
        self.savepoint_queue.push_back(SavepointRequest {
            target: None,
            reply: None,
            then_stop: true,
        });
        coordinator.request_savepoint();
    }

    fn on_command(&mut self, coordinator: &mut Coordinator, command: Command) -> Option<AttemptEnd<J>> {
        match command {
            Command::Cancel => {
                self.opts.cancel.store(true, Ordering::Relaxed);
                Some(AttemptEnd::Cancelled)
            }
            Command::Savepoint { target, reply } => {
                self.savepoint_queue.push_back(SavepointRequest {
                    target,
                    reply: Some(reply),
                    then_stop: false,
                });
                coordinator.request_savepoint();
                None
            }
            Command::StopWithSavepoint => {
                if !self.stopping_with_savepoint {
                    self.stop_with_savepoint(coordinator);
                }
                None
            }
        }
    }

    fn trigger(
        &mut self,
        coordinator: &mut Coordinator,
        a: &mut Attempt<J>,
        in_flight: &mut BTreeMap<u64, InFlight>,
        id: u64,
        savepoint: bool,
        timeout: Duration,
    ) -> Option<AttemptEnd<J>> {
        let request = if savepoint {
            self.savepoint_queue.pop_front()
        } else {
            None
        };
        let target = savepoint.then(|| {
            request
                .as_ref()
                .and_then(|r| r.target.clone())
                .or_else(|| {
                    self.config
                        .savepoints
                        .dir
                        .as_ref()
                        .map(|d| d.to_string_lossy().into_owned())
                })
        });
        let triggered = self.started.elapsed();
        match self.calls.begin(&self.job_storage, id, target, timeout) {
            Ok(location) => {
                let barrier = Arc::new(Barrier {
                    id,
                    location,
                    savepoint,
                });
                for tx in &a.barriers {
                    let _ = tx.send(barrier.clone());
                }
                for (c, ended) in a.input_ended.iter().enumerate() {
                    if *ended {
                        a.gates[c].control(Control::Barrier(barrier.clone()));
                    }
                }
                let p = self.config.job.parallelism as usize;
                in_flight.insert(
                    id,
                    InFlight {
                        barrier,
                        started: Instant::now(),
                        triggered,
                        triggered_at_ms: epoch_ms(),
                        offsets: vec![None; p],
                        tasks: (0..p).map(|_| None).collect(),
                        request,
                    },
                );
                None
            }
            Err(e) => self.fail(
                coordinator,
                id,
                FailureReason::Declined(e.to_string()),
                None,
                request,
            ),
        }
    }

    /// Count a failure and clean its location. `Some` if the job must fail over or stop.
    fn fail(
        &mut self,
        coordinator: &mut Coordinator,
        id: u64,
        reason: FailureReason,
        location: Option<Location>,
        request: Option<SavepointRequest>,
    ) -> Option<AttemptEnd<J>> {
        let then_stop = request.as_ref().is_some_and(|r| r.then_stop);
        if let Some(reply) = request.and_then(|r| r.reply) {
            let _ = reply.send(Err(format!("savepoint {id} failed: {reason}")));
        }
        self.discard_in_background(Vec::new(), location.into_iter().collect());
        if then_stop {
            tracing::error!(
                id,
                "the savepoint before stopping failed ({reason}); stopping without it"
            );
            let _ = coordinator.on_failed(id, &reason);
            return Some(AttemptEnd::Cancelled);
        }
        tracing::warn!(id, "checkpoint failed: {reason}");
        let verdict = coordinator.on_failed(id, &reason);
        self.progress.failures = coordinator.total_failures();
        self.opts
            .counters
            .checkpoints_failed
            .store(coordinator.total_failures(), Ordering::Relaxed);
        (verdict == Verdict::FailJob).then(|| {
            AttemptEnd::Failover(format!(
                "checkpoint {id} {reason}, and checkpoint failures in a row exceed \
                 checkpointing.tolerable-failures"
            ))
        })
    }

    fn on_event(
        &mut self,
        coordinator: &mut Coordinator,
        a: &mut Attempt<J>,
        in_flight: &mut BTreeMap<u64, InFlight>,
        event: TaskEvent,
    ) -> Option<AttemptEnd<J>> {
        match event {
            TaskEvent::Failed { task, error } => Some(AttemptEnd::Failover(format!("{task}: {error}"))),
            TaskEvent::SourceEnded { subtask, offset } => {
                a.source_ended[subtask as usize] = Some(offset);
                self.on_input_progress(coordinator, a)
            }
            TaskEvent::InputEnded { subtask } => {
                let c = subtask as usize;
                a.input_ended[c] = true;
                // Barriers in flight that this task has not taken can no longer reach it
                // through its inputs.
                for f in in_flight.values() {
                    if f.tasks[c].is_none() {
                        a.gates[c].control(Control::Barrier(f.barrier.clone()));
                    }
                }
                self.on_input_progress(coordinator, a)
            }
            TaskEvent::Committed { id, subtask } => {
                if let Some((final_id, committed)) = &mut a.final_commit {
                    if id >= *final_id {
                        committed[subtask as usize] = true;
                        if committed.iter().all(|&c| c) {
                            return Some(self.finish(a));
                        }
                    }
                }
                None
            }
            TaskEvent::SourceAck {
                id,
                subtask,
                offset,
            } => {
                let flight = in_flight.get_mut(&id)?;
                flight.offsets[subtask as usize] = Some(offset);
                self.maybe_complete(coordinator, a, in_flight, id)
            }
            TaskEvent::TaskAck {
                id,
                subtask,
                result,
            } => {
                let Some(flight) = in_flight.get_mut(&id) else {
                    // A late acknowledgement of an expired or aborted checkpoint: drop its state.
                    if let Ok(snapshot) = result {
                        let calls = self.calls.clone();
                        std::thread::spawn(move || {
                            for h in snapshot.handles {
                                let _ = calls.discard(h);
                            }
                        });
                    }
                    return None;
                };
                match result {
                    Ok(snapshot) => {
                        flight.tasks[subtask as usize] = Some(snapshot);
                        self.maybe_complete(coordinator, a, in_flight, id)
                    }
                    Err(why) => {
                        let f = in_flight.remove(&id).expect("present");
                        // The task may still be writing its stream: clean after the attempt.
                        self.deferred.push(f.barrier.location.clone());
                        self.fail(coordinator, id, FailureReason::Declined(why), None, f.request)
                    }
                }
            }
        }
    }

    /// Once the whole input is processed: a job with a sink asks for its final checkpoint; one
    /// without finishes at once.
    fn on_input_progress(
        &mut self,
        coordinator: &mut Coordinator,
        a: &mut Attempt<J>,
    ) -> Option<AttemptEnd<J>> {
        let done = a.input_ended.iter().all(|&e| e) && a.source_ended.iter().all(Option::is_some);
        if !done || a.final_from.is_some() {
            return None;
        }
        if !a.has_sink {
            return Some(self.finish(a));
        }
        tracing::info!("the input ended: taking the final checkpoint");
        a.final_from = Some(coordinator.next_id());
        coordinator.request_checkpoint();
        None
    }

    /// Ask every keyed task for its final state and wait for it.
    fn finish(&mut self, a: &mut Attempt<J>) -> AttemptEnd<J> {
        let p = self.config.job.parallelism as usize;
        for g in &a.gates {
            g.control(Control::Finish);
        }
        let mut states: Vec<Option<KeyedState<J::Key, J::State>>> = (0..p).map(|_| None).collect();
        let deadline = Duration::from_secs(60);
        while states.iter().any(Option::is_none) {
            crossbeam_channel::select! {
                recv(a.finals) -> f => match f {
                    Ok(f) => states[f.subtask as usize] = Some(f.state),
                    Err(_) => return AttemptEnd::Failover("a keyed task ended without its final state".into()),
                },
                recv(a.events) -> event => {
                    if let Ok(TaskEvent::Failed { task, error }) = event {
                        return AttemptEnd::Failover(format!("{task}: {error}"));
                    }
                },
                default(deadline) => return AttemptEnd::Failover(
                    "the keyed tasks did not hand back their final state within 60s".into()),
            }
        }
        let offsets = a
            .source_ended
            .iter()
            .map(|o| offset_from::<J>(o.as_ref().expect("every source ended")))
            .collect::<Result<Vec<_>, _>>();
        match offsets {
            Ok(offsets) => AttemptEnd::Finished {
                states: states.into_iter().map(|s| s.expect("all")).collect(),
                offsets,
            },
            Err(e) => AttemptEnd::Failover(e),
        }
    }

    /// Commit checkpoint `id` if every task has acknowledged it.
    fn maybe_complete(
        &mut self,
        coordinator: &mut Coordinator,
        a: &mut Attempt<J>,
        in_flight: &mut BTreeMap<u64, InFlight>,
        id: u64,
    ) -> Option<AttemptEnd<J>> {
        let flight = in_flight.get(&id)?;
        if flight.offsets.iter().any(Option::is_none) || flight.tasks.iter().any(Option::is_none)
        {
            return None;
        }
        let flight = in_flight.remove(&id).expect("present");
        let savepoint = flight.barrier.savepoint;
        let tasks: Vec<TaskSnapshot> = flight.tasks.into_iter().map(|t| t.expect("all")).collect();
        let metadata = CheckpointMetadata {
            checkpoint_id: id,
            kind: if savepoint {
                SnapshotKind::Savepoint
            } else {
                SnapshotKind::Checkpoint
            },
            job_id: self.config.job.id.clone(),
            job_kind: self.job.kind().to_string(),
            config_fingerprint: self.fingerprint.clone(),
            job_settings: self.settings.clone(),
            triggered_at_ms: flight.triggered_at_ms,
            completed_at_ms: epoch_ms(),
            tasks: tasks
                .iter()
                .enumerate()
                .map(|(i, t)| TaskState {
                    operator: KEYED_OPERATOR.to_string(),
                    subtask: i as u32,
                    handles: t.handles.iter().map(HandleRecord::from).collect(),
                    records: t.records,
                    sink: t.sink.clone(),
                    epoch: t.epoch,
                    entries: t.entries,
                    pages: t.pages,
                    changed_pages: t.changed_pages,
                })
                .collect(),
            source_offsets: flight
                .offsets
                .into_iter()
                .map(|o| o.expect("all acknowledged"))
                .collect(),
        };
        let size = metadata.state_size();
        let bytes = metadata.encode();
        let timeout = self.config.checkpointing.timeout;
        let remaining = timeout.saturating_sub(flight.started.elapsed());
        // The commit gets at least a second (or the whole timeout, if shorter) of its own.
        let deadline = remaining.max(Duration::from_secs(1).min(timeout));
        match self
            .calls
            .commit(&flight.barrier.location, id, bytes, deadline)
        {
            Ok(done) => {
                let subsumed =
                    coordinator.on_committed(id, done.pointer.clone(), self.started.elapsed());
                let report = CheckpointReport {
                    id,
                    pointer: done.pointer.clone(),
                    savepoint,
                    triggered: flight.triggered,
                    completed: self.started.elapsed(),
                    state_bytes: size,
                    pages: tasks.iter().map(|t| t.pages).sum(),
                    changed_pages: tasks.iter().map(|t| t.changed_pages).sum(),
                };
                let took = u64::try_from(report.duration().as_millis()).unwrap_or(u64::MAX);
                self.progress.completed += 1;
                let counters = &self.opts.counters;
                counters
                    .checkpoints_completed
                    .fetch_add(1, Ordering::Relaxed);
                counters.last_checkpoint_us.store(
                    u64::try_from(report.duration().as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                counters.last_checkpoint_bytes.store(size, Ordering::Relaxed);
                (self.opts.on_checkpoint)(&report);
                // The checkpoint is durable: now the sinks may commit what it covers.
                for g in &a.gates {
                    g.control(Control::Complete(id));
                }
                if let Some(request) = flight.request {
                    if let Some(reply) = request.reply {
                        let _ = reply.send(Ok(done.pointer.clone()));
                    }
                    if request.then_stop {
                        tracing::info!(pointer = %done.pointer, "savepoint taken; stopping");
                        self.final_savepoint = Some(done.pointer.clone());
                        return Some(AttemptEnd::Cancelled);
                    }
                }
                if !savepoint {
                    self.last_completed = Some((id, done.pointer.clone()));
                    self.progress.last_checkpoint = Some((id, took, size));
                    a.completed += 1;
                    if a.final_from.is_some_and(|f| id >= f) && a.final_commit.is_none() {
                        a.final_commit = Some((id, vec![false; a.gates.len()]));
                    }
                    if let Some(n) = self.config.job.fail_after_checkpoints {
                        if !self.injected_checkpoints && a.completed >= n {
                            self.injected_checkpoints = true;
                            a.gates[0].control(Control::Fail(format!(
                                "injected failure in keyed task 0 after {n} completed \
                                 checkpoint(s) (job.fail-after-checkpoints)"
                            )));
                        }
                    }
                }
                let pointers = subsumed.into_iter().map(|r| r.pointer).collect();
                self.discard_in_background(pointers, Vec::new());
                None
            }
            // An abandoned commit cleans up after itself; a failed one is cleaned now.
            Err(e) => {
                let location =
                    (!matches!(e, StorageError::Timeout(_))).then(|| flight.barrier.location.clone());
                self.fail(
                    coordinator,
                    id,
                    FailureReason::Finalize(e.to_string()),
                    location,
                    flight.request,
                )
            }
        }
    }
}
