//! `[storage.options]`: the options every backend shares (`inline-threshold`), merged with the
//! plugin's own, and helpers that check a value and name the option when they refuse it.
//!
//! [`parse`] takes the options document, removes the common keys the plugin asked for and
//! checks them, then hands the rest to the plugin's own serde struct (which should say
//! `#[serde(deny_unknown_fields, rename_all = "kebab-case")]` and take its values as
//! [`toml::Value`]s, so that *these* helpers, not serde, word the refusals):
//!
//! ```text
//! storage.options.inline-threshold = "2MiB" is above the maximum of 1MiB
//! storage.options.dir is missing: set it to the checkpoint base directory
//! ```
//!
//! Sizes are an integer number of bytes or a string such as `"20KiB"` or `"20kb"`, and
//! durations a string such as `"30s"` or a number of milliseconds, both read by
//! `cairn_plugin_api::{parse_size, parse_duration}`, the one rule host and plugins share (Flink's:
//! `kb` is 1024 bytes, a bare duration is milliseconds).

use std::time::Duration;

use cairn_plugin_api::{StorageError, StorageResult};
use serde::de::DeserializeOwned;

/// Default `inline-threshold`: Flink's `state.storage.fs.memory-threshold`.
pub const DEFAULT_INLINE_THRESHOLD: u64 = 20 * 1024;
/// Largest `inline-threshold`: inline bytes travel inside the metadata, which is read whole.
pub const MAX_INLINE_THRESHOLD: u64 = 1024 * 1024;

/// The manifest entry of the common `inline-threshold` option, for a plugin that takes it
/// ([`CommonSpec::ALL`]).
pub const INLINE_THRESHOLD: cairn_plugin_api::OptionSpec = cairn_plugin_api::OptionSpec::new(
    "inline-threshold",
    "20KiB",
    "streams up to this size are stored inside the metadata; at most 1MiB",
);

/// Which common options a plugin takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonSpec {
    /// Whether `inline-threshold` is an option (with [`DEFAULT_INLINE_THRESHOLD`] and
    /// [`MAX_INLINE_THRESHOLD`]). Off for an inline-only backend, whose threshold is its
    /// size limit.
    pub inline_threshold: bool,
}

impl CommonSpec {
    /// Every common option.
    pub const ALL: CommonSpec = CommonSpec {
        inline_threshold: true,
    };
    /// None of them.
    pub const NONE: CommonSpec = CommonSpec {
        inline_threshold: false,
    };
}

/// The common options, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Common {
    /// Streams of at most this many bytes give inline handles.
    pub inline_threshold: u64,
}

/// Parse an options document into the common options `spec` names and the plugin's own `T`.
pub fn parse<T: DeserializeOwned>(document: &str, spec: CommonSpec) -> StorageResult<(Common, T)> {
    let mut table: toml::Table = cairn_plugin_api::parse_options(document)?;
    let inline_threshold = match spec.inline_threshold {
        true => match table.remove("inline-threshold") {
            Some(v) => size("inline-threshold", &v, 0, MAX_INLINE_THRESHOLD)?,
            None => DEFAULT_INLINE_THRESHOLD,
        },
        false => DEFAULT_INLINE_THRESHOLD,
    };
    let rest = toml::to_string(&table).map_err(|e| {
        StorageError::InvalidConfig(format!("storage.options: cannot be read back: {e}"))
    })?;
    let own: T = cairn_plugin_api::parse_options(&rest)?;
    Ok((Common { inline_threshold }, own))
}

/// An `InvalidConfig` error about option `key`; `detail` goes on after its name, for example
/// `= "2MiB" is above the maximum of 1MiB`.
pub fn invalid(key: &str, detail: impl std::fmt::Display) -> StorageError {
    StorageError::InvalidConfig(format!("storage.options.{key} {detail}"))
}

/// A required option that is missing.
pub fn missing(key: &str, hint: &str) -> StorageError {
    invalid(key, format!("is missing: {hint}"))
}

fn show(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Array(_) => "an array".to_string(),
        toml::Value::Table(_) => "a table".to_string(),
        other => other.to_string(),
    }
}

/// A size option: an integer number of bytes or a string like `"20KiB"`, within `min..=max`.
pub fn size(key: &str, value: &toml::Value, min: u64, max: u64) -> StorageResult<u64> {
    let not_a_size = || {
        invalid(
            key,
            format!(
                "= {} is not a size: write a number of bytes or a string like \"20KiB\"",
                show(value)
            ),
        )
    };
    let bytes = match value {
        toml::Value::Integer(n) if *n < 0 => {
            return Err(invalid(
                key,
                format!("= {n} is negative: sizes are at least 0 bytes"),
            ))
        }
        toml::Value::Integer(n) => *n as u64,
        toml::Value::String(s) if !s.trim().is_empty() => {
            cairn_plugin_api::parse_size(s).ok_or_else(not_a_size)?
        }
        _ => return Err(not_a_size()),
    };
    if bytes > max {
        return Err(invalid(
            key,
            format!(
                "= {} is above the maximum of {}",
                show(value),
                fmt_size(max)
            ),
        ));
    }
    if bytes < min {
        return Err(invalid(
            key,
            format!(
                "= {} is below the minimum of {}",
                show(value),
                fmt_size(min)
            ),
        ));
    }
    Ok(bytes)
}

