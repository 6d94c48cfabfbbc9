//! In-process tests of the whole plugin against `memory://` (the `dlopen` path and the real S3
//! server are covered by the host's integration tests and the conformance suite).

use cairn_plugin_api::{
    read_handle_fully, CheckpointStorage, ErrorKind, Scope, StateHandle, StoragePlugin,
};

use crate::ObjectStorePlugin;

const MIB: usize = 1 << 20;

fn open(extra: &str) -> Box<dyn CheckpointStorage> {
    ObjectStorePlugin::open(&format!(
        "url = \"memory://ckpt\"\npart-size = \"5MiB\"\n{extra}"
    ))
    .expect("open memory:// storage")
}

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed ^ len as u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Write `data` into a new EXCLUSIVE stream of checkpoint `id` in writes of `chunk` bytes.
fn write(
    storage: &dyn CheckpointStorage,
    id: u64,
    data: &[u8],
    chunk: usize,
) -> Option<StateHandle> {
    let loc = storage.job("unit").unwrap().begin_checkpoint(id).unwrap();
    let mut s = loc.create_stream(Scope::Exclusive).unwrap();
    for piece in data.chunks(chunk) {
        s.write(piece).unwrap();
    }
    assert_eq!(s.pos().unwrap(), data.len() as u64);
    s.close_and_get_handle().unwrap()
}

#[test]
fn sizes_around_the_threshold_and_the_part_size_round_trip() {
    let storage = open("");
    let t = 20 * 1024;
    for (i, (size, chunk)) in [
        (1, 1),
        (t, 7),
        (t + 1, 4096),
        (5 * MIB, 65_537),
        (5 * MIB + 1, MIB),
        (3 * 5 * MIB + 7, 3 * MIB),
        (26 * MIB, 26 * MIB),
    ]
    .into_iter()
    .enumerate()
    {
        let data = bytes(size, i as u64);
        let h = write(storage.as_ref(), i as u64 + 1, &data, chunk).unwrap();
        assert_eq!(h.is_inline(), size <= t, "{size}");
        assert_eq!(h.size(), size as u64);
        assert_eq!(
            read_handle_fully(storage.as_ref(), &h).unwrap(),
            data,
            "{size}"
        );
    }
    assert_eq!(write(storage.as_ref(), 99, &[], 1), None);
}

#[test]
fn a_dropped_stream_aborts_its_upload() {
    let storage = open("");
    let job = storage.job("unit").unwrap();
    let loc = job.begin_checkpoint(1).unwrap();
    for size in [100_000, 6 * MIB, 16 * MIB] {
        let mut s = loc.create_stream(Scope::Shared).unwrap();
        s.write(&bytes(size, 1)).unwrap();
        drop(s);
        let mut t = job.create_task_owned_stream().unwrap();
        t.write(&bytes(size, 2)).unwrap();
        drop(t);
    }
    assert_eq!(job.list_objects().unwrap(), vec![]);
}

#[test]
fn a_location_commits_once_and_is_listed_only_then() {
    let storage = open("");
    let job = storage.job("unit").unwrap();
    let loc = job.begin_checkpoint(7).unwrap();
    let mut s = loc.create_stream(Scope::Exclusive).unwrap();
    s.write(&bytes(50_000, 7)).unwrap();
    let h = s.close_and_get_handle().unwrap().unwrap();
    assert_eq!(job.list_completed().unwrap(), vec![]);
    assert_eq!(job.list_uncommitted().unwrap(), vec![7]);
    let done = loc.commit(b"metadata").unwrap();
    assert_eq!(done.pointer, "memory://ckpt/unit/chk-7");
    assert_eq!(job.list_uncommitted().unwrap(), Vec::<u64>::new());
    let again = loc.commit(b"other").unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyExists, "{again}");
    let begin = job.begin_checkpoint(7).map(|_| ()).unwrap_err();
    assert_eq!(begin.kind(), ErrorKind::AlreadyExists, "{begin}");
    let resolved = storage
        .resolve("memory://ckpt/unit/chk-7/_metadata")
        .unwrap();
    assert_eq!(resolved.metadata, b"metadata");
    assert_eq!(resolved.pointer, done.pointer);
    // A committed location is not removed as a failed one; disposing it removes everything.
    let refused = loc.dispose_on_failure().unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::AlreadyExists, "{refused}");
    storage.dispose(&done.pointer).unwrap();
    storage.dispose(&done.pointer).unwrap();
    assert_eq!(job.list_completed().unwrap(), vec![]);
    let gone = storage.open_handle(&h).map(|_| ()).unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound, "{gone}");
}

