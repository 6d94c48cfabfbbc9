//! Restoring a job from a checkpoint: resolve the pointer, check the metadata belongs to this
//! job and its settings, and read every keyed task's state back, each through one bounded
//! plugin call, all tasks in parallel.
//!
//! State is decoded while it streams in (no whole copy of a task's state in memory besides the
//! state itself), and checked twice: the backend checks its checksum, and the host checks the
//! size and the CRC32C in the handle as the bytes pass ([`CheckedReader`]). A key that does not
//! belong to the task holding it, an entry twice, or bytes left over are refused. A task whose
//! state is a chain of segments (an incremental checkpoint) is read object by object, newest
//! first, each object in its own bounded call (`incremental.rs`).

use std::io::Read;

use cairn_plugin_api::{InputStream, StateHandle, StorageError};
use serde_json::Value;

use super::{
    api::{Job, OffsetOf, TaskContext, TwoPhaseCommitSink},
    calls::PluginCalls,
    channel_state,
    codec::{check_owner, Buffer},
    incremental::{Chain, ChainReader},
    state::{read_state, KeyedState},
    tasks::{offset_from, sink_state_from, SinkState},
    RunError,
};
use crate::metadata::{ChannelStateRecord, CheckpointMetadata, TaskState, KEYED_OPERATOR};

/// What one attempt starts from.
pub(crate) struct StartState<J: Job> {
    /// The checkpoint restored from (0 for a fresh start).
    pub(crate) checkpoint_id: u64,
    pub(crate) offsets: Vec<Option<OffsetOf<J>>>,
    pub(crate) states: Vec<KeyedState<J::Key, J::State>>,
    pub(crate) records: Vec<u64>,
    pub(crate) sinks: Vec<Option<SinkState<<J::Sink as TwoPhaseCommitSink>::Transaction>>>,
    /// Each keyed task's restored channel state: per input channel, its buffers in order.
    pub(crate) channel_state: Vec<Vec<Vec<Buffer>>>,
    /// Each keyed task's chain, when the run owns the restored incremental checkpoint and so
    /// may extend it.
    pub(crate) chains: Vec<Option<Chain>>,
}

impl<J: Job> StartState<J> {
    /// The beginning: no offsets, empty state.
    pub(crate) fn fresh(parallelism: usize) -> Self {
        StartState {
            checkpoint_id: 0,
            offsets: (0..parallelism).map(|_| None).collect(),
            states: (0..parallelism).map(|_| KeyedState::new()).collect(),
            records: vec![0; parallelism],
            sinks: (0..parallelism).map(|_| None).collect(),
            channel_state: (0..parallelism).map(|_| Vec::new()).collect(),
            chains: (0..parallelism).map(|_| None).collect(),
        }
    }
}

/// SHA-256 (hex) of a job's kind and settings: a checkpoint is restored only into a job with
/// the same fingerprint.
pub fn fingerprint_of(kind: &str, settings: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(format!("{kind};{settings}").as_bytes()))
}

/// Why the metadata at a pointer cannot be used.
pub(crate) enum LoadError {
    /// The plugin's `resolve` failed (the error keeps its kind).
    Resolve(StorageError),
    /// It resolved, but the bytes are not valid metadata.
    Damaged(String),
    /// It resolved, but is not a checkpoint of this job with these settings.
    Refused(String),
}

impl LoadError {
    pub(crate) fn into_run_error(self, pointer: &str) -> RunError {
        match self {
            LoadError::Resolve(e) => RunError::Restore(format!("{pointer}: {e}")),
            LoadError::Damaged(why) | LoadError::Refused(why) => RunError::Restore(why),
        }
    }
}

