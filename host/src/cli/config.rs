//! `cairn config check|defaults`: validate a config file and say what it means, or print a
//! commented file with every key and its default.
//!
//! `check --json` reports what Flink's `CheckpointConfig` getters would say about the file
//! (is checkpointing enabled, are checkpoints externalized, is unaligned forced, ...), so a
//! script can ask the same questions the coordinator does without parsing TOML itself.

use std::{io::Write, path::PathBuf, process::ExitCode};

use anyhow::Context;

use cairn_host::config::{self, Config, ConfigError, PluginRef, StorageCheck};
use clap::Subcommand;
use serde_json::json;

use super::output::print_json;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file as `run` would start it: parse it, load the plugin it names and
    /// have the plugin check [storage.options], creating nothing; summarize it, with warnings
    /// (checkpointing off, ...). Exit code 1 and the error (file, line, key) if `run` would not
    /// start.
    Check {
        /// The config file.
        #[arg(value_name = "FILE", default_value = "cairn.toml")]
        file: PathBuf,
        /// Print JSON instead of text: the checkpointing getters, the other tables, the loaded
        /// plugin and the warnings; or the error document `{"version", "error": {"kind",
        /// "message", "file", "line"?, "column"?, "key"?}}`.
        #[arg(long)]
        json: bool,
    },
    /// Print a commented config file with every key and its default.
    Defaults {
        /// Print JSON: `{"toml": the commented file, "defaults": every table with its keys}`.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { file, json } => check(&file, json),
        ConfigCommand::Defaults { json } => defaults(json),
    }
}

