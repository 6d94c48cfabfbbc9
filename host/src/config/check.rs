//! What `cairn config check` adds to parsing, so that "valid" means "`run` will start": the
//! plugin `[storage]` names is found and loaded (its pin checked), and `[storage.options]` is
//! checked by the plugin's own rules through its validate-only call (plugin API 1.1), which
//! creates nothing: no folder, no bucket. A plugin built against API 1.0 has no such call;
//! its options can then only be checked by opening the storage, which `check` never does, and
//! the report says so rather than calling them checked.
//!
//! The warnings are about files that are valid but probably not what was meant, such as
//! checkpointing being off.

use std::path::{Path, PathBuf};

use cairn_plugin_api::{ApiVersion, ErrorKind, StorageError};
use serde::Serialize;

use super::{doc, Config, ConfigError};
use crate::loader::{LoadError, Plugin};

/// What checking the storage of a config found.
#[derive(Debug, Clone, Serialize)]
pub struct StorageCheck {
    /// The plugin's manifest name.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// The plugin API it was built against.
    pub api_version: ApiVersion,
    /// The library file it was loaded from.
    pub path: PathBuf,
    /// Whether the plugin checked `[storage.options]`; `false` for a plugin without the
    /// validate-only call (built against API 1.0, or not implementing it), whose options are
    /// checked only when `run` opens the storage.
    pub options_checked: bool,
}

/// Why the storage of a config would not start.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The plugin was not found, or refused at load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The plugin refused `[storage.options]`.
    #[error(transparent)]
    Options(ConfigError),
}

/// Load the plugin of `config` and have it check `[storage.options]`, creating nothing.
pub fn check_storage(config: &Config) -> Result<StorageCheck, CheckError> {
    let plugin = crate::runtime::load_plugin(config)?;
    let options_checked = match plugin.validate(&config.storage.options_document()) {
        Ok(()) => true,
        // API 1.0, or a later plugin that does not implement the call.
        Err(StorageError::Unsupported(_)) => false,
        Err(e) => return Err(CheckError::Options(option_error(config, &plugin, &e))),
    };
    let m = plugin.manifest();
    Ok(StorageCheck {
        plugin: m.name.clone(),
        version: m.version.clone(),
        api_version: m.api_version,
        path: plugin.path().to_path_buf(),
        options_checked,
    })
}

/// The plugin's refusal as a config error: the file, and the option's key and line when the
/// message names one (`storage.options.dirr is not ...`).
fn option_error(config: &Config, plugin: &Plugin, e: &StorageError) -> ConfigError {
    let file = config
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from("(built-in defaults)"));
    let message = e.message().to_string();
    // `storage.options.dirr is ...`, or serde's `storage.options: unknown field `dirr``.
    let unknown = message
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(name, _)| format!("storage.options.{name}"));
    let key = unknown.or_else(|| {
        message
            .split([' ', ':'])
            .next()
            .filter(|k| k.starts_with("storage.options"))
            .map(str::to_string)
    });
    let line = key
        .as_deref()
        .and_then(|k| line_of(config.file.as_deref(), k));
    let message = match e.kind() {
        ErrorKind::InvalidConfig => message,
        _ => format!(
            "storage plugin '{}' refused [storage.options]: {e}",
            plugin.manifest().name
        ),
    };
    ConfigError {
        file,
        line,
        column: None,
        key: key.or_else(|| Some("storage.options".to_string())),
        message: doc::terminal_safe(&message).into_owned(),
    }
}

/// The line of `key` in `file`, read again (it was just parsed).
fn line_of(file: Option<&Path>, key: &str) -> Option<usize> {
    let text = std::fs::read_to_string(file?).ok()?;
    doc::line_of_key(&text, key)
}

/// What is valid in `config` but probably not meant, one line each.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if !config.checkpointing.is_enabled() {
        out.push(match &config.file {
            None => "checkpointing is off: there is no config file, so no checkpoint is taken; \
                     write one with checkpointing.interval (cairn config defaults prints one)"
                .to_string(),
            Some(file) => format!(
                "checkpointing is off: {} sets no checkpointing.interval (or Flink's \
                 execution.checkpointing.interval), so no checkpoint is taken",
                file.display()
            ),
        });
    }
    out
}
