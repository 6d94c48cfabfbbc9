//! Plugin API versions: one named constant per change, ending in the current version.
//!
//! # The compatibility rule
//!
//! A plugin reports the API version it was compiled against through a plain C symbol that the
//! host reads before it touches anything else in the library (see the loader). The host, which
//! implements API `H.h`, accepts a plugin built against `P.p` when:
//!
//! - `P == H`: the major versions match. A different major version is a different ABI and is
//!   refused in both directions, before any layout check.
//! - `p <= h`: the plugin is not newer than the host. An older plugin loads: the root module and
//!   every vtable are abi_stable prefix types, so a function appended in a later minor version is
//!   simply absent, and the host checks for it before calling it. A newer plugin is refused: it
//!   may rely on host behaviour that this host does not have.
//!
//! # Rules for changing the API
//!
//! - Adding functions is a minor change: add a constant below, bump the crate's minor version,
//!   and write `/// Since API 1.x` next to every new item.
//! - The functions of a minor version go into a **module of their own**, exported under a
//!   symbol of their own (`cairn_plugin_api_1_1` for [`API_1_1`], see `abi::Api11`), never
//!   appended to the root module or to a vtable. abi_stable's layout check accepts a library
//!   whose prefix types have *more* fields than the loader's, but never fewer, so a host whose
//!   job vtable had grown would refuse every plugin built before it (the compatibility test
//!   showed exactly that: "too many fields (expected 9, found 8)"). A module's type never
//!   changes once released; the next minor version adds the next module.
//! - Renaming, reordering, removing or changing the type of anything that crosses the boundary is
//!   a major change. It needs a new major version, and every plugin must be rebuilt.
//! - New error kinds may be added in a minor version: the ABI carries the kind as a number, and an
//!   unknown number reaches the host as [`crate::ErrorKind::Other`].
//!
//! # How a function added later reaches a plugin, or does not
//!
//! The methods of API 1.0 are required: the safe traits give them no default, so a wrapper can
//! never fall back to one silently. A method added later cannot be required, or every existing
//! plugin's source would stop compiling; so:
//!
//! - in the safe trait (layer 2) it gets a *provided default* that returns
//!   [`StorageError::Unsupported`](crate::StorageError::Unsupported), built with
//!   [`unsupported_since`], and a `/// Since API 1.x` note;
//! - the export macro exports the version's module; a function of it that acts on a job gets
//!   the job's vtable object back from the host and downcasts it to the plugin's own job;
//! - the host wrapper (layer 3) looks the module up when it loads the library and checks its
//!   layout; without it (a plugin built against an older minor version) it returns the same
//!   `Unsupported` as the default, so the host has one path for "not supported" and reports it.
//!
//! The fixture `tests/fixtures/api-old-minor` is built with the hidden `__api_1_0` feature of
//! this crate, which leaves out every module added since API 1.0 and reports API 1.0; the
//! host's tests load it, use it, and check that each later function answers `Unsupported`.
//! Every later addition gets the same `cfg` and the same test.

use std::fmt;

/// A plugin API version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ApiVersion {
    /// Incompatible changes bump this.
    pub major: u32,
    /// Backwards-compatible additions bump this.
    pub minor: u32,
}

impl ApiVersion {
    /// Build a version from its parts.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Pack into one word, as the raw probe symbol returns it: major in the high half.
    pub const fn to_word(self) -> u64 {
        ((self.major as u64) << 32) | self.minor as u64
    }

    /// Unpack a word produced by [`ApiVersion::to_word`].
    pub const fn from_word(word: u64) -> Self {
        Self {
            major: (word >> 32) as u32,
            minor: word as u32,
        }
    }

