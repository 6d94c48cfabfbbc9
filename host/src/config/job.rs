//! `[job]` and `[restart]`: which built-in job runs, how big and how fast, and how it recovers
//! from a failure.
//!
//! Settings that only one kind of job uses are refused for the other (`keys` with
//! `kind = "word-count"`, `input` with `kind = "keyed-counter"`), so nothing is accepted and
//! then ignored.
//!
//! The job `id` is the job's stable identity: storage keeps checkpoints under it, so a restart
//! and `cairn run --from latest` find a job's checkpoints by it. That is why it is restricted to
//! characters that are safe in a path and in an object key.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{doc::format_size, doc::Doc, doc::Field, ConfigError};

/// The longest job id (the one job-id rule is `cairn_plugin_api::JobId`'s).
pub const MAX_JOB_ID_LEN: usize = cairn_plugin_api::JobId::MAX_LEN;

/// The most parallel tasks a job may have.
pub const MAX_PARALLELISM: u32 = 64;

/// The smallest state per key: the key's counter.
pub const MIN_STATE_BYTES_PER_KEY: u64 = 8;

/// The largest state per key (one state entry's size must fit the state format's 32-bit field).
pub const MAX_STATE_BYTES_PER_KEY: u64 = 1 << 20;

/// `kind`: which built-in job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    /// A keyed counter over a deterministic source.
    #[default]
    KeyedCounter,
    /// A word count over the files of a folder into committed part files, exactly once.
    WordCount,
}

impl JobKind {
    /// The name the config file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::KeyedCounter => "keyed-counter",
            JobKind::WordCount => "word-count",
        }
    }
}

/// `[job]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobConfig {
    /// `id`: the job's stable identity; 1 to 64 characters from `A-Z a-z 0-9 _ -`.
    pub id: String,
    /// `kind`: the built-in job.
    pub kind: JobKind,
    /// `keys` (keyed counter): distinct keys the source produces. Default 1000; at least 1.
    pub keys: u64,
    /// `state-bytes-per-key` (keyed counter): bytes of state kept per key. Default 64; at
    /// least 8.
    pub state_bytes_per_key: u64,
    /// `rate`: records per second over the whole job; `None` is unlimited. Default 100 000 for
    /// the keyed counter, unlimited for the word count.
    pub rate: Option<u64>,
    /// `operator-rate`: records per second the keyed operator processes, over the whole job;
    /// `None` (the default) is as fast as it can. Below the sources' rate it is a slow
    /// operator: the exchange fills and backpressures the sources (what unaligned checkpoints
    /// are for).
    pub operator_rate: Option<u64>,
    /// `parallelism`: parallel tasks per operator. Default 2; 1 to 64.
    pub parallelism: u32,
    /// `fail-after-records`: inject one task failure after this many records were processed in
    /// the current attempt, to exercise failover. Default `None`; at least 1.
    pub fail_after_records: Option<u64>,
    /// `fail-after-checkpoints`: inject one task failure once this many checkpoints completed
    /// in the first attempt, to exercise failover after a checkpoint. Default `None`; at least 1.
    pub fail_after_checkpoints: Option<u64>,
    /// `input` (word count): the folder whose files are read, relative to the config file.
    pub input: Option<PathBuf>,
    /// `output` (word count): the folder the part files go to, relative to the config file.
    pub output: Option<PathBuf>,
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            id: "keyed-counter".to_string(),
            kind: JobKind::KeyedCounter,
            keys: 1000,
            state_bytes_per_key: 64,
            rate: Some(100_000),
            operator_rate: None,
            parallelism: 2,
            fail_after_records: None,
            fail_after_checkpoints: None,
            input: None,
            output: None,
        }
    }
}

/// `[restart]`, validated: Flink's fixed-delay restart strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartConfig {
    /// `attempts`: restarts after a failure before the job fails for good. Default 3.
    pub attempts: u32,
    /// `delay`: the wait before each restart. Default 1 s.
    pub delay: Duration,
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            attempts: 3,
            delay: Duration::from_secs(1),
        }
    }
}

/// `[job]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawJob {
    id: Option<Field>,
    kind: Option<Field>,
    keys: Option<Field>,
    state_bytes_per_key: Option<Field>,
    rate: Option<Field>,
    operator_rate: Option<Field>,
    parallelism: Option<Field>,
    fail_after_records: Option<Field>,
    fail_after_checkpoints: Option<Field>,
    input: Option<Field>,
    output: Option<Field>,
}

