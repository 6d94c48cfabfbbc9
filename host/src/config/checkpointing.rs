//! `[checkpointing]`: every setting of Flink's `CheckpointConfig`, with Flink's defaults and
//! Flink's validation.
//!
//! The getters (`is_enabled`, `is_externalized`, `is_unaligned`, ...) are the ones Flink's
//! `CheckpointConfig` has; `cairn config check --json` reports them about a file, and the
//! coordinator and the runtime read them rather than the raw fields where a rule combines
//! several keys (the base interval, unlimited tolerable failures).
//!
//! Two keys exist only for Flink compatibility: `alignment-timeout` is the older name of
//! `aligned-checkpoint-timeout`, and `fail-on-checkpointing-errors` is Flink's deprecated switch
//! for `tolerable-failures`. Setting either together with the key it stands for is an error that
//! names both, rather than a silent precedence rule.

use std::{fmt, time::Duration};

use serde::Deserialize;

use super::{
    doc::{format_duration, Doc, Field},
    flink::{one_of, read, Found, RawFlinkCheckpointing},
    ConfigError,
};

/// The smallest interval and timeout Flink accepts (its `MINIMAL_CHECKPOINT_TIME`).
pub const MIN_CHECKPOINT_TIME: Duration = Duration::from_millis(10);

/// The default of `max-in-flight-data`: more than a fully backpressured exchange holds up to
/// parallelism 45 (parallelism² × 128 KiB).
pub const DEFAULT_MAX_IN_FLIGHT_DATA: u64 = 256 << 20;

/// What `config check` and `run` say about `force-unaligned = true`.
pub const FORCE_UNALIGNED_NOTE: &str = "checkpointing.force-unaligned = true changes nothing in \
    cairn: its runtime refuses unaligned checkpoints nowhere (Flink refuses them for iterative \
    jobs and custom partitioners, which cairn's job API cannot express), and savepoints stay \
    aligned whatever it says, as in Flink";

/// `mode`: what a checkpoint guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckpointingMode {
    /// Barriers are aligned across inputs: every record is in the state exactly once.
    #[default]
    ExactlyOnce,
    /// Barriers are not aligned: after a restore, some records may be counted twice.
    AtLeastOnce,
}

impl CheckpointingMode {
    /// The name the config file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointingMode::ExactlyOnce => "exactly-once",
            CheckpointingMode::AtLeastOnce => "at-least-once",
        }
    }
}

impl fmt::Display for CheckpointingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `externalized-retention`: what happens to completed checkpoints when the job is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExternalizedRetention {
    /// Checkpoints are not externalized: they are discarded when the job ends.
    #[default]
    NoExternalized,
    /// Completed checkpoints are kept when the job is cancelled.
    RetainOnCancellation,
    /// Completed checkpoints are deleted when the job is cancelled (kept if it fails).
    DeleteOnCancellation,
}

impl ExternalizedRetention {
    /// The name the config file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ExternalizedRetention::NoExternalized => "no-externalized",
            ExternalizedRetention::RetainOnCancellation => "retain-on-cancellation",
            ExternalizedRetention::DeleteOnCancellation => "delete-on-cancellation",
        }
    }
}

