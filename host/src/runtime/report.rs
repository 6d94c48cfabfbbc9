//! What a run takes from its caller and gives back: options, commands, live counters, progress,
//! checkpoint reports, the summary and the errors.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64},
        Arc, Mutex,
    },
    time::Duration,
};

use cairn_plugin_api::{CompletedCheckpoint, StorageError};
use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;

use crate::lease::{LeaseError, LeaseEvent, LeaseMonitor};
use crate::metadata::Barriers;

/// Where to restore from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreFrom {
    /// The newest completed checkpoint of the job.
    Latest,
    /// The checkpoint or savepoint at this pointer.
    Pointer(String),
}

/// What a run restored from at start, as [`RunOptions::on_restored`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restored {
    /// The id of the checkpoint or savepoint.
    pub id: u64,
    /// Its pointer.
    pub pointer: String,
    /// Whether it is a checkpoint or a savepoint.
    pub kind: crate::metadata::SnapshotKind,
}

/// When the run ends on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopWhen {
    /// Only when its input ends or it is stopped from outside.
    Never,
    /// After this long (a stop, as if cancelled).
    After(Duration),
    /// When the sources have emitted this many records in total (jobs whose source is bounded
    /// by a record count, such as the keyed counter).
    Records(u64),
}

/// What can be asked of a running job: the control socket (`crate::control`) and the signal
/// handlers of `cairn run` send these.
#[derive(Debug)]
pub enum Command {
    /// Stop now; completed checkpoints stay or go as `externalized-retention` says.
    Cancel,
    /// Take a savepoint (to `target`, or the default savepoint directory) and answer with it.
    Savepoint {
        /// The target directory, if not the default.
        target: Option<String>,
        /// Where the savepoint, or the reason it failed, goes.
        reply: Sender<Result<CheckpointReport, String>>,
    },
    /// Take a savepoint, then stop (Flink's stop-with-savepoint). `cairn stop --savepoint` and
    /// SIGTERM with `savepoints.on-sigterm` both send this; one sent while a stop is under way
    /// is answered with the same savepoint.
    StopWithSavepoint {
        /// The target directory, if not the default.
        target: Option<String>,
        /// Where the savepoint, or the reason it failed, goes.
        reply: Option<Sender<Result<CheckpointReport, String>>>,
        /// What to do if the savepoint fails.
        if_it_fails: IfSavepointFails,
    },
    /// Fail the job now, as a failing task would: it fails over as `[restart]` says (failure
    /// injection, like `[job] fail-after-records`, for tests and drills).
    Fail(String),
}

/// What a stop-with-savepoint does when its savepoint fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfSavepointFails {
    /// The job keeps running and the request fails (as Flink's `flink stop`): nothing is lost,
    /// and the operator can try again or cancel. `cairn stop --savepoint` does this.
    KeepRunning,
    /// The job stops without it (its retained checkpoints stay as `externalized-retention`
    /// says): SIGTERM does this, since whoever sent it wants the process gone.
    StopAnyway,
}

/// Where a run is, for `cairn status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Listing the job's checkpoints and taking hold of it.
    #[default]
    Starting,
    /// Reading the checkpoint it restores from.
    Restoring,
    /// Processing records and taking checkpoints.
    Running,
    /// An attempt failed: waiting for `restart.delay`, then restoring, before the next one.
    Restarting,
    /// Stopping: the input ended, or it was cancelled or stopped.
    Stopping,
}

/// A completed checkpoint or savepoint, as `cairn status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CompletedView {
    /// Its id.
    pub id: u64,
    /// Its pointer.
    pub pointer: String,
    /// Trigger to commit, in milliseconds.
    pub duration_ms: u64,
    /// Bytes of state its handles stand for.
    pub state_bytes: u64,
    /// When its commit returned (milliseconds since the epoch).
    pub completed_ms: u64,
}

