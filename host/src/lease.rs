//! The job lease: one live writer per job, on every backend, across hosts (DESIGN §5, §9).
//!
//! `cairn run` (and `checkpoints gc`, `delete`, `copy` and `run --fresh`, for as long as they
//! change the job's storage) holds a lease on its job *in the storage itself*, through the
//! plugin's compare-and-swap register (plugin API 1.1, `JobStorage::read_lease` /
//! `write_lease`). A plugin without one (built against API 1.0) gets a lock file on this
//! machine instead ([`LocalLock`]). The protocol, with its timing and why it does not depend
//! on clocks agreeing, is written down in ARCHITECTURE.md ("The job lease"); in short:
//!
//! - The record says who holds the job (host, pid, command, since) and its `ttl`. It is
//!   written only over the version last read, so of two writers exactly one wins.
//! - The holder renews it every `ttl / 4`. Its lease is valid until `ttl * 3/4` after the
//!   *start* of its last successful renewal, on its own monotonic clock; past that it commits
//!   nothing (every mutating plugin call of the run is fenced, see [`Fence`]) and the run fails
//!   over, and it runs again only if it renews before anyone took the job.
//! - Anyone else takes the lease over only when the record was released, when its holder is a
//!   process of this machine that is gone, or after watching the record *not change* for a whole
//!   `ttl` on its own monotonic clock. No decision compares two hosts' clocks: a wall-clock
//!   time in the record is only shown, and used to refuse a second run at once when the lease
//!   looks live (the safe direction).

use std::{
    fs::File,
    io::{Read, Seek, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use cairn_plugin_api::{ErrorKind, JobStorage, LeaseRecord, StorageError};
use crossbeam_channel::{bounded, Receiver, Sender};
use serde::{Deserialize, Serialize};

use crate::runtime::PluginCalls;

/// The version of the record format.
const RECORD_FORMAT: u32 = 1;

/// Who holds (or held) a lease: what the refusal of a second run names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// What it runs, for example `cairn run`.
    pub command: String,
    /// Linux: this boot's id, so a holder on this very machine can be told apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Linux: the pid namespace, for the same reason (containers share a boot id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<String>,
    /// Linux: the process's start time in clock ticks since boot, so a reused pid is not
    /// mistaken for the holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "host {} (pid {}, `{}`)",
            crate::config::terminal_safe(&self.host),
            self.pid,
            crate::config::terminal_safe(&self.command)
        )
    }
}

impl Holder {
    /// This process, running `command` (for example `cairn run`).
    pub fn this_process(command: &str) -> Holder {
        let ids = linux_ids();
        Holder {
            host: host_name(),
            pid: std::process::id(),
            command: command.to_string(),
            boot_id: ids.boot_id,
            pid_ns: ids.pid_ns,
            pid_start: ids.pid_start,
        }
    }

    /// `Some(why)` if this holder is a process of this machine that no longer runs; `None` if
    /// it runs, or is elsewhere, or cannot be told.
    fn gone_from_this_machine(&self) -> Option<String> {
        let me = linux_ids();
        let same_machine = self.host == host_name()
            && self.boot_id.is_some()
            && self.boot_id == me.boot_id
            && self.pid_ns == me.pid_ns;
        if !same_machine {
            return None;
        }
        match process_start(self.pid) {
            ProcessState::Gone => Some(format!("its process (pid {}) has exited", self.pid)),
            ProcessState::Running(start) if self.pid_start.is_some_and(|s| s != start) => {
                Some(format!(
                    "its process (pid {}) has exited (the pid now belongs to another process)",
                    self.pid
                ))
            }
            ProcessState::Running(_) | ProcessState::Unknown => None,
        }
    }

    /// Whether this holder is a process of this machine that runs (not a zombie).
    fn runs_on_this_machine(&self) -> bool {
        let me = linux_ids();
        self.host == host_name()
            && self.boot_id.is_some()
            && self.boot_id == me.boot_id
            && self.pid_ns == me.pid_ns
            && matches!(process_start(self.pid), ProcessState::Running(s) if self.pid_start.is_none_or(|p| p == s))
    }
}

/// How a lease record ended, when its holder released it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    /// When, in milliseconds since the epoch (the holder's clock).
    pub at_ms: u64,
    /// Why: `finished`, `stopped`, `failed`, `done`.
    pub why: String,
}

/// The lease record as stored (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    format: u32,
    /// A fresh id per acquisition: whose the record is.
    owner: String,
    holder: Holder,
    job_id: String,
    since_ms: u64,
    renewed_ms: u64,
    ttl_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    released: Option<Released>,
}

impl Record {
    fn parse(bytes: &[u8]) -> Result<Record, String> {
        let r: Record = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if r.format != RECORD_FORMAT {
            return Err(format!(
                "record format {} is not {RECORD_FORMAT}, the one this cairn writes",
                r.format
            ));
        }
        Ok(r)
    }

    fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a lease record serializes")
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }
}

/// What kind of lease a run holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseKind {
    /// A record in the storage, renewed: other hosts see it.
    Storage,
    /// A lock file on this machine (the plugin has no lease support): only this machine sees it.
    LocalLock,
}

