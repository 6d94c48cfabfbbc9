//! The `--json` contract (README, "JSON contract"), checked on every command of the `cairn`
//! binary, once on success and once on a failing input:
//!
//! - one pretty-printed object on stdout with `"version": 1` as its first field;
//! - on failure, `{"version", "error": {"kind", "message", ...}}` with a kind from the list, a
//!   one-line message, a non-zero exit, and one `error:` line on stderr;
//! - no `millis`, `seconds` or `checkpoint_id` keys anywhere, lower-case `snake_case` keys;
//! - every `*_ms` and `*_us` an integer; a `*_ms` epoch timestamp beside its RFC 3339 string;
//! - every object with a `pointer` has an `id`.
//!
//! `every_command_has_json_and_a_contract_case` lists the commands from `cairn man --out-dir`
//! (one page per command) and fails when one lacks `--json` or is not run here.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Output, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::Duration,
};

use serde_json::Value;

use crate::util::{cairn_cmd, dir_with_plugins, FS_PLUGIN, MEMORY_PLUGIN};

/// The kinds of the contract's error object (README, "JSON contract").
const KINDS: &[&str] = &[
    "usage",
    "config",
    "plugin",
    "not_found",
    "storage",
    "lease",
    "control",
    "job",
    "io",
    "internal",
];

/// Every command the tests below run, on success and on failure.
const COVERED: &[&str] = &[
    "plugins list",
    "plugins verify",
    "plugins info",
    "config check",
    "config defaults",
    "run",
    "status",
    "savepoint",
    "stop",
    "cancel",
    "checkpoints list",
    "checkpoints show",
    "checkpoints verify",
    "checkpoints delete",
    "checkpoints copy",
    "checkpoints gc",
    "bench storage",
    "bench crash",
    "bench job",
    "completions",
    "man",
];

/// Subtrees whose keys are not the contract's: config keys and plugin options as the user
/// wrote them, and a job's own JSON (a sink's state, a source's offset).
const FOREIGN_KEYS: &[&str] = &["defaults", "options", "sink", "source_offsets"];

/// The longest wait for one line of a job: a limit for a job that is stuck, not a pace.
const LINE_LIMIT: Duration = Duration::from_secs(180);

/// A directory with both bundled plugins in `plugins/`, a config that finds them, and a
/// runtime directory for control sockets (`run/`).
fn setup(extra: &str) -> tempfile::TempDir {
    let dir = dir_with_plugins(&[FS_PLUGIN, MEMORY_PLUGIN]);
    std::fs::create_dir(dir.path().join("run")).unwrap();
    std::fs::write(
        dir.path().join("cairn.toml"),
        format!(
            "[plugins]\nsearch-path = [\"plugins\"]\n\n[savepoints]\ndir = \"savepoints\"\n\n\
             [job]\nid = \"contract\"\nkeys = 100\nrate = 5000\n{extra}"
        ),
    )
    .unwrap();
    dir
}

fn cairn(dir: &Path, args: &[&str]) -> Output {
    cairn_cmd(dir, args).output().expect("run cairn")
}

