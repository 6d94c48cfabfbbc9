//! The `cairn` command line. Each subcommand lives in `cli/`; this file parses arguments, sets
//! up logging, and turns an error chain into one readable line and a non-zero exit code (and,
//! under `--json`, into the contract's error document on stdout as well).

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

mod cli;

/// Exit code of a command line clap refuses (clap's own convention).
const USAGE_EXIT: u8 = 2;

fn main() -> ExitCode {
    let matches = match cli::Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return refused_command_line(&e),
    };
    let json = cli::json_requested(&matches);
    let args = match cli::Cli::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => return refused_command_line(&e),
    };
    cli::init_logging(args.verbose, args.quiet);
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            // Output piped into `head` that stops reading is not an error worth reporting.
            let broken_pipe = err.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            // `{:#}` prints the whole chain of causes on one line: "a: b: c".
            eprintln!("error: {err:#}");
            if json {
                let doc = cli::output::ErrorJson::from_error(&err);
                // Nothing more can be said if stdout is gone; the stderr line stands.
                let _ = cli::output::print_error_json(&mut std::io::stdout().lock(), &doc);
            }
            ExitCode::FAILURE
        }
    }
}

/// A command line clap refused, or `--help`/`--version`: clap prints it as usual (help on
/// stdout, an error on stderr with exit code 2). Under `--json` a refusal is also the error
/// document on stdout, of kind `usage`. The arguments could not be parsed, so `--json` is
/// looked for among the raw ones.
fn refused_command_line(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let json = std::env::args_os().skip(1).any(|a| a == "--json");
    let informational = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if !json || informational {
        e.exit();
    }
    let _ = e.print();
    let rendered = e.render().to_string();
    let message = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_string();
    let doc = cli::output::ErrorJson::new("usage", message);
    let _ = cli::output::print_error_json(&mut std::io::stdout().lock(), &doc);
    ExitCode::from(USAGE_EXIT)
}
