//! The job lease (issue 13.1): one live writer per job. A second `run`, `checkpoints gc` and
//! `checkpoints delete` are refused while a job runs, on the filesystem and on SeaweedFS; a
//! record whose holder stopped renewing is taken over after its ttl; `run --standby` takes a
//! job over from its latest checkpoint after `kill -9` of its holder, with an exact digest.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::{channel, Receiver},
    time::{Duration, Instant},
};

use cairn_harness::s3::{unique_prefix, S3Server};
use cairn_host::runtime::keyed_counter;
use serde_json::Value;

use crate::util::{
    cairn, cairn_ok, dir_with_plugins, json_of, lib, run_until_checkpoints, FS_PLUGIN,
};

const KEYS: u64 = 300;
const PARALLELISM: u32 = 2;

/// The longest any event of these tests may take to arrive: a bound on a hang, not a pace.
const PATIENCE: Duration = Duration::from_secs(120);

fn expected_digest(records: u64) -> String {
    keyed_counter::counts_digest(&keyed_counter::expected_counts(KEYS, PARALLELISM, records))
}

/// A job directory on the filesystem plugin, its checkpoints under `checkpoints/`.
pub fn fs_job(extra: &str) -> tempfile::TempDir {
    fs_job_with("", extra)
}

/// [`fs_job`] with more `[storage.options]` lines.
pub fn fs_job_with(options: &str, extra: &str) -> tempfile::TempDir {
    let dir = dir_with_plugins(&[FS_PLUGIN]);
    let storage = format!(
        "[plugins]\nsearch-path = [\"plugins\"]\n\n[storage.options]\ndir = {:?}\n{options}",
        dir.path().join("checkpoints").display().to_string()
    );
    write_config(dir.path(), &storage, extra);
    dir
}

/// A job directory on the object-store plugin, on the shared SeaweedFS server.
pub fn s3_job(extra: &str) -> tempfile::TempDir {
    let server = S3Server::get();
    let dir = tempfile::tempdir().unwrap();
    let storage = format!(
        "[storage]\npath = {:?}\n[storage.options]\n{}\n",
        lib("cairn-storage-object-cdylib").display().to_string(),
        server
            .endpoint()
            .plugin_options(&unique_prefix("lease"), "")
    );
    write_config(dir.path(), &storage, extra);
    dir
}

fn write_config(dir: &Path, storage: &str, extra: &str) {
    let config = format!(
        "{storage}\n[checkpointing]\ninterval = \"100ms\"\nnum-retained = 3\n\
         externalized-retention = \"retain-on-cancellation\"\n\n\
         [job]\nid = \"it\"\nkeys = {KEYS}\nparallelism = {PARALLELISM}\nrate = 20000\n\n\
         [lease]\nlocal-dir = {:?}\n{extra}",
        dir.join("locks").display().to_string()
    );
    std::fs::write(dir.join("cairn.toml"), config).unwrap();
}

/// A `cairn` process whose stderr lines arrive on a channel as they are written.
pub struct Running {
    pub child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    pub fn start(args: &[&str], cwd: &Path) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in
                std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Wait for a stderr line that `pred` accepts; panics (with what was seen) after
    /// [`PATIENCE`] or when the process closes stderr first.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + PATIENCE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no {what} ({e:?}); stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Wait until `n` checkpoints completed.
    pub fn wait_for_checkpoints(&mut self, n: usize) {
        for _ in 0..n {
            self.wait_for("completed checkpoint", |l| {
                l.starts_with("checkpoint ") && l.contains(" completed in ")
            });
        }
    }

    /// Wait for the end; stdout, and every stderr line.
    pub fn finish(mut self) -> (std::process::ExitStatus, Value, String) {
        let status = self.child.wait().unwrap();
        let mut stdout = String::new();
        std::io::Read::read_to_string(self.child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
        while let Ok(line) = self.lines.recv_timeout(PATIENCE) {
            self.seen.push(line);
        }
        let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        (status, json, self.seen.join("\n"))
    }

    /// SIGTERM (a cancel: with retain-on-cancellation the checkpoints stay), then the end. A
    /// cancelled run exits 143 (128 + SIGTERM); one that `savepoints.on-sigterm` stopped with
    /// a savepoint exits 0.
    pub fn stop(self) -> (std::process::ExitStatus, Value, String) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        self.finish()
    }
}

