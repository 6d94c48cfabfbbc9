//! Plugin discovery and loading: the only module of the host that opens shared libraries.
//!
//! Loading a file goes through these checks, in order, each with its own error that names the
//! file and what was found:
//!
//! 1. it exists and is a regular file ([`LoadError::Missing`]);
//! 2. it is not writable by everyone ([`LoadError::WorldWritable`]);
//! 3. its SHA-256 matches the configured pin, if any ([`LoadError::Sha256Mismatch`]);
//! 4. it starts with a shared-library magic number ([`LoadError::NotSharedLibrary`]);
//! 5. its manifest section, if it has one, is well formed ([`LoadError::BadManifestSection`]) and
//!    states a compatible API version ([`LoadError::IncompatibleApi`]);
//! 6. the dynamic loader accepts it ([`LoadError::CannotLoad`]);
//! 7. it exports `cairn_plugin_api_version`, a plain C function read with `libloading`
//!    ([`LoadError::NotAPlugin`]);
//! 8. that API version is compatible with the host's ([`LoadError::IncompatibleApi`]), checked
//!    before any abi_stable type is touched, so a different major version gets a version error
//!    rather than a layout report;
//! 9. abi_stable's layout check of the root module passes ([`LoadError::LayoutMismatch`]; the
//!    full report goes to the debug log);
//! 10. the root module initialises and the manifest is usable ([`LoadError::InitFailed`]), and
//!     it is the one the manifest section states ([`LoadError::ManifestMismatch`]).
//!
//! Steps 1 to 5 run before any code of the file runs. Step 9 reads each library through its own
//! header rather than abi_stable's per-type module cache, so several plugins load side by side.
//! Libraries are never unloaded: a plugin's statics, threads and thread-locals may outlive any
//! object the host holds, and abi_stable leaks libraries for the same reason.
//!
//! # Finding a plugin without loading every file
//!
//! Loading by name scans the search path ([`SearchPath`]) and refuses a name that two different
//! files provide ([`LoadError::DuplicateName`]). A file's name comes from its manifest section
//! (API 1.1, `cairn_plugin_api::section`), read with the `object` crate: a few hundred bytes of
//! the file, no code run, no hash of the whole file. Only the plugin that is used is loaded
//! (steps 6 to 10). A file without a section (a plugin built for API 1.0, or one that declares no
//! static manifest) is loaded to ask it its name, as before: that is the probe. A SHA-256 is
//! computed only for a pin, or when asked for ([`Plugin::sha256`]).

