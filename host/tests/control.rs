//! Control of a running `cairn run` from other processes, over its control socket:
//! `cairn savepoint`, `cairn stop --savepoint`, `cairn cancel` and `cairn status --json`; the
//! Prometheus endpoint scraped during a run; and the socket refusing another user.
//!
//! Every wait is on an event: a line the job prints (`cairn: control socket at ...`,
//! `cairn: metrics at ...`, `checkpoint N completed ...`), a command returning, or the job's
//! process exiting. The metrics endpoint listens on port 0 and the job prints the port it got.

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError},
    thread::JoinHandle,
    time::Duration,
};

use cairn_host::runtime::keyed_counter;
use serde_json::Value;

use crate::util::{cairn_cmd, dir_with_plugins, json_of, FS_PLUGIN};

const KEYS: u64 = 200;
const PARALLELISM: u32 = 2;

/// The longest wait for one line of the job: a limit for a job that is stuck, not a pace.
const LINE_LIMIT: Duration = Duration::from_secs(180);

/// A job directory with the filesystem plugin in `plugins/`, a config and a runtime directory
/// for the control socket (`run/`, given to every process as `XDG_RUNTIME_DIR`).
fn setup(extra: &str) -> tempfile::TempDir {
    let dir = dir_with_plugins(&[FS_PLUGIN]);
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let config = format!(
        "[plugins]\nsearch-path = [\"plugins\"]\n\n\
         [savepoints]\ndir = \"savepoints\"\n\n\
         [job]\nid = \"it\"\nkeys = {KEYS}\nparallelism = {PARALLELISM}\nrate = 5000\n{extra}"
    );
    std::fs::write(dir.path().join("cairn.toml"), config).unwrap();
    dir
}

fn expected_digest(records: u64) -> String {
    keyed_counter::counts_digest(&keyed_counter::expected_counts(KEYS, PARALLELISM, records))
}

/// Run a control command to its end.
fn ctl(dir: &Path, args: &[&str]) -> Output {
    cairn_cmd(dir, args).output().expect("run cairn")
}

