//! The plugin's private error type, and its mapping into the shared [`StorageError`].
//!
//! Inside the crate every fallible function returns [`FsError`], whose variants carry the path,
//! locator, pointer or option concerned. The trait implementations convert it with `?`/`into()`
//! at the edge. The conversion keeps the kinds a caller acts on: a missing file stays
//! `NotFound`, an existing one `AlreadyExists`, a checksum mismatch `Corrupt`, a refused input
//! `InvalidConfig`. Only the "stream is closed" misuse becomes `Other`, because no kind fits it.

use std::{fmt, io, path::PathBuf};

use cairn_plugin_api::StorageError;

/// Shorthand for results inside the crate.
pub(crate) type FsResult<T> = Result<T, FsError>;

/// Everything that can go wrong in the filesystem backend.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FsError {
    /// An I/O call failed; `context` says what was being done to which path.
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },

    /// An fsync failed. This is fatal and never retried: after a failed fsync the kernel may
    /// have dropped the dirty pages, so a retry could report success for bytes not on disk.
    #[error("fsync of {} failed (not retried): {source}", path.display())]
    Fsync { path: PathBuf, source: io::Error },

    /// A `[storage.options]` entry is missing or invalid. `detail` continues the sentence after
    /// the option's name, for example `= "2MiB" is above the maximum of 1MiB`.
    #[error("storage.options.{key} {detail}")]
    InvalidOption { key: &'static str, detail: String },

    /// A job id that is not a safe directory name.
    #[error("job id {} is invalid: {why}", Shown(id))]
    InvalidJobId { id: String, why: &'static str },

    /// A stored handle's locator that this plugin did not write (or that was tampered with).
    #[error("handle locator {} is invalid: {why}", Shown(locator))]
    InvalidLocator { locator: String, why: String },

    /// A pointer that is not a checkpoint or savepoint path, or one this plugin refuses to act on.
    #[error("pointer {} is invalid: {why}", Shown(pointer))]
    InvalidPointer { pointer: String, why: String },

    /// A savepoint was asked for without a target and without `savepoint-dir`.
    #[error("no savepoint target: pass a target directory or set storage.options.savepoint-dir")]
    NoSavepointTarget,

    /// A savepoint target directory that cannot be used.
    #[error("savepoint target {} is invalid: {why}", Shown(target))]
    InvalidSavepointTarget { target: String, why: String },

    /// The location's `_metadata` exists already.
    #[error("{}: checkpoint {id} was committed already; a checkpoint commits once", path.display())]
    AlreadyCommitted { path: PathBuf, id: u64 },

    /// `dispose_on_failure` on a location whose commit completed.
    #[error(
        "{}: the location is committed; dispose_on_failure only removes a failed location \
         (dispose a completed one by its pointer)",
        path.display()
    )]
    DisposeCommitted { path: PathBuf },

    /// A location directory holds something this plugin did not write, so it refuses to delete it.
    #[error(
        "refusing to remove {}: it holds '{entry}', which this plugin did not write \
         (nothing was removed)",
        dir.display()
    )]
    ForeignEntry { dir: PathBuf, entry: String },

    /// The bytes behind a stored handle do not match the handle.
    #[error("handle '{locator}': {why}")]
    Corrupt { locator: String, why: String },

    /// A stream was used after `close_and_get_handle`.
    #[error("{}: stream is closed", path.display())]
    Closed { path: PathBuf },

    /// A stream whose earlier write failed; its bytes on disk are unknown, so it gives no handle.
    #[error("{}: an earlier write to this stream failed ({first}); it gives no handle", path.display())]
    Broken { path: PathBuf, first: String },

    /// An error from code that speaks [`StorageError`] already (the `metafile` module).
    #[error("{0}")]
    Storage(StorageError),
}

impl FsError {
    /// An I/O error met while doing `context` (which names the path).
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        FsError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<StorageError> for FsError {
    fn from(e: StorageError) -> Self {
        FsError::Storage(e)
    }
}

impl From<FsError> for StorageError {
    fn from(e: FsError) -> Self {
        let message = e.to_string();
        match e {
            FsError::Io { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => StorageError::NotFound(message),
                io::ErrorKind::AlreadyExists => StorageError::AlreadyExists(message),
                _ => StorageError::Io(message),
            },
            FsError::Fsync { .. } | FsError::Broken { .. } => StorageError::Io(message),
            FsError::InvalidOption { .. }
            | FsError::InvalidJobId { .. }
            | FsError::InvalidLocator { .. }
            | FsError::InvalidPointer { .. }
            | FsError::NoSavepointTarget
            | FsError::InvalidSavepointTarget { .. }
            | FsError::ForeignEntry { .. } => StorageError::InvalidConfig(message),
            FsError::AlreadyCommitted { .. } | FsError::DisposeCommitted { .. } => {
                StorageError::AlreadyExists(message)
            }
            FsError::Corrupt { .. } => StorageError::Corrupt(message),
            FsError::Closed { .. } => StorageError::Other(message),
            FsError::Storage(inner) => inner,
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
        let nf = FsError::io("opening /x", io::Error::from(io::ErrorKind::NotFound));
        assert!(
            matches!(StorageError::from(nf), StorageError::NotFound(m) if m.starts_with("opening /x"))
        );
        let ae = FsError::io("creating /x", io::Error::from(io::ErrorKind::AlreadyExists));
        assert!(matches!(
            StorageError::from(ae),
            StorageError::AlreadyExists(_)
        ));
        let c = FsError::Corrupt {
            locator: "j/shared/x".into(),
            why: "checksum mismatch".into(),
        };
        assert!(
            matches!(StorageError::from(c), StorageError::Corrupt(m) if m == "handle 'j/shared/x': checksum mismatch")
        );
        let inner = StorageError::NotFound("y".into());
        assert_eq!(StorageError::from(FsError::from(inner.clone())), inner);
    }

    #[test]
    fn shown_escapes_and_truncates() {
        assert_eq!(Shown("a\0b").to_string(), "\"a\\0b\"");
        let long = "x".repeat(1000);
        let s = Shown(&long).to_string();
        assert!(s.len() < 200 && s.ends_with("(1000 bytes)"), "{s}");
    }
}
