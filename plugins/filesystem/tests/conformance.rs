use cairn_conformance::suite::{assert_library_passes, assert_passes, Outcome};
use cairn_storage_fs::FsPlugin;

#[test]
fn the_suite_passes_in_process_with_and_without_a_default_savepoint_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let report = assert_passes::<FsPlugin>(None, tmp.path());
    assert_eq!(
        report.outcome("savepoint_to_default_target"),
        Some(&Outcome::Pass)
    );
    let tmp = tempfile::tempdir().unwrap();
    let report = assert_passes::<FsPlugin>(Some("dir = \"{scratch}/checkpoints\"\n"), tmp.path());
    assert_eq!(
        report.outcome("savepoint_without_any_target"),
        Some(&Outcome::Pass)
    );
}

#[test]
fn the_suite_passes_through_the_shared_library() {
    let lib = cairn_harness::artifacts::plugin_library("cairn-storage-fs-cdylib")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lib.file_name().unwrap(), "libcairn_storage_fs.so");
    let tmp = tempfile::tempdir().unwrap();
    assert_library_passes(&lib, None, tmp.path());
}
