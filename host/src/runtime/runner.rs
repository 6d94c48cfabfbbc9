//! Running a job: [`run_job`] starts it (fresh or restored), runs its attempts (each one in
//! `attempt.rs`), fails it over from the latest completed checkpoint under `[restart]`, and at
//! the end reports the summary, then applies `externalized-retention`.
//!
//! Every plugin call made here goes through [`PluginCalls`], with a deadline; a failover whose
//! checkpoint is gone says that the job's folder disappeared.

use std::{
    collections::VecDeque,
    sync::{atomic::Ordering, Arc},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use cairn_plugin_api::{CheckpointStorage, JobStorage, StorageError};

use super::{
    api::{Job, JobEnd, OffsetOf},
    calls::{Location, PluginCalls},
    memory,
    report::{
        BarrierCounts, FreshPlan, Phase, Progress, RestoreFrom, Restored, RetainedView, RunError,
        RunOptions, Status, StopWhen, Summary,
    },
    restore::{fingerprint_of, load_metadata, start_state, LoadError, StartState},
    state::KeyedState,
};
use crate::{
    config::{Config, ExternalizedRetention},
    coordinator::{Coordinator, Policy, Retained},
    lease::{self, Fence, LeaseOptions, Wait},
    metadata::SnapshotKind,
};

/// Milliseconds since the Unix epoch, now.
pub(crate) fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How an attempt ended.
pub(super) enum AttemptEnd<J: Job> {
    Finished {
        states: Vec<KeyedState<J::Key, J::State>>,
        offsets: Vec<OffsetOf<J>>,
    },
    Cancelled,
    Failover(String),
}

/// How a run ended, for `externalized-retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Terminal {
    Finished,
    Cancelled,
    Failed,
}

/// Whether the job's completed checkpoints stay when it ends this way (Flink's
/// `ExternalizedCheckpointCleanup`): a finished job needs none; a cancelled one keeps them only
/// with retain-on-cancellation; a failed one keeps them when they are externalized at all.
fn keeps_checkpoints(retention: ExternalizedRetention, terminal: Terminal) -> bool {
    match (terminal, retention) {
        (Terminal::Finished, _) => false,
        (Terminal::Cancelled, r) => r == ExternalizedRetention::RetainOnCancellation,
        (Terminal::Failed, r) => r != ExternalizedRetention::NoExternalized,
    }
}

