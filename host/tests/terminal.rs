//! Honest terminal output (issue 14.4), through the real binary with its output in pipes: no
//! colour codes in a pipe, one line per failover, `-q`, the signals' exit codes and summaries
//! (a repeated SIGTERM as GNU `timeout` sends it, a second Ctrl-C), `run --from` by id and by
//! relative path naming what it restored, and tables fitted to `COLUMNS`.

use std::{path::Path, process::Command};

use crate::{
    lease::Running,
    util::{cairn, cairn_ok, dir_with_plugins, json_of, run_until_checkpoints, FS_PLUGIN},
};

/// A job on the filesystem plugin (checkpoints under `checkpoints/`, kept on cancellation),
/// with `job` appended to its `[job]` table.
fn setup(job: &str) -> tempfile::TempDir {
    let dir = dir_with_plugins(&[FS_PLUGIN]);
    let config = format!(
        "[plugins]\nsearch-path = [\"plugins\"]\n\n\
         [checkpointing]\ninterval = \"100ms\"\nexternalized-retention = \"retain-on-cancellation\"\n\n\
         [lease]\nlocal-dir = {:?}\n\n\
         [job]\nid = \"it\"\nkeys = 100\nparallelism = 2\nrate = 20000\n{job}",
        dir.path().join("locks").display().to_string()
    );
    std::fs::write(dir.path().join("cairn.toml"), config).unwrap();
    dir
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Send `signal` (`-INT`, `-TERM`) to the process; false if it is already gone.
fn send(signal: &str, pid: u32) -> bool {
    Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn logs_written_into_a_pipe_carry_no_colour_codes() {
    let dir = setup("");
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["run", "--records", "2000"])
        .env("RUST_LOG", "debug")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.lines().any(|l| l.contains("DEBUG")),
        "no log lines:\n{err}"
    );
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe:\n{err:?}");
}

#[test]
fn a_failover_is_reported_in_one_line() {
    let dir = setup("fail-after-records = 1000\n\n[restart]\nattempts = 2\ndelay = \"10ms\"\n");
    let out = cairn_ok(&["run", "--records", "4000"], dir.path());
    let err = stderr(&out);
    let about: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("injected failure"))
        .collect();
    assert_eq!(about.len(), 1, "{err}");
    assert!(about[0].starts_with("attempt 1 failed: "), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" after 2 attempts: "), "{text}");
}

#[test]
fn quiet_keeps_checkpoint_and_progress_lines_out_and_plurals_are_right() {
    let dir = setup("");
    let out = cairn_ok(&["run", "-q", "--records", "20000", "--json"], dir.path());
    let summary = json_of(&out);
    assert!(
        summary["checkpoints_completed"].as_u64().unwrap() >= 1,
        "{summary}"
    );
    let err = stderr(&out);
    assert!(err.trim().is_empty(), "-q printed:\n{err}");
    // One attempt is "1 attempt", never "1 attempt(s)".
    let text = String::from_utf8_lossy(&cairn_ok(&["run", "--records", "10"], dir.path()).stdout)
        .into_owned();
    assert!(text.contains("' finished after 1 attempt: "), "{text}");
    assert!(!text.contains("(s)"), "{text}");
}

#[test]
fn a_repeated_sigterm_as_timeout_sends_it_still_stops_with_the_summary() {
    let dir = setup("");
    let mut run = Running::start(&["run", "--json"], dir.path());
    run.wait_for_checkpoints(1);
    // GNU `timeout` signals the process, then its whole process group: SIGTERM twice.
    let pid = run.child.id();
    assert!(send("-TERM", pid));
    send("-TERM", pid);
    let (status, summary, log) = run.finish();
    assert_eq!(status.code(), Some(143), "{log}");
    assert_eq!(summary["job_id"], "it", "no summary: {summary}\n{log}");
    assert!(
        summary["checkpoints_completed"].as_u64() >= Some(1),
        "{summary}"
    );
    assert!(!log.contains("error"), "{log}");
}

#[test]
fn a_second_ctrl_c_ends_the_run_with_one_line_and_exit_130() {
    let dir = setup("");
    let mut run = Running::start(&["run", "--json"], dir.path());
    run.wait_for_checkpoints(1);
    let pid = run.child.id();
    assert!(send("-INT", pid));
    run.wait_for("the stopping line", |l| {
        l == "cairn: stopping (Ctrl-C again to exit at once)"
    });
    send("-INT", pid);
    let (status, summary, log) = run.finish();
    assert_eq!(status.code(), Some(130), "{log}");
    let forced: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("interrupted while stopping"))
        .collect();
    match forced[..] {
        // The stop was over before the second Ctrl-C came: the summary went out as usual.
        [] => assert_eq!(summary["job_id"], "it", "no summary: {summary}\n{log}"),
        [line] => assert!(
            line.starts_with("cairn: job 'it' interrupted while stopping, exiting now: ")
                && line.contains(" records, ")
                && line.contains("latest checkpoint #"),
            "{line}"
        ),
        _ => panic!("more than one line:\n{log}"),
    }
}

