//! [`ObjStore`]: the kit's blob store over an `object_store` client, and [`ObjPlaces`], which
//! opens the store a URL names.
//!
//! - `put` is one request; [`PutMode::Create`] is `PutMode::Create` of `object_store`, a
//!   conditional create (`If-None-Match: *` on S3 and Azure, `ifGenerationMatch=0` on GCS, a
//!   no-clobber link on the local filesystem): of two writers, even on two hosts, the store lets
//!   one create `_metadata` and answers the other "already exists".
//! - A writer keeps up to `part-size` bytes; a stream that ends there costs one `PUT`. Past it,
//!   a multipart upload ships each full part in the background on the plugin's runtime, with at
//!   most [`MAX_PARTS_IN_FLIGHT`] under way (the writer waits beyond that, which bounds memory).
//!   Dropping an unfinished writer aborts the upload, which deletes its parts.
//! - A read issues one `GET`; a task on the runtime receives the body ahead of the reader (up to
//!   [`PREFETCH_CHUNKS`] network chunks), so the network and the kit's checksumming overlap.
//! - `sync` does nothing: a write is durable when the store answers it.

use std::{io::Read, mem, sync::Arc};

use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt, TryStreamExt};
use object_store::{path::Path as KeyPath, MultipartUpload, ObjectStore, PutOptions, PutPayload};
use tokio::{sync::mpsc, task::JoinSet};

use cairn_plugin_api::{StorageError, StorageResult};
use cairn_plugin_kit::{Blob, BlobStore, BlobWriter, Listed, Places, PutMode, Root};

use crate::{
    layout::{Place, Scheme},
    store::{Runtime, Stores},
};

/// How many parts of one object may be uploading at once.
pub const MAX_PARTS_IN_FLIGHT: usize = 4;

/// How many network chunks of a body a reader receives ahead of its reader.
pub const PREFETCH_CHUNKS: usize = 64;

/// An `object_store` error met while doing `context`, with its kind kept and its root cause
/// named (see [`with_root_cause`]).
pub(crate) fn store_error(context: impl std::fmt::Display, e: object_store::Error) -> StorageError {
    let m = format!("{context}: {}", with_root_cause(&e));
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound(m),
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            StorageError::AlreadyExists(m)
        }
        _ => StorageError::Io(m),
    }
}

/// `e`'s message, and the innermost error of its source chain when the message does not say
/// it already: an HTTP client's "error sending request" hides "connection refused (os error
/// 111)", "dns error: failed to lookup address" and the like several sources down, and that is
/// what a user needs to fix the endpoint.
pub(crate) fn with_root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let shown = e.to_string();
    let mut root = None;
    let mut next = e.source();
    while let Some(cause) = next {
        root = Some(cause);
        next = cause.source();
    }
    let Some(root) = root.map(|r| r.to_string()) else {
        return shown;
    };
    if root.is_empty() || shown.to_lowercase().contains(&root.to_lowercase()) {
        return shown;
    }
    let mut chars = root.chars();
    let root: String = match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => root,
    };
    format!("{}: {root}", shown.trim_end())
}

/// What every store of one storage instance shares: the runtime and the clients.
pub(crate) struct Ctx {
    pub(crate) stores: Stores,
    pub(crate) part_size: usize,
    /// Declared last, so it is dropped after the clients.
    pub(crate) rt: Runtime,
}

/// A blob store under a place (see the module docs).
#[derive(Clone)]
pub struct ObjStore {
    ctx: Arc<Ctx>,
    store: Arc<dyn ObjectStore>,
    place: Place,
}

impl ObjStore {
    fn key(&self, key: &str) -> StorageResult<KeyPath> {
        self.place.join(key).key()
    }

    fn shown(&self, key: &str) -> String {
        self.place.join(key).to_string()
    }
}

impl BlobStore for ObjStore {
    fn put(&self, key: &str, bytes: &[u8], mode: PutMode) -> StorageResult<()> {
        let path = self.key(key)?;
        let opts = PutOptions {
            mode: match mode {
                PutMode::Create => object_store::PutMode::Create,
                PutMode::Overwrite => object_store::PutMode::Overwrite,
            },
            ..PutOptions::default()
        };
        let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
        self.ctx
            .rt
            .block_on(self.store.put_opts(&path, payload, opts))
            .map(|_| ())
            .map_err(|e| store_error(format!("writing {}", self.shown(key)), e))
    }

    fn writer(&self, key: &str) -> StorageResult<Box<dyn BlobWriter>> {
        Ok(Box::new(ObjWriter {
            ctx: self.ctx.clone(),
            store: self.store.clone(),
            key: self.key(key)?,
            shown: self.shown(key),
            buffer: Vec::new(),
            upload: None,
        }))
    }