impl fmt::Display for ExternalizedRetention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[checkpointing]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointingConfig {
    /// `interval`: how often a checkpoint is triggered. `None` (the default): checkpointing is
    /// off. At least 10 ms.
    pub interval: Option<Duration>,
    /// `mode`: exactly-once (the default) or at-least-once.
    pub mode: CheckpointingMode,
    /// `timeout`: a pending checkpoint older than this expires. Default 10 min; at least 10 ms.
    pub timeout: Duration,
    /// `min-pause`: the least time between the end of one checkpoint and the start of the next.
    /// Default 0.
    pub min_pause: Duration,
    /// `max-concurrent`: how many checkpoints may be pending at once. Default 1; at least 1.
    pub max_concurrent: u32,
    /// `tolerable-failures`: consecutive checkpoint failures tolerated before the job fails
    /// over. Default `Some(0)`; `None` (unlimited) only through
    /// `fail-on-checkpointing-errors = false`.
    pub tolerable_failures: Option<u32>,
    /// `externalized-retention`: what cancellation does to completed checkpoints.
    pub externalized_retention: ExternalizedRetention,
    /// `unaligned`: let barriers overtake buffered records, which become the checkpoint's
    /// channel state. Default false; only with exactly-once and `max-concurrent = 1`.
    pub unaligned: bool,
    /// `aligned-checkpoint-timeout` (older name `alignment-timeout`): with `unaligned`, start
    /// aligned and switch to unaligned once the checkpoint's age since its trigger passes this.
    /// Default 0 (unaligned from the start); only with `unaligned = true`.
    pub aligned_checkpoint_timeout: Duration,
    /// `force-unaligned`: take unaligned checkpoints even where they would normally be refused.
    /// Default false; only with `unaligned = true`. cairn's runtime refuses them nowhere, so
    /// it changes nothing there (the README says why).
    pub force_unaligned: bool,
    /// `max-in-flight-data`: the most channel state one unaligned checkpoint may hold, over
    /// all its tasks; past it the checkpoint fails. Default 256 MiB; only with
    /// `unaligned = true`.
    pub max_in_flight_data: u64,
    /// `num-retained`: completed checkpoints kept; older ones are subsumed. Default 1; at
    /// least 1.
    pub num_retained: u32,
}

impl Default for CheckpointingConfig {
    fn default() -> Self {
        Self {
            interval: None,
            mode: CheckpointingMode::ExactlyOnce,
            timeout: Duration::from_secs(10 * 60),
            min_pause: Duration::ZERO,
            max_concurrent: 1,
            tolerable_failures: Some(0),
            externalized_retention: ExternalizedRetention::NoExternalized,
            unaligned: false,
            aligned_checkpoint_timeout: Duration::ZERO,
            force_unaligned: false,
            max_in_flight_data: DEFAULT_MAX_IN_FLIGHT_DATA,
            num_retained: 1,
        }
    }
}

impl CheckpointingConfig {
    /// Whether periodic checkpoints are taken (`interval` is set).
    pub fn is_enabled(&self) -> bool {
        self.interval.is_some()
    }

    /// Whether completed checkpoints outlive the job (`externalized-retention` is not
    /// `no-externalized`).
    pub fn is_externalized(&self) -> bool {
        self.externalized_retention != ExternalizedRetention::NoExternalized
    }

    /// The time between triggers: `max(interval, min-pause)`; `None` when checkpointing is off.
    pub fn base_interval(&self) -> Option<Duration> {
        self.interval.map(|i| i.max(self.min_pause))
    }

    /// Whether unaligned checkpoints are enabled.
    pub fn is_unaligned(&self) -> bool {
        self.unaligned
    }

    /// Whether unaligned checkpoints are forced where they would normally be refused.
    pub fn is_force_unaligned(&self) -> bool {
        self.force_unaligned
    }

    /// The most channel state one unaligned checkpoint may hold, in bytes.
    pub fn max_in_flight_data(&self) -> u64 {
        self.max_in_flight_data
    }

    /// Whether the mode is exactly-once.
    pub fn is_exactly_once(&self) -> bool {
        self.mode == CheckpointingMode::ExactlyOnce
    }

    /// Consecutive failures tolerated before failover; `None` means unlimited.
    pub fn tolerable_failures(&self) -> Option<u32> {
        self.tolerable_failures
    }
}

/// `[checkpointing]` as written. Three keys have a second name, Flink's, accepted here too:
/// `max-concurrent-checkpoints`, `tolerable-failed-checkpoints` and
/// `externalized-checkpoint-retention`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawCheckpointing {
    interval: Option<Field>,
    mode: Option<Field>,
    timeout: Option<Field>,
    min_pause: Option<Field>,
    max_concurrent: Option<Field>,
    max_concurrent_checkpoints: Option<Field>,
    tolerable_failures: Option<Field>,
    tolerable_failed_checkpoints: Option<Field>,
    fail_on_checkpointing_errors: Option<Field>,
    externalized_retention: Option<Field>,
    externalized_checkpoint_retention: Option<Field>,
    unaligned: Option<Field>,
    aligned_checkpoint_timeout: Option<Field>,
    alignment_timeout: Option<Field>,
    force_unaligned: Option<Field>,
    max_in_flight_data: Option<Field>,
    num_retained: Option<Field>,
}

