//! The client's side of the control socket: `cairn status`, `savepoint`, `stop` and `cancel`.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::MetadataExt, net::UnixStream},
    path::PathBuf,
    time::Duration,
};

use super::{
    paths::{self, Role, SocketPaths},
    protocol::{Reply, ReplyLine, Request, RequestLine, PROTOCOL_VERSION},
    ControlError,
};
use crate::config::Config;

/// How long `status` waits for its answer (the others wait as long as the job takes).
const STATUS_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection-to-be to one job's control socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    /// Set when the socket was found from a config: says which one in "not running" errors.
    origin: Option<(SocketPaths, String)>,
}

impl Client {
    /// The client of the job `config` runs.
    pub fn for_config(config: &Config) -> Result<Client, ControlError> {
        let paths = paths::socket_paths(config)?;
        Ok(Client {
            socket: paths.socket.clone(),
            origin: Some((paths, config.job.id.clone())),
        })
    }

    /// The client of the socket at `socket`.
    pub fn at(socket: PathBuf) -> Client {
        Client {
            socket,
            origin: None,
        }
    }

    /// The socket it connects to.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    fn not_running(&self, stale: bool) -> ControlError {
        let (config, job) = match &self.origin {
            Some((paths, job)) => (
                paths
                    .config
                    .as_ref()
                    .map_or("the embedded default config".to_string(), |f| {
                        f.display().to_string()
                    }),
                Some(job.clone()),
            ),
            None => (String::new(), None),
        };
        ControlError::NotRunning {
            socket: self.socket.clone(),
            config,
            job,
            stale,
        }
    }

    /// Send `request` and wait for the reply. An error reply is [`ControlError::Job`].
    pub fn request(&self, request: Request) -> Result<Reply, ControlError> {
        if let Some(dir) = self.socket.parent() {
            if !dir.exists() {
                return Err(self.not_running(false));
            }
            paths::check_dir(dir, Role::Client)?;
        }
        let owner = match std::fs::symlink_metadata(&self.socket) {
            Ok(m) => m.uid(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.not_running(false))
            }
            // The directory is closed to this user: so is the socket in it.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                let dir = self.socket.parent().unwrap_or(std::path::Path::new("/"));
                return Err(ControlError::PermissionDenied {
                    socket: self.socket.clone(),
                    owner: std::fs::metadata(dir).map_or(u32::MAX, |m| m.uid()),
                });
            }
            Err(e) => return Err(ControlError::io(&self.socket, "cannot inspect", e)),
        };
        let mut stream = match UnixStream::connect(&self.socket) {
            Ok(s) => s,
            Err(e) => {
                return Err(match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => self.not_running(true),
                    std::io::ErrorKind::NotFound => self.not_running(false),
                    std::io::ErrorKind::PermissionDenied => ControlError::PermissionDenied {
                        socket: self.socket.clone(),
                        owner,
                    },
                    _ => ControlError::io(&self.socket, "cannot connect to", e),
                })
            }
        };
        if request == Request::Status {
            let _ = stream.set_read_timeout(Some(STATUS_TIMEOUT));
        }
        let mut line = serde_json::to_string(&RequestLine {
            version: PROTOCOL_VERSION,
            request,
        })
        .map_err(|e| ControlError::Protocol(format!("cannot encode the request: {e}")))?;
        line.push('\n');
        // A job that refuses the connection may answer before it has read the request: its
        // answer is read even when sending failed.
        let sent = stream.write_all(line.as_bytes());
        let mut answer = String::new();
        let read = BufReader::new(&stream).read_line(&mut answer);
        match (sent, read) {
            (_, Ok(n)) if n > 0 => {}
            (Err(e), _) => {
                return Err(ControlError::io(
                    &self.socket,
                    "cannot send the request to",
                    e,
                ))
            }
            (Ok(()), Err(e)) => {
                return Err(ControlError::io(
                    &self.socket,
                    "cannot read the reply from",
                    e,
                ))
            }
            (Ok(()), Ok(_)) => {}
        }
        if answer.is_empty() {
            return Err(ControlError::Protocol(format!(
                "the job's process closed its control socket {} without answering (it ended, \
                 or was killed)",
                self.socket.display()
            )));
        }
        let value: serde_json::Value = serde_json::from_str(&answer).map_err(|e| {
            ControlError::Protocol(format!(
                "{} answered something that is not a cairn control reply ({e})",
                self.socket.display()
            ))
        })?;
        match value.get("version").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
            other => {
                // An error is readable whatever the version.
                if let Some(e) = value.get("error").and_then(|e| e.as_str()) {
                    return Err(ControlError::Job(e.to_string()));
                }
                return Err(ControlError::Protocol(format!(
                    "the job at {} speaks control protocol version {}; this cairn speaks \
                     version {PROTOCOL_VERSION}: use the cairn that runs the job",
                    self.socket.display(),
                    other.map_or("(none)".to_string(), |v| v.to_string())
                )));
            }
        }
        let line: ReplyLine = serde_json::from_value(value).map_err(|e| {
            ControlError::Protocol(format!(
                "{} answered a reply this cairn does not understand ({e})",
                self.socket.display()
            ))
        })?;
        match line.reply {
            Reply::Error { error } => Err(ControlError::Job(error)),
            reply => Ok(reply),
        }
    }
}