    fn get(&self, key: &str) -> StorageResult<Blob> {
        let path = self.key(key)?;
        let got = self
            .ctx
            .rt
            .block_on(self.store.get(&path))
            .map_err(|e| store_error(format!("reading {}", self.shown(key)), e))?;
        let size = got.meta.size;
        let (tx, rx) = mpsc::channel(PREFETCH_CHUNKS);
        let mut body: BoxStream<'static, object_store::Result<Bytes>> = got.into_stream();
        let prefetch = self.ctx.rt.spawn(async move {
            while let Some(chunk) = body.next().await {
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
        });
        Ok(Blob {
            size,
            reader: Box::new(ObjReader {
                ctx: self.ctx.clone(),
                body: rx,
                prefetch,
                current: Bytes::new(),
            }),
        })
    }

    fn delete(&self, key: &str) -> StorageResult<()> {
        let path = self.key(key)?;
        match self.ctx.rt.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(format!("deleting {}", self.shown(key)), e)),
        }
    }

    fn list(&self, prefix: &str) -> StorageResult<Vec<Listed>> {
        let under = if prefix.is_empty() {
            self.place.clone()
        } else {
            self.place.join(prefix)
        };
        let listing = under.list_prefix()?;
        let objects = self
            .ctx
            .rt
            .block_on(self.store.list(listing.as_ref()).try_collect::<Vec<_>>())
            .map_err(|e| store_error(format!("listing {under}"), e))?;
        let base = if self.place.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.place.prefix)
        };
        Ok(objects
            .into_iter()
            .filter_map(|o| {
                let key = o.location.as_ref().strip_prefix(&base)?.to_string();
                // A directory marker (the prefix itself, as SeaweedFS lists one) is no object.
                let inside = prefix.is_empty() || key.len() > prefix.len() + 1;
                (inside && !key.is_empty() && !key.ends_with('/'))
                    .then_some(Listed { key, size: o.size })
            })
            .collect())
    }

    fn sync(&self, _prefixes: &[&str]) -> StorageResult<()> {
        Ok(())
    }
}

/// A multipart upload under way.
struct Upload {
    upload: Box<dyn MultipartUpload>,
    parts: JoinSet<object_store::Result<()>>,
}

/// An object being written (see the module docs).
struct ObjWriter {
    ctx: Arc<Ctx>,
    store: Arc<dyn ObjectStore>,
    key: KeyPath,
    shown: String,
    buffer: Vec<u8>,
    upload: Option<Upload>,
}

fn part_result(
    done: Result<object_store::Result<()>, tokio::task::JoinError>,
    shown: &str,
) -> StorageResult<()> {
    match done {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(store_error(format!("uploading a part of {shown}"), e)),
        Err(e) => Err(StorageError::Io(format!(
            "uploading a part of {shown}: {e}"
        ))),
    }
}

impl ObjWriter {
    /// Send the buffer as the next part, starting the upload if need be, and wait while too
    /// many parts are under way.
    fn ship_part(&mut self) -> StorageResult<()> {
        let part_size = self.ctx.part_size;
        let part = mem::replace(&mut self.buffer, Vec::with_capacity(part_size));
        let rt = &self.ctx.rt;
        if self.upload.is_none() {
            let upload = rt
                .block_on(self.store.put_multipart(&self.key))
                .map_err(|e| store_error(format!("starting the upload of {}", self.shown), e))?;
            self.upload = Some(Upload {
                upload,
                parts: JoinSet::new(),
            });
        }
        let up = self.upload.as_mut().expect("upload started above");
        {
            let _entered = rt.enter();
            up.parts
                .spawn(up.upload.put_part(PutPayload::from(Bytes::from(part))));
        }
        while up.parts.len() >= MAX_PARTS_IN_FLIGHT {
            match rt.block_on(up.parts.join_next()) {
                Some(done) => part_result(done, &self.shown)?,
                None => break,
            }
        }
        Ok(())
    }
}

