//! The checkpoint metadata format: what the coordinator commits as a checkpoint's `_metadata`,
//! through the storage plugin's single atomic commit.
//!
//! ```text
//! magic "CAIRNCKP" (8) | format version (u16 LE) | crc32c of payload (u32 LE)
//! | payload length (u64 LE) | payload (JSON)
//! ```
//!
//! The payload is JSON so that `cairn checkpoints show` and a person with `jq` can read it; inline
//! state bytes inside it are base64. Decoding checks, in order, the length, the magic number, the
//! version (a newer format is refused with a message that says so), the declared length and the
//! checksum, and only then parses. Every failure is a [`MetadataError`] that says what was wrong;
//! no input makes decoding panic (a test feeds it every single-bit flip and every truncation of
//! a real document, plus random bytes).

use base64::Engine as _;
use bytesize::ByteSize;
use cairn_plugin_api::StateHandle;
use serde::{Deserialize, Serialize};

/// The magic number at the start of every metadata document.
pub const MAGIC: &[u8; 8] = b"CAIRNCKP";

/// Format 1: checkpoint id, kind, job id and kind, config fingerprint, timestamps, task states
/// with their handles, source offsets.
pub const FORMAT_1: u16 = 1;

/// Format 2 (the job API): source offsets are any JSON value (the source's offset type); a
/// keyed task's state carries its sink's transactions and its state's epoch and page counts.
/// Format 1 documents still decode.
pub const FORMAT_2: u16 = 2;

/// Format 3 (every barrier mode): how the checkpoint's barriers were handled (`barriers`), and
/// per task its own mode, the channel state of an unaligned checkpoint (the in-flight records,
/// with their handles), its alignment time and start delay. Formats 1 and 2 still decode (as
/// aligned, without channel state); a cairn that only knows format 2 refuses a format-3
/// document, so a checkpoint with channel state is never restored without it.
pub const FORMAT_3: u16 = 3;

/// The format this build writes. Always the last constant above.
pub const FORMAT_VERSION: u16 = FORMAT_3;

/// The operator name of keyed tasks in [`TaskState::operator`].
pub const KEYED_OPERATOR: &str = "keyed";

const HEADER_LEN: usize = 8 + 2 + 4 + 8;

/// Why bytes are not valid metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// Shorter than a header.
    #[error("{0} bytes is too short to be checkpoint metadata")]
    TooShort(usize),
    /// Not our magic number.
    #[error("not cairn checkpoint metadata (bad magic number)")]
    BadMagic,
    /// Written by a newer cairn.
    #[error("metadata format {found} is newer than this cairn understands (up to {FORMAT_VERSION}); upgrade cairn")]
    NewerFormat {
        /// The version found.
        found: u16,
    },
    /// The length field disagrees with the bytes.
    #[error("metadata is truncated or padded: the header says {declared} payload bytes, there are {actual}")]
    Length {
        /// What the header says.
        declared: u64,
        /// What is there.
        actual: u64,
    },
    /// The checksum does not match.
    #[error("metadata checksum mismatch: stored crc32c {stored:08x}, computed {computed:08x}")]
    Checksum {
        /// Stored.
        stored: u32,
        /// Computed.
        computed: u32,
    },
    /// The payload does not parse.
    #[error("metadata payload is invalid: {0}")]
    Payload(String),
}

/// Checkpoint or savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotKind {
    /// A periodic checkpoint.
    Checkpoint,
    /// A savepoint.
    Savepoint,
}

/// How a checkpoint's barriers were handled (`checkpointing.mode`, `unaligned`,
/// `aligned-checkpoint-timeout`; savepoints are always aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Barriers {
    /// Exactly-once, aligned: a task waited for the barrier on every input, holding back the
    /// inputs that had delivered it; no in-flight record is part of the checkpoint.
    #[default]
    Aligned,
    /// Exactly-once, unaligned from the start: barriers overtook the records queued ahead of
    /// them, and those records are the checkpoint's channel state.
    Unaligned,
    /// Exactly-once: started aligned, and switched to unaligned when the checkpoint's age passed
    /// `aligned-checkpoint-timeout` (in at least one task).
    UnalignedAfterTimeout,
    /// At-least-once: barriers were not aligned; a task went on reading an input that had
    /// delivered the barrier, so a restore may count some records twice.
    AtLeastOnce,
}

