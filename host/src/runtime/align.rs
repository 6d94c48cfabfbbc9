//! A keyed task's barrier handling for every mode, as a state machine without threads or I/O:
//! the task feeds it what its gate delivers and does what it answers ([`Step`]), so every mode is
//! tested here event by event.
//!
//! - **Aligned** (exactly-once, and every savepoint): a barrier blocks the channel it came on;
//!   once every input that has not ended delivered it, the task snapshots and unblocks them all
//!   (Flink's `SingleCheckpointBarrierHandler`, aligned).
//! - **Unaligned**: the first barrier of a checkpoint to reach the task (overtaking, so at once)
//!   makes the task snapshot. From then on, until each other input's barrier arrives (or the
//!   input ends), every buffer the task takes from that input is **channel state**, and so are
//!   the buffers each barrier overtook. The buffer being processed when the barrier came, if it
//!   was interrupted, is channel state first. Nothing is ever blocked.
//! - **Aligned, then unaligned** (`aligned-checkpoint-timeout`): aligned as above; if an
//!   overtaking barrier of the checkpoint arrives (the gate switched it when the timeout passed),
//!   the task snapshots then: inputs that had delivered the barrier are unblocked (what follows
//!   their barrier is after the checkpoint), the others are recorded as in unaligned mode.
//! - **At-least-once**: barriers are counted, never blocking: the task snapshots when the last
//!   input delivers barrier `n`; several checkpoints may be open at once.
//!
//! A newer barrier while an exactly-once checkpoint is still open abandons it (its coordinator
//! gave it up already, since unaligned checkpoints are one at a time). Channel state counts
//! against the checkpoint's `max-in-flight-data`, shared by all its tasks: past it, the task
//! declines the checkpoint and drops what it recorded.
//!
//! The snapshot's upload waits for an [`Alignment`]: at once for an aligned snapshot, and when
//! the channel state is complete for an unaligned one.

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use bytesize::ByteSize;
use crossbeam_channel::{bounded, Receiver, Sender};

use super::{
    codec::Buffer,
    exchange::{Barrier, BarrierKind},
};
use crate::{config::format_size, metadata::Barriers};

/// Part of an exchange buffer: the records from byte `offset` on (shared, not copied).
#[derive(Clone)]
pub(crate) struct Segment {
    pub(crate) buffer: Arc<Buffer>,
    pub(crate) offset: usize,
    pub(crate) records: u32,
}

impl Segment {
    /// A whole buffer.
    pub(crate) fn whole(buffer: Arc<Buffer>) -> Self {
        let records = buffer.records;
        Segment {
            buffer,
            offset: 0,
            records,
        }
    }

    /// The encoded records.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buffer.bytes[self.offset..]
    }
}

/// How the barriers of one checkpoint went at one task, and its channel state.
pub(crate) struct Alignment {
    pub(crate) mode: Barriers,
    /// Trigger to the first barrier at this task.
    pub(crate) start_delay: Duration,
    /// First barrier to last at this task.
    pub(crate) alignment: Duration,
    /// Each input channel's in-flight records, in their order.
    pub(crate) channels: Vec<Vec<Segment>>,
    /// Bytes queued in the task's inputs when it took its unaligned snapshot.
    pub(crate) queued_bytes: u64,
}

/// What the aligner asks of its task.
pub(crate) enum Step {
    /// Take the snapshot of this checkpoint now; its upload waits on `done`.
    Snapshot {
        barrier: Arc<Barrier>,
        done: Receiver<Result<Alignment, String>>,
    },
    /// Decline this checkpoint (tell the coordinator).
    Decline { id: u64, reason: String },
}

/// An exactly-once checkpoint this task is aligning or recording.
struct Open {
    barrier: Arc<Barrier>,
    first: Instant,
    /// The channels that delivered the barrier.
    delivered: Vec<bool>,
    recording: Option<Recording>,
}

/// The channel state of an unaligned snapshot, while it is being collected.
struct Recording {
    mode: Barriers,
    channels: Vec<Vec<Segment>>,
    /// The channels whose records are still channel state.
    capturing: Vec<bool>,
    queued_bytes: u64,
    done: Sender<Result<Alignment, String>>,
}

