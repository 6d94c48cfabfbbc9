//! The `cairn` binary: `plugins list` and `plugins info`, human and JSON.

use crate::util::{cairn, copy_lib};

/// A directory with a config whose search path holds the two bundled plugins and a junk file.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    copy_lib(
        "cairn-storage-memory-cdylib",
        &plugins,
        "libcairn_storage_memory.so",
    );
    copy_lib(
        "cairn-storage-fs-cdylib",
        &plugins,
        "libcairn_storage_fs.so",
    );
    std::fs::write(plugins.join("libjunk.so"), "not a library").unwrap();
    std::fs::write(
        dir.path().join("cairn.toml"),
        "[plugins]\nsearch-path = [\"plugins\"]\n",
    )
    .unwrap();
    dir
}

#[test]
fn plugins_list_json_shows_both_bundled_plugins() {
    let dir = setup();
    let out = cairn(&["plugins", "list", "--json"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plugins = doc["plugins"].as_array().unwrap();
    let names: Vec<&str> = plugins
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["filesystem", "memory"]);
    for p in plugins {
        assert_eq!(p["version"], "0.1.0");
        assert_eq!(p["api_version"], cairn_plugin_api::API_VERSION.to_string());
        assert!(p["path"].as_str().unwrap().ends_with(".so"));
        // Read from the manifest section: no library loaded, no file hashed.
        assert_eq!(p["manifest_source"], "section");
        assert!(p.get("sha256").is_none(), "{p}");
        assert!(p["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "savepoints"));
    }
    let fs = plugins.iter().find(|p| p["name"] == "filesystem").unwrap();
    assert!(fs["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "persistent"));
    let refused = doc["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["kind"], "not-a-shared-library");
}

#[test]
fn plugins_list_prints_a_table_and_the_refusals() {
    let dir = setup();
    let out = cairn(&["plugins", "list"], dir.path());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NAME"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("filesystem") && l.contains("persistent")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("memory")), "{text}");
    assert!(
        text.contains("libjunk.so is not a shared library"),
        "{text}"
    );
}

#[test]
fn plugins_info_by_name_and_by_path() {
    let dir = setup();
    let out = cairn(&["plugins", "info", "memory", "--json"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["name"], "memory");
    // The options the manifest lists, with their defaults.
    let options = doc["options"].as_array().unwrap();
    let max = options
        .iter()
        .find(|o| o["name"] == "max-state-size")
        .unwrap();
    assert_eq!(max["default"], "5MiB", "{doc}");
    let dir_option = options
        .iter()
        .find(|o| o["name"] == "checkpoint-dir")
        .unwrap();
    assert_eq!(dir_option["default"], serde_json::Value::Null, "{doc}");

    let path = dir.path().join("plugins").join("libcairn_storage_fs.so");
    let out = cairn(&["plugins", "info", path.to_str().unwrap()], dir.path());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("name:          filesystem"), "{text}");
    assert!(text.contains("\noptions ([storage.options]):\n"), "{text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} line in {text}"))
            .to_string()
    };
    assert!(line("dir").contains("no default"), "{text}");
    assert!(line("inline-threshold").contains("default 20KiB"), "{text}");
    assert!(line("write-buffer").contains("default 4KiB"), "{text}");
}

#[test]
fn plugins_info_on_a_refused_file_fails_with_one_line() {
    let dir = setup();
    let out = cairn(&["plugins", "info", "plugins/libjunk.so"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: plugin ") && err.contains("libjunk.so is not a shared library"),
        "{err}"
    );

    let out = cairn(&["plugins", "info", "nosuch"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no plugin named 'nosuch'") && err.contains("available: filesystem, memory"),
        "{err}"
    );
}

#[test]
fn a_bad_config_file_is_reported_with_its_line() {
    let dir = setup();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[plugins]\nsearch-pth = [\"x\"]\n",
    )
    .unwrap();
    let out = cairn(&["plugins", "list", "--config", "bad.toml"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: config error at bad.toml:2:") && err.contains("search-pth"),
        "{err}"
    );
}
