//! `[lease]`: how the one live writer of a job is kept (see ARCHITECTURE.md, "The job lease").
//!
//! `ttl` is how long a holder that stopped renewing (it died, hangs, or lost the storage) keeps
//! the job before another `cairn run` may take it over; the holder renews every quarter of it
//! and stops committing after three quarters without a renewal. `local-dir` is where the lock
//! files go for a storage plugin without lease support (built against plugin API 1.0).

use std::{path::PathBuf, time::Duration};

use super::{doc::Doc, ConfigError};

/// The shortest `ttl`: renewals come every quarter of it, so shorter would be a storage request
/// every few milliseconds.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);

/// `[lease]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// `ttl`: how long a lease that is not renewed keeps the job. Default 30 s; at least 1 s.
    pub ttl: Duration,
    /// `local-dir`: where the lock files of jobs on a storage without lease support go,
    /// resolved relative to the config file. `None`: the default (see [`LeaseConfig::local_dir`]).
    pub local_dir: Option<PathBuf>,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            ttl: Duration::from_secs(30),
            local_dir: None,
        }
    }
}

impl LeaseConfig {
    /// The directory of local lock files: `local-dir`, else `$XDG_RUNTIME_DIR/cairn/leases`,
    /// else `cairn-<uid>/leases` in the temporary directory.
    pub fn local_dir(&self) -> PathBuf {
        if let Some(dir) = &self.local_dir {
            return dir.clone();
        }
        match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            Some(run) => PathBuf::from(run).join("cairn").join("leases"),
            None => std::env::temp_dir()
                .join(format!("cairn-{}", rustix::process::getuid().as_raw()))
                .join("leases"),
        }
    }
}

/// `[lease]` as written.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawLease {
    ttl: Option<super::doc::Field>,
    local_dir: Option<super::doc::Field>,
}

impl RawLease {
    pub(super) fn validate(self, doc: &Doc<'_>) -> Result<LeaseConfig, ConfigError> {
        const T: &str = "lease";
        let d = LeaseConfig::default();
        let ttl = doc
            .read(T, "ttl", self.ttl.as_ref(), |v| v.duration(MIN_LEASE_TTL))?
            .unwrap_or(d.ttl);
        let local_dir = doc.read(T, "local-dir", self.local_dir.as_ref(), |v| {
            let dir = v.string("a directory path")?;
            if dir.is_empty() {
                return Err(v.fail("is empty; give a directory path, or leave the key out"));
            }
            Ok(doc.resolve(PathBuf::from(dir)))
        })?;
        Ok(LeaseConfig { ttl, local_dir })
    }
}
