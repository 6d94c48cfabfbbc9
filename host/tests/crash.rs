//! `cairn bench crash`, the crash-trial driver, with a short N: every kill's checks ran, nothing
//! completed was lost or damaged, and every chain's digest equals the uninterrupted run's. The
//! README gives the command for the full 200 trials.

use crate::util::{cairn, json_of, lib};

#[test]
fn a_short_crash_campaign_loses_nothing_and_gets_every_digest_right() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = lib("cairn-storage-fs-cdylib");
    let out = cairn(
        &[
            "bench",
            "crash",
            "--plugin",
            plugin.to_str().unwrap(),
            "--trials",
            "8",
            "--records",
            "10000",
            "--seed",
            "9",
            "--dir",
            dir.path().to_str().unwrap(),
            "--json",
        ],
        dir.path(),
    );
    let report = json_of(&out);
    eprintln!("{report:#}");
    assert!(out.status.success(), "{report:#}");
    assert_eq!(report["ok"], true);
    assert_eq!(report["trials"], 8);
    assert_eq!(
        (report["lost"].as_u64(), report["corrupt"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(report["gc_failures"], 0);
    assert_eq!(report["wrong_digests"], 0);
    assert!(
        report["digests_compared"].as_u64().unwrap() >= 2,
        "{report:#}"
    );
    assert!(
        report["checkpoints_checked"].as_u64().unwrap() >= 1,
        "{report:#}"
    );
    // Every shape got its chains; the scratch directories are gone.
    for shape in report["shapes"].as_array().unwrap() {
        assert!(shape["chains"].as_u64().unwrap() >= 1, "{shape}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn the_crash_driver_refuses_a_plugin_whose_checkpoints_die_with_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = lib("cairn-storage-memory-cdylib");
    let out = cairn(
        &[
            "bench",
            "crash",
            "--plugin",
            plugin.to_str().unwrap(),
            "--trials",
            "1",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not persistent"), "{stderr}");
}