/// An at-least-once checkpoint whose barriers are still arriving.
struct Loose {
    barrier: Arc<Barrier>,
    first: Instant,
    delivered: Vec<bool>,
}

/// One keyed task's barrier handler (see the module docs).
pub(crate) struct Aligner {
    subtask: u32,
    ended: Vec<bool>,
    blocked: Vec<bool>,
    /// Barriers up to this id are ignored: taken, declined, abandoned, or before the restore.
    last: u64,
    open: Option<Open>,
    loose: BTreeMap<u64, Loose>,
}

impl Aligner {
    /// The handler of keyed task `subtask` with `inputs` channels, restored from checkpoint
    /// `last` (0 for a fresh start).
    pub(crate) fn new(subtask: u32, inputs: usize, last: u64) -> Self {
        Aligner {
            subtask,
            ended: vec![false; inputs],
            blocked: vec![false; inputs],
            last,
            open: None,
            loose: BTreeMap::new(),
        }
    }

    /// The channels the task must not read now.
    pub(crate) fn blocked(&self) -> &[bool] {
        &self.blocked
    }

    /// Whether every input ended and no checkpoint is open.
    pub(crate) fn drained(&self) -> bool {
        self.ended.iter().all(|&e| e) && self.open.is_none() && self.loose.is_empty()
    }

    fn stale(&self, b: &Barrier) -> bool {
        b.id <= self.last || self.open.as_ref().is_some_and(|o| o.barrier.id > b.id)
    }

    /// Give up an open checkpoint older than `id` (its barrier will never complete here).
    fn supersede(&mut self, id: u64) {
        if self.open.as_ref().is_some_and(|o| o.barrier.id < id) {
            if let Some(Open {
                barrier,
                recording: Some(r),
                ..
            }) = self.open.take()
            {
                let _ = r.done.send(Err(format!(
                    "keyed task {}: checkpoint {} was given up for checkpoint {id}",
                    self.subtask, barrier.id
                )));
            }
            self.open = None;
            self.blocked.iter_mut().for_each(|b| *b = false);
        }
    }

    /// A barrier that arrived in order on channel `ch`.
    pub(crate) fn on_barrier(&mut self, ch: usize, b: Arc<Barrier>, now: Instant) -> Vec<Step> {
        if self.stale(&b) {
            return Vec::new();
        }
        match b.kind {
            BarrierKind::AtLeastOnce => {
                let n = self.ended.len();
                self.loose
                    .entry(b.id)
                    .or_insert_with(|| Loose {
                        barrier: b,
                        first: now,
                        delivered: vec![false; n],
                    })
                    .delivered[ch] = true;
                self.complete_loose(now)
            }
            BarrierKind::Unaligned => self.on_priority(ch, b, Vec::new(), None, 0, now),
            BarrierKind::Aligned | BarrierKind::AlignedThenUnaligned { .. } => {
                self.supersede(b.id);
                let n = self.ended.len();
                let open = self.open.get_or_insert_with(|| Open {
                    barrier: b,
                    first: now,
                    delivered: vec![false; n],
                    recording: None,
                });
                open.delivered[ch] = true;
                match &mut open.recording {
                    // Switched already: everything before this barrier was recorded.
                    Some(r) => {
                        r.capturing[ch] = false;
                        self.finish_if_complete(now)
                    }
                    None => {
                        self.blocked[ch] = true;
                        self.snapshot_if_aligned(now)
                    }
                }
            }
        }
    }