/// Where a held lease stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state", content = "reason")]
pub enum LeaseState {
    /// Held and valid: checkpoints commit.
    Held,
    /// Not renewed in time (the storage did not answer): nothing commits until a renewal
    /// succeeds, which it can as long as nobody took the job over.
    Expired(String),
    /// Taken over by another holder: this run commits nothing more.
    Lost(String),
}

/// A lease as `cairn status` shows it: a `Serialize` report.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseStatus {
    /// Storage record or local lock file.
    pub kind: LeaseKind,
    /// Where: the storage location or the lock file.
    pub location: String,
    /// The job.
    pub job_id: String,
    /// The holder (this process).
    pub holder: Holder,
    /// Held, expired or lost.
    #[serde(flatten)]
    pub state: LeaseState,
    /// When it was acquired, in milliseconds since the epoch.
    pub since_ms: u64,
    /// The same, RFC 3339.
    pub since: String,
    /// When it was last renewed (the start of the renewal), in milliseconds since the epoch.
    pub renewed_ms: u64,
    /// The same, RFC 3339.
    pub renewed: String,
    /// The holder stops committing at this time unless it renews first (milliseconds since the
    /// epoch, on this host's clock); `None` for a local lock, which lasts as long as the process.
    pub valid_until_ms: Option<u64>,
    /// The same, RFC 3339.
    pub valid_until: Option<String>,
    /// A standby may take over this long after the last renewal.
    pub ttl_ms: u64,
}

/// A lease held by someone else, as a refusal reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldBy {
    /// The holder.
    pub holder: Holder,
    /// Since when (its clock), in milliseconds since the epoch.
    pub since_ms: u64,
    /// Its last renewal (its clock), in milliseconds since the epoch; `None` for a local lock.
    pub renewed_ms: Option<u64>,
    /// Its ttl; `None` for a local lock.
    pub ttl_ms: Option<u64>,
}

impl std::fmt::Display for HeldBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} since {}", self.holder, rfc3339(self.since_ms))?;
        if let (Some(renewed), Some(ttl)) = (self.renewed_ms, self.ttl_ms) {
            let ago = now_ms().saturating_sub(renewed);
            write!(
                f,
                ", renewed {} ago by its clock (it expires {} after its last renewal)",
                crate::config::format_duration(Duration::from_millis(ago / 100 * 100)),
                crate::config::format_duration(Duration::from_millis(ttl))
            )?;
        }
        Ok(())
    }
}

/// Why a lease could not be had, or was lost.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseError {
    /// Someone else holds the job.
    #[error("job '{job_id}' is in use: its lease in {location} is held by {held}; {hint}")]
    Held {
        /// The job.
        job_id: String,
        /// Where the lease is.
        location: String,
        /// Who holds it.
        held: Box<HeldBy>,
        /// What to do about it.
        hint: String,
    },
    /// A standby watched a holder that then released the job (it finished or was stopped), so
    /// there was nothing to take over.
    #[error(
        "job '{job_id}' was released by {holder} ({why}), so the standby has nothing to take over"
    )]
    Ended {
        /// The job.
        job_id: String,
        /// Who released it.
        holder: Box<Holder>,
        /// Why it ended.
        why: String,
    },
    /// The lease was taken over by another holder.
    #[error("job '{job_id}' lost its lease: {why}; this process commits nothing more")]
    Lost {
        /// The job.
        job_id: String,
        /// What happened.
        why: String,
    },
    /// Waiting for the lease was cancelled (Ctrl-C).
    #[error("stopped while waiting for the lease of job '{0}'")]
    Cancelled(String),
    /// The storage could not be asked.
    #[error("the lease of job '{job_id}': {error}")]
    Storage {
        /// The job.
        job_id: String,
        /// The storage's error.
        error: StorageError,
    },
    /// The local lock file could not be used.
    #[error("the local lock file {path}: {why}")]
    Local {
        /// The lock file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
}

/// What happens while a lease is acquired, for the caller to show.
#[derive(Debug, Clone)]
pub enum LeaseEvent {
    /// The plugin has no lease support: a local lock file is used instead.
    LocalFallback {
        /// Why, and where the lock is.
        note: String,
    },
    /// Someone holds the job; this caller waits (a standby, or a record that looks abandoned).
    Waiting {
        /// Who.
        held: HeldBy,
        /// For how long at most, if the record is not renewed meanwhile (`None`: until the
        /// holder's process exits or releases, for a local lock).
        at_most: Option<Duration>,
    },
    /// The lease was taken over from a holder that stopped renewing or is gone.
    TakenOver {
        /// From whom.
        from: Holder,
        /// Why it was free.
        why: String,
    },
}

/// How [`acquire`] behaves when the job is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Refuse at once when the lease looks live; a lease that looks abandoned (not renewed for
    /// longer than its ttl by this host's clock) is watched for one ttl first.
    Refuse,
    /// `run --standby`: wait until the holder releases (then end), dies or stops renewing.
    Standby,
}

