//! Unit tests of the config file: every rule with its exact message and line, the defaults, the
//! Flink compatibility keys, the example configs and the `cairn config defaults` output.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::*;

const FILE: &str = "/etc/cairn/cairn.toml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(FILE))
}

fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("{e}\n--- in ---\n{text}"))
}

/// `text` is refused at `line`, naming `key`, with exactly `message`.
#[track_caller]
fn refused(text: &str, line: usize, key: &str, message: &str) {
    let e = match parse(text) {
        Ok(c) => panic!("accepted: {c:?}\n--- in ---\n{text}"),
        Err(e) => e,
    };
    assert_eq!(e.message, message, "{e}");
    assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{e}");
    assert_eq!(
        e.to_string(),
        format!("config error at {FILE}:{line}: {message}")
    );
}

const MS: fn(u64) -> Duration = Duration::from_millis;

// ---- plugins and storage ----

#[test]
fn empty_file_gives_defaults() {
    let c = ok("");
    assert_eq!(c.storage.plugin, PluginRef::Name("filesystem".into()));
    assert_eq!(c.plugins.search_path, None);
    assert_eq!(c.file.as_deref(), Some(Path::new(FILE)));
    assert_eq!(Config { file: None, ..c }, Config::default());
}

#[test]
fn the_embedded_default_storage_is_the_filesystem_in_checkpoints() {
    let c = ok("[checkpointing]\ninterval = \"1s\"\n");
    assert_eq!(c.storage.plugin, PluginRef::Name("filesystem".into()));
    assert_eq!(c.storage.options_document().trim(), "dir = \"checkpoints\"");
    assert_eq!(Config::default().storage, c.storage);
    // A [storage] table is taken as written: no options are added to it.
    let c = ok("[storage]\nplugin = \"memory\"\n");
    assert!(c.storage.options.is_empty());
}

#[test]
fn unknown_key_names_line_and_key() {
    let e = parse("[storage]\nplugin = \"memory\"\nsha265 = \"x\"\n").unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    assert_eq!(e.key.as_deref(), Some("storage.sha265"), "{e}");
    assert!(
        e.message.starts_with(
            "storage.sha265 is not a known key; did you mean `sha256`? expected one of `plugin`"
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("config error at /etc/cairn/cairn.toml:3:"),
        "{e}"
    );
}

#[test]
fn unknown_key_in_checkpointing_names_the_table_and_the_allowed_keys() {
    let e = parse("# c\n[checkpointing]   # the checkpoint settings\nmode = \"exactly-once\"\nintervall = \"1s\"\n")
        .unwrap_err();
    assert_eq!(e.line, Some(4), "{e}");
    assert_eq!(e.key.as_deref(), Some("checkpointing.intervall"), "{e}");
    assert!(e.message.contains("`interval`"), "{e}");
    assert!(e.message.contains("`alignment-timeout`"), "{e}");
}

#[test]
fn unknown_table_is_refused() {
    let e = parse("[job]\nid = \"a\"\n\n[checkpoint]\ninterval = \"1s\"\n").unwrap_err();
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.message.contains("`checkpointing`"), "{e}");
}

#[test]
fn bad_pin_names_line_and_key() {
    let e = parse("[storage]\nplugin = \"memory\"\nsha256 = \"abc\"\n").unwrap_err();
    assert_eq!(e.line, Some(3));
    assert_eq!(e.key.as_deref(), Some("storage.sha256"));
    assert!(e.message.contains("64 hex digits"), "{e}");
}

#[test]
fn plugin_and_path_together_are_refused() {
    let e = parse("[storage]\nplugin = \"memory\"\npath = \"x.so\"\n").unwrap_err();
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("not both"), "{e}");
}

#[test]
fn relative_paths_are_relative_to_the_file() {
    let c = ok(
        "[plugins]\nsearch-path = [\"p\", \"/abs\"]\n[storage]\npath = \"lib/x.so\"\n\
         [savepoints]\ndir = \"sp\"\n",
    );
    assert_eq!(
        c.plugins.search_path,
        Some(vec![PathBuf::from("/etc/cairn/p"), PathBuf::from("/abs")])
    );
    assert_eq!(
        c.storage.plugin,
        PluginRef::Path(PathBuf::from("/etc/cairn/lib/x.so"))
    );
    assert_eq!(c.savepoints.dir, Some(PathBuf::from("/etc/cairn/sp")));
}