/// Run `job` with the checkpointing, restart and retention settings of `config`, checkpointing
/// through `storage`. See the module docs; `opts` says where to restore from, when to stop,
/// and what to call on progress, checkpoints, failovers and at the end.
pub fn run_job<J: Job>(
    job: J,
    config: &Config,
    storage: Arc<dyn CheckpointStorage>,
    opts: &RunOptions<'_>,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    opts.counters
        .started_ms
        .store(epoch_ms(), Ordering::Relaxed);
    opts.counters.publish(|l| l.phase = Phase::Starting);
    if let Some(bytes) = job.state_estimate() {
        memory::check_fits(bytes, &memory::Machine::current()).map_err(RunError::Job)?;
    }
    if opts.standby && (opts.from.is_some() || opts.fresh) {
        return Err(RunError::Job(
            "a standby resumes from the job's latest checkpoint: it takes neither --from nor \
             --fresh"
                .to_string(),
        ));
    }
    if opts.fresh && opts.from.is_some() {
        return Err(RunError::Job(
            "--fresh starts from empty state; it cannot restore (--from) too".to_string(),
        ));
    }
    let job_id = config.job.id.clone();
    let calls = PluginCalls::observed(
        storage,
        config.checkpointing.timeout,
        opts.cancel.clone(),
        opts.counters.histograms.clone(),
    );
    let location = calls.info()?.location;
    // One live writer: the lease comes first, and everything after it is fenced by it.
    let command = format!(
        "{} run{}",
        program_name(),
        if opts.standby { " --standby" } else { "" }
    );
    let lease = lease::acquire(
        &calls,
        &LeaseOptions {
            job_id: &job_id,
            command: &command,
            ttl: config.lease.ttl,
            wait: if opts.standby {
                Wait::Standby
            } else {
                Wait::Refuse
            },
            local_dir: config.lease.local_dir(),
            hint: "stop it first, or start this run with --standby to take the job over when \
                   its holder dies",
            cancel: opts.cancel.clone(),
            on_event: opts.on_lease,
        },
    )?;
    calls.set_fence(lease.fence());
    lease.publish(&opts.lease);
    let job_storage = calls.job(&job_id)?;
    let mut existing = calls.list_completed(&job_storage, &job_id)?;
    let from = if opts.standby {
        existing.last().map(|_| RestoreFrom::Latest)
    } else {
        opts.from.clone()
    };
    // Ids never repeat: not those of completed checkpoints (kept or discarded below), of
    // locations left uncommitted, or of savepoints.
    let mut highest = existing.iter().map(|c| c.checkpoint_id).max().unwrap_or(0);
    if let Ok(open) = calls.list_uncommitted(&job_storage, &job_id) {
        highest = highest.max(open.into_iter().max().unwrap_or(0));
    }
    highest = highest.max(highest_savepoint_id(&calls, &job_storage, config)?);
    if from.is_none() && !existing.is_empty() {
        discard_for_fresh(&calls, config, &location, opts, &existing)?;
        existing.clear();
    }
    let retained: Vec<Retained> = existing
        .iter()
        .map(|c| Retained {
            id: c.checkpoint_id,
            pointer: c.pointer.clone(),
        })
        .collect();
    let initial: Option<(u64, String)> = match &from {
        None => None,
        Some(RestoreFrom::Latest) => match existing.last() {
            Some(c) => Some((c.checkpoint_id, c.pointer.clone())),
            None => {
                return Err(RunError::Restore(format!(
                    "--from latest: job '{job_id}' has no completed checkpoint in {location}"
                )))
            }
        },
        Some(RestoreFrom::Pointer(p)) => Some((0, p.clone())),
    };
    let settings = job.settings();
    let mut runner = Runner {
        config,
        fence: lease.fence(),
        fingerprint: fingerprint_of(job.kind(), &settings),
        settings,
        job: Arc::new(job),
        calls,
        job_storage,
        location,
        opts,
        started,
        progress: Progress::default(),
        background: Vec::new(),
        injected_records: false,
        injected_checkpoints: false,
        last_completed: None,
        deferred: Vec::new(),
        stopping: None,
        stop_replies: Vec::new(),
        final_savepoint: None,
        savepoint_queue: VecDeque::new(),
        records_counted: 0,
        barriers: BarrierCounts::default(),
        channel_state_bytes: 0,
        max_alignment_ms: 0,
    };
    let p = config.job.parallelism as usize;
    // The job is ours now: what serves it (control socket, metrics) starts before the restore,
    // so a long restore can be watched.
    (opts.on_started)().map_err(RunError::Job)?;
    let mut state = match &initial {
        Some((_, pointer)) => {
            opts.counters.publish(|l| l.phase = Phase::Restoring);
            match runner.restore_at_start(pointer) {
                Ok((s, kind)) => {
                    (opts.on_restored)(&Restored {
                        id: s.checkpoint_id,
                        pointer: pointer.clone(),
                        kind,
                    });
                    s
                }
                Err((e, diagnosable)) if diagnosable && from == Some(RestoreFrom::Latest) => {
                    return Err(runner.damaged_latest(&existing, &e))
                }
                Err((e, _)) => return Err(e),
            }
        }
        None => StartState::fresh(p),
    };
    let restored_from = initial.as_ref().map(|(_, p)| p.clone());
    if let Some(pointer) = &restored_from {
        tracing::info!(pointer = %pointer, "restored from checkpoint");
    }
    // After the restored id too: a savepoint restored from another place never repeats.
    let next_id = highest.max(state.checkpoint_id).saturating_add(1);
    let mut coordinator = Coordinator::new(
        Policy::from_config(&config.checkpointing),
        next_id,
        retained,
    );
    let mut attempt = 0u32;
    let (end, attempts) = loop {
        attempt += 1;
        runner.progress.attempt = attempt;
        if attempt > 1 {
            opts.counters.failovers.fetch_add(1, Ordering::Relaxed);
        }
        opts.counters.publish(|l| {
            l.phase = Phase::Running;
            l.attempt = attempt;
        });
        let end = runner.attempt(&mut coordinator, state);
        opts.counters.publish(|l| {
            l.phase = match &end {
                AttemptEnd::Failover(_) => Phase::Restarting,
                _ => Phase::Stopping,
            };
        });
        match end {
            AttemptEnd::Failover(reason) => {
                // Reported once, by the caller: `on_failover`, or the error of the last attempt.
                tracing::debug!(attempt, "job failed: {reason}");
                opts.counters.publish(|l| {
                    l.last_failure = Some(format!("attempt {attempt} failed: {reason}"));
                });
                // A holder that lost its lease stops here, touching nothing: the job is its new
                // holder's. One whose lease merely expired goes on only if it renews it.
                if let Err(e) = lease.regain() {
                    runner.finish_background();
                    return Err(e.into());
                }
                if attempt > config.restart.attempts {
                    runner.finish_background();
                    runner.on_terminal(&coordinator, Terminal::Failed);
                    return Err(RunError::Failed {
                        attempts: attempt,
                        last: reason,
                    });
                }
                // Restart from this run's newest completed checkpoint; before there is one, from
                // where the run started (never from a newer checkpoint of an earlier run).
                let from = runner.last_completed.clone().or_else(|| initial.clone());
                (opts.on_failover)(attempt, &reason, from.as_ref().map(|(_, p)| p.as_str()));
                if runner.sleep_or_cancel(config.restart.delay) {
                    break (None, attempt);
                }
                state = match &from {
                    Some((_, pointer)) => match runner.restore(pointer, true) {
                        Ok(s) => s,
                        Err(e) => {
                            runner.finish_background();
                            runner.on_terminal(&coordinator, Terminal::Failed);
                            return Err(e);
                        }
                    },
                    None => StartState::fresh(p),
                };
            }
            AttemptEnd::Cancelled => break (None, attempt),
            AttemptEnd::Finished { states, offsets } => break (Some((states, offsets)), attempt),
        }
    };
    let terminal = if end.is_some() {
        Terminal::Finished
    } else {
        Terminal::Cancelled
    };
    let keeps = keeps_checkpoints(config.checkpointing.externalized_retention, terminal);
    let details = match &end {
        Some((states, offsets)) => runner.job.summarize(&JobEnd { states, offsets }),
        None => serde_json::Map::new(),
    };
    let counters = &opts.counters;
    let first = counters.first_record_us.load(Ordering::Relaxed);
    let summary = Summary {
        job_id: config.job.id.clone(),
        job_kind: runner.job.kind().to_string(),
        status: if terminal == Terminal::Finished {
            Status::Finished
        } else {
            Status::Stopped
        },
        attempts,
        checkpoints_completed: runner.progress.completed,
        checkpoints_failed: runner.progress.failures,
        latest_checkpoint: coordinator
            .latest()
            .filter(|_| keeps)
            .map(|r| RetainedView {
                id: r.id,
                pointer: r.pointer.clone(),
            }),
        checkpoints_kept: keeps,
        final_savepoint: runner.final_savepoint.clone(),
        restored_from,
        records_counted: runner.records_counted,
        records_processed: counters.records.load(Ordering::Relaxed),
        first_record_ms: (first != u64::MAX).then(|| first as f64 / 1000.0),
        checkpoint_barriers: runner.barriers.clone(),
        channel_state_bytes: runner.channel_state_bytes,
        max_alignment_ms: runner.max_alignment_ms,
        details,
    };
    // Report first, then wait for the discards and discard: a crash (or a plugin hanging) while
    // discarding never loses the report. Nothing is discarded without the lease.
    (opts.on_summary)(&summary);
    runner.finish_background();
    match lease.regain() {
        Ok(()) => runner.on_terminal(&coordinator, terminal),
        Err(e) => tracing::warn!("the job's checkpoints are left as they are: {e}"),
    }
    lease.release(match terminal {
        Terminal::Finished => "finished",
        Terminal::Cancelled => "stopped",
        Terminal::Failed => "failed",
    });
    Ok(summary)
}