/// How to acquire.
pub struct LeaseOptions<'a> {
    /// The job.
    pub job_id: &'a str,
    /// What this process runs, for the record (`cairn run`, `cairn checkpoints gc`).
    pub command: &'a str,
    /// The ttl (`[lease] ttl`).
    pub ttl: Duration,
    /// Refuse or wait.
    pub wait: Wait,
    /// Where local lock files go (`[lease] local-dir`).
    pub local_dir: PathBuf,
    /// The tail of a refusal: what to do about it.
    pub hint: &'a str,
    /// Stops a wait.
    pub cancel: Arc<AtomicBool>,
    /// Told what happens.
    pub on_event: &'a dyn Fn(&LeaseEvent),
}

/// The fence every mutating plugin call of a run goes through: `Err(why)` once the lease is
/// lost or expired, so a holder that cannot renew in time stops writing.
pub trait Fence: Send + Sync {
    /// `Ok` while the lease is held and valid.
    fn check(&self) -> Result<(), String>;
}

/// Holds the status of the lease a run holds, for `cairn status` (the control socket); see
/// `RunOptions::lease`.
#[derive(Default)]
pub struct LeaseMonitor {
    lease: Mutex<Option<Arc<Shared>>>,
}

impl std::fmt::Debug for LeaseMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseMonitor")
            .field("status", &self.status())
            .finish()
    }
}

impl LeaseMonitor {
    /// A monitor with no lease yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The lease the run holds now, if it holds one.
    pub fn status(&self) -> Option<LeaseStatus> {
        let lease = lock(&self.lease).clone();
        lease.map(|s| s.status())
    }

    fn set(&self, shared: Option<Arc<Shared>>) {
        *lock(&self.lease) = shared;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is whole, so a poisoned lock holds a consistent value.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the holder side knows of its lease, shared with the renewal thread.
struct Shared {
    kind: LeaseKind,
    location: String,
    job_id: String,
    ttl: Duration,
    inner: Mutex<HeldState>,
}

struct HeldState {
    record: Record,
    version: String,
    /// Start of the last successful write, on the monotonic clock, and on the wall clock.
    renewed_at: Instant,
    renewed_ms: u64,
    state: LeaseState,
}

impl Shared {
    /// How long after the start of a successful renewal the holder may still commit.
    fn validity(&self) -> Duration {
        self.ttl.mul_f64(0.75)
    }

    fn status(&self) -> LeaseStatus {
        let s = lock(&self.inner);
        let valid_until_ms = (self.kind == LeaseKind::Storage).then(|| {
            let left = (s.renewed_at + self.validity()).saturating_duration_since(Instant::now());
            now_ms() + u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
        });
        let mut state = s.state.clone();
        if state == LeaseState::Held && self.kind == LeaseKind::Storage && self.expired(&s) {
            state = LeaseState::Expired(self.expired_why());
        }
        LeaseStatus {
            kind: self.kind,
            location: self.location.clone(),
            job_id: self.job_id.clone(),
            holder: s.record.holder.clone(),
            state,
            since_ms: s.record.since_ms,
            since: rfc3339(s.record.since_ms),
            renewed_ms: s.renewed_ms,
            renewed: rfc3339(s.renewed_ms),
            valid_until_ms,
            valid_until: valid_until_ms.map(rfc3339),
            ttl_ms: s.record.ttl_ms,
        }
    }

    fn expired(&self, s: &HeldState) -> bool {
        self.kind == LeaseKind::Storage && s.renewed_at.elapsed() >= self.validity()
    }

    fn expired_why(&self) -> String {
        format!(
            "it was not renewed for {} (three quarters of lease.ttl = {}); the storage did not \
             answer in time",
            crate::config::format_duration(self.validity()),
            crate::config::format_duration(self.ttl)
        )
    }
}

impl Fence for Shared {
    fn check(&self) -> Result<(), String> {
        let s = lock(&self.inner);
        match &s.state {
            LeaseState::Lost(why) => Err(format!("the job's lease was lost: {why}")),
            LeaseState::Expired(why) => Err(format!("the job's lease expired: {why}")),
            LeaseState::Held if self.expired(&s) => {
                Err(format!("the job's lease expired: {}", self.expired_why()))
            }
            LeaseState::Held => Ok(()),
        }
    }
}

/// A held lease. Dropping it releases it (unless it was lost).
pub struct Lease {
    shared: Arc<Shared>,
    keeper: Option<Keeper>,
    /// The local lock file, held open (and locked) for the life of the lease.
    local: Option<File>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("status", &self.shared.status())
            .finish()
    }
}

/// The renewal thread of a storage lease.
struct Keeper {
    stop: Sender<()>,
    thread: JoinHandle<()>,
    calls: Arc<PluginCalls>,
    job: Arc<dyn JobStorage>,
}

impl Lease {
    /// Where the lease stands now.
    pub fn status(&self) -> LeaseStatus {
        self.shared.status()
    }

    /// The fence to put around the run's mutating plugin calls.
    pub fn fence(&self) -> Arc<dyn Fence> {
        self.shared.clone()
    }

    /// `Some(why)` if this holder may not write now (lost, or expired).
    pub fn problem(&self) -> Option<String> {
        self.shared.check().err()
    }

