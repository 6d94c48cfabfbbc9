//! Output and input streams of state bytes.
//!
//! # Writing
//!
//! An [`FsOutputStream`] buffers in memory, with a capacity of `max(write-buffer,
//! inline-threshold)` (Flink's rule: a stream that fits the threshold must stay in memory to
//! become an inline handle). Its file is created only when the buffer would overflow, so small
//! state never touches the disk, and creating a stream does no I/O at all (in particular it
//! never creates a directory). A single write larger than the buffer goes straight to the file
//! after the buffered bytes. The CRC32C is computed as the bytes arrive.
//!
//! On close, a stream that never wrote its file and holds at most `inline-threshold` bytes gives
//! an inline handle. Otherwise the rest of the buffer is written, the file is fsynced (an fsync
//! error fails the stream and is not retried) and a stored handle is returned. The directory
//! entry is made durable at commit time, when the location fsyncs its directories.
//!
//! A stream that is dropped, or whose close fails, deletes its file. A stream whose write failed
//! is broken: the bytes on disk are unknown, so it refuses to give a handle.
//!
//! # Reading
//!
//! An [`FsInputStream`] checks the file's length at open and the CRC32C of every byte as they
//! are read. At the end, instead of returning `0`, it returns `Corrupt` naming the locator if
//! the size or the checksum differs from the handle, and it never returns more bytes than the
//! handle's size.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    mem,
    path::PathBuf,
};

use cairn_plugin_api::{InputStream, OutputStream, StateHandle, StorageResult};

use crate::{
    error::{FsError, FsResult},
    layout::{self, StreamDir},
};

/// Where an output stream is in its life.
enum State {
    Open,
    /// A write failed with this message.
    Broken(String),
    Closed,
}

/// An output stream into one state file (see the module docs).
pub(crate) struct FsOutputStream {
    /// The state file, which exists only if `file` was ever opened.
    path: PathBuf,
    locator: String,
    inline_threshold: u64,
    capacity: usize,
    buffer: Vec<u8>,
    file: Option<File>,
    /// Whether the file at `path` exists and is ours to delete (created and not handed over).
    owns_file: bool,
    pos: u64,
    crc: u32,
    state: State,
}

impl FsOutputStream {
    /// A stream into a new file in `target`. Does no I/O.
    pub(crate) fn new(target: &StreamDir, inline_threshold: u64, write_buffer: u64) -> Self {
        let name = layout::new_state_file_name();
        // Both values are at most 64 MiB (checked by the options), so they fit a usize. The
        // buffer starts at the write buffer's size and grows up to the threshold if need be.
        let capacity = usize::try_from(write_buffer.max(inline_threshold)).unwrap_or(usize::MAX);
        let initial = usize::try_from(write_buffer)
            .unwrap_or(capacity)
            .min(capacity);
        FsOutputStream {
            path: target.dir.join(&name),
            locator: format!("{}{name}", target.locator_prefix),
            inline_threshold,
            capacity,
            buffer: Vec::with_capacity(initial),
            file: None,
            owns_file: false,
            pos: 0,
            crc: 0,
            state: State::Open,
        }
    }

    fn check_open(&self) -> FsResult<()> {
        match &self.state {
            State::Open => Ok(()),
            State::Broken(first) => Err(FsError::Broken {
                path: self.path.clone(),
                first: first.clone(),
            }),
            State::Closed => Err(FsError::Closed {
                path: self.path.clone(),
            }),
        }
    }

    fn write_inner(&mut self, data: &[u8]) -> FsResult<()> {
        if self.buffer.len() + data.len() <= self.capacity {
            self.buffer.extend_from_slice(data);
        } else {
            self.flush_buffer()?;
            if data.len() >= self.capacity {
                let written = self.file_mut()?.write_all(data);
                written.map_err(|e| FsError::io(format!("writing {}", self.path.display()), e))?;
            } else {
                self.buffer.extend_from_slice(data);
            }
        }
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.pos += data.len() as u64;
        Ok(())
    }

