use std::fs;

use cairn_plugin_api::{read_handle_fully, Scope, StateHandle, StorageError};

use crate::util::{data, names, read_raw, write_chunked, Env};

const THRESHOLD: usize = 20 * 1024;
const CHUNKS: &[usize] = &[1, 7, 4096, 100_000];

/// Write `len` bytes to a fresh exclusive stream, close it, check the handle's kind, and read it
/// back through the plugin's stream and through `read_handle_fully`.
fn round_trip(env: &Env, len: usize, chunks: &[usize], expect_inline: bool) {
    let job = env.storage.job("job").unwrap();
    let loc = job.begin_checkpoint(len as u64).unwrap();
    let mut out = loc.create_stream(Scope::Exclusive).unwrap();
    let bytes = data(len, len as u64);
    write_chunked(out.as_mut(), &bytes, chunks);
    assert_eq!(out.pos().unwrap(), len as u64);
    let handle = out
        .close_and_get_handle()
        .unwrap()
        .expect("a handle for non-empty state");
    assert_eq!(handle.size(), len as u64, "len {len}");
    assert_eq!(handle.is_inline(), expect_inline, "len {len}: {handle:?}");
    match &handle {
        StateHandle::Inline(inline) => {
            assert_eq!(inline, &bytes);
            let chk = env.base().join("job").join(format!("chk-{len}"));
            assert!(
                names(&chk).is_empty(),
                "an inline stream left files: {:?}",
                names(&chk)
            );
        }
        StateHandle::Stored {
            locator, crc32c, ..
        } => {
            assert!(locator.starts_with(&format!("job/chk-{len}/")), "{locator}");
            assert_eq!(*crc32c, crc32c::crc32c(&bytes));
            assert_eq!(
                fs::metadata(env.file_of(&handle)).unwrap().len(),
                len as u64
            );
        }
    }
    assert!(
        read_raw(env.storage.as_ref(), &handle).unwrap() == bytes,
        "len {len}: bytes differ"
    );
    assert!(
        read_handle_fully(env.storage.as_ref(), &handle).unwrap() == bytes,
        "len {len}"
    );
}

#[test]
fn nothing_written_gives_no_handle_and_no_file() {
    let env = Env::new();
    let loc = env.storage.job("job").unwrap().begin_checkpoint(1).unwrap();
    let mut out = loc.create_stream(Scope::Exclusive).unwrap();
    out.write(&[]).unwrap();
    assert_eq!(out.pos().unwrap(), 0);
    assert_eq!(out.close_and_get_handle().unwrap(), None);
    assert!(names(&env.base().join("job/chk-1")).is_empty());
}

#[test]
fn sizes_around_the_default_threshold() {
    let env = Env::new();
    assert_eq!(env.storage.info().inline_threshold, THRESHOLD as u64);
    for (len, inline) in [
        (1, true),
        (THRESHOLD - 1, true),
        (THRESHOLD, true),
        (THRESHOLD + 1, false),
        (1 << 20, false),
    ] {
        round_trip(&env, len, CHUNKS, inline);
        round_trip(&env, len, &[len], inline);
    }
}

#[test]
fn sixty_four_mib_in_mixed_writes() {
    let env = Env::new();
    round_trip(&env, 64 << 20, CHUNKS, false);
}

#[test]
fn write_buffer_larger_than_threshold_still_stores_above_it() {
    // The buffer (4 KiB) outgrows the threshold (1 KiB): 1025..=4096 bytes never reach the file
    // before close, and must still give a stored handle.
    let env = Env::with("inline-threshold = \"1KiB\"\nwrite-buffer = \"4KiB\"");
    round_trip(&env, 1024, &[100], true);
    round_trip(&env, 1025, &[100], false);
    round_trip(&env, 4096, &[4096], false);
    round_trip(&env, 4097, &[1, 4096], false);
}

#[test]
fn threshold_zero_stores_everything_but_empty_state() {
    let env = Env::with("inline-threshold = 0");
    round_trip(&env, 1, &[1], false);
    round_trip(&env, 10_000, CHUNKS, false);
}

#[test]
fn a_flipped_byte_on_disk_is_corrupt_and_names_the_locator() {
    let env = Env::new();
    let loc = env.storage.job("job").unwrap().begin_checkpoint(1).unwrap();
    let mut out = loc.create_stream(Scope::Exclusive).unwrap();
    out.write(&data(100_000, 1)).unwrap();
    let handle = out.close_and_get_handle().unwrap().unwrap();
    let StateHandle::Stored { locator, .. } = &handle else {
        panic!("expected stored")
    };
    let path = env.file_of(&handle);
    let mut bytes = fs::read(&path).unwrap();
    bytes[54_321] ^= 0x40;
    fs::write(&path, &bytes).unwrap();

    let err = read_raw(env.storage.as_ref(), &handle).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt(m) if m.contains(&format!("handle '{locator}'")) && m.contains("checksum mismatch")),
        "{err}"
    );
    let err = read_handle_fully(env.storage.as_ref(), &handle).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt(m) if m.contains(locator.as_str())),
        "{err}"
    );

    // A truncated or extended file is corrupt too, before a byte is read.
    fs::write(&path, &bytes[..1000]).unwrap();
    let err = read_raw(env.storage.as_ref(), &handle).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt(m) if m.contains("size mismatch")),
        "{err}"
    );

    // A handle that lies about its checksum is caught as well.
    let lying = StateHandle::Stored {
        locator: locator.clone(),
        size: 1000,
        crc32c: 0,
    };
    let err = read_raw(env.storage.as_ref(), &lying).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt(m) if m.contains(locator.as_str())),
        "{err}"
    );

    fs::remove_file(&path).unwrap();
    let err = read_raw(env.storage.as_ref(), &handle).unwrap_err();
    assert!(
        matches!(&err, StorageError::NotFound(m) if m.contains(locator.as_str())),
        "{err}"
    );
}

