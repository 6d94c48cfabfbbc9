//! The one error type every backend returns, with the kinds a caller can act on.
//!
//! Each plugin keeps its own private error enum with rich context and maps it into
//! [`StorageError`] at its edge. The kind survives the ABI as a number (see [`ErrorKind::code`]),
//! so `NotFound` stays `NotFound` on the host side and never degrades to a string.

use std::fmt;

/// Shorthand for results of storage calls.
pub type StorageResult<T> = Result<T, StorageError>;

/// An error from a storage backend. Every variant carries a message that names the path, key,
/// handle or option concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The object, checkpoint or pointer does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The object exists already, for example a second metadata commit to one location.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// Stored bytes do not match their checksum, or metadata cannot be decoded.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// An option or argument is invalid; the message names it and says what is allowed.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The backend does not support this operation.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A size limit of the backend was exceeded.
    #[error("capacity exceeded: {0}")]
    CapacityExceeded(String),
    /// An I/O error that is not one of the kinds above.
    #[error("i/o error: {0}")]
    Io(String),
    /// The call did not finish before its deadline.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The plugin panicked; the message is the panic message.
    #[error("plugin panicked: {0}")]
    Panicked(String),
    /// Anything else. Prefer a specific kind.
    #[error("{0}")]
    Other(String),
}

/// The kind of a [`StorageError`], without its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`StorageError::NotFound`].
    NotFound,
    /// See [`StorageError::AlreadyExists`].
    AlreadyExists,
    /// See [`StorageError::Corrupt`].
    Corrupt,
    /// See [`StorageError::InvalidConfig`].
    InvalidConfig,
    /// See [`StorageError::Unsupported`].
    Unsupported,
    /// See [`StorageError::CapacityExceeded`].
    CapacityExceeded,
    /// See [`StorageError::Io`].
    Io,
    /// See [`StorageError::Timeout`].
    Timeout,
    /// See [`StorageError::Panicked`].
    Panicked,
    /// See [`StorageError::Other`].
    Other,
}

impl ErrorKind {
    /// The number that carries this kind across the ABI. These numbers are part of the ABI:
    /// never change one; new kinds take new numbers.
    pub const fn code(self) -> u32 {
        match self {
            ErrorKind::NotFound => 1,
            ErrorKind::AlreadyExists => 2,
            ErrorKind::Corrupt => 3,
            ErrorKind::InvalidConfig => 4,
            ErrorKind::Unsupported => 5,
            ErrorKind::CapacityExceeded => 6,
            ErrorKind::Io => 7,
            ErrorKind::Timeout => 8,
            ErrorKind::Panicked => 9,
            ErrorKind::Other => 0,
        }
    }

    /// The kind for an ABI number; unknown numbers (from a newer plugin) become `Other`.
    pub const fn from_code(code: u32) -> Self {
        match code {
            1 => ErrorKind::NotFound,
            2 => ErrorKind::AlreadyExists,
            3 => ErrorKind::Corrupt,
            4 => ErrorKind::InvalidConfig,
            5 => ErrorKind::Unsupported,
            6 => ErrorKind::CapacityExceeded,
            7 => ErrorKind::Io,
            8 => ErrorKind::Timeout,
            9 => ErrorKind::Panicked,
            _ => ErrorKind::Other,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::AlreadyExists => "already-exists",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::InvalidConfig => "invalid-config",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::CapacityExceeded => "capacity-exceeded",
            ErrorKind::Io => "io",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Panicked => "panicked",
            ErrorKind::Other => "other",
        };
        f.write_str(s)
    }
}

impl StorageError {
    /// Build an error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let m = message.into();
        match kind {
            ErrorKind::NotFound => StorageError::NotFound(m),
            ErrorKind::AlreadyExists => StorageError::AlreadyExists(m),
            ErrorKind::Corrupt => StorageError::Corrupt(m),
            ErrorKind::InvalidConfig => StorageError::InvalidConfig(m),
            ErrorKind::Unsupported => StorageError::Unsupported(m),
            ErrorKind::CapacityExceeded => StorageError::CapacityExceeded(m),
            ErrorKind::Io => StorageError::Io(m),
            ErrorKind::Timeout => StorageError::Timeout(m),
            ErrorKind::Panicked => StorageError::Panicked(m),
            ErrorKind::Other => StorageError::Other(m),
        }
    }

    /// Map an `std::io::Error` met while working on `what` (a path, handle or pointer), keeping
    /// the kinds that mean something: a missing file is `NotFound`, an existing one
    /// `AlreadyExists`, everything else `Io`.
    pub fn io(what: impl fmt::Display, err: &std::io::Error) -> Self {
        let m = format!("{what}: {err}");
        match err.kind() {
            std::io::ErrorKind::NotFound => StorageError::NotFound(m),
            std::io::ErrorKind::AlreadyExists => StorageError::AlreadyExists(m),
            _ => StorageError::Io(m),
        }
    }

    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StorageError::NotFound(_) => ErrorKind::NotFound,
            StorageError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            StorageError::Corrupt(_) => ErrorKind::Corrupt,
            StorageError::InvalidConfig(_) => ErrorKind::InvalidConfig,
            StorageError::Unsupported(_) => ErrorKind::Unsupported,
            StorageError::CapacityExceeded(_) => ErrorKind::CapacityExceeded,
            StorageError::Io(_) => ErrorKind::Io,
            StorageError::Timeout(_) => ErrorKind::Timeout,
            StorageError::Panicked(_) => ErrorKind::Panicked,
            StorageError::Other(_) => ErrorKind::Other,
        }
    }

    /// The message, without the kind prefix that `Display` adds.
    pub fn message(&self) -> &str {
        match self {
            StorageError::NotFound(m)
            | StorageError::AlreadyExists(m)
            | StorageError::Corrupt(m)
            | StorageError::InvalidConfig(m)
            | StorageError::Unsupported(m)
            | StorageError::CapacityExceeded(m)
            | StorageError::Io(m)
            | StorageError::Timeout(m)
            | StorageError::Panicked(m)
            | StorageError::Other(m) => m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_code() {
        let kinds = [
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::Corrupt,
            ErrorKind::InvalidConfig,
            ErrorKind::Unsupported,
            ErrorKind::CapacityExceeded,
            ErrorKind::Io,
            ErrorKind::Timeout,
            ErrorKind::Panicked,
            ErrorKind::Other,
        ];
        for kind in kinds {
            assert_eq!(ErrorKind::from_code(kind.code()), kind);
            assert_eq!(StorageError::new(kind, "x").kind(), kind);
        }
        assert_eq!(ErrorKind::from_code(4242), ErrorKind::Other);
    }

    #[test]
    fn io_errors_keep_their_meaning() {
        let e = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(
            matches!(StorageError::io("/x", &e), StorageError::NotFound(m) if m.starts_with("/x"))
        );
    }
}
