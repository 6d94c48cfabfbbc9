//! The conformance suite's machinery: the subject under test, the per-case context, the case
//! table, and the runner with its per-case deadline.
//!
//! Each case is a public function `fn(&Ctx) -> CaseResult` in a module under `cases/`, listed
//! once in [`CASES`]. A unit test reads the case modules' source and fails if a public case
//! function is missing from the table, so a new case cannot be forgotten. The capabilities a
//! case needs decide whether it applies; a case that does not apply is reported as skipped with
//! the reason, never left out silently.

use std::{
    path::PathBuf,
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use cairn_plugin_api::{Capabilities, CheckpointStorage, Manifest, StorageError, StorageInfo};
use serde::Serialize;

use crate::cases;

/// Opens instances of the backend under test.
pub type Opener =
    dyn Fn(&str) -> Result<Box<dyn CheckpointStorage>, StorageError> + Send + Sync + 'static;

/// The backend under test: its manifest, how to open it, and with which options.
#[derive(Clone)]
pub struct Subject {
    /// The plugin's manifest.
    pub manifest: Manifest,
    /// Opens an instance with an options document.
    pub open: Arc<Opener>,
    /// The options document the suite uses.
    pub options: String,
    /// A directory the suite may write into (savepoint targets and the like).
    pub scratch: PathBuf,
}

/// What one case gets: a fresh instance, its info, a job id no other case uses, and a scratch
/// directory of its own.
pub struct Ctx {
    /// The backend under test.
    pub subject: Subject,
    /// A fresh instance, opened for this case.
    pub storage: Arc<dyn CheckpointStorage>,
    /// `storage.info()`, read once.
    pub info: StorageInfo,
    /// A job id unique to this case.
    pub job_id: String,
    /// An empty directory for this case.
    pub scratch: PathBuf,
}

impl Ctx {
    /// Open another instance of the backend with the suite's options.
    pub fn reopen(&self) -> Result<Box<dyn CheckpointStorage>, Fail> {
        (self.subject.open)(&self.subject.options)
            .map_err(|e| Fail(format!("reopening failed: {e}")))
    }
}

/// Why a case failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail(pub String);

impl From<StorageError> for Fail {
    fn from(e: StorageError) -> Self {
        Fail(format!("unexpected error: {e}"))
    }
}

impl Fail {
    /// Prefix the reason with what the case was doing, for example the sizes it used.
    pub fn context(self, what: impl std::fmt::Display) -> Fail {
        Fail(format!("{what}: {}", self.0))
    }
}

/// Name what a step of a case was doing (its sizes, ids, scopes) in its failure message.
pub trait Context<T> {
    /// On error, prefix the reason with `what()`.
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Fail>;
}

impl<T, E: Into<Fail>> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Fail> {
        self.map_err(|e| e.into().context(what()))
    }
}

/// What a case function returns: `Ok(None)` passed, `Ok(Some(reason))` did not apply (decided
/// while running, with the reason), `Err` failed.
pub type CaseResult = Result<Option<String>, Fail>;

/// Fail the case with a message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::suite::Fail(format!($($fmt)+)));
        }
    };
}

/// One conformance case.
#[derive(Clone, Copy)]
pub struct Case {
    /// Its name, the function's name.
    pub name: &'static str,
    /// What it checks, in one line.
    pub checks: &'static str,
    /// Capabilities the backend must report for the case to apply.
    pub needs: Capabilities,
    /// The case.
    pub run: fn(&Ctx) -> CaseResult,
}

macro_rules! cases {
    ($($module:ident :: $name:ident needs [$($cap:ident),*] : $checks:literal;)*) => {
        /// Every case, in the order they run.
        pub const CASES: &[Case] = &[$(Case {
            name: stringify!($name),
            checks: $checks,
            needs: Capabilities::empty()$(.union(Capabilities::$cap))*,
            run: cases::$module::$name,
        }),*];
    };
}

