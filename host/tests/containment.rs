//! A plugin panic becomes a `Panicked` error and the host keeps working; plugin log events reach
//! the host's subscriber; two plugins loaded in one process stay two plugins.

use std::sync::{Arc, Mutex};

use cairn_plugin_api::{
    read_handle_fully, Capabilities, CheckpointStorage, Scope, StateHandle, StorageError,
};
use tracing_subscriber::{layer::SubscriberExt, Layer};

use crate::util::{fs_options, load};

fn panicking_options(at: &str) -> String {
    format!("panic-in = {at:?}\n")
}

fn expect_panicked<T>(r: Result<T, StorageError>, call: &str) -> String {
    match r {
        Err(StorageError::Panicked(msg)) => {
            assert!(
                msg.contains(&format!("in {call}()")),
                "panic message should name {call}(): {msg}"
            );
            assert!(msg.contains("as configured"), "panic message lost: {msg}");
            msg
        }
        Err(other) => panic!("expected Panicked from {call}, got {other}"),
        Ok(_) => panic!("expected Panicked from {call}, got Ok"),
    }
}

#[test]
fn a_panic_in_open_or_info_is_an_error() {
    let plugin = load("cairn-fixture-panicking");
    expect_panicked(plugin.open(&panicking_options("open")), "open");
    expect_panicked(plugin.open(&panicking_options("info")), "info");
    // The same library keeps working.
    assert!(plugin.open(&panicking_options("nowhere")).is_ok());
}

#[test]
fn a_panic_in_any_call_leaves_the_host_working() {
    let plugin = load("cairn-fixture-panicking");

    let storage = plugin.open(&panicking_options("job")).unwrap();
    expect_panicked(storage.job("job-1"), "job");
    expect_panicked(storage.job("job-1"), "job");

    let storage = plugin.open(&panicking_options("create-stream")).unwrap();
    let location = storage.job("job-1").unwrap().begin_checkpoint(1).unwrap();
    expect_panicked(location.create_stream(Scope::Exclusive), "create_stream");
    // The location itself still works after its call panicked.
    assert_eq!(location.commit(b"meta").unwrap().checkpoint_id, 1);

    let storage = plugin.open(&panicking_options("write")).unwrap();
    let location = storage.job("job-1").unwrap().begin_checkpoint(2).unwrap();
    let mut stream = location.create_stream(Scope::Exclusive).unwrap();
    expect_panicked(stream.write(b"x"), "write");
    assert_eq!(stream.pos().unwrap(), 0);
    drop(stream);

    let storage = plugin.open(&panicking_options("close")).unwrap();
    let job = storage.job("job-1").unwrap();
    let mut stream = job.create_task_owned_stream().unwrap();
    stream.write(b"abc").unwrap();
    expect_panicked(stream.close_and_get_handle(), "close_and_get_handle");

    // A panic while a stream is dropped is caught inside the plugin and logged; the process
    // goes on (an unwinding panic across the boundary would have aborted it).
    let storage = plugin.open(&panicking_options("drop")).unwrap();
    let mut stream = storage
        .job("j")
        .unwrap()
        .create_task_owned_stream()
        .unwrap();
    stream.write(b"abc").unwrap();
    let handle = stream.close_and_get_handle().unwrap().unwrap();
    drop(stream);
    assert_eq!(
        read_handle_fully(storage.as_ref(), &handle).unwrap(),
        b"abc"
    );

    // Another plugin in the same process is unaffected.
    let memory = load("cairn-storage-memory-cdylib").open("").unwrap();
    let loc = memory.job("job-1").unwrap().begin_checkpoint(1).unwrap();
    let mut s = loc.create_stream(Scope::Exclusive).unwrap();
    s.write(b"still fine").unwrap();
    let h = s.close_and_get_handle().unwrap().unwrap();
    assert_eq!(
        read_handle_fully(memory.as_ref(), &h).unwrap(),
        b"still fine"
    );
}

/// A stored handle and a completed checkpoint's pointer, made with calls that do not panic in a
/// fixture that panics only in `at`.
fn prepared(storage: &dyn CheckpointStorage) -> (StateHandle, String) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let loc = storage.job("prep").unwrap().begin_checkpoint(id).unwrap();
    let mut s = loc.create_stream(Scope::Exclusive).unwrap();
    s.write(&[5u8; 1000]).unwrap();
    let handle = s.close_and_get_handle().unwrap().unwrap();
    assert!(!handle.is_inline(), "the fixture should store 1000 bytes");
    let pointer = loc.commit(b"meta").unwrap().pointer;
    (handle, pointer)
}