/// A checkpoint or savepoint in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PendingView {
    /// Its id.
    pub id: u64,
    /// Whether it is a savepoint.
    pub savepoint: bool,
    /// When it was triggered (milliseconds since the epoch).
    pub triggered_ms: u64,
}

/// What the run publishes about itself for `cairn status`, as one consistent picture.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Live {
    /// Where the run is.
    pub phase: Phase,
    /// The attempt, from 1 (0 before the first starts).
    pub attempt: u32,
    /// Records per second over the last quarter of a second or so.
    pub records_per_sec: f64,
    /// Checkpoint failures in a row (what `tolerable-failures` is compared with).
    pub consecutive_failures: u32,
    /// The newest checkpoint this run completed.
    pub last_checkpoint: Option<CompletedView>,
    /// The newest savepoint this run took.
    pub last_savepoint: Option<CompletedView>,
    /// Checkpoints and savepoints in flight, oldest first.
    pub pending: Vec<PendingView>,
    /// Why the last checkpoint or attempt failed, whichever came last.
    pub last_failure: Option<String>,
}

/// Live figures of a run, readable from any thread: `cairn status` and the Prometheus
/// endpoint read them while the run writes them.
#[derive(Debug)]
pub struct Counters {
    /// Records processed by the keyed tasks (all attempts, replays included): Flink's
    /// `numRecordsIn` of the keyed operator.
    pub records: AtomicU64,
    /// Records the keyed tasks emitted to their sinks (all attempts): `numRecordsOut`.
    pub records_out: AtomicU64,
    /// Keys held by the keyed tasks of the current attempt.
    pub state_entries: AtomicU64,
    /// Checkpoints and savepoints completed.
    pub checkpoints_completed: AtomicU64,
    /// Checkpoint failures (expired ones included).
    pub checkpoints_failed: AtomicU64,
    /// Checkpoints that expired (`checkpointing.timeout`); also counted in `checkpoints_failed`.
    pub checkpoints_expired: AtomicU64,
    /// Failovers.
    pub failovers: AtomicU64,
    /// Checkpoints in flight.
    pub checkpoints_in_flight: AtomicU64,
    /// The last completed checkpoint's duration, trigger to commit, in microseconds.
    pub last_checkpoint_us: AtomicU64,
    /// The last completed checkpoint's state bytes.
    pub last_checkpoint_bytes: AtomicU64,
    /// The last completed checkpoint's channel-state bytes (in-flight records it holds).
    pub last_checkpoint_channel_state_bytes: AtomicU64,
    /// The last completed checkpoint's longest alignment (first to last barrier at a task), in
    /// microseconds.
    pub last_checkpoint_alignment_us: AtomicU64,
    /// Completed checkpoints that were unaligned (from the start or after the timeout).
    pub checkpoints_unaligned: AtomicU64,
    /// Microseconds from the start of the run to the first record a keyed task processed
    /// (`u64::MAX` until then).
    pub first_record_us: AtomicU64,
    /// When the run started (milliseconds since the epoch; 0 before).
    pub started_ms: AtomicU64,
    /// Distributions: checkpoint durations and sizes, alignment, plugin call latency.
    pub histograms: crate::metrics::Histograms,
    live: Mutex<Live>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            records: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            state_entries: AtomicU64::new(0),
            checkpoints_completed: AtomicU64::new(0),
            checkpoints_failed: AtomicU64::new(0),
            checkpoints_expired: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            checkpoints_in_flight: AtomicU64::new(0),
            last_checkpoint_us: AtomicU64::new(0),
            last_checkpoint_bytes: AtomicU64::new(0),
            last_checkpoint_channel_state_bytes: AtomicU64::new(0),
            last_checkpoint_alignment_us: AtomicU64::new(0),
            checkpoints_unaligned: AtomicU64::new(0),
            first_record_us: AtomicU64::new(u64::MAX),
            started_ms: AtomicU64::new(0),
            histograms: crate::metrics::Histograms::default(),
            live: Mutex::default(),
        }
    }
}

