//! Layer 1: the raw, stable ABI. Every type here is `#[repr(C)]` and derives `StableAbi`, so
//! abi_stable can check at load time that host and plugin agree on every layout.
//!
//! Evolution rules (see also `version.rs`):
//! - The root module and every `#[sabi_trait]` vtable are prefix types, but nothing is appended
//!   to them: abi_stable refuses a library whose prefix types are shorter than the loader's. A
//!   minor version's functions go into a module of their own ([`Api11`]), exported beside the
//!   root module; see `version.rs`.
//! - Nothing here may be renamed, reordered, removed or retyped without a new major version.
//! - Error kinds, handle kinds, scopes and capability bits travel as plain integers, so that
//!   adding a value is not a layout change.
//!
//! Nothing outside this crate names these types.

// The sabi_trait macro generates items without docs and with patterns clippy dislikes; this
// module is private, and its public surface is documented on the safe layer.
#![allow(missing_docs, non_camel_case_types, non_local_definitions, clippy::all)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RResult, RSlice, RSliceMut, RStr, RString, RVec},
    StableAbi,
};

/// An error crossing the boundary: a kind number (see `ErrorKind::code`) and a message.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct RError {
    pub kind: u32,
    pub message: RString,
}

pub const HANDLE_INLINE: u8 = 0;
pub const HANDLE_STORED: u8 = 1;

/// A state handle. `kind` selects which fields mean something.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct RHandle {
    pub kind: u8,
    pub inline: RVec<u8>,
    pub locator: RString,
    pub size: u64,
    pub crc32c: u32,
}

