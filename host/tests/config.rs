//! `cairn config check|defaults` through the binary, and the example configs through the real
//! plugins. The rules themselves are unit-tested in `src/config/tests.rs`.

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use cairn_host::config::{Config, PluginRef};

use crate::util::{self, cairn, copy_lib};

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

/// A temporary directory holding `cairn.toml` with `text` searching `plugins/` (and only it),
/// which holds the bundled filesystem and memory plugins, since `config check` loads the plugin
/// a file names.
fn with_config(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    with_plugins(dir.path());
    let text = searching_plugins(text, &dir.path().join("plugins"));
    std::fs::write(dir.path().join("cairn.toml"), text).unwrap();
    dir
}

/// `text` with `[plugins] search-path` set to `plugins` alone, so no other folder of the
/// default search path (the `cairn` executable's, which may hold other builds of the plugins)
/// is searched. A file without `[plugins]` gets it at the end, so its lines do not move.
fn searching_plugins(text: &str, plugins: &Path) -> String {
    let line = format!("search-path = [{:?}]", plugins.display().to_string());
    match text.find("[plugins]\n") {
        Some(at) if at == 0 || text[..at].ends_with('\n') => {
            let end = at + "[plugins]\n".len();
            format!("{}{line}\n{}", &text[..end], &text[end..])
        }
        _ => format!("{text}\n[plugins]\n{line}\n"),
    }
}

/// The bundled filesystem and memory plugins in `DIR/plugins`.
fn with_plugins(dir: &Path) {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    copy_lib(
        "cairn-storage-fs-cdylib",
        &plugins,
        "libcairn_storage_fs.so",
    );
    copy_lib(
        "cairn-storage-memory-cdylib",
        &plugins,
        "libcairn_storage_memory.so",
    );
}

