//! The one key layout, and the strict parsing of the strings that come back from outside:
//! locators (inside metadata that may have been edited) and pointers (typed by users).
//!
//! ```text
//! <job-id>/chk-<n>/_metadata      the commit point of checkpoint n (absent until the commit)
//! <job-id>/chk-<n>/<file>         EXCLUSIVE state of checkpoint n
//! <job-id>/shared/<file>          SHARED (incremental) state, owned by the host's registry
//! <job-id>/taskowned/<file>       task-owned state
//! savepoint-<job-id>-<hex12>/     a savepoint under its target: _metadata and all its state
//! ```
//!
//! `<file>` is a random UUID in simple form (32 lower-case hex digits); `<hex12>` twelve random
//! hex digits. A savepoint is self-contained (its SHARED state goes into its own location too),
//! so it can be moved or kept after the job's checkpoints are gone. Its name carries the whole
//! job id, so garbage collection can tell whose an uncommitted one is; names written by older
//! versions carry only the first six characters, and are still read.
//!
//! # Locators
//!
//! State under the storage's base is named *relative* to it, by its key
//! (`<job>/chk-<n>/<file>`, `<job>/shared/<file>`, `<job>/taskowned/<file>`), so the base can
//! be moved or copied whole. Savepoint state is named in full (`<target>/savepoint-.../<file>`),
//! because a savepoint lives wherever its target was. Anything else is `InvalidConfig` and
//! touches nothing.
//!
//! # Pointers
//!
//! A pointer names a location: `<root>/<job>/chk-<n>` or `<root>/savepoint-...`, optionally
//! followed by `/_metadata`, with surrounding blanks and trailing `/` ignored.

use cairn_plugin_api::{JobId, StorageError, StorageResult};

/// The object that commits a location.
pub const METADATA: &str = "_metadata";
/// The area of a job's SHARED state.
pub const SHARED: &str = "shared";
/// The area of a job's task-owned state.
pub const TASK_OWNED: &str = "taskowned";

const CHECKPOINT_PREFIX: &str = "chk-";
const SAVEPOINT_PREFIX: &str = "savepoint-";
/// How many characters of the job id savepoint names of older versions carry.
pub const LEGACY_SAVEPOINT_JOB_LEN: usize = 6;
const SAVEPOINT_RANDOM_LEN: usize = 12;
const STATE_FILE_LEN: usize = 32;

/// `chk-<id>`.
pub fn checkpoint_name(id: u64) -> String {
    format!("{CHECKPOINT_PREFIX}{id}")
}

/// The id in a `chk-<id>` name, if the name is exactly what [`checkpoint_name`] writes.
pub fn parse_checkpoint_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(CHECKPOINT_PREFIX)?;
    let id: u64 = digits.parse().ok()?;
    (id.to_string() == digits).then_some(id)
}

/// A fresh random state object name.
pub fn new_state_name() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether `name` has the form of [`new_state_name`].
pub fn is_state_name(name: &str) -> bool {
    name.len() == STATE_FILE_LEN && is_lower_hex(name)
}

/// A fresh savepoint location name for `job`.
pub fn new_savepoint_name(job: &JobId) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{SAVEPOINT_PREFIX}{job}-{}",
        &random[..SAVEPOINT_RANDOM_LEN]
    )
}

/// The job part of a savepoint location name, if `name` is one (`savepoint-<job>-<hex12>`).
pub fn savepoint_job(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(SAVEPOINT_PREFIX)?;
    let (job, random) = rest.rsplit_once('-')?;
    let ok =
        JobId::parse(job).is_ok() && random.len() == SAVEPOINT_RANDOM_LEN && is_lower_hex(random);
    ok.then_some(job)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The key of a job's location, area or object: parts joined by `/`.
pub fn key(parts: &[&str]) -> String {
    parts.join("/")
}

/// What a locator names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locator {
    /// An object under the storage's base, by key.
    Base(String),
    /// An object in a savepoint: the root part as written, and the key under it.
    Full {
        /// The place before the savepoint location, for [`crate::Places::open`].
        root: String,
        /// `savepoint-.../<file>`.
        key: String,
    },
}

/// Parse a stored handle's locator (see the module docs).
pub fn parse_locator(locator: &str) -> StorageResult<Locator> {
    let invalid = |why: &str| {
        StorageError::InvalidConfig(format!(
            "handle locator {} is invalid: {why}",
            shown(locator)
        ))
    };
    if locator.chars().any(char::is_control) {
        return Err(invalid("it contains a control character"));
    }
    let parts: Vec<&str> = locator.split('/').collect();
    if let [job, area, file] = parts[..] {
        if JobId::parse(job).is_ok() {
            if area != SHARED && area != TASK_OWNED && parse_checkpoint_name(area).is_none() {
                return Err(invalid(
                    "its middle part must be 'chk-<n>', 'shared' or 'taskowned'",
                ));
            }
            if !is_state_name(file) {
                return Err(invalid(
                    "its object name is not one cairn writes (32 hex digits)",
                ));
            }
            return Ok(Locator::Base(locator.to_string()));
        }
    }
    let Some((rest, file)) = locator.rsplit_once('/') else {
        return Err(invalid(
            "expected '<job-id>/chk-<n>/<file>', '<job-id>/shared/<file>', \
             '<job-id>/taskowned/<file>' or the full name of an object in a savepoint",
        ));
    };
    let Some((root, location)) = rest.rsplit_once('/') else {
        return Err(invalid(
            "a full locator must name an object in a 'savepoint-<job>-<hex>' location",
        ));
    };
    if !is_state_name(file) {
        return Err(invalid(
            "its object name is not one cairn writes (32 hex digits)",
        ));
    }
    if savepoint_job(location).is_none() {
        return Err(invalid(
            "a full locator must name an object in a 'savepoint-<job>-<hex>' location",
        ));
    }
    Ok(Locator::Full {
        root: format!("{root}/"),
        key: key(&[location, file]),
    })
}

