//! The `cairn` command line. Each subcommand lives in `cli/`; this file parses arguments, sets
//! up logging, and turns an error chain into one readable line and a non-zero exit code.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
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
            ExitCode::FAILURE
        }
    }
}
