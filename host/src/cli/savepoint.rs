//! `cairn savepoint`: take a savepoint of the running job and print its pointer when it is
//! complete (Flink's `flink savepoint`).

use std::process::ExitCode;

use cairn_host::control::{Reply, Request, SavepointView};
use indicatif::HumanBytes;

use super::{
    status::{ask, target_for_job, unexpected},
    ConfigArg,
};

/// Arguments of `cairn savepoint`.
#[derive(Debug, clap::Args)]
pub struct SavepointArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Where the savepoint goes: a directory (a relative one is taken from the current
    /// directory, not the job's) or a URL the storage plugin takes; default: `[savepoints] dir`,
    /// or the plugin's own savepoint location.
    #[arg(long, value_name = "DIR")]
    target: Option<String>,
    /// Print the savepoint as JSON.
    #[arg(long)]
    json: bool,
}

/// Print a completed savepoint: the pointer alone on stdout (so `$(cairn savepoint)` is it),
/// what it is on stderr; or JSON.
pub(super) fn print_savepoint(s: &SavepointView, json: bool) -> anyhow::Result<()> {
    if json {
        crate::cli::output::print_json(&mut std::io::stdout().lock(), &s)?;
    } else {
        eprintln!(
            "savepoint {} completed in {} ms, {} of state:",
            s.id,
            s.duration_ms,
            HumanBytes(s.state_bytes)
        );
        println!("{}", s.pointer);
    }
    Ok(())
}

/// Take the savepoint.
pub fn run(args: SavepointArgs) -> anyhow::Result<ExitCode> {
    let request = Request::Savepoint {
        target: target_for_job(args.target.as_deref())?,
    };
    match ask(
        &args.config,
        request,
        Some("taking a savepoint".to_string()),
    )? {
        Reply::Savepoint(s) => {
            print_savepoint(&s, args.json)?;
            Ok(ExitCode::SUCCESS)
        }
        other => Err(unexpected(&other)),
    }
}
