//! The framing of the `_metadata` object, so that a truncated or altered object is detected.
//!
//! ```text
//! magic "CAIRNMD1" (8 bytes) | crc32c of payload (u32 LE) | payload length (u64 LE) | payload
//! ```
//!
//! This is the same frame the bundled backends use for their `_metadata` files (the idea is
//! copied, not the crate: this plugin depends on `cairn-plugin-api` alone), so a savepoint
//! written to a local directory by this plugin reads like one written by the filesystem backend.
//! The atomic, at-most-once commit is the object store's conditional create, in the `job`
//! module.

const MAGIC: &[u8; 8] = b"CAIRNMD1";
const HEADER_LEN: usize = 8 + 4 + 8;

/// Frame `payload`.
pub(crate) fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Check the framing and return the payload.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
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
    fn round_trip_and_damage() {
        let framed = encode(b"hello");
        assert_eq!(&framed[..8], b"CAIRNMD1");
        assert_eq!(decode(&framed).unwrap(), b"hello");
        let mut bad = framed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(decode(&bad).unwrap_err().contains("checksum"));
        assert!(decode(&framed[..framed.len() - 1]).is_err());
        assert!(decode(b"short").is_err());
        assert!(decode(&[0u8; 40]).unwrap_err().contains("magic"));
    }
}
