//! Names and shapes of keys: store URLs, job ids, object names, locators and pointers.
//!
//! Everything that turns an untrusted string (a URL option, a job id, a handle's locator, a
//! pointer, a savepoint target) into a place in a store lives here, and nothing here does I/O,
//! so the rules can be read and tested in one place.
//!
//! # Layout
//!
//! The filesystem backend's layout, as keys under the URL's prefix:
//!
//! ```text
//! <url>/<job-id>/chk-<n>/_metadata     committed checkpoint n (absent until the commit)
//! <url>/<job-id>/chk-<n>/<file>        EXCLUSIVE state of checkpoint n
//! <url>/<job-id>/shared/<file>         SHARED state (incremental), owned by the host's registry
//! <url>/<job-id>/taskowned/<file>      task-owned state
//! <target>/savepoint-<job6>-<hex12>/   a savepoint: _metadata and all of its state
//! ```
//!
//! `<file>` is a random UUID in simple form (32 lower-case hex digits).
//!
//! # Places
//!
//! A [`Place`] is a store plus a key prefix, written as a URL: `s3://bucket/prefix`,
//! `gs://bucket/prefix`, `az://container/prefix`, `memory://prefix`, or for the local
//! filesystem `file:///abs/path` or just `/abs/path`. Local places are *shown* as plain
//! absolute paths, so a savepoint whose target was a directory gets a pointer under that
//! directory, as with the filesystem backend. Key parts must be non-empty, not `.` or `..`, and
//! free of control characters, so no key can climb out of its prefix.
//!
//! # Locators and pointers
//!
//! A stored handle's locator is parsed strictly on every `open_handle` and `discard`. State
//! under the storage URL is named *relative* to it (`<job-id>/chk-<n>/<file>`,
//! `<job-id>/shared/<file>`, `<job-id>/taskowned/<file>`), so the bucket can be moved or
//! mirrored as a whole. Savepoint state is named by its full place, because a savepoint lives
//! wherever its target was; such a locator must end in `savepoint-<job6>-<hex12>/<file>`.
//! A pointer is the place of a location (a `chk-<n>` or `savepoint-...` prefix), optionally
//! followed by `/_metadata`.

use std::fmt;

use object_store::path::Path as KeyPath;

use crate::error::{ObjError, ObjResult};

/// The object that commits a location.
pub(crate) const METADATA_OBJECT: &str = "_metadata";
/// The prefix of a job's SHARED state.
pub(crate) const SHARED_DIR: &str = "shared";
/// The prefix of a job's task-owned state.
pub(crate) const TASK_OWNED_DIR: &str = "taskowned";
const CHECKPOINT_PREFIX: &str = "chk-";
const SAVEPOINT_PREFIX: &str = "savepoint-";
const MAX_JOB_ID_LEN: usize = 128;
const SAVEPOINT_JOB_PREFIX_LEN: usize = 6;
const SAVEPOINT_RANDOM_LEN: usize = 12;
const STATE_FILE_LEN: usize = 32;

/// Which kind of store a place is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Scheme {
    /// Amazon S3 or an S3-compatible server.
    S3,
    /// Google Cloud Storage.
    Gs,
    /// Azure Blob Storage.
    Az,
    /// The local filesystem.
    File,
    /// The instance's own in-memory store.
    Memory,
}

impl Scheme {
    /// The URL scheme.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scheme::S3 => "s3",
            Scheme::Gs => "gs",
            Scheme::Az => "az",
            Scheme::File => "file",
            Scheme::Memory => "memory",
        }
    }

    /// Whether the scheme names a cloud service (reachable from other hosts).
    pub(crate) fn is_cloud(self) -> bool {
        matches!(self, Scheme::S3 | Scheme::Gs | Scheme::Az)
    }
}

/// A store and a key prefix in it (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Place {
    /// Which store.
    pub(crate) scheme: Scheme,
    /// The bucket or container (cloud schemes only, else empty).
    pub(crate) bucket: String,
    /// The key prefix: parts joined by `/`, without leading or trailing `/` (may be empty).
    pub(crate) prefix: String,
}

