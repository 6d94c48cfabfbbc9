//! The hash exchange between sources and keyed tasks: one input gate per keyed task, with one
//! channel per source, a queue of overtaking barriers and a control queue.
//!
//! A channel carries [`Event`]s in order: buffers of encoded records, barriers, and the end of
//! the source. It is bounded in **bytes** of buffered records, so a slow task pushes back on its
//! sources with a known amount of memory in flight. A source waiting for room gives up the wait
//! as soon as a barrier is waiting for it ([`Gate::send`]'s `interrupt`, woken by
//! [`BarrierSender`]), so backpressure never holds a barrier back at its source; barriers, the
//! end marker and the few records a source puts ahead of a barrier are never held back by the
//! bound (a barrier must not wait behind a full channel to be *enqueued*).
//!
//! How a barrier travels depends on its [`BarrierKind`]:
//!
//! - **aligned** and **at-least-once** barriers are queued in order, behind the records before
//!   them. Aligning blocks the channel a barrier came on: the task stops taking events from it
//!   (the receiver passes a mask to [`Gate::recv`]), the channel fills and backpressures its
//!   source, and nothing is copied aside (Flink's aligned barrier handler).
//! - **unaligned** barriers overtake: [`Gate::send_barrier`] puts them in the gate's priority
//!   queue, noting how many record buffers of their channel they overtook, and [`Gate::recv`]
//!   hands them out before any record, with those buffers (shared, not copied) as the channel
//!   state they make.
//! - an **aligned barrier with a timeout** (`aligned-checkpoint-timeout`) is queued in order; when
//!   the checkpoint's age passes the timeout while it is still queued, the gate moves it to the
//!   priority queue, counting the buffers ahead of it, and later barriers of that checkpoint
//!   overtake from the start (Flink 1.14's switch, done where the barrier waits).
//!
//! The control queue brings the task what the coordinator says (a checkpoint completed, a
//! barrier for a task whose inputs have all ended, finish, fail) through the same wait, so a task
//! sleeps in exactly one place.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use cairn_plugin_api::CheckpointLocation;
use crossbeam_channel::Sender;

use super::codec::Buffer;
use crate::config::CheckpointingConfig;

/// How a checkpoint's barriers travel and are handled (decided at the trigger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BarrierKind {
    /// Exactly-once, aligned (also every savepoint).
    Aligned,
    /// Exactly-once: aligned until `switch_at` (trigger + `aligned-checkpoint-timeout`), then
    /// unaligned.
    AlignedThenUnaligned { switch_at: Instant },
    /// Exactly-once, unaligned from the start.
    Unaligned,
    /// At-least-once: in order, never aligned.
    AtLeastOnce,
}

/// A checkpoint barrier: the id, where its state goes, and how it is handled.
pub(crate) struct Barrier {
    pub(crate) id: u64,
    pub(crate) location: Arc<dyn CheckpointLocation>,
    /// Whether it is a savepoint.
    pub(crate) savepoint: bool,
    pub(crate) kind: BarrierKind,
    /// When the coordinator triggered it.
    pub(crate) triggered: Instant,
    /// Bytes of channel state every task of this checkpoint has taken so far.
    pub(crate) in_flight: AtomicU64,
    /// `checkpointing.max-in-flight-data`: past it the checkpoint fails.
    pub(crate) max_in_flight: u64,
}

impl Barrier {
    /// The barrier of checkpoint (or savepoint) `id`, handled as `c` says: savepoints are always
    /// aligned (Flink's rule, whatever `unaligned` and `force-unaligned` say).
    pub(crate) fn new(
        id: u64,
        location: Arc<dyn CheckpointLocation>,
        savepoint: bool,
        c: &CheckpointingConfig,
        triggered: Instant,
    ) -> Self {
        let kind = if savepoint {
            BarrierKind::Aligned
        } else if !c.is_exactly_once() {
            BarrierKind::AtLeastOnce
        } else if !c.is_unaligned() {
            BarrierKind::Aligned
        } else if c.aligned_checkpoint_timeout.is_zero() {
            BarrierKind::Unaligned
        } else {
            match triggered.checked_add(c.aligned_checkpoint_timeout) {
                Some(switch_at) => BarrierKind::AlignedThenUnaligned { switch_at },
                None => BarrierKind::Aligned,
            }
        };
        Barrier {
            id,
            location,
            savepoint,
            kind,
            triggered,
            in_flight: AtomicU64::new(0),
            max_in_flight: c.max_in_flight_data,
        }
    }
}

