//! The conformance cases, by topic, and the helpers they share. Every public `fn(ctx: &Ctx)` in
//! these modules is a case and must be listed in `suite::CASES`.

pub mod checkpoints;
pub mod concurrency;
pub mod config;
pub mod lease;
pub mod savepoints;
pub mod streams;

use cairn_plugin_api::{
    read_handle_fully, CheckpointStorage, ErrorKind, OutputStream, StateHandle, StorageError,
};

use crate::suite::Fail;

/// A size just above the inline threshold (so stored, where the backend stores), but never above
/// the backend's size limit.
pub fn above_threshold(ctx: &crate::suite::Ctx, extra: u64) -> usize {
    let want = ctx.info.inline_threshold.saturating_add(extra);
    want.min(ctx.info.max_state_size.unwrap_or(u64::MAX)) as usize
}

/// `want` bytes, or fewer if the backend's size limit is lower, and never 0: for the fixed sizes
/// cases write, which must work under any legal limit.
pub fn fit(ctx: &crate::suite::Ctx, want: usize) -> usize {
    let limit = ctx.info.max_state_size.unwrap_or(u64::MAX);
    (want as u64).min(limit).max(1) as usize
}

/// Deterministic bytes, different for every length and seed.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed.wrapping_mul(0x1000_0000_01b3) ^ len as u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Write `data` in chunks that cycle through awkward sizes, checking `pos()` after each write.
/// The outer error is a broken `pos()`; the inner one is the error a write returned, kept as a
/// `StorageError` so a case can check its kind (for example `CapacityExceeded`).
pub fn write_mixed(
    stream: &mut dyn OutputStream,
    data: &[u8],
) -> Result<Result<(), StorageError>, Fail> {
    const CHUNKS: [usize; 7] = [1, 7, 4096, 100_000, 3, 1 << 20, 65_537];
    let (mut at, mut i) = (0, 0);
    while at < data.len() {
        let n = CHUNKS[i % CHUNKS.len()].min(data.len() - at);
        if let Err(e) = stream.write(&data[at..at + n]) {
            return Ok(Err(e));
        }
        at += n;
        i += 1;
        let pos = stream.pos()?;
        crate::ensure!(pos == at as u64, "pos() is {pos} after writing {at} bytes");
    }
    Ok(Ok(()))
}

/// Read a handle back (backend stream plus the host's own size and CRC32C check) and compare.
pub fn check_read_back(
    storage: &dyn CheckpointStorage,
    handle: &StateHandle,
    expected: &[u8],
) -> Result<(), Fail> {
    let got = read_handle_fully(storage, handle)
        .map_err(|e| Fail(format!("reading back {} failed: {e}", handle.describe())))?;
    crate::ensure!(
        got == expected,
        "{} read back {} bytes that differ from the {} written",
        handle.describe(),
        got.len(),
        expected.len()
    );
    Ok(())
}

/// The error of a call that must fail with `kind`; its message is returned.
pub fn expect_kind<T>(
    result: Result<T, StorageError>,
    kind: ErrorKind,
    what: &str,
) -> Result<String, Fail> {
    match result {
        Ok(_) => Err(Fail(format!(
            "{what}: expected a {kind} error, got success"
        ))),
        Err(e) if e.kind() == kind => Ok(e.message().to_string()),
        Err(e) => Err(Fail(format!(
            "{what}: expected a {kind} error, got {} ({e})",
            e.kind()
        ))),
    }
}
