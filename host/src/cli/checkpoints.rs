//! `cairn checkpoints list|show|verify|delete|copy|gc`: inspect and manage a job's checkpoints
//! through the configured storage plugin. Every subcommand has `--json`.

use std::{
    collections::BTreeSet,
    io::Write,
    process::ExitCode,
    sync::{atomic::AtomicBool, Arc},
};

use anyhow::{bail, Context};
use cairn_host::{
    config::Config,
    lease::{self, Lease, LeaseEvent, LeaseOptions, Wait},
    metadata::{CheckpointMetadata, HandleRecord, SnapshotKind},
    runtime::{self, state},
};
use cairn_plugin_api::{
    read_handle_fully, CheckpointStorage, CompletedCheckpoint, ErrorKind, StateHandle, StorageError,
};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde_json::json;

use super::output::NotFound;

use super::{open_storage, ConfigArg};

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CheckpointsCommand {
    /// List the job's completed checkpoints and savepoints (job.id from the config) by id, with
    /// their kind. Savepoints are looked for under [savepoints] dir and under the plugin's
    /// default savepoint location.
    List {
        /// Only checkpoints, or only savepoints.
        #[arg(long, value_enum)]
        kind: Option<Kind>,
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Decode one checkpoint's or savepoint's metadata: by id (of the config's job) or by
    /// pointer.
    Show {
        /// A checkpoint or savepoint id, `latest` (checkpoint), or a pointer.
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
        /// Checkpoint or savepoint ids, `latest`, or pointers; all completed checkpoints and
        /// savepoints of the job if none.
        checkpoints: Vec<String>,
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a completed checkpoint (its metadata first, then its exclusive state). Refused
    /// while the job runs (its lease is live).
    Delete {
        /// A checkpoint or savepoint id, `latest` (checkpoint), or a pointer.
        checkpoint: String,
        /// Delete it even though its metadata cannot be read (truncated, garbled, of an unknown
        /// format): its metadata and every object in its location go. What goes is shown first.
        /// Only a completed checkpoint of the job, or a pointer whose metadata exists, is taken.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy a completed checkpoint or savepoint to the storage of another config (for example
    /// filesystem to S3), as a checkpoint or savepoint of the same id there. Every handle is
    /// read with its checksum checked, written, and read back from the destination; the copy
    /// commits only when every byte is there, so an interrupted copy leaves nothing committed.
    /// The destination config's job.id must be the checkpoint's; `run --from` restores the copy.
    Copy {
        /// A checkpoint or savepoint id, `latest` (checkpoint), or a pointer.
        checkpoint: String,
        /// The config file of the destination storage.
        #[arg(long, value_name = "FILE")]
        to_config: std::path::PathBuf,
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove what no completed checkpoint needs: stored objects no completed checkpoint
    /// references, checkpoint locations that were never committed, and this job's savepoint
    /// locations that were never committed (under [savepoints] dir and the plugin's default
    /// savepoint location). Never touches a completed checkpoint or savepoint. Refused while
    /// the job runs (its lease is live): an in-flight checkpoint or savepoint looks abandoned.
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

/// What `list --kind` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Periodic checkpoints.
    Checkpoint,
    /// Savepoints.
    Savepoint,
}

/// Run a subcommand.
pub fn run(cmd: CheckpointsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CheckpointsCommand::List { kind, config, json } => list(&config.load()?, kind, json),
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
            force,
            config,
            json,
        } => delete(&config.load()?, &checkpoint, force, json),
        CheckpointsCommand::Copy {
            checkpoint,
            to_config,
            config,
            json,
        } => copy(&config.load()?, &checkpoint, &to_config, json),
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
pub(super) fn pointer_of(
    config: &Config,
    storage: &dyn CheckpointStorage,
    arg: &str,
) -> anyhow::Result<String> {
    let all = completed(config, storage)?;
    if arg == "latest" {
        return all.last().map(|c| c.pointer.clone()).ok_or_else(|| {
            NotFound(format!(
                "job '{}' has no completed checkpoint",
                config.job.id
            ))
            .into()
        });
    }
    if let Ok(id) = arg.parse::<u64>() {
        if let Some(c) = all.iter().find(|c| c.checkpoint_id == id) {
            return Ok(c.pointer.clone());
        }
        let (savepoints, _) = savepoints(config, storage)?;
        if let Some(s) = savepoints.iter().find(|s| s.id == Some(id)) {
            return Ok(s.pointer.clone());
        }
        let list = |ids: Vec<u64>| {
            if ids.is_empty() {
                "none".to_string()
            } else {
                ids.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        return Err(NotFound(format!(
            "job '{}' has no completed checkpoint {id} and no savepoint of that id \
             (checkpoints: {}; savepoints: {})",
            config.job.id,
            list(all.iter().map(|c| c.checkpoint_id).collect()),
            list(savepoints.iter().filter_map(|s| s.id).collect()),
        ))
        .into());
    }
    Ok(arg.to_string())
}

/// A completed savepoint of the job, as `list` shows it.
struct Savepoint {
    pointer: String,
    /// Its id, if its metadata could be read.
    id: Option<u64>,
    metadata: anyhow::Result<CheckpointMetadata>,
}

/// The job's completed savepoints under `[savepoints] dir` and the plugin's default savepoint
/// location, by id; and notes on what could not be looked at (a plugin built against API 1.0
/// cannot list them). A savepoint whose metadata names another job is left out; one whose
/// metadata cannot be read is kept, so that it can be seen and deleted.
fn savepoints(
    config: &Config,
    storage: &dyn CheckpointStorage,
) -> anyhow::Result<(Vec<Savepoint>, Vec<String>)> {
    let job = storage.job(&config.job.id)?;
    let configured = config.savepoints.target();
    let mut pointers = BTreeSet::new();
    let mut notes = Vec::new();
    for target in [configured.as_deref(), None] {
        match job.list_savepoints(target) {
            Ok(found) => pointers.extend(found),
            Err(e) if e.kind() == ErrorKind::Unsupported => {
                notes.push(format!("savepoints were not looked for: {}", e.message()));
                break;
            }
            Err(e) => {
                return Err(e).with_context(|| match target {
                    Some(t) => format!("listing the savepoints under {t}"),
                    None => {
                        "listing the savepoints under the plugin's default location".to_string()
                    }
                })
            }
        }
    }
    let mut out: Vec<Savepoint> = pointers
        .into_iter()
        .map(|pointer| {
            let metadata = decode(storage, &pointer);
            Savepoint {
                id: metadata.as_ref().ok().map(|m| m.checkpoint_id),
                metadata,
                pointer,
            }
        })
        .filter(|s| {
            s.metadata
                .as_ref()
                .map_or(true, |m| m.job_id == config.job.id)
        })
        .collect();
    out.sort_by_key(|s| s.id);
    Ok((out, notes))
}

fn decode(storage: &dyn CheckpointStorage, pointer: &str) -> anyhow::Result<CheckpointMetadata> {
    let resolved = storage.resolve(pointer)?;
    CheckpointMetadata::decode(&resolved.metadata).with_context(|| format!("checkpoint {pointer}"))
}

fn list(config: &Config, kind: Option<Kind>, as_json: bool) -> anyhow::Result<ExitCode> {
    let (_, storage) = open_storage(config)?;
    let row = |id: Option<u64>,
               kind: &str,
               pointer: &str,
               m: &anyhow::Result<CheckpointMetadata>| {
        match m {
            Ok(m) => json!({
                "id": id, "kind": kind, "pointer": pointer,
                "completed_ms": m.completed_at_ms,
                "completed": rfc3339(m.completed_at_ms),
                "state_bytes": m.state_size(),
                "records": m.tasks.iter().map(|t| t.records).sum::<u64>(), "readable": true,
            }),
            Err(e) => {
                json!({ "id": id, "kind": kind, "pointer": pointer, "readable": false, "error": format!("{e:#}") })
            }
        }
    };
    let mut rows = Vec::new();
    if kind != Some(Kind::Savepoint) {
        for c in completed(config, storage.as_ref())? {
            let m = decode(storage.as_ref(), &c.pointer);
            rows.push(row(Some(c.checkpoint_id), "checkpoint", &c.pointer, &m));
        }
    }
    let mut notes = Vec::new();
    if kind != Some(Kind::Checkpoint) {
        let (found, n) = savepoints(config, storage.as_ref())?;
        notes = n;
        for s in found {
            rows.push(row(s.id, "savepoint", &s.pointer, &s.metadata));
        }
    }
    // By id; a savepoint after the checkpoint of the same id (it cannot have one, but an
    // unreadable savepoint has no id and goes last).
    rows.sort_by_key(|r| {
        (
            r["id"].as_u64().is_none(),
            r["id"].as_u64(),
            r["kind"] == "savepoint",
        )
    });
    let mut out = std::io::stdout().lock();
    if as_json {
        let doc = json!({
            "job_id": config.job.id, "location": storage.info().location,
            "checkpoints": rows, "notes": notes,
        });
        crate::cli::output::print_json(&mut out, &doc)?;
        return Ok(ExitCode::SUCCESS);
    }
    for n in &notes {
        eprintln!("note: {n}");
    }
    if rows.is_empty() {
        let what = match kind {
            Some(Kind::Checkpoint) => "completed checkpoints",
            Some(Kind::Savepoint) => "savepoints",
            None => "completed checkpoints or savepoints",
        };
        writeln!(
            out,
            "job '{}' has no {what} in {}",
            config.job.id,
            storage.info().location
        )?;
    }
    if !rows.is_empty() {
        let mut table = super::term::table(&["id", "kind", "completed", "state", "pointer"]);
        for r in &rows {
            let id = r["id"].as_u64().map_or("?".to_string(), |i| i.to_string());
            let kind = r["kind"].as_str().unwrap_or("").to_string();
            let pointer = r["pointer"].as_str().unwrap_or("").to_string();
            let (completed, state) = if r["readable"] == true {
                (
                    r["completed"].as_str().unwrap_or("").to_string(),
                    HumanBytes(r["state_bytes"].as_u64().unwrap_or(0)).to_string(),
                )
            } else {
                (
                    format!("UNREADABLE: {}", r["error"].as_str().unwrap_or("")),
                    String::new(),
                )
            };
            table.add_row(vec![id, kind, completed, state, pointer]);
        }
        super::term::align_right(&mut table, &[0, 3]);
        writeln!(out, "{}", super::term::render(&table))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Stored objects as the JSON documents list them: `{"locator", "size_bytes"}`.
fn objects_json(objects: &[cairn_plugin_api::StoredObject]) -> Vec<serde_json::Value> {
    objects
        .iter()
        .map(|o| json!({ "locator": o.locator, "size_bytes": o.size }))
        .collect()
}

/// What output calls a snapshot of `kind`.
fn kind_name(kind: SnapshotKind) -> &'static str {
    match kind {
        SnapshotKind::Checkpoint => "checkpoint",
        SnapshotKind::Savepoint => "savepoint",
    }
}

/// An epoch time in milliseconds as RFC 3339.
fn rfc3339(ms: u64) -> String {
    cairn_host::lease::rfc3339(ms)
}

/// What `show --json` prints: the checkpoint's id, kind, pointer, times and size, then its
/// metadata. The metadata's own field names are those of the stored format
/// (`checkpoint_id`, `triggered_at_ms`, a handle's `size`, ...); in this document they follow
/// the JSON contract (`id`, `triggered_ms` and `triggered`, `size_bytes`, ...).
#[derive(serde::Serialize)]
struct ShowJson<'a> {
    id: u64,
    kind: &'static str,
    pointer: &'a str,
    triggered_ms: u64,
    triggered: String,
    completed_ms: u64,
    completed: String,
    state_bytes: u64,
    metadata: serde_json::Value,
}

impl<'a> ShowJson<'a> {
    fn new(pointer: &'a str, m: &CheckpointMetadata) -> anyhow::Result<Self> {
        use serde_json::Value;
        let rename = |v: &mut Value, from: &str, to: &str| {
            if let Some(o) = v.as_object_mut() {
                if let Some(x) = o.remove(from) {
                    o.insert(to.to_string(), x);
                }
            }
        };
        let mut metadata = serde_json::to_value(m)?;
        rename(&mut metadata, "checkpoint_id", "id");
        rename(&mut metadata, "triggered_at_ms", "triggered_ms");
        rename(&mut metadata, "completed_at_ms", "completed_ms");
        if let Some(o) = metadata.as_object_mut() {
            o.insert("triggered".into(), rfc3339(m.triggered_at_ms).into());
            o.insert("completed".into(), rfc3339(m.completed_at_ms).into());
        }
        // Only the known places: a sink's state or a source's offset is the job's own JSON.
        if let Some(tasks) = metadata.get_mut("tasks").and_then(Value::as_array_mut) {
            for t in tasks {
                for h in t
                    .get_mut("handles")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    rename(h, "size", "size_bytes");
                }
                let channel_state = t.get_mut("channel_state").and_then(Value::as_array_mut);
                for c in channel_state.into_iter().flatten() {
                    rename(c, "bytes", "size_bytes");
                    if let Some(h) = c.get_mut("handle") {
                        rename(h, "size", "size_bytes");
                    }
                }
            }
        }
        Ok(ShowJson {
            id: m.checkpoint_id,
            kind: kind_name(m.kind),
            pointer,
            triggered_ms: m.triggered_at_ms,
            triggered: rfc3339(m.triggered_at_ms),
            completed_ms: m.completed_at_ms,
            completed: rfc3339(m.completed_at_ms),
            state_bytes: m.state_size(),
            metadata,
        })
    }
}

fn show(config: &Config, arg: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let (_, storage) = open_storage(config)?;
    let pointer = pointer_of(config, storage.as_ref(), arg)?;
    let m = decode(storage.as_ref(), &pointer)?;
    let mut out = std::io::stdout().lock();
    if as_json {
        crate::cli::output::print_json(&mut out, &ShowJson::new(&pointer, &m)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{} {} of job '{}' ({})",
        kind_name(m.kind),
        m.checkpoint_id,
        m.job_id,
        m.job_kind
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
    let (savepoints, notes) = savepoints(config, storage.as_ref())?;
    // The id of each pointer that has one, for the report (a pointer given as it is may not).
    let ids: std::collections::BTreeMap<String, u64> = listed
        .iter()
        .map(|c| (c.pointer.clone(), c.checkpoint_id))
        .chain(
            savepoints
                .iter()
                .filter_map(|s| Some((s.pointer.clone(), s.id?))),
        )
        .collect();
    let pointers: Vec<String> = if args.is_empty() {
        for n in notes {
            eprintln!("note: {n}");
        }
        listed
            .into_iter()
            .map(|c| c.pointer)
            .chain(savepoints.into_iter().map(|s| s.pointer))
            .collect()
    } else {
        args.iter()
            .map(|a| pointer_of(config, storage.as_ref(), a))
            .collect::<anyhow::Result<_>>()?
    };
    if pointers.is_empty() {
        return Err(NotFound(format!(
            "job '{}' has no completed checkpoints or savepoints to verify",
            config.job.id
        ))
        .into());
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bytes} read {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let shown = super::term::show(&bar);
    let check_state = |operator: &str, bytes: &[u8]| state::check_task_state(operator, bytes);
    let results = verify_pointers(
        storage.as_ref(),
        &pointers,
        &listed_at_start,
        &|| completed(config, storage.as_ref()),
        &bar,
        &check_state,
    )?;
    drop(shown);
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
                    "id": ids.get(p),
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
        crate::cli::output::print_json(&mut out, &doc)?;
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
            "{} verified: {ok} ok, {bad} damaged{removed}",
            cairn_host::words::count(results.len() as u64, "checkpoint"),
        )?;
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Hold the job's lease while `command` changes its storage: refused while a run (or another
/// gc or delete) holds it. Released (as `done`) when dropped.
fn hold_lease(
    config: &Config,
    storage: &Arc<dyn CheckpointStorage>,
    command: &str,
) -> anyhow::Result<Lease> {
    let calls = runtime::PluginCalls::new(
        storage.clone(),
        config.checkpointing.timeout,
        Arc::new(AtomicBool::new(false)),
    );
    let on_event = |e: &LeaseEvent| match e {
        LeaseEvent::LocalFallback { note } => eprintln!("warning: {note}"),
        LeaseEvent::Waiting { held, at_most } => eprintln!(
            "cairn: the lease of job '{}' is held by {held} but looks abandoned; watching it{}",
            config.job.id,
            at_most.map_or(String::new(), |t| format!(
                " for {} before taking it",
                humantime::format_duration(t)
            ))
        ),
        LeaseEvent::TakenOver { from, why } => eprintln!(
            "cairn: took the lease of job '{}' over from {from}: {why}",
            config.job.id
        ),
    };
    Ok(lease::acquire(
        &calls,
        &LeaseOptions {
            job_id: &config.job.id,
            command,
            ttl: config.lease.ttl,
            wait: Wait::Refuse,
            local_dir: config.lease.local_dir(),
            hint: "a checkpoint of a job that runs is changed only by that run; stop it first",
            cancel: Arc::new(AtomicBool::new(false)),
            on_event: &on_event,
        },
    )?)
}

fn delete(config: &Config, arg: &str, force: bool, as_json: bool) -> anyhow::Result<ExitCode> {
    let (_, storage) = open_storage(config)?;
    let lease = hold_lease(config, &storage, "cairn checkpoints delete")?;
    let pointer = pointer_of(config, storage.as_ref(), arg)?;
    let listed = completed(config, storage.as_ref())?
        .into_iter()
        .find(|c| c.pointer == pointer);
    // Refuse a pointer that is not a readable cairn checkpoint, so a typo never deletes data;
    // --force takes one whose metadata is there but cannot be read.
    let mut kind = SnapshotKind::Checkpoint;
    let mut id = listed.as_ref().map(|c| c.checkpoint_id);
    let unreadable = match storage.resolve(&pointer) {
        Ok(r) => match CheckpointMetadata::decode(&r.metadata) {
            Ok(m) => {
                kind = m.kind;
                id = Some(m.checkpoint_id);
                None
            }
            Err(e) => Some(format!("checkpoint {pointer}: {e}")),
        },
        Err(e) if listed.is_some() && e.kind() != ErrorKind::NotFound => Some(e.to_string()),
        Err(e) => return Err(e).context(format!("refusing to delete {pointer}")),
    };
    let mut objects = Vec::new();
    if let Some(problem) = &unreadable {
        if !force {
            bail!(
                "refusing to delete: {problem}; `cairn checkpoints delete --force {arg}` removes                  it anyway"
            );
        }
        // What goes: the objects in its location (a locator whose folder ends the pointer);
        // shared state stays, since other checkpoints may use it.
        if listed.is_some() {
            let job = storage.job(&config.job.id)?;
            objects = job
                .list_objects()?
                .into_iter()
                .filter(|o| {
                    o.locator
                        .rsplit_once('/')
                        .is_some_and(|(folder, _)| pointer.ends_with(&format!("/{folder}")))
                })
                .collect();
        }
        if !as_json {
            let mut err = std::io::stderr().lock();
            writeln!(
                err,
                "removing {pointer}, whose metadata cannot be read ({problem}): its metadata and                  the {} object(s) of its location{}",
                objects.len(),
                if objects.is_empty() { "" } else { ":" }
            )?;
            for o in &objects {
                writeln!(err, "  {} ({})", o.locator, HumanBytes(o.size))?;
            }
        }
    }
    storage.dispose(&pointer)?;
    lease.release("done");
    let mut out = std::io::stdout().lock();
    if as_json {
        let doc = json!({
            "deleted": pointer,
            "kind": kind_name(kind),
            "id": id,
            "forced": unreadable.is_some(),
            "unreadable": unreadable,
            "objects": objects_json(&objects),
        });
        crate::cli::output::print_json(&mut out, &doc)?;
    } else {
        writeln!(out, "deleted {} {pointer}", kind_name(kind))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn copy(
    config: &Config,
    arg: &str,
    to_config: &std::path::Path,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let (_, storage) = open_storage(config)?;
    let pointer = pointer_of(config, storage.as_ref(), arg)?;
    let destination_config = Config::load(to_config)?;
    let (_, destination) = open_storage(&destination_config)?;
    // The copy writes into the destination job: not beside a run of it.
    let lease = hold_lease(&destination_config, &destination, "cairn checkpoints copy")?;
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bytes}/{total_bytes} copied {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(pointer.clone());
    let shown = super::term::show(&bar);
    let report = cairn_host::copy::copy(
        storage.as_ref(),
        &pointer,
        &cairn_host::copy::Destination {
            storage: destination.as_ref(),
            job_id: &destination_config.job.id,
            savepoint_target: destination_config.savepoints.target(),
        },
        &|done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    );
    drop(shown);
    let report = report?;
    lease.release("done");
    let mut out = std::io::stdout().lock();
    if as_json {
        crate::cli::output::print_json(&mut out, &report)?;
    } else {
        writeln!(
            out,
            "copied {} {} ({} handles, {} of state, every checksum checked at both ends) in {} ms \
             to {}",
            kind_name(report.kind),
            report.id,
            report.handles,
            HumanBytes(report.state_bytes),
            report.duration_ms,
            report.pointer
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn gc(config: &Config, dry_run: bool, as_json: bool) -> anyhow::Result<ExitCode> {
    let (_, storage) = open_storage(config)?;
    // Even a dry run: beside a running job, its in-flight checkpoints would look abandoned.
    let lease = hold_lease(config, &storage, "cairn checkpoints gc")?;
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
    // be read is skipped and named; since its references are unknown, no stored object is
    // removed while there is one (uncommitted locations still are: nothing committed
    // references them).
    let mut referenced = BTreeSet::new();
    let mut unreadable = Vec::new();
    let mut notes = notes;
    for c in &all {
        let m = match decode(storage.as_ref(), &c.pointer) {
            Ok(m) => m,
            Err(e) => {
                notes.push(format!(
                    "checkpoint {} ({}) is unreadable ({e:#}); skipped, and every stored object \
                     is kept, since it might reference any; remove it with `cairn checkpoints \
                     delete --force {}`",
                    c.checkpoint_id, c.pointer, c.checkpoint_id
                ));
                unreadable.push(json!({ "id": c.checkpoint_id, "pointer": c.pointer, "error": format!("{e:#}") }));
                continue;
            }
        };
        for t in &m.tasks {
            for h in t.every_handle() {
                if let HandleRecord::Stored { locator, .. } = h {
                    referenced.insert(locator.clone());
                }
            }
        }
    }
    let (orphans, kept): (Vec<_>, Vec<_>) = objects
        .into_iter()
        .filter(|o| !referenced.contains(&o.locator))
        .partition(|_| unreadable.is_empty());
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
    lease.release("done");
    let mut out = std::io::stdout().lock();
    if as_json {
        let doc = json!({
            "dry_run": dry_run,
            "kept_checkpoints": all.iter().map(|c| c.checkpoint_id).collect::<Vec<_>>(),
            "orphaned_objects": objects_json(&orphans),
            "uncommitted_checkpoints": uncommitted,
            "uncommitted_savepoints": savepoints,
            "unreadable_checkpoints": unreadable,
            "kept_unreferenced_objects": objects_json(&kept),
            "removed_bytes": removed_bytes,
            "notes": notes,
            "errors": errors,
        });
        crate::cli::output::print_json(&mut out, &doc)?;
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
    let configured = config.savepoints.target();
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
