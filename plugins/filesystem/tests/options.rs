use cairn_plugin_api::{StorageError, StoragePlugin};
use cairn_storage_fs::FsPlugin;

fn refused(doc: &str) -> String {
    match FsPlugin::open(doc).map(|_| ()) {
        Err(StorageError::InvalidConfig(m)) => m,
        other => panic!("{doc}: expected InvalidConfig, got {other:?}"),
    }
}

#[test]
fn defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let s = FsPlugin::open(&format!(
        "dir = {:?}",
        tmp.path().join("c").to_str().unwrap()
    ))
    .unwrap();
    assert_eq!(s.info().inline_threshold, 20 * 1024);
    assert_eq!(s.info().capabilities, cairn_storage_fs::CAPABILITIES);
}

#[test]
fn refused_values_name_their_option() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = format!("dir = {:?}\n", tmp.path().join("c").to_str().unwrap());
    for (doc, expected) in [
        (String::new(), "storage.options.dir is missing"),
        (
            "dir = 3".to_string(),
            "storage.options.dir = 3 is not a string",
        ),
        (
            "dir = \"\"".to_string(),
            "storage.options.dir = \"\" is empty",
        ),
        (
            format!("{dir}write-buffer = 100"),
            "storage.options.write-buffer = 100 is below the minimum of 512B",
        ),
        (
            format!("{dir}write-buffer = \"1GiB\""),
            "storage.options.write-buffer = \"1GiB\" is above the maximum of 64MiB",
        ),
        (
            format!("{dir}inline-threshold = \"2MiB\""),
            "storage.options.inline-threshold = \"2MiB\" is above the maximum of 1MiB",
        ),
        (
            format!("{dir}savepoint-dir = [1]"),
            "storage.options.savepoint-dir = an array is not a string",
        ),
        (
            "dir = \"/a/../b\"".to_string(),
            "storage.options.dir \"/a/../b\" is invalid: it has a '..' part",
        ),
    ] {
        let msg = refused(&doc);
        assert!(msg.starts_with(expected), "{doc}: {msg}");
    }
    assert!(refused(&format!("{dir}inline-treshold = 3")).contains("inline-treshold"));
}

#[test]
fn dir_takes_a_file_url_as_its_path_and_opening_or_validating_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("ckpt");
    let doc = format!("dir = \"file://{}\"\n", base.display());
    FsPlugin::validate(&doc).unwrap();
    assert!(!base.exists(), "validate made the directory");
    let s = FsPlugin::open(&doc).unwrap();
    assert!(!base.exists(), "open made the directory");
    // Reading an empty storage creates nothing either; the first checkpoint makes the folder.
    let job = s.job("j").unwrap();
    assert!(job.list_completed().unwrap().is_empty());
    assert!(!base.exists(), "a listing made the directory");
    job.begin_checkpoint(1).unwrap().commit(b"m").unwrap();
    assert!(base.join("j").join("chk-1").is_dir());
}

#[test]
fn dir_refuses_another_scheme_naming_the_plugin_to_use() {
    let m = match FsPlugin::validate("dir = \"s3://bucket/ckpt\"\n") {
        Err(StorageError::InvalidConfig(m)) => m,
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    assert!(
        m.starts_with("storage.options.dir")
            && m.contains("s3:// URL")
            && m.contains("object-store"),
        "{m}"
    );
    assert!(refused("dir = \"hdfs://nn/ckpt\"\n").contains("no bundled plugin"));
}

#[test]
fn validate_applies_the_rules_of_open_and_names_a_misspelt_option() {
    let m = match FsPlugin::validate("dirr = \"/x\"\n") {
        Err(StorageError::InvalidConfig(m)) => m,
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    assert!(m.contains("did you mean `dir`?"), "{m}");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f");
    std::fs::write(&file, "").unwrap();
    let m = match FsPlugin::validate(&format!("dir = {:?}\n", file.display().to_string())) {
        Err(StorageError::InvalidConfig(m)) => m,
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    assert!(m.contains("it is not a directory"), "{m}");
    // Sizes follow Flink: 1kb is 1024 bytes.
    let dir = tmp.path().join("c");
    let s = FsPlugin::open(&format!(
        "dir = {:?}\ninline-threshold = \"1kb\"\n",
        dir.display().to_string()
    ))
    .unwrap();
    assert_eq!(s.info().inline_threshold, 1024);
}