#[test]
fn wrong_type_names_the_key() {
    let e = parse("[plugins]\nsearch-path = \"plugins\"\n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    assert_eq!(e.key.as_deref(), Some("plugins.search-path"), "{e}");
}

#[test]
fn options_are_serialized_for_the_plugin() {
    let c = ok("[storage]\nplugin = \"filesystem\"\n[storage.options]\ndir = \"/tmp/x\"\n");
    assert_eq!(c.storage.options_document().trim(), "dir = \"/tmp/x\"");
}

// ---- [checkpointing] ----

#[test]
fn checkpointing_defaults_are_flinks() {
    let c = ok("").checkpointing;
    assert_eq!(c.interval, None);
    assert!(!c.is_enabled());
    assert_eq!(c.base_interval(), None);
    assert_eq!(c.mode, CheckpointingMode::ExactlyOnce);
    assert!(c.is_exactly_once());
    assert_eq!(c.timeout, Duration::from_secs(600));
    assert_eq!(c.min_pause, Duration::ZERO);
    assert_eq!(c.max_concurrent, 1);
    assert_eq!(c.tolerable_failures(), Some(0));
    assert_eq!(
        c.externalized_retention,
        ExternalizedRetention::NoExternalized
    );
    assert!(!c.is_externalized());
    assert!(!c.is_unaligned());
    assert_eq!(c.aligned_checkpoint_timeout, Duration::ZERO);
    assert!(!c.is_force_unaligned());
    assert_eq!(c.num_retained, 1);
}

#[test]
fn every_checkpointing_key_is_read() {
    let c = ok(r#"
[checkpointing]
interval = "2s"
mode = "at-least-once"
timeout = "1min"
min-pause = "500ms"
max-concurrent = 3
tolerable-failures = 4
externalized-retention = "delete-on-cancellation"
unaligned = false
num-retained = 5
"#)
    .checkpointing;
    assert_eq!(
        c,
        CheckpointingConfig {
            interval: Some(Duration::from_secs(2)),
            mode: CheckpointingMode::AtLeastOnce,
            timeout: Duration::from_secs(60),
            min_pause: MS(500),
            max_concurrent: 3,
            tolerable_failures: Some(4),
            externalized_retention: ExternalizedRetention::DeleteOnCancellation,
            unaligned: false,
            aligned_checkpoint_timeout: Duration::ZERO,
            force_unaligned: false,
            max_in_flight_data: DEFAULT_MAX_IN_FLIGHT_DATA,
            num_retained: 5,
        }
    );
    assert!(c.is_enabled() && c.is_externalized() && !c.is_force_unaligned());
    assert!(!c.is_exactly_once());
    // The keys that shape unaligned checkpoints, read with unaligned = true.
    let c = ok(r#"
[checkpointing]
unaligned = true
aligned-checkpoint-timeout = "30s"
force-unaligned = true
max-in-flight-data = "64MiB"
"#)
    .checkpointing;
    assert!(c.is_unaligned() && c.is_force_unaligned());
    assert_eq!(c.aligned_checkpoint_timeout, Duration::from_secs(30));
    assert_eq!(c.max_in_flight_data(), 64 << 20);
    let c = ok("[checkpointing]\nexternalized-retention = \"retain-on-cancellation\"\n");
    assert_eq!(
        c.checkpointing.externalized_retention,
        ExternalizedRetention::RetainOnCancellation
    );
    assert!(c.checkpointing.is_externalized());
}

#[test]
fn interval_is_at_least_10ms() {
    refused(
        "[storage]\nplugin = \"memory\"\n\n# comment\n\n[checkpointing]\ninterval = \"5ms\"\n",
        7,
        "checkpointing.interval",
        "checkpointing.interval = \"5ms\" is below the minimum of 10ms",
    );
    assert_eq!(
        ok("[checkpointing]\ninterval = \"10ms\"\n")
            .checkpointing
            .interval,
        Some(MS(10))
    );
}

#[test]
fn a_bare_number_of_a_duration_is_milliseconds_as_in_flink() {
    let c = ok("[checkpointing]\ninterval = 5000\ntimeout = \"60000\"\n").checkpointing;
    assert_eq!(c.interval, Some(Duration::from_secs(5)));
    assert_eq!(c.timeout, Duration::from_secs(60));
    refused(
        "[checkpointing]\ntimeout = \"5\"\n",
        2,
        "checkpointing.timeout",
        "checkpointing.timeout = \"5\" is below the minimum of 10ms",
    );
    refused(
        "[checkpointing]\ninterval = -5\n",
        2,
        "checkpointing.interval",
        "checkpointing.interval = -5 is below the minimum of 10ms",
    );
    refused(
        "[checkpointing]\ninterval = true\n",
        2,
        "checkpointing.interval",
        "checkpointing.interval = true is not a duration; write a string with a unit, such as \
         \"500ms\", \"10s\" or \"10min\", or a number of milliseconds",
    );
    let e = parse("[checkpointing]\ntimeout = \"soon\"\n").unwrap_err();
    assert!(
        e.message
            .starts_with("checkpointing.timeout = \"soon\" is not a duration"),
        "{e}"
    );
    // Durations in humantime's other spellings are accepted.
    let c = ok("[checkpointing]\ninterval = \"1m 30s\"\ntimeout = \"2h\"\n").checkpointing;
    assert_eq!(c.interval, Some(Duration::from_secs(90)));
    assert_eq!(c.timeout, Duration::from_secs(7200));
}

#[test]
fn timeout_is_at_least_10ms() {
    refused(
        "[checkpointing]\ninterval = \"1s\"\ntimeout = \"9ms\"\n",
        3,
        "checkpointing.timeout",
        "checkpointing.timeout = \"9ms\" is below the minimum of 10ms",
    );
}

#[test]
fn min_pause_is_a_duration_and_raises_the_base_interval() {
    refused(
        "[checkpointing]\nmin-pause = \"-1s\"\n",
        2,
        "checkpointing.min-pause",
        "checkpointing.min-pause = \"-1s\" is not a duration (expected number at 0); write a \
         number and a unit, such as \"500ms\", \"10s\" or \"10min\", or a number of milliseconds",
    );
    let c = ok("[checkpointing]\ninterval = \"1s\"\nmin-pause = \"3s\"\n").checkpointing;
    assert_eq!(c.base_interval(), Some(Duration::from_secs(3)));
    let c = ok("[checkpointing]\ninterval = \"1s\"\nmin-pause = \"0s\"\n").checkpointing;
    assert_eq!(c.base_interval(), Some(Duration::from_secs(1)));
}

#[test]
fn max_concurrent_and_num_retained_are_at_least_1() {
    refused(
        "[checkpointing]\nmax-concurrent = 0\n",
        2,
        "checkpointing.max-concurrent",
        "checkpointing.max-concurrent = 0 is below the minimum of 1",
    );
    refused(
        "[checkpointing]\n\nnum-retained = 0\n",
        3,
        "checkpointing.num-retained",
        "checkpointing.num-retained = 0 is below the minimum of 1",
    );
    refused(
        "[checkpointing]\nmax-concurrent = \"2\"\n",
        2,
        "checkpointing.max-concurrent",
        "checkpointing.max-concurrent = \"2\" is not a whole number; expected an integer at least \
         1, without quotes",
    );
    refused(
        "[checkpointing]\nnum-retained = 4294967296\n",
        2,
        "checkpointing.num-retained",
        "checkpointing.num-retained = 4294967296 is above the maximum of 4294967295",
    );
}

#[test]
fn tolerable_failures_is_at_least_0() {
    refused(
        "[checkpointing]\ntolerable-failures = -1\n",
        2,
        "checkpointing.tolerable-failures",
        "checkpointing.tolerable-failures = -1 is below the minimum of 0",
    );
    let c = ok("[checkpointing]\ntolerable-failures = 7\n").checkpointing;
    assert_eq!(c.tolerable_failures(), Some(7));
}

#[test]
fn fail_on_checkpointing_errors_is_flinks_deprecated_switch() {
    let c = ok("[checkpointing]\nfail-on-checkpointing-errors = true\n").checkpointing;
    assert_eq!(c.tolerable_failures(), Some(0));
    let c = ok("[checkpointing]\nfail-on-checkpointing-errors = false\n").checkpointing;
    assert_eq!(c.tolerable_failures(), None, "false means unlimited");
    refused(
        "[checkpointing]\ntolerable-failures = 3\nfail-on-checkpointing-errors = false\n",
        3,
        "checkpointing.fail-on-checkpointing-errors",
        "checkpointing.fail-on-checkpointing-errors and checkpointing.tolerable-failures are both \
         set; fail-on-checkpointing-errors is Flink's deprecated switch (true means \
         tolerable-failures = 0, false means no limit), so set only one of them",
    );
    // The same whichever comes first.
    let e = parse("[checkpointing]\nfail-on-checkpointing-errors = true\ntolerable-failures = 0\n")
        .unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    refused(
        "[checkpointing]\nfail-on-checkpointing-errors = \"yes\"\n",
        2,
        "checkpointing.fail-on-checkpointing-errors",
        "checkpointing.fail-on-checkpointing-errors = \"yes\" is not a boolean; expected true or \
         false, without quotes",
    );
}

#[test]
fn mode_and_retention_name_what_is_allowed() {
    refused(
        "[checkpointing]\nmode = \"EXACTLY-TWICE\"\n",
        2,
        "checkpointing.mode",
        "checkpointing.mode = \"EXACTLY-TWICE\" is not a checkpointing mode; expected \
         \"exactly-once\" or \"at-least-once\"",
    );
    refused(
        "[checkpointing]\nexternalized-retention = \"retain\"\n",
        2,
        "checkpointing.externalized-retention",
        "checkpointing.externalized-retention = \"retain\" is not a retention policy; expected \
         \"no-externalized\", \"retain-on-cancellation\" or \"delete-on-cancellation\"",
    );
}

#[test]
fn unaligned_needs_exactly_once() {
    refused(
        "[checkpointing]\ninterval = \"1s\"\nunaligned = true\nmode = \"at-least-once\"\n",
        3,
        "checkpointing.unaligned",
        "checkpointing.unaligned = true needs mode = \"exactly-once\", but mode is \
         \"at-least-once\"; at-least-once checkpoints are never aligned, so set unaligned = false",
    );
    // Not unaligned: at-least-once is fine.
    ok("[checkpointing]\nunaligned = false\nmode = \"at-least-once\"\n");
}

#[test]
fn unaligned_needs_max_concurrent_1() {
    refused(
        "[checkpointing]\nmax-concurrent = 2\nunaligned = true\n",
        3,
        "checkpointing.unaligned",
        "checkpointing.unaligned = true needs max-concurrent = 1, but max-concurrent is 2",
    );
    ok("[checkpointing]\nmax-concurrent = 2\nunaligned = false\n");
    let c = ok(
        "[checkpointing]\nunaligned = true\nmax-concurrent = 1\nmode = \"exactly-once\"\n\
         aligned-checkpoint-timeout = \"100ms\"\nforce-unaligned = true\n",
    )
    .checkpointing;
    assert!(c.is_unaligned() && c.is_force_unaligned());
    assert_eq!(c.aligned_checkpoint_timeout, MS(100));
    refused(
        "[checkpointing]\nunaligned = 1\n",
        2,
        "checkpointing.unaligned",
        "checkpointing.unaligned = 1 is not a boolean; expected true or false, without quotes",
    );
}

#[test]
fn alignment_timeout_is_the_older_name() {
    let c = ok("[checkpointing]\nunaligned = true\nalignment-timeout = \"2s\"\n").checkpointing;
    assert_eq!(c.aligned_checkpoint_timeout, Duration::from_secs(2));
    refused(
        "[checkpointing]\nalignment-timeout = \"2s\"\naligned-checkpoint-timeout = \"3s\"\n",
        2,
        "checkpointing.alignment-timeout",
        "checkpointing.alignment-timeout and checkpointing.aligned-checkpoint-timeout are both \
         set; alignment-timeout is the older name of aligned-checkpoint-timeout, so keep only \
         aligned-checkpoint-timeout",
    );
    // A bare number is milliseconds, as in Flink.
    let c = ok("[checkpointing]\nunaligned = true\nalignment-timeout = 2\n").checkpointing;
    assert_eq!(c.aligned_checkpoint_timeout, MS(2));
}

#[test]
fn lines_come_from_the_parser_however_the_key_is_written() {
    // A dotted key at the top level.
    refused(
        "# top\n\ncheckpointing.interval = \"5ms\"\n\n[job]\nid = \"j\"\n",
        3,
        "checkpointing.interval",
        "checkpointing.interval = \"5ms\" is below the minimum of 10ms",
    );
    // An inline table, after a comment that looks like the key.
    refused(
        "# parallelism = 0\njob = { id = \"j\", parallelism = 0 }\n",
        2,
        "job.parallelism",
        "job.parallelism = 0 is below the minimum of 1",
    );
    // After a multi-line array, and a commented-out line with the same key.
    refused(
        "[plugins]\nsearch-path = [\n  \"a\",\n  \"b\",\n]\n\n[checkpointing]\n\
         # interval = \"1s\"\ninterval = \"1ms\"\n",
        9,
        "checkpointing.interval",
        "checkpointing.interval = \"1ms\" is below the minimum of 10ms",
    );
}

// ---- [job], [restart], [savepoints] ----

#[test]
fn job_and_restart_defaults() {
    let c = ok("");
    assert_eq!(
        c.job,
        JobConfig {
            id: "keyed-counter".into(),
            kind: JobKind::KeyedCounter,
            keys: 1000,
            state_bytes_per_key: 64,
            rate: Some(100_000),
            parallelism: 2,
            fail_after_records: None,
            ..JobConfig::default()
        }
    );
    assert_eq!(c.restart.attempts, 3);
    assert_eq!(c.restart.delay, Duration::from_secs(1));
    assert_eq!(c.savepoints, SavepointsConfig::default());
    assert!(!c.savepoints.on_sigterm);
    assert_eq!(c.savepoints.dir, None);
}

#[test]
fn every_job_key_is_read() {
    let c = ok(r#"
[job]
id = "orders_v2-eu"
kind = "keyed-counter"
keys = 5
state-bytes-per-key = "1KiB"
rate = 250
parallelism = 64
fail-after-records = 1

[restart]
attempts = 0
delay = "250ms"

[savepoints]
dir = "/var/savepoints"
on-sigterm = true
"#);
    assert_eq!(
        c.job,
        JobConfig {
            id: "orders_v2-eu".into(),
            kind: JobKind::KeyedCounter,
            keys: 5,
            state_bytes_per_key: 1024,
            rate: Some(250),
            parallelism: 64,
            fail_after_records: Some(1),
            ..JobConfig::default()
        }
    );
    assert_eq!((c.restart.attempts, c.restart.delay), (0, MS(250)));
    assert_eq!(c.savepoints.dir, Some(PathBuf::from("/var/savepoints")));
    assert!(c.savepoints.on_sigterm);
}

#[test]
fn job_id_rules() {
    let allowed = "use 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'";
    refused(
        "[job]\nid = \"my job\"\n",
        2,
        "job.id",
        &format!("job.id = \"my job\" is not a valid job id; {allowed}"),
    );
    refused(
        "[job]\nid = \"\"\n",
        2,
        "job.id",
        &format!("job.id = \"\" is not a valid job id; {allowed}"),
    );
    refused(
        "[job]\nid = \"../x\"\n",
        2,
        "job.id",
        &format!("job.id = \"../x\" is not a valid job id; {allowed}"),
    );
    let long = "a".repeat(65);
    refused(
        &format!("[job]\nid = \"{long}\"\n"),
        2,
        "job.id",
        &format!("job.id = \"{long}\" is not a valid job id; {allowed}"),
    );
    assert_eq!(
        ok(&format!("[job]\nid = \"{}\"\n", "a".repeat(64)))
            .job
            .id
            .len(),
        64
    );
    refused(
        "[job]\nid = 7\n",
        2,
        "job.id",
        "job.id = 7 is not a job id; write it as a string",
    );
}

#[test]
fn job_kind_keys_and_parallelism() {
    refused(
        "[job]\nkind = \"wordcount\"\n",
        2,
        "job.kind",
        "job.kind = \"wordcount\" is not a job kind; expected \"keyed-counter\" or \"word-count\"",
    );
    refused(
        "[job]\nkeys = 0\n",
        2,
        "job.keys",
        "job.keys = 0 is below the minimum of 1",
    );
    refused(
        "[job]\nparallelism = 0\n",
        2,
        "job.parallelism",
        "job.parallelism = 0 is below the minimum of 1",
    );
    refused(
        "[job]\nparallelism = 65\n",
        2,
        "job.parallelism",
        "job.parallelism = 65 is above the maximum of 64",
    );
    refused(
        "[job]\nparallelism = 2.5\n",
        2,
        "job.parallelism",
        "job.parallelism = 2.5 is not a whole number; expected an integer from 1 to 64, without \
         quotes",
    );
    refused(
        "[job]\nfail-after-records = 0\n",
        2,
        "job.fail-after-records",
        "job.fail-after-records = 0 is below the minimum of 1",
    );
}

#[test]
fn state_bytes_per_key_is_a_size_of_at_least_8_bytes() {
    refused(
        "[job]\nstate-bytes-per-key = \"4B\"\n",
        2,
        "job.state-bytes-per-key",
        "job.state-bytes-per-key = \"4B\" is below the minimum of 8B",
    );
    refused(
        "[job]\nstate-bytes-per-key = 7\n",
        2,
        "job.state-bytes-per-key",
        "job.state-bytes-per-key = 7 is below the minimum of 8B",
    );
    refused(
        "[job]\nstate-bytes-per-key = \"lots\"\n",
        2,
        "job.state-bytes-per-key",
        "job.state-bytes-per-key = \"lots\" is not a size; write a number of bytes, or a string \
         such as \"64B\", \"1KiB\" or \"5MiB\"",
    );
    refused(
        "[job]\nstate-bytes-per-key = \"5MiB\"\n",
        2,
        "job.state-bytes-per-key",
        "job.state-bytes-per-key = \"5MiB\" is above the maximum of 1MiB",
    );
    for (written, bytes) in [
        ("8", 8),
        ("\"64B\"", 64),
        ("\"1MiB\"", 1 << 20),
        ("\"2 KiB\"", 2048),
    ] {
        let c = ok(&format!("[job]\nstate-bytes-per-key = {written}\n"));
        assert_eq!(c.job.state_bytes_per_key, bytes, "{written}");
    }
}

#[test]
fn rate_is_a_number_or_unlimited() {
    assert_eq!(ok("[job]\nrate = \"unlimited\"\n").job.rate, None);
    assert_eq!(ok("[job]\nrate = 0\n").job.rate, None);
    assert_eq!(ok("[job]\nrate = 1\n").job.rate, Some(1));
    refused(
        "[job]\nrate = \"fast\"\n",
        2,
        "job.rate",
        "job.rate = \"fast\" is not a rate; expected records per second as an integer, or \
         \"unlimited\"",
    );
    refused(
        "[job]\nrate = -5\n",
        2,
        "job.rate",
        "job.rate = -5 is not a rate; expected records per second as an integer of at least 0, \
         or \"unlimited\" (0 also means no limit)",
    );
}

#[test]
fn restart_and_savepoint_rules() {
    refused(
        "[restart]\nattempts = -1\n",
        2,
        "restart.attempts",
        "restart.attempts = -1 is below the minimum of 0",
    );
    refused(
        "[restart]\ndelay = true\n",
        2,
        "restart.delay",
        "restart.delay = true is not a duration; write a string with a unit, such as \
         \"500ms\", \"10s\" or \"10min\", or a number of milliseconds",
    );
    refused(
        "[savepoints]\ndir = \"\"\n",
        2,
        "savepoints.dir",
        "savepoints.dir = \"\" is empty; give a directory path, or leave the key out",
    );
    refused(
        "[savepoints]\non-sigterm = \"true\"\n",
        2,
        "savepoints.on-sigterm",
        "savepoints.on-sigterm = \"true\" is not a boolean; expected true or false, without quotes",
    );
}

// ---- the defaults file and the examples ----

/// Every key a table accepts, from the "expected one of" list of its unknown-key error, so a
/// key added to a table cannot be left out of the defaults file or the README.
fn keys_of(table: &str) -> Vec<String> {
    let e = parse(&format!("[{table}]\nno-such-key-at-all = 1\n")).unwrap_err();
    // serde writes "expected `a`", "expected `a` or `b`" or "expected one of `a`, `b`, `c`".
    let (_, list) = e
        .message
        .split_once("; expected ")
        .unwrap_or_else(|| panic!("{e}"));
    list.trim_start_matches("one of ")
        .split(", ")
        .flat_map(|k| k.split(" or "))
        .map(|k| k.trim_matches('`').to_string())
        .collect()
}

/// The keys of `[checkpointing]` that are Flink's names of cairn's keys.
const FLINK_NAMES: [&str; 3] = [
    "max-concurrent-checkpoints",
    "tolerable-failed-checkpoints",
    "externalized-checkpoint-retention",
];

const TABLES: [&str; 7] = [
    "plugins",
    "storage",
    "checkpointing",
    "savepoints",
    "job",
    "restart",
    "metrics",
];

#[test]
fn defaults_file_parses_to_the_defaults() {
    let text = defaults_toml();
    let c = ok(&text);
    assert_eq!(Config { file: None, ..c }, Config::default(), "{text}");
}

#[test]
fn defaults_file_shows_every_key() {
    let text = defaults_toml();
    for table in TABLES {
        assert!(
            text.contains(&format!("\n[{table}]\n")),
            "[{table}] missing"
        );
        for key in keys_of(table) {
            // Flink's names of cairn's keys are documented in the README's Flink table, not
            // in the defaults file.
            if FLINK_NAMES.contains(&key.as_str()) {
                continue;
            }
            if key == "options" {
                assert!(text.contains("\n[storage.options]\n"));
                continue;
            }
            let shown = text.lines().any(|l| {
                l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} = "))
            });
            assert!(shown, "{table}.{key} is not in the defaults file:\n{text}");
        }
    }
    // Every commented-out example is valid where it stands (one at a time).
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("# ") else {
            continue;
        };
        let key = rest.split(" = ").next().unwrap_or("");
        if !rest.contains(" = ") || key.contains(' ') {
            continue;
        }
        let mut edited = lines.clone();
        edited[i] = rest;
        // The compatibility keys stand instead of the key they replace.
        let replaced = match key {
            "fail-on-checkpointing-errors" => Some("tolerable-failures = "),
            "alignment-timeout" => Some("aligned-checkpoint-timeout = "),
            "path" => Some("plugin = "),
            _ => None,
        };
        if let Some(r) = replaced {
            edited.retain(|l| !l.starts_with(r));
        }
        // The word count's folders go together, with its kind, instead of the keyed counter's
        // keys and state size.
        if key == "input" || key == "output" {
            for l in edited.iter_mut() {
                if l.starts_with("# input = ") || l.starts_with("# output = ") {
                    *l = &l[2..];
                } else if l.starts_with("kind = ") {
                    *l = "kind = \"word-count\"";
                }
            }
            edited
                .retain(|l| !l.starts_with("keys = ") && !l.starts_with("state-bytes-per-key = "));
        }
        // allow-remote goes only with an address to listen on.
        if key == "allow-remote" {
            for l in edited.iter_mut() {
                if l.starts_with("# listen = ") {
                    *l = &l[2..];
                }
            }
        }
        let edited = edited.join("\n");
        if key == "sha256" {
            assert!(
                parse(&edited).is_err(),
                "the sha256 placeholder is not a digest"
            );
            continue;
        }
        parse(&edited).unwrap_or_else(|e| panic!("uncommenting {line:?}: {e}"));
    }
}

#[test]
fn readme_documents_every_key() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let section = readme
        .split("\n## Config file")
        .nth(1)
        .expect("README has a Config file section");
    let section = section.split("\n## ").next().unwrap();
    for table in TABLES {
        for key in keys_of(table) {
            let full = format!("`{table}.{key}`");
            assert!(section.contains(&full), "README does not document {full}");
        }
    }
}

fn example(name: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(name);
    Config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_quickstart_example_is_valid() {
    let c = example("quickstart.toml");
    assert_eq!(c.storage.plugin, PluginRef::Name("filesystem".into()));
    assert_eq!(c.storage.options_document().trim(), "dir = \"checkpoints\"");
    let k = &c.checkpointing;
    assert_eq!(k.interval, Some(Duration::from_secs(1)));
    assert_eq!(k.num_retained, 3);
    assert_eq!(
        k.externalized_retention,
        ExternalizedRetention::RetainOnCancellation
    );
    assert_eq!(c.job.id, "quickstart");
    assert_eq!(c.job.keys, 1000);
    assert_eq!(c.job.rate, Some(20_000));
    assert_eq!(c.job.parallelism, 2);
}

#[test]
fn the_memory_example_is_valid() {
    let c = example("memory.toml");
    assert_eq!(c.storage.plugin, PluginRef::Name("memory".into()));
    assert!(c.checkpointing.is_enabled());
}

#[test]
fn format_helpers_write_what_the_parser_reads() {
    assert_eq!(format_duration(MS(10)), "10ms");
    assert_eq!(format_duration(Duration::ZERO), "0s");
    assert_eq!(format_duration(Duration::from_secs(600)), "10min");
    assert_eq!(format_duration(MS(1500)), "1500ms");
    assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
    assert_eq!(format_duration(Duration::from_micros(1500)), "1ms500us");
    assert_eq!(format_duration(MAX_DURATION), "365d");
    for d in [
        MAX_DURATION,
        MS(10),
        MS(1500),
        Duration::from_secs(7200),
        Duration::from_micros(1500),
    ] {
        assert_eq!(humantime::parse_duration(&format_duration(d)).unwrap(), d);
    }
    assert_eq!(format_size(64), "64B");
    assert_eq!(format_size(0), "0B");
    assert_eq!(format_size(1024), "1KiB");
    assert_eq!(format_size(5 << 20), "5MiB");
    assert_eq!(format_size(1000), "1000B");
}

// ---- the longest duration (issue 9.2) ----

#[test]
fn every_duration_key_refuses_values_past_the_maximum() {
    let keys = [
        ("checkpointing", "interval"),
        ("checkpointing", "timeout"),
        ("checkpointing", "min-pause"),
        ("checkpointing", "aligned-checkpoint-timeout"),
        ("checkpointing", "alignment-timeout"),
        ("restart", "delay"),
    ];
    for (table, key) in keys {
        // The value from the report, which used to pass the check and then panic in `run`
        // (overflow when adding duration to instant), and the first value past the maximum.
        for value in ["500000000000years", "365d 1ms"] {
            let text = format!("# a comment\n[{table}]\n{key} = \"{value}\"\n");
            refused(
                &text,
                3,
                &format!("{table}.{key}"),
                &format!(
                    "{table}.{key} = \"{value}\" is above the maximum of 365d for any duration"
                ),
            );
        }
        let needs = if key.contains("align") {
            "unaligned = true\n"
        } else {
            ""
        };
        let at_max = ok(&format!("[{table}]\n{needs}{key} = \"365d\"\n"));
        let got = match key {
            "interval" => at_max.checkpointing.interval.unwrap(),
            "timeout" => at_max.checkpointing.timeout,
            "min-pause" => at_max.checkpointing.min_pause,
            "delay" => at_max.restart.delay,
            _ => at_max.checkpointing.aligned_checkpoint_timeout,
        };
        assert_eq!(got, MAX_DURATION, "{table}.{key}");
    }
}

// ---- messages: one line, escaped, a line and column for bytes that are not UTF-8 (9.7) ----

#[test]
fn bytes_that_are_not_utf8_are_located_by_line_and_column() {
    let bytes = b"[job]\nid = \"caf\xc3\xa9-\xff\"\n";
    let e = Config::parse_bytes(bytes, Path::new(FILE)).unwrap_err();
    assert_eq!((e.line, e.column), (Some(2), Some(12)), "{e}");
    assert_eq!(e.key.as_deref(), Some("job.id"), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "config error at {FILE}:2:12: the file is not UTF-8 text: an invalid UTF-8 sequence \
             (bytes ff); save it as UTF-8"
        )
    );
    let e = Config::parse_bytes(b"[job]\n\xe2\x80", Path::new(FILE)).unwrap_err();
    assert_eq!((e.line, e.column), (Some(2), Some(1)), "{e}");
    assert!(
        e.message.contains("incomplete UTF-8 sequence at the end"),
        "{e}"
    );
}

#[test]
fn control_and_bidi_characters_are_escaped_and_multi_line_values_stay_on_one_line() {
    // U+202E as written, and a control character through a TOML escape.
    let e = parse("[job]\nid = \"a\u{202e}b\\u0001\"\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "config error at {FILE}:2: job.id = \"a\\u{{202e}}b\\u0001\" is not a valid job id; \
             use 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'"
        )
    );
    let e = parse("[checkpointing]\ninterval = \"\"\"1\nx\"\"\"\n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    assert!(
        e.to_string()
            .contains("checkpointing.interval = \"\"\"1\\nx\"\"\" is not a duration"),
        "{e}"
    );
    // The parser's own two-line messages are joined.
    let e = parse("[job]\nid = \"a\nb\"\n").unwrap_err();
    assert!(!e.to_string().contains('\n'), "{e:?}");
    assert_eq!(e.line, Some(2), "{e}");
    // A key with a control character in it, echoed by the unknown-key message.
    let e = parse("[job]\n\"k\u{1b}[2J\" = 1\n").unwrap_err();
    assert!(e.to_string().contains("k\\u{1b}[2J"), "{e}");
    assert!(!e.to_string().chars().any(|c| c.is_control()), "{e:?}");
}

