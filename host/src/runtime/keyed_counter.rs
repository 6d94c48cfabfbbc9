//! The built-in keyed-counter job: a deterministic source and a per-key count.
//!
//! Source subtask `s` of `P` emits its `i`-th record with the key `mix(i * P + s) % keys`, so the
//! whole stream is a pure function of `(keys, P, i)`: a source resumes from an offset, and a test
//! computes exactly what every key's final count must be ([`expected_counts`]).
//!
//! Counter subtask `c` owns the keys with `key % P == c`. Its state is one entry per key it has
//! seen, padded to `state_bytes_per_key` bytes, so the size of a checkpoint is under the
//! config's control. The encoding is versioned and every field is checked on decode.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::config::JobConfig;

/// The job kind's name in metadata.
pub const JOB_KIND: &str = "keyed-counter";

/// splitmix64: a well-mixed, cheap, deterministic hash.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The key of record `index` of source `subtask` out of `parallelism`.
pub fn key_of(keys: u64, parallelism: u32, subtask: u32, index: u64) -> u64 {
    mix(index
        .wrapping_mul(parallelism as u64)
        .wrapping_add(subtask as u64))
        % keys.max(1)
}

/// The counter subtask that owns `key`.
pub fn owner_of(key: u64, parallelism: u32) -> usize {
    (key % parallelism.max(1) as u64) as usize
}

/// How many records source `subtask` emits in a run bounded to `records` in total.
pub fn quota(records: Option<u64>, parallelism: u32, subtask: u32) -> u64 {
    match records {
        None => u64::MAX,
        Some(n) => {
            let p = parallelism.max(1) as u64;
            n / p + u64::from((subtask as u64) < n % p)
        }
    }
}

/// Every key's count after `records` records (what an exactly-once run must end with).
pub fn expected_counts(keys: u64, parallelism: u32, records: u64) -> BTreeMap<u64, u64> {
    let mut counts = BTreeMap::new();
    for s in 0..parallelism {
        for i in 0..quota(Some(records), parallelism, s) {
            *counts.entry(key_of(keys, parallelism, s, i)).or_insert(0) += 1;
        }
    }
    counts
}

/// Every key's count once source `s` has emitted `offsets[s]` records: what a consistent
/// snapshot taken at those offsets must hold.
pub fn counts_at(keys: u64, parallelism: u32, offsets: &[u64]) -> BTreeMap<u64, u64> {
    let mut counts = BTreeMap::new();
    for (s, &n) in offsets.iter().enumerate() {
        for i in 0..n {
            *counts
                .entry(key_of(keys, parallelism, s as u32, i))
                .or_insert(0) += 1;
        }
    }
    counts
}

/// SHA-256 (hex) of counts, in key order: equal digests mean equal counts.
pub fn counts_digest(counts: &BTreeMap<u64, u64>) -> String {
    let mut h = Sha256::new();
    for (k, v) in counts {
        h.update(k.to_le_bytes());
        h.update(v.to_le_bytes());
    }
    hex::encode(h.finalize())
}

/// SHA-256 (hex) of the settings the state layout depends on. A checkpoint taken with other
/// settings cannot be restored.
pub fn fingerprint(job: &JobConfig) -> String {
    let text = format!(
        "{JOB_KIND};keys={};parallelism={};state-bytes-per-key={}",
        job.keys, job.parallelism, job.state_bytes_per_key
    );
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The settings in a fingerprint, for error messages.
pub fn describe(job: &JobConfig) -> String {
    format!(
        "keys = {}, parallelism = {}, state-bytes-per-key = {}",
        job.keys, job.parallelism, job.state_bytes_per_key
    )
}

const STATE_MAGIC: &[u8; 4] = b"KCS1";

/// Encode a counter's state: magic, entry size, entry count, then `key, count, padding` per
/// entry in key order.
pub fn encode_state(counts: &BTreeMap<u64, u64>, bytes_per_key: u64) -> Vec<u8> {
    let entry = bytes_per_key.max(16) as usize;
    let mut out = Vec::with_capacity(16 + counts.len() * entry);
    out.extend_from_slice(STATE_MAGIC);
    out.extend_from_slice(&(entry as u32).to_le_bytes());
    out.extend_from_slice(&(counts.len() as u64).to_le_bytes());
    for (k, v) in counts {
        out.extend_from_slice(&k.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
        // Deterministic padding, so state bytes are not all zero (which would compress away).
        let pad = mix(*k).to_le_bytes();
        out.extend((0..entry - 16).map(|i| pad[i % 8]));
    }
    out
}

/// Decode what [`encode_state`] wrote.
pub fn decode_state(bytes: &[u8]) -> Result<BTreeMap<u64, u64>, String> {
    if bytes.len() < 16 || &bytes[..4] != STATE_MAGIC {
        return Err("counter state does not start with its magic number".to_string());
    }
    let entry = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    let n = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if entry < 16 {
        return Err(format!("counter state entry size {entry} is below 16"));
    }
    let body = &bytes[16..];
    if (body.len() as u64) != n.saturating_mul(entry as u64) {
        return Err(format!(
            "counter state holds {} bytes for {n} entries of {entry}",
            body.len()
        ));
    }
    let mut counts = BTreeMap::new();
    for chunk in body.chunks_exact(entry) {
        let k = u64::from_le_bytes(chunk[..8].try_into().expect("8 bytes"));
        let v = u64::from_le_bytes(chunk[8..16].try_into().expect("8 bytes"));
        counts.insert(k, v);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_add_up() {
        for n in [0u64, 1, 7, 1000] {
            let total: u64 = (0..3).map(|s| quota(Some(n), 3, s)).sum();
            assert_eq!(total, n);
        }
        let expected = expected_counts(10, 3, 1000);
        assert_eq!(expected.values().sum::<u64>(), 1000);
        assert!(expected.keys().all(|&k| k < 10));
    }

    #[test]
    fn state_round_trips_and_damage_is_refused() {
        let counts = expected_counts(50, 2, 500);
        let bytes = encode_state(&counts, 64);
        assert_eq!(bytes.len(), 16 + counts.len() * 64);
        assert_eq!(decode_state(&bytes).unwrap(), counts);
        assert!(decode_state(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_state(b"nope").is_err());
    }
}