impl BlobWriter for ObjWriter {
    fn write(&mut self, mut bytes: &[u8]) -> StorageResult<()> {
        let part_size = self.ctx.part_size;
        while !bytes.is_empty() {
            if self.buffer.len() == part_size {
                self.ship_part()?;
            }
            let n = (part_size - self.buffer.len()).min(bytes.len());
            self.buffer.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> StorageResult<()> {
        let buffer = mem::take(&mut self.buffer);
        let rt = &self.ctx.rt;
        let Some(mut up) = self.upload.take() else {
            // At most one part: one PUT.
            return rt
                .block_on(
                    self.store
                        .put(&self.key, PutPayload::from(Bytes::from(buffer))),
                )
                .map(|_| ())
                .map_err(|e| store_error(format!("uploading {}", self.shown), e));
        };
        let shipped = (|| {
            {
                let _entered = rt.enter();
                up.parts
                    .spawn(up.upload.put_part(PutPayload::from(Bytes::from(buffer))));
            }
            while let Some(done) = rt.block_on(up.parts.join_next()) {
                part_result(done, &self.shown)?;
            }
            rt.block_on(up.upload.complete())
                .map(|_| ())
                .map_err(|e| store_error(format!("completing the upload of {}", self.shown), e))
        })();
        if shipped.is_err() {
            // Put it back, so that the drop aborts it.
            self.upload = Some(up);
        }
        shipped
    }
}

impl Drop for ObjWriter {
    fn drop(&mut self) {
        if let Some(mut up) = self.upload.take() {
            // Parts in flight are let finish before the abort, not cancelled: a cancelled
            // request may still land on the server after the abort and leave a part behind
            // (S3's own advice: an abort frees only the parts already uploaded).
            let aborted = self.ctx.rt.block_on(async {
                while up.parts.join_next().await.is_some() {}
                up.upload.abort().await
            });
            if let Err(e) = aborted {
                tracing::warn!(object = %self.shown, "could not abort the upload of an abandoned state stream: {e}");
            }
        }
    }
}

/// A body being read (see the module docs).
struct ObjReader {
    ctx: Arc<Ctx>,
    body: mpsc::Receiver<object_store::Result<Bytes>>,
    /// The task that receives the body; aborted when the reader is dropped.
    prefetch: tokio::task::JoinHandle<()>,
    current: Bytes,
}

impl Read for ObjReader {
    /// Fill `buf` from the body: one `block_on` per call, however many network chunks it
    /// takes, so a large buffer costs one wake-up rather than one per chunk.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (body, current) = (&mut self.body, &mut self.current);
        let mut filled = 0;
        let fetched: object_store::Result<()> = self.ctx.rt.block_on(async {
            while filled < buf.len() {
                if current.is_empty() {
                    match body.recv().await {
                        Some(chunk) => *current = chunk?,
                        None => break,
                    }
                    continue;
                }
                let n = (buf.len() - filled).min(current.len());
                buf[filled..filled + n].copy_from_slice(&current.split_to(n));
                filled += n;
            }
            Ok(())
        });
        fetched.map_err(std::io::Error::other)?;
        Ok(filled)
    }
}

impl Drop for ObjReader {
    fn drop(&mut self) {
        self.prefetch.abort();
    }
}

/// Opens the store a URL (or an absolute local path) names, with the clients of one storage
/// instance.
#[derive(Clone)]
pub struct ObjPlaces {
    pub(crate) ctx: Arc<Ctx>,
}

impl ObjPlaces {
    /// The store under `place`, parsed already.
    pub(crate) fn open_place(&self, place: Place) -> StorageResult<Root> {
        let store = self.ctx.stores.for_place(&place)?;
        Ok(Root {
            shown: place.to_string(),
            store: Arc::new(ObjStore {
                ctx: self.ctx.clone(),
                store,
                place,
            }),
        })
    }
}

impl Places for ObjPlaces {
    fn open(&self, place: &str, create: bool) -> StorageResult<Root> {
        let invalid = |why: String| {
            StorageError::InvalidConfig(format!(
                "place {} is invalid: {why}",
                cairn_plugin_kit::layout::shown(place)
            ))
        };
        let trimmed = place.trim();
        // A savepoint target may be a relative directory, taken from the current directory as
        // the filesystem backend does; a place inside a pointer or locator may not.
        let absolute = if create && !trimmed.contains("://") && !trimmed.starts_with('/') {
            std::path::absolute(trimmed)
                .map_err(|e| invalid(format!("cannot make it absolute: {e}")))?
                .to_str()
                .ok_or_else(|| invalid("it is not valid UTF-8".into()))?
                .to_string()
        } else {
            trimmed.to_string()
        };
        let place = Place::parse(&absolute).map_err(invalid)?;
        if place.scheme == Scheme::File && place.prefix.is_empty() {
            return Err(invalid(
                "the root directory is not a place for checkpoints".into(),
            ));
        }
        self.open_place(place)
    }
}

#[cfg(test)]
mod tests {
    use super::with_root_cause;

    /// An error with a vague message over a precise cause, as an HTTP client's are.
    #[derive(Debug)]
    struct Sending(std::io::Error);

    impl std::fmt::Display for Sending {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error sending request")
        }
    }

    impl std::error::Error for Sending {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_root_cause_is_named_once() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = Sending(refused);
        assert_eq!(
            with_root_cause(&e),
            "error sending request: connection refused"
        );
        let plain = std::io::Error::other("connection refused");
        assert_eq!(with_root_cause(&plain), "connection refused");
    }
}
