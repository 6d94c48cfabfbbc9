//! The job's side of the control socket.
//!
//! Starting: the socket directory is made or checked (`paths`); the lock file next to the
//! socket is locked (`flock`, released by the kernel when the process dies however it dies),
//! so a socket found there now was left by a process that is gone and is removed; the socket
//! is bound under a temporary name, given mode 0600 and renamed into place, so it never exists
//! at its name with a wider mode. A lock held by a live process means the job already runs
//! under this config, and starting fails naming that process.
//!
//! Serving: one thread accepts; each connection gets a thread, reads one request line (at most
//! [`MAX_REQUEST_BYTES`], within 10 s), checks that the peer is this user (`SO_PEERCRED`, in
//! case the socket's mode was widened), and answers with one line. `savepoint` answers when the
//! savepoint is complete, `stop` and `cancel` when the job has stopped ([`Server::finish`]).

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    os::unix::{
        fs::{FileTypeExt, OpenOptionsExt, PermissionsExt},
        net::{UnixListener, UnixStream},
    },
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::{
    client::Client,
    paths::{self, SocketPaths},
    protocol::{
        JobFacts, Reply, ReplyLine, Request, RequestLine, SavepointView, StatusReport,
        MAX_REQUEST_BYTES, PROTOCOL_VERSION,
    },
    ControlError, Handle,
};
use crate::runtime::{epoch_ms, Command, IfSavepointFails};

/// A request line must arrive within this long of connecting.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A reply must be taken within this long (a client that stopped reading is given up).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The control socket of a running job. [`Server::finish`] (or dropping it) answers whoever
/// waits for the job's end, stops serving and removes the socket.
pub(super) struct Server {
    paths: SocketPaths,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    /// Dropped when the job has ended: every connection waiting for the end wakes.
    ended_tx: Option<Sender<()>>,
    /// Held (locked) for as long as the socket is served.
    _lock: File,
}