/// What flows through a channel.
pub(crate) enum Event {
    Records(Arc<Buffer>),
    Barrier(Arc<Barrier>),
    End,
}

/// What the coordinator tells a keyed task.
pub(crate) enum Control {
    /// Take this barrier directly: every input of the task has ended, so none can bring it.
    Barrier(Arc<Barrier>),
    /// Checkpoint `id` is complete: commit what it covers.
    Complete(u64),
    /// Fail now with this message (failure injection).
    Fail(String),
    /// Hand back the final state and stop.
    Finish,
}

/// What [`Gate::recv`] returns.
pub(crate) enum Input {
    Control(Control),
    /// A barrier that overtook the records queued in channel `ch`: `overtaken` are those
    /// records, oldest first (still queued, and processed after the barrier).
    Priority {
        ch: usize,
        barrier: Arc<Barrier>,
        overtaken: Vec<Arc<Buffer>>,
    },
    Event(usize, Event),
    /// Nothing within the timeout.
    Idle,
    /// The gate was closed (the attempt is stopping).
    Closed,
}

/// The gate was closed: the attempt is stopping.
#[derive(Debug)]
pub(crate) struct Closed;

/// Why [`Gate::send`] did not queue a buffer.
pub(crate) enum SendError {
    /// The gate was closed.
    Closed,
    /// A barrier is waiting for the sender while the channel is full: the buffer is handed
    /// back, to go ahead of the barrier.
    Interrupted(Arc<Buffer>),
}

/// What [`Gate::wait_interrupt`] ended with.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The time passed.
    Timeout,
    /// An overtaking barrier is waiting.
    Priority,
    /// The gate was closed.
    Closed,
}

struct Channel {
    queue: VecDeque<Event>,
    bytes: usize,
}

impl Channel {
    /// The record buffers among the first `n` events, oldest first.
    fn records_before(&self, n: usize) -> usize {
        self.queue
            .iter()
            .take(n)
            .filter(|e| matches!(e, Event::Records(_)))
            .count()
    }
}

/// A barrier in the priority queue: its channel, and how many record buffers of it it overtook.
struct Overtaking {
    ch: usize,
    barrier: Arc<Barrier>,
    overtook: usize,
}

struct Inner {
    channels: Vec<Channel>,
    control: VecDeque<Control>,
    priority: VecDeque<Overtaking>,
    /// The newest checkpoint whose barriers overtake because its aligned phase timed out.
    promoted: u64,
    /// The newest checkpoint with an aligned phase whose barrier is queued here, and when it
    /// switches to unaligned.
    switch: Option<(u64, Instant)>,
    closed: bool,
    /// Where the round-robin scan starts next.
    next: usize,
}