const T: &str = "checkpointing";

impl RawCheckpointing {
    /// Check every key, under cairn's name or Flink's (`flink`: `execution.checkpointing`;
    /// `state_num_retained`: `state.checkpoints.num-retained`), and the rules between them.
    pub(super) fn validate(
        self,
        flink: &RawFlinkCheckpointing,
        state_num_retained: Option<&Field>,
        doc: &Doc<'_>,
    ) -> Result<CheckpointingConfig, ConfigError> {
        let d = CheckpointingConfig::default();
        let duration = |found: Found<'_>, min: Duration| read(doc, found, |v| v.duration(min));
        let integer =
            |found: Found<'_>, min: u32| read(doc, found, |v| v.integer_u32(min..=u32::MAX));
        let boolean = |found: Found<'_>| read(doc, found, |v| v.boolean());

        let interval = duration(
            one_of(
                doc,
                &[
                    ("checkpointing.interval", self.interval.as_ref()),
                    ("execution.checkpointing.interval", flink.interval.as_ref()),
                ],
            )?,
            MIN_CHECKPOINT_TIME,
        )?;
        let mode = read(
            doc,
            one_of(
                doc,
                &[
                    ("checkpointing.mode", self.mode.as_ref()),
                    ("execution.checkpointing.mode", flink.mode.as_ref()),
                ],
            )?,
            |v| {
                v.choice(
                    "a checkpointing mode",
                    &[
                        ("exactly-once", CheckpointingMode::ExactlyOnce),
                        ("at-least-once", CheckpointingMode::AtLeastOnce),
                    ],
                    &[],
                )
            },
        )?
        .unwrap_or(d.mode);
        let timeout = duration(
            one_of(
                doc,
                &[
                    ("checkpointing.timeout", self.timeout.as_ref()),
                    ("execution.checkpointing.timeout", flink.timeout.as_ref()),
                ],
            )?,
            MIN_CHECKPOINT_TIME,
        )?
        .unwrap_or(d.timeout);
        let min_pause = duration(
            one_of(
                doc,
                &[
                    ("checkpointing.min-pause", self.min_pause.as_ref()),
                    (
                        "execution.checkpointing.min-pause",
                        flink.min_pause.as_ref(),
                    ),
                ],
            )?,
            Duration::ZERO,
        )?
        .unwrap_or(d.min_pause);
        let max_concurrent = integer(
            one_of(
                doc,
                &[
                    ("checkpointing.max-concurrent", self.max_concurrent.as_ref()),
                    (
                        "checkpointing.max-concurrent-checkpoints",
                        self.max_concurrent_checkpoints.as_ref(),
                    ),
                    (
                        "execution.checkpointing.max-concurrent-checkpoints",
                        flink.max_concurrent_checkpoints.as_ref(),
                    ),
                ],
            )?,
            1,
        )?
        .unwrap_or(d.max_concurrent);
        let tolerable_at = one_of(
            doc,
            &[
                (
                    "checkpointing.tolerable-failures",
                    self.tolerable_failures.as_ref(),
                ),
                (
                    "checkpointing.tolerable-failed-checkpoints",
                    self.tolerable_failed_checkpoints.as_ref(),
                ),
                (
                    "execution.checkpointing.tolerable-failed-checkpoints",
                    flink.tolerable_failed_checkpoints.as_ref(),
                ),
            ],
        )?;
        let tolerable = integer(tolerable_at, 0)?;
        let fail_on_errors = doc.read(
            T,
            "fail-on-checkpointing-errors",
            self.fail_on_checkpointing_errors.as_ref(),
            |v| v.boolean(),
        )?;
        let tolerable_failures = match (tolerable, fail_on_errors) {
            (Some(n), None) => Some(n),
            (None, Some(true)) => Some(0),
            (None, Some(false)) => None,
            (None, None) => d.tolerable_failures,
            (Some(_), Some(_)) => {
                let at = self
                    .fail_on_checkpointing_errors
                    .as_ref()
                    .expect("it is set");
                let other = tolerable_at.map_or("checkpointing.tolerable-failures", |(k, _)| k);
                return Err(doc.error_at(
                    "checkpointing.fail-on-checkpointing-errors",
                    at.span().start,
                    format!(
                        "checkpointing.fail-on-checkpointing-errors and {other} are both set; \
                         fail-on-checkpointing-errors is Flink's deprecated switch (true means \
                         tolerable-failures = 0, false means no limit), so set only one of them"
                    ),
                ));
            }
        };
        let externalized_retention = read(
            doc,
            one_of(
                doc,
                &[
                    (
                        "checkpointing.externalized-retention",
                        self.externalized_retention.as_ref(),
                    ),
                    (
                        "checkpointing.externalized-checkpoint-retention",
                        self.externalized_checkpoint_retention.as_ref(),
                    ),
                    (
                        "execution.checkpointing.externalized-checkpoint-retention",
                        flink.externalized_checkpoint_retention.as_ref(),
                    ),
                ],
            )?,
            |v| {
                v.choice(
                    "a retention policy",
                    &[
                        ("no-externalized", ExternalizedRetention::NoExternalized),
                        (
                            "retain-on-cancellation",
                            ExternalizedRetention::RetainOnCancellation,
                        ),
                        (
                            "delete-on-cancellation",
                            ExternalizedRetention::DeleteOnCancellation,
                        ),
                    ],
                    // Flink's NO_EXTERNALIZED_CHECKPOINTS.
                    &[(
                        "no-externalized-checkpoints",
                        ExternalizedRetention::NoExternalized,
                    )],
                )
            },
        )?
        .unwrap_or(d.externalized_retention);
        let unaligned_at = one_of(
            doc,
            &[
                ("checkpointing.unaligned", self.unaligned.as_ref()),
                (
                    "execution.checkpointing.unaligned",
                    flink.unaligned.as_ref(),
                ),
            ],
        )?;
        let unaligned = boolean(unaligned_at)?.unwrap_or(d.unaligned);
        let aligned_at = one_of(
            doc,
            &[
                (
                    "checkpointing.aligned-checkpoint-timeout",
                    self.aligned_checkpoint_timeout.as_ref(),
                ),
                (
                    "execution.checkpointing.aligned-checkpoint-timeout",
                    flink.aligned_checkpoint_timeout.as_ref(),
                ),
            ],
        )?;
        let alignment_at = one_of(
            doc,
            &[
                (
                    "checkpointing.alignment-timeout",
                    self.alignment_timeout.as_ref(),
                ),
                (
                    "execution.checkpointing.alignment-timeout",
                    flink.alignment_timeout.as_ref(),
                ),
            ],
        )?;
        let aligned_timeout = duration(aligned_at, Duration::ZERO)?;
        let alignment_timeout = duration(alignment_at, Duration::ZERO)?;
        let aligned_checkpoint_timeout = match (aligned_timeout, alignment_timeout) {
            (Some(_), Some(_)) => {
                let (key, at) = alignment_at.expect("it is set");
                let (new, _) = aligned_at.expect("it is set");
                return Err(doc.error_at(
                    key,
                    at.span().start,
                    format!(
                        "{key} and {new} are both set; alignment-timeout is the older name of \
                         aligned-checkpoint-timeout, so keep only aligned-checkpoint-timeout"
                    ),
                ));
            }
            (new, old) => new.or(old).unwrap_or(d.aligned_checkpoint_timeout),
        };
        let forced_at = self
            .force_unaligned
            .as_ref()
            .map(|f| ("checkpointing.force-unaligned", f));
        let force_unaligned = boolean(forced_at)?.unwrap_or(d.force_unaligned);
        let max_in_flight_data = doc
            .read(
                T,
                "max-in-flight-data",
                self.max_in_flight_data.as_ref(),
                |v| v.size(1),
            )?
            .unwrap_or(d.max_in_flight_data);
        let num_retained = integer(
            one_of(
                doc,
                &[
                    ("checkpointing.num-retained", self.num_retained.as_ref()),
                    (
                        "execution.checkpointing.num-retained",
                        flink.num_retained.as_ref(),
                    ),
                    ("state.checkpoints.num-retained", state_num_retained),
                ],
            )?,
            1,
        )?
        .unwrap_or(d.num_retained);

        if unaligned {
            let (key, at) = unaligned_at.expect("unaligned = true was written");
            let refuse =
                |why: String| doc.error_at(key, at.span().start, format!("{key} = true {why}"));
            if mode != CheckpointingMode::ExactlyOnce {
                return Err(refuse(format!(
                    "needs mode = \"exactly-once\", but mode is \"{mode}\"; at-least-once \
                     checkpoints are never aligned, so set unaligned = false"
                )));
            }
            if max_concurrent != 1 {
                return Err(refuse(format!(
                    "needs max-concurrent = 1, but max-concurrent is {max_concurrent}"
                )));
            }
        } else {
            // The keys that shape unaligned checkpoints mean nothing without them: refused rather
            // than accepted and ignored (their default values are fine).
            let in_flight = self
                .max_in_flight_data
                .as_ref()
                .map(|f| ("checkpointing.max-in-flight-data", f));
            let unused = [
                (
                    aligned_at,
                    aligned_checkpoint_timeout != d.aligned_checkpoint_timeout,
                    "a checkpoint starts aligned and turns unaligned after it",
                ),
                (
                    alignment_at,
                    aligned_checkpoint_timeout != d.aligned_checkpoint_timeout,
                    "a checkpoint starts aligned and turns unaligned after it",
                ),
                (
                    forced_at,
                    force_unaligned,
                    "it forces unaligned checkpoints where they would be refused",
                ),
                (
                    in_flight,
                    max_in_flight_data != d.max_in_flight_data,
                    "it bounds the channel state of unaligned checkpoints",
                ),
            ];
            for (found, set, what) in unused {
                if let (Some((key, field)), true) = (found, set) {
                    doc.read_key(key, Some(field), |v| -> Result<(), ConfigError> {
                        Err(v.fail(format!(
                            "applies only with unaligned = true ({what}); set unaligned = true \
                             or remove it"
                        )))
                    })?;
                }
            }
        }

        Ok(CheckpointingConfig {
            interval,
            mode,
            timeout,
            min_pause,
            max_concurrent,
            tolerable_failures,
            externalized_retention,
            unaligned,
            aligned_checkpoint_timeout,
            force_unaligned,
            max_in_flight_data,
            num_retained,
        })
    }
}

/// One line about the checkpointing settings, for `cairn config check`.
impl fmt::Display for CheckpointingConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(interval) = self.interval else {
            return f.write_str("off (no interval)");
        };
        write!(f, "every {}", format_duration(interval))?;
        if let Some(base) = self.base_interval().filter(|&b| b != interval) {
            write!(f, " (base interval {})", format_duration(base))?;
        }
        write!(
            f,
            ", {}{}, timeout {}, max-concurrent {}, ",
            self.mode,
            match (self.unaligned, self.aligned_checkpoint_timeout.is_zero()) {
                (false, _) => String::new(),
                (true, true) => ", unaligned".to_string(),
                (true, false) => format!(
                    ", aligned then unaligned after {}",
                    format_duration(self.aligned_checkpoint_timeout)
                ),
            },
            format_duration(self.timeout),
            self.max_concurrent
        )?;
        match self.tolerable_failures {
            Some(n) => write!(f, "tolerable failures {n}, ")?,
            None => f.write_str("tolerable failures unlimited, ")?,
        }
        write!(
            f,
            "keep {}, {}",
            self.num_retained, self.externalized_retention
        )
    }
}