    /// Whether the lease was taken over by someone else (for good, unlike an expiry).
    pub fn lost(&self) -> Option<String> {
        match &lock(&self.shared.inner).state {
            LeaseState::Lost(why) => Some(why.clone()),
            _ => None,
        }
    }

    /// Report this lease's status through `monitor` from now on.
    pub fn publish(&self, monitor: &LeaseMonitor) {
        monitor.set(Some(self.shared.clone()));
    }

    /// After an expiry: renew now, which works if nobody took the job over meanwhile. `Ok` if
    /// the lease is valid afterwards.
    pub fn regain(&self) -> Result<(), LeaseError> {
        if self.problem().is_none() {
            return Ok(());
        }
        if let Some(why) = self.lost() {
            return Err(self.lost_error(why));
        }
        let Some(keeper) = &self.keeper else {
            return Ok(());
        };
        renew(&self.shared, &keeper.calls, &keeper.job);
        match self.problem() {
            None => Ok(()),
            Some(why) => Err(match self.lost() {
                Some(lost) => self.lost_error(lost),
                None => LeaseError::Storage {
                    job_id: self.shared.job_id.clone(),
                    error: StorageError::Timeout(why),
                },
            }),
        }
    }

    /// The error for a lease lost with `why`.
    pub fn lost_error(&self, why: String) -> LeaseError {
        LeaseError::Lost {
            job_id: self.shared.job_id.clone(),
            why,
        }
    }

    /// Release the lease, saying why (`finished`, `stopped`, `failed`, `done`): a standby that
    /// watched it ends, and the next `run` takes it at once.
    pub fn release(mut self, why: &str) {
        self.release_now(why);
    }

    fn release_now(&mut self, why: &str) {
        if let Some(mut file) = self.local.take() {
            let mut s = lock(&self.shared.inner);
            s.record.released = Some(Released {
                at_ms: now_ms(),
                why: why.to_string(),
            });
            let bytes = s.record.bytes();
            drop(s);
            // The lock goes with the file; the record says it was released, not abandoned.
            if let Err(e) = rewrite(&mut file, &bytes) {
                tracing::warn!("releasing the local lock: {e}");
            }
            return;
        }
        let Some(keeper) = self.keeper.take() else {
            return;
        };
        let _ = keeper.stop.send(());
        let _ = keeper.thread.join();
        let (bytes, version) = {
            let mut s = lock(&self.shared.inner);
            if matches!(s.state, LeaseState::Lost(_)) {
                return;
            }
            s.record.released = Some(Released {
                at_ms: now_ms(),
                why: why.to_string(),
            });
            (s.record.bytes(), s.version.clone())
        };
        let job = keeper.job.clone();
        let deadline = call_deadline(&keeper.calls, self.shared.ttl);
        // Waited for even when the run stops on Ctrl-C: a standby elsewhere then takes over at
        // once instead of after the ttl.
        match keeper.calls.call_while_stopping(
            "write_lease",
            &format!("write_lease() of job '{}'", self.shared.job_id),
            deadline,
            move || job.write_lease(&bytes, Some(&version)),
        ) {
            Ok(_) => tracing::debug!(job = %self.shared.job_id, why, "lease released"),
            Err(e) => tracing::warn!(
                job = %self.shared.job_id,
                "releasing the lease failed ({e}); it expires {} after its last renewal",
                crate::config::format_duration(self.shared.ttl)
            ),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release_now("ended");
    }
}

/// The deadline of one lease call: a quarter of the ttl, within the calls' own deadline.
fn call_deadline(calls: &PluginCalls, ttl: Duration) -> Duration {
    (ttl / 4)
        .min(calls.deadline())
        .max(Duration::from_millis(100))
}

/// Acquire the lease of `opts.job_id` in the storage behind `calls`: at once if it is free;
/// with [`Wait::Standby`], after its holder dies or stops renewing. See the module docs.
pub fn acquire(calls: &Arc<PluginCalls>, opts: &LeaseOptions<'_>) -> Result<Lease, LeaseError> {
    let storage_error = |error: StorageError| LeaseError::Storage {
        job_id: opts.job_id.to_string(),
        error,
    };
    let location = calls.info().map_err(storage_error)?.location;
    let job = calls.job(opts.job_id).map_err(storage_error)?;
    let deadline = call_deadline(calls, opts.ttl);
    let read = |job: &Arc<dyn JobStorage>| {
        let job = job.clone();
        calls.call(
            "read_lease",
            &format!("read_lease() of job '{}'", opts.job_id),
            deadline,
            None,
            move || job.read_lease(),
        )
    };
    let first = match read(&job) {
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            return LocalLock::acquire(&location, opts, e.message());
        }
        other => other.map_err(storage_error)?,
    };
    let mine = Record {
        format: RECORD_FORMAT,
        owner: uuid::Uuid::new_v4().to_string(),
        holder: Holder::this_process(opts.command),
        job_id: opts.job_id.to_string(),
        since_ms: now_ms(),
        renewed_ms: now_ms(),
        ttl_ms: u64::try_from(opts.ttl.as_millis()).unwrap_or(u64::MAX),
        released: None,
    };
    let write = |expected: Option<String>, record: &Record| {
        let (job, bytes) = (job.clone(), record.bytes());
        calls.call(
            "write_lease",
            &format!("write_lease() of job '{}'", opts.job_id),
            deadline,
            None,
            move || job.write_lease(&bytes, expected.as_deref()),
        )
    };
    let poll = (opts.ttl / 8).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut current = first;
    // The version being watched and since when (this host's monotonic clock).
    let mut watched: Option<(String, Instant)> = None;
    let mut announced = false;
    // Whether a live holder was seen: a standby that then sees a release ends.
    let mut saw_holder = false;
    loop {
        let (expected, takeover) = match &current {
            None => (None, None),
            Some(LeaseRecord { bytes, version }) => {
                let theirs = Record::parse(bytes);
                match decide(&theirs, version, &mut watched, opts, saw_holder, announced) {
                    Decision::Take(why) => (Some(version.clone()), why),
                    Decision::Refuse(held) => {
                        return Err(LeaseError::Held {
                            job_id: opts.job_id.to_string(),
                            location: location.clone(),
                            held: Box::new(held),
                            hint: opts.hint.to_string(),
                        })
                    }
                    Decision::Ended(holder, why) => {
                        return Err(LeaseError::Ended {
                            job_id: opts.job_id.to_string(),
                            holder: Box::new(holder),
                            why,
                        })
                    }
                    Decision::Wait(event) => {
                        saw_holder = true;
                        if let Some(event) = event {
                            (opts.on_event)(&event);
                            announced = true;
                        }
                        if wait_or_cancel(poll, &opts.cancel) {
                            return Err(LeaseError::Cancelled(opts.job_id.to_string()));
                        }
                        current = read(&job).map_err(storage_error)?;
                        continue;
                    }
                }
            }
        };
        let started = Instant::now();
        let mut record = mine.clone();
        record.since_ms = now_ms();
        record.renewed_ms = record.since_ms;
        match write(expected, &record) {
            Ok(version) => {
                if let Some((from, why)) = takeover {
                    (opts.on_event)(&LeaseEvent::TakenOver { from, why });
                }
                let shared = Arc::new(Shared {
                    kind: LeaseKind::Storage,
                    location,
                    job_id: opts.job_id.to_string(),
                    ttl: opts.ttl,
                    inner: Mutex::new(HeldState {
                        renewed_ms: record.renewed_ms,
                        record,
                        version,
                        renewed_at: started,
                        state: LeaseState::Held,
                    }),
                });
                let keeper = Keeper::start(shared.clone(), calls.clone(), job.clone());
                return Ok(Lease {
                    shared,
                    keeper: Some(keeper),
                    local: None,
                });
            }
            // Someone wrote first (a renewal, a release, another standby): look again.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                current = read(&job).map_err(storage_error)?;
            }
            Err(e) => return Err(storage_error(e)),
        }
    }
}