#[test]
fn terminal_safe_is_idempotent_and_leaves_plain_text_alone() {
    for text in ["plain text, with \"quotes\" and \\ backslashes", "é ü 日本"] {
        assert!(matches!(terminal_safe(text), std::borrow::Cow::Borrowed(_)));
    }
    let once = terminal_safe("a\u{202e}\n\t\u{7f}\u{85}\u{2028}\u{feff}z").into_owned();
    assert_eq!(once, "a\\u{202e}\\n\\t\\u{7f}\\u{85}\\u{2028}\\u{feff}z");
    assert_eq!(terminal_safe(&once), once);
}

#[test]
fn storage_errors_have_lines_in_inline_tables_too() {
    let e = parse("storage = { plugin = \"a\", path = \"b.so\" }\n").unwrap_err();
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(1), Some("storage.path")),
        "{e}"
    );
    let e = parse("# pin\nstorage = { sha256 = \"x\" }\n").unwrap_err();
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(2), Some("storage.sha256")),
        "{e}"
    );
    let e = parse("[storage]\npath = \"\"\n").unwrap_err();
    assert!(e.message.contains("is empty"), "{e}");
}

// ---- metrics ----

#[test]
fn metrics_are_off_unless_listen_is_set() {
    assert_eq!(ok("").metrics, MetricsConfig::default());
    let c = ok("[metrics]\nlisten = \"127.0.0.1:9249\"\n");
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9249".parse().unwrap()));
    assert!(!c.metrics.allow_remote);
    let c = ok("[metrics]\nlisten = \"[::1]:0\"\n");
    assert_eq!(c.metrics.listen, Some("[::1]:0".parse().unwrap()));
    let c = ok("[metrics]\nlisten = \"0.0.0.0:9249\"\nallow-remote = true\n");
    assert!(c.metrics.allow_remote);
}