fn show(args: &[&str], out: &Output) -> String {
    format!(
        "cairn {}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run `cairn ARGS` (which include `--json`); it must succeed and print a contract document.
fn ok(dir: &Path, args: &[&str]) -> Value {
    let out = cairn(dir, args);
    assert!(out.status.success(), "{}", show(args, &out));
    document(args, &out)
}

/// Run `cairn ARGS`; it must fail with the contract's error object of `kind`.
fn fails(dir: &Path, args: &[&str], kind: &str) -> Value {
    let out = cairn(dir, args);
    assert!(!out.status.success(), "{}", show(args, &out));
    let doc = document(args, &out);
    let what = show(args, &out);
    let err = doc
        .get("error")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no error object: {what}"));
    assert_eq!(
        doc.as_object().unwrap().len(),
        2,
        "version and error only: {what}"
    );
    assert!(KINDS.contains(&err["kind"].as_str().unwrap()), "{what}");
    assert_eq!(err["kind"], kind, "{what}");
    let message = err["message"].as_str().unwrap();
    assert!(
        !message.is_empty() && !message.contains('\n') && !message.starts_with("error"),
        "{what}"
    );
    for (key, value) in err {
        match key.as_str() {
            "kind" | "message" => {}
            "file" | "key" => assert!(value.is_string(), "{what}"),
            "line" | "column" => assert!(value.as_u64().is_some_and(|n| n >= 1), "{what}"),
            other => panic!("unexpected field {other} in the error object: {what}"),
        }
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error_lines = stderr.lines().filter(|l| l.starts_with("error:")).count();
    assert_eq!(error_lines, 1, "one error: line on stderr: {what}");
    assert!(
        stderr.contains(message),
        "the same message on stderr: {what}"
    );
    doc
}

/// The document on stdout, checked against the contract.
fn document(args: &[&str], out: &Output) -> Value {
    let what = show(args, out);
    let text = std::str::from_utf8(&out.stdout).unwrap();
    let doc: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {what}"));
    // Pretty-printed the one way (serde_json's, two spaces), one document, one newline. The
    // indentation of each line is compared with serde_json's pretty form of the document, not
    // the text (a float read back may print its last digit differently).
    assert!(
        text.starts_with("{\n  \"version\": 1") && text.ends_with("\n}\n"),
        "{what}"
    );
    let indents = |t: &str| -> Vec<usize> {
        t.lines()
            .map(|l| l.len() - l.trim_start_matches(' ').len())
            .collect()
    };
    assert_eq!(
        indents(text),
        indents(&serde_json::to_string_pretty(&doc).unwrap()),
        "pretty-printed with two spaces, one field or item a line: {what}"
    );
    let fields = doc
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {what}"));
    assert_eq!(
        fields.keys().next().map(String::as_str),
        Some("version"),
        "{what}"
    );
    assert_eq!(doc["version"], 1, "{what}");
    check_fields(&doc, "", &what);
    doc
}

/// The contract's rules on every key below `v` (`path` names where, for the message).
fn check_fields(v: &Value, path: &str, what: &str) {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_fields(item, &format!("{path}[{i}]"), what);
            }
        }
        Value::Object(fields) => {
            for (key, value) in fields {
                let at = format!("{path}.{key}");
                // Seconds are never a unit (rates such as `mib_per_s` are not durations).
                let seconds = key.ends_with("_s") && !key.ends_with("_per_s");
                let forbidden = ["millis", "seconds", "checkpoint_id"].contains(&key.as_str())
                    || key.ends_with("_seconds")
                    || key.ends_with("_millis")
                    || seconds;
                assert!(!forbidden, "{at}: not a contract name: {what}");
                assert!(
                    key.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                    "{at}: not snake_case: {what}"
                );
                if key.ends_with("_ms") || key.ends_with("_us") {
                    let integers = match value {
                        Value::Array(items) => items.iter().all(|i| i.is_u64()),
                        other => other.is_u64() || other.is_null(),
                    };
                    assert!(integers, "{at} = {value}: not an integer: {what}");
                }
                // An epoch timestamp (after 2001) has its RFC 3339 string beside it.
                if let (Some(stem), Some(ms)) = (key.strip_suffix("_ms"), value.as_u64()) {
                    if ms >= 1_000_000_000_000 {
                        let text = fields
                            .get(stem)
                            .and_then(Value::as_str)
                            .unwrap_or_else(|| panic!("{at} has no {stem} string: {what}"));
                        let t = humantime::parse_rfc3339(text)
                            .unwrap_or_else(|e| panic!("{path}.{stem} = {text}: {e}: {what}"));
                        let at_ms = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
                        assert_eq!(at_ms, u128::from(ms), "{at} and {stem}: {what}");
                    }
                }
                if key == "pointer" && value.is_string() {
                    assert!(
                        fields.contains_key("id"),
                        "{path} has a pointer and no id: {what}"
                    );
                }
                if !FOREIGN_KEYS.contains(&key.as_str()) {
                    check_fields(value, &at, what);
                }
            }
        }
        _ => {}
    }
}

