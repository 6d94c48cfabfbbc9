//! Azurite, Microsoft's Azure Storage emulator, on 127.0.0.1 for the object-store plugin's
//! `az://` tests.
//!
//! [`AzureServer::get`] gives the server a test should use, shared by every test of the
//! process:
//!
//! - If `CAIRN_TEST_AZURE_ENDPOINT` is set (as `.ci/run` does after starting one), that server:
//!   the variable is the blob service URL with the account as its first path part
//!   (`http://127.0.0.1:PORT/devstoreaccount1`), with `CAIRN_TEST_AZURE_ACCOUNT`,
//!   `CAIRN_TEST_AZURE_KEY` and `CAIRN_TEST_AZURE_CONTAINER`. Its container must exist.
//! - Otherwise one server started for the whole test process, on first use.
//!
//! [`AzureServer::start_process_wide`] starts one (for `cairn-test-servers`): `azurite-blob`
//! from `CAIRN_TEST_AZURITE`, from `PATH`, or from `target/azurite`, where it is installed the
//! first time with `npm ci` from the lock file in `tests/azurite` (Azurite [`AZURITE_VERSION`],
//! the newest that runs on Node.js 20). It keeps its data in a temporary directory, sends no
//! telemetry, listens on a reserved loopback port ([`crate::server`]: no races, a bounded retry
//! if another program took the port), and dies with the test process however it ends. Requests
//! are signed with the well-known development account and key ([`ACCOUNT`], [`KEY`]), which
//! Azurite checks.
//!
//! The container ([`CONTAINER`]) is created with a signed `Create Container` request, since
//! `object_store` (like the plugin) never creates one. Tests share it by using a key prefix
//! each ([`crate::server::unique_prefix`]).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
};

use base64::Engine;

use crate::{
    artifacts::workspace_root,
    server::{self, env_var, loopback_url, reserve_ports, Guarded, LaunchError, Log, Reservation},
};

/// Azurite's well-known development account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// The key of [`ACCOUNT`], published by Microsoft.
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The container servers this module starts are given.
pub const CONTAINER: &str = "cairn";
/// The Azurite version `tests/azurite/package-lock.json` installs.
pub const AZURITE_VERSION: &str = "3.35.0";

/// The REST API version of the set-up requests.
const API_VERSION: &str = "2021-08-06";

/// How to reach an Azurite (or Azure) blob service and sign requests to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The blob service URL: `http://127.0.0.1:PORT/<account>`.
    pub url: String,
    /// The account name.
    pub account: String,
    /// The account key (base64).
    pub key: String,
    /// A container that exists.
    pub container: String,
}

impl Endpoint {
    /// `[storage.options]` for the object-store plugin with checkpoints under
    /// `az://<container>/<prefix>` and savepoints under `az://<container>/<prefix>-savepoints`,
    /// naming the account, key and endpoint one option each, plus `extra` lines.
    pub fn plugin_options(&self, prefix: &str, extra: &str) -> String {
        format!(
            "{}endpoint = \"{}\"\naccount = \"{}\"\naccess-key = \"{}\"\nallow-http = true\n{extra}",
            self.urls(prefix),
            self.url,
            self.account,
            self.key,
        )
    }

    /// The same options with the account, key and endpoint as one Azure connection string.
    pub fn plugin_options_with_connection_string(&self, prefix: &str, extra: &str) -> String {
        format!(
            "{}connection-string = \"{}\"\n{extra}",
            self.urls(prefix),
            self.connection_string()
        )
    }

    /// The same options with `use-emulator = true` standing for Azurite's well-known account
    /// and key; only the endpoint is given, since this server is not on Azurite's default port.
    pub fn plugin_options_with_emulator_defaults(&self, prefix: &str, extra: &str) -> String {
        format!(
            "{}use-emulator = true\nendpoint = \"{}\"\nallow-http = true\n{extra}",
            self.urls(prefix),
            self.url,
        )
    }

