//! The opened storage: [`ObjStorage`], the plugin's [`CheckpointStorage`].
//!
//! It holds the state every job, location and stream shares ([`Shared`]: the runtime, the
//! clients and the settings, behind an `Arc`) and implements the calls that work from a pointer
//! or a handle alone: `resolve`, `open_handle`, `discard`, `dispose`. They read only the store
//! and the string they are given, so they work the same from a fresh process or another host.
//!
//! Deleting is deliberately narrow. [`remove_location`] deletes only objects this plugin writes
//! directly under a location (`_metadata` first, then generated state objects) and leaves
//! anything else, with a warning. `dispose` also insists that the pointer is one of this
//! storage's `<url>/<job>/chk-<n>` locations or a place named like a savepoint, so a wrong
//! pointer cannot delete a user's objects.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, PutPayload};

use cairn_plugin_api::{
    Capabilities, CheckpointStorage, InlineInput, InputStream, JobStorage, ResolvedCheckpoint,
    StateHandle, StorageError, StorageInfo, StorageResult,
};

use crate::{
    error::{ObjError, ObjResult},
    job::ObjJob,
    layout::{self, Place, Scheme, METADATA_OBJECT},
    metafile,
    options::Options,
    store::{Runtime, Stores},
    stream::ObjInputStream,
    COMMON_CAPABILITIES,
};

/// What every object of one storage instance shares.
pub(crate) struct Shared {
    /// The clients, by bucket.
    pub(crate) stores: Stores,
    /// Where checkpoints go.
    pub(crate) base: Place,
    /// The default savepoint target.
    pub(crate) savepoint_url: Option<Place>,
    /// Streams of at most this many bytes give inline handles.
    pub(crate) inline_threshold: u64,
    /// Bytes per uploaded part.
    pub(crate) part_size: u64,
    /// What this instance can do.
    pub(crate) capabilities: Capabilities,
    /// The plugin's runtime. Declared last, so it is dropped after the clients.
    pub(crate) rt: Runtime,
}

impl Shared {
    /// The client of the storage URL.
    pub(crate) fn base_store(&self) -> ObjResult<Arc<dyn ObjectStore>> {
        self.stores.for_place(&self.base)
    }

    /// Every object under `place` (recursively).
    pub(crate) fn list_all(
        &self,
        store: &dyn ObjectStore,
        place: &Place,
    ) -> ObjResult<Vec<ObjectMeta>> {
        let prefix = place.list_prefix()?;
        self.rt
            .block_on(store.list(prefix.as_ref()).try_collect::<Vec<_>>())
            .map_err(|e| ObjError::store(format!("listing {place}"), e))
    }

    /// Whether `place` holds a committed `_metadata`.
    pub(crate) fn is_committed(&self, store: &dyn ObjectStore, place: &Place) -> ObjResult<bool> {
        let meta = place.join(METADATA_OBJECT);
        match self.rt.block_on(store.head(&meta.key()?)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(ObjError::store(format!("looking for {meta}"), e)),
        }
    }
}

/// The object-store checkpoint storage.
pub(crate) struct ObjStorage {
    shared: Arc<Shared>,
}

impl ObjStorage {
    /// Open the storage: start the runtime and build the storage URL's client. No request is
    /// made: a wrong endpoint or credential shows at the first call that needs the store.
    pub(crate) fn open(options: Options) -> ObjResult<Self> {
        let rt = Runtime::start()?;
        let base = options.url.clone();
        let mut capabilities = COMMON_CAPABILITIES;
        if base.scheme != Scheme::Memory {
            capabilities |= Capabilities::PERSISTENT;
        }
        if base.scheme.is_cloud() {
            capabilities |= Capabilities::HIGHLY_AVAILABLE;
        }
        let shared = Shared {
            savepoint_url: options.savepoint_url.clone(),
            inline_threshold: options.inline_threshold,
            part_size: options.part_size,
            capabilities,
            base,
            stores: Stores::open(options)?,
            rt,
        };
        tracing::debug!(url = %shared.base.url(), "object-store checkpoint storage opened");
        Ok(ObjStorage {
            shared: Arc::new(shared),
        })
    }

