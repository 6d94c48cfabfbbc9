use std::{fs, path::PathBuf};

use cairn_plugin_api::{read_handle_fully, Scope, StorageError};

use crate::util::{data, names, Env};

#[test]
fn commit_then_resolve_from_a_fresh_instance() {
    let env = Env::new();
    let loc = env
        .storage
        .job("job-1")
        .unwrap()
        .begin_checkpoint(5)
        .unwrap();
    let mut out = loc.create_stream(Scope::Exclusive).unwrap();
    out.write(&data(100_000, 1)).unwrap();
    let handle = out.close_and_get_handle().unwrap().unwrap();
    let done = loc.commit(b"metadata bytes").unwrap();
    assert_eq!(done.checkpoint_id, 5);
    let expected_dir = env.base().join("job-1").join("chk-5");
    assert_eq!(PathBuf::from(&done.pointer), expected_dir);

    let fresh = env.reopen();
    let resolved = fresh.resolve(&done.pointer).unwrap();
    assert_eq!(resolved.metadata, b"metadata bytes");
    assert_eq!(resolved.pointer, done.pointer);
    // The `_metadata` file and a trailing slash name the same checkpoint.
    for variant in [
        format!("{}/_metadata", done.pointer),
        format!("{}/", done.pointer),
    ] {
        let r = fresh.resolve(&variant).unwrap();
        assert_eq!(r.pointer, done.pointer, "{variant}");
        assert_eq!(r.metadata, b"metadata bytes");
    }
    assert_eq!(
        read_handle_fully(fresh.as_ref(), &handle).unwrap(),
        data(100_000, 1)
    );
}

#[test]
fn a_location_commits_once() {
    let env = Env::new();
    let job = env.storage.job("job").unwrap();
    let loc = job.begin_checkpoint(1).unwrap();
    loc.commit(b"first").unwrap();
    let err = loc.commit(b"second").unwrap_err();
    assert!(
        matches!(&err, StorageError::AlreadyExists(m) if m.contains("chk-1")),
        "{err}"
    );
    let err = job
        .begin_checkpoint(1)
        .err()
        .expect("checkpoint 1 is committed");
    assert!(matches!(&err, StorageError::AlreadyExists(_)), "{err}");
    let err = env
        .reopen()
        .job("job")
        .unwrap()
        .begin_checkpoint(1)
        .err()
        .unwrap();
    assert!(matches!(&err, StorageError::AlreadyExists(_)), "{err}");
    let pointer = env.base().join("job/chk-1");
    assert_eq!(
        env.storage
            .resolve(pointer.to_str().unwrap())
            .unwrap()
            .metadata,
        b"first"
    );
}

#[test]
fn an_uncommitted_attempt_is_reused_and_never_listed() {
    let env = Env::new();
    let job = env.storage.job("job").unwrap();
    for id in [10, 2, 3] {
        job.begin_checkpoint(id)
            .unwrap()
            .commit(format!("m{id}").as_bytes())
            .unwrap();
    }
    // Checkpoint 4 crashes before its commit, leaving a file behind.
    let crashed = job.begin_checkpoint(4).unwrap();
    let mut out = crashed.create_stream(Scope::Exclusive).unwrap();
    out.write(&data(50_000, 2)).unwrap();
    let _stray = out.close_and_get_handle().unwrap();
    drop(crashed);
    fs::create_dir(env.base().join("job/chk-007")).unwrap();
    fs::create_dir(env.base().join("job/chk-x")).unwrap();

    let listed = env.reopen().job("job").unwrap().list_completed().unwrap();
    let ids: Vec<u64> = listed.iter().map(|c| c.checkpoint_id).collect();
    assert_eq!(ids, [2, 3, 10]);
    for c in &listed {
        assert_eq!(
            PathBuf::from(&c.pointer),
            env.base().join(format!("job/chk-{}", c.checkpoint_id))
        );
        assert_eq!(
            env.storage.resolve(&c.pointer).unwrap().metadata,
            format!("m{}", c.checkpoint_id).as_bytes()
        );
    }
    let pointer4 = env.base().join("job/chk-4");
    let err = env.storage.resolve(pointer4.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, StorageError::NotFound(_)), "{err}");

    // The retry reuses the directory and commits.
    let retry = job.begin_checkpoint(4).unwrap();
    retry.commit(b"m4").unwrap();
    let ids: Vec<u64> = job
        .list_completed()
        .unwrap()
        .iter()
        .map(|c| c.checkpoint_id)
        .collect();
    assert_eq!(ids, [2, 3, 4, 10]);
}

