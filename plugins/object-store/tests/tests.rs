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

/// `validate` (what `cairn config check` calls) applies the options' rules without a request:
/// a GCS option on an `s3://` URL is refused, a misspelt option gets "did you mean", and a
/// valid S3 document passes with no server anywhere.
#[test]
fn validate_checks_the_options_without_a_request() {
    use cairn_plugin_api::{StorageError, StoragePlugin};
    let refused = |doc: &str| match ObjectStorePlugin::validate(doc) {
        Err(StorageError::InvalidConfig(m)) => m,
        other => panic!("{doc}: expected InvalidConfig, got {other:?}"),
    };
    let m = refused("url = \"s3://bucket/ckpt\"\nservice-account = \"/key.json\"\n");
    assert!(
        m.contains("service-account") && m.contains("does not apply to s3:// URLs"),
        "{m}"
    );
    let m = refused("url = \"s3://bucket/ckpt\"\nregoin = \"eu-west-1\"\n");
    assert!(m.contains("did you mean `region`?"), "{m}");
    ObjectStorePlugin::validate(
        "url = \"s3://bucket/ckpt\"\nendpoint = \"http://127.0.0.1:1\"\nallow-http = true\n\
         region = \"us-east-1\"\naccess-key-id = \"a\"\nsecret-access-key = \"b\"\n",
    )
    .unwrap();
}
