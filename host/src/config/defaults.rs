//! The commented default file that `cairn config defaults` prints.
//!
//! It is written from the `Default` values, not kept as a separate text, so it cannot drift
//! from what a missing key means; a test parses it back and compares it with
//! [`Config::default`](super::Config::default). Keys without a default value (`interval`,
//! `fail-on-checkpointing-errors`, `savepoints.dir`, ...) are shown commented out, with an
//! example value.

use super::{
    doc::{format_duration, format_size},
    CheckpointingConfig, JobConfig, LeaseConfig, RestartConfig, SavepointsConfig, StorageConfig,
    MIN_CHECKPOINT_TIME, MIN_LEASE_TTL,
};

/// A TOML file with every key and its default, commented; it passes `cairn config check`.
pub fn defaults_toml() -> String {
    let c = CheckpointingConfig::default();
    let j = JobConfig::default();
    let r = RestartConfig::default();
    let s = SavepointsConfig::default();
    let storage = StorageConfig::default();
    let l = LeaseConfig::default();
    let min = format_duration(MIN_CHECKPOINT_TIME);
    let d = |d| format!("{:?}", format_duration(d));
    let mut out = format!(
        r#"# cairn config file: every key with its default.
#
# `cairn config defaults` prints this; `cairn config check FILE` validates a file. Every table
# and key is optional, and unknown keys are errors. Durations are strings with a unit ("10ms",
# "10s", "10min") or, as in Flink, a number of milliseconds; sizes are a number of bytes or a
# string such as "64B", "1KiB" or "5MiB" ("1kb" is 1024 bytes, as in Flink). Flink's keys
# (execution.checkpointing.*, state.checkpoints.dir, ...) are accepted too (see the README).
# Relative paths are taken from this file's directory ([storage.options] excepted: the plugin
# takes them from the current directory).

[plugins]
# Directories searched for plugin libraries, in order.
# Default: ./plugins, then the directory of the cairn executable.
# search-path = ["plugins"]

[storage]
# The storage plugin: a manifest name found in the search path ...
plugin = {plugin:?}
# ... or a library file (not both).
# path = "plugins/libmy_storage.so"
# Optional pin: the plugin file must have this SHA-256 (`cairn plugins info NAME` prints it).
# sha256 = "<64 hex digits>"

[storage.options]
# Handed to the plugin as written; each plugin documents its own options.
"#,
        plugin = super::DEFAULT_PLUGIN,
    );
    out.push_str(&storage.options_document());
    out.push_str(&format!(
        r#"
[checkpointing]
# How often a checkpoint is triggered; at least {min}. Absent: checkpointing is off.
# interval = "1s"
# "exactly-once" or "at-least-once".
mode = "{mode}"
# A checkpoint still pending after this long expires and counts as a failure; at least {min}.
timeout = {timeout}
# The least time from the end of one checkpoint to the start of the next. Checkpoints are
# triggered every max(interval, min-pause).
min-pause = {min_pause}
# How many checkpoints may be pending at once; at least 1.
max-concurrent = {max_concurrent}
# Consecutive checkpoint failures tolerated before the job fails over; at least 0.
tolerable-failures = {tolerable}
# Flink's deprecated switch, instead of tolerable-failures (not together with it):
# true means tolerable-failures = 0, false means no limit.
# fail-on-checkpointing-errors = true
# What cancelling the job does to completed checkpoints: "no-externalized" (they are not kept
# beyond the job), "retain-on-cancellation" or "delete-on-cancellation".
externalized-retention = "{retention}"
# Unaligned checkpoints: barriers overtake the records queued in the exchange, and those
# records are stored with the checkpoint (channel state) and replayed at restore, so a
# checkpoint does not wait for a backpressured exchange to drain. Only with exactly-once
# checkpoints and max-concurrent = 1. At-least-once never aligns barriers at all.
unaligned = {unaligned}
# The keys below apply only with unaligned = true.
# Start aligned, and switch to unaligned once the checkpoint is this old (0: unaligned at once).
# aligned-checkpoint-timeout = {aligned_timeout}
# The older name of aligned-checkpoint-timeout (not together with it).
# alignment-timeout = "0s"
# Take unaligned checkpoints even where they would normally be refused (cairn refuses them
# nowhere, so this changes nothing; accepted for Flink configurations).
# force-unaligned = {force_unaligned}
# The most channel state one unaligned checkpoint may hold over all its tasks; past it the
# checkpoint fails (a failure like any other, under tolerable-failures).
# max-in-flight-data = "{max_in_flight}"
# Completed checkpoints kept; older ones are discarded. At least 1.
num-retained = {num_retained}

[savepoints]
# Default savepoint target directory. Absent: a savepoint needs an explicit target (or the
# plugin's own savepoint-dir option).
# dir = "savepoints"
# On SIGTERM, stop the job with a savepoint.
on-sigterm = {on_sigterm}

[job]
# The job's stable identity: restarts and `--from latest` find its checkpoints by it.
# 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'.
id = "{id}"
# The built-in job: "keyed-counter", or "word-count" (which takes input and output instead
# of keys and state-bytes-per-key).
kind = "{kind}"
# Keyed counter: distinct keys; at least 1.
keys = {keys}
# Keyed counter: bytes of state per key; at least {min_state}, at most {max_state}.
state-bytes-per-key = "{state}"
# Word count: the folder of text files to read, and the folder its part files go to.
# input = "input"
# output = "output"
# Records per second over the whole job; "unlimited" (or 0) for no limit (the word count's
# default).
rate = {rate}
# Records per second the keyed operator processes over the whole job; "unlimited" (the
# default) for as fast as it can. Below rate, the operator is slow: the exchange fills and
# backpressures the sources (to see what unaligned checkpoints do).
# operator-rate = 1000
# Parallel tasks per operator; 1 to {max_par}.
parallelism = {parallelism}
# Inject one task failure after this many records of an attempt, to exercise failover.
# fail-after-records = 1000000
# Inject one task failure once this many checkpoints completed, to exercise failover.
# fail-after-checkpoints = 3

[restart]
# Restarts after a failure before the job fails for good.
attempts = {attempts}
# The wait before each restart.
delay = {delay}

[metrics]
# Serve Prometheus metrics at http://ADDRESS/metrics while the job runs (port 0: any free
# port; `cairn run` prints it). Absent: no metrics. {flink} is the port of Flink's reporter.
# listen = "127.0.0.1:{flink}"
# The endpoint has no authentication: an address other machines can reach (not loopback)
# needs this.
# allow-remote = true

[lease]
# One live writer per job: `cairn run` holds a lease on its job in the storage, renewed every
# quarter of this. A holder that stops renewing (it died, hangs or lost the storage) keeps the
# job this long before `cairn run --standby` (or another run) takes it over; one that cannot
# renew for three quarters of it stops committing. At least {min_ttl}.
ttl = {ttl}
# Where the lock files of jobs go when the storage plugin has no lease support (built against
# plugin API 1.0). Default: $XDG_RUNTIME_DIR/cairn/leases, else cairn-<uid>/leases in the
# temporary directory.
# local-dir = "/run/cairn/leases"
"#,
        mode = c.mode,
        timeout = d(c.timeout),
        min_pause = d(c.min_pause),
        max_concurrent = c.max_concurrent,
        tolerable = c.tolerable_failures.unwrap_or(0),
        retention = c.externalized_retention,
        unaligned = c.unaligned,
        aligned_timeout = d(c.aligned_checkpoint_timeout),
        force_unaligned = c.force_unaligned,
        max_in_flight = format_size(c.max_in_flight_data),
        num_retained = c.num_retained,
        on_sigterm = s.on_sigterm,
        id = j.id,
        kind = j.kind.as_str(),
        keys = j.keys,
        min_state = format_size(super::MIN_STATE_BYTES_PER_KEY),
        max_state = format_size(super::job::MAX_STATE_BYTES_PER_KEY),
        state = format_size(j.state_bytes_per_key),
        rate = match j.rate {
            Some(n) => n.to_string(),
            None => "\"unlimited\"".to_string(),
        },
        max_par = super::MAX_PARALLELISM,
        parallelism = j.parallelism,
        attempts = r.attempts,
        delay = d(r.delay),
        flink = super::FLINK_PROMETHEUS_PORT,
        min_ttl = format_duration(MIN_LEASE_TTL),
        ttl = d(l.ttl),
    ));
    out
}
