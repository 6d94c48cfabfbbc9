//! The job API: what a user implements to run a job of their own on cairn's runtime.
//!
//! A job has one shape, Flink's most common one: parallel **sources** → a **hash exchange** by
//! key → parallel **keyed operator** tasks, each holding typed per-key state → an optional
//! **two-phase-commit sink** in the same task. Implement [`Source`] for the records and their
//! offsets, [`Job`] for the key, the per-record logic and the sink, and optionally
//! [`TwoPhaseCommitSink`] for exactly-once output; then run it with
//! [`run_job`](crate::runtime::run_job) (or [`run_with_config`](crate::runtime::run_with_config),
//! which also loads the storage plugin the config names). `host/examples/sensor_max.rs` is a
//! complete job in under 60 lines.
//!
//! What the runtime guarantees, with `checkpointing.mode = "exactly-once"`:
//!
//! - **Sources** are asked for their [`Source::offset`] at each checkpoint barrier, and a
//!   restored job creates every source from the offset its checkpoint holds, so each record is
//!   reflected in the state exactly once.
//! - **Records cross the exchange encoded** (serde, in [postcard](https://docs.rs/postcard)'s
//!   compact format), in buffers of many records: that is what lets in-flight records be stored
//!   as channel state, and what bounds the exchange's memory in bytes.
//! - **Keyed state** ([`ValueState`]) belongs to the key of the record being processed. A key is
//!   routed by a stable hash of its encoding into one of [`KEY_GROUPS`] key groups, and key
//!   groups are spread over the parallel tasks as in Flink, so a key always reaches the same
//!   task and its state.
//! - **Snapshots are asynchronous**: at a barrier a task takes a copy-on-write view of its state
//!   and goes on processing; the view is written to the storage plugin by another thread.
//! - **Sinks** follow Flink's `TwoPhaseCommitSinkFunction`: the open transaction is
//!   pre-committed at the barrier and kept, with the checkpoint, as pending; it is committed once
//!   the checkpoint is complete; a restore commits again what the restored checkpoint holds (so
//!   [`TwoPhaseCommitSink::commit`] must be idempotent) and aborts every other transaction.

use std::{fmt, hash::Hash};

use serde::{de::DeserializeOwned, Serialize};

use super::state::{KeyedState, ValueState as StateHandleFor};

/// How many key groups keys are hashed into (Flink's default maximum parallelism). A key's
/// group never changes, so a checkpoint's keyed state can be split among tasks again.
pub const KEY_GROUPS: u32 = 128;

/// Why a user function failed. The task fails, and the job fails over as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError(pub String);

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JobError {}

impl From<String> for JobError {
    fn from(s: String) -> Self {
        JobError(s)
    }
}

impl From<&str> for JobError {
    fn from(s: &str) -> Self {
        JobError(s.to_string())
    }
}

impl From<std::io::Error> for JobError {
    fn from(e: std::io::Error) -> Self {
        JobError(e.to_string())
    }
}

/// A record that can cross the exchange: serializable, sendable.
pub trait Record: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Record for T {}

/// A key: hashable for the task's index, serializable for routing and snapshots.
pub trait Key: Record + Hash + Eq + Clone + Sync {}
impl<T: Record + Hash + Eq + Clone + Sync> Key for T {}

/// A per-key state value: cloned when a snapshot still holds it and the task changes it.
pub trait StateValue: Record + Clone + Sync {}
impl<T: Record + Clone + Sync> StateValue for T {}

/// A source offset, a sink transaction: stored in the checkpoint's metadata as JSON.
pub trait Checkpointed: Serialize + DeserializeOwned + Clone + Send + fmt::Debug + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + fmt::Debug + 'static> Checkpointed for T {}

/// What [`Source::next`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next<R> {
    /// One record.
    Record(R),
    /// Nothing right now; ask again soon (the runtime waits a little, listening for barriers).
    Pending,
    /// The source is exhausted. A job whose sources have all ended takes a final checkpoint
    /// (when it has a sink) and finishes.
    End,
}