/// One keyed task's inputs (see the module docs).
pub(crate) struct Gate {
    inner: Mutex<Inner>,
    readable: Condvar,
    writable: Condvar,
    capacity: usize,
    /// Set while the priority queue is not empty: the task checks it between records.
    has_priority: AtomicBool,
    /// Whether a switch is scheduled (`Inner::switch`), so the check between records does not
    /// take the lock for nothing.
    has_switch: AtomicBool,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Gate {
    /// A gate with `inputs` channels of `capacity` bytes each.
    pub(crate) fn new(inputs: usize, capacity: usize) -> Arc<Self> {
        Arc::new(Gate {
            inner: Mutex::new(Inner {
                channels: (0..inputs)
                    .map(|_| Channel {
                        queue: VecDeque::new(),
                        bytes: 0,
                    })
                    .collect(),
                control: VecDeque::new(),
                priority: VecDeque::new(),
                promoted: 0,
                switch: None,
                closed: false,
                next: 0,
            }),
            readable: Condvar::new(),
            writable: Condvar::new(),
            capacity,
            has_priority: AtomicBool::new(false),
            has_switch: AtomicBool::new(false),
        })
    }

    /// Queue a buffer on channel `ch`, waiting while the channel is full, unless `interrupt`
    /// says a barrier is waiting for the sender (checked whenever the sender is woken; see
    /// [`Gate::wake_senders`]).
    pub(crate) fn send(
        &self,
        ch: usize,
        buffer: Arc<Buffer>,
        interrupt: &dyn Fn() -> bool,
    ) -> Result<(), SendError> {
        let mut g = lock(&self.inner);
        while !g.closed && g.channels[ch].bytes >= self.capacity {
            if interrupt() {
                return Err(SendError::Interrupted(buffer));
            }
            g = self.writable.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        if g.closed {
            return Err(SendError::Closed);
        }
        Self::enqueue(&mut g, ch, buffer);
        drop(g);
        self.readable.notify_one();
        Ok(())
    }

    /// Queue a buffer on channel `ch` without waiting for room: records that must go ahead of
    /// a barrier, and restored channel state before the sources start.
    pub(crate) fn push(&self, ch: usize, buffer: Arc<Buffer>) -> Result<(), Closed> {
        let mut g = lock(&self.inner);
        if g.closed {
            return Err(Closed);
        }
        Self::enqueue(&mut g, ch, buffer);
        drop(g);
        self.readable.notify_one();
        Ok(())
    }

    fn enqueue(g: &mut Inner, ch: usize, buffer: Arc<Buffer>) {
        let c = &mut g.channels[ch];
        c.bytes += buffer.bytes.len();
        c.queue.push_back(Event::Records(buffer));
    }

    /// Send barrier `b` down channel `ch`, after `leading` (the sender's partly filled buffer),
    /// never waiting for room. It is queued in order, or overtakes what is queued, as its kind
    /// and the time say (see the module docs).
    pub(crate) fn send_barrier(
        &self,
        ch: usize,
        b: &Arc<Barrier>,
        leading: Option<Arc<Buffer>>,
    ) -> Result<(), Closed> {
        let mut g = lock(&self.inner);
        if g.closed {
            return Err(Closed);
        }
        if let Some(buffer) = leading {
            Self::enqueue(&mut g, ch, buffer);
        }
        let overtakes = match b.kind {
            BarrierKind::Unaligned => true,
            BarrierKind::AlignedThenUnaligned { switch_at } => {
                let now = Instant::now();
                let due = g.promoted >= b.id || now >= switch_at;
                if !due && g.switch.is_none_or(|(id, _)| id < b.id) {
                    g.switch = Some((b.id, switch_at));
                    self.has_switch.store(true, Ordering::Release);
                }
                due
            }
            BarrierKind::Aligned | BarrierKind::AtLeastOnce => false,
        };
        if overtakes {
            let overtook = g.channels[ch].records_before(usize::MAX);
            g.priority.push_back(Overtaking {
                ch,
                barrier: b.clone(),
                overtook,
            });
            self.has_priority.store(true, Ordering::Release);
        } else {
            g.channels[ch].queue.push_back(Event::Barrier(b.clone()));
        }
        drop(g);
        self.readable.notify_all();
        Ok(())
    }

    /// Send the end of channel `ch` (never waits).
    pub(crate) fn send_end(&self, ch: usize) -> Result<(), Closed> {
        let mut g = lock(&self.inner);
        if g.closed {
            return Err(Closed);
        }
        g.channels[ch].queue.push_back(Event::End);
        drop(g);
        self.readable.notify_one();
        Ok(())
    }

    /// Wake every sender waiting for room, so it looks at its `interrupt` again. Taking the
    /// lock first means a sender is either before its check (and sees what the caller set) or
    /// already waiting (and gets the notification).
    pub(crate) fn wake_senders(&self) {
        drop(lock(&self.inner));
        self.writable.notify_all();
    }

    /// Give the task a control message; it goes before any event.
    pub(crate) fn control(&self, c: Control) {
        let mut g = lock(&self.inner);
        if g.closed {
            return;
        }
        g.control.push_back(c);
        drop(g);
        self.readable.notify_one();
    }

    /// Close the gate: senders and the receiver wake and see [`Closed`].
    pub(crate) fn close(&self) {
        lock(&self.inner).closed = true;
        self.readable.notify_all();
        self.writable.notify_all();
    }

    /// Bytes of records queued in every channel.
    pub(crate) fn queued_bytes(&self) -> u64 {
        lock(&self.inner)
            .channels
            .iter()
            .map(|c| c.bytes as u64)
            .sum()
    }

    /// If the scheduled switch is due, move that checkpoint's queued barriers to the priority
    /// queue, each with the count of buffers it overtakes, and let its later barriers overtake.
    fn switch_if_due(&self, g: &mut Inner, now: Instant) {
        let Some((id, at)) = g.switch else {
            return;
        };
        if now < at {
            return;
        }
        g.switch = None;
        self.has_switch.store(false, Ordering::Release);
        g.promoted = g.promoted.max(id);
        let mut moved = Vec::new();
        for (ch, c) in g.channels.iter_mut().enumerate() {
            let at = c
                .queue
                .iter()
                .position(|e| matches!(e, Event::Barrier(b) if b.id == id));
            if let Some(pos) = at {
                let overtook = c.records_before(pos);
                if let Some(Event::Barrier(barrier)) = c.queue.remove(pos) {
                    moved.push(Overtaking {
                        ch,
                        barrier,
                        overtook,
                    });
                }
            }
        }
        if !moved.is_empty() {
            g.priority.extend(moved);
            self.has_priority.store(true, Ordering::Release);
        }
    }

    /// Whether the task should stop between two records: an overtaking barrier is waiting (or
    /// a switch to unaligned just became due and made one).
    pub(crate) fn should_interrupt(&self, check_switch: bool) -> bool {
        if self.has_priority.load(Ordering::Acquire) {
            return true;
        }
        if check_switch && self.has_switch.load(Ordering::Acquire) {
            let mut g = lock(&self.inner);
            self.switch_if_due(&mut g, Instant::now());
            return !g.priority.is_empty();
        }
        false
    }

    /// Wait at most `d` for an overtaking barrier (a paced task's idle time, during which it
    /// must still react to barriers).
    pub(crate) fn wait_interrupt(&self, d: Duration) -> Wake {
        let until = Instant::now() + d;
        let mut g = lock(&self.inner);
        loop {
            if g.closed {
                return Wake::Closed;
            }
            let now = Instant::now();
            self.switch_if_due(&mut g, now);
            if !g.priority.is_empty() {
                return Wake::Priority;
            }
            if now >= until {
                return Wake::Timeout;
            }
            let mut wait = until - now;
            if let Some((_, at)) = g.switch {
                wait = wait.min(at.saturating_duration_since(now));
            }
            g = self
                .readable
                .wait_timeout(g, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The next overtaking barrier, if one is waiting, with the buffers it overtook.
    pub(crate) fn take_priority(&self) -> Option<Input> {
        let mut g = lock(&self.inner);
        self.switch_if_due(&mut g, Instant::now());
        Self::pop_priority(&self.has_priority, &mut g)
    }

    fn pop_priority(flag: &AtomicBool, g: &mut Inner) -> Option<Input> {
        let o = g.priority.pop_front()?;
        if g.priority.is_empty() {
            flag.store(false, Ordering::Release);
        }
        let overtaken = g.channels[o.ch]
            .queue
            .iter()
            .filter_map(|e| match e {
                Event::Records(b) => Some(b.clone()),
                _ => None,
            })
            .take(o.overtook)
            .collect();
        Some(Input::Priority {
            ch: o.ch,
            barrier: o.barrier,
            overtaken,
        })
    }

    /// The next control message, else the next overtaking barrier, else the next event of a
    /// channel not `blocked`, taken round-robin; waits at most `timeout` (less if a switch to
    /// unaligned falls due meanwhile).
    pub(crate) fn recv(&self, blocked: &[bool], timeout: Duration) -> Input {
        let mut g = lock(&self.inner);
        let mut waited = false;
        loop {
            if g.closed {
                return Input::Closed;
            }
            if let Some(c) = g.control.pop_front() {
                return Input::Control(c);
            }
            let now = Instant::now();
            self.switch_if_due(&mut g, now);
            if let Some(p) = Self::pop_priority(&self.has_priority, &mut g) {
                return p;
            }
            let n = g.channels.len();
            let start = g.next;
            for i in 0..n {
                let ch = (start + i) % n;
                if blocked[ch] {
                    continue;
                }
                if let Some(event) = g.channels[ch].queue.pop_front() {
                    g.next = (ch + 1) % n;
                    if let Event::Records(b) = &event {
                        let c = &mut g.channels[ch];
                        let was_full = c.bytes >= self.capacity;
                        c.bytes -= b.bytes.len();
                        if was_full && c.bytes < self.capacity {
                            self.writable.notify_all();
                        }
                    }
                    return Input::Event(ch, event);
                }
            }
            if waited || timeout.is_zero() {
                return Input::Idle;
            }
            waited = true;
            let mut wait = timeout;
            if let Some((_, at)) = g.switch {
                let left = at.saturating_duration_since(now);
                if left < wait {
                    // Woken by the switch: look again without counting it as the wait.
                    waited = false;
                    wait = left.max(Duration::from_micros(100));
                }
            }
            g = self
                .readable
                .wait_timeout(g, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// How the coordinator hands a barrier to a source: through the source's inbox, then waking
/// every sender waiting for room in the exchange, so a backpressured source sees the barrier at
/// once rather than when its channel drains.
pub(crate) struct BarrierSender {
    tx: Sender<Arc<Barrier>>,
    gates: Vec<Arc<Gate>>,
}

impl BarrierSender {
    pub(crate) fn new(tx: Sender<Arc<Barrier>>, gates: Vec<Arc<Gate>>) -> Self {
        BarrierSender { tx, gates }
    }

    /// Hand `b` to the source.
    pub(crate) fn send(&self, b: Arc<Barrier>) -> Result<(), ()> {
        self.tx.send(b).map_err(|_| ())?;
        for g in &self.gates {
            g.wake_senders();
        }
        Ok(())
    }
}

/// What the exchange's and the aligner's unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A barrier of `kind` whose location is never used.
    pub(crate) fn barrier(id: u64, kind: BarrierKind) -> Arc<Barrier> {
        Arc::new(Barrier {
            id,
            location: Arc::new(NoLocation),
            savepoint: false,
            kind,
            triggered: Instant::now(),
            in_flight: AtomicU64::new(0),
            max_in_flight: u64::MAX,
        })
    }

    struct NoLocation;

    impl CheckpointLocation for NoLocation {
        fn create_stream(
            &self,
            _: cairn_plugin_api::Scope,
        ) -> cairn_plugin_api::StorageResult<Box<dyn cairn_plugin_api::OutputStream>> {
            Err(cairn_plugin_api::StorageError::Unsupported(
                "a test location".into(),
            ))
        }
        fn commit(
            &self,
            _: &[u8],
        ) -> cairn_plugin_api::StorageResult<cairn_plugin_api::CompletedCheckpoint> {
            Err(cairn_plugin_api::StorageError::Unsupported(
                "a test location".into(),
            ))
        }
        fn dispose_on_failure(&self) -> cairn_plugin_api::StorageResult<()> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::barrier, *};

    fn records(n: u32, bytes: usize) -> Arc<Buffer> {
        Arc::new(Buffer {
            bytes: vec![n as u8; bytes],
            records: n,
        })
    }

    fn never() -> bool {
        false
    }

    #[test]
    fn blocked_channels_are_skipped_and_order_is_kept() {
        let gate = Gate::new(2, 1 << 20);
        gate.send(0, records(1, 1), &never).ok().unwrap();
        gate.send_end(0).unwrap();
        gate.send(1, records(2, 1), &never).ok().unwrap();
        let mut got = Vec::new();
        loop {
            match gate.recv(&[false, true], Duration::ZERO) {
                Input::Event(ch, Event::Records(b)) => got.push((ch, b.records)),
                Input::Event(ch, Event::End) => got.push((ch, 0)),
                Input::Idle => break,
                _ => panic!("unexpected"),
            }
        }
        assert_eq!(got, vec![(0, 1), (0, 0)]);
        assert!(matches!(
            gate.recv(&[false, false], Duration::ZERO),
            Input::Event(1, _)
        ));
        gate.control(Control::Complete(3));
        gate.send(0, records(1, 1), &never).ok().unwrap();
        assert!(matches!(
            gate.recv(&[false, false], Duration::ZERO),
            Input::Control(Control::Complete(3))
        ));
    }

    #[test]
    fn a_full_channel_backpressures_until_read_or_closed() {
        let gate = Gate::new(1, 10);
        gate.send(0, records(1, 10), &never).ok().unwrap();
        let g = gate.clone();
        let sender = std::thread::spawn(move || g.send(0, records(1, 10), &never).is_ok());
        // The second send waits; reading the first lets it through.
        assert!(matches!(
            gate.recv(&[false], Duration::from_secs(5)),
            Input::Event(0, _)
        ));
        assert!(sender.join().unwrap());
        let g = gate.clone();
        let blocked = std::thread::spawn(move || {
            matches!(g.send(0, records(1, 10), &never), Err(SendError::Closed))
        });
        gate.close();
        assert!(blocked.join().unwrap());
        assert!(matches!(gate.recv(&[false], Duration::ZERO), Input::Closed));
    }

    /// A sender waiting for room gives up the wait once its barrier is waiting, and gets its
    /// buffer back; the barrier then goes out without waiting.
    #[test]
    fn a_waiting_barrier_interrupts_a_full_channel() {
        let gate = Gate::new(1, 10);
        gate.send(0, records(1, 10), &never).ok().unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let inbox = rx.clone();
        let g = gate.clone();
        let sender =
            std::thread::spawn(
                move || match g.send(0, records(2, 10), &|| !inbox.is_empty()) {
                    Err(SendError::Interrupted(b)) => {
                        let barrier = inbox.recv().unwrap();
                        g.send_barrier(0, &barrier, Some(b)).unwrap();
                        true
                    }
                    _ => false,
                },
            );
        BarrierSender::new(tx, vec![gate.clone()])
            .send(barrier(1, BarrierKind::Aligned))
            .unwrap();
        assert!(sender.join().unwrap());
        // In order: the first buffer, the handed-back one, then the barrier.
        let mut got = Vec::new();
        while let Input::Event(_, e) = gate.recv(&[false], Duration::ZERO) {
            got.push(match e {
                Event::Records(b) => b.records as u64,
                Event::Barrier(b) => 100 + b.id,
                Event::End => 0,
            });
        }
        assert_eq!(got, vec![1, 2, 101]);
        drop(rx);
    }

    #[test]
    fn an_unaligned_barrier_overtakes_queued_records() {
        let gate = Gate::new(2, 1 << 20);
        gate.send(0, records(5, 3), &never).ok().unwrap();
        gate.send(0, records(6, 3), &never).ok().unwrap();
        gate.send(1, records(7, 3), &never).ok().unwrap();
        gate.send_barrier(0, &barrier(1, BarrierKind::Unaligned), Some(records(8, 2)))
            .unwrap();
        assert!(gate.should_interrupt(false));
        assert_eq!(gate.queued_bytes(), 11);
        match gate.recv(&[false, false], Duration::ZERO) {
            Input::Priority {
                ch: 0,
                barrier,
                overtaken,
            } => {
                assert_eq!(barrier.id, 1);
                let n: Vec<u32> = overtaken.iter().map(|b| b.records).collect();
                assert_eq!(n, vec![5, 6, 8], "the overtaken buffers, oldest first");
            }
            _ => panic!("the barrier comes first"),
        }
        assert!(!gate.should_interrupt(false));
        // The overtaken records are still there, in order, after the barrier.
        let mut got = Vec::new();
        while let Input::Event(ch, Event::Records(b)) = gate.recv(&[false, false], Duration::ZERO) {
            got.push((ch, b.records));
        }
        got.sort();
        assert_eq!(got, vec![(0, 5), (0, 6), (0, 8), (1, 7)]);
    }

    #[test]
    fn an_aligned_barrier_switches_to_overtaking_when_its_time_comes() {
        let gate = Gate::new(2, 1 << 20);
        let switch_at = Instant::now() + Duration::from_millis(30);
        let b = barrier(4, BarrierKind::AlignedThenUnaligned { switch_at });
        gate.send(0, records(1, 1), &never).ok().unwrap();
        gate.send(0, records(2, 1), &never).ok().unwrap();
        gate.send_barrier(0, &b, None).unwrap();
        gate.send(0, records(3, 1), &never).ok().unwrap();
        // Before the switch it is in order: the task (blocking nothing) reads a record first.
        assert!(matches!(
            gate.recv(&[false, true], Duration::ZERO),
            Input::Event(0, Event::Records(_))
        ));
        // Waiting for channel 1 only: the switch wakes the wait and the barrier overtakes the
        // one buffer still ahead of it.
        match gate.recv(&[true, false], Duration::from_secs(30)) {
            Input::Priority { ch, overtaken, .. } => {
                assert_eq!(ch, 0);
                assert_eq!(
                    overtaken.iter().map(|b| b.records).collect::<Vec<_>>(),
                    vec![2]
                );
            }
            _ => panic!("the switch did not move the barrier"),
        }
        // A barrier of the same checkpoint sent after the switch overtakes at once.
        gate.send(1, records(9, 1), &never).ok().unwrap();
        gate.send_barrier(1, &b, None).unwrap();
        assert!(matches!(
            gate.recv(&[false, false], Duration::ZERO),
            Input::Priority { ch: 1, .. }
        ));
    }

    #[test]
    fn a_paced_wait_ends_for_a_barrier() {
        let gate = Gate::new(1, 1 << 20);
        assert_eq!(gate.wait_interrupt(Duration::from_millis(1)), Wake::Timeout);
        let g = gate.clone();
        let waiter = std::thread::spawn(move || g.wait_interrupt(Duration::from_secs(60)));
        gate.send_barrier(0, &barrier(1, BarrierKind::Unaligned), None)
            .unwrap();
        assert_eq!(waiter.join().unwrap(), Wake::Priority);
        gate.close();
        assert_eq!(gate.wait_interrupt(Duration::from_secs(60)), Wake::Closed);
    }
}