#[test]
fn write_after_close_and_second_close_are_errors() {
    let env = Env::new();
    let loc = env.storage.job("job").unwrap().begin_checkpoint(1).unwrap();
    for len in [0, 10, 100_000] {
        let mut out = loc.create_stream(Scope::Exclusive).unwrap();
        out.write(&data(len, 3)).unwrap();
        let handle = out.close_and_get_handle().unwrap();
        assert_eq!(handle.is_some(), len > 0);
        let err = out.write(b"more").unwrap_err();
        assert!(
            matches!(&err, StorageError::Other(m) if m.contains("stream is closed")),
            "{err}"
        );
        let err = out.close_and_get_handle().unwrap_err();
        assert!(
            matches!(&err, StorageError::Other(m) if m.contains("stream is closed")),
            "{err}"
        );
        assert_eq!(out.pos().unwrap(), len as u64);
        // The handle from the first close is still good.
        if let Some(h) = handle {
            assert_eq!(
                read_handle_fully(env.storage.as_ref(), &h).unwrap(),
                data(len, 3)
            );
        }
    }
}

#[test]
fn dropping_a_stream_deletes_its_file() {
    let env = Env::new();
    let loc = env.storage.job("job").unwrap().begin_checkpoint(1).unwrap();
    let chk = env.base().join("job/chk-1");
    let mut out = loc.create_stream(Scope::Exclusive).unwrap();
    out.write(&data(200_000, 4)).unwrap();
    assert_eq!(names(&chk).len(), 1, "the overflowing stream has a file");
    drop(out);
    assert!(names(&chk).is_empty(), "{:?}", names(&chk));

    let mut out = loc.create_stream(Scope::Shared).unwrap();
    out.write(&data(200_000, 5)).unwrap();
    drop(out);
    assert!(names(&env.base().join("job/shared")).is_empty());
}

#[test]
fn scopes_and_task_owned_streams_go_to_their_directories() {
    let env = Env::new();
    let job = env.storage.job("job").unwrap();
    let loc = job.begin_checkpoint(9).unwrap();
    let big = data(50_000, 6);
    let mut handles = Vec::new();
    for (mut out, prefix) in [
        (loc.create_stream(Scope::Exclusive).unwrap(), "job/chk-9/"),
        (loc.create_stream(Scope::Shared).unwrap(), "job/shared/"),
        (job.create_task_owned_stream().unwrap(), "job/taskowned/"),
    ] {
        out.write(&big).unwrap();
        let handle = out.close_and_get_handle().unwrap().unwrap();
        let StateHandle::Stored { locator, .. } = &handle else {
            panic!("expected stored")
        };
        assert!(locator.starts_with(prefix), "{locator}");
        assert_eq!(
            read_handle_fully(env.storage.as_ref(), &handle).unwrap(),
            big
        );
        handles.push(handle);
    }
    // Handles stay readable from a fresh instance.
    let other = env.reopen();
    for h in &handles {
        assert_eq!(read_handle_fully(other.as_ref(), h).unwrap(), big);
    }
}

#[test]
fn streams_never_create_directories() {
    let env = Env::new();
    let job = env.storage.job("job").unwrap();
    let loc = job.begin_checkpoint(1).unwrap();
    let shared = env.base().join("job/shared");
    fs::remove_dir(&shared).unwrap();
    let mut out = loc.create_stream(Scope::Shared).unwrap();
    out.write(b"small").unwrap();
    let err = out.write(&data(100_000, 7)).unwrap_err();
    assert!(
        matches!(&err, StorageError::NotFound(m) if m.contains("shared")),
        "{err}"
    );
    assert!(!shared.exists());
    // The failed stream gives no handle.
    assert!(matches!(
        out.close_and_get_handle(),
        Err(StorageError::Io(_))
    ));
}

#[test]
fn discard_is_idempotent() {
    let env = Env::new();
    let job = env.storage.job("job").unwrap();
    let mut out = job.create_task_owned_stream().unwrap();
    out.write(&data(30_000, 8)).unwrap();
    let handle = out.close_and_get_handle().unwrap().unwrap();
    let path = env.file_of(&handle);
    assert!(path.exists());
    env.storage.discard(&handle).unwrap();
    assert!(!path.exists());
    env.storage.discard(&handle).unwrap();
    env.storage
        .discard(&StateHandle::Inline(vec![1, 2, 3]))
        .unwrap();
    assert!(matches!(
        read_raw(env.storage.as_ref(), &handle),
        Err(StorageError::NotFound(_))
    ));
}

#[test]
fn many_threads_write_at_once() {
    let env = Env::new();
    let job = env.storage.job("job").unwrap();
    let loc = job.begin_checkpoint(1).unwrap();
    let handles: Vec<StateHandle> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|i| {
                let loc = &loc;
                s.spawn(move || {
                    let mut out = loc.create_stream(Scope::Exclusive).unwrap();
                    out.write(&data(30_000 + i, i as u64)).unwrap();
                    out.close_and_get_handle().unwrap().unwrap()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for (i, h) in handles.iter().enumerate() {
        assert_eq!(
            read_handle_fully(env.storage.as_ref(), h).unwrap(),
            data(30_000 + i, i as u64)
        );
    }
}
