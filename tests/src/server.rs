//! What every test server needs, written once: ports reserved without races, a guard that kills
//! the server when the test process ends, a bounded retry when a port was taken anyway, the
//! installers that put a server into `target/`, and a minimal HTTP/1.0 client for readiness
//! probes and set-up requests. The S3 server ([`crate::s3`]), Azurite ([`crate::azure`]) and
//! the GCS emulator ([`crate::gcs`]) are built on it.
//!
//! # Ports without races
//!
//! None of these servers can be handed a listening socket, so their ports are chosen before they
//! bind them. Two things keep anything else from taking them in between:
//!
//! - they come from below the kernel's ephemeral range (`ip_local_port_range`), so no socket
//!   bound to port 0 and no outgoing connection is ever given one;
//! - each is reserved by an exclusive lock on `$TMPDIR/cairn-test-ports/<port>.lock`, held for
//!   the server's whole life (restarts included), so no other server started by these modules,
//!   in this process or another, picks it.
//!
//! A program outside cairn's tests could still bind one of them explicitly; then the server
//! exits with "address already in use" and is started again on fresh ports, up to
//! [`START_ATTEMPTS`] times (`start_retrying`). A test that still cannot get a server panics
//! with every attempt's reason: it never skips and never passes without a server.
//!
//! # The guard
//!
//! Each server runs under a small shell guard (`Guarded`) that kills it (SIGKILL) when the
//! guard's stdin reaches end of file: when `Guarded::kill` closes it, or when the test process
//! ends in any way, since the kernel closes the pipe then. Statics are never dropped, so a
//! process-wide server needs this to not outlive the tests; its guard also removes the server's
//! data directory once it has killed the server. A server that exits by itself keeps its
//! directory, so that its log can say why (a failed start's directory is removed by its
//! `TempDir`).

use std::{
    collections::hash_map::RandomState,
    fs::File,
    hash::{BuildHasher, Hasher},
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

/// How many times a server whose ports were taken is started again on fresh ports.
pub const START_ATTEMPTS: usize = 5;

/// How long a started server may take to answer.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Ports reserved for one server: the locks are held as long as this value lives.
#[derive(Debug)]
pub(crate) struct Reservation {
    ports: Vec<u16>,
    _locks: Vec<File>,
}

impl Reservation {
    /// The reserved ports, in the order they were handed out.
    pub(crate) fn ports(&self) -> &[u16] {
        &self.ports
    }
}

/// The range ports are reserved from: below the kernel's ephemeral range, where nothing gets a
/// port without asking for it by number.
pub(crate) fn reservable_range() -> std::ops::Range<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Stay clear of the well-known and commonly configured ports below 10000.
    10_000..ephemeral_low.max(10_000 + 1024)
}

/// A pseudo-random number, different in every call and every process.
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Reserve `count` ports (see the module docs): each is locked for this process and free on
/// 127.0.0.1 at the time of the reservation.
pub(crate) fn reserve_ports(count: usize) -> Result<Reservation, String> {
    let dir = std::env::temp_dir().join("cairn-test-ports");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let range = reservable_range();
    let span = u64::from(range.end - range.start);
    let first = random_u64() % span;
    let mut ports = Vec::new();
    let mut locks = Vec::new();
    for i in 0..span {
        if ports.len() == count {
            break;
        }
        let port = range.start + ((first + i) % span) as u16;
        let path = dir.join(format!("{port}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("locking {}: {e}", path.display()))
            }
        }
        // Held by a program outside the tests right now: skip it.
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        ports.push(port);
        locks.push(file);
    }
    if ports.len() < count {
        return Err(format!(
            "cannot reserve {count} free loopback ports in {}..{}",
            range.start, range.end
        ));
    }
    Ok(Reservation {
        ports,
        _locks: locks,
    })
}

/// Why a launch failed.
#[derive(Debug)]
pub(crate) struct LaunchError {
    pub(crate) message: String,
    /// The server exited because a port was in use: worth a retry on other ports.
    pub(crate) port_taken: bool,
}