    fn job_inner(&self, job_id: &str) -> ObjResult<ObjJob> {
        layout::validate_job_id(job_id)?;
        // An object store has no directories to create: the job's prefixes come into being with
        // their first object.
        ObjJob::new(self.shared.clone(), job_id)
    }

    fn resolve_inner(&self, pointer: &str) -> ObjResult<ResolvedCheckpoint> {
        let place = layout::pointer_place(pointer)?;
        let store = self.shared.stores.for_place(&place)?;
        let meta = place.join(METADATA_OBJECT);
        let key = meta.key()?;
        let bytes = self
            .shared
            .rt
            .block_on(async { store.get(&key).await?.bytes().await })
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => ObjError::NoCheckpoint {
                    pointer: place.to_string(),
                },
                e => ObjError::store(format!("reading {meta}"), e),
            })?;
        let metadata = metafile::decode(&bytes).map_err(|why| ObjError::CorruptMetadata {
            key: meta.to_string(),
            why,
        })?;
        Ok(ResolvedCheckpoint {
            pointer: place.to_string(),
            metadata,
        })
    }

    fn open_inner(&self, handle: &StateHandle) -> ObjResult<Box<dyn InputStream>> {
        match handle {
            StateHandle::Inline(bytes) => Ok(Box::new(InlineInput::new(bytes.clone()))),
            StateHandle::Stored {
                locator,
                size,
                crc32c,
            } => {
                let place = layout::locator_place(&self.shared.base, locator)?;
                let store = self.shared.stores.for_place(&place)?;
                Ok(Box::new(ObjInputStream::open(
                    self.shared.clone(),
                    store.as_ref(),
                    &place.key()?,
                    locator,
                    *size,
                    *crc32c,
                )?))
            }
        }
    }

    /// Get the object, flip the lowest bit of its middle byte, and put it back.
    fn corrupt_inner(&self, handle: &StateHandle) -> ObjResult<()> {
        let StateHandle::Stored { locator, .. } = handle else {
            return Err(ObjError::InvalidLocator {
                locator: handle.describe(),
                why: "an inline handle has no stored bytes to corrupt; its bytes live in the \
                      metadata"
                    .into(),
            });
        };
        let place = layout::locator_place(&self.shared.base, locator)?;
        let store = self.shared.stores.for_place(&place)?;
        let key = place.key()?;
        let what = || format!("corrupting handle '{locator}' ({place})");
        let bytes = self
            .shared
            .rt
            .block_on(async { store.get(&key).await?.bytes().await })
            .map_err(|e| ObjError::store(what(), e))?;
        let mut bytes = bytes.to_vec();
        if bytes.is_empty() {
            return Err(ObjError::Corrupt {
                locator: locator.clone(),
                why: "the object is empty; there is nothing to corrupt".into(),
            });
        }
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        self.shared
            .rt
            .block_on(store.put(&key, PutPayload::from(Bytes::from(bytes))))
            .map_err(|e| ObjError::store(what(), e))?;
        Ok(())
    }

    fn discard_inner(&self, handle: &StateHandle) -> ObjResult<()> {
        let StateHandle::Stored { locator, .. } = handle else {
            return Ok(());
        };
        let place = layout::locator_place(&self.shared.base, locator)?;
        let store = self.shared.stores.for_place(&place)?;
        match self.shared.rt.block_on(store.delete(&place.key()?)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(ObjError::store(
                format!("discarding handle '{locator}' ({place})"),
                e,
            )),
        }
    }

    fn dispose_inner(&self, pointer: &str) -> ObjResult<()> {
        let place = layout::pointer_place(pointer)?;
        if layout::classify_location(&self.shared.base, &place).is_none() {
            return Err(ObjError::InvalidPointer {
                pointer: pointer.to_string(),
                why: format!(
                    "it is neither a checkpoint location of this storage ({}/<job>/chk-<n>) nor \
                     a savepoint location (savepoint-<job>-<hex>); refusing to delete it",
                    self.shared.base
                ),
            });
        }
        remove_location(&self.shared, &place, true)
    }
}