fn defaults(as_json: bool) -> anyhow::Result<ExitCode> {
    let text = config::defaults_toml();
    let mut out = std::io::stdout().lock();
    if as_json {
        #[derive(serde::Serialize)]
        struct Doc {
            toml: String,
            defaults: toml::Table,
        }
        let defaults = text
            .parse::<toml::Table>()
            .context("internal error: the defaults file is not TOML")?;
        print_json(
            &mut out,
            &Doc {
                toml: text,
                defaults,
            },
        )?;
    } else {
        write!(out, "{text}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn check(file: &std::path::Path, as_json: bool) -> anyhow::Result<ExitCode> {
    // Errors go back to `main`, which prints them once (text, and the error object under --json).
    let c = Config::load(file)?;
    // The job's state must fit in this machine's memory (the rule is the runtime's).
    let mut warnings = Vec::new();
    match cairn_host::runtime::memory_fit(&c.job) {
        cairn_host::runtime::memory::Fit::TooLarge(e) => {
            return Err(ConfigError {
                file: file.to_path_buf(),
                line: None,
                column: None,
                key: Some("job.keys".to_string()),
                message: e,
            }
            .into());
        }
        cairn_host::runtime::memory::Fit::Tight(w) => warnings.push(w),
        cairn_host::runtime::memory::Fit::Fits => {}
    }
    // "Valid" means `run` will start: the plugin loads and accepts its options.
    let storage = match config::check_storage(&c) {
        Ok(s) => s,
        Err(config::CheckError::Load(e)) => return Err(e.into()),
        Err(config::CheckError::Options(e)) => return Err(e.into()),
    };
    if !storage.options_checked {
        warnings.push(format!(
            "plugin '{}' (API {}) has no validate-only call, so [storage.options] is checked \
             only when `cairn run` opens the storage",
            storage.plugin, storage.api_version
        ));
    }
    warnings.extend(config::warnings(&c));
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let mut out = std::io::stdout().lock();
    if as_json {
        print_json(&mut out, &report(&c, file, &storage, &warnings))?;
    } else {
        write!(out, "{}", summary(&c, file, &storage))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What `check --json` prints about a valid file.
fn report(
    c: &Config,
    file: &std::path::Path,
    storage: &StorageCheck,
    warnings: &[String],
) -> serde_json::Value {
    let k = &c.checkpointing;
    let (plugin, path) = match &c.storage.plugin {
        PluginRef::Name(name) => (Some(name.clone()), None),
        PluginRef::Path(path) => (None, Some(path.clone())),
    };
    json!({
        "file": file,
        "valid": true,
        "checkpointing_enabled": k.is_enabled(),
        "checkpoint_interval_ms": k.interval.map(ms),
        "base_interval_ms": k.base_interval().map(ms),
        "mode": k.mode,
        "exactly_once": k.is_exactly_once(),
        "externalized": k.is_externalized(),
        "externalized_retention": k.externalized_retention,
        "unaligned": k.is_unaligned(),
        "force_unaligned": k.is_force_unaligned(),
        "aligned_checkpoint_timeout_ms": ms(k.aligned_checkpoint_timeout),
        "max_in_flight_data_bytes": k.max_in_flight_data(),
        "timeout_ms": ms(k.timeout),
        "min_pause_ms": ms(k.min_pause),
        "max_concurrent": k.max_concurrent,
        "tolerable_failures": k.tolerable_failures(),
        "num_retained": k.num_retained,
        "job": {
            "id": c.job.id,
            "kind": c.job.kind,
            "keys": c.job.keys,
            "state_bytes_per_key": c.job.state_bytes_per_key,
            "rate": c.job.rate,
            "operator_rate": c.job.operator_rate,
            "parallelism": c.job.parallelism,
            "fail_after_records": c.job.fail_after_records,
            "fail_after_checkpoints": c.job.fail_after_checkpoints,
            "input": c.job.input,
            "output": c.job.output,
        },
        "storage": {
            "plugin": plugin,
            "path": path,
            "sha256": c.storage.sha256,
            "options": c.storage.options,
            "loaded": {
                "name": storage.plugin,
                "version": storage.version,
                "api_version": storage.api_version.to_string(),
                "path": storage.path,
                "options_checked": storage.options_checked,
            },
        },
        "savepoints": {
            "dir": c.savepoints.dir,
            "on_sigterm": c.savepoints.on_sigterm,
        },
        "restart": {
            "attempts": c.restart.attempts,
            "delay_ms": ms(c.restart.delay),
        },
        "metrics": {
            "listen": c.metrics.listen.map(|a| a.to_string()),
            "allow_remote": c.metrics.allow_remote,
        },
        "lease": {
            "ttl_ms": ms(c.lease.ttl),
            "local_dir": c.lease.local_dir(),
        },
        "warnings": warnings,
    })
}

/// What `check` prints about a valid file: one line per table.
fn summary(c: &Config, file: &std::path::Path, loaded: &StorageCheck) -> String {
    let storage = match &c.storage.plugin {
        PluginRef::Name(name) => format!("plugin {name:?}"),
        PluginRef::Path(path) => format!("plugin file {}", path.display()),
    };
    let options: Vec<String> = c
        .storage
        .options
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    let options = if options.is_empty() {
        "no options".to_string()
    } else {
        options.join(", ")
    };
    let pin = if c.storage.sha256.is_some() {
        ", pinned by sha256"
    } else {
        ""
    };
    let checked = if loaded.options_checked {
        "options checked by the plugin"
    } else {
        "options not checked: the plugin has no validate-only call"
    };
    let j = &c.job;
    let mut rate = match j.rate {
        Some(n) => format!("{n} records/s"),
        None => "unlimited rate".to_string(),
    };
    if let Some(n) = j.operator_rate {
        rate.push_str(&format!(", operator at {n} records/s"));
    }
    let fail = match j.fail_after_records {
        Some(n) => format!(", one injected failure after {n} records"),
        None => String::new(),
    };
    let savepoints = match &c.savepoints.dir {
        Some(dir) => format!("into {}", dir.display()),
        None => "no default target".to_string(),
    };
    let sigterm = if c.savepoints.on_sigterm {
        "SIGTERM stops with a savepoint"
    } else {
        "SIGTERM stops without one"
    };
    let metrics = match c.metrics.listen {
        Some(addr) => format!("served at http://{addr}/metrics"),
        None => "off".to_string(),
    };
    format!(
        "{file} is valid\n\
         \x20 storage:       {storage} ({options}){pin}\n\
         \x20 plugin:        {name} {version} (API {api}) loaded from {path}; {checked}\n\
         \x20 checkpointing: {checkpointing}\n\
         \x20 savepoints:    {savepoints}; {sigterm}\n\
         \x20 job:           {id} ({kind}), {keys} keys x {state} of state, {rate}, parallelism {par}{fail}\n\
         \x20 restart:       up to {attempts} attempts, {delay} apart\n\
         \x20 metrics:       {metrics}\n\
         \x20 lease:         a holder that stops renewing keeps the job for {ttl}\n",
        file = file.display(),
        name = loaded.plugin,
        version = loaded.version,
        api = loaded.api_version,
        path = loaded.path.display(),
        checkpointing = c.checkpointing,
        id = j.id,
        kind = j.kind.as_str(),
        keys = j.keys,
        state = config::format_size(j.state_bytes_per_key),
        par = j.parallelism,
        attempts = c.restart.attempts,
        delay = config::format_duration(c.restart.delay),
        ttl = config::format_duration(c.lease.ttl),
    ) + &if c.checkpointing.is_force_unaligned() {
        format!("  note: {}\n", config::FORCE_UNALIGNED_NOTE)
    } else {
        String::new()
    }
}
