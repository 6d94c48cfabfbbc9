//! `cairn run` and `cairn checkpoints`: exactly-once across failover and `kill -9`, exact
//! restore, a failing plugin driving the failure path, and the checkpoint management commands.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use cairn_host::{metadata::CheckpointMetadata, runtime::keyed_counter};
use serde_json::Value;

use crate::util::{
    cairn, cairn_ok, dir_with_plugins, json_of, kill_after_checkpoints, lib, resume_latest_exactly,
    run_until_checkpoints, FS_PLUGIN,
};

const KEYS: u64 = 500;
const PARALLELISM: u32 = 2;

/// A job directory with the filesystem plugin in `plugins/` and a config.
fn setup(extra: &str) -> tempfile::TempDir {
    let dir = dir_with_plugins(&[FS_PLUGIN]);
    let config = format!(
        "[plugins]\nsearch-path = [\"plugins\"]\n\n\
         [checkpointing]\ninterval = \"100ms\"\nnum-retained = 3\nexternalized-retention = \"retain-on-cancellation\"\n\n\
         [job]\nid = \"it\"\nkeys = {KEYS}\nparallelism = {PARALLELISM}\nrate = 20000\n{extra}"
    );
    std::fs::write(dir.path().join("cairn.toml"), config).unwrap();
    dir
}

fn expected_digest(records: u64) -> String {
    keyed_counter::counts_digest(&keyed_counter::expected_counts(KEYS, PARALLELISM, records))
}

fn list(dir: &Path) -> Vec<Value> {
    let out = cairn_ok(&["checkpoints", "list", "--json"], dir);
    json_of(&out)["checkpoints"].as_array().unwrap().clone()
}

#[test]
fn failover_restores_exactly_once() {
    let dir = setup("fail-after-records = 6000\n\n[restart]\nattempts = 2\ndelay = \"50ms\"\n");
    let out = cairn_ok(&["run", "--records", "30000", "--json"], dir.path());
    let summary = json_of(&out);
    assert_eq!(summary["status"], "finished");
    assert_eq!(summary["attempts"], 2, "{summary}");
    assert_eq!(summary["records_counted"], 30000);
    assert_eq!(summary["counts_sha256"], expected_digest(30000));
    assert!(String::from_utf8_lossy(&out.stderr).contains("injected failure in keyed task 0"));
}

#[test]
fn kill_dash_nine_then_from_latest_is_exactly_once() {
    let dir = setup("");
    let records = 60_000u64;
    // Kill without warning once two checkpoints of this run are complete.
    kill_after_checkpoints(&["run", "--records", &records.to_string()], dir.path(), 2);

    let before = list(dir.path());
    assert!(!before.is_empty());
    let latest_id = before.last().unwrap()["id"].as_u64().unwrap();
    let summary = resume_latest_exactly(dir.path(), records, latest_id, &expected_digest(records));
    // A finished job needs no checkpoints: they are discarded, as in Flink.
    assert_eq!(summary["checkpoints_kept"], false);
    assert!(list(dir.path()).is_empty());
}

/// A checkpoint's source offsets (the keyed counter's are record counts).
fn offsets(meta: &CheckpointMetadata) -> Vec<u64> {
    meta.source_offsets
        .iter()
        .map(|o| o.as_u64().expect("a record count"))
        .collect()
}

/// Counter state decoded from a checkpoint, merged over subtasks.
fn state_of(dir: &Path, id: &str) -> (CheckpointMetadata, std::collections::BTreeMap<u64, u64>) {
    // `show --json` names the fields by the JSON contract, not as they are stored: the stored
    // metadata is resolved through the filesystem plugin and decoded here.
    let out = cairn_ok(&["checkpoints", "show", id, "--json"], dir);
    let pointer = json_of(&out)["pointer"].as_str().unwrap().to_string();
    let storage = crate::util::load("cairn-storage-fs-cdylib")
        .open(&crate::util::fs_options(&dir.join("checkpoints")))
        .unwrap();
    let meta = CheckpointMetadata::decode(&storage.resolve(&pointer).unwrap().metadata).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for t in &meta.tasks {
        for h in &t.handles {
            let bytes = match h.to_handle().unwrap() {
                cairn_plugin_api::StateHandle::Inline(b) => b,
                cairn_plugin_api::StateHandle::Stored { locator, .. } => {
                    std::fs::read(dir.join("checkpoints").join(locator)).unwrap()
                }
            };
            counts.extend(keyed_counter::decode_state(&bytes).unwrap());
        }
    }
    (meta, counts)
}