/// A `cairn run --json` in the background, its stderr read line by line as it comes.
struct Job {
    child: Option<Child>,
    lines: Receiver<String>,
    log: Vec<String>,
}

impl Job {
    fn start(dir: &Path, args: &[&str]) -> Job {
        let mut child = cairn_cmd(dir, &[&["run", "--json"], args].concat())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cairn run");
        let (tx, lines) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut job = Job {
            child: Some(child),
            lines,
            log: Vec::new(),
        };
        job.wait_for("its control socket", |l| {
            l.starts_with("cairn: control socket at ")
        });
        job
    }

    fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) {
        loop {
            match self.lines.recv_timeout(LINE_LIMIT) {
                Ok(line) => {
                    let done = pred(&crate::util::without_ansi(&line));
                    self.log.push(line);
                    if done {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "the job did not print {what} within {LINE_LIMIT:?}:\n{}",
                    self.log.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "the job ended before printing {what}:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Wait for the job to exit; its `--json` summary, checked against the contract.
    fn finish(mut self) -> Value {
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        document(&["run", "--json", "(in the background)"], &out)
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn plugins_config_completions_and_man_follow_the_contract() {
    let dir = setup("");
    let d = dir.path();
    std::fs::write(d.join("bad.toml"), "[job]\nid = \"x\"\nkeyz = 3\n").unwrap();

    let list = ok(d, &["plugins", "list", "--json"]);
    assert_eq!(list["plugins"].as_array().unwrap().len(), 2, "{list}");
    fails(
        d,
        &["plugins", "list", "--json", "--config", "bad.toml"],
        "config",
    );

    let info = ok(d, &["plugins", "info", "memory", "--json"]);
    assert_eq!(info["name"], "memory");
    fails(d, &["plugins", "info", "nosuch", "--json"], "plugin");

    let verify = ok(
        d,
        &[
            "plugins",
            "verify",
            "memory",
            "--json",
            "--case",
            "commit_is_atomic",
        ],
    );
    let case = &verify["cases"][0];
    assert!(case["duration_ms"].is_u64(), "{verify}");
    fails(d, &["plugins", "verify", "nosuch", "--json"], "plugin");

    let check = ok(d, &["config", "check", "cairn.toml", "--json"]);
    assert_eq!(check["job"]["id"], "contract");
    let bad = fails(d, &["config", "check", "bad.toml", "--json"], "config");
    assert_eq!(bad["error"]["file"], "bad.toml", "{bad}");
    assert_eq!(bad["error"]["line"], 3, "{bad}");
    assert_eq!(bad["error"]["key"], "job.keyz", "{bad}");

    let defaults = ok(d, &["config", "defaults", "--json"]);
    assert_eq!(
        defaults["defaults"]["job"]["id"], "keyed-counter",
        "{defaults}"
    );
    assert!(defaults["toml"]
        .as_str()
        .unwrap()
        .contains("[checkpointing]"));
    // A command line clap refuses: kind usage, exit code 2.
    let out = cairn(d, &["config", "defaults", "--json", "--bogus"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&[], &out));
    fails(d, &["config", "defaults", "--json", "--bogus"], "usage");

    let bash = ok(d, &["completions", "bash", "--json"]);
    assert_eq!(bash["shell"], "bash");
    assert!(bash["script"].as_str().unwrap().contains("checkpoints"));
    fails(d, &["completions", "tcsh", "--json"], "usage");

    let man = ok(d, &["man", "--json"]);
    assert!(man["roff"].as_str().unwrap().starts_with(".ie"), "{man}");
    std::fs::write(d.join("a-file"), "").unwrap();
    fails(d, &["man", "--out-dir", "a-file/man1", "--json"], "io");

    // Storage bench: a tiny run (the figures are not the point here), and an unknown plugin.
    // The linked-in side runs in its companion executable, which a fresh clone has not built.
    let runner = crate::util::linked_runner();
    let bench = ok(
        d,
        &[
            "bench",
            "storage",
            "--plugin",
            "memory",
            "--size",
            "64KiB",
            "--chunk",
            "16KiB",
            "--calls",
            "10",
            "--rounds",
            "1",
            "--linked-runner",
            runner.to_str().unwrap(),
            "--json",
        ],
    );
    let write = &bench["plugin_vs_raw"]["plugin_write_commit"];
    assert!(write["duration_us"].is_u64(), "{bench}");
    assert_eq!(write["size_bytes"], 64 * 1024, "{bench}");
    fails(
        d,
        &["bench", "storage", "--plugin", "nosuch", "--json"],
        "plugin",
    );
}

#[test]
fn the_job_control_and_checkpoints_commands_follow_the_contract() {
    let dir = setup(
        "\n[checkpointing]\ninterval = \"100ms\"\nexternalized-retention = \"retain-on-cancellation\"\n",
    );
    let d = dir.path();
    std::fs::write(
        d.join("other.toml"),
        "[storage.options]\ndir = \"copies\"\n\n[plugins]\nsearch-path = [\"plugins\"]\n\n\
         [job]\nid = \"contract\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("noplugin.toml"),
        "[storage]\nplugin = \"nosuch\"\n\n[plugins]\nsearch-path = [\"plugins\"]\n",
    )
    .unwrap();

    // Nothing runs yet: every control command fails the same way.
    for args in [
        &["status", "--json"][..],
        &["savepoint", "--json"],
        &["stop", "--savepoint", "--json"],
        &["cancel", "--json"],
    ] {
        fails(d, args, "control");
    }
    let run = ok(
        d,
        &[
            "run",
            "--json",
            "--config",
            "other.toml",
            "--records",
            "2000",
        ],
    );
    assert_eq!(run["status"], "finished", "{run}");
    assert!(run["first_record_ms"].is_u64(), "{run}");
    fails(d, &["run", "--json", "--config", "noplugin.toml"], "plugin");

    // A job that takes a savepoint and is stopped with another.
    let mut job = Job::start(d, &[]);
    job.wait_for("a checkpoint", |l| {
        l.starts_with("checkpoint ") && l.contains(" completed in ")
    });
    let status = ok(d, &["status", "--json"]);
    assert_eq!(status["job_id"], "contract", "{status}");
    let savepoint = ok(d, &["savepoint", "--json"]);
    assert!(savepoint["completed_ms"].is_u64(), "{savepoint}");
    // gc beside a running job: refused by its lease.
    fails(d, &["checkpoints", "gc", "--json"], "lease");
    let stopped = ok(d, &["stop", "--savepoint", "--json"]);
    assert_eq!(stopped["summary"]["status"], "stopped", "{stopped}");
    let summary = job.finish();
    assert_eq!(summary["status"], "stopped", "{summary}");
    let pointer = stopped["savepoint"]["pointer"].as_str().unwrap();

    // Resumed from that savepoint and cancelled, it keeps its checkpoints
    // (retain-on-cancellation).
    let mut job = Job::start(d, &["--from", pointer]);
    job.wait_for("a checkpoint", |l| {
        l.starts_with("checkpoint ") && l.contains(" completed in ")
    });
    let cancelled = ok(d, &["cancel", "--json"]);
    assert_eq!(cancelled["status"], "stopped", "{cancelled}");
    job.finish();

    let list = ok(d, &["checkpoints", "list", "--json"]);
    let rows = list["checkpoints"].as_array().unwrap();
    let kinds: BTreeSet<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, BTreeSet::from(["checkpoint", "savepoint"]), "{list}");
    let checkpoint = rows.iter().find(|r| r["kind"] == "checkpoint").unwrap();
    let id = checkpoint["id"].as_u64().unwrap().to_string();
    assert!(checkpoint["completed_ms"].is_u64(), "{list}");
    // The text listing shows the same time (it reads the rows the JSON prints).
    let text = cairn(d, &["checkpoints", "list"]);
    let completed = checkpoint["completed"].as_str().unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains(completed),
        "{}",
        show(&["checkpoints", "list"], &text)
    );
    fails(
        d,
        &["checkpoints", "list", "--json", "--config", "noplugin.toml"],
        "plugin",
    );

    let shown = ok(d, &["checkpoints", "show", &id, "--json"]);
    assert_eq!(shown["id"].to_string(), id, "{shown}");
    assert_eq!(shown["metadata"]["id"].to_string(), id, "{shown}");
    fails(d, &["checkpoints", "show", "999", "--json"], "not_found");

    let verified = ok(d, &["checkpoints", "verify", "--json"]);
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(verified["checkpoints"][0]["id"].is_u64(), "{verified}");
    fails(d, &["checkpoints", "verify", "999", "--json"], "not_found");

    let copied = ok(
        d,
        &[
            "checkpoints",
            "copy",
            &id,
            "--to-config",
            "other.toml",
            "--json",
        ],
    );
    assert_eq!(copied["id"].to_string(), id, "{copied}");
    fails(
        d,
        &[
            "checkpoints",
            "copy",
            "999",
            "--to-config",
            "other.toml",
            "--json",
        ],
        "not_found",
    );

    let gc = ok(d, &["checkpoints", "gc", "--dry-run", "--json"]);
    assert_eq!(gc["dry_run"], true, "{gc}");

    let deleted = ok(d, &["checkpoints", "delete", &id, "--json"]);
    assert_eq!(deleted["id"].to_string(), id, "{deleted}");
    fails(d, &["checkpoints", "delete", &id, "--json"], "not_found");
}

#[test]
fn the_job_and_crash_benchmarks_follow_the_contract() {
    let dir = setup("");
    let d = dir.path();
    let job = ok(
        d,
        &[
            "bench",
            "job",
            "--plugin",
            "memory",
            "--keys",
            "200",
            "--state-bytes",
            "64B",
            "--interval",
            "100ms",
            "--checkpoints",
            "2",
            "--json",
        ],
    );
    assert_eq!(
        job["figures"]["durations_us"].as_array().unwrap().len(),
        2,
        "{job}"
    );
    fails(
        d,
        &["bench", "job", "--plugin", "nosuch", "--json"],
        "plugin",
    );
    // Options that do not go together, found after parsing: usage, with exit code 1.
    let bad = ["bench", "job", "--operator-rate", "5", "--json"];
    fails(d, &bad, "usage");
    assert_eq!(cairn(d, &bad).status.code(), Some(1));

    let crash = ok(
        d,
        &[
            "bench",
            "crash",
            "--plugin",
            "filesystem",
            "--trials",
            "1",
            "--kills",
            "1",
            "--records",
            "2000",
            "--json",
        ],
    );
    assert_eq!(crash["ok"], true, "{crash}");
    fails(
        d,
        &["bench", "crash", "--plugin", "nosuch", "--json"],
        "plugin",
    );
}

#[test]
fn every_command_has_json_and_a_contract_case() {
    let dir = tempfile::tempdir().unwrap();
    let pages = ok(
        dir.path(),
        &[
            "man",
            "--out-dir",
            &dir.path().join("man1").display().to_string(),
            "--json",
        ],
    );
    let names: Vec<String> = pages["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let file = Path::new(f.as_str().unwrap()).file_name().unwrap();
            let name = file
                .to_str()
                .unwrap()
                .strip_suffix(".1")
                .unwrap()
                .to_string();
            assert!(Path::new(f.as_str().unwrap()).is_file(), "{f}");
            name
        })
        .collect();
    // A command is a page no other page extends (`cairn-checkpoints` has `cairn-checkpoints-list`).
    let commands: BTreeSet<String> = names
        .iter()
        .filter(|n| !names.iter().any(|m| m.starts_with(&format!("{n}-"))))
        .map(|n| n.trim_start_matches("cairn-").replace('-', " "))
        .collect();
    let covered: BTreeSet<String> = COVERED.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        commands, covered,
        "commands (from the man pages) and the contract's cases"
    );
    for command in &commands {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.push("--help");
        let out = cairn(dir.path(), &args);
        assert!(out.status.success(), "{}", show(&args, &out));
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("--json"),
            "cairn {command} has no --json:\n{help}"
        );
    }
}
