//! Checkpoints: commit once, listing, resolve, dispose, with and without a checkpoint directory.

use std::fs;

use cairn_plugin_api::{Capabilities, StorageError, StoragePlugin};
use cairn_storage_memory::MemoryPlugin;
use tempfile::TempDir;

use crate::util::{complete_checkpoint, dir_option, open, write_stream};

#[test]
fn manifest_and_info_without_a_directory() {
    let m = MemoryPlugin::manifest();
    assert_eq!(m.name, "memory");
    assert_eq!(m.version, env!("CARGO_PKG_VERSION"));
    m.validate().unwrap();
    assert_eq!(
        m.capabilities,
        Capabilities::SAVEPOINTS | Capabilities::SHARED_SCOPE | Capabilities::TASK_OWNED
    );
    let info = open("").info();
    assert_eq!(info.capabilities, m.capabilities);
    assert_eq!(info.location, "memory");
}

#[test]
fn commit_lists_resolves_and_commits_once() {
    let storage = open("");
    let job = storage.job("job-1").unwrap();
    let loc = job.begin_checkpoint(3).unwrap();
    write_stream(loc.as_ref(), b"state").unwrap();
    let uncommitted = job.begin_checkpoint(4).unwrap();
    write_stream(uncommitted.as_ref(), b"state").unwrap();
    assert!(job.list_completed().unwrap().is_empty());

    let done = loc.commit(b"meta-3").unwrap();
    assert_eq!(done.checkpoint_id, 3);
    assert_eq!(done.pointer, "memory:job-1/chk-3");
    let err = loc.commit(b"again").unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists(_)), "{err}");
    let err = job.begin_checkpoint(3).map(|_| ()).unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists(_)), "{err}");

    complete_checkpoint(storage.as_ref(), "job-1", 1, b"meta-1");
    let listed = job.list_completed().unwrap();
    let ids: Vec<u64> = listed.iter().map(|c| c.checkpoint_id).collect();
    assert_eq!(ids, [1, 3], "uncommitted 4 must not be listed");

    let resolved = storage.resolve(&done.pointer).unwrap();
    assert_eq!(resolved.metadata, b"meta-3");
    assert_eq!(resolved.pointer, done.pointer);
    // Another handle on the same job sees the same checkpoints; another job does not.
    assert_eq!(
        storage.job("job-1").unwrap().list_completed().unwrap(),
        listed
    );
    assert!(storage
        .job("job-2")
        .unwrap()
        .list_completed()
        .unwrap()
        .is_empty());
}

#[test]
fn two_locations_of_one_checkpoint_commit_once() {
    let storage = open("");
    let job = storage.job("job-1").unwrap();
    let a = job.begin_checkpoint(5).unwrap();
    let b = job.begin_checkpoint(5).unwrap();
    a.commit(b"a").unwrap();
    assert!(matches!(
        b.commit(b"b"),
        Err(StorageError::AlreadyExists(_))
    ));
    assert_eq!(
        storage.resolve("memory:job-1/chk-5").unwrap().metadata,
        b"a"
    );
}

#[test]
fn without_a_directory_a_fresh_instance_does_not_find_the_checkpoint() {
    let pointer = complete_checkpoint(open("").as_ref(), "job-1", 1, b"meta");
    let err = open("").resolve(&pointer).unwrap_err();
    assert!(
        matches!(&err, StorageError::NotFound(m) if m.contains("do not outlive")),
        "{err}"
    );
}

#[test]
fn resolve_and_dispose_refuse_empty_and_garbage_pointers() {
    let storage = open("");
    for p in [
        "",
        "garbage",
        "memory:job-1",
        "memory:../x/chk-1",
        "relative/chk-1",
        "/a/../chk-1",
    ] {
        let err = storage.resolve(p).unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidConfig(_)),
            "resolve {p:?}: {err}"
        );
        let err = storage.dispose(p).unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidConfig(_)),
            "dispose {p:?}: {err}"
        );
    }
    let err = storage.resolve("memory:job-1/chk-9").unwrap_err();
    assert!(matches!(err, StorageError::NotFound(_)), "{err}");
}

#[test]
fn dispose_removes_a_checkpoint_and_is_idempotent() {
    let storage = open("");
    let pointer = complete_checkpoint(storage.as_ref(), "job-1", 1, b"meta");
    storage.dispose(&pointer).unwrap();
    assert!(matches!(
        storage.resolve(&pointer),
        Err(StorageError::NotFound(_))
    ));
    assert!(storage
        .job("job-1")
        .unwrap()
        .list_completed()
        .unwrap()
        .is_empty());
    storage.dispose(&pointer).unwrap();
    storage.dispose("memory:never-seen/chk-1").unwrap();
}

#[test]
fn dispose_on_failure_drops_the_location_and_is_idempotent() {
    let storage = open("");
    let job = storage.job("job-1").unwrap();
    let loc = job.begin_checkpoint(1).unwrap();
    write_stream(loc.as_ref(), b"state").unwrap();
    loc.dispose_on_failure().unwrap();
    loc.dispose_on_failure().unwrap();
    assert!(matches!(
        loc.commit(b"meta"),
        Err(StorageError::NotFound(_))
    ));
    assert!(loc
        .create_stream(cairn_plugin_api::Scope::Exclusive)
        .is_err());
    assert!(job.list_completed().unwrap().is_empty());
    // The id is free again.
    complete_checkpoint(storage.as_ref(), "job-1", 1, b"meta");
}

