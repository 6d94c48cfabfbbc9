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
