//! The plugin side of the boundary: adapters from the safe traits (layer 2) to the raw ABI
//! (layer 1), and the [`export_storage_plugin!`](crate::export_storage_plugin) macro that
//! instantiates them in a plugin crate.
//!
//! Every call into plugin code goes through [`guard`], which catches a panic and turns it into a
//! `Panicked` error carrying the panic message. A panic that reached a `#[sabi_trait]` shim would
//! end the whole host process, so no plugin code runs outside a guard, including `Drop`.

use std::{
    any::Any,
    panic::{catch_unwind, AssertUnwindSafe},
};

use abi_stable::{
    library::{CheckTypeLayout, LibHeader, RootModuleResult},
    prefix_type::PrefixTypeTrait,
    sabi_trait::{TD_CanDowncast, TD_Opaque},
    std_types::{RErr, ROk, ROption, RResult, RSlice, RSliceMut, RStr, RVec},
};

use crate::{
    abi::{
        scope_from_raw, Api11, Api11Export, PluginModule, PluginModuleRef, RCompleted, RError,
        RHandle, RHostLog, RInput, RInputBox, RInput_TO, RJob, RJobBox, RJob_TO, RLeaseRecord,
        RLocation, RLocationBox, RLocation_TO, RManifest, ROutput, ROutputBox, ROutput_TO,
        RResolved, RStorage, RStorageBox, RStorageInfo, RStorage_TO, RStoredObject,
    },
    error::StorageError,
    handle::StateHandle,
    storage::{
        CheckpointLocation, CheckpointStorage, InputStream, JobStorage, OutputStream, StoragePlugin,
    },
    version::ApiVersion,
};

/// The symbol name abi_stable looks up for the root module (its `ROOT_MODULE_LOADER_NAME`).
/// It must be a literal for `#[export_name]`; a test checks it against abi_stable's constant.
#[doc(hidden)]
#[macro_export]
macro_rules! __cairn_root_module_symbol {
    () => {
        "_1as_0lib_1header_0root_bmodule_bloader"
    };
}

/// Export a [`StoragePlugin`] implementation from a `cdylib` crate.
///
/// ```text
/// struct MyPlugin;
/// impl cairn_plugin_api::StoragePlugin for MyPlugin { /* manifest, open */ }
/// cairn_plugin_api::export_storage_plugin!(MyPlugin);
/// ```
///
/// This generates three symbols: `cairn_plugin_manifest_section`, the manifest as bytes in the
/// ELF section `.cairn_manifest` (empty unless the plugin sets
/// [`StoragePlugin::STATIC_MANIFEST`]; see [`crate::section`]), which the host reads without
/// running any code; `cairn_plugin_api_version`, a plain C function the host calls first once
/// it loads the library, to check API compatibility; and abi_stable's root module, whose layout
/// the host checks before any storage call. Every call the host makes into the plugin is guarded against panics,
/// and the plugin's `tracing` events are forwarded to the host's subscriber.
///
/// Use it once per library.
#[macro_export]
macro_rules! export_storage_plugin {
    ($plugin:ty) => {
        $crate::export_storage_plugin!(@api_version $plugin, $crate::API_VERSION);
    };
    // Hidden form for the harness' version-skew fixtures: claim another API version. A real
    // plugin that lies about its version is refused by the host, or worse.
    (@api_version $plugin:ty, $api:expr) => {
        // Data, not code: the host reads it from the file. Exported so that the linker keeps it.
        #[doc(hidden)]
        #[cfg_attr(
            not(any(target_vendor = "apple", target_os = "windows")),
            unsafe(link_section = ".cairn_manifest")
        )]
        #[unsafe(export_name = "cairn_plugin_manifest_section")]
        pub static __CAIRN_MANIFEST_SECTION: [u8; $crate::__private::section_len::<$plugin>()] =
            $crate::__private::section_bytes::<$plugin, { $crate::__private::section_len::<$plugin>() }>($api);

        #[doc(hidden)]
        #[unsafe(export_name = "cairn_plugin_api_version")]
        pub extern "C" fn __cairn_plugin_api_version() -> u64 {
            $crate::__private::probe_word($api)
        }

        #[doc(hidden)]
        #[unsafe(export_name = $crate::__cairn_root_module_symbol!())]
        pub static __CAIRN_ROOT_MODULE: $crate::__private::ExportedModule =
            $crate::__private::export_module::<$plugin>();

        $crate::__cairn_export_api_1_1!($plugin);
    };
}