impl Barriers {
    /// The name in metadata and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Barriers::Aligned => "aligned",
            Barriers::Unaligned => "unaligned",
            Barriers::UnalignedAfterTimeout => "unaligned-after-timeout",
            Barriers::AtLeastOnce => "at-least-once",
        }
    }

    /// Words for people: `aligned`, `unaligned`, `switched to unaligned after the timeout`,
    /// `not aligned (at-least-once)`.
    pub fn describe(self) -> &'static str {
        match self {
            Barriers::Aligned => "aligned",
            Barriers::Unaligned => "unaligned",
            Barriers::UnalignedAfterTimeout => "switched to unaligned after the timeout",
            Barriers::AtLeastOnce => "not aligned (at-least-once)",
        }
    }
}

impl std::fmt::Display for Barriers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state handle as stored in metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum HandleRecord {
    /// Inline bytes, base64.
    Inline {
        /// The bytes, base64 (standard alphabet, padded).
        base64: String,
    },
    /// Stored by the backend.
    Stored {
        /// The backend's locator.
        locator: String,
        /// Size in bytes.
        size: u64,
        /// CRC32C of the bytes.
        crc32c: u32,
    },
}

impl From<&StateHandle> for HandleRecord {
    fn from(h: &StateHandle) -> Self {
        match h {
            StateHandle::Inline(b) => HandleRecord::Inline {
                base64: base64::engine::general_purpose::STANDARD.encode(b),
            },
            StateHandle::Stored {
                locator,
                size,
                crc32c,
            } => HandleRecord::Stored {
                locator: locator.clone(),
                size: *size,
                crc32c: *crc32c,
            },
        }
    }
}

impl HandleRecord {
    /// The handle to hand to the storage plugin.
    pub fn to_handle(&self) -> Result<StateHandle, MetadataError> {
        Ok(match self {
            HandleRecord::Inline { base64 } => StateHandle::Inline(
                base64::engine::general_purpose::STANDARD
                    .decode(base64)
                    .map_err(|e| {
                        MetadataError::Payload(format!("inline handle is not base64: {e}"))
                    })?,
            ),
            HandleRecord::Stored {
                locator,
                size,
                crc32c,
            } => StateHandle::Stored {
                locator: locator.clone(),
                size: *size,
                crc32c: *crc32c,
            },
        })
    }

    /// Bytes of state the handle stands for.
    pub fn size(&self) -> u64 {
        match self {
            // 4 base64 characters carry 3 bytes; the exact size is known after decoding.
            HandleRecord::Inline { base64 } => (base64.len() as u64 / 4) * 3,
            HandleRecord::Stored { size, .. } => *size,
        }
    }
}

/// One task's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskState {
    /// The operator: [`KEYED_OPERATOR`] (format 1 wrote `counter`).
    pub operator: String,
    /// The parallel subtask index.
    pub subtask: u32,
    /// Its state, in order.
    pub handles: Vec<HandleRecord>,
    /// Records its state reflects (restored ones included) when it took the snapshot.
    pub records: u64,
    /// Its sink's pending transactions and open transaction (format 2; `None` without a sink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<serde_json::Value>,
    /// The epoch of its state snapshot (format 2).
    #[serde(default)]
    pub epoch: u64,
    /// Keys in its state (format 2).
    #[serde(default)]
    pub entries: u64,
    /// Pages of its state (format 2).
    #[serde(default)]
    pub pages: u64,
    /// Pages changed since its previous snapshot (format 2).
    #[serde(default)]
    pub changed_pages: u64,
    /// How this task handled the checkpoint's barriers (format 3; older formats: aligned).
    #[serde(default)]
    pub barriers: Barriers,
    /// Its channel state (format 3): the in-flight records of each input channel that its state
    /// does not reflect, replayed in order before any new input on that channel at restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel_state: Vec<ChannelStateRecord>,
    /// Bytes of its channel state: the sum of its channel-state handles' sizes (format 3).
    #[serde(default)]
    pub channel_state_bytes: u64,
    /// Milliseconds from the first barrier at this task to the last (format 3).
    #[serde(default)]
    pub alignment_ms: u64,
    /// Milliseconds from the trigger to the first barrier at this task (format 3).
    #[serde(default)]
    pub start_delay_ms: u64,
}

impl TaskState {
    /// Every handle this task's snapshot references: its state, then its channel state.
    pub fn every_handle(&self) -> impl Iterator<Item = &HandleRecord> {
        self.handles
            .iter()
            .chain(self.channel_state.iter().map(|c| &c.handle))
    }

    /// One line per input channel with channel state, for people: `channel state of input 1:
    /// 9 records, 30 B`.
    pub fn channel_state_lines(&self) -> Vec<String> {
        self.channel_state
            .iter()
            .map(|c| {
                format!(
                    "channel state of input {}: {} records, {}",
                    c.channel,
                    c.records,
                    ByteSize(c.bytes).display().iec()
                )
            })
            .collect()
    }
}

