//! The control protocol: one JSON request line from the client, one JSON reply line from the
//! job, then the connection closes.
//!
//! ```text
//! > {"version":1,"request":"status"}
//! < {"version":1,"reply":"status","job_id":"quickstart","phase":"running",...}
//! > {"version":1,"request":"savepoint","target":null}
//! < {"version":1,"reply":"savepoint","id":7,"pointer":"/data/sp/savepoint-quickstart-3f2a",...}
//! > {"version":1,"request":"stop","target":"/data/sp"}
//! < {"version":1,"reply":"stopped","savepoint":{...},"summary":{...}}
//! > {"version":1,"request":"cancel"}
//! < {"version":1,"reply":"cancelled","summary":{...}}
//! < {"version":1,"reply":"error","error":"savepoint 7 failed: ..."}
//! ```
//!
//! Every message carries `version`. A job answers a request of another version with an error
//! that names both, so an old client and a new job (or the reverse) fail with a message, not a
//! parse error. A change to the messages is a new version: add a constant below and point
//! [`PROTOCOL_VERSION`] at it.

use serde::{Deserialize, Serialize};

use crate::runtime::{CheckpointReport, CompletedView, Phase};

/// The first version: `status`, `savepoint`, `stop` (with a savepoint) and `cancel`.
pub const PROTOCOL_VERSION_1: u32 = 1;

/// The version this build speaks.
pub const PROTOCOL_VERSION: u32 = PROTOCOL_VERSION_1;

/// The longest request line a job reads.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// The job's status.
    Status,
    /// Take a savepoint; the reply comes when it is complete.
    Savepoint {
        /// The target directory (or URL); `None`: the default (`[savepoints] dir`).
        target: Option<String>,
    },
    /// Take a savepoint, then stop; the reply comes when the job has stopped. If the
    /// savepoint fails, the job keeps running and the reply is an error.
    Stop {
        /// The savepoint's target, as for `Savepoint`.
        target: Option<String>,
    },
    /// Stop now, without a savepoint; the reply comes when the job has stopped.
    Cancel,
}

/// A request with its version, as sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestLine {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
}

/// A reply with its version, as sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplyLine {
    /// [`PROTOCOL_VERSION`] of the job.
    pub version: u32,
    /// The reply.
    #[serde(flatten)]
    pub reply: Reply,
}

/// What the job answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    /// To `status`.
    Status(StatusReport),
    /// To `savepoint`: the completed savepoint.
    Savepoint(SavepointView),
    /// To `stop`: the savepoint, and the job's summary once it stopped.
    Stopped {
        /// The savepoint taken before stopping.
        savepoint: SavepointView,
        /// The run's summary (`cairn run --json` prints the same), or why it failed.
        summary: serde_json::Value,
    },
    /// To `cancel`: the job's summary once it stopped.
    Cancelled {
        /// As for `Stopped`.
        summary: serde_json::Value,
    },
    /// The request failed; the one-line reason.
    Error {
        /// What went wrong.
        error: String,
    },
}

/// A completed savepoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointView {
    /// Its id.
    pub id: u64,
    /// Its pointer: what `cairn run --from` takes.
    pub pointer: String,
    /// Trigger to commit, in milliseconds.
    pub duration_ms: u64,
    /// Bytes of state.
    pub state_bytes: u64,
    /// When it completed (milliseconds since the epoch).
    pub completed_ms: u64,
    /// The same, as an RFC 3339 time.
    pub completed: String,
}

impl SavepointView {
    /// The view of `report`, completed at `completed_ms`.
    pub fn new(report: &CheckpointReport, completed_ms: u64) -> Self {
        SavepointView {
            id: report.id,
            pointer: report.pointer.clone(),
            duration_ms: u64::try_from(report.duration().as_millis()).unwrap_or(u64::MAX),
            state_bytes: report.state_bytes,
            completed_ms,
            completed: rfc3339(completed_ms),
        }
    }
}

/// A completed checkpoint or savepoint in a status report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletedStatus {
    /// Its id.
    pub id: u64,
    /// Its pointer.
    pub pointer: String,
    /// Trigger to commit, in milliseconds.
    pub duration_ms: u64,
    /// Bytes of state.
    pub state_bytes: u64,
    /// When it completed (milliseconds since the epoch).
    pub completed_ms: u64,
    /// The same, as an RFC 3339 time.
    pub completed: String,
    /// How long ago, in milliseconds.
    pub age_ms: u64,
}

impl CompletedStatus {
    fn new(v: &CompletedView, now_ms: u64) -> Self {
        CompletedStatus {
            id: v.id,
            pointer: v.pointer.clone(),
            duration_ms: v.duration_ms,
            state_bytes: v.state_bytes,
            completed_ms: v.completed_ms,
            completed: rfc3339(v.completed_ms),
            age_ms: now_ms.saturating_sub(v.completed_ms),
        }
    }
}

/// A checkpoint or savepoint in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingStatus {
    /// Its id.
    pub id: u64,
    /// `checkpoint` or `savepoint`.
    pub kind: String,
    /// When it was triggered (milliseconds since the epoch).
    pub triggered_ms: u64,
    /// The same, as an RFC 3339 time.
    pub triggered: String,
    /// How long it has been in flight, in milliseconds.
    pub age_ms: u64,
}

/// The job's lease on its storage, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// `held`, `expired` or `lost` (see [`crate::lease::LeaseState`]), or `none` while the run
    /// holds none yet.
    pub state: String,
    /// What that means, in a sentence: the kind of lease, where, the holder and its times.
    pub detail: String,
}

