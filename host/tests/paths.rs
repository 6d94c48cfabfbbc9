//! Issue 9.1 and 9.8 through the `cairn` binary, on the filesystem plugin.
//!
//! Each symlink test plants the link the issue names in a job's directory and runs the commands
//! that used to follow it; the files it points to must be untouched and the command's output
//! must name the link. The crafted-path test sends `..`, absolute paths outside the base, NUL
//! and 4 KiB names through every entry point and checks that each is refused before anything
//! outside the base is read (a readable checkpoint sits there, so a read would show), written or
//! deleted.

use std::{fs, os::unix::fs::symlink, path::Path};

use crate::util::{cairn, cairn_ok, copy_lib, json_of, run_until_checkpoints};

const FILE: &str = "0123456789abcdef0123456789abcdef";

/// A job directory with the filesystem plugin, a config whose job is `it` and keeps `retained`
/// checkpoints, and one run's checkpoints.
fn job_with_checkpoints(retained: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    fs::create_dir(&plugins).unwrap();
    copy_lib(
        "cairn-storage-fs-cdylib",
        &plugins,
        "libcairn_storage_fs.so",
    );
    fs::write(
        dir.path().join("cairn.toml"),
        format!(
            "[plugins]\nsearch-path = [\"plugins\"]\n\n[storage]\nplugin = \"filesystem\"\n\n\
             [storage.options]\ndir = \"checkpoints\"\nsavepoint-dir = \"savepoints\"\n\n\
             [checkpointing]\ninterval = \"100ms\"\nnum-retained = {retained}\n\
             externalized-retention = \"retain-on-cancellation\"\n\n\
             [job]\nid = \"it\"\nkeys = 100\nrate = 20000\nstate-bytes-per-key = \"1KiB\"\n"
        ),
    )
    .unwrap();
    run_until_checkpoints(&["run"], dir.path(), 3);
    dir
}