/// What [`acquire`] does about a record someone else wrote.
enum Decision {
    /// Write over it; `Some((from, why))` when it is a takeover.
    Take(Option<(Holder, String)>),
    /// Refuse: the lease is live.
    Refuse(HeldBy),
    /// A standby's holder released the job.
    Ended(Holder, String),
    /// Watch it; the event to announce, once.
    Wait(Option<LeaseEvent>),
}

fn decide(
    theirs: &Result<Record, String>,
    version: &str,
    watched: &mut Option<(String, Instant)>,
    opts: &LeaseOptions<'_>,
    saw_holder: bool,
    announced: bool,
) -> Decision {
    // The record changed while it was watched: its writer is alive.
    let changed = watched.as_ref().is_some_and(|(v, _)| v != version);
    let record = match theirs {
        Ok(r) => r,
        Err(why) => {
            // Unreadable (another version's format, or damaged): a holder that must be watched
            // for a whole ttl (this caller's), and then overwritten.
            if !announced {
                tracing::warn!(
                    "the lease record of job '{}' cannot be read: {why}",
                    opts.job_id
                );
            }
            let unknown = Holder {
                host: "an unknown host".to_string(),
                pid: 0,
                command: "unknown (the lease record is unreadable)".to_string(),
                boot_id: None,
                pid_ns: None,
                pid_start: None,
            };
            let held = HeldBy {
                holder: unknown.clone(),
                since_ms: 0,
                renewed_ms: None,
                ttl_ms: None,
            };
            if opts.wait == Wait::Refuse && changed {
                return Decision::Refuse(held);
            }
            return watch(watched, version, opts.ttl, held, announced).unwrap_or_else(|| {
                Decision::Take(Some((
                    unknown,
                    "its record was unreadable and did not change for a whole ttl".to_string(),
                )))
            });
        }
    };
    let held = HeldBy {
        holder: record.holder.clone(),
        since_ms: record.since_ms,
        renewed_ms: Some(record.renewed_ms),
        ttl_ms: Some(record.ttl_ms),
    };
    if let Some(released) = &record.released {
        if opts.wait == Wait::Standby && saw_holder {
            return Decision::Ended(record.holder.clone(), released.why.clone());
        }
        return Decision::Take(None);
    }
    if let Some(why) = record.holder.gone_from_this_machine() {
        return Decision::Take(Some((record.holder.clone(), why)));
    }
    // By this host's clock the record was renewed within its ttl (or is from its future), or
    // its holder runs on this machine: used only to refuse at once, never to take over.
    let looks_live = record.holder.runs_on_this_machine()
        || now_ms() < record.renewed_ms.saturating_add(record.ttl_ms);
    if opts.wait == Wait::Refuse && (looks_live || changed) {
        return Decision::Refuse(held);
    }
    let ttl = record.ttl();
    watch(watched, version, ttl, held, announced).unwrap_or_else(|| {
        Decision::Take(Some((
            record.holder.clone(),
            format!(
                "its lease was not renewed for {} (its ttl)",
                crate::config::format_duration(ttl)
            ),
        )))
    })
}