/// The file name of this executable, for the lease record (`cairn`, or a program running its
/// own job).
fn program_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "cairn".to_string())
}

/// The highest id among the job's completed savepoints under `[savepoints] dir` and the
/// plugin's default savepoint location (0 if none). A plugin that cannot list them (API 1.0)
/// gets a warning: its savepoints' ids may then be repeated.
fn highest_savepoint_id(
    calls: &PluginCalls,
    job: &Arc<dyn JobStorage>,
    config: &Config,
) -> Result<u64, RunError> {
    let mut pointers = std::collections::BTreeSet::new();
    for target in [config.savepoints.target(), None] {
        match calls.list_savepoints(job, &config.job.id, target) {
            Ok(found) => pointers.extend(found),
            Err(e) if e.kind() == cairn_plugin_api::ErrorKind::Unsupported => {
                tracing::warn!(
                    "the ids of savepoints are not taken into account, so a new checkpoint may \
                     repeat a savepoint's id: {}",
                    e.message()
                );
                return Ok(0);
            }
            Err(e) => {
                return Err(RunError::Lineage(format!(
                    "cannot list the savepoints of job '{}', whose ids checkpoint ids must not \
                     repeat: {e}",
                    config.job.id
                )))
            }
        }
    }
    Ok(pointers
        .iter()
        .filter_map(|p| {
            let meta = calls.resolve(p).ok()?;
            let meta = crate::metadata::CheckpointMetadata::decode(&meta.metadata).ok()?;
            (meta.job_id == config.job.id).then_some(meta.checkpoint_id)
        })
        .max()
        .unwrap_or(0))
}

