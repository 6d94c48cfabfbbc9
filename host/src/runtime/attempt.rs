//! One attempt of a job and the coordinator loop that drives it: the tasks are started from a
//! start state, then checkpoints are triggered (a location begun, barriers handed to the
//! sources and to keyed tasks whose inputs ended), acknowledged, committed and announced to the
//! sinks; expired; failed (counted, and the job failed over past what is tolerated); the
//! final checkpoint of a finished input is taken before the job finishes; commands are served.
//! The attempt ends by stopping every task and upload, bounded.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use cairn_plugin_api::StorageError;
use crossbeam_channel::{bounded, never, unbounded, Receiver, Sender};
use serde_json::Value;

use super::{
    api::Job,
    calls::Location,
    exchange::{Barrier, BarrierSender, Control, Gate},
    report::{CheckpointReport, Command, CompletedView, IfSavepointFails, PendingView},
    restore::{context, StartState},
    runner::{epoch_ms, AttemptEnd, Runner},
    state::KeyedState,
    tasks::{
        checkpoint_barriers, offset_from, Final, KeyedTask, Shared, SinkRunner, SourceTask,
        TaskEvent, TaskSnapshot, CHANNEL_BYTES,
    },
};
use crate::{
    coordinator::{Action, Coordinator, FailureReason, Verdict},
    metadata::{Barriers, CheckpointMetadata, SnapshotKind},
};

/// Where a savepoint's outcome goes.
pub(super) type SavepointReply = Sender<Result<CheckpointReport, String>>;

/// A savepoint asked for, waiting for its trigger.
pub(super) struct SavepointRequest {
    pub(super) target: Option<String>,
    pub(super) reply: Option<SavepointReply>,
    /// The savepoint of a stop-with-savepoint (whose replies are the runner's
    /// `stop_replies`), and what to do if it fails.
    pub(super) then_stop: Option<IfSavepointFails>,
}

