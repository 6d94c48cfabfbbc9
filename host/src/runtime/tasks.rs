//! The tasks of one attempt: parallel sources and keyed tasks on threads, joined by the
//! exchange, with barriers handled as the checkpoint's kind says and snapshots written off the
//! task thread.
//!
//! A **source** task calls its [`Source`] in a loop, routes each record by its key's group to
//! the keyed task that owns it, and batches records per destination into buffers of about
//! [`BUFFER_BYTES`] (flushed when full, every [`FLUSH_EVERY`], and before a barrier, a pause or
//! the end). At a barrier it reports its offset to the coordinator and sends the barrier down
//! every channel, after the records before it; the gate queues it in order or lets it overtake
//! (`exchange`). A source waiting for room in a full channel stops waiting when a barrier comes,
//! so backpressure never delays a barrier at its source.
//!
//! A **keyed** task processes records with its state and its sink; its barrier handling is the
//! `align` state machine. When it is time to snapshot (barrier `n` arrived on every input that
//! has not ended, when aligned; the first barrier `n`, when unaligned), it takes an O(1)
//! copy-on-write view of its state and the sink's pre-commit. A separate thread writes the view
//! through the storage plugin, then the channel state once the aligner has it (the in-flight
//! records of an unaligned checkpoint), and acknowledges; the task goes on at once. The task
//! checks for overtaking barriers between records, so it reacts to one while it works through a
//! buffer, not after it; with `[job] operator-rate` it paces itself, waiting on its gate (so the
//! wait also ends for a barrier). When the coordinator reports a checkpoint complete, the sink
//! commits what it covers. A task whose inputs have all ended stays alive: it takes barriers
//! from the coordinator directly (the final checkpoint that commits the last output) until told
//! to finish.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use cairn_plugin_api::{CheckpointLocation, Scope, StateHandle, StorageError};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use serde_json::Value;

use super::{
    align::{Aligner, Alignment, Segment, Step},
    api::{
        Job, JobError, OffsetOf, OutputOf, Prefill, Process, RecordOf, Source, TaskContext,
        TwoPhaseCommitSink,
    },
    channel_state,
    codec::{decode_front, key_group, task_of, Buffer},
    exchange::{Barrier, BarrierKind, Control, Event, Gate, Input, SendError, Wake},
    report::Counters,
    state::{write_snapshot, KeyedState, ValueState},
};
use crate::metadata::{Barriers, ChannelStateRecord, HandleRecord, TaskState, KEYED_OPERATOR};

/// Records are sent in buffers of about this many bytes.
pub(crate) const BUFFER_BYTES: usize = 32 * 1024;

/// Bytes a channel holds before it pushes back.
pub(crate) const CHANNEL_BYTES: usize = 4 * BUFFER_BYTES;

/// A partly filled buffer is sent at least this often.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(10);

/// How long an idle task waits before it looks at the stop flag again.
const POLL: Duration = Duration::from_millis(50);

/// How far ahead of its pace (`operator-rate`) a keyed task may run before it waits.
const PACE_SLACK: Duration = Duration::from_millis(1);

/// Channel state is written to its stream in pieces of about this many bytes.
const CHANNEL_STATE_WRITE: usize = 1 << 20;

/// Prefilled entries inserted per input buffer, and per idle turn.
const PREFILL_BUSY: usize = 256;
const PREFILL_IDLE: usize = 4096;

/// What a keyed task's snapshot holds, when its upload finished.
#[derive(Debug)]
pub(crate) struct TaskSnapshot {
    pub(crate) handles: Vec<StateHandle>,
    pub(crate) records: u64,
    pub(crate) sink: Option<Value>,
    pub(crate) epoch: u64,
    pub(crate) entries: u64,
    pub(crate) pages: u64,
    pub(crate) changed_pages: u64,
    /// How this task handled the checkpoint's barriers.
    pub(crate) barriers: Barriers,
    /// Its channel state, one stream per input channel that had records in flight.
    pub(crate) channel_state: Vec<ChannelStateHandle>,
    pub(crate) start_delay: Duration,
    pub(crate) alignment: Duration,
    /// Bytes queued in its inputs at its unaligned snapshot.
    pub(crate) queued_bytes: u64,
}

impl TaskSnapshot {
    /// Every handle it holds (to discard a snapshot no checkpoint will use).
    pub(crate) fn into_handles(self) -> Vec<StateHandle> {
        self.handles
            .into_iter()
            .chain(self.channel_state.into_iter().map(|c| c.handle))
            .collect()
    }

