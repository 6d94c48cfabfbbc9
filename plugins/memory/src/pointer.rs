//! External pointers: the strings a commit hands out and `resolve`/`dispose` take back.
//!
//! There are two shapes. Without a checkpoint directory the metadata lives only in this storage
//! instance and the pointer is `memory:<job-id>/chk-<n>`, which means nothing to another process.
//! With a checkpoint directory, and for every savepoint, the pointer is the absolute path of the
//! directory that holds `_metadata`, as in Flink. Pointers come from users and from old
//! metadata, so parsing is strict and every refusal says what was expected.

use std::path::{Component, Path, PathBuf};

use cairn_plugin_api::{StorageError, StorageResult};

use crate::job::validate_job_id;

/// The scheme of in-memory pointers.
pub const MEMORY_SCHEME: &str = "memory:";

/// The prefix of a checkpoint directory name, `chk-<n>`.
const CHK_PREFIX: &str = "chk-";

/// A parsed pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pointer {
    /// `memory:<job-id>/chk-<n>`: metadata held by one storage instance.
    Memory {
        /// The job id.
        job_id: String,
        /// The checkpoint id.
        checkpoint_id: u64,
    },
    /// An absolute directory that holds (or held) a `_metadata` file.
    Dir(PathBuf),
}

impl Pointer {
    /// Parse a pointer. Empty and malformed pointers are `InvalidConfig`.
    pub fn parse(pointer: &str) -> StorageResult<Pointer> {
        if pointer.trim().is_empty() {
            return Err(StorageError::InvalidConfig(
                "the checkpoint pointer is empty; expected memory:<job-id>/chk-<n> or the \
                 absolute path of a checkpoint or savepoint directory"
                    .to_string(),
            ));
        }
        if let Some(rest) = pointer.strip_prefix(MEMORY_SCHEME) {
            let parsed = rest.split_once('/').and_then(|(job, chk)| {
                let id = parse_chk_name(chk)?;
                validate_job_id(job).ok()?;
                Some(Pointer::Memory {
                    job_id: job.to_string(),
                    checkpoint_id: id,
                })
            });
            return parsed.ok_or_else(|| {
                StorageError::InvalidConfig(format!(
                    "pointer '{pointer}' is malformed; expected memory:<job-id>/chk-<n>"
                ))
            });
        }
        let path = pointer.strip_prefix("file://").unwrap_or(pointer);
        let path = Path::new(path);
        let clean = !pointer.contains('\0')
            && path.is_absolute()
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !clean {
            return Err(StorageError::InvalidConfig(format!(
                "pointer '{pointer}' is not a memory-backend pointer; expected \
                 memory:<job-id>/chk-<n> or the absolute path (without '..') of a checkpoint or \
                 savepoint directory"
            )));
        }
        // A pointer may name the `_metadata` file itself, as Flink allows.
        let dir = if path
            .file_name()
            .is_some_and(|n| n == crate::persist::METADATA_FILE)
        {
            path.parent().unwrap_or(path)
        } else {
            path
        };
        Ok(Pointer::Dir(dir.to_path_buf()))
    }

    /// The pointer of an in-memory checkpoint.
    pub fn memory(job_id: &str, checkpoint_id: u64) -> String {
        format!("{MEMORY_SCHEME}{job_id}/{}", chk_name(checkpoint_id))
    }
}

/// The directory name of checkpoint `id`: `chk-<id>`.
pub fn chk_name(id: u64) -> String {
    format!("{CHK_PREFIX}{id}")
}

/// The checkpoint id in a `chk-<n>` name, if the name is exactly that (no sign, no leading zero).
pub fn parse_chk_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(CHK_PREFIX)?;
    let id = digits.parse::<u64>().ok()?;
    (digits.bytes().all(|b| b.is_ascii_digit()) && chk_name(id) == name).then_some(id)
}

/// Whether `name` is a savepoint directory name this backend creates:
/// `savepoint-<1 to 6 job-id chars>-<12 hex digits>`.
pub fn is_savepoint_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("savepoint-") else {
        return false;
    };
    let Some((prefix, random)) = rest.rsplit_once('-') else {
        return false;
    };
    let prefix_ok = (1..=6).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    prefix_ok && random.len() == 12 && random.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_pointers_round_trip() {
        let p = Pointer::memory("job-1", 42);
        assert_eq!(p, "memory:job-1/chk-42");
        assert_eq!(
            Pointer::parse(&p).unwrap(),
            Pointer::Memory {
                job_id: "job-1".into(),
                checkpoint_id: 42
            }
        );
    }

    #[test]
    fn garbage_is_invalid_config() {
        for p in [
            "",
            "  ",
            "memory:",
            "memory:job",
            "memory:job/chk-",
            "memory:job/chk-01",
            "memory:job/chk-+1",
            "memory:job/chk-1/x",
            "memory:.job/chk-1",
            "memory:/chk-1",
            "relative/dir",
            "/a/../b",
            "s3://bucket/x",
        ] {
            assert!(
                matches!(Pointer::parse(p), Err(StorageError::InvalidConfig(_))),
                "{p:?}"
            );
        }
    }

    #[test]
    fn dir_pointers_accept_the_metadata_file() {
        assert_eq!(
            Pointer::parse("/x/chk-1").unwrap(),
            Pointer::Dir("/x/chk-1".into())
        );
        assert_eq!(
            Pointer::parse("/x/chk-1/_metadata").unwrap(),
            Pointer::Dir("/x/chk-1".into())
        );
        assert_eq!(
            Pointer::parse("file:///x/chk-1").unwrap(),
            Pointer::Dir("/x/chk-1".into())
        );
    }

    #[test]
    fn savepoint_names() {
        assert!(is_savepoint_name("savepoint-job-1-0123456789ab"));
        assert!(is_savepoint_name("savepoint-a-0123456789ab"));
        assert!(!is_savepoint_name("savepoint--0123456789ab"));
        assert!(!is_savepoint_name("savepoint-abcdefg-0123456789ab"));
        assert!(!is_savepoint_name("savepoint-abc-0123456789a"));
        assert!(!is_savepoint_name("chk-1"));
    }
}