/// Watch `version`: `None` once it stayed the same for `ttl` on this host's monotonic clock,
/// else what to do meanwhile.
fn watch(
    watched: &mut Option<(String, Instant)>,
    version: &str,
    ttl: Duration,
    held: HeldBy,
    announced: bool,
) -> Option<Decision> {
    match watched {
        Some((v, since)) if v == version => {
            if since.elapsed() >= ttl {
                return None;
            }
        }
        _ => *watched = Some((version.to_string(), Instant::now())),
    }
    let event = (!announced).then_some(LeaseEvent::Waiting {
        held,
        at_most: Some(ttl),
    });
    Some(Decision::Wait(event))
}

/// Wait `d`, or less if `cancel` is set. True if cancelled.
fn wait_or_cancel(d: Duration, cancel: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return true;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

impl Keeper {
    fn start(shared: Arc<Shared>, calls: Arc<PluginCalls>, job: Arc<dyn JobStorage>) -> Keeper {
        let (stop, stopped) = bounded::<()>(1);
        let thread = {
            let (shared, calls, job) = (shared.clone(), calls.clone(), job.clone());
            std::thread::Builder::new()
                .name("lease".to_string())
                .spawn(move || keep(&shared, &calls, &job, &stopped))
                .expect("cannot start the lease renewal thread")
        };
        Keeper {
            stop,
            thread,
            calls,
            job,
        }
    }
}

/// The renewal loop: every ttl / 4, or sooner after a failure, until stopped or lost.
fn keep(shared: &Shared, calls: &PluginCalls, job: &Arc<dyn JobStorage>, stopped: &Receiver<()>) {
    let every = shared.ttl / 4;
    let retry = (shared.ttl / 16).max(Duration::from_millis(50));
    let mut next = Instant::now() + every;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        if stopped.recv_timeout(wait).is_ok() {
            return;
        }
        let ok = renew(shared, calls, job);
        if matches!(lock(&shared.inner).state, LeaseState::Lost(_)) {
            return;
        }
        next = Instant::now() + if ok { every } else { retry };
    }
}

/// One renewal. True if it succeeded.
fn renew(shared: &Shared, calls: &PluginCalls, job: &Arc<dyn JobStorage>) -> bool {
    let deadline = call_deadline(calls, shared.ttl);
    let what = format!("write_lease() of job '{}'", shared.job_id);
    for _ in 0..2 {
        let started = Instant::now();
        let renewed_ms = now_ms();
        let (bytes, version, owner) = {
            let s = lock(&shared.inner);
            let mut record = s.record.clone();
            record.renewed_ms = renewed_ms;
            (record.bytes(), s.version.clone(), s.record.owner.clone())
        };
        let j = job.clone();
        match calls.call("write_lease", &what, deadline, None, move || {
            j.write_lease(&bytes, Some(&version))
        }) {
            Ok(v) => {
                let mut s = lock(&shared.inner);
                if !matches!(s.state, LeaseState::Held) {
                    tracing::info!(job = %shared.job_id, "the lease is renewed again");
                }
                s.version = v;
                s.record.renewed_ms = renewed_ms;
                s.renewed_ms = renewed_ms;
                s.renewed_at = started;
                s.state = LeaseState::Held;
                return true;
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                // Our last write may have landed without our hearing of it; if the record is
                // still ours, go on from its version. Otherwise someone took the job.
                let j = job.clone();
                let read = calls.call(
                    "read_lease",
                    &format!("read_lease() of job '{}'", shared.job_id),
                    deadline,
                    None,
                    move || j.read_lease(),
                );
                match read {
                    Ok(Some(r)) => match Record::parse(&r.bytes) {
                        Ok(theirs) if theirs.owner == owner => {
                            lock(&shared.inner).version = r.version;
                            continue;
                        }
                        Ok(theirs) => {
                            let why = format!(
                                "{} took the job over at {}",
                                theirs.holder,
                                rfc3339(theirs.since_ms)
                            );
                            tracing::error!(job = %shared.job_id, "lease lost: {why}");
                            lock(&shared.inner).state = LeaseState::Lost(why);
                            return false;
                        }
                        Err(why) => {
                            let why = format!("another writer replaced its record ({why})");
                            lock(&shared.inner).state = LeaseState::Lost(why);
                            return false;
                        }
                    },
                    Ok(None) => {
                        let why = "its record was removed from the storage".to_string();
                        lock(&shared.inner).state = LeaseState::Lost(why);
                        return false;
                    }
                    Err(e) => {
                        note_failure(shared, &e);
                        return false;
                    }
                }
            }
            Err(e) => {
                note_failure(shared, &e);
                return false;
            }
        }
    }
    false
}

