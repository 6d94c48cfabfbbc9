//! `cairn status`: what the running job of a config is doing, asked over its control socket.
//! Also the helper the other control commands (`savepoint`, `stop`, `cancel`) share: find the
//! socket from `--config`, send one request, print an error as one line (or as JSON).

use std::{io::IsTerminal, process::ExitCode, time::Duration};

use cairn_host::{
    control::{Client, Reply, Request, StatusReport},
    runtime::Phase,
};
use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressStyle};

use super::ConfigArg;

/// Arguments of `cairn status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

/// Send `request` to the job `config` runs. `waiting` is shown on a terminal while the reply
/// takes long (a savepoint, a stop). An error (a [`cairn_host::control::ControlError`]) is
/// returned, for `main` to print as text or as the JSON error object.
pub(super) fn ask(
    config: &ConfigArg,
    request: Request,
    waiting: Option<String>,
) -> anyhow::Result<Reply> {
    let config = config.load()?;
    let client = Client::for_config(&config)?;
    let spinner = match waiting {
        Some(msg) if std::io::stderr().is_terminal() => {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(msg);
            bar.enable_steady_tick(Duration::from_millis(120));
            Some(bar)
        }
        _ => None,
    };
    let reply = client.request(request);
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    Ok(reply?)
}

/// A `--target` as the job should read it: the job runs in its own directory, so a relative
/// path is made absolute here, against the directory the command runs in; a URL (`s3://...`)
/// is passed on as it is.
pub(super) fn target_for_job(target: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(target) = target else {
        return Ok(None);
    };
    if target.contains("://") {
        return Ok(Some(target.to_string()));
    }
    let absolute = std::path::absolute(target)
        .map_err(|e| anyhow::anyhow!("--target {target}: cannot make it absolute: {e}"))?;
    Ok(Some(absolute.display().to_string()))
}

/// A reply that does not fit the request: a job of another build.
pub(super) fn unexpected(reply: &Reply) -> anyhow::Error {
    anyhow::anyhow!("the job answered with an unexpected reply: {reply:?}")
}

/// Print the running job's status.
pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let status = match ask(&args.config, Request::Status, None)? {
        Reply::Status(s) => s,
        other => return Err(unexpected(&other)),
    };
    if args.json {
        crate::cli::output::print_json(&mut std::io::stdout().lock(), &status)?;
    } else {
        print!("{}", text(&status));
    }
    Ok(ExitCode::SUCCESS)
}

fn ago(ms: u64) -> String {
    format!("{} ago", HumanDuration(Duration::from_millis(ms)))
}

/// The status as lines for people.
fn text(s: &StatusReport) -> String {
    let phase = match s.phase {
        Phase::Starting => "starting",
        Phase::Restoring => "restoring",
        Phase::Running => "running",
        Phase::Restarting => "restarting after a failure",
        Phase::Stopping => "stopping",
    };
    let mut out = format!(
        "job '{}' ({}) is {phase}: attempt {} ({} restarts), process {} on {}, up {}\n",
        s.job_id,
        s.job_kind,
        s.attempt,
        s.restarts,
        s.pid,
        s.host,
        HumanDuration(Duration::from_millis(s.uptime_ms)),
    );
    let line = |out: &mut String, label: &str, value: String| {
        out.push_str(&format!("  {label:<16}{value}\n"));
    };
    line(
        &mut out,
        "config",
        s.config
            .as_ref()
            .map_or("the embedded default".to_string(), |c| {
                c.display().to_string()
            }),
    );
    line(
        &mut out,
        "records",
        format!(
            "{} processed ({:.0}/s), {} emitted to sinks",
            s.records, s.records_per_sec, s.records_out
        ),
    );
    line(
        &mut out,
        "checkpoints",
        format!(
            "{} completed, {} failed ({} expired), {} in a row",
            s.checkpoints_completed,
            s.checkpoints_failed,
            s.checkpoints_expired,
            cairn_host::words::count(s.consecutive_failures, "failure")
        ),
    );
    let completed = |c: &Option<cairn_host::control::protocol::CompletedStatus>| match c {
        Some(c) => format!(
            "#{} in {} ms, {}, {}: {}",
            c.id,
            c.duration_ms,
            HumanBytes(c.state_bytes),
            ago(c.age_ms),
            c.pointer
        ),
        None => "none yet".to_string(),
    };
    line(&mut out, "last checkpoint", completed(&s.last_checkpoint));
    line(&mut out, "last savepoint", completed(&s.last_savepoint));
    let pending = if s.pending_checkpoints.is_empty() {
        "none".to_string()
    } else {
        s.pending_checkpoints
            .iter()
            .map(|p| format!("#{} ({}, for {} ms)", p.id, p.kind, p.age_ms))
            .collect::<Vec<_>>()
            .join(", ")
    };
    line(&mut out, "in flight", pending);
    if let Some(f) = &s.last_failure {
        line(&mut out, "last failure", f.clone());
    }
    line(
        &mut out,
        "lease",
        format!("{}: {}", s.lease.state, s.lease.detail),
    );
    line(
        &mut out,
        "metrics",
        s.metrics_url
            .clone()
            .unwrap_or_else(|| "not served (set [metrics] listen)".to_string()),
    );
    line(&mut out, "control socket", s.socket.display().to_string());
    out
}