    /// Whether a host implementing `self` can load a plugin built against `plugin`, and if not,
    /// why not (see the module docs for the rule).
    pub fn accepts(self, plugin: ApiVersion) -> Result<(), String> {
        if plugin.major != self.major {
            return Err(format!(
                "built against plugin API {plugin}, but this host implements API {self}; \
                 major versions must match, so rebuild the plugin against cairn-plugin-api {}.x",
                self.major
            ));
        }
        if plugin.minor > self.minor {
            return Err(format!(
                "built against plugin API {plugin}, newer than this host's API {self}; \
                 upgrade cairn or rebuild the plugin against cairn-plugin-api {self}"
            ));
        }
        Ok(())
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// API 1.0: the first stable storage ABI. Manifest and open in the root module; storage, job,
/// location, output stream and input stream objects; inline and stored handles with CRC32C;
/// typed error kinds; a logging callback handed to the plugin at open.
pub const API_1_0: ApiVersion = ApiVersion::new(1, 0);

/// API 1.1, these additions:
///
/// - [`JobStorage::list_uncommitted_savepoints`](crate::JobStorage::list_uncommitted_savepoints),
///   so that garbage collection finds savepoint locations a crash left uncommitted;
/// - [`JobStorage::list_savepoints`](crate::JobStorage::list_savepoints), the job's completed
///   savepoints, so that they are listed beside checkpoints and ids never repeat theirs;
/// - [`JobStorage::read_lease`](crate::JobStorage::read_lease) and
///   [`JobStorage::write_lease`](crate::JobStorage::write_lease): a compare-and-swap register
///   per job in the storage itself, on which the host keeps one live writer per job (the job
///   lease, see ARCHITECTURE.md); a 1.0 plugin has none, and the host uses a local lock;
/// - the manifest section: a plugin may declare its manifest as constants
///   (`StoragePlugin::STATIC_MANIFEST`); the export macro writes it into the ELF section
///   `.cairn_manifest` (format in `section.rs`), so a host reads it without running plugin code.
///   1.0 plugins, which have no section, load as before;
/// - [`StoragePlugin::validate`](crate::StoragePlugin::validate): check an options document
///   with the plugin's own rules and no side effect on storage, for `cairn config check`;
/// - the option list of the static manifest
///   ([`StaticManifest::with_options`](crate::StaticManifest::with_options)), for
///   `cairn plugins info`.
pub const API_1_1: ApiVersion = ApiVersion::new(1, 1);

/// The API version this crate implements. Always the last constant above.
#[cfg(not(feature = "__api_1_0"))]
pub const API_VERSION: ApiVersion = API_1_1;

/// The API version this crate implements: built with `__api_1_0`, the 1.0 ABI (for the host's
/// compatibility fixture only).
#[cfg(feature = "__api_1_0")]
pub const API_VERSION: ApiVersion = API_1_0;

/// The error a method appended in API `since` returns where a plugin does not provide it: the
/// safe trait's default, and the vtable's when an older plugin lacks the function.
pub fn unsupported_since(since: ApiVersion, call: &str) -> crate::StorageError {
    crate::StorageError::Unsupported(format!(
        "{call} is not supported by this plugin: it was added in plugin API {since}, and the \
         plugin does not implement it (or was built against an older cairn-plugin-api)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(not(feature = "__api_1_0"))]
    fn crate_version_is_the_api_version() {
        let major: u32 = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap();
        let minor: u32 = env!("CARGO_PKG_VERSION_MINOR").parse().unwrap();
        assert_eq!(ApiVersion::new(major, minor), API_VERSION);
    }

    #[test]
    fn word_round_trips() {
        let v = ApiVersion::new(7, 3);
        assert_eq!(ApiVersion::from_word(v.to_word()), v);
    }

    #[test]
    fn older_minor_loads_newer_minor_and_other_major_do_not() {
        let host = ApiVersion::new(1, 2);
        assert!(host.accepts(ApiVersion::new(1, 0)).is_ok());
        assert!(host.accepts(ApiVersion::new(1, 2)).is_ok());
        let newer = host.accepts(ApiVersion::new(1, 3)).unwrap_err();
        assert!(newer.contains("newer than this host"), "{newer}");
        let old_major = host.accepts(ApiVersion::new(0, 9)).unwrap_err();
        assert!(
            old_major.contains("major versions must match"),
            "{old_major}"
        );
        assert!(host.accepts(ApiVersion::new(2, 0)).is_err());
    }
}