#[test]
fn a_metrics_address_is_checked_and_remote_needs_allow_remote() {
    refused(
        "[metrics]\nlisten = \"localhost\"\n",
        2,
        "metrics.listen",
        "metrics.listen = \"localhost\" is not an IP address and port; write one such as \
         \"127.0.0.1:9249\" or \"[::1]:9249\" (port 0: any free port)",
    );
    refused(
        "[metrics]\n\nlisten = \"0.0.0.0:9249\"\n",
        3,
        "metrics.listen",
        "metrics.listen = \"0.0.0.0:9249\" is not a loopback address; the metrics endpoint has \
         no authentication, so serving it to other machines needs metrics.allow-remote = true",
    );
    refused(
        "[metrics]\nallow-remote = true\n",
        2,
        "metrics.allow-remote",
        "metrics.allow-remote is set but metrics.listen is not; set listen to serve metrics, or \
         remove allow-remote",
    );
    refused(
        "[metrics]\nlisten = \"127.0.0.1:1\"\nport = 3\n",
        3,
        "metrics.port",
        "metrics.port is not a known key; expected `listen` or `allow-remote`",
    );
}

// ---- Flink's keys, spellings and units ----

/// A file written the Flink way: Flink's flat keys (TOML reads the dots as tables), enum
/// spellings, a bare-millisecond duration and a `file://` directory.
pub(crate) const FLINK_STYLE: &str = "\
execution.checkpointing.interval = 10000
execution.checkpointing.mode = \"EXACTLY_ONCE\"
execution.checkpointing.timeout = \"10 min\"
execution.checkpointing.min-pause = \"500ms\"
execution.checkpointing.max-concurrent-checkpoints = 1
execution.checkpointing.tolerable-failed-checkpoints = 3
execution.checkpointing.externalized-checkpoint-retention = \"RETAIN_ON_CANCELLATION\"
state.checkpoints.dir = \"file:///data/ckpt\"
state.checkpoints.num-retained = 2
state.savepoints.dir = \"file:///data/savepoints\"
";

