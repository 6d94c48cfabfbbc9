//! The built-in keyed-counter job, on the job API: a deterministic source and real per-key
//! state.
//!
//! Source subtask `s` of `P` emits its `i`-th record with the key `mix(i * P + s) % keys`, so the
//! whole stream is a pure function of `(keys, P, i)`: a source resumes from an offset (the
//! number of records it emitted), and a test computes exactly what every key's final count must
//! be ([`expected_counts`]).
//!
//! Each key's state is `state-bytes-per-key` bytes held in memory ([`CounterValue`]): the count
//! in the first 8 bytes (little-endian), then padding. Every record of a key adds one to its
//! count and overwrites 8 pseudo-random bytes of the padding (chosen from the key and the new
//! count), like the Flink peer job, so checkpoints write real, changing bytes and the value
//! after `n` records is a pure function of `(key, n)` ([`value_after`]). Every key a task owns
//! exists from the start (prefilled in the background), so the state is `keys ×
//! state-bytes-per-key` bytes; the snapshot writes exactly those bytes, plus each key and a
//! length.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    api::{Job, JobEnd, JobError, Next, NoSink, Prefill, Process, Source, TaskContext},
    codec::mix,
    state::read_state,
};
use crate::config::JobConfig;

/// The job kind's name in metadata.
pub const JOB_KIND: &str = "keyed-counter";

/// Bytes of bookkeeping per key on top of its value (index entry, page slot, key, pointers),
/// for the memory estimate.
const PER_KEY_OVERHEAD: u64 = 64;

