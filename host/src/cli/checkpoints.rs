//! `cairn checkpoints list|show|verify|delete|gc`: inspect and manage a job's checkpoints
//! through the configured storage plugin. Every subcommand has `--json`.

use std::{collections::BTreeSet, io::Write, process::ExitCode, sync::Arc};

use anyhow::{bail, Context};
use cairn_host::{
    config::Config,
    metadata::{CheckpointMetadata, HandleRecord},
    runtime::{self, state},
};
use cairn_plugin_api::{
    read_handle_fully, CheckpointStorage, CompletedCheckpoint, ErrorKind, StateHandle, StorageError,
};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde_json::json;

use super::{open_storage, ConfigArg};

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CheckpointsCommand {
    /// List the job's completed checkpoints (job.id from the config), oldest first.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Decode one checkpoint's metadata: by id (of the config's job) or by pointer.
    Show {
        /// A checkpoint id, `latest`, or a pointer.
        checkpoint: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read every state handle of checkpoints back and check its checksum, without restoring.
    /// Exit code 1 if anything is damaged or missing. On a running job, a checkpoint that is
    /// subsumed while it is read (not found, and no longer listed) is reported as removed while
    /// verifying, which is not damage.
    Verify {
        /// Checkpoint ids, `latest`, or pointers; all completed checkpoints of the job if none.
        checkpoints: Vec<String>,
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a completed checkpoint (its metadata first, then its exclusive state).
    Delete {
        /// A checkpoint id or a pointer.
        checkpoint: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove what no completed checkpoint needs: stored objects no completed checkpoint
    /// references, checkpoint locations that were never committed, and this job's savepoint
    /// locations that were never committed (under [savepoints] dir and the plugin's default
    /// savepoint location). Never touches a completed checkpoint or savepoint. Run it while the
    /// job is not running: an in-flight checkpoint or savepoint looks abandoned.
    Gc {
        #[command(flatten)]
        config: ConfigArg,
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Run a subcommand.
pub fn run(cmd: CheckpointsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CheckpointsCommand::List { config, json } => list(&config.load()?, json),
        CheckpointsCommand::Show {
            checkpoint,
            config,
            json,
        } => show(&config.load()?, &checkpoint, json),
        CheckpointsCommand::Verify {
            checkpoints,
            config,
            json,
        } => verify(&config.load()?, &checkpoints, json),
        CheckpointsCommand::Delete {
            checkpoint,
            config,
            json,
        } => delete(&config.load()?, &checkpoint, json),
        CheckpointsCommand::Gc {
            config,
            dry_run,
            json,
        } => gc(&config.load()?, dry_run, json),
    }
}

fn completed(
    config: &Config,
    storage: &dyn CheckpointStorage,
) -> anyhow::Result<Vec<CompletedCheckpoint>> {
    let job = storage.job(&config.job.id)?;
    Ok(job.list_completed()?)
}

/// Turn an id, `latest` or a pointer into a pointer.
fn pointer_of(
    config: &Config,
    storage: &dyn CheckpointStorage,
    arg: &str,
) -> anyhow::Result<String> {
    let all = completed(config, storage)?;
    if arg == "latest" {
        return all
            .last()
            .map(|c| c.pointer.clone())
            .with_context(|| format!("job '{}' has no completed checkpoint", config.job.id));
    }
    if let Ok(id) = arg.parse::<u64>() {
        return all
            .iter()
            .find(|c| c.checkpoint_id == id)
            .map(|c| c.pointer.clone())
            .with_context(|| {
                let ids: Vec<String> = all.iter().map(|c| c.checkpoint_id.to_string()).collect();
                format!(
                    "job '{}' has no completed checkpoint {id} (completed: {})",
                    config.job.id,
                    if ids.is_empty() {
                        "none".to_string()
                    } else {
                        ids.join(", ")
                    }
                )
            });
    }
    Ok(arg.to_string())
}

fn decode(storage: &dyn CheckpointStorage, pointer: &str) -> anyhow::Result<CheckpointMetadata> {
    let resolved = storage.resolve(pointer)?;
    CheckpointMetadata::decode(&resolved.metadata).with_context(|| format!("checkpoint {pointer}"))
}

fn list(config: &Config, as_json: bool) -> anyhow::Result<ExitCode> {
    let (_, storage) = open_storage(config)?;
    let all = completed(config, storage.as_ref())?;
    let mut rows = Vec::new();
    for c in &all {
        let row = match decode(storage.as_ref(), &c.pointer) {
            Ok(m) => json!({
                "id": c.checkpoint_id, "pointer": c.pointer, "kind": m.kind,
                "completed_at_ms": m.completed_at_ms, "state_bytes": m.state_size(),
                "records": m.tasks.iter().map(|t| t.records).sum::<u64>(), "readable": true,
            }),
            Err(e) => {
                json!({ "id": c.checkpoint_id, "pointer": c.pointer, "readable": false, "error": format!("{e:#}") })
            }
        };
        rows.push(row);
    }
    let mut out = std::io::stdout().lock();
    if as_json {
        let doc = json!({ "job_id": config.job.id, "location": storage.info().location, "checkpoints": rows });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        writeln!(
            out,
            "job '{}' has no completed checkpoints in {}",
            config.job.id,
            storage.info().location
        )?;
    }
    for r in &rows {
        if r["readable"] == true {
            writeln!(
                out,
                "{:>6}  {}  {:>10}  {}",
                r["id"].as_u64().unwrap_or(0),
                humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_millis(
                            r["completed_at_ms"].as_u64().unwrap_or(0)
                        )
                ),
                HumanBytes(r["state_bytes"].as_u64().unwrap_or(0)).to_string(),
                r["pointer"].as_str().unwrap_or("")
            )?;
        } else {
            writeln!(
                out,
                "{:>6}  UNREADABLE: {}  {}",
                r["id"].as_u64().unwrap_or(0),
                r["error"].as_str().unwrap_or(""),
                r["pointer"].as_str().unwrap_or("")
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(config: &Config, arg: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let (_, storage) = open_storage(config)?;
    let pointer = pointer_of(config, storage.as_ref(), arg)?;
    let m = decode(storage.as_ref(), &pointer)?;
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({ "pointer": pointer, "metadata": m }))?
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "checkpoint {} ({:?}) of job '{}' ({})",
        m.checkpoint_id, m.kind, m.job_id, m.job_kind
    )?;
    writeln!(out, "pointer:      {pointer}")?;
    writeln!(
        out,
        "taken:        {} (took {} ms)",
        humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(m.triggered_at_ms)
        ),
        m.completed_at_ms.saturating_sub(m.triggered_at_ms)
    )?;
    writeln!(
        out,
        "fingerprint:  {}{}",
        m.config_fingerprint,
        match runtime::fingerprint(&config.job) {
            Ok(f) if f == m.config_fingerprint => " (matches the config)".to_string(),
            Ok(_) => " (differs from the config's job settings)".to_string(),
            Err(e) => format!(" (cannot compare with the config: {e})"),
        }
    )?;
    writeln!(
        out,
        "offsets:      {}",
        serde_json::Value::from(m.source_offsets.clone())
    )?;
    writeln!(out, "state:        {}", HumanBytes(m.state_size()))?;
    writeln!(out, "barriers:     {}", m.barriers_text())?;
    for t in &m.tasks {
        for h in &t.handles {
            let desc = match h {
                HandleRecord::Inline { .. } => format!("inline, {}", HumanBytes(h.size())),
                HandleRecord::Stored {
                    locator,
                    size,
                    crc32c,
                } => format!(
                    "stored '{locator}', {}, crc32c {crc32c:08x}",
                    HumanBytes(*size)
                ),
            };
            writeln!(
                out,
                "  {}[{}]: {} records, {desc}",
                t.operator, t.subtask, t.records
            )?;
        }
        for line in t.channel_state_lines() {
            writeln!(out, "  {}[{}]: {line}", t.operator, t.subtask)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One problem `verify` found in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    /// What is wrong, naming the task and handle.
    text: String,
    /// The storage said the metadata or a handle's bytes do not exist: damage, or a checkpoint
    /// that the running job subsumed while it was being read (see [`Verdict`]).
    not_found: bool,
}

impl Problem {
    fn storage(what: String, e: &StorageError) -> Self {
        Problem {
            text: format!("{what}{e}"),
            not_found: e.kind() == ErrorKind::NotFound,
        }
    }

    fn other(text: String) -> Self {
        Problem {
            text,
            not_found: false,
        }
    }
}

/// What `verify` concludes about one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Every byte read back and matched its checksum; the state decodes.
    Ok,
    /// Something is damaged or missing while the checkpoint is still listed as completed.
    Damaged(Vec<Problem>),
    /// Part of it was not found, and it is no longer listed: the running job subsumed it (or
    /// someone deleted it) while it was being verified. Not damage.
    Removed(Vec<Problem>),
}

/// Checks the decoded state of one task: its operator and the bytes of one handle.
type StateCheck = dyn Fn(&str, &[u8]) -> Result<(), String>;

/// Check one checkpoint: metadata, then every handle (size and CRC32C), then `check_state` on
/// the bytes. Returns the problems found, each marked when the storage said "not found".
fn check_checkpoint(
    storage: &dyn CheckpointStorage,
    pointer: &str,
    bar: &ProgressBar,
    check_state: &StateCheck,
) -> Vec<Problem> {
    let resolved = match storage.resolve(pointer) {
        Ok(r) => r,
        Err(e) => return vec![Problem::storage(String::new(), &e)],
    };
    let m = match CheckpointMetadata::decode(&resolved.metadata) {
        Ok(m) => m,
        Err(e) => return vec![Problem::other(format!("checkpoint {pointer}: {e}"))],
    };
    let mut problems = Vec::new();
    for t in &m.tasks {
        // Its state, then its channel state (checked for its framing only).
        let channel_state = t.channel_state.iter().map(|c| (&c.handle, true));
        for (record, is_channel_state) in t.handles.iter().map(|h| (h, false)).chain(channel_state)
        {
            let handle: StateHandle = match record.to_handle() {
                Ok(h) => h,
                Err(e) => {
                    problems.push(Problem::other(format!(
                        "{}[{}]: {e}",
                        t.operator, t.subtask
                    )));
                    continue;
                }
            };
            bar.set_message(format!("{pointer}: {}", handle.describe()));
            let what = format!("{}[{}] {}: ", t.operator, t.subtask, handle.describe());
            match read_handle_fully(storage, &handle) {
                Ok(bytes) => {
                    bar.inc(bytes.len() as u64);
                    let checked = if is_channel_state {
                        cairn_host::runtime::channel_state::check(&bytes)
                    } else {
                        check_state(&t.operator, &bytes)
                    };
                    if let Err(e) = checked {
                        problems.push(Problem::other(format!("{what}{e}")));
                    }
                }
                Err(e) => problems.push(Problem::storage(what, &e)),
            }
        }
    }
    problems
}

/// Verify `pointers` and judge each one. A checkpoint whose every problem is "not found" is judged
/// against a fresh listing taken after it was read (`list_now`): if it was listed when the verify
/// started (`listed_at_start`) and is not listed any more, the running job subsumed it meanwhile
/// and it is [`Verdict::Removed`]; if it is still listed, or never was (a savepoint, another
/// job's pointer), what is missing is damage. Any other problem (a checksum mismatch, metadata
/// that does not decode) is damage whatever the listing says.
fn verify_pointers(
    storage: &dyn CheckpointStorage,
    pointers: &[String],
    listed_at_start: &BTreeSet<String>,
    list_now: &dyn Fn() -> anyhow::Result<Vec<CompletedCheckpoint>>,
    bar: &ProgressBar,
    check_state: &StateCheck,
) -> anyhow::Result<Vec<(String, Verdict)>> {
    let mut results = Vec::new();
    for p in pointers {
        let problems = check_checkpoint(storage, p, bar, check_state);
        let verdict = if problems.is_empty() {
            Verdict::Ok
        } else if problems.iter().all(|p| p.not_found) && listed_at_start.contains(p) {
            let still_listed = list_now()
                .context("cannot list the completed checkpoints again")?
                .iter()
                .any(|c| &c.pointer == p);
            if still_listed {
                Verdict::Damaged(problems)
            } else {
                Verdict::Removed(problems)
            }
        } else {
            Verdict::Damaged(problems)
        };
        results.push((p.clone(), verdict));
    }
    Ok(results)
}

fn verify(config: &Config, args: &[String], as_json: bool) -> anyhow::Result<ExitCode> {
    let (_, storage) = open_storage(config)?;
    let listed = completed(config, storage.as_ref())?;
    let listed_at_start: BTreeSet<String> = listed.iter().map(|c| c.pointer.clone()).collect();
    let pointers: Vec<String> = if args.is_empty() {
        listed.into_iter().map(|c| c.pointer).collect()
    } else {
        args.iter()
            .map(|a| pointer_of(config, storage.as_ref(), a))
            .collect::<anyhow::Result<_>>()?
    };
    if pointers.is_empty() {
        bail!(
            "job '{}' has no completed checkpoints to verify",
            config.job.id
        );
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bytes} read {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let check_state = |operator: &str, bytes: &[u8]| state::check_task_state(operator, bytes);
    let results = verify_pointers(
        storage.as_ref(),
        &pointers,
        &listed_at_start,
        &|| completed(config, storage.as_ref()),
        &bar,
        &check_state,
    )?;
    bar.finish_and_clear();
    let count = |f: fn(&Verdict) -> bool| results.iter().filter(|(_, v)| f(v)).count();
    let ok = count(|v| matches!(v, Verdict::Ok));
    let bad = count(|v| matches!(v, Verdict::Damaged(_)));
    let removed = count(|v| matches!(v, Verdict::Removed(_)));
    let mut out = std::io::stdout().lock();
    if as_json {
        let doc = json!({
            "ok": bad == 0,
            "checkpoints": results.iter().map(|(p, v)| {
                let (status, problems) = match v {
                    Verdict::Ok => ("ok", &[][..]),
                    Verdict::Damaged(p) => ("damaged", &p[..]),
                    Verdict::Removed(p) => ("removed-while-verifying", &p[..]),
                };
                json!({
                    "pointer": p,
                    "ok": !matches!(v, Verdict::Damaged(_)),
                    "status": status,
                    "problems": problems.iter().map(|p| &p.text).collect::<Vec<_>>(),
                })
            }).collect::<Vec<_>>(),
            "verified": ok,
            "damaged": bad,
            "removed_while_verifying": removed,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        for (p, v) in &results {
            match v {
                Verdict::Ok => writeln!(out, "OK       {p}")?,
                Verdict::Damaged(problems) => {
                    for problem in problems {
                        writeln!(out, "DAMAGED  {p}: {}", problem.text)?;
                    }
                }
                Verdict::Removed(_) => writeln!(
                    out,
                    "REMOVED  {p}: removed while verifying (subsumed by a newer checkpoint)"
                )?,
            }
        }
        let removed = if removed > 0 {
            format!(", {removed} removed while verifying (subsumed)")
        } else {
            String::new()
        };
        writeln!(
            out,
            "{} checkpoints verified: {ok} ok, {bad} damaged{removed}",
            results.len(),
        )?;
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn delete(config: &Config, arg: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let (_, storage) = open_storage(config)?;
    let pointer = pointer_of(config, storage.as_ref(), arg)?;
    // Refuse a pointer that is not a readable cairn checkpoint, so a typo never deletes data.
    decode(storage.as_ref(), &pointer).context("refusing to delete")?;
    storage.dispose(&pointer)?;
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", json!({ "deleted": pointer }))?;
    } else {
        writeln!(out, "deleted {pointer}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn gc(config: &Config, dry_run: bool, as_json: bool) -> anyhow::Result<ExitCode> {
    let (_, storage) = open_storage(config)?;
    let job = storage.job(&config.job.id)?;
    // Objects and uncommitted locations are listed before the completed checkpoints, so a
    // checkpoint that commits in between is seen as completed and its state is kept.
    let objects = job.list_objects()?;
    let uncommitted = job.list_uncommitted()?;
    let (savepoints, notes) = uncommitted_savepoints(config, job.as_ref())?;
    let all = job.list_completed()?;
    let completed_ids: BTreeSet<u64> = all.iter().map(|c| c.checkpoint_id).collect();
    let uncommitted: Vec<u64> = uncommitted
        .into_iter()
        .filter(|id| !completed_ids.contains(id))
        .collect();
    // Everything any completed checkpoint references stays. A checkpoint whose metadata cannot
    // be read stops the collection: its references are unknown.
    let mut referenced = BTreeSet::new();
    for c in &all {
        let m = decode(storage.as_ref(), &c.pointer).with_context(|| {
            format!(
                "gc stopped before removing anything: checkpoint {} is unreadable",
                c.checkpoint_id
            )
        })?;
        for t in &m.tasks {
            for h in t.every_handle() {
                if let HandleRecord::Stored { locator, .. } = h {
                    referenced.insert(locator.clone());
                }
            }
        }
    }
    let orphans: Vec<_> = objects
        .into_iter()
        .filter(|o| !referenced.contains(&o.locator))
        .collect();
    let mut removed_bytes = 0;
    let mut errors = Vec::new();
    if !dry_run {
        let storage: Arc<dyn CheckpointStorage> = storage.clone();
        for o in &orphans {
            let h = StateHandle::Stored {
                locator: o.locator.clone(),
                size: o.size,
                crc32c: 0,
            };
            match storage.discard(&h) {
                Ok(()) => removed_bytes += o.size,
                Err(e) => errors.push(format!("{}: {e}", o.locator)),
            }
        }
        for id in &uncommitted {
            let cleaned = job
                .begin_checkpoint(*id)
                .and_then(|loc| loc.dispose_on_failure());
            if let Err(e) = cleaned {
                errors.push(format!("uncommitted checkpoint {id}: {e}"));
            }
        }
        for pointer in &savepoints {
            if let Err(e) = storage.dispose(pointer) {
                errors.push(format!("uncommitted savepoint {pointer}: {e}"));
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if as_json {
        let doc = json!({
            "dry_run": dry_run,
            "kept_checkpoints": all.iter().map(|c| c.checkpoint_id).collect::<Vec<_>>(),
            "orphaned_objects": orphans,
            "uncommitted_checkpoints": uncommitted,
            "uncommitted_savepoints": savepoints,
            "removed_bytes": removed_bytes,
            "notes": notes,
            "errors": errors,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        let verb = if dry_run { "would remove" } else { "removed" };
        for o in &orphans {
            writeln!(
                out,
                "{verb} orphaned object {} ({})",
                o.locator,
                HumanBytes(o.size)
            )?;
        }
        for id in &uncommitted {
            writeln!(out, "{verb} uncommitted checkpoint {id}")?;
        }
        for pointer in &savepoints {
            writeln!(out, "{verb} uncommitted savepoint {pointer}")?;
        }
        for n in &notes {
            writeln!(out, "note: {n}")?;
        }
        for e in &errors {
            writeln!(out, "error: {e}")?;
        }
        writeln!(
            out,
            "gc {verb} {} orphaned objects, {} uncommitted checkpoints and {} uncommitted \
             savepoints; {} completed checkpoints kept",
            orphans.len(),
            uncommitted.len(),
            savepoints.len(),
            all.len()
        )?;
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The job's uncommitted savepoint locations under `[savepoints] dir` and under the plugin's
/// default savepoint location, and notes on what could not be looked at (a plugin built against
/// plugin API 1.0 cannot list them; that is reported, not an error).
fn uncommitted_savepoints(
    config: &Config,
    job: &dyn cairn_plugin_api::JobStorage,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let configured = config
        .savepoints
        .dir
        .as_ref()
        .map(|d| d.to_string_lossy().into_owned());
    let mut found = BTreeSet::new();
    let mut notes = Vec::new();
    for target in [configured.as_deref(), None] {
        match job.list_uncommitted_savepoints(target) {
            Ok(pointers) => found.extend(pointers),
            Err(e) if e.kind() == cairn_plugin_api::ErrorKind::Unsupported => {
                notes.push(format!("uncommitted savepoints were not looked for: {}", e.message()));
                break;
            }
            Err(e) => {
                return Err(e).with_context(|| match target {
                    Some(t) => format!("gc stopped before removing anything: listing savepoints under {t}"),
                    None => "gc stopped before removing anything: listing savepoints under the plugin's default location".to_string(),
                })
            }
        }
    }
    Ok((found.into_iter().collect(), notes))
}

#[cfg(test)]
#[path = "checkpoints_verify_tests.rs"]
mod verify_tests;
