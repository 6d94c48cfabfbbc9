//! `cairn run`: run the built-in job (`[job] kind`) with checkpoints through the configured
//! storage plugin, showing live progress on a terminal and plain lines otherwise. The summary
//! is printed (and flushed) as soon as the job ends, before checkpoints it does not keep are
//! discarded.
//!
//! While it runs, the job serves its control socket (and metrics, if configured) through
//! [`Services`]; the line `cairn: control socket at ...` on stderr says it is ready. SIGINT
//! cancels; SIGTERM cancels, or with `savepoints.on-sigterm` sends the same stop-with-savepoint
//! command `cairn stop --savepoint` does. A run a signal stopped exits 128 + its number (130,
//! 143) after its summary; a repeated SIGTERM (GNU `timeout` sends two) only repeats the
//! request, and a second Ctrl-C while stopping exits at once after one line on what the run did.
//! Lines for people go above the progress bar (`super::term`); `-q` keeps only failures and
//! warnings.
//!
//! The run holds the job's lease (a second run is refused, `--standby` waits for it) and
//! follows the lineage rules (`--from`, or `--fresh` confirmed on a terminal or with `--yes`);
//! both live in the library (`cairn_host::lease`, `runtime::run_job`), this only renders them.

use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use anyhow::Context;
use cairn_host::{
    config::JobKind,
    control::Services,
    lease::LeaseEvent,
    metadata::{Barriers, SnapshotKind},
    runtime::{
        self, CheckpointReport, Command, FreshPlan, IfSavepointFails, Progress, RestoreFrom,
        Restored, RunOptions, Status, StopWhen, Summary,
    },
};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use signal_hook::consts::SIGTERM;

use super::{
    open_storage,
    term::{self, count},
    ConfigArg,
};

/// Arguments of `cairn run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Restore first: `latest` (the job's newest completed checkpoint), a checkpoint or
    /// savepoint id (as `cairn checkpoints list` shows them), or a checkpoint or savepoint
    /// pointer (a relative path is taken from the current directory). Without it, a job that has completed checkpoints is refused (resume
    /// with `--from latest`, or start over with `--fresh`), so two lineages never mix.
    #[arg(long, value_name = "latest|ID|POINTER", conflicts_with_all = ["fresh", "standby"])]
    from: Option<String>,
    /// Start over from empty state: discard the job's completed checkpoints (savepoints are
    /// kept) after confirming on a terminal (or with --yes). Checkpoint ids still continue
    /// after every id the job used.
    #[arg(long, conflicts_with = "standby")]
    fresh: bool,
    /// Confirm --fresh without asking (for scripts).
    #[arg(long, requires = "fresh")]
    yes: bool,
    /// Wait for the job's lease while another process runs the job, and take the job over
    /// from its latest checkpoint when that process dies (or stops renewing its lease for
    /// [lease] ttl). Ends without running if the holder finishes or is stopped.
    #[arg(long)]
    standby: bool,
    /// Stop after this long (for example "30s"); completed checkpoints are then kept or
    /// discarded as checkpointing.externalized-retention says.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "records")]
    duration: Option<Duration>,
    /// Keyed counter: finish when the sources have emitted this many records in total and all
    /// are counted. (The word count finishes when its input ends.)
    #[arg(long, value_name = "N")]
    records: Option<u64>,
    /// Print a JSON summary at the end instead of text.
    #[arg(long)]
    json: bool,
}

/// How `c`'s barriers are handled, in words.
fn barrier_mode(c: &cairn_host::config::CheckpointingConfig) -> String {
    if !c.is_exactly_once() {
        return "at-least-once: not aligned (a restore may count some records twice)".to_string();
    }
    if !c.is_unaligned() {
        return "exactly-once, aligned".to_string();
    }
    let bound = cairn_host::config::format_size(c.max_in_flight_data());
    if c.aligned_checkpoint_timeout.is_zero() {
        format!("exactly-once, unaligned (channel state up to {bound} per checkpoint)")
    } else {
        format!(
            "exactly-once, aligned, switching to unaligned once a checkpoint is {} old \
             (channel state up to {bound} per checkpoint); savepoints stay aligned",
            cairn_host::config::format_duration(c.aligned_checkpoint_timeout)
        )
    }
}