fn note_failure(shared: &Shared, e: &StorageError) {
    let mut s = lock(&shared.inner);
    tracing::warn!(job = %shared.job_id, "renewing the lease failed: {e}");
    if matches!(s.state, LeaseState::Held) && shared.expired(&s) {
        tracing::error!(
            job = %shared.job_id,
            "the lease expired ({}); no checkpoint is committed until it is renewed",
            shared.expired_why()
        );
        s.state = LeaseState::Expired(shared.expired_why());
    }
}

/// The lock file of a job on a storage without lease support: `<local-dir>/<job>-<hash>.lock`,
/// the hash being of the storage's location, so two storages' jobs of the same id do not
/// exclude each other. It is held with `flock` for the life of the process, so the kernel
/// releases it however the process ends; it keeps a second run *on this machine* out, not one
/// on another host.
pub struct LocalLock;

impl LocalLock {
    /// The lock file of `job_id` on the storage at `location`.
    pub fn path(dir: &Path, job_id: &str, location: &str) -> PathBuf {
        use sha2::{Digest, Sha256};
        let digest = hex::encode(Sha256::digest(location.as_bytes()));
        dir.join(format!("{job_id}-{}.lock", &digest[..16]))
    }

    fn acquire(location: &str, opts: &LeaseOptions<'_>, why: &str) -> Result<Lease, LeaseError> {
        let dir = &opts.local_dir;
        let path = Self::path(dir, opts.job_id, location);
        let local_error = |why: String| LeaseError::Local {
            path: path.clone(),
            why,
        };
        (opts.on_event)(&LeaseEvent::LocalFallback {
            note: format!(
                "the storage plugin has no lease support ({why}); job '{}' is guarded by the \
                 lock file {} instead, which keeps a second run on this machine out but not one \
                 on another host",
                opts.job_id,
                path.display()
            ),
        });
        private_dir(dir).map_err(|why| LeaseError::Local {
            path: dir.clone(),
            why,
        })?;
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&path)
                .map_err(|e| local_error(format!("cannot open it: {e}")))?
        };
        let poll = Duration::from_millis(100);
        let mut saw_holder = false;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) => {}
                Err(e) => return Err(local_error(format!("cannot lock it: {e}"))),
            }
            let theirs = read_all(&mut file)
                .ok()
                .and_then(|b| Record::parse(&b).ok());
            let held = HeldBy {
                holder: theirs.as_ref().map_or_else(
                    || Holder {
                        host: host_name(),
                        pid: 0,
                        command: "another process (the lock file does not say which)".to_string(),
                        boot_id: None,
                        pid_ns: None,
                        pid_start: None,
                    },
                    |r| r.holder.clone(),
                ),
                since_ms: theirs.as_ref().map_or(0, |r| r.since_ms),
                renewed_ms: None,
                ttl_ms: None,
            };
            if opts.wait == Wait::Refuse {
                return Err(LeaseError::Held {
                    job_id: opts.job_id.to_string(),
                    location: path.display().to_string(),
                    held: Box::new(held),
                    hint: opts.hint.to_string(),
                });
            }
            if !saw_holder {
                (opts.on_event)(&LeaseEvent::Waiting {
                    held,
                    at_most: None,
                });
                saw_holder = true;
            }
            if wait_or_cancel(poll, &opts.cancel) {
                return Err(LeaseError::Cancelled(opts.job_id.to_string()));
            }
        }
        // Locked. A holder that released it (rather than died) says so in the file.
        if opts.wait == Wait::Standby && saw_holder {
            if let Some(theirs) = read_all(&mut file)
                .ok()
                .and_then(|b| Record::parse(&b).ok())
            {
                if let Some(released) = theirs.released {
                    return Err(LeaseError::Ended {
                        job_id: opts.job_id.to_string(),
                        holder: Box::new(theirs.holder),
                        why: released.why,
                    });
                }
                (opts.on_event)(&LeaseEvent::TakenOver {
                    from: theirs.holder,
                    why: "its process exited without releasing the lock".to_string(),
                });
            }
        }
        let record = Record {
            format: RECORD_FORMAT,
            owner: uuid::Uuid::new_v4().to_string(),
            holder: Holder::this_process(opts.command),
            job_id: opts.job_id.to_string(),
            since_ms: now_ms(),
            renewed_ms: now_ms(),
            ttl_ms: 0,
            released: None,
        };
        rewrite(&mut file, &record.bytes()).map_err(local_error)?;
        let shared = Arc::new(Shared {
            kind: LeaseKind::LocalLock,
            location: path.display().to_string(),
            job_id: opts.job_id.to_string(),
            ttl: opts.ttl,
            inner: Mutex::new(HeldState {
                renewed_ms: record.renewed_ms,
                record,
                version: String::new(),
                renewed_at: Instant::now(),
                state: LeaseState::Held,
            }),
        });
        Ok(Lease {
            shared,
            keeper: None,
            local: Some(file),
        })
    }
}

