//! Channel state: the in-flight records an unaligned checkpoint holds, as bytes in a stream.
//!
//! A keyed task's channel state for one input channel is the records that channel delivered
//! before its barrier but that the task's state snapshot does not reflect: the records a barrier
//! overtook in the exchange, and, after the snapshot, those that arrived before the channel's own
//! barrier. They are already encoded (records cross the exchange as bytes), so persisting them is
//! a copy of the buffers as they are:
//!
//! ```text
//! magic "CAIRNCS1" (8) | segment* ; segment = records (u32 LE) | length (u32 LE) | bytes
//! ```
//!
//! Each segment is (part of) one exchange buffer, so restoring gives back buffers of the size the
//! exchange uses, in their original order. The stream's handle carries its size and CRC32C like
//! any state; the metadata carries the record count, which decoding checks.

use super::codec::Buffer;

/// The magic number at the start of every channel-state stream.
pub(crate) const MAGIC: &[u8; 8] = b"CAIRNCS1";

/// Bytes of framing per segment.
pub(crate) const SEGMENT_HEADER: usize = 8;

/// Append the header of a segment of `records` records in `len` bytes.
pub(crate) fn segment_header(records: u32, len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&records.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
}

/// Decode a channel-state stream into its buffers, checking the framing and, if given, the
/// record count the metadata says it holds.
pub(crate) fn decode(bytes: &[u8], expected_records: Option<u64>) -> Result<Vec<Buffer>, String> {
    let mut rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| "channel state does not start with its magic number".to_string())?;
    let mut buffers = Vec::new();
    let mut records = 0u64;
    while !rest.is_empty() {
        if rest.len() < SEGMENT_HEADER {
            return Err(format!(
                "channel state ends with {} bytes, too few for a segment header",
                rest.len()
            ));
        }
        let n = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes")) as usize;
        rest = &rest[SEGMENT_HEADER..];
        if len > rest.len() {
            return Err(format!(
                "a channel-state segment says {len} bytes, {} are left",
                rest.len()
            ));
        }
        if n == 0 || len == 0 {
            return Err("a channel-state segment is empty".to_string());
        }
        buffers.push(Buffer {
            bytes: rest[..len].to_vec(),
            records: n,
        });
        records += u64::from(n);
        rest = &rest[len..];
    }
    if let Some(expected) = expected_records {
        if expected != records {
            return Err(format!(
                "channel state holds {records} records, the metadata says {expected}"
            ));
        }
    }
    Ok(buffers)
}

/// Check a channel-state stream's framing (for `cairn checkpoints verify`, which does not know
/// the job's record type).
pub fn check(bytes: &[u8]) -> Result<(), String> {
    decode(bytes, None).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(segments: &[(u32, &[u8])]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for (n, b) in segments {
            segment_header(*n, b.len(), &mut out);
            out.extend_from_slice(b);
        }
        out
    }

    #[test]
    fn round_trips_in_order_and_checks_counts() {
        let bytes = encode(&[(2, b"ab"), (1, b"xyz")]);
        let buffers = decode(&bytes, Some(3)).unwrap();
        assert_eq!(buffers.len(), 2);
        assert_eq!(
            (buffers[0].bytes.as_slice(), buffers[0].records),
            (&b"ab"[..], 2)
        );
        assert_eq!(
            (buffers[1].bytes.as_slice(), buffers[1].records),
            (&b"xyz"[..], 1)
        );
        assert!(decode(&bytes, Some(4))
            .unwrap_err()
            .contains("metadata says 4"));
    }

    #[test]
    fn damage_is_refused() {
        let good = encode(&[(2, b"ab")]);
        assert!(check(&good).is_ok());
        assert!(check(&good[..good.len() - 1]).is_err());
        assert!(check(&good[1..]).is_err());
        let mut extra = good.clone();
        extra.extend_from_slice(&[1, 0, 0]);
        assert!(check(&extra).is_err());
        assert!(check(&encode(&[(0, b"a")])).is_err());
        assert!(check(MAGIC).is_ok(), "no segment is an empty channel state");
    }
}