#[test]
fn a_flink_style_file_means_what_it_means_in_flink() {
    let c = ok(FLINK_STYLE);
    let k = &c.checkpointing;
    assert_eq!(k.interval, Some(Duration::from_secs(10)));
    assert_eq!(k.mode, CheckpointingMode::ExactlyOnce);
    assert_eq!(k.timeout, Duration::from_secs(600));
    assert_eq!(k.min_pause, MS(500));
    assert_eq!(k.max_concurrent, 1);
    assert_eq!(k.tolerable_failures, Some(3));
    assert_eq!(
        k.externalized_retention,
        ExternalizedRetention::RetainOnCancellation
    );
    assert_eq!(k.num_retained, 2);
    assert_eq!(c.storage.plugin, PluginRef::Name("filesystem".into()));
    assert_eq!(
        c.storage.options_document().trim(),
        "dir = \"file:///data/ckpt\""
    );
    assert_eq!(
        c.savepoints.dir.as_deref(),
        Some(Path::new("/data/savepoints"))
    );
}

#[test]
fn flink_keys_under_a_table_header_and_flink_names_in_checkpointing() {
    let c = ok(
        "[execution.checkpointing]\ninterval = \"1s\"\nmode = \"AT_LEAST_ONCE\"\n\
                externalized-checkpoint-retention = \"NO_EXTERNALIZED_CHECKPOINTS\"\n",
    );
    assert_eq!(c.checkpointing.interval, Some(Duration::from_secs(1)));
    assert_eq!(c.checkpointing.mode, CheckpointingMode::AtLeastOnce);
    assert!(!c.checkpointing.is_externalized());
    let c = ok(
        "[checkpointing]\nmax-concurrent-checkpoints = 3\ntolerable-failed-checkpoints = 2\n\
                externalized-checkpoint-retention = \"DELETE_ON_CANCELLATION\"\n",
    );
    assert_eq!(c.checkpointing.max_concurrent, 3);
    assert_eq!(c.checkpointing.tolerable_failures, Some(2));
    assert_eq!(
        c.checkpointing.externalized_retention,
        ExternalizedRetention::DeleteOnCancellation
    );
    // Flink 1.20's unaligned.enabled would make `unaligned` a table in TOML: named.
    refused(
        "execution.checkpointing.unaligned.enabled = true\n",
        1,
        "execution.checkpointing.unaligned.enabled",
        "execution.checkpointing.unaligned.enabled is Flink's key, and cairn calls this \
         execution.checkpointing.unaligned = true (Flink 1.x's name), or checkpointing.unaligned",
    );
    // Flink 1.x's boolean.
    assert!(ok("execution.checkpointing.unaligned = true\n")
        .checkpointing
        .is_unaligned());
    // Errors name Flink's key as written, at its line.
    refused(
        "\nexecution.checkpointing.interval = \"5ms\"\n",
        2,
        "execution.checkpointing.interval",
        "execution.checkpointing.interval = \"5ms\" is below the minimum of 10ms",
    );
}