struct Shared {
    facts: JobFacts,
    handle: Handle,
    uid: u32,
    closing: AtomicBool,
    ended: Receiver<()>,
    /// The job's summary as JSON (or `{"error": ...}`), once it has ended.
    outcome: Mutex<Option<serde_json::Value>>,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl Server {
    /// Serve the control socket at `paths` for the job `facts` describes.
    pub(super) fn start(
        paths: SocketPaths,
        facts: JobFacts,
        handle: Handle,
    ) -> Result<Server, ControlError> {
        paths::prepare_dir(&paths.dir)?;
        let lock = lock_file(&paths)?;
        // We hold the lock: whatever is at the socket's name was left by a process that died.
        match std::fs::symlink_metadata(&paths.socket) {
            Ok(meta) if meta.file_type().is_socket() => {
                tracing::info!(socket = %paths.socket.display(), "removing the control socket a job that ended without cleaning up left");
                std::fs::remove_file(&paths.socket).map_err(|e| {
                    ControlError::io(&paths.socket, "cannot remove the stale control socket", e)
                })?;
            }
            Ok(_) => {
                return Err(ControlError::Setup(format!(
                    "{} is in the way of the job's control socket and is not a socket; remove it",
                    paths.socket.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ControlError::io(&paths.socket, "cannot inspect", e)),
        }
        let name = paths
            .socket
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = paths
            .dir
            .join(format!(".{name}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&temp);
        let listener = UnixListener::bind(&temp)
            .map_err(|e| ControlError::io(&temp, "cannot bind the control socket", e))?;
        let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&temp, &paths.socket));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&temp);
            return Err(ControlError::io(
                &paths.socket,
                "cannot put the control socket in place",
                e,
            ));
        }
        let (ended_tx, ended) = bounded(0);
        let shared = Arc::new(Shared {
            facts,
            handle,
            uid: paths::euid(),
            closing: AtomicBool::new(false),
            ended,
            outcome: Mutex::new(None),
            connections: Mutex::new(Vec::new()),
        });
        let theirs = shared.clone();
        let accept = std::thread::Builder::new()
            .name("control".to_string())
            .spawn(move || accept_loop(&theirs, &listener))
            .map_err(|e| ControlError::Setup(format!("cannot start the control thread: {e}")))?;
        Ok(Server {
            paths,
            shared,
            accept: Some(accept),
            ended_tx: Some(ended_tx),
            _lock: lock,
        })
    }

    /// The job has ended with `outcome` (its summary as JSON, or `{"error": ...}`): answer
    /// everyone waiting for that, stop serving, remove the socket.
    pub(super) fn finish(&mut self, outcome: serde_json::Value) {
        if self.ended_tx.is_none() {
            return;
        }
        *self
            .shared
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        self.ended_tx = None;
        self.shared.closing.store(true, Ordering::SeqCst);
        // Wake the accepting thread, which then sees `closing`.
        let _ = UnixStream::connect(&self.paths.socket);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let connections = std::mem::take(
            &mut *self
                .shared
                .connections
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for c in connections {
            let _ = c.join();
        }
        if let Err(e) = std::fs::remove_file(&self.paths.socket) {
            tracing::warn!(socket = %self.paths.socket.display(), "cannot remove the control socket: {e}");
        }
        // Removed while still locked, so whoever opens it next makes a new one and locks that
        // (see `lock_file`); the lock itself goes when the file handle is dropped.
        let _ = std::fs::remove_file(&self.paths.lock);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.finish(serde_json::json!({ "error": "the job ended" }));
    }
}

/// Open and lock the lock file of `paths`, or say who holds it. The lock is taken on the
/// file the path names when it is taken: one removed meanwhile by the process that held it
/// (see [`Server::finish`]) is opened again.
fn lock_file(paths: &SocketPaths) -> Result<File, ControlError> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&paths.lock)
            .map_err(|e| ControlError::io(&paths.lock, "cannot open the lock file", e))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(ControlError::AlreadyServed {
                    holder: describe_holder(paths),
                    socket: paths.socket.clone(),
                })
            }
            Err(e) => {
                return Err(ControlError::io(
                    &paths.lock,
                    "cannot lock the lock file",
                    e.into(),
                ))
            }
        }
        let held = lock
            .metadata()
            .map_err(|e| ControlError::io(&paths.lock, "cannot inspect", e))?;
        match std::fs::symlink_metadata(&paths.lock) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok(lock),
            // Removed (or replaced) between our open and our lock: take the one there now.
            _ => continue,
        }
    }
}

/// Who holds the lock of `paths`, as well as the socket can tell.
fn describe_holder(paths: &SocketPaths) -> String {
    match Client::at(paths.socket.clone()).request(Request::Status) {
        Ok(Reply::Status(s)) => format!(
            "process {} on {} since {} serves it",
            s.pid, s.host, s.started
        ),
        _ => "another process holds its lock".to_string(),
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &UnixListener) {
    for stream in listener.incoming() {
        if shared.closing.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accepting a control connection failed: {e}");
                continue;
            }
        };
        let theirs = shared.clone();
        match std::thread::Builder::new()
            .name("control-conn".to_string())
            .spawn(move || serve(&theirs, stream))
        {
            Ok(t) => {
                let mut c = shared.connections.lock().unwrap_or_else(|p| p.into_inner());
                c.retain(|t| !t.is_finished());
                c.push(t);
            }
            Err(e) => tracing::warn!("cannot start a thread for a control connection: {e}"),
        }
    }
}

