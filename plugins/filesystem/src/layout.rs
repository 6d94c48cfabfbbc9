//! Names and shapes on disk: job ids, directory and file names, locators and pointers.
//!
//! Everything that turns an untrusted string (a job id, a handle's locator, a pointer) into a
//! path lives here, and nothing here does I/O, so the rules can be read and tested in one place.
//!
//! # Layout
//!
//! ```text
//! <dir>/<job-id>/chk-<n>/_metadata     committed checkpoint n (absent until the commit)
//! <dir>/<job-id>/chk-<n>/<file>        EXCLUSIVE state of checkpoint n
//! <dir>/<job-id>/shared/<file>         SHARED state (incremental), owned by the host's registry
//! <dir>/<job-id>/taskowned/<file>      task-owned state
//! <target>/savepoint-<job6>-<hex12>/   a savepoint: _metadata and all of its state
//! ```
//!
//! `<file>` is a random UUID in simple form (32 lower-case hex digits). `<job6>` is the first six
//! characters of the job id and `<hex12>` twelve random hex digits. A savepoint is
//! self-contained, as in Flink: its EXCLUSIVE and SHARED streams both go into its directory, so
//! it can be moved or kept after the job's checkpoints are gone.
//!
//! # Locators
//!
//! A stored handle's locator comes back from metadata bytes, which may have been edited, so
//! it is parsed strictly on every `open_handle` and `discard`; anything else is `InvalidConfig`
//! and touches nothing. There are two forms:
//!
//! - State under the base directory is named *relative* to it: `<job-id>/chk-<n>/<file>`,
//!   `<job-id>/shared/<file>` or `<job-id>/taskowned/<file>`. Exactly three `/`-separated parts,
//!   a valid job id, one of the three middle forms (`<n>` in canonical decimal), and a file name
//!   of the form this plugin generates. Such a locator cannot leave the base directory, and the
//!   base directory can be moved as a whole.
//! - Savepoint state is named by its *absolute* path, because a savepoint lives wherever its
//!   target was. The path must be absolute with no `.` or `..` parts, its file name must be a
//!   generated one and its parent directory must be named `savepoint-<job6>-<hex12>`.
//!
//! The trade-off of the second form: a tampered handle can name a file outside the base
//! directory, but only a file with a 32-hex-digit name directly inside a directory named like a
//! savepoint, which is to say a file this plugin wrote. A symlink planted at such a place is
//! followed; guarding against an attacker who can write into the savepoint target is out of
//! scope (they could edit the savepoint directly). Moving a savepoint directory breaks its
//! locators, as in Flink before relative savepoint paths.
//!
//! # Pointers
//!
//! A pointer is the absolute path of a location directory, or of its `_metadata` file. It is
//! normalised lexically (repeated separators, `.` parts and a trailing `/_metadata` removed);
//! `..` parts are refused.

use std::path::{is_separator, Path, PathBuf, MAIN_SEPARATOR};

use cairn_storage_shared::metafile::METADATA_FILE;

use crate::error::{FsError, FsResult};

/// The directory of a job's SHARED state.
pub(crate) const SHARED_DIR: &str = "shared";
/// The directory of a job's task-owned state.
pub(crate) const TASK_OWNED_DIR: &str = "taskowned";
/// Prefix of checkpoint directories.
const CHECKPOINT_PREFIX: &str = "chk-";
/// Prefix of savepoint directories.
const SAVEPOINT_PREFIX: &str = "savepoint-";
/// Longest job id.
pub(crate) const MAX_JOB_ID_LEN: usize = 128;
/// How many characters of the job id a savepoint directory name carries.
const SAVEPOINT_JOB_PREFIX_LEN: usize = 6;
/// How many random hex digits a savepoint directory name carries.
const SAVEPOINT_RANDOM_LEN: usize = 12;
/// Length of a generated state file name.
const STATE_FILE_LEN: usize = 32;

/// Check that `id` is a safe directory name: 1 to 128 ASCII letters, digits, `-`, `_` or `.`,
/// not starting with `.` (so neither `.` nor `..`, nor a hidden name).
pub(crate) fn validate_job_id(id: &str) -> FsResult<()> {
    let why = if id.is_empty() {
        "it is empty"
    } else if id.len() > MAX_JOB_ID_LEN {
        "it is longer than 128 characters"
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        "use only ASCII letters, digits, '-', '_' and '.'"
    } else if id.starts_with('.') {
        "it must not start with '.'"
    } else {
        return Ok(());
    };
    Err(FsError::InvalidJobId {
        id: id.to_string(),
        why,
    })
}