/// The one `error:` line of a refused command, which must name the holder.
fn refusal(out: &std::process::Output, holder_pid: u32) -> String {
    assert!(!out.status.success(), "not refused");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let line = errors[0].to_string();
    for needle in [
        "job 'it' is in use".to_string(),
        "host ".to_string(),
        format!("(pid {holder_pid},"),
        " since 20".to_string(),
    ] {
        assert!(line.contains(&needle), "{needle:?} missing from: {line}");
    }
    line
}

fn refuses_a_second_writer_while_it_runs(dir: &Path) {
    let mut first = Running::start(&["run", "--json"], dir);
    first.wait_for_checkpoints(2);
    let pid = first.child.id();
    let second = cairn(&["run", "--from", "latest", "--records", "100"], dir);
    let line = refusal(&second, pid);
    assert!(line.contains("--standby"), "{line}");
    refusal(&cairn(&["checkpoints", "gc", "--dry-run"], dir), pid);
    refusal(&cairn(&["checkpoints", "delete", "latest"], dir), pid);
    // Reading is never refused.
    let listed = json_of(&cairn_ok(&["checkpoints", "list", "--json"], dir));
    let before = listed["checkpoints"].as_array().unwrap().len();
    assert!(before >= 1, "{listed}");
    let (status, summary, log) = first.stop();
    assert_eq!(status.code(), Some(143), "{log}");
    // Nothing the refused commands did reached the job: it never failed over.
    assert_eq!(summary["attempts"], 1, "{summary}\n{log}");
    assert_eq!(summary["checkpoints_failed"], 0, "{summary}\n{log}");
    // Released: gc and delete work now.
    cairn_ok(&["checkpoints", "gc"], dir);
    cairn_ok(&["checkpoints", "delete", "latest"], dir);
}

#[test]
fn a_second_run_gc_and_delete_are_refused_while_a_job_runs_on_the_filesystem() {
    let dir = fs_job("");
    refuses_a_second_writer_while_it_runs(dir.path());
}

#[test]
fn a_second_run_gc_and_delete_are_refused_while_a_job_runs_on_s3() {
    let dir = s3_job("");
    refuses_a_second_writer_while_it_runs(dir.path());
}

/// Write the job's lease record by hand, as a holder on another host would (the record format
/// is the host's: JSON, `format` 1).
fn write_foreign_record(dir: &Path, renewed_ago: Duration, ttl: Duration) {
    let plugin = crate::util::load("cairn-storage-fs-cdylib");
    let storage = plugin
        .open(&crate::util::fs_options(&dir.join("checkpoints")))
        .unwrap();
    let job = storage.job("it").unwrap();
    let now = cairn_host::lease::now_ms();
    let record = serde_json::json!({
        "format": 1,
        "owner": format!("elsewhere-{now}"),
        "holder": { "host": "elsewhere.example", "pid": 4242, "command": "cairn run" },
        "job_id": "it",
        "since_ms": now - 3_600_000,
        "renewed_ms": now - renewed_ago.as_millis() as u64,
        "ttl_ms": ttl.as_millis() as u64,
    });
    let version = job.read_lease().unwrap().map(|r| r.version);
    job.write_lease(record.to_string().as_bytes(), version.as_deref())
        .unwrap();
}

