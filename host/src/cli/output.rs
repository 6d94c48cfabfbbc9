//! The machine contract of every command's `--json` output, written once.
//!
//! - One document per command on stdout, pretty-printed (`serde_json::to_string_pretty`, two
//!   spaces), ending with a newline, with a top-level `"version"` field ([`JSON_VERSION`]).
//! - Under `--json`, an error is the document `{"version", "error": {"kind", "message",
//!   "file"?, "line"?, "column"?, "key"?}}` on stdout, with a non-zero exit; the same error is
//!   also printed as one `error: ...` line on stderr for a person watching.
//!
//! Field names follow the README's contract: durations `*_ms` (integers), sizes `*_bytes`, the
//! checkpoint id `id`, timestamps `*_ms` (epoch) with an RFC 3339 string beside them.

use std::io::Write;

use cairn_host::config::ConfigError;
use serde::Serialize;

/// The version of the JSON contract; bumped when a field is renamed or removed.
pub const JSON_VERSION: u32 = 1;

/// Print `doc` as the command's JSON document: `version` first, pretty-printed, one newline.
///
/// `doc` must serialize to a JSON object.
pub fn print_json(out: &mut impl Write, doc: &impl Serialize) -> anyhow::Result<()> {
    let value = serde_json::to_value(doc)?;
    let serde_json::Value::Object(fields) = value else {
        anyhow::bail!("internal error: a --json document must be an object, got {value}");
    };
    let mut with_version = serde_json::Map::with_capacity(fields.len() + 1);
    with_version.insert("version".into(), JSON_VERSION.into());
    with_version.extend(fields.into_iter().filter(|(k, _)| k != "version"));
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Object(with_version))?
    )?;
    Ok(())
}

/// What went wrong, as the `"error"` object of the contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorJson {
    /// A stable, lower-case class of the error, for scripts to branch on: one of
    /// [`ERROR_KINDS`].
    pub kind: &'static str,
    /// The one-line message, as `error:` prints it on stderr (without the `error: ` prefix).
    pub message: String,
    /// The file the error is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based line in `file`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column in `line`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// The config key (such as `storage.options.dir`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A thing the command was asked about does not exist (a checkpoint id, `latest` of a job with
/// none): the `not_found` kind of the contract.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

/// The command line asks for something that cannot be (options that do not go together), found
/// after clap parsed it: the `usage` kind of the contract (with exit code 1, not clap's 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The kinds of [`ErrorJson::kind`], each with what it means (the README has the same table; a
/// test checks that it lists every kind).
pub const ERROR_KINDS: &[(&str, &str)] = &[
    (
        "usage",
        "the command line is wrong (exit code 2 when it cannot be parsed), or a run needs \
         --from or --fresh",
    ),
    (
        "config",
        "the config file or the storage options are invalid",
    ),
    ("plugin", "the storage plugin cannot be found or loaded"),
    (
        "not_found",
        "a checkpoint, savepoint, pointer or object does not exist",
    ),
    (
        "storage",
        "the storage plugin failed, or stored bytes are damaged",
    ),
    ("lease", "another process holds the job"),
    (
        "control",
        "the running job cannot be reached over its control socket, or refused",
    ),
    (
        "job",
        "the job cannot be built from its settings, or failed more often than allowed",
    ),
    (
        "io",
        "a local file or directory could not be read or written",
    ),
    ("internal", "anything else"),
];

impl ErrorJson {
    /// An error with only a kind and a message.
    pub fn new(kind: &'static str, message: String) -> Self {
        debug_assert!(
            ERROR_KINDS.iter().any(|(k, _)| *k == kind),
            "{kind} is not one of ERROR_KINDS"
        );
        Self {
            kind,
            message,
            file: None,
            line: None,
            column: None,
            key: None,
        }
    }

    /// Classify an error chain: the first typed error in the chain (outermost first) decides
    /// the kind; a config error anywhere also gives file, line, column and key.
    pub fn from_error(err: &anyhow::Error) -> Self {
        let message = format!("{err:#}");
        if let Some(c) = err.chain().find_map(|c| c.downcast_ref::<ConfigError>()) {
            return Self {
                kind: "config",
                message,
                file: Some(c.file.display().to_string()),
                line: c.line,
                column: c.column,
                key: c.key.clone(),
            };
        }
        let kind = err.chain().find_map(kind_of).unwrap_or("internal");
        Self::new(kind, message)
    }
}

