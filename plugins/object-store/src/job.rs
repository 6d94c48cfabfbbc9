//! Per-job access ([`ObjJob`]) and checkpoint and savepoint locations ([`ObjLocation`]).
//!
//! # The commit
//!
//! A location's commit writes the framed `_metadata` object with `PutMode::Create`, a
//! conditional create (`If-None-Match: *` on S3 and Azure, `ifGenerationMatch=0` on GCS, a
//! no-clobber link on the local filesystem). The store itself decides: of two writers that
//! commit one checkpoint, exactly one succeeds and the other gets `AlreadyExists`, even from two
//! hosts. A single object write is atomic in every store, so a reader sees no `_metadata` or a
//! complete one, and the frame's checksum catches anything else.
//!
//! # Listing
//!
//! Completed and uncommitted checkpoints are found by listing the job's prefix with a delimiter
//! (one request per thousand locations) and asking each `chk-<n>` for its `_metadata` (a `HEAD`
//! each, eight at a time). State objects are found by a recursive listing.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

use cairn_plugin_api::{
    CheckpointLocation, CompletedCheckpoint, JobStorage, OutputStream, Scope, StorageResult,
    StoredObject,
};

use crate::{
    error::{ObjError, ObjResult},
    layout::{self, Place, Scheme, StreamDir, METADATA_OBJECT, SHARED_DIR, TASK_OWNED_DIR},
    metafile,
    storage::{remove_location, Shared},
    stream::ObjOutputStream,
};

/// How many `HEAD` requests a listing makes at once.
const LIST_CONCURRENCY: usize = 8;

/// One job's checkpoints, under `<url>/<job-id>/`.
pub(crate) struct ObjJob {
    shared: Arc<Shared>,
    store: Arc<dyn ObjectStore>,
    job_id: String,
    place: Place,
}

impl ObjJob {
    /// Access to a job whose id was validated.
    pub(crate) fn new(shared: Arc<Shared>, job_id: &str) -> ObjResult<Self> {
        Ok(ObjJob {
            store: shared.base_store()?,
            place: shared.base.join(job_id),
            job_id: job_id.to_string(),
            shared,
        })
    }

    fn begin_checkpoint_inner(&self, checkpoint_id: u64) -> ObjResult<ObjLocation> {
        let exclusive = StreamDir::checkpoint(&self.shared.base, &self.job_id, checkpoint_id);
        let place = exclusive.place.clone();
        if self.shared.is_committed(self.store.as_ref(), &place)? {
            return Err(ObjError::AlreadyCommitted {
                pointer: place.to_string(),
                id: checkpoint_id,
            });
        }
        Ok(ObjLocation {
            shared: self.shared.clone(),
            store: self.store.clone(),
            checkpoint_id,
            place,
            exclusive,
            shared_dir: StreamDir::shared(&self.shared.base, &self.job_id),
        })
    }

    fn begin_savepoint_inner(
        &self,
        checkpoint_id: u64,
        target: Option<&str>,
    ) -> ObjResult<ObjLocation> {
        let target = match target {
            Some(t) => savepoint_target(t)?,
            None => self
                .shared
                .savepoint_url
                .clone()
                .ok_or(ObjError::NoSavepointTarget)?,
        };
        let store = self.shared.stores.for_place(&target).map_err(|e| {
            ObjError::InvalidSavepointTarget {
                target: target.to_string(),
                why: e.to_string(),
            }
        })?;
        let place = target.join(&layout::new_savepoint_dir_name(&self.job_id));
        let here = StreamDir::savepoint(&place);
        Ok(ObjLocation {
            shared: self.shared.clone(),
            store,
            checkpoint_id,
            place,
            // A savepoint is self-contained: its SHARED state goes into its own location.
            exclusive: here.clone(),
            shared_dir: here,
        })
    }

