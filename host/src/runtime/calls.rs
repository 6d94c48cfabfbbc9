//! Every storage-plugin call the coordinator side makes, each with a deadline.
//!
//! [`PluginCalls`] is the only handle to the storage the coordinator, the restore code and the
//! background discards have: it does not give out the raw `CheckpointStorage`, so no call can
//! skip the deadline. A call runs on a worker thread; the caller waits at most the deadline
//! (the `checkpointing.timeout`, or what remains of a checkpoint's), and gives up early when
//! the run is cancelled. A call that does not return in time is abandoned: its worker is left
//! to finish (or hang) on its own and is never reused, and its late result goes to an *undo*
//! function, if the call has one, so that a location begun or a checkpoint committed after its
//! deadline is cleaned up rather than leaked. Workers that return in time are reused, so a call
//! costs two channel messages, not a thread.
//!
//! Each call's latency goes, by call and outcome, into the run's
//! [`Histograms`](crate::metrics::Histograms) when the calls are [`PluginCalls::observed`]: the
//! `cairn_plugin_call_duration_seconds` metric.
//!
//! Calls made on task threads (creating and writing state streams) are not here: they belong
//! to a checkpoint, and a checkpoint that hangs expires.
//!
//! Every call that changes the storage (begin, commit, dispose, discard) first asks the job
//! lease's [`Fence`], once the run holds a lease: a holder whose lease expired or was taken over
//! writes nothing more (see `crate::lease`).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use cairn_plugin_api::{
    CheckpointLocation, CheckpointStorage, CompletedCheckpoint, InputStream, JobStorage,
    ResolvedCheckpoint, StateHandle, StorageError, StorageInfo,
};
use crossbeam_channel::{unbounded, Sender};

use crate::metrics::{CallOutcome, Histograms};

use crate::lease::Fence;

/// What a call does when the job starts stopping while it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnCancel {
    /// Give the call up at once.
    GiveUp,
    /// Keep waiting, up to the call's deadline.
    KeepWaiting,
    /// Keep waiting, up to this much longer (and never past the call's deadline).
    WaitAtMost(Duration),
}

/// How long a stopping run still waits for each dispose of a subsumed checkpoint and each
/// discard of a SHARED object, from the moment it starts stopping (a run that is not stopping
/// waits for the call's deadline).
pub(crate) const STOPPING_BOUND: Duration = Duration::from_secs(5);

/// Whether an undo may still change the storage: not once the lease is lost or expired, since
/// the job may be someone else's by now.
fn may_write(fence: Option<&dyn Fence>, what: &str) -> bool {
    match fence.map(|f| f.check()) {
        Some(Err(why)) => {
            tracing::warn!("not {what}: {why}");
            false
        }
        _ => true,
    }
}

/// What to do with the result of a call that was abandoned at its deadline.
pub(crate) type Undo<T> = Box<dyn FnOnce(Result<T, StorageError>) + Send>;

type Work = Box<dyn FnOnce() + Send>;

/// Where a call's result meets its caller. The undo travels with the slot: the caller leaves
/// it there when it gives up, and the worker runs it on the late result.
enum Slot<T> {
    Waiting(Option<Undo<T>>),
    Done(Result<T, StorageError>),
    Abandoned(Option<Undo<T>>),
    Taken,
}

struct Worker {
    work: Sender<Work>,
}

/// The coordinator side's access to the storage plugin (see the module docs).
pub struct PluginCalls {
    storage: Arc<dyn CheckpointStorage>,
    deadline: Duration,
    cancel: Arc<AtomicBool>,
    idle: Mutex<Vec<Worker>>,
    latency: Option<Histograms>,
    fence: OnceLock<Arc<dyn Fence>>,
}

/// A location of a checkpoint in flight, usable only through [`PluginCalls`] and the tasks.
pub(crate) type Location = Arc<dyn CheckpointLocation>;

fn what_timed_out(what: &str, deadline: Duration) -> StorageError {
    StorageError::Timeout(format!(
        "the storage plugin's {what} did not return within {} (checkpointing.timeout bounds every plugin call)",
        humantime::format_duration(deadline)
    ))
}

