//! `cairn bench storage`: how fast a storage plugin is compared with raw `std::fs` I/O, and what
//! loading the filesystem backend through `dlopen` costs compared with linking it in.
//!
//! Three comparisons, all measured in one run, each figure the best of `--rounds` rounds:
//!
//! 1. **plugin ÷ raw.** Write + commit of `--size` bytes through the plugin, in `--chunk`-byte
//!    writes, against `write` + `sync_all` of the same bytes into a file in the same scratch
//!    directory (so on the same filesystem); then reading the state back against a plain read of
//!    that file.
//! 2. **loaded ÷ linked, 1 MiB chunks.** The same write + commit and read, through the filesystem
//!    backend loaded as a plugin and through the same backend linked in as an rlib.
//! 3. **per-call cost, loaded ÷ linked.** `--calls` writes of 64 bytes into one stream, then a
//!    close.
//!
//! The linked-in side cannot run in this process: the `cairn` binary links no backend (every
//! backend is loaded at run time), and two plugin crates cannot share a binary. It runs in the
//! companion executable `cairn-bench-linked` (`tests/bench-linked`), found next to this one; one
//! companion process serves every round, over a line of JSON each way. Both sides run the same workloads (`cairn_conformance::bench`) through a
//! `&dyn CheckpointStorage`. Loaded and linked rounds alternate, and so do raw and plugin runs,
//! so drift (writeback, page cache, CPU frequency) falls on both sides alike.
//!
//! Read figures re-read files that were just written, so they come from the page cache: they
//! measure the read path's CPU cost (calls, copies, checksums), not the disk. Flushing the cache
//! would need root. Targets are printed next to the figures and never enforced: the exit code
//! says only whether every figure could be measured.

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio},
    time::Duration,
};

use anyhow::Context;
use bytesize::ByteSize;
use cairn_conformance::bench::{self, LinkedOutput, RoundReport, RoundRequest, Sample};
use cairn_host::loader::{self, Plugin};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::ConfigArg;

// The object-store plugin ÷ object_store used directly (only for `--plugin object-store`).
mod object_store_direct;

// `cairn bench crash`: kill -9 trials.
mod crash;
// `cairn bench job`: the keyed counter's checkpoints, measured.
mod job;

/// The backend compared loaded ÷ linked, by manifest name.
const FILESYSTEM: &str = "filesystem";