use std::{
    collections::BTreeMap,
    fmt,
    fs::File,
    io::Read,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use cairn_plugin_api::{
    host::{load_library, LoadedPlugin, TypedLoadError},
    section::{decode_section, SectionManifest, MAX_SECTION_LEN, SECTION_NAME},
    ApiVersion, CheckpointStorage, Manifest, StorageError, API_VERSION,
};
use object::{Object, ObjectSection};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The raw probe symbol every plugin exports (see `export_storage_plugin!`).
const PROBE_SYMBOL: &[u8] = b"cairn_plugin_api_version\0";

/// Why a plugin file was refused. Each message is one line and names the file.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file does not exist or is not a regular file.
    #[error("plugin {path}: {why}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// What is there instead.
        why: String,
    },
    /// Anyone may write to the file, so anyone could swap the code the host runs.
    #[error(
        "plugin {path} is writable by every user (mode {mode:o}); refusing to load it: \
         run `chmod o-w {path}`"
    )]
    WorldWritable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file's SHA-256 is not the one pinned in the config.
    #[error("plugin {path} does not match its pin: storage.sha256 is {expected}, the file's SHA-256 is {found}")]
    Sha256Mismatch {
        /// The file.
        path: PathBuf,
        /// The pinned digest.
        expected: String,
        /// The file's digest.
        found: String,
    },
    /// The file is not a shared library at all.
    #[error("plugin {path} is not a shared library: found {found}")]
    NotSharedLibrary {
        /// The file.
        path: PathBuf,
        /// What its first bytes look like.
        found: String,
    },
    /// The dynamic loader refused the file (wrong architecture, missing dependency, ...).
    #[error("plugin {path} cannot be loaded: {why}")]
    CannotLoad {
        /// The file.
        path: PathBuf,
        /// The loader's message.
        why: String,
    },
    /// A shared library, but not a cairn storage plugin.
    #[error("{path} is not a cairn storage plugin: {why}")]
    NotAPlugin {
        /// The file.
        path: PathBuf,
        /// Which symbol is missing.
        why: String,
    },
    /// Built against an incompatible plugin API version.
    #[error("plugin {path} {why}")]
    IncompatibleApi {
        /// The file.
        path: PathBuf,
        /// The plugin's API version.
        found: ApiVersion,
        /// The host's API version.
        host: ApiVersion,
        /// The rule that failed.
        why: String,
    },
    /// The ABI layout of the root module differs from the host's.
    #[error("plugin {path} has an ABI layout mismatch with this host: {summary}")]
    LayoutMismatch {
        /// The file.
        path: PathBuf,
        /// One-line summary of the first difference.
        summary: String,
    },
    /// The root module failed to initialise, or the manifest is unusable.
    #[error("plugin {path} {why}")]
    InitFailed {
        /// The file.
        path: PathBuf,
        /// What failed.
        why: String,
    },
    /// Two files in the search path provide the same plugin name.
    #[error("plugin name '{name}' is provided by two files, {first} and {second}; remove one, or select one with storage.path")]
    DuplicateName {
        /// The plugin name.
        name: String,
        /// One file.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
    /// A pin is configured and no file in the search path has that digest.
    #[error("no file in the plugin search path ({searched}) has the SHA-256 pinned for plugin '{name}' (storage.sha256 = {expected}); no file was loaded")]
    PinMatchesNothing {
        /// The plugin name.
        name: String,
        /// The pinned digest.
        expected: String,
        /// The directories searched.
        searched: String,
    },
    /// The file has a manifest section that cannot be read.
    #[error("plugin {path} has a manifest section that cannot be used: {why}")]
    BadManifestSection {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The manifest section says something other than the code, once loaded.
    #[error("plugin {path} is not what its manifest section says: {why}; rebuild the plugin")]
    ManifestMismatch {
        /// The file.
        path: PathBuf,
        /// The difference.
        why: String,
    },
    /// No file in the search path provides the name.
    #[error("no plugin named '{name}' in the search path ({searched}){available}")]
    UnknownName {
        /// The plugin name asked for.
        name: String,
        /// The directories searched.
        searched: String,
        /// The names that are available, as a suffix for the message.
        available: String,
    },
}

impl LoadError {
    /// A stable, short name for the kind of refusal, for JSON output and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            LoadError::Missing { .. } => "missing",
            LoadError::WorldWritable { .. } => "world-writable",
            LoadError::Sha256Mismatch { .. } | LoadError::PinMatchesNothing { .. } => {
                "sha256-mismatch"
            }
            LoadError::NotSharedLibrary { .. } => "not-a-shared-library",
            LoadError::CannotLoad { .. } => "cannot-load",
            LoadError::NotAPlugin { .. } => "not-a-plugin",
            LoadError::IncompatibleApi { .. } => "incompatible-api",
            LoadError::LayoutMismatch { .. } => "abi-layout-mismatch",
            LoadError::InitFailed { .. } => "init-failed",
            LoadError::DuplicateName { .. } => "duplicate-name",
            LoadError::UnknownName { .. } => "unknown-name",
            LoadError::BadManifestSection { .. } => "bad-manifest-section",
            LoadError::ManifestMismatch { .. } => "manifest-mismatch",
        }
    }
}

/// Where a file's manifest came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestSource {
    /// Read from the file's manifest section, without running its code.
    Section,
    /// Asked from the loaded library (a plugin without a manifest section).
    Probe,
}

impl ManifestSource {
    /// `section` or `probe`.
    pub fn as_str(self) -> &'static str {
        match self {
            ManifestSource::Section => "section",
            ManifestSource::Probe => "probe",
        }
    }
}

/// A loaded, checked plugin library.
#[derive(Debug, Clone)]
pub struct Plugin {
    path: PathBuf,
    sha256: OnceLock<String>,
    source: ManifestSource,
    inner: LoadedPlugin,
}

impl Plugin {
    /// The plugin's manifest.
    pub fn manifest(&self) -> &Manifest {
        self.inner.manifest()
    }

