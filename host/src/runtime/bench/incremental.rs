//! `cairn bench job --incremental`: the keyed counter with a fraction of its keys changed per
//! interval, checkpointed full (`incremental = false`) and then incrementally, in one run; and
//! restores from the end of a chain of incremental checkpoints and from a full checkpoint.
//!
//! The changed fraction is set by the source's rate: `changed × keys ÷ interval` records per
//! second, each to a pseudo-random key (the keyed counter's key sequence), so about that
//! fraction of keys (a little less, since a key may come up twice) changes between two
//! checkpoints; the report gives the fraction of pages each checkpoint found changed, which is
//! what an incremental checkpoint uploads.
//!
//! 1. **Full:** `incremental = false`, `checkpoints` checkpoints measured once every key's state
//!    exists.
//! 2. **Incremental:** `incremental = true`, `full-every` one more than `chain`, measured from
//!    the first full checkpoint taken once the state is complete until the checkpoint `chain`
//!    incrementals after it.
//! 3. **Restore:** the job restored from that last incremental checkpoint (every task reads its
//!    chain: the full object and `chain` deltas) and from the full phase's last checkpoint,
//!    alternately, `RESTORE_ROUNDS` times each; a restore is timed from the start of the run to
//!    the moment its state is restored ([`RunOptions::on_restored`]), then the run is cancelled.
//!
//! Both phases and the restores run in this process one after the other, with the same
//! storage, keys, rate and interval. The files just written are read back from the page cache.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use cairn_plugin_api::CheckpointStorage;
use serde::Serialize;

use super::{median, BenchError};
use crate::{
    config::{Config, ExternalizedRetention},
    runtime::{
        keyed_counter::KeyedCounter, run_job, CheckpointReport, Command, Counters, RestoreFrom,
        RunOptions,
    },
};

/// How many times each restore is measured (the median is reported).
pub const RESTORE_ROUNDS: usize = 3;

/// What `cairn bench job --incremental` runs.
#[derive(Debug, Clone)]
pub struct IncrementalBench {
    /// Distinct keys.
    pub keys: u64,
    /// Bytes of state per key.
    pub state_bytes: u64,
    /// Parallel tasks.
    pub parallelism: u32,
    /// Checkpoint interval.
    pub interval: Duration,
    /// The fraction of keys changed per interval (0.01 for `--changed 1%`).
    pub changed: f64,
    /// Full checkpoints measured.
    pub checkpoints: u32,
    /// Incremental checkpoints after the full one the chain restored from starts with.
    pub chain: u32,
}

impl IncrementalBench {
    /// Records per second over the job, for `changed` of the keys per interval (at least 1).
    pub fn rate(&self) -> u64 {
        ((self.changed * self.keys as f64) / self.interval.as_secs_f64())
            .round()
            .max(1.0) as u64
    }
}

/// One measured checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct MeasuredCheckpoint {
    /// Its id.
    pub id: u64,
    /// Trigger to commit.
    #[serde(serialize_with = "crate::runtime::report::whole_units::ms_as_us")]
    pub duration_us: f64,
    /// Bytes it wrote (its own objects; the whole state for a full checkpoint).
    pub uploaded_bytes: u64,
    /// Bytes a restore from it reads.
    pub state_bytes: u64,
    /// State objects it wrote, over every task.
    pub objects_written: u64,
    /// Checkpoints since the last full one (`None` with `incremental = false`).
    pub depth: Option<u32>,
    /// Pages over every task, and how many changed since the previous checkpoint.
    pub pages: u64,
    /// See `pages`.
    pub changed_pages: u64,
}

impl MeasuredCheckpoint {
    fn of(r: &CheckpointReport) -> Self {
        MeasuredCheckpoint {
            id: r.id,
            duration_us: r.duration().as_secs_f64() * 1000.0,
            uploaded_bytes: r.incremental_bytes,
            state_bytes: r.state_bytes,
            objects_written: r.objects_written,
            depth: r.incremental.as_ref().map(|i| i.depth),
            pages: r.pages,
            changed_pages: r.changed_pages,
        }
    }
}

