//! The checkpoint coordinator's decisions, as a state machine with no clock and no threads of its
//! own (Flink's `CheckpointCoordinator`, minus the I/O).
//!
//! The runtime tells it what happened (`poll` with the current time, `on_ack`, `on_failed`,
//! `on_committed`) and it answers with what to do: trigger checkpoint N, expire checkpoint N, fail
//! the job over, discard subsumed checkpoints. Time is passed in as a [`Duration`] since an
//! arbitrary origin, so tests drive it with a hand-moved clock and never depend on the machine's
//! speed.
//!
//! The rules:
//! - **Triggering.** A periodic checkpoint is due every `base_interval = max(interval,
//!   min_pause)` after the previous trigger; it waits while `max_concurrent` checkpoints are
//!   pending, and until `min_pause` has passed since the last completion. A requested savepoint
//!   goes first: it ignores the interval and the pause, and takes the next free slot ahead of any
//!   periodic checkpoint.
//! - **Failures.** A pending checkpoint older than `timeout` expires. Declines, expiries, I/O and
//!   commit errors are each counted once per checkpoint. A completed checkpoint resets the count.
//!   A count above `tolerable_failures` fails the job over.
//! - **Retention.** Completed checkpoints beyond `num_retained` are subsumed, oldest first, and
//!   handed back for discarding (the runtime discards them in the background). Savepoints are
//!   never subsumed: they belong to the user.

use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use crate::config::CheckpointingConfig;

/// The settings the coordinator needs, taken from `[checkpointing]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `max(interval, min_pause)`; `None` disables periodic checkpoints.
    pub base_interval: Option<Duration>,
    /// Minimum time between a completion and the next trigger.
    pub min_pause: Duration,
    /// Checkpoints pending at once.
    pub max_concurrent: u32,
    /// Age at which a pending checkpoint expires.
    pub timeout: Duration,
    /// Failures tolerated in a row; `None` means unlimited.
    pub tolerable_failures: Option<u32>,
    /// Completed checkpoints kept.
    pub num_retained: u32,
}

impl Policy {
    /// The policy of a `[checkpointing]` table.
    pub fn from_config(c: &CheckpointingConfig) -> Self {
        Policy {
            base_interval: c.base_interval(),
            min_pause: c.min_pause,
            max_concurrent: c.max_concurrent.max(1),
            timeout: c.timeout,
            tolerable_failures: c.tolerable_failures(),
            num_retained: c.num_retained.max(1),
        }
    }
}

/// What the coordinator asks the runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start checkpoint `id` (a savepoint if `savepoint`), injecting barriers at the sources.
    Trigger {
        /// The new checkpoint id.
        id: u64,
        /// Whether it is a savepoint.
        savepoint: bool,
    },
    /// Checkpoint `id` took longer than the timeout: abort it and clean its location.
    Expire {
        /// The expired checkpoint.
        id: u64,
    },
}

/// Why a checkpoint failed; counted once per checkpoint whatever the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureReason {
    /// A task declined it (for example a snapshot write failed).
    #[error("declined: {0}")]
    Declined(String),
    /// It expired.
    #[error("expired before every task acknowledged it")]
    Expired,
    /// Writing or committing its metadata failed.
    #[error("finalizing failed: {0}")]
    Finalize(String),
}

/// What a failure means for the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep running.
    Continue,
    /// Too many failures in a row: fail the job over.
    FailJob,
}

#[derive(Debug, Clone)]
struct Pending {
    started: Duration,
    savepoint: bool,
}

/// A completed checkpoint the coordinator retains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    /// Its id.
    pub id: u64,
    /// Its external pointer.
    pub pointer: String,
}

/// The coordinator's state.
#[derive(Debug)]
pub struct Coordinator {
    policy: Policy,
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    last_trigger: Option<Duration>,
    last_completion: Option<Duration>,
    consecutive_failures: u32,
    total_failures: u64,
    savepoint_requests: VecDeque<()>,
    /// A checkpoint asked for outside the schedule (the final checkpoint of a finished input).
    checkpoint_requested: bool,
    retained: VecDeque<Retained>,
}

