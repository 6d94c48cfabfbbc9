//! `[plugins]`, `[storage]` and `[savepoints]`: where plugin libraries are found, which one
//! stores checkpoints and with what options, and where savepoints go.
//!
//! `[storage.options]` is not checked here: it belongs to the plugin, which parses it and names
//! any option it rejects. Its values are handed over as written, so a relative `dir` is taken
//! from the current directory, like any path a plugin opens.

use std::path::PathBuf;

use serde::Deserialize;

use super::{
    doc::{Doc, Field},
    ConfigError,
};
use crate::loader::SearchPath;

/// `[plugins]`: where plugin libraries are looked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginsConfig {
    /// `search-path`: directories, in order. `None` means the default (`./plugins`, then the
    /// directory of the `cairn` executable).
    pub search_path: Option<Vec<PathBuf>>,
}

impl PluginsConfig {
    /// The search path to use.
    pub fn search_path(&self) -> SearchPath {
        match &self.search_path {
            Some(dirs) => SearchPath::new(dirs.clone()),
            None => SearchPath::default_dirs(),
        }
    }
}

/// Which plugin provides storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginRef {
    /// By manifest name, found in the search path.
    Name(String),
    /// By file path.
    Path(PathBuf),
}

/// The plugin used when `[storage]` does not name one.
pub const DEFAULT_PLUGIN: &str = "filesystem";

/// The checkpoint directory of the embedded default storage (no `[storage]` table): a folder
/// in the current directory.
pub const DEFAULT_CHECKPOINT_DIR: &str = "checkpoints";

/// `[storage]`: the plugin, its pin and its options.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    /// `plugin = "NAME"` or `path = "FILE"`.
    pub plugin: PluginRef,
    /// `sha256`: the plugin file's expected digest, lower-case hex.
    pub sha256: Option<String>,
    /// `[storage.options]`, handed to the plugin.
    pub options: toml::Table,
}

impl Default for StorageConfig {
    /// The embedded default: the filesystem plugin, checkpointing into `./checkpoints`.
    fn default() -> Self {
        let mut options = toml::Table::new();
        options.insert(
            "dir".to_string(),
            toml::Value::String(DEFAULT_CHECKPOINT_DIR.to_string()),
        );
        Self {
            plugin: PluginRef::Name(DEFAULT_PLUGIN.to_string()),
            sha256: None,
            options,
        }
    }
}

impl StorageConfig {
    /// The options as the TOML document the plugin parses.
    pub fn options_document(&self) -> String {
        toml::to_string(&self.options).unwrap_or_default()
    }
}

/// `[savepoints]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavepointsConfig {
    /// `dir`: the default savepoint target, resolved relative to the config file. `None`: a
    /// savepoint needs an explicit target (or the plugin's own `savepoint-dir` option).
    pub dir: Option<PathBuf>,
    /// `on-sigterm`: on SIGTERM, stop the job with a savepoint. Default false.
    pub on_sigterm: bool,
}

impl SavepointsConfig {
    /// `dir` as the target handed to the plugin: absolute (a relative one is taken from the
    /// current directory, as when it was written), since plugins refuse to *look up* relative
    /// places.
    pub fn target(&self) -> Option<String> {
        self.dir.as_ref().map(|d| {
            std::path::absolute(d)
                .unwrap_or_else(|_| d.clone())
                .to_string_lossy()
                .into_owned()
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawPlugins {
    search_path: Option<Vec<PathBuf>>,
}

impl RawPlugins {
    pub(super) fn validate(self, doc: &Doc<'_>) -> PluginsConfig {
        PluginsConfig {
            search_path: self
                .search_path
                .map(|dirs| dirs.into_iter().map(|d| doc.resolve(d)).collect()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawStorage {
    plugin: Option<Field>,
    path: Option<Field>,
    sha256: Option<Field>,
    #[serde(default)]
    options: toml::Table,
}

impl RawStorage {
    pub(super) fn validate(self, doc: &Doc<'_>) -> Result<StorageConfig, ConfigError> {
        const T: &str = "storage";
        let name = doc.read(T, "plugin", self.plugin.as_ref(), |v| {
            Ok(v.string("a plugin name")?.to_string())
        })?;
        let path = doc.read(T, "path", self.path.as_ref(), |v| {
            let path = v.string("a file path")?;
            if path.is_empty() {
                return Err(
                    v.fail("is empty; give the plugin library's path, or leave the key out")
                );
            }
            Ok(doc.resolve(PathBuf::from(path)))
        })?;
        let plugin = match (name, path) {
            (Some(name), None) => PluginRef::Name(name),
            (None, Some(path)) => PluginRef::Path(path),
            (None, None) => PluginRef::Name(DEFAULT_PLUGIN.to_string()),
            (Some(_), Some(_)) => {
                let at = self.path.as_ref().expect("path is set");
                return Err(doc.error_at(
                    "storage.path",
                    at.span().start,
                    "storage.plugin and storage.path are both set; choose the plugin by name or \
                     by file, not both"
                        .to_string(),
                ));
            }
        };
        let sha256 = doc.read(T, "sha256", self.sha256.as_ref(), |v| {
            let pin = v.string("a SHA-256 digest")?;
            if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(v.fail(
                    "is not a SHA-256 digest (64 hex digits); `cairn plugins info NAME` prints it",
                ));
            }
            Ok(pin.to_ascii_lowercase())
        })?;
        Ok(StorageConfig {
            plugin,
            sha256,
            options: self.options,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawSavepoints {
    dir: Option<Field>,
    on_sigterm: Option<Field>,
}

impl RawSavepoints {
    /// Check the table; `flink` gives Flink's names of `dir` (`state.savepoints.dir`, ...).
    pub(super) fn validate(
        self,
        flink: &[(&'static str, Option<&Field>)],
        doc: &Doc<'_>,
    ) -> Result<SavepointsConfig, ConfigError> {
        const T: &str = "savepoints";
        let mut names = vec![("savepoints.dir", self.dir.as_ref())];
        names.extend_from_slice(flink);
        let dir = super::flink::read(doc, super::flink::one_of(doc, &names)?, |v| {
            let dir = v.string("a directory path")?;
            if dir.is_empty() {
                return Err(v.fail("is empty; give a directory path, or leave the key out"));
            }
            // Flink writes directories as `file:///...` URLs.
            let path =
                match dir.strip_prefix("file://") {
                    Some(path) if path.starts_with('/') => path,
                    Some(_) => return Err(v.fail(
                        "is a file:// URL without an absolute path; write file:///DIR or a path",
                    )),
                    None => dir,
                };
            Ok(doc.resolve(PathBuf::from(path)))
        })?;
        let on_sigterm = doc
            .read(T, "on-sigterm", self.on_sigterm.as_ref(), |v| v.boolean())?
            .unwrap_or(false);
        Ok(SavepointsConfig { dir, on_sigterm })
    }
}