/// The figures of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Every measured checkpoint.
    pub checkpoints: Vec<MeasuredCheckpoint>,
    /// Median bytes uploaded per checkpoint.
    pub median_uploaded_bytes: u64,
    /// Median trigger to commit, in ms.
    #[serde(
        serialize_with = "crate::runtime::report::whole_units::ms_as_us",
        rename = "median_us"
    )]
    pub median_ms: f64,
    /// The checkpoint restores start from (the last measured one).
    #[serde(skip)]
    pub last_pointer: String,
}

impl Phase {
    fn of(measured: &[CheckpointReport]) -> Self {
        let uploaded: Vec<f64> = measured
            .iter()
            .map(|r| r.incremental_bytes as f64)
            .collect();
        let ms: Vec<f64> = measured
            .iter()
            .map(|r| r.duration().as_secs_f64() * 1000.0)
            .collect();
        Phase {
            checkpoints: measured.iter().map(MeasuredCheckpoint::of).collect(),
            median_uploaded_bytes: median(&uploaded).round() as u64,
            median_ms: median(&ms),
            last_pointer: measured
                .last()
                .map(|r| r.pointer.clone())
                .unwrap_or_default(),
        }
    }
}

/// Every figure of `cairn bench job --incremental`.
#[derive(Debug, Clone, Serialize)]
pub struct IncrementalBenchReport {
    /// Bytes of state held (`keys × state-bytes`).
    pub state_bytes: u64,
    /// Records per second the sources emitted (from `changed`).
    pub rate: u64,
    /// The fraction of keys asked to change per interval.
    pub changed_keys_fraction: f64,
    /// Median over the incremental checkpoints of changed pages ÷ pages.
    pub changed_pages_fraction: f64,
    /// `incremental = false`.
    pub full: Phase,
    /// `incremental = true`: the delta checkpoints of the chain restored from (the full
    /// checkpoint it starts with is `chain_full`).
    pub incremental: Phase,
    /// The full checkpoint the chain starts with.
    pub chain_full: MeasuredCheckpoint,
    /// Median bytes uploaded per checkpoint, incremental ÷ full.
    pub bytes_incremental_vs_full: f64,
    /// Median checkpoint duration, incremental ÷ full.
    pub duration_incremental_vs_full: f64,
    /// Incremental checkpoints in the chain restored from.
    pub chain_depth: u32,
    /// Restores from the end of the chain, in ms (each round).
    #[serde(
        serialize_with = "crate::runtime::report::whole_units::vec_ms_as_us",
        rename = "restore_chain_us"
    )]
    pub restore_chain_ms: Vec<f64>,
    /// Restores from the full phase's checkpoint, in ms (each round).
    #[serde(
        serialize_with = "crate::runtime::report::whole_units::vec_ms_as_us",
        rename = "restore_full_us"
    )]
    pub restore_full_ms: Vec<f64>,
    /// Their median.
    #[serde(
        serialize_with = "crate::runtime::report::whole_units::ms_as_us",
        rename = "restore_chain_median_us"
    )]
    pub restore_chain_median_ms: f64,
    /// Their median.
    #[serde(
        serialize_with = "crate::runtime::report::whole_units::ms_as_us",
        rename = "restore_full_median_us"
    )]
    pub restore_full_median_ms: f64,
    /// Median restore from the chain ÷ median restore from the full checkpoint.
    pub restore_chain_vs_full: f64,
    /// The most state objects an incremental checkpoint of the chain wrote per task.
    pub max_objects_per_checkpoint_per_task: f64,
}

/// Why a measured run stops: enough full checkpoints, or the chain complete.
type Enough<'a> = dyn Fn(&[CheckpointReport]) -> bool + 'a;