#[test]
fn two_jobs_with_the_same_checkpoint_id_do_not_collide() {
    let env = Env::new();
    let a = env.storage.job("job-a").unwrap();
    let b = env.storage.job("job-b").unwrap();
    let la = a.begin_checkpoint(1).unwrap();
    let lb = b.begin_checkpoint(1).unwrap();
    let pa = la.commit(b"a").unwrap().pointer;
    let pb = lb.commit(b"b").unwrap().pointer;
    assert_ne!(pa, pb);
    assert_eq!(env.storage.resolve(&pa).unwrap().metadata, b"a");
    assert_eq!(env.storage.resolve(&pb).unwrap().metadata, b"b");
    assert_eq!(a.list_completed().unwrap().len(), 1);
    assert_eq!(b.list_completed().unwrap()[0].pointer, pb);
}

#[test]
fn resolve_refuses_bad_pointers_with_the_right_kind() {
    let env = Env::new();
    let job = env.storage.job("job").unwrap();
    job.begin_checkpoint(1).unwrap();
    let pointer = job
        .begin_checkpoint(2)
        .unwrap()
        .commit(b"ok")
        .unwrap()
        .pointer;

    for bad in [
        "",
        "   ",
        "chk-1",
        "relative/path",
        "s3://bucket/chk-1",
        "/a/../b",
        "/x\0y",
    ] {
        let err = env.storage.resolve(bad).unwrap_err();
        assert!(
            matches!(&err, StorageError::InvalidConfig(m) if m.contains("pointer")),
            "{bad:?}: {err}"
        );
    }
    let err = env.storage.resolve("").unwrap_err();
    assert!(err.message().contains("empty pointer"), "{err}");

    let uncommitted = env.base().join("job/chk-1");
    let missing = env.base().join("job/chk-99");
    let file = env.tmp.path().join("plain-file");
    fs::write(&file, b"x").unwrap();
    for p in [&uncommitted, &missing, &file] {
        let err = env.storage.resolve(p.to_str().unwrap()).unwrap_err();
        assert!(
            matches!(err, StorageError::NotFound(_)),
            "{}: {err}",
            p.display()
        );
    }

    let meta = PathBuf::from(&pointer).join("_metadata");
    let mut bytes = fs::read(&meta).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    fs::write(&meta, &bytes).unwrap();
    let err = env.storage.resolve(&pointer).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt(_)), "{err}");
}

#[test]
fn dispose_removes_a_completed_checkpoint_and_is_idempotent() {
    let env = Env::new();
    let job = env.storage.job("job").unwrap();
    let loc = job.begin_checkpoint(3).unwrap();
    let mut ex = loc.create_stream(Scope::Exclusive).unwrap();
    ex.write(&data(100_000, 1)).unwrap();
    ex.close_and_get_handle().unwrap().unwrap();
    let mut sh = loc.create_stream(Scope::Shared).unwrap();
    sh.write(&data(100_000, 2)).unwrap();
    let shared = sh.close_and_get_handle().unwrap().unwrap();
    let pointer = loc.commit(b"m").unwrap().pointer;

    env.reopen().dispose(&pointer).unwrap();
    assert!(!PathBuf::from(&pointer).exists());
    assert!(job.list_completed().unwrap().is_empty());
    assert!(matches!(
        env.storage.resolve(&pointer),
        Err(StorageError::NotFound(_))
    ));
    env.storage.dispose(&pointer).unwrap();
    env.storage
        .dispose(&format!("{pointer}/_metadata"))
        .unwrap();
    // SHARED state is the host registry's to discard.
    assert_eq!(
        read_handle_fully(env.storage.as_ref(), &shared).unwrap(),
        data(100_000, 2)
    );
}

#[test]
fn dispose_on_failure_removes_an_uncommitted_location_only() {
    let env = Env::new();
    let job = env.storage.job("job").unwrap();
    let loc = job.begin_checkpoint(1).unwrap();
    let mut out = loc.create_stream(Scope::Exclusive).unwrap();
    out.write(&data(100_000, 1)).unwrap();
    out.close_and_get_handle().unwrap().unwrap();
    let dir = env.base().join("job/chk-1");
    assert_eq!(names(&dir).len(), 1);
    loc.dispose_on_failure().unwrap();
    assert!(!dir.exists());
    loc.dispose_on_failure().unwrap();
    let err = loc.commit(b"late").unwrap_err();
    assert!(matches!(err, StorageError::NotFound(_)), "{err}");
    assert!(!dir.exists());

    let committed = job.begin_checkpoint(2).unwrap();
    committed.commit(b"m").unwrap();
    let err = committed.dispose_on_failure().unwrap_err();
    assert!(
        matches!(&err, StorageError::AlreadyExists(m) if m.contains("committed")),
        "{err}"
    );
    assert_eq!(job.list_completed().unwrap().len(), 1);
}