    /// The file it was loaded from (canonical).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file has a manifest section (which the loaded code was checked against).
    pub fn manifest_source(&self) -> ManifestSource {
        self.source
    }

    /// The SHA-256 of the file, in lower-case hex: the value to put in `storage.sha256`. Known
    /// from the load when a pin was checked; otherwise the file is hashed on the first call.
    pub fn sha256(&self) -> Result<&str, LoadError> {
        if let Some(digest) = self.sha256.get() {
            return Ok(digest);
        }
        let digest = sha256_file(&self.path)?;
        Ok(self.sha256.get_or_init(|| digest))
    }

    /// Open a storage instance with the serialized `[storage.options]` table.
    pub fn open(&self, options: &str) -> Result<Box<dyn CheckpointStorage>, StorageError> {
        self.inner.open(options)
    }

    /// Check the serialized `[storage.options]` table with the plugin's own rules, creating
    /// nothing; `Unsupported` from a plugin built against API 1.0 (see `plugin-api`).
    pub fn validate(&self, options: &str) -> Result<(), StorageError> {
        self.inner.validate(options)
    }

    /// The options the plugin accepts, from its manifest; `Unsupported` from a plugin built
    /// against API 1.0.
    pub fn options(&self) -> Result<Vec<cairn_plugin_api::OptionInfo>, StorageError> {
        self.inner.options()
    }
}

/// A file that passed the checks that run before any of its code (steps 1 to 5).
struct Checked {
    path: PathBuf,
    sha256: Option<String>,
    section: Option<SectionManifest>,
}

/// Steps 1 to 5 of the module docs: nothing of the file runs.
fn check_file(path: &Path, sha256_pin: Option<&str>) -> Result<Checked, LoadError> {
    let meta = std::fs::metadata(path).map_err(|e| LoadError::Missing {
        path: path.to_path_buf(),
        why: match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            _ => e.to_string(),
        },
    })?;
    if !meta.is_file() {
        return Err(LoadError::Missing {
            path: path.to_path_buf(),
            why: "is not a regular file".to_string(),
        });
    }
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    check_not_world_writable(&path, &meta)?;
    let mut sha256 = None;
    if let Some(pin) = sha256_pin {
        let digest = sha256_file(&path)?;
        if !pin.trim().eq_ignore_ascii_case(&digest) {
            return Err(LoadError::Sha256Mismatch {
                path,
                expected: pin.trim().to_string(),
                found: digest,
            });
        }
        sha256 = Some(digest);
    }
    let file = File::open(&path).map_err(|e| cannot_read(&path, &e))?;
    let mut head = Vec::with_capacity(64);
    (&file)
        .take(64)
        .read_to_end(&mut head)
        .map_err(|e| cannot_read(&path, &e))?;
    if let Some(found) = not_a_shared_library(&head, meta.len()) {
        return Err(LoadError::NotSharedLibrary { path, found });
    }
    let section = read_section(&path, &file)?;
    if let Some(s) = &section {
        if let Err(why) = API_VERSION.accepts(s.manifest.api_version) {
            return Err(LoadError::IncompatibleApi {
                path,
                found: s.manifest.api_version,
                host: API_VERSION,
                why,
            });
        }
    }
    Ok(Checked {
        path,
        sha256,
        section,
    })
}

/// The manifest section of an opened file: `None` if it has none (or is a format the `object`
/// crate is not built to read here, which the dynamic loader then judges).
fn read_section(path: &Path, file: &File) -> Result<Option<SectionManifest>, LoadError> {
    let bad = |why: String| LoadError::BadManifestSection {
        path: path.to_path_buf(),
        why,
    };
    let cache = object::ReadCache::new(file);
    let Ok(obj) = object::File::parse(&cache) else {
        return Ok(None);
    };
    let Some(section) = obj.section_by_name(SECTION_NAME) else {
        return Ok(None);
    };
    if section.size() > MAX_SECTION_LEN as u64 {
        return Err(bad(format!(
            "{} bytes is more than a manifest section may hold ({MAX_SECTION_LEN})",
            section.size()
        )));
    }
    let data = section
        .data()
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    decode_section(data).map_err(|e| bad(e.to_string()))
}