impl PluginCalls {
    /// Calls into `storage`, each bounded by `deadline` and given up when `cancel` is set.
    pub fn new(
        storage: Arc<dyn CheckpointStorage>,
        deadline: Duration,
        cancel: Arc<AtomicBool>,
    ) -> Arc<Self> {
        Arc::new(PluginCalls {
            storage,
            deadline,
            cancel,
            idle: Mutex::new(Vec::new()),
            latency: None,
            fence: OnceLock::new(),
        })
    }

    /// As [`PluginCalls::new`], and each call's latency is observed in `histograms`.
    pub fn observed(
        storage: Arc<dyn CheckpointStorage>,
        deadline: Duration,
        cancel: Arc<AtomicBool>,
        histograms: Histograms,
    ) -> Arc<Self> {
        Arc::new(PluginCalls {
            storage,
            deadline,
            cancel,
            idle: Mutex::new(Vec::new()),
            latency: Some(histograms),
            fence: OnceLock::new(),
        })
    }

    fn observe<T>(
        &self,
        name: &'static str,
        started: Instant,
        result: &Result<T, StorageError>,
        abandoned: bool,
    ) {
        if let Some(h) = &self.latency {
            let outcome = match result {
                _ if abandoned => CallOutcome::Abandoned,
                Ok(_) => CallOutcome::Ok,
                Err(_) => CallOutcome::Error,
            };
            h.observe_call(name, outcome, started.elapsed());
        }
    }

    /// Fence every call that changes the storage with `fence` from now on (once per run).
    pub fn set_fence(&self, fence: Arc<dyn Fence>) {
        let _ = self.fence.set(fence);
    }

    /// `Err` if the fence forbids writing: the call `what` is refused before it starts.
    fn fenced(&self, what: &str) -> Result<(), StorageError> {
        match self.fence.get().map(|f| f.check()) {
            Some(Err(why)) => Err(StorageError::Other(format!("refusing {what}: {why}"))),
            _ => Ok(()),
        }
    }