    /// The ids of the job's `chk-<n>` prefixes, each with whether it is committed. A prefix with
    /// no object at all is left out: some stores (SeaweedFS, the local filesystem) keep an empty
    /// "directory" after its last object is deleted.
    fn checkpoint_dirs(&self) -> ObjResult<Vec<(u64, bool)>> {
        let prefix = self.place.key()?;
        let listing = self
            .shared
            .rt
            .block_on(self.store.list_with_delimiter(Some(&prefix)))
            .map_err(|e| ObjError::store(format!("listing {}", self.place), e))?;
        let ids: Vec<u64> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().and_then(layout::parse_checkpoint_dir_name))
            .collect();
        let heads = ids.into_iter().map(|id| {
            let place = self.place.join(&layout::checkpoint_dir_name(id));
            let store = self.store.clone();
            async move {
                let meta = place.join(METADATA_OBJECT);
                let key = meta.key()?;
                match store.head(&key).await {
                    Ok(_) => return Ok(Some((id, true))),
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(ObjError::store(format!("looking for {meta}"), e)),
                }
                let key = place.key()?;
                let inside = store
                    .list_with_delimiter(Some(&key))
                    .await
                    .map_err(|e| ObjError::store(format!("listing {place}"), e))?;
                // A directory marker (the prefix itself, as SeaweedFS lists it) is not an object.
                let empty = inside.objects.iter().all(|o| o.location == key)
                    && inside.common_prefixes.is_empty();
                Ok((!empty).then_some((id, false)))
            }
        });
        let found: Vec<Option<(u64, bool)>> = self.shared.rt.block_on(
            futures::stream::iter(heads)
                .buffer_unordered(LIST_CONCURRENCY)
                .try_collect(),
        )?;
        let mut found: Vec<(u64, bool)> = found.into_iter().flatten().collect();
        found.sort_unstable();
        Ok(found)
    }

    fn list_completed_inner(&self) -> ObjResult<Vec<CompletedCheckpoint>> {
        Ok(self
            .checkpoint_dirs()?
            .into_iter()
            .filter(|&(_, committed)| committed)
            .map(|(id, _)| CompletedCheckpoint {
                checkpoint_id: id,
                pointer: self
                    .place
                    .join(&layout::checkpoint_dir_name(id))
                    .to_string(),
            })
            .collect())
    }

    fn list_objects_inner(&self) -> ObjResult<Vec<StoredObject>> {
        let mut out = Vec::new();
        for meta in self.shared.list_all(self.store.as_ref(), &self.place)? {
            let tail = location_tail(&self.place, meta.location.as_ref());
            let parts: Vec<&str> = tail.split('/').collect();
            let [area, file] = parts[..] else {
                continue;
            };
            let ours = (area == SHARED_DIR
                || area == TASK_OWNED_DIR
                || layout::parse_checkpoint_dir_name(area).is_some())
                && layout::is_state_file_name(file);
            if ours {
                out.push(StoredObject {
                    locator: format!("{}/{tail}", self.job_id),
                    size: meta.size,
                });
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The part of an object's key below `place`.
fn location_tail<'a>(place: &Place, location: &'a str) -> &'a str {
    if place.prefix.is_empty() {
        location
    } else {
        location
            .strip_prefix(&place.prefix)
            .map_or(location, |rest| rest.trim_start_matches('/'))
    }
}

/// A savepoint target as given: a URL, or a local directory (relative ones are taken from the
/// current directory, as the filesystem backend does).
fn savepoint_target(target: &str) -> ObjResult<Place> {
    let invalid = |why: String| ObjError::InvalidSavepointTarget {
        target: target.to_string(),
        why,
    };
    if target.trim().is_empty() {
        return Err(invalid("it is empty: give a URL or a directory".into()));
    }
    let absolute = if target.contains("://") || target.starts_with('/') {
        target.to_string()
    } else {
        std::path::absolute(target)
            .map_err(|e| invalid(format!("cannot make it absolute: {e}")))?
            .to_str()
            .ok_or_else(|| invalid("it is not valid UTF-8".into()))?
            .to_string()
    };
    let place = Place::parse(&absolute).map_err(invalid)?;
    if place.scheme == Scheme::File && place.prefix.is_empty() {
        return Err(invalid(
            "the root directory is not a savepoint target".into(),
        ));
    }
    Ok(place)
}

impl JobStorage for ObjJob {
    fn begin_checkpoint(&self, checkpoint_id: u64) -> StorageResult<Box<dyn CheckpointLocation>> {
        Ok(Box::new(self.begin_checkpoint_inner(checkpoint_id)?))
    }

    fn begin_savepoint(
        &self,
        checkpoint_id: u64,
        target: Option<&str>,
    ) -> StorageResult<Box<dyn CheckpointLocation>> {
        Ok(Box::new(self.begin_savepoint_inner(checkpoint_id, target)?))
    }

    fn create_task_owned_stream(&self) -> StorageResult<Box<dyn OutputStream>> {
        let target = StreamDir::task_owned(&self.shared.base, &self.job_id);
        Ok(Box::new(ObjOutputStream::new(
            self.shared.clone(),
            self.store.clone(),
            &target,
        )?))
    }

    fn list_completed(&self) -> StorageResult<Vec<CompletedCheckpoint>> {
        Ok(self.list_completed_inner()?)
    }

    fn list_objects(&self) -> StorageResult<Vec<StoredObject>> {
        Ok(self.list_objects_inner()?)
    }

    fn list_uncommitted(&self) -> StorageResult<Vec<u64>> {
        Ok(self
            .checkpoint_dirs()?
            .into_iter()
            .filter(|&(_, committed)| !committed)
            .map(|(id, _)| id)
            .collect())
    }
}

/// Where one checkpoint or savepoint goes.
pub(crate) struct ObjLocation {
    shared: Arc<Shared>,
    store: Arc<dyn ObjectStore>,
    checkpoint_id: u64,
    /// The location, which receives `_metadata`.
    place: Place,
    /// Where EXCLUSIVE streams go.
    exclusive: StreamDir,
    /// Where SHARED streams go.
    shared_dir: StreamDir,
}

impl ObjLocation {
    fn commit_inner(&self, metadata: &[u8]) -> ObjResult<CompletedCheckpoint> {
        let meta = self.place.join(METADATA_OBJECT);
        let key = meta.key()?;
        let payload = PutPayload::from(metafile::encode(metadata));
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .shared
            .rt
            .block_on(self.store.put_opts(&key, payload, opts))
        {
            Ok(_) => Ok(CompletedCheckpoint {
                checkpoint_id: self.checkpoint_id,
                pointer: self.place.to_string(),
            }),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Err(ObjError::AlreadyCommitted {
                pointer: self.place.to_string(),
                id: self.checkpoint_id,
            }),
            Err(e) => Err(ObjError::store(format!("committing {meta}"), e)),
        }
    }
}

impl CheckpointLocation for ObjLocation {
    fn create_stream(&self, scope: Scope) -> StorageResult<Box<dyn OutputStream>> {
        let target = match scope {
            Scope::Exclusive => &self.exclusive,
            Scope::Shared => &self.shared_dir,
        };
        Ok(Box::new(ObjOutputStream::new(
            self.shared.clone(),
            self.store.clone(),
            target,
        )?))
    }

    fn commit(&self, metadata: &[u8]) -> StorageResult<CompletedCheckpoint> {
        Ok(self.commit_inner(metadata)?)
    }

    fn dispose_on_failure(&self) -> StorageResult<()> {
        Ok(remove_location(&self.shared, &self.place, false)?)
    }
}