    /// The file, created on first use. Never creates a directory: a missing one is `NotFound`.
    fn file_mut(&mut self) -> FsResult<&mut File> {
        if self.file.is_none() {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&self.path)
                .map_err(|e| {
                    FsError::io(format!("creating state file {}", self.path.display()), e)
                })?;
            self.owns_file = true;
            self.file = Some(file);
        }
        Ok(self.file.as_mut().expect("file was just opened"))
    }

    fn flush_buffer(&mut self) -> FsResult<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let buffer = mem::take(&mut self.buffer);
        let written = self.file_mut().map(|file| file.write_all(&buffer));
        // Keep the allocation for the next bytes.
        self.buffer = buffer;
        self.buffer.clear();
        written?.map_err(|e| FsError::io(format!("writing {}", self.path.display()), e))
    }

    fn close_inner(&mut self) -> FsResult<Option<StateHandle>> {
        self.check_open()?;
        self.state = State::Closed;
        if self.pos == 0 {
            return Ok(None);
        }
        if self.file.is_none() && self.pos <= self.inline_threshold {
            let mut bytes = mem::take(&mut self.buffer);
            bytes.shrink_to_fit();
            return Ok(Some(StateHandle::Inline(bytes)));
        }
        self.flush_buffer()?;
        self.buffer = Vec::new();
        let file = self.file.take().expect("flush_buffer opened the file");
        file.sync_all().map_err(|e| FsError::Fsync {
            path: self.path.clone(),
            source: e,
        })?;
        drop(file);
        self.owns_file = false;
        Ok(Some(StateHandle::Stored {
            locator: self.locator.clone(),
            size: self.pos,
            crc32c: self.crc,
        }))
    }

    /// Delete the file if it exists and was not handed over in a handle.
    fn delete_file(&mut self) {
        self.file = None;
        if !mem::take(&mut self.owns_file) {
            return;
        }
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                path = %self.path.display(),
                "could not delete the file of an abandoned state stream: {e}"
            ),
        }
    }
}

impl OutputStream for FsOutputStream {
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
        let result = self.close_inner();
        if result.is_err() {
            self.delete_file();
        }
        Ok(result?)
    }
}

impl Drop for FsOutputStream {
    fn drop(&mut self) {
        self.delete_file();
    }
}

/// What an input stream has found so far.
enum Check {
    Reading,
    Verified,
    Failed(String),
}

/// An input stream over a stored handle's file that verifies it (see the module docs).
pub(crate) struct FsInputStream {
    file: File,
    locator: String,
    size: u64,
    expected_crc: u32,
    read: u64,
    crc: u32,
    check: Check,
}

impl FsInputStream {
    /// Open the file at `path` for the handle with this locator, size and checksum.
    pub(crate) fn open(path: PathBuf, locator: &str, size: u64, crc32c: u32) -> FsResult<Self> {
        let file = File::open(&path)
            .map_err(|e| FsError::io(format!("handle '{locator}' ({})", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| FsError::io(format!("handle '{locator}' ({})", path.display()), e))?
            .len();
        if len != size {
            return Err(FsError::Corrupt {
                locator: locator.to_string(),
                why: format!("size mismatch: the file holds {len} bytes, the handle says {size}"),
            });
        }
        Ok(FsInputStream {
            file,
            locator: locator.to_string(),
            size,
            expected_crc: crc32c,
            read: 0,
            crc: 0,
            check: Check::Reading,
        })
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> FsResult<usize> {
        let n = loop {
            match self.file.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(FsError::io(format!("reading handle '{}'", self.locator), e)),
            }
        };
        if n == 0 {
            if self.read != self.size {
                return Err(self.corrupt(format!(
                    "size mismatch: the file ended after {} bytes, the handle says {}",
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
                "size mismatch: the file holds more than the handle's {} bytes",
                self.size
            )));
        }
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.read += n as u64;
        Ok(n)
    }

    fn corrupt(&mut self, why: String) -> FsError {
        self.check = Check::Failed(why.clone());
        FsError::Corrupt {
            locator: self.locator.clone(),
            why,
        }
    }
}

impl InputStream for FsInputStream {
    fn read(&mut self, buf: &mut [u8]) -> StorageResult<usize> {
        match &self.check {
            Check::Verified => return Ok(0),
            Check::Failed(why) => {
                return Err(FsError::Corrupt {
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
