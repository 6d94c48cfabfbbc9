//! Output and input streams of state bytes.
//!
//! # Writing
//!
//! An [`ObjOutputStream`] buffers in memory and makes no request while it writes, except to ship
//! full parts of large state:
//!
//! - Up to `part-size` bytes stay in one buffer. On close, a stream of at most
//!   `inline-threshold` bytes gives an inline handle with no request at all; a larger one is
//!   stored with a single `PUT`.
//! - When more than `part-size` bytes arrive, the stream starts a multipart upload and ships
//!   each full buffer as a part, in the background on the plugin's runtime, with at most
//!   [`MAX_PARTS_IN_FLIGHT`] parts under way (the writer waits beyond that, which bounds memory).
//!   Close ships the last part and completes the upload.
//!
//! The CRC32C of every byte is computed as the bytes arrive and goes into the stored handle.
//! Dropping a stream without taking its handle, or a failed close, aborts the multipart upload
//! (which deletes its parts) or deletes the single object. A stream whose write failed is
//! broken and gives no handle.
//!
//! # Reading
//!
//! An [`ObjInputStream`] issues one `GET` and reads the body as it arrives: a task on the
//! plugin's runtime receives it ahead of the reader, up to [`PREFETCH_CHUNKS`] network chunks,
//! so the network and the reader's copying and checksumming overlap. It checks the object's
//! size at open and the CRC32C of every byte; at the end, instead of returning `0`, it returns
//! `Corrupt` naming the locator if the size or the checksum differs from the handle.

use std::{mem, sync::Arc};

use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt};
use object_store::{path::Path as KeyPath, MultipartUpload, ObjectStore, PutPayload};
use tokio::{sync::mpsc, task::JoinSet};

use cairn_plugin_api::{InputStream, OutputStream, StateHandle, StorageResult};

use crate::{
    error::{ObjError, ObjResult},
    layout::{self, StreamDir},
    storage::Shared,
};

/// How many parts of one stream may be uploading at once.
pub(crate) const MAX_PARTS_IN_FLIGHT: usize = 4;

/// How many network chunks of a body an input stream receives ahead of its reader.
pub(crate) const PREFETCH_CHUNKS: usize = 64;

/// Where an output stream is in its life.
enum State {
    Open,
    /// A write failed with this message.
    Broken(String),
    Closed,
}

/// A multipart upload under way.
struct Upload {
    upload: Box<dyn MultipartUpload>,
    parts: JoinSet<object_store::Result<()>>,
}

/// An output stream into one object (see the module docs).
pub(crate) struct ObjOutputStream {
    shared: Arc<Shared>,
    store: Arc<dyn ObjectStore>,
    key: KeyPath,
    /// The object's place, for messages.
    shown: String,
    locator: String,
    inline_threshold: u64,
    part_size: usize,
    buffer: Vec<u8>,
    upload: Option<Upload>,
    pos: u64,
    crc: u32,
    state: State,
}

impl ObjOutputStream {
    /// A stream into a new object in `target`. Does no I/O.
    pub(crate) fn new(
        shared: Arc<Shared>,
        store: Arc<dyn ObjectStore>,
        target: &StreamDir,
    ) -> ObjResult<Self> {
        let name = layout::new_state_file_name();
        let place = target.place.join(&name);
        let key = place.key()?;
        let part_size = usize::try_from(shared.part_size).unwrap_or(usize::MAX);
        Ok(ObjOutputStream {
            inline_threshold: shared.inline_threshold,
            shared,
            store,
            key,
            shown: place.to_string(),
            locator: format!("{}{name}", target.locator_prefix),
            part_size,
            buffer: Vec::new(),
            upload: None,
            pos: 0,
            crc: 0,
            state: State::Open,
        })
    }

    fn check_open(&self) -> ObjResult<()> {
        match &self.state {
            State::Open => Ok(()),
            State::Broken(first) => Err(ObjError::Broken {
                key: self.shown.clone(),
                first: first.clone(),
            }),
            State::Closed => Err(ObjError::Closed {
                key: self.shown.clone(),
            }),
        }
    }

