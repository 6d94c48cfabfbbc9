//! Issue 9.1: a symbolic link anywhere in the layout is skipped (and named in a warning), never
//! followed for a listing, a read, a write or a delete. Each test plants the link, runs every
//! operation that could follow it, and checks that the files it points to are untouched.

use std::{fs, os::unix::fs::symlink, path::Path};

use cairn_plugin_api::{StateHandle, StorageError};

use crate::util::{checkpoint, tree, Env};

const FILE: &str = "0123456789abcdef0123456789abcdef";

/// A directory outside the base holding what looks like cairn's files: a committed
/// `_metadata` and a state file with a generated name.
fn victim(env: &Env) -> std::path::PathBuf {
    let outside = env.tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join(FILE), b"precious").unwrap();
    fs::write(
        outside.join("_metadata"),
        cairn_plugin_kit::frame::encode(b"[]"),
    )
    .unwrap();
    outside
}

fn untouched(outside: &Path) {
    assert_eq!(
        tree(outside),
        ["0123456789abcdef0123456789abcdef", "_metadata"]
    );
    assert_eq!(fs::read(outside.join(FILE)).unwrap(), b"precious");
}

fn stored(locator: &str) -> StateHandle {
    StateHandle::Stored {
        locator: locator.to_string(),
        size: 8,
        crc32c: 0,
    }
}

#[test]
fn a_checkpoint_directory_that_is_a_link_is_not_listed_read_or_deleted() {
    let env = Env::new();
    let (p1, _) = checkpoint(env.storage.as_ref(), "job", 1);
    let outside = victim(&env);
    symlink(&outside, env.base().join("job/chk-99")).unwrap();
    let job = env.storage.job("job").unwrap();
    let ids: Vec<u64> = job
        .list_completed()
        .unwrap()
        .iter()
        .map(|c| c.checkpoint_id)
        .collect();
    assert_eq!(ids, [1]);
    assert!(!job.list_uncommitted().unwrap().contains(&99));
    assert!(job
        .list_objects()
        .unwrap()
        .iter()
        .all(|o| !o.locator.contains("chk-99")));
    let pointer = format!("{}/job/chk-99", env.base().display());
    assert!(
        matches!(env.storage.resolve(&pointer), Err(StorageError::InvalidConfig(m)) if m.contains("symbolic link"))
    );
    env.storage.dispose(&pointer).unwrap();
    let err = env
        .storage
        .discard(&stored(&format!("job/chk-99/{FILE}")))
        .unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    job.begin_checkpoint(99)
        .unwrap()
        .dispose_on_failure()
        .unwrap();
    untouched(&outside);
    env.storage.dispose(&p1).unwrap();
    untouched(&outside);
}

#[test]
fn shared_and_taskowned_links_are_not_followed() {
    for area in ["shared", "taskowned"] {
        let env = Env::new();
        let outside = victim(&env);
        fs::create_dir_all(env.base().join("job")).unwrap();
        symlink(&outside, env.base().join("job").join(area)).unwrap();
        let job = env.storage.job("job").unwrap();
        assert!(job.list_objects().unwrap().is_empty(), "{area}");
        let err = env
            .storage
            .discard(&stored(&format!("job/{area}/{FILE}")))
            .unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{area}: {err}");
        let err = env
            .storage
            .open_handle(&stored(&format!("job/{area}/{FILE}")))
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{area}: {err}");
        // A stream into the area fails rather than write through the link.
        let loc = job.begin_checkpoint(1).unwrap();
        let mut s = if area == "shared" {
            loc.create_stream(cairn_plugin_api::Scope::Shared).unwrap()
        } else {
            job.create_task_owned_stream().unwrap()
        };
        let wrote = s
            .write(&[7u8; 100_000])
            .and_then(|()| s.close_and_get_handle());
        assert!(wrote.is_err(), "{area}: {wrote:?}");
        untouched(&outside);
    }
}

#[test]
fn a_savepoint_linked_as_a_checkpoint_is_left_alone() {
    let env = Env::new();
    let job = env.storage.job("job").unwrap();
    let sp = job.begin_savepoint(500, None).unwrap();
    let mut s = sp
        .create_stream(cairn_plugin_api::Scope::Exclusive)
        .unwrap();
    s.write(&[1u8; 100_000]).unwrap();
    let h = s.close_and_get_handle().unwrap().unwrap();
    let sp_pointer = sp
        .commit(&serde_json::to_vec(&[&h]).unwrap())
        .unwrap()
        .pointer;
    let before = tree(Path::new(&sp_pointer));
    fs::create_dir_all(env.base().join("job")).unwrap();
    symlink(&sp_pointer, env.base().join("job/chk-500")).unwrap();
    assert!(job.list_completed().unwrap().is_empty());
    assert!(job.list_uncommitted().unwrap().is_empty());
    assert!(job.list_objects().unwrap().is_empty());
    let pointer = format!("{}/job/chk-500", env.base().display());
    env.storage.dispose(&pointer).unwrap();
    assert_eq!(tree(Path::new(&sp_pointer)), before);
    assert!(env.storage.resolve(&sp_pointer).is_ok());
}

#[test]
fn a_job_directory_or_state_file_that_is_a_link_is_skipped() {
    let env = Env::new();
    let outside = victim(&env);
    // Opening makes no base directory (the first checkpoint does); the link goes into one.
    std::fs::create_dir_all(env.base()).unwrap();
    symlink(&outside, env.base().join("linked-job")).unwrap();
    let job = env.storage.job("linked-job").unwrap();
    assert!(job.list_completed().unwrap().is_empty());
    assert!(job.list_objects().unwrap().is_empty());
    assert!(job
        .begin_checkpoint(1)
        .unwrap()
        .create_stream(cairn_plugin_api::Scope::Exclusive)
        .and_then(|mut s| {
            s.write(&[0; 100_000])?;
            s.close_and_get_handle()
        })
        .is_err());
    untouched(&outside);

    // A state file inside a real checkpoint that is a link to a file elsewhere.
    let (p, _) = checkpoint(env.storage.as_ref(), "job", 2);
    let other = "fedcba9876543210fedcba9876543210";
    symlink(outside.join(FILE), env.base().join("job/chk-2").join(other)).unwrap();
    let job = env.storage.job("job").unwrap();
    assert!(job
        .list_objects()
        .unwrap()
        .iter()
        .all(|o| !o.locator.ends_with(other)));
    env.storage.dispose(&p).unwrap();
    untouched(&outside);
}

#[test]
fn savepoint_directories_that_are_links_are_not_collected() {
    let env = Env::new();
    let outside = victim(&env);
    let target = env.tmp.path().join("savepoints");
    fs::create_dir_all(&target).unwrap();
    symlink(&outside, target.join("savepoint-job-0123456789ab")).unwrap();
    let job = env.storage.job("job").unwrap();
    assert!(job.list_uncommitted_savepoints(None).unwrap().is_empty());
    let pointer = format!(
        "{}/savepoint-job-0123456789ab",
        fs::canonicalize(&target).unwrap().display()
    );
    env.storage.dispose(&pointer).unwrap();
    untouched(&outside);
}
