//! Cases about output and input streams and the handles they give.

use cairn_plugin_api::{ErrorKind, Scope, StateHandle};

use super::{above_threshold, bytes, check_read_back, expect_kind, fit, write_mixed};
use crate::{
    ensure,
    suite::{CaseResult, Context, Ctx, Fail},
};

/// Nothing written, no handle.
pub fn empty_stream_gives_no_handle(ctx: &Ctx) -> CaseResult {
    let loc = ctx.storage.job(&ctx.job_id)?.begin_checkpoint(1)?;
    let mut s = loc.create_stream(Scope::Exclusive)?;
    ensure!(s.pos()? == 0, "a new stream's pos() is not 0");
    let h = s.close_and_get_handle()?;
    ensure!(h.is_none(), "an empty stream gave {h:?}");
    Ok(None)
}

/// Every interesting size round-trips, inline exactly up to the threshold.
pub fn round_trips_at_every_size(ctx: &Ctx) -> CaseResult {
    let t = ctx.info.inline_threshold;
    let mut sizes: Vec<u64> = vec![
        0,
        1,
        t.saturating_sub(1),
        t,
        t.saturating_add(1),
        1 << 20,
        64 << 20,
    ];
    sizes.retain(|&s| s <= (64 << 20) + 1);
    sizes.sort_unstable();
    sizes.dedup();
    let job = ctx.storage.job(&ctx.job_id)?;
    for (i, &size) in sizes.iter().enumerate() {
        round_trip_one(ctx, job.as_ref(), i as u64, size).context(|| {
            format!(
                "{size} byte stream (inline threshold {t}, size limit {:?}; sizes tried: {sizes:?})",
                ctx.info.max_state_size
            )
        })?;
    }
    Ok(None)
}

fn round_trip_one(
    ctx: &Ctx,
    job: &dyn cairn_plugin_api::JobStorage,
    i: u64,
    size: u64,
) -> Result<(), Fail> {
    let t = ctx.info.inline_threshold;
    let data = bytes(size as usize, i);
    let loc = job.begin_checkpoint(i + 1)?;
    let mut s = loc.create_stream(Scope::Exclusive)?;
    let over_limit = ctx.info.max_state_size.is_some_and(|m| size > m);
    let written = write_mixed(s.as_mut(), &data)?;
    if over_limit {
        // The error may come from a write or, at the latest, from close; either way it says
        // the stream is over capacity.
        let result = match written {
            Err(e) => Err(e),
            Ok(()) => s.close_and_get_handle().map(|_| ()),
        };
        expect_kind(
            result,
            ErrorKind::CapacityExceeded,
            "writing and closing a stream over the size limit",
        )?;
        return Ok(());
    }
    written?;
    let handle = s.close_and_get_handle()?;
    {
        match (&handle, size) {
            (None, 0) => return Ok(()),
            (Some(h), 0) => return Err(Fail(format!("0 bytes gave {h:?}"))),
            (None, _) => return Err(Fail(format!("{size} bytes gave no handle"))),
            (Some(h), _) => {
                ensure!(
                    h.size() == size,
                    "{size} bytes gave a handle of size {}",
                    h.size()
                );
                ensure!(
                    h.is_inline() == (size <= t),
                    "{size} bytes with threshold {t} gave {}",
                    h.describe()
                );
                check_read_back(ctx.storage.as_ref(), h, &data)?;
            }
        }
    }
    Ok(())
}

/// pos() counts exactly, including after writes of 0 bytes.
pub fn pos_counts_every_byte(ctx: &Ctx) -> CaseResult {
    let loc = ctx.storage.job(&ctx.job_id)?.begin_checkpoint(1)?;
    let mut s = loc.create_stream(Scope::Exclusive)?;
    let mut expected = 0u64;
    for n in [0usize, 1, 0, 13, 4096, 0, 70_000, 2] {
        s.write(&bytes(n, n as u64))
            .context(|| format!("writing {n} bytes after {expected}"))?;
        expected += n as u64;
        let pos = s.pos()?;
        ensure!(pos == expected, "pos() is {pos}, expected {expected}");
    }
    Ok(None)
}

/// Closed streams refuse writes and a second close.
pub fn write_after_close_is_an_error(ctx: &Ctx) -> CaseResult {
    let loc = ctx.storage.job(&ctx.job_id)?.begin_checkpoint(1)?;
    let mut s = loc.create_stream(Scope::Exclusive)?;
    let size = fit(ctx, 10);
    s.write(&bytes(size, 1))?;
    let handle = s.close_and_get_handle()?;
    ensure!(handle.is_some(), "{size} bytes gave no handle");
    // An error, and a deliberate one: a panic would also reach the host as an error.
    for (what, result) in [
        ("writing after close", s.write(b"more")),
        ("a second close", s.close_and_get_handle().map(|_| ())),
    ] {
        match result {
            Ok(()) => return Err(Fail(format!("{what} succeeded"))),
            Err(e) => ensure!(
                e.kind() != ErrorKind::Panicked,
                "{what} panicked in the plugin instead of returning an error: {e}"
            ),
        }
    }
    Ok(None)
}