/// A start without `from` on a job with completed checkpoints: refused, unless `fresh`, which
/// discards them (oldest first, so a crash halfway leaves the newest) once confirmed.
fn discard_for_fresh(
    calls: &PluginCalls,
    config: &Config,
    location: &str,
    opts: &RunOptions<'_>,
    existing: &[cairn_plugin_api::CompletedCheckpoint],
) -> Result<(), RunError> {
    let job_id = &config.job.id;
    let newest = existing.last().expect("not empty");
    if !opts.fresh {
        return Err(RunError::Lineage(format!(
            "job '{job_id}' has {} in {location} (the newest is {}, {}): resume from it with \
             --from latest, or start over with --fresh, which discards them",
            crate::words::count(existing.len() as u64, "completed checkpoint"),
            newest.checkpoint_id,
            newest.pointer
        )));
    }
    let plan = FreshPlan {
        job_id: job_id.clone(),
        location: location.to_string(),
        checkpoints: existing.to_vec(),
    };
    if !(opts.confirm_fresh)(&plan) {
        return Err(RunError::Lineage(format!(
            "--fresh was not confirmed (it asks on a terminal; --yes confirms without asking): \
             the {} of job '{job_id}' are kept",
            crate::words::count(existing.len() as u64, "completed checkpoint")
        )));
    }
    for c in existing {
        calls.dispose(&c.pointer).map_err(|e| {
            RunError::Lineage(format!(
                "--fresh: discarding checkpoint {} ({}) failed: {e}; run it again to discard the \
                 rest",
                c.checkpoint_id, c.pointer
            ))
        })?;
    }
    tracing::info!(job = %job_id, count = existing.len(), "--fresh: discarded the job's checkpoints");
    Ok(())
}

pub(super) struct Runner<'a, J: Job> {
    pub(super) config: &'a Config,
    /// The job lease's fence: an attempt fails over once it says no.
    pub(super) fence: Arc<dyn Fence>,
    pub(super) job: Arc<J>,
    pub(super) settings: String,
    pub(super) fingerprint: String,
    pub(super) calls: Arc<PluginCalls>,
    pub(super) job_storage: Arc<dyn JobStorage>,
    /// Where the storage keeps checkpoints, for messages.
    pub(super) location: String,
    pub(super) opts: &'a RunOptions<'a>,
    pub(super) started: Instant,
    pub(super) progress: Progress,
    pub(super) background: Vec<JoinHandle<()>>,
    pub(super) injected_records: bool,
    pub(super) injected_checkpoints: bool,
    /// The newest checkpoint completed in this run: id and pointer.
    pub(super) last_completed: Option<(u64, String)>,
    /// Locations to clean once the attempt's tasks have stopped.
    pub(super) deferred: Vec<Location>,
    /// A stop-with-savepoint under way.
    pub(super) stopping: Option<super::attempt::Stopping>,
    /// Whoever waits for its savepoint.
    pub(super) stop_replies: Vec<super::attempt::SavepointReply>,
    /// Its savepoint, once taken.
    pub(super) final_savepoint: Option<String>,
    pub(super) savepoint_queue: VecDeque<super::attempt::SavepointRequest>,
    /// Records the last attempt's state reflects.
    pub(super) records_counted: u64,
    /// Completed checkpoints by how their barriers went, their channel state and longest
    /// alignment.
    pub(super) barriers: BarrierCounts,
    pub(super) channel_state_bytes: u64,
    pub(super) max_alignment_ms: u64,
}

