//! The output stream state machine and the checked input stream, written once.
//!
//! # Writing
//!
//! An [`Output`] keeps up to `inline-threshold` bytes in memory; a stream that ends there gives
//! an inline handle and never touches the store. The first byte past the threshold opens a
//! [`BlobWriter`](crate::BlobWriter), which gets the buffered bytes and then every write as it
//! comes (the writer does its own buffering: a file's write buffer, an upload's parts). The
//! CRC32C is computed as the bytes arrive and goes into the stored handle. Creating a stream
//! does no I/O at all.
//!
//! An inline-only backend ([`crate::Settings::stored`] false) has no writer: a stream past its
//! limit stops buffering at once (a runaway writer costs no memory), keeps counting, and fails
//! at close with `CapacityExceeded`, as Flink's `MemoryCheckpointOutputStream` does.
//!
//! A stream whose write failed is broken: what reached the store is unknown, so it gives no
//! handle. A stream dropped without its handle, or whose close failed, drops its writer, which
//! aborts it.
//!
//! # Reading
//!
//! An [`Input`] checks the object's size at open and the CRC32C of every byte as it is read. At
//! the end, instead of `0`, it returns `Corrupt` naming the locator if the size or the checksum
//! differs from the handle's, and it never returns more bytes than the handle's size.

use std::{io::Read, mem, sync::Arc};

use cairn_plugin_api::{InputStream, OutputStream, StateHandle, StorageError, StorageResult};

use crate::{blob::BlobWriter, BlobStore};

/// Where an output stream is in its life.
enum State {
    Open,
    /// A write failed with this message.
    Broken(String),
    Closed,
}

/// Where a stream's bytes go if they outgrow the threshold.
pub(crate) struct Target {
    pub(crate) store: Arc<dyn BlobStore>,
    pub(crate) key: String,
    pub(crate) locator: String,
}

/// An output stream (see the module docs).
pub(crate) struct Output {
    /// `None`: inline only.
    target: Option<Target>,
    /// For messages: the locator, or the stream's place for inline-only streams.
    name: String,
    threshold: u64,
    buffer: Vec<u8>,
    writer: Option<Box<dyn BlobWriter>>,
    pos: u64,
    crc: u32,
    state: State,
}

impl Output {
    /// A stream whose state goes to `target` past `threshold` bytes, or an inline-only stream
    /// (`target` `None`, named `name` in messages) that fails at close past `threshold` bytes.
    pub(crate) fn new(target: Option<Target>, name: String, threshold: u64) -> Self {
        Output {
            target,
            name,
            threshold,
            buffer: Vec::new(),
            writer: None,
            pos: 0,
            crc: 0,
            state: State::Open,
        }
    }

    fn check_open(&self) -> StorageResult<()> {
        match &self.state {
            State::Open => Ok(()),
            State::Broken(first) => Err(StorageError::Io(format!(
                "{}: an earlier write to this stream failed ({first}); it gives no handle",
                self.name
            ))),
            State::Closed => Err(StorageError::Other(format!(
                "{}: stream is closed",
                self.name
            ))),
        }
    }

    fn write_inner(&mut self, data: &[u8]) -> StorageResult<()> {
        // Inline bytes are covered by the metadata's checksum; only a stream that may be stored
        // needs its own.
        if self.target.is_some() {
            self.crc = crc32c::crc32c_append(self.crc, data);
        }
        self.pos += data.len() as u64;
        if let Some(writer) = &mut self.writer {
            return writer.write(data);
        }
        if self.pos <= self.threshold {
            self.buffer.extend_from_slice(data);
            return Ok(());
        }
        match &self.target {
            None => {
                // Inline only: past the limit nothing is kept; close reports it.
                self.buffer = Vec::new();
                Ok(())
            }
            Some(t) => {
                let mut writer = t.store.writer(&t.key)?;
                let buffered = mem::take(&mut self.buffer);
                writer.write(&buffered)?;
                writer.write(data)?;
                self.writer = Some(writer);
                Ok(())
            }
        }
    }

    fn close_inner(&mut self) -> StorageResult<Option<StateHandle>> {
        if self.pos == 0 {
            return Ok(None);
        }
        if self.pos <= self.threshold {
            let mut bytes = mem::take(&mut self.buffer);
            bytes.shrink_to_fit();
            return Ok(Some(StateHandle::Inline(bytes)));
        }
        let (Some(target), Some(writer)) = (&self.target, self.writer.take()) else {
            return Err(StorageError::CapacityExceeded(format!(
                "{} holds {} bytes, above this backend's limit of {} bytes per stream",
                self.name, self.pos, self.threshold
            )));
        };
        writer.finish()?;
        Ok(Some(StateHandle::Stored {
            locator: target.locator.clone(),
            size: self.pos,
            crc32c: self.crc,
        }))
    }
}

impl OutputStream for Output {
    fn write(&mut self, buf: &[u8]) -> StorageResult<()> {
        self.check_open()?;
        if buf.is_empty() {
            return Ok(());
        }
        self.write_inner(buf).inspect_err(|e| {
            self.state = State::Broken(e.to_string());
            self.writer = None;
        })
    }

    fn pos(&self) -> StorageResult<u64> {
        Ok(self.pos)
    }

    fn close_and_get_handle(&mut self) -> StorageResult<Option<StateHandle>> {
        self.check_open()?;
        self.state = State::Closed;
        let result = self.close_inner();
        // A failed close drops (aborts) the writer; a successful one handed it over already.
        self.writer = None;
        result
    }
}

/// What an input stream has found so far.
enum Check {
    Reading,
    Verified,
    Failed(String),
}

/// An input stream over a stored handle's object that verifies it (see the module docs).
pub(crate) struct Input {
    reader: Box<dyn Read + Send>,
    locator: String,
    size: u64,
    expected_crc: u32,
    read: u64,
    crc: u32,
    check: Check,
}

impl Input {
    /// Check the object's size against the handle's and start reading.
    pub(crate) fn open(
        blob: crate::Blob,
        locator: &str,
        size: u64,
        crc32c: u32,
    ) -> StorageResult<Self> {
        if blob.size != size {
            return Err(StorageError::Corrupt(format!(
                "handle '{locator}': size mismatch: the object holds {} bytes, the handle says \
                 {size}",
                blob.size
            )));
        }
        Ok(Input {
            reader: blob.reader,
            locator: locator.to_string(),
            size,
            expected_crc: crc32c,
            read: 0,
            crc: 0,
            check: Check::Reading,
        })
    }

    fn corrupt(&mut self, why: String) -> StorageError {
        self.check = Check::Failed(why.clone());
        StorageError::Corrupt(format!("handle '{}': {why}", self.locator))
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> StorageResult<usize> {
        let n = loop {
            match self.reader.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(StorageError::io(
                        format!("reading handle '{}'", self.locator),
                        &e,
                    ))
                }
            }
        };
        if n == 0 {
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
            return Ok(0);
        }
        if self.read + n as u64 > self.size {
            return Err(self.corrupt(format!(
                "size mismatch: the object holds more than the handle's {} bytes",
                self.size
            )));
        }
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

impl InputStream for Input {
    fn read(&mut self, buf: &mut [u8]) -> StorageResult<usize> {
        match &self.check {
            Check::Verified => return Ok(0),
            Check::Failed(why) => {
                return Err(StorageError::Corrupt(format!(
                    "handle '{}': {why}",
                    self.locator
                )))
            }
            Check::Reading => {}
        }
        if buf.is_empty() {
            return Ok(0);
        }
        self.read_inner(buf)
    }
}
