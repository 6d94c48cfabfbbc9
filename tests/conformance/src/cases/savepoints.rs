//! Cases about savepoints: explicit target, default target, and neither.

use std::path::Path;

use cairn_plugin_api::{ErrorKind, Scope};

use super::{above_threshold, bytes, check_read_back, expect_kind};
use crate::{
    ensure,
    suite::{CaseResult, Context, Ctx, Fail},
};

fn write_and_commit(
    ctx: &Ctx,
    loc: &dyn cairn_plugin_api::CheckpointLocation,
) -> Result<String, Fail> {
    let data = bytes(above_threshold(ctx, 1_000), 77);
    let what = || {
        format!(
            "a {} byte savepoint stream (inline threshold {})",
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
    check_read_back(ctx.storage.as_ref(), &h, &data).context(what)?;
    let metadata = b"savepoint metadata".to_vec();
    let completed = loc.commit(&metadata)?;
    let resolved = ctx.storage.resolve(&completed.pointer)?;
    ensure!(
        resolved.metadata == metadata,
        "the savepoint resolved to other metadata"
    );
    Ok(completed.pointer)
}

/// A savepoint under an explicit target.
pub fn savepoint_to_custom_target(ctx: &Ctx) -> CaseResult {
    let target = ctx.scratch.join("custom-target");
    let target_str = target.to_string_lossy().into_owned();
    let loc = ctx
        .storage
        .job(&ctx.job_id)?
        .begin_savepoint(1, Some(&target_str))?;
    let pointer = write_and_commit(ctx, loc.as_ref())?;
    // The target is a local directory, so the savepoint must be there: its pointer names a path
    // under it (a `file://` URL counts as the path), and the directory holds what was written.
    let path = pointer.strip_prefix("file://").unwrap_or(&pointer);
    let canonical = target.canonicalize().unwrap_or(target.clone());
    ensure!(
        Path::new(path).starts_with(&target) || Path::new(path).starts_with(&canonical),
        "savepoint pointer {pointer} is not a path under the target {target_str}"
    );
    let written = std::fs::read_dir(&target)
        .map(|entries| entries.count())
        .unwrap_or(0);
    ensure!(
        written > 0,
        "the savepoint was committed with pointer {pointer}, but the target {target_str} is empty"
    );
    Ok(None)
}

/// With no target, the default location.
pub fn savepoint_to_default_target(ctx: &Ctx) -> CaseResult {
    match ctx.storage.job(&ctx.job_id)?.begin_savepoint(1, None) {
        Ok(loc) => {
            write_and_commit(ctx, loc.as_ref())?;
            Ok(None)
        }
        Err(e) if e.kind() == ErrorKind::InvalidConfig => Ok(Some(format!(
            "no default savepoint location is configured (the backend says: {e}); \
             savepoint_without_any_target covers this configuration"
        ))),
        Err(e) => Err(Fail(format!(
            "begin_savepoint without a target failed: {e}"
        ))),
    }
}

/// With neither, a clear error.
pub fn savepoint_without_any_target(ctx: &Ctx) -> CaseResult {
    match ctx.storage.job(&ctx.job_id)?.begin_savepoint(2, None) {
        Ok(loc) => {
            // A default is configured; clean up what was created, and say why this did not run.
            let _ = loc.dispose_on_failure();
            Ok(Some(
                "a default savepoint location is configured; savepoint_to_default_target covers \
                 this configuration"
                    .to_string(),
            ))
        }
        Err(e) => {
            let msg = expect_kind(
                Err::<(), _>(e),
                ErrorKind::InvalidConfig,
                "begin_savepoint with no target and no default",
            )?;
            ensure!(
                msg.to_lowercase().contains("savepoint"),
                "the error does not say what is missing: {msg}"
            );
            Ok(None)
        }
    }
}

/// Completed savepoints are listed (API 1.1); an uncommitted one is not.
pub fn completed_savepoints_are_listed(ctx: &Ctx) -> CaseResult {
    let target = ctx.scratch.join("listed-target");
    let target_str = target.to_string_lossy().into_owned();
    let job = ctx.storage.job(&ctx.job_id)?;
    match job.list_savepoints(Some(&target_str)) {
        Ok(listed) => ensure!(listed.is_empty(), "an empty target lists {listed:?}"),
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            return Ok(Some(format!("the plugin cannot list savepoints: {e}")))
        }
        Err(e) => return Err(e.into()),
    }
    let loc = job.begin_savepoint(3, Some(&target_str))?;
    let pointer = write_and_commit(ctx, loc.as_ref())?;
    let open = job.begin_savepoint(4, Some(&target_str))?;
    let mut s = open.create_stream(Scope::Exclusive)?;
    s.write(&bytes(above_threshold(ctx, 10), 5))?;
    let _uncommitted = s.close_and_get_handle()?;
    let listed = job.list_savepoints(Some(&target_str))?;
    let _ = open.dispose_on_failure();
    let resolved = |p: &str| ctx.storage.resolve(p).map(|r| r.pointer);
    let want = resolved(&pointer)?;
    ensure!(
        listed.len() == 1 && resolved(&listed[0])? == want,
        "list_savepoints under {target_str} gave {listed:?}, expected only {pointer}"
    );
    let other = ctx.storage.job(&format!("{}-other", ctx.job_id))?;
    let theirs = other.list_savepoints(Some(&target_str))?;
    ensure!(
        theirs.is_empty(),
        "another job lists this job's savepoints: {theirs:?}"
    );
    Ok(None)
}
