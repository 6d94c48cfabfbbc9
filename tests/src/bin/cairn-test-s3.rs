//! `cairn-test-s3`: start the S3 test server (SeaweedFS on 127.0.0.1, see `cairn_harness::s3`)
//! for a whole CI run, with the same race-free port reservation the tests use.
//!
//! It prints `NAME=VALUE` lines for the `CAIRN_TEST_S3_*` variables, then a line `ready`, and
//! serves until it is killed; SeaweedFS dies with it (and its data is removed), however it ends.
//! `.ci/run` reads the lines, exports them, and runs the tests against this server.

use std::io::Write;

use cairn_harness::s3::S3Server;

fn main() {
    let server = match S3Server::start_process_wide() {
        Ok(server) => server,
        Err(e) => {
            eprintln!("cairn-test-s3: {e}");
            std::process::exit(1);
        }
    };
    let ep = server.endpoint();
    let mut out = std::io::stdout().lock();
    let lines = [
        ("CAIRN_TEST_S3_ENDPOINT", ep.url.as_str()),
        ("CAIRN_TEST_S3_ACCESS_KEY_ID", ep.access_key_id.as_str()),
        (
            "CAIRN_TEST_S3_SECRET_ACCESS_KEY",
            ep.secret_access_key.as_str(),
        ),
        ("CAIRN_TEST_S3_BUCKET", ep.bucket.as_str()),
        ("CAIRN_TEST_S3_REGION", ep.region.as_str()),
    ];
    for (name, value) in lines {
        let _ = writeln!(out, "{name}={value}");
    }
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);
    // Serve until killed. The server's guard notices this process's end through its pipe.
    loop {
        std::thread::park();
    }
}
