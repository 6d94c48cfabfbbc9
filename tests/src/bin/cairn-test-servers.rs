//! `cairn-test-servers`: start the object-store plugin's test servers for a whole CI run, on
//! 127.0.0.1 with the same race-free port reservation the tests use: SeaweedFS for `s3://`
//! (`cairn_harness::s3`) and Azurite for `az://` (`cairn_harness::azure`).
//!
//! It prints `NAME=VALUE` lines for the `CAIRN_TEST_S3_*` and `CAIRN_TEST_AZURE_*` variables,
//! then a line `ready`, and serves until it is killed; the servers die with it (and their data
//! is removed), however it ends. `.ci/run` reads the lines, exports them, and runs the tests
//! against these servers. If a server cannot start, it prints why and exits 1 (after stopping
//! the ones it started).

use std::io::Write;

use cairn_harness::{azure::AzureServer, s3::S3Server};

fn main() {
    let s3 = S3Server::start_process_wide().unwrap_or_else(|e| fail("SeaweedFS", &e));
    let azure = AzureServer::start_process_wide().unwrap_or_else(|e| fail("Azurite", &e));
    let s3e = s3.endpoint();
    let aze = azure.endpoint();
    let lines = [
        ("CAIRN_TEST_S3_ENDPOINT", s3e.url.as_str()),
        ("CAIRN_TEST_S3_ACCESS_KEY_ID", s3e.access_key_id.as_str()),
        (
            "CAIRN_TEST_S3_SECRET_ACCESS_KEY",
            s3e.secret_access_key.as_str(),
        ),
        ("CAIRN_TEST_S3_BUCKET", s3e.bucket.as_str()),
        ("CAIRN_TEST_S3_REGION", s3e.region.as_str()),
        ("CAIRN_TEST_AZURE_ENDPOINT", aze.url.as_str()),
        ("CAIRN_TEST_AZURE_ACCOUNT", aze.account.as_str()),
        ("CAIRN_TEST_AZURE_KEY", aze.key.as_str()),
        ("CAIRN_TEST_AZURE_CONTAINER", aze.container.as_str()),
    ];
    let mut out = std::io::stdout().lock();
    for (name, value) in lines {
        let _ = writeln!(out, "{name}={value}");
    }
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);
    // Serve until killed. The servers' guards notice this process's end through their pipes.
    loop {
        std::thread::park();
    }
}

/// Report why `what` did not start and exit 1; servers already started die with the process.
fn fail(what: &str, reason: &str) -> ! {
    eprintln!("cairn-test-servers: {what} did not start: {reason}");
    std::process::exit(1);
}