/// `chk-<id>`.
pub(crate) fn checkpoint_dir_name(id: u64) -> String {
    format!("{CHECKPOINT_PREFIX}{id}")
}

/// The id in a `chk-<id>` name, if the name is exactly what [`checkpoint_dir_name`] writes.
pub(crate) fn parse_checkpoint_dir_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(CHECKPOINT_PREFIX)?;
    let id: u64 = digits.parse().ok()?;
    (id.to_string() == digits).then_some(id)
}

/// A fresh random state file name.
pub(crate) fn new_state_file_name() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether `name` has the form of [`new_state_file_name`].
pub(crate) fn is_state_file_name(name: &str) -> bool {
    name.len() == STATE_FILE_LEN && is_lower_hex(name)
}

/// A fresh savepoint directory name for `job_id` (which must be valid).
pub(crate) fn new_savepoint_dir_name(job_id: &str) -> String {
    let prefix: String = job_id.chars().take(SAVEPOINT_JOB_PREFIX_LEN).collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{SAVEPOINT_PREFIX}{prefix}-{}",
        &random[..SAVEPOINT_RANDOM_LEN]
    )
}

/// Whether `name` has the form of [`new_savepoint_dir_name`].
pub(crate) fn is_savepoint_dir_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(SAVEPOINT_PREFIX) else {
        return false;
    };
    let Some((prefix, random)) = rest.rsplit_once('-') else {
        return false;
    };
    (1..=SAVEPOINT_JOB_PREFIX_LEN).contains(&prefix.len())
        && validate_job_id(prefix).is_ok()
        && random.len() == SAVEPOINT_RANDOM_LEN
        && is_lower_hex(random)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where a stream writes its file, and how the file's locator is spelled.
#[derive(Debug, Clone)]
pub(crate) struct StreamDir {
    /// The existing directory that receives the file.
    pub(crate) dir: PathBuf,
    /// The locator of a file in `dir`, without the file name.
    pub(crate) locator_prefix: String,
}

impl StreamDir {
    /// EXCLUSIVE state of checkpoint `id`.
    pub(crate) fn checkpoint(base: &Path, job_id: &str, id: u64) -> Self {
        let name = checkpoint_dir_name(id);
        StreamDir {
            dir: base.join(job_id).join(&name),
            locator_prefix: format!("{job_id}/{name}/"),
        }
    }

    /// A job's SHARED state.
    pub(crate) fn shared(base: &Path, job_id: &str) -> Self {
        StreamDir {
            dir: base.join(job_id).join(SHARED_DIR),
            locator_prefix: format!("{job_id}/{SHARED_DIR}/"),
        }
    }

    /// A job's task-owned state.
    pub(crate) fn task_owned(base: &Path, job_id: &str) -> Self {
        StreamDir {
            dir: base.join(job_id).join(TASK_OWNED_DIR),
            locator_prefix: format!("{job_id}/{TASK_OWNED_DIR}/"),
        }
    }

    /// A savepoint directory, whose state is named by absolute path. `dir` must be absolute,
    /// UTF-8 and free of `.`/`..` parts (a canonical path is).
    pub(crate) fn savepoint(dir: &Path) -> Self {
        let mut locator_prefix = dir.to_string_lossy().into_owned();
        if !locator_prefix.ends_with(is_separator) {
            locator_prefix.push(MAIN_SEPARATOR);
        }
        StreamDir {
            dir: dir.to_path_buf(),
            locator_prefix,
        }
    }
}

/// The file a locator names, after checking that it is one this plugin writes (see the module
/// docs). Refusals are `InvalidConfig` naming the locator.
pub(crate) fn locator_path(base: &Path, locator: &str) -> FsResult<PathBuf> {
    let invalid = |why: &str| FsError::InvalidLocator {
        locator: locator.to_string(),
        why: why.to_string(),
    };
    if locator.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    if Path::new(locator).is_absolute() {
        return savepoint_locator_path(locator).map_err(invalid);
    }
    let parts: Vec<&str> = locator.split('/').collect();
    let [job, area, file] = parts[..] else {
        return Err(invalid(
            "expected '<job-id>/chk-<n>/<file>', '<job-id>/shared/<file>', \
             '<job-id>/taskowned/<file>' or the absolute path of a file in a savepoint directory",
        ));
    };
    validate_job_id(job).map_err(|e| invalid(&e.to_string()))?;
    if area != SHARED_DIR && area != TASK_OWNED_DIR && parse_checkpoint_dir_name(area).is_none() {
        return Err(invalid(
            "its middle part must be 'chk-<n>', 'shared' or 'taskowned'",
        ));
    }
    if !is_state_file_name(file) {
        return Err(invalid(
            "its file name is not one this plugin writes (32 hex digits)",
        ));
    }
    Ok(base.join(job).join(area).join(file))
}