pub const SCOPE_EXCLUSIVE: u8 = 0;
pub const SCOPE_SHARED: u8 = 1;

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct RManifest {
    pub name: RString,
    pub version: RString,
    pub api_major: u32,
    pub api_minor: u32,
    pub description: RString,
    pub capabilities: u64,
    pub test_options: RString,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct RStorageInfo {
    pub capabilities: u64,
    pub inline_threshold: u64,
    pub max_state_size: ROption<u64>,
    pub location: RString,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct RCompleted {
    pub checkpoint_id: u64,
    pub pointer: RString,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct RStoredObject {
    pub locator: RString,
    pub size: u64,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct RResolved {
    pub pointer: RString,
    pub metadata: RVec<u8>,
}

/// The logging callbacks the host hands to the plugin at open. Levels are 1 (error) to 5
/// (trace); `max_level` returns the most verbose level the host currently wants (0: none), and is
/// asked on every event so that the host can change its filter while the plugin runs.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct RHostLog {
    pub log: extern "C" fn(level: u8, target: RStr<'_>, message: RStr<'_>),
    pub max_level: extern "C" fn() -> u8,
}

#[sabi_trait]
pub trait RStorage: Send + Sync {
    fn info(&self) -> RResult<RStorageInfo, RError>;
    fn job(&self, job_id: RStr<'_>) -> RResult<RJobBox, RError>;
    fn resolve(&self, pointer: RStr<'_>) -> RResult<RResolved, RError>;
    fn open_handle(&self, handle: &RHandle) -> RResult<RInputBox, RError>;
    fn discard(&self, handle: &RHandle) -> RResult<(), RError>;
    fn dispose(&self, pointer: RStr<'_>) -> RResult<(), RError>;
    #[sabi(last_prefix_field)]
    fn corrupt_for_testing(&self, handle: &RHandle) -> RResult<(), RError>;
}
pub type RStorageBox = RStorage_TO<'static, RBox<()>>;

#[sabi_trait]
pub trait RJob: Send + Sync {
    fn begin_checkpoint(&self, checkpoint_id: u64) -> RResult<RLocationBox, RError>;
    fn begin_savepoint(
        &self,
        checkpoint_id: u64,
        target: ROption<RStr<'_>>,
    ) -> RResult<RLocationBox, RError>;
    fn create_task_owned_stream(&self) -> RResult<ROutputBox, RError>;
    fn list_completed(&self) -> RResult<RVec<RCompleted>, RError>;
    fn list_objects(&self) -> RResult<RVec<RStoredObject>, RError>;
    #[sabi(last_prefix_field)]
    fn list_uncommitted(&self) -> RResult<RVec<u64>, RError>;
}
pub type RJobBox = RJob_TO<'static, RBox<()>>;

#[sabi_trait]
pub trait RLocation: Send + Sync {
    fn create_stream(&self, scope: u8) -> RResult<ROutputBox, RError>;
    fn commit(&self, metadata: RSlice<'_, u8>) -> RResult<RCompleted, RError>;
    #[sabi(last_prefix_field)]
    fn dispose_on_failure(&self) -> RResult<(), RError>;
}
pub type RLocationBox = RLocation_TO<'static, RBox<()>>;

#[sabi_trait]
pub trait ROutput: Send {
    fn write(&mut self, buf: RSlice<'_, u8>) -> RResult<(), RError>;
    fn pos(&self) -> RResult<u64, RError>;
    #[sabi(last_prefix_field)]
    fn close_and_get_handle(&mut self) -> RResult<ROption<RHandle>, RError>;
}
pub type ROutputBox = ROutput_TO<'static, RBox<()>>;

#[sabi_trait]
pub trait RInput: Send {
    #[sabi(last_prefix_field)]
    fn read(&mut self, buf: RSliceMut<'_, u8>) -> RResult<usize, RError>;
}
pub type RInputBox = RInput_TO<'static, RBox<()>>;

/// Since API 1.1: the functions API 1.1 adds, exported by a plugin as a module of its own under
/// the symbol [`API_1_1_SYMBOL`], next to the root module.
///
/// Why not appended to the root module or a vtable: abi_stable's layout check accepts a library
/// whose prefix types have *more* fields than the loader's, never fewer, so a host whose job
/// vtable had grown would refuse every plugin built before. Each minor version therefore adds
/// one module of its own, whose type never changes after its release; a plugin built before it
/// has no such symbol, and the host answers `Unsupported` for its functions. A function that
/// acts on a job receives the job's own vtable object, which the plugin made downcastable.
#[repr(C)]
#[derive(StableAbi)]
pub struct Api11 {
    pub list_uncommitted_savepoints:
        extern "C" fn(job: &RJobBox, target: ROption<RStr<'_>>) -> RResult<RVec<RString>, RError>,
    pub list_savepoints:
        extern "C" fn(job: &RJobBox, target: ROption<RStr<'_>>) -> RResult<RVec<RString>, RError>,
    pub read_lease: extern "C" fn(job: &RJobBox) -> RResult<ROption<RLeaseRecord>, RError>,
    pub write_lease: extern "C" fn(
        job: &RJobBox,
        record: RSlice<'_, u8>,
        expected: ROption<RStr<'_>>,
    ) -> RResult<RString, RError>,
    /// Since API 1.1: check an options document with the plugin's own rules, creating and
    /// touching nothing (`StoragePlugin::validate`).
    pub validate_options: extern "C" fn(options: RStr<'_>) -> RResult<(), RError>,
    /// Since API 1.1: the options the plugin accepts, from its static manifest
    /// (`StaticManifest::options`).
    pub options: extern "C" fn() -> RResult<RVec<ROptionSpec>, RError>,
}

/// Since API 1.1: one option a plugin accepts (see `manifest::OptionSpec`).
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct ROptionSpec {
    pub name: RString,
    pub default: ROption<RString>,
    pub description: RString,
}

impl From<&crate::manifest::OptionSpec> for ROptionSpec {
    fn from(o: &crate::manifest::OptionSpec) -> Self {
        ROptionSpec {
            name: o.name.into(),
            default: o.default.map(RString::from).into(),
            description: o.description.into(),
        }
    }
}

impl From<ROptionSpec> for crate::manifest::OptionInfo {
    fn from(o: ROptionSpec) -> Self {
        crate::manifest::OptionInfo {
            name: o.name.into_string(),
            default: o.default.into_option().map(RString::into_string),
            description: o.description.into_string(),
        }
    }
}

/// Since API 1.1: a job's lease record and its version (see `JobStorage::read_lease`).
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct RLeaseRecord {
    pub bytes: RVec<u8>,
    pub version: RString,
}

/// What a plugin exports under [`API_1_1_SYMBOL`]: the module and its layout, which the host
/// checks against its own before it calls anything in it.
#[repr(C)]
pub struct Api11Export {
    pub layout: &'static abi_stable::type_layout::TypeLayout,
    pub api: Api11,
}

/// The symbol of [`Api11Export`].
pub const API_1_1_SYMBOL: &[u8] = b"cairn_plugin_api_1_1\0";

/// The root module every plugin exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(option))]
pub struct PluginModule {
    pub manifest: extern "C" fn() -> RResult<RManifest, RError>,
    #[sabi(last_prefix_field)]
    pub open: extern "C" fn(options: RStr<'_>, log: RHostLog) -> RResult<RStorageBox, RError>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "cairn_storage_plugin";
    const NAME: &'static str = "cairn storage plugin";
    // abi_stable's own version check is not used (the loader calls `check_layout` directly and
    // applies the rule in `version.rs`); this string only has to parse.
    const VERSION_STRINGS: VersionStrings = abi_stable::package_version_strings!();
}

// ---- conversions between layer 1 and layer 2 values ----

use crate::{
    error::{ErrorKind, StorageError},
    handle::{Scope, StateHandle},
    manifest::{Capabilities, Manifest},
    storage::{CompletedCheckpoint, LeaseRecord, ResolvedCheckpoint, StorageInfo, StoredObject},
    version::ApiVersion,
};

impl From<LeaseRecord> for RLeaseRecord {
    fn from(r: LeaseRecord) -> Self {
        RLeaseRecord {
            bytes: r.bytes.into(),
            version: r.version.into(),
        }
    }
}

impl From<RLeaseRecord> for LeaseRecord {
    fn from(r: RLeaseRecord) -> Self {
        LeaseRecord {
            bytes: r.bytes.into_vec(),
            version: r.version.into_string(),
        }
    }
}

impl From<StorageError> for RError {
    fn from(e: StorageError) -> Self {
        RError {
            kind: e.kind().code(),
            message: e.message().into(),
        }
    }
}

impl From<RError> for StorageError {
    fn from(e: RError) -> Self {
        StorageError::new(ErrorKind::from_code(e.kind), e.message.into_string())
    }
}

impl From<StateHandle> for RHandle {
    fn from(h: StateHandle) -> Self {
        match h {
            StateHandle::Inline(bytes) => RHandle {
                kind: HANDLE_INLINE,
                inline: bytes.into(),
                locator: RString::new(),
                size: 0,
                crc32c: 0,
            },
            StateHandle::Stored {
                locator,
                size,
                crc32c,
            } => RHandle {
                kind: HANDLE_STORED,
                inline: RVec::new(),
                locator: locator.into(),
                size,
                crc32c,
            },
        }
    }
}

impl From<&StateHandle> for RHandle {
    fn from(h: &StateHandle) -> Self {
        h.clone().into()
    }
}

impl TryFrom<RHandle> for StateHandle {
    type Error = StorageError;
    fn try_from(h: RHandle) -> Result<Self, StorageError> {
        match h.kind {
            HANDLE_INLINE => Ok(StateHandle::Inline(h.inline.into_vec())),
            HANDLE_STORED => Ok(StateHandle::Stored {
                locator: h.locator.into_string(),
                size: h.size,
                crc32c: h.crc32c,
            }),
            other => Err(StorageError::Unsupported(format!(
                "state handle kind {other} is unknown to this side of the plugin boundary"
            ))),
        }
    }
}

pub fn scope_to_raw(s: Scope) -> u8 {
    match s {
        Scope::Exclusive => SCOPE_EXCLUSIVE,
        Scope::Shared => SCOPE_SHARED,
    }
}

pub fn scope_from_raw(s: u8) -> Result<Scope, StorageError> {
    match s {
        SCOPE_EXCLUSIVE => Ok(Scope::Exclusive),
        SCOPE_SHARED => Ok(Scope::Shared),
        other => Err(StorageError::Unsupported(format!(
            "stream scope {other} is unknown"
        ))),
    }
}

impl From<Manifest> for RManifest {
    fn from(m: Manifest) -> Self {
        RManifest {
            name: m.name.into(),
            version: m.version.into(),
            api_major: m.api_version.major,
            api_minor: m.api_version.minor,
            description: m.description.into(),
            capabilities: m.capabilities.bits(),
            test_options: m.test_options.into(),
        }
    }
}

impl From<RManifest> for Manifest {
    fn from(m: RManifest) -> Self {
        Manifest {
            name: m.name.into_string(),
            version: m.version.into_string(),
            api_version: ApiVersion::new(m.api_major, m.api_minor),
            description: m.description.into_string(),
            capabilities: Capabilities::from_bits_truncate(m.capabilities),
            test_options: m.test_options.into_string(),
        }
    }
}

impl From<StorageInfo> for RStorageInfo {
    fn from(i: StorageInfo) -> Self {
        RStorageInfo {
            capabilities: i.capabilities.bits(),
            inline_threshold: i.inline_threshold,
            max_state_size: i.max_state_size.into(),
            location: i.location.into(),
        }
    }
}

impl From<RStorageInfo> for StorageInfo {
    fn from(i: RStorageInfo) -> Self {
        StorageInfo {
            capabilities: Capabilities::from_bits_truncate(i.capabilities),
            inline_threshold: i.inline_threshold,
            max_state_size: i.max_state_size.into(),
            location: i.location.into_string(),
        }
    }
}

impl From<CompletedCheckpoint> for RCompleted {
    fn from(c: CompletedCheckpoint) -> Self {
        RCompleted {
            checkpoint_id: c.checkpoint_id,
            pointer: c.pointer.into(),
        }
    }
}

impl From<RCompleted> for CompletedCheckpoint {
    fn from(c: RCompleted) -> Self {
        CompletedCheckpoint {
            checkpoint_id: c.checkpoint_id,
            pointer: c.pointer.into_string(),
        }
    }
}

impl From<StoredObject> for RStoredObject {
    fn from(o: StoredObject) -> Self {
        RStoredObject {
            locator: o.locator.into(),
            size: o.size,
        }
    }
}

impl From<RStoredObject> for StoredObject {
    fn from(o: RStoredObject) -> Self {
        StoredObject {
            locator: o.locator.into_string(),
            size: o.size,
        }
    }
}

impl From<ResolvedCheckpoint> for RResolved {
    fn from(r: ResolvedCheckpoint) -> Self {
        RResolved {
            pointer: r.pointer.into(),
            metadata: r.metadata.into(),
        }
    }
}

impl From<RResolved> for ResolvedCheckpoint {
    fn from(r: RResolved) -> Self {
        ResolvedCheckpoint {
            pointer: r.pointer.into_string(),
            metadata: r.metadata.into_vec(),
        }
    }
}