    /// Bytes of its channel state.
    pub(crate) fn channel_state_bytes(&self) -> u64 {
        self.channel_state.iter().map(|c| c.handle.size()).sum()
    }

    /// What the metadata says of it, as keyed task `subtask`.
    pub(crate) fn task_state(&self, subtask: u32) -> TaskState {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        TaskState {
            operator: KEYED_OPERATOR.to_string(),
            subtask,
            handles: self.handles.iter().map(HandleRecord::from).collect(),
            records: self.records,
            sink: self.sink.clone(),
            epoch: self.epoch,
            entries: self.entries,
            pages: self.pages,
            changed_pages: self.changed_pages,
            barriers: self.barriers,
            channel_state: self
                .channel_state
                .iter()
                .map(|c| ChannelStateRecord {
                    channel: c.channel,
                    records: c.records,
                    bytes: c.handle.size(),
                    handle: HandleRecord::from(&c.handle),
                })
                .collect(),
            channel_state_bytes: self.channel_state_bytes(),
            alignment_ms: ms(self.alignment),
            start_delay_ms: ms(self.start_delay),
        }
    }
}

/// How a checkpoint's barriers went, from its kind and its tasks': switched if any task
/// switched to unaligned after the timeout.
pub(crate) fn checkpoint_barriers(b: &Barrier, tasks: &[TaskSnapshot]) -> Barriers {
    match b.kind {
        BarrierKind::Aligned => Barriers::Aligned,
        BarrierKind::Unaligned => Barriers::Unaligned,
        BarrierKind::AtLeastOnce => Barriers::AtLeastOnce,
        BarrierKind::AlignedThenUnaligned { .. } => {
            if tasks
                .iter()
                .any(|t| t.barriers == Barriers::UnalignedAfterTimeout)
            {
                Barriers::UnalignedAfterTimeout
            } else {
                Barriers::Aligned
            }
        }
    }
}

/// The channel state of one input channel of a task, written.
#[derive(Debug)]
pub(crate) struct ChannelStateHandle {
    pub(crate) channel: u32,
    pub(crate) records: u64,
    pub(crate) handle: StateHandle,
}

/// What tasks tell the coordinator.
pub(crate) enum TaskEvent {
    SourceAck {
        id: u64,
        subtask: u32,
        offset: Value,
    },
    SourceEnded {
        subtask: u32,
        offset: Value,
    },
    TaskAck {
        id: u64,
        subtask: u32,
        result: Result<TaskSnapshot, String>,
    },
    /// The sink of `subtask` committed everything up to checkpoint `id`.
    Committed {
        id: u64,
        subtask: u32,
    },
    /// Every input of keyed task `subtask` has ended and was processed.
    InputEnded {
        subtask: u32,
    },
    Failed {
        task: String,
        error: String,
    },
}

/// A keyed task's final state, handed back when the job finishes.
pub(crate) struct Final<J: Job> {
    pub(crate) subtask: u32,
    pub(crate) state: KeyedState<J::Key, J::State>,
}

/// What all tasks of one attempt share.
#[derive(Clone)]
pub(crate) struct Shared {
    /// Set to stop every task of this attempt.
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) events: Sender<TaskEvent>,
    pub(crate) counters: Arc<Counters>,
    /// The start of the run.
    pub(crate) run_started: Instant,
    /// Held by every task and upload thread: the attempt's end waits until all are dropped.
    pub(crate) alive: Sender<()>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn fail(&self, task: String, error: String) {
        let _ = self.events.send(TaskEvent::Failed { task, error });
    }
}

fn offset_json<T: serde::Serialize>(offset: &T) -> Value {
    serde_json::to_value(offset).unwrap_or(Value::Null)
}

/// One source subtask.
pub(crate) struct SourceTask<J: Job> {
    pub(crate) job: Arc<J>,
    pub(crate) ctx: TaskContext,
    pub(crate) source: J::Source,
    /// Records per second for this subtask; `None` is unlimited.
    pub(crate) rate: Option<f64>,
    pub(crate) barriers: Receiver<Arc<Barrier>>,
    pub(crate) outputs: Vec<Arc<Gate>>,
    pub(crate) shared: Shared,
}

/// The source's per-destination buffers.
struct Outbox {
    buffers: Vec<Buffer>,
    last_flush: Instant,
}

