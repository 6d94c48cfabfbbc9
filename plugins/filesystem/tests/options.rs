use std::fs;

use cairn_plugin_api::{Capabilities, StorageError, StoragePlugin};
use cairn_storage_fs::FsPlugin;

use crate::util::{options, Env};

fn open_err(document: &str) -> String {
    match FsPlugin::open(document) {
        Err(StorageError::InvalidConfig(m)) => m,
        Err(other) => panic!("expected InvalidConfig, got {other:?}"),
        Ok(_) => panic!("expected an error for {document:?}"),
    }
}

#[test]
fn manifest_and_info() {
    let m = FsPlugin::manifest();
    m.validate().unwrap();
    assert_eq!(m.name, "filesystem");
    assert_eq!(m.version, env!("CARGO_PKG_VERSION"));
    let caps = Capabilities::PERSISTENT
        | Capabilities::SAVEPOINTS
        | Capabilities::SHARED_SCOPE
        | Capabilities::TASK_OWNED
        | Capabilities::STORED_HANDLES
        | Capabilities::CORRUPT_FOR_TESTING;
    assert_eq!(m.capabilities, caps);

    let env = Env::new();
    let info = env.storage.info();
    assert_eq!(info.capabilities, caps);
    assert_eq!(info.inline_threshold, 20 * 1024);
    assert_eq!(info.max_state_size, None);
    assert_eq!(
        info.location,
        fs::canonicalize(env.tmp.path().join("checkpoints"))
            .unwrap()
            .to_str()
            .unwrap()
    );
}

#[test]
fn the_base_directory_is_created_and_made_absolute() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/c");
    let storage = FsPlugin::open(&options(&dir, "inline-threshold = \"1 MiB\"")).unwrap();
    assert!(dir.is_dir());
    assert_eq!(storage.info().inline_threshold, 1 << 20);
    assert!(std::path::Path::new(&storage.info().location).is_absolute());
    // Opening a job creates its directories, once, and nothing else.
    storage.job("j").unwrap();
    let mut entries: Vec<_> = fs::read_dir(dir.join("j"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    assert_eq!(entries, ["shared", "taskowned"]);
}

#[test]
fn bad_options_name_the_option() {
    let msg = open_err("");
    assert!(msg.contains("storage.options.dir"), "{msg}");
    let dir = tempfile::tempdir().unwrap();
    let msg = open_err(&options(dir.path(), "inline-treshold = 10"));
    assert!(msg.contains("inline-treshold"), "{msg}");
    let msg = open_err(&options(dir.path(), "inline-threshold = \"2MiB\""));
    assert_eq!(
        msg,
        "storage.options.inline-threshold = \"2MiB\" is above the maximum of 1MiB"
    );
    let msg = open_err(&options(dir.path(), "inline-threshold = 1048577"));
    assert!(
        msg.starts_with("storage.options.inline-threshold = 1048577 is above"),
        "{msg}"
    );
    let msg = open_err(&options(dir.path(), "write-buffer = \"huge\""));
    assert!(
        msg.starts_with("storage.options.write-buffer = \"huge\" is not a size"),
        "{msg}"
    );
    let msg = open_err(&options(dir.path(), "savepoint-dir = 5"));
    assert!(
        msg.starts_with("storage.options.savepoint-dir = 5"),
        "{msg}"
    );
}

#[test]
fn a_base_directory_that_cannot_be_created_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    fs::write(&file, b"x").unwrap();
    let err = FsPlugin::open(&options(&file.join("sub"), ""))
        .err()
        .expect("a file is in the way");
    assert!(err.message().contains("storage.options.dir"), "{err}");
}
