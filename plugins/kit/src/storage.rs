//! The six plugin-API traits, implemented once over any [`BlobStore`]: [`Checkpoints`] (the
//! storage), its jobs, locations and streams.
//!
//! # Commit once
//!
//! A location's commit syncs what its metadata may refer to ([`BlobStore::sync`] of the
//! location, and for checkpoints the job's `shared/` and `taskowned/`), then puts the framed
//! metadata with [`PutMode::Create`]: the store decides which of two writers wins, even across
//! processes and hosts. The location also remembers its own phase, so a second commit through
//! one location is `AlreadyExists` without asking the store.
//!
//! # Dispose order
//!
//! Removing a location deletes `_metadata` first and syncs (so it stops being complete before
//! anything else goes), then its state objects and any scratch objects of the store. Objects
//! the kit did not write are left where they are, each named in a warning. A location that is
//! already gone is success.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use cairn_plugin_api::{
    Capabilities, CheckpointLocation, CheckpointStorage, CompletedCheckpoint, InlineInput,
    InputStream, JobId, JobStorage, OutputStream, ResolvedCheckpoint, Scope, StateHandle,
    StorageError, StorageInfo, StorageResult, StoredObject,
};

use crate::{
    blob::{PutMode, Root},
    frame,
    layout::{self, Locator, METADATA, SHARED, TASK_OWNED},
    lease,
    stream::{Input, Output, Target},
    Places,
};

/// How a [`Checkpoints`] behaves, besides its stores.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Streams of at most this many bytes give inline handles.
    pub inline_threshold: u64,
    /// Whether larger streams are stored. `false` makes an inline-only backend, whose
    /// `inline_threshold` is its size limit per stream (`CapacityExceeded` past it).
    pub stored: bool,
    /// What this instance reports it can do.
    pub capabilities: Capabilities,
    /// Where checkpoints go, for people (`info().location`). Empty: the base's root.
    pub location: String,
}

impl Settings {
    /// A backend that stores state above `inline_threshold` bytes and can do `capabilities`.
    pub fn stored(inline_threshold: u64, capabilities: Capabilities) -> Self {
        Settings {
            inline_threshold,
            stored: true,
            capabilities,
            location: String::new(),
        }
    }
}

/// A storage instance over a base [`Root`] (where checkpoints go) and [`Places`] (where
/// savepoints, and pointers and locators from elsewhere, go): the whole `CheckpointStorage` a
/// plugin's `open` returns.
#[derive(Clone)]
pub struct Checkpoints {
    inner: Arc<Inner>,
}

struct Inner {
    base: Root,
    places: Arc<dyn Places>,
    savepoint_target: Option<String>,
    settings: Settings,
}

impl Checkpoints {
    /// A storage whose checkpoints go to `base`, whose savepoints go to the target given at
    /// `begin_savepoint` or else to `savepoint_target`, opened through `places`.
    pub fn new(
        base: Root,
        places: Arc<dyn Places>,
        savepoint_target: Option<String>,
        settings: Settings,
    ) -> Self {
        Checkpoints {
            inner: Arc::new(Inner {
                base,
                places,
                savepoint_target,
                settings,
            }),
        }
    }
}

impl Inner {
    /// The root a pointer names. A checkpoint must be under this storage's base (nothing
    /// outside it is read or deleted); a savepoint may be anywhere its place opens.
    fn root_of_pointer(&self, pointer: &str, p: &layout::Pointer) -> StorageResult<Root> {
        let root = self.root_of(&p.root)?;
        if p.checkpoint.is_some() && !self.is_base(&root) {
            return Err(StorageError::InvalidConfig(format!(
                "pointer {} is not a checkpoint of this storage, whose checkpoints are under {}; \
                 nothing outside it is read or deleted",
                layout::shown(pointer),
                self.base.shown
            )));
        }
        Ok(root)
    }

    /// The root a savepoint locator or pointer names: the base, or a place opened without
    /// creating anything.
    fn root_of(&self, place: &str) -> StorageResult<Root> {
        if place.trim_end_matches('/') == self.base.shown.trim_end_matches('/') {
            return Ok(self.base.clone());
        }
        let root = self.places.open(place, false)?;
        if root.shown == self.base.shown {
            return Ok(self.base.clone());
        }
        Ok(root)
    }

    fn is_base(&self, root: &Root) -> bool {
        root.shown == self.base.shown
    }