cases! {
    config::manifest_is_sane needs []: "the manifest has a valid name, a version and a compatible API version";
    config::valid_options_open_twice needs []: "the options open an instance, and two instances coexist";
    config::unknown_option_is_named needs []: "an unknown option is InvalidConfig naming the option";
    streams::empty_stream_gives_no_handle needs []: "closing a stream with nothing written gives no handle";
    streams::round_trips_at_every_size needs []: "sizes 0, 1, threshold-1, threshold, threshold+1, 1 MiB and 64 MiB round-trip with mixed writes; inline at or under the threshold, stored above; over the size limit is CapacityExceeded";
    streams::pos_counts_every_byte needs []: "pos() is exact after every write";
    streams::write_after_close_is_an_error needs []: "writing to, or closing, a closed stream is an error";
    streams::dropped_stream_leaves_nothing needs [STORED_HANDLES]: "dropping a stream without taking its handle deletes what it wrote";
    streams::shared_scope_round_trip needs [SHARED_SCOPE]: "SHARED-scope streams round-trip";
    streams::task_owned_round_trip needs [TASK_OWNED]: "task-owned streams round-trip";
    streams::discard_is_idempotent needs [STORED_HANDLES]: "discard deletes, and discarding again is success";
    streams::corruption_is_detected needs [STORED_HANDLES, CORRUPT_FOR_TESTING]: "a changed stored byte reads back as Corrupt naming the handle";
    checkpoints::commit_is_atomic_and_once needs []: "a checkpoint exists only after its commit, resolves to the exact bytes, and commits once";
    checkpoints::resolves_from_a_fresh_instance needs [PERSISTENT]: "a pointer resolves, and its state reads back, from a newly opened instance";
    checkpoints::listing_shows_only_completed needs []: "only committed checkpoints are listed, in id order";
    checkpoints::dispose_is_idempotent needs []: "dispose removes a completed checkpoint, and disposing again is success";
    checkpoints::dispose_on_failure_is_idempotent needs []: "dispose_on_failure removes a failed location, and is idempotent";
    checkpoints::bad_pointers_have_their_own_errors needs []: "empty and garbage pointers are InvalidConfig, a missing one NotFound";
    checkpoints::jobs_are_isolated needs []: "two jobs with the same checkpoint id do not collide";
    savepoints::savepoint_to_custom_target needs [SAVEPOINTS]: "a savepoint goes under the given target and resolves";
    savepoints::savepoint_to_default_target needs [SAVEPOINTS]: "with no target, a savepoint goes to the default location";
    savepoints::savepoint_without_any_target needs [SAVEPOINTS]: "with no target and no default, begin_savepoint is InvalidConfig";
    savepoints::completed_savepoints_are_listed needs [SAVEPOINTS]: "list_savepoints lists a committed savepoint under its target, and not an uncommitted one (API 1.1)";
    lease::lease_is_compare_and_swap needs []: "the lease record is replaced only over its current version, and every handle reads the last write (API 1.1)";
    lease::lease_race_has_one_winner needs []: "of eight writers over the same lease version, exactly one wins and the others get AlreadyExists (API 1.1)";
    concurrency::eight_threads_hundred_streams needs []: "8 threads each write 100 streams at once, and every one reads back";
}

/// A case's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "lowercase")]
pub enum Outcome {
    /// It passed.
    Pass,
    /// It failed, with why.
    Fail(String),
    /// It did not apply, with why.
    Skip(String),
}

/// A case's verdict and how long it took.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    /// The case name.
    pub name: &'static str,
    /// What it checks.
    pub checks: &'static str,
    /// The verdict.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Wall time in milliseconds (`duration_ms` in JSON, as cairn's contract names durations).
    #[serde(rename = "duration_ms")]
    pub millis: u128,
}

/// The suite's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// One entry per case, in order.
    pub cases: Vec<CaseReport>,
}

impl Report {
    /// (passed, failed, skipped)
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for r in &self.cases {
            match r.outcome {
                Outcome::Pass => c.0 += 1,
                Outcome::Fail(_) => c.1 += 1,
                Outcome::Skip(_) => c.2 += 1,
            }
        }
        c
    }

    /// Whether no case failed.
    pub fn passed(&self) -> bool {
        self.counts().1 == 0
    }

    /// The verdict of the case called `name`.
    pub fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.cases
            .iter()
            .find(|c| c.name == name)
            .map(|c| &c.outcome)
    }
}