/// Whether `id` may name a job: `cairn_plugin_api::JobId`'s rule, which every bundled backend
/// applies too (1 to 64 characters from `A-Z a-z 0-9 _ -`).
pub fn is_valid_job_id(id: &str) -> bool {
    cairn_plugin_api::JobId::parse(id).is_ok()
}

impl RawJob {
    pub(super) fn validate(self, doc: &Doc<'_>) -> Result<JobConfig, ConfigError> {
        const T: &str = "job";
        let d = JobConfig::default();
        let id = doc
            .read(T, "id", self.id.as_ref(), |v| {
                let id = v.string("a job id")?;
                if is_valid_job_id(id) {
                    Ok(id.to_string())
                } else {
                    Err(v.fail(format!(
                        "is not a valid job id; {}",
                        cairn_plugin_api::JobId::RULE
                    )))
                }
            })?
            .unwrap_or(d.id);
        let kind = doc
            .read(T, "kind", self.kind.as_ref(), |v| {
                v.choice(
                    "a job kind",
                    &[
                        ("keyed-counter", JobKind::KeyedCounter),
                        ("word-count", JobKind::WordCount),
                    ],
                    &[],
                )
            })?
            .unwrap_or(d.kind);
        let keys = doc
            .read(T, "keys", self.keys.as_ref(), |v| v.integer(1..=u64::MAX))?
            .unwrap_or(d.keys);
        let state_bytes_per_key = doc
            .read(
                T,
                "state-bytes-per-key",
                self.state_bytes_per_key.as_ref(),
                |v| {
                    let size = v.size(MIN_STATE_BYTES_PER_KEY)?;
                    if size > MAX_STATE_BYTES_PER_KEY {
                        return Err(v.fail(format!(
                            "is above the maximum of {}",
                            format_size(MAX_STATE_BYTES_PER_KEY)
                        )));
                    }
                    Ok(size)
                },
            )?
            .unwrap_or(d.state_bytes_per_key);
        let read_rate = |v: &super::doc::Value<'_>| match v.string("") {
            Ok("unlimited") => Ok(None),
            Ok(_) => Err(v.fail(
                "is not a rate; expected records per second as an integer, or \"unlimited\"",
            )),
            Err(_) => match v.integer(0..=u64::MAX) {
                Ok(0) => Ok(None),
                Ok(n) => Ok(Some(n)),
                Err(_) => Err(v.fail(
                    "is not a rate; expected records per second as an integer of at least \
                     0, or \"unlimited\" (0 also means no limit)",
                )),
            },
        };
        let rate = doc
            .read(T, "rate", self.rate.as_ref(), read_rate)?
            .unwrap_or(match kind {
                JobKind::KeyedCounter => d.rate,
                JobKind::WordCount => None,
            });
        let operator_rate = doc
            .read(T, "operator-rate", self.operator_rate.as_ref(), read_rate)?
            .unwrap_or(d.operator_rate);
        let parallelism = doc
            .read(T, "parallelism", self.parallelism.as_ref(), |v| {
                v.integer_u32(1..=MAX_PARALLELISM)
            })?
            .unwrap_or(d.parallelism);
        let fail_after_records = doc.read(
            T,
            "fail-after-records",
            self.fail_after_records.as_ref(),
            |v| v.integer(1..=u64::MAX),
        )?;
        let fail_after_checkpoints = doc.read(
            T,
            "fail-after-checkpoints",
            self.fail_after_checkpoints.as_ref(),
            |v| v.integer(1..=u64::MAX),
        )?;
        let folder = |key: &str, field: Option<&Field>| {
            doc.read(T, key, field, |v| {
                let path = v.string("a folder")?;
                if path.is_empty() {
                    return Err(v.fail("is empty; name a folder"));
                }
                Ok(doc.resolve(PathBuf::from(path)))
            })
        };
        let input = folder("input", self.input.as_ref())?;
        let output = folder("output", self.output.as_ref())?;
        // Each kind takes only its own settings.
        let only = |key: &str, given: Option<&Field>, kind_name: &str| -> Result<(), ConfigError> {
            match given {
                Some(field) => Err(doc.error_at(
                    &format!("{T}.{key}"),
                    field.span().start,
                    format!(
                        "{T}.{key} does not apply to job.kind = \"{}\"; it is a setting of \"{kind_name}\"",
                        kind.as_str()
                    ),
                )),
                None => Ok(()),
            }
        };
        match kind {
            JobKind::KeyedCounter => {
                only("input", self.input.as_ref(), "word-count")?;
                only("output", self.output.as_ref(), "word-count")?;
            }
            JobKind::WordCount => {
                only("keys", self.keys.as_ref(), "keyed-counter")?;
                only(
                    "state-bytes-per-key",
                    self.state_bytes_per_key.as_ref(),
                    "keyed-counter",
                )?;
                // `kind` was written (word count is not the default), so its line is known.
                let kind_at = self.kind.as_ref().map_or(0, |f| f.span().start);
                for (key, given) in [("input", &input), ("output", &output)] {
                    if given.is_none() {
                        return Err(doc.error_at(
                            &format!("{T}.kind"),
                            kind_at,
                            format!(
                                "job.kind = \"word-count\" needs {T}.{key} (a folder of text \
                                 files to read, and a folder for the part files)"
                            ),
                        ));
                    }
                }
                if input == output {
                    let at = self.output.as_ref().map_or(kind_at, |f| f.span().start);
                    return Err(doc.error_at(
                        &format!("{T}.output"),
                        at,
                        "job.output is the same folder as job.input; the part files would be read \
                         as input"
                            .to_string(),
                    ));
                }
            }
        }
        Ok(JobConfig {
            id,
            kind,
            keys,
            state_bytes_per_key,
            rate,
            operator_rate,
            parallelism,
            fail_after_records,
            fail_after_checkpoints,
            input,
            output,
        })
    }
}

