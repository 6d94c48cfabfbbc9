//! The filesystem plugin through the real `dlopen` path.

use std::process::Command;

use cairn_plugin_api::{read_handle_fully, CheckpointStorage, Scope, StateHandle, StorageError};

use crate::util::{fs_options, load};

const THRESHOLD: usize = 20 * 1024;

fn open(dir: &std::path::Path) -> Box<dyn CheckpointStorage> {
    load("cairn-storage-fs")
        .open(&fs_options(dir))
        .expect("open filesystem storage")
}

/// Deterministic bytes, different for every size.
fn bytes(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ len as u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Write `data` in chunks of varying size, checking `pos()` after every write.
fn write_mixed(storage: &dyn CheckpointStorage, data: &[u8]) -> Option<StateHandle> {
    let loc = storage
        .job("round-trip")
        .unwrap()
        .begin_checkpoint(data.len() as u64)
        .unwrap();
    let mut stream = loc.create_stream(Scope::Exclusive).unwrap();
    let chunks = [1usize, 7, 4096, 100_000, 3, 1 << 20];
    let (mut at, mut i) = (0, 0);
    while at < data.len() {
        let n = chunks[i % chunks.len()].min(data.len() - at);
        stream.write(&data[at..at + n]).unwrap();
        at += n;
        i += 1;
        assert_eq!(stream.pos().unwrap(), at as u64);
    }
    stream.close_and_get_handle().unwrap()
}

#[test]
fn round_trips_at_every_interesting_size() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    assert_eq!(storage.info().inline_threshold, THRESHOLD as u64);
    for size in [
        0,
        1,
        THRESHOLD - 1,
        THRESHOLD,
        THRESHOLD + 1,
        1 << 20,
        64 << 20,
    ] {
        let data = bytes(size);
        let handle = write_mixed(storage.as_ref(), &data);
        match (size, &handle) {
            (0, None) => continue,
            (0, Some(h)) => panic!("nothing written must give no handle, got {h:?}"),
            (_, None) => panic!("{size} bytes gave no handle"),
            (s, Some(h)) => assert_eq!(h.is_inline(), s <= THRESHOLD, "size {s}: {h:?}"),
        }
        let handle = handle.unwrap();
        assert_eq!(handle.size(), size as u64);
        assert!(
            read_handle_fully(storage.as_ref(), &handle).unwrap() == data,
            "size {size} differs"
        );
    }
}

#[test]
fn a_corrupted_byte_on_disk_is_corrupt_naming_the_handle() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let data = bytes(100_000);
    let handle = write_mixed(storage.as_ref(), &data).unwrap();
    let StateHandle::Stored { locator, .. } = &handle else {
        panic!("expected a stored handle")
    };
    // Find the file and flip one byte in the middle.
    let chk = dir.path().join("round-trip").join("chk-100000");
    let file = std::fs::read_dir(&chk)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_file())
        .unwrap();
    let mut on_disk = std::fs::read(&file).unwrap();
    on_disk[50_000] ^= 0x20;
    std::fs::write(&file, &on_disk).unwrap();

    // The plugin's own stream notices at end of stream...
    let mut input = storage.open_handle(&handle).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let err = loop {
        match input.read(&mut buf) {
            Ok(0) => panic!("corrupt bytes read to a clean end of stream"),
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(&err, StorageError::Corrupt(m) if m.contains(locator.as_str())),
        "{err}"
    );
    // ...and so does the host's check.
    assert!(matches!(
        read_handle_fully(storage.as_ref(), &handle),
        Err(StorageError::Corrupt(_))
    ));
}

#[test]
fn dot_dot_in_a_job_id_or_handle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let storage = open(&base);
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"do not touch").unwrap();

    for job in ["../escape", "..", "a/../../b", "/abs", "a\\b", ""] {
        let e = storage
            .job(job)
            .err()
            .unwrap_or_else(|| panic!("job id {job:?} accepted"));
        assert!(matches!(e, StorageError::InvalidConfig(_)), "{job:?}: {e}");
    }
    assert!(!dir.path().join("escape").exists());

    for locator in [
        "../victim",
        "job/../../victim",
        "job/chk-1/../../../victim",
        victim.to_str().unwrap(),
    ] {
        let h = StateHandle::Stored {
            locator: locator.to_string(),
            size: 12,
            crc32c: 0,
        };
        let open_err = storage
            .open_handle(&h)
            .err()
            .unwrap_or_else(|| panic!("{locator} opened"));
        assert!(
            matches!(open_err, StorageError::InvalidConfig(_)),
            "{locator}: {open_err}"
        );
        let discard_err = storage
            .discard(&h)
            .err()
            .unwrap_or_else(|| panic!("{locator} discarded"));
        assert!(
            matches!(discard_err, StorageError::InvalidConfig(_)),
            "{locator}: {discard_err}"
        );
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"do not touch");
}

const CHILD_POINTER: &str = "CAIRN_TEST_CHILD_POINTER";
const CHILD_DIR: &str = "CAIRN_TEST_CHILD_DIR";
const CHILD_PARENT: &str = "CAIRN_TEST_CHILD_PARENT";

#[test]
fn a_checkpoint_resolves_from_a_second_process() {
    if let (Ok(pointer), Ok(dir)) = (std::env::var(CHILD_POINTER), std::env::var(CHILD_DIR)) {
        // Child: a fresh process with a freshly loaded plugin, started by the parent below (and
        // nothing else: variables left in the environment must not turn the test into a child
        // that passes without doing the parent's work).
        let parent = std::env::var(CHILD_PARENT).unwrap_or_default();
        assert_eq!(
            parent,
            std::os::unix::process::parent_id().to_string(),
            "{CHILD_POINTER} is set, but this process was not started by the test's parent"
        );
        let storage = open(std::path::Path::new(&dir));
        let resolved = storage
            .resolve(&pointer)
            .expect("resolve in the second process");
        let handle: StateHandle = serde_json::from_slice(&resolved.metadata).unwrap();
        let state = read_handle_fully(storage.as_ref(), &handle).unwrap();
        println!(
            "child-read {} bytes, equal={}",
            state.len(),
            state == bytes(state.len())
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let data = bytes(3 << 20);
    let loc = storage
        .job("two-processes")
        .unwrap()
        .begin_checkpoint(7)
        .unwrap();
    let mut s = loc.create_stream(Scope::Exclusive).unwrap();
    s.write(&data).unwrap();
    let handle = s.close_and_get_handle().unwrap().unwrap();
    // The metadata here is just the handle; the host's real metadata format comes with the
    // coordinator.
    let completed = loc.commit(&serde_json::to_vec(&handle).unwrap()).unwrap();
    drop(storage);

    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "filesystem::a_checkpoint_resolves_from_a_second_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_POINTER, &completed.pointer)
        .env(CHILD_DIR, dir.path())
        .env(CHILD_PARENT, std::process::id().to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("child-read {} bytes, equal=true", data.len())),
        "{stdout}"
    );
}