/// One parallel instance of a source.
pub trait Source: Send + 'static {
    /// What it emits.
    type Record: Record;
    /// Where it is: enough to resume exactly after the last record it emitted.
    type Offset: Checkpointed;

    /// The next record. Called in a loop on the source's own thread; the runtime applies
    /// `[job] rate` and injects barriers between calls.
    fn next(&mut self) -> Result<Next<Self::Record>, JobError>;

    /// The offset after the last record returned, taken at every checkpoint barrier.
    fn offset(&self) -> Self::Offset;
}

/// Which parallel task this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskContext {
    /// This task's index, from 0.
    pub subtask: u32,
    /// How many parallel tasks the operator has.
    pub parallelism: u32,
}

impl TaskContext {
    /// Whether this keyed task owns `key` (its state lives here).
    pub fn owns<K: Serialize>(&self, key: &K) -> bool {
        super::codec::task_of(super::codec::key_group(key), self.parallelism) == self.subtask
    }
}

/// The transactional sink of Flink's `TwoPhaseCommitSinkFunction`, one instance per keyed task.
///
/// The runtime drives it: [`begin_transaction`](Self::begin_transaction) at start and after
/// every barrier; [`write`](Self::write) for every output record; at a barrier,
/// [`pre_commit`](Self::pre_commit) (make the transaction durable, but not visible) and the
/// transaction goes into the checkpoint as pending; once the checkpoint is complete,
/// [`commit`](Self::commit). A checkpoint that fails leaves its transaction pending: it is
/// committed with the next checkpoint that completes, or aborted when the job fails over (its
/// records are then replayed from the restored checkpoint into new transactions). On restore,
/// every pending transaction of the restored checkpoint is committed again, the one that was
/// open at its barrier is aborted, and then [`abort_unknown`](Self::abort_unknown) removes
/// whatever else this task had begun.
pub trait TwoPhaseCommitSink: Send + 'static {
    /// The records it writes.
    type Input: Send + 'static;
    /// A transaction: stored in checkpoints, so keep it small (a file name, an id).
    type Transaction: Checkpointed;

    /// Start a transaction.
    fn begin_transaction(&mut self) -> Result<Self::Transaction, JobError>;

    /// Write one record into the open transaction.
    fn write(&mut self, txn: &mut Self::Transaction, record: Self::Input) -> Result<(), JobError>;

    /// Make the transaction durable without making it visible (flush, fsync). No more writes
    /// go into it.
    fn pre_commit(&mut self, txn: &mut Self::Transaction) -> Result<(), JobError>;

    /// Make a pre-committed transaction visible. Must be idempotent: after a crash the same
    /// transaction is committed again, and committing one that is already committed succeeds.
    fn commit(&mut self, txn: Self::Transaction) -> Result<(), JobError>;

    /// Throw a transaction away. Idempotent.
    fn abort(&mut self, txn: Self::Transaction) -> Result<(), JobError>;

    /// At start, after the restored transactions were committed and aborted: abort every
    /// transaction of this task that is not in `keep` (left by a run that died after the
    /// restored checkpoint). On a fresh start `keep` is empty.
    fn abort_unknown(&mut self, keep: &[Self::Transaction]) -> Result<(), JobError>;
}

/// The sink of a job that has none.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSink;

impl TwoPhaseCommitSink for NoSink {
    type Input = ();
    type Transaction = ();

    fn begin_transaction(&mut self) -> Result<(), JobError> {
        Ok(())
    }
    fn write(&mut self, _: &mut (), _: ()) -> Result<(), JobError> {
        Ok(())
    }
    fn pre_commit(&mut self, _: &mut ()) -> Result<(), JobError> {
        Ok(())
    }
    fn commit(&mut self, _: ()) -> Result<(), JobError> {
        Ok(())
    }
    fn abort(&mut self, _: ()) -> Result<(), JobError> {
        Ok(())
    }
    fn abort_unknown(&mut self, _: &[()]) -> Result<(), JobError> {
        Ok(())
    }
}

/// The state of one key, as [`Job::process`] sees it.
pub type ValueState<'a, J> = StateHandleFor<'a, <J as Job>::Key, <J as Job>::State>;