impl Counters {
    /// Fresh counters.
    pub fn new() -> Arc<Self> {
        Arc::new(Counters::default())
    }

    /// A copy of what the run publishes about itself.
    pub fn live(&self) -> Live {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Change what the run publishes, in one step.
    pub(crate) fn publish(&self, change: impl FnOnce(&mut Live)) {
        change(&mut self.live.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// A snapshot of the run, for progress displays.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    /// Records processed since the run started (all attempts).
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
    /// How the last completed checkpoint's barriers went.
    pub last_barriers: Option<Barriers>,
    /// The last completed checkpoint's channel-state bytes.
    pub last_channel_state_bytes: u64,
    /// The last completed checkpoint's longest alignment, in milliseconds.
    pub last_alignment_ms: u64,
}

/// A completed checkpoint or savepoint.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointReport {
    /// Its id.
    pub id: u64,
    /// Its pointer.
    pub pointer: String,
    /// Whether it is a savepoint.
    pub savepoint: bool,
    /// When it was triggered, since the start of the run.
    pub triggered: Duration,
    /// When its commit returned, since the start of the run.
    pub completed: Duration,
    /// Bytes of state its handles stand for.
    pub state_bytes: u64,
    /// State pages it holds, and how many changed since each task's previous snapshot.
    pub pages: u64,
    /// See `pages`.
    pub changed_pages: u64,
    /// How its barriers went: aligned, unaligned, unaligned after the timeout, at-least-once.
    pub barriers: Barriers,
    /// Bytes of channel state (in-flight records) over every task.
    pub channel_state_bytes: u64,
    /// Records in that channel state.
    pub channel_state_records: u64,
    /// Bytes that were queued in the tasks' inputs when they took their unaligned snapshots
    /// (0 for an aligned checkpoint).
    pub queued_bytes: u64,
    /// The longest alignment of a task: its first barrier to its last.
    pub alignment: Duration,
    /// The longest start delay of a task: the trigger to its first barrier.
    pub start_delay: Duration,
}

impl CheckpointReport {
    /// Trigger to commit.
    pub fn duration(&self) -> Duration {
        self.completed.saturating_sub(self.triggered)
    }

    /// How its barriers went, for people: `aligned, alignment 12 ms`, `unaligned, 1.2 MiB of
    /// channel state`, ...
    pub fn barriers_text(&self) -> String {
        let ms = |d: Duration| d.as_millis();
        match self.barriers {
            Barriers::Unaligned | Barriers::UnalignedAfterTimeout => format!(
                "{}, {} of channel state, barriers {} ms apart",
                self.barriers.describe(),
                bytesize::ByteSize(self.channel_state_bytes).display().iec(),
                ms(self.alignment)
            ),
            Barriers::Aligned | Barriers::AtLeastOnce => format!(
                "{}, alignment {} ms",
                self.barriers.describe(),
                ms(self.alignment)
            ),
        }
    }
}

/// Completed checkpoints of a run, by how their barriers went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BarrierCounts {
    /// Aligned (savepoints included).
    pub aligned: u64,
    /// Unaligned from the start.
    pub unaligned: u64,
    /// Started aligned, switched to unaligned after `aligned-checkpoint-timeout`.
    pub unaligned_after_timeout: u64,
    /// At-least-once (not aligned).
    pub at_least_once: u64,
}

impl BarrierCounts {
    /// Count one checkpoint.
    pub fn add(&mut self, b: Barriers) {
        *match b {
            Barriers::Aligned => &mut self.aligned,
            Barriers::Unaligned => &mut self.unaligned,
            Barriers::UnalignedAfterTimeout => &mut self.unaligned_after_timeout,
            Barriers::AtLeastOnce => &mut self.at_least_once,
        } += 1;
    }
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The input ended, every record was processed and (with a sink) committed.
    Finished,
    /// Stopped by a duration, Ctrl-C, SIGTERM or a command.
    Stopped,
}

impl Status {
    /// The word for it, the same in text and in JSON: `finished` or `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Finished => "finished",
            Status::Stopped => "stopped",
        }
    }
}

