//! `cairn-bench-linked`: the linked-in side of `cairn bench storage`.
//!
//! `cairn bench storage` compares the filesystem backend loaded through `dlopen` with the same
//! backend linked in. The `cairn` binary must never link a backend (every backend is loaded at
//! run time), and two plugin crates cannot share one binary (each defines the same export
//! symbols), so the linked-in side runs here, in a separate executable that links
//! `cairn-storage-fs` as an rlib. `cairn bench storage` finds it next to its own executable.
//!
//! It runs [`cairn_conformance::bench::backend_round`], the same code the host runs against the
//! loaded library, once per request: a `RoundRequest` as one line of JSON on stdin, answered by
//! a `LinkedOutput` as one line of JSON on stdout, until stdin ends. One process serves every
//! round, so the linked side is as warm as the loaded one, and the host can alternate rounds
//! between the two. An error goes to stderr and ends the process with exit code 1.
//!
//! Started with `--object-store-direct`, it serves the object-store plugin's baseline instead:
//! `object_store` used directly on the same store and bytes (the `direct` module), one
//! `DirectRequest` in and one `DirectOutput` out per line. `object_store` is linked here as a
//! baseline library, never into `cairn`.

mod direct;

use std::{
    io::{self, BufRead, IsTerminal, Write},
    process::ExitCode,
};

use cairn_conformance::bench::{self, LinkedOutput, RoundRequest};
use cairn_plugin_api::StoragePlugin;
use cairn_storage_fs::FsPlugin;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let direct = args.len() == 1 && args[0] == bench::OBJECT_STORE_DIRECT_ARG;
    if (!args.is_empty() && !direct) || io::stdin().is_terminal() {
        eprintln!(
            "usage: cairn-bench-linked [--object-store-direct] < REQUESTS (one JSON request per line)\n\
             the linked-in side of `cairn bench storage`, which runs it; not meant to be run by hand"
        );
        return ExitCode::from(2);
    }
    let direct = match direct.then(direct::Direct::new).transpose() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = io::stdout().lock();
    for line in io::stdin().lock().lines() {
        let answer = line
            .map_err(|e| format!("reading a request: {e}"))
            .and_then(|line| match &direct {
                Some(d) => direct_round(d, &line),
                None => round(&line),
            });
        let written = match answer {
            Ok(answer) => writeln!(stdout, "{answer}").and_then(|()| stdout.flush()),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = written {
            eprintln!("error: writing the figures: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// One round: open the linked backend with the request's options, run it, encode the figures.
fn round(request: &str) -> Result<String, String> {
    let request: RoundRequest =
        serde_json::from_str(request).map_err(|e| format!("malformed request: {e}"))?;
    let manifest = FsPlugin::manifest();
    let storage = FsPlugin::open(&request.options)
        .map_err(|e| format!("opening the linked filesystem backend: {e}"))?;
    let round = bench::backend_round(storage.as_ref(), &request)
        .map_err(|e| format!("linked filesystem backend: {e}"))?;
    let out = LinkedOutput {
        backend: manifest.name,
        backend_version: manifest.version,
        debug_assertions: cfg!(debug_assertions),
        round,
    };
    serde_json::to_string(&out).map_err(|e| format!("cannot encode the figures: {e}"))
}

/// One round of the object-store baseline.
fn direct_round(direct: &direct::Direct, request: &str) -> Result<String, String> {
    let request: bench::DirectRequest =
        serde_json::from_str(request).map_err(|e| format!("malformed request: {e}"))?;
    let out = direct.round(&request)?;
    serde_json::to_string(&out).map_err(|e| format!("cannot encode the figures: {e}"))
}
