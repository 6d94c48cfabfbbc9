//! The job-id rule, written once for the host and every backend: [`JobId`].
//!
//! A job id names a job in the config file and becomes a directory name or a key part in every
//! backend, so it must be safe in all of them: 1 to 64 characters from `A-Z a-z 0-9 _ -`. That
//! excludes `.` (so neither `.`, `..` nor a hidden name), `/`, spaces, control characters and
//! anything a bucket key or a Windows path would treat specially. The host's config check and
//! the plugin kit both parse job ids with [`JobId::parse`], so a job the config accepts is a job
//! every bundled backend accepts, and the other way round.
//!
//! This is a plain Rust type: nothing of it crosses the ABI (job ids cross as strings, and each
//! side parses them again).

use std::fmt;

/// A validated job id (see the module docs for the rule).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(String);

/// Why a string is not a [`JobId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job id {shown} is invalid: {why}; {rule}", shown = shown(.id), rule = JobId::RULE)]
pub struct JobIdError {
    id: String,
    why: &'static str,
}

impl JobId {
    /// The longest job id.
    pub const MAX_LEN: usize = 64;

    /// The rule, as messages state it.
    pub const RULE: &'static str = "use 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'";

    /// Check `id` against the rule.
    pub fn parse(id: &str) -> Result<JobId, JobIdError> {
        let why = if id.is_empty() {
            "it is empty"
        } else if id.len() > Self::MAX_LEN {
            "it is longer than 64 characters"
        } else if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            "it has a character other than A-Z, a-z, 0-9, '_' and '-'"
        } else {
            return Ok(JobId(id.to_string()));
        };
        Err(JobIdError {
            id: id.to_string(),
            why,
        })
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for JobId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<JobIdError> for crate::StorageError {
    fn from(e: JobIdError) -> Self {
        crate::StorageError::InvalidConfig(e.to_string())
    }
}

/// Untrusted text in a message: quoted and escaped (a NUL or a newline stays visible), and cut
/// short when long.
fn shown(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
        None => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        for ok in ["a", "job-1", "J_2", &"x".repeat(64)] {
            assert_eq!(JobId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            ".",
            "..",
            ".h",
            "a.b",
            "../x",
            "a/b",
            "a\0b",
            "é",
            "a b",
            &"x".repeat(65),
        ] {
            let e = JobId::parse(bad).unwrap_err();
            assert!(e.to_string().contains(JobId::RULE), "{e}");
        }
        let e = JobId::parse("a\nb").unwrap_err().to_string();
        assert!(!e.contains('\n') && e.contains("\\n"), "{e}");
        let long = JobId::parse(&"y".repeat(5000)).unwrap_err().to_string();
        assert!(long.len() < 300, "{long}");
    }
}
