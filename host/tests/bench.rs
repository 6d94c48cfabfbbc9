//! `cairn bench storage` end to end: the loaded filesystem plugin, the raw baseline and the
//! linked-in companion (`cairn-bench-linked`, built by the test), on a small size. The test
//! checks that every figure and ratio is there and consistent; it never asserts a speed.

use std::{path::Path, process::Command};

use serde_json::Value;

use crate::util::lib;

const SIZE: u64 = 8 << 20;
const CALLS: u64 = 10_000;

/// Run `cairn bench storage --json` in `dir` on the filesystem plugin with `extra` arguments.
fn bench(dir: &Path, runner: &Path, extra: &[&str]) -> (std::process::Output, Value) {
    let fs = lib("cairn-storage-fs-cdylib");
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["bench", "storage", "--plugin"])
        .arg(&fs)
        .args(["--dir", "."])
        .arg("--linked-runner")
        .arg(runner)
        .args(extra)
        .arg("--json")
        .current_dir(dir)
        .output()
        .unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON on stdout ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, doc)
}

/// Whether `ratio` is `a ÷ b` measured before `a` and `b` were rounded to whole microseconds
/// (the JSON contract's integers): within the error that rounding each by up to half a unit
/// makes.
fn close_rounded(ratio: f64, a: f64, b: f64) -> bool {
    let bound = ratio * (0.5 / a.max(0.5) + 0.5 / b.max(0.5)) * 1.01 + 1e-12;
    (ratio - a / b).abs() <= bound
}

fn ratio(doc: &Value, pointer: &str) -> f64 {
    let r = doc
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} is missing in {doc:#}"));
    assert!(r.is_finite() && r > 0.0, "{pointer} = {r}");
    r
}

fn assert_figure(doc: &Value, pointer: &str, bytes: u64, calls: Option<u64>) {
    let fig = doc
        .pointer(pointer)
        .unwrap_or_else(|| panic!("{pointer} is missing in {doc:#}"));
    assert_eq!(fig["size_bytes"], bytes, "{pointer}: {fig}");
    if let Some(calls) = calls {
        assert_eq!(fig["calls"], calls, "{pointer}: {fig}");
    }
    for key in ["duration_us", "mib_per_s", "ns_per_call"] {
        let v = fig[key].as_f64().unwrap_or(-1.0);
        assert!(v.is_finite() && v > 0.0, "{pointer}.{key} = {}", fig[key]);
    }
    assert_eq!(fig["samples_us"].as_array().map(Vec::len), Some(3));
}

