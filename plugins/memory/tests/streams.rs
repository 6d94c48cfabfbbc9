//! Output streams: sizes around the limit, pos, close rules, handles.

use cairn_plugin_api::{Scope, StateHandle, StorageError};
use cairn_storage_memory::DEFAULT_MAX_STATE_SIZE;

use crate::util::{assert_reads_back, open, pattern, write_stream};

#[test]
fn sizes_around_a_small_limit_round_trip_or_fail_at_close() {
    let storage = open("max-state-size = 64");
    let job = storage.job("job-1").unwrap();
    let loc = job.begin_checkpoint(1).unwrap();

    assert_eq!(write_stream(loc.as_ref(), &[]).unwrap(), None);
    for n in [1, 63, 64] {
        let bytes = pattern(n);
        let handle = write_stream(loc.as_ref(), &bytes)
            .unwrap()
            .expect("a handle");
        assert!(
            matches!(&handle, StateHandle::Inline(b) if *b == bytes),
            "{n}: {handle:?}"
        );
        assert_reads_back(storage.as_ref(), &handle, &bytes);
    }

    let mut out = loc.create_stream(Scope::Exclusive).unwrap();
    out.write(&pattern(65)).unwrap();
    assert_eq!(out.pos().unwrap(), 65);
    let err = out.close_and_get_handle().unwrap_err();
    assert!(
        matches!(&err, StorageError::CapacityExceeded(m)
            if m.contains("65 bytes") && m.contains("64 bytes")
                && m.contains("storage.options.max-state-size")),
        "{err}"
    );
}

#[test]
fn an_overflowing_stream_fails_at_close_even_in_small_writes() {
    let storage = open("max-state-size = \"1KiB\"");
    let job = storage.job("job-1").unwrap();
    let mut out = job.create_task_owned_stream().unwrap();
    for i in 0..2000u64 {
        out.write(&[1]).unwrap();
        assert_eq!(out.pos().unwrap(), i + 1);
    }
    assert!(matches!(
        out.close_and_get_handle(),
        Err(StorageError::CapacityExceeded(_))
    ));
}

#[test]
fn the_default_limit_is_five_mebibytes_exactly() {
    let storage = open("");
    assert_eq!(DEFAULT_MAX_STATE_SIZE, 5 * 1024 * 1024);
    assert_eq!(storage.info().max_state_size, Some(DEFAULT_MAX_STATE_SIZE));
    assert_eq!(storage.info().inline_threshold, DEFAULT_MAX_STATE_SIZE);
    let job = storage.job("job-1").unwrap();
    let loc = job.begin_checkpoint(1).unwrap();
    let bytes = pattern(DEFAULT_MAX_STATE_SIZE as usize);
    let handle = write_stream(loc.as_ref(), &bytes)
        .unwrap()
        .expect("a handle");
    assert_eq!(handle.size(), DEFAULT_MAX_STATE_SIZE);
    assert!(handle.is_inline());
    let err =
        write_stream(loc.as_ref(), &pattern(DEFAULT_MAX_STATE_SIZE as usize + 1)).unwrap_err();
    assert!(matches!(err, StorageError::CapacityExceeded(_)), "{err}");
}

#[test]
fn pos_counts_every_byte_written() {
    let storage = open("");
    let job = storage.job("job-1").unwrap();
    let loc = job.begin_checkpoint(1).unwrap();
    let mut out = loc.create_stream(Scope::Shared).unwrap();
    assert_eq!(out.pos().unwrap(), 0);
    let mut expected = Vec::new();
    for chunk in [&b"a"[..], b"", b"bcdef", &pattern(1000)] {
        out.write(chunk).unwrap();
        expected.extend_from_slice(chunk);
        assert_eq!(out.pos().unwrap(), expected.len() as u64);
    }
    let handle = out.close_and_get_handle().unwrap().unwrap();
    assert_eq!(handle, StateHandle::Inline(expected));
}

#[test]
fn write_after_close_and_second_close_are_errors_naming_the_stream() {
    let storage = open("");
    let job = storage.job("job-1").unwrap();
    let loc = job.begin_checkpoint(7).unwrap();
    let mut out = loc.create_stream(Scope::Exclusive).unwrap();
    out.write(b"x").unwrap();
    out.close_and_get_handle().unwrap().unwrap();
    let err = out.write(b"y").unwrap_err();
    assert!(
        matches!(&err, StorageError::Other(m) if m.contains("memory:job-1/chk-7")),
        "{err}"
    );
    let err = out.close_and_get_handle().unwrap_err();
    assert!(
        matches!(&err, StorageError::Other(m) if m.contains("stream #")),
        "{err}"
    );

    let mut task = job.create_task_owned_stream().unwrap();
    task.close_and_get_handle().unwrap();
    let err = task.write(b"y").unwrap_err();
    assert!(
        matches!(&err, StorageError::Other(m) if m.contains("task-owned")),
        "{err}"
    );
}

#[test]
fn task_owned_and_shared_streams_give_inline_handles() {
    let storage = open("");
    let job = storage.job("job-1").unwrap();
    let mut task = job.create_task_owned_stream().unwrap();
    task.write(b"task state").unwrap();
    let handle = task.close_and_get_handle().unwrap().unwrap();
    assert_reads_back(storage.as_ref(), &handle, b"task state");
    storage.discard(&handle).unwrap();
    storage.discard(&handle).unwrap();

    let loc = job.begin_checkpoint(1).unwrap();
    let mut shared = loc.create_stream(Scope::Shared).unwrap();
    shared.write(b"shared").unwrap();
    assert_eq!(
        shared.close_and_get_handle().unwrap(),
        Some(StateHandle::Inline(b"shared".to_vec()))
    );
    // A dropped stream is simply forgotten.
    let mut dropped = loc.create_stream(Scope::Exclusive).unwrap();
    dropped.write(b"gone").unwrap();
    drop(dropped);
}

#[test]
fn stored_handles_are_unsupported() {
    let storage = open("");
    let stored = StateHandle::Stored {
        locator: "shared/abc".into(),
        size: 3,
        crc32c: 0,
    };
    let err = storage.open_handle(&stored).map(|_| ()).unwrap_err();
    assert!(
        matches!(&err, StorageError::Unsupported(m) if m.contains("shared/abc")),
        "{err}"
    );
    let err = storage.discard(&stored).unwrap_err();
    assert!(
        matches!(&err, StorageError::Unsupported(m) if m.contains("another backend")),
        "{err}"
    );
}
