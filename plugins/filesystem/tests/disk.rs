use std::fs;

use cairn_plugin_api::{read_handle_fully, Scope, StorageError};

use crate::util::{checkpoint, data, tree, Env};

#[test]
fn the_layout_on_disk() {
    let env = Env::new();
    let (pointer, handles) = checkpoint(env.storage.as_ref(), "job", 7);
    assert_eq!(pointer, format!("{}/job/chk-7", env.base().display()));
    let files = tree(&env.base());
    assert_eq!(files.len(), 4, "{files:?}");
    assert!(
        files.contains(&"job/chk-7/_metadata".to_string()),
        "{files:?}"
    );
    for h in &handles {
        let cairn_plugin_api::StateHandle::Stored { locator, .. } = h else {
            panic!("{h:?}")
        };
        assert!(files.contains(locator), "{locator} not in {files:?}");
    }
    // No temporary file is left after a commit.
    assert!(files.iter().all(|f| !f.contains(".tmp-")), "{files:?}");
    // Disposing removes the location's files and its empty directory.
    env.storage.dispose(&pointer).unwrap();
    assert!(!env.base().join("job/chk-7").exists());
}

#[test]
fn two_instances_cannot_both_commit_one_checkpoint() {
    let env = Env::new();
    let other = env.reopen();
    let a = env.storage.job("job").unwrap().begin_checkpoint(1).unwrap();
    let b = other.job("job").unwrap().begin_checkpoint(1).unwrap();
    a.commit(b"first").unwrap();
    let err = b.commit(b"second").unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists(_)), "{err}");
    assert_eq!(
        env.storage
            .resolve(&format!("{}/job/chk-1", env.base().display()))
            .unwrap()
            .metadata,
        b"first"
    );
    // The loser's clean-up removes nothing of the winner's.
    assert!(b.dispose_on_failure().is_err());
    assert!(env.base().join("job/chk-1/_metadata").exists());
}

#[test]
fn a_damaged_metadata_file_is_corrupt() {
    let env = Env::new();
    let (pointer, _) = checkpoint(env.storage.as_ref(), "job", 1);
    let meta = env.base().join("job/chk-1/_metadata");
    let mut bytes = fs::read(&meta).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&meta, bytes).unwrap();
    let err = env.storage.resolve(&pointer).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt(m) if m.contains("checksum")),
        "{err}"
    );
}

/// Issue 9.5: the base directory removed, or renamed, while a job runs. The next checkpoint
/// makes what it needs again and succeeds.
#[test]
fn the_next_checkpoint_recreates_a_removed_or_renamed_base() {
    for renamed in [false, true] {
        let env = Env::new();
        let job = env.storage.job("job").unwrap();
        checkpoint(env.storage.as_ref(), "job", 1);
        if renamed {
            fs::rename(env.base(), env.tmp.path().join("moved")).unwrap();
        } else {
            fs::remove_dir_all(env.base()).unwrap();
        }
        let (pointer, handles) = checkpoint(env.storage.as_ref(), "job", 2);
        let ids: Vec<u64> = job
            .list_completed()
            .unwrap()
            .iter()
            .map(|c| c.checkpoint_id)
            .collect();
        assert_eq!(ids, [2], "renamed: {renamed}");
        assert!(env.reopen().resolve(&pointer).is_ok());
        for h in &handles {
            read_handle_fully(env.storage.as_ref(), h).unwrap();
        }
        // A savepoint whose default target is gone, too.
        let _ = fs::remove_dir_all(env.tmp.path().join("savepoints"));
        let sp = job.begin_savepoint(3, None).unwrap();
        let mut s = sp.create_stream(Scope::Exclusive).unwrap();
        s.write(&data(100_000, 3)).unwrap();
        s.close_and_get_handle().unwrap();
        sp.commit(b"sp").unwrap();
    }
}
