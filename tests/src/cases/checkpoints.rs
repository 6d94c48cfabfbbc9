//! Cases about the metadata commit, pointers, listing and disposal.

use cairn_plugin_api::{read_handle_fully, ErrorKind, Scope, StateHandle};

use super::{above_threshold, bytes, check_read_back, expect_kind, fit};
use crate::{
    ensure,
    suite::{CaseResult, Context, Ctx, Fail},
};

/// Write one stored (or, for inline-only backends, inline) state object and commit metadata that
/// embeds its handle. Returns (pointer, metadata, state).
fn complete_checkpoint(
    ctx: &Ctx,
    job_id: &str,
    id: u64,
) -> Result<(String, Vec<u8>, Vec<u8>), Fail> {
    let size = above_threshold(ctx, 4_096);
    let what = || {
        format!(
            "job '{job_id}', checkpoint {id}: {size} bytes of state (inline threshold {})",
            ctx.info.inline_threshold
        )
    };
    let job = ctx.storage.job(job_id).context(what)?;
    let loc = job.begin_checkpoint(id).context(what)?;
    let state = bytes(size, id ^ job_id.len() as u64);
    let mut s = loc.create_stream(Scope::Exclusive).context(what)?;
    s.write(&state).context(what)?;
    let handle = s
        .close_and_get_handle()
        .context(what)?
        .ok_or_else(|| Fail("no handle".to_string()))
        .context(what)?;
    let mut metadata = format!("cairn-verify metadata for {job_id} checkpoint {id}\n").into_bytes();
    metadata.extend(serde_json::to_vec(&handle).map_err(|e| Fail(e.to_string()))?);
    let completed = loc
        .commit(&metadata)
        .context(|| format!("{}, {} bytes of metadata", what(), metadata.len()))?;
    ensure!(
        completed.checkpoint_id == id,
        "commit of checkpoint {id} reported id {}",
        completed.checkpoint_id
    );
    Ok((completed.pointer, metadata, state))
}

