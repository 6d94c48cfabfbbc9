//! The hash exchange between sources and keyed tasks: one input gate per keyed task, with one
//! channel per source and a control queue.
//!
//! A channel carries [`Event`]s in order: buffers of encoded records, barriers, and the end of
//! the source. It is bounded in **bytes** of buffered records, so a slow task pushes back on its
//! sources with a known amount of memory in flight. Barriers and the end marker are never held
//! back by the bound (they are small, and a barrier must not wait behind a full channel to be
//! *enqueued*; in aligned mode it is still delivered in order, after the records before it).
//!
//! Aligning a barrier blocks the channel it came on: the task stops taking events from it (the
//! receiver passes a mask to [`Gate::recv`]), the channel fills and backpressures its source,
//! and nothing is copied aside. This is Flink's aligned barrier handler. The next issue's
//! unaligned mode fits here: [`Gate::send_first`] lets a barrier overtake what is queued, and
//! [`Gate::queued`] hands out the queued buffers, which are bytes already, as channel state.
//!
//! The control queue brings the task what the coordinator says (a checkpoint completed, a
//! barrier for a task whose inputs have all ended, finish, fail) through the same wait, so a task
//! sleeps in exactly one place.

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::Duration,
};

use cairn_plugin_api::CheckpointLocation;

use super::codec::Buffer;

/// A checkpoint barrier: the id, and where its state goes.
pub(crate) struct Barrier {
    pub(crate) id: u64,
    pub(crate) location: Arc<dyn CheckpointLocation>,
    /// Whether it is a savepoint.
    pub(crate) savepoint: bool,
    /// How keyed tasks write their state for it (whole, or incremental on a base).
    pub(crate) write: super::incremental::StateWrite,
}

/// What flows through a channel.
pub(crate) enum Event {
    Records(Buffer),
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
    Event(usize, Event),
    /// Nothing within the timeout.
    Idle,
    /// The gate was closed (the attempt is stopping).
    Closed,
}

/// The gate was closed: the attempt is stopping.
#[derive(Debug)]
pub(crate) struct Closed;

struct Channel {
    queue: VecDeque<Event>,
    bytes: usize,
}

struct Inner {
    channels: Vec<Channel>,
    control: VecDeque<Control>,
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
                closed: false,
                next: 0,
            }),
            readable: Condvar::new(),
            writable: Condvar::new(),
            capacity,
        })
    }

    /// Append an event to channel `ch`, waiting while its records fill the channel.
    pub(crate) fn send(&self, ch: usize, event: Event) -> Result<(), Closed> {
        let mut g = lock(&self.inner);
        if let Event::Records(_) = event {
            while !g.closed && g.channels[ch].bytes >= self.capacity {
                g = self.writable.wait(g).unwrap_or_else(|p| p.into_inner());
            }
        }
        if g.closed {
            return Err(Closed);
        }
        let c = &mut g.channels[ch];
        if let Event::Records(b) = &event {
            c.bytes += b.bytes.len();
        }
        c.queue.push_back(event);
        drop(g);
        self.readable.notify_one();
        Ok(())
    }

    /// Put an event at the front of channel `ch`, ahead of everything queued (a barrier that
    /// overtakes buffered records, for unaligned checkpoints).
    #[allow(dead_code)] // reason: the entry point of unaligned checkpoints (the next issue)
    pub(crate) fn send_first(&self, ch: usize, event: Event) -> Result<(), Closed> {
        let mut g = lock(&self.inner);
        if g.closed {
            return Err(Closed);
        }
        g.channels[ch].queue.push_front(event);
        drop(g);
        self.readable.notify_one();
        Ok(())
    }

    /// The encoded records queued in channel `ch`, in order, without taking them (channel
    /// state for unaligned checkpoints).
    #[allow(dead_code)] // reason: the entry point of unaligned checkpoints (the next issue)
    pub(crate) fn queued(&self, ch: usize) -> Vec<Vec<u8>> {
        lock(&self.inner).channels[ch]
            .queue
            .iter()
            .filter_map(|e| match e {
                Event::Records(b) => Some(b.bytes.clone()),
                _ => None,
            })
            .collect()
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

    /// The next control message, or else the next event of a channel not `blocked`, taken
    /// round-robin; waits at most `timeout`.
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
            g = self
                .readable
                .wait_timeout(g, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: u32, bytes: usize) -> Event {
        Event::Records(Buffer {
            bytes: vec![0; bytes],
            records: n,
        })
    }

    #[test]
    fn blocked_channels_are_skipped_and_order_is_kept() {
        let gate = Gate::new(2, 1 << 20);
        gate.send(0, records(1, 1)).unwrap();
        gate.send(0, Event::End).unwrap();
        gate.send(1, records(2, 1)).unwrap();
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
        gate.send(0, records(1, 1)).unwrap();
        assert!(matches!(
            gate.recv(&[false, false], Duration::ZERO),
            Input::Control(Control::Complete(3))
        ));
    }

    #[test]
    fn a_full_channel_backpressures_until_read_or_closed() {
        let gate = Gate::new(1, 10);
        gate.send(0, records(1, 10)).unwrap();
        let g = gate.clone();
        let sender = std::thread::spawn(move || g.send(0, records(1, 10)).is_ok());
        // The second send waits; reading the first lets it through.
        assert!(matches!(
            gate.recv(&[false], Duration::from_secs(5)),
            Input::Event(0, _)
        ));
        assert!(sender.join().unwrap());
        let g = gate.clone();
        let blocked = std::thread::spawn(move || g.send(0, records(1, 10)).is_err());
        gate.close();
        assert!(blocked.join().unwrap());
        assert!(matches!(gate.recv(&[false], Duration::ZERO), Input::Closed));
    }

    #[test]
    fn a_barrier_can_overtake_queued_records() {
        let gate = Gate::new(1, 1 << 20);
        gate.send(0, records(5, 3)).unwrap();
        assert_eq!(gate.queued(0), vec![vec![0u8; 3]]);
        gate.send_first(0, Event::End).unwrap();
        assert!(matches!(
            gate.recv(&[false], Duration::ZERO),
            Input::Event(0, Event::End)
        ));
    }
}