/// The key of record `index` of source `subtask` out of `parallelism`.
pub fn key_of(keys: u64, parallelism: u32, subtask: u32, index: u64) -> u64 {
    mix(index
        .wrapping_mul(parallelism as u64)
        .wrapping_add(subtask as u64))
        % keys.max(1)
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
    let offsets: Vec<u64> = (0..parallelism)
        .map(|s| quota(Some(records), parallelism, s))
        .collect();
    counts_at(keys, parallelism, &offsets)
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

/// The settings the state layout depends on, for the fingerprint and for people.
pub fn describe(job: &JobConfig) -> String {
    format!(
        "keys = {}, parallelism = {}, state-bytes-per-key = {}",
        job.keys, job.parallelism, job.state_bytes_per_key
    )
}

/// One key's state: the count, then padding; `state-bytes-per-key` bytes in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterValue(#[serde(with = "serde_bytes")] pub Box<[u8]>);

impl CounterValue {
    /// The count.
    pub fn count(&self) -> u64 {
        self.0
            .get(..8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// Count one more record, and overwrite 8 pseudo-random bytes of the padding.
    fn bump(&mut self, key: u64) {
        let count = self.count() + 1;
        self.0[..8].copy_from_slice(&count.to_le_bytes());
        let slots = (self.0.len() - 8) / 8;
        if slots > 0 {
            let slot = (mix(key.rotate_left(17) ^ count) % slots as u64) as usize;
            let at = 8 + slot * 8;
            self.0[at..at + 8].copy_from_slice(&mix(key ^ count.rotate_left(32)).to_le_bytes());
        }
    }
}

/// A key's value before any record: count 0, padding from the key (so state bytes are not all
/// zero, which would compress away); an error if the memory cannot be had.
fn initial(key: u64, bytes: usize) -> Result<CounterValue, JobError> {
    let mut v = Vec::new();
    v.try_reserve_exact(bytes).map_err(|e| {
        JobError(format!(
            "out of memory for a key's {bytes} bytes of state: {e}"
        ))
    })?;
    let pad = mix(key).to_le_bytes();
    v.extend_from_slice(&0u64.to_le_bytes()[..8.min(bytes)]);
    v.extend((v.len()..bytes).map(|i| pad[i % 8]));
    Ok(CounterValue(v.into_boxed_slice()))
}

/// The value of `key` after `count` records: what a consistent checkpoint must hold.
pub fn value_after(key: u64, count: u64, bytes: usize) -> CounterValue {
    let mut v = initial(key, bytes).expect("a test-sized value");
    for _ in 0..count {
        v.bump(key);
    }
    v
}

/// Decode a keyed-counter task's state into its counts (keys with a count of 0 left out).
pub fn decode_state(bytes: &[u8]) -> Result<BTreeMap<u64, u64>, String> {
    Ok(decode_values(bytes)?
        .into_iter()
        .filter(|(_, v)| v.count() > 0)
        .map(|(k, v)| (k, v.count()))
        .collect())
}

/// Decode a keyed-counter task's state into every key's value.
pub fn decode_values(bytes: &[u8]) -> Result<BTreeMap<u64, CounterValue>, String> {
    let state = read_state::<u64, CounterValue>(&mut &bytes[..], |_| Ok(()))?;
    Ok(state.iter().map(|(k, v)| (*k, v.clone())).collect())
}

/// The keyed-counter job.
#[derive(Debug, Clone)]
pub struct KeyedCounter {
    keys: u64,
    parallelism: u32,
    state_bytes: usize,
    settings: String,
    records: Option<u64>,
}

impl KeyedCounter {
    /// The job as `[job]` configures it; `records` bounds the sources (`--records`).
    pub fn new(job: &JobConfig, records: Option<u64>) -> Self {
        KeyedCounter {
            keys: job.keys,
            parallelism: job.parallelism,
            state_bytes: usize::try_from(job.state_bytes_per_key.max(8)).unwrap_or(usize::MAX),
            settings: describe(job),
            records,
        }
    }

    /// Bytes of state the job holds once every key exists (the estimate `config check` and
    /// `run` compare with the machine's memory).
    pub fn state_bytes(job: &JobConfig) -> u64 {
        job.keys
            .saturating_mul(job.state_bytes_per_key.saturating_add(PER_KEY_OVERHEAD))
    }
}

/// One source subtask of the keyed counter.
pub struct CounterSource {
    keys: u64,
    parallelism: u32,
    subtask: u32,
    next: u64,
    quota: u64,
}

impl Source for CounterSource {
    type Record = u64;
    type Offset = u64;

    fn next(&mut self) -> Result<Next<u64>, JobError> {
        if self.next >= self.quota {
            return Ok(Next::End);
        }
        let key = key_of(self.keys, self.parallelism, self.subtask, self.next);
        self.next += 1;
        Ok(Next::Record(key))
    }

    fn offset(&self) -> u64 {
        self.next
    }
}

impl Job for KeyedCounter {
    type Source = CounterSource;
    type Key = u64;
    type State = CounterValue;
    type Sink = NoSink;

    fn kind(&self) -> &str {
        JOB_KIND
    }

    fn settings(&self) -> String {
        self.settings.clone()
    }

    fn source(&self, ctx: &TaskContext, offset: Option<u64>) -> Result<CounterSource, JobError> {
        Ok(CounterSource {
            keys: self.keys,
            parallelism: self.parallelism,
            subtask: ctx.subtask,
            next: offset.unwrap_or(0),
            quota: quota(self.records, self.parallelism, ctx.subtask),
        })
    }

    fn key(&self, record: &u64) -> u64 {
        *record
    }

    fn process(&self, p: &mut Process<'_, Self>, key: u64) -> Result<(), JobError> {
        p.state
            .get_or_try_insert_with(|| initial(key, self.state_bytes))?
            .bump(key);
        Ok(())
    }

    fn prefill(&self, ctx: &TaskContext) -> Option<Prefill<u64, CounterValue>> {
        let ctx = *ctx;
        let bytes = self.state_bytes;
        Some(Box::new(
            (0..self.keys)
                .filter(move |k| ctx.owns(k))
                .filter_map(move |k| initial(k, bytes).ok().map(|v| (k, v))),
        ))
    }

    fn summarize(&self, end: &JobEnd<'_, Self>) -> serde_json::Map<String, serde_json::Value> {
        let mut counts = BTreeMap::new();
        for state in end.states {
            for (k, v) in state.iter() {
                if v.count() > 0 {
                    counts.insert(*k, v.count());
                }
            }
        }
        let mut details = serde_json::Map::new();
        details.insert("counts_sha256".into(), counts_digest(&counts).into());
        details.insert("keys_counted".into(), (counts.len() as u64).into());
        details
    }

    fn state_estimate(&self) -> Option<u64> {
        Some(
            self.keys
                .saturating_mul((self.state_bytes as u64).saturating_add(PER_KEY_OVERHEAD)),
        )
    }
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
    fn values_hold_their_size_and_change_with_every_record() {
        let v0 = value_after(5, 0, 64);
        assert_eq!(v0.0.len(), 64);
        assert_eq!(v0.count(), 0);
        let v1 = value_after(5, 1, 64);
        assert_eq!(v1.count(), 1);
        assert_ne!(v0.0[8..], v1.0[8..], "a record overwrites padding bytes");
        assert_eq!(value_after(5, 3, 8).0.len(), 8);
        assert_eq!(value_after(5, 3, 8).count(), 3);
    }
}
