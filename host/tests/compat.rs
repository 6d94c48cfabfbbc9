//! Older minor versions: a real plugin built against plugin API 1.0 (the `__api_1_0` feature
//! leaves out every module added since, see `plugin-api/src/version.rs`) still loads and passes the suite, and
//! each function added in API 1.1 answers `Unsupported`, which the host reports.

use std::{path::PathBuf, sync::OnceLock};

use cairn_plugin_api::{ApiVersion, StorageError};

use crate::util::{cairn, json_of};

fn old_minor_lib() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = cairn_harness::artifacts::workspace_root();
            let libs = cairn_harness::artifacts::build_cdylibs(
                &root.join("tests/fixtures/api-old-minor/Cargo.toml"),
                &root.join("target/api-old-minor"),
                &["cairn-fixture-api-old-minor"],
            )?;
            libs.get("cairn-fixture-api-old-minor")
                .cloned()
                .ok_or_else(|| format!("the fixture built no shared library: {libs:?}"))
        })
        .clone()
        .unwrap_or_else(|e| panic!("cannot build the API 1.0 fixture: {e}"))
}

#[test]
fn an_api_1_0_plugin_loads_and_a_1_1_call_is_unsupported() {
    let plugin = cairn_host::loader::load_path(&old_minor_lib(), None).unwrap();
    assert_eq!(plugin.manifest().api_version, ApiVersion::new(1, 0));
    let storage = plugin.open("").unwrap();
    let job = storage.job("job").unwrap();
    // 1.0 calls work.
    let loc = job.begin_checkpoint(1).unwrap();
    loc.commit(b"meta").unwrap();
    assert_eq!(job.list_completed().unwrap().len(), 1);
    // The plugin has no API 1.1 module: the host gets Unsupported, naming the call.
    match job.list_uncommitted_savepoints(None) {
        Err(StorageError::Unsupported(m)) => {
            assert!(
                m.contains("list_uncommitted_savepoints") && m.contains("1.1"),
                "{m}"
            )
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // So do the lease register and the savepoint listing, each naming its call.
    let unsupported = |r: Result<(), StorageError>, call: &str| match r {
        Err(StorageError::Unsupported(m)) => {
            assert!(m.contains(call) && m.contains("1.1"), "{m}")
        }
        other => panic!("{call}: expected Unsupported, got {other:?}"),
    };
    unsupported(job.read_lease().map(drop), "read_lease");
    unsupported(job.write_lease(b"r", None).map(drop), "write_lease");
    unsupported(job.list_savepoints(None).map(drop), "list_savepoints");
    // And the validate-only call and the option list, which live on the plugin.
    unsupported(plugin.validate(""), "validate");
    unsupported(plugin.options().map(drop), "options");
    // A 1.1 plugin answers it.
    let fs = crate::util::load("cairn-storage-fs-cdylib");
    let dir = tempfile::tempdir().unwrap();
    let s = fs.open(&crate::util::fs_options(dir.path())).unwrap();
    assert_eq!(
        s.job("job")
            .unwrap()
            .list_uncommitted_savepoints(None)
            .unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn verify_passes_and_gc_reports_what_the_plugin_cannot_do() {
    let lib = old_minor_lib();
    let dir = tempfile::tempdir().unwrap();
    let out = cairn(
        &["plugins", "verify", lib.to_str().unwrap(), "--json"],
        dir.path(),
    );
    let doc = json_of(&out);
    assert_eq!(doc["ok"], true, "{doc}");
    std::fs::write(
        dir.path().join("cairn.toml"),
        format!(
            "[storage]\npath = {:?}\n\n[job]\nid = \"it\"\n",
            lib.display().to_string()
        ),
    )
    .unwrap();
    let out = cairn(&["checkpoints", "gc", "--json"], dir.path());
    let doc = json_of(&out);
    assert!(out.status.success(), "{doc}");
    let notes = doc["notes"].to_string();
    assert!(
        notes.contains("uncommitted savepoints were not looked for") && notes.contains("1.1"),
        "{doc}"
    );
}

#[test]
fn an_api_1_0_plugin_falls_back_to_a_local_lock_that_refuses_a_second_run() {
    let lib = old_minor_lib();
    let dir = tempfile::tempdir().unwrap();
    let locks = dir.path().join("locks");
    std::fs::write(
        dir.path().join("cairn.toml"),
        format!(
            "[storage]\npath = {:?}\n\n[checkpointing]\ninterval = \"100ms\"\n\n\
             [job]\nid = \"it\"\nkeys = 50\nrate = 5000\n\n[lease]\nlocal-dir = {:?}\n",
            lib.display().to_string(),
            locks.display().to_string()
        ),
    )
    .unwrap();
    let mut first = crate::lease::Running::start(&["run"], dir.path());
    let note = first.wait_for("the fallback note", |l| l.starts_with("warning: "));
    assert!(
        note.contains("no lease support")
            && note.contains("1.1")
            && note.contains(&locks.display().to_string()),
        "{note}"
    );
    first.wait_for_checkpoints(1);
    let pid = first.child.id();
    for args in [&["run", "--records", "10"][..], &["checkpoints", "gc"][..]] {
        let out = cairn(args, dir.path());
        assert!(!out.status.success(), "{args:?} was not refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let error = stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or("");
        assert!(
            error.contains("job 'it' is in use")
                && error.contains(&format!("(pid {pid},"))
                && error.contains(".lock"),
            "{args:?}: {stderr}"
        );
    }
    let (status, _, log) = first.stop();
    assert_eq!(status.code(), Some(143), "{log}");
    // The kernel released the lock with the process: the next run gets it.
    let out = cairn(&["run", "--records", "10"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `config check` with an API 1.0 plugin: it loads, but its options cannot be checked without
/// opening the storage, which the check never does; the check passes and says so, and
/// `plugins info` says the plugin lists no options.
#[test]
fn config_check_of_an_api_1_0_plugin_says_its_options_were_not_checked() {
    let lib = old_minor_lib();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cairn.toml"),
        format!(
            "[storage]\npath = {:?}\n\n[checkpointing]\ninterval = \"1s\"\n",
            lib.display().to_string()
        ),
    )
    .unwrap();
    let out = cairn(&["config", "check", "--json"], dir.path());
    let doc = json_of(&out);
    assert!(out.status.success(), "{doc}");
    assert_eq!(doc["storage"]["loaded"]["options_checked"], false, "{doc}");
    assert_eq!(doc["storage"]["loaded"]["api_version"], "1.0", "{doc}");
    let warning = doc["warnings"][0].as_str().unwrap();
    assert!(warning.contains("has no validate-only call"), "{warning}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("warning: plugin "), "{err}");
    let out = cairn(&["plugins", "info", lib.to_str().unwrap()], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("options:       not listed (built against plugin API 1.0"),
        "{text}"
    );
}
