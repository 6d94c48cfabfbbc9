//! Helpers shared by the host's integration tests.

use std::path::{Path, PathBuf};

use cairn_host::loader::{self, Plugin};

/// The `cairn-bench-linked` companion of `cairn bench storage` (its linked-in side), built on
/// first use: a fresh clone's `cargo test` does not build other packages' executables.
pub fn linked_runner() -> PathBuf {
    cairn_harness::artifacts::binary(
        cairn_conformance::bench::LINKED_RUNNER_PACKAGE,
        cairn_conformance::bench::LINKED_RUNNER_BIN,
    )
    .unwrap_or_else(|e| panic!("cannot build the linked runner: {e}"))
}

/// The shared library of a workspace plugin or fixture package, built on first use.
pub fn lib(package: &str) -> PathBuf {
    cairn_harness::artifacts::plugin_library(package)
        .unwrap_or_else(|e| panic!("cannot build test plugin {package}: {e}"))
}

/// Copy a package's library into `dir` under `file_name`, with mode 0755.
pub fn copy_lib(package: &str, dir: &Path, file_name: &str) -> PathBuf {
    let to = dir.join(file_name);
    std::fs::copy(lib(package), &to).expect("copy plugin library");
    set_mode(&to, 0o755);
    to
}

/// The bundled filesystem plugin's package and the file name it has in a plugins folder.
pub const FS_PLUGIN: (&str, &str) = ("cairn-storage-fs-cdylib", "libcairn_storage_fs.so");
/// The bundled memory plugin's package and the file name it has in a plugins folder.
pub const MEMORY_PLUGIN: (&str, &str) =
    ("cairn-storage-memory-cdylib", "libcairn_storage_memory.so");

/// A test's own directory with `plugins/` holding `libs` (package, file name), for a config
/// with `[plugins] search-path = ["plugins"]`.
pub fn dir_with_plugins(libs: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for (package, file_name) in libs {
        copy_lib(package, &plugins, file_name);
    }
    dir
}

/// chmod.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Load a package's library through the real loader.
pub fn load(package: &str) -> Plugin {
    loader::load_path(&lib(package), None)
        .unwrap_or_else(|e| panic!("loading {package} failed: {e}"))
}

/// `[storage.options]` for the filesystem plugin rooted at `dir`.
pub fn fs_options(dir: &Path) -> String {
    format!("dir = {:?}\n", dir.display().to_string())
}

/// A `cairn` command run in `dir` with `dir/run` as its runtime directory (`XDG_RUNTIME_DIR`,
/// where a job's control socket goes) and no `RUST_LOG` from the caller.
pub fn cairn_cmd(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(args)
        .current_dir(dir)
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .env_remove("RUST_LOG");
    cmd
}

/// Run the `cairn` binary in `cwd`.
pub fn cairn(args: &[&str], cwd: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run cairn")
}

/// Run `cairn ARGS` in `cwd` until it has completed `checkpoints` checkpoints of its own (its
/// "checkpoint N completed" lines), then stop it as Ctrl-C does, and require a clean stop
/// (exit code 130, the shell's code for SIGINT).
/// Tests wait for the checkpoints they need instead of guessing a `--duration` long enough on
/// a loaded machine. A job that ends or fails first fails the test with its stderr.
pub fn run_until_checkpoints(
    args: &[&str],
    cwd: &Path,
    checkpoints: usize,
) -> std::process::Output {
    run_until(args, cwd, checkpoints, "-INT")
}

/// Run `cairn ARGS` in `cwd` until it has completed `checkpoints` checkpoints of its own, then
/// kill it without warning (SIGKILL), as a crash would.
pub fn kill_after_checkpoints(args: &[&str], cwd: &Path, checkpoints: usize) {
    run_until(args, cwd, checkpoints, "-KILL");
}

/// The id in a `checkpoint N completed in ...` line of `cairn run`, if it is one.
pub fn completed_checkpoint(line: &str) -> Option<u64> {
    let (id, rest) = line.strip_prefix("checkpoint ")?.split_once(' ')?;
    rest.starts_with("completed in ").then(|| id.parse().ok())?
}

