//! `cairn bench crash`: crash trials. `kill -9` a running `cairn run` at random instants, then
//! check that nothing completed was lost or damaged, and that a job resumed after kills computes
//! exactly what an uninterrupted run computes.
//!
//! The driver treats cairn as a black box: it runs this same executable's `run` and
//! `checkpoints` commands in child processes, in a scratch directory per chain with its own
//! config file, and reads their `--json` output. So it measures what a user gets, and it keeps
//! working however the runtime is built inside.
//!
//! Trials cycle through four shapes: small and large state, each with `num-retained` 1 and 3.
//! A *chain* starts a job, kills it (`--kills` times, each at a random instant of the run), and
//! resumes it with `--from latest` after each kill; its last resume runs to the end and its
//! `counts_sha256` must equal the digest of an uninterrupted run of the same shape. Every kill
//! is a *trial*. After each kill, in order:
//!
//! 1. `checkpoints list`: every checkpoint that any listing taken while the job ran showed as
//!    completed is still listed, unless `num-retained` newer ones are (then it was subsumed).
//!    A missing one is **lost**.
//! 2. `checkpoints verify` (all bytes, checksums, state decodes) and `checkpoints show` of each
//!    listed checkpoint; a failure is **corrupt**.
//! 3. `checkpoints gc`, which must succeed and leave every completed checkpoint listed.
//! 4. `checkpoints verify` again.
//!
//! The listings taken while the job runs are what makes "lost" checkable from outside: they are
//! taken at random moments by a second thread, independent of the kill instant.
//!
//! Kills land only while the job is still running: a job that reaches `--records` finishes and,
//! as Flink does, discards its checkpoints, which is not a loss. The sources are throttled to
//! [`RATE`], so a run restored from a checkpoint that holds `r` records cannot finish sooner
//! than `(records - r) / RATE` after it starts; each kill instant is drawn uniformly from the
//! first 80% of that. Every second kill also waits until the run has completed a checkpoint of
//! its own (seen in the listings), so that however slow the machine, trials find checkpoints
//! written by the process they killed.