/// Run the keyed counter with `config` (already set up) until `enough` says so of the
/// checkpoints that count; a checkpoint counts once every key's state exists and `counts` agrees.
fn measure(
    config: &Config,
    storage: &Arc<dyn CheckpointStorage>,
    keys: u64,
    counts: &dyn Fn(&CheckpointReport, &[CheckpointReport]) -> bool,
    enough: &Enough<'_>,
    on_checkpoint: &dyn Fn(&CheckpointReport, bool),
) -> Result<Vec<CheckpointReport>, BenchError> {
    let counters = Counters::new();
    let (tx, rx) = crossbeam_channel::unbounded();
    let measured: Mutex<Vec<CheckpointReport>> = Mutex::default();
    // When the state became complete, on the run's clock (first seen at a completion).
    let complete_at: Mutex<Option<Duration>> = Mutex::default();
    let on_cp = |r: &CheckpointReport| {
        let mut complete = complete_at.lock().unwrap_or_else(|p| p.into_inner());
        if complete.is_none()
            && counters
                .state_entries
                .load(std::sync::atomic::Ordering::Relaxed)
                >= keys
        {
            *complete = Some(r.completed);
        }
        let mut m = measured.lock().unwrap_or_else(|p| p.into_inner());
        let counted = !r.savepoint && complete.is_some_and(|c| r.triggered >= c) && counts(r, &m);
        on_checkpoint(r, counted);
        if counted {
            m.push(r.clone());
            if enough(&m) {
                let _ = tx.send(Command::Cancel);
            }
        }
    };
    run_job(
        KeyedCounter::new(&config.job, None),
        config,
        storage.clone(),
        &RunOptions {
            commands: Some(rx),
            counters: counters.clone(),
            on_checkpoint: &on_cp,
            ..RunOptions::default()
        },
    )?;
    let measured = measured.into_inner().unwrap_or_else(|p| p.into_inner());
    if !enough(&measured) {
        return Err(BenchError::Incomplete(format!(
            "the job stopped after {} measured checkpoints",
            measured.len()
        )));
    }
    Ok(measured)
}

/// Restore `config`'s job from `pointer` and cancel it once restored: start of the run to
/// restored state, in ms.
fn restore_ms(
    config: &Config,
    storage: &Arc<dyn CheckpointStorage>,
    pointer: &str,
) -> Result<f64, BenchError> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let restored: Mutex<Option<Duration>> = Mutex::default();
    let start = Instant::now();
    let on_restored = |_: &crate::runtime::Restored| {
        *restored.lock().unwrap_or_else(|p| p.into_inner()) = Some(start.elapsed());
        let _ = tx.send(Command::Cancel);
    };
    run_job(
        KeyedCounter::new(&config.job, None),
        config,
        storage.clone(),
        &RunOptions {
            from: Some(RestoreFrom::Pointer(pointer.to_string())),
            commands: Some(rx),
            on_restored: &on_restored,
            ..RunOptions::default()
        },
    )?;
    let took = restored.into_inner().unwrap_or_else(|p| p.into_inner());
    took.map(|d| d.as_secs_f64() * 1000.0).ok_or_else(|| {
        BenchError::Incomplete(format!("the run from {pointer} ended without restoring"))
    })
}

