//! Layer 3, the host side: load a plugin library through abi_stable and present it through the
//! safe traits of layer 2.
//!
//! The host's loader decides *which* file to load and checks it first (shared-library magic, the
//! raw `cairn_plugin_api_version` probe, permissions, pins); [`load_library`] then does the typed
//! part: it reads the library's own abi_stable header (never abi_stable's per-type module cache,
//! which would hand back the first plugin for every later path), checks the root module's layout,
//! and reads the manifest.
//!
//! The wrappers here add no behaviour of their own: they convert values, and turn an unknown
//! error kind into `Other`. Deadlines on blocking calls are the caller's business (the host runs
//! plugin calls that may hang on threads it can abandon).

use std::path::Path;

use abi_stable::{
    abi_stability::abi_checking::check_layout_compatibility,
    library::{lib_header_from_path, LibraryError, RawLibrary},
    std_types::{ROption, RResult, RSlice, RSliceMut, RStr},
    StableAbi,
};

use crate::{
    abi::{
        scope_to_raw, Api11, Api11Export, PluginModuleRef, RHandle, RInputBox, RJobBox,
        RLocationBox, ROutputBox, RStorageBox, API_1_1_SYMBOL,
    },
    error::{StorageError, StorageResult},
    handle::{Scope, StateHandle},
    manifest::Manifest,
    storage::{
        CheckpointLocation, CheckpointStorage, CompletedCheckpoint, InputStream, JobStorage,
        LeaseRecord, OutputStream, ResolvedCheckpoint, StorageInfo, StoredObject,
    },
};

/// Why the typed load of a library failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TypedLoadError {
    /// The dynamic loader refused the file.
    #[error("cannot be loaded: {0}")]
    Open(String),
    /// The file has no abi_stable root module: it is not a cairn plugin.
    #[error("is not a cairn storage plugin: it exports no plugin root module")]
    NoRootModule,
    /// The library was built with an incompatible abi_stable.
    #[error("was built with an incompatible abi_stable: {0}")]
    AbiStable(String),
    /// The root module's type layout differs from the host's.
    #[error("has an ABI layout mismatch: {summary}")]
    LayoutMismatch {
        /// One line: what differs.
        summary: String,
        /// abi_stable's full report, for debug logs.
        detail: String,
    },
    /// The root module constructor failed or panicked.
    #[error("failed to initialise: {0}")]
    Init(String),
    /// The manifest call failed, panicked, or returned an unusable manifest.
    #[error("has a bad manifest: {0}")]
    Manifest(String),
}

/// A loaded plugin library. Libraries are never unloaded.
#[derive(Clone)]
pub struct LoadedPlugin {
    module: PluginModuleRef,
    manifest: Manifest,
    /// The API 1.1 module, if the plugin has one (built against 1.1 or later).
    api_1_1: Option<&'static Api11>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("manifest", &self.manifest)
            .finish()
    }
}

/// Load the plugin library at `path`, check its layout and read its manifest.
///
/// Call this only after checking the library's API version through its raw probe symbol: a
/// library of another major version fails here with a layout mismatch, which is a worse message.
pub fn load_library(path: &Path) -> Result<LoadedPlugin, TypedLoadError> {
    let header = lib_header_from_path(path).map_err(|e| match e {
        LibraryError::OpenError { err, .. } => TypedLoadError::Open(err.to_string()),
        LibraryError::GetSymbolError { .. } => TypedLoadError::NoRootModule,
        LibraryError::InvalidAbiHeader(h) => TypedLoadError::AbiStable(format!("{h:?}")),
        other => TypedLoadError::Open(one_line(&other.to_string())),
    })?;
    let module = header
        .check_layout::<PluginModuleRef>()
        .map_err(|e| match e {
            LibraryError::AbiInstability(report) => {
                let detail = report.to_string();
                TypedLoadError::LayoutMismatch {
                    summary: summarize_layout_report(&detail),
                    detail,
                }
            }
            LibraryError::RootModule { err, .. } => {
                TypedLoadError::Init(one_line(&err.to_string()))
            }
            other => TypedLoadError::Init(one_line(&other.to_string())),
        })?;
    let manifest: Manifest = match (module.manifest())() {
        RResult::ROk(m) => m.into(),
        RResult::RErr(e) => {
            return Err(TypedLoadError::Manifest(StorageError::from(e).to_string()))
        }
    };
    manifest.validate().map_err(TypedLoadError::Manifest)?;
    let api_1_1 = api_1_1(path)?;
    Ok(LoadedPlugin {
        module,
        manifest,
        api_1_1,
    })
}