fn serve(shared: &Shared, stream: UnixStream) {
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let reply = match rustix::net::sockopt::socket_peercred(&stream) {
        Ok(peer) if peer.uid.as_raw() == shared.uid => {
            read_request(&stream).map_or_else(|error| Reply::Error { error }, |r| answer(shared, r))
        }
        Ok(peer) => {
            // Take the request line first (bounded, as for anyone), so the refusal reaches a
            // client that is still writing instead of a closed socket.
            let _ = read_request(&stream);
            tracing::warn!(
                uid = peer.uid.as_raw(),
                "refused a control connection from another user"
            );
            Reply::Error {
                error: format!(
                    "permission denied: this job's control socket serves only uid {}",
                    shared.uid
                ),
            }
        }
        Err(e) => Reply::Error {
            error: format!("cannot tell who connected ({e}); refused"),
        },
    };
    let line = ReplyLine {
        version: PROTOCOL_VERSION,
        reply,
    };
    let mut text = serde_json::to_string(&line).unwrap_or_else(|e| {
        format!(r#"{{"version":{PROTOCOL_VERSION},"reply":"error","error":"cannot encode the reply: {e}"}}"#)
    });
    text.push('\n');
    let mut stream = stream;
    if let Err(e) = stream.write_all(text.as_bytes()) {
        tracing::debug!("writing a control reply failed: {e}");
    }
}

/// The request line, or a one-line reason why there is none.
fn read_request(stream: &UnixStream) -> Result<Request, String> {
    let mut line = String::new();
    BufReader::new(stream.take(MAX_REQUEST_BYTES))
        .read_line(&mut line)
        .map_err(|e| format!("reading the request: {e}"))?;
    if !line.ends_with('\n') {
        return Err(format!(
            "the request is not one line of at most {MAX_REQUEST_BYTES} bytes"
        ));
    }
    let value: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| format!("the request is not JSON: {e}"))?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(format!(
                "the request speaks control protocol version {v}; this job speaks version \
                 {PROTOCOL_VERSION}: use the cairn that runs the job"
            ))
        }
        None => {
            return Err(
                "the request has no protocol version; it is not a cairn control request"
                    .to_string(),
            )
        }
    }
    serde_json::from_value::<RequestLine>(value)
        .map(|l| l.request)
        .map_err(|e| format!("the request is not understood: {e}"))
}

fn answer(shared: &Shared, request: Request) -> Reply {
    let error = |error: &str| Reply::Error {
        error: error.to_string(),
    };
    let stopped_first = "the job stopped before the savepoint completed";
    let commands = &shared.handle.commands;
    match request {
        Request::Status => Reply::Status(StatusReport::new(
            &shared.facts,
            &shared.handle.counters,
            shared.handle.lease.status().as_ref(),
        )),
        Request::Savepoint { target } => {
            let (tx, rx) = bounded(1);
            if commands
                .send(Command::Savepoint { target, reply: tx })
                .is_err()
            {
                return error("the job has stopped");
            }
            crossbeam_channel::select! {
                recv(rx) -> r => match r {
                    Ok(Ok(report)) => Reply::Savepoint(SavepointView::new(&report, epoch_ms())),
                    Ok(Err(e)) => error(&e),
                    Err(_) => error(stopped_first),
                },
                recv(shared.ended) -> _ => error(stopped_first),
            }
        }
        Request::Stop { target } => {
            let (tx, rx) = bounded(1);
            let sent = commands.send(Command::StopWithSavepoint {
                target,
                reply: Some(tx),
                if_it_fails: IfSavepointFails::KeepRunning,
            });
            if sent.is_err() {
                return error("the job has stopped");
            }
            let savepoint = crossbeam_channel::select! {
                recv(rx) -> r => match r {
                    Ok(Ok(report)) => SavepointView::new(&report, epoch_ms()),
                    Ok(Err(e)) => return error(&e),
                    Err(_) => return error(stopped_first),
                },
                recv(shared.ended) -> _ => return error(stopped_first),
            };
            Reply::Stopped {
                savepoint,
                summary: wait_for_end(shared),
            }
        }
        Request::Cancel => {
            shared.handle.cancel.store(true, Ordering::SeqCst);
            let _ = commands.send(Command::Cancel);
            Reply::Cancelled {
                summary: wait_for_end(shared),
            }
        }
    }
}

/// Wait until the job has ended; its summary.
fn wait_for_end(shared: &Shared) -> serde_json::Value {
    let _ = shared.ended.recv();
    shared
        .outcome
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or(serde_json::Value::Null)
}