    /// A barrier that overtook the records queued on channel `ch` (`overtaken`, oldest first).
    /// `current` is the rest of the buffer the task was processing when it stopped for the
    /// barrier, and its channel; `queued_bytes` what the task's inputs hold now.
    pub(crate) fn on_priority(
        &mut self,
        ch: usize,
        b: Arc<Barrier>,
        overtaken: Vec<Arc<Buffer>>,
        current: Option<(usize, Segment)>,
        queued_bytes: u64,
        now: Instant,
    ) -> Vec<Step> {
        if self.stale(&b) {
            return Vec::new();
        }
        self.supersede(b.id);
        let n = self.ended.len();
        let mut steps = Vec::new();
        let ended = self.ended.clone();
        let open = self.open.get_or_insert_with(|| Open {
            barrier: b.clone(),
            first: now,
            delivered: vec![false; n],
            recording: None,
        });
        let mut added = 0u64;
        if open.recording.is_none() {
            // The snapshot is now: inputs that delivered the barrier in order are past it; the
            // others' records up to their barrier are channel state.
            let capturing: Vec<bool> = (0..n).map(|c| !ended[c] && !open.delivered[c]).collect();
            let (done, rx) = bounded(1);
            let mut r = Recording {
                mode: match b.kind {
                    BarrierKind::Unaligned => Barriers::Unaligned,
                    _ => Barriers::UnalignedAfterTimeout,
                },
                channels: vec![Vec::new(); n],
                capturing,
                queued_bytes: queued_bytes
                    + current.as_ref().map_or(0, |(_, s)| s.bytes().len() as u64),
                done,
            };
            if let Some((c, segment)) = current {
                if r.capturing[c] {
                    added += segment.bytes().len() as u64;
                    r.channels[c].push(segment);
                }
            }
            open.recording = Some(r);
            self.blocked.iter_mut().for_each(|b| *b = false);
            steps.push(Step::Snapshot {
                barrier: open.barrier.clone(),
                done: rx,
            });
        }
        open.delivered[ch] = true;
        let r = open.recording.as_mut().expect("recording");
        if r.capturing[ch] {
            for buffer in overtaken {
                added += buffer.bytes.len() as u64;
                r.channels[ch].push(Segment::whole(buffer));
            }
            r.capturing[ch] = false;
        }
        if let Some(decline) = self.count(added) {
            steps.push(decline);
            return steps;
        }
        steps.extend(self.finish_if_complete(now));
        steps
    }

    /// A buffer the task is about to process from channel `ch`: channel state if that channel's
    /// barrier is still due after an unaligned snapshot.
    pub(crate) fn on_records(&mut self, ch: usize, segment: &Segment) -> Vec<Step> {
        let Some(r) = self.open.as_mut().and_then(|o| o.recording.as_mut()) else {
            return Vec::new();
        };
        if !r.capturing[ch] {
            return Vec::new();
        }
        r.channels[ch].push(segment.clone());
        self.count(segment.bytes().len() as u64)
            .into_iter()
            .collect()
    }

    /// Channel `ch` ended.
    pub(crate) fn on_end(&mut self, ch: usize, now: Instant) -> Vec<Step> {
        self.ended[ch] = true;
        self.blocked[ch] = false;
        let mut steps = self.complete_loose(now);
        match self.open.as_mut() {
            Some(Open {
                recording: Some(r), ..
            }) => {
                r.capturing[ch] = false;
                steps.extend(self.finish_if_complete(now));
            }
            Some(_) => steps.extend(self.snapshot_if_aligned(now)),
            None => {}
        }
        steps
    }

    /// A barrier from the coordinator, for a task whose inputs have all ended.
    pub(crate) fn on_direct(&mut self, b: Arc<Barrier>, now: Instant) -> Vec<Step> {
        if self.stale(&b) {
            return Vec::new();
        }
        self.supersede(b.id);
        self.last = b.id;
        let mode = match b.kind {
            BarrierKind::Unaligned => Barriers::Unaligned,
            BarrierKind::AtLeastOnce => Barriers::AtLeastOnce,
            BarrierKind::Aligned | BarrierKind::AlignedThenUnaligned { .. } => Barriers::Aligned,
        };
        let start_delay = now.saturating_duration_since(b.triggered);
        vec![self.snapshot_now(b, mode, start_delay, Duration::ZERO)]
    }