/// `[restart]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawRestart {
    attempts: Option<Field>,
    delay: Option<Field>,
}

impl RawRestart {
    pub(super) fn validate(self, doc: &Doc<'_>) -> Result<RestartConfig, ConfigError> {
        const T: &str = "restart";
        let d = RestartConfig::default();
        Ok(RestartConfig {
            attempts: doc
                .read(T, "attempts", self.attempts.as_ref(), |v| {
                    v.integer_u32(0..=u32::MAX)
                })?
                .unwrap_or(d.attempts),
            delay: doc
                .read(T, "delay", self.delay.as_ref(), |v| {
                    v.duration(Duration::ZERO)
                })?
                .unwrap_or(d.delay),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/cairn/cairn.toml"))
    }

    #[test]
    fn word_count_takes_its_folders_relative_to_the_file() {
        let c =
            parse("[job]\nkind = \"word-count\"\ninput = \"in\"\noutput = \"/tmp/out\"\n").unwrap();
        assert_eq!(c.job.kind, JobKind::WordCount);
        assert_eq!(c.job.input, Some(PathBuf::from("/etc/cairn/in")));
        assert_eq!(c.job.output, Some(PathBuf::from("/tmp/out")));
        assert_eq!(c.job.rate, None, "the word count is unthrottled by default");
        let c = parse("[job]\nkind = \"word-count\"\ninput = \"in\"\noutput = \"out\"\nrate = 5\n")
            .unwrap();
        assert_eq!(c.job.rate, Some(5));
    }

    #[test]
    fn each_kind_refuses_the_other_kinds_settings() {
        let e = parse("[job]\ninput = \"in\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("job.input"));
        assert!(
            e.message
                .contains("does not apply to job.kind = \"keyed-counter\""),
            "{e}"
        );
        let e = parse("[job]\nkind = \"word-count\"\ninput = \"a\"\noutput = \"b\"\nkeys = 3\n")
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("job.keys"));
        assert_eq!(e.line, Some(5));
        let e = parse("[job]\nkind = \"word-count\"\ninput = \"a\"\n").unwrap_err();
        assert!(e.message.contains("needs job.output"), "{e}");
        let e = parse("[job]\nkind = \"word-count\"\ninput = \"a\"\noutput = \"a\"\n").unwrap_err();
        assert!(e.message.contains("same folder"), "{e}");
        let e = parse("[job]\nfail-after-checkpoints = 0\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("job.fail-after-checkpoints"));
    }
}
