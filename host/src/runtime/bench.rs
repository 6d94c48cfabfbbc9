//! `cairn bench job`: the keyed counter with real state, checkpointed through a plugin, and
//! what its checkpoints cost, measured in one run.
//!
//! The job runs in this process until every key's state exists (so the state is `keys ×
//! state-bytes` bytes) and then for `checkpoints` more checkpoints; `min-pause` is half the
//! interval, so that checkpoints slower than the interval still leave time between them. A sampler records the
//! records counter every few milliseconds, so records/s can be split into "while a checkpoint is
//! in flight" and "between checkpoints". After the job, a raw `write` + `fsync` of as many bytes
//! as the median checkpoint holds, into a file in the same scratch directory, gives the
//! baseline (the median of three). The report holds the figures; the CLI adds the targets.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use cairn_plugin_api::CheckpointStorage;
use serde::Serialize;

use super::{
    keyed_counter::KeyedCounter, run_job, CheckpointReport, Command, Counters, RunOptions,
};
use crate::{
    config::{CheckpointingConfig, CheckpointingMode, Config},
    metadata::Barriers,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct JobBench {
    /// The job id its checkpoints go under.
    pub job_id: String,
    /// Distinct keys.
    pub keys: u64,
    /// Bytes of state per key.
    pub state_bytes: u64,
    /// Parallel tasks.
    pub parallelism: u32,
    /// Checkpoint interval.
    pub interval: Duration,
    /// Records per second over the job; `None` is unlimited.
    pub rate: Option<u64>,
    /// Checkpoints measured once the state is complete.
    pub checkpoints: u32,
    /// A scratch directory for the raw baseline (on the plugin's filesystem, for a fair one).
    pub scratch: std::path::PathBuf,
    /// Records per second the keyed operator processes (`[job] operator-rate`); `None` is
    /// unlimited. Below `rate` it backpressures the sources.
    pub operator_rate: Option<u64>,
    /// How barriers are handled.
    pub barriers: BenchBarriers,
}

/// The barrier modes a benchmark run can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchBarriers {
    /// Exactly-once, aligned.
    Aligned,
    /// Exactly-once, unaligned from the start.
    Unaligned,
    /// Exactly-once, aligned, switching to unaligned after this `aligned-checkpoint-timeout`.
    AlignedThenUnaligned(Duration),
    /// At-least-once.
    AtLeastOnce,
}

impl BenchBarriers {
    fn apply(self, c: &mut CheckpointingConfig) {
        let (mode, unaligned, timeout) = match self {
            BenchBarriers::Aligned => (CheckpointingMode::ExactlyOnce, false, Duration::ZERO),
            BenchBarriers::Unaligned => (CheckpointingMode::ExactlyOnce, true, Duration::ZERO),
            BenchBarriers::AlignedThenUnaligned(d) => (CheckpointingMode::ExactlyOnce, true, d),
            BenchBarriers::AtLeastOnce => (CheckpointingMode::AtLeastOnce, false, Duration::ZERO),
        };
        c.mode = mode;
        c.unaligned = unaligned;
        c.aligned_checkpoint_timeout = timeout;
        if unaligned {
            c.max_concurrent = 1;
        }
    }
}

