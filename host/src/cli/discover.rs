//! `cairn completions SHELL` and `cairn man`: shell completions and man pages, generated from
//! the same clap definitions that parse the command line, so they never drift from it.

use std::{io::Write, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;
use serde::Serialize;

use super::output::print_json;

/// Arguments of `cairn completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
    /// Print `{"shell", "script"}` as JSON instead of the bare script.
    #[arg(long)]
    json: bool,
}

/// Arguments of `cairn man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write `cairn.1` and one page per subcommand (`cairn-run.1`, `cairn-checkpoints-list.1`,
    /// ...) into this directory (created if missing) instead of printing `cairn.1`; for
    /// example `cairn man --out-dir ~/.local/share/man/man1`.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Print JSON: `{"name", "section", "roff"}`, or with `--out-dir` `{"out_dir", "files"}`.
    #[arg(long)]
    json: bool,
}

/// Print the completion script of `args.shell`.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = super::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "cairn", &mut script);
    let mut out = std::io::stdout().lock();
    if args.json {
        #[derive(Serialize)]
        struct Doc {
            shell: String,
            script: String,
        }
        let doc = Doc {
            shell: args.shell.to_string(),
            script: String::from_utf8(script).context("the completion script is not UTF-8")?,
        };
        print_json(&mut out, &doc)?;
    } else {
        out.write_all(&script)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Print the man page, or write every page into `args.out_dir`.
pub fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    let cmd = super::Cli::command();
    let mut out = std::io::stdout().lock();
    let Some(dir) = &args.out_dir else {
        let mut roff = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut roff)?;
        if args.json {
            #[derive(Serialize)]
            struct Doc {
                name: &'static str,
                section: &'static str,
                roff: String,
            }
            let doc = Doc {
                name: "cairn",
                section: "1",
                roff: String::from_utf8(roff).context("the man page is not UTF-8")?,
            };
            print_json(&mut out, &doc)?;
        } else {
            out.write_all(&roff)?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let mut files = Vec::new();
    // Built, a subcommand has its display name ("cairn-checkpoints-list"), which names its page.
    let mut cmd = cmd;
    cmd.build();
    write_pages(&cmd, dir, &mut files)?;
    if args.json {
        #[derive(Serialize)]
        struct Doc<'a> {
            out_dir: &'a std::path::Path,
            files: &'a [PathBuf],
        }
        print_json(
            &mut out,
            &Doc {
                out_dir: dir,
                files: &files,
            },
        )?;
    } else {
        for f in &files {
            writeln!(out, "wrote {}", f.display())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Write the page of `cmd` and of each of its subcommands (but `help`), depth first.
fn write_pages(
    cmd: &clap::Command,
    dir: &std::path::Path,
    files: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)?;
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    files.push(path);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, dir, files)?;
    }
    Ok(())
}