    fn write_inner(&mut self, mut data: &[u8]) -> ObjResult<()> {
        while !data.is_empty() {
            if self.buffer.len() == self.part_size {
                self.ship_part()?;
            }
            let n = (self.part_size - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data[..n]);
            self.crc = crc32c::crc32c_append(self.crc, &data[..n]);
            self.pos += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    /// Send the buffer as the next part, starting the multipart upload if need be, and wait
    /// while too many parts are under way.
    fn ship_part(&mut self) -> ObjResult<()> {
        let part = mem::replace(&mut self.buffer, Vec::with_capacity(self.part_size));
        let rt = &self.shared.rt;
        if self.upload.is_none() {
            let upload = rt
                .block_on(self.store.put_multipart(&self.key))
                .map_err(|e| {
                    ObjError::store(format!("starting the upload of {}", self.shown), e)
                })?;
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

    fn close_inner(&mut self) -> ObjResult<Option<StateHandle>> {
        self.check_open()?;
        self.state = State::Closed;
        if self.pos == 0 {
            return Ok(None);
        }
        let buffer = mem::take(&mut self.buffer);
        if self.upload.is_none() && self.pos <= self.inline_threshold {
            let mut bytes = buffer;
            bytes.shrink_to_fit();
            return Ok(Some(StateHandle::Inline(bytes)));
        }
        let rt = &self.shared.rt;
        match &mut self.upload {
            None => {
                // At most one part: one PUT.
                rt.block_on(
                    self.store
                        .put(&self.key, PutPayload::from(Bytes::from(buffer))),
                )
                .map_err(|e| ObjError::store(format!("uploading {}", self.shown), e))?;
            }
            Some(up) => {
                {
                    let _entered = rt.enter();
                    up.parts
                        .spawn(up.upload.put_part(PutPayload::from(Bytes::from(buffer))));
                }
                while let Some(done) = rt.block_on(up.parts.join_next()) {
                    part_result(done, &self.shown)?;
                }
                rt.block_on(up.upload.complete()).map_err(|e| {
                    ObjError::store(format!("completing the upload of {}", self.shown), e)
                })?;
                self.upload = None;
            }
        }
        Ok(Some(StateHandle::Stored {
            locator: self.locator.clone(),
            size: self.pos,
            crc32c: self.crc,
        }))
    }

    /// Remove what this stream uploaded and did not hand over: abort a multipart upload (its
    /// parts are deleted), or delete the object of a single `PUT` that may have landed.
    fn clean_up(&mut self, put_may_have_landed: bool) {
        let rt = &self.shared.rt;
        if let Some(mut up) = self.upload.take() {
            let aborted = rt.block_on(async {
                up.parts.shutdown().await;
                up.upload.abort().await
            });
            if let Err(e) = aborted {
                tracing::warn!(object = %self.shown, "could not abort the upload of an abandoned state stream: {e}");
            }
        } else if put_may_have_landed {
            match rt.block_on(self.store.delete(&self.key)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(object = %self.shown, "could not delete the object of a failed state stream: {e}")
                }
            }
        }
    }
}

fn part_result(
    done: Result<object_store::Result<()>, tokio::task::JoinError>,
    shown: &str,
) -> ObjResult<()> {
    match done {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ObjError::store(format!("uploading a part of {shown}"), e)),
        Err(e) => Err(ObjError::store(
            format!("uploading a part of {shown}"),
            object_store::Error::Generic {
                store: "cairn",
                source: Box::new(e),
            },
        )),
    }
}

impl OutputStream for ObjOutputStream {
    fn write(&mut self, buf: &[u8]) -> StorageResult<()> {
        self.check_open()?;
        if buf.is_empty() {
            return Ok(());
        }
        self.write_inner(buf).map_err(|e| {
            self.state = State::Broken(e.to_string());
            e.into()
        })
    }

    fn pos(&self) -> StorageResult<u64> {
        Ok(self.pos)
    }

    fn close_and_get_handle(&mut self) -> StorageResult<Option<StateHandle>> {
        let was_open = matches!(self.state, State::Open);
        let result = self.close_inner();
        if result.is_err() && was_open {
            self.clean_up(true);
        }
        Ok(result?)
    }
}

impl Drop for ObjOutputStream {
    fn drop(&mut self) {
        // A single PUT happens only in a successful close, so only an upload can be left.
        self.clean_up(false);
    }
}

/// What an input stream has found so far.
enum Check {
    Reading,
    Verified,
    Failed(String),
}

/// An input stream over a stored handle's object that verifies it (see the module docs).
pub(crate) struct ObjInputStream {
    shared: Arc<Shared>,
    body: mpsc::Receiver<object_store::Result<Bytes>>,
    /// The task that receives the body; aborted when the stream is dropped.
    prefetch: tokio::task::JoinHandle<()>,
    current: Bytes,
    locator: String,
    size: u64,
    expected_crc: u32,
    read: u64,
    crc: u32,
    check: Check,
}

impl ObjInputStream {
    /// Open the object at `key` for the handle with this locator, size and checksum.
    pub(crate) fn open(
        shared: Arc<Shared>,
        store: &dyn ObjectStore,
        key: &KeyPath,
        locator: &str,
        size: u64,
        crc32c: u32,
    ) -> ObjResult<Self> {
        let got = shared
            .rt
            .block_on(store.get(key))
            .map_err(|e| ObjError::store(format!("handle '{locator}'"), e))?;
        let len = got.meta.size;
        if len != size {
            return Err(ObjError::Corrupt {
                locator: locator.to_string(),
                why: format!("size mismatch: the object holds {len} bytes, the handle says {size}"),
            });
        }
        let (tx, rx) = mpsc::channel(PREFETCH_CHUNKS);
        let mut body: BoxStream<'static, object_store::Result<Bytes>> = got.into_stream();
        let prefetch = shared.rt.spawn(async move {
            while let Some(chunk) = body.next().await {
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
        });
        Ok(ObjInputStream {
            shared,
            body: rx,
            prefetch,
            current: Bytes::new(),
            locator: locator.to_string(),
            size,
            expected_crc: crc32c,
            read: 0,
            crc: 0,
            check: Check::Reading,
        })
    }

    /// Fill `buf` from the body: one `block_on` per call, however many network chunks it
    /// takes, so a large buffer costs one wake-up rather than one per chunk.
    fn read_inner(&mut self, buf: &mut [u8]) -> ObjResult<usize> {
        let (body, current) = (&mut self.body, &mut self.current);
        let mut filled = 0;
        let mut ended = false;
        let fetched: object_store::Result<()> = self.shared.rt.block_on(async {
            while filled < buf.len() {
                if current.is_empty() {
                    match body.recv().await {
                        Some(chunk) => *current = chunk?,
                        None => {
                            ended = true;
                            break;
                        }
                    }
                    continue;
                }
                let n = (buf.len() - filled).min(current.len());
                buf[filled..filled + n].copy_from_slice(&current.split_to(n));
                filled += n;
            }
            Ok(())
        });
        if let Err(e) = fetched {
            return Err(ObjError::store(
                format!("reading handle '{}'", self.locator),
                e,
            ));
        }
        if filled == 0 && ended {
            return self.at_end();
        }
        if self.read + filled as u64 > self.size {
            return Err(self.corrupt(format!(
                "size mismatch: the object holds more than the handle's {} bytes",
                self.size
            )));
        }
        self.crc = crc32c::crc32c_append(self.crc, &buf[..filled]);
        self.read += filled as u64;
        Ok(filled)
    }

    fn at_end(&mut self) -> ObjResult<usize> {
        if self.read != self.size {
            return Err(self.corrupt(format!(
                "size mismatch: the object ended after {} bytes, the handle says {}",
                self.read, self.size
            )));
        }
        if self.crc != self.expected_crc {
            return Err(self.corrupt(format!(
                "checksum mismatch: the bytes have crc32c {:08x}, the handle says {:08x}",
                self.crc, self.expected_crc
            )));
        }
        self.check = Check::Verified;
        Ok(0)
    }

    fn corrupt(&mut self, why: String) -> ObjError {
        self.check = Check::Failed(why.clone());
        ObjError::Corrupt {
            locator: self.locator.clone(),
            why,
        }
    }
}

impl Drop for ObjInputStream {
    fn drop(&mut self) {
        self.prefetch.abort();
    }
}

impl InputStream for ObjInputStream {
    fn read(&mut self, buf: &mut [u8]) -> StorageResult<usize> {
        match &self.check {
            Check::Verified => return Ok(0),
            Check::Failed(why) => {
                return Err(ObjError::Corrupt {
                    locator: self.locator.clone(),
                    why: why.clone(),
                }
                .into())
            }
            Check::Reading => {}
        }
        if buf.is_empty() {
            return Ok(0);
        }
        Ok(self.read_inner(buf)?)
    }
}