impl Place {
    /// Parse a URL or an absolute local path. The error says why, for the caller to wrap.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("it is empty".into());
        }
        if s.chars().any(char::is_control) {
            return Err("it contains a control character".into());
        }
        let (scheme, rest) =
            match s.split_once("://") {
                Some((scheme, rest)) => (scheme, rest),
                None if s.starts_with('/') => ("file", s),
                None => return Err(
                    "expected a URL (s3://, gs://, az://, file://, memory://) or an absolute path"
                        .into(),
                ),
            };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "s3" | "s3a" => Scheme::S3,
            "gs" => Scheme::Gs,
            "az" | "azure" => Scheme::Az,
            "file" => Scheme::File,
            "memory" => Scheme::Memory,
            other => {
                return Err(format!(
                    "the scheme '{other}' is not supported: use s3://, gs://, az://, file:// or memory://"
                ))
            }
        };
        let (bucket, path) = match scheme {
            Scheme::S3 | Scheme::Gs | Scheme::Az => {
                let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(format!("a {}:// URL needs a bucket name", scheme.name()));
                }
                // S3, GCS and Azure all require a letter or digit at both ends, which also keeps
                // out '.' and '..' (a path-style URL would resolve them to another bucket).
                let ends_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
                if !bucket
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
                    || !ends_ok(bucket.bytes().next())
                    || !ends_ok(bucket.bytes().last())
                {
                    return Err(format!(
                        "bucket name '{bucket}' is invalid: use ASCII letters, digits, '-', '.' \
                         and '_', starting and ending with a letter or digit"
                    ));
                }
                (bucket.to_string(), path)
            }
            Scheme::File => match rest.strip_prefix('/') {
                Some(path) => (String::new(), path),
                None => {
                    return Err(
                        "a file:// URL must hold an absolute path (file:///dir), with no host"
                            .into(),
                    )
                }
            },
            Scheme::Memory => (String::new(), rest),
        };
        let path = path.trim_end_matches('/');
        if !path.is_empty() {
            for part in path.split('/') {
                match part {
                    "" => return Err("it has an empty path part ('//')".into()),
                    "." | ".." => return Err("it has a '.' or '..' part".into()),
                    _ => {}
                }
            }
        }
        Ok(Place {
            scheme,
            bucket,
            prefix: path.to_string(),
        })
    }

    /// This place with `part` (one or more `/`-separated parts, all valid) appended.
    pub(crate) fn join(&self, part: &str) -> Place {
        let prefix = if self.prefix.is_empty() {
            part.to_string()
        } else {
            format!("{}/{part}", self.prefix)
        };
        Place {
            prefix,
            ..self.clone()
        }
    }

    /// The parent place, if the prefix is not empty.
    pub(crate) fn parent(&self) -> Option<Place> {
        if self.prefix.is_empty() {
            return None;
        }
        let prefix = self
            .prefix
            .rsplit_once('/')
            .map_or(String::new(), |(p, _)| p.to_string());
        Some(Place {
            prefix,
            ..self.clone()
        })
    }

    /// The last part of the prefix.
    pub(crate) fn name(&self) -> &str {
        self.prefix.rsplit('/').next().unwrap_or_default()
    }

    /// The key of this place in its store. Valid by construction (see [`Place::parse`]).
    pub(crate) fn key(&self) -> ObjResult<KeyPath> {
        KeyPath::parse(&self.prefix).map_err(|e| ObjError::InvalidPointer {
            pointer: self.to_string(),
            why: e.to_string(),
        })
    }

    /// The key of this place, as a listing prefix.
    pub(crate) fn list_prefix(&self) -> ObjResult<Option<KeyPath>> {
        if self.prefix.is_empty() {
            return Ok(None);
        }
        self.key().map(Some)
    }

    /// The URL form, also for local places (`file:///...`), for messages about configuration.
    pub(crate) fn url(&self) -> String {
        match self.scheme {
            Scheme::File => format!("file://{self}"),
            _ => self.to_string(),
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Scheme::File => write!(f, "/{}", self.prefix),
            Scheme::Memory => write!(f, "memory://{}", self.prefix),
            _ if self.prefix.is_empty() => write!(f, "{}://{}", self.scheme.name(), self.bucket),
            _ => write!(
                f,
                "{}://{}/{}",
                self.scheme.name(),
                self.bucket,
                self.prefix
            ),
        }
    }
}