/// The two above: `signal` is `-INT` (and then a clean exit is required) or `-KILL`.
fn run_until(args: &[&str], cwd: &Path, checkpoints: usize, signal: &str) -> std::process::Output {
    let mut completed = 0;
    run_until_line(
        args,
        cwd,
        signal,
        &format!("{checkpoints} checkpoints"),
        |plain| {
            completed += usize::from(completed_checkpoint(plain).is_some());
            completed >= checkpoints
        },
    )
}

/// Run `cairn ARGS` in `cwd` until `done` says yes to a line of its stderr (colour codes
/// removed), then send it `signal` as `run_until_checkpoints` does; `what` names what was
/// awaited, for the failure message of a job that ends or stalls first.
pub fn run_until_line(
    args: &[&str],
    cwd: &Path,
    signal: &str,
    what: &str,
    mut done: impl FnMut(&str) -> bool,
) -> std::process::Output {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .current_dir(cwd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run cairn");
    let stdout = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::io::BufReader::new(stdout), &mut out).map(|_| out)
    });
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(300))
            .unwrap_or_else(|e| {
                let _ = child.kill();
                panic!(
                    "cairn {args:?} did not get to {what} before it {}:\n{}",
                    match e {
                        std::sync::mpsc::RecvTimeoutError::Timeout => "had run 300s",
                        std::sync::mpsc::RecvTimeoutError::Disconnected => "ended",
                    },
                    log.join("\n")
                )
            });
        let plain = without_ansi(&line);
        log.push(line);
        if done(&plain) {
            break;
        }
    }
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args([signal, &pid])
        .status();
    assert!(
        sent.is_ok_and(|s| s.success()),
        "cannot send {signal} to {pid}"
    );
    let status = child.wait().expect("wait for cairn");
    stderr.join().unwrap();
    log.extend(rx.try_iter());
    let stderr = log.join("\n");
    if signal == "-INT" {
        assert_eq!(
            status.code(),
            Some(130),
            "cairn {args:?} did not stop cleanly after Ctrl-C: {stderr}"
        );
    }
    std::process::Output {
        status,
        stdout: stdout.join().unwrap().expect("read cairn's stdout"),
        stderr: stderr.into_bytes(),
    }
}

/// `cairn run --from latest --records RECORDS --json` in `cwd`: it must finish, say it restored
/// checkpoint `latest`, and end with `counts_sha256` equal to `digest` (an uninterrupted run's).
/// Returns the summary.
pub fn resume_latest_exactly(
    cwd: &Path,
    records: u64,
    latest: u64,
    digest: &str,
) -> serde_json::Value {
    let records = records.to_string();
    let out = cairn_ok(
        &["run", "--from", "latest", "--records", &records, "--json"],
        cwd,
    );
    let summary = json_of(&out);
    assert_eq!(summary["status"], "finished");
    assert!(
        summary["restored_from"]
            .as_str()
            .is_some_and(|p| p.ends_with(&format!("chk-{latest}"))),
        "{summary}"
    );
    assert_eq!(summary["counts_sha256"], digest, "{summary}");
    summary
}

/// The JSON a command printed; a failure shows both streams.
pub fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Run the `cairn` binary in `cwd` and require success; a failure shows its stderr.
pub fn cairn_ok(args: &[&str], cwd: &Path) -> std::process::Output {
    let out = cairn(args, cwd);
    assert!(
        out.status.success(),
        "cairn {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The cases that were skipped must be exactly `expected`: a case that starts skipping itself
/// must not pass unnoticed.
pub fn assert_skipped(doc: &serde_json::Value, expected: &[&str], what: &str) {
    let mut skipped: Vec<&str> = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "skip")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    skipped.sort_unstable();
    let mut expected = expected.to_vec();
    expected.sort_unstable();
    assert_eq!(skipped, expected, "{what}: skipped cases");
}

/// `line` without terminal colour codes (`ESC [ ... letter`), which the log may carry.
pub fn without_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