/// The API 1.1 module's export (see `abi::Api11`); empty in a build of the API 1.0 ABI.
#[doc(hidden)]
#[cfg(not(feature = "__api_1_0"))]
#[macro_export]
macro_rules! __cairn_export_api_1_1 {
    ($plugin:ty) => {
        #[doc(hidden)]
        #[unsafe(export_name = "cairn_plugin_api_1_1")]
        pub static __CAIRN_API_1_1: $crate::__private::Api11Export =
            $crate::__private::api_1_1::<$plugin>();
    };
}

/// The API 1.1 module's export: none, in a build of the API 1.0 ABI.
#[doc(hidden)]
#[cfg(feature = "__api_1_0")]
#[macro_export]
macro_rules! __cairn_export_api_1_1 {
    ($plugin:ty) => {};
}

/// The root module header of a plugin library, as a static.
pub type ExportedModule = LibHeader;

/// What `cairn_plugin_api_version` returns.
pub fn probe_word(api: ApiVersion) -> u64 {
    api.to_word()
}

/// The root-module header for plugin `P`; the static the macro exports.
pub const fn export_module<P: StoragePlugin>() -> LibHeader {
    // SAFETY: `constructor::<P>` returns the result of `__call_root_module_loader` on a function
    // returning `PluginModuleRef`, which is exactly the `PrefixRef` erased from `PluginModuleRef`
    // that `from_constructor::<PluginModuleRef>` requires.
    unsafe {
        LibHeader::from_constructor::<PluginModuleRef>(constructor::<P>, CheckTypeLayout::Yes)
    }
}

extern "C" fn constructor<P: StoragePlugin>() -> RootModuleResult {
    abi_stable::library::__call_root_module_loader(module::<P>)
}

fn module<P: StoragePlugin>() -> PluginModuleRef {
    PluginModule {
        manifest: manifest::<P>,
        open: open::<P>,
    }
    .leak_into_prefix()
}

extern "C" fn manifest<P: StoragePlugin>() -> RResult<RManifest, RError> {
    guard("manifest", || Ok(P::manifest().into()))
}

extern "C" fn open<P: StoragePlugin>(
    options: RStr<'_>,
    log: RHostLog,
) -> RResult<RStorageBox, RError> {
    crate::logging::forward_to_host(log);
    guard("open", || {
        let storage = P::open(options.as_str())?;
        Ok(RStorage_TO::from_value(Guarded::new(storage), TD_Opaque))
    })
}

/// Turn a panic payload into its message.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Run plugin code, turning its error into an `RError` and a panic into a `Panicked` error.
fn guard<T>(call: &str, f: impl FnOnce() -> Result<T, StorageError>) -> RResult<T, RError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => ROk(v),
        Ok(Err(e)) => RErr(e.into()),
        Err(payload) => RErr(
            StorageError::Panicked(format!("in {call}(): {}", panic_message(payload.as_ref())))
                .into(),
        ),
    }
}

/// A plugin object behind an ABI vtable. Dropping it drops the object inside a panic guard.
struct Guarded<T>(Option<T>);

impl<T> Guarded<T> {
    fn new(inner: T) -> Self {
        Guarded(Some(inner))
    }

    fn get(&self) -> &T {
        // The option is only emptied by `drop`.
        self.0.as_ref().expect("object used after drop")
    }

    fn get_mut(&mut self) -> &mut T {
        self.0.as_mut().expect("object used after drop")
    }
}

impl<T> Drop for Guarded<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(inner))) {
                tracing::error!(
                    "plugin object panicked while being dropped: {}",
                    panic_message(payload.as_ref())
                );
            }
        }
    }
}

fn job_box(job: Box<dyn JobStorage>) -> RJobBox {
    // Downcastable, so that the functions of later API versions (exported beside the root
    // module, see `abi::Api11`) can reach the job behind the vtable object the host hands back.
    RJob_TO::from_value(Guarded::new(job), TD_CanDowncast)
}