use std::{
    collections::BTreeSet,
    io::Write,
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use cairn_plugin_api::Capabilities;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

use super::super::ConfigArg;

/// Arguments of `cairn bench crash`.
#[derive(Debug, clap::Args)]
pub struct CrashArgs {
    /// How many kills (trials) to make in all.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub trials: u64,
    /// Kills per chain before the last resume runs it to the end.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub kills: u64,
    /// The storage plugin: a name from the search path, or a library path. It must be
    /// persistent (checkpoints must outlive the killed process).
    #[arg(long, value_name = "NAME|PATH", default_value = "filesystem")]
    pub plugin: String,
    /// A TOML file with the plugin's options; `{scratch}` stands for the chain's scratch
    /// directory. Default: the options the plugin's manifest suggests for testing.
    #[arg(long, value_name = "FILE")]
    pub options: Option<PathBuf>,
    /// Records per job; the sources emit them at 20,000 records/s, so the default job runs
    /// about two seconds. Kills land in the first 80% of what is left of a run (see the module
    /// docs).
    #[arg(long, value_name = "N", default_value_t = 40_000, value_parser = clap::value_parser!(u64).range(1000..))]
    pub records: u64,
    /// Where the scratch directories go (one per chain, removed after it unless --keep).
    /// Default: the system's temporary directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep every chain's scratch directory (the config, the checkpoints, each command's
    /// output), and print where.
    #[arg(long)]
    pub keep: bool,
    /// The random seed (kill instants, listing instants); printed, so a run can be repeated.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

/// The sources' rate, records per second over the job.
const RATE: u64 = 20_000;

/// One shape of job the trials cycle through.
#[derive(Debug, Clone, Copy)]
struct Shape {
    name: &'static str,
    keys: u64,
    state_bytes_per_key: &'static str,
    num_retained: u32,
}

const SHAPES: [Shape; 4] = [
    Shape {
        name: "small state, num-retained 1",
        keys: 100,
        state_bytes_per_key: "64B",
        num_retained: 1,
    },
    Shape {
        name: "small state, num-retained 3",
        keys: 100,
        state_bytes_per_key: "64B",
        num_retained: 3,
    },
    Shape {
        name: "large state, num-retained 1",
        keys: 20_000,
        state_bytes_per_key: "1KiB",
        num_retained: 1,
    },
    Shape {
        name: "large state, num-retained 3",
        keys: 20_000,
        state_bytes_per_key: "1KiB",
        num_retained: 3,
    },
];

/// What the trials of one shape found.
#[derive(Debug, Default, Clone)]
struct Tally {
    trials: u64,
    chains: u64,
    finished_before_kill: u64,
    checkpoints_checked: u64,
    lost: Vec<String>,
    corrupt: Vec<String>,
    gc_failures: Vec<String>,
    digests_compared: u64,
    wrong_digests: Vec<String>,
}

impl Tally {
    fn failures(&self) -> usize {
        self.lost.len() + self.corrupt.len() + self.gc_failures.len() + self.wrong_digests.len()
    }

    fn to_json(&self) -> Value {
        json!({
            "trials": self.trials,
            "chains": self.chains,
            "finished_before_kill": self.finished_before_kill,
            "checkpoints_checked": self.checkpoints_checked,
            "lost": self.lost,
            "corrupt": self.corrupt,
            "gc_failures": self.gc_failures,
            "digests_compared": self.digests_compared,
            "wrong_digests": self.wrong_digests,
        })
    }
}

/// The plugin, the options template and the `cairn` executable the trials use.
struct Setup {
    cairn: PathBuf,
    plugin_path: PathBuf,
    options: String,
    records: u64,
    parent: PathBuf,
    keep: bool,
}

/// One chain's scratch directory and config.
struct Chain<'a> {
    setup: &'a Setup,
    shape: Shape,
    dir: PathBuf,
    config: PathBuf,
    /// Outputs of every command, numbered, for a look after a failure.
    step: std::sync::atomic::AtomicU32,
}

impl<'a> Chain<'a> {
    fn new(setup: &'a Setup, shape: Shape, label: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("cairn-crash-{label}-"))
            .tempdir_in(&setup.parent)
            .context("cannot create a scratch directory")?
            .keep();
        let options = setup.options.replace("{scratch}", &dir.to_string_lossy());
        let config = dir.join("cairn.toml");
        let text = format!(
            "[storage]\npath = {path:?}\n\n[storage.options]\n{options}\n\
             [checkpointing]\ninterval = \"100ms\"\nnum-retained = {retained}\n\
             externalized-retention = \"retain-on-cancellation\"\n\n\
             [job]\nid = \"crash-trial\"\nkeys = {keys}\nstate-bytes-per-key = {bytes:?}\n\
             rate = {RATE}\nparallelism = 2\n",
            path = setup.plugin_path.display().to_string(),
            retained = shape.num_retained,
            keys = shape.keys,
            bytes = shape.state_bytes_per_key,
        );
        std::fs::write(&config, text).context("cannot write the trial config")?;
        Ok(Self {
            setup,
            shape,
            dir,
            config,
            step: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// Run `cairn ARGS --config CONFIG`, keep its output in the scratch directory.
    fn cairn(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let out = Command::new(&self.setup.cairn)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.setup.cairn.display()))?;
        let n = self.step.fetch_add(1, Ordering::SeqCst) + 1;
        let log = format!(
            "$ cairn {}\n{}\n--- stderr\n{}\n",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::write(self.dir.join(format!("step-{n:03}.log")), log);
        Ok(out)
    }

    fn json(&self, args: &[&str]) -> anyhow::Result<(bool, Value)> {
        let out = self.cairn(args)?;
        let v = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "cairn {} printed no JSON: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
        Ok((out.status.success(), v))
    }

    /// How many records the newest completed checkpoint holds (0 without one).
    fn records_checkpointed(&self) -> anyhow::Result<u64> {
        let (ok, v) = self.json(&["checkpoints", "list", "--json"])?;
        if !ok {
            bail!("checkpoints list failed: {v}");
        }
        Ok(v["checkpoints"]
            .as_array()
            .and_then(|a| a.iter().filter_map(|c| c["records"].as_u64()).max())
            .unwrap_or(0))
    }

    /// The completed checkpoints: id and pointer.
    fn list(&self) -> anyhow::Result<Vec<(u64, String)>> {
        let (ok, v) = self.json(&["checkpoints", "list", "--json"])?;
        if !ok {
            bail!("checkpoints list failed: {v}");
        }
        Ok(v["checkpoints"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| Some((c["id"].as_u64()?, c["pointer"].as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `run` to the end; its `counts_sha256`.
    fn run_to_end(&self, from_latest: bool) -> anyhow::Result<String> {
        let records = self.setup.records.to_string();
        let mut args = vec!["run", "--records", &records, "--json"];
        if from_latest {
            args.extend(["--from", "latest"]);
        }
        let (ok, v) = self.json(&args)?;
        if !ok {
            bail!("run failed: {v}");
        }
        v["counts_sha256"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("the run summary has no counts_sha256: {v}"))
    }

    /// Start `run`, list the checkpoints at random moments while it runs, and kill it with
    /// SIGKILL at `kill_after` (and, with `after_own_checkpoint`, not before a listing shows a
    /// checkpoint this run completed). `Ok(None)` if it finished first; otherwise the listings.
    fn run_and_kill(
        &self,
        from_latest: bool,
        kill_after: Duration,
        after_own_checkpoint: bool,
        rng: &mut StdRng,
    ) -> anyhow::Result<Option<Vec<BTreeSet<u64>>>> {
        let before: BTreeSet<u64> = self.list()?.into_iter().map(|(id, _)| id).collect();
        let records = self.setup.records.to_string();
        let n = self.step.fetch_add(1, Ordering::SeqCst) + 1;
        let log = std::fs::File::create(self.dir.join(format!("step-{n:03}-run.log")))?;
        let mut cmd = Command::new(&self.setup.cairn);
        cmd.args(["run", "--records", &records])
            .arg("--config")
            .arg(&self.config)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if from_latest {
            cmd.args(["--from", "latest"]);
        }
        let mut child = cmd.spawn().context("cannot start cairn run")?;
        let started = Instant::now();
        let stop = AtomicBool::new(false);
        let listings = Mutex::new(Vec::new());
        let mut pauses: Vec<Duration> = (0..10_000)
            .map(|_| Duration::from_millis(rng.random_range(5..60)))
            .collect();
        let outcome = std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(l) = self.list() {
                        listings
                            .lock()
                            .unwrap()
                            .push(l.into_iter().map(|(id, _)| id).collect::<BTreeSet<u64>>());
                    }
                    std::thread::sleep(pauses.pop().unwrap_or(Duration::from_millis(20)));
                }
            });
            // Wait for the kill instant, or for the run to end by itself.
            let outcome = loop {
                if let Some(status) = child.try_wait()? {
                    break Ok(Some(status));
                }
                let elapsed = started.elapsed();
                let ready = !after_own_checkpoint
                    || listings
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|l| l.iter().any(|id| !before.contains(id)));
                if elapsed >= kill_after && ready {
                    child.kill().context("cannot kill cairn run")?;
                    child.wait()?;
                    break Ok(None);
                }
                std::thread::sleep(
                    kill_after
                        .saturating_sub(elapsed)
                        .clamp(Duration::from_millis(1), Duration::from_millis(2)),
                );
            };
            stop.store(true, Ordering::SeqCst);
            outcome
        });
        let outcome: anyhow::Result<Option<std::process::ExitStatus>> = outcome;
        match outcome? {
            Some(status) if status.success() => Ok(None),
            Some(status) => bail!(
                "cairn run failed before the kill ({status}); see {}",
                self.dir.display()
            ),
            None => Ok(Some(listings.into_inner().unwrap())),
        }
    }

    /// The checks after a kill (see the module docs), counted into `tally`.
    fn check_after_kill(
        &self,
        listings: &[BTreeSet<u64>],
        tally: &mut Tally,
    ) -> anyhow::Result<()> {
        let listed = self.list()?;
        let ids: BTreeSet<u64> = listed.iter().map(|(id, _)| *id).collect();
        let retained = u64::from(self.shape.num_retained);
        let mut lost = BTreeSet::new();
        for seen in listings {
            for &c in seen {
                let newer = ids.range(c + 1..).count() as u64;
                if !ids.contains(&c) && newer < retained {
                    lost.insert(c);
                }
            }
        }
        for c in lost {
            tally.lost.push(format!(
                "{}: checkpoint {c} was listed as completed while the job ran and is gone, with \
                 fewer than {retained} newer ones listed ({ids:?}); see {}",
                self.shape.name,
                self.dir.display()
            ));
        }
        if listed.is_empty() {
            return Ok(());
        }
        tally.checkpoints_checked += listed.len() as u64;
        self.verify_all(tally, "after the kill")?;
        for (id, _) in &listed {
            let out = self.cairn(&["checkpoints", "show", &id.to_string(), "--json"])?;
            if !out.status.success() {
                tally.corrupt.push(format!(
                    "{}: checkpoints show {id} failed: {}",
                    self.shape.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        let gc = self.cairn(&["checkpoints", "gc", "--json"])?;
        if !gc.status.success() {
            tally.gc_failures.push(format!(
                "{}: gc failed: {}{}",
                self.shape.name,
                String::from_utf8_lossy(&gc.stdout).trim(),
                String::from_utf8_lossy(&gc.stderr).trim()
            ));
        }
        let after_gc: BTreeSet<u64> = self.list()?.into_iter().map(|(id, _)| id).collect();
        if after_gc != ids {
            tally.lost.push(format!(
                "{}: gc changed the completed checkpoints from {ids:?} to {after_gc:?}; see {}",
                self.shape.name,
                self.dir.display()
            ));
        }
        self.verify_all(tally, "after gc")
    }

    fn verify_all(&self, tally: &mut Tally, when: &str) -> anyhow::Result<()> {
        let (ok, v) = self.json(&["checkpoints", "verify", "--json"])?;
        if ok && v["ok"] == true {
            return Ok(());
        }
        for c in v["checkpoints"].as_array().into_iter().flatten() {
            if c["ok"] != true {
                tally.corrupt.push(format!(
                    "{}: {when}: {} is damaged: {}; see {}",
                    self.shape.name,
                    c["pointer"],
                    c["problems"],
                    self.dir.display()
                ));
            }
        }
        if v["checkpoints"].as_array().is_none() {
            tally
                .corrupt
                .push(format!("{}: {when}: verify failed: {v}", self.shape.name));
        }
        Ok(())
    }

    fn finish(self, failed: bool) -> Option<PathBuf> {
        if self.setup.keep || failed {
            Some(self.dir)
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
            None
        }
    }
}

/// Run the crash trials.
pub fn crash(args: &CrashArgs, config: &ConfigArg) -> anyhow::Result<ExitCode> {
    let config = config.load()?;
    let plugin = super::super::plugins::load_from(&args.plugin, &config.plugins.search_path())?;
    if !plugin
        .manifest()
        .capabilities
        .contains(Capabilities::PERSISTENT)
    {
        bail!(
            "plugin '{}' is not persistent: its checkpoints die with the killed process, so there \
             is nothing to check after a kill; choose a persistent plugin",
            plugin.manifest().name
        );
    }
    let options = super::super::verify::options_template(&plugin, args.options.as_deref())?;
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let setup = Setup {
        cairn: std::env::current_exe().context("cannot find the cairn executable")?,
        plugin_path: plugin.path().to_path_buf(),
        options,
        records: args.records,
        parent,
        keep: args.keep,
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();

    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) && !args.json {
        ProgressBar::new(args.trials)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} trials {elapsed} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    // Each shape's uninterrupted digest.
    let mut baselines = Vec::new();
    for (i, shape) in SHAPES.iter().enumerate() {
        bar.set_message(format!("uninterrupted run: {}", shape.name));
        let chain = Chain::new(&setup, *shape, &format!("baseline{i}"))?;
        baselines.push(chain.run_to_end(false)?);
        chain.finish(false);
    }

    let mut tallies = vec![Tally::default(); SHAPES.len()];
    let mut kept = Vec::new();
    let mut trials = 0;
    let mut chain_no = 0u64;
    while trials < args.trials {
        let s = (chain_no % SHAPES.len() as u64) as usize;
        chain_no += 1;
        let shape = SHAPES[s];
        let baseline = baselines[s].clone();
        let chain = Chain::new(&setup, shape, &format!("chain{chain_no}"))?;
        let tally = &mut tallies[s];
        let failures_before = tally.failures();
        tally.chains += 1;
        let mut kills = 0;
        let mut attempts = 0;
        while kills < args.kills && trials < args.trials && attempts < args.kills * 4 {
            attempts += 1;
            bar.set_message(format!("{}, kill {}", shape.name, kills + 1));
            // The run cannot finish before its remaining records pass at RATE.
            let done = chain.records_checkpointed()?;
            let window_ms = args.records.saturating_sub(done) * 1000 / RATE * 8 / 10;
            if window_ms < 50 {
                break;
            }
            let kill_after = Duration::from_millis(rng.random_range(20..=window_ms));
            let from_latest = done > 0 || !chain.list()?.is_empty();
            let after_own_checkpoint = kills % 2 == 1;
            match chain.run_and_kill(from_latest, kill_after, after_own_checkpoint, &mut rng)? {
                None => {
                    tally.finished_before_kill += 1;
                    break;
                }
                Some(listings) => {
                    kills += 1;
                    trials += 1;
                    tally.trials += 1;
                    bar.inc(1);
                    chain.check_after_kill(&listings, tally)?;
                }
            }
        }
        bar.set_message(format!("{}, resume to the end", shape.name));
        let from_latest = !chain.list()?.is_empty();
        match chain.run_to_end(from_latest) {
            Ok(digest) => {
                tally.digests_compared += 1;
                if digest != baseline {
                    tally.wrong_digests.push(format!(
                        "{}: counts_sha256 {digest} after {kills} kill(s), uninterrupted {baseline}; \
                         see {}",
                        shape.name,
                        chain.dir.display()
                    ));
                }
            }
            Err(e) => tally.wrong_digests.push(format!(
                "{}: the last resume failed: {e:#}; see {}",
                shape.name,
                chain.dir.display()
            )),
        }
        let failed = tally.failures() > failures_before;
        kept.extend(chain.finish(failed));
    }
    bar.finish_and_clear();

    let total = |f: fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
    let lost: Vec<&String> = tallies.iter().flat_map(|t| &t.lost).collect();
    let corrupt: Vec<&String> = tallies.iter().flat_map(|t| &t.corrupt).collect();
    let gc_failures: Vec<&String> = tallies.iter().flat_map(|t| &t.gc_failures).collect();
    let wrong: Vec<&String> = tallies.iter().flat_map(|t| &t.wrong_digests).collect();
    let ok = lost.is_empty() && corrupt.is_empty() && gc_failures.is_empty() && wrong.is_empty();
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = json!({
            "ok": ok,
            "seed": seed,
            "plugin": plugin.manifest().name,
            "trials": total(|t| t.trials),
            "chains": total(|t| t.chains),
            "finished_before_kill": total(|t| t.finished_before_kill),
            "checkpoints_checked": total(|t| t.checkpoints_checked),
            "lost": lost.len(),
            "corrupt": corrupt.len(),
            "gc_failures": gc_failures.len(),
            "digests_compared": total(|t| t.digests_compared),
            "wrong_digests": wrong.len(),
            "elapsed_ms": started.elapsed().as_millis() as u64,
            "shapes": SHAPES.iter().zip(&tallies).map(|(s, t)| {
                let mut v = t.to_json();
                v["shape"] = json!(s.name);
                v
            }).collect::<Vec<_>>(),
            "kept": kept,
        });
        crate::cli::output::print_json(&mut out, &doc)?;
    } else {
        writeln!(
            out,
            "crash trials: {} kill -9 in {} chains, plugin {} (seed {seed}, {:.0?})",
            total(|t| t.trials),
            total(|t| t.chains),
            plugin.manifest().name,
            started.elapsed()
        )?;
        for (s, t) in SHAPES.iter().zip(&tallies) {
            writeln!(
                out,
                "  {:<28} {:>4} trials, {:>5} checkpoints checked, {} lost, {} corrupt, {} gc \
                 failures, {}/{} digests right",
                s.name,
                t.trials,
                t.checkpoints_checked,
                t.lost.len(),
                t.corrupt.len(),
                t.gc_failures.len(),
                t.digests_compared as usize
                    - t.wrong_digests.len().min(t.digests_compared as usize),
                t.chains
            )?;
        }
        for problem in lost
            .iter()
            .chain(&corrupt)
            .chain(&gc_failures)
            .chain(&wrong)
        {
            writeln!(out, "FAIL  {problem}")?;
        }
        for dir in &kept {
            writeln!(out, "kept {}", dir.display())?;
        }
        writeln!(
            out,
            "{} lost, {} corrupt, {} wrong digests",
            lost.len(),
            corrupt.len() + gc_failures.len(),
            wrong.len()
        )?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