/// What a pointer names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    /// The place before the location, for [`crate::Places::open`].
    pub root: String,
    /// The location's key under it.
    pub key: String,
    /// The job and checkpoint id, for a checkpoint location; `None` for a savepoint.
    pub checkpoint: Option<(JobId, u64)>,
}

/// Parse a pointer (see the module docs).
pub fn parse_pointer(pointer: &str) -> StorageResult<Pointer> {
    let invalid = |why: &str| {
        StorageError::InvalidConfig(format!("pointer {} is invalid: {why}", shown(pointer)))
    };
    let p = pointer.trim();
    if p.is_empty() {
        return Err(invalid(
            "empty pointer: expected the place of a checkpoint or savepoint location",
        ));
    }
    if p.chars().any(char::is_control) {
        return Err(invalid("it contains a control character"));
    }
    let p = p.trim_end_matches('/');
    let p = p
        .strip_suffix(METADATA)
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or(p);
    let not_a_location = || {
        invalid(
            "it names neither a checkpoint location ('<dir>/<job-id>/chk-<n>') nor a savepoint \
             location ('<dir>/savepoint-<job>-<hex>')",
        )
    };
    let (rest, name) = p.rsplit_once('/').ok_or_else(not_a_location)?;
    if savepoint_job(name).is_some() {
        return Ok(Pointer {
            root: format!("{rest}/"),
            key: name.to_string(),
            checkpoint: None,
        });
    }
    let id = parse_checkpoint_name(name).ok_or_else(not_a_location)?;
    let (root, job) = rest.rsplit_once('/').ok_or_else(not_a_location)?;
    let job = JobId::parse(job).map_err(|e| invalid(&e.to_string()))?;
    Ok(Pointer {
        root: format!("{root}/"),
        key: key(&[job.as_str(), name]),
        checkpoint: Some((job, id)),
    })
}

/// Untrusted text in a message: quoted and escaped (so a NUL or a newline stays visible), and
/// cut short when long.
pub fn shown(s: &str) -> String {
    const MAX: usize = 160;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
        None => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn names_are_canonical() {
        assert_eq!(parse_checkpoint_name(&checkpoint_name(42)), Some(42));
        for bad in ["chk-", "chk-007", "chk-+5", "chk-x", "shared", "chk-1 "] {
            assert_eq!(parse_checkpoint_name(bad), None, "{bad}");
        }
        assert!(is_state_name(&new_state_name()));
        let job = JobId::parse("orders-eu").unwrap();
        assert_eq!(savepoint_job(&new_savepoint_name(&job)), Some("orders-eu"));
        assert_eq!(
            savepoint_job("savepoint-orders-0123456789ab"),
            Some("orders")
        );
        for bad in [
            "savepoint--0123456789ab",
            "savepoint-..-0123456789ab",
            "savepoint-a-0123456789AB",
            "savepoint-a-0123456789a",
            "chk-1",
        ] {
            assert_eq!(savepoint_job(bad), None, "{bad}");
        }
    }

    #[test]
    fn base_locators_are_keys() {
        for area in ["chk-5", "shared", "taskowned"] {
            let loc = format!("job/{area}/{FILE}");
            assert_eq!(parse_locator(&loc).unwrap(), Locator::Base(loc.clone()));
        }
    }

    #[test]
    fn full_locators_name_savepoint_state() {
        let loc = format!("/tmp/sp/savepoint-job-0123456789ab/{FILE}");
        assert_eq!(
            parse_locator(&loc).unwrap(),
            Locator::Full {
                root: "/tmp/sp/".into(),
                key: format!("savepoint-job-0123456789ab/{FILE}")
            }
        );
        let loc = format!("s3://b/p/savepoint-job-0123456789ab/{FILE}");
        assert!(
            matches!(parse_locator(&loc).unwrap(), Locator::Full { root, .. } if root == "s3://b/p/")
        );
    }

    #[test]
    fn bad_locators_are_refused() {
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
            format!("/sp/savepoint-job-0123456789ab/../{FILE}"),
            format!("/sp/other/{FILE}"),
            "/etc/passwd".to_string(),
            format!("/sp/savepoint-job-0123456789ab/{FILE}/"),
            String::new(),
            "x".repeat(4096),
        ] {
            assert!(
                matches!(parse_locator(&bad), Err(StorageError::InvalidConfig(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn pointers() {
        let p = parse_pointer(" /a/b/job/chk-3/_metadata ").unwrap();
        assert_eq!(p.root, "/a/b/");
        assert_eq!(p.key, "job/chk-3");
        assert_eq!(p.checkpoint.unwrap().1, 3);
        let p = parse_pointer("s3://b/x/savepoint-j-0123456789ab/").unwrap();
        assert_eq!(
            (p.root.as_str(), p.key.as_str()),
            ("s3://b/x/", "savepoint-j-0123456789ab")
        );
        assert!(p.checkpoint.is_none());
        let p = parse_pointer("memory://job/chk-1").unwrap();
        assert_eq!(p.root, "memory://");
        for bad in [
            "",
            "   ",
            "chk-1",
            "a/b",
            "/a/b/job/chk-01",
            "/a/b/j.b/chk-1",
            "\0::not a pointer::\u{1}",
            "/a/b/c",
        ] {
            assert!(
                matches!(parse_pointer(bad), Err(StorageError::InvalidConfig(_))),
                "{bad:?}"
            );
        }
        let msg = parse_pointer(" ").unwrap_err().to_string();
        assert!(msg.contains("empty pointer"), "{msg}");
    }
}