    /// The connection string Azurite documents, for this server.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={};",
            self.account, self.key, self.url
        )
    }

    fn urls(&self, prefix: &str) -> String {
        format!(
            "url = \"az://{c}/{prefix}\"\nsavepoint-url = \"az://{c}/{prefix}-savepoints\"\n",
            c = self.container
        )
    }
}

/// A server this module started: its data, its port and its guarded process.
struct Owned {
    _dir: tempfile::TempDir,
    _reservation: Reservation,
    process: Guarded,
}

/// An Azurite server for tests (see the module docs).
pub struct AzureServer {
    endpoint: Endpoint,
    owned: Option<Mutex<Owned>>,
}

impl AzureServer {
    /// The server tests should use: the one named by `CAIRN_TEST_AZURE_ENDPOINT`, or else one
    /// started on first use and shared by every test of this process. Panics, with the reason,
    /// if there is none (and every later call panics with the same reason, without trying
    /// again).
    pub fn get() -> &'static AzureServer {
        static SHARED: OnceLock<Result<AzureServer, String>> = OnceLock::new();
        let shared = SHARED.get_or_init(|| match env_var("CAIRN_TEST_AZURE_ENDPOINT") {
            Some(url) => from_env(&url),
            None => AzureServer::start_process_wide(),
        });
        match shared {
            Ok(server) => server,
            Err(e) => panic!("no Azurite for this test: {e}"),
        }
    }

    /// Start a server meant to live until the process ends (the shared server, and the one
    /// `cairn-test-servers` runs for `.ci/run`): when it ends, even by a signal, its guard
    /// removes its data directory too.
    pub fn start_process_wide() -> Result<AzureServer, String> {
        let azurite = azurite_binary()?;
        server::start_retrying("Azurite", || launch(&azurite))
    }

    /// How to reach it.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Drop for AzureServer {
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

/// One start of Azurite on a freshly reserved port.
fn launch(azurite: &Path) -> Result<AzureServer, LaunchError> {
    let reservation = reserve_ports(1).map_err(LaunchError::fatal)?;
    launch_on(azurite, reservation)
}

/// One start of Azurite on the port of `reservation`.
fn launch_on(azurite: &Path, reservation: Reservation) -> Result<AzureServer, LaunchError> {
    let fail = LaunchError::fatal;
    let dir = tempfile::Builder::new()
        .prefix("cairn-azurite-")
        .tempdir()
        .map_err(|e| fail(format!("cannot create a data directory for Azurite: {e}")))?;
    let port = reservation.ports()[0];
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)
        .map_err(|e| fail(format!("creating {}: {e}", data.display())))?;
    let (log, file) = Log::create(dir.path().join("azurite.log")).map_err(fail)?;
    let args: Vec<String> = vec![
        "--blobHost".into(),
        "127.0.0.1".into(),
        "--blobPort".into(),
        port.to_string(),
        "--location".into(),
        data.display().to_string(),
        // Nothing leaves the machine.
        "--disableTelemetry".into(),
        // No access log: a run writes thousands of blobs.
        "--silent".into(),
    ];
    let mut process = Guarded::spawn(azurite, &args, file, Some(dir.path())).map_err(fail)?;
    let endpoint = Endpoint {
        url: format!("http://127.0.0.1:{port}/{ACCOUNT}"),
        account: ACCOUNT.to_string(),
        key: KEY.to_string(),
        container: CONTAINER.to_string(),
    };
    match server::wait_until_ready(&mut process, || create_container(port, &endpoint)) {
        Ok(()) => Ok(AzureServer {
            endpoint,
            owned: Some(Mutex::new(Owned {
                _dir: dir,
                _reservation: reservation,
                process,
            })),
        }),
        Err(e) => {
            process.kill();
            let text = log.text();
            Err(LaunchError {
                port_taken: text.contains("EADDRINUSE"),
                message: format!(
                    "Azurite ({}) on port {port} did not become ready: {e}\nits log ends with:\n{}",
                    azurite.display(),
                    log.tail()
                ),
            })
        }
    }
}