/// What `--from ARG` restores: `latest`, or the pointer of an id or of a pointer (a relative
/// path made absolute), checked with the plugin (a call bounded by the checkpoint timeout)
/// before the run starts, so that a mistyped argument is refused as one.
fn restore_from(
    config: &cairn_host::config::Config,
    storage: &dyn cairn_plugin_api::CheckpointStorage,
    calls: &runtime::PluginCalls,
    arg: &str,
) -> anyhow::Result<RestoreFrom> {
    if arg == "latest" {
        return Ok(RestoreFrom::Latest);
    }
    let pointer = if arg.parse::<u64>().is_ok() {
        super::checkpoints::pointer_of(config, storage, arg)
            .with_context(|| format!("--from {arg}"))?
    } else {
        let path = std::path::Path::new(arg);
        match path.is_relative() && path.exists() {
            true => std::path::absolute(path)
                .with_context(|| format!("--from {arg}: cannot make the path absolute"))?
                .display()
                .to_string(),
            false => arg.to_string(),
        }
    };
    if let Err(e) = calls.resolve(&pointer) {
        use cairn_plugin_api::ErrorKind;
        // The plugin's kind is about its own options; here the pointer came from the command line.
        let what = match e.kind() {
            ErrorKind::InvalidConfig | ErrorKind::NotFound => {
                "not a checkpoint or savepoint of this storage"
            }
            _ => "cannot be read",
        };
        anyhow::bail!(
            "--from {arg}: {what}: {}; give `latest`, an id from `cairn checkpoints list`, or a \
             checkpoint or savepoint pointer",
            e.message()
        );
    }
    Ok(RestoreFrom::Pointer(pointer))
}

/// The signals that stop a run, and which came first.
#[derive(Debug, Default)]
struct Interrupt {
    /// The first signal (0: none yet).
    signal: std::sync::atomic::AtomicI32,
}

impl Interrupt {
    /// The exit code of a run a signal stopped: 128 + the signal's number, the shell's
    /// convention (130 for Ctrl-C's SIGINT, 143 for SIGTERM).
    fn exit_code(&self) -> Option<u8> {
        match self.signal.load(std::sync::atomic::Ordering::SeqCst) {
            0 => None,
            n => u8::try_from(128 + n).ok(),
        }
    }
}

/// What the run has done so far, for the one line printed when a second Ctrl-C ends it before
/// its summary.
#[derive(Debug, Default)]
struct SoFar {
    job_id: String,
    progress: Progress,
    latest: Option<(u64, String)>,
}

impl SoFar {
    fn line(&self) -> String {
        let p = &self.progress;
        format!(
            "job '{}' interrupted while stopping, exiting now: {}, {} records, {} completed, {} \
             failed; {}",
            self.job_id,
            count(p.attempt.max(1), "attempt"),
            p.records,
            count(p.completed, "checkpoint"),
            p.failures,
            match &self.latest {
                Some((id, pointer)) => format!("latest checkpoint #{id} at {pointer}"),
                None => "no checkpoint completed in this run".to_string(),
            }
        )
    }
}

