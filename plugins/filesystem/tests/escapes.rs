use std::{fs, path::PathBuf};

use cairn_plugin_api::{Scope, StateHandle, StorageError};

use crate::util::{data, names, Env};

const FILE: &str = "0123456789abcdef0123456789abcdef";

fn is_invalid_config(r: Result<impl Sized, StorageError>, needle: &str) -> bool {
    matches!(r, Err(StorageError::InvalidConfig(m)) if m.contains(needle))
}

#[test]
fn job_ids_that_could_escape_are_refused() {
    let env = Env::new();
    for bad in [
        "..",
        "../evil",
        "a/b",
        "a\\b",
        "/abs",
        ".hidden",
        "",
        "x\0y",
        &"x".repeat(129),
    ] {
        let r = env.storage.job(bad).map(|_| ());
        assert!(
            matches!(&r, Err(StorageError::InvalidConfig(m)) if m.contains("job id")),
            "{bad:?}: {r:?}"
        );
    }
    assert!(!env.tmp.path().join("evil").exists());
    assert_eq!(names(env.tmp.path()), ["checkpoints"]);
    assert!(names(&env.base()).is_empty());
}

#[test]
fn locators_that_could_escape_are_refused_and_touch_nothing() {
    let env = Env::new();
    env.storage.job("job").unwrap();
    // A victim file with a name of the generated form, outside the base directory.
    let outside = env.tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let victim = outside.join(FILE);
    fs::write(&victim, b"precious").unwrap();
    let victim_abs = victim.to_str().unwrap().to_string();

    for locator in [
        format!("../outside/{FILE}"),
        format!("job/../../outside/{FILE}"),
        format!("job/shared/../../../outside/{FILE}"),
        format!("../outside/shared/{FILE}"),
        victim_abs.clone(),
        format!("{}/savepoint-job-0123456789ab/../{FILE}", outside.display()),
        "job/shared/..".to_string(),
        String::new(),
    ] {
        let handle = StateHandle::Stored {
            locator: locator.clone(),
            size: 8,
            crc32c: 0,
        };
        assert!(
            is_invalid_config(env.storage.open_handle(&handle).map(|_| ()), "locator"),
            "open {locator:?}"
        );
        assert!(
            is_invalid_config(env.storage.discard(&handle), "locator"),
            "discard {locator:?}"
        );
    }
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
}

#[test]
fn dispose_refuses_anything_but_a_location_and_touches_nothing() {
    let env = Env::new();
    let job = env.storage.job("job").unwrap();
    let pointer = job
        .begin_checkpoint(1)
        .unwrap()
        .commit(b"m")
        .unwrap()
        .pointer;
    let base = env.base();
    let victim_dir = env.tmp.path().join("precious");
    fs::create_dir(&victim_dir).unwrap();
    fs::write(victim_dir.join("_metadata"), b"not ours").unwrap();

    for p in [
        victim_dir.clone(),
        base.clone(),
        base.join("job"),
        base.join("job/shared"),
        env.tmp.path().to_path_buf(),
        PathBuf::from("/"),
    ] {
        let r = env.storage.dispose(p.to_str().unwrap());
        assert!(is_invalid_config(r, "refusing"), "{}", p.display());
    }
    for p in ["", "relative", &format!("{pointer}/../../job/chk-1")] {
        assert!(
            matches!(env.storage.dispose(p), Err(StorageError::InvalidConfig(_))),
            "{p:?}"
        );
    }
    assert_eq!(fs::read(victim_dir.join("_metadata")).unwrap(), b"not ours");
    assert_eq!(env.storage.resolve(&pointer).unwrap().metadata, b"m");

    // A checkpoint directory holding a file we did not write is refused before anything goes.
    fs::write(PathBuf::from(&pointer).join("notes.txt"), b"mine").unwrap();
    let r = env.storage.dispose(&pointer);
    assert!(is_invalid_config(r, "notes.txt"), "foreign file");
    assert_eq!(env.storage.resolve(&pointer).unwrap().metadata, b"m");
}

#[cfg(unix)]
#[test]
fn a_symlink_cannot_smuggle_a_directory_into_dispose() {
    let env = Env::new();
    let job = env.storage.job("job").unwrap();
    let loc = job.begin_checkpoint(1).unwrap();
    let mut out = loc.create_stream(Scope::Exclusive).unwrap();
    out.write(&data(100_000, 1)).unwrap();
    out.close_and_get_handle().unwrap();
    loc.commit(b"m").unwrap();
    // A directory named like a savepoint that is really a link to the job directory.
    let link = env.tmp.path().join("savepoint-job-0123456789ab");
    std::os::unix::fs::symlink(env.base().join("job"), &link).unwrap();
    let r = env.storage.dispose(link.to_str().unwrap());
    assert!(is_invalid_config(r, "refusing"), "symlink");
    assert_eq!(job.list_completed().unwrap().len(), 1);
}