    fn stored_handle_error(&self, handle: &StateHandle) -> StorageError {
        StorageError::Unsupported(format!(
            "{}: this backend keeps all state inline and has no stored handles; the handle was \
             written by another backend, so open or discard it with that backend",
            handle.describe()
        ))
    }

    fn locate(&self, handle: &StateHandle, locator: &str) -> StorageResult<(Root, String)> {
        if !self.settings.stored {
            return Err(self.stored_handle_error(handle));
        }
        match layout::parse_locator(locator)? {
            Locator::Base(key) => Ok((self.base.clone(), key)),
            Locator::Full { root, key } => Ok((self.root_of(&root)?, key)),
        }
    }
}

impl CheckpointStorage for Checkpoints {
    fn info(&self) -> StorageInfo {
        let s = &self.inner.settings;
        StorageInfo {
            capabilities: s.capabilities,
            inline_threshold: s.inline_threshold,
            max_state_size: (!s.stored).then_some(s.inline_threshold),
            location: if s.location.is_empty() {
                self.inner.base.shown.clone()
            } else {
                s.location.clone()
            },
        }
    }

    fn job(&self, job_id: &str) -> StorageResult<Box<dyn JobStorage>> {
        let job = JobId::parse(job_id)?;
        Ok(Box::new(Job {
            inner: self.inner.clone(),
            job,
        }))
    }

    fn resolve(&self, pointer: &str) -> StorageResult<ResolvedCheckpoint> {
        let p = layout::parse_pointer(pointer)?;
        let root = self.inner.root_of_pointer(pointer, &p)?;
        let meta = layout::key(&[&p.key, METADATA]);
        let shown = root.show(&p.key);
        let blob = root.store.get(&meta).map_err(|e| match e {
            StorageError::NotFound(_) => StorageError::NotFound(format!(
                "{shown}: no committed checkpoint here (no {METADATA})"
            )),
            other => other,
        })?;
        let bytes = blob.read_all(&root.show(&meta))?;
        let metadata = frame::decode(&bytes)
            .map_err(|why| StorageError::Corrupt(format!("{}: {why}", root.show(&meta))))?;
        Ok(ResolvedCheckpoint {
            pointer: shown,
            metadata,
        })
    }

    fn open_handle(&self, handle: &StateHandle) -> StorageResult<Box<dyn InputStream>> {
        match handle {
            StateHandle::Inline(bytes) => Ok(Box::new(InlineInput::new(bytes.clone()))),
            StateHandle::Stored {
                locator,
                size,
                crc32c,
            } => {
                let (root, key) = self.inner.locate(handle, locator)?;
                let blob = root.store.get(&key).map_err(|e| match e {
                    StorageError::NotFound(m) => {
                        StorageError::NotFound(format!("handle '{locator}': {m}"))
                    }
                    other => other,
                })?;
                Ok(Box::new(Input::open(blob, locator, *size, *crc32c)?))
            }
        }
    }

    fn discard(&self, handle: &StateHandle) -> StorageResult<()> {
        let StateHandle::Stored { locator, .. } = handle else {
            // The bytes live in the metadata that holds the handle.
            return Ok(());
        };
        let (root, key) = self.inner.locate(handle, locator)?;
        root.store.delete(&key)
    }

    fn dispose(&self, pointer: &str) -> StorageResult<()> {
        let p = layout::parse_pointer(pointer)?;
        let root = match self.inner.root_of_pointer(pointer, &p) {
            // A savepoint whose place is gone is gone: success, as for anything absent.
            Err(StorageError::NotFound(_)) if p.checkpoint.is_none() => return Ok(()),
            other => other?,
        };
        remove_location(&root, &p.key, true)
    }

    fn corrupt_for_testing(&self, handle: &StateHandle) -> StorageResult<()> {
        let StateHandle::Stored { locator, .. } = handle else {
            return Err(StorageError::Unsupported(
                "an inline handle has no stored bytes to corrupt; its bytes live in the metadata"
                    .to_string(),
            ));
        };
        let (root, key) = self.inner.locate(handle, locator)?;
        let mut bytes = root.store.get(&key)?.read_all(locator)?;
        if bytes.is_empty() {
            return Err(StorageError::Corrupt(format!(
                "handle '{locator}': the object is empty; there is nothing to corrupt"
            )));
        }
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        root.store.put(&key, &bytes, PutMode::Overwrite)
    }
}

