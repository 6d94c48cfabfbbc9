//! `cairn config check|defaults` through the binary, and the example configs through the real
//! plugins. The rules themselves are unit-tested in `src/config/tests.rs`.

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use cairn_host::config::{Config, PluginRef};

use crate::util::{self, cairn};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(name)
}

/// A temporary directory holding `cairn.toml` with `text`.
fn with_config(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cairn.toml"), text).unwrap();
    dir
}

const BAD_INTERVAL: &str =
    "[storage]\nplugin = \"memory\"\n\n# checkpoint settings\n\n[checkpointing]\ninterval = \"5ms\"\n";

#[test]
fn check_accepts_a_valid_file_and_summarizes_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(example("quickstart.toml"), dir.path().join("quick.toml")).unwrap();
    let out = cairn(&["config", "check", "quick.toml"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("quick.toml is valid\n"), "{text}");
    assert!(text.contains("every 1s"), "{text}");
    assert!(text.contains("keep 3, retain-on-cancellation"), "{text}");
    assert!(text.contains("quickstart (keyed-counter)"), "{text}");
    assert!(
        text.contains("plugin \"filesystem\" (dir = \"checkpoints\")"),
        "{text}"
    );
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn check_reads_cairn_toml_by_default() {
    let dir = with_config("[checkpointing]\ninterval = \"2s\"\n");
    let out = cairn(&["config", "check"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("cairn.toml is valid\n"));
}

#[test]
fn check_refuses_an_interval_below_10ms_naming_the_line() {
    let dir = with_config(BAD_INTERVAL);
    let out = cairn(&["config", "check", "cairn.toml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: config error at cairn.toml:7: checkpointing.interval = \"5ms\" is below the minimum of 10ms\n"
    );
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
}

#[test]
fn check_json_reports_the_getters() {
    let dir = with_config(
        r#"[storage]
path = "lib/libx.so"
[storage.options]
dir = "/data/cp"

[checkpointing]
interval = "1s"
min-pause = "3s"
mode = "exactly-once"
unaligned = true
alignment-timeout = "250ms"
fail-on-checkpointing-errors = false
externalized-retention = "delete-on-cancellation"

[job]
id = "j1"
rate = "unlimited"
fail-after-records = 500

[savepoints]
dir = "sp"
on-sigterm = true

[restart]
delay = "2s"

[metrics]
listen = "127.0.0.1:9249"
"#,
    );
    let out = cairn(&["config", "check", "cairn.toml", "--json"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expect = serde_json::json!({
        "version": 1,
        "file": "cairn.toml",
        "valid": true,
        "checkpointing_enabled": true,
        "checkpoint_interval_ms": 1000,
        "base_interval_ms": 3000,
        "mode": "exactly-once",
        "exactly_once": true,
        "externalized": true,
        "externalized_retention": "delete-on-cancellation",
        "unaligned": true,
        "force_unaligned": false,
        "aligned_checkpoint_timeout_ms": 250,
        "max_in_flight_data_bytes": 268_435_456,
        "timeout_ms": 600_000,
        "min_pause_ms": 3000,
        "max_concurrent": 1,
        "tolerable_failures": null,
        "num_retained": 1,
        "job": {
            "id": "j1",
            "kind": "keyed-counter",
            "keys": 1000,
            "state_bytes_per_key": 64,
            "rate": null,
            "operator_rate": null,
            "parallelism": 2,
            "fail_after_records": 500,
            "fail_after_checkpoints": null,
            "input": null,
            "output": null,
        },
        "storage": {
            "plugin": null,
            "path": "lib/libx.so",
            "sha256": null,
            "options": { "dir": "/data/cp" },
        },
        "savepoints": { "dir": "sp", "on_sigterm": true },
        "restart": { "attempts": 3, "delay_ms": 2000 },
        "metrics": { "listen": "127.0.0.1:9249", "allow_remote": false },
        "lease": {
            "ttl_ms": 30_000,
            // The default, which depends on the environment (inherited by the child).
            "local_dir": cairn_host::config::LeaseConfig::default().local_dir(),
        },
    });
    assert_eq!(v, expect, "{v:#}");
}

#[test]
fn check_json_of_the_defaults_reports_checkpointing_off() {
    let dir = with_config("");
    let out = cairn(&["config", "check", "--json"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["checkpointing_enabled"], false);
    assert_eq!(v["checkpoint_interval_ms"], serde_json::Value::Null);
    assert_eq!(v["base_interval_ms"], serde_json::Value::Null);
    assert_eq!(v["tolerable_failures"], 0);
    assert_eq!(v["externalized"], false);
    assert_eq!(v["storage"]["plugin"], "filesystem");
    assert_eq!(v["storage"]["options"]["dir"], "checkpoints");
}

#[test]
fn check_json_reports_an_invalid_file() {
    let dir = with_config(BAD_INTERVAL);
    let out = cairn(&["config", "check", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = &v["error"];
    assert_eq!(v["kind"], "config");
    assert_eq!(v["line"], 7);
    assert_eq!(v["key"], "checkpointing.interval");
    assert_eq!(
        v["message"],
        "config error at cairn.toml:7: checkpointing.interval = \"5ms\" is below the minimum of 10ms"
    );
    assert!(stderr(&out).starts_with("error: config error at cairn.toml:7:"));
}

#[test]
fn check_refuses_a_duration_past_the_maximum_that_run_could_not_use() {
    // Issue 9.2: this passed the check, then `run` panicked adding it to an instant.
    let dir = with_config(
        "[storage]\nplugin = \"memory\"\n[checkpointing]\ninterval = \"1s\"\n\
         timeout = \"500000000000years\"\n",
    );
    let out = cairn(&["config", "check", "cairn.toml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: config error at cairn.toml:5: checkpointing.timeout = \"500000000000years\" is \
         above the maximum of 365d for any duration\n"
    );
    let run = cairn(&["run", "--records", "10"], dir.path());
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(
        stderr(&run).starts_with("error: config error at cairn.toml:5:"),
        "{}",
        stderr(&run)
    );
    let dir = with_config("[restart]\ndelay = \"500000000000years\"\n");
    let out = cairn(&["config", "check", "--json"], dir.path());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["error"]["line"].as_u64(), v["error"]["key"].as_str()),
        (Some(2), Some("restart.delay"))
    );
}

#[test]
fn check_json_gives_line_and_column_of_bytes_that_are_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cairn.toml"), b"[job]\nid = \"\xff\"\n").unwrap();
    let out = cairn(&["config", "check", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["error"]["line"].as_u64(), v["error"]["column"].as_u64()),
        (Some(2), Some(7))
    );
    assert!(
        stderr(&out).starts_with("error: config error at cairn.toml:2:7: the file is not UTF-8"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_refuses_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = cairn(&["config", "check", "nope.toml", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: config error in nope.toml: cannot read the file"),
        "{}",
        stderr(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "config");
    assert_eq!(v["error"]["file"], "nope.toml");
    assert!(v["error"].get("line").is_none(), "{v}");
}

#[test]
fn defaults_output_passes_check_and_means_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let out = cairn(&["config", "defaults"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("\n[checkpointing]\n"), "{text}");
    assert!(text.contains("\n# interval = \"1s\"\n"), "{text}");
    assert!(text.contains("\ntimeout = \"10min\"\n"), "{text}");
    std::fs::write(dir.path().join("defaults.toml"), &text).unwrap();
    let out = cairn(&["config", "check", "defaults.toml"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let parsed = Config::load(&dir.path().join("defaults.toml")).unwrap();
    assert_eq!(
        Config {
            file: None,
            ..parsed
        },
        Config::default()
    );
}

#[test]
fn the_examples_pass_check() {
    for name in ["quickstart.toml", "memory.toml"] {
        let out = cairn(
            &["config", "check", example(name).to_str().unwrap()],
            Path::new(env!("CARGO_MANIFEST_DIR")),
        );
        assert!(out.status.success(), "{name}: {}", stderr(&out));
    }
}

/// The examples' `[storage.options]` are accepted by the plugins they name (a plugin rejects
/// unknown or invalid options), through the real loading path. The filesystem example's
/// relative `dir` is pointed into a temporary directory so the test creates nothing here.
#[test]
fn the_examples_storage_options_open_their_plugins() {
    let scratch = tempfile::tempdir().unwrap();
    for (name, package) in [
        ("quickstart.toml", "cairn-storage-fs-cdylib"),
        ("memory.toml", "cairn-storage-memory-cdylib"),
    ] {
        let mut c = Config::load(&example(name)).unwrap();
        let plugin = util::load(package);
        assert_eq!(
            c.storage.plugin,
            PluginRef::Name(plugin.manifest().name.to_string()),
            "{name}"
        );
        if let Some(toml::Value::String(dir)) = c.storage.options.get_mut("dir") {
            *dir = scratch.path().join(&*dir).display().to_string();
        }
        if let Err(e) = plugin.open(&c.storage.options_document()) {
            panic!("{name}: {package} refuses the options: {e}");
        }
    }
}