/// Every file and folder under `dir`, but the plugins.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.file_name() == Some(std::ffi::OsStr::new("plugins")) {
                continue;
            }
            if path.is_dir() {
                todo.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

const BAD_INTERVAL: &str =
    "[storage]\nplugin = \"memory\"\n\n# checkpoint settings\n\n[checkpointing]\ninterval = \"5ms\"\n";

#[test]
fn check_accepts_a_valid_file_and_summarizes_it() {
    let dir = tempfile::tempdir().unwrap();
    with_plugins(dir.path());
    let text = std::fs::read_to_string(example("quickstart.toml")).unwrap();
    std::fs::write(
        dir.path().join("quick.toml"),
        searching_plugins(&text, &dir.path().join("plugins")),
    )
    .unwrap();
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
    assert!(text.contains("; options checked by the plugin\n"), "{text}");
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    // Checked, not opened: the relative `dir` was not made.
    assert_eq!(files_under(dir.path()), [dir.path().join("quick.toml")]);
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
dir = "/nonexistent-cairn-test/cp"

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
    std::fs::create_dir(dir.path().join("lib")).unwrap();
    let lib = copy_lib(
        "cairn-storage-fs-cdylib",
        &dir.path().join("lib"),
        "libx.so",
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
            "options": { "dir": "/nonexistent-cairn-test/cp" },
            "loaded": {
                "name": "filesystem",
                "version": "0.1.0",
                "api_version": cairn_plugin_api::API_VERSION.to_string(),
                "path": lib.canonicalize().unwrap(),
                "options_checked": true,
            },
        },
        "savepoints": { "dir": "sp", "on_sigterm": true },
        "restart": { "attempts": 3, "delay_ms": 2000 },
        "metrics": { "listen": "127.0.0.1:9249", "allow_remote": false },
        "lease": {
            "ttl_ms": 30_000,
            // The default, which depends on the environment (inherited by the child).
            "local_dir": cairn_host::config::LeaseConfig::default().local_dir(),
        },
        "warnings": [],
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
    assert_eq!(v["version"], 1);
    let e = &v["error"];
    assert_eq!(e["kind"], "config");
    assert_eq!(e["file"], "cairn.toml");
    assert_eq!(e["line"], 7);
    assert_eq!(e["key"], "checkpointing.interval");
    assert_eq!(
        e["message"],
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
    with_plugins(dir.path());
    let out = cairn(&["config", "defaults"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("\n[checkpointing]\n"), "{text}");
    assert!(text.contains("\n# interval = \"1s\"\n"), "{text}");
    assert!(text.contains("\ntimeout = \"10min\"\n"), "{text}");
    std::fs::write(dir.path().join("defaults.toml"), &text).unwrap();
    let searching = searching_plugins(&text, &dir.path().join("plugins"));
    std::fs::write(dir.path().join("checked.toml"), searching).unwrap();
    let out = cairn(&["config", "check", "checked.toml"], dir.path());
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
    let dir = tempfile::tempdir().unwrap();
    with_plugins(dir.path());
    for name in ["quickstart.toml", "memory.toml"] {
        let text = std::fs::read_to_string(example(name)).unwrap();
        let file = dir.path().join(name);
        std::fs::write(&file, searching_plugins(&text, &dir.path().join("plugins"))).unwrap();
        let out = cairn(&["config", "check", file.to_str().unwrap()], dir.path());
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

// ---- config check means "run will start" ----

#[test]
fn check_loads_the_plugin_and_refuses_an_unknown_one() {
    let dir = with_config("[storage]\nplugin = \"nosuch\"\n");
    let out = cairn(&["config", "check", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: ") && err.contains("nosuch"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("nosuch"),
        "{v}"
    );
}

#[test]
fn check_has_the_plugin_refuse_an_unknown_option_with_did_you_mean_and_the_line() {
    let dir =
        with_config("[storage]\nplugin = \"filesystem\"\n\n[storage.options]\ndirr = \"cp\"\n");
    let out = cairn(&["config", "check", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: config error at cairn.toml:5: storage.options"),
        "{err}"
    );
    assert!(err.contains("did you mean `dir`?"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "config");
    assert_eq!(v["error"]["line"], 5);
    // Nothing was created.
    assert_eq!(files_under(dir.path()), [dir.path().join("cairn.toml")]);
}

#[test]
fn check_refuses_a_url_scheme_the_filesystem_plugin_cannot_use_naming_the_plugin_to_use() {
    let dir = with_config(
        "[storage.options]\ndir = \"s3://bucket/ckpt\"\n[storage]\nplugin = \"filesystem\"\n",
    );
    let out = cairn(&["config", "check"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("it is a s3:// URL") && err.contains("object-store"),
        "{err}"
    );
    // A file:// URL is a path: accepted, and nothing is made until a checkpoint is written.
    let dir = with_config("[storage]\nplugin = \"filesystem\"\n[storage.options]\ndir = \"file:///nonexistent-cairn-test/ckpt\"\n");
    let out = cairn(&["config", "check"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!Path::new("/nonexistent-cairn-test").exists());
}

#[test]
fn check_warns_when_checkpointing_is_off() {
    let dir = with_config("[job]\nid = \"j\"\n");
    let out = cairn(&["config", "check", "--json"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(
            "warning: checkpointing is off: cairn.toml sets no checkpointing.interval"
        ),
        "{}",
        stderr(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("checkpointing is off"),
        "{v}"
    );
}

#[test]
fn an_explicit_config_must_exist_even_when_it_is_named_cairn_toml() {
    let dir = tempfile::tempdir().unwrap();
    let out = cairn(
        &["checkpoints", "list", "--config", "cairn.toml"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: config error in cairn.toml: cannot read the file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn checkpoints_list_in_an_empty_folder_creates_nothing() {
    // The config (only a search path: the embedded default storage, ./checkpoints) is kept
    // elsewhere, so the folder the command runs in is empty.
    let config = with_config("");
    let dir = tempfile::tempdir().unwrap();
    let file = config.path().join("cairn.toml");
    let out = cairn(
        &["checkpoints", "list", "--config", file.to_str().unwrap()],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(files_under(dir.path()), Vec::<PathBuf>::new());
}

/// The Flink-style config test: a file written with Flink's keys, enum spellings, a
/// bare-millisecond duration and a `file://` directory passes `config check` and runs,
/// checkpointing where Flink's `state.checkpoints.dir` says.
#[test]
fn a_flink_style_config_passes_check_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    with_plugins(dir.path());
    let ckpt = dir.path().join("flink-ckpt");
    let text = format!(
        "execution.checkpointing.interval = 100\n\
         execution.checkpointing.mode = \"EXACTLY_ONCE\"\n\
         execution.checkpointing.timeout = \"10 min\"\n\
         execution.checkpointing.max-concurrent-checkpoints = 1\n\
         execution.checkpointing.tolerable-failed-checkpoints = 3\n\
         execution.checkpointing.externalized-checkpoint-retention = \"RETAIN_ON_CANCELLATION\"\n\
         state.checkpoints.dir = \"file://{}\"\n\
         state.checkpoints.num-retained = 2\n\
         state.savepoints.dir = \"file://{}\"\n\
         \n[job]\nid = \"flinkish\"\nkeys = 50\nrate = 2000\n",
        ckpt.display(),
        dir.path().join("flink-sp").display()
    );
    let text = searching_plugins(&text, &dir.path().join("plugins"));
    std::fs::write(dir.path().join("cairn.toml"), text).unwrap();
    let out = cairn(&["config", "check", "--json"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["checkpoint_interval_ms"], 100);
    assert_eq!(v["mode"], "exactly-once");
    assert_eq!(v["tolerable_failures"], 3);
    assert_eq!(v["externalized_retention"], "retain-on-cancellation");
    assert_eq!(v["num_retained"], 2);
    assert_eq!(v["storage"]["plugin"], "filesystem");
    assert_eq!(v["storage"]["loaded"]["options_checked"], true);
    assert_eq!(v["warnings"], serde_json::json!([]));
    assert!(!ckpt.exists(), "config check created the checkpoint folder");
    util::run_until_checkpoints(&["run"], dir.path(), 2);
    assert!(
        ckpt.join("flinkish").is_dir(),
        "no checkpoints under state.checkpoints.dir"
    );
    let out = cairn(&["checkpoints", "list", "--json"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn run_with_no_interval_says_checkpointing_is_off() {
    let config = with_config("");
    let dir = tempfile::tempdir().unwrap();
    // The search path only: no interval, so checkpointing is off.
    std::fs::copy(
        config.path().join("cairn.toml"),
        dir.path().join("cairn.toml"),
    )
    .unwrap();
    let out = cairn(&["run", "--records", "100"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("warning: checkpointing is off: cairn.toml sets no checkpointing.interval"),
        "{}",
        stderr(&out)
    );
}