impl<J: Job> Runner<'_, J> {
    pub(super) fn should_stop(&self) -> bool {
        self.opts.cancel.load(Ordering::Relaxed)
            || matches!(self.opts.stop_when, StopWhen::After(d) if self.started.elapsed() >= d)
    }

    /// Sleep `d`, waking early to stop. True if the run is to stop.
    pub(super) fn sleep_or_cancel(&self, d: Duration) -> bool {
        let until = Instant::now().checked_add(d);
        while until.is_none_or(|u| Instant::now() < u) {
            if self.should_stop() {
                return true;
            }
            let left = until.map_or(Duration::from_millis(20), |u| {
                u.saturating_duration_since(Instant::now())
            });
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
        self.should_stop()
    }

    /// The state to start from `pointer`. On a failover, a checkpoint of this run that is gone
    /// from the storage is explained (the job's folder disappeared) rather than reported as a
    /// bare "not found".
    fn restore(&self, pointer: &str, failover: bool) -> Result<StartState<J>, RunError> {
        let p = self.config.job.parallelism;
        let restored =
            match load_metadata(&self.calls, self.job.as_ref(), &self.config.job.id, pointer) {
                Ok(meta) => start_state::<J>(&self.calls, p, pointer, meta).map_err(|e| (false, e)),
                Err(LoadError::Resolve(err)) => {
                    let not_found = matches!(err, StorageError::NotFound(_));
                    Err((not_found, LoadError::Resolve(err).into_run_error(pointer)))
                }
                Err(refused) => Err((false, refused.into_run_error(pointer))),
            };
        match restored {
            Ok(s) => Ok(s),
            Err((not_found, e)) => {
                let ours = self
                    .last_completed
                    .as_ref()
                    .is_some_and(|(_, p)| p == pointer);
                if failover && (not_found || (ours && !self.still_listed(pointer))) {
                    Err(RunError::Restore(self.vanished(pointer, &e)))
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The state to start from `pointer` at the start of the run; on failure, whether the
    /// failure is one an older checkpoint could avoid (anything but a checkpoint of other
    /// settings or another job).
    fn restore_at_start(
        &self,
        pointer: &str,
    ) -> Result<(StartState<J>, SnapshotKind), (RunError, bool)> {
        let p = self.config.job.parallelism;
        match load_metadata(&self.calls, self.job.as_ref(), &self.config.job.id, pointer) {
            Ok(meta) => {
                let kind = meta.kind;
                start_state::<J>(&self.calls, p, pointer, meta)
                    .map(|s| (s, kind))
                    .map_err(|e| (e, true))
            }
            Err(LoadError::Refused(why)) => Err((RunError::Restore(why), false)),
            Err(e) => Err((e.into_run_error(pointer), true)),
        }
    }

    /// `--from latest` found the newest checkpoint unusable: say which older one restores, and
    /// how to use it, without picking it (the caller may want to look first).
    fn damaged_latest(
        &self,
        existing: &[cairn_plugin_api::CompletedCheckpoint],
        error: &RunError,
    ) -> RunError {
        let Some((newest, older)) = existing.split_last() else {
            return RunError::Restore(error.to_string());
        };
        let why = error.to_string();
        let why = why.strip_prefix("cannot restore: ").unwrap_or(&why);
        let mut tried = Vec::new();
        for c in older.iter().rev() {
            match self.restore_at_start(&c.pointer) {
                Ok(_) => {
                    return RunError::Restore(format!(
                        "the newest checkpoint of job '{}', {} ({}), cannot be restored: {why}; \
                         the older checkpoint {} restores (every handle read back and matched \
                         its checksum): resume from it with `cairn run --from {}`, and remove \
                         the damaged one with `cairn checkpoints delete --force {}`",
                        self.config.job.id,
                        newest.checkpoint_id,
                        newest.pointer,
                        c.checkpoint_id,
                        c.pointer,
                        newest.checkpoint_id
                    ))
                }
                Err((e, _)) => tried.push(format!("{}: {e}", c.checkpoint_id)),
            }
        }
        let others = if tried.is_empty() {
            "there is no older checkpoint".to_string()
        } else {
            format!("no older checkpoint restores either ({})", tried.join("; "))
        };
        RunError::Restore(format!(
            "the newest checkpoint of job '{}', {} ({}), cannot be restored: {why}; {others}; \
             `cairn run --fresh` starts over",
            self.config.job.id, newest.checkpoint_id, newest.pointer
        ))
    }

    /// Whether the checkpoint at `pointer` is still among the job's completed checkpoints.
    fn still_listed(&self, pointer: &str) -> bool {
        self.calls
            .list_completed(&self.job_storage, &self.config.job.id)
            .map(|all| all.iter().any(|c| c.pointer == pointer))
            .unwrap_or(false)
    }

    fn vanished(&self, pointer: &str, e: &RunError) -> String {
        let id = self
            .last_completed
            .as_ref()
            .filter(|(_, p)| p == pointer)
            .map_or(String::new(), |(id, _)| format!("checkpoint {id} "));
        let listing = match self
            .calls
            .list_completed(&self.job_storage, &self.config.job.id)
        {
            Ok(all) if all.is_empty() => format!(
                "no completed checkpoint of job '{}' is listed there now",
                self.config.job.id
            ),
            Ok(all) => format!(
                "the storage lists only checkpoints {:?} now",
                all.iter().map(|c| c.checkpoint_id).collect::<Vec<_>>()
            ),
            Err(le) => format!("listing the job's checkpoints fails too: {le}"),
        };
        let detail = e.to_string();
        let detail = detail.strip_prefix("cannot restore: ").unwrap_or(&detail);
        format!(
            "the job cannot restart from {id}{pointer}: the job's checkpoint folder in {} \
             disappeared while the job was running (removed, renamed or replaced: {listing}; \
             {detail})",
            self.location
        )
    }

    /// Discard in the background, in parallel.
    pub(super) fn discard_in_background(&mut self, pointers: Vec<String>, failed: Vec<Location>) {
        if pointers.is_empty() && failed.is_empty() {
            return;
        }
        let calls = self.calls.clone();
        let handle = std::thread::spawn(move || {
            std::thread::scope(|s| {
                for pointer in &pointers {
                    let calls = &calls;
                    s.spawn(move || {
                        if let Err(e) = calls.dispose(pointer) {
                            tracing::warn!(pointer = %pointer, "discarding a checkpoint failed: {e}");
                        }
                    });
                }
                for location in &failed {
                    let calls = &calls;
                    s.spawn(move || {
                        if let Err(e) = calls.dispose_on_failure(location) {
                            tracing::warn!("cleaning a failed checkpoint failed: {e}");
                        }
                    });
                }
            });
        });
        self.background.push(handle);
        self.background.retain(|h| !h.is_finished());
    }

    /// Wait for background discards, so they are not cut off by the exit. Each of their plugin
    /// calls has a deadline, so this ends.
    fn finish_background(&mut self) {
        for h in self.background.drain(..) {
            let _ = h.join();
        }
    }

    /// Apply `externalized-retention` when the job ends. The newest checkpoint goes last, after
    /// the others are gone: a crash in between leaves the newest, so a resume never goes back
    /// to an older checkpoint (and never repeats output its sinks committed).
    fn on_terminal(&mut self, coordinator: &Coordinator, terminal: Terminal) {
        if keeps_checkpoints(self.config.checkpointing.externalized_retention, terminal) {
            return;
        }
        let mut pointers: Vec<String> = coordinator.retained().map(|r| r.pointer.clone()).collect();
        let Some(newest) = pointers.pop() else {
            return;
        };
        tracing::info!(
            count = pointers.len() + 1,
            "discarding the job's checkpoints (the job {}; checkpointing.externalized-retention = {})",
            match terminal {
                Terminal::Finished => "finished",
                Terminal::Cancelled => "was stopped",
                Terminal::Failed => "failed",
            },
            self.config.checkpointing.externalized_retention
        );
        self.discard_in_background(pointers, Vec::new());
        self.finish_background();
        self.discard_in_background(vec![newest], Vec::new());
        self.finish_background();
    }
}
