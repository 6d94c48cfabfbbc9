//! State handles: what a closed output stream gives back, and what the host stores in the
//! checkpoint metadata to find the bytes again.

use serde::{Deserialize, Serialize};

/// Where written state lives. Small state travels inside the handle (and so inside the metadata);
/// larger state stays in the backend and the handle points at it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateHandle {
    /// The bytes themselves, for state at or under the backend's inline threshold. They are
    /// covered by the checksum of the metadata that holds the handle.
    Inline(Vec<u8>),
    /// State stored by the backend.
    Stored {
        /// Backend-specific locator. Opaque to the host; the backend validates it on every use,
        /// because it comes back from metadata bytes that may have been tampered with.
        locator: String,
        /// Exact size in bytes.
        size: u64,
        /// CRC32C (Castagnoli) of all the bytes.
        crc32c: u32,
    },
}

impl StateHandle {
    /// Number of state bytes the handle stands for.
    pub fn size(&self) -> u64 {
        match self {
            StateHandle::Inline(b) => b.len() as u64,
            StateHandle::Stored { size, .. } => *size,
        }
    }

    /// Whether the bytes live inside the handle.
    pub fn is_inline(&self) -> bool {
        matches!(self, StateHandle::Inline(_))
    }

    /// A short description for messages: the locator, or the inline size.
    pub fn describe(&self) -> String {
        match self {
            StateHandle::Inline(b) => format!("inline handle ({} bytes)", b.len()),
            StateHandle::Stored {
                locator,
                size,
                crc32c,
            } => {
                format!("handle '{locator}' ({size} bytes, crc32c {crc32c:08x})")
            }
        }
    }
}

impl std::fmt::Debug for StateHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Inline handles can hold a megabyte; print its size rather than every byte.
        f.write_str(&self.describe())
    }
}

/// Who owns the state a stream writes (Flink's `CheckpointedStateScope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Owned by one checkpoint; disposed with it.
    Exclusive,
    /// May be referenced by several checkpoints (incremental state); the host's shared-state
    /// registry decides when it is discarded.
    Shared,
}
