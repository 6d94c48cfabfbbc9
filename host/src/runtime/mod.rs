//! The dataflow runtime: the job API, the tasks that run a job, and the coordinator loop that
//! checkpoints it through a storage plugin.
//!
//! - [`api`]: what a user implements ([`Job`](api::Job), [`Source`](api::Source),
//!   [`TwoPhaseCommitSink`](api::TwoPhaseCommitSink)); re-exported as `cairn_host::job`.
//! - [`state`]: keyed state with copy-on-write pages, O(1) snapshots and changed-page tracking.
//! - `codec`: records and keys as bytes (serde + postcard), key groups.
//! - `exchange`: the byte-bounded channels between sources and keyed tasks, where barriers are
//!   queued in order or overtake (unaligned checkpoints, and the aligned-checkpoint timeout).
//! - `align`: a keyed task's barrier handling in every mode (aligned, unaligned, aligned then
//!   unaligned, at-least-once), as a state machine.
//! - [`channel_state`]: the in-flight records of an unaligned checkpoint, as stream bytes.
//! - `tasks`: source and keyed tasks, the asynchronous snapshot upload, the sink's
//!   transactions.
//! - `calls`: every plugin call of the coordinator side, with a deadline.
//! - `restore`: reading a checkpoint back into a job's start state.
//! - `runner`: starting a job, failover, the summary and retention ([`run_job`]).
//! - `attempt`: one attempt and the coordinator loop that checkpoints it.
//! - `report`: options, commands, counters, the summary ([`RunOptions`], [`Summary`]).
//! - [`memory`]: whether a job's state fits in this machine.
//! - [`bench`]: `cairn bench job`, the keyed counter's checkpoints measured.
//! - [`keyed_counter`] and [`word_count`]: the built-in jobs, written on the API.
//!
//! [`run`] runs the built-in job the config names; [`run_job`] runs any job.

mod align;
pub mod api;
mod attempt;
pub mod bench;
mod calls;
pub mod channel_state;
mod codec;
mod exchange;
pub mod keyed_counter;
pub mod memory;
mod report;
mod restore;
mod runner;
pub mod state;
mod tasks;
pub mod word_count;

use std::sync::Arc;

use cairn_plugin_api::CheckpointStorage;

pub(crate) use self::runner::epoch_ms;
pub use self::{
    calls::PluginCalls,
    report::{
        BarrierCounts, CheckpointReport, Command, CompletedView, Counters, FreshPlan,
        IfSavepointFails, Live, PendingView, Phase, Progress, RestoreFrom, Restored, RetainedView,
        RunError, RunOptions, Status, StopWhen, Summary,
    },
    restore::fingerprint_of,
    runner::run_job,
};
use self::{keyed_counter::KeyedCounter, word_count::WordCount};
use crate::config::{Config, JobConfig, JobKind, PluginRef};

/// Run the built-in job `[job] kind` names. See [`run_job`].
pub fn run(
    config: &Config,
    storage: Arc<dyn CheckpointStorage>,
    opts: &RunOptions<'_>,
) -> Result<Summary, RunError> {
    match config.job.kind {
        JobKind::KeyedCounter => {
            let records = match opts.stop_when {
                StopWhen::Records(n) => Some(n),
                _ => None,
            };
            run_job(
                KeyedCounter::new(&config.job, records),
                config,
                storage,
                opts,
            )
        }
        JobKind::WordCount => {
            if let StopWhen::Records(_) = opts.stop_when {
                return Err(RunError::Job(
                    "--records bounds the keyed-counter job's source; the word count ends with \
                     its input"
                        .to_string(),
                ));
            }
            let job = WordCount::new(&config.job).map_err(RunError::Job)?;
            if opts.from.is_none() && word_count::has_committed_parts(job.output()) {
                return Err(RunError::Job(format!(
                    "{} already holds committed part files from an earlier run; resume that run \
                     with --from latest, or empty the folder for a new one",
                    job.output().display()
                )));
            }
            run_job(job, config, storage, opts)
        }
    }
}

/// Load the storage plugin `config` names, open it, and run `job` with it: the one call a
/// program running its own job needs. While it runs, the job is served as `cairn run` serves
/// it ([`crate::control::Services`]): `cairn status`, `savepoint`, `stop` and `cancel` reach
/// it, and `[metrics] listen` is honoured. See [`run_job`].
pub fn run_with_config<J: api::Job>(
    job: J,
    config: &Config,
    opts: &RunOptions<'_>,
) -> Result<Summary, RunError> {
    let (_, storage) = open_storage(config)?;
    let services = crate::control::Services::new(config, job.kind());
    services.run(opts, |opts| run_job(job, config, storage, opts))
}

/// Load the configured storage plugin (checking its pin) and open it with its options.
pub fn open_storage(
    config: &Config,
) -> Result<(crate::loader::Plugin, Arc<dyn CheckpointStorage>), RunError> {
    let plugin = load_plugin(config).map_err(RunError::Plugin)?;
    let storage = plugin
        .open(&config.storage.options_document())
        .map_err(|error| RunError::Open {
            plugin: plugin.manifest().name.clone(),
            error,
        })?;
    Ok((plugin, Arc::from(storage)))
}

/// Find and load the plugin `[storage]` names (checking its pin), without opening storage.
pub fn load_plugin(config: &Config) -> Result<crate::loader::Plugin, crate::loader::LoadError> {
    use crate::loader;
    let pin = config.storage.sha256.as_deref();
    match &config.storage.plugin {
        PluginRef::Name(name) => loader::load_by_name(&config.plugins.search_path(), name, pin),
        PluginRef::Path(path) => loader::load_path(path, pin),
    }
}

/// The fingerprint a checkpoint of the job `[job]` configures must carry, if the job can be
/// built (the word count lists its input folder).
pub fn fingerprint(job: &JobConfig) -> Result<String, String> {
    match job.kind {
        JobKind::KeyedCounter => Ok(fingerprint_of(
            keyed_counter::JOB_KIND,
            &keyed_counter::describe(job),
        )),
        JobKind::WordCount => {
            let wc = WordCount::new(job)?;
            Ok(fingerprint_of(
                word_count::JOB_KIND,
                &api::Job::settings(&wc),
            ))
        }
    }
}

/// Whether the state of the job `[job]` configures fits in this machine's memory (for `cairn
/// config check`; `cairn run` checks the same at start).
pub fn memory_fit(job: &JobConfig) -> memory::Fit {
    match job.kind {
        JobKind::KeyedCounter => {
            memory::check(KeyedCounter::state_bytes(job), &memory::Machine::current())
        }
        JobKind::WordCount => memory::Fit::Fits,
    }
}