impl Coordinator {
    /// A coordinator whose next checkpoint id is `next_id` (ids continue after a restart), with
    /// the already completed checkpoints `retained` (oldest first).
    pub fn new(policy: Policy, next_id: u64, retained: Vec<Retained>) -> Self {
        Coordinator {
            policy,
            next_id: next_id.max(1),
            pending: BTreeMap::new(),
            last_trigger: None,
            last_completion: None,
            consecutive_failures: 0,
            total_failures: 0,
            savepoint_requests: VecDeque::new(),
            checkpoint_requested: false,
            retained: retained.into(),
        }
    }

    /// Ask for a savepoint; it is triggered at the next `poll` with a free slot.
    pub fn request_savepoint(&mut self) {
        self.savepoint_requests.push_back(());
    }

    /// Ask for a checkpoint now, whatever the interval (and even with periodic checkpoints
    /// off): it is triggered at the next `poll` with a free slot, after any requested savepoint.
    /// The final checkpoint of a job whose input ended is one.
    pub fn request_checkpoint(&mut self) {
        self.checkpoint_requested = true;
    }

    /// The id the next triggered checkpoint will have.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Checkpoints in flight.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether `id` is in flight.
    pub fn is_pending(&self, id: u64) -> bool {
        self.pending.contains_key(&id)
    }

    /// Whether `id` is a pending savepoint.
    pub fn is_savepoint(&self, id: u64) -> bool {
        self.pending.get(&id).is_some_and(|p| p.savepoint)
    }

    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Failures since the start.
    pub fn total_failures(&self) -> u64 {
        self.total_failures
    }

    /// Completed checkpoints retained, oldest first.
    pub fn retained(&self) -> impl Iterator<Item = &Retained> {
        self.retained.iter()
    }

    /// The newest retained checkpoint.
    pub fn latest(&self) -> Option<&Retained> {
        self.retained.back()
    }