/// A duration option: a string like `"30s"`, within `min..=max`.
pub fn duration(
    key: &str,
    value: &toml::Value,
    min: Duration,
    max: Duration,
) -> StorageResult<Duration> {
    let not_a_duration = || {
        invalid(
            key,
            format!(
                "= {} is not a duration: write a string such as \"30s\" or \"500ms\"",
                show(value)
            ),
        )
    };
    let d = match value {
        toml::Value::String(s) => {
            cairn_plugin_api::parse_duration(s).map_err(|_| not_a_duration())?
        }
        toml::Value::Integer(n) if *n >= 0 => Duration::from_millis(*n as u64),
        _ => return Err(not_a_duration()),
    };
    if d > max {
        return Err(invalid(
            key,
            format!(
                "= {} is above the maximum of {}",
                show(value),
                humantime::format_duration(max)
            ),
        ));
    }
    if d < min {
        return Err(invalid(
            key,
            format!(
                "= {} is below the minimum of {}",
                show(value),
                humantime::format_duration(min)
            ),
        ));
    }
    Ok(d)
}

/// A whole-number option within `min..=max`.
pub fn integer(key: &str, value: &toml::Value, min: u64, max: u64) -> StorageResult<u64> {
    match value {
        toml::Value::Integer(n) if *n < 0 || (*n as u64) < min => {
            Err(invalid(key, format!("= {n} is below the minimum of {min}")))
        }
        toml::Value::Integer(n) if *n as u64 > max => {
            Err(invalid(key, format!("= {n} is above the maximum of {max}")))
        }
        toml::Value::Integer(n) => Ok(*n as u64),
        other => Err(invalid(
            key,
            format!("= {} is not a whole number", show(other)),
        )),
    }
}

/// A true-or-false option.
pub fn boolean(key: &str, value: &toml::Value) -> StorageResult<bool> {
    match value {
        toml::Value::Boolean(b) => Ok(*b),
        other => Err(invalid(
            key,
            format!("= {} is not true or false", show(other)),
        )),
    }
}

/// A string option: not empty, no control characters.
pub fn string(key: &str, value: &toml::Value) -> StorageResult<String> {
    match value {
        toml::Value::String(s) if s.trim().is_empty() => {
            Err(invalid(key, format!("= {s:?} is empty")))
        }
        toml::Value::String(s) if s.chars().any(char::is_control) => Err(invalid(
            key,
            format!("= {s:?} contains a control character"),
        )),
        toml::Value::String(s) => Ok(s.clone()),
        other => Err(invalid(
            key,
            format!("= {} is not a string: write it in quotes", show(other)),
        )),
    }
}

/// A size for messages: `1MiB`, `20KiB`, `512B`.
pub fn fmt_size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * 1024 * 1024;
    if bytes >= GIB && bytes % GIB == 0 {
        format!("{}GiB", bytes / GIB)
    } else if bytes >= MIB && bytes % MIB == 0 {
        format!("{}MiB", bytes / MIB)
    } else if bytes >= KIB && bytes % KIB == 0 {
        format!("{}KiB", bytes / KIB)
    } else {
        format!("{bytes}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Own {
        dir: Option<toml::Value>,
    }

    fn err(doc: &str) -> String {
        match parse::<Own>(doc, CommonSpec::ALL) {
            Err(StorageError::InvalidConfig(m)) => m,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn common_and_own_options_merge() {
        let (c, own) = parse::<Own>(
            "dir = \"/x\"\ninline-threshold = \"1 MiB\"",
            CommonSpec::ALL,
        )
        .unwrap();
        assert_eq!(c.inline_threshold, 1 << 20);
        assert_eq!(own.dir.unwrap().as_str(), Some("/x"));
        let (c, _) = parse::<Own>("", CommonSpec::ALL).unwrap();
        assert_eq!(c.inline_threshold, DEFAULT_INLINE_THRESHOLD);
    }

    #[test]
    fn every_bad_value_names_its_option() {
        for (line, expected) in [
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
        ] {
            let msg = err(line);
            assert!(msg.starts_with(expected), "{line}: {msg}");
        }
        assert!(err("inline-treshold = 3").contains("inline-treshold"));
        // A plugin without the common option refuses it like any unknown option.
        let msg = match parse::<Own>("inline-threshold = 3", CommonSpec::NONE) {
            Err(StorageError::InvalidConfig(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(msg.contains("inline-threshold"), "{msg}");
    }

    #[test]
    fn helpers() {
        let v = |s: &str| -> toml::Value {
            toml::from_str::<toml::Table>(&format!("v = {s}")).unwrap()["v"].clone()
        };
        assert_eq!(
            duration("t", &v("\"2s\""), Duration::ZERO, Duration::from_secs(5)).unwrap(),
            Duration::from_secs(2)
        );
        assert!(
            duration("t", &v("\"9s\""), Duration::ZERO, Duration::from_secs(5))
                .unwrap_err()
                .to_string()
                .contains("above the maximum of 5s")
        );
        assert!(integer("n", &v("100"), 0, 20)
            .unwrap_err()
            .to_string()
            .contains("storage.options.n = 100 is above the maximum of 20"));
        assert!(boolean("b", &v("\"yes\""))
            .unwrap_err()
            .to_string()
            .contains("is not true or false"));
        assert!(string("s", &v("\"\""))
            .unwrap_err()
            .to_string()
            .contains("is empty"));
        assert_eq!(fmt_size(1 << 30), "1GiB");
        assert_eq!(fmt_size(512), "512B");
    }
}