/// The API 1.1 module every plugin built against API 1.1 or later exports, for plugin `P`.
pub const fn api_1_1<P: StoragePlugin>() -> Api11Export {
    Api11Export {
        layout: <Api11 as abi_stable::StableAbi>::LAYOUT,
        api: Api11 {
            list_uncommitted_savepoints,
            list_savepoints,
            read_lease,
            write_lease,
            validate_options: validate_options::<P>,
            options: options::<P>,
        },
    }
}

extern "C" fn validate_options<P: StoragePlugin>(options: RStr<'_>) -> RResult<(), RError> {
    guard("validate", || P::validate(options.as_str()))
}

extern "C" fn options<P: StoragePlugin>() -> RResult<RVec<crate::abi::ROptionSpec>, RError> {
    guard("options", || {
        Ok(P::STATIC_MANIFEST
            .map_or(&[][..], |m| m.options)
            .iter()
            .map(crate::abi::ROptionSpec::from)
            .collect())
    })
}

/// The job behind a vtable object the host handed back, if this plugin made it.
fn job_of(job: &RJobBox) -> Result<&dyn JobStorage, StorageError> {
    job.obj
        .downcast_as::<Guarded<Box<dyn JobStorage>>>()
        .map(|g| g.get().as_ref())
        .map_err(|_| {
            StorageError::Other("the host passed a job object this plugin did not make".to_string())
        })
}

extern "C" fn list_uncommitted_savepoints(
    job: &RJobBox,
    target: ROption<RStr<'_>>,
) -> RResult<RVec<abi_stable::std_types::RString>, RError> {
    guard("list_uncommitted_savepoints", || {
        let target = target.into_option();
        Ok(job_of(job)?
            .list_uncommitted_savepoints(target.as_ref().map(|t| t.as_str()))?
            .into_iter()
            .map(abi_stable::std_types::RString::from)
            .collect())
    })
}

extern "C" fn list_savepoints(
    job: &RJobBox,
    target: ROption<RStr<'_>>,
) -> RResult<RVec<abi_stable::std_types::RString>, RError> {
    guard("list_savepoints", || {
        let target = target.into_option();
        Ok(job_of(job)?
            .list_savepoints(target.as_ref().map(|t| t.as_str()))?
            .into_iter()
            .map(abi_stable::std_types::RString::from)
            .collect())
    })
}

extern "C" fn read_lease(job: &RJobBox) -> RResult<ROption<RLeaseRecord>, RError> {
    guard("read_lease", || {
        Ok(job_of(job)?.read_lease()?.map(RLeaseRecord::from).into())
    })
}

extern "C" fn write_lease(
    job: &RJobBox,
    record: RSlice<'_, u8>,
    expected: ROption<RStr<'_>>,
) -> RResult<abi_stable::std_types::RString, RError> {
    guard("write_lease", || {
        let expected = expected.into_option();
        job_of(job)?
            .write_lease(record.as_slice(), expected.as_ref().map(|e| e.as_str()))
            .map(Into::into)
    })
}

fn location_box(loc: Box<dyn CheckpointLocation>) -> RLocationBox {
    RLocation_TO::from_value(Guarded::new(loc), TD_Opaque)
}

fn output_box(out: Box<dyn OutputStream>) -> ROutputBox {
    ROutput_TO::from_value(Guarded::new(out), TD_Opaque)
}

fn input_box(input: Box<dyn InputStream>) -> RInputBox {
    RInput_TO::from_value(Guarded::new(input), TD_Opaque)
}

impl RStorage for Guarded<Box<dyn CheckpointStorage>> {
    fn info(&self) -> RResult<RStorageInfo, RError> {
        guard("info", || Ok(self.get().info().into()))
    }

    fn job(&self, job_id: RStr<'_>) -> RResult<RJobBox, RError> {
        guard("job", || self.get().job(job_id.as_str()).map(job_box))
    }

    fn resolve(&self, pointer: RStr<'_>) -> RResult<RResolved, RError> {
        guard("resolve", || {
            self.get().resolve(pointer.as_str()).map(Into::into)
        })
    }

    fn open_handle(&self, handle: &RHandle) -> RResult<RInputBox, RError> {
        guard("open_handle", || {
            let handle = StateHandle::try_from(handle.clone())?;
            self.get().open_handle(&handle).map(input_box)
        })
    }