/// Every figure of a run.
#[derive(Debug, Clone, Serialize)]
pub struct JobBenchReport {
    /// Bytes of state held (`keys × state-bytes`).
    pub state_bytes: u64,
    /// Bytes the median checkpoint wrote (state plus keys and framing).
    pub checkpoint_bytes: u64,
    /// Every measured checkpoint's duration, trigger to commit, in ms.
    #[serde(
        serialize_with = "crate::runtime::report::whole_units::vec_ms_as_us",
        rename = "durations_us"
    )]
    pub durations_ms: Vec<f64>,
    /// The median of those.
    #[serde(
        serialize_with = "crate::runtime::report::whole_units::ms_as_us",
        rename = "median_us"
    )]
    pub median_ms: f64,
    /// Checkpoint bytes ÷ median duration.
    pub mb_per_s: f64,
    /// The raw write + fsync of the same bytes: every round, in ms.
    #[serde(
        serialize_with = "crate::runtime::report::whole_units::vec_ms_as_us",
        rename = "raw_us"
    )]
    pub raw_ms: Vec<f64>,
    /// Their median.
    #[serde(
        serialize_with = "crate::runtime::report::whole_units::ms_as_us",
        rename = "raw_median_us"
    )]
    pub raw_median_ms: f64,
    /// Median checkpoint ÷ raw median.
    pub vs_raw: f64,
    /// Records per second while a measured checkpoint was in flight.
    pub records_per_s_during: Option<f64>,
    /// Records per second between measured checkpoints.
    pub records_per_s_between: Option<f64>,
    /// During ÷ between (`None` if either was not seen).
    pub during_vs_between: Option<f64>,
    /// From the start of the command (before the plugin was loaded) to the first record.
    #[serde(serialize_with = "crate::runtime::report::whole_units::ms")]
    pub start_to_first_record_ms: f64,
    /// Peak resident memory of this process (`VmHWM`).
    pub peak_rss_bytes: u64,
    /// Peak RSS ÷ state bytes.
    pub rss_vs_state: f64,
    /// Pages in the median checkpoint, and how many changed since the previous one.
    pub pages: u64,
    /// See `pages`.
    pub changed_pages: u64,
    /// Seconds the state took to become complete (the warm-up, not measured).
    #[serde(
        serialize_with = "crate::runtime::report::whole_units::secs_as_ms",
        rename = "warmup_ms"
    )]
    pub warmup_s: f64,
    /// Records per second from the first measured trigger to the last measured completion.
    pub records_per_s: Option<f64>,
    /// How each measured checkpoint's barriers went.
    pub barriers: Vec<Barriers>,
    /// Each measured checkpoint's channel-state bytes.
    pub channel_state_bytes: Vec<u64>,
    /// Each measured checkpoint's channel-state records.
    pub channel_state_records: Vec<u64>,
    /// Bytes queued in the keyed tasks' inputs at each measured checkpoint's unaligned
    /// snapshots (0 when aligned).
    pub queued_bytes: Vec<u64>,
}