/// The chunk size of the loaded ÷ linked throughput comparison.
const LINKED_CHUNK: u64 = 1 << 20;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Measure a storage plugin against raw std::fs I/O in the same directory, and the
    /// filesystem backend loaded through dlopen against the same backend linked in. Prints
    /// figures, ratios and targets (targets are informative, never enforced).
    Storage {
        #[command(flatten)]
        args: StorageArgs,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Crash trials: kill -9 `cairn run` at random instants across small and large state and
    /// num-retained 1 and 3; after each kill, verify, show, gc and verify every listed
    /// checkpoint; resume each chain and compare its counts_sha256 with an uninterrupted run's.
    /// Exit code 1 if a completed checkpoint was lost or damaged, or a digest is wrong.
    Crash {
        #[command(flatten)]
        args: crash::CrashArgs,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run the keyed counter with real state and measure its checkpoints: the median duration
    /// (trigger to commit) and MB/s, ÷ a raw write + fsync of the same bytes, records/s while a
    /// checkpoint is in flight ÷ between, start to first record, and peak RSS ÷ state. Targets
    /// are printed, never enforced.
    Job {
        #[command(flatten)]
        args: job::JobArgs,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Arguments of `cairn bench storage`.
#[derive(Debug, clap::Args)]
pub struct StorageArgs {
    /// The plugin to measure against raw I/O: a name from the search path, or a library path.
    #[arg(long, value_name = "NAME|PATH", default_value = FILESYSTEM)]
    pub plugin: String,
    /// A TOML file with the plugin's options (the body of a [storage.options] table); `{scratch}`
    /// in it stands for a directory under --dir. Default: the options the plugin's manifest
    /// suggests for testing.
    #[arg(long, value_name = "FILE")]
    pub options: Option<PathBuf>,
    /// Bytes written and read back per run (for example "256MiB", "1GiB").
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub size: u64,
    /// Bytes per write and per read call in the plugin ÷ raw comparison. The loaded ÷ linked
    /// comparison always uses 1MiB.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub chunk: u64,
    /// The directory to measure in: a scratch directory is made (and removed) under it, and the
    /// raw baseline writes there. Default: the current directory.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// How many 64-byte writes the per-call measurement makes.
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub calls: u64,
    /// How many rounds to run; each figure is the best of them.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub rounds: u64,
    /// The companion executable that runs the linked-in side. Default: `cairn-bench-linked`
    /// next to the cairn executable.
    #[arg(long, value_name = "PATH")]
    pub linked_runner: Option<PathBuf>,
    /// Print one JSON document with every figure, ratio and target.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Storage { args, config } => storage(&args, &config),
        BenchCommand::Crash { args, config } => crash::crash(&args, &config),
        BenchCommand::Job { args, config } => job::run(&args, &config),
    }
}

/// A size such as "1MiB", "256 MiB" or "4096"; at least one byte.
fn parse_size(text: &str) -> Result<u64, String> {
    let size = text.trim().parse::<ByteSize>()?.as_u64();
    if size == 0 {
        return Err("must be at least 1 byte".into());
    }
    Ok(size)
}

fn human(bytes: u64) -> String {
    ByteSize(bytes).display().iec().to_string()
}

/// Every figure of one comparison's side: one sample per round.
#[derive(Debug, Default)]
struct Samples(Vec<Sample>);

impl Samples {
    /// The fastest round.
    fn best(&self) -> Option<Sample> {
        self.0
            .iter()
            .copied()
            .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
    }

    fn to_json(&self) -> Value {
        match self.best() {
            None => Value::Null,
            Some(best) => json!({
                "size_bytes": best.bytes,
                "calls": best.calls,
                "duration_us": whole_us(best.seconds),
                "mib_per_s": best.mib_per_sec(),
                "ns_per_call": best.nanos_per_call(),
                "samples_us": self.0.iter().map(|s| whole_us(s.seconds)).collect::<Vec<_>>(),
            }),
        }
    }
}

/// Seconds as whole microseconds, the unit of the contract for a benchmark's timings.
fn whole_us(seconds: f64) -> u64 {
    // `as` saturates: a negative or NaN figure is 0.
    (seconds * 1e6).round() as u64
}

/// `a ÷ b` of the best throughputs, if both were measured.
fn throughput_ratio(a: &Samples, b: &Samples) -> Option<f64> {
    Some(a.best()?.mib_per_sec() / b.best()?.mib_per_sec())
}

/// `a ÷ b` of the best per-call costs, if both were measured.
fn cost_ratio(a: &Samples, b: &Samples) -> Option<f64> {
    Some(a.best()?.nanos_per_call() / b.best()?.nanos_per_call())
}

/// The figures of the loaded ÷ linked comparison, for one side.
#[derive(Debug, Default)]
struct BackendSide {
    write_commit: Samples,
    read: Samples,
    small_writes: Samples,
}

impl BackendSide {
    fn push(&mut self, r: &RoundReport) {
        self.write_commit.0.push(r.write_commit);
        self.read.0.push(r.read);
        self.small_writes.0.push(r.small_writes);
    }

    fn to_json(&self) -> Value {
        if self.write_commit.0.is_empty() {
            return Value::Null;
        }
        json!({
            "write_commit": self.write_commit.to_json(),
            "read": self.read.to_json(),
            "small_writes": self.small_writes.to_json(),
        })
    }
}

/// A target printed next to a figure; informative only.
struct Target {
    name: &'static str,
    /// Where the ratio is in the JSON document.
    ratio: &'static str,
    at_least: bool,
    bound: f64,
    value: Option<f64>,
    /// Why the target does not apply to this run, if it does not.
    not_applicable: Option<String>,
}

impl Target {
    fn met(&self) -> Option<bool> {
        if self.not_applicable.is_some() {
            return None;
        }
        let v = self.value?;
        Some(if self.at_least {
            v >= self.bound
        } else {
            v <= self.bound
        })
    }

    fn describe(&self) -> String {
        let op = if self.at_least { "≥" } else { "≤" };
        let verdict = match (&self.not_applicable, self.met()) {
            (Some(_), _) => "n/a",
            (None, Some(true)) => "met",
            (None, Some(false)) => "MISSED",
            (None, None) => "not measured",
        };
        format!("target {op} {:.2}: {verdict}", self.bound)
    }

    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "ratio": self.ratio,
            "comparison": if self.at_least { ">=" } else { "<=" },
            "target": self.bound,
            "value": self.value,
            "met": self.met(),
            "not_applicable": self.not_applicable,
        })
    }
}