/// Every entry of every vtable, each in a fixture that panics there and only there: the host
/// gets `Panicked` naming the call, and the same instance keeps working for other calls.
#[test]
fn a_panic_in_every_vtable_entry_is_an_error_naming_it() {
    type Call = fn(&dyn CheckpointStorage, &std::path::Path) -> Result<(), StorageError>;
    let cases: &[(&str, &str, Call)] = &[
        ("job", "job", |s, _| s.job("j").map(drop)),
        ("resolve", "resolve", |s, _| {
            let (_, pointer) = prepared(s);
            s.resolve(&pointer).map(drop)
        }),
        ("open-handle", "open_handle", |s, _| {
            let (handle, _) = prepared(s);
            s.open_handle(&handle).map(drop)
        }),
        ("discard", "discard", |s, _| {
            let (handle, _) = prepared(s);
            s.discard(&handle)
        }),
        ("dispose", "dispose", |s, _| {
            let (_, pointer) = prepared(s);
            s.dispose(&pointer)
        }),
        ("corrupt-for-testing", "corrupt_for_testing", |s, _| {
            let (handle, _) = prepared(s);
            s.corrupt_for_testing(&handle)
        }),
        ("begin-checkpoint", "begin_checkpoint", |s, _| {
            s.job("j").unwrap().begin_checkpoint(1).map(drop)
        }),
        ("begin-savepoint", "begin_savepoint", |s, dir| {
            let target = dir.to_string_lossy().into_owned();
            s.job("j")
                .unwrap()
                .begin_savepoint(1, Some(&target))
                .map(drop)
        }),
        ("create-stream", "create_task_owned_stream", |s, _| {
            s.job("j").unwrap().create_task_owned_stream().map(drop)
        }),
        ("list-completed", "list_completed", |s, _| {
            s.job("j").unwrap().list_completed().map(drop)
        }),
        ("list-objects", "list_objects", |s, _| {
            s.job("j").unwrap().list_objects().map(drop)
        }),
        ("list-uncommitted", "list_uncommitted", |s, _| {
            s.job("j").unwrap().list_uncommitted().map(drop)
        }),
        (
            "list-uncommitted-savepoints",
            "list_uncommitted_savepoints",
            |s, _| {
                s.job("j")
                    .unwrap()
                    .list_uncommitted_savepoints(None)
                    .map(drop)
            },
        ),
        ("list-savepoints", "list_savepoints", |s, _| {
            s.job("j").unwrap().list_savepoints(None).map(drop)
        }),
        ("read-lease", "read_lease", |s, _| {
            s.job("j").unwrap().read_lease().map(drop)
        }),
        ("write-lease", "write_lease", |s, _| {
            s.job("j").unwrap().write_lease(b"r", None).map(drop)
        }),
        ("create-stream", "create_stream", |s, _| {
            let loc = s.job("j").unwrap().begin_checkpoint(1).unwrap();
            loc.create_stream(Scope::Exclusive).map(drop)
        }),
        ("commit", "commit", |s, _| {
            s.job("j")
                .unwrap()
                .begin_checkpoint(1)
                .unwrap()
                .commit(b"m")
                .map(drop)
        }),
        ("dispose-on-failure", "dispose_on_failure", |s, _| {
            s.job("j")
                .unwrap()
                .begin_checkpoint(1)
                .unwrap()
                .dispose_on_failure()
        }),
        ("write", "write", |s, _| {
            let loc = s.job("j").unwrap().begin_checkpoint(1).unwrap();
            loc.create_stream(Scope::Exclusive).unwrap().write(b"x")
        }),
        ("pos", "pos", |s, _| {
            let loc = s.job("j").unwrap().begin_checkpoint(1).unwrap();
            loc.create_stream(Scope::Exclusive).unwrap().pos().map(drop)
        }),
        ("close", "close_and_get_handle", |s, _| {
            let loc = s.job("j").unwrap().begin_checkpoint(1).unwrap();
            let mut stream = loc.create_stream(Scope::Exclusive).unwrap();
            stream.write(b"abc").unwrap();
            stream.close_and_get_handle().map(drop)
        }),
        ("read", "read", |s, _| {
            let (handle, _) = prepared(s);
            let mut input = s.open_handle(&handle).unwrap();
            input.read(&mut [0u8; 64]).map(drop)
        }),
    ];
    let plugin = load("cairn-fixture-panicking");
    for (at, call, run) in cases {
        let dir = tempfile::tempdir().unwrap();
        let storage = plugin.open(&panicking_options(at)).unwrap();
        expect_panicked(run(storage.as_ref(), dir.path()), call);
        // Again: the instance survived its panic, and another job on it works.
        expect_panicked(run(storage.as_ref(), dir.path()), call);
        if *at != "job" {
            let other = storage.job("other").unwrap();
            assert!(other.list_completed().is_ok() || *at == "list-completed");
        }
    }
}