/// Create the endpoint's container with a `Create Container` request signed with the account
/// key (Shared Key authorization); one that exists already is fine.
fn create_container(port: u16, ep: &Endpoint) -> Result<(), String> {
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    // The string to sign of a request with no body and no standard headers: the verb, eleven
    // empty standard headers, then the x-ms-* headers and the resource.
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{API_VERSION}\n/{a}/{a}/{c}\nrestype:container",
        a = ep.account,
        c = ep.container
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(&ep.key)
        .map_err(|e| format!("the account key is not base64: {e}"))?;
    let signature = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        to_sign.as_bytes(),
    );
    let authorization = format!(
        "SharedKey {}:{}",
        ep.account,
        base64::engine::general_purpose::STANDARD.encode(signature.as_ref())
    );
    let path = format!("/{}/{}?restype=container", ep.account, ep.container);
    let response = server::request(
        port,
        "PUT",
        &path,
        &[
            ("x-ms-date", &date),
            ("x-ms-version", API_VERSION),
            ("Authorization", &authorization),
        ],
        b"",
    )?;
    match response.status {
        201 | 409 => Ok(()),
        status => Err(format!(
            "creating container {} answered {status}: {}",
            ep.container, response.body
        )),
    }
}

/// The server named by the `CAIRN_TEST_AZURE_*` variables.
fn from_env(url: &str) -> Result<AzureServer, String> {
    let var = |name: &str| {
        env_var(name).ok_or_else(|| format!("CAIRN_TEST_AZURE_ENDPOINT is set, but {name} is not"))
    };
    Ok(AzureServer {
        endpoint: Endpoint {
            url: loopback_url("CAIRN_TEST_AZURE_ENDPOINT", url)?,
            account: var("CAIRN_TEST_AZURE_ACCOUNT")?,
            key: var("CAIRN_TEST_AZURE_KEY")?,
            container: var("CAIRN_TEST_AZURE_CONTAINER")?,
        },
        owned: None,
    })
}

/// `azurite-blob`: `CAIRN_TEST_AZURITE`, on `PATH`, or installed into `target/azurite` with
/// `npm ci` from `tests/azurite`'s lock file, once.
pub fn azurite_binary() -> Result<PathBuf, String> {
    if let Some(p) = server::given_program("CAIRN_TEST_AZURITE", "azurite-blob")? {
        return Ok(p);
    }
    let target = workspace_root().join("target").join("azurite");
    let local = target
        .join("node_modules")
        .join(".bin")
        .join("azurite-blob");
    let npm = server::on_path("npm").ok_or(
        "Azurite's `azurite-blob` is not on PATH and npm is not either, so it cannot be \
         installed from the npm registry; install Node.js 20 or newer, or set \
         CAIRN_TEST_AZURE_ENDPOINT to a running Azurite",
    )?;
    server::install_once(&target, |dir| {
        let source = workspace_root().join("tests").join("azurite");
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(source.join(file), dir.join(file))
                .map_err(|e| format!("copying {file} into {}: {e}", dir.display()))?;
        }
        let mut npm = Command::new(npm);
        npm.args(["ci", "--omit=dev", "--no-audit", "--no-fund", "--prefix"])
            .arg(dir);
        server::run_installer(
            npm,
            &format!(
                "npm ci --prefix {} (azurite {AZURITE_VERSION})",
                dir.display()
            ),
        )
    })?;
    if !local.is_file() {
        return Err(format!(
            "npm installed Azurite into {}, but {} is missing",
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
        let azurite = azurite_binary().unwrap_or_else(|e| panic!("no Azurite for this test: {e}"));
        let reservation = reserve_ports(1).unwrap();
        // A program outside the tests binds the reserved port first.
        let _squatter = std::net::TcpListener::bind(("127.0.0.1", reservation.ports()[0])).unwrap();
        match launch_on(&azurite, reservation) {
            Ok(_) => panic!("Azurite started although its port was taken"),
            Err(e) => assert!(e.port_taken, "not seen as a taken port: {}", e.message),
        }
        // A fresh start finds another port, and its container exists.
        let server = AzureServer::start_process_wide().unwrap();
        assert!(server.endpoint().url.starts_with("http://127.0.0.1:"));
    }
}