fn storage(args: &StorageArgs, config: &ConfigArg) -> anyhow::Result<ExitCode> {
    let config = config.load()?;
    let search = config.plugins.search_path();
    let plugin = super::plugins::load_from(&args.plugin, &search)?;
    let template = super::verify::options_template(&plugin, args.options.as_deref())?;
    let scratch = tempfile::Builder::new()
        .prefix("cairn-bench-")
        .tempdir_in(&args.dir)
        .with_context(|| {
            format!(
                "cannot create a scratch directory in {} (--dir)",
                args.dir.display()
            )
        })?;
    let dir = scratch.path().canonicalize()?;
    let options_for = |template: &str, sub: &str| -> String {
        template.replace("{scratch}", &dir.join(sub).to_string_lossy())
    };
    let manifest = plugin.manifest().clone();
    let under_test = plugin
        .open(&options_for(&template, "plugin"))
        .with_context(|| format!("opening plugin {}", manifest.name))?;

    // The loaded side of the loaded ÷ linked comparison: the plugin under test if it is the
    // filesystem backend (with the same options), else the filesystem plugin from the search
    // path with its test options.
    let fs: Result<(Plugin, String), String> = if manifest.name == FILESYSTEM {
        Ok((plugin.clone(), template.clone()))
    } else {
        loader::load_by_name(&search, FILESYSTEM, None)
            .map(|p| {
                let t = p.manifest().test_options.clone();
                (p, t)
            })
            .map_err(|e| format!("the loaded ÷ linked comparison needs the filesystem plugin: {e}"))
    };
    let loaded = fs.and_then(|(p, template)| {
        let storage = p
            .open(&options_for(&template, "loaded"))
            .map_err(|e| format!("opening the filesystem plugin: {e}"))?;
        Ok((p, template, storage))
    });
    let runner = linked_runner(args.linked_runner.as_deref());
    let mut direct = (manifest.name == object_store_direct::PLUGIN)
        .then(|| object_store_direct::Direct::start(&runner, options_for(&template, "plugin")));

    let steps_per_round = if loaded.is_ok() { 6 } else { 4 } + u64::from(direct.is_some());
    let bar = ProgressBar::new(args.rounds * steps_per_round);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{pos}/{len}] {wide_msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));

    let chunk = usize::try_from(args.chunk.min(args.size)).context("--chunk is too large")?;
    let data = bench::pattern(chunk);
    let raw_path = dir.join("raw.bin");
    let job = under_test
        .job("bench-plugin")
        .with_context(|| format!("{}: opening job bench-plugin", manifest.name))?;
    let mut raw_write = Samples::default();
    let mut raw_read = Samples::default();
    let mut plugin_write = Samples::default();
    let mut plugin_read = Samples::default();
    let mut loaded_side = BackendSide::default();
    let mut linked_side = BackendSide::default();
    let mut linked_outputs: Vec<LinkedOutput> = Vec::new();
    // One companion process serves every linked round, so it is as warm as this one.
    let mut companion = match (&loaded, &runner) {
        (Ok(_), Ok(path)) => Some(Companion::spawn(path)),
        _ => None,
    };
    let mut linked_error = runner.as_ref().err().cloned();
    if let Some(Err(e)) = &companion {
        linked_error = Some(e.clone());
    }

    for round in 0..args.rounds {
        let step = |what: &str| {
            bar.set_message(format!("round {}/{}: {what}", round + 1, args.rounds));
        };
        // Plugin ÷ raw. The order alternates between rounds.
        let raw_first = round % 2 == 0;
        let mut committed = None;
        for raw in [raw_first, !raw_first] {
            if raw {
                step("raw write + sync_all");
                let s = bench::raw_write(&raw_path, args.size, &data)
                    .with_context(|| format!("raw write of {}", raw_path.display()))?;
                raw_write.0.push(s);
            } else {
                step(&format!("{} write + commit", manifest.name));
                let (s, c) = bench::write_and_commit(
                    under_test.as_ref(),
                    job.as_ref(),
                    round + 1,
                    args.size,
                    &data,
                )
                .with_context(|| format!("{}: write + commit", manifest.name))?;
                plugin_write.0.push(s);
                committed = Some(c);
            }
            bar.inc(1);
        }
        let committed = committed.expect("the plugin side ran");
        for raw in [raw_first, !raw_first] {
            if raw {
                step("raw read");
                let s = bench::raw_read(&raw_path, chunk)
                    .with_context(|| format!("raw read of {}", raw_path.display()))?;
                raw_read.0.push(s);
            } else {
                step(&format!("{} read", manifest.name));
                let s = bench::read_back(under_test.as_ref(), &committed.handles, chunk)
                    .with_context(|| format!("{}: read back", manifest.name))?;
                plugin_read.0.push(s);
            }
            bar.inc(1);
        }
        std::fs::remove_file(&raw_path)
            .with_context(|| format!("removing {}", raw_path.display()))?;
        under_test
            .dispose(&committed.checkpoint.pointer)
            .with_context(|| format!("{}: disposing the benchmark checkpoint", manifest.name))?;
        if let Some(direct) = &mut direct {
            step("object_store direct write + read");
            direct.round(round, args.size, chunk as u64);
            bar.inc(1);
        }

        // Loaded ÷ linked; which side goes first alternates between rounds.
        let Ok((_, fs_template, fs_storage)) = &loaded else {
            continue;
        };
        let request = |side: &str| RoundRequest {
            options: options_for(fs_template, side),
            job: format!("bench-{side}"),
            checkpoint_id: 2 * round + 1,
            size: args.size,
            chunk: LINKED_CHUNK,
            calls: args.calls,
        };
        let linked_first = round % 2 == 1;
        for linked in [linked_first, !linked_first] {
            if linked {
                // After the first failure (or without a companion) the linked side is skipped.
                if let (None, Some(Ok(companion))) = (&linked_error, &mut companion) {
                    step("filesystem linked in (cairn-bench-linked)");
                    match companion.round(&request("linked")) {
                        Ok(out) => {
                            linked_side.push(&out.round);
                            linked_outputs.push(out);
                        }
                        Err(e) => linked_error = Some(e),
                    }
                }
            } else {
                step("filesystem loaded (dlopen)");
                let r = bench::backend_round(fs_storage.as_ref(), &request("loaded"))
                    .context("filesystem plugin (loaded)")?;
                loaded_side.push(&r);
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    drop(companion);

    // Ratios and targets.
    let write_ratio = throughput_ratio(&plugin_write, &raw_write);
    let read_ratio = throughput_ratio(&plugin_read, &raw_read);
    let lw_ratio = throughput_ratio(&loaded_side.write_commit, &linked_side.write_commit);
    let lr_ratio = throughput_ratio(&loaded_side.read, &linked_side.read);
    let call_ratio = cost_ratio(&loaded_side.small_writes, &linked_side.small_writes);
    let targets = [
        Target {
            name: "filesystem write + commit ≥ 0.9× raw write + sync_all",
            ratio: "plugin_vs_raw.write_ratio",
            at_least: true,
            bound: 0.9,
            value: write_ratio,
            not_applicable: (manifest.name != FILESYSTEM)
                .then(|| format!("applies to the filesystem plugin, not {}", manifest.name)),
        },
        Target {
            name: "loaded write + commit ≥ 0.97× linked, 1 MiB chunks",
            ratio: "loaded_vs_linked.write_ratio",
            at_least: true,
            bound: 0.97,
            value: lw_ratio,
            not_applicable: None,
        },
        Target {
            name: "loaded read ≥ 0.97× linked, 1 MiB chunks",
            ratio: "loaded_vs_linked.read_ratio",
            at_least: true,
            bound: 0.97,
            value: lr_ratio,
            not_applicable: None,
        },
        Target {
            name: "loaded cost per 64 B write ≤ 1.5× linked",
            ratio: "loaded_vs_linked.per_call_ratio",
            at_least: false,
            bound: 1.5,
            value: call_ratio,
            not_applicable: None,
        },
    ];

    let loaded_error = loaded.as_ref().err().cloned();
    let mut notes = vec![
        "read figures re-read files just written, so they are page-cache reads: they measure \
         the read path's CPU cost (calls, copies, checksums), not the disk"
            .to_string(),
        format!(
            "write figures include fsync: raw is write + sync_all of one file; the plugin's \
             covers begin_checkpoint to the end of commit (state streams closed, metadata \
             committed); both in {}",
            dir.display()
        ),
        "each figure is the best of the rounds; raw/plugin and loaded/linked runs alternate \
         their order between rounds; per_call_ratio is a cost ratio (lower is better)"
            .to_string(),
    ];
    if let Some(first) = linked_outputs.first() {
        if first.debug_assertions != cfg!(debug_assertions) {
            notes.push(format!(
                "the linked runner is a {} build and cairn a {} build: the loaded ÷ linked \
                 ratios compare different optimisation levels",
                build_kind(first.debug_assertions),
                build_kind(cfg!(debug_assertions))
            ));
        }
        if let Ok((p, ..)) = &loaded {
            if p.manifest().version != first.backend_version {
                notes.push(format!(
                    "the linked backend is version {} and the loaded one {}",
                    first.backend_version,
                    p.manifest().version
                ));
            }
        }
    }
    let direct_error = direct.as_ref().and_then(|d| d.error.clone());
    let complete = loaded_error.is_none() && linked_error.is_none() && direct_error.is_none();

    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = json!({
            "plugin": {
                "name": manifest.name,
                "version": manifest.version,
                "path": plugin.path(),
            },
            "dir": dir,
            "size_bytes": args.size,
            "chunk_bytes": chunk,
            "calls": args.calls,
            "rounds": args.rounds,
            "plugin_vs_raw": {
                "chunk_bytes": chunk,
                "plugin_write_commit": plugin_write.to_json(),
                "raw_write_sync": raw_write.to_json(),
                "plugin_read": plugin_read.to_json(),
                "raw_read": raw_read.to_json(),
                "write_ratio": write_ratio,
                "read_ratio": read_ratio,
            },
            "plugin_vs_object_store": direct
                .as_ref()
                .map(|d| d.to_json(&plugin_write, &plugin_read)),
            "loaded_vs_linked": {
                "backend": FILESYSTEM,
                "chunk_bytes": LINKED_CHUNK,
                "loaded_path": loaded.as_ref().ok().map(|(p, ..)| p.path().to_path_buf()),
                "linked_runner": runner.as_ref().ok(),
                "loaded": loaded_side.to_json(),
                "linked": linked_side.to_json(),
                "error": loaded_error.as_ref().or(linked_error.as_ref()),
                "write_ratio": lw_ratio,
                "read_ratio": lr_ratio,
                "per_call_ratio": call_ratio,
            },
            "targets": targets.iter().map(Target::to_json).collect::<Vec<_>>(),
            "notes": notes,
            "complete": complete,
        });
        super::output::print_json(&mut out, &doc)?;
    } else {
        writeln!(
            out,
            "cairn bench storage: {} {} from {}",
            manifest.name,
            manifest.version,
            plugin.path().display()
        )?;
        writeln!(
            out,
            "{} per run, best of {} round(s), in {}\n",
            human(args.size),
            args.rounds,
            dir.display()
        )?;
        let rate = |s: &Samples| match s.best() {
            Some(b) => format!("{:.1} MiB/s", b.mib_per_sec()),
            None => "-".into(),
        };
        let cost = |s: &Samples| match s.best() {
            Some(b) => format!("{:.1} ns/call", b.nanos_per_call()),
            None => "-".into(),
        };
        let ratio = |r: Option<f64>| r.map_or_else(|| "-".into(), |r| format!("{r:.3}"));
        let row = |out: &mut std::io::StdoutLock<'_>,
                   what: &str,
                   a: String,
                   b: String,
                   r: Option<f64>,
                   t: &str|
         -> std::io::Result<()> {
            let line = format!("  {what:<30} {a:>16} {b:>16} {:>7}  {t}", ratio(r));
            writeln!(out, "{}", line.trim_end())
        };
        writeln!(
            out,
            "{} ÷ raw std::fs, {} chunks",
            manifest.name,
            human(chunk as u64)
        )?;
        writeln!(
            out,
            "  {:<30} {:>16} {:>16} {:>7}",
            "",
            manifest.name.as_str(),
            "raw",
            "ratio"
        )?;
        row(
            &mut out,
            "write + commit / sync_all",
            rate(&plugin_write),
            rate(&raw_write),
            write_ratio,
            &targets[0].describe(),
        )?;
        row(
            &mut out,
            "read back (page cache)",
            rate(&plugin_read),
            rate(&raw_read),
            read_ratio,
            "",
        )?;
        if let Some(direct) = &direct {
            direct.print(&mut out, &plugin_write, &plugin_read)?;
        }
        writeln!(
            out,
            "\nfilesystem loaded (dlopen) ÷ linked in (rlib), {} chunks",
            human(LINKED_CHUNK)
        )?;
        if let Some(e) = &loaded_error {
            writeln!(out, "  not measured: {e}")?;
        } else {
            writeln!(
                out,
                "  {:<30} {:>16} {:>16} {:>7}",
                "", "loaded", "linked", "ratio"
            )?;
            row(
                &mut out,
                "write + commit",
                rate(&loaded_side.write_commit),
                rate(&linked_side.write_commit),
                lw_ratio,
                &targets[1].describe(),
            )?;
            row(
                &mut out,
                "read back (page cache)",
                rate(&loaded_side.read),
                rate(&linked_side.read),
                lr_ratio,
                &targets[2].describe(),
            )?;
            row(
                &mut out,
                &format!("{} × 64 B writes + close", args.calls),
                cost(&loaded_side.small_writes),
                cost(&linked_side.small_writes),
                call_ratio,
                &targets[3].describe(),
            )?;
            if let Some(e) = &linked_error {
                writeln!(out, "  linked side not measured: {e}")?;
            }
        }
        writeln!(out, "\nnotes:")?;
        for n in &notes {
            writeln!(out, "  - {n}")?;
        }
    }
    if let Some(e) = loaded_error
        .as_ref()
        .or(linked_error.as_ref())
        .or(direct_error.as_ref())
    {
        eprintln!("error: incomplete benchmark: {e}");
    }
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn build_kind(debug_assertions: bool) -> &'static str {
    if debug_assertions {
        "debug"
    } else {
        "release"
    }
}

/// The companion executable, if it exists: `explicit`, or `cairn-bench-linked` next to the
/// running executable. The error says which file is missing and how to build it.
fn linked_runner(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let exe = std::env::current_exe()
                .map_err(|e| format!("cannot find the cairn executable's directory: {e}"))?;
            exe.with_file_name(format!(
                "{}{}",
                bench::LINKED_RUNNER_BIN,
                std::env::consts::EXE_SUFFIX
            ))
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "the linked-in side runs in the companion executable {}, which does not exist; \
             build it with `cargo build --release -p {}` (a plain `cargo build` at the \
             workspace root builds it next to cairn), or name it with --linked-runner",
            path.display(),
            bench::LINKED_RUNNER_PACKAGE
        ))
    }
}