/// The plugin's API 1.1 module (see `abi::Api11`), after checking its layout; `None` for a
/// plugin built against API 1.0, which has no such symbol.
fn api_1_1(path: &Path) -> Result<Option<&'static Api11>, TypedLoadError> {
    // The library is loaded already (by `lib_header_from_path`); this takes another reference
    // to it, which is leaked like the first: libraries are never unloaded.
    let raw =
        RawLibrary::load_at(path).map_err(|e| TypedLoadError::Open(one_line(&e.to_string())))?;
    let raw: &'static RawLibrary = Box::leak(Box::new(raw));
    // SAFETY: a cairn plugin exports `API_1_1_SYMBOL` only as an `Api11Export` static (the
    // export macro writes it); its `layout` field, the first, is read before anything else and
    // checked against this crate's `Api11` below before the module is used.
    let export: *const Api11Export = match unsafe { raw.get::<*const Api11Export>(API_1_1_SYMBOL) }
    {
        Ok(symbol) => *symbol,
        Err(_) => return Ok(None),
    };
    // SAFETY: the symbol is the address of the plugin's `Api11Export` static (see above), which
    // lives as long as the library, and the library is never unloaded.
    let export: &'static Api11Export = unsafe { &*export };
    check_layout_compatibility(<Api11 as StableAbi>::LAYOUT, export.layout).map_err(|e| {
        let detail = e.to_string();
        TypedLoadError::LayoutMismatch {
            summary: summarize_layout_report(&detail),
            detail,
        }
    })?;
    Ok(Some(&export.api))
}

