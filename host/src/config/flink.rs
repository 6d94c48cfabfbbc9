//! Flink's own keys in a cairn file, so that a Flink user's settings carry over.
//!
//! A Flink `config.yaml` (or `flink-conf.yaml`) writes flat dotted keys,
//! `execution.checkpointing.interval: 10s`. In TOML a dotted key is a path through tables, so
//! the same line written `execution.checkpointing.interval = "10s"` (at the top of the file, or
//! as `interval = "10s"` under an `[execution.checkpointing]` header) is the table `execution`,
//! holding the table `checkpointing`, holding `interval`. This module gives those tables a shape:
//!
//! - `execution.checkpointing.*`: every key of Flink's `CheckpointingOptions` that cairn has,
//!   under Flink's name (`max-concurrent-checkpoints`, `tolerable-failed-checkpoints`,
//!   `externalized-checkpoint-retention`, ...), read by `checkpointing.rs` as an alias of
//!   cairn's key;
//! - `state.checkpoints.dir`, `state.checkpoints.num-retained`, `state.savepoints.dir` (Flink 1.x
//!   names) and `execution.checkpointing.dir` / `savepoint-dir` / `num-retained` (Flink 2.x).
//!
//! An alias and cairn's key both set is an error naming both, never a silent precedence. Flink's
//! enum spellings (`EXACTLY_ONCE`) and bare-millisecond durations are read by `doc.rs` for every
//! key, and Flink's size units by `cairn_plugin_api::parse_size`. A Flink key cairn lacks gets
//! [`missing`]'s answer: what cairn calls it, or why cairn has no such setting.

use serde::Deserialize;

use super::{
    doc::{Doc, Field, Value},
    storage::{PluginRef, StorageConfig, DEFAULT_PLUGIN},
    ConfigError,
};

/// `execution` as written: only `checkpointing`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawExecution {
    #[serde(default)]
    pub checkpointing: RawFlinkCheckpointing,
}

/// `execution.checkpointing` as written: Flink's names.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawFlinkCheckpointing {
    pub interval: Option<Field>,
    pub mode: Option<Field>,
    pub timeout: Option<Field>,
    pub min_pause: Option<Field>,
    pub max_concurrent_checkpoints: Option<Field>,
    pub tolerable_failed_checkpoints: Option<Field>,
    pub externalized_checkpoint_retention: Option<Field>,
    pub unaligned: Option<Field>,
    pub aligned_checkpoint_timeout: Option<Field>,
    pub alignment_timeout: Option<Field>,
    pub num_retained: Option<Field>,
    pub dir: Option<Field>,
    pub savepoint_dir: Option<Field>,
}

/// `state` as written: `checkpoints` and `savepoints`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawState {
    #[serde(default)]
    pub checkpoints: RawStateCheckpoints,
    #[serde(default)]
    pub savepoints: RawStateSavepoints,
}

/// `state.checkpoints` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawStateCheckpoints {
    pub dir: Option<Field>,
    pub num_retained: Option<Field>,
}

/// `state.savepoints` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawStateSavepoints {
    pub dir: Option<Field>,
}

/// A setting and where it was found: its full key as written, and its value.
pub(super) type Found<'a> = Option<(&'static str, &'a Field)>;

/// The one of `names` (full keys, cairn's first, then Flink's) that is set; an error naming
/// both if two are, since they are one setting.
pub(super) fn one_of<'a>(
    doc: &Doc<'_>,
    names: &[(&'static str, Option<&'a Field>)],
) -> Result<Found<'a>, ConfigError> {
    let mut set = names.iter().filter_map(|&(k, f)| f.map(|f| (k, f)));
    let first = set.next();
    if let (Some((a, _)), Some((b, at))) = (first, set.next()) {
        return Err(doc.error_at(
            b,
            at.span().start,
            format!(
                "{a} and {b} are both set; they are one setting under cairn's and Flink's names, \
                 so keep only one"
            ),
        ));
    }
    Ok(first)
}

/// Read a setting where it was found, with `read`; `None` when it is not set.
pub(super) fn read<T>(
    doc: &Doc<'_>,
    found: Found<'_>,
    read: impl FnOnce(&Value<'_>) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    match found {
        Some((key, field)) => doc.read_key(key, Some(field), read),
        None => Ok(None),
    }
}

/// Put Flink's checkpoint directory (`state.checkpoints.dir` or `execution.checkpointing.dir`)
/// into the storage it means: with no `[storage]` table, `s3://`, `gs://` and `az://` URLs pick
/// the object-store plugin (its `url`), anything else the filesystem plugin (its `dir`, where
/// `file://` URLs are paths); with a `[storage]` table, the option of that bundled plugin that
/// holds the directory (`dir`, the memory plugin's `checkpoint-dir`, or `url`). Set together
/// with that option, or for a plugin cairn does not know the options of, it is an error.
pub(super) fn apply_checkpoint_dir(
    doc: &Doc<'_>,
    mut storage: StorageConfig,
    storage_written: bool,
    found: Found<'_>,
) -> Result<StorageConfig, ConfigError> {
    let Some((key, field)) = found else {
        return Ok(storage);
    };
    let dir = doc
        .read_key(key, Some(field), |v| {
            let dir = v.string("a directory path or URL")?;
            if dir.trim().is_empty() {
                return Err(v.fail("is empty; give a directory path or URL, or leave the key out"));
            }
            Ok(dir.to_string())
        })?
        .expect("the key is set");
    let cloud = ["s3://", "gs://", "az://"]
        .iter()
        .any(|scheme| dir.starts_with(scheme));
    if !storage_written {
        let (plugin, option) = if cloud {
            ("object-store", "url")
        } else {
            (DEFAULT_PLUGIN, "dir")
        };
        storage.plugin = PluginRef::Name(plugin.to_string());
        storage.options = toml::Table::new();
        storage
            .options
            .insert(option.into(), toml::Value::String(dir));
        return Ok(storage);
    }
    let option = match &storage.plugin {
        PluginRef::Name(name) if name == "filesystem" => "dir",
        PluginRef::Name(name) if name == "memory" => "checkpoint-dir",
        PluginRef::Name(name) if name == "object-store" => "url",
        _ => {
            return Err(doc.error_at(
                key,
                field.span().start,
                format!(
                    "{key} names the checkpoint directory, but cairn does not know which option \
                     of this [storage] plugin holds it; set that option in [storage.options] \
                     instead"
                ),
            ))
        }
    };
    if storage.options.contains_key(option) {
        return Err(doc.error_at(
            key,
            field.span().start,
            format!(
                "{key} and storage.options.{option} are both set; they are one setting under \
                 Flink's and cairn's names, so keep only one"
            ),
        ));
    }
    storage
        .options
        .insert(option.into(), toml::Value::String(dir));
    Ok(storage)
}

