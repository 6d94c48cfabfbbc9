//! Parsing of a plugin's `[storage.options]` table.
//!
//! The host serializes the table to a TOML document and hands it over as a string, so no TOML or
//! serde type crosses the ABI and each plugin parses with its own serde. Use
//! `#[serde(deny_unknown_fields, rename_all = "kebab-case")]` on the options struct so that a
//! misspelt option is an error that names it.
//!
//! [`parse_size`] and [`parse_duration`] are the one reading of a size or a duration written as
//! text, for the host's config file and for every plugin's options alike. They follow Flink:
//! `kb`, `mb`, `gb` and `tb` (in any case, and `k`, `m`, `g`, `t`) are powers of 1024, as in
//! Flink's `MemorySize`, and `KiB`-style forms keep their meaning; a bare number of a duration
//! is milliseconds, as in Flink's `TimeUtils`.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::StorageError;

/// Parse an options document into `T`. Errors are [`StorageError::InvalidConfig`] and name the
/// offending option, for example ``storage.options: unknown field `inline-treshold` ``.
pub fn parse_options<T: DeserializeOwned>(document: &str) -> Result<T, StorageError> {
    toml::from_str(document).map_err(|e| {
        // toml's message starts with a line/column report against the serialized document, which
        // is not the user's file; keep only the explanation and let the host add the file name.
        let mut msg = e.message().trim().to_string();
        if let Some((unknown, expected)) = msg
            .strip_prefix("unknown field ")
            .and_then(|rest| rest.split_once(", expected "))
        {
            if let Some(near) = did_you_mean(unknown.trim_matches('`'), backquoted(expected)) {
                msg = format!("{msg}; did you mean `{near}`?");
            }
        }
        match e.span().and_then(|span| key_at(document, span.start)) {
            Some(key) if !msg.contains(&format!("`{key}`")) => {
                StorageError::InvalidConfig(format!("storage.options.{key}: {msg}"))
            }
            _ => StorageError::InvalidConfig(format!("storage.options: {msg}")),
        }
    })
}

/// The name in `known` closest to `unknown`, if one is close enough to be a likely misspelling
/// (`dirr` → `dir`): the one "did you mean" rule of the host's config file and every plugin's
/// options.
pub fn did_you_mean<'a>(
    unknown: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    known
        .into_iter()
        .map(|name| (strsim::damerau_levenshtein(unknown, name), name))
        .filter(|&(distance, name)| distance <= (name.len().max(unknown.len()) / 3).max(1))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, name)| name)
}

/// The names serde lists in "unknown field `x`, expected one of `a`, `b`": `a`, `b`.
pub(crate) fn backquoted(list: &str) -> impl Iterator<Item = &str> {
    list.split('`').skip(1).step_by(2)
}

/// A size written as text: `"4096"`, `"64B"`, `"1kb"` (1024 bytes, as in Flink), `"1KiB"`,
/// `"5MiB"`, `"1.5 GiB"`. `None` if it is not a size.
///
/// Flink's units (`b`, `k`/`kb`, `m`/`mb`, `g`/`gb`, `t`/`tb`, in any case, with or without a
/// space) are powers of 1024; every other form (`KiB`, `MiB`, fractions) is the `bytesize`
/// crate's.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    if !number.is_empty() {
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" | "bytes" => Some(0),
            "k" | "kb" => Some(10),
            "m" | "mb" => Some(20),
            "g" | "gb" => Some(30),
            "t" | "tb" => Some(40),
            _ => None,
        };
        if let Some(shift) = shift {
            let n: u64 = number.parse().ok()?;
            return n.checked_mul(1u64 << shift);
        }
    }
    text.parse::<bytesize::ByteSize>().ok().map(|b| b.as_u64())
}

/// A duration written as text: `"10s"`, `"500ms"`, `"10 min"`, or a bare number of
/// milliseconds (`"10000"`), as Flink reads durations. The error says why it is not one.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|e| e.to_string());
    }
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// The key of the `key = value` line that byte `at` of `document` is on, if it is one.
fn key_at(document: &str, at: usize) -> Option<String> {
    let start = document.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let line = document[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    let plain = !key.is_empty()
        && key.len() < 80
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    plain.then(|| key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    #[allow(dead_code)]
    struct Opts {
        dir: String,
        #[serde(default)]
        inline_threshold: Option<u64>,
    }

    #[test]
    fn sizes_follow_flink_kb_is_1024_and_kib_stays() {
        assert_eq!(parse_size("1kb"), Some(1024));
        assert_eq!(parse_size("1KB"), Some(1024));
        assert_eq!(parse_size("2 mb"), Some(2 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("1KiB"), Some(1024));
        assert_eq!(parse_size("5MiB"), Some(5 << 20));
        assert_eq!(parse_size("64B"), Some(64));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1.5MiB"), Some(3 << 19));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("99999999999999999999tb"), None);
    }

    #[test]
    fn a_bare_number_of_a_duration_is_milliseconds() {
        assert_eq!(parse_duration("10000"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10 min"), Ok(Duration::from_secs(600)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn unknown_option_is_named() {
        let err = parse_options::<Opts>("dir = \"/x\"\ninline-treshold = 3\n").unwrap_err();
        assert!(
            matches!(&err, StorageError::InvalidConfig(m) if m.contains("inline-treshold")),
            "{err}"
        );
    }

    #[test]
    fn a_misspelt_option_gets_did_you_mean() {
        let err = parse_options::<Opts>("dirr = \"/x\"\n").unwrap_err();
        assert!(
            matches!(&err, StorageError::InvalidConfig(m) if m.ends_with("did you mean `dir`?")),
            "{err}"
        );
        assert_eq!(did_you_mean("zzzz", ["dir", "inline-threshold"]), None);
    }

    #[test]
    fn wrong_type_is_named() {
        let err = parse_options::<Opts>("dir = \"/x\"\ninline-threshold = \"big\"\n").unwrap_err();
        assert!(
            matches!(&err, StorageError::InvalidConfig(m)
                if m.starts_with("storage.options.inline-threshold: ") && m.contains("big")),
            "{err}"
        );
    }
}