/// One job's checkpoints, under `<base>/<job-id>/`.
struct Job {
    inner: Arc<Inner>,
    job: JobId,
}

impl Job {
    fn checkpoint_key(&self, id: u64) -> String {
        layout::key(&[self.job.as_str(), &layout::checkpoint_name(id)])
    }

    /// Every `chk-<n>` location of the job that holds an object, with whether it is committed.
    fn checkpoints(&self) -> StorageResult<BTreeMap<u64, bool>> {
        let mut out = BTreeMap::new();
        for o in self.inner.base.store.list(self.job.as_str())? {
            let mut parts = o.key.split('/').skip(1);
            let (Some(area), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if let Some(id) = layout::parse_checkpoint_name(area) {
                *out.entry(id).or_insert(false) |= name == METADATA;
            }
        }
        Ok(out)
    }

    fn location(&self, root: Root, key: String, id: u64, savepoint: bool) -> Location {
        let shared = if savepoint {
            key.clone()
        } else {
            layout::key(&[self.job.as_str(), SHARED])
        };
        Location {
            inner: self.inner.clone(),
            name: format!(
                "{} {}",
                if savepoint { "savepoint" } else { "checkpoint" },
                root.show(&key)
            ),
            sync: if savepoint {
                vec![key.clone()]
            } else {
                vec![
                    key.clone(),
                    shared.clone(),
                    layout::key(&[self.job.as_str(), TASK_OWNED]),
                ]
            },
            root,
            key,
            shared,
            id,
            phase: Mutex::new(Phase::Open),
        }
    }
}

impl JobStorage for Job {
    fn begin_checkpoint(&self, checkpoint_id: u64) -> StorageResult<Box<dyn CheckpointLocation>> {
        let key = self.checkpoint_key(checkpoint_id);
        let meta = layout::key(&[&key, METADATA]);
        let root = &self.inner.base;
        if root.store.list(&key)?.iter().any(|o| o.key == meta) {
            return Err(StorageError::AlreadyExists(format!(
                "{}: checkpoint {checkpoint_id} of job '{}' is completed already",
                root.show(&key),
                self.job
            )));
        }
        Ok(Box::new(self.location(
            root.clone(),
            key,
            checkpoint_id,
            false,
        )))
    }

    fn begin_savepoint(
        &self,
        checkpoint_id: u64,
        target: Option<&str>,
    ) -> StorageResult<Box<dyn CheckpointLocation>> {
        if !self
            .inner
            .settings
            .capabilities
            .contains(Capabilities::SAVEPOINTS)
        {
            return Err(StorageError::Unsupported(
                "this backend does not write savepoints".to_string(),
            ));
        }
        let target = match target.or(self.inner.savepoint_target.as_deref()) {
            Some(t) => t,
            None => {
                return Err(StorageError::InvalidConfig(format!(
                    "savepoint {checkpoint_id} of job '{}' has no target: pass a target, or set \
                     the backend's default savepoint location in storage.options",
                    self.job
                )))
            }
        };
        if target.trim().is_empty() {
            return Err(StorageError::InvalidConfig(
                "the savepoint target is empty: give a directory or URL".to_string(),
            ));
        }
        let root = self.inner.places.open(target, true)?;
        let key = layout::new_savepoint_name(&self.job);
        tracing::debug!(
            "savepoint {checkpoint_id} of job '{}' goes to {}",
            self.job,
            root.show(&key)
        );
        Ok(Box::new(self.location(root, key, checkpoint_id, true)))
    }

    fn create_task_owned_stream(&self) -> StorageResult<Box<dyn OutputStream>> {
        let dir = layout::key(&[self.job.as_str(), TASK_OWNED]);
        Ok(Box::new(new_stream(
            &self.inner,
            &self.inner.base,
            &dir,
            &format!("task-owned stream of job '{}'", self.job),
        )))
    }

    fn list_completed(&self) -> StorageResult<Vec<CompletedCheckpoint>> {
        Ok(self
            .checkpoints()?
            .into_iter()
            .filter(|&(_, committed)| committed)
            .map(|(id, _)| CompletedCheckpoint {
                checkpoint_id: id,
                pointer: self.inner.base.show(&self.checkpoint_key(id)),
            })
            .collect())
    }