#[test]
fn an_uncommitted_location_is_cleaned_by_dispose_on_failure() {
    let storage = open("");
    let job = storage.job("unit").unwrap();
    let loc = job.begin_checkpoint(3).unwrap();
    write(storage.as_ref(), 3, &bytes(40_000, 3), 1000).unwrap();
    assert_eq!(job.list_uncommitted().unwrap(), vec![3]);
    assert_eq!(job.list_objects().unwrap().len(), 1);
    loc.dispose_on_failure().unwrap();
    loc.dispose_on_failure().unwrap();
    assert_eq!(job.list_uncommitted().unwrap(), Vec::<u64>::new());
    assert_eq!(job.list_objects().unwrap(), vec![]);
}

#[test]
fn damage_and_tampering_are_named() {
    let storage = open("");
    let h = write(storage.as_ref(), 1, &bytes(30_000, 1), 30_000).unwrap();
    storage.corrupt_for_testing(&h).unwrap();
    let err = read_handle_fully(storage.as_ref(), &h).unwrap_err();
    let StateHandle::Stored {
        locator,
        size,
        crc32c,
    } = &h
    else {
        panic!("{h:?}")
    };
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.message().contains(locator.as_str()), "{err}");
    for bad in [
        "../unit/shared/x",
        "unit/chk-1/../../x",
        "s3://other/x/y",
        "/etc/passwd",
    ] {
        let tampered = StateHandle::Stored {
            locator: bad.to_string(),
            size: *size,
            crc32c: *crc32c,
        };
        for result in [
            storage.open_handle(&tampered).map(|_| ()),
            storage.discard(&tampered),
        ] {
            let e = result.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad}: {e}");
        }
    }
    for bad in [
        "memory://ckpt",
        "memory://ckpt/unit",
        "memory://elsewhere/x",
    ] {
        let e = storage.dispose(bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad}: {e}");
    }
    let e = storage.job("../x").map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
}

#[test]
fn savepoints_go_to_their_target_or_the_default() {
    let storage = open("savepoint-url = \"memory://sp\"\n");
    let job = storage.job("unit").unwrap();
    for (target, under) in [
        (None, "memory://sp/"),
        (Some("memory://other"), "memory://other/"),
    ] {
        let loc = job.begin_savepoint(1, target).unwrap();
        let mut s = loc.create_stream(Scope::Shared).unwrap();
        s.write(&bytes(25_000, 5)).unwrap();
        let h = s.close_and_get_handle().unwrap().unwrap();
        let done = loc.commit(b"savepoint").unwrap();
        assert!(done.pointer.starts_with(under), "{}", done.pointer);
        let StateHandle::Stored { locator, .. } = &h else {
            panic!("{h:?}")
        };
        assert!(locator.starts_with(&done.pointer), "{locator}");
        assert_eq!(
            read_handle_fully(storage.as_ref(), &h).unwrap(),
            bytes(25_000, 5)
        );
        storage.dispose(&done.pointer).unwrap();
        assert_eq!(
            storage.resolve(&done.pointer).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }
    // Without a default, a clear error; the memory of another storage is not reachable.
    let plain = open("");
    let e = plain
        .job("unit")
        .unwrap()
        .begin_savepoint(1, None)
        .map(|_| ())
        .unwrap_err();
    assert!(e.message().contains("savepoint"), "{e}");
    let file = ObjectStorePlugin::open("url = \"file:///tmp/cairn-unit-never-written\"").unwrap();
    let e = file
        .job("unit")
        .unwrap()
        .begin_savepoint(1, Some("memory://x"))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
}

#[test]
fn the_manifest_and_info_describe_the_url() {
    let m = ObjectStorePlugin::manifest();
    assert_eq!(m.name, "object-store");
    m.validate().unwrap();
    assert!(m.test_options.contains("file://{scratch}"));
    let info = open("").info();
    assert_eq!(info.location, "memory://ckpt");
    assert!(!info
        .capabilities
        .contains(cairn_plugin_api::Capabilities::PERSISTENT));
    let s3 = ObjectStorePlugin::open(
        "url = \"s3://bucket/p\"\nendpoint = \"http://127.0.0.1:9\"\nregion = \"us-east-1\"\n\
         access-key-id = \"k\"\nsecret-access-key = \"s\"\nallow-http = true\n",
    )
    .unwrap();
    let caps = s3.info().capabilities;
    assert!(caps.contains(cairn_plugin_api::Capabilities::HIGHLY_AVAILABLE));
    assert_eq!(s3.info().location, "s3://bucket/p");
    let e = ObjectStorePlugin::open("url = \"memory://\"\nbogus = 1")
        .map(|_| ())
        .unwrap_err();
    assert!(e.message().contains("storage.options.bogus"), "{e}");
}
