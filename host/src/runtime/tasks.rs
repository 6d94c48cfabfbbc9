//! The job's tasks: parallel sources and keyed counters on threads, joined by bounded channels,
//! with checkpoint barriers aligned across inputs (exactly-once).
//!
//! Every counter has one bounded channel that all sources send into, each message tagged with
//! the sending source, which is how the hash exchange is built without a select over many
//! channels. Aligning a barrier means: once input `i` delivered barrier `n`, later events from
//! `i` are held back (in order) until every input has delivered `n` or ended; then the counter
//! snapshots its state into the checkpoint's storage location, acknowledges, and replays what it
//! held back. Holding back a channel's events is what Flink's aligned barrier handler does by
//! blocking the channel; the held-back events are exactly what an unaligned checkpoint would
//! persist as channel state, so that mode slots in here.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use cairn_plugin_api::{CheckpointLocation, Scope, StateHandle};
use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender};

use super::keyed_counter::{encode_state, key_of, owner_of};

/// A checkpoint barrier: the id, and where its state goes.
pub(crate) struct Barrier {
    pub(crate) id: u64,
    pub(crate) location: Arc<dyn CheckpointLocation>,
}

/// What flows from sources to counters.
pub(crate) enum Event {
    Record(u64),
    Barrier(Arc<Barrier>),
    End,
}

/// A task's acknowledgement of a barrier.
pub(crate) enum Ack {
    Source {
        id: u64,
        subtask: u32,
        offset: u64,
    },
    Counter {
        id: u64,
        subtask: u32,
        result: Result<(StateHandle, u64), String>,
    },
}

/// How a task ended.
pub(crate) enum Exit {
    Source {
        subtask: u32,
        result: Result<(), String>,
    },
    Counter {
        subtask: u32,
        result: Result<BTreeMap<u64, u64>, String>,
    },
}

/// What all tasks of one attempt share.
#[derive(Clone)]
pub(crate) struct Shared {
    /// Set to stop every task of this attempt.
    pub(crate) stop: Arc<AtomicBool>,
    /// Records processed by the counters in this attempt.
    pub(crate) processed: Arc<AtomicU64>,
    pub(crate) acks: Sender<Ack>,
    pub(crate) exits: Sender<Exit>,
}

const POLL: Duration = Duration::from_millis(50);

/// One source subtask.
pub(crate) struct Source {
    pub(crate) subtask: u32,
    pub(crate) parallelism: u32,
    pub(crate) keys: u64,
    pub(crate) offset: u64,
    pub(crate) quota: u64,
    /// Records per second for this subtask; `None` is unlimited.
    pub(crate) rate: Option<f64>,
    pub(crate) barriers: Receiver<Arc<Barrier>>,
    pub(crate) outputs: Vec<Sender<(u32, Event)>>,
    pub(crate) shared: Shared,
}

impl Source {
    pub(crate) fn run(self) {
        let subtask = self.subtask;
        let exits = self.shared.exits.clone();
        let result = self.emit();
        let _ = exits.send(Exit::Source { subtask, result });
    }