    /// Add `bytes` of channel state to the open checkpoint's count; past its bound, decline it.
    fn count(&mut self, bytes: u64) -> Option<Step> {
        let open = self.open.as_ref()?;
        let b = &open.barrier;
        let total = b.in_flight.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total <= b.max_in_flight {
            return None;
        }
        let reason = format!(
            "keyed task {}: checkpoint {}'s in-flight data (channel state) reached {} over its \
             tasks, past checkpointing.max-in-flight-data = {}; raise the bound, or let the \
             slow operator catch up",
            self.subtask,
            b.id,
            ByteSize(total).display().iec(),
            format_size(b.max_in_flight)
        );
        let id = b.id;
        if let Some(Open {
            recording: Some(r), ..
        }) = self.open.take()
        {
            let _ = r.done.send(Err(reason.clone()));
        }
        self.last = id;
        Some(Step::Decline { id, reason })
    }

    fn snapshot_now(
        &self,
        barrier: Arc<Barrier>,
        mode: Barriers,
        start_delay: Duration,
        alignment: Duration,
    ) -> Step {
        let (done, rx) = bounded(1);
        let _ = done.send(Ok(Alignment {
            mode,
            start_delay,
            alignment,
            channels: Vec::new(),
            queued_bytes: 0,
        }));
        Step::Snapshot { barrier, done: rx }
    }

    fn snapshot_if_aligned(&mut self, now: Instant) -> Vec<Step> {
        let Some(open) = &self.open else {
            return Vec::new();
        };
        if open.recording.is_some()
            || !(0..self.ended.len()).all(|c| open.delivered[c] || self.ended[c])
        {
            return Vec::new();
        }
        let open = self.open.take().expect("open");
        self.blocked.iter_mut().for_each(|b| *b = false);
        self.last = open.barrier.id;
        let start_delay = open.first.saturating_duration_since(open.barrier.triggered);
        vec![self.snapshot_now(
            open.barrier,
            Barriers::Aligned,
            start_delay,
            now.saturating_duration_since(open.first),
        )]
    }

    fn finish_if_complete(&mut self, now: Instant) -> Vec<Step> {
        let complete = self
            .open
            .as_ref()
            .and_then(|o| o.recording.as_ref())
            .is_some_and(|r| r.capturing.iter().all(|&c| !c));
        if !complete {
            return Vec::new();
        }
        let open = self.open.take().expect("open");
        let r = open.recording.expect("recording");
        self.last = open.barrier.id;
        let _ = r.done.send(Ok(Alignment {
            mode: r.mode,
            start_delay: open.first.saturating_duration_since(open.barrier.triggered),
            alignment: now.saturating_duration_since(open.first),
            channels: r.channels,
            queued_bytes: r.queued_bytes,
        }));
        Vec::new()
    }

