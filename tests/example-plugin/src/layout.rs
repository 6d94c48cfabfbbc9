//! Names on disk, and the checks that turn untrusted strings into paths.
//!
//! Three kinds of string reach the plugin from outside: job ids, the locators inside stored
//! handles, and checkpoint pointers. Handles and pointers come back from metadata bytes and
//! command lines that may have been edited, so each one is parsed strictly on every use, and
//! nothing that fails the parse touches the disk. Everything here is pure: no I/O.
//!
//! - A **job id** is 1 to 128 ASCII letters, digits, `-`, `_` or `.`, not starting with `.`.
//! - A **locator** is relative to the root: `<job-id>/chk-<n>/<file>`, `<job-id>/shared/<file>`
//!   or `<job-id>/taskowned/<file>`, where `<file>` is 32 lower-case hex digits. Relative
//!   locators cannot leave the root, and the root can be moved as a whole.
//! - A **pointer** is the absolute path of a checkpoint directory, `<root>/<job-id>/chk-<n>`
//!   (a trailing `/_metadata` is accepted too), so a person can find it with `ls`.

use std::path::{Component, Path, PathBuf};

use cairn_plugin_api::{StorageError, StorageResult};

/// The commit point of a checkpoint directory.
pub(crate) const METADATA_FILE: &str = "_metadata";
/// The directory of a job's SHARED state.
pub(crate) const SHARED_DIR: &str = "shared";
/// The directory of a job's task-owned state.
pub(crate) const TASK_OWNED_DIR: &str = "taskowned";
/// The prefix of checkpoint directories.
const CHECKPOINT_PREFIX: &str = "chk-";

/// Check a job id, so that it is one safe directory name.
pub(crate) fn check_job_id(id: &str) -> StorageResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidConfig(format!(
            "job id {id:?} is invalid: use 1 to 128 ASCII letters, digits, '-', '_' or '.', \
             not starting with '.'"
        )))
    }
}

/// `chk-<id>`.
pub(crate) fn checkpoint_dir_name(id: u64) -> String {
    format!("{CHECKPOINT_PREFIX}{id}")
}

/// The id in a `chk-<id>` name, if the name is exactly what [`checkpoint_dir_name`] writes
/// (so `chk-007` and `chk-+7` are not checkpoints).
pub(crate) fn parse_checkpoint_dir_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(CHECKPOINT_PREFIX)?;
    let id: u64 = digits.parse().ok()?;
    (id.to_string() == digits).then_some(id)
}

/// A fresh, unique state file name.
pub(crate) fn new_state_file_name() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether `name` is one that [`new_state_file_name`] makes. Only such files are state: listing
/// and deleting ignore everything else.
pub(crate) fn is_state_file_name(name: &str) -> bool {
    name.len() == 32
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The path, under `root`, of the state a locator names; `InvalidConfig` for anything that is
/// not exactly a locator this plugin writes.
pub(crate) fn locator_path(root: &Path, locator: &str) -> StorageResult<PathBuf> {
    let bad = || {
        StorageError::InvalidConfig(format!(
            "handle '{locator}' is not an example-dir locator \
             (<job-id>/chk-<n>/<file>, <job-id>/shared/<file> or <job-id>/taskowned/<file>)"
        ))
    };
    let parts: Vec<&str> = locator.split('/').collect();
    let [job, place, file] = parts[..] else {
        return Err(bad());
    };
    check_job_id(job).map_err(|_| bad())?;
    let place_ok = place == SHARED_DIR
        || place == TASK_OWNED_DIR
        || parse_checkpoint_dir_name(place).is_some();
    if !place_ok || !is_state_file_name(file) {
        return Err(bad());
    }
    Ok(root.join(job).join(place).join(file))
}

/// The job id and checkpoint id a pointer names, if it is `<root>/<job-id>/chk-<n>` (optionally
/// followed by `/_metadata`); `InvalidConfig` otherwise.
pub(crate) fn parse_pointer(root: &Path, pointer: &str) -> StorageResult<(String, u64)> {
    let bad = |why: &str| {
        StorageError::InvalidConfig(format!(
            "pointer {pointer:?} is not an example-dir checkpoint pointer: {why}"
        ))
    };
    if pointer.trim().is_empty() {
        return Err(bad("it is empty"));
    }
    let expected = format!("expected {}/<job-id>/chk-<n>", root.display());
    let rest = Path::new(pointer)
        .strip_prefix(root)
        .map_err(|_| bad(&expected))?;
    let mut names = Vec::new();
    for component in rest.components() {
        match component {
            Component::Normal(name) => names.push(name.to_str().ok_or_else(|| bad(&expected))?),
            _ => return Err(bad(&expected)),
        }
    }
    if names.len() == 3 && names[2] == METADATA_FILE {
        names.pop();
    }
    let [job, chk] = names[..] else {
        return Err(bad(&expected));
    };
    check_job_id(job).map_err(|_| bad(&expected))?;
    let id = parse_checkpoint_dir_name(chk).ok_or_else(|| bad(&expected))?;
    Ok((job.to_string(), id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locators_cannot_escape_the_root() {
        let root = Path::new("/r");
        let file = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            locator_path(root, &format!("job/chk-3/{file}")).unwrap(),
            Path::new("/r/job/chk-3").join(file)
        );
        assert!(locator_path(root, &format!("job/shared/{file}")).is_ok());
        for bad in [
            String::new(),
            format!("../job/shared/{file}"),
            format!("job/../shared/{file}"),
            format!("job/shared/../{file}"),
            format!("/abs/shared/{file}"),
            format!("job/chk-03/{file}"),
            format!("job/other/{file}"),
            "job/shared/_metadata".to_string(),
            format!("job/shared/{file}/x"),
        ] {
            assert!(locator_path(root, &bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn pointers_name_a_checkpoint_directory_under_the_root() {
        let root = Path::new("/r");
        assert_eq!(
            parse_pointer(root, "/r/job/chk-4").unwrap(),
            ("job".into(), 4)
        );
        assert_eq!(
            parse_pointer(root, "/r/job/chk-4/").unwrap(),
            ("job".into(), 4)
        );
        assert_eq!(
            parse_pointer(root, "/r/job/chk-4/_metadata").unwrap(),
            ("job".into(), 4)
        );
        for bad in [
            "",
            "  ",
            "/other/job/chk-4",
            "/r/job",
            "/r/../job/chk-4",
            "/r/job/chk-x",
        ] {
            assert!(parse_pointer(root, bad).is_err(), "{bad:?} was accepted");
        }
    }
}
