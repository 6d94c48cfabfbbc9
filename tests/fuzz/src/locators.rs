//! The pointer and locator parsers of the bundled plugins, as one fuzz target.
//!
//! They live in the plugins today (`plugins/filesystem/src/layout.rs`,
//! `plugins/object-store/src/layout.rs`), reached through each plugin's hidden `fuzzing`
//! module. When they move into the plugin kit, only the six calls below change.
//!
//! The first input byte picks the parser; the rest, if it is UTF-8 (pointers and locators come
//! from TOML, JSON and the command line, so they always are), is the string. Bytes 0, 1 and 4
//! pick the filesystem plugin's locator, pointer and job-id parsers (feature `filesystem`, the
//! default), 2, 3 and 5 the object-store plugin's (feature `object-store`); a build has one of
//! the two (see `Cargo.toml`), and inputs for the other are skipped.

#[cfg(all(feature = "filesystem", feature = "object-store"))]
compile_error!("build cairn-fuzz with one of the features filesystem and object-store, not both");

#[cfg(feature = "filesystem")]
use std::path::{Component, Path};

#[cfg(feature = "filesystem")]
use cairn_storage_fs::fuzzing as fs;
#[cfg(feature = "object-store")]
use cairn_storage_object::fuzzing as object;

/// The base directory and store URL the locators are parsed against.
#[cfg(feature = "filesystem")]
pub const FS_BASE: &str = "/fuzz/base";
/// The store URL the object-store locators are parsed against.
#[cfg(feature = "object-store")]
pub const OBJECT_BASE: &str = "memory://fuzz/base";

/// The target.
pub fn locators(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(s) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 6 {
        #[cfg(feature = "filesystem")]
        0 => {
            if let Ok(path) = fs::locator_path(Path::new(FS_BASE), s) {
                no_parent_parts(&path);
                let under_base = path.starts_with(FS_BASE) && !Path::new(s).is_absolute();
                let savepoint = path
                    .parent()
                    .and_then(Path::file_name)
                    .is_some_and(|d| d.to_string_lossy().starts_with("savepoint-"));
                assert!(
                    under_base || savepoint,
                    "locator {s:?} escapes to {}",
                    path.display()
                );
            }
        }
        #[cfg(feature = "filesystem")]
        1 => {
            if let Ok(dir) = fs::pointer_dir(s) {
                no_parent_parts(&dir);
                assert!(dir.is_absolute(), "pointer {s:?} gave {}", dir.display());
            }
        }
        #[cfg(feature = "object-store")]
        2 => {
            if let Ok(place) = object::locator_place(OBJECT_BASE, s) {
                assert!(
                    !place.split('/').any(|p| p == ".."),
                    "locator {s:?} gave {place}"
                );
                if !s.contains("://") && !s.starts_with('/') {
                    assert!(
                        place.starts_with(OBJECT_BASE),
                        "locator {s:?} escapes to {place}"
                    );
                }
            }
        }
        #[cfg(feature = "object-store")]
        3 => {
            if let Ok(place) = object::pointer_place(s) {
                assert!(
                    !place.split('/').any(|p| p == ".."),
                    "pointer {s:?} gave {place}"
                );
            }
        }
        #[cfg(feature = "filesystem")]
        4 => {
            if fs::job_id(s).is_ok() {
                valid_job_id(s);
            }
        }
        #[cfg(feature = "object-store")]
        5 => {
            if object::job_id(s).is_ok() {
                valid_job_id(s);
            }
        }
        _ => {
            let _ = s;
        }
    }
}

#[cfg(feature = "filesystem")]
fn no_parent_parts(path: &Path) {
    assert!(
        !path.components().any(|c| c == Component::ParentDir),
        "{} has a '..' part",
        path.display()
    );
}

/// What any accepted job id must be, whatever the plugin's own rule: one safe path segment or
/// key part (non-empty, at most 128 bytes, no separator, NUL or control character, not `.` or
/// `..`).
#[allow(
    dead_code,
    reason = "used by whichever plugin's job-id parser is built in"
)]
fn valid_job_id(id: &str) {
    assert!(
        !id.is_empty()
            && id.len() <= 128
            && id != "."
            && id != ".."
            && !id.chars().any(|c| c == '/' || c == '\\' || c.is_control()),
        "job id {id:?} was accepted"
    );
}