/// Make `dir` (and its parents) if missing, mode 0700, and refuse one that another user owns or
/// others can write into: the lock files in it decide who may write a job.
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create it: {e}"))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err("it is not a directory".to_string());
    }
    let uid = rustix::process::getuid().as_raw();
    if meta.uid() != uid {
        return Err(format!(
            "it belongs to user {}, not to this user ({uid}); set lease.local-dir to a directory \
             of your own",
            meta.uid()
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(format!(
            "others can write into it (mode {:o}); make it 0700 or set lease.local-dir",
            meta.permissions().mode() & 0o777
        ));
    }
    Ok(())
}

fn read_all(file: &mut File) -> std::io::Result<Vec<u8>> {
    file.rewind()?;
    let mut out = Vec::new();
    file.read_to_end(&mut out)?;
    Ok(out)
}

fn rewrite(file: &mut File, bytes: &[u8]) -> Result<(), String> {
    file.set_len(0)
        .and_then(|_| file.rewind())
        .and_then(|_| file.write_all(bytes))
        .and_then(|_| file.flush())
        .map_err(|e| format!("cannot write it: {e}"))
}

/// Milliseconds since the epoch, on this host's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An epoch time in milliseconds as RFC 3339.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

struct LinuxIds {
    boot_id: Option<String>,
    pid_ns: Option<String>,
    pid_start: Option<u64>,
}

fn linux_ids() -> LinuxIds {
    LinuxIds {
        boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
        pid_ns: std::fs::read_link("/proc/self/ns/pid")
            .ok()
            .map(|p| p.to_string_lossy().into_owned()),
        pid_start: match process_start(std::process::id()) {
            ProcessState::Running(s) => Some(s),
            _ => None,
        },
    }
}

enum ProcessState {
    /// Running (or stopped), with its start time in clock ticks since boot.
    Running(u64),
    /// No such process, or a zombie.
    Gone,
    /// Cannot be told (no /proc).
    Unknown,
}

/// What `/proc/<pid>/stat` says of a process.
fn process_start(pid: u32) -> ProcessState {
    if !Path::new("/proc/self/stat").exists() {
        return ProcessState::Unknown;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return ProcessState::Gone;
    };
    // `pid (comm) state ...`: comm may hold anything, so split after its last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return ProcessState::Unknown;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); starttime is field 22.
    match (fields.first(), fields.get(19).and_then(|s| s.parse().ok())) {
        (Some(&"Z") | Some(&"X") | Some(&"x"), _) => ProcessState::Gone,
        (Some(_), Some(start)) => ProcessState::Running(start),
        _ => ProcessState::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_a_finished_one_is_gone() {
        let me = Holder::this_process("test");
        assert!(me.runs_on_this_machine(), "{me:?}");
        assert_eq!(me.gone_from_this_machine(), None);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let gone = Holder { pid, ..me.clone() };
        assert!(!gone.runs_on_this_machine());
        assert!(gone.gone_from_this_machine().is_some());
        // A reused pid (another start time) is not the holder.
        let reused = Holder {
            pid_start: me.pid_start.map(|s| s + 1),
            ..me.clone()
        };
        assert!(reused.gone_from_this_machine().is_some());
        // Another machine cannot be judged from here.
        let elsewhere = Holder {
            host: format!("{}-elsewhere", me.host),
            pid,
            ..me
        };
        assert_eq!(elsewhere.gone_from_this_machine(), None);
        assert!(!elsewhere.runs_on_this_machine());
    }

    #[test]
    fn records_round_trip_and_a_newer_format_is_refused() {
        let r = Record {
            format: RECORD_FORMAT,
            owner: "o".into(),
            holder: Holder::this_process("cairn run"),
            job_id: "j".into(),
            since_ms: 1,
            renewed_ms: 2,
            ttl_ms: 3,
            released: None,
        };
        assert_eq!(Record::parse(&r.bytes()).unwrap(), r);
        let newer = r.bytes().replace_format();
        assert!(Record::parse(&newer).unwrap_err().contains("format 2"));
        assert!(Record::parse(b"\xff").is_err());
    }

    trait ReplaceFormat {
        fn replace_format(self) -> Vec<u8>;
    }

    impl ReplaceFormat for Vec<u8> {
        fn replace_format(self) -> Vec<u8> {
            String::from_utf8(self)
                .unwrap()
                .replace("\"format\":1", "\"format\":2")
                .into_bytes()
        }
    }

    #[test]
    fn the_local_lock_path_is_keyed_by_job_and_storage() {
        let dir = Path::new("/run/x");
        let a = LocalLock::path(dir, "job", "/data/a");
        assert_ne!(a, LocalLock::path(dir, "job", "/data/b"));
        assert_ne!(a, LocalLock::path(dir, "other", "/data/a"));
        assert!(a.starts_with(dir) && a.to_string_lossy().ends_with(".lock"));
    }
}
