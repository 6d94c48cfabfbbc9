//! Many threads creating streams at once, on one location and on their own.

use std::thread;

use cairn_plugin_api::{Scope, StateHandle};

use crate::util::open;

#[test]
fn eight_threads_write_a_hundred_streams_each() {
    let storage = open("max-state-size = 4096");
    let job = storage.job("job-1").unwrap();
    let shared_loc = job.begin_checkpoint(1).unwrap();
    let (storage, job, shared_loc) = (storage.as_ref(), job.as_ref(), shared_loc.as_ref());
    thread::scope(|s| {
        for t in 0..8u64 {
            s.spawn(move || {
                let own = job.begin_checkpoint(100 + t).unwrap();
                let mut handles = Vec::new();
                for i in 0..100u64 {
                    let loc = if i % 2 == 0 { shared_loc } else { own.as_ref() };
                    let mut out = loc.create_stream(Scope::Exclusive).unwrap();
                    let bytes = format!("thread {t} stream {i}").repeat((i % 7 + 1) as usize);
                    out.write(bytes.as_bytes()).unwrap();
                    handles.push((out.close_and_get_handle().unwrap().unwrap(), bytes));
                }
                for (handle, bytes) in handles {
                    assert_eq!(handle, StateHandle::Inline(bytes.clone().into_bytes()));
                    let back = cairn_plugin_api::read_handle_fully(storage, &handle).unwrap();
                    assert_eq!(back, bytes.as_bytes());
                }
                own.commit(format!("meta {t}").as_bytes()).unwrap();
            });
        }
    });
    shared_loc.commit(b"meta shared").unwrap();
    let ids: Vec<u64> = job
        .list_completed()
        .unwrap()
        .iter()
        .map(|c| c.checkpoint_id)
        .collect();
    assert_eq!(ids, [1, 100, 101, 102, 103, 104, 105, 106, 107]);
}
