//! Cases about savepoints: explicit target, default target, and neither.

use cairn_plugin_api::{ErrorKind, Scope};

use super::{above_threshold, bytes, check_read_back, expect_kind};
use crate::{
    ensure,
    suite::{CaseResult, Ctx, Fail},
};

fn write_and_commit(
    ctx: &Ctx,
    loc: &dyn cairn_plugin_api::CheckpointLocation,
) -> Result<String, Fail> {
    let data = bytes(above_threshold(ctx, 1_000), 77);
    let mut s = loc.create_stream(Scope::Exclusive)?;
    s.write(&data)?;
    let h = s
        .close_and_get_handle()?
        .ok_or_else(|| Fail("no handle".to_string()))?;
    check_read_back(ctx.storage.as_ref(), &h, &data)?;
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
    if ctx
        .info
        .capabilities
        .contains(cairn_plugin_api::Capabilities::PERSISTENT)
        || target.exists()
    {
        let canonical = target.canonicalize().unwrap_or(target.clone());
        ensure!(
            pointer.starts_with(&target_str) || pointer.starts_with(&*canonical.to_string_lossy()),
            "savepoint pointer {pointer} is not under the target {target_str}"
        );
    }
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
