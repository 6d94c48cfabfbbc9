//! The `[storage.options]` table: parsing, defaults and validation.
//!
//! Parsing is two-step. Serde reads the table into [`RawOptions`], whose fields accept any TOML
//! value, so that a value of the wrong type is still reported by *our* code with the option's
//! full name (`storage.options.inline-threshold = true is not a size ...`) rather than by the
//! TOML parser, which only knows where the value was. [`Options::parse`] then checks every value
//! and fills in the defaults. Nothing here touches the filesystem; making `dir` absolute and
//! creating it happens when the storage opens.
//!
//! Sizes are written as an integer number of bytes or as a string like `"20KiB"` or `"1 MiB"`,
//! parsed by the `bytesize` crate (note that `KB` means 1000 bytes and `KiB` 1024).

use std::{fmt, path::PathBuf};

use bytesize::ByteSize;
use serde::{
    de::{self, IgnoredAny},
    Deserialize, Deserializer,
};

use crate::error::{FsError, FsResult};

/// Default of `inline-threshold`: Flink's `state.storage.fs.memory-threshold`.
pub(crate) const DEFAULT_INLINE_THRESHOLD: u64 = 20 * KIB;
/// Largest `inline-threshold`: inline bytes travel inside the metadata, which is read whole.
pub(crate) const MAX_INLINE_THRESHOLD: u64 = MIB;
/// Default of `write-buffer`: Flink's `state.storage.fs.write-buffer-size`.
pub(crate) const DEFAULT_WRITE_BUFFER: u64 = 4 * KIB;
/// Smallest `write-buffer`; smaller buffers only add system calls.
pub(crate) const MIN_WRITE_BUFFER: u64 = 512;
/// Largest `write-buffer`; every open stream may hold this much memory.
pub(crate) const MAX_WRITE_BUFFER: u64 = 64 * MIB;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// The options table as written, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawOptions {
    dir: Option<Value>,
    savepoint_dir: Option<Value>,
    inline_threshold: Option<Value>,
    write_buffer: Option<Value>,
}

/// The validated options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    /// The checkpoint base directory as configured (maybe relative).
    pub(crate) dir: PathBuf,
    /// The default savepoint target directory as configured (maybe relative).
    pub(crate) savepoint_dir: Option<PathBuf>,
    /// Streams of at most this many bytes give inline handles.
    pub(crate) inline_threshold: u64,
    /// Bytes a stream buffers before it writes to its file.
    pub(crate) write_buffer: u64,
}

impl Options {
    /// Parse and validate an options document.
    pub(crate) fn parse(document: &str) -> FsResult<Self> {
        let raw: RawOptions = cairn_plugin_api::parse_options(document)?;
        Self::validate(raw)
    }

    fn validate(raw: RawOptions) -> FsResult<Self> {
        let dir = match raw.dir {
            Some(v) => directory("dir", v)?,
            None => {
                return Err(FsError::InvalidOption {
                    key: "dir",
                    detail: "is missing: set it to the checkpoint base directory".into(),
                })
            }
        };
        let savepoint_dir = raw
            .savepoint_dir
            .map(|v| directory("savepoint-dir", v))
            .transpose()?;
        let inline_threshold = match raw.inline_threshold {
            Some(v) => size("inline-threshold", v, 0, MAX_INLINE_THRESHOLD)?,
            None => DEFAULT_INLINE_THRESHOLD,
        };
        let write_buffer = match raw.write_buffer {
            Some(v) => size("write-buffer", v, MIN_WRITE_BUFFER, MAX_WRITE_BUFFER)?,
            None => DEFAULT_WRITE_BUFFER,
        };
        Ok(Options {
            dir,
            savepoint_dir,
            inline_threshold,
            write_buffer,
        })
    }
}

fn directory(key: &'static str, value: Value) -> FsResult<PathBuf> {
    let invalid = |detail: String| FsError::InvalidOption { key, detail };
    match value {
        Value::Str(s) if s.trim().is_empty() => {
            Err(invalid(format!("= {s:?} is empty: give a directory path")))
        }
        Value::Str(s) if s.contains('\0') => Err(invalid(format!(
            "= {s:?} contains a NUL byte: give a directory path"
        ))),
        Value::Str(s) => Ok(PathBuf::from(s)),
        other => Err(invalid(format!(
            "= {other} is not a directory path: write it as a string"
        ))),
    }
}

fn size(key: &'static str, value: Value, min: u64, max: u64) -> FsResult<u64> {
    let invalid = |detail: String| FsError::InvalidOption { key, detail };
    let bytes = match &value {
        Value::Int(n) if *n < 0 => {
            return Err(invalid(format!(
                "= {value} is negative: sizes are at least 0 bytes"
            )))
        }
        Value::Int(n) => *n as u64,
        Value::Str(s) => match s.trim().parse::<ByteSize>() {
            Ok(b) if !s.trim().is_empty() => b.as_u64(),
            _ => {
                return Err(invalid(format!(
                    "= {value} is not a size: write a number of bytes or a string like \"20KiB\""
                )))
            }
        },
        _ => {
            return Err(invalid(format!(
                "= {value} is not a size: write a number of bytes or a string like \"20KiB\""
            )))
        }
    };
    if bytes > max {
        return Err(invalid(format!(
            "= {value} is above the maximum of {}",
            fmt_size(max)
        )));
    }
    if bytes < min {
        return Err(invalid(format!(
            "= {value} is below the minimum of {}",
            fmt_size(min)
        )));
    }
    Ok(bytes)
}