/// Run a control command and require success.
fn ctl_ok(dir: &Path, args: &[&str]) -> Output {
    let out = ctl(dir, args);
    assert!(
        out.status.success(),
        "cairn {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// A `cairn run` in the background, its stderr read line by line as it comes.
struct Job {
    child: Option<Child>,
    lines: Receiver<String>,
    reader: Option<JoinHandle<()>>,
    log: Vec<String>,
    /// The control socket, once the job said where it is.
    socket: PathBuf,
}

impl Job {
    /// Start `cairn run --json ARGS` in `dir` and wait until it serves its control socket.
    fn start(dir: &Path, args: &[&str]) -> Job {
        Job::spawn(cairn_cmd(dir, &[&["run", "--json"], args].concat()), dir)
    }

    /// Start `cmd` (a `cairn run --json` in `dir`) and wait until it serves its control socket.
    fn spawn(mut cmd: Command, dir: &Path) -> Job {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cairn run");
        let (tx, lines) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut job = Job {
            child: Some(child),
            lines,
            reader: Some(reader),
            log: Vec::new(),
            socket: PathBuf::new(),
        };
        let line = job.wait_for("the control socket", |l| {
            l.starts_with("cairn: control socket at ")
        });
        let rest = line.trim_start_matches("cairn: control socket at ");
        let socket = rest.split(" (cairn status").next().unwrap();
        job.socket = PathBuf::from(socket);
        assert!(
            job.socket.starts_with(dir.join("run").join("cairn")),
            "{line}"
        );
        job
    }

    /// Wait for a stderr line that `pred` accepts, and return it.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        loop {
            match self.lines.recv_timeout(LINE_LIMIT) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "the job did not print {what} within {LINE_LIMIT:?}; it said:\n{}",
                    self.log.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "the job ended before printing {what}; it said:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// The job's pid.
    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Wait for the job's process to exit; its summary (stdout, JSON) and its stderr.
    fn finish(mut self) -> (Value, String) {
        let child = self.child.take().unwrap();
        let out = child.wait_with_output().unwrap();
        self.reader.take().unwrap().join().unwrap();
        self.log.extend(self.lines.try_iter());
        let stderr = self.log.join("\n");
        assert!(out.status.success(), "cairn run failed:\n{stderr}");
        let mut summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "cairn run printed no JSON summary ({e}): {}\nstderr:\n{stderr}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        // The summary as `stop` and `cancel` return it inside their own documents: without
        // the contract's top-level version field.
        let version = summary
            .as_object_mut()
            .and_then(|o| o.shift_remove("version"));
        assert_eq!(version, Some(1.into()), "{summary}");
        (summary, stderr)
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // A test that failed midway leaves no process behind.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn savepoint_from_another_process_prints_its_pointer_when_complete() {
    let dir = setup("");
    let mut job = Job::start(dir.path(), &[]);
    // The default target: `[savepoints] dir`. The pointer alone is on stdout.
    let out = ctl_ok(dir.path(), &["savepoint"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let pointer = stdout.trim_end().to_string();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        Path::new(&pointer).starts_with(dir.path().join("savepoints")),
        "{pointer}"
    );
    assert!(Path::new(&pointer).join("_metadata").is_file(), "{pointer}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("savepoint "), "{stderr}");
    assert!(stderr.contains(" completed in "), "{stderr}");
    // The job says so too, with the same pointer.
    job.wait_for("the savepoint's completion", |l| {
        l.starts_with("savepoint ") && l.ends_with(&pointer)
    });
    let show = ctl_ok(dir.path(), &["checkpoints", "show", &pointer, "--json"]);
    assert_eq!(json_of(&show)["metadata"]["kind"], "savepoint");

    // A relative --target is taken from the directory the command runs in, not the job's;
    // the config is named from there.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let config = dir.path().join("cairn.toml");
    let out = cairn_cmd(
        &elsewhere,
        &[
            "savepoint",
            "--config",
            config.to_str().unwrap(),
            "--target",
            "sp",
            "--json",
        ],
    )
    .env("XDG_RUNTIME_DIR", dir.path().join("run"))
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = json_of(&out);
    let second_pointer = second["pointer"].as_str().unwrap();
    assert!(
        Path::new(second_pointer).starts_with(elsewhere.join("sp")),
        "{second}"
    );
    assert!(Path::new(second_pointer).join("_metadata").is_file());
    assert!(second["id"].as_u64().unwrap() > 0, "{second}");
    assert!(second["completed_ms"].as_u64().unwrap() > 0, "{second}");
    assert!(
        second["completed"].as_str().unwrap().ends_with('Z'),
        "{second}"
    );

    ctl_ok(dir.path(), &["cancel"]);
    let (summary, _) = job.finish();
    assert_eq!(summary["status"], "stopped", "{summary}");
    assert!(summary["checkpoints_completed"].as_u64().unwrap() >= 2);
}

#[test]
fn stop_with_savepoint_from_another_process_stops_the_job_and_restores_exactly() {
    let dir = setup("\n[checkpointing]\ninterval = \"200ms\"\n");
    let mut job = Job::start(dir.path(), &[]);
    job.wait_for("a completed checkpoint", |l| {
        crate::util::completed_checkpoint(l).is_some()
    });
    let out = ctl_ok(dir.path(), &["stop", "--savepoint", "--json"]);
    let stopped = json_of(&out);
    let pointer = stopped["savepoint"]["pointer"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        Path::new(&pointer).starts_with(dir.path().join("savepoints")),
        "{stopped}"
    );
    assert!(Path::new(&pointer).join("_metadata").is_file());
    // `stop` returned once the job had stopped: its summary is in the reply, and it is the
    // one the job printed.
    let summary = &stopped["summary"];
    assert_eq!(summary["status"], "stopped", "{stopped}");
    assert_eq!(summary["final_savepoint"], pointer.as_str(), "{stopped}");
    let socket = job.socket.clone();
    let (printed, _) = job.finish();
    assert_eq!(&printed, summary);
    assert!(!socket.exists(), "the job left its control socket");
    let out = ctl(dir.path(), &["status"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: no job is running for ") && err.lines().count() == 1,
        "{err}"
    );

    // The savepoint holds exactly the records the job had counted when it stopped: a run
    // from it that counts on to a total ends with the exact counts.
    let counted = summary["records_counted"].as_u64().unwrap();
    assert!(counted > 0, "{summary}");
    let total = counted + 2000;
    let out = ctl_ok(
        dir.path(),
        &[
            "run",
            "--from",
            &pointer,
            "--records",
            &total.to_string(),
            "--json",
        ],
    );
    let resumed = json_of(&out);
    assert_eq!(resumed["status"], "finished", "{resumed}");
    assert_eq!(resumed["restored_from"], pointer.as_str());
    assert_eq!(resumed["records_counted"], total);
    assert_eq!(resumed["counts_sha256"], expected_digest(total));
}

#[test]
fn cancel_from_another_process_stops_the_job_without_a_savepoint() {
    let dir = setup("\n[checkpointing]\ninterval = \"200ms\"\n");
    let mut job = Job::start(dir.path(), &[]);
    job.wait_for("a completed checkpoint", |l| {
        crate::util::completed_checkpoint(l).is_some()
    });
    let out = ctl_ok(dir.path(), &["cancel", "--json"]);
    let mut reply = json_of(&out);
    // `cancel --json` prints the summary as its own document, with the contract's version
    // field; the job's own is compared without it (see `Job::finish`).
    let version = reply.as_object_mut().unwrap().shift_remove("version");
    assert_eq!(version, Some(1.into()), "{reply}");
    assert_eq!(reply["status"], "stopped", "{reply}");
    assert_eq!(reply["final_savepoint"], Value::Null, "{reply}");
    let socket = job.socket.clone();
    let (summary, _) = job.finish();
    assert_eq!(summary, reply);
    assert!(!socket.exists(), "the job left its control socket");
    assert!(
        !dir.path().join("savepoints").exists(),
        "cancel took a savepoint"
    );
    // Text output: one line about the stopped job.
    let dir2 = setup("");
    let job = Job::start(dir2.path(), &[]);
    let out = ctl_ok(dir2.path(), &["cancel"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("job 'it' stopped after 1 attempt: "),
        "{text}"
    );
    job.finish();
}

#[test]
fn status_json_from_another_process_reports_attempt_checkpoints_failures_and_rate() {
    let dir = setup(
        "fail-after-records = 1500\n\n[restart]\nattempts = 2\ndelay = \"50ms\"\n\n\
         [checkpointing]\ninterval = \"200ms\"\n",
    );
    let mut job = Job::start(dir.path(), &[]);
    job.wait_for("the injected failure", |l| {
        l.starts_with("attempt 1 failed: ")
    });
    // A checkpoint completed in the second attempt.
    let line = job.wait_for("a completed checkpoint", |l| {
        crate::util::completed_checkpoint(l).is_some()
    });
    let seen = crate::util::completed_checkpoint(&line).unwrap();
    let out = ctl_ok(dir.path(), &["status", "--json"]);
    let s = json_of(&out);
    assert_eq!(s["job_id"], "it", "{s}");
    assert_eq!(s["job_kind"], "keyed-counter", "{s}");
    assert_eq!(s["pid"], job.pid(), "{s}");
    assert_eq!(s["phase"], "running", "{s}");
    assert_eq!(s["attempt"], 2, "{s}");
    assert_eq!(s["restarts"], 1, "{s}");
    assert_eq!(s["socket"], job.socket.to_str().unwrap(), "{s}");
    assert_eq!(
        s["config"],
        std::fs::canonicalize(dir.path().join("cairn.toml"))
            .unwrap()
            .to_str()
            .unwrap()
    );
    let failure = s["last_failure"].as_str().unwrap_or_default();
    assert!(failure.contains("injected failure"), "{s}");
    let last = &s["last_checkpoint"];
    assert!(last["id"].as_u64().unwrap() >= seen, "{s}");
    assert!(Path::new(last["pointer"].as_str().unwrap())
        .join("_metadata")
        .is_file());
    assert!(last["completed"].as_str().unwrap().ends_with('Z'), "{s}");
    assert!(s["checkpoints_completed"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["checkpoints_failed"], 0, "{s}");
    assert!(s["records"].as_u64().unwrap() > 1500, "{s}");
    assert!(s["records_per_sec"].as_f64().is_some(), "{s}");
    assert!(s["pending_checkpoints"].is_array(), "{s}");
    assert!(s["lease"]["state"].is_string(), "{s}");
    assert_eq!(s["metrics_url"], Value::Null, "{s}");
    assert!(s["started"].as_str().unwrap().ends_with('Z'), "{s}");

    // The same for people.
    let out = ctl_ok(dir.path(), &["status"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("job 'it' (keyed-counter) is running: attempt 2 (1 restarts)"),
        "{text}"
    );
    assert!(text.contains("last failure"), "{text}");

    ctl_ok(dir.path(), &["cancel"]);
    let (summary, _) = job.finish();
    assert_eq!(summary["attempts"], 2, "{summary}");

    // Nothing runs now: one line that says so and how to start it.
    let out = ctl(dir.path(), &["status", "--json"]);
    assert!(!out.status.success());
    let err = json_of(&out)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(err.starts_with("no job is running for "), "{err}");
    assert!(err.contains("start one with `cairn run --config "), "{err}");
}

/// A parsed scrape's value of `name` whose labels include `labels`.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value as V;
    let found = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)));
    match found.map(|s| &s.value) {
        Some(V::Counter(v) | V::Gauge(v) | V::Untyped(v)) => *v,
        other => panic!(
            "no scalar sample {name}{labels:?} in the scrape (found {other:?}); samples: {:?}",
            scrape
                .samples
                .iter()
                .map(|s| s.metric.as_str())
                .collect::<Vec<_>>()
        ),
    }
}

fn scrape(url: &str) -> (String, prometheus_parse::Scrape) {
    let mut response = ureq::get(url).call().expect("scrape the metrics endpoint");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.body_mut().read_to_string().unwrap();
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    (text, parsed)
}

#[test]
fn metrics_are_scraped_during_a_run_and_match_its_summary() {
    // No periodic checkpoints: every checkpoint is a savepoint this test takes, so the counts
    // at each scrape are known exactly.
    let dir = setup(
        "fail-after-records = 1500\n\n[restart]\nattempts = 2\ndelay = \"50ms\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let mut job = Job::start(dir.path(), &[]);
    let line = job.wait_for("the metrics address", |l| {
        l.starts_with("cairn: metrics at ")
    });
    let url = line.trim_start_matches("cairn: metrics at ").to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/metrics"),
        "{url}"
    );
    assert!(!url.starts_with("http://127.0.0.1:0/"), "{url}");

    job.wait_for("the injected failure", |l| {
        l.starts_with("attempt 1 failed: ")
    });
    let mut state_bytes = 0;
    for _ in 0..2 {
        let out = ctl_ok(dir.path(), &["savepoint", "--json"]);
        state_bytes += json_of(&out)["state_bytes"].as_u64().unwrap();
    }
    let (text, m) = scrape(&url);
    // OpenMetrics for a scraper that asks for it, as Prometheus does.
    let mut om = ureq::get(&url)
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .call()
        .unwrap();
    let om_type = om
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        om_type.starts_with("application/openmetrics-text"),
        "{om_type}"
    );
    let om_text = om.body_mut().read_to_string().unwrap();
    assert!(om_text.ends_with("# EOF\n"), "{om_text}");
    assert!(
        om_text.contains("cairn_checkpoints_completed_total 2"),
        "{om_text}"
    );
    let at = |name: &str| sample(&m, name, &[]);
    assert!(
        text.contains("# TYPE cairn_checkpoints_completed_total counter"),
        "{text}"
    );
    assert_eq!(at("cairn_checkpoints_completed_total"), 2.0, "{text}");
    assert_eq!(at("cairn_checkpoints_failed_total"), 0.0, "{text}");
    assert_eq!(at("cairn_checkpoints_expired_total"), 0.0, "{text}");
    assert_eq!(at("cairn_restarts_total"), 1.0, "{text}");
    assert_eq!(at("cairn_attempt"), 2.0, "{text}");
    assert_eq!(at("cairn_checkpoint_duration_seconds_count"), 2.0, "{text}");
    assert_eq!(at("cairn_checkpoint_size_bytes_count"), 2.0, "{text}");
    assert_eq!(
        at("cairn_checkpoint_size_bytes_sum"),
        state_bytes as f64,
        "{text}"
    );
    assert!(at("cairn_checkpoint_duration_seconds_sum") > 0.0, "{text}");
    // Each keyed task aligned each savepoint's barrier once.
    assert_eq!(
        at("cairn_checkpoint_alignment_seconds_count"),
        2.0 * f64::from(PARALLELISM),
        "{text}"
    );
    let commits = sample(
        &m,
        "cairn_plugin_call_duration_seconds_count",
        &[("call", "commit"), ("outcome", "ok")],
    );
    assert_eq!(commits, 2.0, "{text}");
    let records_in = at("cairn_records_in_total");
    assert!(records_in > 1500.0, "{text}");
    assert!(at("cairn_records_out_total") >= 0.0, "{text}");
    assert!(at("cairn_last_checkpoint_age_seconds") >= 0.0, "{text}");
    assert_eq!(
        sample(
            &m,
            "cairn_job_info",
            &[("job_id", "it"), ("job_kind", "keyed-counter")]
        ),
        1.0,
        "{text}"
    );

    // The scrape agrees with the summary: the stop's savepoint is the third checkpoint, the
    // failover the one restart, and the records only grew.
    let out = ctl_ok(dir.path(), &["stop", "--savepoint", "--json"]);
    let summary = json_of(&out)["summary"].clone();
    assert_eq!(summary["checkpoints_completed"], 3, "{summary}");
    assert_eq!(summary["checkpoints_failed"], 0, "{summary}");
    assert_eq!(summary["attempts"], 2, "{summary}");
    assert!(
        summary["records_processed"].as_f64().unwrap() >= records_in,
        "{summary}"
    );
    let (printed, _) = job.finish();
    assert_eq!(printed, summary);
}

/// Whether this process may make a second user and run `cairn` as it (root only). A user who
/// is not root cannot run a process as another user, so the two tests that need one say so and
/// check nothing; `.ci/run` (as root) sets `CAIRN_TEST_REQUIRE_SECOND_USER=1`, which turns
/// that into a failure, so CI never passes without them.
fn can_switch_users(what: &str) -> bool {
    if cairn_host::control::euid() == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CAIRN_TEST_REQUIRE_SECOND_USER").is_none(),
        "CAIRN_TEST_REQUIRE_SECOND_USER is set, but this test runs {what} (useradd, setpriv) \
         and so must run as root"
    );
    eprintln!(
        "not run: this test runs {what} (useradd, setpriv), which needs root; \
         the socket's 0700 directory and 0600 mode still apply"
    );
    false
}

/// The uid and gid of a user other than root, made if missing.
fn second_user() -> (u32, u32) {
    const NAME: &str = "cairn-ctl-test";
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, NAME]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if id("-u").is_none() {
        let status = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                NAME,
            ])
            .status()
            .expect("run useradd");
        // 9: made meanwhile by another process.
        assert!(
            status.success() || status.code() == Some(9),
            "useradd {NAME}: {status}"
        );
    }
    (
        id("-u").expect("the user's uid"),
        id("-g").expect("its gid"),
    )
}