/// Serde helpers for the JSON contract's rule that durations are whole numbers: `*_ms`, or
/// `*_us` for a benchmark's timings, where a millisecond is too coarse. A figure measured as a
/// fractional number of milliseconds (or seconds) is rounded when serialized.
pub mod whole_units {
    use serde::Serializer;

    fn round(x: f64) -> u64 {
        // `as` saturates: a negative or NaN figure is 0, a huge one u64::MAX.
        x.round() as u64
    }

    /// Milliseconds, rounded to whole milliseconds.
    pub fn ms<S: Serializer>(ms: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(round(*ms))
    }

    /// Milliseconds if known, rounded to whole milliseconds.
    pub fn opt_ms<S: Serializer>(ms: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_some(&round(*ms)),
            None => s.serialize_none(),
        }
    }

    /// Milliseconds, as whole microseconds.
    pub fn ms_as_us<S: Serializer>(ms: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(round(ms * 1000.0))
    }

    /// A list of milliseconds, each as whole microseconds.
    pub fn vec_ms_as_us<S: Serializer>(ms: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(ms.iter().map(|m| round(m * 1000.0)))
    }

    /// Seconds, as whole milliseconds.
    pub fn secs_as_ms<S: Serializer>(secs: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(round(secs * 1000.0))
    }

    /// Seconds if known, as whole milliseconds.
    pub fn opt_secs_as_ms<S: Serializer>(secs: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        opt_ms(&secs.map(|s| s * 1000.0), s)
    }
}

