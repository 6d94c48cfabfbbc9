//! `cairn plugins verify` through the real loading path: the bundled plugins pass every
//! applicable case (in both savepoint configurations), and each misbehaving fixture gives its own
//! failure and a non-zero exit without crashing the host.

use std::{path::Path, process::Command};

use serde_json::Value;

use crate::util::{assert_skipped, lib};

fn verify(args: &[&str], cwd: &Path) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["plugins", "verify"])
        .args(args)
        .arg("--json")
        .current_dir(cwd)
        .output()
        .unwrap();
    let code = out
        .status
        .code()
        .expect("cairn was killed by a signal: it crashed");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (code, doc, stderr)
}

fn status<'a>(doc: &'a Value, case: &str) -> (&'a str, &'a str) {
    let c = doc["cases"]
        .as_array()
        .and_then(|cases| cases.iter().find(|c| c["name"] == case))
        .unwrap_or_else(|| panic!("no case {case} in {doc}"));
    (
        c["status"].as_str().unwrap(),
        c["reason"].as_str().unwrap_or(""),
    )
}

fn failed_cases(doc: &Value) -> Vec<String> {
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| format!("{}: {}", c["name"], c["reason"]))
        .collect()
}

#[test]
fn the_filesystem_plugin_passes_every_applicable_case() {
    let dir = tempfile::tempdir().unwrap();
    let so = lib("cairn-storage-fs-cdylib");
    let (code, doc, stderr) = verify(&[so.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{:?}\n{stderr}", failed_cases(&doc));
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["plugin"]["name"], "filesystem");
    for case in [
        "round_trips_at_every_size",
        "corruption_is_detected",
        "resolves_from_a_fresh_instance",
        "dropped_stream_leaves_nothing",
        "savepoint_to_default_target",
    ] {
        assert_eq!(status(&doc, case).0, "pass", "{case}");
    }
    // With a default savepoint directory configured, the "neither" case says why it did not run.
    let (_, why) = status(&doc, "savepoint_without_any_target");
    assert!(
        why.contains("default savepoint location is configured"),
        "{why}"
    );
    assert_skipped(&doc, &["savepoint_without_any_target"], "test options");

    // Without a default savepoint directory, the "neither" case runs and the default one skips.
    std::fs::write(
        dir.path().join("opts.toml"),
        "dir = \"{scratch}/checkpoints\"\n",
    )
    .unwrap();
    let (code, doc, stderr) = verify(
        &[so.to_str().unwrap(), "--options", "opts.toml"],
        dir.path(),
    );
    assert_eq!(code, 0, "{:?}\n{stderr}", failed_cases(&doc));
    assert_eq!(status(&doc, "savepoint_without_any_target").0, "pass");
    assert_skipped(&doc, &["savepoint_to_default_target"], "no savepoint-dir");
}

#[test]
fn the_suite_passes_at_the_edges_of_the_inline_threshold() {
    // 0 is a legal threshold (everything non-empty is stored), and so is the maximum: no case
    // may assume a threshold in between.
    let dir = tempfile::tempdir().unwrap();
    let so = lib("cairn-storage-fs-cdylib");
    for threshold in ["0", "1", "\"1MiB\""] {
        std::fs::write(
            dir.path().join("opts.toml"),
            format!("dir = \"{{scratch}}/checkpoints\"\ninline-threshold = {threshold}\n"),
        )
        .unwrap();
        let (code, doc, stderr) = verify(
            &[so.to_str().unwrap(), "--options", "opts.toml"],
            dir.path(),
        );
        assert_eq!(
            code,
            0,
            "inline-threshold = {threshold}: {:?}\n{stderr}",
            failed_cases(&doc)
        );
        assert_skipped(
            &doc,
            &["savepoint_to_default_target"],
            &format!("inline-threshold = {threshold}"),
        );
    }
}

#[test]
fn the_memory_plugin_passes_every_applicable_case() {
    let dir = tempfile::tempdir().unwrap();
    let so = lib("cairn-storage-memory-cdylib");
    let (code, doc, stderr) = verify(&[so.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{:?}\n{stderr}", failed_cases(&doc));
    // Inline-only and not persistent: the skips say why.
    let (_, why) = status(&doc, "resolves_from_a_fresh_instance");
    assert!(why.contains("persistent"), "{why}");
    assert_eq!(status(&doc, "round_trips_at_every_size").0, "pass");
    let inline_only = [
        "dropped_stream_leaves_nothing",
        "discard_is_idempotent",
        "corruption_is_detected",
    ];
    let mut expected = inline_only.to_vec();
    expected.extend([
        "resolves_from_a_fresh_instance",
        "savepoint_without_any_target",
    ]);
    assert_skipped(&doc, &expected, "test options");

    // With a checkpoint directory its metadata persists, so a fresh instance resolves it.
    std::fs::write(
        dir.path().join("opts.toml"),
        "checkpoint-dir = \"{scratch}/meta\"\n",
    )
    .unwrap();
    let (code, doc, stderr) = verify(
        &[so.to_str().unwrap(), "--options", "opts.toml"],
        dir.path(),
    );
    assert_eq!(code, 0, "{:?}\n{stderr}", failed_cases(&doc));
    assert_eq!(status(&doc, "resolves_from_a_fresh_instance").0, "pass");
    assert_eq!(status(&doc, "savepoint_without_any_target").0, "pass");
    let mut expected = inline_only.to_vec();
    expected.push("savepoint_to_default_target");
    assert_skipped(&doc, &expected, "checkpoint-dir");
}

#[test]
fn a_panicking_plugin_fails_with_the_panic_message() {
    let dir = tempfile::tempdir().unwrap();
    let (code, doc, _) = verify(
        &[lib("cairn-fixture-panicking").to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert_eq!(doc["ok"], false);
    let (s, why) = status(&doc, "round_trips_at_every_size");
    assert_eq!(s, "fail");
    assert!(
        why.contains("plugin panicked: in write(): fixture-panicking: panic in Write"),
        "{why}"
    );
    // A case that never writes, run after a dozen panicking ones, still passes: the host kept
    // working after every panic.
    assert_eq!(status(&doc, "listing_shows_only_completed").0, "pass");
}

#[test]
fn a_hanging_plugin_times_out_and_the_rest_is_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let so = lib("cairn-fixture-hanging");
    let started = std::time::Instant::now();
    let (code, doc, _) = verify(&[so.to_str().unwrap(), "--case-timeout", "2s"], dir.path());
    assert_eq!(code, 1);
    let (s, why) = status(&doc, "round_trips_at_every_size");
    assert_eq!(s, "fail");
    assert!(why.starts_with("timed out after 2s"), "{why}");
    let (s, why) = status(&doc, "eight_threads_hundred_streams");
    assert_eq!(s, "skip");
    assert!(why.contains("round_trips_at_every_size hung"), "{why}");
    // Bounded: one timeout, not one per case. Generous, so a slow machine never fails it.
    assert!(started.elapsed().as_secs() < 120);
}

#[test]
fn a_plugin_returning_corrupt_bytes_is_caught_by_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let (code, doc, _) = verify(
        &[lib("cairn-fixture-corrupting").to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 1);
    let (s, why) = status(&doc, "round_trips_at_every_size");
    assert_eq!(s, "fail");
    // The fixture does not check its own checksum; the host's check names the handle.
    assert!(
        why.contains("corrupt: handle 'verify-") && why.contains("checksum mismatch"),
        "{why}"
    );
}

#[test]
fn files_that_are_not_loadable_get_their_own_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("libjunk.so");
    std::fs::write(&junk, "junk").unwrap();
    let cases = [
        (
            lib("cairn-fixture-not-a-plugin"),
            "is not a cairn storage plugin",
        ),
        (
            lib("cairn-fixture-api-old-major"),
            "major versions must match",
        ),
        (
            lib("cairn-fixture-api-new-major"),
            "major versions must match",
        ),
        (lib("cairn-fixture-api-new-minor"), "upgrade cairn"),
        (lib("cairn-fixture-layout-mismatch"), "ABI layout mismatch"),
        (junk, "is not a shared library"),
    ];
    for (path, expected) in cases {
        let (code, doc, stderr) = verify(&[path.to_str().unwrap()], dir.path());
        assert_eq!(code, 1, "{}", path.display());
        // No report for a refused file: the contract's error object instead.
        assert_eq!(doc["error"]["kind"], "plugin", "{doc}");
        assert!(doc.get("cases").is_none(), "{doc}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{}: {stderr}",
            path.display()
        );
    }
}

#[test]
fn a_bad_options_file_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("opts.toml"),
        "dir = \"x\"\ninline-threshold = \n",
    )
    .unwrap();
    let so = lib("cairn-storage-fs-cdylib");
    let (code, _, stderr) = verify(
        &[so.to_str().unwrap(), "--options", "opts.toml"],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("error: options file opts.toml:2:"),
        "{stderr}"
    );
}
