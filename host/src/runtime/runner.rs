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
        BarrierCounts, Phase, Progress, RestoreFrom, RetainedView, RunError, RunOptions, Status,
        StopWhen, Summary,
    },
    restore::{fingerprint_of, load_metadata, start_state, LoadError, StartState},
    state::KeyedState,
};
use crate::{
    config::{Config, ExternalizedRetention},
    coordinator::{Coordinator, Policy, Retained},
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
    let job_id = config.job.id.clone();
    let calls = PluginCalls::observed(
        storage,
        config.checkpointing.timeout,
        opts.cancel.clone(),
        opts.counters.histograms.clone(),
    );
    let location = calls.info()?.location;
    let job_storage = calls.job(&job_id)?;
    let existing = calls.list_completed(&job_storage, &job_id)?;
    let next_id = existing
        .iter()
        .map(|c| c.checkpoint_id)
        .max()
        .map_or(1, |m| m.saturating_add(1));
    let retained: Vec<Retained> = existing
        .iter()
        .map(|c| Retained {
            id: c.checkpoint_id,
            pointer: c.pointer.clone(),
        })
        .collect();
    let initial: Option<(u64, String)> = match &opts.from {
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
            runner.restore(pointer, false)?
        }
        None => StartState::fresh(p),
    };
    let restored_from = initial.as_ref().map(|(_, p)| p.clone());
    if let Some(pointer) = &restored_from {
        tracing::info!(pointer = %pointer, "restored from checkpoint");
    }
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
                tracing::warn!(attempt, "job failed: {reason}");
                opts.counters.publish(|l| {
                    l.last_failure = Some(format!("attempt {attempt} failed: {reason}"));
                });
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
            Status::Cancelled
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
    // discarding never loses the report.
    (opts.on_summary)(&summary);
    runner.finish_background();
    runner.on_terminal(&coordinator, terminal);
    Ok(summary)
}

pub(super) struct Runner<'a, J: Job> {
    pub(super) config: &'a Config,
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
