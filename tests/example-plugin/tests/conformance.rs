//! The plugin author's own test: the conformance suite in process, in one line.

#[test]
fn the_conformance_suite_passes() {
    let scratch = tempfile::tempdir().unwrap();
    cairn_conformance::assert_passes::<cairn_example_plugin::ExamplePlugin>(None, scratch.path());
}