impl LaunchError {
    /// A failure a retry would not cure.
    pub(crate) fn fatal(message: String) -> Self {
        LaunchError {
            message,
            port_taken: false,
        }
    }
}

/// Run `attempt` (which reserves its ports and starts the server on them) until it succeeds,
/// fails for another reason than a taken port, or has failed [`START_ATTEMPTS`] times; the
/// error then gives every attempt's reason.
pub(crate) fn start_retrying<T>(
    name: &str,
    mut attempt: impl FnMut() -> Result<T, LaunchError>,
) -> Result<T, String> {
    let mut failures = Vec::new();
    for n in 1..=START_ATTEMPTS {
        match attempt() {
            Ok(started) => return Ok(started),
            Err(e) if e.port_taken => failures.push(format!("attempt {n}: {}", e.message)),
            Err(e) => return Err(e.message),
        }
    }
    Err(format!(
        "{name} could not bind its ports {START_ATTEMPTS} times in a row (another program \
         takes ports below the ephemeral range?):\n{}",
        failures.join("\n")
    ))
}

/// A server under a small shell guard (see the module docs).
pub(crate) struct Guarded {
    /// The shell; it exits with the server's status once the server has exited.
    guard: Child,
    /// Its stdin: closing it kills the server.
    stdin: Option<ChildStdin>,
}

/// The guard: keep stdin (the pipe) on fd 3 and run the server with its output on the guard's
/// stderr (the log). A watcher waits for end of file on fd 3, then kills the server (SIGKILL)
/// and, with `CAIRN_GUARD_REMOVE` set, removes that directory (the data of a process-wide
/// server, whose `TempDir` is never dropped). The watcher ignores SIGINT, SIGTERM and SIGHUP,
/// so a signal sent to the whole process group (Ctrl-C, `timeout`) cannot stop it before the
/// test process's end closes the pipe. The guard exits with the server's status; if the server
/// exited by itself, the guard stops the watcher first (nothing is removed, so its log can say
/// why, and no pid the server had is killed once another process may have it).
const GUARD_SCRIPT: &str = r#"exec 3<&0 </dev/null
"$@" >&2 3<&- &
pid=$!
(
  trap '' INT TERM HUP
  read -r _ <&3
  kill -9 "$pid" 2>/dev/null
  if [ -n "$CAIRN_GUARD_REMOVE" ]; then rm -rf "$CAIRN_GUARD_REMOVE"; fi
) &
watcher=$!
exec 3<&-
wait "$pid"
status=$?
if kill -0 "$watcher" 2>/dev/null && [ "$status" != 137 ]; then
  kill -9 "$watcher" 2>/dev/null
fi
wait "$watcher" 2>/dev/null
exit "$status""#;

impl Guarded {
    /// Start `program` with `args` under the guard, its stdout and stderr appended to `log`.
    pub(crate) fn spawn(
        program: &Path,
        args: &[String],
        log: File,
        remove_on_exit: Option<&Path>,
    ) -> Result<Guarded, String> {
        let mut guard = Command::new("sh")
            .env(
                "CAIRN_GUARD_REMOVE",
                remove_on_exit.map_or(Default::default(), |p| p.as_os_str().to_owned()),
            )
            .arg("-c")
            .arg(GUARD_SCRIPT)
            .arg("cairn-test-server-guard")
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run sh to start {}: {e}", program.display()))?;
        let stdin = guard.stdin.take();
        Ok(Guarded { guard, stdin })
    }

    /// The server's exit status, if it has exited.
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.guard.try_wait().ok().flatten()
    }

    /// Kill the server and wait for the guard.
    pub(crate) fn kill(&mut self) {
        drop(self.stdin.take());
        let _ = self.guard.wait();
    }
}

/// A log file appended to by a server, read back for failure messages.
pub(crate) struct Log(PathBuf);

impl Log {
    /// The log at `path`, to read.
    pub(crate) fn at(path: PathBuf) -> Log {
        Log(path)
    }