/// Read and check the metadata at `pointer` for `job` with id `job_id`.
pub(crate) fn load_metadata<J: Job>(
    calls: &PluginCalls,
    job: &J,
    job_id: &str,
    pointer: &str,
) -> Result<CheckpointMetadata, LoadError> {
    let resolved = calls.resolve(pointer).map_err(LoadError::Resolve)?;
    let meta = CheckpointMetadata::decode(&resolved.metadata)
        .map_err(|e| LoadError::Damaged(format!("{pointer}: {e}")))?;
    if meta.job_id != job_id {
        return Err(LoadError::Refused(format!(
            "{pointer} belongs to job '{}', not to job.id = '{job_id}'",
            meta.job_id
        )));
    }
    let settings = job.settings();
    if meta.job_kind != job.kind()
        || meta.config_fingerprint != fingerprint_of(job.kind(), &settings)
    {
        let taken = if meta.job_settings.is_empty() {
            "other settings".to_string()
        } else {
            format!("{} ({})", meta.job_kind, meta.job_settings)
        };
        return Err(LoadError::Refused(format!(
            "{pointer} was taken with {taken}, but the config says {} ({settings}); restore it \
             with the settings it was taken with",
            job.kind()
        )));
    }
    Ok(meta)
}

/// A reader over a handle's input stream that checks the size and CRC32C the handle carries.
pub(crate) struct CheckedReader {
    input: Box<dyn InputStream>,
    handle: StateHandle,
    read: u64,
    crc: u32,
    done: bool,
}

impl CheckedReader {
    pub(crate) fn new(handle: &StateHandle, input: Box<dyn InputStream>) -> Self {
        CheckedReader {
            input,
            handle: handle.clone(),
            read: 0,
            crc: 0,
            done: false,
        }
    }

    fn corrupt(&self, what: String) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {what}", self.handle.describe()),
        )
    }
}

impl Read for CheckedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self
            .input
            .read(buf)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if n > buf.len() {
            return Err(self.corrupt(format!(
                "the backend reported {n} bytes read into a {} byte buffer",
                buf.len()
            )));
        }
        self.read += n as u64;
        if self.read > self.handle.size() {
            return Err(self.corrupt("more bytes than the handle's size".to_string()));
        }
        if n == 0 {
            self.done = true;
            if self.read != self.handle.size() {
                return Err(self.corrupt(format!(
                    "read {} bytes, the handle says {}",
                    self.read,
                    self.handle.size()
                )));
            }
            if let StateHandle::Stored { crc32c, .. } = &self.handle {
                if *crc32c != self.crc {
                    return Err(self.corrupt(format!(
                        "checksum mismatch, read bytes have crc32c {:08x}",
                        self.crc
                    )));
                }
            }
            return Ok(0);
        }
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
}

/// Read one keyed task's state from its handles.
fn read_task_state<J: Job>(
    calls: &PluginCalls,
    pointer: &str,
    subtask: u32,
    parallelism: u32,
    handles: Vec<StateHandle>,
) -> Result<KeyedState<J::Key, J::State>, RunError> {
    let mut all: Option<KeyedState<J::Key, J::State>> = None;
    for handle in handles {
        let what = format!(
            "reading keyed task {subtask}'s state ({}) of {pointer}",
            handle.describe()
        );
        let state = calls
            .read_handle(&what, handle, move |h, input| {
                let mut reader =
                    std::io::BufReader::with_capacity(1 << 20, CheckedReader::new(h, input));
                read_state::<J::Key, J::State>(&mut reader, |k| {
                    check_owner(k, subtask, parallelism)
                })
                .map_err(|e| StorageError::Corrupt(format!("{}: {e}", h.describe())))
            })
            .map_err(|e| RunError::Restore(format!("{pointer}: {e}")))?;
        all = Some(match all {
            None => state,
            Some(mut acc) => {
                for (k, v) in state.iter() {
                    acc.insert(k.clone(), v.clone())
                        .map_err(|e| RunError::Restore(e.0))?;
                }
                acc
            }
        });
    }
    Ok(all.unwrap_or_default())
}