/// Why a benchmark could not measure.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The job failed.
    #[error("the job failed: {0}")]
    Run(#[from] super::RunError),
    /// The raw baseline failed.
    #[error("raw baseline in {path}: {error}")]
    Raw {
        /// The file.
        path: String,
        /// The error.
        error: std::io::Error,
    },
    /// The job ended without the checkpoints asked for.
    #[error("{0}")]
    Incomplete(String),
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Peak resident set size of this process, from `/proc/self/status`.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line["VmHWM:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Run the benchmark with `config`'s storage settings replaced by `bench`'s job. `started` is
/// when the command started (before the plugin was loaded); `on_checkpoint` sees every
/// checkpoint, for progress.
pub fn run(
    bench: &JobBench,
    mut config: Config,
    storage: Arc<dyn CheckpointStorage>,
    started: Instant,
    on_checkpoint: &dyn Fn(&CheckpointReport, bool),
) -> Result<JobBenchReport, BenchError> {
    config.job.id = bench.job_id.clone();
    config.job.keys = bench.keys;
    config.job.state_bytes_per_key = bench.state_bytes;
    config.job.parallelism = bench.parallelism;
    config.job.rate = bench.rate;
    config.job.operator_rate = bench.operator_rate;
    bench.barriers.apply(&mut config.checkpointing);
    config.checkpointing.interval = Some(bench.interval);
    // Half an interval at least between a completion and the next trigger, so that even
    // checkpoints slower than the interval leave time "between checkpoints" to measure.
    config.checkpointing.min_pause = bench.interval / 2;
    config.checkpointing.num_retained = 1;
    let counters = Counters::new();
    let (tx, rx) = crossbeam_channel::unbounded();
    let done = Arc::new(AtomicBool::new(false));
    let full_at: Arc<Mutex<Option<Duration>>> = Arc::default();
    let samples: Arc<Mutex<Vec<(Duration, u64)>>> = Arc::default();
    // The sampler: records processed over time, and when the state became complete, on a
    // clock that starts at `base`.
    let base = Instant::now();
    let sampler = {
        let (counters, done, full_at, samples) = (
            counters.clone(),
            done.clone(),
            full_at.clone(),
            samples.clone(),
        );
        let keys = bench.keys;
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let now = base.elapsed();
                samples
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((now, counters.records.load(Ordering::Relaxed)));
                let mut full = full_at.lock().unwrap_or_else(|p| p.into_inner());
                if full.is_none() && counters.state_entries.load(Ordering::Relaxed) >= keys {
                    *full = Some(now);
                }
                drop(full);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let measured: Mutex<Vec<CheckpointReport>> = Mutex::default();
    let wanted = bench.checkpoints as usize;
    // The run's clock starts as `run_job` is entered, this long after `base`.
    let offset = base.elapsed();
    let on_cp = |r: &CheckpointReport| {
        let full = *full_at.lock().unwrap_or_else(|p| p.into_inner());
        let counts = full.is_some_and(|f| r.triggered.saturating_add(offset) >= f) && !r.savepoint;
        on_checkpoint(r, counts);
        if counts {
            let mut m = measured.lock().unwrap_or_else(|p| p.into_inner());
            m.push(r.clone());
            if m.len() >= wanted {
                let _ = tx.send(Command::Cancel);
            }
        }
    };
    let before_run = started.elapsed();
    let result = run_job(
        KeyedCounter::new(&config.job, None),
        &config,
        storage,
        &RunOptions {
            commands: Some(rx),
            counters: counters.clone(),
            on_checkpoint: &on_cp,
            ..RunOptions::default()
        },
    );
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    result?;
    let measured = measured.into_inner().unwrap_or_else(|p| p.into_inner());
    if measured.len() < wanted {
        return Err(BenchError::Incomplete(format!(
            "the job stopped after {} of {wanted} measured checkpoints",
            measured.len()
        )));
    }
    let durations: Vec<f64> = measured
        .iter()
        .map(|r| r.duration().as_secs_f64() * 1000.0)
        .collect();
    let median_ms = median(&durations);
    let mut by_duration = measured.clone();
    by_duration.sort_by_key(|r| r.duration());
    let mid = &by_duration[by_duration.len() / 2];
    let checkpoint_bytes = mid.state_bytes;

    // Records/s during and between measured checkpoints.
    let windows: Vec<(Duration, Duration)> = measured
        .iter()
        .map(|r| {
            (
                r.triggered.saturating_add(offset),
                r.completed.saturating_add(offset),
            )
        })
        .collect();
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // Records at any instant, interpolated between the sampler's readings.
    let records_at = |t: Duration| -> f64 {
        let i = samples.partition_point(|(at, _)| *at <= t);
        match (i.checked_sub(1).map(|j| samples[j]), samples.get(i)) {
            (Some((a, ra)), Some(&(b, rb))) if b > a => {
                let f = (t - a).as_secs_f64() / (b - a).as_secs_f64();
                ra as f64 + f * (rb as f64 - ra as f64)
            }
            (Some((_, r)), _) | (None, Some(&(_, r))) => r as f64,
            (None, None) => 0.0,
        }
    };
    let span =
        |(s, e): (Duration, Duration)| (records_at(e) - records_at(s), (e - s).as_secs_f64());
    let sum = |spans: Vec<(f64, f64)>| {
        spans
            .into_iter()
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let (rec_in, t_in) = sum(windows.iter().map(|&w| span(w)).collect());
    let gaps: Vec<(Duration, Duration)> = windows
        .windows(2)
        .filter(|w| w[1].0 > w[0].1)
        .map(|w| (w[0].1, w[1].0))
        .collect();
    let (rec_out, t_out) = sum(gaps.into_iter().map(span).collect());
    let during = (t_in > 0.0).then(|| rec_in / t_in);
    let whole = (
        windows.first().map_or(Duration::ZERO, |w| w.0),
        windows.last().map_or(Duration::ZERO, |w| w.1),
    );
    let records_per_s = (whole.1 > whole.0).then(|| {
        let (records, seconds) = span(whole);
        records / seconds
    });
    let between = (t_out > 0.0).then(|| rec_out / t_out);

    // The raw baseline: the same bytes, written and synced, three times.
    let data = cairn_conformance::bench::pattern(4 << 20);
    let path = bench.scratch.join("raw-baseline.bin");
    let mut raw_ms = Vec::new();
    for _ in 0..3 {
        let s = cairn_conformance::bench::raw_write(&path, checkpoint_bytes, &data).map_err(
            |error| BenchError::Raw {
                path: path.display().to_string(),
                error,
            },
        )?;
        raw_ms.push(s.seconds * 1000.0);
        remove(&path);
    }
    let raw_median_ms = median(&raw_ms);
    let state_bytes = bench.keys.saturating_mul(bench.state_bytes);
    let first = counters.first_record_us.load(Ordering::Relaxed);
    let peak = peak_rss().unwrap_or(0);
    let warmup = full_at
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .map_or(0.0, |f| f.saturating_sub(offset).as_secs_f64());
    Ok(JobBenchReport {
        state_bytes,
        checkpoint_bytes,
        median_ms,
        mb_per_s: checkpoint_bytes as f64 / 1e6 / (median_ms / 1000.0),
        durations_ms: durations,
        vs_raw: median_ms / raw_median_ms,
        raw_ms,
        raw_median_ms,
        records_per_s_during: during,
        records_per_s_between: between,
        during_vs_between: during.zip(between).map(|(d, b)| d / b),
        start_to_first_record_ms: before_run.as_secs_f64() * 1000.0 + first as f64 / 1000.0,
        peak_rss_bytes: peak,
        rss_vs_state: peak as f64 / state_bytes.max(1) as f64,
        pages: mid.pages,
        changed_pages: mid.changed_pages,
        warmup_s: warmup,
        records_per_s,
        barriers: measured.iter().map(|r| r.barriers).collect(),
        channel_state_bytes: measured.iter().map(|r| r.channel_state_bytes).collect(),
        channel_state_records: measured.iter().map(|r| r.channel_state_records).collect(),
        queued_bytes: measured.iter().map(|r| r.queued_bytes).collect(),
    })
}

/// What `cairn bench job --backpressure` runs: the keyed counter with a slow operator, so the
/// exchange stays full, in every barrier mode, one after the other in this process.
#[derive(Debug, Clone)]
pub struct BackpressureBench {
    /// Distinct keys.
    pub keys: u64,
    /// Bytes of state per key.
    pub state_bytes: u64,
    /// Parallel tasks.
    pub parallelism: u32,
    /// Checkpoint interval.
    pub interval: Duration,
    /// Records per second the slow operator processes over the job (the sources are
    /// unlimited).
    pub operator_rate: u64,
    /// Checkpoints measured per mode.
    pub checkpoints: u32,
    /// A scratch directory for the raw baselines.
    pub scratch: std::path::PathBuf,
}

/// The `aligned-checkpoint-timeout` the backpressure benchmark's switching run uses.
pub const BENCH_ALIGNED_TIMEOUT: Duration = Duration::from_millis(100);

/// Every figure of `cairn bench job --backpressure`, and the ratios between runs.
#[derive(Debug, Clone, Serialize)]
pub struct BackpressureReport {
    /// Exactly-once, aligned, under backpressure.
    pub aligned: JobBenchReport,
    /// Exactly-once, unaligned, under backpressure.
    pub unaligned: JobBenchReport,
    /// Exactly-once, aligned then unaligned after [`BENCH_ALIGNED_TIMEOUT`], under
    /// backpressure.
    pub aligned_timeout_100ms: JobBenchReport,
    /// Exactly-once, unaligned, the sources at half the operator's rate (no backpressure).
    pub unaligned_without_backpressure: JobBenchReport,
    /// Exactly-once (aligned), sources and operator unlimited: throughput.
    pub exactly_once_unthrottled: JobBenchReport,
    /// At-least-once, sources and operator unlimited: throughput.
    pub at_least_once_unthrottled: JobBenchReport,
    /// Median unaligned checkpoint ÷ median aligned, under backpressure.
    pub unaligned_vs_aligned: f64,
    /// Median checkpoint with the 100 ms timeout ÷ median aligned, under backpressure.
    pub timeout_vs_aligned: f64,
    /// Median unaligned checkpoint under backpressure ÷ without.
    pub unaligned_backpressure_vs_without: f64,
    /// Median over the unaligned checkpoints of channel-state bytes ÷ bytes queued in the
    /// exchange at the barrier.
    pub channel_state_vs_queued: Option<f64>,
    /// Seconds of records queued at the unaligned barrier: the median channel-state records ÷
    /// the records per second processed meanwhile.
    #[serde(
        serialize_with = "crate::runtime::report::whole_units::opt_secs_as_ms",
        rename = "queued_ms"
    )]
    pub queued_s: Option<f64>,
    /// At-least-once records/s ÷ exactly-once records/s, unthrottled.
    pub at_least_once_vs_exactly_once: Option<f64>,
}

/// Run the backpressure benchmark; `on_checkpoint` sees every checkpoint, with the name of the
/// run and whether it is measured.
pub fn backpressure(
    bench: &BackpressureBench,
    config: &Config,
    storage: Arc<dyn CheckpointStorage>,
    started: Instant,
    on_checkpoint: &dyn Fn(&str, &CheckpointReport, bool),
) -> Result<BackpressureReport, BenchError> {
    let op = Some(bench.operator_rate);
    let phase = |name: &str,
                 barriers: BenchBarriers,
                 rate: Option<u64>,
                 operator_rate: Option<u64>|
     -> Result<JobBenchReport, BenchError> {
        let spec = JobBench {
            job_id: format!("bench-job-{name}"),
            keys: bench.keys,
            state_bytes: bench.state_bytes,
            parallelism: bench.parallelism,
            interval: bench.interval,
            rate,
            checkpoints: bench.checkpoints,
            scratch: bench.scratch.clone(),
            operator_rate,
            barriers,
        };
        run(&spec, config.clone(), storage.clone(), started, &|r, m| {
            on_checkpoint(name, r, m)
        })
    };
    let aligned = phase("aligned", BenchBarriers::Aligned, None, op)?;
    let unaligned = phase("unaligned", BenchBarriers::Unaligned, None, op)?;
    let timeout = phase(
        "aligned-timeout-100ms",
        BenchBarriers::AlignedThenUnaligned(BENCH_ALIGNED_TIMEOUT),
        None,
        op,
    )?;
    let free = phase(
        "unaligned-without-backpressure",
        BenchBarriers::Unaligned,
        Some((bench.operator_rate / 2).max(1)),
        None,
    )?;
    let eo = phase(
        "exactly-once-unthrottled",
        BenchBarriers::Aligned,
        None,
        None,
    )?;
    let alo = phase(
        "at-least-once-unthrottled",
        BenchBarriers::AtLeastOnce,
        None,
        None,
    )?;
    let per_checkpoint: Vec<f64> = unaligned
        .channel_state_bytes
        .iter()
        .zip(&unaligned.queued_bytes)
        .filter(|(_, &q)| q > 0)
        .map(|(&c, &q)| c as f64 / q as f64)
        .collect();
    let records: Vec<f64> = unaligned
        .channel_state_records
        .iter()
        .map(|&r| r as f64)
        .collect();
    Ok(BackpressureReport {
        unaligned_vs_aligned: unaligned.median_ms / aligned.median_ms,
        timeout_vs_aligned: timeout.median_ms / aligned.median_ms,
        unaligned_backpressure_vs_without: unaligned.median_ms / free.median_ms,
        channel_state_vs_queued: (!per_checkpoint.is_empty()).then(|| median(&per_checkpoint)),
        queued_s: unaligned.records_per_s.map(|r| median(&records) / r),
        at_least_once_vs_exactly_once: alo.records_per_s.zip(eo.records_per_s).map(|(a, e)| a / e),
        aligned,
        unaligned,
        aligned_timeout_100ms: timeout,
        unaligned_without_backpressure: free,
        exactly_once_unthrottled: eo,
        at_least_once_unthrottled: alo,
    })
}

fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}
