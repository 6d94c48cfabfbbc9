use std::{fs, path::PathBuf};

use cairn_plugin_api::{read_handle_fully, Scope, StateHandle, StorageError};

use crate::util::{data, names, open, Env};

/// Whether `name` looks like `savepoint-<job6>-<hex12>` for `job6`.
fn is_savepoint_name(name: &str, job6: &str) -> bool {
    name.strip_prefix(&format!("savepoint-{job6}-"))
        .is_some_and(|hex| hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn savepoint_to_an_explicit_target() {
    let env = Env::new();
    let target = env.tmp.path().join("savepoints/nested");
    let job = env.storage.job("my-long-job-id").unwrap();
    let loc = job
        .begin_savepoint(7, Some(target.to_str().unwrap()))
        .unwrap();
    let created = names(&target);
    assert_eq!(created.len(), 1, "{created:?}");
    assert!(is_savepoint_name(&created[0], "my-lon"), "{created:?}");

    // Both scopes go into the savepoint directory: it is self-contained.
    let mut handles = Vec::new();
    for scope in [Scope::Exclusive, Scope::Shared] {
        let mut out = loc.create_stream(scope).unwrap();
        out.write(&data(100_000, 1)).unwrap();
        let h = out.close_and_get_handle().unwrap().unwrap();
        let StateHandle::Stored { locator, .. } = &h else {
            panic!("expected stored")
        };
        assert!(
            PathBuf::from(locator).starts_with(fs::canonicalize(&target).unwrap()),
            "{locator}"
        );
        handles.push(h);
    }
    let done = loc.commit(b"savepoint metadata").unwrap();
    assert_eq!(done.checkpoint_id, 7);
    let dir = PathBuf::from(&done.pointer);
    assert!(is_savepoint_name(
        dir.file_name().unwrap().to_str().unwrap(),
        "my-lon"
    ));
    // Savepoints are not checkpoints of the job.
    assert!(job.list_completed().unwrap().is_empty());

    let fresh = env.reopen();
    assert_eq!(
        fresh.resolve(&done.pointer).unwrap().metadata,
        b"savepoint metadata"
    );
    for h in &handles {
        assert_eq!(
            read_handle_fully(fresh.as_ref(), h).unwrap(),
            data(100_000, 1)
        );
    }
    fresh.dispose(&done.pointer).unwrap();
    assert!(!dir.exists());
    assert!(target.exists(), "the target directory itself stays");
    fresh.dispose(&done.pointer).unwrap();
}

#[test]
fn savepoint_to_the_default_target() {
    let tmp = tempfile::tempdir().unwrap();
    let default = tmp.path().join("sp-default");
    let storage = open(
        &tmp.path().join("checkpoints"),
        &format!("savepoint-dir = {:?}", default.to_str().unwrap()),
    );
    assert!(
        !default.exists(),
        "savepoint-dir is created only when needed"
    );
    let job = storage.job("j").unwrap();
    let pointer = job
        .begin_savepoint(1, None)
        .unwrap()
        .commit(b"m")
        .unwrap()
        .pointer;
    assert!(PathBuf::from(&pointer).starts_with(fs::canonicalize(&default).unwrap()));
    assert!(is_savepoint_name(&names(&default)[0], "j"));
    // An explicit target wins over the default.
    let other = tmp.path().join("sp-other");
    let pointer2 = job
        .begin_savepoint(2, Some(other.to_str().unwrap()))
        .unwrap()
        .commit(b"m")
        .unwrap()
        .pointer;
    assert!(PathBuf::from(&pointer2).starts_with(fs::canonicalize(&other).unwrap()));
    assert_eq!(names(&default).len(), 1);
}

#[test]
fn savepoint_without_any_target_is_a_clear_error() {
    let env = Env::new();
    let job = env.storage.job("j").unwrap();
    let err = job
        .begin_savepoint(1, None)
        .err()
        .expect("no target configured");
    assert!(
        matches!(&err, StorageError::InvalidConfig(m) if m.contains("savepoint target") && m.contains("storage.options.savepoint-dir")),
        "{err}"
    );
    let err = job.begin_savepoint(1, Some("  ")).err().unwrap();
    assert!(matches!(err, StorageError::InvalidConfig(_)), "{err}");
}

#[test]
fn an_uncommitted_savepoint_is_disposed_on_failure() {
    let env = Env::new();
    let target = env.tmp.path().join("sp");
    let loc = env
        .storage
        .job("j")
        .unwrap()
        .begin_savepoint(1, Some(target.to_str().unwrap()))
        .unwrap();
    let mut out = loc.create_stream(Scope::Exclusive).unwrap();
    out.write(&data(100_000, 1)).unwrap();
    out.close_and_get_handle().unwrap().unwrap();
    loc.dispose_on_failure().unwrap();
    assert!(names(&target).is_empty());
}