/// Steps 6 to 10: load the library and check it against what its section said.
fn load_checked(checked: Checked) -> Result<Plugin, LoadError> {
    let Checked {
        path,
        sha256,
        section,
    } = checked;
    let found = probe_api_version(&path)?;
    if let Some(s) = &section {
        if s.manifest.api_version != found {
            return Err(LoadError::ManifestMismatch {
                path,
                why: format!(
                    "the section says plugin API {}, the library reports {found}",
                    s.manifest.api_version
                ),
            });
        }
    }
    if let Err(why) = API_VERSION.accepts(found) {
        return Err(LoadError::IncompatibleApi {
            path,
            found,
            host: API_VERSION,
            why,
        });
    }
    let inner = load_library(&path).map_err(|e| typed_load_error(&path, e))?;
    if let Some(s) = &section {
        if &s.manifest != inner.manifest() {
            return Err(LoadError::ManifestMismatch {
                path,
                why: manifest_difference(&s.manifest, inner.manifest()),
            });
        }
    }
    tracing::debug!(path = %path.display(), name = %inner.manifest().name, "plugin loaded");
    let digest = OnceLock::new();
    if let Some(d) = sha256 {
        let _ = digest.set(d);
    }
    Ok(Plugin {
        path,
        sha256: digest,
        source: if section.is_some() {
            ManifestSource::Section
        } else {
            ManifestSource::Probe
        },
        inner,
    })
}

/// The first field in which the section's manifest and the code's differ.
fn manifest_difference(section: &Manifest, code: &Manifest) -> String {
    let fields: [(&str, String, String); 6] = [
        ("name", section.name.clone(), code.name.clone()),
        ("version", section.version.clone(), code.version.clone()),
        (
            "API version",
            section.api_version.to_string(),
            code.api_version.to_string(),
        ),
        (
            "description",
            section.description.clone(),
            code.description.clone(),
        ),
        (
            "capabilities",
            section.capabilities.to_string(),
            code.capabilities.to_string(),
        ),
        (
            "test options",
            section.test_options.clone(),
            code.test_options.clone(),
        ),
    ];
    fields
        .iter()
        .find(|(_, a, b)| a != b)
        .map(|(what, a, b)| format!("the section's {what} is {a:?}, the code's is {b:?}"))
        .unwrap_or_else(|| "the manifests differ".to_string())
}

/// Load and check the plugin file at `path`, optionally pinned to a SHA-256 (hex).
pub fn load_path(path: &Path, sha256_pin: Option<&str>) -> Result<Plugin, LoadError> {
    load_checked(check_file(path, sha256_pin)?)
}

fn typed_load_error(path: &Path, e: TypedLoadError) -> LoadError {
    let path = path.to_path_buf();
    match e {
        TypedLoadError::LayoutMismatch { summary, detail } => {
            tracing::debug!(path = %path.display(), "abi_stable layout report:\n{detail}");
            LoadError::LayoutMismatch { path, summary }
        }
        TypedLoadError::NoRootModule => LoadError::NotAPlugin {
            path,
            why: "it exports cairn_plugin_api_version but no plugin root module".to_string(),
        },
        TypedLoadError::Open(why) => LoadError::CannotLoad { path, why },
        other => LoadError::InitFailed {
            path,
            why: other.to_string(),
        },
    }
}