/// Flink keys cairn has no key for, each with what cairn calls it or why it has no such setting.
/// An entry ending in `.` covers every key under it.
const MISSING: &[(&str, &str)] = &[
    ("execution.checkpointing.storage", "cairn calls this storage.plugin (\"filesystem\", \"memory\" or \"object-store\")"),
    ("state.checkpoint-storage", "cairn calls this storage.plugin (\"filesystem\", \"memory\" or \"object-store\")"),
    ("state.backend.type", "cairn has no such setting, because a job's state always lives in the host's memory (Flink's hashmap backend); where checkpoints go is storage.plugin"),
    ("state.backend", "cairn has no such setting, because a job's state always lives in the host's memory (Flink's hashmap backend); where checkpoints go is storage.plugin"),
    ("state.backend.incremental", "cairn has no such setting, because every checkpoint is a full one for now (incremental checkpoints are not built yet)"),
    ("execution.checkpointing.incremental", "cairn has no such setting, because every checkpoint is a full one for now (incremental checkpoints are not built yet)"),
    ("state.checkpoints.create-subdir", "cairn has no such setting, because checkpoints always go into a folder named after job.id"),
    ("execution.checkpointing.create-subdir", "cairn has no such setting, because checkpoints always go into a folder named after job.id"),
    ("execution.checkpointing.cleaner.parallel-mode", "cairn has no such setting, because subsumed checkpoints are always discarded in parallel, in the background"),
    ("execution.checkpointing.checkpoints-after-tasks-finish", "cairn has no such setting, because a job whose input has finished always takes a final checkpoint"),
    ("execution.checkpointing.unaligned.enabled", "cairn calls this execution.checkpointing.unaligned = true (Flink 1.x's name), or checkpointing.unaligned"),
    ("execution.checkpointing.unaligned.forced", "cairn calls this checkpointing.force-unaligned"),
    ("execution.checkpointing.unaligned.max-subtasks-per-channel-state-file", "cairn has no such setting, because each channel's in-flight records are one stream of their own"),
    ("execution.checkpointing.max-aligned-checkpoint-size", "cairn calls this checkpointing.max-in-flight-data"),
    ("execution.checkpointing.file-merging.", "cairn has no such setting, because each task's snapshot is already a single stream"),
    ("execution.checkpointing.local-backup.enabled", "cairn has no such setting, because a restore always reads the checkpoint storage"),
    ("state.backend.local-recovery", "cairn has no such setting, because a restore always reads the checkpoint storage"),
    ("execution.checkpointing.snapshot-compression", "cairn has no such setting, because state is written uncompressed, covered by CRC32C"),
    ("execution.checkpointing.interval-during-backlog", "cairn has no such setting, because its sources have no backlog phase; use execution.checkpointing.interval"),
    ("execution.checkpointing.data-inline-threshold", "cairn calls this storage.options.inline-threshold"),
    ("state.storage.fs.memory-threshold", "cairn calls this storage.options.inline-threshold"),
    ("execution.checkpointing.write-buffer-size", "cairn calls this storage.options.write-buffer (filesystem plugin)"),
    ("state.storage.fs.write-buffer-size", "cairn calls this storage.options.write-buffer (filesystem plugin)"),
    ("execution.savepoint.path", "cairn calls this `cairn run --from POINTER`, an argument rather than a setting"),
    ("execution.state-recovery.path", "cairn calls this `cairn run --from POINTER`, an argument rather than a setting"),
    ("restart-strategy.fixed-delay.attempts", "cairn calls this restart.attempts"),
    ("restart-strategy.fixed-delay.delay", "cairn calls this restart.delay"),
    ("restart-strategy.", "cairn calls this [restart] (attempts and delay, a fixed-delay strategy)"),
    ("restart-strategy", "cairn calls this [restart] (attempts and delay, a fixed-delay strategy)"),
    ("parallelism.default", "cairn calls this job.parallelism"),
    ("metrics.reporter.", "cairn calls this [metrics] listen (a Prometheus endpoint)"),
];

/// What cairn calls Flink's `key`, or why it has no such setting; `None` for a key that is not
/// one of Flink's that cairn lacks.
pub(super) fn missing(key: &str) -> Option<&'static str> {
    MISSING
        .iter()
        .find(|(k, _)| *k == key)
        .or_else(|| {
            MISSING
                .iter()
                .find(|(k, _)| k.ends_with('.') && key.starts_with(k))
        })
        .map(|(_, why)| *why)
}