#[test]
fn bench_storage_reports_every_figure_and_ratio() {
    let runner = crate::util::linked_runner();
    let dir = tempfile::tempdir().unwrap();
    let (out, doc) = bench(
        dir.path(),
        &runner,
        &["--size", "8MiB", "--chunk", "1MiB", "--calls", "10000"],
    );
    assert!(
        out.status.success(),
        "{}\n{doc:#}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(doc["complete"], true);
    assert_eq!(doc["plugin"]["name"], "filesystem");
    assert_eq!(
        (doc["size_bytes"].as_u64(), doc["calls"].as_u64()),
        (Some(SIZE), Some(CALLS))
    );

    for figure in [
        "/plugin_vs_raw/plugin_write_commit",
        "/plugin_vs_raw/raw_write_sync",
        "/plugin_vs_raw/plugin_read",
        "/plugin_vs_raw/raw_read",
    ] {
        assert_figure(&doc, figure, SIZE, None);
    }
    for side in ["loaded", "linked"] {
        assert_figure(
            &doc,
            &format!("/loaded_vs_linked/{side}/write_commit"),
            SIZE,
            Some(8),
        );
        assert_figure(&doc, &format!("/loaded_vs_linked/{side}/read"), SIZE, None);
        assert_figure(
            &doc,
            &format!("/loaded_vs_linked/{side}/small_writes"),
            CALLS * 64,
            Some(CALLS),
        );
    }
    // 8 MiB in 1 MiB chunks: 8 write calls, on both sides of plugin ÷ raw.
    assert_eq!(doc["plugin_vs_raw"]["plugin_write_commit"]["calls"], 8);
    assert_eq!(doc["plugin_vs_raw"]["raw_write_sync"]["calls"], 8);

    let ratios = [
        "/plugin_vs_raw/write_ratio",
        "/plugin_vs_raw/read_ratio",
        "/loaded_vs_linked/write_ratio",
        "/loaded_vs_linked/read_ratio",
        "/loaded_vs_linked/per_call_ratio",
    ];
    for pointer in ratios {
        ratio(&doc, pointer);
    }
    // A ratio is the quotient of the figures it is printed next to.
    let per_call = ratio(&doc, "/loaded_vs_linked/per_call_ratio");
    let loaded = ratio(&doc, "/loaded_vs_linked/loaded/small_writes/ns_per_call");
    let linked = ratio(&doc, "/loaded_vs_linked/linked/small_writes/ns_per_call");
    assert!((per_call - loaded / linked).abs() < 1e-9 * per_call);

    // Targets: every one measured and judged (met true or false), none asserted.
    let targets = doc["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 4);
    for t in targets {
        assert!(t["met"].is_boolean(), "{t}");
        let at = t["ratio"].as_str().unwrap().replace('.', "/");
        assert_eq!(t["value"].as_f64(), Some(ratio(&doc, &format!("/{at}"))));
    }

    // The scratch directory is gone.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bench_storage_without_the_linked_runner_says_so_and_reports_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-runner");
    let (out, doc) = bench(
        dir.path(),
        &missing,
        &["--size", "1MiB", "--calls", "1000", "--rounds", "1"],
    );
    assert!(!out.status.success(), "an incomplete run must not succeed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no-such-runner") && stderr.contains("cargo build"),
        "{stderr}"
    );
    assert_eq!(doc["complete"], false);
    assert!(doc["loaded_vs_linked"]["linked"].is_null());
    assert!(doc["loaded_vs_linked"]["per_call_ratio"].is_null());
    ratio(&doc, "/plugin_vs_raw/write_ratio");
    ratio(&doc, "/loaded_vs_linked/loaded/small_writes/ns_per_call");
}

/// `cairn bench job --json` prints every figure, each consistent with the others, and the
/// targets with their verdicts; no speed is asserted.
#[test]
fn bench_job_reports_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let fs = lib("cairn-storage-fs-cdylib");
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["bench", "job", "--keys", "2000", "--state-bytes", "1KiB"])
        .args([
            "--parallelism",
            "2",
            "--interval",
            "100ms",
            "--rate",
            "20000",
        ])
        .args(["--checkpoints", "3", "--dir", ".", "--json", "--plugin"])
        .arg(&fs)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = &doc["figures"];
    for key in [
        "median_us",
        "mb_per_s",
        "raw_median_us",
        "vs_raw",
        "start_to_first_record_ms",
        "rss_vs_state",
    ] {
        let v = f[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {doc:#}"));
        assert!(v.is_finite() && v > 0.0, "{key} = {v}");
    }
    assert_eq!(f["durations_us"].as_array().unwrap().len(), 3);
    assert_eq!(f["raw_us"].as_array().unwrap().len(), 3);
    assert_eq!(f["state_bytes"], 2000 * 1024);
    assert!(f["checkpoint_bytes"].as_u64().unwrap() >= 2000 * 1024);
    assert!(f["peak_rss_bytes"].as_u64().unwrap() > 2000 * 1024);
    // Records/s are figures when both were seen (a 20,000/s source is seen in both).
    let during = f["records_per_s_during"].as_f64().unwrap();
    let between = f["records_per_s_between"].as_f64().unwrap();
    let ratio = f["during_vs_between"].as_f64().unwrap();
    assert!((ratio - during / between).abs() < 1e-9);
    let vs_raw = f["vs_raw"].as_f64().unwrap();
    let (median, raw) = (
        f["median_us"].as_f64().unwrap(),
        f["raw_median_us"].as_f64().unwrap(),
    );
    assert!(
        close_rounded(vs_raw, median, raw),
        "{vs_raw} vs {median} / {raw}"
    );
    let targets = doc["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 7, "{doc:#}");
    let first_record = targets
        .iter()
        .find(|t| t["ratio"] == "start_to_first_record_ms")
        .unwrap();
    assert!(first_record["met"].is_boolean(), "{first_record}");
    assert!(targets
        .iter()
        .filter(|t| t["ratio"] == "vs_raw")
        .all(|t| t["not_applicable"].is_string()));
}

/// `cairn bench job --backpressure --json` runs every barrier mode under a slow operator and
/// reports each run's figures and the ratios between them, consistent with those figures; no
/// speed is asserted. `--rate` and `--operator-rate` are refused where they do not apply.
#[test]
fn bench_job_backpressure_reports_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let fs = lib("cairn-storage-fs-cdylib");
    let bench = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["bench", "job", "--keys", "500", "--state-bytes", "64B"])
            .args(["--interval", "100ms", "--checkpoints", "2", "--dir", "."])
            .args(extra)
            .arg("--plugin")
            .arg(&fs)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = bench(&["--backpressure", "--operator-rate", "200000", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = &doc["figures"];
    let runs = [
        ("aligned", "aligned"),
        ("unaligned", "unaligned"),
        ("aligned_timeout_100ms", ""),
        ("unaligned_without_backpressure", "unaligned"),
        ("exactly_once_unthrottled", "aligned"),
        ("at_least_once_unthrottled", "at-least-once"),
    ];
    for (run, barriers) in runs {
        let r = &f[run];
        assert_eq!(r["durations_us"].as_array().unwrap().len(), 2, "{run}");
        assert!(r["median_us"].as_f64().unwrap() > 0.0, "{run}");
        for b in r["barriers"].as_array().unwrap() {
            if barriers.is_empty() {
                assert!(
                    b == "aligned" || b == "unaligned-after-timeout",
                    "{run}: {b}"
                );
            } else {
                assert_eq!(b, barriers, "{run}");
            }
        }
    }
    assert!(f["unaligned"]["channel_state_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b.as_u64().unwrap() > 0));
    assert!(f["aligned"]["channel_state_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b == 0));
    let median = |run: &str| f[run]["median_us"].as_f64().unwrap();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b.abs().max(1.0);
    assert!(close_rounded(
        f["unaligned_vs_aligned"].as_f64().unwrap(),
        median("unaligned"),
        median("aligned")
    ));
    assert!(close_rounded(
        f["timeout_vs_aligned"].as_f64().unwrap(),
        median("aligned_timeout_100ms"),
        median("aligned")
    ));
    assert!(close_rounded(
        f["unaligned_backpressure_vs_without"].as_f64().unwrap(),
        median("unaligned"),
        median("unaligned_without_backpressure")
    ));
    assert!(f["channel_state_vs_queued"].as_f64().unwrap() > 0.0);
    assert!(f["queued_ms"].as_u64().unwrap() > 0);
    let rate = |run: &str| f[run]["records_per_s"].as_f64().unwrap();
    assert!(close(
        f["at_least_once_vs_exactly_once"].as_f64().unwrap(),
        rate("at_least_once_unthrottled") / rate("exactly_once_unthrottled")
    ));
    assert_eq!(doc["targets"].as_array().unwrap().len(), 4, "{doc:#}");

    for (args, message) in [
        (
            &["--backpressure", "--rate", "1000"][..],
            "error: --rate does not apply with --backpressure",
        ),
        (
            &["--operator-rate", "1000"][..],
            "error: --operator-rate applies only with --backpressure",
        ),
    ] {
        let out = bench(args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with(message), "{err}");
    }
}
