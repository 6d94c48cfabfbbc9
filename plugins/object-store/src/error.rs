//! The plugin's private error type, and its mapping into the shared [`StorageError`].
//!
//! Inside the crate every fallible function returns [`ObjError`], whose variants carry the URL,
//! key, locator, pointer or option concerned. The trait implementations convert it at the edge,
//! keeping the kinds a caller acts on: a missing object stays `NotFound`, a lost conditional
//! create `AlreadyExists`, a checksum mismatch `Corrupt`, a refused input `InvalidConfig`.
//! Errors of the `object_store` crate are classified by their variant, never by their text.

use std::fmt;

use cairn_plugin_api::StorageError;

/// Shorthand for results inside the crate.
pub(crate) type ObjResult<T> = Result<T, ObjError>;

/// Everything that can go wrong in the object-store backend.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ObjError {
    /// A call to the object store failed; `context` says what was being done to which object.
    #[error("{context}: {source}")]
    Store {
        context: String,
        source: object_store::Error,
    },

    /// A `[storage.options]` entry is missing or invalid. `detail` continues the sentence after
    /// the option's name, for example `= "2MiB" is above the maximum of 1MiB`.
    #[error("storage.options.{key} {detail}")]
    InvalidOption { key: String, detail: String },

    /// A job id that is not a safe key component.
    #[error("job id {} is invalid: {why}", Shown(id))]
    InvalidJobId { id: String, why: &'static str },

    /// A stored handle's locator that this plugin did not write (or that was tampered with).
    #[error("handle locator {} is invalid: {why}", Shown(locator))]
    InvalidLocator { locator: String, why: String },

    /// A pointer that is not a checkpoint or savepoint location, or one this plugin refuses to
    /// act on.
    #[error("pointer {} is invalid: {why}", Shown(pointer))]
    InvalidPointer { pointer: String, why: String },

    /// A savepoint was asked for without a target and without `savepoint-url`.
    #[error(
        "no savepoint target: pass a target URL or directory, or set storage.options.savepoint-url"
    )]
    NoSavepointTarget,

    /// A savepoint target that cannot be used.
    #[error("savepoint target {} is invalid: {why}", Shown(target))]
    InvalidSavepointTarget { target: String, why: String },

    /// Nothing is stored at a pointer.
    #[error("{pointer}: no committed checkpoint here (no _metadata)")]
    NoCheckpoint { pointer: String },

    /// The location's `_metadata` exists already.
    #[error("{pointer}: checkpoint {id} was committed already; a checkpoint commits once")]
    AlreadyCommitted { pointer: String, id: u64 },

    /// `dispose_on_failure` on a location whose commit completed.
    #[error(
        "{pointer}: the location is committed; dispose_on_failure only removes a failed location \
         (dispose a completed one by its pointer)"
    )]
    DisposeCommitted { pointer: String },

    /// The bytes behind a stored handle, or a metadata object, do not match their checksum.
    #[error("handle '{locator}': {why}")]
    Corrupt { locator: String, why: String },

    /// A metadata object that fails its framing or checksum.
    #[error("{key}: {why}")]
    CorruptMetadata { key: String, why: String },

    /// A stream was used after `close_and_get_handle`.
    #[error("stream to {key} is closed")]
    Closed { key: String },

    /// A stream whose earlier write failed; what was uploaded is unknown, so it gives no handle.
    #[error("stream to {key}: an earlier write failed ({first}); it gives no handle")]
    Broken { key: String, first: String },

    /// An error from code that speaks [`StorageError`] already (option parsing).
    #[error("{0}")]
    Api(StorageError),

    /// The plugin's own async runtime could not be started.
    #[error("cannot start the object-store plugin's runtime: {0}")]
    Runtime(String),
}

impl ObjError {
    /// An object-store error met while doing `context` (which names the object).
    pub(crate) fn store(context: impl Into<String>, source: object_store::Error) -> Self {
        ObjError::Store {
            context: context.into(),
            source,
        }
    }