/// How to run the suite.
pub struct RunOptions<'a> {
    /// How long one case may take before it is failed as hung. Its thread is abandoned.
    pub case_timeout: Duration,
    /// Only cases whose name contains one of these (all if empty).
    pub filter: Vec<String>,
    /// Called before each case (index, total, case) and after it (with its report).
    pub on_start: &'a dyn Fn(usize, usize, &Case),
    /// Called after each case.
    pub on_done: &'a dyn Fn(&CaseReport),
}

/// Run every applicable case against `subject`.
pub fn run(subject: &Subject, opts: &RunOptions<'_>) -> Report {
    let selected: Vec<&Case> = CASES
        .iter()
        .filter(|c| {
            opts.filter.is_empty() || opts.filter.iter().any(|f| c.name.contains(f.as_str()))
        })
        .collect();
    let mut reports = Vec::new();
    let mut hung: Option<&'static str> = None;
    for (i, case) in selected.iter().enumerate() {
        (opts.on_start)(i, selected.len(), case);
        let started = Instant::now();
        let outcome = match hung {
            Some(earlier) => Outcome::Skip(format!(
                "not run: case {earlier} hung, so the plugin may be stuck holding its locks"
            )),
            None => run_one(subject, case, &format!("{i:02}"), opts.case_timeout),
        };
        if matches!(&outcome, Outcome::Fail(m) if m.starts_with(TIMED_OUT)) {
            hung = Some(case.name);
        }
        let report = CaseReport {
            name: case.name,
            checks: case.checks,
            outcome,
            millis: started.elapsed().as_millis(),
        };
        (opts.on_done)(&report);
        reports.push(report);
    }
    Report { cases: reports }
}

const TIMED_OUT: &str = "timed out";

/// What [`preflight`] runs, as a case: the instance answers a listing of a job no case uses.
const PREFLIGHT: Case = Case {
    name: "storage_answers",
    checks: "the options open an instance, and it answers a listing of a job's checkpoints",
    needs: Capabilities::empty(),
    run: |ctx| {
        let listed = ctx
            .storage
            .job(&ctx.job_id)
            .and_then(|job| job.list_completed());
        match listed {
            Ok(_) => Ok(None),
            Err(e) => Err(Fail(format!(
                "listing the checkpoints of job '{}' failed: {e}",
                ctx.job_id
            ))),
        }
    },
};

/// Before the cases: open the backend with the suite's options and list the completed
/// checkpoints of a job no case uses (which creates nothing a case sees), bounded by
/// `timeout`. An error here (an endpoint that cannot be reached, refused credentials, options
/// that do not open) is why every case would fail the same way, so a caller stops with it, once,
/// instead of running them.
pub fn preflight(subject: &Subject, timeout: Duration) -> Result<(), String> {
    match run_one(subject, &PREFLIGHT, "preflight", timeout) {
        Outcome::Pass | Outcome::Skip(_) => Ok(()),
        Outcome::Fail(why) => Err(why),
    }
}

/// Run `case` in a thread of its own, bounded by `timeout`; `tag` makes its job id and scratch
/// directory its own.
fn run_one(subject: &Subject, case: &'static Case, tag: &str, timeout: Duration) -> Outcome {
    let scratch = subject.scratch.join(format!("{tag}-{}", case.name));
    let job_id = format!("verify-{tag}");
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        return Outcome::Fail(format!("harness: cannot create {}: {e}", scratch.display()));
    }
    let (tx, rx) = mpsc::channel();
    let subject = subject.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("case-{}", case.name))
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let storage: Arc<dyn CheckpointStorage> = match (subject.open)(&subject.options) {
                    Ok(s) => Arc::from(s),
                    Err(e) => return Outcome::Fail(format!("opening the backend failed: {e}")),
                };
                let info = storage.info();
                if !info.capabilities.contains(case.needs) {
                    let missing = case.needs.difference(info.capabilities);
                    return Outcome::Skip(format!(
                        "needs capability {missing}, which this backend does not report"
                    ));
                }
                let ctx = Ctx {
                    subject,
                    storage,
                    info,
                    job_id,
                    scratch,
                };
                match (case.run)(&ctx) {
                    Ok(None) => Outcome::Pass,
                    Ok(Some(reason)) => Outcome::Skip(reason),
                    Err(Fail(why)) => Outcome::Fail(why),
                }
            }));
            let outcome = result.unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Outcome::Fail(format!("the case panicked in the host: {msg}"))
            });
            let _ = tx.send(outcome);
        });
    if let Err(e) = spawned {
        return Outcome::Fail(format!("harness: cannot start a thread: {e}"));
    }
    match rx.recv_timeout(timeout) {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Fail(format!(
            "{TIMED_OUT} after {}: a plugin call did not return (the plugin may hang); its thread was abandoned",
            humanize(timeout)
        )),
    }
}