/// A keyed task's state and the chain it was read from.
type StateAndChain<J> = (KeyedState<<J as Job>::Key, <J as Job>::State>, Chain);

/// Read one keyed task's state from its chain of segments, newest first, each object through
/// its own bounded call.
fn read_task_chain<J: Job>(
    calls: &PluginCalls,
    pointer: &str,
    parallelism: u32,
    checkpoint_id: u64,
    task: &TaskState,
) -> Result<StateAndChain<J>, RunError> {
    let subtask = task.subtask;
    let refuse =
        |why: String| RunError::Restore(format!("{pointer}: keyed task {subtask}'s state: {why}"));
    let mut reader = ChainReader::<J::Key, J::State>::new(task, parallelism).map_err(refuse)?;
    for (i, seg) in task.segments.iter().enumerate().rev() {
        let handle = seg.object.to_handle().map_err(|e| refuse(e.to_string()))?;
        let what = format!(
            "reading keyed task {subtask}'s segment of checkpoint {} ({}) of {pointer}",
            seg.checkpoint_id,
            handle.describe()
        );
        let seg = seg.clone();
        reader = calls
            .read_handle(&what, handle, move |h, input| {
                let mut r =
                    std::io::BufReader::with_capacity(1 << 20, CheckedReader::new(h, input));
                reader
                    .read_segment(i, &seg, &mut r)
                    .map_err(|e| StorageError::Corrupt(format!("{}: {e}", h.describe())))
            })
            .map_err(|e| RunError::Restore(format!("{pointer}: {e}")))?;
    }
    reader.finish(task, checkpoint_id).map_err(refuse)
}

/// Read one keyed task's channel state: per input channel, its buffers in their order.
fn read_channel_state(
    calls: &PluginCalls,
    pointer: &str,
    subtask: u32,
    parallelism: u32,
    records: &[ChannelStateRecord],
) -> Result<Vec<Vec<Buffer>>, RunError> {
    let refuse = |why: String| RunError::Restore(format!("{pointer}: {why}"));
    let mut channels: Vec<Vec<Buffer>> = (0..parallelism).map(|_| Vec::new()).collect();
    let mut seen = vec![false; parallelism as usize];
    for r in records {
        let ch = r.channel as usize;
        if ch >= seen.len() || std::mem::replace(&mut seen[ch], true) {
            return Err(refuse(format!(
                "keyed task {subtask} has channel state for input {} twice or out of range \
                 (parallelism {parallelism})",
                r.channel
            )));
        }
        let handle = r.handle.to_handle().map_err(|e| refuse(e.to_string()))?;
        if handle.size() != r.bytes {
            return Err(refuse(format!(
                "keyed task {subtask}'s channel state of input {ch} is {} bytes, the metadata \
                 says {}",
                handle.size(),
                r.bytes
            )));
        }
        let what = format!(
            "reading keyed task {subtask}'s channel state of input {ch} ({}) of {pointer}",
            handle.describe()
        );
        let expected = r.records;
        let buffers = calls
            .read_handle(&what, handle, move |h, input| {
                let mut bytes = Vec::with_capacity(usize::try_from(h.size()).unwrap_or(0));
                CheckedReader::new(h, input)
                    .read_to_end(&mut bytes)
                    .map_err(|e| StorageError::Corrupt(e.to_string()))?;
                channel_state::decode(&bytes, Some(expected))
                    .map_err(|e| StorageError::Corrupt(format!("{}: {e}", h.describe())))
            })
            .map_err(|e| RunError::Restore(format!("{pointer}: {e}")))?;
        channels[ch] = buffers;
    }
    Ok(channels)
}

