//! Build the workspace's plugin libraries for tests, once per process.
//!
//! `cargo test` compiles the crates a test links against, but not the `cdylib` files a test
//! loads at run time. [`plugin_library`] runs one nested `cargo build --message-format=json` for
//! every plugin and fixture package ([`build_cdylibs`]), reads the paths of the produced shared
//! libraries from cargo's artifact messages, and caches the answer for the rest of the process.
//!
//! The nested build uses its own target directory (`target/harness-plugins`). Building into the
//! main `target/debug` would put fixture plugins next to `target/debug/cairn`, where the default
//! plugin search path would find them.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock, PoisonError},
};

/// Every package whose shared library tests load. A new plugin or fixture goes here.
pub const PLUGIN_PACKAGES: &[&str] = &[
    "cairn-storage-memory-cdylib",
    "cairn-storage-fs-cdylib",
    "cairn-storage-object-cdylib",
    "cairn-fixture-panicking",
    "cairn-fixture-hanging",
    "cairn-fixture-corrupting",
    "cairn-fixture-not-a-plugin",
    "cairn-fixture-api-old-major",
    "cairn-fixture-api-new-major",
    "cairn-fixture-api-new-minor",
    "cairn-fixture-layout-mismatch",
];

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
}

/// The shared library built for `package` (one of [`PLUGIN_PACKAGES`]). The first call builds
/// them all; a build failure is returned as the compiler's message.
pub fn plugin_library(package: &str) -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<BTreeMap<String, PathBuf>, String>> = OnceLock::new();
    let built = BUILT
        .get_or_init(build_all)
        .as_ref()
        .map_err(Clone::clone)?;
    built.get(package).cloned().ok_or_else(|| {
        format!(
            "package {package} produced no shared library; is it in PLUGIN_PACKAGES and a cdylib?"
        )
    })
}

fn build_all() -> Result<BTreeMap<String, PathBuf>, String> {
    let root = workspace_root();
    build_cdylibs(
        &root.join("Cargo.toml"),
        &root.join("target").join("harness-plugins"),
        PLUGIN_PACKAGES,
    )
}

/// Build the `cdylib` targets of `packages` (`-p` each; none: the manifest's default members)
/// of the workspace or crate at `manifest_path`, with one nested
/// `cargo build --message-format=json-render-diagnostics` into `target_dir`. Returns each
/// package's shared library, by package name, as read from cargo's compiler-artifact messages.
/// A build failure is returned with cargo's messages.
///
/// [`plugin_library`] uses it for the workspace plugins; the host's tests use it for the
/// example plugin in `tests/example-plugin`, which is a workspace of its own.
pub fn build_cdylibs(
    manifest_path: &Path,
    target_dir: &Path,
    packages: &[&str],
) -> Result<BTreeMap<String, PathBuf>, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(manifest_path)
        .arg("--message-format=json-render-diagnostics")
        .env("CARGO_TARGET_DIR", target_dir);
    if let Some(dir) = manifest_path.parent() {
        cmd.current_dir(dir);
    }
    for p in packages {
        cmd.arg("-p").arg(p);
    }
    let out = cmd.output().map_err(|e| {
        format!(
            "cannot run cargo to build the plugins of {}: {e}",
            manifest_path.display()
        )
    })?;
    if !out.status.success() {
        return Err(format!(
            "building the plugins of {} failed ({}):\n{}",
            manifest_path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut libs = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let is_cdylib = msg["target"]["crate_types"]
            .as_array()
            .is_some_and(|t| t.iter().any(|k| k == "cdylib"));
        if !is_cdylib {
            continue;
        }
        let Some(package) = package_name(msg["package_id"].as_str().unwrap_or_default()) else {
            continue;
        };
        let suffix = std::env::consts::DLL_SUFFIX;
        if let Some(file) = msg["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(suffix))
        {
            libs.insert(package, PathBuf::from(file));
        }
    }
    Ok(libs)
}

/// The executable `bin` of the workspace package `package`, built once per process with a
/// nested `cargo build` into the same target directory as the plugins. Cargo gives an
/// integration test the executables of its own package (`CARGO_BIN_EXE_*`), but not those of
/// other packages, such as the `cairn-bench-linked` companion of `cairn bench storage`.
pub fn binary(package: &str, bin: &str) -> Result<PathBuf, String> {
    static BUILT: Mutex<BTreeMap<(String, String), Result<PathBuf, String>>> =
        Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    built
        .entry((package.to_string(), bin.to_string()))
        .or_insert_with(|| build_binary(package, bin))
        .clone()
}

fn build_binary(package: &str, bin: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = workspace_root();
    let out = Command::new(cargo)
        .args(["build", "--message-format=json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .args(["-p", package, "--bin", bin])
        .env(
            "CARGO_TARGET_DIR",
            root.join("target").join("harness-plugins"),
        )
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run cargo to build {package}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building {package} (bin {bin}) failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == bin)
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("building {package} produced no executable named {bin}"))
}

/// The package name in a cargo package id, in either the old (`name 0.1.0 (path+file://...)`)
/// or the new (`path+file:///...#name@0.1.0`) format.
fn package_name(id: &str) -> Option<String> {
    if let Some((_, frag)) = id.rsplit_once('#') {
        let name = frag.split('@').next()?;
        // `#0.1.0` alone means the name is the last path segment.
        if name.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            return id.split('#').next()?.rsplit('/').next().map(str::to_string);
        }
        return Some(name.to_string());
    }
    id.split_whitespace().next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::package_name;

    #[test]
    fn package_ids_in_both_formats() {
        assert_eq!(
            package_name("path+file:///w/plugins/fs#cairn-storage-fs@0.1.0").as_deref(),
            Some("cairn-storage-fs")
        );
        assert_eq!(
            package_name("path+file:///w/tests/fixtures/panicking#0.1.0").as_deref(),
            Some("panicking")
        );
        assert_eq!(
            package_name("cairn-storage-fs 0.1.0 (path+file:///w)").as_deref(),
            Some("cairn-storage-fs")
        );
    }
}