fn handle_in(metadata: &[u8]) -> Result<StateHandle, Fail> {
    let at = metadata
        .iter()
        .position(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    serde_json::from_slice(&metadata[at..])
        .map_err(|e| Fail(format!("metadata came back altered: {e}")))
}

/// Not visible before the commit; exact after; once only.
pub fn commit_is_atomic_and_once(ctx: &Ctx) -> CaseResult {
    let job = ctx.storage.job(&ctx.job_id)?;
    let loc = job.begin_checkpoint(5)?;
    let size = fit(ctx, 1000);
    let what = || format!("checkpoint 5, a {size} byte stream");
    let mut s = loc.create_stream(Scope::Exclusive).context(what)?;
    s.write(&bytes(size, 5)).context(what)?;
    let _h = s.close_and_get_handle().context(what)?;
    ensure!(
        job.list_completed()?.is_empty(),
        "a checkpoint is listed before its commit"
    );
    let metadata = bytes(3000, 55);
    let completed = loc
        .commit(&metadata)
        .context(|| "checkpoint 5, 3000 bytes of metadata".to_string())?;
    let listed = job.list_completed()?;
    ensure!(
        listed
            .iter()
            .any(|c| c.checkpoint_id == 5 && c.pointer == completed.pointer),
        "the committed checkpoint is not listed with its pointer: {listed:?}"
    );
    let resolved = ctx.storage.resolve(&completed.pointer)?;
    ensure!(
        resolved.metadata == metadata,
        "resolve returned different metadata bytes"
    );
    expect_kind(
        loc.commit(b"second"),
        ErrorKind::AlreadyExists,
        "a second commit to one location",
    )?;
    ensure!(
        ctx.storage.resolve(&completed.pointer)?.metadata == metadata,
        "a refused second commit changed the metadata"
    );
    expect_kind(
        job.begin_checkpoint(5).map(|_| ()),
        ErrorKind::AlreadyExists,
        "beginning a completed checkpoint again",
    )?;
    Ok(None)
}

/// A new instance finds the checkpoint and its state.
pub fn resolves_from_a_fresh_instance(ctx: &Ctx) -> CaseResult {
    let (pointer, metadata, state) = complete_checkpoint(ctx, &ctx.job_id, 1)?;
    let fresh = ctx.reopen()?;
    let resolved = fresh.resolve(&pointer)?;
    ensure!(
        resolved.metadata == metadata,
        "a fresh instance resolved different metadata"
    );
    let handle = handle_in(&resolved.metadata)?;
    check_read_back(fresh.as_ref(), &handle, &state)?;
    let listed = fresh.job(&ctx.job_id)?.list_completed()?;
    ensure!(
        listed.iter().any(|c| c.pointer == pointer),
        "a fresh instance does not list the checkpoint"
    );
    Ok(None)
}

/// Listing shows committed checkpoints only, ascending.
pub fn listing_shows_only_completed(ctx: &Ctx) -> CaseResult {
    let job = ctx.storage.job(&ctx.job_id)?;
    let mut keep = Vec::new();
    for id in [3u64, 1, 2, 4] {
        let loc = job.begin_checkpoint(id)?;
        if id % 2 == 1 {
            loc.commit(format!("checkpoint {id}").as_bytes())?;
        }
        keep.push(loc);
    }
    let ids: Vec<u64> = job
        .list_completed()?
        .iter()
        .map(|c| c.checkpoint_id)
        .collect();
    ensure!(ids == [1, 3], "listed {ids:?}, expected [1, 3]");
    Ok(None)
}

/// Dispose removes, twice is fine.
pub fn dispose_is_idempotent(ctx: &Ctx) -> CaseResult {
    let (pointer, _, _) = complete_checkpoint(ctx, &ctx.job_id, 1)?;
    ctx.storage.dispose(&pointer)?;
    ctx.storage
        .dispose(&pointer)
        .map_err(|e| Fail(format!("a second dispose failed: {e}")))?;
    expect_kind(
        ctx.storage.resolve(&pointer),
        ErrorKind::NotFound,
        "resolving a disposed checkpoint",
    )?;
    let listed = ctx.storage.job(&ctx.job_id)?.list_completed()?;
    ensure!(
        listed.is_empty(),
        "a disposed checkpoint is still listed: {listed:?}"
    );
    Ok(None)
}

/// A failed location can be cleaned, twice, and then nothing of it is listed.
pub fn dispose_on_failure_is_idempotent(ctx: &Ctx) -> CaseResult {
    let job = ctx.storage.job(&ctx.job_id)?;
    let before = job.list_objects()?;
    let loc = job.begin_checkpoint(9)?;
    let size = above_threshold(ctx, 10);
    let what = || format!("checkpoint 9, a {size} byte stream");
    let mut s = loc.create_stream(Scope::Exclusive).context(what)?;
    s.write(&bytes(size, 9)).context(what)?;
    let handle = s
        .close_and_get_handle()
        .context(what)?
        .ok_or_else(|| Fail("no handle".to_string()))
        .context(what)?;
    // Something was really stored, so the dispose has something to remove.
    let stored = match &handle {
        StateHandle::Stored { locator, .. } => Some(locator.clone()),
        StateHandle::Inline(_) => None,
    };
    if let Some(locator) = &stored {
        let listed = job.list_objects()?;
        ensure!(
            listed.iter().any(|o| &o.locator == locator),
            "the stored state {locator} of a {size} byte stream is not listed before the dispose"
        );
    }
    loc.dispose_on_failure()?;
    loc.dispose_on_failure()
        .map_err(|e| Fail(format!("a second dispose_on_failure failed: {e}")))?;
    ensure!(
        job.list_completed()?.is_empty(),
        "a failed checkpoint is listed"
    );
    let after = job.list_objects()?;
    ensure!(
        after == before,
        "dispose_on_failure left objects behind: {after:?}"
    );
    Ok(None)
}

/// Each kind of bad pointer has its own error.
pub fn bad_pointers_have_their_own_errors(ctx: &Ctx) -> CaseResult {
    expect_kind(
        ctx.storage.resolve(""),
        ErrorKind::InvalidConfig,
        "resolving an empty pointer",
    )?;
    expect_kind(
        ctx.storage.resolve("   "),
        ErrorKind::InvalidConfig,
        "resolving a blank pointer",
    )?;
    let garbage = "\u{0}::not a pointer::\u{1}";
    expect_kind(
        ctx.storage.resolve(garbage),
        ErrorKind::InvalidConfig,
        "resolving a garbage pointer",
    )?;
    let (pointer, _, _) = complete_checkpoint(ctx, &ctx.job_id, 1)?;
    ctx.storage.dispose(&pointer)?;
    expect_kind(
        ctx.storage.resolve(&pointer),
        ErrorKind::NotFound,
        "resolving a pointer to nothing",
    )?;
    Ok(None)
}

/// Same id, two jobs, two checkpoints.
pub fn jobs_are_isolated(ctx: &Ctx) -> CaseResult {
    let a = format!("{}-a", ctx.job_id);
    let b = format!("{}-b", ctx.job_id);
    let (pa, ma, sa) = complete_checkpoint(ctx, &a, 1)?;
    let (pb, mb, sb) = complete_checkpoint(ctx, &b, 1)?;
    ensure!(pa != pb, "two jobs got the same pointer {pa}");
    for (pointer, metadata, state) in [(&pa, &ma, &sa), (&pb, &mb, &sb)] {
        let resolved = ctx.storage.resolve(pointer)?;
        ensure!(
            &resolved.metadata == metadata,
            "{pointer} resolved the other job's metadata"
        );
        let handle = handle_in(&resolved.metadata)?;
        ensure!(
            read_handle_fully(ctx.storage.as_ref(), &handle)? == *state,
            "{pointer}: state differs"
        );
    }
    for (job, pointer) in [(&a, &pa), (&b, &pb)] {
        let listed = ctx.storage.job(job)?.list_completed()?;
        ensure!(
            listed.len() == 1 && &listed[0].pointer == pointer,
            "job {job} lists {listed:?}"
        );
    }
    Ok(None)
}