/// The in-flight records of one input channel of a task, as a checkpoint holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelStateRecord {
    /// The input channel: the source subtask the records came from.
    pub channel: u32,
    /// How many records.
    pub records: u64,
    /// Bytes of the stream (the records, encoded, and their framing).
    pub bytes: u64,
    /// Where they are.
    pub handle: HandleRecord,
}

/// Everything a checkpoint needs to restore the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// The checkpoint id.
    pub checkpoint_id: u64,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// The job's stable id.
    pub job_id: String,
    /// The built-in job it belongs to, such as `keyed-counter`.
    pub job_kind: String,
    /// SHA-256 (hex) of the job settings the state layout depends on; a restore with different
    /// settings is refused.
    pub config_fingerprint: String,
    /// The settings behind the fingerprint, for people (`keys = 1000, parallelism = 2, ...`).
    #[serde(default)]
    pub job_settings: String,
    /// How its barriers were handled (format 3; older formats: aligned).
    #[serde(default)]
    pub barriers: Barriers,
    /// When the coordinator triggered it (ms since the Unix epoch).
    pub triggered_at_ms: u64,
    /// When the last task acknowledged it (ms since the Unix epoch).
    pub completed_at_ms: u64,
    /// Every task's state.
    pub tasks: Vec<TaskState>,
    /// Each source subtask's offset at the barrier, as the source's offset type writes it
    /// (format 1: a count of records).
    pub source_offsets: Vec<serde_json::Value>,
}

impl CheckpointMetadata {
    /// Total bytes of state its handles stand for.
    pub fn state_size(&self) -> u64 {
        self.tasks
            .iter()
            .flat_map(|t| &t.handles)
            .map(HandleRecord::size)
            .sum()
    }

    /// Bytes of channel state over every task.
    pub fn channel_state_bytes(&self) -> u64 {
        self.tasks.iter().map(|t| t.channel_state_bytes).sum()
    }

    /// The longest alignment of any task, in milliseconds.
    pub fn alignment_ms(&self) -> u64 {
        self.tasks.iter().map(|t| t.alignment_ms).max().unwrap_or(0)
    }

    /// How its barriers went, for people: `unaligned, 1.2 MiB of channel state, longest
    /// alignment 3 ms`.
    pub fn barriers_text(&self) -> String {
        let mut text = self.barriers.describe().to_string();
        if matches!(
            self.barriers,
            Barriers::Unaligned | Barriers::UnalignedAfterTimeout
        ) {
            text.push_str(&format!(
                ", {} of channel state",
                ByteSize(self.channel_state_bytes()).display().iec()
            ));
        }
        text.push_str(&format!(", longest alignment {} ms", self.alignment_ms()));
        text
    }