/// Run the job.
pub fn run(args: RunArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    // Before any plugin is loaded: a state that cannot fit in memory is refused.
    match runtime::memory_fit(&config.job) {
        runtime::memory::Fit::TooLarge(e) => return Err(runtime::RunError::Job(e).into()),
        runtime::memory::Fit::Tight(w) => eprintln!("warning: {w}"),
        runtime::memory::Fit::Fits => {}
    }
    // Checkpointing off (no file, or no interval) is said, never silent.
    for w in cairn_host::config::warnings(&config) {
        eprintln!("warning: {w}");
    }
    let (plugin, storage) = open_storage(&config)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let calls = runtime::PluginCalls::new(
        storage.clone(),
        config.checkpointing.timeout,
        cancel.clone(),
    );
    let from = match args.from.as_deref() {
        Some(arg) => Some(restore_from(&config, storage.as_ref(), &calls, arg)?),
        None => None,
    };
    let (commands, commands_rx) = crossbeam_channel::unbounded();
    let interrupt = Arc::new(Interrupt::default());
    let so_far = Arc::new(std::sync::Mutex::new(SoFar {
        job_id: config.job.id.clone(),
        ..SoFar::default()
    }));
    handle_signals(
        &cancel,
        commands,
        config.savepoints.on_sigterm,
        &interrupt,
        &so_far,
    )?;
    let stop_when = match (args.duration, args.records) {
        (Some(d), _) => StopWhen::After(d),
        (None, Some(n)) => StopWhen::Records(n),
        (None, None) => StopWhen::Never,
    };
    let tty = term::stderr_is_terminal();
    let bar = if tty && !quiet {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    term::set_bar(&bar);
    // Lines for people: above the bar on a terminal; `-q` keeps only failures and warnings.
    let say = |line: String| {
        if tty {
            bar.println(line);
        } else {
            eprintln!("{line}");
        }
    };
    let log = |line: String| {
        if !quiet {
            say(line);
        }
    };
    let what = match config.job.kind {
        JobKind::KeyedCounter => format!("{} keys", config.job.keys),
        JobKind::WordCount => format!(
            "word count of {} into {}",
            config
                .job
                .input
                .as_deref()
                .unwrap_or(std::path::Path::new("?"))
                .display(),
            config
                .job
                .output
                .as_deref()
                .unwrap_or(std::path::Path::new("?"))
                .display()
        ),
    };
    log(format!(
        "cairn: job '{}' ({what}, parallelism {}), storage '{}' at {}, checkpoint interval {}",
        config.job.id,
        config.job.parallelism,
        plugin.manifest().name,
        calls.info()?.location,
        config
            .checkpointing
            .interval
            .map_or("off".to_string(), |i| humantime::format_duration(i)
                .to_string()),
    ));
    log(format!(
        "cairn: barriers: {}",
        barrier_mode(&config.checkpointing)
    ));
    if config.checkpointing.is_force_unaligned() {
        log(format!(
            "note: {}",
            cairn_host::config::FORCE_UNALIGNED_NOTE
        ));
    }
    let progress_line = |p: &Progress| {
        let last = p
            .last_checkpoint
            .map_or("none yet".to_string(), |(id, ms, size)| {
                let barriers = match p.last_barriers {
                    Some(b @ (Barriers::Unaligned | Barriers::UnalignedAfterTimeout)) => format!(
                        ", {} + {} in flight",
                        b.describe(),
                        HumanBytes(p.last_channel_state_bytes)
                    ),
                    Some(b) => format!(", {}, alignment {} ms", b.describe(), p.last_alignment_ms),
                    None => String::new(),
                };
                format!("#{id} in {ms} ms, {}{barriers}", HumanBytes(size))
            });
        format!(
            "{} records ({:.0}/s) | last checkpoint {last} | {} completed, {} failed | attempt {}",
            p.records, p.records_per_sec, p.completed, p.failures, p.attempt
        )
    };
    let on_progress = |p: &Progress| {
        so_far.lock().unwrap_or_else(|e| e.into_inner()).progress = p.clone();
        bar.set_message(progress_line(p));
    };
    let on_checkpoint = |c: &CheckpointReport| {
        if !c.savepoint {
            so_far.lock().unwrap_or_else(|e| e.into_inner()).latest =
                Some((c.id, c.pointer.clone()));
        }
        if !tty {
            log(format!(
                "{} {} completed in {} ms, {} of state ({}): {}",
                if c.savepoint {
                    "savepoint"
                } else {
                    "checkpoint"
                },
                c.id,
                c.duration().as_millis(),
                HumanBytes(c.state_bytes),
                c.barriers_text(),
                c.pointer
            ));
        }
    };
    let on_failover = |attempt: u32, reason: &str, from: Option<&str>| {
        let restart = match from {
            Some(pointer) => format!("restarting from {pointer}"),
            None => "restarting from the beginning (no checkpoint completed yet)".to_string(),
        };
        say(format!("attempt {attempt} failed: {reason}; {restart}"));
    };
    let job_id = config.job.id.clone();
    let on_lease = |e: &LeaseEvent| match e {
        LeaseEvent::LocalFallback { note } => say(format!("warning: {note}")),
        LeaseEvent::Waiting { held, at_most } => log(format!(
            "cairn: job '{job_id}' is held by {held}; waiting for it{}",
            match at_most {
                Some(ttl) => format!(
                    " (it is taken over if its lease is not renewed for {})",
                    humantime::format_duration(*ttl)
                ),
                None => " (it is taken over when that process exits)".to_string(),
            }
        )),
        LeaseEvent::TakenOver { from, why } => log(format!(
            "cairn: took job '{job_id}' over from {from}: {why}"
        )),
    };
    let confirm_fresh = |plan: &FreshPlan| {
        args.yes || (std::io::stdin().is_terminal() && tty && ask_fresh(plan, &bar))
    };
    // The report goes out (and is flushed) before checkpoints that are not kept are discarded.
    let printed = std::cell::Cell::new(Ok(()));
    // Whether the job was stopped (not finished), and whether a savepoint was taken on the way.
    let stopped = std::cell::Cell::new(None);
    let on_summary = |summary: &Summary| {
        bar.finish_and_clear();
        term::clear_bar();
        if summary.status == Status::Stopped {
            stopped.set(Some(summary.final_savepoint.is_some()));
        }
        printed.set(print_summary(summary, args.json, &config));
    };
    let on_restored = |r: &Restored| {
        log(format!(
            "cairn: restored {} {} from {}",
            match r.kind {
                SnapshotKind::Checkpoint => "checkpoint",
                SnapshotKind::Savepoint => "savepoint",
            },
            r.id,
            r.pointer
        ))
    };
    let services = Services::new(&config, config.job.kind.as_str());
    let config_arg = args.config.path().display().to_string();
    let on_started = || {
        if let Some(socket) = services.socket() {
            log(format!(
                "cairn: control socket at {} (cairn status --config {config_arg})",
                socket.display()
            ));
        }
        if let Some(url) = services.metrics_url() {
            log(format!("cairn: metrics at {url}"));
        }
        Ok(())
    };
    let result = services.run(
        &RunOptions {
            from,
            stop_when,
            cancel,
            commands: Some(commands_rx),
            on_started: &on_started,
            on_restored: &on_restored,
            on_progress: &on_progress,
            on_checkpoint: &on_checkpoint,
            on_failover: &on_failover,
            on_summary: &on_summary,
            fresh: args.fresh,
            confirm_fresh: &confirm_fresh,
            standby: args.standby,
            on_lease: &on_lease,
            ..RunOptions::default()
        },
        |opts| runtime::run(&config, storage, opts),
    );
    bar.finish_and_clear();
    term::clear_bar();
    result?;
    printed.into_inner()?;
    // Stopped by a signal: the shell's code for it (130 for Ctrl-C, 143 for SIGTERM). A SIGTERM
    // that `savepoints.on-sigterm` turned into a stop with a savepoint, a stop asked for over
    // the control socket (`cairn stop`, `cairn cancel`), and a run that finished as the signal
    // came all exit 0.
    match (interrupt.exit_code(), stopped.get()) {
        (Some(code), Some(true))
            if config.savepoints.on_sigterm && i32::from(code) == 128 + SIGTERM =>
        {
            Ok(ExitCode::SUCCESS)
        }
        (Some(code), Some(_)) => Ok(ExitCode::from(code)),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// SIGINT cancels the job; SIGTERM cancels it too, or, with `on_sigterm`, asks it to stop with
/// a savepoint through the same command `cairn stop --savepoint` sends (stopping without one if
/// the savepoint fails). A second Ctrl-C (SIGINT) while stopping exits at once, after one line
/// saying what the run did. A repeated SIGTERM only repeats the request: GNU `timeout` sends
/// SIGTERM to the process and then to its whole process group, so a run under `timeout` gets
/// it twice and must still stop cleanly with its summary.
fn handle_signals(
    cancel: &Arc<AtomicBool>,
    commands: crossbeam_channel::Sender<Command>,
    on_sigterm: bool,
    interrupt: &Arc<Interrupt>,
    so_far: &Arc<std::sync::Mutex<SoFar>>,
) -> anyhow::Result<()> {
    use signal_hook::{consts::SIGINT, iterator::Signals};
    use std::sync::atomic::Ordering::SeqCst;
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).context("cannot install the SIGINT/SIGTERM handlers")?;
    let cancel = cancel.clone();
    let interrupt = interrupt.clone();
    let so_far = so_far.clone();
    std::thread::Builder::new()
        .name("signals".to_string())
        .spawn(move || {
            for signal in signals.forever() {
                let first = interrupt
                    .signal
                    .compare_exchange(0, signal, SeqCst, SeqCst)
                    .is_ok();
                if !first {
                    if signal == SIGINT {
                        term::clear_bar();
                        let line = so_far.lock().unwrap_or_else(|e| e.into_inner()).line();
                        eprintln!("cairn: {line}");
                        std::process::exit(128 + SIGINT);
                    }
                    continue;
                }
                if signal == SIGINT {
                    term::say("cairn: stopping (Ctrl-C again to exit at once)");
                }
                if signal == SIGTERM && on_sigterm {
                    let _ = commands.send(Command::StopWithSavepoint {
                        target: None,
                        reply: None,
                        if_it_fails: IfSavepointFails::StopAnyway,
                    });
                } else {
                    cancel.store(true, std::sync::atomic::Ordering::SeqCst);
                    let _ = commands.send(Command::Cancel);
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// Show what `--fresh` discards and ask on the terminal; true on `y` or `yes`.
fn ask_fresh(plan: &FreshPlan, bar: &ProgressBar) -> bool {
    let mut question = format!(
        "--fresh discards the {} of job '{}' in {}:\n",
        count(plan.checkpoints.len() as u64, "completed checkpoint"),
        plan.job_id,
        plan.location
    );
    for c in &plan.checkpoints {
        question.push_str(&format!("  #{} {}\n", c.checkpoint_id, c.pointer));
    }
    question.push_str("savepoints are kept. discard them and start from empty state? [y/N] ");
    let answer = bar.suspend(|| {
        eprint!("{question}");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    });
    matches!(
        answer.as_deref().map(str::trim),
        Ok("y") | Ok("Y") | Ok("yes") | Ok("YES")
    )
}

fn print_summary(
    summary: &Summary,
    json: bool,
    config: &cairn_host::config::Config,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        super::output::print_json(&mut out, summary)?;
    } else {
        let status = summary.status.as_str();
        writeln!(
            out,
            "job '{}' {status} after {}: {} records counted, {} completed, {} failed",
            summary.job_id,
            count(summary.attempts, "attempt"),
            summary.records_counted,
            count(summary.checkpoints_completed, "checkpoint"),
            summary.checkpoints_failed
        )?;
        let b = &summary.checkpoint_barriers;
        if summary.checkpoints_completed > 0 {
            let mut kinds = Vec::new();
            for (n, what) in [
                (b.aligned, "aligned"),
                (b.unaligned, "unaligned"),
                (
                    b.unaligned_after_timeout,
                    "switched to unaligned after the timeout",
                ),
                (b.at_least_once, "at-least-once"),
            ] {
                if n > 0 {
                    kinds.push(format!("{n} {what}"));
                }
            }
            writeln!(
                out,
                "checkpoints: {}; {} of channel state in all; longest alignment {} ms",
                kinds.join(", "),
                HumanBytes(summary.channel_state_bytes),
                summary.max_alignment_ms
            )?;
        }
        if let Some(words) = summary.details.get("words") {
            writeln!(
                out,
                "{words} words ({} distinct) committed as lines in {} part files under {}; {} bytes were not UTF-8 and were replaced",
                summary.details.get("distinct_words").unwrap_or(&0.into()),
                summary.details.get("part_files").unwrap_or(&0.into()),
                summary.details.get("output").and_then(|o| o.as_str()).unwrap_or("?"),
                summary.details.get("invalid_utf8_bytes").unwrap_or(&0.into()),
            )?;
        }
        if let Some(savepoint) = &summary.final_savepoint {
            writeln!(out, "savepoint taken on stop: {savepoint}")?;
        }
        if let Some(digest) = summary
            .details
            .get("counts_sha256")
            .and_then(|d| d.as_str())
        {
            writeln!(out, "counts_sha256: {digest}")?;
        }
        match &summary.latest_checkpoint {
            Some(c) => writeln!(
                out,
                "latest retained checkpoint: #{} at {}",
                c.id, c.pointer
            )?,
            None => writeln!(
                out,
                "no checkpoint kept (checkpointing.externalized-retention = {}{})",
                config.checkpointing.externalized_retention,
                if summary.status == Status::Finished {
                    "; a finished job keeps none"
                } else {
                    ""
                }
            )?,
        }
    }
    out.flush()?;
    Ok(())
}
