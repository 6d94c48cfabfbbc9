//! `cairn checkpoints copy` (issue 13.7): a checkpoint copied from the filesystem to SeaweedFS
//! restores there exactly; a copy that fails partway (a damaged source handle) commits nothing
//! at the destination and leaves no location behind.

use std::path::Path;

use cairn_host::runtime::keyed_counter;
use serde_json::Value;

use crate::{
    lease::{fs_job_with, s3_job, take_savepoint, SAVEPOINT_ON_SIGTERM},
    util::{cairn, cairn_ok, json_of, run_until_checkpoints},
};

/// Every state handle stored, none inline, so the copy moves objects.
const STORED: &str = "inline-threshold = \"0B\"\n";

fn listed(dir: &Path) -> Vec<Value> {
    json_of(&cairn_ok(&["checkpoints", "list", "--json"], dir))["checkpoints"]
        .as_array()
        .unwrap()
        .clone()
}

/// Replace each `(from, to)` once in the job directory's `cairn.toml`.
fn edit_config(dir: &Path, edits: &[(&str, &str)]) {
    let path = dir.join("cairn.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{from:?} not in {text}");
        text = text.replacen(from, to, 1);
    }
    std::fs::write(&path, text).unwrap();
}

fn copy_to(source: &Path, destination: &Path, what: &str) -> std::process::Output {
    let to = destination.join("cairn.toml");
    cairn(
        &[
            "checkpoints",
            "copy",
            what,
            "--to-config",
            to.to_str().unwrap(),
            "--json",
        ],
        source,
    )
}

#[test]
fn a_checkpoint_copied_from_the_filesystem_to_s3_restores_there_exactly() {
    copied_to_s3_restores_exactly(false);
}

/// An incremental checkpoint's chain (SHARED objects written by earlier checkpoints) is carried
/// over: the copy on S3 verifies and restores exactly, with nothing of the source.
#[test]
fn an_incremental_checkpoint_copied_from_the_filesystem_to_s3_restores_there_exactly() {
    copied_to_s3_restores_exactly(true);
}

fn copied_to_s3_restores_exactly(incremental: bool) {
    let source = fs_job_with(STORED, "");
    let destination = s3_job("");
    if incremental {
        // A page per key and few records an interval, so most pages stay unchanged and the
        // latest checkpoint's chain reaches back to objects earlier checkpoints wrote.
        edit_config(
            source.path(),
            &[
                ("[checkpointing]\n", "[checkpointing]\nincremental = true\n"),
                (
                    "rate = 20000\n",
                    "rate = 20\nstate-bytes-per-key = \"4KiB\"\n",
                ),
            ],
        );
        // The same job at the destination (its settings must match to restore).
        edit_config(
            destination.path(),
            &[(
                "rate = 20000\n",
                "rate = 20000\nstate-bytes-per-key = \"4KiB\"\n",
            )],
        );
    }
    // With incremental checkpoints, the second and later extend a chain.
    run_until_checkpoints(&["run"], source.path(), if incremental { 4 } else { 2 });
    let latest = listed(source.path()).last().unwrap().clone();
    let id = latest["id"].as_u64().unwrap();
    if incremental {
        let shown = json_of(&cairn_ok(
            &["checkpoints", "show", "latest", "--json"],
            source.path(),
        ));
        assert_eq!(shown["state"]["kind"], "incremental", "{shown:#}");
        let older = shown["state"]["shared_objects"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["from_id"].as_u64() < Some(id))
            .count();
        assert!(older > 0, "no object of an earlier checkpoint: {shown:#}");
    }

    let out = copy_to(source.path(), destination.path(), "latest");
    let report = json_of(&out);
    assert!(out.status.success(), "{report}");
    assert_eq!(report["id"], id, "{report}");
    assert_eq!(report["kind"], "checkpoint");
    assert_eq!(report["from"], latest["pointer"]);
    let pointer = report["pointer"].as_str().unwrap().to_string();
    assert!(pointer.starts_with("s3://"), "{report}");
    assert!(report["handles"].as_u64().unwrap() >= 2, "{report}");

    let there = listed(destination.path());
    assert_eq!(there.len(), 1, "{there:?}");
    assert_eq!(there[0]["pointer"], pointer.as_str());
    cairn_ok(&["checkpoints", "verify"], destination.path());
    // The same checkpoint twice is refused: the destination has it.
    let again = copy_to(source.path(), destination.path(), "latest");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

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
        destination.path(),
    );
    let summary = json_of(&out);
    assert_eq!(summary["restored_from"], pointer.as_str(), "{summary}");
    assert_eq!(
        summary["counts_sha256"],
        keyed_counter::counts_digest(&keyed_counter::expected_counts(300, 2, records)),
        "{summary}"
    );
}

