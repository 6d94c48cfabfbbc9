//! Helpers shared by the host's integration tests.

use std::path::{Path, PathBuf};

use cairn_host::loader::{self, Plugin};

/// The shared library of a workspace plugin or fixture package, built on first use.
pub fn lib(package: &str) -> PathBuf {
    cairn_harness::artifacts::plugin_library(package)
        .unwrap_or_else(|e| panic!("cannot build test plugin {package}: {e}"))
}

/// Copy a package's library into `dir` under `file_name`, with mode 0755.
pub fn copy_lib(package: &str, dir: &Path, file_name: &str) -> PathBuf {
    let to = dir.join(file_name);
    std::fs::copy(lib(package), &to).expect("copy plugin library");
    set_mode(&to, 0o755);
    to
}

/// chmod.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Load a package's library through the real loader.
pub fn load(package: &str) -> Plugin {
    loader::load_path(&lib(package), None)
        .unwrap_or_else(|e| panic!("loading {package} failed: {e}"))
}

/// `[storage.options]` for the filesystem plugin rooted at `dir`.
pub fn fs_options(dir: &Path) -> String {
    format!("dir = {:?}\n", dir.display().to_string())
}

/// Run the `cairn` binary in `cwd`.
pub fn cairn(args: &[&str], cwd: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run cairn")
}

/// The JSON a command printed; a failure shows both streams.
pub fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Run the `cairn` binary in `cwd` and require success; a failure shows its stderr.
pub fn cairn_ok(args: &[&str], cwd: &Path) -> std::process::Output {
    let out = cairn(args, cwd);
    assert!(
        out.status.success(),
        "cairn {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The cases that were skipped must be exactly `expected`: a case that starts skipping itself
/// must not pass unnoticed.
pub fn assert_skipped(doc: &serde_json::Value, expected: &[&str], what: &str) {
    let mut skipped: Vec<&str> = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "skip")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    skipped.sort_unstable();
    let mut expected = expected.to_vec();
    expected.sort_unstable();
    assert_eq!(skipped, expected, "{what}: skipped cases");
}
