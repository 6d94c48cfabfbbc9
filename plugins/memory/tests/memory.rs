use cairn_plugin_api::{Capabilities, Scope, StateHandle, StorageError, StoragePlugin};
use cairn_storage_memory::MemoryPlugin;

#[test]
fn a_stream_over_the_limit_fails_at_close_naming_its_size() {
    let s = MemoryPlugin::open("max-state-size = 4").unwrap();
    assert_eq!(s.info().max_state_size, Some(4));
    let loc = s.job("job").unwrap().begin_checkpoint(1).unwrap();
    let mut out = loc.create_stream(Scope::Exclusive).unwrap();
    out.write(b"abcd").unwrap();
    out.write(b"efgh").unwrap();
    assert_eq!(out.pos().unwrap(), 8);
    let err = out.close_and_get_handle().unwrap_err();
    assert!(
        matches!(&err, StorageError::CapacityExceeded(m) if m.contains("8 bytes")),
        "{err}"
    );
    let mut out = loc.create_stream(Scope::Exclusive).unwrap();
    out.write(b"abcd").unwrap();
    assert_eq!(
        out.close_and_get_handle().unwrap(),
        Some(StateHandle::Inline(b"abcd".to_vec()))
    );
}

#[test]
fn checkpoints_live_in_the_instance_unless_a_checkpoint_dir_is_set() {
    let s = MemoryPlugin::open("").unwrap();
    assert!(!s.info().capabilities.contains(Capabilities::PERSISTENT));
    let loc = s.job("job").unwrap().begin_checkpoint(1).unwrap();
    let pointer = loc.commit(b"meta").unwrap().pointer;
    assert_eq!(pointer, "memory://job/chk-1");
    assert_eq!(s.resolve(&pointer).unwrap().metadata, b"meta");
    assert!(matches!(
        MemoryPlugin::open("").unwrap().resolve(&pointer),
        Err(StorageError::NotFound(_))
    ));

    let tmp = tempfile::tempdir().unwrap();
    let doc = format!(
        "checkpoint-dir = {:?}",
        tmp.path().join("meta").to_str().unwrap()
    );
    let s = MemoryPlugin::open(&doc).unwrap();
    assert!(s.info().capabilities.contains(Capabilities::PERSISTENT));
    let pointer = s
        .job("job")
        .unwrap()
        .begin_checkpoint(3)
        .unwrap()
        .commit(b"on disk")
        .unwrap()
        .pointer;
    assert!(
        std::path::Path::new(&pointer).join("_metadata").is_file(),
        "{pointer}"
    );
    let again = MemoryPlugin::open(&doc).unwrap();
    assert_eq!(again.resolve(&pointer).unwrap().metadata, b"on disk");
    let ids: Vec<u64> = again
        .job("job")
        .unwrap()
        .list_completed()
        .unwrap()
        .iter()
        .map(|c| c.checkpoint_id)
        .collect();
    assert_eq!(ids, [3]);
}

#[test]
fn options_are_checked() {
    for (doc, expected) in [
        (
            "max-state-size = 0",
            "storage.options.max-state-size = 0 is below the minimum of 1B",
        ),
        (
            "max-state-size = \"2GiB\"",
            "storage.options.max-state-size = \"2GiB\" is above the maximum of 1GiB",
        ),
        ("inline-threshold = 5", "inline-threshold"),
        (
            "checkpoint-dir = 3",
            "storage.options.checkpoint-dir = 3 is not a string",
        ),
    ] {
        match MemoryPlugin::open(doc).map(|_| ()) {
            Err(StorageError::InvalidConfig(m)) => assert!(m.contains(expected), "{doc}: {m}"),
            other => panic!("{doc}: {other:?}"),
        }
    }
    // Sizes follow Flink: MB is a power of 1024, as MiB is.
    let s = MemoryPlugin::open("max-state-size = \"5MB\"").unwrap();
    assert_eq!(s.info().max_state_size, Some(5 << 20));
}

#[test]
fn stored_handles_of_other_backends_are_unsupported() {
    let s = MemoryPlugin::open("").unwrap();
    let h = StateHandle::Stored {
        locator: "job/shared/0123456789abcdef0123456789abcdef".into(),
        size: 1,
        crc32c: 0,
    };
    assert!(matches!(s.discard(&h), Err(StorageError::Unsupported(_))));
    assert!(matches!(
        s.open_handle(&h).map(|_| ()),
        Err(StorageError::Unsupported(_))
    ));
}

#[test]
fn checkpoint_dir_takes_a_file_url_and_is_not_made_by_validate_or_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("meta");
    let doc = format!("checkpoint-dir = \"file://{}\"\n", dir.display());
    MemoryPlugin::validate(&doc).unwrap();
    let s = MemoryPlugin::open(&doc).unwrap();
    assert!(s.info().capabilities.contains(Capabilities::PERSISTENT));
    assert!(
        !dir.exists(),
        "the checkpoint dir was made before any checkpoint"
    );
    s.job("job")
        .unwrap()
        .begin_checkpoint(1)
        .unwrap()
        .commit(b"meta")
        .unwrap();
    assert!(dir.join("job").is_dir());
    assert!(matches!(
        MemoryPlugin::validate("max-state-sise = 3\n"),
        Err(StorageError::InvalidConfig(m)) if m.contains("did you mean `max-state-size`?")
    ));
}
