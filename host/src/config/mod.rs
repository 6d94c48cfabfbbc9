//! The config file (TOML): where plugins are found and which one stores checkpoints, how
//! checkpoints are taken (Flink's `CheckpointConfig`), where savepoints go, which job runs, how
//! it restarts, and how its one live writer is kept (`[lease]`).
//!
//! Every error names the file, the line and the key, and says what is allowed, for example
//! `config error at cairn.toml:7: checkpointing.interval = "5ms" is below the minimum of 10ms`.
//! Unknown keys are errors, so a misspelt key never silently falls back to a default. Every
//! table is optional; a missing key takes Flink's default, and a missing file (where a command
//! allows one) gives [`Config::default`], the "embedded default" that checkpoints into
//! `./checkpoints` with the filesystem plugin.
//!
//! Relative paths in the file are taken relative to the directory that holds the file, so a
//! config means the same thing whatever directory `cairn` is started from. The one exception is
//! `[storage.options]`, which belongs to the plugin and is handed over as written.
//!
//! Flink's own keys (`execution.checkpointing.*`, `state.checkpoints.dir`, ...) are accepted as
//! aliases of cairn's (`flink`), so a Flink user's settings carry over.
//!
//! Submodules: `doc` reads values out of the text and locates them for errors;
//! `storage`, `checkpointing`, `job`, `metrics` and `lease` hold one or two tables each;
//! `defaults` writes the commented default file that `cairn config defaults` prints.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

mod check;
mod checkpointing;
mod defaults;
mod doc;
mod flink;
mod job;
mod lease;
mod metrics;
mod storage;
#[cfg(test)]
mod tests;

pub use check::{check_storage, warnings, CheckError, StorageCheck};
pub use checkpointing::{
    CheckpointingConfig, CheckpointingMode, ExternalizedRetention, DEFAULT_MAX_IN_FLIGHT_DATA,
    FORCE_UNALIGNED_NOTE, MIN_CHECKPOINT_TIME,
};
pub use defaults::defaults_toml;
pub use doc::{format_duration, format_size, terminal_safe, MAX_DURATION};
pub use job::{
    is_valid_job_id, JobConfig, JobKind, RestartConfig, MAX_JOB_ID_LEN, MAX_PARALLELISM,
    MAX_STATE_BYTES_PER_KEY, MIN_STATE_BYTES_PER_KEY,
};
pub use lease::{LeaseConfig, MIN_LEASE_TTL};
pub use metrics::{MetricsConfig, FLINK_PROMETHEUS_PORT};
pub use storage::{
    PluginRef, PluginsConfig, SavepointsConfig, StorageConfig, DEFAULT_CHECKPOINT_DIR,
    DEFAULT_PLUGIN,
};

/// A config error: where, and what is wrong.
///
/// Its `Display` is one line, `config error at FILE:LINE[:COLUMN]: MESSAGE`, with every
/// character that could break or disguise a terminal line (control characters, bidirectional
/// controls, zero-width characters, line separators) escaped as `\u{...}`: a message echoes
/// what the file says, and the file is untrusted input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column (in characters), when known: for bytes that are not UTF-8.
    pub column: Option<usize>,
    /// The full key, such as `storage.sha256`, when known.
    pub key: Option<String>,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = terminal_safe(&self.file.display().to_string()).into_owned();
        let message = terminal_safe(&self.message);
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(f, "config error at {file}:{line}:{column}: {message}")
            }
            (Some(line), None) => write!(f, "config error at {file}:{line}: {message}"),
            _ => write!(f, "config error in {file}: {message}"),
        }
    }
}

/// The parsed and validated config file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// Where the file was read from (`None` for built-in defaults).
    pub file: Option<PathBuf>,
    /// `[plugins]`.
    pub plugins: PluginsConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[checkpointing]`.
    pub checkpointing: CheckpointingConfig,
    /// `[savepoints]`.
    pub savepoints: SavepointsConfig,
    /// `[job]`.
    pub job: JobConfig,
    /// `[restart]`.
    pub restart: RestartConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[lease]`.
    pub lease: LeaseConfig,
}

/// The file as written: the tables, each checked by its own module.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    #[serde(default)]
    plugins: storage::RawPlugins,
    storage: Option<storage::RawStorage>,
    #[serde(default)]
    checkpointing: checkpointing::RawCheckpointing,
    #[serde(default)]
    savepoints: storage::RawSavepoints,
    #[serde(default)]
    job: job::RawJob,
    #[serde(default)]
    restart: job::RawRestart,
    #[serde(default)]
    metrics: metrics::RawMetrics,
    #[serde(default)]
    lease: lease::RawLease,
    /// Flink's `execution.checkpointing.*` keys.
    #[serde(default)]
    execution: flink::RawExecution,
    /// Flink's `state.checkpoints.*` and `state.savepoints.*` keys.
    #[serde(default)]
    state: flink::RawState,
}

impl Config {
    /// Read and validate the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            key: None,
            message: format!("cannot read the file: {e}"),
        })?;
        Config::parse_bytes(&bytes, path)
    }

    /// Parse and validate the bytes of a file, reporting errors against `file`. Bytes that are
    /// not UTF-8 are an error at the line and column of the first bad byte.
    pub fn parse_bytes(bytes: &[u8], file: &Path) -> Result<Config, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|e| doc::not_utf8(bytes, &e, file))?;
        Config::parse(text, file)
    }

    /// Read `path` if it exists; built-in defaults if it does not.
    pub fn load_or_default(path: &Path) -> Result<Config, ConfigError> {
        if path.exists() {
            Config::load(path)
        } else {
            Ok(Config::default())
        }
    }

    /// Parse and validate `text`, reporting errors against `file`.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let doc = doc::Doc { text, file };
        let raw: RawConfig = toml::from_str(text).map_err(|e| doc.serde_error(&e))?;
        let flink = &raw.execution.checkpointing;
        let storage_written = raw.storage.is_some();
        let storage = match raw.storage {
            None => StorageConfig::default(),
            Some(s) => s.validate(&doc)?,
        };
        let checkpoint_dir = flink::one_of(
            &doc,
            &[
                ("state.checkpoints.dir", raw.state.checkpoints.dir.as_ref()),
                ("execution.checkpointing.dir", flink.dir.as_ref()),
            ],
        )?;
        Ok(Config {
            file: Some(file.to_path_buf()),
            plugins: raw.plugins.validate(&doc),
            storage: flink::apply_checkpoint_dir(&doc, storage, storage_written, checkpoint_dir)?,
            checkpointing: raw.checkpointing.validate(
                flink,
                raw.state.checkpoints.num_retained.as_ref(),
                &doc,
            )?,
            savepoints: raw.savepoints.validate(
                &[
                    ("state.savepoints.dir", raw.state.savepoints.dir.as_ref()),
                    (
                        "execution.checkpointing.savepoint-dir",
                        flink.savepoint_dir.as_ref(),
                    ),
                ],
                &doc,
            )?,
            job: raw.job.validate(&doc)?,
            restart: raw.restart.validate(&doc)?,
            metrics: raw.metrics.validate(&doc)?,
            lease: raw.lease.validate(&doc)?,
        })
    }
}