/// Check that `id` is a safe key part: 1 to 128 ASCII letters, digits, `-`, `_` or `.`, not
/// starting with `.`.
pub(crate) fn validate_job_id(id: &str) -> ObjResult<()> {
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
    Err(ObjError::InvalidJobId {
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

/// A fresh random state object name.
pub(crate) fn new_state_file_name() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether `name` has the form of [`new_state_file_name`].
pub(crate) fn is_state_file_name(name: &str) -> bool {
    name.len() == STATE_FILE_LEN && is_lower_hex(name)
}

/// A fresh savepoint prefix name for `job_id` (which must be valid).
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

/// Where a stream writes its object, and how the object's locator is spelled.
#[derive(Debug, Clone)]
pub(crate) struct StreamDir {
    /// The place that receives the object.
    pub(crate) place: Place,
    /// The locator of an object in `place`, without the object name.
    pub(crate) locator_prefix: String,
}

impl StreamDir {
    /// EXCLUSIVE state of checkpoint `id`.
    pub(crate) fn checkpoint(base: &Place, job_id: &str, id: u64) -> Self {
        let rel = format!("{job_id}/{}", checkpoint_dir_name(id));
        StreamDir {
            place: base.join(&rel),
            locator_prefix: format!("{rel}/"),
        }
    }

    /// A job's SHARED state.
    pub(crate) fn shared(base: &Place, job_id: &str) -> Self {
        StreamDir {
            place: base.join(&format!("{job_id}/{SHARED_DIR}")),
            locator_prefix: format!("{job_id}/{SHARED_DIR}/"),
        }
    }

    /// A job's task-owned state.
    pub(crate) fn task_owned(base: &Place, job_id: &str) -> Self {
        StreamDir {
            place: base.join(&format!("{job_id}/{TASK_OWNED_DIR}")),
            locator_prefix: format!("{job_id}/{TASK_OWNED_DIR}/"),
        }
    }

    /// A savepoint location, whose state is named by its full place.
    pub(crate) fn savepoint(place: &Place) -> Self {
        StreamDir {
            place: place.clone(),
            locator_prefix: format!("{place}/"),
        }
    }
}

/// The place a locator names, after checking that it is one this plugin writes (see the module
/// docs). Refusals are `InvalidConfig` naming the locator.
pub(crate) fn locator_place(base: &Place, locator: &str) -> ObjResult<Place> {
    let invalid = |why: &str| ObjError::InvalidLocator {
        locator: locator.to_string(),
        why: why.to_string(),
    };
    if locator.chars().any(char::is_control) {
        return Err(invalid("it contains a control character"));
    }
    if locator.contains("://") || locator.starts_with('/') {
        let place = Place::parse(locator).map_err(|why| invalid(&why))?;
        if locator.trim() != locator || locator.ends_with('/') {
            return Err(invalid("it is not in the form this plugin writes"));
        }
        if !is_state_file_name(place.name()) {
            return Err(invalid(
                "its object name is not one this plugin writes (32 hex digits)",
            ));
        }
        let parent_ok = place
            .parent()
            .is_some_and(|p| is_savepoint_dir_name(p.name()));
        if !parent_ok {
            return Err(invalid(
                "a full locator must name an object in a 'savepoint-<job>-<hex>' location",
            ));
        }
        return Ok(place);
    }
    let parts: Vec<&str> = locator.split('/').collect();
    let [job, area, file] = parts[..] else {
        return Err(invalid(
            "expected '<job-id>/chk-<n>/<file>', '<job-id>/shared/<file>', \
             '<job-id>/taskowned/<file>' or the full place of an object in a savepoint",
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
            "its object name is not one this plugin writes (32 hex digits)",
        ));
    }
    Ok(base.join(locator))
}

/// The location place a pointer names, with a trailing `/_metadata` removed. Refusals are
/// `InvalidConfig` naming the pointer.
pub(crate) fn pointer_place(pointer: &str) -> ObjResult<Place> {
    let invalid = |why: &str| ObjError::InvalidPointer {
        pointer: pointer.to_string(),
        why: why.to_string(),
    };
    let p = pointer.trim();
    if p.is_empty() {
        return Err(invalid(
            "empty pointer: expected the URL of a checkpoint or savepoint location",
        ));
    }
    let mut place = Place::parse(p).map_err(|why| invalid(&why))?;
    if place.name() == METADATA_OBJECT {
        place = place.parent().unwrap_or(place);
    }
    if place.prefix.is_empty() {
        return Err(invalid(
            "it names a whole bucket or store, not a checkpoint or savepoint location",
        ));
    }
    Ok(place)
}

/// What kind of location a place is, judged by its name and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LocationKind {
    /// `<base>/<job>/chk-<id>`.
    Checkpoint {
        /// The checkpoint id.
        id: u64,
    },
    /// A place named `savepoint-<job6>-<hex12>`, anywhere.
    Savepoint,
}

/// Classify `place` as one of this storage's checkpoint locations or as a savepoint location;
/// `None` if it is neither, and so not something this plugin may delete.
pub(crate) fn classify_location(base: &Place, place: &Place) -> Option<LocationKind> {
    let name = place.name();
    if let Some(id) = parse_checkpoint_dir_name(name) {
        let job = place.parent()?;
        let job_ok = validate_job_id(job.name()).is_ok() && job.parent().as_ref() == Some(base);
        return job_ok.then_some(LocationKind::Checkpoint { id });
    }
    is_savepoint_dir_name(name).then_some(LocationKind::Savepoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "0123456789abcdef0123456789abcdef";

    fn place(s: &str) -> Place {
        Place::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn urls_parse_and_print_back() {
        for (url, scheme, bucket, prefix, shown) in [
            ("s3://b/p/q", Scheme::S3, "b", "p/q", "s3://b/p/q"),
            ("s3://b", Scheme::S3, "b", "", "s3://b"),
            ("s3://b/p/", Scheme::S3, "b", "p", "s3://b/p"),
            ("gs://b-1/x", Scheme::Gs, "b-1", "x", "gs://b-1/x"),
            ("az://c/x", Scheme::Az, "c", "x", "az://c/x"),
            ("file:///tmp/x", Scheme::File, "", "tmp/x", "/tmp/x"),
            ("/tmp/x/", Scheme::File, "", "tmp/x", "/tmp/x"),
            ("memory://", Scheme::Memory, "", "", "memory://"),
            ("memory://a/b", Scheme::Memory, "", "a/b", "memory://a/b"),
        ] {
            let p = place(url);
            assert_eq!(
                (p.scheme, p.bucket.as_str(), p.prefix.as_str()),
                (scheme, bucket, prefix)
            );
            assert_eq!(p.to_string(), shown);
            assert_eq!(Place::parse(&p.to_string()).unwrap(), p);
        }
        assert_eq!(place("/tmp/x").url(), "file:///tmp/x");
        for bad in [
            "",
            "s3://",
            "s3:///x",
            "s3://b/../x",
            "s3://b/a//c",
            "s3://b/./c",
            "s3://B@d/x",
            "http://x/y",
            "file://host/x",
            "relative/path",
            "s3://b/a\0",
        ] {
            assert!(Place::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn job_ids() {
        for ok in ["a", "job-1", "J_2.x", &"x".repeat(128)] {
            validate_job_id(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            ".h",
            "../x",
            "a/b",
            "a\0b",
            "é",
            "a b",
            &"x".repeat(129),
        ] {
            assert!(validate_job_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_canonical() {
        assert_eq!(
            parse_checkpoint_dir_name(&checkpoint_dir_name(42)),
            Some(42)
        );
        for bad in ["chk-", "chk-007", "chk-+5", "chk-x", "shared"] {
            assert_eq!(parse_checkpoint_dir_name(bad), None, "{bad}");
        }
        assert!(is_state_file_name(&new_state_file_name()));
        assert!(is_savepoint_dir_name(&new_savepoint_dir_name("abcdefghij")));
        assert!(!is_savepoint_dir_name("savepoint-..-0123456789ab"));
    }

    #[test]
    fn relative_locators_stay_under_the_base() {
        let base = place("s3://b/p");
        for sd in [
            StreamDir::checkpoint(&base, "job", 7),
            StreamDir::shared(&base, "job"),
            StreamDir::task_owned(&base, "job"),
        ] {
            let loc = format!("{}{FILE}", sd.locator_prefix);
            assert_eq!(locator_place(&base, &loc).unwrap(), sd.place.join(FILE));
        }
        for bad in [
            format!("../job/shared/{FILE}"),
            format!("job/../shared/{FILE}"),
            format!("job/shared/{FILE}/x"),
            format!("job/chk-05/{FILE}"),
            format!("job/other/{FILE}"),
            format!("job/shared/{}", &FILE[1..]),
            format!("job/shared/{}", FILE.to_uppercase()),
            format!("job\0/shared/{FILE}"),
            String::new(),
        ] {
            assert!(
                matches!(
                    locator_place(&base, &bad),
                    Err(ObjError::InvalidLocator { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn full_locators_must_name_savepoint_state() {
        let base = place("s3://b/p");
        for ok in [
            format!("s3://other/sp/savepoint-job-0123456789ab/{FILE}"),
            format!("/tmp/sp/savepoint-job-0123456789ab/{FILE}"),
        ] {
            let p = locator_place(&base, &ok).unwrap();
            assert_eq!(p.to_string(), ok);
        }
        for bad in [
            format!("s3://b/p/job/chk-1/{FILE}"),
            format!("s3://b/sp/savepoint-job-0123456789ab/../{FILE}"),
            format!("/sp/savepoint-job-0123456789ab/{FILE}/"),
            "/etc/passwd".to_string(),
            format!("http://x/savepoint-job-0123456789ab/{FILE}"),
        ] {
            assert!(
                matches!(
                    locator_place(&base, &bad),
                    Err(ObjError::InvalidLocator { .. })
                ),
                "{bad:?}"
            );
        }
        let sp = place("s3://b/sp/savepoint-job-0123456789ab");
        let sd = StreamDir::savepoint(&sp);
        let loc = format!("{}{FILE}", sd.locator_prefix);
        assert_eq!(locator_place(&base, &loc).unwrap(), sp.join(FILE));
    }

    #[test]
    fn pointers_and_their_kinds() {
        let base = place("s3://b/p");
        let p = pointer_place(" s3://b/p/job/chk-3/_metadata ").unwrap();
        assert_eq!(p.to_string(), "s3://b/p/job/chk-3");
        assert_eq!(
            classify_location(&base, &p),
            Some(LocationKind::Checkpoint { id: 3 })
        );
        let sp = pointer_place("/anywhere/savepoint-job-0123456789ab").unwrap();
        assert_eq!(classify_location(&base, &sp), Some(LocationKind::Savepoint));
        for other in [
            "s3://b/p/job",
            "s3://b/chk-3",
            "s3://b/p/a/b/chk-3",
            "s3://c/p/j/chk-3",
        ] {
            assert_eq!(classify_location(&base, &place(other)), None, "{other}");
        }
        for bad in ["", "  ", "chk-1", "s3://b", "s3://b/../x", "\0::x::\u{1}"] {
            assert!(
                matches!(pointer_place(bad), Err(ObjError::InvalidPointer { .. })),
                "{bad:?}"
            );
        }
    }
}