    fn list_objects(&self) -> StorageResult<Vec<StoredObject>> {
        if !self.inner.settings.stored {
            return Ok(Vec::new());
        }
        let mut out: Vec<StoredObject> = self
            .inner
            .base
            .store
            .list(self.job.as_str())?
            .into_iter()
            .filter(|o| matches!(layout::parse_locator(&o.key), Ok(Locator::Base(_))))
            .map(|o| StoredObject {
                locator: o.key,
                size: o.size,
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn list_uncommitted(&self) -> StorageResult<Vec<u64>> {
        Ok(self
            .checkpoints()?
            .into_iter()
            .filter(|&(_, committed)| !committed)
            .map(|(id, _)| id)
            .collect())
    }

    fn list_uncommitted_savepoints(&self, target: Option<&str>) -> StorageResult<Vec<String>> {
        let mut out = Vec::new();
        for (pointer, owner, committed) in self.savepoint_locations(target)? {
            if committed {
                continue;
            }
            match owner {
                Owner::This => out.push(pointer),
                Owner::Perhaps => tracing::warn!(
                    "skipping uncommitted savepoint {pointer}: its name carries only the first \
                     {} characters of a job id, so it may belong to another job; remove it by \
                     hand if it is this job's",
                    layout::LEGACY_SAVEPOINT_JOB_LEN
                ),
            }
        }
        Ok(out)
    }

    fn list_savepoints(&self, target: Option<&str>) -> StorageResult<Vec<String>> {
        // Names that carry only a prefix of the job id are listed too: the host reads the job
        // id in their metadata, which says for sure.
        Ok(self
            .savepoint_locations(target)?
            .into_iter()
            .filter(|(_, _, committed)| *committed)
            .map(|(pointer, _, _)| pointer)
            .collect())
    }

    fn read_lease(&self) -> StorageResult<Option<cairn_plugin_api::LeaseRecord>> {
        self.register().read()
    }

    fn write_lease(&self, record: &[u8], expected: Option<&str>) -> StorageResult<String> {
        self.register().write(record, expected)
    }
}

/// Whose a savepoint location is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// Its name carries this job's id.
    This,
    /// Its name (written by an older version) carries only the first characters of a job id,
    /// and they are this job's.
    Perhaps,
}

impl Job {
    fn register(&self) -> lease::Register<'_> {
        lease::Register {
            root: &self.inner.base,
            job: self.job.as_str(),
        }
    }

    /// This job's savepoint locations under `target` (or the default savepoint location):
    /// pointer, owner, and whether it is committed. None without a target or a default, or
    /// when the target does not exist.
    fn savepoint_locations(
        &self,
        target: Option<&str>,
    ) -> StorageResult<Vec<(String, Owner, bool)>> {
        let Some(target) = target.or(self.inner.savepoint_target.as_deref()) else {
            return Ok(Vec::new());
        };
        let root = match self.inner.places.open(target, false) {
            Ok(root) => root,
            Err(StorageError::NotFound(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut locations: BTreeMap<&str, bool> = BTreeMap::new();
        let listed = root.store.list("")?;
        for o in &listed {
            let Some((first, rest)) = o.key.split_once('/') else {
                continue;
            };
            if layout::savepoint_job(first).is_some() {
                *locations.entry(first).or_insert(false) |= rest == METADATA;
            }
        }
        let mut out = Vec::new();
        for (name, committed) in locations {
            let owner = layout::savepoint_job(name).unwrap_or_default();
            let owner = if owner == self.job.as_str() {
                Owner::This
            } else if owner.len() == layout::LEGACY_SAVEPOINT_JOB_LEN
                && self.job.as_str().starts_with(owner)
            {
                Owner::Perhaps
            } else {
                continue;
            };
            out.push((root.show(name), owner, committed));
        }
        Ok(out)
    }
}

/// Where a location is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    Committed,
    Disposed,
}

/// One checkpoint or savepoint location.
struct Location {
    inner: Arc<Inner>,
    root: Root,
    /// The location's key: `<job>/chk-<n>` or `savepoint-...`.
    key: String,
    /// Where SHARED streams go.
    shared: String,
    /// What to sync before the commit.
    sync: Vec<String>,
    id: u64,
    /// For messages: `checkpoint /base/job/chk-3`.
    name: String,
    phase: Mutex<Phase>,
}

impl Location {
    fn phase(&self) -> MutexGuard<'_, Phase> {
        // Every change is one assignment, so a poisoned lock holds a whole value.
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn new_stream(inner: &Inner, root: &Root, dir: &str, name: &str) -> Output {
    let threshold = inner.settings.inline_threshold;
    if !inner.settings.stored {
        return Output::new(None, name.to_string(), threshold);
    }
    let key = layout::key(&[dir, &layout::new_state_name()]);
    let locator = if inner.is_base(root) {
        key.clone()
    } else {
        root.show(&key)
    };
    Output::new(
        Some(Target {
            store: root.store.clone(),
            key,
            locator: locator.clone(),
        }),
        locator,
        threshold,
    )
}

impl CheckpointLocation for Location {
    fn create_stream(&self, scope: Scope) -> StorageResult<Box<dyn OutputStream>> {
        match *self.phase() {
            Phase::Open => {}
            Phase::Committed => {
                return Err(StorageError::Other(format!(
                    "{} is committed; it takes no new streams",
                    self.name
                )))
            }
            Phase::Disposed => {
                return Err(StorageError::Other(format!(
                    "{} was disposed after a failure; it takes no new streams",
                    self.name
                )))
            }
        }
        let dir = match scope {
            Scope::Exclusive => &self.key,
            Scope::Shared => &self.shared,
        };
        Ok(Box::new(new_stream(
            &self.inner,
            &self.root,
            dir,
            &format!("stream of {}", self.name),
        )))
    }

    fn commit(&self, metadata: &[u8]) -> StorageResult<CompletedCheckpoint> {
        let mut phase = self.phase();
        match *phase {
            Phase::Open => {}
            Phase::Committed => {
                return Err(StorageError::AlreadyExists(format!(
                    "{} was committed already; a checkpoint commits once",
                    self.name
                )))
            }
            Phase::Disposed => {
                return Err(StorageError::NotFound(format!(
                    "{} was disposed after a failure; it cannot be committed",
                    self.name
                )))
            }
        }
        let prefixes: Vec<&str> = self.sync.iter().map(String::as_str).collect();
        self.root.store.sync(&prefixes)?;
        let meta = layout::key(&[&self.key, METADATA]);
        match self
            .root
            .store
            .put(&meta, &frame::encode(metadata), PutMode::Create)
        {
            Ok(()) => {}
            Err(StorageError::AlreadyExists(_)) => {
                return Err(StorageError::AlreadyExists(format!(
                    "{}: checkpoint {} was committed already (by another writer); a checkpoint \
                     commits once",
                    self.name, self.id
                )))
            }
            Err(e) => return Err(e),
        }
        *phase = Phase::Committed;
        Ok(CompletedCheckpoint {
            checkpoint_id: self.id,
            pointer: self.root.show(&self.key),
        })
    }

    fn dispose_on_failure(&self) -> StorageResult<()> {
        let mut phase = self.phase();
        match *phase {
            // A committed location is complete: only `dispose(pointer)` removes it, so a late
            // failure report cannot delete a checkpoint that `list_completed` shows.
            Phase::Committed => {
                tracing::debug!("dispose_on_failure of committed {} ignored", self.name);
                return Ok(());
            }
            Phase::Disposed => return Ok(()),
            Phase::Open => {}
        }
        remove_location(&self.root, &self.key, false)?;
        *phase = Phase::Disposed;
        Ok(())
    }
}

/// Remove the location at `key` under `root` (see the module docs). A committed one is
/// refused unless `committed_ok`, before anything is removed.
fn remove_location(root: &Root, key: &str, committed_ok: bool) -> StorageResult<()> {
    let store = &root.store;
    let objects = store.list(key)?;
    let meta = layout::key(&[key, METADATA]);
    if objects.iter().any(|o| o.key == meta) {
        if !committed_ok {
            return Err(StorageError::AlreadyExists(format!(
                "{}: the location is committed (by another writer); nothing was removed",
                root.show(key)
            )));
        }
        store.delete(&meta)?;
        store.sync(&[key])?;
    }
    for o in &objects {
        let Some(name) = o.key.strip_prefix(key).and_then(|n| n.strip_prefix('/')) else {
            continue;
        };
        if name == METADATA {
            continue;
        }
        if layout::is_state_name(name) || (name.starts_with('.') && !name.contains('/')) {
            store.delete(&o.key)?;
        } else {
            tracing::warn!(
                "leaving {} in place: cairn did not write it",
                root.show(&o.key)
            );
        }
    }
    Ok(())
}