#[test]
fn checkpoints_are_consistent_and_another_jobs_pointer_is_refused() {
    let dir = setup("");
    run_until_checkpoints(&["run", "--json"], dir.path(), 3);
    // Every retained checkpoint holds exactly the counts of the records before its offsets:
    // the barriers cut the stream consistently.
    for c in list(dir.path()) {
        let id = c["id"].to_string();
        let (meta, counts) = state_of(dir.path(), &id);
        assert_eq!(
            counts,
            keyed_counter::counts_at(KEYS, PARALLELISM, &offsets(&meta)),
            "checkpoint {id}"
        );
    }
    // A pointer restores that checkpoint, and a pointer of another job is refused.
    let pointer = list(dir.path()).last().unwrap()["pointer"]
        .as_str()
        .unwrap()
        .to_string();
    // Another job on the same storage (a checkpoint pointer outside a storage's base directory
    // is refused before anything is read, so the other job shares this one's).
    std::fs::write(
        dir.path().join("other.toml"),
        std::fs::read_to_string(dir.path().join("cairn.toml"))
            .unwrap()
            .replace("id = \"it\"", "id = \"other\""),
    )
    .unwrap();
    let out = cairn(
        &[
            "run",
            "--config",
            "other.toml",
            "--from",
            &pointer,
            "--records",
            "10",
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to job 'it'"), "{err}");
}

#[test]
fn restore_is_exact() {
    // One source, so a restore bounded to the checkpoint's offset adds no record.
    let dir = setup("");
    let config = std::fs::read_to_string(dir.path().join("cairn.toml")).unwrap();
    std::fs::write(
        dir.path().join("cairn.toml"),
        config.replace("parallelism = 2", "parallelism = 1"),
    )
    .unwrap();
    run_until_checkpoints(&["run"], dir.path(), 1);
    let latest = list(dir.path()).last().unwrap()["id"].to_string();
    let (meta, counts) = state_of(dir.path(), &latest);
    assert_eq!(counts, keyed_counter::counts_at(KEYS, 1, &offsets(&meta)));
    let offset = offsets(&meta)[0];
    assert!(offset > 0);
    let out = cairn_ok(
        &[
            "run",
            "--from",
            "latest",
            "--records",
            &offset.to_string(),
            "--json",
        ],
        dir.path(),
    );
    let summary = json_of(&out);
    assert!(
        summary["restored_from"]
            .as_str()
            .is_some_and(|p| p.ends_with(&format!("chk-{latest}"))),
        "{summary}"
    );
    // Bounded at the restored offset: the restore alone gives the counts, with no new record.
    assert_eq!(summary["records_counted"], offset);
    assert_eq!(
        summary["counts_sha256"],
        keyed_counter::counts_digest(&counts)
    );
}

#[test]
fn checkpoint_ids_continue_after_a_restart() {
    let dir = setup("");
    run_until_checkpoints(&["run"], dir.path(), 1);
    let first: Vec<u64> = list(dir.path())
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert!(!first.is_empty());
    run_until_checkpoints(&["run", "--from", "latest"], dir.path(), 1);
    let second: Vec<u64> = list(dir.path())
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert!(
        second.iter().max() > first.iter().max(),
        "{first:?} then {second:?}"
    );
}

#[test]
fn failover_after_from_pointer_restarts_from_that_pointer() {
    let dir = setup("");
    run_until_checkpoints(&["run"], dir.path(), 2);
    let all = list(dir.path());
    assert!(all.len() >= 2, "{all:?}");
    let oldest = all[0]["pointer"].as_str().unwrap().to_string();
    let config = std::fs::read_to_string(dir.path().join("cairn.toml")).unwrap()
        + "fail-after-records = 100\n\n[restart]\nattempts = 1\ndelay = \"10ms\"\n";
    std::fs::write(dir.path().join("cairn.toml"), config).unwrap();
    let out = cairn_ok(&["run", "--from", &oldest, "--duration", "1s"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    // The failure comes after 100 records, before this run completes a checkpoint of its own,
    // so it restarts from where it started, not from a newer checkpoint of the earlier run.
    let restart = err
        .lines()
        .find(|l| l.contains("attempt 1 failed"))
        .expect("a failover line");
    assert!(
        restart.ends_with(&format!("restarting from {oldest}")),
        "{restart}"
    );
}

#[test]
fn sigterm_with_on_sigterm_takes_a_savepoint_then_stops() {
    let dir = setup("\n[savepoints]\ndir = \"savepoints\"\non-sigterm = true\n");
    let child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["run", "--json"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let chk = dir.path().join("checkpoints").join("it");
    let started = Instant::now();
    let committed = |d: &Path| {
        std::fs::read_dir(d)
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.path().join("_metadata").is_file())
            })
            .unwrap_or(false)
    };
    while !committed(&chk) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no checkpoint after 60s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = json_of(&out);
    let savepoint = summary["final_savepoint"]
        .as_str()
        .expect("a savepoint pointer")
        .to_string();
    assert!(savepoint.contains("savepoints"), "{savepoint}");
    assert!(PathBuf::from(&savepoint).join("_metadata").is_file());
    let out = cairn_ok(&["checkpoints", "show", &savepoint, "--json"], dir.path());
    assert_eq!(json_of(&out)["metadata"]["kind"], "savepoint");
}

#[test]
fn ctrl_c_stops_promptly_even_while_the_plugin_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[storage]\npath = {:?}\n[storage.options]\nhang-in = \"commit\"\n\n\
         [checkpointing]\ninterval = \"50ms\"\n\n[job]\nid = \"hangs\"\nkeys = 10\nrate = 5000\n",
        lib("cairn-fixture-hanging").display().to_string()
    );
    std::fs::write(dir.path().join("cairn.toml"), config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("run")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Every stderr line, as it comes: the first comes after the signal handlers are installed,
    // and the fixture logs (through the host) when it starts hanging in a commit.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let first = rx.recv().expect("cairn printed nothing");
    assert!(first.starts_with("cairn: job 'hangs'"), "{first}");
    log.push(first);
    // Wait until a commit is really hanging before Ctrl-C.
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| {
                panic!(
                    "no commit started hanging within 120s; cairn said:\n{}",
                    log.join("\n")
                )
            });
        let hanging = line.contains("fixture-hanging: hanging in Commit");
        log.push(line);
        if hanging {
            break;
        }
    }
    let sent = Instant::now();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    reader.join().unwrap();
    log.extend(rx.try_iter());
    let stderr = log.join("\n");
    // The commit hangs for ever and the checkpoint timeout is 10 minutes; the job still stops,
    // because Ctrl-C abandons the hanging call rather than waiting for it.
    assert!(
        sent.elapsed() < Duration::from_secs(60),
        "took {:?}",
        sent.elapsed()
    );
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("commit was abandoned: the job is stopping"),
        "the hanging commit was not abandoned by the stop:\n{stderr}"
    );
}

