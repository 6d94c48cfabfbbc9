//! What a plugin says about itself before any storage call: identity, versions, capabilities.

use std::fmt;

use serde::Serialize;

use crate::version::{ApiVersion, API_VERSION};

bitflags::bitflags! {
    /// What a backend can do. The conformance harness picks its cases from these flags, and the
    /// host refuses configurations that need a capability the backend lacks.
    ///
    /// Bits are part of the ABI: never reuse one. New flags take new bits (note the API version
    /// next to them); a host ignores bits it does not know.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
    #[serde(transparent)]
    pub struct Capabilities: u64 {
        /// Completed checkpoints outlive the process: a pointer resolves from a fresh process.
        const PERSISTENT = 1 << 0;
        /// Storage is reachable from other hosts, so a standby can take over a job.
        const HIGHLY_AVAILABLE = 1 << 1;
        /// Savepoints can be written.
        const SAVEPOINTS = 1 << 2;
        /// SHARED-scope streams (incremental state) are supported.
        const SHARED_SCOPE = 1 << 3;
        /// Task-owned streams are supported.
        const TASK_OWNED = 1 << 4;
        /// Large state is stored outside the metadata (stored handles exist).
        const STORED_HANDLES = 1 << 5;
        /// [`CheckpointStorage::corrupt_for_testing`](crate::CheckpointStorage::corrupt_for_testing)
        /// works, so the conformance harness can check that damage is detected.
        const CORRUPT_FOR_TESTING = 1 << 6;
    }
}

impl Capabilities {
    /// Lower-case names of the set flags, for display and JSON.
    pub fn names(self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (name, flag) in [
            ("persistent", Capabilities::PERSISTENT),
            ("highly-available", Capabilities::HIGHLY_AVAILABLE),
            ("savepoints", Capabilities::SAVEPOINTS),
            ("shared-scope", Capabilities::SHARED_SCOPE),
            ("task-owned", Capabilities::TASK_OWNED),
            ("stored-handles", Capabilities::STORED_HANDLES),
            ("corrupt-for-testing", Capabilities::CORRUPT_FOR_TESTING),
        ] {
            if self.contains(flag) {
                out.push(name);
            }
        }
        out
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(", "))
    }
}

/// A plugin's identity card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    /// Unique name used in `[storage] plugin = "..."`, for example `filesystem`.
    pub name: String,
    /// The plugin's own version (its crate version, usually).
    pub version: String,
    /// The plugin API the plugin was compiled against. [`Manifest::new`] fills it in.
    pub api_version: ApiVersion,
    /// One line for `cairn plugins list`.
    pub description: String,
    /// What the backend can do.
    pub capabilities: Capabilities,
    /// Options that make the plugin usable inside a scratch directory, for
    /// `cairn plugins verify` when no options are given: a `[storage.options]` TOML document in
    /// which `{scratch}` stands for an empty temporary directory. Empty when the plugin needs no
    /// options. Set it with [`Manifest::with_test_options`].
    pub test_options: String,
}

impl Manifest {
    /// A manifest for a plugin compiled against this crate's API version.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        description: impl Into<String>,
        capabilities: Capabilities,
    ) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            api_version: API_VERSION,
            description: description.into(),
            capabilities,
            test_options: String::new(),
        }
    }

    /// The options `cairn plugins verify` uses when it is given none (see
    /// [`Manifest::test_options`]), for example `dir = "{scratch}/checkpoints"`.
    pub fn with_test_options(mut self, options: impl Into<String>) -> Self {
        self.test_options = options.into();
        self
    }

    /// Check the fields a host relies on: a usable name and a version.
    pub fn validate(&self) -> Result<(), String> {
        let ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!(
                "plugin name '{}' is invalid: use 1 to 64 lower-case letters, digits, '-' or '_'",
                self.name
            ));
        }
        if self.version.trim().is_empty() {
            return Err(format!("plugin '{}' has an empty version", self.name));
        }
        Ok(())
    }
}

/// A manifest written as constants, so the export macro can put it into the library's manifest
/// section (see `section.rs`) and a host can read it without running the plugin's code. Set it
/// as [`StoragePlugin::STATIC_MANIFEST`](crate::StoragePlugin::STATIC_MANIFEST) and return
/// [`StaticManifest::to_manifest`] from `manifest()`, so the two cannot differ.
///
/// Since API 1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticManifest {
    /// See [`Manifest::name`].
    pub name: &'static str,
    /// See [`Manifest::version`].
    pub version: &'static str,
    /// See [`Manifest::description`].
    pub description: &'static str,
    /// See [`Manifest::capabilities`]; combine flags with `Capabilities::A.union(Capabilities::B)`
    /// in a constant.
    pub capabilities: Capabilities,
    /// See [`Manifest::test_options`].
    pub test_options: &'static str,
    /// The `[storage.options]` the plugin accepts, with their defaults, for
    /// `cairn plugins info`. Set it with [`StaticManifest::with_options`].
    ///
    /// Since API 1.1.
    pub options: &'static [OptionSpec],
}

/// One option of `[storage.options]` a plugin accepts, as constants in its [`StaticManifest`].
///
/// Since API 1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionSpec {
    /// The option's name, as written in `[storage.options]` (`dir`).
    pub name: &'static str,
    /// Its default as a config file writes it (`"20KiB"`); `None` when it has none (required,
    /// or unset by default: the description says which).
    pub default: Option<&'static str>,
    /// One line about what it does.
    pub description: &'static str,
}

impl OptionSpec {
    /// An option with a default.
    pub const fn new(name: &'static str, default: &'static str, description: &'static str) -> Self {
        Self {
            name,
            default: Some(default),
            description,
        }
    }

    /// An option without a default.
    pub const fn no_default(name: &'static str, description: &'static str) -> Self {
        Self {
            name,
            default: None,
            description,
        }
    }
}

/// One option a loaded plugin accepts, as the host reads it (see [`OptionSpec`]).
///
/// Since API 1.1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OptionInfo {
    /// See [`OptionSpec::name`].
    pub name: String,
    /// See [`OptionSpec::default`].
    pub default: Option<String>,
    /// See [`OptionSpec::description`].
    pub description: String,
}

impl StaticManifest {
    /// A static manifest, like [`Manifest::new`].
    pub const fn new(
        name: &'static str,
        version: &'static str,
        description: &'static str,
        capabilities: Capabilities,
    ) -> Self {
        Self {
            name,
            version,
            description,
            capabilities,
            test_options: "",
            options: &[],
        }
    }

    /// The options the plugin accepts (see [`StaticManifest::options`]).
    pub const fn with_options(mut self, options: &'static [OptionSpec]) -> Self {
        self.options = options;
        self
    }

    /// Like [`Manifest::with_test_options`].
    pub const fn with_test_options(mut self, options: &'static str) -> Self {
        self.test_options = options;
        self
    }
}
