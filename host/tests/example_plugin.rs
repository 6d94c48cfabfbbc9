//! The third-party example plugin in `tests/example-plugin`, used the way its author would use
//! it: built as a workspace of its own against `cairn-plugin-api` alone, checked with
//! `cairn plugins verify`, then dropped into a `plugins/` directory and found by name.

use std::{path::PathBuf, sync::OnceLock};

use crate::util::{cairn, json_of as json, set_mode};

/// The example's manifest name.
const NAME: &str = "example-dir";

/// The example's shared library, built once per process with a nested `cargo build` of its own
/// manifest into `target/example-plugin`.
fn example_lib() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let root = cairn_harness::artifacts::workspace_root();
        let libs = cairn_harness::artifacts::build_cdylibs(
            &root.join("tests/example-plugin/Cargo.toml"),
            &root.join("target/example-plugin"),
            &["cairn-example-plugin"],
        )?;
        libs.get("cairn-example-plugin")
            .cloned()
            .ok_or_else(|| format!("the example plugin built no shared library: {libs:?}"))
    });
    built
        .clone()
        .unwrap_or_else(|e| panic!("cannot build the example plugin: {e}"))
}

#[test]
fn the_example_plugin_passes_verify() {
    let so = example_lib();
    let dir = tempfile::tempdir().unwrap();
    // No --options: the manifest's test options (`root = "{scratch}/example-dir"`) are used.
    let out = cairn(
        &["plugins", "verify", so.to_str().unwrap(), "--json"],
        dir.path(),
    );
    let doc = json(&out);
    let cases = doc["cases"].as_array().expect("a list of cases");
    let failed: Vec<String> = cases
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| format!("{}: {}", c["name"], c["reason"]))
        .collect();
    assert!(
        out.status.success(),
        "verify failed: {failed:#?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["summary"]["failed"], 0, "{failed:#?}");
    assert_eq!(doc["plugin"]["name"], NAME);

    let status = |name: &str| -> (String, String) {
        let case = cases
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("verify ran no case {name}"));
        (
            case["status"].as_str().unwrap_or_default().to_string(),
            case["reason"].as_str().unwrap_or_default().to_string(),
        )
    };
    for name in [
        "unknown_option_is_named",
        "round_trips_at_every_size",
        "dropped_stream_leaves_nothing",
        "discard_is_idempotent",
        "corruption_is_detected",
        "commit_is_atomic_and_once",
        "resolves_from_a_fresh_instance",
        "dispose_is_idempotent",
        "bad_pointers_have_their_own_errors",
        "eight_threads_hundred_streams",
    ] {
        assert_eq!(status(name).0, "pass", "{name}: {:?}", status(name).1);
    }
    // The example writes no savepoints and says so in its capabilities: those cases are skipped,
    // with the reason, never silently.
    let (savepoint, why) = status("savepoint_to_custom_target");
    assert_eq!(savepoint, "skip");
    assert!(why.contains("savepoints"), "{why}");
}

#[test]
fn dropped_into_plugins_it_is_found_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let installed = plugins.join("libcairn_example_plugin.so");
    std::fs::copy(example_lib(), &installed).unwrap();
    set_mode(&installed, 0o755);
    // The config the README's guide shows.
    std::fs::write(
        dir.path().join("cairn.toml"),
        "[plugins]\nsearch-path = [\"plugins\"]\n\n\
         [storage]\nplugin = \"example-dir\"\n\n\
         [storage.options]\nroot = \"checkpoints\"\n",
    )
    .unwrap();

    let out = cairn(&["plugins", "list", "--json"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&out);
    let listed = doc["plugins"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{doc:#}");
    assert_eq!(listed[0]["name"], NAME);
    assert_eq!(
        listed[0]["api_version"],
        cairn_plugin_api::API_VERSION.to_string()
    );
    assert!(
        listed[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("libcairn_example_plugin.so"),
        "{doc:#}"
    );
    assert_eq!(doc["refused"].as_array().unwrap().len(), 0, "{doc:#}");

    let out = cairn(&["plugins", "info", NAME, "--json"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let caps = json(&out)["capabilities"].clone();
    for cap in ["persistent", "stored-handles", "corrupt-for-testing"] {
        assert!(
            caps.as_array().unwrap().iter().any(|c| c == cap),
            "{cap}: {caps}"
        );
    }

    // The guide's config really opens the plugin's storage: a job checkpoints into it, and the
    // checkpoints are listed back through it.
    std::fs::write(
        dir.path().join("cairn.toml"),
        "[plugins]\nsearch-path = [\"plugins\"]\n\n\
         [storage]\nplugin = \"example-dir\"\n\n\
         [storage.options]\nroot = \"checkpoints\"\n\n\
         [checkpointing]\ninterval = \"50ms\"\nexternalized-retention = \"retain-on-cancellation\"\n\n\
         [job]\nid = \"guide\"\nkeys = 100\nrate = 20000\n",
    )
    .unwrap();
    let out = cairn(&["run", "--records", "20000", "--json"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("checkpoints").join("guide").is_dir());
}
