//! Control of a running job from another process: `cairn status`, `cairn savepoint`, `cairn
//! stop --savepoint` and `cairn cancel` (Flink's REST API and `flink savepoint|stop|cancel`,
//! for one machine).
//!
//! A running job serves a Unix socket that only its user can open (mode 0600, in a directory
//! only that user may write, peers checked with `SO_PEERCRED`); where it is follows from the
//! config file and the job id (`paths`), so every command finds it from `--config FILE`. The
//! protocol is a versioned line of JSON each way (`protocol`). The job's side (`server`) turns
//! requests into the run loop's [`Command`]s and reads its [`Counters`]; the `client` side is
//! what the commands use.
//!
//! [`Services`] is what a run wraps itself in: it starts the socket, and the Prometheus
//! endpoint when `[metrics] listen` asks for it, once the job is taken hold of
//! ([`RunOptions::on_started`]), and stops both when the run returns, answering `stop` and
//! `cancel` with the run's summary.
//!
//! Why a socket and not a port? A Unix socket's permissions say who may talk to the job,
//! with nothing to configure; a TCP port would be open to every user of the machine (and
//! needs one per job). Metrics, which are read-only, are the one thing served over TCP.

use std::{
    path::{Path, PathBuf},
    sync::{atomic::AtomicBool, Arc, Mutex},
};

use crossbeam_channel::Sender;

mod client;
mod paths;
pub mod protocol;
mod server;

pub use client::Client;
pub use paths::{euid, runtime_dir, socket_paths, SocketPaths};
pub use protocol::{Reply, Request, SavepointView, StatusReport, PROTOCOL_VERSION};

use crate::{
    config::Config,
    metrics::{self, MetricsServer},
    runtime::{Command, Counters, RunError, RunOptions, Summary},
};

/// Why the control socket could not be served or reached.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No job is running for the config (no socket, or one a dead job left).
    #[error("{}", not_running(socket, config, job.as_deref(), *stale))]
    NotRunning {
        /// Where the socket would be.
        socket: PathBuf,
        /// The config, for the message (empty when the socket was named directly).
        config: String,
        /// The job id, if known.
        job: Option<String>,
        /// A socket is there, but nothing answers: a job that was killed left it.
        stale: bool,
    },
    /// The socket belongs to another user.
    #[error(
        "permission denied connecting to the control socket {}: it is open only to the user \
         who runs the job (uid {owner})",
        socket.display()
    )]
    PermissionDenied {
        /// The socket.
        socket: PathBuf,
        /// Its owner.
        owner: u32,
    },
    /// The socket's directory could let someone else take the job's place.
    #[error("refusing the control socket directory {}: {why}", dir.display())]
    UnsafeDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        why: String,
    },
    /// Another live process serves this job's socket: the job already runs.
    #[error(
        "the job is already running under this config: {holder} (control socket {}); use \
         `cairn status` to see it",
        socket.display()
    )]
    AlreadyServed {
        /// Who, as well as can be told.
        holder: String,
        /// The socket.
        socket: PathBuf,
    },
    /// The socket cannot be placed.
    #[error("control socket: {0}")]
    Setup(String),
    /// An I/O error on a path.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The other side said something unexpected.
    #[error("{0}")]
    Protocol(String),
    /// The job answered with an error.
    #[error("{0}")]
    Job(String),
}

impl ControlError {
    pub(crate) fn io(path: &Path, what: &'static str, source: std::io::Error) -> Self {
        ControlError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

fn not_running(socket: &Path, config: &str, job: Option<&str>, stale: bool) -> String {
    let what = match job {
        Some(job) => format!("no job is running for {config} (job '{job}')"),
        None => "no job is serving this socket".to_string(),
    };
    let why = if stale {
        format!(
            "the control socket {} was left by a job that ended without removing it (killed?); \
             the next `cairn run` removes it",
            socket.display()
        )
    } else {
        format!("there is no control socket at {}", socket.display())
    };
    let start = if config.is_empty() || job.is_none() {
        String::new()
    } else if config == "the embedded default config" {
        "; start one with `cairn run`".to_string()
    } else {
        format!("; start one with `cairn run --config {config}`")
    };
    format!("{what}: {why}{start}")
}

/// What the control socket drives: the run's command channel, cancel flag and counters.
#[derive(Clone)]
pub(crate) struct Handle {
    pub(crate) commands: Sender<Command>,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) counters: Arc<Counters>,
    /// The lease the run holds, for `status`.
    pub(crate) lease: Arc<crate::lease::LeaseMonitor>,
}

/// What serves a running job: its control socket and, when `[metrics] listen` is set, its
/// Prometheus endpoint. See the module docs and [`Services::run`].
pub struct Services {
    config: Config,
    job_kind: String,
    serving: Mutex<Serving>,
}

#[derive(Default)]
struct Serving {
    server: Option<server::Server>,
    metrics: Option<MetricsServer>,
    socket: Option<PathBuf>,
}

impl Services {
    /// The services of the job `config` runs, a job of kind `job_kind`. Nothing is served
    /// until [`Services::run`] has the job.
    pub fn new(config: &Config, job_kind: &str) -> Services {
        Services {
            config: config.clone(),
            job_kind: job_kind.to_string(),
            serving: Mutex::default(),
        }
    }