    fn complete_loose(&mut self, now: Instant) -> Vec<Step> {
        let mut steps = Vec::new();
        let ids: Vec<u64> = self.loose.keys().copied().collect();
        for id in ids {
            if id <= self.last {
                self.loose.remove(&id);
                continue;
            }
            let l = &self.loose[&id];
            if !(0..self.ended.len()).all(|c| l.delivered[c] || self.ended[c]) {
                continue;
            }
            let l = self.loose.remove(&id).expect("present");
            self.last = id;
            let start_delay = l.first.saturating_duration_since(l.barrier.triggered);
            steps.push(self.snapshot_now(
                l.barrier,
                Barriers::AtLeastOnce,
                start_delay,
                now.saturating_duration_since(l.first),
            ));
        }
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::exchange::testing::barrier;

    fn buf(tag: u8, records: u32) -> Arc<Buffer> {
        Arc::new(Buffer {
            bytes: vec![tag; 4],
            records,
        })
    }

    /// The one snapshot among `steps`, and what its upload receives.
    fn snapshot(steps: Vec<Step>) -> (u64, Receiver<Result<Alignment, String>>) {
        let mut snaps: Vec<_> = steps
            .into_iter()
            .filter_map(|s| match s {
                Step::Snapshot { barrier, done } => Some((barrier.id, done)),
                Step::Decline { .. } => None,
            })
            .collect();
        assert_eq!(snaps.len(), 1, "exactly one snapshot");
        snaps.pop().unwrap()
    }

    fn tags(a: &Alignment) -> Vec<Vec<u8>> {
        a.channels
            .iter()
            .map(|c| c.iter().map(|s| s.buffer.bytes[0]).collect())
            .collect()
    }

    #[test]
    fn aligned_blocks_each_input_until_all_delivered() {
        let now = Instant::now();
        let mut a = Aligner::new(0, 3, 0);
        let b = barrier(1, BarrierKind::Aligned);
        assert!(a.on_barrier(0, b.clone(), now).is_empty());
        assert_eq!(a.blocked(), &[true, false, false]);
        assert!(a.on_records(1, &Segment::whole(buf(1, 1))).is_empty());
        assert!(a.on_end(2, now).is_empty());
        let (id, done) = snapshot(a.on_barrier(1, b, now));
        assert_eq!(id, 1);
        assert_eq!(a.blocked(), &[false, false, false]);
        let al = done.recv().unwrap().unwrap();
        assert_eq!(al.mode, Barriers::Aligned);
        assert!(al.channels.is_empty());
        // An old barrier is ignored.
        assert!(a
            .on_barrier(0, barrier(1, BarrierKind::Aligned), now)
            .is_empty());
    }

    #[test]
    fn at_least_once_never_blocks_and_snapshots_at_the_last_barrier() {
        let now = Instant::now();
        let mut a = Aligner::new(0, 2, 0);
        let (b1, b2) = (
            barrier(1, BarrierKind::AtLeastOnce),
            barrier(2, BarrierKind::AtLeastOnce),
        );
        assert!(a.on_barrier(0, b1.clone(), now).is_empty());
        assert_eq!(a.blocked(), &[false, false], "input 0 keeps flowing");
        assert!(a.on_barrier(0, b2.clone(), now).is_empty());
        let (id, done) = snapshot(a.on_barrier(1, b1, now));
        assert_eq!(id, 1);
        assert_eq!(done.recv().unwrap().unwrap().mode, Barriers::AtLeastOnce);
        let (id, _) = snapshot(a.on_barrier(1, b2, now));
        assert_eq!(id, 2);
        assert!(!a.drained(), "its inputs have not ended");
        assert!(a.on_end(0, now).is_empty() && a.on_end(1, now).is_empty());
        assert!(a.drained());
    }

    /// The channel state of every channel, in order: the rest of the interrupted buffer, what
    /// the task took from an input before that input's barrier, then what each barrier
    /// overtook.
    #[test]
    fn unaligned_records_each_channel_in_order_until_its_barrier() {
        let now = Instant::now();
        let mut a = Aligner::new(0, 3, 0);
        let b = barrier(5, BarrierKind::Unaligned);
        let rest = Segment {
            buffer: buf(9, 4),
            offset: 1,
            records: 2,
        };
        // The barrier reaches the task on channel 1, while it was in a buffer from channel 2.
        let (id, done) = snapshot(a.on_priority(
            1,
            b.clone(),
            vec![buf(10, 1), buf(11, 1)],
            Some((2, rest)),
            100,
            now,
        ));
        assert_eq!(id, 5);
        assert_eq!(a.blocked(), &[false, false, false], "nothing is blocked");
        // Channel 0 and 2 go on; what they deliver is channel state until their barrier.
        assert!(a.on_records(0, &Segment::whole(buf(20, 1))).is_empty());
        assert!(a.on_records(2, &Segment::whole(buf(21, 1))).is_empty());
        assert!(a.on_records(1, &Segment::whole(buf(99, 1))).is_empty());
        assert!(done.try_recv().is_err(), "not complete yet");
        assert!(a
            .on_priority(0, b.clone(), vec![buf(30, 1)], None, 0, now)
            .is_empty());
        assert!(a.on_records(0, &Segment::whole(buf(98, 1))).is_empty());
        assert!(a.on_end(2, now).is_empty());
        let al = done.recv().unwrap().unwrap();
        assert_eq!(al.mode, Barriers::Unaligned);
        assert_eq!(
            tags(&al),
            vec![vec![20, 30], vec![10, 11], vec![9, 21]],
            "each channel's records in their order; none after its barrier"
        );
        assert_eq!(
            al.channels[2][0].bytes().len(),
            3,
            "the rest of the buffer only"
        );
        assert_eq!(al.queued_bytes, 103);
        assert_eq!(b.in_flight.load(Ordering::Relaxed), 3 + 4 * 5);
    }

    #[test]
    fn a_switch_unblocks_what_delivered_and_records_the_rest() {
        let now = Instant::now();
        let mut a = Aligner::new(0, 3, 0);
        let b = barrier(
            2,
            BarrierKind::AlignedThenUnaligned {
                switch_at: now + Duration::from_millis(50),
            },
        );
        assert!(a.on_barrier(0, b.clone(), now).is_empty());
        assert_eq!(a.blocked(), &[true, false, false]);
        assert!(a.on_records(1, &Segment::whole(buf(1, 1))).is_empty());
        // The timeout passed: channel 2's barrier overtakes what is queued there.
        let (_, done) = snapshot(a.on_priority(2, b.clone(), vec![buf(7, 1)], None, 0, now));
        assert_eq!(a.blocked(), &[false, false, false]);
        assert!(a.on_records(0, &Segment::whole(buf(50, 1))).is_empty());
        assert!(a.on_records(1, &Segment::whole(buf(8, 1))).is_empty());
        assert!(a
            .on_priority(1, b, vec![buf(9, 1)], None, 0, now)
            .is_empty());
        let al = done.recv().unwrap().unwrap();
        assert_eq!(al.mode, Barriers::UnalignedAfterTimeout);
        assert_eq!(tags(&al), vec![vec![], vec![8, 9], vec![7]]);
    }

    #[test]
    fn past_the_bound_the_task_declines_and_drops_its_channel_state() {
        let now = Instant::now();
        let mut a = Aligner::new(3, 2, 0);
        let b = Arc::new(Barrier {
            max_in_flight: 6,
            ..Arc::try_unwrap(barrier(4, BarrierKind::Unaligned))
                .ok()
                .unwrap()
        });
        let steps = a.on_priority(0, b.clone(), vec![buf(1, 1)], None, 0, now);
        let (_, done) = snapshot(steps);
        let steps = a.on_records(1, &Segment::whole(buf(2, 1)));
        match steps.as_slice() {
            [Step::Decline { id: 4, reason }] => {
                assert!(reason.contains("max-in-flight-data = 6B;"), "{reason}");
                assert!(reason.starts_with("keyed task 3: checkpoint 4"), "{reason}");
            }
            _ => panic!("no decline"),
        }
        assert!(done.recv().unwrap().is_err(), "the upload is told");
        // The rest of checkpoint 4 is ignored; the next one starts afresh.
        assert!(a.on_priority(1, b, vec![], None, 0, now).is_empty());
        let (id, _) =
            snapshot(a.on_priority(0, barrier(5, BarrierKind::Unaligned), vec![], None, 0, now));
        assert_eq!(id, 5);
    }

    #[test]
    fn a_newer_barrier_gives_up_the_open_checkpoint() {
        let now = Instant::now();
        let mut a = Aligner::new(0, 2, 0);
        let (_, done) =
            snapshot(a.on_priority(0, barrier(1, BarrierKind::Unaligned), vec![], None, 0, now));
        let (id, _) =
            snapshot(a.on_priority(1, barrier(2, BarrierKind::Unaligned), vec![], None, 0, now));
        assert_eq!(id, 2);
        assert!(done.recv().unwrap().err().unwrap().contains("given up"));
    }

    #[test]
    fn a_restored_task_ignores_barriers_up_to_its_checkpoint() {
        let now = Instant::now();
        let mut a = Aligner::new(0, 1, 7);
        assert!(a
            .on_barrier(0, barrier(7, BarrierKind::Aligned), now)
            .is_empty());
        let (id, done) = snapshot(a.on_direct(barrier(8, BarrierKind::Unaligned), now));
        assert_eq!(id, 8);
        assert_eq!(done.recv().unwrap().unwrap().mode, Barriers::Unaligned);
    }
}
