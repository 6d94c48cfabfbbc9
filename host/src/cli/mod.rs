//! Argument definitions and dispatch for the `cairn` binary.

use std::{path::PathBuf, process::ExitCode};

use cairn_host::config::Config;
use clap::{Parser, Subcommand};

mod bench;
mod cancel;
mod checkpoints;
mod config;
mod discover;
pub mod output;
mod plugins;
mod run;
mod savepoint;
mod status;
mod stop;
pub mod term;
mod verify;

/// cairn: a checkpointing host whose storage backends are plugins.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides this.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors in the log output; `run` also prints no progress, checkpoint or `cairn:`
    /// lines (its failover and warning lines stay, and its summary still goes to stdout).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Find, inspect and check storage plugins.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// Check a config file, or print one with every key and its default.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Run the built-in keyed-counter job, checkpointing it through the configured storage.
    Run(run::RunArgs),
    /// Show what the running job of the config is doing (over its control socket).
    Status(status::StatusArgs),
    /// Take a savepoint of the running job; prints its pointer when it is complete.
    Savepoint(savepoint::SavepointArgs),
    /// Stop the running job with a savepoint (`cairn stop --savepoint`); returns once stopped.
    Stop(stop::StopArgs),
    /// Stop the running job now, without a savepoint; returns once stopped.
    Cancel(cancel::CancelArgs),
    /// Inspect and manage the job's checkpoints and savepoints: list, show, verify, delete, copy, gc.
    #[command(subcommand)]
    Checkpoints(checkpoints::CheckpointsCommand),
    /// Measure storage plugins against raw I/O, and loaded against linked-in backends.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Print a shell completion script (for example `cairn completions bash >
    /// ~/.local/share/bash-completion/completions/cairn`).
    Completions(discover::CompletionsArgs),
    /// Print cairn's man page (roff), or write one page per command into a directory.
    Man(discover::ManArgs),
}

/// Whether the parsed command line asked for `--json` (on whichever subcommand has it).
pub fn json_requested(matches: &clap::ArgMatches) -> bool {
    matches
        .try_get_one::<bool>("json")
        .ok()
        .flatten()
        .copied()
        .unwrap_or(false)
        || matches
            .subcommand()
            .is_some_and(|(_, sub)| json_requested(sub))
}

/// Options shared by every command that reads the config file.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The config file. Without this option ./cairn.toml is read if it exists, and built-in
    /// defaults are used if it does not; a file named here must exist.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The file read when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "cairn.toml";

impl ConfigArg {
    /// The file this command reads: the one named, or `./cairn.toml`.
    pub fn path(&self) -> &std::path::Path {
        self.config
            .as_deref()
            .unwrap_or(std::path::Path::new(DEFAULT_CONFIG))
    }

    /// Load the config; a missing file is an error whenever `--config` names it (even
    /// `--config cairn.toml`), and gives the built-in defaults only when no file was named.
    pub fn load(&self) -> anyhow::Result<Config> {
        let config = match &self.config {
            Some(file) => Config::load(file),
            None => Config::load_or_default(std::path::Path::new(DEFAULT_CONFIG)),
        };
        Ok(config?)
    }
}

/// Load the configured storage plugin (checking its pin) and open it with its options.
pub fn open_storage(
    config: &Config,
) -> anyhow::Result<(
    cairn_host::loader::Plugin,
    std::sync::Arc<dyn cairn_plugin_api::CheckpointStorage>,
)> {
    Ok(cairn_host::runtime::open_storage(config)?)
}

/// Set up the `tracing` subscriber: RUST_LOG if set, else warnings (or more with `-v`). Log
/// lines go to stderr, coloured only when it is a terminal, and above a live progress bar.
pub fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(term::stderr_is_terminal())
        .with_writer(term::LogWriter)
        .try_init();
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Plugins(cmd) => plugins::run(cmd),
        Command::Config(cmd) => config::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Run(args) => run::run(args, cli.quiet),
        Command::Checkpoints(cmd) => checkpoints::run(cmd),
        Command::Status(args) => status::run(args),
        Command::Savepoint(args) => savepoint::run(args),
        Command::Stop(args) => stop::run(args),
        Command::Cancel(args) => cancel::run(args),
        Command::Completions(args) => discover::completions(&args),
        Command::Man(args) => discover::man(&args),
    }
}