/// Outside the base: a committed checkpoint copied from the job (readable, so reading it would
/// succeed) and a state file with a generated name.
fn outside(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("outside");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join(FILE), b"precious").unwrap();
    out
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.push((p.display().to_string(), fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn gc_delete_and_list_skip_a_linked_chk_dir_and_say_so() {
    let dir = job_with_checkpoints(3);
    let victim = outside(dir.path());
    let before = snapshot(&victim);
    let job = dir.path().join("checkpoints/it");
    symlink(&victim, job.join("chk-99")).unwrap();
    for args in [
        &["checkpoints", "gc"][..],
        &["checkpoints", "list"],
        &["checkpoints", "delete", "99"],
    ] {
        let out = cairn(args, dir.path());
        assert!(
            stderr(&out).contains("chk-99") && stderr(&out).contains("symbolic link"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(snapshot(&victim), before, "{args:?}");
    }
}

#[test]
fn linked_shared_and_taskowned_dirs_are_not_collected() {
    for area in ["shared", "taskowned"] {
        let dir = job_with_checkpoints(3);
        let victim = outside(dir.path());
        let before = snapshot(&victim);
        let job = dir.path().join("checkpoints/it");
        let _ = fs::remove_dir_all(job.join(area));
        symlink(&victim, job.join(area)).unwrap();
        let out = cairn(&["checkpoints", "gc", "--json"], dir.path());
        assert!(
            stderr(&out).contains(area) && stderr(&out).contains("symbolic link"),
            "{area}: {}",
            stderr(&out)
        );
        assert_eq!(snapshot(&victim), before, "{area}");
    }
}

#[test]
fn a_savepoint_linked_as_chk_500_survives_gc_run_from_latest_and_delete() {
    let dir = job_with_checkpoints(1);
    // A real savepoint, taken by hand through the plugin and committed.
    let sp = dir.path().join("savepoints/savepoint-it-0123456789ab");
    fs::create_dir_all(&sp).unwrap();
    fs::write(sp.join(FILE), b"savepoint state").unwrap();
    fs::write(
        sp.join("_metadata"),
        cairn_plugin_kit::frame::encode(b"not read"),
    )
    .unwrap();
    let before = snapshot(&sp);
    let job = dir.path().join("checkpoints/it");
    symlink(&sp, job.join("chk-500")).unwrap();
    let out = cairn(&["checkpoints", "gc"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot(&sp), before, "gc");
    // A checkpoint of its own, so the run subsumes (num-retained = 1) with the link in place.
    run_until_checkpoints(&["run", "--from", "latest"], dir.path(), 1);
    assert_eq!(
        snapshot(&sp),
        before,
        "run --from latest with num-retained = 1"
    );
    let out = cairn(&["checkpoints", "delete", "500"], dir.path());
    assert!(!out.status.success());
    assert_eq!(snapshot(&sp), before, "delete 500");
    let pointer = job.join("chk-500").display().to_string();
    let out = cairn(&["checkpoints", "delete", &pointer], dir.path());
    assert!(
        !out.status.success() && stderr(&out).contains("symbolic link"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&sp), before, "delete by pointer");
}

#[test]
fn crafted_paths_touch_nothing_outside_the_base() {
    let dir = job_with_checkpoints(3);
    // A readable checkpoint of the same job outside the base: a read of it would succeed.
    let latest = json_of(&cairn_ok(&["checkpoints", "list", "--json"], dir.path()))["checkpoints"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["pointer"]
        .as_str()
        .unwrap()
        .to_string();
    let elsewhere = dir.path().join("elsewhere/it/chk-7");
    fs::create_dir_all(&elsewhere).unwrap();
    for e in fs::read_dir(&latest).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, elsewhere.join(p.file_name().unwrap())).unwrap();
    }
    let before = snapshot(&elsewhere);
    let base = fs::canonicalize(dir.path().join("checkpoints")).unwrap();
    let long = "x".repeat(4096);
    let crafted = [
        format!("{}/../elsewhere/it/chk-7", base.display()),
        elsewhere.display().to_string(),
        format!("{}/_metadata", elsewhere.display()),
        // A NUL cannot be an argument; the kit refuses it in pointers and locators (its unit tests),
        // and a control character stands for it here.
        format!("{}/it/chk-7\u{7}/x", base.display()),
        format!("{}/{long}/chk-7", base.display()),
        format!("{}/it/chk-{long}", base.display()),
        "/etc/passwd".to_string(),
    ];
    for p in &crafted {
        for args in [
            vec!["checkpoints", "show", p.as_str()],
            vec!["checkpoints", "verify", p.as_str()],
            vec!["checkpoints", "delete", p.as_str()],
            vec!["run", "--from", p.as_str(), "--duration", "200ms"],
        ] {
            let out = cairn(&args, dir.path());
            assert!(
                !out.status.success(),
                "{args:?} succeeded: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert_eq!(snapshot(&elsewhere), before, "{args:?}");
        }
    }
    // gc over a base with links in every folder of the layout reads and deletes nothing there.
    let job = base.join("it");
    symlink(&elsewhere, job.join("chk-8")).unwrap();
    for d in fs::read_dir(&job).unwrap() {
        let p = d.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            symlink(
                elsewhere.join(FILE),
                p.join("fedcba9876543210fedcba9876543210"),
            )
            .unwrap();
        }
    }
    let out = cairn(&["checkpoints", "gc"], dir.path());
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    assert_eq!(snapshot(&elsewhere), before, "gc");
}

#[test]
fn gc_removes_an_uncommitted_savepoint_of_the_job_and_nothing_else() {
    let dir = job_with_checkpoints(3);
    let sp = dir.path().join("savepoints");
    // What a savepoint interrupted by SIGKILL leaves: state, no _metadata.
    let ours = sp.join("savepoint-it-0123456789ab");
    let theirs = sp.join("savepoint-other-0123456789ab");
    let done = sp.join("savepoint-it-ba9876543210");
    for d in [&ours, &theirs, &done] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join(FILE), b"state").unwrap();
    }
    fs::write(
        done.join("_metadata"),
        cairn_plugin_kit::frame::encode(b"x"),
    )
    .unwrap();
    let doc = json_of(&cairn_ok(
        &["checkpoints", "gc", "--dry-run", "--json"],
        dir.path(),
    ));
    let listed = doc["uncommitted_savepoints"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{doc}");
    assert!(
        listed[0]
            .as_str()
            .unwrap()
            .ends_with("savepoint-it-0123456789ab"),
        "{doc}"
    );
    assert!(ours.join(FILE).exists(), "a dry run removed something");
    cairn_ok(&["checkpoints", "gc"], dir.path());
    assert!(!ours.exists());
    assert!(theirs.join(FILE).exists() && done.join(FILE).exists());
}