impl CheckpointStorage for ObjStorage {
    fn info(&self) -> StorageInfo {
        StorageInfo {
            capabilities: self.shared.capabilities,
            inline_threshold: self.shared.inline_threshold,
            max_state_size: None,
            location: self.shared.base.url(),
        }
    }

    fn job(&self, job_id: &str) -> StorageResult<Box<dyn JobStorage>> {
        Ok(Box::new(self.job_inner(job_id)?))
    }

    fn resolve(&self, pointer: &str) -> StorageResult<ResolvedCheckpoint> {
        Ok(self.resolve_inner(pointer)?)
    }

    fn open_handle(&self, handle: &StateHandle) -> StorageResult<Box<dyn InputStream>> {
        Ok(self.open_inner(handle)?)
    }

    fn discard(&self, handle: &StateHandle) -> StorageResult<()> {
        Ok(self.discard_inner(handle)?)
    }

    fn dispose(&self, pointer: &str) -> StorageResult<()> {
        Ok(self.dispose_inner(pointer)?)
    }

    fn corrupt_for_testing(&self, handle: &StateHandle) -> StorageResult<()> {
        match self.corrupt_inner(handle) {
            Err(ObjError::InvalidLocator { why, .. }) if handle.is_inline() => {
                Err(StorageError::Unsupported(why))
            }
            other => Ok(other?),
        }
    }
}

/// Remove a location: its `_metadata` first (so it stops being complete before anything else
/// goes), then its state objects. Refuses a committed location unless `committed_ok`. Objects
/// this plugin does not write are left, with a warning. Nothing there is success.
pub(crate) fn remove_location(shared: &Shared, place: &Place, committed_ok: bool) -> ObjResult<()> {
    let store = shared.stores.for_place(place)?;
    let objects = shared.list_all(store.as_ref(), place)?;
    let mut committed = false;
    let mut state = Vec::new();
    for meta in objects {
        let location = meta.location.as_ref();
        let name = location
            .strip_prefix(&place.prefix)
            .map(|rest| rest.trim_start_matches('/'))
            .unwrap_or(location);
        if name.is_empty() {
            // A directory marker for the location itself (SeaweedFS lists one); not an object.
        } else if name == METADATA_OBJECT {
            committed = true;
        } else if layout::is_state_file_name(name) {
            state.push(meta.location);
        } else {
            tracing::warn!(
                location = %place,
                object = %meta.location,
                "leaving an object this plugin did not write"
            );
        }
    }
    if committed {
        if !committed_ok {
            return Err(ObjError::DisposeCommitted {
                pointer: place.to_string(),
            });
        }
        let meta = place.join(METADATA_OBJECT);
        match shared.rt.block_on(store.delete(&meta.key()?)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(ObjError::store(format!("deleting {meta}"), e)),
        }
    }
    let deletes = futures::stream::iter(state.into_iter().map(Ok)).boxed();
    shared
        .rt
        .block_on(async {
            store
                .delete_stream(deletes)
                .try_for_each(|_| async { Ok(()) })
                .await
        })
        .or_else(|e| match e {
            object_store::Error::NotFound { .. } => Ok(()),
            e => Err(ObjError::store(format!("deleting the state of {place}"), e)),
        })?;
    if place.scheme == Scheme::File {
        // A local directory is left behind by the object-store API; remove it if it is empty.
        let _ = std::fs::remove_dir(place.to_string());
    }
    Ok(())
}
