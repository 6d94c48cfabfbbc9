//! `cairn run`: run the built-in keyed-counter job with checkpoints through the configured
//! storage plugin, showing live progress on a terminal and plain lines otherwise.

use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use anyhow::Context;
use cairn_host::runtime::{self, Progress, RestoreFrom, RunOptions, Status, StopWhen};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use super::{open_storage, ConfigArg};

/// Arguments of `cairn run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Restore first: `latest` (the job's newest completed checkpoint) or a checkpoint or
    /// savepoint pointer.
    #[arg(long, value_name = "latest|POINTER")]
    from: Option<String>,
    /// Stop after this long (for example "30s"); completed checkpoints are then kept or
    /// discarded as checkpointing.externalized-retention says.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "records")]
    duration: Option<Duration>,
    /// Finish when the sources have emitted this many records in total and all are counted.
    #[arg(long, value_name = "N")]
    records: Option<u64>,
    /// Print a JSON summary at the end instead of text.
    #[arg(long)]
    json: bool,
}

/// Run the job.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let (plugin, storage) = open_storage(&config)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let stop_with_savepoint = Arc::new(AtomicBool::new(false));
    {
        use signal_hook::{
            consts::{SIGINT, SIGTERM},
            flag,
        };
        let term = if config.savepoints.on_sigterm {
            &stop_with_savepoint
        } else {
            &cancel
        };
        // A second signal while the job is stopping exits at once.
        flag::register_conditional_shutdown(SIGINT, 1, cancel.clone())
            .and_then(|_| flag::register_conditional_shutdown(SIGTERM, 1, term.clone()))
            .and_then(|_| flag::register(SIGINT, cancel.clone()))
            .and_then(|_| flag::register(SIGTERM, term.clone()))
            .context("cannot install the SIGINT/SIGTERM handlers")?;
    }
    let stop_when = match (args.duration, args.records) {
        (Some(d), _) => StopWhen::After(d),
        (None, Some(n)) => StopWhen::Records(n),
        (None, None) => StopWhen::Never,
    };
    let from = args.from.as_deref().map(|f| match f {
        "latest" => RestoreFrom::Latest,
        pointer => RestoreFrom::Pointer(pointer.to_string()),
    });
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let log = |line: String| {
        if tty {
            bar.println(line);
        } else {
            eprintln!("{line}");
        }
    };
    log(format!(
        "cairn: job '{}' ({} keys, parallelism {}), storage '{}' at {}, checkpoint interval {}",
        config.job.id,
        config.job.keys,
        config.job.parallelism,
        plugin.manifest().name,
        storage.info().location,
        config
            .checkpointing
            .interval
            .map_or("off".to_string(), |i| humantime::format_duration(i)
                .to_string()),
    ));
    let c = &config.checkpointing;
    if !c.is_exactly_once()
        || c.unaligned
        || c.force_unaligned
        || !c.aligned_checkpoint_timeout.is_zero()
    {
        log(
            "warning: this runtime aligns barriers in every mode; checkpointing.mode = \
             at-least-once, unaligned, force-unaligned and aligned-checkpoint-timeout are \
             accepted but not yet applied (checkpoints are exactly-once)"
                .to_string(),
        );
    }
    let progress_line = |p: &Progress| {
        let last = p
            .last_checkpoint
            .map_or("none yet".to_string(), |(id, ms, size)| {
                format!("#{id} in {ms} ms, {}", HumanBytes(size))
            });
        format!(
            "{} records ({:.0}/s) | last checkpoint {last} | {} completed, {} failed | attempt {}",
            p.records, p.records_per_sec, p.completed, p.failures, p.attempt
        )
    };
    let on_progress = |p: &Progress| bar.set_message(progress_line(p));
    let on_checkpoint = |id: u64, pointer: &str, ms: u64, size: u64| {
        if !tty {
            log(format!(
                "checkpoint {id} completed in {ms} ms, {} of state: {pointer}",
                HumanBytes(size)
            ));
        }
    };
    let on_failover = |attempt: u32, reason: &str, from: Option<&str>| {
        let restart = match from {
            Some(pointer) => format!("restarting from {pointer}"),
            None => "restarting from the beginning (no checkpoint completed yet)".to_string(),
        };
        log(format!("attempt {attempt} failed: {reason}; {restart}"));
    };
    let result = runtime::run(
        &config,
        storage,
        &RunOptions {
            from,
            stop_when,
            cancel,
            stop_with_savepoint,
            on_progress: &on_progress,
            on_checkpoint: &on_checkpoint,
            on_failover: &on_failover,
        },
    );
    bar.finish_and_clear();
    let summary = result?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
    } else {
        let status = match summary.status {
            Status::Finished => "finished",
            Status::Cancelled => "stopped",
        };
        writeln!(
            out,
            "job '{}' {status} after {} attempt(s): {} records counted, {} checkpoints completed, {} failed",
            summary.job_id,
            summary.attempts,
            summary.records_counted,
            summary.checkpoints_completed,
            summary.checkpoints_failed
        )?;
        match &summary.latest_checkpoint {
            Some(c) => writeln!(
                out,
                "latest retained checkpoint: #{} at {}",
                c.id, c.pointer
            )?,
            None => writeln!(
                out,
                "no checkpoint kept (checkpointing.externalized-retention = {})",
                config.checkpointing.externalized_retention
            )?,
        }
    }
    Ok(ExitCode::SUCCESS)
}
