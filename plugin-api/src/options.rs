//! Parsing of a plugin's `[storage.options]` table.
//!
//! The host serializes the table to a TOML document and hands it over as a string, so no TOML or
//! serde type crosses the ABI and each plugin parses with its own serde. Use
//! `#[serde(deny_unknown_fields, rename_all = "kebab-case")]` on the options struct so that a
//! misspelt option is an error that names it.

use serde::de::DeserializeOwned;

use crate::error::StorageError;

/// Parse an options document into `T`. Errors are [`StorageError::InvalidConfig`] and name the
/// offending option, for example ``storage.options: unknown field `inline-treshold` ``.
pub fn parse_options<T: DeserializeOwned>(document: &str) -> Result<T, StorageError> {
    toml::from_str(document).map_err(|e| {
        // toml's message starts with a line/column report against the serialized document, which
        // is not the user's file; keep only the explanation and let the host add the file name.
        let msg = e.message().trim().to_string();
        match e.span().and_then(|span| key_at(document, span.start)) {
            Some(key) if !msg.contains(&format!("`{key}`")) => {
                StorageError::InvalidConfig(format!("storage.options.{key}: {msg}"))
            }
            _ => StorageError::InvalidConfig(format!("storage.options: {msg}")),
        }
    })
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
    fn unknown_option_is_named() {
        let err = parse_options::<Opts>("dir = \"/x\"\ninline-treshold = 3\n").unwrap_err();
        assert!(
            matches!(&err, StorageError::InvalidConfig(m) if m.contains("inline-treshold")),
            "{err}"
        );
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
