//! Options and job ids: every refusal names what is wrong.

use cairn_plugin_api::StorageError;
use cairn_storage_memory::MAX_MAX_STATE_SIZE;

use crate::util::{open, open_err};

#[test]
fn sizes_accept_integers_and_strings() {
    assert_eq!(open("max-state-size = 1").info().max_state_size, Some(1));
    assert_eq!(
        open("max-state-size = \"5MiB\"").info().max_state_size,
        Some(5 << 20)
    );
    assert_eq!(
        open("max-state-size = \"1GiB\"").info().max_state_size,
        Some(MAX_MAX_STATE_SIZE)
    );
}

#[test]
fn bad_sizes_name_the_option_and_what_is_allowed() {
    for doc in [
        "max-state-size = 0",
        "max-state-size = -5",
        "max-state-size = \"1025MiB\"",
        "max-state-size = \"five megs\"",
        "max-state-size = false",
    ] {
        let err = open_err(doc);
        assert!(
            matches!(&err, StorageError::InvalidConfig(m) if m.contains("storage.options.max-state-size")),
            "{doc}: {err}"
        );
    }
    let err = open_err("max-state-size = 0");
    assert!(err.message().contains("from 1 byte to 1 GiB"), "{err}");
}

#[test]
fn unknown_options_are_named() {
    let err = open_err("max-state-sise = 10");
    assert!(
        matches!(&err, StorageError::InvalidConfig(m) if m.contains("max-state-sise")),
        "{err}"
    );
}

#[test]
fn invalid_job_ids_are_refused() {
    let storage = open("");
    let long = "x".repeat(129);
    for id in [
        "",
        ".hidden",
        "..",
        "a/b",
        "a\\b",
        "späti",
        "a b",
        long.as_str(),
    ] {
        let err = storage.job(id).map(|_| ()).unwrap_err();
        assert!(
            matches!(&err, StorageError::InvalidConfig(m) if m.contains("job id")),
            "{id:?}: {err}"
        );
    }
    for id in ["a", "job-1", "Job_2.v3", &"y".repeat(128)] {
        storage.job(id).unwrap_or_else(|e| panic!("{id}: {e}"));
    }
}