/// abi_stable's messages span lines; the loader's errors are one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reduce abi_stable's layout report (often hundreds of lines) to one line: the first concrete
/// difference it names, with the type it was found in, for example
/// `in type PluginModule: mismatched package (expected cairn-plugin-api, found my-fork)`.
fn summarize_layout_report(report: &str) -> String {
    let lines: Vec<&str> = report
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let Some(at) = lines.iter().position(|l| l.starts_with("Error:")) else {
        let first = lines
            .first()
            .copied()
            .unwrap_or("abi_stable reported no details");
        return format!(
            "{} (run with -v for abi_stable's full report)",
            one_line(first)
        );
    };
    let what = lines[at].trim_start_matches("Error:").trim();
    // The value after a "Expected:" / "Found:" header, up to the next header.
    let value_after = |header: &str| -> Option<String> {
        let start = lines[at..].iter().position(|l| *l == header)? + at + 1;
        let value: Vec<&str> = lines[start..]
            .iter()
            .take_while(|l| !l.ends_with(':') && !l.starts_with("Error:"))
            .take(3)
            .copied()
            .collect();
        (!value.is_empty()).then(|| value.join(" "))
    };
    // The type the error is inside: the first `type:` after the last "error(s)inside:" header.
    let inside = lines[..at]
        .iter()
        .rposition(|l| l.ends_with("inside:"))
        .unwrap_or(0);
    let in_type = lines[inside..at]
        .iter()
        .find_map(|l| l.strip_prefix("type:"))
        .map(|t| format!("in type {}: ", t.trim()))
        .unwrap_or_default();
    let mut s = format!("{in_type}{what}");
    match (value_after("Expected:"), value_after("Found:")) {
        (Some(e), Some(f)) => s.push_str(&format!(" (expected {e}, found {f})")),
        (Some(e), None) => s.push_str(&format!(" (expected {e})")),
        _ => {}
    }
    let mut s = one_line(&s);
    if s.len() > 300 {
        let mut cut = 300;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    format!("{s} (run with -v for abi_stable's full report)")
}

impl LoadedPlugin {
    /// The plugin's manifest, read at load.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Check the serialized `[storage.options]` table with the plugin's own rules, creating
    /// nothing (`StoragePlugin::validate`).
    ///
    /// Since API 1.1: a plugin built against API 1.0 answers the same `Unsupported` as the safe
    /// trait's default.
    pub fn validate(&self, options: &str) -> StorageResult<()> {
        let api = self.api_1_1("validate")?;
        into_result((api.validate_options)(RStr::from_str(options)))
    }

    /// The options the plugin accepts, with their defaults, from its static manifest (empty if
    /// it declares none).
    ///
    /// Since API 1.1: a plugin built against API 1.0 answers `Unsupported`.
    pub fn options(&self) -> StorageResult<Vec<crate::manifest::OptionInfo>> {
        let api = self.api_1_1("options")?;
        Ok(into_result((api.options)())?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The API 1.1 module, or for a plugin built against API 1.0 the same `Unsupported` as the
    /// safe trait's default for `call`.
    fn api_1_1(&self, call: &str) -> StorageResult<&'static Api11> {
        self.api_1_1
            .ok_or_else(|| crate::version::unsupported_since(crate::version::API_1_1, call))
    }

    /// Open a storage instance with the serialized `[storage.options]` table.
    pub fn open(&self, options: &str) -> StorageResult<Box<dyn CheckpointStorage>> {
        let inner = into_result((self.module.open())(
            RStr::from_str(options),
            crate::logging::host_log_sink(),
        ))?;
        // Read the info once: it is fixed for the instance, and a failure here (even a panic)
        // is an open failure rather than a surprise later.
        let info = into_result(inner.info())?.into();
        Ok(Box::new(LoadedStorage {
            inner,
            info,
            api_1_1: self.api_1_1,
        }))
    }
}

fn into_result<T>(r: RResult<T, crate::abi::RError>) -> StorageResult<T> {
    r.into_result().map_err(StorageError::from)
}

struct LoadedStorage {
    inner: RStorageBox,
    info: StorageInfo,
    api_1_1: Option<&'static Api11>,
}

impl CheckpointStorage for LoadedStorage {
    fn info(&self) -> StorageInfo {
        self.info.clone()
    }

    fn job(&self, job_id: &str) -> StorageResult<Box<dyn JobStorage>> {
        let inner = into_result(self.inner.job(RStr::from_str(job_id)))?;
        Ok(Box::new(LoadedJob {
            inner,
            api_1_1: self.api_1_1,
        }))
    }

    fn resolve(&self, pointer: &str) -> StorageResult<ResolvedCheckpoint> {
        into_result(self.inner.resolve(RStr::from_str(pointer))).map(Into::into)
    }

    fn open_handle(&self, handle: &StateHandle) -> StorageResult<Box<dyn InputStream>> {
        let inner = into_result(self.inner.open_handle(&RHandle::from(handle)))?;
        Ok(Box::new(LoadedInput { inner }))
    }

    fn discard(&self, handle: &StateHandle) -> StorageResult<()> {
        into_result(self.inner.discard(&RHandle::from(handle)))
    }

    fn dispose(&self, pointer: &str) -> StorageResult<()> {
        into_result(self.inner.dispose(RStr::from_str(pointer)))
    }

    fn corrupt_for_testing(&self, handle: &StateHandle) -> StorageResult<()> {
        into_result(self.inner.corrupt_for_testing(&RHandle::from(handle)))
    }
}

struct LoadedJob {
    inner: RJobBox,
    api_1_1: Option<&'static Api11>,
}

impl JobStorage for LoadedJob {
    fn begin_checkpoint(&self, checkpoint_id: u64) -> StorageResult<Box<dyn CheckpointLocation>> {
        let inner = into_result(self.inner.begin_checkpoint(checkpoint_id))?;
        Ok(Box::new(LoadedLocation { inner }))
    }

    fn begin_savepoint(
        &self,
        checkpoint_id: u64,
        target: Option<&str>,
    ) -> StorageResult<Box<dyn CheckpointLocation>> {
        let target: ROption<RStr<'_>> = target.map(RStr::from_str).into();
        let inner = into_result(self.inner.begin_savepoint(checkpoint_id, target))?;
        Ok(Box::new(LoadedLocation { inner }))
    }

    fn create_task_owned_stream(&self) -> StorageResult<Box<dyn OutputStream>> {
        let inner = into_result(self.inner.create_task_owned_stream())?;
        Ok(Box::new(LoadedOutput { inner }))
    }

    fn list_completed(&self) -> StorageResult<Vec<CompletedCheckpoint>> {
        Ok(into_result(self.inner.list_completed())?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    fn list_objects(&self) -> StorageResult<Vec<StoredObject>> {
        Ok(into_result(self.inner.list_objects())?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    fn list_uncommitted(&self) -> StorageResult<Vec<u64>> {
        Ok(into_result(self.inner.list_uncommitted())?.into_vec())
    }

    // The functions of API 1.1: a plugin built against API 1.0 has no API 1.1 module, and each
    // answers the same `Unsupported` as the safe trait's default (see `LoadedJob::api_1_1`).
    fn list_uncommitted_savepoints(&self, target: Option<&str>) -> StorageResult<Vec<String>> {
        let api = self.api_1_1("list_uncommitted_savepoints")?;
        let target: ROption<RStr<'_>> = target.map(RStr::from_str).into();
        Ok(
            into_result((api.list_uncommitted_savepoints)(&self.inner, target))?
                .into_iter()
                .map(|p| p.into_string())
                .collect(),
        )
    }

    fn list_savepoints(&self, target: Option<&str>) -> StorageResult<Vec<String>> {
        let api = self.api_1_1("list_savepoints")?;
        let target: ROption<RStr<'_>> = target.map(RStr::from_str).into();
        Ok(into_result((api.list_savepoints)(&self.inner, target))?
            .into_iter()
            .map(|p| p.into_string())
            .collect())
    }

    fn read_lease(&self) -> StorageResult<Option<LeaseRecord>> {
        let api = self.api_1_1("read_lease")?;
        Ok(into_result((api.read_lease)(&self.inner))?
            .into_option()
            .map(Into::into))
    }

    fn write_lease(&self, record: &[u8], expected: Option<&str>) -> StorageResult<String> {
        let api = self.api_1_1("write_lease")?;
        let expected: ROption<RStr<'_>> = expected.map(RStr::from_str).into();
        into_result((api.write_lease)(
            &self.inner,
            RSlice::from_slice(record),
            expected,
        ))
        .map(|v| v.into_string())
    }
}

impl LoadedJob {
    /// The API 1.1 module, or for a plugin built against API 1.0 the same `Unsupported` as the
    /// safe trait's default for `call`, so the host has one path for "not supported".
    fn api_1_1(&self, call: &str) -> StorageResult<&'static Api11> {
        self.api_1_1
            .ok_or_else(|| crate::version::unsupported_since(crate::version::API_1_1, call))
    }
}

struct LoadedLocation {
    inner: RLocationBox,
}

impl CheckpointLocation for LoadedLocation {
    fn create_stream(&self, scope: Scope) -> StorageResult<Box<dyn OutputStream>> {
        let inner = into_result(self.inner.create_stream(scope_to_raw(scope)))?;
        Ok(Box::new(LoadedOutput { inner }))
    }

    fn commit(&self, metadata: &[u8]) -> StorageResult<CompletedCheckpoint> {
        into_result(self.inner.commit(RSlice::from_slice(metadata))).map(Into::into)
    }

    fn dispose_on_failure(&self) -> StorageResult<()> {
        into_result(self.inner.dispose_on_failure())
    }
}

struct LoadedOutput {
    inner: ROutputBox,
}

impl OutputStream for LoadedOutput {
    fn write(&mut self, buf: &[u8]) -> StorageResult<()> {
        into_result(self.inner.write(RSlice::from_slice(buf)))
    }

    fn pos(&self) -> StorageResult<u64> {
        into_result(self.inner.pos())
    }

    fn close_and_get_handle(&mut self) -> StorageResult<Option<StateHandle>> {
        match into_result(self.inner.close_and_get_handle())?.into_option() {
            None => Ok(None),
            Some(h) => Ok(Some(StateHandle::try_from(h)?)),
        }
    }
}

struct LoadedInput {
    inner: RInputBox,
}

impl InputStream for LoadedInput {
    fn read(&mut self, buf: &mut [u8]) -> StorageResult<usize> {
        let len = buf.len();
        let n = into_result(self.inner.read(RSliceMut::from_mut_slice(buf)))?;
        if n > len {
            return Err(StorageError::Corrupt(format!(
                "plugin reported reading {n} bytes into a {len} byte buffer"
            )));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::summarize_layout_report;

    #[test]
    fn a_layout_report_becomes_one_line() {
        let report =
            "Compared <this>:\n    type:PrefixRef<'a, PluginModule>\n1 error(s)inside:\n    \
            <other>\n    type:PluginModule\n    size:16 align:8\n\nError:mismatched package\n\
            Expected:\n    cairn-plugin-api\nFound:\n    my-fork\n";
        assert_eq!(
            summarize_layout_report(report),
            "in type PluginModule: mismatched package (expected cairn-plugin-api, found my-fork) \
             (run with -v for abi_stable's full report)"
        );
    }
}
