//! The object-store plugin through the real `dlopen` path, against real servers on 127.0.0.1:
//! SeaweedFS for `s3://` (`cairn_harness::s3`) and Azurite for `az://` (`cairn_harness::azure`).
//! On each: the conformance suite, the conditional-create commit between two writers, and
//! `cairn run` checkpointing into the bucket (container) and resuming from it with exact
//! counts. On S3 also: `file://` and `memory://`, a server killed in the middle of a run, the
//! storage bench and dropped multipart uploads. On `gs://`: what the GCS emulator
//! (fake-gcs-server, `cairn_harness::gcs`) can and cannot serve to the plugin.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::{mpsc, Arc, Barrier},
    time::{Duration, Instant},
};

use cairn_harness::{
    azure::AzureServer,
    gcs::GcsServer,
    s3::{unique_prefix, S3Server},
};
use cairn_host::runtime::keyed_counter;
use cairn_plugin_api::{ErrorKind, StorageError};
use serde_json::Value;

use crate::util::{
    assert_skipped, cairn, cairn_ok, json_of, lib, load, run_until_checkpoints, without_ansi,
};

const PACKAGE: &str = "cairn-storage-object-cdylib";
const KEYS: u64 = 500;
const PARALLELISM: u32 = 2;

/// `cairn plugins verify --json` on the object-store plugin with `options` (none: its test
/// options): the output and its report.
fn verify_report(options: Option<&str>) -> (std::process::Output, Value) {
    let dir = tempfile::tempdir().unwrap();
    let so = lib(PACKAGE);
    let mut args = vec![
        "plugins".to_string(),
        "verify".to_string(),
        so.display().to_string(),
        "--json".to_string(),
    ];
    if let Some(options) = options {
        std::fs::write(dir.path().join("options.toml"), options).unwrap();
        args.extend(["--options".to_string(), "options.toml".to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cairn(&args, dir.path());
    let doc = json_of(&out);
    (out, doc)
}

/// `cairn plugins verify` on the object-store plugin with `options` (none: its test options);
/// the report, after checking that every case passed or was skipped for a reason.
fn verify_passes(options: Option<&str>, what: &str) -> Value {
    let (out, doc) = verify_report(options);
    let cases = doc["cases"].as_array().expect("a report");
    let failed: Vec<String> = cases
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| format!("{}: {}", c["name"], c["reason"]))
        .collect();
    assert!(
        out.status.success() && failed.is_empty(),
        "{what}: {failed:#?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count = |s: &str| cases.iter().filter(|c| c["status"] == s).count();
    eprintln!(
        "object-store on {what}: {} cases: {} passed, {} failed, {} skipped",
        cases.len(),
        count("pass"),
        count("fail"),
        count("skip")
    );
    doc
}

fn status<'a>(doc: &'a Value, case: &str) -> &'a str {
    doc["cases"]
        .as_array()
        .and_then(|cases| cases.iter().find(|c| c["name"] == case))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_else(|| panic!("no case {case} in {doc}"))
}

/// The conformance suite on a cloud URL (`options` point at a real server): every case of
/// substance passes; only "no default savepoint target" is skipped, because a default is
/// configured.
fn conformance_passes_on_a_cloud(options: &str, what: &str) {
    let doc = verify_passes(Some(options), what);
    assert_eq!(doc["plugin"]["name"], "object-store");
    for case in [
        "round_trips_at_every_size",
        "dropped_stream_leaves_nothing",
        "corruption_is_detected",
        "commit_is_atomic_and_once",
        "resolves_from_a_fresh_instance",
        "dispose_on_failure_is_idempotent",
        "savepoint_to_custom_target",
        "savepoint_to_default_target",
        "lease_is_compare_and_swap",
        "lease_race_has_one_winner",
        "eight_threads_hundred_streams",
    ] {
        assert_eq!(status(&doc, case), "pass", "{what}: {case}");
    }
    assert_skipped(&doc, &["savepoint_without_any_target"], what);
}

#[test]
fn the_conformance_suite_passes_against_s3() {
    let options = S3Server::get()
        .endpoint()
        .plugin_options(&unique_prefix("verify"), "");
    conformance_passes_on_a_cloud(&options, "s3:// (SeaweedFS)");
}

#[test]
fn the_conformance_suite_passes_against_azurite() {
    let options = AzureServer::get()
        .endpoint()
        .plugin_options(&unique_prefix("verify"), "");
    conformance_passes_on_a_cloud(&options, "az:// (Azurite)");
}

#[test]
fn the_conformance_suite_passes_against_azurite_named_by_a_connection_string() {
    let options = AzureServer::get()
        .endpoint()
        .plugin_options_with_connection_string(&unique_prefix("verify-cs"), "");
    conformance_passes_on_a_cloud(&options, "az:// (Azurite, connection-string)");
}

#[test]
fn the_conformance_suite_passes_on_file_and_memory_urls() {
    // No options: the manifest's test options, a file:// URL in the scratch directory.
    let doc = verify_passes(None, "file://");
    assert_eq!(status(&doc, "resolves_from_a_fresh_instance"), "pass");
    assert_eq!(status(&doc, "round_trips_at_every_size"), "pass");
    assert_skipped(&doc, &["savepoint_without_any_target"], "file://");
    // memory:// is not persistent, so a fresh instance sees nothing; without a default savepoint
    // target, the "neither" case runs.
    let doc = verify_passes(Some("url = \"memory://ckpt\"\n"), "memory://");
    assert_eq!(status(&doc, "resolves_from_a_fresh_instance"), "skip");
    assert_eq!(status(&doc, "savepoint_without_any_target"), "pass");
    assert_eq!(status(&doc, "corruption_is_detected"), "pass");
    assert_skipped(
        &doc,
        &[
            "resolves_from_a_fresh_instance",
            "savepoint_to_default_target",
        ],
        "memory://",
    );
}

/// Two instances (as two hosts would have) commit the same checkpoint at the same moment, eight
/// times: each time exactly one wins, the other gets `AlreadyExists`, and the winner's metadata
/// is what resolves.
fn two_writers_race(options: &str) {
    let plugin = load(PACKAGE);
    // Two instances, as two hosts would have.
    let a = plugin.open(options).unwrap();
    let b = plugin.open(options).unwrap();
    for id in 1..=8u64 {
        let la = a.job("race").unwrap().begin_checkpoint(id).unwrap();
        let lb = b.job("race").unwrap().begin_checkpoint(id).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let (ra, rb) = std::thread::scope(|s| {
            let ba = barrier.clone();
            let ta = s.spawn(move || {
                ba.wait();
                la.commit(b"writer a")
            });
            let tb = s.spawn(move || {
                barrier.wait();
                lb.commit(b"writer b")
            });
            (ta.join().unwrap(), tb.join().unwrap())
        });
        let (winner, loser) = match (&ra, &rb) {
            (Ok(w), Err(e)) => (w, e),
            (Err(e), Ok(w)) => (w, e),
            other => panic!("checkpoint {id}: expected exactly one commit to win, got {other:?}"),
        };
        assert_eq!(loser.kind(), ErrorKind::AlreadyExists, "{loser}");
        let resolved = a.resolve(&winner.pointer).unwrap().metadata;
        let expected: &[u8] = if ra.is_ok() { b"writer a" } else { b"writer b" };
        assert_eq!(
            resolved, expected,
            "the loser's metadata replaced the winner's"
        );
    }
}

#[test]
fn two_writers_cannot_both_commit_one_checkpoint() {
    two_writers_race(
        &S3Server::get()
            .endpoint()
            .plugin_options(&unique_prefix("race"), ""),
    );
}

#[test]
fn two_writers_cannot_both_commit_one_checkpoint_on_azurite() {
    two_writers_race(
        &AzureServer::get()
            .endpoint()
            .plugin_options(&unique_prefix("race"), ""),
    );
}

#[test]
fn two_writers_cannot_both_commit_on_azurite_named_by_use_emulator() {
    let ep = AzureServer::get().endpoint();
    assert_eq!(
        (ep.account.as_str(), ep.key.as_str()),
        (cairn_harness::azure::ACCOUNT, cairn_harness::azure::KEY),
        "use-emulator stands for Azurite's well-known account, which this server must have"
    );
    two_writers_race(&ep.plugin_options_with_emulator_defaults(&unique_prefix("race-emu"), ""));
}

/// GCS is not tested for real: no emulator the registries serve speaks enough of the XML API
/// that `object_store`'s GCS client uses (README, object-store section). This pins down how
/// far fake-gcs-server gets, so that the day it serves writes this fails and `gs://` is
/// tested like the others: the plugin reaches it on `gs://` with a custom endpoint and no
/// credentials, and listings work (the suite's preflight lists a job, and
/// `completed_savepoints_are_listed` passes), but every case that writes an object fails on
/// the XML API's `PUT /<bucket>/<object>`, which fake-gcs-server routes to its JSON upload
/// handler and refuses with `400 invalid uploadType`.
#[test]
fn gs_reaches_fake_gcs_server_which_refuses_every_xml_api_write() {
    let ep = GcsServer::get().endpoint();
    let (out, doc) = verify_report(Some(&ep.plugin_options(&unique_prefix("verify"), "")));
    let cases = doc["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("no case ran: {doc}"));
    assert_eq!(status(&doc, "completed_savepoints_are_listed"), "pass");
    let failed: Vec<&Value> = cases.iter().filter(|c| c["status"] == "fail").collect();
    assert!(
        !out.status.success() && status(&doc, "commit_is_atomic_and_once") == "fail",
        "fake-gcs-server now serves the plugin's writes: test gs:// like az:// and update the \
         README\n{doc:#}"
    );
    let put = format!("Error performing PUT {}/{}/", ep.url, ep.bucket);
    for case in &failed {
        let reason = case["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(&put)
                && reason.contains("400 Bad Request")
                && reason.contains("invalid uploadType"),
            "{} failed for another reason than the refused XML API write: {reason}",
            case["name"]
        );
    }
    eprintln!(
        "object-store on gs:// (fake-gcs-server): {} cases: {} passed, {} failed (each on PUT \
         {}/{}/<object>: 400 invalid uploadType), {} skipped",
        cases.len(),
        cases.iter().filter(|c| c["status"] == "pass").count(),
        failed.len(),
        ep.url,
        ep.bucket,
        cases.iter().filter(|c| c["status"] == "skip").count(),
    );
}

/// A job directory whose config checkpoints through the object-store plugin with `options`.
fn job_dir(options: &str, extra_checkpointing: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[storage]\npath = {:?}\n[storage.options]\n{options}\n\
         [checkpointing]\ninterval = \"100ms\"\nnum-retained = 3\n\
         externalized-retention = \"retain-on-cancellation\"\n{extra_checkpointing}\n\
         [job]\nid = \"cloud-job\"\nkeys = {KEYS}\nparallelism = {PARALLELISM}\nrate = 20000\n\
         state-bytes-per-key = \"256B\"\n",
        lib(PACKAGE).display().to_string()
    );
    std::fs::write(dir.path().join("cairn.toml"), config).unwrap();
    dir
}

fn list(dir: &Path) -> Vec<Value> {
    let out = cairn_ok(&["checkpoints", "list", "--json"], dir);
    json_of(&out)["checkpoints"].as_array().unwrap().clone()
}

/// `cairn run` checkpoints through `options` (whose checkpoints go under `url`), every handle
/// verifies, and a second run `--from latest` resumes exactly once: its `counts_sha256` is
/// that of exactly `records` records.
fn run_and_resume_from_latest(options: &str, url: &str) {
    let dir = job_dir(options, "");

    let out = run_until_checkpoints(&["run", "--json"], dir.path(), 1);
    let first = json_of(&out);
    assert!(
        first["checkpoints_completed"].as_u64().unwrap() >= 1,
        "{first}"
    );
    let records_before = first["records_counted"].as_u64().unwrap();

    let listed = list(dir.path());
    assert!(!listed.is_empty());
    let latest = listed.last().unwrap()["pointer"]
        .as_str()
        .unwrap()
        .to_string();
    let in_bucket = format!("{url}/cloud-job/chk-");
    assert!(latest.starts_with(&in_bucket), "{latest}");
    // Every stored handle reads back with its checksum.
    let out = cairn(&["checkpoints", "verify", "--json"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A second run on the same bucket resumes exactly once from the latest checkpoint.
    let records = 100_000u64;
    assert!(records > records_before * 2, "the first run went too far");
    let out = cairn_ok(
        &[
            "run",
            "--from",
            "latest",
            "--records",
            &records.to_string(),
            "--json",
        ],
        dir.path(),
    );
    let second = json_of(&out);
    assert_eq!(second["status"], "finished", "{second}");
    assert_eq!(second["restored_from"], latest.as_str(), "{second}");
    assert_eq!(second["records_counted"], records);
    assert_eq!(
        second["counts_sha256"],
        keyed_counter::counts_digest(&keyed_counter::expected_counts(KEYS, PARALLELISM, records)),
        "{second}"
    );
}

#[test]
fn run_checkpoints_into_s3_and_resumes_from_latest() {
    let ep = S3Server::get().endpoint();
    let prefix = unique_prefix("e2e");
    run_and_resume_from_latest(
        &ep.plugin_options(&prefix, ""),
        &format!("s3://{}/{prefix}", ep.bucket),
    );
}

#[test]
fn run_checkpoints_into_azurite_and_resumes_from_latest() {
    let ep = AzureServer::get().endpoint();
    let prefix = unique_prefix("e2e");
    run_and_resume_from_latest(
        &ep.plugin_options(&prefix, ""),
        &format!("az://{}/{prefix}", ep.container),
    );
}

/// The id in a line of `cairn run` that reports a failed checkpoint (`checkpoint failed: ...
/// id=N`).
fn failed_id(line: &str) -> Option<u64> {
    if !line.contains("checkpoint failed") {
        return None;
    }
    let at = line.rfind(" id=")? + " id=".len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The last lines of a log, for failure messages.
fn tail(log: &[String]) -> String {
    log[log.len().saturating_sub(30)..].join("\n")
}

#[test]
fn a_server_killed_mid_run_fails_checkpoints_and_leaves_no_partial_one() {
    // This test stops and restarts the server, so it always starts its own.
    let t0 = Instant::now();
    let step = |what: &str| eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
    let mut server = S3Server::start().unwrap_or_else(|e| panic!("no S3 server: {e}"));
    step("server up");
    let ep = server.endpoint().clone();
    let prefix = unique_prefix("kill");
    // Fail fast while the server is down: one retry, short timeouts.
    let options = ep.plugin_options(
        &prefix,
        "max-retries = 1\nretry-timeout = \"1s\"\nrequest-timeout = \"3s\"\nconnect-timeout = \"500ms\"\n",
    );
    let dir = job_dir(&options, "tolerable-failures = 1000\ntimeout = \"20s\"\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["run", "--duration", "120s", "--json"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn,cairn::plugin=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(without_ansi(&line));
        }
    });
    let mut log = Vec::new();
    let mut wait_for = |what: &str, pred: &dyn Fn(&str) -> bool| -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    log.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no {what} within 90s; cairn said, at the end:\n{}",
                    tail(&log)
                ),
            }
        }
    };

    // Two checkpoints complete, then the server dies.
    wait_for("first checkpoint", &|l| {
        crate::util::completed_checkpoint(l).is_some()
    });
    let before = crate::util::completed_checkpoint(&wait_for("second checkpoint", &|l| {
        crate::util::completed_checkpoint(l).is_some()
    }))
    .unwrap();
    step("two checkpoints");
    server.kill();
    // A few attempts fail against the dead server.
    for n in 1..=3 {
        wait_for(&format!("failed checkpoint {n} of 3"), &|l| {
            failed_id(l).is_some()
        });
    }
    step("failures seen");
    server
        .restart()
        .unwrap_or_else(|e| panic!("restarting the server: {e}"));
    step("server restarted");
    let after =
        crate::util::completed_checkpoint(&wait_for("checkpoint after the restart", &|l| {
            crate::util::completed_checkpoint(l).is_some()
        }))
        .unwrap();
    // The attempts that failed, as the job reported them: none of them completed.
    let completed: Vec<u64> = log
        .iter()
        .filter_map(|l| crate::util::completed_checkpoint(l))
        .collect();
    let mut failed_ids: Vec<u64> = log.iter().filter_map(|l| failed_id(l)).collect();
    failed_ids.sort_unstable();
    failed_ids.dedup();
    assert!(
        failed_ids.len() >= 3 && failed_ids.iter().all(|id| !completed.contains(id)),
        "failed {failed_ids:?}, completed {completed:?} (last before the kill: {before})"
    );
    step("checkpoint after restart");
    // Stop the job (SIGTERM cancels; the retained checkpoints stay).
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    for line in rx.try_iter() {
        log.push(line);
    }
    let log = log.join("\n");
    assert_eq!(
        out.status.code(),
        Some(143),
        "{}",
        &log[log.len().saturating_sub(5000)..]
    );
    step("job stopped");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        summary["checkpoints_failed"].as_u64().unwrap() >= 1,
        "{summary}"
    );
    // The plugin reported what it retried (object_store's retry events, forwarded).
    assert!(
        log.contains("backing off") && log.contains("retry 1 of 1"),
        "no retry was reported:\n{}",
        &log[log.len().saturating_sub(5000)..]
    );

    // Every failed id is neither listed nor resolvable; the checkpoint after the restart is.
    let listed: Vec<u64> = list(dir.path())
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert!(
        listed.contains(&after) || listed.iter().any(|&id| id > after),
        "{listed:?}"
    );
    let storage = load(PACKAGE).open(&options).unwrap();
    for id in &failed_ids {
        assert!(
            !listed.contains(id),
            "failed checkpoint {id} is listed: {listed:?}"
        );
        let pointer = format!("s3://{}/{prefix}/cloud-job/chk-{id}", ep.bucket);
        match storage.resolve(&pointer) {
            Err(StorageError::NotFound(_)) => {}
            other => panic!("resolving failed checkpoint {id}: {other:?}"),
        }
    }
    // The CLI agrees, for the first and the last failed attempt (one process each is slow).
    for id in [failed_ids[0], failed_ids[failed_ids.len() - 1]] {
        let out = cairn(&["checkpoints", "show", &id.to_string()], dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(&format!("no completed checkpoint {id}")),
            "failed checkpoint {id} shows, or fails for another reason: {stderr}"
        );
    }
    step("failed ids checked");
    // What a crashed attempt leaves (an uncommitted location with stored state, planted here
    // so there is certainly some) is garbage, and gc removes it, with whatever the failed
    // attempts uploaded.
    let job = storage.job("cloud-job").unwrap();
    let planted = job.begin_checkpoint(after + 1000).unwrap();
    let mut stream = planted
        .create_stream(cairn_plugin_api::Scope::Exclusive)
        .unwrap();
    stream.write(&vec![7u8; 100_000]).unwrap();
    let orphan = stream
        .close_and_get_handle()
        .unwrap()
        .expect("a stored handle");
    drop(planted);
    assert!(job.list_uncommitted().unwrap().contains(&(after + 1000)));
    let out = cairn_ok(&["checkpoints", "gc", "--json"], dir.path());
    let left = job.list_uncommitted().unwrap();
    let objects = job.list_objects().unwrap();
    assert!(
        left.is_empty()
            && !objects
                .iter()
                .any(|o| orphan.describe().contains(&o.locator)),
        "uncommitted after gc: {left:?}\ngc said: {}\nobjects: {objects:?}",
        String::from_utf8_lossy(&out.stdout),
    );
    for c in list(dir.path()) {
        let out = cairn(&["checkpoints", "verify", &c["id"].to_string()], dir.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn bench_storage_compares_the_plugin_with_object_store_used_directly() {
    let server = S3Server::get();
    let options = server
        .endpoint()
        .plugin_options(&unique_prefix("bench"), "");
    let runner = crate::util::linked_runner();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s3.toml"), options).unwrap();
    // The loaded ÷ linked part measures the filesystem plugin, found in ./plugins only (a clean
    // `cargo test` puts no plugin next to the `cairn` binary; a developer's build may).
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    crate::util::copy_lib(
        "cairn-storage-fs-cdylib",
        &plugins,
        "libcairn_storage_fs.so",
    );
    std::fs::write(
        dir.path().join("cairn.toml"),
        "[plugins]\nsearch-path = [\"plugins\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["bench", "storage", "--plugin"])
        .arg(lib(PACKAGE))
        .args(["--options", "s3.toml", "--dir", ".", "--size", "12MiB"])
        .args([
            "--calls",
            "1000",
            "--rounds",
            "2",
            "--json",
            "--linked-runner",
        ])
        .arg(&runner)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let doc = json_of(&out);
    assert!(
        out.status.success(),
        "{}\n{doc:#}",
        String::from_utf8_lossy(&out.stderr)
    );
    let direct = &doc["plugin_vs_object_store"];
    assert!(direct["error"].is_null(), "{direct:#}");
    // 12 MiB with 8 MiB parts: a multipart upload on both sides.
    for figure in [
        "plugin_write_commit",
        "direct_write",
        "plugin_read",
        "direct_read",
    ] {
        assert_eq!(
            direct[figure]["size_bytes"],
            12 << 20,
            "{figure}: {direct:#}"
        );
    }
    // Ratios are reported, and judged against the target, but never asserted.
    for ratio in ["write_ratio", "read_ratio"] {
        let r = direct[ratio].as_f64().unwrap_or(-1.0);
        assert!(r.is_finite() && r > 0.0, "{ratio}: {direct:#}");
        eprintln!("object-store ÷ object_store direct, {ratio}: {r:.3} (12 MiB, debug build)");
    }
    assert!(direct["write_target_met"].is_boolean());
}

/// The multipart uploads SeaweedFS holds unfinished, from its filer (S3 lists them only with a
/// request object_store does not make): the entries of the bucket's `.uploads` folder.
fn pending_uploads(server: &S3Server) -> Vec<String> {
    let path = format!("/buckets/{}/.uploads/", server.endpoint().bucket);
    let body = server
        .filer_get(&path)
        .unwrap_or_else(|e| panic!("listing {path}: {e}"));
    if body.trim().is_empty() {
        return Vec::new();
    }
    let doc: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("the filer's listing of {path} is not JSON ({e}): {body}"));
    doc["Entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| e["FullPath"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_dropped_stream_aborts_its_multipart_upload() {
    // A server of its own, so that every unfinished upload on it is this test's.
    let server = S3Server::start().unwrap_or_else(|e| panic!("no S3 server: {e}"));
    let options = server
        .endpoint()
        .plugin_options(&unique_prefix("abort"), "part-size = \"5MiB\"\n");
    let storage = load(PACKAGE).open(&options).unwrap();
    let job = storage.job("abort").unwrap();
    let location = job.begin_checkpoint(1).unwrap();
    assert_eq!(pending_uploads(&server), Vec::<String>::new());
    // More than two parts: the stream has started a multipart upload and shipped parts.
    let mut stream = location
        .create_stream(cairn_plugin_api::Scope::Exclusive)
        .unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..12 {
        stream.write(&chunk).unwrap();
    }
    let open = pending_uploads(&server);
    assert!(
        !open.is_empty(),
        "12 MiB into a stream with 5 MiB parts started no multipart upload the filer shows"
    );
    drop(stream);
    let left = pending_uploads(&server);
    assert!(
        left.is_empty(),
        "the dropped stream's upload was not aborted: {left:?} (open before the drop: {open:?})\n{}",
        server.log_tail()
    );
    assert_eq!(job.list_objects().unwrap(), Vec::new());
}