#[test]
fn a_setting_under_both_names_is_refused_naming_both() {
    refused(
        "[checkpointing]\nmax-concurrent = 2\n\n[execution.checkpointing]\nmax-concurrent-checkpoints = 3\n",
        5,
        "execution.checkpointing.max-concurrent-checkpoints",
        "checkpointing.max-concurrent and execution.checkpointing.max-concurrent-checkpoints are \
         both set; they are one setting under cairn's and Flink's names, so keep only one",
    );
    refused(
        "[savepoints]\ndir = \"/a\"\n[state.savepoints]\ndir = \"/b\"\n",
        4,
        "state.savepoints.dir",
        "savepoints.dir and state.savepoints.dir are both set; they are one setting under \
         cairn's and Flink's names, so keep only one",
    );
    refused(
        "state.checkpoints.dir = \"/a\"\n[storage]\nplugin = \"filesystem\"\n[storage.options]\ndir = \"/b\"\n",
        1,
        "state.checkpoints.dir",
        "state.checkpoints.dir and storage.options.dir are both set; they are one setting under \
         Flink's and cairn's names, so keep only one",
    );
}

#[test]
fn flinks_checkpoint_dir_goes_to_the_plugin_option_that_holds_it() {
    let c = ok("state.checkpoints.dir = \"s3://bucket/ckpt\"\n");
    assert_eq!(c.storage.plugin, PluginRef::Name("object-store".into()));
    assert_eq!(
        c.storage.options_document().trim(),
        "url = \"s3://bucket/ckpt\""
    );
    let c = ok("execution.checkpointing.dir = \"/data/ckpt\"\n[storage]\nplugin = \"memory\"\n");
    assert_eq!(
        c.storage.options_document().trim(),
        "checkpoint-dir = \"/data/ckpt\""
    );
    refused(
        "state.checkpoints.dir = \"/a\"\n[storage]\npath = \"/x/libmine.so\"\n",
        1,
        "state.checkpoints.dir",
        "state.checkpoints.dir names the checkpoint directory, but cairn does not know which \
         option of this [storage] plugin holds it; set that option in [storage.options] instead",
    );
}