/// The companion process (`cairn-bench-linked`): one request line in, one answer line out.
struct Companion {
    path: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Companion {
    fn spawn(path: &Path) -> Result<Self, String> {
        let mut child = Command::new(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run the linked runner {}: {e}", path.display()))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        Ok(Companion {
            path: path.to_path_buf(),
            child,
            stdin,
            stdout,
        })
    }

    /// One linked-in round.
    fn round(&mut self, request: &RoundRequest) -> Result<LinkedOutput, String> {
        let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
        line.push('\n');
        let sent = match &mut self.stdin {
            Some(stdin) => stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush())
                .is_ok(),
            None => false,
        };
        let mut answer = String::new();
        if !sent || !matches!(self.stdout.read_line(&mut answer), Ok(n) if n > 0) {
            return Err(self.failure());
        }
        serde_json::from_str(&answer).map_err(|e| {
            format!(
                "the linked runner {} printed figures this cairn does not understand ({e}); \
                 is it from the same build?",
                self.path.display()
            )
        })
    }

    /// Why the process stopped answering: its exit status and stderr.
    fn failure(&mut self) -> String {
        self.stdin.take();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let status = self
            .child
            .wait()
            .map_or_else(|e| e.to_string(), |s| s.to_string());
        format!(
            "the linked runner {} failed ({status}): {}",
            self.path.display(),
            stderr.trim()
        )
    }
}

impl Drop for Companion {
    fn drop(&mut self) {
        // Closing stdin ends the companion's loop.
        self.stdin.take();
        let _ = self.child.wait();
    }
}
