//! Cases about many threads using one instance at once.

use std::sync::Arc;

use cairn_plugin_api::{Capabilities, CheckpointLocation, Scope};

use super::{above_threshold, bytes, check_read_back, fit};
use crate::{
    ensure,
    suite::{CaseResult, Context, Ctx, Fail},
};

/// 8 threads × 100 streams into one location, with sizes on both sides of the threshold.
pub fn eight_threads_hundred_streams(ctx: &Ctx) -> CaseResult {
    let job = ctx.storage.job(&ctx.job_id)?;
    let loc: Arc<dyn CheckpointLocation> = Arc::from(job.begin_checkpoint(1)?);
    // At or under the threshold (inline where the backend inlines), and never empty: an empty
    // stream gives no handle, and a threshold of 0 is legal.
    let small = fit(ctx, (ctx.info.inline_threshold as usize).clamp(1, 4096));
    let above = above_threshold(ctx, 1).max(1);
    let mid = fit(ctx, 3_000);
    let threshold = ctx.info.inline_threshold;
    let results: Vec<Result<usize, Fail>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8u64)
            .map(|t| {
                let loc = loc.clone();
                let storage = ctx.storage.clone();
                let shared_ok = ctx.info.capabilities.contains(Capabilities::SHARED_SCOPE);
                scope.spawn(move || -> Result<usize, Fail> {
                    let mut written = Vec::new();
                    for i in 0..100u64 {
                        let size = match i % 4 {
                            0 => 1,
                            1 => small,
                            2 => above,
                            _ => mid,
                        };
                        let data = bytes(size, t * 1000 + i);
                        let scope = if i % 2 == 1 && shared_ok {
                            Scope::Shared
                        } else {
                            Scope::Exclusive
                        };
                        let what = || {
                            format!(
                                "thread {t}, stream {i}: {size} bytes, {scope:?} scope, \
                                 inline threshold {threshold}"
                            )
                        };
                        let mut s = loc.create_stream(scope).context(what)?;
                        s.write(&data).context(what)?;
                        let h = s
                            .close_and_get_handle()
                            .context(what)?
                            .ok_or_else(|| Fail("no handle".to_string()))
                            .context(what)?;
                        written.push((h, data, i));
                    }
                    for (h, data, i) in &written {
                        check_read_back(storage.as_ref(), h, data)
                            .context(|| format!("thread {t}, stream {i}: {} bytes", data.len()))?;
                    }
                    Ok(written.len())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Fail("a writer thread panicked".to_string())))
            })
            .collect()
    });
    let mut total = 0;
    for r in results {
        total += r?;
    }
    ensure!(total == 800, "{total} streams completed, expected 800");
    loc.commit(b"concurrent")?;
    Ok(None)
}
