//! Integration tests of the object-store storage: the conformance suite in process on
//! `file://` and `memory://` URLs, and through the shared library. The suite against a real S3
//! server (SeaweedFS), the commit race and `cairn run` into a bucket are the host's tests
//! (`host/tests/object_store.rs`).

use cairn_conformance::{assert_library_passes, assert_passes, suite::Outcome};
use cairn_storage_object::ObjectStorePlugin;

#[test]
fn the_suite_passes_in_process_on_file_and_memory_urls() {
    let tmp = tempfile::tempdir().unwrap();
    let report = assert_passes::<ObjectStorePlugin>(None, tmp.path());
    assert_eq!(
        report.outcome("resolves_from_a_fresh_instance"),
        Some(&Outcome::Pass)
    );
    let tmp = tempfile::tempdir().unwrap();
    let report = assert_passes::<ObjectStorePlugin>(Some("url = \"memory://ckpt\"\n"), tmp.path());
    assert!(matches!(
        report.outcome("resolves_from_a_fresh_instance"),
        Some(Outcome::Skip(_))
    ));
}

#[test]
fn the_suite_passes_through_the_shared_library() {
    let lib = cairn_harness::artifacts::plugin_library("cairn-storage-object-cdylib")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lib.file_name().unwrap(), "libcairn_storage_object.so");
    let tmp = tempfile::tempdir().unwrap();
    assert_library_passes(&lib, None, tmp.path());
}