fn savepoint_locator_path(locator: &str) -> Result<PathBuf, &'static str> {
    if locator
        .split(is_separator)
        .any(|part| part == "." || part == "..")
    {
        return Err("it has a '.' or '..' part");
    }
    if locator.ends_with(is_separator) {
        return Err("it ends with a separator");
    }
    let path = Path::new(locator);
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    if !is_state_file_name(file) {
        return Err("its file name is not one this plugin writes (32 hex digits)");
    }
    let parent = path
        .parent()
        .and_then(Path::file_name)
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    if !is_savepoint_dir_name(parent) {
        return Err("an absolute locator must name a file in a 'savepoint-<job>-<hex>' directory");
    }
    Ok(path.to_path_buf())
}

/// The location directory a pointer names (see the module docs). Refusals are `InvalidConfig`
/// naming the pointer.
pub(crate) fn pointer_dir(pointer: &str) -> FsResult<PathBuf> {
    let invalid = |why: &str| FsError::InvalidPointer {
        pointer: pointer.to_string(),
        why: why.to_string(),
    };
    let p = pointer.trim();
    if p.is_empty() {
        return Err(invalid(
            "empty pointer: expected the path of a checkpoint or savepoint directory",
        ));
    }
    if p.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    if !Path::new(p).is_absolute() {
        return Err(invalid(
            "expected the absolute path of a checkpoint or savepoint directory (or of its _metadata file)",
        ));
    }
    if p.split(is_separator).any(|part| part == "..") {
        return Err(invalid("it has a '..' part"));
    }
    let mut dir: PathBuf = Path::new(p).components().collect();
    if dir.file_name().is_some_and(|f| f == METADATA_FILE) {
        dir.pop();
    }
    Ok(dir)
}

/// What kind of location a directory is, judged by its path alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LocationKind {
    /// `<base>/<job>/chk-<id>`.
    Checkpoint {
        /// The checkpoint id.
        id: u64,
    },
    /// A directory named `savepoint-<job6>-<hex12>`, anywhere.
    Savepoint,
}

