//! Output streams (state being written) and input streams (state being read back).
//!
//! An output stream keeps its bytes in memory while they fit under the inline threshold, so
//! small state never touches the disk and comes back as an inline handle. When the stream grows
//! past the threshold it creates its file, writes what it held, and from then on writes through
//! a buffer. The CRC32C is computed as the bytes go by, and the file is synced before a handle
//! to it is handed out. A stream dropped without taking its handle deletes its file.
//!
//! An input stream checks the size and the CRC32C while it reads, and reports the end of the
//! stream only when both match; otherwise it returns `Corrupt` naming the handle.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Read, Write},
    path::PathBuf,
    sync::Arc,
};

use cairn_plugin_api::{InputStream, OutputStream, StateHandle, StorageError, StorageResult};

use crate::{layout, storage::Settings};

/// Bytes buffered between a stream and its file.
const WRITE_BUFFER: usize = 64 * 1024;

/// A stream of state being written into `dir`.
pub(crate) struct DirOutput {
    settings: Arc<Settings>,
    /// The directory the file goes into. It exists already: streams create no directories.
    dir: PathBuf,
    /// The locator up to the file name, such as `job-1/chk-3`; also names the stream in errors.
    place: String,
    /// Bytes not in a file yet: all of them while the stream is at or under the threshold.
    pending: Vec<u8>,
    /// The file, once the stream has grown past the threshold.
    file: Option<StateFile>,
    /// Bytes written so far.
    pos: u64,
    /// CRC32C of the bytes written so far.
    crc: u32,
    /// Closed (a handle was taken), or broken by a failed write.
    done: Option<&'static str>,
}

/// A state file being written.
struct StateFile {
    name: String,
    path: PathBuf,
    writer: BufWriter<File>,
}

impl StateFile {
    fn write(&mut self, bytes: &[u8]) -> StorageResult<()> {
        self.writer
            .write_all(bytes)
            .map_err(|e| StorageError::io(format_args!("writing {}", self.path.display()), &e))
    }
}

impl DirOutput {
    pub(crate) fn new(settings: Arc<Settings>, dir: PathBuf, place: String) -> Self {
        Self {
            settings,
            dir,
            place,
            pending: Vec::new(),
            file: None,
            pos: 0,
            crc: 0,
            done: None,
        }
    }

    /// Count and checksum the bytes, and keep them: in memory while the stream is at or under
    /// the threshold, in the file after that.
    fn append(&mut self, buf: &[u8]) -> StorageResult<()> {
        self.pos += buf.len() as u64;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        if let Some(file) = &mut self.file {
            return file.write(buf);
        }
        self.pending.extend_from_slice(buf);
        if self.pos <= self.settings.inline_threshold {
            return Ok(());
        }
        // Just past the threshold: from now on the bytes go to a file.
        let pending = std::mem::take(&mut self.pending);
        self.create_file()?.write(&pending)
    }

    /// Create the stream's file. It is recorded before anything is written to it, so that a
    /// failure from here on still deletes it when the stream is dropped.
    fn create_file(&mut self) -> StorageResult<&mut StateFile> {
        let name = layout::new_state_file_name();
        let path = self.dir.join(&name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StorageError::io(format_args!("creating {}", path.display()), &e))?;
        Ok(self.file.insert(StateFile {
            name,
            path,
            writer: BufWriter::with_capacity(WRITE_BUFFER, file),
        }))
    }

    /// Flush and sync the file, or delete it if that fails.
    fn finish_file(&self, file: StateFile) -> StorageResult<StateHandle> {
        let StateFile { name, path, writer } = file;
        let synced = writer
            .into_inner()
            .map_err(io::IntoInnerError::into_error)
            .and_then(|f| f.sync_all());
        if let Err(e) = synced {
            let _ = fs::remove_file(&path);
            return Err(StorageError::io(
                format_args!("writing {}", path.display()),
                &e,
            ));
        }
        Ok(StateHandle::Stored {
            locator: format!("{}/{name}", self.place),
            size: self.pos,
            crc32c: self.crc,
        })
    }

    fn check_open(&self) -> StorageResult<()> {
        match self.done {
            None => Ok(()),
            Some(why) => Err(StorageError::Other(format!(
                "stream in {} is {why}",
                self.place
            ))),
        }
    }
}

impl OutputStream for DirOutput {
    fn write(&mut self, buf: &[u8]) -> StorageResult<()> {
        self.check_open()?;
        let result = self.append(buf);
        if result.is_err() {
            // The file may hold part of `buf`; no handle may ever promise those bytes.
            self.done = Some("broken by a failed write; drop it and start a new stream");
        }
        result
    }

    fn pos(&self) -> StorageResult<u64> {
        Ok(self.pos)
    }

    fn close_and_get_handle(&mut self) -> StorageResult<Option<StateHandle>> {
        self.check_open()?;
        self.done = Some("closed");
        match self.file.take() {
            Some(file) => self.finish_file(file).map(Some),
            // At or under the threshold: the bytes travel in the handle, or there are none.
            None if self.pending.is_empty() => Ok(None),
            None => Ok(Some(StateHandle::Inline(std::mem::take(&mut self.pending)))),
        }
    }
}

impl Drop for DirOutput {
    fn drop(&mut self) {
        // A file still here was never handed out in a handle: nobody can reference it.
        if let Some(file) = self.file.take() {
            let _ = fs::remove_file(&file.path);
        }
    }
}

/// A stored handle's file being read back, checked as it goes.
pub(crate) struct DirInput {
    file: File,
    /// The handle, as [`StateHandle::describe`] puts it, for messages.
    handle: String,
    expected_size: u64,
    expected_crc: u32,
    read: u64,
    crc: u32,
}

impl DirInput {
    pub(crate) fn new(file: File, handle: String, expected_size: u64, expected_crc: u32) -> Self {
        Self {
            file,
            handle,
            expected_size,
            expected_crc,
            read: 0,
            crc: 0,
        }
    }
}

impl InputStream for DirInput {
    fn read(&mut self, buf: &mut [u8]) -> StorageResult<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = loop {
            match self.file.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(StorageError::io(
                        format_args!("reading {}", self.handle),
                        &e,
                    ))
                }
            }
        };
        self.read += n as u64;
        if self.read > self.expected_size {
            return Err(StorageError::Corrupt(format!(
                "{}: the file holds more bytes than the handle says",
                self.handle
            )));
        }
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        if n == 0 {
            // The end: report it only if every byte was the right one.
            if self.read != self.expected_size {
                return Err(StorageError::Corrupt(format!(
                    "{}: the file ends after {} bytes",
                    self.handle, self.read
                )));
            }
            if self.crc != self.expected_crc {
                return Err(StorageError::Corrupt(format!(
                    "{}: checksum mismatch, the file's bytes have crc32c {:08x}",
                    self.handle, self.crc
                )));
            }
        }
        Ok(n)
    }
}
