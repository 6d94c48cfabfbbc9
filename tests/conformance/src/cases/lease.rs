//! Cases about the job's lease register (plugin API 1.1): a compare-and-swap record per job,
//! which the host's one-live-writer protocol is built on.

use std::sync::{Arc, Barrier};

use cairn_plugin_api::{ErrorKind, JobStorage, StorageError};

use super::expect_kind;
use crate::{
    ensure,
    suite::{CaseResult, Ctx, Fail},
};

/// The answer of a plugin without lease support, as a skip reason.
fn no_lease_support(e: &StorageError) -> Option<String> {
    (e.kind() == ErrorKind::Unsupported).then(|| {
        format!(
            "the plugin has no lease register (the host falls back to a lock file on the local \
             machine): {e}"
        )
    })
}

/// Writes succeed only over the current version, and a reader sees the last one.
pub fn lease_is_compare_and_swap(ctx: &Ctx) -> CaseResult {
    let job = ctx.storage.job(&ctx.job_id)?;
    match job.read_lease() {
        Ok(None) => {}
        Ok(Some(r)) => return Err(Fail(format!("a new job has a lease record: {r:?}"))),
        Err(e) => return no_lease_support(&e).map(Some).ok_or_else(|| e.into()),
    }
    let v1 = job.write_lease(b"holder one", None)?;
    expect_kind(
        job.write_lease(b"holder two", None),
        ErrorKind::AlreadyExists,
        "a second write with no expected version",
    )?;
    let v2 = job.write_lease(b"holder one, renewed", Some(&v1))?;
    ensure!(v2 != v1, "a write kept the version {v1}");
    expect_kind(
        job.write_lease(b"stale", Some(&v1)),
        ErrorKind::AlreadyExists,
        "a write over a version that was replaced",
    )?;
    let read = job
        .read_lease()?
        .ok_or_else(|| Fail("the lease record vanished".to_string()))?;
    ensure!(
        read.bytes == b"holder one, renewed" && read.version == v2,
        "read back {:?} at version {}, expected the last write at version {v2}",
        String::from_utf8_lossy(&read.bytes),
        read.version
    );
    // Another handle on the job, and for a persistent backend another instance, sees it.
    let other: Box<dyn JobStorage> = if ctx
        .info
        .capabilities
        .contains(cairn_plugin_api::Capabilities::PERSISTENT)
    {
        ctx.reopen()?.job(&ctx.job_id)?
    } else {
        ctx.storage.job(&ctx.job_id)?
    };
    ensure!(
        other.read_lease()?.map(|r| r.version) == Some(v2.clone()),
        "another handle on the job does not see version {v2}"
    );
    Ok(None)
}

/// Of eight writers over the same version, exactly one wins.
pub fn lease_race_has_one_winner(ctx: &Ctx) -> CaseResult {
    let job: Arc<dyn JobStorage> = Arc::from(ctx.storage.job(&ctx.job_id)?);
    let start = match job.write_lease(b"start", None) {
        Ok(v) => v,
        Err(e) => return no_lease_support(&e).map(Some).ok_or_else(|| e.into()),
    };
    for round in 0..4 {
        let current = job
            .read_lease()?
            .ok_or_else(|| Fail("the lease record vanished".to_string()))?
            .version;
        ensure!(
            round > 0 || current == start,
            "the first read is not the first write"
        );
        let barrier = Arc::new(Barrier::new(8));
        let results: Vec<Result<String, StorageError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|w| {
                    let (job, barrier, current) = (job.clone(), barrier.clone(), current.clone());
                    s.spawn(move || {
                        barrier.wait();
                        job.write_lease(format!("writer {w}").as_bytes(), Some(&current))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(StorageError::Other("panicked".into())))
                })
                .collect()
        });
        let winners: Vec<usize> = (0..8).filter(|&w| results[w].is_ok()).collect();
        ensure!(
            winners.len() == 1,
            "round {round}: {} of 8 writers over version {current} succeeded: {results:?}",
            winners.len()
        );
        for (w, r) in results.iter().enumerate() {
            if let Err(e) = r {
                ensure!(
                    e.kind() == ErrorKind::AlreadyExists,
                    "round {round}: writer {w} lost with {e}, expected AlreadyExists"
                );
            }
        }
        let read = job
            .read_lease()?
            .ok_or_else(|| Fail("vanished".to_string()))?;
        ensure!(
            read.bytes == format!("writer {}", winners[0]).as_bytes(),
            "round {round}: the record is not the winner's"
        );
    }
    Ok(None)
}