/// A size for messages: `1MiB`, `20KiB`, `512B`.
pub(crate) fn fmt_size(bytes: u64) -> String {
    if bytes >= MIB && bytes % MIB == 0 {
        format!("{}MiB", bytes / MIB)
    } else if bytes >= KIB && bytes % KIB == 0 {
        format!("{}KiB", bytes / KIB)
    } else {
        format!("{bytes}B")
    }
}

/// Any TOML value, kept just well enough to validate it and to show it in a message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Str(String),
    Int(i128),
    Float(f64),
    Bool(bool),
    /// An array, table or date, named by its kind.
    Other(&'static str),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Other(kind) => write!(f, "{kind}"),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> de::Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Other("an array"))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Other("a table or date"))
    }
}

#[cfg(test)]
mod tests {
    use cairn_plugin_api::StorageError;

    use super::*;

    fn parse(doc: &str) -> Result<Options, String> {
        Options::parse(doc).map_err(|e| match StorageError::from(e) {
            StorageError::InvalidConfig(m) => m,
            other => panic!("expected InvalidConfig, got {other:?}"),
        })
    }

    #[test]
    fn defaults() {
        let o = parse("dir = \"/x\"").unwrap();
        assert_eq!(o.dir, PathBuf::from("/x"));
        assert_eq!(o.savepoint_dir, None);
        assert_eq!(o.inline_threshold, 20 * 1024);
        assert_eq!(o.write_buffer, 4 * 1024);
    }

    #[test]
    fn sizes_as_integers_and_strings() {
        let o = parse("dir = \"/x\"\ninline-threshold = \"1 MiB\"\nwrite-buffer = 8192").unwrap();
        assert_eq!(o.inline_threshold, 1 << 20);
        assert_eq!(o.write_buffer, 8192);
        let o = parse("dir = \"/x\"\ninline-threshold = 0\nwrite-buffer = \"64MiB\"").unwrap();
        assert_eq!(o.inline_threshold, 0);
        assert_eq!(o.write_buffer, 64 << 20);
        assert_eq!(
            parse("dir = \"/x\"\ninline-threshold = \"20KiB\"")
                .unwrap()
                .inline_threshold,
            20480
        );
    }

    #[test]
    fn every_bad_value_names_its_option() {
        let cases = [
            (
                "inline-threshold = \"2MiB\"",
                "storage.options.inline-threshold = \"2MiB\" is above the maximum of 1MiB",
            ),
            (
                "inline-threshold = -1",
                "storage.options.inline-threshold = -1 is negative",
            ),
            (
                "inline-threshold = \"lots\"",
                "storage.options.inline-threshold = \"lots\" is not a size",
            ),
            (
                "inline-threshold = \"\"",
                "storage.options.inline-threshold = \"\" is not a size",
            ),
            (
                "inline-threshold = true",
                "storage.options.inline-threshold = true is not a size",
            ),
            (
                "inline-threshold = 1.5",
                "storage.options.inline-threshold = 1.5 is not a size",
            ),
            (
                "write-buffer = 100",
                "storage.options.write-buffer = 100 is below the minimum of 512B",
            ),
            (
                "write-buffer = \"1GiB\"",
                "storage.options.write-buffer = \"1GiB\" is above the maximum of 64MiB",
            ),
            (
                "savepoint-dir = \"\"",
                "storage.options.savepoint-dir = \"\" is empty",
            ),
            (
                "savepoint-dir = [1]",
                "storage.options.savepoint-dir = an array is not a directory path",
            ),
        ];
        for (line, expected) in cases {
            let msg = parse(&format!("dir = \"/x\"\n{line}\n")).unwrap_err();
            assert!(msg.starts_with(expected), "{line}: {msg}");
        }
        let msg = parse("dir = 3").unwrap_err();
        assert!(
            msg.starts_with("storage.options.dir = 3 is not a directory path"),
            "{msg}"
        );
        let msg = parse("dir = \"a\\u0000b\"").unwrap_err();
        assert!(
            msg.contains("storage.options.dir") && msg.contains("NUL"),
            "{msg}"
        );
    }

    #[test]
    fn missing_dir_and_unknown_options_are_named() {
        let msg = parse("").unwrap_err();
        assert!(msg.starts_with("storage.options.dir is missing"), "{msg}");
        let msg = parse("dir = \"/x\"\ninline-treshold = 3").unwrap_err();
        assert!(msg.contains("inline-treshold"), "{msg}");
    }

    #[test]
    fn sizes_print_in_their_largest_exact_unit() {
        assert_eq!(fmt_size(1 << 20), "1MiB");
        assert_eq!(fmt_size(20 * 1024), "20KiB");
        assert_eq!(fmt_size(512), "512B");
        assert_eq!(fmt_size(0), "0B");
    }
}