#[test]
fn flink_keys_cairn_lacks_say_what_cairn_calls_them_or_why_there_is_none() {
    refused(
        "state.backend.incremental = true\n",
        1,
        "state.backend.incremental",
        "state.backend.incremental is Flink's key, and cairn has no such setting, because every \
         checkpoint is a full one for now (incremental checkpoints are not built yet)",
    );
    refused(
        "[execution.checkpointing]\ninterval = \"1s\"\nstorage = \"filesystem\"\n",
        3,
        "execution.checkpointing.storage",
        "execution.checkpointing.storage is Flink's key, and cairn calls this storage.plugin \
         (\"filesystem\", \"memory\" or \"object-store\")",
    );
    refused(
        "restart-strategy.fixed-delay.attempts = 3\n",
        1,
        "restart-strategy.fixed-delay.attempts",
        "restart-strategy.fixed-delay.attempts is Flink's key, and cairn calls this \
         restart.attempts",
    );
}

#[test]
fn unknown_keys_get_did_you_mean() {
    let e = parse("execution.checkpointing.intervall = \"1s\"\n").unwrap_err();
    assert!(
        e.message.starts_with(
            "execution.checkpointing.intervall is not a known key; did you mean `interval`?"
        ),
        "{e}"
    );
    let e = parse("[checkpointing]\nmax-concurent = 2\n").unwrap_err();
    assert!(e.message.contains("did you mean `max-concurrent`?"), "{e}");
    // Nothing close: no guess.
    let e = parse("[checkpointing]\nzzzzzz = 2\n").unwrap_err();
    assert!(!e.message.contains("did you mean"), "{e}");
}

