//! Every refusal of the loader has its own error kind and a one-line message naming the file.

use cairn_host::loader::{self, LoadError, SearchPath};

use crate::util::{copy_lib, lib, set_mode};

fn refused(path: &std::path::Path) -> LoadError {
    match loader::load_path(path, None) {
        Ok(p) => panic!(
            "{} loaded as {:?}, expected a refusal",
            path.display(),
            p.manifest()
        ),
        Err(e) => e,
    }
}

fn assert_one_line_naming(e: &LoadError, path: &std::path::Path) {
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "not one line: {msg}");
    assert!(
        msg.contains(&path.display().to_string())
            || msg.contains(path.file_name().unwrap().to_str().unwrap()),
        "does not name the file: {msg}"
    );
}

#[test]
fn a_missing_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libnothing.so");
    let e = refused(&path);
    assert!(matches!(e, LoadError::Missing { .. }), "{e}");
    assert_one_line_naming(&e, &path);
}

#[test]
fn a_text_file_is_not_a_shared_library() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libjunk.so");
    std::fs::write(&path, "hello, I am not a library\n").unwrap();
    let e = refused(&path);
    assert!(
        matches!(&e, LoadError::NotSharedLibrary { found, .. } if found.contains("text starting with")),
        "{e}"
    );
    assert_one_line_naming(&e, &path);
}

#[test]
fn an_empty_file_is_not_a_shared_library() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libempty.so");
    std::fs::write(&path, b"").unwrap();
    let e = refused(&path);
    assert!(
        matches!(&e, LoadError::NotSharedLibrary { found, .. } if found == "an empty file"),
        "{e}"
    );
}

#[test]
fn a_shared_library_without_the_probe_is_not_a_plugin() {
    let path = lib("cairn-fixture-not-a-plugin");
    let e = refused(&path);
    assert!(
        matches!(&e, LoadError::NotAPlugin { why, .. } if why.contains("cairn_plugin_api_version")),
        "{e}"
    );
    assert_one_line_naming(&e, &path);
}

#[test]
fn an_older_major_api_is_refused() {
    let path = lib("cairn-fixture-api-old-major");
    let e = refused(&path);
    match &e {
        LoadError::IncompatibleApi { found, why, .. } => {
            assert_eq!(found.to_string(), "0.9");
            assert!(why.contains("major versions must match"), "{why}");
        }
        other => panic!("expected IncompatibleApi, got {other}"),
    }
    assert_one_line_naming(&e, &path);
}

#[test]
fn a_newer_major_api_is_refused() {
    let path = lib("cairn-fixture-api-new-major");
    let e = refused(&path);
    assert!(
        matches!(&e, LoadError::IncompatibleApi { found, host, .. } if found.major == host.major + 1),
        "{e}"
    );
    assert_one_line_naming(&e, &path);
}

#[test]
fn a_newer_minor_api_is_refused_with_upgrade_advice() {
    let path = lib("cairn-fixture-api-new-minor");
    let e = refused(&path);
    assert!(
        matches!(&e, LoadError::IncompatibleApi { found, host, why, .. }
            if found.major == host.major && found.minor == host.minor + 1 && why.contains("upgrade cairn")),
        "{e}"
    );
}

#[test]
fn a_layout_mismatch_is_one_line() {
    let path = lib("cairn-fixture-layout-mismatch");
    let e = refused(&path);
    assert!(
        matches!(&e, LoadError::LayoutMismatch { summary, .. } if !summary.is_empty()),
        "{e}"
    );
    assert_one_line_naming(&e, &path);
    assert!(e.to_string().len() < 600, "summary too long: {e}");
}

#[test]
fn a_world_writable_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_lib(
        "cairn-storage-memory-cdylib",
        dir.path(),
        "libcairn_storage_memory.so",
    );
    set_mode(&path, 0o666);
    let e = refused(&path);
    assert!(
        matches!(e, LoadError::WorldWritable { mode, .. } if mode & 0o002 != 0),
        "{e}"
    );
    assert_one_line_naming(&e, &path);
    set_mode(&path, 0o644);
    assert!(loader::load_path(&path, None).is_ok());
}

#[test]
fn a_pin_that_does_not_match_is_refused_before_loading() {
    let path = lib("cairn-storage-memory-cdylib");
    let wrong = "0".repeat(64);
    let e = loader::load_path(&path, Some(&wrong)).unwrap_err();
    assert!(
        matches!(&e, LoadError::Sha256Mismatch { expected, .. } if *expected == wrong),
        "{e}"
    );
    assert_eq!(e.kind(), "sha256-mismatch");
    // The right pin loads.
    let plugin = loader::load_path(&path, None).unwrap();
    let pinned = loader::load_path(&path, Some(&plugin.sha256().to_uppercase())).unwrap();
    assert_eq!(pinned.manifest().name, "memory");
}

#[test]
fn a_pin_by_name_only_opens_matching_files() {
    let dir = tempfile::tempdir().unwrap();
    copy_lib(
        "cairn-storage-memory-cdylib",
        dir.path(),
        "libcairn_storage_memory.so",
    );
    let search = SearchPath::new(vec![dir.path().to_path_buf()]);
    let e = loader::load_by_name(&search, "memory", Some(&"ab".repeat(32))).unwrap_err();
    assert_eq!(e.kind(), "sha256-mismatch", "{e}");
    let right = loader::load_by_name(&search, "memory", None)
        .unwrap()
        .sha256()
        .to_string();
    assert_eq!(
        loader::load_by_name(&search, "memory", Some(&right))
            .unwrap()
            .manifest()
            .name,
        "memory"
    );
}

#[test]
fn a_duplicate_name_in_the_search_path_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let first = copy_lib(
        "cairn-storage-memory-cdylib",
        a.path(),
        "libcairn_storage_memory.so",
    );
    let second = copy_lib("cairn-storage-memory-cdylib", b.path(), "libmemory_copy.so");
    let search = SearchPath::new(vec![a.path().to_path_buf(), b.path().to_path_buf()]);
    let e = loader::load_by_name(&search, "memory", None).unwrap_err();
    match &e {
        LoadError::DuplicateName {
            name,
            first: f,
            second: s,
        } => {
            assert_eq!(name, "memory");
            let both = [f.clone(), s.clone()];
            assert!(both.contains(&first.canonicalize().unwrap()), "{e}");
            assert!(both.contains(&second.canonicalize().unwrap()), "{e}");
        }
        other => panic!("expected DuplicateName, got {other}"),
    }
    // The same directory listed twice is one file, not a duplicate.
    let twice = SearchPath::new(vec![a.path().to_path_buf(), a.path().to_path_buf()]);
    assert!(loader::load_by_name(&twice, "memory", None).is_ok());
}

#[test]
fn an_unknown_name_lists_what_is_available() {
    let dir = tempfile::tempdir().unwrap();
    copy_lib(
        "cairn-storage-memory-cdylib",
        dir.path(),
        "libcairn_storage_memory.so",
    );
    std::fs::write(dir.path().join("libjunk.so"), "junk").unwrap();
    let search = SearchPath::new(vec![dir.path().to_path_buf()]);
    let e = loader::load_by_name(&search, "s3", None).unwrap_err();
    assert!(
        matches!(&e, LoadError::UnknownName { available, .. } if available.contains("memory")),
        "{e}"
    );
    // Discovery reports the junk file as refused and still finds the plugin.
    let found = loader::discover(&search);
    assert_eq!(found.plugins.len(), 1);
    assert!(matches!(
        found.refused.as_slice(),
        [(_, LoadError::NotSharedLibrary { .. })]
    ));
}
