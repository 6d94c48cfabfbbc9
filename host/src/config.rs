//! The config file (TOML): which storage plugin to use, where to find plugins, and (with the
//! coordinator) how to checkpoint.
//!
//! Every error names the file, the line and the key, and says what is allowed, for example
//! `config error at cairn.toml:3: storage.sha256 = "abc" is not a SHA-256 digest (64 hex digits)`.
//! Unknown keys are errors, so a misspelt key never silently falls back to a default.
//!
//! Relative paths in the file are taken relative to the directory that holds the file, so a
//! config means the same thing whatever directory `cairn` is started from.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::loader::SearchPath;

/// A config error: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The full key, such as `storage.sha256`, when known.
    pub key: Option<String>,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(
                f,
                "config error at {}:{line}: {}",
                self.file.display(),
                self.message
            ),
            None => write!(
                f,
                "config error in {}: {}",
                self.file.display(),
                self.message
            ),
        }
    }
}

/// The parsed config file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// Where the file was read from (`None` for built-in defaults).
    pub file: Option<PathBuf>,
    /// `[plugins]`.
    pub plugins: PluginsConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
}

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
    fn default() -> Self {
        Self {
            plugin: PluginRef::Name("filesystem".to_string()),
            sha256: None,
            options: toml::Table::new(),
        }
    }
}

impl StorageConfig {
    /// The options as the TOML document the plugin parses.
    pub fn options_document(&self) -> String {
        toml::to_string(&self.options).unwrap_or_default()
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    #[serde(default)]
    plugins: RawPlugins,
    storage: Option<RawStorage>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPlugins {
    search_path: Option<Vec<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawStorage {
    plugin: Option<String>,
    path: Option<PathBuf>,
    sha256: Option<String>,
    #[serde(default)]
    options: toml::Table,
}

impl Config {
    /// Read and validate the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: None,
            message: format!("cannot read the file: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Read `path` if it exists; built-in defaults if it does not.
    pub fn load_or_default(path: &Path) -> Result<Config, ConfigError> {
        if path.exists() {
            Config::load(path)
        } else {
            Ok(Config::default())
        }
    }

    /// Parse `text`, reporting errors against `file`.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let doc = Doc { text, file };
        let raw: RawConfig = toml::from_str(text).map_err(|e| doc.serde_error(&e))?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let plugins = PluginsConfig {
            search_path: raw
                .plugins
                .search_path
                .map(|dirs| dirs.into_iter().map(resolve).collect()),
        };
        let storage = match raw.storage {
            None => StorageConfig::default(),
            Some(s) => {
                let plugin = match (s.plugin, s.path) {
                    (Some(name), None) => PluginRef::Name(name),
                    (None, Some(path)) => PluginRef::Path(resolve(path)),
                    (None, None) => PluginRef::Name("filesystem".to_string()),
                    (Some(_), Some(_)) => {
                        return Err(doc.error(
                            "storage.path",
                            "storage.plugin and storage.path are both set; choose the plugin by name or by file, not both",
                        ))
                    }
                };
                if let Some(pin) = &s.sha256 {
                    if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(doc.error(
                            "storage.sha256",
                            &format!("storage.sha256 = {pin:?} is not a SHA-256 digest (64 hex digits); `cairn plugins info NAME` prints it"),
                        ));
                    }
                }
                StorageConfig {
                    plugin,
                    sha256: s.sha256.map(|p| p.to_ascii_lowercase()),
                    options: s.options,
                }
            }
        };
        Ok(Config {
            file: Some(file.to_path_buf()),
            plugins,
            storage,
        })
    }
}

/// The text of a config file, for locating keys in errors.
struct Doc<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Doc<'_> {
    /// An error about `key` (dotted, such as `storage.sha256`), located by its line.
    fn error(&self, key: &str, message: &str) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: line_of_key(self.text, key),
            key: Some(key.to_string()),
            message: message.to_string(),
        }
    }

    /// A TOML syntax or type error, with its line and, when it can be found, its key.
    fn serde_error(&self, e: &toml::de::Error) -> ConfigError {
        let line = e.span().map(|s| line_of_offset(self.text, s.start));
        let key = line.and_then(|l| key_at_line(self.text, l));
        let mut message = e.message().trim().to_string();
        if let Some(k) = &key {
            if !message.contains(k.rsplit('.').next().unwrap_or(k)) {
                message = format!("{k}: {message}");
            }
        }
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            key,
            message,
        }
    }
}

/// The 1-based line of byte `offset`.
fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The table that line `line` (1-based) belongs to, and its key if the line is `key = value`:
/// `storage.sha256`. A simple scan that handles the `[table]` and `key = value` lines configs use.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let mut table = String::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') && !t.starts_with("[[") {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
        if i + 1 == line {
            if t.starts_with('[') {
                return Some(table);
            }
            let key = t.split('=').next()?.trim().trim_matches('"');
            if key.is_empty() {
                return None;
            }
            return Some(if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            });
        }
    }
    None
}

/// The 1-based line where dotted `key` is set, by the same scan as [`key_at_line`].
pub(crate) fn line_of_key(text: &str, key: &str) -> Option<usize> {
    (1..=text.lines().count()).find(|&l| {
        key_at_line(text, l).as_deref() == Some(key)
            && !text
                .lines()
                .nth(l - 1)
                .unwrap_or("")
                .trim()
                .starts_with('[')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/cairn/cairn.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.storage.plugin, PluginRef::Name("filesystem".into()));
        assert_eq!(c.plugins.search_path, None);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = parse("[storage]\nplugin = \"memory\"\nsha265 = \"x\"\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("sha265"), "{e}");
        assert!(
            e.to_string()
                .starts_with("config error at /etc/cairn/cairn.toml:3:"),
            "{e}"
        );
    }

    #[test]
    fn bad_pin_names_line_and_key() {
        let e = parse("[storage]\nplugin = \"memory\"\nsha256 = \"abc\"\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("storage.sha256"));
        assert!(e.message.contains("64 hex digits"), "{e}");
    }

    #[test]
    fn plugin_and_path_together_are_refused() {
        let e = parse("[storage]\nplugin = \"memory\"\npath = \"x.so\"\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("not both"), "{e}");
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let c =
            parse("[plugins]\nsearch-path = [\"p\", \"/abs\"]\n[storage]\npath = \"lib/x.so\"\n")
                .unwrap();
        assert_eq!(
            c.plugins.search_path,
            Some(vec![PathBuf::from("/etc/cairn/p"), PathBuf::from("/abs")])
        );
        assert_eq!(
            c.storage.plugin,
            PluginRef::Path(PathBuf::from("/etc/cairn/lib/x.so"))
        );
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = parse("[plugins]\nsearch-path = \"plugins\"\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert_eq!(e.key.as_deref(), Some("plugins.search-path"), "{e}");
    }

    #[test]
    fn options_are_serialized_for_the_plugin() {
        let c = parse("[storage]\nplugin = \"filesystem\"\n[storage.options]\ndir = \"/tmp/x\"\n")
            .unwrap();
        assert_eq!(c.storage.options_document().trim(), "dir = \"/tmp/x\"");
    }
}
