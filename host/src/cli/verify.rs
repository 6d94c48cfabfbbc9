//! `cairn plugins verify`: run the conformance suite against any plugin, through the real
//! loading path, and print a PASS/FAIL/SKIP line per case.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use cairn_conformance::suite::{self, CaseReport, Outcome, RunOptions, Subject};
use cairn_host::loader::Plugin;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// Arguments of `cairn plugins verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// A plugin name from the search path, or the path of a plugin library.
    pub plugin: String,
    /// A TOML file with the plugin's options (the body of a [storage.options] table). `{scratch}`
    /// in it stands for a temporary directory. Default: the options the plugin's manifest
    /// suggests for testing.
    #[arg(long, value_name = "FILE")]
    pub options: Option<PathBuf>,
    /// Fail a case, and stop calling the plugin, when a case takes longer than this
    /// (for example "30s", "2m").
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub case_timeout: Duration,
    /// Run only the cases whose name contains this text (repeatable).
    #[arg(long = "case", value_name = "NAME")]
    pub cases: Vec<String>,
    /// Keep the scratch directory instead of deleting it.
    #[arg(long)]
    pub keep_scratch: bool,
    /// Print a JSON report instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// Run the suite; exit code 1 if any case failed.
pub fn verify(plugin: Plugin, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let scratch = tempfile::Builder::new()
        .prefix("cairn-verify-")
        .tempdir()
        .context("cannot create a scratch directory")?;
    let scratch_path = scratch.path().to_path_buf();
    let options = options_document(&plugin, args.options.as_deref(), &scratch_path)?;
    let manifest = plugin.manifest().clone();
    let opener = plugin.clone();
    let subject = Subject {
        manifest: manifest.clone(),
        open: Arc::new(move |doc: &str| opener.open(doc)),
        options: options.clone(),
        scratch: scratch_path.join("cases"),
    };

    // One check first: a storage every case would fail to reach is one error, not a FAIL per
    // case.
    suite::preflight(&subject, args.case_timeout).map_err(|why| {
        anyhow::anyhow!(
            "plugin {} cannot be used with these options, so no case was run: {why}",
            manifest.name
        )
    })?;
    let bar = ProgressBar::new(suite::CASES.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{pos}/{len}] {wide_msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let shown = super::term::show(&bar);
    if !args.json {
        println!(
            "verifying {} {} (plugin API {}) from {}",
            manifest.name,
            manifest.version,
            manifest.api_version,
            plugin.path().display()
        );
    }
    let print_line = |r: &CaseReport| {
        if args.json {
            return;
        }
        let line = match &r.outcome {
            Outcome::Pass => format!("PASS  {}  ({} ms)", r.name, r.millis),
            Outcome::Fail(why) => format!("FAIL  {}: {why}", r.name),
            Outcome::Skip(why) => format!("SKIP  {}: {why}", r.name),
        };
        bar.suspend(|| println!("{line}"));
    };
    let report = suite::run(
        &subject,
        &RunOptions {
            case_timeout: args.case_timeout,
            filter: args.cases.clone(),
            on_start: &|i, total, case| {
                bar.set_length(total as u64);
                bar.set_position(i as u64);
                bar.set_message(case.name);
            },
            on_done: &|r| {
                bar.inc(1);
                print_line(r);
            },
        },
    );
    drop(shown);
    let (passed, failed, skipped) = report.counts();
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = json!({
            "plugin": {
                "name": manifest.name,
                "version": manifest.version,
                "api_version": manifest.api_version.to_string(),
                "path": plugin.path(),
                "sha256": plugin.sha256()?,
            },
            "options": options,
            "cases": report.cases,
            "summary": { "passed": passed, "failed": failed, "skipped": skipped },
            "ok": failed == 0,
        });
        crate::cli::output::print_json(&mut out, &doc)?;
    } else {
        writeln!(
            out,
            "{}: {passed} passed, {failed} failed, {skipped} skipped",
            cairn_host::words::count(report.cases.len() as u64, "case")
        )?;
    }
    if args.keep_scratch {
        let kept = scratch.keep();
        eprintln!("scratch directory kept at {}", kept.display());
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The options document: the file's text, or the manifest's test options; `{scratch}` replaced.
fn options_document(
    plugin: &Plugin,
    file: Option<&Path>,
    scratch: &Path,
) -> anyhow::Result<String> {
    Ok(options_template(plugin, file)?.replace("{scratch}", &scratch.to_string_lossy()))
}

/// The options document with `{scratch}` still in it: the file's text (checked to be TOML), or
/// the manifest's test options.
pub(super) fn options_template(plugin: &Plugin, file: Option<&Path>) -> anyhow::Result<String> {
    let Some(path) = file else {
        return Ok(plugin.manifest().test_options.clone());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the options file {}", path.display()))?;
    if let Err(e) = text.parse::<toml::Table>() {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(1);
        anyhow::bail!(
            "options file {}:{line}: {}",
            path.display(),
            e.message().trim()
        );
    }
    Ok(text)
}
