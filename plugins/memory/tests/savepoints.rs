//! Savepoints: always in a directory, under the target or the default savepoint directory.

use std::{fs, path::Path};

use cairn_plugin_api::StorageError;
use tempfile::TempDir;

use crate::util::{dir_option, open, write_stream};

/// Check a savepoint directory's name and place: `<target>/savepoint-<6 chars>-<12 hex>`.
fn assert_savepoint_dir(pointer: &str, target: &Path, job_prefix: &str) {
    let dir = Path::new(pointer);
    assert!(dir.is_absolute(), "{pointer}");
    assert_eq!(dir.parent().unwrap(), target);
    let name = dir.file_name().unwrap().to_str().unwrap();
    let random = name
        .strip_prefix(&format!("savepoint-{job_prefix}-"))
        .unwrap_or_else(|| panic!("{name}"));
    assert!(
        random.len() == 12 && random.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
    assert!(dir.join("_metadata").is_file());
}

#[test]
fn a_savepoint_goes_to_the_target_and_resolves_from_a_fresh_instance() {
    let tmp = TempDir::new().unwrap();
    let target = tmp.path().join("sp");
    let storage = open("");
    let job = storage.job("my-long-job-id").unwrap();
    let loc = job
        .begin_savepoint(7, Some(target.to_str().unwrap()))
        .unwrap();
    let handle = write_stream(loc.as_ref(), b"savepoint state")
        .unwrap()
        .unwrap();
    assert!(
        handle.is_inline(),
        "savepoint state is inline, so the savepoint is self-contained"
    );
    let done = loc.commit(b"sp-meta").unwrap();
    assert_eq!(done.checkpoint_id, 7);
    assert_savepoint_dir(&done.pointer, &target, "my-lon");
    assert!(matches!(
        loc.commit(b"x"),
        Err(StorageError::AlreadyExists(_))
    ));
    // Savepoints are not checkpoints.
    assert!(job.list_completed().unwrap().is_empty());
    drop(storage);

    let fresh = open("");
    assert_eq!(fresh.resolve(&done.pointer).unwrap().metadata, b"sp-meta");
    fresh.dispose(&done.pointer).unwrap();
    assert!(!Path::new(&done.pointer).exists());
    fresh.dispose(&done.pointer).unwrap();
    assert!(matches!(
        fresh.resolve(&done.pointer),
        Err(StorageError::NotFound(_))
    ));
}

#[test]
fn without_a_target_the_default_savepoint_dir_is_used() {
    let tmp = TempDir::new().unwrap();
    let storage = open(&dir_option("savepoint-dir", tmp.path()));
    let job = storage.job("ab").unwrap();
    let loc = job.begin_savepoint(1, None).unwrap();
    let done = loc.commit(b"m").unwrap();
    assert_savepoint_dir(&done.pointer, tmp.path(), "ab");

    // An explicit target wins over the default.
    let other = tmp.path().join("explicit");
    let done = job
        .begin_savepoint(2, Some(other.to_str().unwrap()))
        .unwrap()
        .commit(b"m")
        .unwrap();
    assert_savepoint_dir(&done.pointer, &other, "ab");
}

#[test]
fn without_target_or_default_it_is_invalid_config() {
    let storage = open("");
    let job = storage.job("job-1").unwrap();
    let err = job.begin_savepoint(1, None).map(|_| ()).unwrap_err();
    assert!(
        matches!(&err, StorageError::InvalidConfig(m) if m.contains("storage.options.savepoint-dir")),
        "{err}"
    );
    let err = job.begin_savepoint(1, Some("")).map(|_| ()).unwrap_err();
    assert!(matches!(err, StorageError::InvalidConfig(_)), "{err}");
}

#[test]
fn a_failed_savepoint_leaves_no_directory() {
    let tmp = TempDir::new().unwrap();
    let storage = open(&dir_option("savepoint-dir", tmp.path()));
    let job = storage.job("job-1").unwrap();
    let loc = job.begin_savepoint(1, None).unwrap();
    write_stream(loc.as_ref(), b"state").unwrap();
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    loc.dispose_on_failure().unwrap();
    loc.dispose_on_failure().unwrap();
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
}