/// The contract kind of one error of a chain, if it is a typed error that has one.
fn kind_of(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use cairn_host::{
        control::ControlError, copy::CopyError, lease::LeaseError, loader::LoadError,
        metadata::MetadataError, runtime::RunError,
    };
    use cairn_plugin_api::{ErrorKind, StorageError};
    let storage = |s: &StorageError| match s.kind() {
        ErrorKind::NotFound => "not_found",
        ErrorKind::InvalidConfig => "config",
        _ => "storage",
    };
    if let Some(s) = e.downcast_ref::<StorageError>() {
        return Some(storage(s));
    }
    if let Some(r) = e.downcast_ref::<RunError>() {
        return Some(match r {
            RunError::Plugin(_) => "plugin",
            RunError::Open { error, .. } => storage(error),
            RunError::Storage(s) => storage(s),
            RunError::Lease(_) => "lease",
            RunError::Restore(_) => "storage",
            RunError::Job(_) | RunError::Failed { .. } => "job",
            RunError::Lineage(_) => "usage",
        });
    }
    if e.is::<NotFound>() {
        Some("not_found")
    } else if e.is::<Usage>() {
        Some("usage")
    } else if e.is::<LoadError>() {
        Some("plugin")
    } else if e.is::<ControlError>() {
        Some("control")
    } else if e.is::<LeaseError>() {
        Some("lease")
    } else if e.is::<MetadataError>() || e.is::<CopyError>() {
        Some("storage")
    } else if e.is::<clap::Error>() {
        Some("usage")
    } else if e.is::<std::io::Error>() {
        Some("io")
    } else {
        None
    }
}

/// Print `err` under `--json`: the error document on stdout.
pub fn print_error_json(out: &mut impl Write, err: &ErrorJson) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct Doc<'a> {
        error: &'a ErrorJson,
    }
    print_json(out, &Doc { error: err })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_comes_first_and_the_document_is_pretty_with_one_newline() {
        let mut out = Vec::new();
        print_json(&mut out, &serde_json::json!({"id": 3, "version": 99})).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "{\n  \"version\": 1,\n  \"id\": 3\n}\n");
    }

    #[test]
    fn a_config_error_keeps_file_line_and_key() {
        let err = anyhow::Error::new(ConfigError {
            file: "c.toml".into(),
            line: Some(4),
            column: None,
            key: Some("storage.options.dirr".into()),
            message: "unknown option".into(),
        })
        .context("cannot start");
        let e = ErrorJson::from_error(&err);
        assert_eq!(e.kind, "config");
        assert_eq!(e.file.as_deref(), Some("c.toml"));
        assert_eq!(e.line, Some(4));
        assert_eq!(e.key.as_deref(), Some("storage.options.dirr"));
        assert!(e
            .message
            .starts_with("cannot start: config error at c.toml:4"));
        let mut out = Vec::new();
        print_error_json(&mut out, &e).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc["version"], 1);
        assert_eq!(doc["error"]["kind"], "config");
        assert!(doc["error"].get("column").is_none());
    }

    #[test]
    fn the_kind_is_that_of_the_first_typed_error_in_the_chain() {
        use cairn_plugin_api::StorageError;
        let kind = |e: anyhow::Error| ErrorJson::from_error(&e).kind;
        assert_eq!(kind(NotFound("no checkpoint 3".into()).into()), "not_found");
        assert_eq!(
            kind(Usage("--rate with --backpressure".into()).into()),
            "usage"
        );
        let missing = StorageError::NotFound("chk-3".into());
        assert_eq!(
            kind(anyhow::Error::new(missing).context("show")),
            "not_found"
        );
        assert_eq!(kind(StorageError::Corrupt("crc".into()).into()), "storage");
        assert_eq!(
            kind(StorageError::InvalidConfig("dir".into()).into()),
            "config"
        );
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        assert_eq!(kind(anyhow::Error::new(io).context("cannot write x")), "io");
        assert_eq!(kind(anyhow::anyhow!("something else")), "internal");
        let open = cairn_host::runtime::RunError::Open {
            plugin: "filesystem".into(),
            error: StorageError::InvalidConfig("dirr".into()),
        };
        assert_eq!(kind(open.into()), "config");
        let lineage = cairn_host::runtime::RunError::Lineage("two lineages".into());
        assert_eq!(kind(lineage.into()), "usage");
    }

    #[test]
    fn every_kind_is_documented_once() {
        let mut kinds: Vec<&str> = ERROR_KINDS.iter().map(|(k, _)| *k).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), ERROR_KINDS.len());
        let readme = include_str!("../../../README.md");
        for (kind, _) in ERROR_KINDS {
            assert!(
                readme.contains(&format!("| `{kind}` |")),
                "README lacks {kind}"
            );
        }
    }

    #[test]
    fn a_document_that_is_not_an_object_is_refused() {
        let err = print_json(&mut Vec::new(), &3).unwrap_err();
        assert!(err.to_string().contains("must be an object"));
    }
}