#[test]
fn checkpoints_verify_names_a_flipped_byte() {
    // Enough state per counter to be stored outside the metadata (over 20 KiB).
    let dir = setup("state-bytes-per-key = \"256B\"\n");
    run_until_checkpoints(&["run"], dir.path(), 1);
    let out = cairn(&["checkpoints", "verify", "--json"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let latest = list(dir.path()).last().unwrap().clone();
    let chk = PathBuf::from(latest["pointer"].as_str().unwrap());
    let file = std::fs::read_dir(&chk)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.ends_with("_metadata"))
        .expect("a stored state file");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();
    let out = cairn(&["checkpoints", "verify", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let doc = json_of(&out);
    let name = file.file_name().unwrap().to_str().unwrap();
    let damaged: Vec<&Value> = doc["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    assert_eq!(damaged.len(), 1, "{doc}");
    let problem = damaged[0]["problems"][0].as_str().unwrap();
    assert!(
        problem.contains(name) && problem.contains("corrupt"),
        "{problem}"
    );
    // gc never touches a completed checkpoint, damaged or not.
    let before = list(dir.path()).len();
    cairn_ok(&["checkpoints", "gc", "--json"], dir.path());
    assert_eq!(list(dir.path()).len(), before);
    assert!(file.exists());
}

#[test]
fn gc_removes_orphans_and_uncommitted_checkpoints_only() {
    let dir = setup("state-bytes-per-key = \"256B\"\n");
    run_until_checkpoints(&["run"], dir.path(), 2);
    let job = dir.path().join("checkpoints").join("it");
    std::fs::create_dir(job.join("chk-9999")).unwrap();
    std::fs::write(
        job.join("chk-9999")
            .join("0123456789abcdef0123456789abcdef"),
        b"orphan",
    )
    .unwrap();
    // Directories exist while something is in them; the job may have written no SHARED state.
    std::fs::create_dir_all(job.join("shared")).unwrap();
    std::fs::write(
        job.join("shared").join("fedcba9876543210fedcba9876543210"),
        b"orphan",
    )
    .unwrap();
    let before = list(dir.path());
    let out = cairn(&["checkpoints", "gc", "--dry-run", "--json"], dir.path());
    let doc = json_of(&out);
    assert_eq!(doc["uncommitted_checkpoints"], serde_json::json!([9999]));
    assert_eq!(
        doc["orphaned_objects"].as_array().unwrap().len(),
        2,
        "{doc}"
    );
    assert!(job.join("chk-9999").exists(), "a dry run removed something");
    let out = cairn(&["checkpoints", "gc"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!job.join("chk-9999").exists());
    assert!(!job
        .join("shared")
        .join("fedcba9876543210fedcba9876543210")
        .exists());
    assert_eq!(list(dir.path()), before);
    assert!(cairn(&["checkpoints", "verify"], dir.path())
        .status
        .success());
}

#[test]
fn checkpoints_delete_removes_one_and_refuses_nonsense() {
    let dir = setup("");
    run_until_checkpoints(&["run"], dir.path(), 2);
    let ids = |dir: &Path| -> Vec<u64> {
        list(dir)
            .iter()
            .map(|c| c["id"].as_u64().unwrap())
            .collect()
    };
    let before = ids(dir.path());
    let first = before[0].to_string();
    cairn_ok(&["checkpoints", "delete", &first], dir.path());
    // Exactly that one is gone; the others are untouched.
    assert_eq!(ids(dir.path()), before[1..]);
    let out = cairn(&["checkpoints", "delete", "424242"], dir.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no completed checkpoint 424242"));
}

#[test]
fn a_failing_storage_plugin_drives_failover_until_the_job_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[storage]\npath = {:?}\n[storage.options]\npanic-in = \"commit\"\n\n\
         [checkpointing]\ninterval = \"50ms\"\ntolerable-failures = 1\n\n\
         [job]\nid = \"failing\"\nkeys = 10\nrate = 5000\n\n[restart]\nattempts = 1\ndelay = \"10ms\"\n",
        lib("cairn-fixture-panicking").display().to_string()
    );
    std::fs::write(dir.path().join("cairn.toml"), config).unwrap();
    let out = cairn(&["run", "--duration", "60s"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the job failed after 2 attempts"), "{err}");
    assert!(
        err.contains("tolerable-failures") || err.contains("panic"),
        "{err}"
    );
}

#[test]
fn no_checkpoints_with_from_latest_is_a_clear_error() {
    let dir = setup("");
    let out = cairn(&["run", "--from", "latest", "--records", "10"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--from latest: job 'it' has no completed checkpoint"),
        "{err}"
    );
}
