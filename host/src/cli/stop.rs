//! `cairn stop --savepoint`: take a savepoint of the running job, then stop it (Flink's
//! `flink stop --savepointPath`). It returns when the job has stopped, so a `cairn run --from`
//! right after it finds the job gone. If the savepoint fails, the job keeps running and the
//! command fails; `cairn cancel` stops a job without a savepoint.

use std::process::ExitCode;

use cairn_host::control::{Reply, Request};

use super::{
    savepoint::print_savepoint,
    status::{ask, target_for_job, unexpected},
    ConfigArg,
};

/// Arguments of `cairn stop`.
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Take a savepoint before stopping (required: a stop without one is `cairn cancel`).
    #[arg(long, required = true)]
    savepoint: bool,
    /// Where the savepoint goes, as for `cairn savepoint --target` (a relative directory is
    /// taken from the current directory); default: `[savepoints] dir`, or the plugin's own
    /// location.
    #[arg(long, value_name = "DIR", requires = "savepoint")]
    target: Option<String>,
    /// Print the savepoint and the job's summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Stop the job with a savepoint.
pub fn run(args: StopArgs) -> anyhow::Result<ExitCode> {
    let request = Request::Stop {
        target: target_for_job(args.target.as_deref())?,
    };
    let waiting = Some("taking a savepoint, then stopping the job".to_string());
    let (savepoint, summary) = match ask(&args.config, request, waiting)? {
        Reply::Stopped { savepoint, summary } => (savepoint, summary),
        other => return Err(unexpected(&other)),
    };
    if args.json {
        #[derive(serde::Serialize)]
        struct Stopped<'a> {
            savepoint: &'a cairn_host::control::SavepointView,
            summary: &'a serde_json::Value,
        }
        let doc = Stopped {
            savepoint: &savepoint,
            summary: &summary,
        };
        crate::cli::output::print_json(&mut std::io::stdout().lock(), &doc)?;
    } else {
        print_savepoint(&savepoint, false)?;
        eprintln!("{}", super::cancel::stopped_line(&summary));
    }
    Ok(ExitCode::SUCCESS)
}