/// Run `cairn ARGS` in `dir` as `uid`:`gid`.
fn ctl_as(uid: u32, gid: u32, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={uid}"),
        &format!("--regid={gid}"),
        "--clear-groups",
        "--",
        env!("CARGO_BIN_EXE_cairn"),
    ])
    .args(args)
    .current_dir(dir)
    .env("XDG_RUNTIME_DIR", dir.join("run"))
    .env_remove("RUST_LOG");
    cmd.output().expect("run setpriv")
}

#[test]
fn the_control_socket_refuses_another_user() {
    // The job runs as this user; the client must run as another one, which needs root.
    if !can_switch_users("a client as a second user") {
        return;
    }
    let (uid, gid) = second_user();
    assert_ne!(uid, 0);
    let dir = setup("");
    // The second user may read the config and reach the runtime directory: what stops it is
    // the socket's directory, the socket's mode and the job's check of its peer.
    crate::util::set_mode(dir.path(), 0o755);
    crate::util::set_mode(&dir.path().join("cairn.toml"), 0o644);
    crate::util::set_mode(&dir.path().join("run"), 0o755);
    let job = Job::start(dir.path(), &[]);
    let socket = job.socket.clone();
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "the socket's mode");
    assert_eq!(meta.uid(), 0);
    let socket_dir = socket.parent().unwrap();
    assert_eq!(
        std::fs::metadata(socket_dir).unwrap().mode() & 0o777,
        0o700,
        "the socket directory's mode"
    );
    let refused = |what: &str, expect: &str| {
        for args in [
            &["status", "--json"][..],
            &["cancel", "--json"],
            &["savepoint", "--json"],
        ] {
            let out = ctl_as(uid, gid, dir.path(), args);
            assert!(!out.status.success(), "{what}: {args:?} was served");
            let err = json_of(&out)["error"]["message"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(err.contains(expect), "{what}: {args:?}: {err}");
        }
        // The job runs on, untouched, and serves its own user.
        let out = ctl_ok(dir.path(), &["status", "--json"]);
        assert_eq!(json_of(&out)["phase"], "running", "{what}");
    };
    // As the job leaves them: the directory (0700) is closed to others.
    refused(
        "directory 0700",
        "permission denied connecting to the control socket",
    );
    // With the directory opened, the socket's own mode (0600) refuses the connection.
    crate::util::set_mode(socket_dir, 0o755);
    refused(
        "socket 0600",
        "permission denied connecting to the control socket",
    );
    // With the socket's mode widened too, the job checks who connected (SO_PEERCRED).
    crate::util::set_mode(&socket, 0o666);
    refused(
        "socket 0666",
        "permission denied: this job's control socket serves only uid 0",
    );
    ctl_ok(dir.path(), &["cancel"]);
    let (summary, _) = job.finish();
    assert_eq!(summary["status"], "stopped");
    assert_eq!(summary["final_savepoint"], Value::Null, "{summary}");
}