/// A retained checkpoint, for the summary.
#[derive(Debug, Clone, Serialize)]
pub struct RetainedView {
    /// Its id.
    pub id: u64,
    /// Its pointer.
    pub pointer: String,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The job id.
    pub job_id: String,
    /// The job kind.
    pub job_kind: String,
    /// How it ended.
    pub status: Status,
    /// Attempts (1 + failovers).
    pub attempts: u32,
    /// Checkpoints completed in this run.
    pub checkpoints_completed: u64,
    /// Checkpoint failures in this run.
    pub checkpoints_failed: u64,
    /// The newest completed checkpoint, if the job's checkpoints are kept.
    pub latest_checkpoint: Option<RetainedView>,
    /// Whether the job's completed checkpoints are kept (`externalized-retention`); when not,
    /// they are discarded after this summary is reported.
    pub checkpoints_kept: bool,
    /// The savepoint taken before stopping (`savepoints.on-sigterm`), if one was.
    pub final_savepoint: Option<String>,
    /// The pointer the run restored from at start, if any.
    pub restored_from: Option<String>,
    /// Records the final state reflects: those restored at start plus those processed since.
    pub records_counted: u64,
    /// Records processed by the keyed tasks in this run, replays after a failover included.
    pub records_processed: u64,
    /// Milliseconds from the start of the run to the first record processed (a whole number
    /// in JSON).
    #[serde(serialize_with = "whole_units::opt_ms")]
    pub first_record_ms: Option<f64>,
    /// The checkpoints completed in this run, by how their barriers went.
    pub checkpoint_barriers: BarrierCounts,
    /// Bytes of channel state the checkpoints completed in this run held, in all.
    pub channel_state_bytes: u64,
    /// The longest alignment of any task in any checkpoint of this run, in milliseconds.
    pub max_alignment_ms: u64,
    /// Job-specific figures of a finished run (the keyed counter's `counts_sha256`, the word
    /// count's `invalid_utf8_bytes`, ...).
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The restore point is unusable.
    #[error("cannot restore: {0}")]
    Restore(String),
    /// A storage call needed to start (or restart) failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The job cannot be built from its settings.
    #[error("{0}")]
    Job(String),
    /// The storage plugin cannot be found or loaded.
    #[error("{0}")]
    Plugin(crate::loader::LoadError),
    /// The storage plugin refused to open with the configured options.
    #[error("storage plugin '{plugin}' could not be opened: {error}")]
    Open {
        /// The plugin's name.
        plugin: String,
        /// Why it refused.
        error: StorageError,
    },
    /// Failed over more often than `[restart] attempts` allows.
    #[error("the job failed after {attempts} attempts; last failure: {last}")]
    Failed {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The job's lease could not be had (another process runs the job), or was lost.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The start would mix two lineages of checkpoints: a run without `--from` on a job that
    /// has completed checkpoints, or a `--fresh` that was not confirmed.
    #[error("{0}")]
    Lineage(String),
}

/// What `--fresh` is about to discard, for the caller to confirm.
#[derive(Debug, Clone, Serialize)]
pub struct FreshPlan {
    /// The job.
    pub job_id: String,
    /// Where its checkpoints are.
    pub location: String,
    /// The completed checkpoints that will be discarded (savepoints are kept).
    pub checkpoints: Vec<CompletedCheckpoint>,
}

/// Options of one run.
pub struct RunOptions<'a> {
    /// Restore at start.
    pub from: Option<RestoreFrom>,
    /// When to end.
    pub stop_when: StopWhen,
    /// Set from outside (a signal handler) to stop the job.
    pub cancel: Arc<AtomicBool>,
    /// Commands to the running job (from the control socket, or signal handlers).
    pub commands: Option<Receiver<Command>>,
    /// Live figures.
    pub counters: Arc<Counters>,
    /// Called once the job is taken hold of, before it restores or starts: where a caller
    /// starts what serves the running job (`crate::control::Services`: the control socket and
    /// the metrics endpoint). An error ends the run before it starts.
    pub on_started: &'a dyn Fn() -> Result<(), String>,
    /// Called once the state to start from is restored (not on a fresh start).
    pub on_restored: &'a dyn Fn(&Restored),
    /// Called about four times a second.
    pub on_progress: &'a dyn Fn(&Progress),
    /// Called when a checkpoint or savepoint completes.
    pub on_checkpoint: &'a dyn Fn(&CheckpointReport),
    /// Called when the job fails over and will restart: the failed attempt's number, the
    /// reason, and the checkpoint it restarts from (`None`: from the beginning).
    pub on_failover: &'a dyn Fn(u32, &str, Option<&str>),
    /// Called with the summary once the job has ended, *before* checkpoints that are not kept
    /// are discarded, so a crash during the discard never loses the report.
    pub on_summary: &'a dyn Fn(&Summary),
    /// Start over: discard the job's completed checkpoints (savepoints stay) once
    /// `confirm_fresh` agrees, and start from empty state. Without it, and without `from`, a
    /// job that has completed checkpoints is refused, so two lineages never mix.
    pub fresh: bool,
    /// Asked before `fresh` discards anything; `false` refuses (the default).
    pub confirm_fresh: &'a dyn Fn(&FreshPlan) -> bool,
    /// `run --standby`: wait for the job's lease, then resume from the latest checkpoint (or
    /// start, if there is none). `from` and `fresh` must be unset.
    pub standby: bool,
    /// Told what happens to the lease (a local lock instead, waiting, a takeover).
    pub on_lease: &'a dyn Fn(&LeaseEvent),
    /// The lease the run holds, readable from any thread (for `cairn status`).
    pub lease: Arc<LeaseMonitor>,
}

impl Default for RunOptions<'_> {
    fn default() -> Self {
        RunOptions {
            from: None,
            stop_when: StopWhen::Never,
            cancel: Arc::default(),
            commands: None,
            counters: Counters::new(),
            on_started: &|| Ok(()),
            on_restored: &|_| {},
            on_progress: &|_| {},
            on_checkpoint: &|_| {},
            on_failover: &|_, _, _| {},
            on_summary: &|_| {},
            fresh: false,
            confirm_fresh: &|_| false,
            standby: false,
            on_lease: &|_| {},
            lease: LeaseMonitor::new(),
        }
    }
}