#[test]
fn sizes_follow_flink_kb_is_1024_and_kib_stays() {
    let c = ok("[checkpointing]\nunaligned = true\nmax-in-flight-data = \"1kb\"\n");
    assert_eq!(c.checkpointing.max_in_flight_data(), 1024);
    let c = ok("[checkpointing]\nunaligned = true\nmax-in-flight-data = \"2MB\"\n");
    assert_eq!(c.checkpointing.max_in_flight_data(), 2 << 20);
    let c = ok("[checkpointing]\nunaligned = true\nmax-in-flight-data = \"3KiB\"\n");
    assert_eq!(c.checkpointing.max_in_flight_data(), 3 << 10);
}

#[test]
fn checkpointing_off_is_a_warning_with_or_without_a_file() {
    let none = warnings(&Config::default());
    assert_eq!(none.len(), 1, "{none:?}");
    assert!(
        none[0].starts_with("checkpointing is off: there is no config file"),
        "{none:?}"
    );
    let file = warnings(&ok("[job]\nid = \"j\"\n"));
    assert!(
        file[0].starts_with(&format!(
            "checkpointing is off: {FILE} sets no checkpointing.interval"
        )),
        "{file:?}"
    );
    assert!(warnings(&ok("execution.checkpointing.interval = 1000\n")).is_empty());
}