    /// The log at `path`, opened for the server to append to.
    pub(crate) fn create(path: PathBuf) -> Result<(Log, File), String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("creating the log {}: {e}", path.display()))?;
        Ok((Log(path), file))
    }

    /// Everything logged so far.
    pub(crate) fn text(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap_or_default()
    }

    /// Its last 20 lines.
    pub(crate) fn tail(&self) -> String {
        let log = self.text();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// Call `probe` every 200 ms until it succeeds, the server exits, or [`START_TIMEOUT`] passes.
/// A server gives no other sign of being ready than answering.
pub(crate) fn wait_until_ready(
    process: &mut Guarded,
    mut probe: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let started = Instant::now();
    let mut last = String::from("nothing tried yet");
    while started.elapsed() < START_TIMEOUT {
        if let Some(status) = process.exited() {
            return Err(format!("it exited with {status}"));
        }
        match probe() {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("no answer after {START_TIMEOUT:?}; last: {last}"))
}

/// An HTTP response: status code and body.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// A minimal HTTP/1.0 request to 127.0.0.1:`port` with extra `headers` (1.0, so that the
/// answer is never chunked and its body can be read as it comes).
pub(crate) fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("{method} {addr}{path}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("{method} {addr}{path}: {e}"))?;
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{method} {addr}{path}: no HTTP status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok(Response { status, body })
}

/// [`request`] without extra headers; the response's status code.
pub(crate) fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Result<u16, String> {
    request(port, method, path, &[], body).map(|r| r.status)
}

/// Whether `host` (`127.0.0.1:8333`, `localhost:8333`, `[::1]:8333`, with or without a port)
/// is this machine's loopback interface, exactly: `localhost.example.com` is not.
pub(crate) fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `url` (`http://host:port/path`) if its host is loopback, without a trailing `/`; else why
/// not, naming `variable`.
pub(crate) fn loopback_url(variable: &str, url: &str) -> Result<String, String> {
    let host = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("{variable}={url} is not an http:// URL"))?;
    if !is_loopback(host) {
        return Err(format!(
            "{variable}={url} is not a loopback address; tests talk to 127.0.0.1 only"
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// A non-empty environment variable, or `None`.
pub(crate) fn env_var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `name` on `PATH`.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// A program a test server needs: `variable` if set (it must exist), else `name` on `PATH`.
pub(crate) fn given_program(variable: &str, name: &str) -> Result<Option<PathBuf>, String> {
    if let Some(p) = std::env::var_os(variable) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(Some(p))
        } else {
            Err(format!("{variable}={} does not exist", p.display()))
        };
    }
    Ok(on_path(name))
}

/// Install something into `dir` once, across threads and processes: `install` runs with an
/// exclusive lock on `<dir>.lock` held (a `flock`, which also excludes other threads of this
/// process, since each call opens the file anew), unless an earlier install finished (it leaves
/// `<dir>/.cairn-installed`); an interrupted one is started over.
pub(crate) fn install_once(
    dir: &Path,
    install: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    let done = dir.join(".cairn-installed");
    if done.is_file() {
        return Ok(());
    }
    let parent = dir.parent().expect("an install directory has a parent");
    std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    let lock_path = dir.with_extension("lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("opening {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    if done.is_file() {
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| format!("removing the unfinished install {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    install(dir)?;
    std::fs::write(&done, b"").map_err(|e| format!("writing {}: {e}", done.display()))
}

/// Run `command` (an installer); its stderr in the error if it fails.
pub(crate) fn run_installer(mut command: Command, what: &str) -> Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{what}`: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "`{what}` failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// A key prefix no other test (or earlier run) uses: `<name>-<pid>-<nanos>`.
pub fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{name}-{}-{nanos}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_endpoints_are_accepted() {
        for host in [
            "127.0.0.1:8333",
            "127.1.2.3",
            "localhost:9000",
            "[::1]:8333",
            "localhost",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "localhost.example.com:9000",
            "127.0.0.1.example.com",
            "10.0.0.1:8333",
            "[2001:db8::1]:80",
            "",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
        assert_eq!(
            loopback_url("V", "http://127.0.0.1:1/acct/").unwrap(),
            "http://127.0.0.1:1/acct"
        );
        assert!(loopback_url("V", "http://10.0.0.1:1")
            .unwrap_err()
            .contains("V=http://10.0.0.1:1 is not a loopback address"));
        assert!(loopback_url("V", "127.0.0.1:1").is_err());
    }

    #[test]
    fn reservations_never_overlap_and_stay_below_the_ephemeral_range() {
        let range = reservable_range();
        let a = reserve_ports(8).unwrap();
        let b = reserve_ports(8).unwrap();
        let (a, b) = (a.ports(), b.ports());
        for p in a.iter().chain(b) {
            assert!(range.contains(p), "port {p} outside {range:?}");
        }
        let mut all: Vec<u16> = a.iter().chain(b).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(
            all.len(),
            16,
            "two live reservations share a port: {a:?} {b:?}"
        );
    }

    #[test]
    fn a_released_reservation_frees_its_locks() {
        let first = reserve_ports(1).unwrap();
        let dir = std::env::temp_dir().join("cairn-test-ports");
        let path = dir.join(format!("{}.lock", first.ports()[0]));
        let other = File::options().write(true).open(&path).unwrap();
        assert!(
            matches!(other.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
            "{} is not locked while reserved",
            path.display()
        );
        drop(first);
        other.try_lock().unwrap();
    }

    #[test]
    fn the_guard_kills_its_process_when_stdin_closes() {
        let dir = tempfile::tempdir().unwrap();
        let log = File::create(dir.path().join("log")).unwrap();
        let sleep = on_path("sleep").expect("sleep on PATH");
        let mut process = Guarded::spawn(&sleep, &["1000".to_string()], log, None).unwrap();
        assert!(process.exited().is_none(), "sleep 1000 ended on its own");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            process.kill();
            let _ = tx.send(process.exited());
        });
        let status = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("closing the guard's stdin did not end the process");
        let status = status.expect("the guard exited");
        assert!(
            !status.success(),
            "sleep 1000 cannot have succeeded: {status}"
        );
    }

    #[test]
    fn the_guard_removes_the_data_of_a_process_wide_server() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let log = File::create(dir.path().join("log")).unwrap();
        let sleep = on_path("sleep").expect("sleep on PATH");
        let mut process = Guarded::spawn(&sleep, &["1000".to_string()], log, Some(&data)).unwrap();
        process.kill();
        assert!(!data.exists(), "{} outlived its server", data.display());
        // A server that exits by itself (here: refusing its argument) keeps its directory and
        // log, for the message that says why it did not start.
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("log"), b"").unwrap();
        let log = File::options().append(true).open(data.join("log")).unwrap();
        let mut process =
            Guarded::spawn(&sleep, &["nonsense".to_string()], log, Some(&data)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(process.guard.wait());
        });
        let status = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("sleep nonsense did not exit")
            .unwrap();
        assert!(!status.success());
        let text = std::fs::read_to_string(data.join("log")).unwrap();
        assert!(!text.is_empty(), "the failed server's log is empty");
    }

    #[test]
    fn a_taken_port_is_retried_and_every_reason_is_kept() {
        let mut calls = 0;
        let err = start_retrying::<()>("a server", || {
            calls += 1;
            Err(LaunchError {
                message: format!("taken {calls}"),
                port_taken: true,
            })
        })
        .unwrap_err();
        assert_eq!(calls, START_ATTEMPTS);
        assert!(err.contains("attempt 1: taken 1") && err.contains("attempt 5: taken 5"));
        let mut calls = 0;
        let err = start_retrying::<()>("a server", || {
            calls += 1;
            Err(LaunchError::fatal("broken".into()))
        })
        .unwrap_err();
        assert_eq!((calls, err.as_str()), (1, "broken"));
    }

    #[test]
    fn an_install_runs_once_and_an_interrupted_one_is_redone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("thing");
        // An earlier install that died half way.
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("half"), b"").unwrap();
        let mut runs = 0;
        for _ in 0..2 {
            install_once(&dir, |d| {
                runs += 1;
                assert!(!d.join("half").exists(), "the unfinished install was kept");
                std::fs::write(d.join("bin"), b"").map_err(|e| e.to_string())
            })
            .unwrap();
        }
        assert_eq!(runs, 1);
        assert!(dir.join("bin").is_file());
    }
}
