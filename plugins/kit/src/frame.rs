//! The `_metadata` frame, written once for every backend: the host's metadata bytes behind a
//! magic number, their length and their CRC32C, so that a torn or altered object is `Corrupt`
//! rather than a wrong answer.
//!
//! ```text
//! magic "CAIRNMD1" (8 bytes) | crc32c of payload (u32 LE) | payload length (u64 LE) | payload
//! ```
//!
//! Because every backend writes this frame, a savepoint written by one backend to a directory
//! reads with any other backend that can reach the directory.

const MAGIC: &[u8; 8] = b"CAIRNMD1";
const HEADER_LEN: usize = 8 + 4 + 8;

/// Frame `payload`.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Check the frame and return the payload; the error says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "{} bytes is too short for a metadata object",
            bytes.len()
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err("not a cairn metadata object (bad magic number)".to_string());
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(format!(
            "length field says {len} bytes, the object holds {}",
            payload.len()
        ));
    }
    let got = crc32c::crc32c(payload);
    if got != crc {
        return Err(format!(
            "checksum mismatch: stored crc32c {crc:08x}, computed {got:08x}"
        ));
    }
    Ok(payload.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_is_pinned() {
        let mut expected = b"CAIRNMD1".to_vec();
        expected.extend_from_slice(&crc32c::crc32c(b"hello").to_le_bytes());
        expected.extend_from_slice(&5u64.to_le_bytes());
        expected.extend_from_slice(b"hello");
        assert_eq!(encode(b"hello"), expected);
        assert_eq!(decode(&expected).unwrap(), b"hello");
    }

    #[test]
    fn every_damage_is_reported() {
        let good = encode(b"payload bytes");
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            assert!(decode(&bad).is_err(), "a flip at {at} went unnoticed");
        }
        for len in 0..good.len() {
            assert!(decode(&good[..len]).is_err(), "truncation to {len}");
        }
    }
}