#[test]
fn a_lease_renewed_elsewhere_refuses_and_one_not_renewed_for_its_ttl_is_taken_over() {
    let dir = fs_job("");
    // A holder on another host that renewed a moment ago: refused at once, naming it.
    write_foreign_record(dir.path(), Duration::ZERO, Duration::from_secs(600));
    let out = cairn(&["run", "--records", "100"], dir.path());
    let line = refusal(&out, 4242);
    assert!(line.contains("host elsewhere.example (pid 4242"), "{line}");
    refusal(&cairn(&["checkpoints", "gc"], dir.path()), 4242);

    // One that has not renewed for longer than its ttl (1s) by this host's clock: watched for
    // a whole ttl on this host's own clock, unchanged, then taken over.
    write_foreign_record(dir.path(), Duration::from_secs(600), Duration::from_secs(1));
    let started = Instant::now();
    let out = cairn(&["run", "--records", "2000", "--json"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "taken over before the record was watched for its ttl"
    );
    assert!(
        stderr.contains("took job 'it' over from host elsewhere.example (pid 4242")
            && stderr.contains("its lease was not renewed for 1s"),
        "{stderr}"
    );
    let summary = json_of(&out);
    assert_eq!(summary["counts_sha256"], expected_digest(2000), "{summary}");
}

#[test]
fn a_standby_takes_over_from_the_latest_checkpoint_after_kill_dash_nine_on_s3() {
    let dir = s3_job("ttl = \"3s\"\n");
    let records = 100_000u64;
    let n = records.to_string();
    let mut holder = Running::start(&["run", "--records", &n], dir.path());
    holder.wait_for_checkpoints(1);
    let mut standby = Running::start(&["run", "--standby", "--records", &n, "--json"], dir.path());
    let waiting = standby.wait_for("the standby waiting", |l| l.contains("waiting for it"));
    assert!(
        waiting.contains(&format!("(pid {},", holder.child.id())),
        "{waiting}"
    );
    holder.wait_for_checkpoints(2);
    holder.child.kill().unwrap(); // SIGKILL
    holder.child.wait().unwrap();
    let taken = standby.wait_for("the takeover", |l| l.contains("took job 'it' over"));
    assert!(taken.contains("has exited"), "{taken}");
    let (status, summary, log) = standby.finish();
    assert!(status.success(), "{log}");
    assert_eq!(summary["status"], "finished", "{summary}");
    let from = summary["restored_from"].as_str().unwrap_or_default();
    assert!(from.contains("/it/chk-"), "{summary}\n{log}");
    assert_eq!(summary["records_counted"], records);
    assert_eq!(
        summary["counts_sha256"],
        expected_digest(records),
        "{summary}"
    );
}

#[test]
fn a_standby_whose_holder_finishes_ends_without_running() {
    let dir = fs_job("");
    let mut holder = Running::start(&["run", "--records", "40000"], dir.path());
    holder.wait_for_checkpoints(1);
    let mut standby = Running::start(&["run", "--standby", "--records", "40000"], dir.path());
    standby.wait_for("the standby waiting", |l| l.contains("waiting for it"));
    let (status, _, log) = holder.finish();
    assert!(status.success(), "{log}");
    let (status, _, log) = standby.finish();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("was released by") && log.contains("(finished)"),
        "{log}"
    );
}

/// The ids of the job's completed checkpoints, oldest first.
fn ids(dir: &Path) -> Vec<u64> {
    json_of(&cairn_ok(&["checkpoints", "list", "--json"], dir))["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] != "savepoint")
        .map(|c| c["id"].as_u64().unwrap())
        .collect()
}

/// The ids of every checkpoint a run completed, from its stderr (all of them, not only those
/// retained).
fn completed_ids(out: &std::process::Output) -> Vec<u64> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(crate::util::completed_checkpoint)
        .collect()
}

fn error_line(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "not refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_string()
}

#[test]
fn a_run_without_from_on_a_job_with_checkpoints_is_refused_and_fresh_starts_over() {
    let dir = fs_job("");
    run_until_checkpoints(&["run"], dir.path(), 2);
    let old = ids(dir.path());
    assert!(!old.is_empty());
    let highest = *old.iter().max().unwrap();

    let line = error_line(&cairn(&["run", "--records", "100"], dir.path()));
    assert!(
        line.contains("--from latest") && line.contains("--fresh") && line.contains("job 'it'"),
        "{line}"
    );
    // Not on a terminal and without --yes: not confirmed, nothing discarded.
    let line = error_line(&cairn(&["run", "--fresh", "--records", "100"], dir.path()));
    assert!(
        line.contains("not confirmed") && line.contains("--yes"),
        "{line}"
    );
    assert_eq!(ids(dir.path()), old);
    // --fresh cannot restore too.
    assert!(!cairn(&["run", "--fresh", "--from", "latest"], dir.path())
        .status
        .success());

    let out = run_until_checkpoints(&["run", "--fresh", "--yes", "--json"], dir.path(), 2);
    let summary = json_of(&out);
    assert_eq!(summary["restored_from"], Value::Null, "{summary}");
    let new = completed_ids(&out);
    assert!(!new.is_empty(), "{summary}");
    // The old lineage is gone, and the new one never repeats one of its ids.
    assert!(
        new.iter().all(|id| *id > highest),
        "old {old:?}, new {new:?}"
    );
}