/// The id and pointer of the job's newest retained checkpoint.
fn latest(dir: &Path) -> (u64, String) {
    let all = json_of(&cairn_ok(&["checkpoints", "list", "--json"], dir));
    let last = all["checkpoints"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    (
        last["id"].as_u64().unwrap(),
        last["pointer"].as_str().unwrap().to_string(),
    )
}

#[test]
fn from_takes_an_id_or_a_relative_path_and_says_what_it_restored() {
    let dir = setup("");
    run_until_checkpoints(&["run"], dir.path(), 2);
    let (id, pointer) = latest(dir.path());
    let restored = format!("cairn: restored checkpoint {id} from {pointer}");
    let out = cairn_ok(
        &["run", "--from", &id.to_string(), "--duration", "200ms"],
        dir.path(),
    );
    assert!(
        stderr(&out).lines().any(|l| l == restored),
        "{}",
        stderr(&out)
    );

    let (id, pointer) = latest(dir.path());
    let relative = Path::new(&pointer)
        .strip_prefix(dir.path().canonicalize().unwrap())
        .or_else(|_| Path::new(&pointer).strip_prefix(dir.path()))
        .unwrap()
        .display()
        .to_string();
    assert!(relative.starts_with("checkpoints/"), "{relative}");
    let out = cairn_ok(
        &["run", "--from", &relative, "--duration", "200ms"],
        dir.path(),
    );
    let restored = format!("cairn: restored checkpoint {id} from ");
    assert!(
        stderr(&out)
            .lines()
            .any(|l| l.starts_with(&restored) && l.ends_with(&format!("chk-{id}"))),
        "{}",
        stderr(&out)
    );

    for (arg, says) in [
        (
            "999",
            "error: --from 999: job 'it' has no completed checkpoint 999",
        ),
        ("nope", "error: --from nope: not a checkpoint or savepoint"),
    ] {
        let out = cairn(&["run", "--from", arg], dir.path());
        assert!(!out.status.success());
        let err = stderr(&out);
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(errors[0].starts_with(says), "{err}");
        assert!(!errors[0].contains("invalid config"), "{err}");
    }
}

#[test]
fn tables_have_headers_and_fit_columns() {
    let dir = setup("");
    run_until_checkpoints(&["run"], dir.path(), 1);
    for (args, header) in [
        (&["plugins", "list"][..], "NAME"),
        (&["checkpoints", "list"], "ID"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(args)
            .env("COLUMNS", "60")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let table: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with(header))
            .take_while(|l| !l.is_empty())
            .collect();
        assert!(
            table.len() >= 2,
            "{args:?}: no table with a header:\n{text}"
        );
        for line in &table {
            assert!(line.chars().count() <= 60, "{args:?}: {line:?} in\n{text}");
        }
    }
}

#[test]
fn an_unreachable_endpoint_is_one_error_that_names_the_refused_connection() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens there, so every connection is refused at once.
    let options = "url = \"s3://bucket/prefix\"\nendpoint = \"http://127.0.0.1:1\"\n\
                   region = \"us-east-1\"\naccess-key-id = \"a\"\nsecret-access-key = \"b\"\n\
                   allow-http = true\nmax-retries = 1\n";
    std::fs::write(dir.path().join("options.toml"), options).unwrap();
    std::fs::write(
        dir.path().join("cairn.toml"),
        format!(
            "[checkpointing]\ninterval = \"1s\"\n\n[storage]\npath = {:?}\n\n[storage.options]\n{options}\n[job]\nid = \"it\"\n",
            crate::util::lib("cairn-storage-object-cdylib")
                .display()
                .to_string()
        ),
    )
    .unwrap();
    let plugin = crate::util::lib("cairn-storage-object-cdylib");
    let plugin = plugin.to_str().unwrap();
    for args in [
        &["plugins", "verify", "--options", "options.toml", plugin][..],
        &["checkpoints", "list"],
        &["run", "--records", "10"],
    ] {
        let out = cairn(args, dir.path());
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("FAIL"), "{args:?} ran the cases:\n{text}");
        // `run` says what it starts first; nothing else but the one error.
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("cairn: "))
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(lines[0].starts_with("error: "), "{args:?}: {err}");
        assert_eq!(
            lines[0].matches("connection refused").count(),
            1,
            "{args:?}: {err}"
        );
    }
}

#[test]
fn on_a_terminal_log_lines_print_above_the_progress_bar() {
    let dir = setup("");
    // util-linux `script` runs the command on a pseudo-terminal, so the bar is drawn.
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("{} run --records 30000", env!("CARGO_BIN_EXE_cairn")),
            "/dev/null",
        ])
        .env("RUST_LOG", "cairn_host=debug")
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("util-linux `script` runs the command on a pseudo-terminal");
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{screen}");
    let mut under_the_bar = 0;
    for line in screen.split('\n').filter(|l| l.contains("DEBUG")) {
        // What is left on the terminal's line: the text after the last carriage return.
        let last = line
            .trim_end_matches('\r')
            .rsplit('\r')
            .next()
            .unwrap_or("");
        let shown = crate::util::without_ansi(last);
        assert!(
            shown.starts_with("20") && shown.contains("DEBUG"),
            "a log line drawn into the bar: {line:?}"
        );
        if line.contains(" records (") || line.contains("\u{1b}[2K") {
            under_the_bar += 1;
        }
    }
    assert!(
        under_the_bar >= 1,
        "no log line came while the bar was shown:\n{screen:?}"
    );
}