impl<J: Job> SourceTask<J> {
    pub(crate) fn run(mut self) {
        let name = format!("source {}", self.ctx.subtask);
        if let Err(e) = self.emit() {
            if !self.shared.stopping() {
                self.shared.fail(name, e);
            }
        }
    }

    /// Send the buffer for `to`, waiting for room; a barrier waiting meanwhile goes out first
    /// (after this buffer, which was emitted before it).
    fn flush(&self, out: &mut Outbox, to: usize) -> Result<(), String> {
        if out.buffers[to].is_empty() {
            return Ok(());
        }
        let full = Arc::new(std::mem::replace(
            &mut out.buffers[to],
            Buffer::with_capacity(BUFFER_BYTES),
        ));
        let ch = to_channel(self.ctx.subtask);
        let waiting = || !self.barriers.is_empty();
        match self.outputs[to].send(ch, full, &waiting) {
            Ok(()) => Ok(()),
            Err(SendError::Closed) => Err("stopped".to_string()),
            Err(SendError::Interrupted(full)) => {
                self.outputs[to]
                    .push(ch, full)
                    .map_err(|_| "stopped".to_string())?;
                self.barriers_now(out)
            }
        }
    }

    fn flush_all(&self, out: &mut Outbox) -> Result<(), String> {
        for to in 0..self.outputs.len() {
            self.flush(out, to)?;
        }
        out.last_flush = Instant::now();
        Ok(())
    }

    /// Report the offset and send the barrier down every channel, after the records emitted
    /// before it (the partly filled buffers go ahead of it, without waiting for room); the
    /// gate queues it in order or lets it overtake, as its kind says.
    fn on_barrier(&self, b: Arc<Barrier>, out: &mut Outbox, forward: bool) -> Result<(), String> {
        let _ = self.shared.events.send(TaskEvent::SourceAck {
            id: b.id,
            subtask: self.ctx.subtask,
            offset: offset_json(&self.source.offset()),
        });
        if forward {
            let ch = to_channel(self.ctx.subtask);
            for (to, gate) in self.outputs.iter().enumerate() {
                let partial =
                    std::mem::replace(&mut out.buffers[to], Buffer::with_capacity(BUFFER_BYTES));
                let leading = (!partial.is_empty()).then(|| Arc::new(partial));
                gate.send_barrier(ch, &b, leading)
                    .map_err(|_| "stopped".to_string())?;
            }
            out.last_flush = Instant::now();
        }
        Ok(())
    }

    fn barriers_now(&self, out: &mut Outbox) -> Result<(), String> {
        loop {
            match self.barriers.try_recv() {
                Ok(b) => self.on_barrier(b, out, true)?,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return Ok(()),
            }
        }
    }

    /// Wait up to `d`, handling barriers that arrive meanwhile.
    fn pause(&self, d: Duration, out: &mut Outbox) -> Result<(), String> {
        self.flush_all(out)?;
        match self.barriers.recv_timeout(d) {
            Ok(b) => self.on_barrier(b, out, true),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => Ok(()),
        }
    }