pub const SAVEPOINT_ON_SIGTERM: &str = "\n[savepoints]\ndir = \"savepoints\"\non-sigterm = true\n";

/// Run the job until two checkpoints completed, then SIGTERM: its savepoint's pointer and id.
pub fn take_savepoint(dir: &Path) -> (String, u64) {
    let mut run = Running::start(&["run", "--json"], dir);
    run.wait_for_checkpoints(2);
    let (status, summary, log) = run.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("savepoint "), "{log}");
    let savepoint = summary["final_savepoint"].as_str().unwrap().to_string();
    let shown = json_of(&cairn_ok(
        &["checkpoints", "show", &savepoint, "--json"],
        dir,
    ));
    (savepoint, shown["metadata"]["id"].as_u64().unwrap())
}

#[test]
fn savepoints_are_listed_with_their_kind_and_taken_by_id_by_show_verify_and_delete() {
    let dir = fs_job(SAVEPOINT_ON_SIGTERM);
    let (savepoint, id) = take_savepoint(dir.path());
    let all = json_of(&cairn_ok(&["checkpoints", "list", "--json"], dir.path()));
    let kinds: Vec<(u64, String)> = all["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_u64().unwrap(),
                c["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(kinds.contains(&(id, "savepoint".to_string())), "{all}");
    assert!(kinds.iter().any(|(_, k)| k == "checkpoint"), "{all}");
    let only = json_of(&cairn_ok(
        &["checkpoints", "list", "--kind", "savepoint", "--json"],
        dir.path(),
    ));
    let only = only["checkpoints"].as_array().unwrap();
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(only[0]["pointer"], savepoint.as_str());
    let text = String::from_utf8_lossy(&cairn_ok(&["checkpoints", "list"], dir.path()).stdout)
        .into_owned();
    let line = text.lines().find(|l| l.contains(&savepoint)).unwrap();
    assert!(line.contains(" savepoint "), "{text}");

    let n = id.to_string();
    let shown = String::from_utf8_lossy(&cairn_ok(&["checkpoints", "show", &n], dir.path()).stdout)
        .into_owned();
    assert!(
        shown.starts_with(&format!("savepoint {id} of job 'it'")),
        "{shown}"
    );
    assert!(shown.contains(&savepoint), "{shown}");
    let verified =
        String::from_utf8_lossy(&cairn_ok(&["checkpoints", "verify", &n], dir.path()).stdout)
            .into_owned();
    assert!(
        verified.contains(&format!("OK       {savepoint}")),
        "{verified}"
    );
    let deleted =
        String::from_utf8_lossy(&cairn_ok(&["checkpoints", "delete", &n], dir.path()).stdout)
            .into_owned();
    assert_eq!(deleted.trim(), format!("deleted savepoint {savepoint}"));
    let left = json_of(&cairn_ok(
        &["checkpoints", "list", "--kind", "savepoint", "--json"],
        dir.path(),
    ));
    assert_eq!(left["checkpoints"], serde_json::json!([]), "{left}");
    assert!(!Path::new(&savepoint).exists());
}

#[test]
fn ids_continue_after_a_restored_savepoint_and_never_repeat_one() {
    let dir = fs_job(SAVEPOINT_ON_SIGTERM);
    let (savepoint, savepoint_id) = take_savepoint(dir.path());
    // Without the checkpoints (and the locations a stop left uncommitted), only the savepoint
    // remembers the ids used.
    let forget = |dir: &Path| {
        for id in ids(dir) {
            cairn_ok(&["checkpoints", "delete", &id.to_string()], dir);
        }
        cairn_ok(&["checkpoints", "gc"], dir);
    };
    forget(dir.path());
    let after_restore = completed_ids(&run_until_checkpoints(
        &["run", "--from", &savepoint],
        dir.path(),
        2,
    ));
    assert!(
        !after_restore.is_empty() && after_restore.iter().all(|id| *id > savepoint_id),
        "savepoint {savepoint_id}, then {after_restore:?}"
    );
    forget(dir.path());
    // A run without --from (no completed checkpoint is left) still never repeats the
    // savepoint's id.
    let fresh = completed_ids(&run_until_checkpoints(&["run"], dir.path(), 2));
    assert!(
        !fresh.is_empty() && fresh.iter().all(|id| *id > savepoint_id),
        "savepoint {savepoint_id}, then {fresh:?}"
    );
}

/// A storage whose lease writes fail once `cut` is set (the storage stops answering the
/// holder's renewals); everything else is the real filesystem plugin's.
struct RenewalsCut {
    inner: std::sync::Arc<dyn cairn_plugin_api::CheckpointStorage>,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

struct JobRenewalsCut {
    inner: Box<dyn cairn_plugin_api::JobStorage>,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

mod cut_impls {
    use cairn_plugin_api::{
        CheckpointLocation, CheckpointStorage, CompletedCheckpoint, InputStream, JobStorage,
        LeaseRecord, OutputStream, ResolvedCheckpoint, StateHandle, StorageError, StorageInfo,
        StorageResult, StoredObject,
    };
    use std::sync::atomic::Ordering;

    use super::{JobRenewalsCut, RenewalsCut};

    impl CheckpointStorage for RenewalsCut {
        fn info(&self) -> StorageInfo {
            self.inner.info()
        }
        fn job(&self, job_id: &str) -> StorageResult<Box<dyn JobStorage>> {
            Ok(Box::new(JobRenewalsCut {
                inner: self.inner.job(job_id)?,
                cut: self.cut.clone(),
            }))
        }
        fn resolve(&self, pointer: &str) -> StorageResult<ResolvedCheckpoint> {
            self.inner.resolve(pointer)
        }
        fn open_handle(&self, handle: &StateHandle) -> StorageResult<Box<dyn InputStream>> {
            self.inner.open_handle(handle)
        }
        fn discard(&self, handle: &StateHandle) -> StorageResult<()> {
            self.inner.discard(handle)
        }
        fn dispose(&self, pointer: &str) -> StorageResult<()> {
            self.inner.dispose(pointer)
        }
        fn corrupt_for_testing(&self, handle: &StateHandle) -> StorageResult<()> {
            self.inner.corrupt_for_testing(handle)
        }
    }

    impl JobStorage for JobRenewalsCut {
        fn begin_checkpoint(&self, id: u64) -> StorageResult<Box<dyn CheckpointLocation>> {
            self.inner.begin_checkpoint(id)
        }
        fn begin_savepoint(
            &self,
            id: u64,
            target: Option<&str>,
        ) -> StorageResult<Box<dyn CheckpointLocation>> {
            self.inner.begin_savepoint(id, target)
        }
        fn create_task_owned_stream(&self) -> StorageResult<Box<dyn OutputStream>> {
            self.inner.create_task_owned_stream()
        }
        fn list_completed(&self) -> StorageResult<Vec<CompletedCheckpoint>> {
            self.inner.list_completed()
        }
        fn list_objects(&self) -> StorageResult<Vec<StoredObject>> {
            self.inner.list_objects()
        }
        fn list_uncommitted(&self) -> StorageResult<Vec<u64>> {
            self.inner.list_uncommitted()
        }
        fn list_savepoints(&self, target: Option<&str>) -> StorageResult<Vec<String>> {
            self.inner.list_savepoints(target)
        }
        fn read_lease(&self) -> StorageResult<Option<LeaseRecord>> {
            self.inner.read_lease()
        }
        fn write_lease(&self, record: &[u8], expected: Option<&str>) -> StorageResult<String> {
            if self.cut.load(Ordering::SeqCst) {
                return Err(StorageError::Io(
                    "the storage is cut off (test)".to_string(),
                ));
            }
            self.inner.write_lease(record, expected)
        }
    }
}

#[test]
fn a_holder_that_cannot_renew_stops_committing_before_its_lease_expires() {
    use std::sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    };

    let dir = tempfile::tempdir().unwrap();
    let config = cairn_host::config::Config::parse(
        "[checkpointing]\ninterval = \"20ms\"\n\n[job]\nid = \"it\"\nkeys = 100\nrate = 20000\n\n\
         [lease]\nttl = \"1s\"\n",
        &dir.path().join("cairn.toml"),
    )
    .unwrap();
    let plugin = crate::util::load("cairn-storage-fs-cdylib");
    let inner: Arc<dyn cairn_plugin_api::CheckpointStorage> = Arc::from(
        plugin
            .open(&crate::util::fs_options(&dir.path().join("checkpoints")))
            .unwrap(),
    );
    let cut = Arc::new(AtomicBool::new(false));
    let storage = Arc::new(RenewalsCut {
        inner,
        cut: cut.clone(),
    });
    // Cut the renewals once the first checkpoint completed.
    let completed = AtomicU64::new(0);
    let on_checkpoint = |_: &cairn_host::runtime::CheckpointReport| {
        completed.fetch_add(1, Ordering::SeqCst);
        cut.store(true, Ordering::SeqCst);
    };
    let result = cairn_host::runtime::run(
        &config,
        storage,
        &cairn_host::runtime::RunOptions {
            stop_when: cairn_host::runtime::StopWhen::After(Duration::from_secs(60)),
            on_checkpoint: &on_checkpoint,
            ..cairn_host::runtime::RunOptions::default()
        },
    );
    let error = result
        .expect_err("the run went on without its lease")
        .to_string();
    assert!(
        error.contains("lease") && error.contains("it was not renewed for 750ms"),
        "{error}"
    );
    // Without the fence the run would have gone on for its 60 s, committing all along.
    assert!(
        completed.load(Ordering::SeqCst) >= 1,
        "no checkpoint completed"
    );
}

#[test]
fn a_standby_takes_over_a_holder_on_another_host_once_its_record_stops_changing_for_its_ttl() {
    let dir = fs_job("");
    // A live-looking holder elsewhere (renewed just now) that will never renew again.
    write_foreign_record(dir.path(), Duration::ZERO, Duration::from_secs(1));
    let started = Instant::now();
    let mut standby = Running::start(
        &["run", "--standby", "--records", "2000", "--json"],
        dir.path(),
    );
    let waiting = standby.wait_for("the standby waiting", |l| l.contains("waiting for it"));
    assert!(
        waiting.contains("host elsewhere.example (pid 4242")
            && waiting.contains("not renewed for 1s"),
        "{waiting}"
    );
    let taken = standby.wait_for("the takeover", |l| l.contains("took job 'it' over"));
    assert!(
        taken.contains("its lease was not renewed for 1s"),
        "{taken}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    let (status, summary, log) = standby.finish();
    assert!(status.success(), "{log}");
    assert_eq!(summary["counts_sha256"], expected_digest(2000), "{summary}");
}

/// `cairn ARGS` on a pseudo-terminal (util-linux `script`), with `answer` typed in.
fn on_a_terminal(args: &str, answer: &str, cwd: &Path) -> std::process::Output {
    let mut child = Command::new("script")
        .args([
            "-qec",
            &format!("{} {args}", env!("CARGO_BIN_EXE_cairn")),
            "/dev/null",
        ])
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs the command on a pseudo-terminal");
    // The terminal keeps the line until the prompt reads it.
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), answer.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn fresh_lists_what_it_discards_and_asks_on_a_terminal() {
    let dir = fs_job("");
    run_until_checkpoints(&["run"], dir.path(), 1);
    let old = ids(dir.path());
    assert!(!old.is_empty());
    let out = on_a_terminal("run --fresh --records 100", "n\n", dir.path());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains(&format!(
            "--fresh discards the {}",
            cairn_host::words::count(old.len() as u64, "completed checkpoint")
        )) && shown.contains(&format!("chk-{}", old.last().unwrap()))
            && shown.contains("[y/N]")
            && shown.contains("not confirmed"),
        "{shown}"
    );
    assert_eq!(ids(dir.path()), old);
    let out = on_a_terminal("run --fresh --records 100", "y\n", dir.path());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("100 records counted"), "{shown}");
    assert!(ids(dir.path()).is_empty());
}