impl LeaseStatus {
    /// The status line of the lease the run holds (`None`: none yet).
    pub fn of(lease: Option<&crate::lease::LeaseStatus>) -> Self {
        use crate::lease::{LeaseKind, LeaseState};
        let Some(l) = lease else {
            return LeaseStatus {
                state: "none".to_string(),
                detail: "the run holds no lease yet".to_string(),
            };
        };
        let (state, why) = match &l.state {
            LeaseState::Held => ("held", String::new()),
            LeaseState::Expired(why) => ("expired", format!(": {why}")),
            LeaseState::Lost(why) => ("lost", format!(": {why}")),
        };
        let kind = match l.kind {
            LeaseKind::Storage => "a lease record in the storage",
            LeaseKind::LocalLock => "a local lock file (the plugin has no lease support)",
        };
        let until = l
            .valid_until
            .as_ref()
            .map(|u| format!(", valid until {u}"))
            .unwrap_or_default();
        LeaseStatus {
            state: state.to_string(),
            detail: format!(
                "{kind} at {}, held by {} since {}, renewed {}{until}{why}",
                l.location, l.holder, l.since, l.renewed
            ),
        }
    }
}

/// `cairn status`: what a running job is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The job id.
    pub job_id: String,
    /// The job kind.
    pub job_kind: String,
    /// The config file it runs (`None`: the embedded default).
    pub config: Option<std::path::PathBuf>,
    /// The process.
    pub pid: u32,
    /// The machine.
    pub host: String,
    /// When the run started (milliseconds since the epoch).
    pub started_ms: u64,
    /// The same, as an RFC 3339 time.
    pub started: String,
    /// Milliseconds since then.
    pub uptime_ms: u64,
    /// Where the run is: `starting`, `restoring`, `running`, `restarting` or `stopping`.
    pub phase: Phase,
    /// The attempt, from 1.
    pub attempt: u32,
    /// Restarts after failures (attempts after the first).
    pub restarts: u64,
    /// Records the keyed tasks processed, replays included.
    pub records: u64,
    /// Records they emitted to their sinks.
    pub records_out: u64,
    /// Records per second, lately.
    pub records_per_sec: f64,
    /// Checkpoints and savepoints completed in this run.
    pub checkpoints_completed: u64,
    /// Checkpoint failures in this run (expired ones included).
    pub checkpoints_failed: u64,
    /// Checkpoints that expired.
    pub checkpoints_expired: u64,
    /// Checkpoint failures in a row (compared with `checkpointing.tolerable-failures`).
    pub consecutive_failures: u32,
    /// The newest checkpoint this run completed.
    pub last_checkpoint: Option<CompletedStatus>,
    /// The newest savepoint this run took.
    pub last_savepoint: Option<CompletedStatus>,
    /// Checkpoints and savepoints in flight, oldest first.
    pub pending_checkpoints: Vec<PendingStatus>,
    /// Why the last checkpoint or attempt failed.
    pub last_failure: Option<String>,
    /// The job's lease on its storage.
    pub lease: LeaseStatus,
    /// Where its metrics are served, if they are.
    pub metrics_url: Option<String>,
    /// The control socket.
    pub socket: std::path::PathBuf,
}

/// What a status report is built from besides the counters: the job and its process.
#[derive(Debug, Clone)]
pub(super) struct JobFacts {
    pub job_id: String,
    pub job_kind: String,
    pub config: Option<std::path::PathBuf>,
    pub pid: u32,
    pub host: String,
    pub socket: std::path::PathBuf,
    pub metrics_url: Option<String>,
}

impl StatusReport {
    pub(super) fn new(
        facts: &JobFacts,
        counters: &crate::runtime::Counters,
        lease: Option<&crate::lease::LeaseStatus>,
    ) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let now = crate::runtime::epoch_ms();
        let live = counters.live();
        let started_ms = counters.started_ms.load(Relaxed);
        StatusReport {
            job_id: facts.job_id.clone(),
            job_kind: facts.job_kind.clone(),
            config: facts.config.clone(),
            pid: facts.pid,
            host: facts.host.clone(),
            started_ms,
            started: rfc3339(started_ms),
            uptime_ms: now.saturating_sub(started_ms),
            phase: live.phase,
            attempt: live.attempt,
            restarts: counters.failovers.load(Relaxed),
            records: counters.records.load(Relaxed),
            records_out: counters.records_out.load(Relaxed),
            records_per_sec: live.records_per_sec,
            checkpoints_completed: counters.checkpoints_completed.load(Relaxed),
            checkpoints_failed: counters.checkpoints_failed.load(Relaxed),
            checkpoints_expired: counters.checkpoints_expired.load(Relaxed),
            consecutive_failures: live.consecutive_failures,
            last_checkpoint: live
                .last_checkpoint
                .as_ref()
                .map(|v| CompletedStatus::new(v, now)),
            last_savepoint: live
                .last_savepoint
                .as_ref()
                .map(|v| CompletedStatus::new(v, now)),
            pending_checkpoints: live
                .pending
                .iter()
                .map(|p| PendingStatus {
                    id: p.id,
                    kind: if p.savepoint {
                        "savepoint"
                    } else {
                        "checkpoint"
                    }
                    .to_string(),
                    triggered_ms: p.triggered_ms,
                    triggered: rfc3339(p.triggered_ms),
                    age_ms: now.saturating_sub(p.triggered_ms),
                })
                .collect(),
            last_failure: live.last_failure.clone(),
            lease: LeaseStatus::of(lease),
            metrics_url: facts.metrics_url.clone(),
            socket: facts.socket.clone(),
        }
    }
}

/// `ms` since the epoch as an RFC 3339 time with milliseconds, in UTC.
pub fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}
