//! Every refusal of the loader has its own error kind and a one-line message naming the file.

use cairn_host::loader::{self, LoadError, SearchPath};

use crate::util::{self, copy_lib, lib, set_mode};

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
    // A copy at a path of its own, so "never mapped" means this refusal loaded nothing (other
    // tests load the original; libraries are never unloaded).
    let dir = tempfile::tempdir().unwrap();
    let path = copy_lib("cairn-storage-memory-cdylib", dir.path(), "libpinned.so");
    let wrong = "0".repeat(64);
    let e = loader::load_path(&path, Some(&wrong)).unwrap_err();
    assert!(
        matches!(&e, LoadError::Sha256Mismatch { expected, .. } if *expected == wrong),
        "{e}"
    );
    assert_eq!(e.kind(), "sha256-mismatch");
    assert!(!is_mapped(&path), "a file refused by its pin was loaded");
    // The pin is checked before the file's contents are judged: a file that is not a plugin, or
    // not a shared library at all, is refused for its pin too.
    for (package, name) in [
        ("cairn-fixture-not-a-plugin", "libnot_a_plugin_pinned.so"),
        ("cairn-fixture-panicking", "libpanicking_pinned.so"),
    ] {
        let other = copy_lib(package, dir.path(), name);
        let e = loader::load_path(&other, Some(&wrong)).unwrap_err();
        assert!(
            matches!(e, LoadError::Sha256Mismatch { .. }),
            "{package}: {e}"
        );
        assert!(
            !is_mapped(&other),
            "{package}: refused by its pin, yet loaded"
        );
    }
    let junk = dir.path().join("libjunk.so");
    std::fs::write(&junk, "not a library").unwrap();
    let e = loader::load_path(&junk, Some(&wrong)).unwrap_err();
    assert!(matches!(e, LoadError::Sha256Mismatch { .. }), "{e}");
    // The right pin loads.
    let right = sha256_hex(&path);
    let pinned = loader::load_path(&path, Some(&right.to_uppercase())).unwrap();
    assert_eq!(pinned.manifest().name, "memory");
    assert!(is_mapped(&path));
}

#[test]
fn a_pin_by_name_only_opens_matching_files() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = copy_lib(
        "cairn-storage-memory-cdylib",
        dir.path(),
        "libcairn_storage_memory_by_name.so",
    );
    // A second plugin and a file that is not one, beside it: with a pin, neither is opened.
    let other = copy_lib("cairn-fixture-panicking", dir.path(), "libother_by_name.so");
    std::fs::write(dir.path().join("libjunk_by_name.so"), "not a library").unwrap();
    let search = SearchPath::new(vec![dir.path().to_path_buf()]);
    let e = loader::load_by_name(&search, "memory", Some(&"ab".repeat(32))).unwrap_err();
    assert!(matches!(e, LoadError::PinMatchesNothing { .. }), "{e}");
    assert_eq!(e.kind(), "sha256-mismatch", "{e}");
    assert!(
        !is_mapped(&plugin),
        "a file whose digest differs from the pin was loaded"
    );
    assert!(
        !is_mapped(&other),
        "a file whose digest differs from the pin was loaded"
    );
    let right = sha256_hex(&plugin);
    assert_eq!(
        loader::load_by_name(&search, "memory", Some(&right))
            .unwrap()
            .manifest()
            .name,
        "memory"
    );
    assert!(
        !is_mapped(&other),
        "loading by a pin opened another file too"
    );
}