/// Every object the host holds, dropped in a fixture that panics in its drop: the process goes
/// on, and the panic is reported through the log, naming the object.
#[test]
fn a_panic_while_any_object_is_dropped_is_logged_and_contained() {
    let plugin = load("cairn-fixture-panicking");
    type Drops = fn(Box<dyn CheckpointStorage>);
    let cases: &[(&str, &str, Drops)] = &[
        ("drop", "Drop", |s| {
            let job = s.job("j").unwrap();
            drop(job.create_task_owned_stream().unwrap());
        }),
        ("drop-input", "DropInput", |s| {
            let (handle, _) = prepared(s.as_ref());
            drop(s.open_handle(&handle).unwrap());
        }),
        ("drop-location", "DropLocation", |s| {
            drop(s.job("j").unwrap().begin_checkpoint(1).unwrap());
        }),
        ("drop-job", "DropJob", |s| drop(s.job("j").unwrap())),
        ("drop-storage", "DropStorage", drop),
    ];
    for (at, object, run) in cases {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        tracing::subscriber::with_default(subscriber, || {
            run(plugin.open(&panicking_options(at)).unwrap());
        });
        let lines = capture.0.lock().unwrap().clone();
        assert!(
            lines.iter().any(|l| l.starts_with("ERROR cairn::plugin")
                && l.contains("panicked while being dropped")
                && l.contains(&format!("panic in {object},"))),
            "{at}: no forwarded drop-panic event naming {object} in {lines:#?}"
        );
    }
    // The library still works after all of them.
    assert!(plugin.open(&panicking_options("nowhere")).is_ok());
}

/// Collects every event's target, level and message.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        let mut f = Fields(String::new());
        event.record(&mut f);
        let m = event.metadata();
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}{}", m.level(), m.target(), f.0));
    }
}

#[test]
fn plugin_log_events_reach_the_host_subscriber() {
    let plugin = load("cairn-fixture-panicking");
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    tracing::subscriber::with_default(subscriber, || {
        plugin.open(&panicking_options("nowhere")).unwrap();
        // A panic while dropping is reported through the log too.
        let storage = plugin.open(&panicking_options("drop")).unwrap();
        drop(
            storage
                .job("j")
                .unwrap()
                .create_task_owned_stream()
                .unwrap(),
        );
    });
    let lines = capture.0.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l.starts_with("INFO cairn::plugin")
            && l.contains("fixture-panicking opened")
            && l.contains("plugin_target=\"cairn_fixture_panicking\"")),
        "no forwarded open event in {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ERROR cairn::plugin")
                && l.contains("panicked while being dropped")),
        "no forwarded drop-panic event in {lines:#?}"
    );
}

#[test]
fn two_plugins_in_one_process_are_really_two() {
    let dir = tempfile::tempdir().unwrap();
    let memory = load("cairn-storage-memory-cdylib");
    let fs = load("cairn-storage-fs-cdylib");
    assert_eq!(memory.manifest().name, "memory");
    assert_eq!(fs.manifest().name, "filesystem");
    assert_ne!(memory.path(), fs.path());

    let m = memory.open("").unwrap();
    let f = fs.open(&fs_options(dir.path())).unwrap();
    assert!(!m.info().capabilities.contains(Capabilities::PERSISTENT));
    assert!(f.info().capabilities.contains(Capabilities::PERSISTENT));

    // The filesystem instance really writes files; the memory one never does.
    let big = vec![7u8; 100_000];
    for storage in [&m, &f] {
        let loc = storage
            .job("two-plugins")
            .unwrap()
            .begin_checkpoint(1)
            .unwrap();
        let mut s = loc.create_stream(Scope::Exclusive).unwrap();
        s.write(&big).unwrap();
        let h = s.close_and_get_handle().unwrap().unwrap();
        assert_eq!(read_handle_fully(storage.as_ref(), &h).unwrap(), big);
        loc.commit(b"metadata").unwrap();
    }
    assert!(dir
        .path()
        .join("two-plugins")
        .join("chk-1")
        .join("_metadata")
        .is_file());
    // Loading the same file again gives the same plugin, not a stale cached one.
    assert_eq!(
        load("cairn-storage-memory-cdylib").manifest().name,
        "memory"
    );
    assert_eq!(
        load("cairn-storage-fs-cdylib").manifest().name,
        "filesystem"
    );
}