    /// An invalid option; `key` without the `storage.options.` prefix.
    pub(crate) fn option(key: &str, detail: impl Into<String>) -> Self {
        ObjError::InvalidOption {
            key: key.to_string(),
            detail: detail.into(),
        }
    }
}

impl From<StorageError> for ObjError {
    fn from(e: StorageError) -> Self {
        ObjError::Api(e)
    }
}

impl From<ObjError> for StorageError {
    fn from(e: ObjError) -> Self {
        let message = e.to_string();
        match e {
            ObjError::Store { source, .. } => match source {
                object_store::Error::NotFound { .. } => StorageError::NotFound(message),
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. } => StorageError::AlreadyExists(message),
                object_store::Error::NotSupported { .. } | object_store::Error::NotImplemented => {
                    StorageError::Unsupported(message)
                }
                object_store::Error::InvalidPath { .. }
                | object_store::Error::UnknownConfigurationKey { .. } => {
                    StorageError::InvalidConfig(message)
                }
                _ => StorageError::Io(message),
            },
            ObjError::InvalidOption { .. }
            | ObjError::InvalidJobId { .. }
            | ObjError::InvalidLocator { .. }
            | ObjError::InvalidPointer { .. }
            | ObjError::NoSavepointTarget
            | ObjError::InvalidSavepointTarget { .. } => StorageError::InvalidConfig(message),
            ObjError::NoCheckpoint { .. } => StorageError::NotFound(message),
            ObjError::AlreadyCommitted { .. } | ObjError::DisposeCommitted { .. } => {
                StorageError::AlreadyExists(message)
            }
            ObjError::Corrupt { .. } | ObjError::CorruptMetadata { .. } => {
                StorageError::Corrupt(message)
            }
            ObjError::Broken { .. } => StorageError::Io(message),
            ObjError::Closed { .. } | ObjError::Runtime(_) => StorageError::Other(message),
            ObjError::Api(inner) => inner,
        }
    }
}

/// Shows untrusted text in a message: quoted and escaped (so a NUL or a newline is visible), and
/// cut short if it is long.
pub(crate) struct Shown<'a>(pub(crate) &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 160;
        match self.0.char_indices().nth(MAX) {
            Some((cut, _)) => write!(f, "{:?}... ({} bytes)", &self.0[..cut], self.0.len()),
            None => write!(f, "{:?}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_survive_the_mapping() {
        let nf = ObjError::store(
            "reading x",
            object_store::Error::NotFound {
                path: "x".into(),
                source: "gone".into(),
            },
        );
        assert!(
            matches!(StorageError::from(nf), StorageError::NotFound(m) if m.starts_with("reading x"))
        );
        let lost = ObjError::store(
            "committing",
            object_store::Error::AlreadyExists {
                path: "x".into(),
                source: "exists".into(),
            },
        );
        assert!(matches!(
            StorageError::from(lost),
            StorageError::AlreadyExists(_)
        ));
        let c = ObjError::Corrupt {
            locator: "j/shared/x".into(),
            why: "checksum mismatch".into(),
        };
        assert!(
            matches!(StorageError::from(c), StorageError::Corrupt(m) if m == "handle 'j/shared/x': checksum mismatch")
        );
        let o = ObjError::option("part-size", "= 1 is below the minimum of 5MiB");
        assert!(
            matches!(StorageError::from(o), StorageError::InvalidConfig(m) if m == "storage.options.part-size = 1 is below the minimum of 5MiB")
        );
    }

    #[test]
    fn shown_escapes_and_truncates() {
        assert_eq!(Shown("a\0b").to_string(), "\"a\\0b\"");
        let long = "x".repeat(1000);
        let s = Shown(&long).to_string();
        assert!(s.len() < 200 && s.ends_with("(1000 bytes)"), "{s}");
    }
}