/// A stop-with-savepoint under way.
#[derive(Clone)]
pub(super) struct Stopping {
    target: Option<String>,
    if_it_fails: IfSavepointFails,
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

/// The channels and handles of a running attempt.
struct Attempt<J: Job> {
    gates: Vec<Arc<Gate>>,
    barriers: Vec<BarrierSender>,
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
    pub(super) fn attempt(
        &mut self,
        coordinator: &mut Coordinator,
        state: StartState<J>,
    ) -> AttemptEnd<J> {
        let config = self.config;
        let p = config.job.parallelism as usize;
        let counters = self.opts.counters.clone();
        counters.state_entries.store(0, Ordering::Relaxed);
        let (event_tx, event_rx) = unbounded();
        let (final_tx, final_rx) = unbounded();
        // Every task and upload thread holds a clone of `alive`; `done` disconnects when all
        // of them ended.
        let (alive, done_rx) = bounded::<()>(0);
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Shared {
            stop: stop.clone(),
            events: event_tx,
            counters: counters.clone(),
            run_started: self.started,
            alive,
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
            channel_state,
        } = state;
        // Restored channel state goes first, in order, on its channel: before any new input.
        for (c, channels) in channel_state.into_iter().enumerate() {
            for (ch, buffers) in channels.into_iter().enumerate() {
                for b in buffers {
                    let _ = gates[c].push(ch, Arc::new(b));
                }
            }
        }
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
            barrier_senders.push(BarrierSender::new(btx, gates.clone()));
            let task = SourceTask {
                job: self.job.clone(),
                ctx,
                source,
                rate: config.job.rate.map(|r| r as f64 / p as f64),
                barriers: brx,
                outputs: gates.clone(),
                shared: shared.clone(),
            };
            if let Err(e) = std::thread::Builder::new()
                .name(format!("source-{s}"))
                .spawn(move || task.run())
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
                    operator_rate: config.job.operator_rate.map(|r| r as f64 / p as f64),
                    prefill: self.job.prefill(&ctx),
                    finals: final_tx.clone(),
                    shared: shared.clone(),
                };
                if let Err(e) = std::thread::Builder::new()
                    .name(format!("keyed-{c}"))
                    .spawn(move || task.run())
                {
                    spawned = Err(format!("cannot start a keyed task thread: {e}"));
                    break;
                }
            }
        }
        drop(shared);
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
        // Stop and wait (bounded) for the tasks and uploads; one stuck in a plugin call is
        // abandoned.
        stop.store(true, Ordering::Relaxed);
        for g in &gates {
            g.close();
        }
        if let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
            done_rx.recv_timeout(Duration::from_secs(5))
        {
            tracing::warn!(
                "a task or snapshot upload did not stop within 5s (stuck in a plugin call?); \
                 abandoning it"
            );
        }
        self.records_counted = records_at_start
            + counters
                .records
                .load(Ordering::Relaxed)
                .saturating_sub(processed_before);
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
            // A holder whose lease expired or was lost stops writing: it fails over.
            if let Err(why) = self.fence.check() {
                break AttemptEnd::Failover(why);
            }
            let now = self.started.elapsed();
            let mut outcome = None;
            // Once the final checkpoint is complete the attempt only waits for the sinks'
            // commits: a checkpoint triggered now would pre-commit transactions that nothing
            // ever commits or aborts.
            let actions = if a.final_commit.is_some() {
                Vec::new()
            } else {
                coordinator.poll(now)
            };
            for action in actions {
                outcome = match action {
                    Action::Trigger { id, savepoint } => {
                        self.trigger(coordinator, a, &mut in_flight, id, savepoint, timeout)
                    }
                    Action::Expire { id } => {
                        if !coordinator.is_savepoint(id) {
                            self.opts
                                .counters
                                .checkpoints_expired
                                .fetch_add(1, Ordering::Relaxed);
                        }
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
            // A final checkpoint that failed is asked for again (periodic ones may be off).
            if a.final_from.is_some() && a.final_commit.is_none() && coordinator.pending() == 0 {
                coordinator.request_checkpoint();
            }
            self.publish_in_flight(&in_flight);
            let wait = coordinator
                .next_wakeup(now)
                .filter(|_| a.final_commit.is_none())
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
                let per_sec = self.progress.records_per_sec;
                self.opts.counters.publish(|l| l.records_per_sec = per_sec);
                (self.opts.on_progress)(&self.progress);
            }
        };
        // Whatever was in flight will never complete in this attempt; its locations are cleaned
        // once the tasks have stopped writing into them, and savepoint requests are answered.
        let first = match &end {
            AttemptEnd::Failover(_) => "the job failed over first",
            _ => "the job stopped first",
        };
        for f in in_flight.into_values() {
            self.deferred.push(f.barrier.location.clone());
            if let Some(reply) = f.request.and_then(|r| r.reply) {
                let _ = reply.send(Err(first.to_string()));
            }
        }
        self.publish_in_flight(&BTreeMap::new());
        let _ = p;
        coordinator.abort_all();
        // A stop asked for and not done. After a failover its savepoint is asked for again
        // (the job stops once it restarted and took it), except for SIGTERM's, which stops the
        // job now; a job that stopped or finished some other way answers that it did.
        if let Some(stop) = self.stopping.clone() {
            match (&end, stop.if_it_fails) {
                (AttemptEnd::Failover(_), IfSavepointFails::KeepRunning) => {
                    if !self.savepoint_queue.iter().any(|r| r.then_stop.is_some()) {
                        self.savepoint_queue.push_back(SavepointRequest {
                            target: stop.target,
                            reply: None,
                            then_stop: Some(stop.if_it_fails),
                        });
                        coordinator.request_savepoint();
                    }
                }
                (AttemptEnd::Failover(why), IfSavepointFails::StopAnyway) => {
                    self.stopping = None;
                    self.answer_stop(Err(format!(
                        "the job failed before the savepoint of the stop completed ({why}); \
                         it stops without one"
                    )));
                    tracing::error!(
                        "the job failed while stopping ({why}); stopping without a savepoint"
                    );
                    return AttemptEnd::Cancelled;
                }
                (AttemptEnd::Finished { .. }, _) => {
                    self.stopping = None;
                    self.answer_stop(Err("the job finished (its input ended) before the \
                         savepoint of the stop completed"
                        .to_string()));
                }
                (AttemptEnd::Cancelled, _) => {
                    self.stopping = None;
                    self.answer_stop(Err(
                        "the job was cancelled before the savepoint of the stop completed"
                            .to_string(),
                    ));
                }
            }
        }
        end
    }

    /// Publish the checkpoints in flight (count and list) for status and metrics.
    fn publish_in_flight(&self, in_flight: &BTreeMap<u64, InFlight>) {
        self.opts
            .counters
            .checkpoints_in_flight
            .store(in_flight.len() as u64, Ordering::Relaxed);
        self.opts.counters.publish(|l| {
            l.pending = in_flight
                .iter()
                .map(|(&id, f)| PendingView {
                    id,
                    savepoint: f.barrier.savepoint,
                    triggered_ms: f.triggered_at_ms,
                })
                .collect();
        });
    }

    /// Answer everyone waiting for the stop's savepoint.
    fn answer_stop(&mut self, outcome: Result<CheckpointReport, String>) {
        for reply in self.stop_replies.drain(..) {
            let _ = reply.send(outcome.clone());
        }
    }

    /// Start a stop-with-savepoint, or join the one under way.
    fn stop_with_savepoint(
        &mut self,
        coordinator: &mut Coordinator,
        target: Option<String>,
        reply: Option<SavepointReply>,
        if_it_fails: IfSavepointFails,
    ) {
        self.stop_replies.extend(reply);
        match &mut self.stopping {
            Some(stop) => {
                // SIGTERM's wish to stop in any case wins over a request that would keep the
                // job running; the target of the stop under way stays.
                if if_it_fails == IfSavepointFails::StopAnyway {
                    stop.if_it_fails = IfSavepointFails::StopAnyway;
                    for r in &mut self.savepoint_queue {
                        if r.then_stop.is_some() {
                            r.then_stop = Some(IfSavepointFails::StopAnyway);
                        }
                    }
                }
            }
            None => {
                tracing::info!("stop requested: taking a savepoint first");
                self.stopping = Some(Stopping {
                    target: target.clone(),
                    if_it_fails,
                });
                self.savepoint_queue.push_back(SavepointRequest {
                    target,
                    reply: None,
                    then_stop: Some(if_it_fails),
                });
                coordinator.request_savepoint();
            }
        }
    }

    fn on_command(
        &mut self,
        coordinator: &mut Coordinator,
        command: Command,
    ) -> Option<AttemptEnd<J>> {
        match command {
            Command::Cancel => {
                self.opts.cancel.store(true, Ordering::Relaxed);
                Some(AttemptEnd::Cancelled)
            }
            Command::Savepoint { target, reply } => {
                self.savepoint_queue.push_back(SavepointRequest {
                    target,
                    reply: Some(reply),
                    then_stop: None,
                });
                coordinator.request_savepoint();
                None
            }
            Command::StopWithSavepoint {
                target,
                reply,
                if_it_fails,
            } => {
                self.stop_with_savepoint(coordinator, target, reply, if_it_fails);
                None
            }
            Command::Fail(why) => Some(AttemptEnd::Failover(why)),
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
            request.as_ref().and_then(|r| r.target.clone()).or_else(|| {
                self.config
                    .savepoints
                    .dir
                    .as_ref()
                    .map(|d| d.to_string_lossy().into_owned())
            })
        });
        let triggered = self.started.elapsed();
        let triggered_at = Instant::now();
        match self.calls.begin(&self.job_storage, id, target, timeout) {
            Ok(location) => {
                let barrier = Arc::new(Barrier::new(
                    id,
                    location,
                    savepoint,
                    &self.config.checkpointing,
                    triggered_at,
                ));
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
        let then_stop = request.as_ref().and_then(|r| r.then_stop);
        let savepoint = coordinator.is_savepoint(id);
        let what = if savepoint { "savepoint" } else { "checkpoint" };
        if let Some(reply) = request.and_then(|r| r.reply) {
            let _ = reply.send(Err(format!("savepoint {id} failed: {reason}")));
        }
        self.discard_in_background(Vec::new(), location.into_iter().collect());
        let failure = format!("{what} {id} failed: {reason}");
        self.opts
            .counters
            .publish(|l| l.last_failure = Some(failure.clone()));
        if let Some(mode) = then_stop {
            self.stopping = None;
            match mode {
                IfSavepointFails::StopAnyway => {
                    self.answer_stop(Err(format!("{failure}; the job stops without it")));
                    tracing::error!(
                        id,
                        "the savepoint before stopping failed ({reason}); stopping without it"
                    );
                    let _ = coordinator.on_failed(id, &reason);
                    return Some(AttemptEnd::Cancelled);
                }
                IfSavepointFails::KeepRunning => {
                    self.answer_stop(Err(format!(
                        "{failure}; the job keeps running (try again, or `cairn cancel` to stop \
                         it without a savepoint)"
                    )));
                    tracing::warn!(
                        id,
                        "the savepoint before stopping failed ({reason}); the job keeps running"
                    );
                }
            }
        }
        tracing::warn!(id, "{what} failed: {reason}");
        // A call given up because the run is stopping is no failure of the job's: it stops.
        if self.opts.cancel.load(Ordering::Relaxed) {
            let _ = coordinator.on_failed(id, &reason);
            return Some(AttemptEnd::Cancelled);
        }
        let verdict = coordinator.on_failed(id, &reason);
        self.progress.failures = coordinator.total_failures();
        self.opts
            .counters
            .checkpoints_failed
            .store(coordinator.total_failures(), Ordering::Relaxed);
        let in_a_row = coordinator.consecutive_failures();
        self.opts
            .counters
            .publish(|l| l.consecutive_failures = in_a_row);
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
            TaskEvent::Failed { task, error } => {
                Some(AttemptEnd::Failover(format!("{task}: {error}")))
            }
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
                            for h in snapshot.into_handles() {
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
                        self.fail(
                            coordinator,
                            id,
                            FailureReason::Declined(why),
                            None,
                            f.request,
                        )
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

    /// Count how a completed checkpoint's barriers went, for progress, counters and summary.
    fn note_barriers(&mut self, r: &CheckpointReport) {
        let alignment_ms = u64::try_from(r.alignment.as_millis()).unwrap_or(u64::MAX);
        self.barriers.add(r.barriers);
        self.channel_state_bytes += r.channel_state_bytes;
        self.max_alignment_ms = self.max_alignment_ms.max(alignment_ms);
        self.progress.last_barriers = Some(r.barriers);
        self.progress.last_channel_state_bytes = r.channel_state_bytes;
        self.progress.last_alignment_ms = alignment_ms;
        let c = &self.opts.counters;
        c.last_checkpoint_channel_state_bytes
            .store(r.channel_state_bytes, Ordering::Relaxed);
        c.last_checkpoint_alignment_us.store(
            u64::try_from(r.alignment.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if matches!(
            r.barriers,
            Barriers::Unaligned | Barriers::UnalignedAfterTimeout
        ) {
            c.checkpoints_unaligned.fetch_add(1, Ordering::Relaxed);
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
        if flight.offsets.iter().any(Option::is_none) || flight.tasks.iter().any(Option::is_none) {
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
            barriers: checkpoint_barriers(&flight.barrier, &tasks),
            tasks: tasks
                .iter()
                .enumerate()
                .map(|(i, t)| t.task_state(i as u32))
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
        match self.calls.commit(&flight.barrier.location, bytes, deadline) {
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
                    barriers: metadata.barriers,
                    channel_state_bytes: metadata.channel_state_bytes(),
                    channel_state_records: tasks
                        .iter()
                        .flat_map(|t| &t.channel_state)
                        .map(|c| c.records)
                        .sum(),
                    queued_bytes: tasks.iter().map(|t| t.queued_bytes).sum(),
                    alignment: tasks.iter().map(|t| t.alignment).max().unwrap_or_default(),
                    start_delay: tasks
                        .iter()
                        .map(|t| t.start_delay)
                        .max()
                        .unwrap_or_default(),
                };
                self.note_barriers(&report);
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
                counters
                    .last_checkpoint_bytes
                    .store(size, Ordering::Relaxed);
                counters
                    .histograms
                    .observe_checkpoint(report.duration(), size);
                let view = CompletedView {
                    id,
                    pointer: done.pointer.clone(),
                    duration_ms: took,
                    state_bytes: size,
                    completed_ms: epoch_ms(),
                };
                let in_a_row = coordinator.consecutive_failures();
                counters.publish(|l| {
                    l.consecutive_failures = in_a_row;
                    if savepoint {
                        l.last_savepoint = Some(view);
                    } else {
                        l.last_checkpoint = Some(view);
                    }
                });
                (self.opts.on_checkpoint)(&report);
                // The checkpoint is durable: now the sinks may commit what it covers.
                for g in &a.gates {
                    g.control(Control::Complete(id));
                }
                if let Some(request) = flight.request {
                    if let Some(reply) = request.reply {
                        let _ = reply.send(Ok(report.clone()));
                    }
                    if request.then_stop.is_some() {
                        tracing::info!(pointer = %done.pointer, "savepoint taken; stopping");
                        self.stopping = None;
                        self.answer_stop(Ok(report.clone()));
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
                                "injected failure in keyed task 0 after {} \
                                 (job.fail-after-checkpoints)",
                                crate::words::count(n, "completed checkpoint")
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
                let location = (!matches!(e, StorageError::Timeout(_)))
                    .then(|| flight.barrier.location.clone());
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