    /// What to do at time `now`: expire overdue checkpoints, then trigger what is due.
    pub fn poll(&mut self, now: Duration) -> Vec<Action> {
        let mut actions = Vec::new();
        let overdue: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.started) >= self.policy.timeout)
            .map(|(&id, _)| id)
            .collect();
        for id in overdue {
            actions.push(Action::Expire { id });
        }
        // Expired checkpoints leave their slot only when the runtime reports them failed, so a
        // trigger never races with the clean-up of the checkpoint it replaces.
        if self.pending.len() >= self.policy.max_concurrent as usize {
            return actions;
        }
        if self.savepoint_requests.pop_front().is_some() {
            actions.push(self.trigger(now, true));
            return actions;
        }
        if std::mem::take(&mut self.checkpoint_requested) || self.periodic_due(now) {
            actions.push(self.trigger(now, false));
        }
        actions
    }

    /// When `poll` may next have something to do, if anything is scheduled; the runtime sleeps
    /// until then (or until an acknowledgement arrives).
    pub fn next_wakeup(&self, now: Duration) -> Option<Duration> {
        let expiry = self
            .pending
            .values()
            .map(|p| p.started.saturating_add(self.policy.timeout))
            .min();
        let trigger = if self.pending.len() < self.policy.max_concurrent as usize {
            if !self.savepoint_requests.is_empty() || self.checkpoint_requested {
                Some(now)
            } else {
                self.periodic_due_at()
            }
        } else {
            None
        };
        [expiry, trigger].into_iter().flatten().min()
    }

    fn periodic_due_at(&self) -> Option<Duration> {
        let interval = self.policy.base_interval?;
        // Saturating: a duration near `Duration::MAX` (however it was configured) means "never",
        // not an overflow.
        let after_trigger = self
            .last_trigger
            .map_or(interval, |t| t.saturating_add(interval));
        let after_pause = self
            .last_completion
            .map_or(Duration::ZERO, |c| c.saturating_add(self.policy.min_pause));
        Some(after_trigger.max(after_pause))
    }

    fn periodic_due(&self, now: Duration) -> bool {
        self.periodic_due_at().is_some_and(|at| now >= at)
    }

    fn trigger(&mut self, now: Duration, savepoint: bool) -> Action {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(
            id,
            Pending {
                started: now,
                savepoint,
            },
        );
        if !savepoint {
            self.last_trigger = Some(now);
        }
        Action::Trigger { id, savepoint }
    }

    /// Checkpoint `id` failed (once per checkpoint: later reports for the same id are ignored).
    pub fn on_failed(&mut self, id: u64, reason: &FailureReason) -> Verdict {
        // Removing it from `pending` is what makes a second report of it a no-op.
        let Some(p) = self.pending.remove(&id) else {
            return Verdict::Continue;
        };
        // A failed savepoint is reported to whoever asked for it; it does not count towards
        // the job's tolerable checkpoint failures (as in Flink).
        if p.savepoint {
            return Verdict::Continue;
        }
        tracing::debug!(id, ?reason, "checkpoint failed");
        self.consecutive_failures += 1;
        self.total_failures += 1;
        match self.policy.tolerable_failures {
            Some(tolerable) if self.consecutive_failures > tolerable => Verdict::FailJob,
            _ => Verdict::Continue,
        }
    }

    /// Checkpoint `id` committed at `now` with `pointer`. Returns the checkpoints it subsumes,
    /// oldest first, for the runtime to discard. Savepoints are not retained or subsumed.
    pub fn on_committed(&mut self, id: u64, pointer: String, now: Duration) -> Vec<Retained> {
        let Some(p) = self.pending.remove(&id) else {
            return Vec::new();
        };
        self.consecutive_failures = 0;
        self.last_completion = Some(now);
        if p.savepoint {
            return Vec::new();
        }
        self.retained.push_back(Retained { id, pointer });
        let mut subsumed = Vec::new();
        while self.retained.len() > self.policy.num_retained as usize {
            subsumed.extend(self.retained.pop_front());
        }
        subsumed
    }

    /// Forget everything in flight (the job is failing over or stopping), and start counting
    /// failures afresh, as Flink's failure manager does once it has failed the job. Returns the
    /// aborted ids.
    pub fn abort_all(&mut self) -> Vec<u64> {
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        self.pending.clear();
        self.consecutive_failures = 0;
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> Policy {
        Policy {
            base_interval: Some(ms(100)),
            min_pause: ms(0),
            max_concurrent: 1,
            timeout: ms(1000),
            tolerable_failures: Some(0),
            num_retained: 1,
        }
    }

    fn triggered(actions: &[Action]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Trigger { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn triggers_every_interval_and_waits_for_a_free_slot() {
        let mut c = Coordinator::new(policy(), 1, vec![]);
        assert!(c.poll(ms(99)).is_empty());
        assert_eq!(
            c.poll(ms(100)),
            vec![Action::Trigger {
                id: 1,
                savepoint: false
            }]
        );
        // max-concurrent = 1: nothing while 1 is pending, however late.
        assert!(c.poll(ms(500)).is_empty());
        c.on_committed(1, "p1".into(), ms(510));
        assert_eq!(triggered(&c.poll(ms(510))), vec![2]);
    }

    #[test]
    fn max_concurrent_allows_overlap() {
        let mut c = Coordinator::new(
            Policy {
                max_concurrent: 2,
                ..policy()
            },
            1,
            vec![],
        );
        assert_eq!(triggered(&c.poll(ms(100))), vec![1]);
        assert_eq!(triggered(&c.poll(ms(200))), vec![2]);
        assert!(c.poll(ms(300)).is_empty());
        c.on_committed(1, "p".into(), ms(310));
        assert_eq!(triggered(&c.poll(ms(310))), vec![3]);
    }

    #[test]
    fn min_pause_counts_from_the_last_completion() {
        let p = Policy {
            min_pause: ms(300),
            base_interval: Some(ms(300)),
            ..policy()
        };
        let mut c = Coordinator::new(p, 1, vec![]);
        assert_eq!(triggered(&c.poll(ms(300))), vec![1]);
        c.on_committed(1, "p".into(), ms(550));
        // Interval alone would allow 600; the pause after completing at 550 says 850.
        assert!(c.poll(ms(600)).is_empty());
        assert!(c.poll(ms(849)).is_empty());
        assert_eq!(triggered(&c.poll(ms(850))), vec![2]);
        // With checkpoint 2 pending and no free slot, the next thing that can happen is its expiry.
        assert_eq!(c.next_wakeup(ms(851)), Some(ms(1850)));
        c.on_committed(2, "p".into(), ms(900));
        assert_eq!(c.next_wakeup(ms(901)), Some(ms(1200)));
    }

    #[test]
    fn base_interval_is_the_larger_of_interval_and_min_pause() {
        let cfg = crate::config::CheckpointingConfig {
            interval: Some(ms(100)),
            min_pause: ms(400),
            ..crate::config::CheckpointingConfig::default()
        };
        assert_eq!(Policy::from_config(&cfg).base_interval, Some(ms(400)));
    }

    #[test]
    fn timeout_expires_and_counts_as_a_failure() {
        let p = Policy {
            tolerable_failures: Some(1),
            ..policy()
        };
        let mut c = Coordinator::new(p, 1, vec![]);
        assert_eq!(triggered(&c.poll(ms(100))), vec![1]);
        assert!(c.poll(ms(1099)).is_empty());
        assert_eq!(c.poll(ms(1100)), vec![Action::Expire { id: 1 }]);
        assert_eq!(c.on_failed(1, &FailureReason::Expired), Verdict::Continue);
        // A late decline of the same checkpoint is not counted again.
        assert_eq!(
            c.on_failed(1, &FailureReason::Declined("late".into())),
            Verdict::Continue
        );
        assert_eq!(c.consecutive_failures(), 1);
        assert_eq!(triggered(&c.poll(ms(1100))), vec![2]);
        assert_eq!(
            c.on_failed(2, &FailureReason::Finalize("disk full".into())),
            Verdict::FailJob
        );
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let p = Policy {
            tolerable_failures: Some(1),
            max_concurrent: 1,
            ..policy()
        };
        let mut c = Coordinator::new(p, 1, vec![]);
        c.poll(ms(100));
        assert_eq!(
            c.on_failed(1, &FailureReason::Declined("x".into())),
            Verdict::Continue
        );
        c.poll(ms(200));
        c.on_committed(2, "p2".into(), ms(210));
        assert_eq!(c.consecutive_failures(), 0);
        c.poll(ms(310));
        assert_eq!(c.on_failed(3, &FailureReason::Expired), Verdict::Continue);
        c.poll(ms(410));
        assert_eq!(c.on_failed(4, &FailureReason::Expired), Verdict::FailJob);
        assert_eq!(c.total_failures(), 3);
    }

    #[test]
    fn failing_over_starts_the_failure_count_afresh() {
        let p = Policy {
            tolerable_failures: Some(1),
            ..policy()
        };
        let mut c = Coordinator::new(p, 1, vec![]);
        c.poll(ms(100));
        assert_eq!(c.on_failed(1, &FailureReason::Expired), Verdict::Continue);
        c.poll(ms(200));
        assert_eq!(c.on_failed(2, &FailureReason::Expired), Verdict::FailJob);
        c.abort_all();
        c.poll(ms(300));
        assert_eq!(c.on_failed(3, &FailureReason::Expired), Verdict::Continue);
        assert_eq!(c.total_failures(), 3);
    }

    #[test]
    fn unlimited_tolerable_failures_never_fail_the_job() {
        let mut c = Coordinator::new(
            Policy {
                tolerable_failures: None,
                ..policy()
            },
            1,
            vec![],
        );
        for i in 1..=50u64 {
            // Each failure is of a checkpoint really pending: the one this poll triggered.
            assert_eq!(triggered(&c.poll(ms(100 * i))), vec![i], "poll {i}");
            assert_eq!(c.on_failed(i, &FailureReason::Expired), Verdict::Continue);
        }
        assert_eq!(c.total_failures(), 50);
    }

    #[test]
    fn retention_subsumes_the_oldest() {
        let p = Policy {
            num_retained: 2,
            ..policy()
        };
        let old = vec![Retained {
            id: 7,
            pointer: "p7".into(),
        }];
        let mut c = Coordinator::new(p, 8, old);
        c.poll(ms(100));
        assert!(c.on_committed(8, "p8".into(), ms(110)).is_empty());
        c.poll(ms(210));
        let subsumed = c.on_committed(9, "p9".into(), ms(220));
        assert_eq!(
            subsumed,
            vec![Retained {
                id: 7,
                pointer: "p7".into()
            }]
        );
        let kept: Vec<u64> = c.retained().map(|r| r.id).collect();
        assert_eq!(kept, vec![8, 9]);
        assert_eq!(c.latest().unwrap().pointer, "p9");
    }

    #[test]
    fn savepoints_go_first_and_are_never_subsumed() {
        let mut c = Coordinator::new(policy(), 1, vec![]);
        c.poll(ms(100));
        c.request_savepoint();
        // The slot is taken by checkpoint 1; the savepoint waits, then goes before the
        // periodic checkpoint that is also due.
        assert!(c.poll(ms(250)).is_empty());
        c.on_committed(1, "p1".into(), ms(260));
        assert_eq!(
            c.poll(ms(300)),
            vec![Action::Trigger {
                id: 2,
                savepoint: true
            }]
        );
        assert!(c.is_savepoint(2));
        assert!(c.on_committed(2, "sp".into(), ms(320)).is_empty());
        assert_eq!(
            c.latest().unwrap().id,
            1,
            "a savepoint is not a retained checkpoint"
        );
        c.request_savepoint();
        assert_eq!(
            c.poll(ms(320)),
            vec![Action::Trigger {
                id: 3,
                savepoint: true
            }]
        );
        assert_eq!(c.on_failed(3, &FailureReason::Expired), Verdict::Continue);
        assert_eq!(
            c.consecutive_failures(),
            0,
            "a failed savepoint is not a checkpoint failure"
        );
        assert_eq!(
            c.poll(ms(320)),
            vec![Action::Trigger {
                id: 4,
                savepoint: false
            }]
        );
    }

    #[test]
    fn huge_durations_never_overflow() {
        let huge = Duration::MAX;
        let mut c = Coordinator::new(
            Policy {
                base_interval: Some(huge),
                min_pause: huge,
                timeout: huge,
                ..policy()
            },
            1,
            vec![],
        );
        let late = Duration::from_secs(1 << 40);
        assert!(
            c.poll(late).is_empty(),
            "an interval of Duration::MAX is never due"
        );
        assert_eq!(c.next_wakeup(ms(0)), Some(huge));
        c.request_checkpoint();
        assert_eq!(triggered(&c.poll(ms(5))), vec![1]);
        assert_eq!(c.next_wakeup(ms(6)), Some(huge), "expiry saturates");
        assert!(
            c.poll(late).is_empty(),
            "a timeout of Duration::MAX never expires"
        );
        c.on_committed(1, "p".into(), ms(7));
        assert_eq!(c.next_wakeup(ms(8)), Some(huge));
    }

    #[test]
    fn a_requested_checkpoint_goes_at_once_even_when_periodic_ones_are_off() {
        let mut c = Coordinator::new(
            Policy {
                base_interval: None,
                ..policy()
            },
            3,
            vec![],
        );
        assert_eq!(c.next_id(), 3);
        c.request_checkpoint();
        assert_eq!(c.next_wakeup(ms(10)), Some(ms(10)));
        assert_eq!(
            c.poll(ms(10)),
            vec![Action::Trigger {
                id: 3,
                savepoint: false
            }]
        );
        assert!(c.poll(ms(20)).is_empty(), "one request, one checkpoint");
        assert_eq!(c.next_id(), 4);
    }

    #[test]
    fn disabled_checkpointing_never_triggers_but_savepoints_still_work() {
        let mut c = Coordinator::new(
            Policy {
                base_interval: None,
                ..policy()
            },
            5,
            vec![],
        );
        assert!(c.poll(ms(1_000_000)).is_empty());
        assert_eq!(c.next_wakeup(ms(0)), None);
        c.request_savepoint();
        assert_eq!(
            c.poll(ms(1_000_001)),
            vec![Action::Trigger {
                id: 5,
                savepoint: true
            }]
        );
    }
}