/// A dropped stream's stored bytes are deleted.
pub fn dropped_stream_leaves_nothing(ctx: &Ctx) -> CaseResult {
    let job = ctx.storage.job(&ctx.job_id)?;
    let loc = job.begin_checkpoint(1)?;
    let before = job.list_objects()?;
    let big = bytes(above_threshold(ctx, 100_000), 3);
    let what = || format!("{} byte streams", big.len());
    let mut s = loc.create_stream(Scope::Exclusive).context(what)?;
    s.write(&big).context(what)?;
    drop(s);
    let mut t = job.create_task_owned_stream().context(what)?;
    t.write(&big).context(what)?;
    drop(t);
    let after = job.list_objects()?;
    ensure!(
        after == before,
        "objects left behind by dropped {} byte streams: before {before:?}, after {after:?}",
        big.len()
    );
    Ok(None)
}

fn scoped_round_trip(ctx: &Ctx, shared: bool) -> CaseResult {
    let job = ctx.storage.job(&ctx.job_id)?;
    let loc = job.begin_checkpoint(1)?;
    for size in [fit(ctx, 10), above_threshold(ctx, 1_000)] {
        let what = || {
            let kind = if shared { "SHARED" } else { "task-owned" };
            format!(
                "{kind} stream of {size} bytes (inline threshold {})",
                ctx.info.inline_threshold
            )
        };
        let data = bytes(size, 11);
        let mut s = if shared {
            loc.create_stream(Scope::Shared)
        } else {
            job.create_task_owned_stream()
        }
        .context(what)?;
        s.write(&data).context(what)?;
        let h = s
            .close_and_get_handle()
            .context(what)?
            .ok_or_else(|| Fail("no handle".to_string()))
            .context(what)?;
        check_read_back(ctx.storage.as_ref(), &h, &data).context(what)?;
    }
    Ok(None)
}

/// SHARED streams work.
pub fn shared_scope_round_trip(ctx: &Ctx) -> CaseResult {
    scoped_round_trip(ctx, true)
}

/// Task-owned streams work.
pub fn task_owned_round_trip(ctx: &Ctx) -> CaseResult {
    scoped_round_trip(ctx, false)
}

fn stored_handle(ctx: &Ctx, seed: u64) -> Result<(StateHandle, Vec<u8>), Fail> {
    let job = ctx.storage.job(&ctx.job_id)?;
    let loc = job.begin_checkpoint(seed)?;
    let data = bytes(above_threshold(ctx, 50_000), seed);
    let what = || {
        format!(
            "a {} byte stream (inline threshold {})",
            data.len(),
            ctx.info.inline_threshold
        )
    };
    let mut s = loc.create_stream(Scope::Exclusive).context(what)?;
    s.write(&data).context(what)?;
    let h = s
        .close_and_get_handle()
        .context(what)?
        .ok_or_else(|| Fail("no handle".to_string()))
        .context(what)?;
    ensure!(!h.is_inline(), "{} bytes gave an inline handle", data.len());
    Ok((h, data))
}

/// Discard twice is fine; the state is gone after the first.
pub fn discard_is_idempotent(ctx: &Ctx) -> CaseResult {
    let (h, data) = stored_handle(ctx, 1)?;
    check_read_back(ctx.storage.as_ref(), &h, &data)?;
    ctx.storage.discard(&h)?;
    ctx.storage
        .discard(&h)
        .map_err(|e| Fail(format!("a second discard failed: {e}")))?;
    let open = ctx.storage.open_handle(&h).map(|_| ());
    expect_kind(open, ErrorKind::NotFound, "opening a discarded handle")?;
    let listed = ctx.storage.job(&ctx.job_id)?.list_objects()?;
    if let StateHandle::Stored { locator, .. } = &h {
        ensure!(
            !listed.iter().any(|o| &o.locator == locator),
            "a discarded object is still listed"
        );
    }
    ctx.storage.discard(&StateHandle::Inline(vec![1, 2, 3]))?;
    Ok(None)
}

/// Damage is detected and named.
pub fn corruption_is_detected(ctx: &Ctx) -> CaseResult {
    let (h, _) = stored_handle(ctx, 2)?;
    ctx.storage.corrupt_for_testing(&h)?;
    let mut input = ctx.storage.open_handle(&h)?;
    let mut buf = vec![0u8; 1 << 16];
    let err = loop {
        match input.read(&mut buf) {
            Ok(0) => {
                return Err(Fail(
                    "damaged bytes read to a clean end of stream".to_string(),
                ))
            }
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    ensure!(
        err.kind() == ErrorKind::Corrupt,
        "damaged bytes gave {} instead of corrupt: {err}",
        err.kind()
    );
    if let StateHandle::Stored { locator, .. } = &h {
        ensure!(
            err.message().contains(locator.as_str()),
            "the Corrupt error does not name the handle: {err}"
        );
    }
    Ok(None)
}
