//! The `_metadata` file: the single atomic commit point of a checkpoint location.
//!
//! The file frames the host's metadata bytes so that a torn or altered file is detected:
//!
//! ```text
//! magic "CAIRNMD1" (8 bytes) | crc32c of payload (u32 LE) | payload length (u64 LE) | payload
//! ```
//!
//! The commit is crash-consistent: the bytes go to a temporary file in the location directory,
//! which is fsynced; the temporary file is then hard-linked to `_metadata` (which fails if
//! `_metadata` exists, so a location commits at most once, even between two processes), the
//! temporary name is removed, and the directory is fsynced. After a crash at any instant,
//! `_metadata` is either absent or complete. An fsync error is returned as is and never retried:
//! after a failed fsync the page cache may have dropped the dirty pages, so retrying could report
//! success for bytes that are not on disk.
//!
//! Both bundled backends use it: the filesystem backend for every commit, the memory backend to
//! persist metadata and savepoints. A savepoint written by either can be read by the other.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    path::Path,
};

use cairn_plugin_api::StorageError;

/// The name of the commit file inside a location directory.
pub const METADATA_FILE: &str = "_metadata";

/// Prefix of temporary files; garbage collection removes leftovers with this prefix.
pub const TEMP_PREFIX: &str = ".tmp-";

const MAGIC: &[u8; 8] = b"CAIRNMD1";
const HEADER_LEN: usize = 8 + 4 + 8;

/// Commit `payload` as `dir/_metadata`. `AlreadyExists` if the location was committed before.
pub fn commit(dir: &Path, payload: &[u8]) -> Result<(), StorageError> {
    let target = dir.join(METADATA_FILE);
    if target.exists() {
        return Err(StorageError::AlreadyExists(format!(
            "{}: this location was committed already; a checkpoint commits once",
            target.display()
        )));
    }
    let temp = dir.join(format!(
        "{TEMP_PREFIX}{}{METADATA_FILE}",
        uuid::Uuid::new_v4().simple()
    ));
    let result = write_and_link(&temp, &target, payload);
    // The temporary name is removed whether the link succeeded or not.
    let _ = fs::remove_file(&temp);
    result?;
    sync_dir(dir)
}

fn write_and_link(temp: &Path, target: &Path, payload: &[u8]) -> Result<(), StorageError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)
        .map_err(|e| StorageError::io(temp.display(), &e))?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    file.write_all(&header)
        .and_then(|_| file.write_all(payload))
        .map_err(|e| StorageError::io(temp.display(), &e))?;
    file.sync_all().map_err(|e| {
        StorageError::Io(format!(
            "fsync of {} failed (not retried): {e}",
            temp.display()
        ))
    })?;
    drop(file);
    fs::hard_link(temp, target).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            StorageError::AlreadyExists(format!(
                "{}: this location was committed already; a checkpoint commits once",
                target.display()
            ))
        } else {
            StorageError::io(
                format!("linking {} to {}", temp.display(), target.display()),
                &e,
            )
        }
    })
}

/// Fsync a directory, so that entries created or removed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| {
        StorageError::Io(format!(
            "fsync of directory {} failed (not retried): {e}",
            dir.display()
        ))
    })
}

/// Whether `dir` holds a committed `_metadata`.
pub fn is_committed(dir: &Path) -> bool {
    dir.join(METADATA_FILE).is_file()
}

/// Read and verify `dir/_metadata`. `NotFound` if the location is not committed, `Corrupt` if the
/// file is damaged.
pub fn read(dir: &Path) -> Result<Vec<u8>, StorageError> {
    let path = dir.join(METADATA_FILE);
    let mut bytes = Vec::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StorageError::NotFound(format!(
                "{}: no committed checkpoint here (no {METADATA_FILE})",
                dir.display()
            )),
            _ => StorageError::io(path.display(), &e),
        })?;
    decode(&bytes).map_err(|why| StorageError::Corrupt(format!("{}: {why}", path.display())))
}

/// Check the framing and return the payload.
pub fn decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "{} bytes is too short for a metadata file",
            bytes.len()
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err("not a cairn metadata file (bad magic number)".to_string());
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(format!(
            "length field says {len} bytes, file holds {}",
            payload.len()
        ));
    }
    let got = crc32c::crc32c(payload);
    if got != crc {
        return Err(format!(
            "checksum mismatch: stored crc32c {crc:08x}, computed {got:08x}"
        ));
    }
    Ok(payload.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_then_read_round_trips_and_commits_once() {
        let dir = tempfile::tempdir().unwrap();
        commit(dir.path(), b"hello").unwrap();
        assert_eq!(read(dir.path()).unwrap(), b"hello");
        let again = commit(dir.path(), b"other").unwrap_err();
        assert!(matches!(again, StorageError::AlreadyExists(_)), "{again}");
        assert_eq!(read(dir.path()).unwrap(), b"hello");
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(TEMP_PREFIX))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_flipped_byte_is_corrupt_and_a_missing_file_not_found() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read(dir.path()), Err(StorageError::NotFound(_))));
        commit(dir.path(), b"payload bytes").unwrap();
        let path = dir.path().join(METADATA_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(
            matches!(&err, StorageError::Corrupt(m) if m.contains("checksum")),
            "{err}"
        );
        fs::write(&path, b"short").unwrap();
        assert!(matches!(read(dir.path()), Err(StorageError::Corrupt(_))));
    }

    #[test]
    fn the_file_format_is_pinned() {
        let dir = tempfile::tempdir().unwrap();
        commit(dir.path(), b"hello").unwrap();
        let mut expected = b"CAIRNMD1".to_vec();
        expected.extend_from_slice(&crc32c::crc32c(b"hello").to_le_bytes());
        expected.extend_from_slice(&5u64.to_le_bytes());
        expected.extend_from_slice(b"hello");
        assert_eq!(fs::read(dir.path().join(METADATA_FILE)).unwrap(), expected);
        assert_eq!(read(dir.path()).unwrap(), b"hello");
    }
}