    /// Encode in the current format.
    pub fn encode(&self) -> Vec<u8> {
        let payload = serde_json::to_vec(self).expect("metadata serializes");
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Decode and verify.
    pub fn decode(bytes: &[u8]) -> Result<Self, MetadataError> {
        if bytes.len() < HEADER_LEN {
            return Err(MetadataError::TooShort(bytes.len()));
        }
        if &bytes[..8] != MAGIC {
            return Err(MetadataError::BadMagic);
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version == 0 {
            return Err(MetadataError::Payload(
                "format version 0 does not exist".to_string(),
            ));
        }
        if version > FORMAT_VERSION {
            return Err(MetadataError::NewerFormat { found: version });
        }
        let stored = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]);
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[14..22]);
        let declared = u64::from_le_bytes(len);
        let payload = &bytes[HEADER_LEN..];
        if declared != payload.len() as u64 {
            return Err(MetadataError::Length {
                declared,
                actual: payload.len() as u64,
            });
        }
        let computed = crc32c::crc32c(payload);
        if computed != stored {
            return Err(MetadataError::Checksum { stored, computed });
        }
        serde_json::from_slice(payload).map_err(|e| MetadataError::Payload(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CheckpointMetadata {
        CheckpointMetadata {
            checkpoint_id: 42,
            kind: SnapshotKind::Checkpoint,
            job_id: "job-1".into(),
            job_kind: "keyed-counter".into(),
            config_fingerprint: "ab".repeat(32),
            job_settings: "keys = 1, parallelism = 1, state-bytes-per-key = 64".into(),
            barriers: Barriers::Unaligned,
            triggered_at_ms: 1_700_000_000_000,
            completed_at_ms: 1_700_000_000_250,
            tasks: vec![TaskState {
                operator: "counter".into(),
                subtask: 0,
                handles: vec![
                    HandleRecord::from(&StateHandle::Inline(vec![1, 2, 3, 250])),
                    HandleRecord::from(&StateHandle::Stored {
                        locator: "j/chk-42/ab".into(),
                        size: 99,
                        crc32c: 7,
                    }),
                ],
                records: 1234,
                sink: Some(
                    serde_json::json!({"pending": [[41, {"seq": 3}]], "current": {"seq": 4}}),
                ),
                epoch: 7,
                entries: 3,
                pages: 1,
                changed_pages: 1,
                barriers: Barriers::Unaligned,
                channel_state: vec![ChannelStateRecord {
                    channel: 1,
                    records: 9,
                    bytes: 30,
                    handle: HandleRecord::from(&StateHandle::Inline(vec![7; 30])),
                }],
                channel_state_bytes: 30,
                alignment_ms: 2,
                start_delay_ms: 1,
            }],
            source_offsets: vec![10.into(), serde_json::json!({"file": 1, "pos": 20})],
        }
    }

    #[test]
    fn round_trips() {
        let m = sample();
        let decoded = CheckpointMetadata::decode(&m.encode()).unwrap();
        assert_eq!(decoded, m);
        assert_eq!(
            decoded.tasks[0].handles[0].to_handle().unwrap(),
            StateHandle::Inline(vec![1, 2, 3, 250])
        );
    }

    #[test]
    fn format_1_documents_still_decode() {
        let payload = br#"{"checkpoint_id":3,"kind":"checkpoint","job_id":"j","job_kind":"keyed-counter","config_fingerprint":"ab","triggered_at_ms":1,"completed_at_ms":2,"tasks":[{"operator":"counter","subtask":0,"handles":[],"records":5}],"source_offsets":[5]}"#;
        let mut doc = MAGIC.to_vec();
        doc.extend_from_slice(&FORMAT_1.to_le_bytes());
        doc.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        doc.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        doc.extend_from_slice(payload);
        let m = CheckpointMetadata::decode(&doc).unwrap();
        assert_eq!(m.source_offsets, vec![serde_json::json!(5)]);
        assert_eq!(m.tasks[0].sink, None);
        assert_eq!(m.tasks[0].operator, "counter");
        assert_eq!(m.barriers, Barriers::Aligned);
        assert!(m.tasks[0].channel_state.is_empty());
    }

    #[test]
    fn every_handle_includes_channel_state() {
        let m = sample();
        assert_eq!(m.tasks[0].every_handle().count(), 3);
        assert_eq!(m.channel_state_bytes(), 30);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["barriers"], "unaligned");
        assert_eq!(json["tasks"][0]["channel_state_bytes"], 30);
    }

    #[test]
    fn each_kind_of_damage_has_its_own_error() {
        let good = sample().encode();
        assert_eq!(
            CheckpointMetadata::decode(&good[..5]),
            Err(MetadataError::TooShort(5))
        );
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(
            CheckpointMetadata::decode(&bad),
            Err(MetadataError::BadMagic)
        );
        let mut newer = good.clone();
        newer[8] = 9;
        assert_eq!(
            CheckpointMetadata::decode(&newer),
            Err(MetadataError::NewerFormat { found: 9 })
        );
        assert!(matches!(
            CheckpointMetadata::decode(&good[..good.len() - 1]),
            Err(MetadataError::Length { .. })
        ));
        let mut flipped = good.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 1;
        assert!(matches!(
            CheckpointMetadata::decode(&flipped),
            Err(MetadataError::Checksum { .. })
        ));
    }

    /// A deterministic fuzz pass: every single-bit flip and every truncation of a real document,
    /// and pseudo-random garbage, decode to an error or (never) to a different document, and
    /// never panic.
    #[test]
    fn no_damaged_input_panics_or_decodes_to_something_else() {
        let m = sample();
        let good = m.encode();
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                if let Ok(decoded) = CheckpointMetadata::decode(&b) {
                    assert_eq!(
                        decoded, m,
                        "flip at byte {i} bit {bit} decoded to another document"
                    );
                }
            }
        }
        for len in 0..good.len() {
            assert!(
                CheckpointMetadata::decode(&good[..len]).is_err(),
                "truncation to {len} decoded"
            );
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for round in 0..2000 {
            let len = (round * 7) % 300;
            let garbage: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let mut with_header = good[..HEADER_LEN].to_vec();
            with_header.extend_from_slice(&garbage);
            assert!(CheckpointMetadata::decode(&garbage).is_err());
            let _ = CheckpointMetadata::decode(&with_header);
        }
    }
}
