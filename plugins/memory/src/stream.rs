//! The output stream: state bytes buffered in memory until close turns them into an inline
//! handle (Flink's `MemoryCheckpointOutputStream`).
//!
//! As in Flink, a stream larger than `max-state-size` fails at close, not at write. Unlike Flink,
//! the stream stops buffering as soon as it passes the limit and frees what it held, so a
//! runaway writer costs no memory while the caller keeps going; `pos()` still counts every byte.

use std::mem;

use cairn_plugin_api::{OutputStream, StateHandle, StorageError, StorageResult};

use crate::options::MAX_MAX_STATE_SIZE_TEXT;

/// The in-memory output stream.
pub struct MemoryOutputStream {
    /// For messages: which stream this is, for example
    /// `stream #3 (exclusive) of memory:job/chk-7`.
    name: String,
    max_state_size: u64,
    /// Bytes written so far, including those no longer buffered after an overflow.
    pos: u64,
    /// The buffered bytes; emptied and no longer filled once `pos` exceeds the limit.
    buf: Vec<u8>,
    closed: bool,
}

impl MemoryOutputStream {
    /// A new empty stream named `name` for messages.
    pub fn new(name: String, max_state_size: u64) -> Self {
        Self {
            name,
            max_state_size,
            pos: 0,
            buf: Vec::new(),
            closed: false,
        }
    }

    fn overflowed(&self) -> bool {
        self.pos > self.max_state_size
    }

    fn capacity_error(&self) -> StorageError {
        StorageError::CapacityExceeded(format!(
            "{} holds {} bytes, above the memory backend's max-state-size of {} bytes; raise \
             storage.options.max-state-size (at most {MAX_MAX_STATE_SIZE_TEXT}) or use the \
             filesystem backend",
            self.name, self.pos, self.max_state_size
        ))
    }
}

impl OutputStream for MemoryOutputStream {
    fn write(&mut self, buf: &[u8]) -> StorageResult<()> {
        if self.closed {
            return Err(StorageError::Other(format!(
                "{} is closed; write refused",
                self.name
            )));
        }
        self.pos = self.pos.saturating_add(buf.len() as u64);
        if self.overflowed() {
            if !self.buf.is_empty() || self.buf.capacity() > 0 {
                tracing::warn!(
                    "{}; its bytes are dropped and its close will fail",
                    self.capacity_error()
                );
                self.buf = Vec::new();
            }
        } else {
            self.buf.extend_from_slice(buf);
        }
        Ok(())
    }

    fn pos(&self) -> StorageResult<u64> {
        Ok(self.pos)
    }

    fn close_and_get_handle(&mut self) -> StorageResult<Option<StateHandle>> {
        if self.closed {
            return Err(StorageError::Other(format!(
                "{} is closed already",
                self.name
            )));
        }
        self.closed = true;
        if self.overflowed() {
            return Err(self.capacity_error());
        }
        if self.pos == 0 {
            return Ok(None);
        }
        Ok(Some(StateHandle::Inline(mem::take(&mut self.buf))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_frees_the_buffer_and_fails_at_close() {
        let mut s = MemoryOutputStream::new("stream #1".into(), 4);
        s.write(b"abcd").unwrap();
        assert_eq!(s.buf.len(), 4);
        s.write(b"e").unwrap();
        assert_eq!(s.buf.capacity(), 0);
        s.write(b"fgh").unwrap();
        assert_eq!(s.pos().unwrap(), 8);
        let err = s.close_and_get_handle().unwrap_err();
        assert!(
            matches!(&err, StorageError::CapacityExceeded(m) if m.contains("8 bytes") && m.contains("stream #1")),
            "{err}"
        );
        let err = s.write(b"x").unwrap_err();
        assert!(
            matches!(&err, StorageError::Other(m) if m.contains("stream #1")),
            "{err}"
        );
    }
}
