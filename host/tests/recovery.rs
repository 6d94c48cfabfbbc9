//! `cairn run` when storage misbehaves or the job cannot run: a deadline on every plugin call
//! of the coordinator side, the report before the discard, a job folder that disappears, a state
//! too large for the machine.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use crate::util::{cairn, dir_with_plugins, lib, FS_PLUGIN};

/// A config on the hanging fixture, hanging in `call`, with a one-second deadline.
fn hanging(dir: &Path, call: &str, extra: &str) {
    let config = format!(
        "[storage]\npath = {:?}\n[storage.options]\nhang-in = \"{call}\"\n\n\
         [checkpointing]\ninterval = \"50ms\"\ntimeout = \"1s\"\n\n\
         [job]\nid = \"d\"\nkeys = 10\nstate-bytes-per-key = \"64B\"\nrate = 5000\n{extra}",
        lib("cairn-fixture-hanging").display().to_string()
    );
    std::fs::write(dir.join("cairn.toml"), config).unwrap();
}

fn fails_naming(args: &[&str], dir: &Path, call: &str) {
    let out = cairn(args, dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(call) && err.contains("did not return within 1s"),
        "the error does not name {call}: {err}"
    );
}

#[test]
fn a_hanging_job_or_list_completed_at_start_fails_naming_the_call() {
    for (hang, call) in [("job", "job('d')"), ("list-completed", "list_completed()")] {
        let dir = tempfile::tempdir().unwrap();
        hanging(dir.path(), hang, "");
        fails_naming(&["run", "--records", "100"], dir.path(), call);
    }
}

#[test]
fn a_hanging_resolve_at_start_fails_naming_the_call() {
    let dir = tempfile::tempdir().unwrap();
    hanging(dir.path(), "resolve", "");
    fails_naming(
        &["run", "--from", "kit:d/1", "--records", "100"],
        dir.path(),
        "resolve(kit:d/1)",
    );
}

#[test]
fn a_hanging_resolve_or_restore_read_on_failover_fails_naming_the_call() {
    for (hang, call) in [("resolve", "resolve("), ("read", "reading keyed task")] {
        let dir = tempfile::tempdir().unwrap();
        hanging(
            dir.path(),
            hang,
            "fail-after-checkpoints = 1\n\n[restart]\nattempts = 1\ndelay = \"10ms\"\n",
        );
        let out = cairn(&["run"], dir.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("attempt 1 failed: keyed task 0: injected failure"),
            "{err}"
        );
        assert!(
            err.contains(call) && err.contains("did not return within 1s"),
            "the error does not name {call}: {err}"
        );
    }
}

#[test]
fn the_summary_is_out_before_the_checkpoints_are_discarded() {
    // The plugin hangs in dispose, the discard of a finished job's checkpoints: the summary must
    // already be on stdout, so a kill -9 during the discard loses nothing that was reported.
    let dir = tempfile::tempdir().unwrap();
    hanging(dir.path(), "dispose", "");
    let config = std::fs::read_to_string(dir.path().join("cairn.toml"))
        .unwrap()
        .replace("timeout = \"1s\"", "timeout = \"10min\"");
    std::fs::write(dir.path().join("cairn.toml"), config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["run", "--records", "2000", "--json"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        let mut doc = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            doc.push_str(&line);
            doc.push('\n');
            if line == "}" {
                let _ = tx.send(doc.clone());
            }
        }
    });
    // The dispose hangs for the 10-minute deadline; without the report first, nothing would be
    // on stdout for that long.
    let doc = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("no summary while the discard hangs");
    assert!(
        child.try_wait().unwrap().is_none(),
        "cairn exited: it did not hang in dispose"
    );
    child.kill().unwrap(); // SIGKILL, in the middle of the discard
    child.wait().unwrap();
    let summary: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(summary["status"], "finished", "{summary}");
    assert_eq!(summary["records_counted"], 2000);
    assert_eq!(summary["checkpoints_kept"], false);
}

#[test]
fn a_job_folder_that_disappears_is_named_on_failover() {
    let dir = dir_with_plugins(&[FS_PLUGIN]);
    std::fs::write(
        dir.path().join("cairn.toml"),
        "[plugins]\nsearch-path = [\"plugins\"]\n\n[checkpointing]\ninterval = \"100ms\"\n\n\
         [job]\nid = \"gone\"\nkeys = 100\nrate = 5000\n\n[restart]\nattempts = 1\ndelay = \"10ms\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("run")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("checkpoint 1 completed") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "cairn ended first"
        );
    }
    // The base folder goes away and a file takes its place, so nothing can be recreated: the
    // next checkpoint fails, the job fails over, and its checkpoint is gone.
    let base = dir.path().join("checkpoints");
    std::fs::rename(&base, dir.path().join("moved")).unwrap();
    std::fs::write(&base, b"not a folder").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{rest}");
    let error = rest
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {rest}"));
    assert!(
        error.contains("the job's checkpoint folder") && error.contains("disappeared"),
        "{error}"
    );
    assert!(!error.contains("cannot restore: not found"), "{error}");
}

#[test]
fn a_state_too_large_for_the_machine_is_refused_not_aborted() {
    let dir = dir_with_plugins(&[FS_PLUGIN]);
    // About an exbibyte of state: more than any machine this runs on.
    std::fs::write(
        dir.path().join("cairn.toml"),
        "[plugins]\nsearch-path = [\"plugins\"]\n\n\
         [job]\nkeys = 1000000000000\nstate-bytes-per-key = \"1MiB\"\n",
    )
    .unwrap();
    let out = cairn(&["config", "check", "cairn.toml"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("more than this machine's"), "{err}");
    let out = cairn(&["config", "check", "cairn.toml", "--json"], dir.path());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["key"], "job.keys", "{doc}");
    assert_eq!(doc["error"]["kind"], "config");
    let out = cairn(&["run", "--records", "10"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "run must refuse, not abort: {err}"
    );
    assert!(err.contains("more than this machine's"), "{err}");
}
