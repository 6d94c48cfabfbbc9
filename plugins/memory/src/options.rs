//! The `[storage.options]` of the memory backend, parsed and validated into a [`Config`].
//!
//! Parsing is two steps. Serde reads the table into [`RawOptions`], which accepts anything
//! that has the right shape (a size may be an integer or a string); then [`Config::from_raw`]
//! checks the values and says, naming the option, what is allowed. Splitting the steps keeps the
//! messages ours rather than serde's.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use bytesize::ByteSize;
use cairn_plugin_api::{parse_options, StorageError, StorageResult};
use serde::{de, Deserialize, Deserializer};

/// Flink's default for `JobManagerCheckpointStorage`: 5 MiB per state stream.
pub const DEFAULT_MAX_STATE_SIZE: u64 = 5 * 1024 * 1024;

/// The largest `max-state-size` accepted. Every byte of state is held in the host's memory and
/// copied into the checkpoint metadata, so anything bigger belongs in the filesystem backend.
pub const MAX_MAX_STATE_SIZE: u64 = 1024 * 1024 * 1024;

/// [`MAX_MAX_STATE_SIZE`] for messages.
pub(crate) const MAX_MAX_STATE_SIZE_TEXT: &str = "1 GiB";

const MAX_STATE_SIZE_KEY: &str = "storage.options.max-state-size";

/// The options table as written, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawOptions {
    #[serde(default)]
    max_state_size: Option<RawSize>,
    #[serde(default)]
    checkpoint_dir: Option<String>,
    #[serde(default)]
    savepoint_dir: Option<String>,
}

/// A size as written: an integer number of bytes, or a string such as `"5MiB"`.
#[derive(Debug)]
enum RawSize {
    Int(i128),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = RawSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "{MAX_STATE_SIZE_KEY} to be a size: a number of bytes such as 5242880, or a \
                     string such as \"5MiB\""
                )
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Int(v.into()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Int(v.into()))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_string()))
            }
        }
        de.deserialize_any(Visitor)
    }
}

/// The validated configuration of one storage instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Streams larger than this many bytes fail with `CapacityExceeded` at close.
    pub max_state_size: u64,
    /// Where committed metadata is persisted, as an absolute path; `None` keeps it in memory.
    pub checkpoint_dir: Option<PathBuf>,
    /// The default savepoint target, as an absolute path.
    pub savepoint_dir: Option<PathBuf>,
}

impl Config {
    /// Parse and validate an options document.
    pub fn parse(document: &str) -> StorageResult<Config> {
        let raw: RawOptions = parse_options(document)?;
        Config::from_raw(raw)
    }

    fn from_raw(raw: RawOptions) -> StorageResult<Config> {
        let max_state_size = match raw.max_state_size {
            None => DEFAULT_MAX_STATE_SIZE,
            Some(size) => validate_size(&size)?,
        };
        let checkpoint_dir = raw
            .checkpoint_dir
            .map(|d| absolute_dir("storage.options.checkpoint-dir", &d))
            .transpose()?;
        let savepoint_dir = raw
            .savepoint_dir
            .map(|d| absolute_dir("storage.options.savepoint-dir", &d))
            .transpose()?;
        Ok(Config {
            max_state_size,
            checkpoint_dir,
            savepoint_dir,
        })
    }
}

fn validate_size(size: &RawSize) -> StorageResult<u64> {
    let allowed = format!(
        "a size from 1 byte to {MAX_MAX_STATE_SIZE_TEXT} ({MAX_MAX_STATE_SIZE} bytes), such as \
         5242880 or \"5MiB\""
    );
    let (bytes, shown) = match size {
        RawSize::Int(n) => (u64::try_from(*n).ok(), n.to_string()),
        RawSize::Text(s) => (
            s.trim().parse::<ByteSize>().ok().map(|b| b.as_u64()),
            format!("{s:?}"),
        ),
    };
    match bytes {
        None => Err(StorageError::InvalidConfig(format!(
            "{MAX_STATE_SIZE_KEY} = {shown} is not a size; expected {allowed}"
        ))),
        Some(0) => Err(StorageError::InvalidConfig(format!(
            "{MAX_STATE_SIZE_KEY} = {shown} is zero; expected {allowed}"
        ))),
        Some(b) if b > MAX_MAX_STATE_SIZE => Err(StorageError::InvalidConfig(format!(
            "{MAX_STATE_SIZE_KEY} = {shown} is above the maximum of {MAX_MAX_STATE_SIZE_TEXT}; \
             use the filesystem backend for larger state"
        ))),
        Some(b) => Ok(b),
    }
}

/// Resolve a directory option (or target) to an absolute path. A `file://` prefix is accepted,
/// as in Flink.
pub fn absolute_dir(what: &str, dir: &str) -> StorageResult<PathBuf> {
    let trimmed = dir.strip_prefix("file://").unwrap_or(dir);
    if trimmed.trim().is_empty() {
        return Err(StorageError::InvalidConfig(format!(
            "{what} = {dir:?} is empty; expected a directory path"
        )));
    }
    if trimmed.contains('\0') {
        return Err(StorageError::InvalidConfig(format!(
            "{what} = {dir:?} contains a NUL byte; expected a directory path"
        )));
    }
    if trimmed.contains("://") {
        return Err(StorageError::InvalidConfig(format!(
            "{what} = {dir:?} is a URL; the memory backend writes to local directories only \
             (plain paths or file://)"
        )));
    }
    std::path::absolute(Path::new(trimmed))
        .map_err(|e| StorageError::InvalidConfig(format!("{what} = {dir:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(doc: &str) -> String {
        match Config::parse(doc) {
            Err(StorageError::InvalidConfig(m)) => m,
            other => panic!("expected InvalidConfig for {doc:?}, got {other:?}"),
        }
    }

    #[test]
    fn sizes_parse_as_integers_and_strings() {
        assert_eq!(
            Config::parse("").unwrap().max_state_size,
            DEFAULT_MAX_STATE_SIZE
        );
        assert_eq!(
            Config::parse("max-state-size = 10").unwrap().max_state_size,
            10
        );
        assert_eq!(
            Config::parse("max-state-size = \"5MiB\"")
                .unwrap()
                .max_state_size,
            5 << 20
        );
        assert_eq!(
            Config::parse("max-state-size = \"2 KiB\"")
                .unwrap()
                .max_state_size,
            2048
        );
        assert_eq!(
            Config::parse("max-state-size = \"1GiB\"")
                .unwrap()
                .max_state_size,
            1 << 30
        );
    }

    #[test]
    fn bad_sizes_name_the_option() {
        for doc in [
            "max-state-size = 0",
            "max-state-size = -1",
            "max-state-size = \"2GiB\"",
            "max-state-size = \"lots\"",
            "max-state-size = true",
            "max-state-size = 1.5",
        ] {
            let m = err(doc);
            assert!(m.contains("storage.options.max-state-size"), "{doc}: {m}");
        }
    }

    #[test]
    fn dirs_become_absolute() {
        let c =
            Config::parse("checkpoint-dir = \"rel/dir\"\nsavepoint-dir = \"file:///sp\"").unwrap();
        assert!(c.checkpoint_dir.unwrap().is_absolute());
        assert_eq!(c.savepoint_dir.unwrap(), PathBuf::from("/sp"));
        assert!(err("checkpoint-dir = \"\"").contains("storage.options.checkpoint-dir"));
        assert!(err("savepoint-dir = \"s3://b/x\"").contains("storage.options.savepoint-dir"));
    }
}