/// Run the benchmark with `config`'s plugin settings, its job replaced by `bench`'s.
/// `on_checkpoint` sees every checkpoint with the phase's name and whether it is measured;
/// `on_restore` every restore with its duration in ms.
pub fn run(
    bench: &IncrementalBench,
    config: &Config,
    storage: Arc<dyn CheckpointStorage>,
    on_checkpoint: &dyn Fn(&str, &CheckpointReport, bool),
    on_restore: &dyn Fn(&str, f64),
) -> Result<IncrementalBenchReport, BenchError> {
    let rate = bench.rate();
    let setup = |job_id: &str, incremental: bool| {
        let mut c = config.clone();
        c.job.id = job_id.to_string();
        c.job.keys = bench.keys;
        c.job.state_bytes_per_key = bench.state_bytes;
        c.job.parallelism = bench.parallelism;
        c.job.rate = Some(rate);
        c.job.operator_rate = None;
        let cp = &mut c.checkpointing;
        cp.interval = Some(bench.interval);
        cp.min_pause = Duration::ZERO;
        cp.num_retained = 1;
        cp.externalized_retention = ExternalizedRetention::RetainOnCancellation;
        cp.incremental = incremental;
        cp.full_every = incremental.then_some(bench.chain + 1);
        c
    };
    let full_config = setup("bench-job-full", false);
    let full = measure(
        &full_config,
        &storage,
        bench.keys,
        &|_, _| true,
        &|m| m.len() >= bench.checkpoints as usize,
        &|r, m| on_checkpoint("full", r, m),
    )?;
    let chain = bench.chain;
    let inc_config = setup("bench-job-incremental", true);
    // A chain counts from a full checkpoint taken once the state is complete; a checkpoint
    // that is not the next of the chain (a full one before the end) starts it over.
    let inc = measure(
        &inc_config,
        &storage,
        bench.keys,
        &|r, m| {
            let depth = r.incremental.as_ref().map_or(0, |i| i.depth);
            let next = m
                .last()
                .and_then(|l| l.incremental.as_ref())
                .map_or(0, |i| i.depth + 1);
            depth == next || depth == 0
        },
        &|m| {
            m.last()
                .and_then(|l| l.incremental.as_ref())
                .is_some_and(|i| i.depth >= chain)
        },
        &|r, m| on_checkpoint("incremental", r, m),
    )?;
    // The chain: from its full checkpoint (the last depth 0) to the end.
    let start = inc
        .iter()
        .rposition(|r| r.incremental.as_ref().map_or(0, |i| i.depth) == 0)
        .unwrap_or(0);
    let chain_full = MeasuredCheckpoint::of(&inc[start]);
    let deltas = &inc[start + 1..];
    let full_phase = Phase::of(&full);
    let inc_phase = Phase::of(deltas);

    let mut restore_chain_ms = Vec::new();
    let mut restore_full_ms = Vec::new();
    for _ in 0..RESTORE_ROUNDS {
        let ms = restore_ms(&inc_config, &storage, &inc_phase.last_pointer)?;
        on_restore("chain", ms);
        restore_chain_ms.push(ms);
        let ms = restore_ms(&full_config, &storage, &full_phase.last_pointer)?;
        on_restore("full", ms);
        restore_full_ms.push(ms);
    }
    let fractions: Vec<f64> = deltas
        .iter()
        .filter(|r| r.pages > 0)
        .map(|r| r.changed_pages as f64 / r.pages as f64)
        .collect();
    Ok(IncrementalBenchReport {
        state_bytes: bench.keys.saturating_mul(bench.state_bytes),
        rate,
        changed_keys_fraction: bench.changed,
        changed_pages_fraction: median(&fractions),
        bytes_incremental_vs_full: inc_phase.median_uploaded_bytes as f64
            / full_phase.median_uploaded_bytes.max(1) as f64,
        duration_incremental_vs_full: inc_phase.median_ms / full_phase.median_ms,
        chain_depth: deltas.len() as u32,
        restore_chain_median_ms: median(&restore_chain_ms),
        restore_full_median_ms: median(&restore_full_ms),
        restore_chain_vs_full: median(&restore_chain_ms) / median(&restore_full_ms),
        restore_chain_ms,
        restore_full_ms,
        max_objects_per_checkpoint_per_task: deltas
            .iter()
            .map(|r| r.objects_written as f64 / f64::from(bench.parallelism.max(1)))
            .fold(0.0, f64::max),
        chain_full,
        full: full_phase,
        incremental: inc_phase,
    })
}
