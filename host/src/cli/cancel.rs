//! `cairn cancel`: stop the running job now, without a savepoint (Flink's `flink cancel`);
//! its completed checkpoints stay or go as `checkpointing.externalized-retention` says. It
//! returns when the job has stopped.

use std::process::ExitCode;

use cairn_host::control::{Reply, Request};

use super::{status::ask, status::unexpected, ConfigArg};

/// Arguments of `cairn cancel`.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print the job's summary as JSON.
    #[arg(long)]
    json: bool,
}

/// One line about a job that stopped, from its summary (as `cairn run --json` prints it).
pub(super) fn stopped_line(summary: &serde_json::Value) -> String {
    if let Some(error) = summary.get("error").and_then(|e| e.as_str()) {
        return format!("the job ended with an error: {error}");
    }
    let kept = match summary.get("latest_checkpoint") {
        Some(serde_json::Value::Object(c)) => format!(
            "latest retained checkpoint #{} at {}",
            c.get("id").unwrap_or(&serde_json::Value::Null),
            c.get("pointer").and_then(|p| p.as_str()).unwrap_or("?")
        ),
        _ => "no checkpoint kept (checkpointing.externalized-retention)".to_string(),
    };
    format!(
        "job '{}' stopped after {}: {} records counted, {} completed; {kept}",
        summary
            .get("job_id")
            .and_then(|j| j.as_str())
            .unwrap_or("?"),
        counted(summary, "attempts", "attempt"),
        summary
            .get("records_counted")
            .unwrap_or(&serde_json::Value::Null),
        counted(summary, "checkpoints_completed", "checkpoint"),
    )
}

/// The number at `key` of `summary` with `noun` in the right number ("1 attempt"); "?" and the
/// plural when it is missing.
fn counted(summary: &serde_json::Value, key: &str, noun: &str) -> String {
    match summary.get(key).and_then(|n| n.as_u64()) {
        Some(n) => cairn_host::words::count(n, noun),
        None => format!("? {noun}s"),
    }
}

/// Cancel the job.
pub fn run(args: CancelArgs) -> anyhow::Result<ExitCode> {
    let waiting = Some("cancelling the job".to_string());
    let summary = match ask(&args.config, Request::Cancel, waiting)? {
        Reply::Cancelled { summary } => summary,
        other => return Err(unexpected(&other)),
    };
    if args.json {
        crate::cli::output::print_json(&mut std::io::stdout().lock(), &summary)?;
    } else {
        println!("{}", stopped_line(&summary));
    }
    Ok(ExitCode::SUCCESS)
}