    /// Send, waiting out backpressure, unless the attempt is stopping.
    fn send(&self, to: usize, event: Event) -> Result<(), String> {
        let mut msg = (self.subtask, event);
        loop {
            match self.outputs[to].send_timeout(msg, POLL) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(m)) => {
                    if self.shared.stop.load(Ordering::Relaxed) {
                        return Err("stopped".to_string());
                    }
                    msg = m;
                }
                Err(SendTimeoutError::Disconnected(_)) => {
                    return Err(format!("counter {to} is gone"));
                }
            }
        }
    }

    fn forward_barriers(&self, offset: u64, forward: bool) -> Result<(), String> {
        while let Ok(b) = self.barriers.try_recv() {
            let ack = Ack::Source {
                id: b.id,
                subtask: self.subtask,
                offset,
            };
            let _ = self.shared.acks.send(ack);
            if forward {
                for to in 0..self.outputs.len() {
                    self.send(to, Event::Barrier(b.clone()))?;
                }
            }
        }
        Ok(())
    }

    fn emit(&self) -> Result<(), String> {
        let started = Instant::now();
        let mut i = self.offset;
        while i < self.quota {
            if self.shared.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            self.forward_barriers(i, true)?;
            let key = key_of(self.keys, self.parallelism, self.subtask, i);
            self.send(owner_of(key, self.parallelism), Event::Record(key))?;
            i += 1;
            if let Some(rate) = self.rate {
                if i % 64 == 0 {
                    let due = Duration::from_secs_f64((i - self.offset) as f64 / rate);
                    let elapsed = started.elapsed();
                    if due > elapsed {
                        std::thread::sleep((due - elapsed).min(Duration::from_millis(200)));
                    }
                }
            }
        }
        // Barriers that arrived with the last record go before the end marker.
        self.forward_barriers(i, true)?;
        for to in 0..self.outputs.len() {
            self.send(to, Event::End)?;
        }
        // A finished source still acknowledges barriers (with its final offset), so checkpoints
        // of the rest of the job complete; counters treat its ended channel as aligned.
        while !self.shared.stop.load(Ordering::Relaxed) {
            match self.barriers.recv_timeout(POLL) {
                Ok(b) => {
                    let _ = self.shared.acks.send(Ack::Source {
                        id: b.id,
                        subtask: self.subtask,
                        offset: i,
                    });
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        Ok(())
    }
}

/// One counter subtask.
pub(crate) struct Counter {
    pub(crate) subtask: u32,
    pub(crate) inputs: usize,
    pub(crate) counts: BTreeMap<u64, u64>,
    pub(crate) state_bytes_per_key: u64,
    pub(crate) input: Receiver<(u32, Event)>,
    /// Fail (once) after this many records in this attempt: the failure-injection switch.
    pub(crate) fail_after: Option<u64>,
    pub(crate) shared: Shared,
}

impl Counter {
    pub(crate) fn run(mut self) {
        let subtask = self.subtask;
        let exits = self.shared.exits.clone();
        let result = self.process().map(|()| std::mem::take(&mut self.counts));
        let _ = exits.send(Exit::Counter { subtask, result });
    }

    fn process(&mut self) -> Result<(), String> {
        let mut ended = vec![false; self.inputs];
        let mut blocked = vec![false; self.inputs];
        let mut held: Vec<VecDeque<Event>> = (0..self.inputs).map(|_| VecDeque::new()).collect();
        let mut replay: VecDeque<(u32, Event)> = VecDeque::new();
        let mut aligning: Option<Arc<Barrier>> = None;
        let mut processed = 0u64;
        // Every record adds one to one count, so the restored counts say how many came before.
        let restored: u64 = self.counts.values().sum();
        loop {
            let (from, event) = match replay.pop_front() {
                Some(m) => m,
                None => match self.input.recv_timeout(POLL) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        if self.shared.stop.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        if self.shared.stop.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        return Err("every source disconnected before ending".to_string());
                    }
                },
            };
            let from = from as usize;
            if blocked[from] {
                held[from].push_back(event);
                continue;
            }
            match event {
                Event::Record(key) => {
                    *self.counts.entry(key).or_insert(0) += 1;
                    processed += 1;
                    self.shared.processed.fetch_add(1, Ordering::Relaxed);
                    if self.fail_after.is_some_and(|n| processed >= n) {
                        return Err(format!(
                            "injected failure in counter {} after {processed} records (job.fail-after-records)",
                            self.subtask
                        ));
                    }
                }
                Event::Barrier(b) => {
                    blocked[from] = true;
                    aligning.get_or_insert(b);
                }
                Event::End => ended[from] = true,
            }
            let aligned = (0..self.inputs).all(|i| blocked[i] || ended[i]);
            if let (true, Some(barrier)) = (aligned, aligning.as_ref()) {
                let result = self.snapshot(barrier, restored + processed);
                let _ = self.shared.acks.send(Ack::Counter {
                    id: barrier.id,
                    subtask: self.subtask,
                    result,
                });
                aligning = None;
                for (i, queue) in held.iter_mut().enumerate() {
                    blocked[i] = false;
                    replay.extend(queue.drain(..).map(|e| (i as u32, e)));
                }
            }
            if aligning.is_none() && replay.is_empty() && ended.iter().all(|&e| e) {
                return Ok(());
            }
        }
    }

    /// Write the state to an EXCLUSIVE stream of the checkpoint's location.
    fn snapshot(&self, barrier: &Barrier, processed: u64) -> Result<(StateHandle, u64), String> {
        let bytes = encode_state(&self.counts, self.state_bytes_per_key);
        let mut stream = barrier
            .location
            .create_stream(Scope::Exclusive)
            .map_err(|e| format!("counter {}: creating a state stream: {e}", self.subtask))?;
        for chunk in bytes.chunks(1 << 20) {
            stream
                .write(chunk)
                .map_err(|e| format!("counter {}: writing state: {e}", self.subtask))?;
        }
        let handle = stream
            .close_and_get_handle()
            .map_err(|e| format!("counter {}: closing its state stream: {e}", self.subtask))?
            .ok_or_else(|| {
                format!(
                    "counter {}: the backend gave no handle for {} bytes",
                    self.subtask,
                    bytes.len()
                )
            })?;
        Ok((handle, processed))
    }
}