#[cfg(unix)]
fn check_not_world_writable(path: &Path, meta: &std::fs::Metadata) -> Result<(), LoadError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o002 != 0 {
        return Err(LoadError::WorldWritable {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_not_world_writable(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), LoadError> {
    Ok(())
}

fn cannot_read(path: &Path, e: &std::io::Error) -> LoadError {
    LoadError::CannotLoad {
        path: path.to_path_buf(),
        why: format!("cannot read the file: {e}"),
    }
}

/// The SHA-256 of a file, streamed.
fn sha256_file(path: &Path) -> Result<String, LoadError> {
    let mut hasher = Sha256::new();
    File::open(path)
        .and_then(|mut f| std::io::copy(&mut f, &mut hasher))
        .map_err(|e| cannot_read(path, &e))?;
    Ok(hex::encode(hasher.finalize()))
}

/// `None` if `bytes`, the first bytes of a file of `len` bytes, start like a shared library (ELF,
/// Mach-O or PE); otherwise what they look like, for the error message.
fn not_a_shared_library(bytes: &[u8], len: u64) -> Option<String> {
    const MACHO: [[u8; 4]; 5] = [
        [0xfe, 0xed, 0xfa, 0xce],
        [0xfe, 0xed, 0xfa, 0xcf],
        [0xce, 0xfa, 0xed, 0xfe],
        [0xcf, 0xfa, 0xed, 0xfe],
        [0xca, 0xfe, 0xba, 0xbe],
    ];
    if bytes.starts_with(b"\x7fELF") {
        // e_type at offset 16: 3 is ET_DYN (shared object or position-independent executable).
        return match bytes.get(16..18) {
            Some(t)
                if u16::from_le_bytes([t[0], t[1]]) == 3
                    || u16::from_be_bytes([t[0], t[1]]) == 3 =>
            {
                None
            }
            Some(_) => Some(
                "an ELF file that is not a shared object (an executable or object file?)"
                    .to_string(),
            ),
            None => Some("a truncated ELF file".to_string()),
        };
    }
    if bytes.len() >= 4 && MACHO.iter().any(|m| bytes.starts_with(m)) || bytes.starts_with(b"MZ") {
        return None;
    }
    if bytes.is_empty() {
        return Some("an empty file".to_string());
    }
    let head = &bytes[..bytes.len().min(24)];
    let printable = head
        .iter()
        .all(|b| b.is_ascii_graphic() || *b == b' ' || b.is_ascii_whitespace());
    Some(if printable {
        format!(
            "text starting with {:?}",
            String::from_utf8_lossy(head).trim_end()
        )
    } else {
        format!(
            "{len} bytes of data starting with {}",
            hex::encode(&head[..head.len().min(8)])
        )
    })
}

/// Read the plugin's API version through its raw probe symbol.
fn probe_api_version(path: &Path) -> Result<ApiVersion, LoadError> {
    // SAFETY: loading a library runs its initialisers. The trust model (README, "Trust") is that
    // files in the plugin search path are trusted code; the checks above refused files anyone can
    // write and files that do not match their pin.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| LoadError::CannotLoad {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    // SAFETY: `export_storage_plugin!` defines this symbol as `extern "C" fn() -> u64`. A foreign
    // library could define a symbol of that name with another type; that is outside the trust
    // model above.
    let probe = unsafe { lib.get::<extern "C" fn() -> u64>(PROBE_SYMBOL) };
    let word = match probe {
        Ok(f) => f(),
        Err(_) => {
            return Err(LoadError::NotAPlugin {
                path: path.to_path_buf(),
                why: "it does not export the cairn_plugin_api_version symbol that \
                      export_storage_plugin! generates"
                    .to_string(),
            })
        }
    };
    // Never unload: see the module docs.
    std::mem::forget(lib);
    Ok(ApiVersion::from_word(word))
}

/// Where plugins are looked for, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SearchPath {
    dirs: Vec<PathBuf>,
}

impl SearchPath {
    /// The given directories, in order.
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self { dirs }
    }

    /// The default: `./plugins`, then the directory of the running executable.
    pub fn default_dirs() -> Self {
        let mut dirs = vec![PathBuf::from("plugins")];
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            dirs.push(dir);
        }
        Self { dirs }
    }

    /// The directories.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Candidate files: every file with the platform's shared-library extension directly in a
    /// search directory, deduplicated by canonical path. Missing directories are skipped.
    pub fn candidates(&self) -> Vec<PathBuf> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                tracing::debug!(dir = %dir.display(), "plugin search directory not readable; skipped");
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().and_then(|e| e.to_str()) == Some(std::env::consts::DLL_EXTENSION)
                })
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            for f in files {
                let canonical = f.canonicalize().unwrap_or_else(|_| f.clone());
                if seen.insert(canonical.clone()) {
                    out.push(canonical);
                }
            }
        }
        out
    }
}

impl fmt::Display for SearchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        f.write_str(&dirs.join(", "))
    }
}

/// A plugin file in the search path and its manifest, learned without running its code when
/// the file has a manifest section.
#[derive(Debug, Clone)]
pub struct Found {
    path: PathBuf,
    manifest: Manifest,
    loaded: Option<Plugin>,
}