    fn discard(&self, handle: &RHandle) -> RResult<(), RError> {
        guard("discard", || {
            let handle = StateHandle::try_from(handle.clone())?;
            self.get().discard(&handle)
        })
    }

    fn dispose(&self, pointer: RStr<'_>) -> RResult<(), RError> {
        guard("dispose", || self.get().dispose(pointer.as_str()))
    }

    fn corrupt_for_testing(&self, handle: &RHandle) -> RResult<(), RError> {
        guard("corrupt_for_testing", || {
            let handle = StateHandle::try_from(handle.clone())?;
            self.get().corrupt_for_testing(&handle)
        })
    }
}

impl RJob for Guarded<Box<dyn JobStorage>> {
    fn begin_checkpoint(&self, checkpoint_id: u64) -> RResult<RLocationBox, RError> {
        guard("begin_checkpoint", || {
            self.get().begin_checkpoint(checkpoint_id).map(location_box)
        })
    }

    fn begin_savepoint(
        &self,
        checkpoint_id: u64,
        target: ROption<RStr<'_>>,
    ) -> RResult<RLocationBox, RError> {
        guard("begin_savepoint", || {
            let target = target.into_option();
            self.get()
                .begin_savepoint(checkpoint_id, target.as_ref().map(|t| t.as_str()))
                .map(location_box)
        })
    }

    fn create_task_owned_stream(&self) -> RResult<ROutputBox, RError> {
        guard("create_task_owned_stream", || {
            self.get().create_task_owned_stream().map(output_box)
        })
    }

    fn list_completed(&self) -> RResult<RVec<RCompleted>, RError> {
        guard("list_completed", || {
            Ok(self
                .get()
                .list_completed()?
                .into_iter()
                .map(Into::into)
                .collect())
        })
    }

    fn list_objects(&self) -> RResult<RVec<RStoredObject>, RError> {
        guard("list_objects", || {
            Ok(self
                .get()
                .list_objects()?
                .into_iter()
                .map(Into::into)
                .collect())
        })
    }

    fn list_uncommitted(&self) -> RResult<RVec<u64>, RError> {
        guard("list_uncommitted", || {
            Ok(self.get().list_uncommitted()?.into())
        })
    }
}

impl RLocation for Guarded<Box<dyn CheckpointLocation>> {
    fn create_stream(&self, scope: u8) -> RResult<ROutputBox, RError> {
        guard("create_stream", || {
            self.get()
                .create_stream(scope_from_raw(scope)?)
                .map(output_box)
        })
    }

    fn commit(&self, metadata: RSlice<'_, u8>) -> RResult<RCompleted, RError> {
        guard("commit", || {
            self.get().commit(metadata.as_slice()).map(Into::into)
        })
    }

    fn dispose_on_failure(&self) -> RResult<(), RError> {
        guard("dispose_on_failure", || self.get().dispose_on_failure())
    }
}

impl ROutput for Guarded<Box<dyn OutputStream>> {
    fn write(&mut self, buf: RSlice<'_, u8>) -> RResult<(), RError> {
        guard("write", || self.get_mut().write(buf.as_slice()))
    }

    fn pos(&self) -> RResult<u64, RError> {
        guard("pos", || self.get().pos())
    }

    fn close_and_get_handle(&mut self) -> RResult<ROption<RHandle>, RError> {
        guard("close_and_get_handle", || {
            Ok(self
                .get_mut()
                .close_and_get_handle()?
                .map(RHandle::from)
                .into())
        })
    }
}

impl RInput for Guarded<Box<dyn InputStream>> {
    fn read(&mut self, mut buf: RSliceMut<'_, u8>) -> RResult<usize, RError> {
        guard("read", || self.get_mut().read(buf.as_mut_slice()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_module_symbol_matches_abi_stable() {
        assert_eq!(
            __cairn_root_module_symbol!(),
            abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
    }

    #[test]
    fn guard_turns_a_panic_into_an_error() {
        let r = super::guard::<()>("write", || panic!("boom {}", 7));
        match r {
            abi_stable::std_types::RErr(e) => {
                assert_eq!(e.kind, crate::ErrorKind::Panicked.code());
                assert_eq!(e.message.as_str(), "in write(): boom 7");
            }
            abi_stable::std_types::ROk(()) => panic!("expected an error"),
        }
    }
}
