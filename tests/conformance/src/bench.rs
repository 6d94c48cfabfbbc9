//! Storage benchmark workloads, shared by `cairn bench storage` and its companion executable
//! `cairn-bench-linked`.
//!
//! `cairn bench storage` runs these workloads against a plugin loaded through `dlopen`; the
//! companion (`tests/bench-linked`) runs the very same functions against the filesystem backend
//! linked in as an rlib. Both sides go through a `&dyn CheckpointStorage`, so the only difference
//! a loaded ÷ linked ratio can show is the call path into the backend: abi_stable vtables, `R*`
//! conversions and panic guards versus direct trait-object calls. The raw baselines (`std::fs`
//! write + `sync_all`, and a plain read) live here too, next to the backend workloads they are
//! compared with.
//!
//! Every workload returns a [`Sample`]: bytes moved, calls made and wall-clock seconds. Set-up
//! (opening a job, allocating buffers) and clean-up (disposing checkpoints) are never timed.
//!
//! The companion's protocol: one [`RoundRequest`] per line of JSON on its stdin, each answered
//! by one [`LinkedOutput`] per line of JSON on its stdout, until stdin ends. [`backend_round`]
//! does the work on both sides. Started with [`OBJECT_STORE_DIRECT_ARG`], the companion instead
//! answers [`DirectRequest`]s: the object-store plugin's baseline, `object_store` used directly.

use std::{
    fs::File,
    io::{self, Read, Write},
    path::Path,
    time::Instant,
};

use cairn_plugin_api::{
    CheckpointStorage, CompletedCheckpoint, JobStorage, Scope, StateHandle, StorageError,
    StorageResult,
};
use serde::{Deserialize, Serialize};

/// The package of the companion executable that runs the linked-in side.
pub const LINKED_RUNNER_PACKAGE: &str = "cairn-bench-linked";

/// The companion executable's name (without the platform's executable suffix).
pub const LINKED_RUNNER_BIN: &str = "cairn-bench-linked";

/// The size of each write in [`small_writes`]: small enough that the per-call cost dominates.
pub const SMALL_WRITE_SIZE: usize = 64;

/// One timed run of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Bytes written or read.
    pub bytes: u64,
    /// Write or read calls made (into the backend, or into the file for the raw baselines).
    pub calls: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl Sample {
    fn timed(bytes: u64, calls: u64, start: Instant) -> Self {
        Sample {
            bytes,
            calls,
            // Never zero, so throughputs and per-call costs stay finite.
            seconds: start.elapsed().as_secs_f64().max(1e-9),
        }
    }

    /// Throughput in MiB (2^20 bytes) per second.
    pub fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.seconds
    }

    /// Nanoseconds per call.
    pub fn nanos_per_call(&self) -> f64 {
        self.seconds * 1e9 / self.calls.max(1) as f64
    }
}

/// `len` pseudo-random bytes (xorshift), so a filesystem that compresses or deduplicates sees
/// ordinary data rather than zeros. Every workload writes this buffer over and over.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The raw write baseline: create `path`, write `size` bytes in `data`-sized `write` calls, then
/// `sync_all`. Timed from the create to the end of the sync.
pub fn raw_write(path: &Path, size: u64, data: &[u8]) -> io::Result<Sample> {
    let start = Instant::now();
    let mut file = File::create(path)?;
    let mut written = 0u64;
    let mut calls = 0u64;
    while written < size {
        let n = chunk_len(size - written, data.len());
        file.write_all(&data[..n])?;
        written += n as u64;
        calls += 1;
    }
    file.sync_all()?;
    Ok(Sample::timed(written, calls, start))
}

/// The raw read baseline: read the file at `path` to its end in `chunk`-byte `read` calls.
pub fn raw_read(path: &Path, chunk: usize) -> io::Result<Sample> {
    let mut buf = touched_buffer(chunk);
    let start = Instant::now();
    let mut file = File::open(path)?;
    let mut read = 0u64;
    let mut calls = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        calls += 1;
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    Ok(Sample::timed(read, calls, start))
}

/// What [`write_and_commit`] stored: the completed checkpoint (to dispose of it) and the state
/// handles (to read them back).
#[derive(Debug, Clone)]
pub struct Committed {
    /// The completed checkpoint.
    pub checkpoint: CompletedCheckpoint,
    /// The handles of the streams written, in order.
    pub handles: Vec<StateHandle>,
}

