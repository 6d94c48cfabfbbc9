//! Ways out of damage (issue 13.6): a truncated `_metadata` is named by `run --from latest`
//! (with the older checkpoint that restores), skipped and named by `gc` (which then keeps every
//! stored object), refused by a plain `delete`, and removed by `delete --force`.

use std::path::Path;

use cairn_host::runtime::keyed_counter;
use serde_json::Value;

use crate::{
    lease::fs_job,
    util::{cairn, cairn_ok, json_of, run_until_checkpoints},
};

fn listed(dir: &Path) -> Vec<Value> {
    json_of(&cairn_ok(&["checkpoints", "list", "--json"], dir))["checkpoints"]
        .as_array()
        .unwrap()
        .clone()
}

fn error_line(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "not refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_string()
}

#[test]
fn a_truncated_metadata_is_named_by_run_and_gc_and_removed_by_delete_force() {
    let dir = fs_job("");
    run_until_checkpoints(&["run"], dir.path(), 3);
    let before = listed(dir.path());
    assert!(before.len() >= 2, "{before:?}");
    let id = |c: &Value| c["id"].as_u64().unwrap();
    let pointer = |c: &Value| c["pointer"].as_str().unwrap().to_string();
    let (newest, older) = (&before[before.len() - 1], &before[before.len() - 2]);
    let (newest_id, newest_ptr, older_ptr) = (id(newest), pointer(newest), pointer(older));
    let location = dir
        .path()
        .join("checkpoints/it")
        .join(format!("chk-{newest_id}"));
    let meta = location.join("_metadata");
    let bytes = std::fs::read(&meta).unwrap();
    std::fs::write(&meta, &bytes[..bytes.len() / 2]).unwrap();

    // `run --from latest` picks nothing silently: it names the damage and the way out.
    let line = error_line(&cairn(
        &["run", "--from", "latest", "--records", "10"],
        dir.path(),
    ));
    for needle in [
        format!("the newest checkpoint of job 'it', {newest_id}"),
        format!("`cairn run --from {older_ptr}`"),
        format!("`cairn checkpoints delete --force {newest_id}`"),
    ] {
        assert!(line.contains(&needle), "{needle:?} missing from: {line}");
    }

    // gc skips it, names it, and removes no stored object.
    let files_before = std::fs::read_dir(&location).unwrap().count();
    let out = cairn(&["checkpoints", "gc", "--json"], dir.path());
    let doc = json_of(&out);
    assert!(out.status.success(), "{doc}");
    assert_eq!(doc["unreadable_checkpoints"][0]["id"], newest_id, "{doc}");
    assert!(doc["notes"].to_string().contains("delete --force"), "{doc}");
    assert_eq!(doc["removed_bytes"], 0, "{doc}");
    assert_eq!(std::fs::read_dir(&location).unwrap().count(), files_before);

    // A plain delete refuses and says how; --force shows what goes, then removes it.
    let line = error_line(&cairn(
        &["checkpoints", "delete", &newest_id.to_string()],
        dir.path(),
    ));
    assert!(line.contains("--force"), "{line}");
    let out = cairn_ok(
        &["checkpoints", "delete", "--force", &newest_id.to_string()],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "removing {newest_ptr}, whose metadata cannot be read"
        )),
        "{stderr}"
    );
    assert!(!location.exists());
    let after: Vec<u64> = listed(dir.path()).iter().map(id).collect();
    assert!(!after.contains(&newest_id), "{after:?}");
    // --force never takes a pointer that is not a checkpoint.
    let line = error_line(&cairn(
        &[
            "checkpoints",
            "delete",
            "--force",
            &format!("{newest_ptr}-typo"),
        ],
        dir.path(),
    ));
    assert!(line.contains("refusing to delete"), "{line}");

    // Now the older one is the latest, and it restores exactly.
    let records = 100_000u64;
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
    let summary = json_of(&out);
    assert_eq!(summary["restored_from"], older_ptr.as_str(), "{summary}");
    assert_eq!(
        summary["counts_sha256"],
        keyed_counter::counts_digest(&keyed_counter::expected_counts(300, 2, records)),
        "{summary}"
    );
}