    /// The deadline of calls that are not part of a checkpoint.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    fn worker(&self) -> Result<Worker, StorageError> {
        if let Some(w) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(w);
        }
        let (tx, rx) = unbounded::<Work>();
        std::thread::Builder::new()
            .name("plugin-call".to_string())
            .spawn(move || {
                for work in rx {
                    work();
                }
            })
            .map_err(|e| StorageError::Other(format!("cannot start a plugin-call thread: {e}")))?;
        Ok(Worker { work: tx })
    }

    /// Run `f` with `deadline`; see the module docs. `name` is the plugin API's name of the
    /// call (its latency's label); `what` names the call in errors, such as
    /// `list_completed() of job 'j'`.
    pub(crate) fn call<T: Send + 'static>(
        &self,
        name: &'static str,
        what: &str,
        deadline: Duration,
        undo: Option<Undo<T>>,
        f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        self.call_with(name, what, deadline, undo, OnCancel::GiveUp, f)
    }

    /// As [`PluginCalls::call`], but a stopping job still waits for it, up to `deadline`: for
    /// the last words of a run (releasing its lease), which would otherwise be given up the
    /// moment Ctrl-C sets the cancel flag and race the process's exit.
    pub(crate) fn call_while_stopping<T: Send + 'static>(
        &self,
        name: &'static str,
        what: &str,
        deadline: Duration,
        f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        self.call_with(name, what, deadline, None, OnCancel::KeepWaiting, f)
    }

    /// As [`PluginCalls::call_while_stopping`], but once the job is stopping it waits at most
    /// [`STOPPING_BOUND`] more (and never past `deadline`): for the clean-up calls a stop should
    /// still finish, without letting a hanging plugin hold the stop for a whole call deadline.
    fn call_bounded_when_stopping<T: Send + 'static>(
        &self,
        name: &'static str,
        what: &str,
        f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        self.call_with(
            name,
            what,
            self.deadline,
            None,
            OnCancel::WaitAtMost(STOPPING_BOUND),
            f,
        )
    }

    fn call_with<T: Send + 'static>(
        &self,
        name: &'static str,
        what: &str,
        deadline: Duration,
        undo: Option<Undo<T>>,
        on_cancel: OnCancel,
        f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let started = Instant::now();
        let slot = Arc::new((Mutex::new(Slot::Waiting(undo)), Condvar::new()));
        let theirs = slot.clone();
        let work: Work = Box::new(move || {
            let result = f();
            let (lock, ready) = &*theirs;
            let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
            match std::mem::replace(&mut *s, Slot::Taken) {
                Slot::Waiting(_) => {
                    *s = Slot::Done(result);
                    ready.notify_one();
                }
                // The caller gave up: the late result goes to the undo, if any, or is dropped.
                Slot::Abandoned(undo) => {
                    drop(s);
                    if let Some(undo) = undo {
                        undo(result);
                    }
                }
                Slot::Done(_) | Slot::Taken => {}
            }
        });
        let worker = self.worker()?;
        if worker.work.send(work).is_err() {
            return Err(StorageError::Other(format!(
                "{what}: the call's thread died"
            )));
        }
        // A deadline too far away to represent is no deadline: wait for the call or a cancel.
        let mut until = Instant::now().checked_add(deadline);
        let mut stop_seen = false;
        let (lock, ready) = &*slot;
        let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Slot::Done(_) = &*s {
                let Slot::Done(result) = std::mem::replace(&mut *s, Slot::Taken) else {
                    unreachable!("checked just above")
                };
                drop(s);
                self.idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(worker);
                self.observe(name, started, &result, false);
                return result;
            }
            let now = Instant::now();
            let stopping = self.cancel.load(Ordering::Relaxed);
            let cancelled = stopping && on_cancel == OnCancel::GiveUp;
            if let (OnCancel::WaitAtMost(bound), true, false) = (on_cancel, stopping, stop_seen) {
                stop_seen = true;
                until = Some(
                    now.checked_add(bound)
                        .map_or(now, |b| until.map_or(b, |u| u.min(b))),
                );
            }
            if cancelled || until.is_some_and(|u| now >= u) {
                // Leave the undo for the worker, which finds the slot abandoned.
                if let Slot::Waiting(undo) = std::mem::replace(&mut *s, Slot::Taken) {
                    *s = Slot::Abandoned(undo);
                }
                drop(s);
                let err: Result<T, StorageError> = Err(if cancelled {
                    StorageError::Timeout(format!(
                        "the storage plugin's {what} was abandoned: the job is stopping"
                    ))
                } else {
                    what_timed_out(what, deadline)
                });
                self.observe(name, started, &err, true);
                return err;
            }
            let slice = until
                .map_or(Duration::from_millis(50), |u| {
                    u.saturating_duration_since(now)
                })
                .min(Duration::from_millis(50));
            s = ready
                .wait_timeout(s, slice)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// `info()`.
    pub fn info(&self) -> Result<StorageInfo, StorageError> {
        let storage = self.storage.clone();
        self.call("info", "info()", self.deadline, None, move || {
            Ok(storage.info())
        })
    }

    /// `job(id)`.
    pub(crate) fn job(&self, job_id: &str) -> Result<Arc<dyn JobStorage>, StorageError> {
        let storage = self.storage.clone();
        let id = job_id.to_string();
        self.call(
            "job",
            &format!("job('{job_id}')"),
            self.deadline,
            None,
            move || storage.job(&id).map(Arc::from),
        )
    }

    /// `list_completed()`.
    pub(crate) fn list_completed(
        &self,
        job: &Arc<dyn JobStorage>,
        job_id: &str,
    ) -> Result<Vec<CompletedCheckpoint>, StorageError> {
        let job = job.clone();
        self.call(
            "list_completed",
            &format!("list_completed() of job '{job_id}'"),
            self.deadline,
            None,
            move || job.list_completed(),
        )
    }

    /// `list_uncommitted()`.
    pub(crate) fn list_uncommitted(
        &self,
        job: &Arc<dyn JobStorage>,
        job_id: &str,
    ) -> Result<Vec<u64>, StorageError> {
        let job = job.clone();
        self.call(
            "list_uncommitted",
            &format!("list_uncommitted() of job '{job_id}'"),
            self.deadline,
            None,
            move || job.list_uncommitted(),
        )
    }

    /// `list_savepoints(target)` (API 1.1).
    pub(crate) fn list_savepoints(
        &self,
        job: &Arc<dyn JobStorage>,
        job_id: &str,
        target: Option<String>,
    ) -> Result<Vec<String>, StorageError> {
        let job = job.clone();
        self.call(
            "list_savepoints",
            &format!("list_savepoints() of job '{job_id}'"),
            self.deadline,
            None,
            move || job.list_savepoints(target.as_deref()),
        )
    }

    /// `resolve(pointer)`, bounded by the checkpoint timeout like every call here.
    pub fn resolve(&self, pointer: &str) -> Result<ResolvedCheckpoint, StorageError> {
        let storage = self.storage.clone();
        let p = pointer.to_string();
        self.call(
            "resolve",
            &format!("resolve({pointer})"),
            self.deadline,
            None,
            move || storage.resolve(&p),
        )
    }

    /// Open `handle` and hand its input stream to `read` (which reads it to the end), as one
    /// bounded call.
    pub(crate) fn read_handle<T: Send + 'static>(
        &self,
        what: &str,
        handle: StateHandle,
        read: impl FnOnce(&StateHandle, Box<dyn InputStream>) -> Result<T, StorageError>
            + Send
            + 'static,
    ) -> Result<T, StorageError> {
        let storage = self.storage.clone();
        self.call("open_handle", what, self.deadline, None, move || {
            let input = storage.open_handle(&handle)?;
            read(&handle, input)
        })
    }

    /// `begin_checkpoint` or `begin_savepoint`, within `deadline`; a location begun after it is
    /// cleaned when the call returns.
    pub(crate) fn begin(
        &self,
        job: &Arc<dyn JobStorage>,
        id: u64,
        savepoint_target: Option<Option<String>>,
        deadline: Duration,
    ) -> Result<Location, StorageError> {
        let job = job.clone();
        let fence = self.fence.get().cloned();
        let undo: Undo<Location> = Box::new(move |begun| {
            if let Ok(location) = begun {
                if may_write(fence.as_deref(), "cleaning a location begun late") {
                    let _ = location.dispose_on_failure();
                }
            }
        });
        let what = if savepoint_target.is_some() {
            "begin_savepoint"
        } else {
            "begin_checkpoint"
        };
        self.fenced(&format!("{what}({id})"))?;
        self.call(
            what,
            &format!("{what}({id})"),
            deadline,
            Some(undo),
            move || match savepoint_target {
                Some(target) => job.begin_savepoint(id, target.as_deref()).map(Arc::from),
                None => job.begin_checkpoint(id).map(Arc::from),
            },
        )
    }

    /// `commit(metadata)` within `deadline`. A commit abandoned at its deadline may still
    /// complete: the checkpoint, already counted as failed, is then disposed; if it fails, the
    /// location is cleaned.
    pub(crate) fn commit(
        &self,
        location: &Location,
        metadata: Vec<u8>,
        deadline: Duration,
    ) -> Result<CompletedCheckpoint, StorageError> {
        self.fenced("commit")?;
        let storage = self.storage.clone();
        let undo_location = location.clone();
        let fence = self.fence.get().cloned();
        let undo: Undo<CompletedCheckpoint> = Box::new(move |late| match late {
            Ok(done) => {
                tracing::warn!(pointer = %done.pointer, "a commit abandoned at its deadline completed late; disposing it");
                if may_write(fence.as_deref(), "disposing a commit that completed late") {
                    let _ = storage.dispose(&done.pointer);
                }
            }
            Err(_) => {
                if may_write(fence.as_deref(), "cleaning a failed commit's location") {
                    let _ = undo_location.dispose_on_failure();
                }
            }
        });
        let location = location.clone();
        self.call("commit", "commit", deadline, Some(undo), move || {
            location.commit(&metadata)
        })
    }

    /// `dispose(pointer)`.
    pub(crate) fn dispose(&self, pointer: &str) -> Result<(), StorageError> {
        self.fenced(&format!("dispose({pointer})"))?;
        let storage = self.storage.clone();
        let p = pointer.to_string();
        self.call(
            "dispose",
            &format!("dispose({pointer})"),
            self.deadline,
            None,
            move || storage.dispose(&p),
        )
    }

    /// `dispose_on_failure()` of a location.
    pub(crate) fn dispose_on_failure(&self, location: &Location) -> Result<(), StorageError> {
        self.fenced("dispose_on_failure()")?;
        let location = location.clone();
        self.call(
            "dispose_on_failure",
            "dispose_on_failure()",
            self.deadline,
            None,
            move || location.dispose_on_failure(),
        )
    }

    /// `dispose(pointer)` of a subsumed checkpoint, which a stopping run still waits for (up
    /// to [`STOPPING_BOUND`]): the shared-state registry releases its SHARED objects only once
    /// the dispose is known to have succeeded, so one given up at Ctrl-C would leave them.
    pub(crate) fn dispose_subsumed(&self, pointer: &str) -> Result<(), StorageError> {
        self.fenced(&format!("dispose({pointer})"))?;
        let storage = self.storage.clone();
        let p = pointer.to_string();
        self.call_bounded_when_stopping("dispose", &format!("dispose({pointer})"), move || {
            storage.dispose(&p)
        })
    }

    /// `discard(handle)` of an object no checkpoint references (a SHARED one, or what a failed
    /// checkpoint wrote), which a stopping run still waits for (up to [`STOPPING_BOUND`]), so a
    /// clean stop leaves no orphan.
    pub(crate) fn discard(&self, handle: StateHandle) -> Result<(), StorageError> {
        self.fenced("discard()")?;
        let storage = self.storage.clone();
        self.call_bounded_when_stopping("discard", "discard()", move || storage.discard(&handle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A storage that is never called: `call` runs closures, not storage methods.
    struct Nothing;

    impl CheckpointStorage for Nothing {
        fn info(&self) -> StorageInfo {
            StorageInfo {
                capabilities: cairn_plugin_api::Capabilities::empty(),
                inline_threshold: 0,
                max_state_size: None,
                location: "nowhere".into(),
            }
        }
        fn job(&self, _: &str) -> cairn_plugin_api::StorageResult<Box<dyn JobStorage>> {
            Err(StorageError::Unsupported("test".into()))
        }
        fn resolve(&self, _: &str) -> cairn_plugin_api::StorageResult<ResolvedCheckpoint> {
            Err(StorageError::Unsupported("test".into()))
        }
        fn open_handle(
            &self,
            _: &StateHandle,
        ) -> cairn_plugin_api::StorageResult<Box<dyn InputStream>> {
            Err(StorageError::Unsupported("test".into()))
        }
        fn discard(&self, _: &StateHandle) -> cairn_plugin_api::StorageResult<()> {
            Ok(())
        }
        fn dispose(&self, _: &str) -> cairn_plugin_api::StorageResult<()> {
            Ok(())
        }
        fn corrupt_for_testing(&self, _: &StateHandle) -> cairn_plugin_api::StorageResult<()> {
            Ok(())
        }
    }

    fn calls(deadline: Duration) -> (Arc<PluginCalls>, Arc<AtomicBool>) {
        let cancel = Arc::new(AtomicBool::new(false));
        (
            PluginCalls::new(Arc::new(Nothing), deadline, cancel.clone()),
            cancel,
        )
    }

    #[test]
    fn a_call_returns_its_result_and_its_worker_is_reused() {
        let (c, _) = calls(Duration::from_secs(60));
        let first = c
            .call("a", "a()", c.deadline(), None, || {
                Ok(std::thread::current().id())
            })
            .unwrap();
        let second = c
            .call("b", "b()", c.deadline(), None, || {
                Ok(std::thread::current().id())
            })
            .unwrap();
        assert_eq!(first, second, "the idle worker runs the next call");
        let err = c
            .call::<()>("c", "c()", c.deadline(), None, || {
                Err(StorageError::NotFound("x".into()))
            })
            .unwrap_err();
        assert!(matches!(err, StorageError::NotFound(_)));
    }

    #[test]
    fn a_hanging_call_times_out_naming_itself_and_its_late_result_is_undone() {
        let (c, _) = calls(Duration::from_millis(20));
        let (release_tx, release) = crossbeam_channel::bounded::<()>(0);
        let (undone_tx, undone) = crossbeam_channel::bounded(1);
        let undo: Undo<u32> = Box::new(move |late| {
            let _ = undone_tx.send(late.ok());
        });
        let err = c
            .call(
                "list_completed",
                "list_completed() of job 'j'",
                c.deadline(),
                Some(undo),
                move || {
                    let _ = release.recv();
                    Ok(7)
                },
            )
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StorageError::Timeout(_)), "{text}");
        assert!(
            text.contains("list_completed() of job 'j'") && text.contains("20ms"),
            "{text}"
        );
        release_tx.send(()).unwrap();
        assert_eq!(
            undone.recv().unwrap(),
            Some(7),
            "the late result reached the undo"
        );
        // The abandoned worker is not reused: the next call still works.
        assert_eq!(
            c.call("d", "d()", Duration::from_secs(60), None, || Ok(1))
                .unwrap(),
            1
        );
    }

    #[test]
    fn a_cancel_gives_up_at_once_and_a_huge_deadline_never_overflows() {
        let (c, cancel) = calls(Duration::MAX);
        cancel.store(true, Ordering::Relaxed);
        let (_hold, wait) = crossbeam_channel::bounded::<()>(0);
        let err = c
            .call("job", "job('j')", c.deadline(), None, move || {
                let _ = wait.recv();
                Ok(())
            })
            .unwrap_err();
        assert!(err.to_string().contains("the job is stopping"), "{err}");
    }

    #[test]
    fn a_last_call_while_stopping_is_waited_for_and_still_has_its_deadline() {
        let (c, cancel) = calls(Duration::from_secs(600));
        cancel.store(true, Ordering::Relaxed);
        // Answers only once the caller is already stopping: a plain call would have given up.
        let (go, wait) = crossbeam_channel::bounded::<()>(0);
        let answer = std::thread::spawn(move || go.send(()));
        let got = c.call_while_stopping("write_lease", "write_lease()", c.deadline(), move || {
            wait.recv()
                .map_err(|e| StorageError::Other(e.to_string()))?;
            Ok(7)
        });
        assert_eq!(got.unwrap(), 7);
        answer.join().unwrap().unwrap();
        // A call that never answers still ends at its deadline.
        let (_hold, wait) = crossbeam_channel::bounded::<()>(0);
        let err = c
            .call_while_stopping(
                "write_lease",
                "write_lease()",
                Duration::from_millis(50),
                move || {
                    let _ = wait.recv();
                    Ok(())
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("write_lease()"), "{err}");
    }

    #[test]
    fn a_clean_up_call_has_its_whole_deadline_until_the_job_stops_then_only_the_bound() {
        let (c, cancel) = calls(Duration::from_secs(600));
        let bounded = OnCancel::WaitAtMost(Duration::from_millis(20));
        // Not stopping: a call slower than the bound still gets its answer (the sleep is the
        // plugin being slow, not synchronization: a slower machine only makes it slower).
        let got = c.call_with("discard", "discard()", c.deadline(), None, bounded, || {
            std::thread::sleep(Duration::from_millis(100));
            Ok(7)
        });
        assert_eq!(got.unwrap(), 7);
        // Stopping: a call that never answers ends after the bound, not the 600 s deadline.
        cancel.store(true, Ordering::Relaxed);
        let (_hold, wait) = crossbeam_channel::bounded::<()>(0);
        let err = c
            .call_with(
                "discard",
                "discard()",
                c.deadline(),
                None,
                bounded,
                move || {
                    let _ = wait.recv();
                    Ok(())
                },
            )
            .unwrap_err();
        assert!(matches!(err, StorageError::Timeout(_)), "{err}");
    }
}
