use cairn_conformance::suite::{assert_library_passes, assert_passes, Outcome};
use cairn_storage_memory::MemoryPlugin;

#[test]
fn the_suite_passes_in_process_in_memory_and_with_a_checkpoint_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let report = assert_passes::<MemoryPlugin>(None, tmp.path());
    assert!(matches!(
        report.outcome("resolves_from_a_fresh_instance"),
        Some(Outcome::Skip(_))
    ));
    let tmp = tempfile::tempdir().unwrap();
    let report =
        assert_passes::<MemoryPlugin>(Some("checkpoint-dir = \"{scratch}/meta\"\n"), tmp.path());
    assert_eq!(
        report.outcome("resolves_from_a_fresh_instance"),
        Some(&Outcome::Pass)
    );
    assert_eq!(
        report.outcome("savepoint_without_any_target"),
        Some(&Outcome::Pass)
    );
}

#[test]
fn the_suite_passes_through_the_shared_library() {
    let lib = cairn_harness::artifacts::plugin_library("cairn-storage-memory-cdylib")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lib.file_name().unwrap(), "libcairn_storage_memory.so");
    let tmp = tempfile::tempdir().unwrap();
    assert_library_passes(&lib, None, tmp.path());
}