/// What [`Job::process`] gets with each record: its key, that key's state, and where records
/// for the sink go.
pub struct Process<'a, J: Job> {
    /// The record's key.
    pub key: &'a J::Key,
    /// The key's state.
    pub state: ValueState<'a, J>,
    out: &'a mut Vec<OutputOf<J>>,
}

impl<'a, J: Job> Process<'a, J> {
    pub(crate) fn new(
        key: &'a J::Key,
        state: ValueState<'a, J>,
        out: &'a mut Vec<OutputOf<J>>,
    ) -> Self {
        Process { key, state, out }
    }

    /// Send a record to the sink (in the transaction open now).
    pub fn emit(&mut self, record: OutputOf<J>) {
        self.out.push(record);
    }
}

/// The record type of a job's source.
pub type RecordOf<J> = <<J as Job>::Source as Source>::Record;

/// The offset type of a job's source.
pub type OffsetOf<J> = <<J as Job>::Source as Source>::Offset;

/// The record type of a job's sink.
pub type OutputOf<J> = <<J as Job>::Sink as TwoPhaseCommitSink>::Input;

/// Entries a keyed task inserts in the background ([`Job::prefill`]).
pub type Prefill<K, V> = Box<dyn Iterator<Item = (K, V)> + Send>;

/// The final state of a job that finished, for [`Job::summarize`].
pub struct JobEnd<'a, J: Job> {
    /// Every keyed task's state, by subtask.
    pub states: &'a [KeyedState<J::Key, J::State>],
    /// Every source's final offset, by subtask.
    pub offsets: &'a [OffsetOf<J>],
}

/// A job: its source, key, per-record logic and sink. One value is shared by every task (so
/// `process` takes `&self`); per-key state lives in [`ValueState`].
pub trait Job: Send + Sync + 'static {
    /// The source; one instance per parallel source task.
    type Source: Source;
    /// The key records are partitioned by.
    type Key: Key;
    /// The state kept per key.
    type State: StateValue;
    /// The sink ([`NoSink`] for none).
    type Sink: TwoPhaseCommitSink;

    /// The job's kind, such as `word-count`: stored in checkpoints, and part of the fingerprint.
    fn kind(&self) -> &str;

    /// The settings its state depends on, for people (`keys = 10, parallelism = 2`). A
    /// checkpoint taken with other settings is refused at restore. None by default.
    fn settings(&self) -> String {
        String::new()
    }

    /// Create source `ctx.subtask`, from `offset` when the job is restored.
    fn source(
        &self,
        ctx: &TaskContext,
        offset: Option<OffsetOf<Self>>,
    ) -> Result<Self::Source, JobError>;

    /// The key of a record. Called on the source side (to route it) and on the keyed side.
    fn key(&self, record: &RecordOf<Self>) -> Self::Key;

    /// Process one record, with its key's state ([`Process::state`]); records for the sink go
    /// out through [`Process::emit`].
    fn process(&self, p: &mut Process<'_, Self>, record: RecordOf<Self>) -> Result<(), JobError>
    where
        Self: Sized;

    /// Create the sink of keyed task `ctx.subtask`. `None`, the default, for a job without one
    /// (whose `Sink` is [`NoSink`]); a job with a sink must return it here.
    fn sink(&self, _ctx: &TaskContext) -> Result<Option<Self::Sink>, JobError> {
        Ok(None)
    }

    /// State entries that exist before any record: the task inserts them in the background,
    /// a batch at a time between input buffers, skipping keys it already holds. `None` (the
    /// default) for none.
    fn prefill(&self, _ctx: &TaskContext) -> Option<Prefill<Self::Key, Self::State>> {
        None
    }

    /// A job-specific part of the summary of a finished run (merged into
    /// [`Summary::details`](crate::runtime::Summary::details)). Empty by default.
    fn summarize(&self, _end: &JobEnd<'_, Self>) -> serde_json::Map<String, serde_json::Value>
    where
        Self: Sized,
    {
        serde_json::Map::new()
    }

    /// An estimate of the bytes of state the job will hold, if it can tell (`cairn config
    /// check` and `cairn run` refuse a job whose state cannot fit in memory).
    fn state_estimate(&self) -> Option<u64> {
        None
    }
}