fn humanize(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Run every case against a plugin in process, with its own options, and panic with every
/// failure if a case failed: a plugin author's `#[test]` in one line. `scratch` replaces
/// `{scratch}` in `options` (the manifest's test options if `None`) and holds the cases'
/// directories.
pub fn assert_passes<P: cairn_plugin_api::StoragePlugin>(
    options: Option<&str>,
    scratch: &std::path::Path,
) -> Report {
    let manifest = P::manifest();
    let options = options
        .unwrap_or(&manifest.test_options)
        .replace("{scratch}", &scratch.to_string_lossy());
    let subject = Subject {
        manifest,
        open: Arc::new(|doc: &str| P::open(doc)),
        options,
        scratch: scratch.join("cases"),
    };
    assert_report(run_quietly(&subject))
}

/// Run every case against the plugin library at `path`, loaded through the real `dlopen`
/// path (`cairn_plugin_api::host::load_library`), and panic if a case failed.
pub fn assert_library_passes(
    path: &std::path::Path,
    options: Option<&str>,
    scratch: &std::path::Path,
) -> Report {
    let plugin = cairn_plugin_api::host::load_library(path)
        .unwrap_or_else(|e| panic!("{} {e}", path.display()));
    let manifest = plugin.manifest().clone();
    let options = options
        .unwrap_or(&manifest.test_options)
        .replace("{scratch}", &scratch.to_string_lossy());
    let subject = Subject {
        manifest,
        open: Arc::new(move |doc: &str| plugin.open(doc)),
        options,
        scratch: scratch.join("cases"),
    };
    assert_report(run_quietly(&subject))
}

fn run_quietly(subject: &Subject) -> Report {
    run(
        subject,
        &RunOptions {
            case_timeout: Duration::from_secs(300),
            filter: Vec::new(),
            on_start: &|_, _, _| {},
            on_done: &|_| {},
        },
    )
}

fn assert_report(report: Report) -> Report {
    let failed: Vec<String> = report
        .cases
        .iter()
        .filter_map(|c| match &c.outcome {
            Outcome::Fail(why) => Some(format!("{}: {why}", c.name)),
            _ => None,
        })
        .collect();
    assert!(
        failed.is_empty(),
        "conformance cases failed:\n{}",
        failed.join("\n")
    );
    report
}

#[cfg(test)]
mod tests {
    use super::CASES;

    /// Every public case function in `src/cases/` is in `CASES`, and names are unique.
    #[test]
    fn no_case_is_left_out() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src")
            .join("cases");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            // A case is any public function returning `CaseResult`, however its signature is
            // written or wrapped.
            for (at, _) in text.match_indices("pub fn ") {
                let rest = &text[at + "pub fn ".len()..];
                let signature = &rest[..rest.find('{').unwrap_or(rest.len())];
                if signature.contains("-> CaseResult") {
                    let name = rest.split(['(', '<']).next().unwrap();
                    found.push(name.trim().to_string());
                }
            }
        }
        assert!(found.len() >= 20, "found only {found:?}");
        for name in &found {
            assert!(
                CASES.iter().any(|c| c.name == name),
                "case {name} is not listed in CASES"
            );
        }
        let mut names: Vec<_> = CASES.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CASES.len(), "duplicate case names");
    }
}