#[test]
fn a_copy_that_fails_partway_commits_nothing_at_the_destination() {
    let source = fs_job_with(STORED, "");
    run_until_checkpoints(&["run"], source.path(), 1);
    let latest = listed(source.path()).last().unwrap().clone();
    let id = latest["id"].as_u64().unwrap();
    // Flip a byte in the middle of the last handle the copy reads (metadata order): the
    // handles before it are copied, then this one fails its checksum.
    let shown = json_of(&cairn_ok(
        &["checkpoints", "show", &id.to_string(), "--json"],
        source.path(),
    ));
    let locators: Vec<String> = shown["metadata"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["handles"].as_array().unwrap().clone())
        .map(|h| h["locator"].as_str().expect("a stored handle").to_string())
        .collect();
    assert!(locators.len() >= 2, "{shown}");
    let victim = &source
        .path()
        .join("checkpoints")
        .join(locators.last().unwrap());
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(victim, bytes).unwrap();

    let destination = s3_job("");
    let out = copy_to(source.path(), destination.path(), &id.to_string());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or("");
    assert!(
        error.contains("reading checkpoint") && error.contains("from the source"),
        "{stderr}"
    );
    // Nothing committed, and nothing left uncommitted either.
    assert!(listed(destination.path()).is_empty());
    let gc = json_of(&cairn_ok(
        &["checkpoints", "gc", "--dry-run", "--json"],
        destination.path(),
    ));
    assert_eq!(gc["uncommitted_checkpoints"], serde_json::json!([]), "{gc}");
    assert_eq!(gc["orphaned_objects"], serde_json::json!([]), "{gc}");
}

#[test]
fn a_savepoint_copied_to_s3_is_a_savepoint_there_and_restores_exactly() {
    let source = fs_job_with(STORED, SAVEPOINT_ON_SIGTERM);
    let (savepoint, id) = take_savepoint(source.path());
    let destination = s3_job("");
    let out = copy_to(source.path(), destination.path(), &id.to_string());
    let report = json_of(&out);
    assert!(out.status.success(), "{report}");
    assert_eq!(report["kind"], "savepoint", "{report}");
    assert_eq!(report["from"], savepoint.as_str());
    let pointer = report["pointer"].as_str().unwrap().to_string();
    // Under the destination plugin's default savepoint location, listed as a savepoint.
    assert!(
        pointer.starts_with("s3://") && pointer.contains("-savepoints/"),
        "{report}"
    );
    let there = json_of(&cairn_ok(
        &["checkpoints", "list", "--kind", "savepoint", "--json"],
        destination.path(),
    ));
    assert_eq!(
        there["checkpoints"][0]["pointer"],
        pointer.as_str(),
        "{there}"
    );
    assert_eq!(there["checkpoints"][0]["id"], id, "{there}");

    let records = 100_000u64;
    let out = cairn_ok(
        &[
            "run",
            "--from",
            &pointer,
            "--records",
            &records.to_string(),
            "--json",
        ],
        destination.path(),
    );
    let summary = json_of(&out);
    assert_eq!(summary["restored_from"], pointer.as_str(), "{summary}");
    assert_eq!(
        summary["counts_sha256"],
        keyed_counter::counts_digest(&keyed_counter::expected_counts(300, 2, records)),
        "{summary}"
    );
}