/// Classify `dir` as one of this storage's checkpoint directories or as a savepoint directory;
/// `None` if it is neither, and so not something this plugin may delete.
pub(crate) fn classify_location(base: &Path, dir: &Path) -> Option<LocationKind> {
    let name = dir.file_name()?.to_str()?;
    if let Some(id) = parse_checkpoint_dir_name(name) {
        let job_dir = dir.parent()?;
        let job = job_dir.file_name()?.to_str()?;
        if validate_job_id(job).is_ok() && job_dir.parent()? == base {
            return Some(LocationKind::Checkpoint { id });
        }
        return None;
    }
    is_savepoint_dir_name(name).then_some(LocationKind::Savepoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn job_ids() {
        for ok in ["a", "job-1", "J_2.x", &"x".repeat(128)] {
            validate_job_id(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "../x",
            "a/b",
            "a\\b",
            "a\0b",
            "é",
            "a b",
            &"x".repeat(129),
        ] {
            assert!(
                matches!(validate_job_id(bad), Err(FsError::InvalidJobId { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn checkpoint_names_are_canonical() {
        assert_eq!(
            parse_checkpoint_dir_name(&checkpoint_dir_name(42)),
            Some(42)
        );
        assert_eq!(
            parse_checkpoint_dir_name(&checkpoint_dir_name(u64::MAX)),
            Some(u64::MAX)
        );
        for bad in [
            "chk-", "chk-007", "chk-+5", "chk-x", "chk--1", "chk-1 ", "shared",
        ] {
            assert_eq!(parse_checkpoint_dir_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn generated_names_pass_their_own_checks() {
        assert!(is_state_file_name(&new_state_file_name()));
        for job in ["a", "abcdefghij", "x-y-z-w", "j.1"] {
            let name = new_savepoint_dir_name(job);
            assert!(is_savepoint_dir_name(&name), "{name}");
        }
        assert!(!is_savepoint_dir_name("savepoint-abc-0123456789AB"));
        assert!(!is_savepoint_dir_name("savepoint-abcdefg-0123456789ab"));
        assert!(!is_savepoint_dir_name("savepoint-..-0123456789ab"));
        assert!(!is_savepoint_dir_name("savepoint--0123456789ab"));
    }

    #[test]
    fn relative_locators() {
        let base = Path::new("/base");
        for (loc, path) in [
            (
                format!("job/chk-5/{FILE}"),
                format!("/base/job/chk-5/{FILE}"),
            ),
            (
                format!("job/shared/{FILE}"),
                format!("/base/job/shared/{FILE}"),
            ),
            (
                format!("job/taskowned/{FILE}"),
                format!("/base/job/taskowned/{FILE}"),
            ),
        ] {
            assert_eq!(locator_path(base, &loc).unwrap(), PathBuf::from(path));
        }
        for bad in [
            format!("../job/shared/{FILE}"),
            format!("job/../shared/{FILE}"),
            format!("job/shared/../{FILE}"),
            format!("job/shared/{FILE}/x"),
            format!("job/chk-05/{FILE}"),
            format!("job/other/{FILE}"),
            "job/shared/../../etc/passwd".to_string(),
            format!("job/shared/{}", &FILE[1..]),
            format!("job/shared/{}", FILE.to_uppercase()),
            format!("job\0/shared/{FILE}"),
            format!("./job/shared/{FILE}"),
            String::new(),
        ] {
            assert!(
                matches!(
                    locator_path(base, &bad),
                    Err(FsError::InvalidLocator { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn savepoint_locators() {
        let base = Path::new("/base");
        let ok = format!("/sp/savepoint-job-0123456789ab/{FILE}");
        assert_eq!(locator_path(base, &ok).unwrap(), PathBuf::from(&ok));
        for bad in [
            format!("/sp/savepoint-job-0123456789ab/../{FILE}"),
            format!("/sp/savepoint-job-0123456789ab/./{FILE}"),
            format!("/sp/../savepoint-job-0123456789ab/{FILE}"),
            format!("/sp/other/{FILE}"),
            format!("/sp/savepoint-job-0123456789ab/{FILE}/"),
            "/sp/savepoint-job-0123456789ab/passwd".to_string(),
            "/etc/passwd".to_string(),
        ] {
            assert!(
                matches!(
                    locator_path(base, &bad),
                    Err(FsError::InvalidLocator { .. })
                ),
                "{bad:?}"
            );
        }
        let sd = StreamDir::savepoint(Path::new("/sp/savepoint-job-0123456789ab"));
        let loc = format!("{}{FILE}", sd.locator_prefix);
        assert_eq!(locator_path(base, &loc).unwrap(), sd.dir.join(FILE));
    }

    #[test]
    fn stream_dirs_give_valid_locators() {
        let base = Path::new("/base");
        for sd in [
            StreamDir::checkpoint(base, "job", 7),
            StreamDir::shared(base, "job"),
            StreamDir::task_owned(base, "job"),
        ] {
            let loc = format!("{}{FILE}", sd.locator_prefix);
            assert_eq!(locator_path(base, &loc).unwrap(), sd.dir.join(FILE));
        }
    }

    #[test]
    fn pointers() {
        assert_eq!(
            pointer_dir("/a/b/chk-1").unwrap(),
            PathBuf::from("/a/b/chk-1")
        );
        assert_eq!(
            pointer_dir(" /a//b/./chk-1/ ").unwrap(),
            PathBuf::from("/a/b/chk-1")
        );
        assert_eq!(
            pointer_dir("/a/b/chk-1/_metadata").unwrap(),
            PathBuf::from("/a/b/chk-1")
        );
        for bad in [
            "",
            "   ",
            "chk-1",
            "a/b",
            "s3://bucket/x",
            "/a/../b",
            "/a/\0",
        ] {
            assert!(
                matches!(pointer_dir(bad), Err(FsError::InvalidPointer { .. })),
                "{bad:?}"
            );
        }
        let msg = pointer_dir(" ").unwrap_err().to_string();
        assert!(msg.contains("empty pointer"), "{msg}");
    }

    #[test]
    fn locations_are_classified_by_path() {
        let base = Path::new("/base");
        assert_eq!(
            classify_location(base, Path::new("/base/job/chk-3")),
            Some(LocationKind::Checkpoint { id: 3 })
        );
        assert_eq!(
            classify_location(base, Path::new("/anywhere/savepoint-job-0123456789ab")),
            Some(LocationKind::Savepoint)
        );
        for other in [
            "/base/job",
            "/base/job/shared",
            "/elsewhere/job/chk-3",
            "/base/chk-3",
            "/base/a/b/chk-3",
            "/",
        ] {
            assert_eq!(classify_location(base, Path::new(other)), None, "{other}");
        }
    }
}