    /// Run `run` with `opts`, serving the job while it runs: the control socket and metrics
    /// start when the run calls `on_started` (before `opts.on_started`, which may then read
    /// [`Services::socket`] and [`Services::metrics_url`]); commands from the socket reach the
    /// run along with those of `opts.commands`; both stop when `run` returns, after `stop`
    /// and `cancel` requests are answered with its summary.
    pub fn run<'a>(
        &self,
        opts: &RunOptions<'a>,
        run: impl FnOnce(&RunOptions<'_>) -> Result<Summary, RunError>,
    ) -> Result<Summary, RunError> {
        let (tx, rx) = crossbeam_channel::unbounded();
        if let Some(theirs) = opts.commands.clone() {
            let ours = tx.clone();
            // Ends when the caller's sender goes, or the run's receiver does.
            let _ = std::thread::Builder::new()
                .name("commands".to_string())
                .spawn(move || {
                    for command in theirs {
                        if ours.send(command).is_err() {
                            break;
                        }
                    }
                });
        }
        let handle = Handle {
            commands: tx,
            cancel: opts.cancel.clone(),
            counters: opts.counters.clone(),
            lease: opts.lease.clone(),
        };
        let on_started = || {
            self.start(&handle).map_err(|e| e.to_string())?;
            (opts.on_started)()
        };
        let ours = RunOptions {
            from: opts.from.clone(),
            stop_when: opts.stop_when,
            cancel: opts.cancel.clone(),
            commands: Some(rx),
            counters: opts.counters.clone(),
            on_started: &on_started,
            on_restored: opts.on_restored,
            on_progress: opts.on_progress,
            on_checkpoint: opts.on_checkpoint,
            on_failover: opts.on_failover,
            on_summary: opts.on_summary,
            fresh: opts.fresh,
            confirm_fresh: opts.confirm_fresh,
            standby: opts.standby,
            on_lease: opts.on_lease,
            lease: opts.lease.clone(),
        };
        let result = run(&ours);
        let outcome = match &result {
            Ok(summary) => serde_json::to_value(summary)
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() })),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        self.finish(outcome);
        result
    }

    fn start(&self, handle: &Handle) -> Result<(), ServeError> {
        let mut serving = self.serving.lock().unwrap_or_else(|p| p.into_inner());
        if serving.server.is_some() {
            return Ok(());
        }
        let metrics = match self.config.metrics.listen {
            Some(addr) => Some(MetricsServer::start(
                addr,
                metrics::registry(handle.counters.clone(), &self.config.job.id, &self.job_kind),
            )?),
            None => None,
        };
        let paths = socket_paths(&self.config)?;
        let facts = protocol::JobFacts {
            job_id: self.config.job.id.clone(),
            job_kind: self.job_kind.clone(),
            config: paths.config.clone(),
            pid: std::process::id(),
            host: host_name(),
            socket: paths.socket.clone(),
            metrics_url: metrics.as_ref().map(MetricsServer::url),
        };
        let socket = paths.socket.clone();
        serving.server = Some(server::Server::start(paths, facts, handle.clone())?);
        serving.metrics = metrics;
        serving.socket = Some(socket);
        Ok(())
    }

    fn finish(&self, outcome: serde_json::Value) {
        let mut serving = self.serving.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut s) = serving.server.take() {
            s.finish(outcome);
        }
        serving.metrics = None;
    }

    /// The control socket, once served.
    pub fn socket(&self) -> Option<PathBuf> {
        self.serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .socket
            .clone()
    }

    /// Where the metrics are served, once they are (`http://ADDR/metrics`).
    pub fn metrics_url(&self) -> Option<String> {
        self.serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .metrics
            .as_ref()
            .map(MetricsServer::url)
    }

    /// The metrics endpoint's address, once served (the port, when `listen` had port 0).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .metrics
            .as_ref()
            .map(MetricsServer::addr)
    }
}

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
}

/// This machine's name.
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