#[test]
fn a_metrics_port_in_use_is_a_one_line_error_at_start() {
    // Held by this test for as long as the job tries to listen on it.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let dir = setup(&format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let out = ctl(dir.path(), &["run", "--records", "1000"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "error: metrics.listen = \"127.0.0.1:{port}\": cannot listen there: "
        )) && last.contains("another process holds the port"),
        "{err}"
    );
    assert!(
        !dir.path()
            .join("checkpoints")
            .join("it")
            .join("chk-1")
            .exists(),
        "the job ran"
    );
    drop(holder);
}

#[test]
fn a_second_run_of_a_config_is_refused_and_a_killed_jobs_socket_is_replaced() {
    let dir = setup("\n[checkpointing]\ninterval = \"200ms\"\n");
    let mut job = Job::start(dir.path(), &[]);
    let out = ctl(dir.path(), &["run", "--records", "1000"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // Refused in one line that names the process running the job (whichever guard refuses
    // first: the control socket's lock here, or the job's lease in its storage).
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains(&job.pid().to_string()),
        "{err}"
    );
    // The first job is untouched.
    job.wait_for("a completed checkpoint", |l| {
        crate::util::completed_checkpoint(l).is_some()
    });
    let out = ctl_ok(dir.path(), &["status", "--json"]);
    assert_eq!(json_of(&out)["phase"], "running");

    // kill -9 leaves the socket behind; the commands say so, and the next run replaces it.
    let socket = job.socket.clone();
    let mut child = job.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(socket.exists(), "a killed job cannot remove its socket");
    let out = ctl(dir.path(), &["status"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("was left by a job that ended without removing it (killed?)")
            && err.lines().count() == 1,
        "{err}"
    );
    let again = Job::start(dir.path(), &["--from", "latest"]);
    assert_eq!(again.socket, socket);
    let out = ctl_ok(dir.path(), &["status", "--json"]);
    assert_eq!(json_of(&out)["pid"], again.pid());
    ctl_ok(dir.path(), &["cancel"]);
    again.finish();
}

#[test]
fn a_job_refuses_a_peer_that_is_not_its_user_even_root() {
    // The job runs as the second user; this test (root) is the other user. Root gets past
    // every file mode, so what refuses it is the job's check of its peer.
    if !can_switch_users("a job as a second user") {
        return;
    }
    let (uid, gid) = second_user();
    let dir = setup("");
    crate::util::set_mode(dir.path(), 0o755);
    for p in [dir.path().to_path_buf(), dir.path().join("run")] {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
    }
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={uid}"),
        &format!("--regid={gid}"),
        "--clear-groups",
        "--",
        env!("CARGO_BIN_EXE_cairn"),
        "run",
        "--json",
    ])
    .current_dir(dir.path())
    .env("XDG_RUNTIME_DIR", dir.path().join("run"))
    .env_remove("RUST_LOG");
    let job = Job::spawn(cmd, dir.path());
    let meta = std::fs::symlink_metadata(&job.socket).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o600));
    // `cairn` as root will not use a directory of another user...
    let out = ctl(dir.path(), &["status"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "it belongs to uid {uid}, not to this user (uid 0)"
        )),
        "{err}"
    );
    // ...and a connection made by hand is refused by the job.
    for request in [
        r#"{"version":1,"request":"status"}"#,
        r#"{"version":1,"request":"cancel"}"#,
    ] {
        let mut stream = std::os::unix::net::UnixStream::connect(&job.socket).unwrap();
        std::io::Write::write_all(&mut stream, format!("{request}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        BufReader::new(&stream).read_line(&mut reply).unwrap();
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply["reply"], "error", "{reply}");
        assert_eq!(
            reply["error"],
            format!("permission denied: this job's control socket serves only uid {uid}"),
            "{reply}"
        );
    }
    // The job's own user controls it.
    let out = ctl_as(uid, gid, dir.path(), &["cancel", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (summary, _) = job.finish();
    assert_eq!(summary["status"], "stopped");
}

#[test]
fn expired_checkpoints_are_counted_by_metrics_and_status() {
    // Every snapshot stream hangs in close(), so no task acknowledges and every checkpoint
    // expires after the timeout; failures are tolerated, so the job runs on.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let config = format!(
        "[storage]\npath = {:?}\n[storage.options]\nhang-in = \"close\"\n\n\
         [checkpointing]\ninterval = \"100ms\"\ntimeout = \"300ms\"\ntolerable-failures = 1000\n\n\
         [job]\nid = \"hangs\"\nkeys = 10\nrate = 5000\n\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
        crate::util::lib("cairn-fixture-hanging")
            .display()
            .to_string()
    );
    std::fs::write(dir.path().join("cairn.toml"), config).unwrap();
    let mut job = Job::start(dir.path(), &[]);
    let line = job.wait_for("the metrics address", |l| {
        l.starts_with("cairn: metrics at ")
    });
    let url = line.trim_start_matches("cairn: metrics at ").to_string();
    for n in 0..2 {
        job.wait_for(&format!("expiry {}", n + 1), |l| {
            l.contains("checkpoint failed: expired before every task acknowledged it")
        });
    }
    let (text, m) = scrape(&url);
    let at = |name: &str| sample(&m, name, &[]);
    let expired = at("cairn_checkpoints_expired_total");
    assert!(expired >= 2.0, "{text}");
    assert!(at("cairn_checkpoints_failed_total") >= expired, "{text}");
    assert_eq!(at("cairn_checkpoints_completed_total"), 0.0, "{text}");
    assert_eq!(at("cairn_checkpoint_duration_seconds_count"), 0.0, "{text}");
    assert!(
        sample(
            &m,
            "cairn_plugin_call_duration_seconds_count",
            &[("call", "begin_checkpoint"), ("outcome", "ok")]
        ) >= 2.0,
        "{text}"
    );
    let out = ctl_ok(dir.path(), &["status", "--json"]);
    let s = json_of(&out);
    assert!(s["checkpoints_expired"].as_f64().unwrap() >= expired, "{s}");
    assert_eq!(s["checkpoints_completed"], 0, "{s}");
    assert_eq!(s["last_checkpoint"], Value::Null, "{s}");
    assert!(
        s["last_failure"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{s}"
    );
    assert_eq!(
        s["metrics_url"],
        url.as_str(),
        "status names the metrics endpoint"
    );
    ctl_ok(dir.path(), &["cancel"]);
    let (summary, _) = job.finish();
    assert_eq!(summary["checkpoints_completed"], 0, "{summary}");
    assert!(
        summary["checkpoints_failed"].as_f64().unwrap() >= expired,
        "{summary}"
    );
}

#[test]
fn a_stop_whose_savepoint_fails_leaves_the_job_running() {
    let dir = setup("");
    // No savepoint target anywhere: the savepoint is declined.
    let config = dir.path().join("cairn.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[savepoints]\ndir = \"savepoints\"\n", ""),
    )
    .unwrap();
    let job = Job::start(dir.path(), &[]);
    for args in [&["savepoint"][..], &["stop", "--savepoint"]] {
        let out = ctl(dir.path(), args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("error: savepoint ")
                && err.contains("has no target")
                && err.lines().count() == 1,
            "{args:?}: {err}"
        );
        if args[0] == "stop" {
            assert!(err.contains("the job keeps running"), "{err}");
        }
        let out = ctl_ok(dir.path(), &["status", "--json"]);
        assert_eq!(json_of(&out)["phase"], "running", "{args:?}");
    }
    // With a target it works, and the job stops.
    let out = ctl_ok(
        dir.path(),
        &["stop", "--savepoint", "--target", "sp", "--json"],
    );
    let pointer = json_of(&out)["savepoint"]["pointer"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        Path::new(&pointer).starts_with(dir.path().join("sp")),
        "{pointer}"
    );
    let (summary, _) = job.finish();
    assert_eq!(summary["final_savepoint"], pointer.as_str());
}