#[test]
fn with_a_directory_metadata_persists_and_resolves_from_a_fresh_instance() {
    let tmp = TempDir::new().unwrap();
    let base = tmp.path().join("chk");
    let options = dir_option("checkpoint-dir", &base);
    let storage = open(&options);
    let info = storage.info();
    assert!(info.capabilities.contains(Capabilities::PERSISTENT));
    assert!(
        info.location.starts_with("memory (metadata in "),
        "{}",
        info.location
    );

    let job = storage.job("job-1").unwrap();
    assert!(
        base.join("job-1").is_dir(),
        "job() creates the job's directory"
    );
    let loc = job.begin_checkpoint(2).unwrap();
    assert!(
        !base.join("job-1/chk-2").exists(),
        "no directory before the commit"
    );
    let handle = write_stream(loc.as_ref(), b"inline state")
        .unwrap()
        .unwrap();
    assert!(handle.is_inline());
    let done = loc.commit(b"meta-2").unwrap();
    let dir = base.join("job-1/chk-2");
    assert_eq!(done.pointer, dir.to_str().unwrap());
    assert!(dir.join("_metadata").is_file());
    assert!(matches!(
        loc.commit(b"x"),
        Err(StorageError::AlreadyExists(_))
    ));
    complete_checkpoint(storage.as_ref(), "job-1", 10, b"meta-10");
    drop(storage);

    let fresh = open(&options);
    assert_eq!(fresh.resolve(&done.pointer).unwrap().metadata, b"meta-2");
    let with_file = format!("{}/_metadata", done.pointer);
    assert_eq!(fresh.resolve(&with_file).unwrap().metadata, b"meta-2");
    let job = fresh.job("job-1").unwrap();
    let ids: Vec<u64> = job
        .list_completed()
        .unwrap()
        .iter()
        .map(|c| c.checkpoint_id)
        .collect();
    assert_eq!(ids, [2, 10]);
    assert!(matches!(
        job.begin_checkpoint(2).map(|_| ()),
        Err(StorageError::AlreadyExists(_))
    ));

    // A fresh instance without the option reads a path pointer too.
    assert_eq!(open("").resolve(&done.pointer).unwrap().metadata, b"meta-2");

    fresh.dispose(&done.pointer).unwrap();
    assert!(!dir.exists());
    fresh.dispose(&done.pointer).unwrap();
    assert!(matches!(
        fresh.resolve(&done.pointer),
        Err(StorageError::NotFound(_))
    ));
    let ids: Vec<u64> = job
        .list_completed()
        .unwrap()
        .iter()
        .map(|c| c.checkpoint_id)
        .collect();
    assert_eq!(ids, [10]);
}

#[test]
fn with_a_directory_damaged_metadata_is_corrupt() {
    let tmp = TempDir::new().unwrap();
    let storage = open(&dir_option("checkpoint-dir", tmp.path()));
    let pointer = complete_checkpoint(storage.as_ref(), "job-1", 1, b"some metadata");
    let file = std::path::Path::new(&pointer).join("_metadata");
    let mut bytes = fs::read(&file).unwrap();
    *bytes.last_mut().unwrap() ^= 0xff;
    fs::write(&file, bytes).unwrap();
    let err = storage.resolve(&pointer).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt(m) if m.contains("_metadata")),
        "{err}"
    );
    let missing = tmp.path().join("job-1/chk-99");
    let err = storage.resolve(missing.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, StorageError::NotFound(_)), "{err}");
}

#[test]
fn with_a_directory_dispose_on_failure_leaves_nothing() {
    let tmp = TempDir::new().unwrap();
    let storage = open(&dir_option("checkpoint-dir", tmp.path()));
    let job = storage.job("job-1").unwrap();
    let loc = job.begin_checkpoint(1).unwrap();
    write_stream(loc.as_ref(), b"state").unwrap();
    loc.dispose_on_failure().unwrap();
    assert!(!tmp.path().join("job-1/chk-1").exists());
    assert!(job.list_completed().unwrap().is_empty());
}

#[test]
fn dispose_refuses_directories_that_are_not_ours() {
    let tmp = TempDir::new().unwrap();
    let base = tmp.path().join("chk");
    let storage = open(&dir_option("checkpoint-dir", &base));
    let precious = tmp.path().join("precious");
    fs::create_dir(&precious).unwrap();
    fs::write(precious.join("file"), b"keep").unwrap();
    let elsewhere = tmp.path().join("other/job-1/chk-1");
    fs::create_dir_all(&elsewhere).unwrap();
    for dir in [&precious, &elsewhere] {
        let err = storage.dispose(dir.to_str().unwrap()).unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidConfig(_)),
            "{}: {err}",
            dir.display()
        );
    }
    assert!(precious.join("file").is_file());
    assert!(elsewhere.is_dir());
    let err = open("").dispose(elsewhere.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, StorageError::InvalidConfig(_)), "{err}");
}