    fn emit(&mut self) -> Result<(), String> {
        let p = self.outputs.len() as u32;
        let mut out = Outbox {
            buffers: (0..self.outputs.len())
                .map(|_| Buffer::with_capacity(BUFFER_BYTES))
                .collect(),
            last_flush: Instant::now(),
        };
        let started = Instant::now();
        let mut emitted = 0u64;
        loop {
            if self.shared.stopping() {
                return Ok(());
            }
            self.barriers_now(&mut out)?;
            match self.source.next().map_err(|e| e.0)? {
                super::api::Next::Record(r) => {
                    let to = task_of(key_group(&self.job.key(&r)), p) as usize;
                    out.buffers[to].push(&r)?;
                    if out.buffers[to].bytes.len() >= BUFFER_BYTES {
                        self.flush(&mut out, to)?;
                    }
                    emitted += 1;
                    if emitted % 256 == 0 && out.last_flush.elapsed() >= FLUSH_EVERY {
                        self.flush_all(&mut out)?;
                    }
                    if let Some(rate) = self.rate {
                        if emitted % 64 == 0 {
                            let due = Duration::from_secs_f64(emitted as f64 / rate);
                            let elapsed = started.elapsed();
                            if due > elapsed {
                                self.pause(
                                    (due - elapsed).min(Duration::from_millis(200)),
                                    &mut out,
                                )?;
                            }
                        }
                    }
                }
                super::api::Next::Pending => self.pause(Duration::from_millis(1), &mut out)?,
                super::api::Next::End => break,
            }
        }
        // Barriers that came with the last record go before the end marker.
        self.barriers_now(&mut out)?;
        self.flush_all(&mut out)?;
        for gate in &self.outputs {
            gate.send_end(to_channel(self.ctx.subtask))
                .map_err(|_| "stopped".to_string())?;
        }
        let _ = self.shared.events.send(TaskEvent::SourceEnded {
            subtask: self.ctx.subtask,
            offset: offset_json(&self.source.offset()),
        });
        // An ended source still acknowledges barriers with its final offset; the keyed tasks
        // count its ended channel as aligned.
        while !self.shared.stopping() {
            match self.barriers.recv_timeout(POLL) {
                Ok(b) => self.on_barrier(b, &mut out, false)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        Ok(())
    }
}

/// The channel of a keyed task's gate that source `subtask` sends into.
fn to_channel(subtask: u32) -> usize {
    subtask as usize
}

/// A sink with its open and pending transactions.
pub(crate) struct SinkRunner<S: TwoPhaseCommitSink> {
    sink: S,
    current: S::Transaction,
    /// Pre-committed transactions and the checkpoint each belongs to, oldest first.
    pending: Vec<(u64, S::Transaction)>,
}

/// A sink's part of a checkpoint.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(bound = "T: crate::runtime::api::Checkpointed")]
pub(crate) struct SinkState<T> {
    /// Pre-committed transactions, by checkpoint id: committed once that checkpoint completes.
    pub(crate) pending: Vec<(u64, T)>,
    /// The transaction opened after the barrier: aborted on restore.
    pub(crate) current: T,
}

impl<S: TwoPhaseCommitSink> SinkRunner<S> {
    /// Start the sink: recommit what the restored checkpoint holds, abort the rest, and open a
    /// transaction.
    pub(crate) fn start(
        mut sink: S,
        restored: Option<SinkState<S::Transaction>>,
    ) -> Result<Self, JobError> {
        let mut keep = Vec::new();
        if let Some(state) = restored {
            for (_, txn) in state.pending {
                sink.commit(txn.clone())?;
                keep.push(txn);
            }
            sink.abort(state.current)?;
        }
        sink.abort_unknown(&keep)?;
        let current = sink.begin_transaction()?;
        Ok(SinkRunner {
            sink,
            current,
            pending: Vec::new(),
        })
    }

    fn write(&mut self, record: S::Input) -> Result<(), JobError> {
        self.sink.write(&mut self.current, record)
    }

    /// Pre-commit at barrier `id` and open the next transaction; the sink's checkpoint state.
    fn on_barrier(&mut self, id: u64) -> Result<Value, JobError> {
        self.sink.pre_commit(&mut self.current)?;
        let next = self.sink.begin_transaction()?;
        let done = std::mem::replace(&mut self.current, next);
        self.pending.push((id, done));
        let state = SinkState {
            pending: self.pending.clone(),
            current: self.current.clone(),
        };
        serde_json::to_value(&state).map_err(|e| JobError(format!("encoding sink state: {e}")))
    }

    /// Commit every transaction of checkpoints up to `id`.
    fn on_complete(&mut self, id: u64) -> Result<(), JobError> {
        while self.pending.first().is_some_and(|(c, _)| *c <= id) {
            let (_, txn) = self.pending.remove(0);
            self.sink.commit(txn)?;
        }
        Ok(())
    }

    /// Abort the open transaction (the job finished after its final checkpoint).
    fn close(mut self) -> Result<(), JobError> {
        self.sink.abort(self.current)
    }
}

/// One keyed subtask.
pub(crate) struct KeyedTask<J: Job> {
    pub(crate) job: Arc<J>,
    pub(crate) ctx: TaskContext,
    pub(crate) gate: Arc<Gate>,
    pub(crate) inputs: usize,
    pub(crate) state: KeyedState<J::Key, J::State>,
    pub(crate) sink: Option<SinkRunner<J::Sink>>,
    /// Records the state reflects (restored ones included).
    pub(crate) records: u64,
    /// The id of the checkpoint restored from: older barriers are ignored.
    pub(crate) last_barrier: u64,
    /// Fail (once) after this many records in this attempt.
    pub(crate) fail_after: Option<u64>,
    /// Records per second this task processes (`[job] operator-rate` ÷ parallelism), if
    /// limited.
    pub(crate) operator_rate: Option<f64>,
    pub(crate) prefill: Option<Prefill<J::Key, J::State>>,
    pub(crate) finals: Sender<Final<J>>,
    pub(crate) shared: Shared,
}

/// How the processing of a buffer ended.
enum Processed {
    /// Every record was processed.
    All,
    /// It stopped for an overtaking barrier; the rest of the buffer is still to process.
    Interrupted(Segment),
    /// The gate closed: the attempt is stopping.
    Closed,
}

/// A keyed task's pace under `operator-rate`: it has processed `done` records since `started`.
struct Pace {
    per_sec: f64,
    started: Instant,
    done: u64,
}

impl<J: Job> KeyedTask<J> {
    pub(crate) fn run(mut self) {
        let name = format!("keyed task {}", self.ctx.subtask);
        if let Err(e) = self.process() {
            if !self.shared.stopping() {
                self.shared.fail(name, e);
            }
        }
    }

    fn process(&mut self) -> Result<(), String> {
        let mut aligner = Aligner::new(self.ctx.subtask, self.inputs, self.last_barrier);
        let mut pace = self.operator_rate.map(|per_sec| Pace {
            per_sec,
            started: Instant::now(),
            done: 0,
        });
        let mut reported_end = false;
        let mut processed = 0u64;
        let mut out: Vec<OutputOf<J>> = Vec::new();
        let mut counted_len = self.state.len() as u64;
        self.shared
            .counters
            .state_entries
            .fetch_add(counted_len, Ordering::Relaxed);
        let mut first = true;
        loop {
            let timeout = if self.prefill.is_some() {
                Duration::ZERO
            } else {
                POLL
            };
            let input = self.gate.recv(aligner.blocked(), timeout);
            let now = Instant::now();
            match input {
                Input::Closed => return Ok(()),
                Input::Idle => {
                    if self.shared.stopping() {
                        return Ok(());
                    }
                    self.prefill_some(PREFILL_IDLE)?;
                }
                Input::Control(Control::Barrier(b)) => {
                    let steps = aligner.on_direct(b, now);
                    self.run_steps(steps);
                }
                Input::Control(Control::Complete(id)) => {
                    if let Some(sink) = &mut self.sink {
                        sink.on_complete(id)
                            .map_err(|e| format!("committing checkpoint {id}'s output: {e}"))?;
                    }
                    let _ = self.shared.events.send(TaskEvent::Committed {
                        id,
                        subtask: self.ctx.subtask,
                    });
                }
                Input::Control(Control::Fail(why)) => return Err(why),
                Input::Control(Control::Finish) => return self.finish(),
                Input::Priority {
                    ch,
                    barrier,
                    overtaken,
                } => {
                    let queued = self.gate.queued_bytes();
                    let steps = aligner.on_priority(ch, barrier, overtaken, None, queued, now);
                    self.run_steps(steps);
                }
                Input::Event(ch, Event::Records(buffer)) => {
                    if first {
                        first = false;
                        let us = self.shared.run_started.elapsed().as_micros() as u64;
                        self.shared
                            .counters
                            .first_record_us
                            .fetch_min(us, Ordering::Relaxed);
                    }
                    let n = u64::from(buffer.records);
                    let segment = Segment::whole(buffer);
                    if !self.consume(&mut aligner, &mut pace, ch, segment, &mut out)? {
                        return Ok(());
                    }
                    processed += n;
                    self.shared.counters.records.fetch_add(n, Ordering::Relaxed);
                    if self.fail_after.is_some_and(|n| processed >= n) {
                        return Err(format!(
                            "injected failure in keyed task {} after {processed} records \
                             (job.fail-after-records)",
                            self.ctx.subtask
                        ));
                    }
                    self.prefill_some(PREFILL_BUSY)?;
                }
                Input::Event(ch, Event::Barrier(b)) => {
                    let steps = aligner.on_barrier(ch, b, now);
                    self.run_steps(steps);
                }
                Input::Event(ch, Event::End) => {
                    let steps = aligner.on_end(ch, now);
                    self.run_steps(steps);
                }
            }
            let len = self.state.len() as u64;
            if len != counted_len {
                let c = &self.shared.counters.state_entries;
                if len > counted_len {
                    c.fetch_add(len - counted_len, Ordering::Relaxed);
                } else {
                    c.fetch_sub(counted_len - len, Ordering::Relaxed);
                }
                counted_len = len;
            }
            if !reported_end && aligner.drained() {
                reported_end = true;
                let _ = self.shared.events.send(TaskEvent::InputEnded {
                    subtask: self.ctx.subtask,
                });
            }
        }
    }

    /// Do what the aligner asks.
    fn run_steps(&mut self, steps: Vec<Step>) {
        for step in steps {
            match step {
                Step::Snapshot { barrier, done } => self.snapshot(&barrier, done),
                Step::Decline { id, reason } => {
                    let _ = self.shared.events.send(TaskEvent::TaskAck {
                        id,
                        subtask: self.ctx.subtask,
                        result: Err(reason),
                    });
                }
            }
        }
    }

    /// Process one buffer from channel `ch`, stopping between records for overtaking barriers
    /// (the rest of the buffer is then in flight for the aligner). False if the gate closed.
    fn consume(
        &mut self,
        aligner: &mut Aligner,
        pace: &mut Option<Pace>,
        ch: usize,
        segment: Segment,
        out: &mut Vec<OutputOf<J>>,
    ) -> Result<bool, String> {
        let steps = aligner.on_records(ch, &segment);
        self.run_steps(steps);
        let mut segment = segment;
        loop {
            match self.records_of(&segment, pace, out)? {
                Processed::All => return Ok(true),
                Processed::Closed => return Ok(false),
                Processed::Interrupted(rest) => {
                    while let Some(Input::Priority {
                        ch: at,
                        barrier,
                        overtaken,
                    }) = self.gate.take_priority()
                    {
                        let queued = self.gate.queued_bytes();
                        let current = Some((ch, rest.clone()));
                        let steps = aligner.on_priority(
                            at,
                            barrier,
                            overtaken,
                            current,
                            queued,
                            Instant::now(),
                        );
                        self.run_steps(steps);
                    }
                    segment = rest;
                }
            }
        }
    }

    fn records_of(
        &mut self,
        segment: &Segment,
        pace: &mut Option<Pace>,
        out: &mut Vec<OutputOf<J>>,
    ) -> Result<Processed, String> {
        let all = segment.buffer.bytes.len();
        let mut rest = segment.bytes();
        for i in 0..segment.records {
            // The records before `i` are in the state now: a snapshot taken at this
            // interruption counts them (the rest are channel state).
            let interrupted = |records: &mut u64, rest: &[u8]| {
                *records += u64::from(i);
                Processed::Interrupted(Segment {
                    buffer: segment.buffer.clone(),
                    offset: all - rest.len(),
                    records: segment.records - i,
                })
            };
            if let Some(p) = pace {
                match self.pace_wait(p)? {
                    Wake::Timeout => {}
                    Wake::Priority => return Ok(interrupted(&mut self.records, rest)),
                    Wake::Closed => return Ok(Processed::Closed),
                }
            }
            if self.gate.should_interrupt(i % 64 == 0) {
                return Ok(interrupted(&mut self.records, rest));
            }
            let (record, tail): (RecordOf<J>, &[u8]) = decode_front(rest)?;
            rest = tail;
            let key = self.job.key(&record);
            let state = ValueState::new(&mut self.state, &key);
            self.job
                .process(&mut Process::new(&key, state, out), record)
                .map_err(|e| e.0)?;
            if let Some(sink) = &mut self.sink {
                for o in out.drain(..) {
                    sink.write(o).map_err(|e| format!("sink: {e}"))?;
                    self.shared
                        .counters
                        .records_out
                        .fetch_add(1, Ordering::Relaxed);
                }
            } else {
                out.clear();
            }
            if let Some(p) = pace {
                p.done += 1;
            }
        }
        if rest.is_empty() {
            self.records += u64::from(segment.records);
            Ok(Processed::All)
        } else {
            Err(format!(
                "a record buffer has {} bytes left over",
                rest.len()
            ))
        }
    }

    /// Wait until the pace allows the next record, filling state in the background meanwhile
    /// and waking for overtaking barriers.
    fn pace_wait(&mut self, p: &Pace) -> Result<Wake, String> {
        let due = p.started + Duration::from_secs_f64(p.done as f64 / p.per_sec);
        loop {
            let now = Instant::now();
            // Records within PACE_SLACK of their time go at once: the task waits in steps of
            // about a millisecond, not once per record, and its average rate is the same.
            if now + PACE_SLACK >= due {
                return Ok(Wake::Timeout);
            }
            if self.prefill.is_some() {
                self.prefill_some(PREFILL_BUSY)?;
                continue;
            }
            match self.gate.wait_interrupt((due - now).min(POLL)) {
                Wake::Timeout => {}
                wake => return Ok(wake),
            }
        }
    }

    fn prefill_some(&mut self, n: usize) -> Result<(), String> {
        let Some(entries) = &mut self.prefill else {
            return Ok(());
        };
        for _ in 0..n {
            match entries.next() {
                Some((k, v)) => {
                    if !self.state.contains(&k) {
                        self.state.insert(k, v).map_err(|e| e.0)?;
                    }
                }
                None => {
                    self.prefill = None;
                    break;
                }
            }
        }
        Ok(())
    }

    /// The synchronous part of a checkpoint: an O(1) view of the state and the sink's
    /// pre-commit; the upload runs on its own thread. It writes the state, then waits for the
    /// aligner's word on how the barriers went (`done`: at once for an aligned snapshot, when the
    /// channel state is complete for an unaligned one), writes the channel state and
    /// acknowledges.
    fn snapshot(&mut self, b: &Arc<Barrier>, done: Receiver<Result<Alignment, String>>) {
        let id = b.id;
        let subtask = self.ctx.subtask;
        let events = self.shared.events.clone();
        let sink = match self.sink.as_mut().map(|s| s.on_barrier(id)).transpose() {
            Ok(s) => s,
            Err(e) => {
                let _ = events.send(TaskEvent::TaskAck {
                    id,
                    subtask,
                    result: Err(format!("keyed task {subtask}: sink pre-commit: {e}")),
                });
                return;
            }
        };
        let view = self.state.snapshot();
        let records = self.records;
        let location = b.location.clone();
        let previous_epoch = view.epoch().saturating_sub(1);
        let (alive, stop) = (self.shared.alive.clone(), self.shared.stop.clone());
        let stop_writer = stop.clone();
        let counters = self.shared.counters.clone();
        let upload = move || -> Result<TaskSnapshot, String> {
            let epoch = view.epoch();
            let entries = view.entries();
            let pages = view.pages() as u64;
            let changed_pages = view.changed_since(previous_epoch).len() as u64;
            let started = Instant::now();
            let mut stream = location
                .create_stream(Scope::Exclusive)
                .map_err(|e| format!("keyed task {subtask}: creating a state stream: {e}"))?;
            // Encoding (here) and writing (on a scoped thread) overlap, two buffers in turn.
            let mut in_plugin = Duration::ZERO;
            let bytes = std::thread::scope(|scope| -> Result<u64, String> {
                let (full_tx, full_rx) = crossbeam_channel::bounded::<Vec<u8>>(1);
                let (empty_tx, empty_rx) = crossbeam_channel::bounded::<Vec<u8>>(2);
                let _ = empty_tx.send(Vec::new());
                let stream = &mut stream;
                let in_plugin = &mut in_plugin;
                let writer = scope.spawn(move || -> Result<(), String> {
                    for buf in full_rx {
                        // A stopping attempt drops the stream, which deletes what it wrote.
                        if stop_writer.load(Ordering::Relaxed) {
                            return Err(format!("keyed task {subtask}: the attempt is stopping"));
                        }
                        let t = Instant::now();
                        stream
                            .write(&buf)
                            .map_err(|e| format!("keyed task {subtask}: writing state: {e}"))?;
                        *in_plugin += t.elapsed();
                        let _ = empty_tx.send(buf);
                    }
                    Ok(())
                });
                let encoded = write_snapshot(view, &mut |full| {
                    full_tx
                        .send(full)
                        .map_err(|_| "the state writer stopped".to_string())?;
                    empty_rx
                        .recv()
                        .map_err(|_| "the state writer stopped".to_string())
                });
                drop(full_tx);
                let written = writer.join().unwrap_or_else(|_| {
                    Err(format!("keyed task {subtask}: the state writer panicked"))
                });
                // The writer's error is the cause; the encoder's is only its echo.
                written?;
                encoded
            })?;
            let alignment = done.recv().map_err(|_| {
                format!(
                    "keyed task {subtask}: checkpoint {id} was given up before its channel \
                     state was complete"
                )
            })??;
            counters.histograms.observe_alignment(alignment.alignment);
            let closing = Instant::now();
            let handle = stream
                .close_and_get_handle()
                .map_err(|e| format!("keyed task {subtask}: closing its state stream: {e}"))?
                .ok_or_else(|| format!("keyed task {subtask}: the backend gave no handle"))?;
            tracing::debug!(
                id,
                subtask,
                bytes,
                total_ms = started.elapsed().as_secs_f64() * 1000.0,
                write_ms = in_plugin.as_secs_f64() * 1000.0,
                close_ms = closing.elapsed().as_secs_f64() * 1000.0,
                "snapshot uploaded"
            );
            let channel_state =
                write_channel_state(&*location, subtask, &alignment.channels, &stop)?;
            Ok(TaskSnapshot {
                handles: vec![handle],
                records,
                sink,
                epoch,
                entries,
                pages,
                changed_pages,
                barriers: alignment.mode,
                channel_state,
                start_delay: alignment.start_delay,
                alignment: alignment.alignment,
                queued_bytes: alignment.queued_bytes,
            })
        };
        let spawned = std::thread::Builder::new()
            .name(format!("snapshot-{subtask}-{id}"))
            .spawn({
                let events = events.clone();
                move || {
                    let result = upload();
                    let _ = events.send(TaskEvent::TaskAck {
                        id,
                        subtask,
                        result,
                    });
                    drop(alive);
                }
            });
        if let Err(e) = spawned {
            let _ = events.send(TaskEvent::TaskAck {
                id,
                subtask,
                result: Err(format!(
                    "keyed task {subtask}: cannot start its upload: {e}"
                )),
            });
        }
    }

    fn finish(&mut self) -> Result<(), String> {
        if let Some(sink) = self.sink.take() {
            sink.close().map_err(|e| format!("closing the sink: {e}"))?;
        }
        let state = std::mem::take(&mut self.state);
        let _ = self.finals.send(Final {
            subtask: self.ctx.subtask,
            state,
        });
        Ok(())
    }
}

/// Write each channel's in-flight records into a stream of its own (see `channel_state`).
fn write_channel_state(
    location: &dyn CheckpointLocation,
    subtask: u32,
    channels: &[Vec<Segment>],
    stop: &AtomicBool,
) -> Result<Vec<ChannelStateHandle>, String> {
    let mut written = Vec::new();
    for (ch, segments) in channels.iter().enumerate() {
        if segments.is_empty() {
            continue;
        }
        let fail = |what: &str, e: StorageError| {
            format!("keyed task {subtask}: {what} the channel state of input {ch}: {e}")
        };
        let mut stream = location
            .create_stream(Scope::Exclusive)
            .map_err(|e| fail("creating a stream for", e))?;
        let mut buf = Vec::with_capacity(CHANNEL_STATE_WRITE);
        buf.extend_from_slice(channel_state::MAGIC);
        let mut records = 0u64;
        for segment in segments {
            let bytes = segment.bytes();
            channel_state::segment_header(segment.records, bytes.len(), &mut buf);
            buf.extend_from_slice(bytes);
            records += u64::from(segment.records);
            if buf.len() >= CHANNEL_STATE_WRITE {
                if stop.load(Ordering::Relaxed) {
                    return Err(format!("keyed task {subtask}: the attempt is stopping"));
                }
                stream.write(&buf).map_err(|e| fail("writing", e))?;
                buf.clear();
            }
        }
        if !buf.is_empty() {
            stream.write(&buf).map_err(|e| fail("writing", e))?;
        }
        let handle = stream
            .close_and_get_handle()
            .map_err(|e| fail("closing", e))?
            .ok_or_else(|| format!("keyed task {subtask}: the backend gave no handle"))?;
        written.push(ChannelStateHandle {
            channel: ch as u32,
            records,
            handle,
        });
    }
    Ok(written)
}

/// The offset type's JSON back into the type.
pub(crate) fn offset_from<J: Job>(value: &Value) -> Result<OffsetOf<J>, String> {
    serde_json::from_value(value.clone()).map_err(|e| format!("source offset {value}: {e}"))
}

/// The sink state's JSON back into the type.
pub(crate) fn sink_state_from<J: Job>(
    value: &Value,
) -> Result<SinkState<<J::Sink as TwoPhaseCommitSink>::Transaction>, String> {
    serde_json::from_value(value.clone()).map_err(|e| format!("sink state {value}: {e}"))
}
