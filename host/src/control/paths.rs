//! Where a job's control socket is, and the checks on its directory.
//!
//! The socket of the job that a config file runs is
//! `$XDG_RUNTIME_DIR/cairn/<job-id>-<digest>.sock` (without `XDG_RUNTIME_DIR`, the directory
//! is `cairn-<uid>` in the temporary directory). The digest is the first 12 hex digits of the
//! SHA-256 of the job id and the config file's canonical path (for the embedded default, the
//! current directory), so `cairn status --config FILE` finds the job that `cairn run --config
//! FILE` started, from any directory, and two jobs of the same id run from different files on
//! one machine do not meet. The job id is cut to 32 characters in the name, which keeps the
//! path within the 108 bytes a Unix socket address holds.
//!
//! The directory is made with mode 0700. An existing one is used only if it is a directory
//! (not a symbolic link), its owner is this user (or, for a client, root), and neither group
//! nor others may write it: anyone who could write there could put their own socket in the
//! job's place.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::ControlError;
use crate::config::Config;

/// The most bytes of a Unix socket path (`sun_path` is 108 bytes, one for the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The characters of the job id kept in a socket's name.
const JOB_ID_IN_NAME: usize = 32;

/// The control socket of a job, and the lock file that says a live process serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketPaths {
    /// The directory both live in.
    pub dir: PathBuf,
    /// The socket.
    pub socket: PathBuf,
    /// The lock file, held for as long as a process serves the socket.
    pub lock: PathBuf,
    /// The config file the paths were derived from (`None`: the embedded default).
    pub config: Option<PathBuf>,
}

/// Who checks a directory: the job that serves a socket there, or a client that connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Server,
    Client,
}

/// This process's effective user id.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The directory control sockets go in: `$XDG_RUNTIME_DIR/cairn`, else `cairn-<uid>` in the
/// temporary directory.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d).join("cairn"),
        _ => std::env::temp_dir().join(format!("cairn-{}", euid())),
    }
}

/// The control socket of the job `config` runs.
pub fn socket_paths(config: &Config) -> Result<SocketPaths, ControlError> {
    let (identity, file) = match &config.file {
        Some(f) => {
            let canonical = fs::canonicalize(f)
                .or_else(|_| std::path::absolute(f))
                .map_err(|e| ControlError::Setup(format!("{}: {e}", f.display())))?;
            (canonical.clone(), Some(canonical))
        }
        None => {
            let cwd = std::env::current_dir().map_err(|e| {
                ControlError::Setup(format!("cannot read the current directory: {e}"))
            })?;
            (cwd.join("(embedded default config)"), None)
        }
    };
    let mut hash = Sha256::new();
    hash.update(config.job.id.as_bytes());
    hash.update([0]);
    hash.update(identity.as_os_str().as_encoded_bytes());
    let digest = hex::encode(&hash.finalize()[..6]);
    let id: String = config.job.id.chars().take(JOB_ID_IN_NAME).collect();
    let dir = runtime_dir();
    let socket = dir.join(format!("{id}-{digest}.sock"));
    let lock = dir.join(format!("{id}-{digest}.lock"));
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(ControlError::Setup(format!(
            "the control socket path {} is longer than the {MAX_SOCKET_PATH} bytes a Unix \
             socket address holds; set XDG_RUNTIME_DIR to a shorter directory",
            socket.display()
        )));
    }
    Ok(SocketPaths {
        dir,
        socket,
        lock,
        config: file,
    })
}

/// Make the socket directory (mode 0700) if it is missing, then check it (see the module
/// docs).
pub(super) fn prepare_dir(dir: &Path) -> Result<(), ControlError> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(ControlError::Setup(format!(
                "cannot make the control socket directory {}: {e}",
                dir.display()
            )))
        }
    }
    check_dir(dir, Role::Server)
}

/// Refuse a directory that someone else could put a socket in (see the module docs).
pub(super) fn check_dir(dir: &Path, role: Role) -> Result<(), ControlError> {
    let refuse = |why: String| {
        Err(ControlError::UnsafeDir {
            dir: dir.to_path_buf(),
            why,
        })
    };
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) => return refuse(format!("cannot read it: {e}")),
    };
    if meta.file_type().is_symlink() {
        return refuse("it is a symbolic link".to_string());
    }
    if !meta.is_dir() {
        return refuse("it is not a directory".to_string());
    }
    let me = euid();
    let owner_ok = meta.uid() == me || (role == Role::Client && meta.uid() == 0);
    if !owner_ok {
        return refuse(format!(
            "it belongs to uid {}, not to this user (uid {me})",
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return refuse(format!(
            "other users may write it (mode {mode:04o}); make it writable by its owner only \
             (chmod go-w {})",
            dir.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(file: Option<&Path>, id: &str) -> Config {
        let mut c = Config {
            file: file.map(Path::to_path_buf),
            ..Config::default()
        };
        c.job.id = id.to_string();
        c
    }

    #[test]
    fn a_socket_is_named_by_job_and_config_and_fits_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.toml");
        let b = dir.path().join("b.toml");
        std::fs::write(&a, "").unwrap();
        std::fs::write(&b, "").unwrap();
        let pa = socket_paths(&config(Some(&a), "job")).unwrap();
        let pb = socket_paths(&config(Some(&b), "job")).unwrap();
        let pa2 = socket_paths(&config(Some(&a), "other")).unwrap();
        assert_ne!(pa.socket, pb.socket, "two files, two sockets");
        assert_ne!(pa.socket, pa2.socket, "two jobs, two sockets");
        // The same file named another way is the same job.
        let again = dir.path().join(".").join("a.toml");
        assert_eq!(
            socket_paths(&config(Some(&again), "job")).unwrap().socket,
            pa.socket
        );
        let name = pa.socket.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("job-") && name.ends_with(".sock"),
            "{name}"
        );
        let long = socket_paths(&config(Some(&a), &"x".repeat(64))).unwrap();
        let name = long.socket.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 32 + 1 + 12 + 5, "{name}");
    }

    #[test]
    fn a_directory_others_can_write_or_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("cairn");
        prepare_dir(&d).unwrap();
        let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        check_dir(&d, Role::Server).expect("readable by others is fine");
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_dir(&d, Role::Server).unwrap_err().to_string();
        assert!(
            err.contains("other users may write it (mode 0777)"),
            "{err}"
        );
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        let err = check_dir(&link, Role::Client).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }
}