impl Found {
    /// The file (canonical).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Where the manifest came from: the section, or the loaded library.
    pub fn manifest_source(&self) -> ManifestSource {
        if self.loaded.is_some() {
            ManifestSource::Probe
        } else {
            ManifestSource::Section
        }
    }

    /// Load the plugin (if the scan did not have to already), with every check.
    pub fn load(self) -> Result<Plugin, LoadError> {
        match self.loaded {
            Some(p) => Ok(p),
            None => load_path(&self.path, None),
        }
    }
}

/// The result of scanning a search path: the plugins found, and files that were refused.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Plugins with unique names, sorted by name.
    pub plugins: Vec<Found>,
    /// Refused files, with why.
    pub refused: Vec<(PathBuf, LoadError)>,
}

/// Scan every candidate in the search path. Files with a manifest section are read, not loaded;
/// files without one are loaded to ask their manifest. Names provided by two files are refused
/// for both.
pub fn discover(search: &SearchPath) -> Discovery {
    let mut by_name: BTreeMap<String, Vec<Found>> = BTreeMap::new();
    let mut refused = Vec::new();
    for path in search.candidates() {
        let found = check_file(&path, None).and_then(|checked| match checked.section.clone() {
            Some(s) => Ok(Found {
                path: checked.path,
                manifest: s.manifest,
                loaded: None,
            }),
            None => load_checked(checked).map(|p| Found {
                path: p.path().to_path_buf(),
                manifest: p.manifest().clone(),
                loaded: Some(p),
            }),
        });
        match found {
            Ok(f) => by_name.entry(f.manifest.name.clone()).or_default().push(f),
            Err(e) => refused.push((path, e)),
        }
    }
    let mut plugins = Vec::new();
    for (name, mut found) in by_name {
        if found.len() == 1 {
            plugins.extend(found.pop());
        } else {
            for p in &found {
                let other = found
                    .iter()
                    .find(|o| o.path() != p.path())
                    .map(|o| o.path().to_path_buf());
                refused.push((
                    p.path().to_path_buf(),
                    LoadError::DuplicateName {
                        name: name.clone(),
                        first: p.path().to_path_buf(),
                        second: other.unwrap_or_default(),
                    },
                ));
            }
        }
    }
    Discovery { plugins, refused }
}

/// The name a file's manifest section gives, if it has a readable one; nothing runs.
fn section_name(path: &Path) -> Option<String> {
    let file = File::open(path).ok()?;
    read_section(path, &file).ok()?.map(|s| s.manifest.name)
}

/// Find the plugin called `name` in the search path and load it; no other plugin is loaded,
/// except files without a manifest section, which must be loaded to learn their names.
///
/// With a SHA-256 pin, only files whose digest matches the pin are ever loaded, so a swapped
/// file runs no code; files whose manifest section names another plugin are not even hashed.
pub fn load_by_name(
    search: &SearchPath,
    name: &str,
    sha256_pin: Option<&str>,
) -> Result<Plugin, LoadError> {
    if let Some(pin) = sha256_pin {
        for path in search.candidates() {
            if section_name(&path).is_some_and(|n| n != name) {
                continue;
            }
            let Ok(digest) = sha256_file(&path) else {
                continue;
            };
            if digest.eq_ignore_ascii_case(pin.trim()) {
                let plugin = load_path(&path, Some(pin))?;
                if plugin.manifest().name == name {
                    return Ok(plugin);
                }
            }
        }
        return Err(LoadError::PinMatchesNothing {
            name: name.to_string(),
            expected: pin.trim().to_string(),
            searched: search.to_string(),
        });
    }
    let discovery = discover(search);
    if let Some((_, dup)) = discovery
        .refused
        .iter()
        .find(|(_, e)| matches!(e, LoadError::DuplicateName { name: n, .. } if n == name))
    {
        return Err(dup.clone());
    }
    let available: Vec<String> = discovery
        .plugins
        .iter()
        .map(|p| p.manifest().name.clone())
        .collect();
    match discovery
        .plugins
        .into_iter()
        .find(|p| p.manifest().name == name)
    {
        Some(p) => p.load(),
        None => Err(LoadError::UnknownName {
            name: name.to_string(),
            searched: search.to_string(),
            available: if available.is_empty() {
                "; no plugins were found there".to_string()
            } else {
                format!("; available: {}", available.join(", "))
            },
        }),
    }
}