/// Everything an attempt needs from the checkpoint at `pointer`.
///
/// With `chains`, each segmented task's chain comes back too, for the run to extend.
pub(crate) fn start_state<J: Job>(
    calls: &PluginCalls,
    parallelism: u32,
    pointer: &str,
    meta: CheckpointMetadata,
    chains: bool,
) -> Result<StartState<J>, RunError> {
    let p = parallelism as usize;
    let refuse = |why: String| RunError::Restore(format!("{pointer}: {why}"));
    if meta.source_offsets.len() != p {
        return Err(refuse(format!(
            "it has {} source offsets for parallelism {p}",
            meta.source_offsets.len()
        )));
    }
    let offsets = meta
        .source_offsets
        .iter()
        .map(|v| offset_from::<J>(v).map(Some))
        .collect::<Result<Vec<_>, _>>()
        .map_err(refuse)?;
    let mut handles: Vec<Option<Vec<StateHandle>>> = vec![None; p];
    let mut channel_records: Vec<Vec<ChannelStateRecord>> = vec![Vec::new(); p];
    let mut segmented: Vec<Option<&TaskState>> = vec![None; p];
    let mut records = vec![0; p];
    let mut sinks = Vec::with_capacity(p);
    sinks.resize_with(p, || None);
    for task in &meta.tasks {
        let i = task.subtask as usize;
        if task.operator != KEYED_OPERATOR || i >= p || handles[i].is_some() {
            return Err(refuse(format!(
                "it has state for {}[{}] twice, out of range or of an unknown operator \
                 (parallelism {p})",
                task.operator, task.subtask
            )));
        }
        if task.is_segmented() {
            if !task.handles.is_empty() {
                return Err(refuse(format!(
                    "keyed task {i} has both whole state handles and segments"
                )));
            }
            segmented[i] = Some(task);
        }
        handles[i] = Some(
            task.handles
                .iter()
                .map(|h| h.to_handle())
                .collect::<Result<_, _>>()
                .map_err(|e| refuse(e.to_string()))?,
        );
        records[i] = task.records;
        channel_records[i] = task.channel_state.clone();
        sinks[i] = match &task.sink {
            None | Some(Value::Null) => None,
            Some(v) => Some(sink_state_from::<J>(v).map_err(refuse)?),
        };
    }
    if let Some(missing) = handles.iter().position(Option::is_none) {
        return Err(refuse(format!("it has no state for keyed task {missing}")));
    }
    // Every task's state (and channel state) is read in parallel, each handle through its own
    // bounded call.
    let id = meta.checkpoint_id;
    let read = std::thread::scope(|s| {
        let readers: Vec<_> = handles
            .into_iter()
            .zip(&channel_records)
            .zip(&segmented)
            .enumerate()
            .map(|(i, ((h, c), seg))| {
                let h = h.expect("checked above");
                s.spawn(move || {
                    let (state, chain) = match seg {
                        Some(task) => read_task_chain::<J>(calls, pointer, parallelism, id, task)
                            .map(|(state, chain)| (state, Some(chain)))?,
                        None => (
                            read_task_state::<J>(calls, pointer, i as u32, parallelism, h)?,
                            None,
                        ),
                    };
                    let channels = read_channel_state(calls, pointer, i as u32, parallelism, c)?;
                    Ok((state, (channels, chain)))
                })
            })
            .collect();
        readers
            .into_iter()
            .map(|r| {
                r.join()
                    .unwrap_or_else(|_| Err(RunError::Restore("a state reader panicked".into())))
            })
            .collect::<Result<Vec<_>, RunError>>()
    })?;
    let (states, rest): (Vec<_>, Vec<_>) = read.into_iter().unzip();
    let (channel_state, restored_chains): (Vec<_>, Vec<_>) = rest.into_iter().unzip();
    Ok(StartState {
        checkpoint_id: id,
        offsets,
        states,
        records,
        sinks,
        chains: if chains {
            restored_chains
        } else {
            (0..p).map(|_| None).collect()
        },
        channel_state,
    })
}

/// The context of keyed or source task `subtask`.
pub(crate) fn context(subtask: usize, parallelism: u32) -> TaskContext {
    TaskContext {
        subtask: subtask as u32,
        parallelism,
    }
}