/// Write `size` bytes in `data`-sized writes into EXCLUSIVE streams of checkpoint
/// `checkpoint_id` of `job`, close them, and commit the checkpoint. Timed from
/// `begin_checkpoint` to the end of `commit`.
///
/// One stream holds everything unless the backend has a per-stream limit
/// (`StorageInfo::max_state_size`, 5 MiB for the memory backend by default); then the bytes are
/// spread over as many streams as needed, as a job with that much state would do.
pub fn write_and_commit(
    storage: &dyn CheckpointStorage,
    job: &dyn JobStorage,
    checkpoint_id: u64,
    size: u64,
    data: &[u8],
) -> StorageResult<(Sample, Committed)> {
    if data.is_empty() {
        return Err(StorageError::InvalidConfig(
            "benchmark chunk size must be at least 1 byte".into(),
        ));
    }
    let per_stream = storage
        .info()
        .max_state_size
        .filter(|&limit| limit > 0)
        .unwrap_or(u64::MAX);
    let start = Instant::now();
    let location = job.begin_checkpoint(checkpoint_id)?;
    let mut handles = Vec::new();
    let (mut written, mut calls) = (0u64, 0u64);
    while written < size {
        let mut stream = location.create_stream(Scope::Exclusive)?;
        let stream_len = per_stream.min(size - written);
        let mut in_stream = 0u64;
        while in_stream < stream_len {
            let n = chunk_len(stream_len - in_stream, data.len());
            stream.write(&data[..n])?;
            in_stream += n as u64;
            calls += 1;
        }
        handles.extend(stream.close_and_get_handle()?);
        written += in_stream;
    }
    let metadata = format!(
        "cairn bench storage: checkpoint {checkpoint_id}, {} stream(s), {size} bytes",
        handles.len()
    );
    let checkpoint = location.commit(metadata.as_bytes())?;
    let sample = Sample::timed(written, calls, start);
    Ok((
        sample,
        Committed {
            checkpoint,
            handles,
        },
    ))
}

/// Read every handle back to its end in `chunk`-byte reads, through the backend's input
/// streams (which verify each handle's checksum before they report the end). A byte count that
/// differs from the handles' sizes is `Corrupt`.
pub fn read_back(
    storage: &dyn CheckpointStorage,
    handles: &[StateHandle],
    chunk: usize,
) -> StorageResult<Sample> {
    let mut buf = touched_buffer(chunk);
    let start = Instant::now();
    let (mut read, mut calls) = (0u64, 0u64);
    for handle in handles {
        let mut input = storage.open_handle(handle)?;
        let mut from_handle = 0u64;
        loop {
            let n = input.read(&mut buf)?;
            calls += 1;
            if n == 0 {
                break;
            }
            from_handle += n as u64;
        }
        if from_handle != handle.size() {
            return Err(StorageError::Corrupt(format!(
                "{}: read {from_handle} bytes, the handle says {}",
                handle.describe(),
                handle.size()
            )));
        }
        read += from_handle;
    }
    Ok(Sample::timed(read, calls, start))
}

/// `calls` writes of [`SMALL_WRITE_SIZE`] bytes into one EXCLUSIVE stream of a new location
/// (checkpoint `checkpoint_id` of `job`), then close. Timed from the first write to the end of
/// the close. The location is disposed of afterwards, untimed.
pub fn small_writes(job: &dyn JobStorage, checkpoint_id: u64, calls: u64) -> StorageResult<Sample> {
    let data = pattern(SMALL_WRITE_SIZE);
    let location = job.begin_checkpoint(checkpoint_id)?;
    let mut stream = location.create_stream(Scope::Exclusive)?;
    let start = Instant::now();
    for _ in 0..calls {
        stream.write(&data)?;
    }
    stream.close_and_get_handle()?;
    let sample = Sample::timed(calls * SMALL_WRITE_SIZE as u64, calls, start);
    location.dispose_on_failure()?;
    Ok(sample)
}

/// What one round of the loaded ÷ linked comparison runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundRequest {
    /// The backend's `[storage.options]` document, complete (no `{scratch}` left in it).
    pub options: String,
    /// The job id to use.
    pub job: String,
    /// The first of the two checkpoint ids the round uses (`checkpoint_id` and the next one).
    pub checkpoint_id: u64,
    /// Bytes to write and read back.
    pub size: u64,
    /// Bytes per write call for `size`, and per read call when reading back.
    pub chunk: u64,
    /// How many [`SMALL_WRITE_SIZE`]-byte writes to time.
    pub calls: u64,
}