/// The SHA-256 of a file, as `cairn plugins info` prints it.
fn sha256_hex(path: &std::path::Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
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

// ---- the manifest section (API 1.1): found without running plugin code ----

/// Whether this process has `path` mapped, i.e. the dynamic loader opened it.
fn is_mapped(path: &std::path::Path) -> bool {
    let path = path.canonicalize().unwrap();
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .any(|l| l.ends_with(path.to_str().unwrap()))
}

/// The file range of the manifest section of the library at `path`.
fn section_range(path: &std::path::Path) -> std::ops::Range<usize> {
    use object::{Object, ObjectSection};
    let bytes = std::fs::read(path).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    let section = file
        .section_by_name(cairn_plugin_api::section::SECTION_NAME)
        .expect("the bundled plugins have a manifest section");
    let (start, len) = section.file_range().unwrap();
    start as usize..(start + len) as usize
}

/// Copy a package's library into `dir` and patch bytes of its manifest section.
fn patched(
    package: &str,
    dir: &std::path::Path,
    patch: impl FnOnce(&mut [u8]),
) -> std::path::PathBuf {
    let path = copy_lib(package, dir, "libpatched.so");
    let range = section_range(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    patch(&mut bytes[range]);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn discovery_reads_sections_without_loading_and_probes_plugins_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let fs = copy_lib("cairn-storage-fs-cdylib", dir.path(), "libfs_section.so");
    let old = copy_lib("cairn-fixture-panicking", dir.path(), "libold_probe.so");
    let search = SearchPath::new(vec![dir.path().to_path_buf()]);
    let found = loader::discover(&search);
    assert!(found.refused.is_empty(), "{:?}", found.refused);
    let by_name = |n: &str| {
        found
            .plugins
            .iter()
            .find(|p| p.manifest().name == n)
            .unwrap()
    };
    let fs_found = by_name("filesystem");
    assert_eq!(fs_found.manifest_source(), loader::ManifestSource::Section);
    assert_eq!(
        fs_found.manifest(),
        util::load("cairn-storage-fs-cdylib").manifest()
    );
    assert!(
        !is_mapped(&fs),
        "listing loaded the library that has a section"
    );
    // A plugin that declares no static manifest (as every API 1.0 plugin) is probed: loaded.
    let old_found = found
        .plugins
        .iter()
        .find(|p| p.path() == old.canonicalize().unwrap())
        .unwrap();
    assert_eq!(old_found.manifest_source(), loader::ManifestSource::Probe);
    assert!(is_mapped(&old));
    // Using the section plugin loads it, checked against its section.
    let plugin = fs_found.clone().load().unwrap();
    assert_eq!(plugin.manifest_source(), loader::ManifestSource::Section);
    assert!(is_mapped(&fs));
}

#[test]
fn loading_by_name_loads_only_the_plugin_it_uses() {
    let dir = tempfile::tempdir().unwrap();
    let fs = copy_lib("cairn-storage-fs-cdylib", dir.path(), "libfs_unused.so");
    let memory = copy_lib(
        "cairn-storage-memory-cdylib",
        dir.path(),
        "libmemory_used.so",
    );
    let search = SearchPath::new(vec![dir.path().to_path_buf()]);
    let plugin = loader::load_by_name(&search, "memory", None).unwrap();
    assert_eq!(plugin.manifest().name, "memory");
    assert!(is_mapped(&memory));
    assert!(
        !is_mapped(&fs),
        "the filesystem plugin was loaded to find memory"
    );
    // With a pin, the file whose section names another plugin is not even opened for code.
    let pin = plugin.sha256().unwrap().to_string();
    let pinned = loader::load_by_name(&search, "memory", Some(&pin)).unwrap();
    assert_eq!(pinned.path(), memory.canonicalize().unwrap());
    assert!(!is_mapped(&fs));
}

#[test]
fn a_section_that_disagrees_with_the_code_is_refused_when_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = patched("cairn-storage-fs-cdylib", dir.path(), |s| {
        let at = s.windows(10).position(|w| w == b"filesystem").unwrap();
        s[at + 9] = b'x';
    });
    let search = SearchPath::new(vec![dir.path().to_path_buf()]);
    // The scan believes the section (no code ran) ...
    let found = loader::discover(&search);
    assert_eq!(found.plugins[0].manifest().name, "filesystex");
    // ... and the load checks it against the code.
    let e = loader::load_by_name(&search, "filesystex", None).unwrap_err();
    assert_eq!(e.kind(), "manifest-mismatch", "{e}");
    assert!(
        e.to_string()
            .contains("the section's name is \"filesystex\", the code's is \"filesystem\""),
        "{e}"
    );
    assert_one_line_naming(&e, &path);
}

#[test]
fn a_damaged_section_is_refused_before_any_code_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = patched("cairn-storage-fs-cdylib", dir.path(), |s| s[0] ^= 0x20);
    let e = refused(&path);
    assert_eq!(e.kind(), "bad-manifest-section", "{e}");
    assert!(e.to_string().contains("magic number"), "{e}");
    assert_one_line_naming(&e, &path);
    assert!(!is_mapped(&path));
    // A truncated length field, and a newer format, each say so.
    let dir = tempfile::tempdir().unwrap();
    let path = patched("cairn-storage-fs-cdylib", dir.path(), |s| s[12] ^= 0x01);
    let e = refused(&path);
    assert_eq!(e.kind(), "bad-manifest-section", "{e}");
    let dir = tempfile::tempdir().unwrap();
    let path = patched("cairn-storage-fs-cdylib", dir.path(), |s| s[8] = 9);
    let e = refused(&path);
    assert!(e.to_string().contains("format 9 is newer"), "{e}");
    assert!(!is_mapped(&path));
}

#[test]
fn an_incompatible_api_in_the_section_is_refused_before_any_code_runs() {
    let dir = tempfile::tempdir().unwrap();
    // The API word is at offset 16, little-endian: minor in bytes 16..20, major in 20..24.
    let path = patched("cairn-storage-fs-cdylib", dir.path(), |s| s[20] += 1);
    let e = refused(&path);
    assert_eq!(e.kind(), "incompatible-api", "{e}");
    assert!(e.to_string().contains("major versions must match"), "{e}");
    assert!(!is_mapped(&path));
}

#[test]
fn the_checks_before_code_still_refuse_files_that_have_a_section() {
    // World-writable and pin refusals come before the section is even read.
    let dir = tempfile::tempdir().unwrap();
    let path = copy_lib("cairn-storage-fs-cdylib", dir.path(), "libfs_ww.so");
    set_mode(&path, 0o777);
    assert_eq!(refused(&path).kind(), "world-writable");
    let search = SearchPath::new(vec![dir.path().to_path_buf()]);
    let found = loader::discover(&search);
    assert!(found.plugins.is_empty());
    assert_eq!(found.refused[0].1.kind(), "world-writable");
    set_mode(&path, 0o755);
    let e = loader::load_path(&path, Some(&"0".repeat(64))).unwrap_err();
    assert_eq!(e.kind(), "sha256-mismatch");
    assert!(!is_mapped(&path));
}