/// The figures of one round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    /// [`write_and_commit`] of `size` bytes.
    pub write_commit: Sample,
    /// [`read_back`] of those bytes.
    pub read: Sample,
    /// [`small_writes`] of `calls` writes.
    pub small_writes: Sample,
}

/// What the companion prints on stdout: its build, and the round's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkedOutput {
    /// The linked backend's manifest name.
    pub backend: String,
    /// The linked backend's version.
    pub backend_version: String,
    /// Whether the companion was built with debug assertions (a debug build).
    pub debug_assertions: bool,
    /// The figures.
    pub round: RoundReport,
}

/// One round of the loaded ÷ linked comparison, the same on both sides: write + commit `size`
/// bytes in `chunk`-byte writes, read them back, dispose of the checkpoint; then `calls` small
/// writes and a close.
pub fn backend_round(
    storage: &dyn CheckpointStorage,
    request: &RoundRequest,
) -> StorageResult<RoundReport> {
    let chunk = usize::try_from(request.chunk.min(request.size).max(1)).map_err(|_| {
        StorageError::InvalidConfig(format!("chunk of {} bytes is too large", request.chunk))
    })?;
    let data = pattern(chunk);
    let job = storage.job(&request.job)?;
    let (write_commit, committed) = write_and_commit(
        storage,
        job.as_ref(),
        request.checkpoint_id,
        request.size,
        &data,
    )?;
    let read = read_back(storage, &committed.handles, chunk)?;
    storage.dispose(&committed.checkpoint.pointer)?;
    let small_writes = small_writes(job.as_ref(), request.checkpoint_id + 1, request.calls)?;
    Ok(RoundReport {
        write_commit,
        read,
        small_writes,
    })
}

/// A read buffer whose pages are all touched already. A zeroed `Vec` may come straight from
/// `mmap`, and its page faults would then be timed in the first read of a process only.
fn touched_buffer(len: usize) -> Vec<u8> {
    vec![0xA5; len.max(1)]
}

/// The length of the next write: a whole `chunk`, or what is left.
fn chunk_len(left: u64, chunk: usize) -> usize {
    usize::try_from(left).map_or(chunk, |left| left.min(chunk))
}

/// The companion's argument that makes it serve the object-store baseline instead of the
/// linked filesystem backend: one [`DirectRequest`] per line in, one [`DirectOutput`] out.
pub const OBJECT_STORE_DIRECT_ARG: &str = "--object-store-direct";

/// One round of the object-store plugin ÷ `object_store` used directly: the companion writes
/// `size` bytes in `chunk`-byte writes to the store named by the plugin's options, the way the
/// plugin does (one PUT up to `part-size`, a multipart upload of `part-size` parts above it,
/// four parts in flight), puts a small metadata object with a conditional create, then reads
/// the object back. Only the `object_store` crate is involved, never the plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectRequest {
    /// The object-store plugin's `[storage.options]` document (its `url`, `endpoint`,
    /// credentials and `part-size` are used; other options are ignored).
    pub options: String,
    /// A key prefix under the options' `url` that only this round uses; removed afterwards.
    pub prefix: String,
    /// Bytes to write and read back.
    pub size: u64,
    /// Bytes per write call, and the buffer size when reading.
    pub chunk: u64,
}

/// The figures of one [`DirectRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DirectOutput {
    /// Upload (and metadata put), timed from the first request to the last response.
    pub write: Sample,
    /// Download of the object, to its end.
    pub read: Sample,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_not_constant() {
        let a = pattern(1000);
        assert_eq!(a.len(), 1000);
        assert_eq!(a, pattern(1000));
        assert!(a.iter().any(|&b| b != a[0]));
    }

    #[test]
    fn raw_baselines_move_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raw.bin");
        let data = pattern(1000);
        let w = raw_write(&path, 2500, &data).unwrap();
        assert_eq!((w.bytes, w.calls), (2500, 3));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2500);
        let r = raw_read(&path, 1000).unwrap();
        assert_eq!(r.bytes, 2500);
        assert!(r.mib_per_sec().is_finite() && r.nanos_per_call() > 0.0);
    }
}
