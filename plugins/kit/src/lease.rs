//! The job's lease register (plugin API 1.1's `read_lease` / `write_lease`), on any
//! [`BlobStore`] with nothing but its create-only put.
//!
//! The register is a log of records under `<job>/_lease/`, one object per version, named by its
//! sequence number in 20 digits (so names sort as numbers). The current record is the one with
//! the highest number; its version is that number. Writing over version `n` creates object
//! `n + 1` with [`PutMode::Create`]: of two writers that read `n`, the store lets exactly one
//! create it, across processes and hosts, which is the compare-and-swap the host's lease
//! protocol needs (ARCHITECTURE.md, "The job lease").
//!
//! Why a log and not one object replaced under a condition: every store the kit supports
//! already has the create-only put that commits checkpoints (a no-replace link on a
//! filesystem, `If-None-Match: *` on S3, a unique key in a database), while a conditional
//! *update* is missing from some (`object_store`'s local filesystem, older S3-compatible
//! servers, SQLite as the example plugin uses it). So the blob trait stays as small as it is,
//! and every backend on the kit gets the lease.
//!
//! Two checks make the log a register. Before creating `n + 1`, the writer lists and requires
//! that `n` is still the newest (a writer with a stale or made-up version fails there). After
//! creating it, it lists again and requires that `n + 1` is the newest: older records are
//! deleted as the log grows (all but the two newest), so a stale writer could re-create a
//! number that was deleted; such a record is never the newest, and its writer is told it lost.
//! A reader that finds the newest record gone between the listing and the read (deleted as a
//! newer one arrived) lists again.

use cairn_plugin_api::{LeaseRecord, StorageError, StorageResult, MAX_LEASE_RECORD_BYTES};

use crate::{
    blob::{PutMode, Root},
    layout,
};

/// The area of a job's lease log.
pub const LEASE: &str = "_lease";

/// Digits of a record's name.
const SEQ_DIGITS: usize = 20;

/// How many times a read lists again when the newest record vanished under it.
const READ_ATTEMPTS: usize = 8;

/// The lease register of job `job` under `root`.
pub(crate) struct Register<'a> {
    pub(crate) root: &'a Root,
    pub(crate) job: &'a str,
}

fn record_name(seq: u64) -> String {
    format!("{seq:0width$}", width = SEQ_DIGITS)
}

fn parse_record_name(name: &str) -> Option<u64> {
    (name.len() == SEQ_DIGITS && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

impl Register<'_> {
    fn prefix(&self) -> String {
        layout::key(&[self.job, LEASE])
    }

    fn key(&self, seq: u64) -> String {
        layout::key(&[self.job, LEASE, &record_name(seq)])
    }

    /// The sequence numbers of the records there are, ascending.
    fn seqs(&self) -> StorageResult<Vec<u64>> {
        let prefix = self.prefix();
        let mut out: Vec<u64> = self
            .root
            .store
            .list(&prefix)?
            .into_iter()
            .filter_map(|o| {
                let name = o.key.strip_prefix(&prefix)?.strip_prefix('/')?;
                parse_record_name(name)
            })
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// The newest record and its version.
    pub(crate) fn read(&self) -> StorageResult<Option<LeaseRecord>> {
        for _ in 0..READ_ATTEMPTS {
            let Some(&seq) = self.seqs()?.last() else {
                return Ok(None);
            };
            let key = self.key(seq);
            match self.root.store.get(&key) {
                Ok(blob) => {
                    return Ok(Some(LeaseRecord {
                        bytes: blob.read_all(&self.root.show(&key))?,
                        version: seq.to_string(),
                    }))
                }
                // Deleted as a newer record arrived: the newer one is current.
                Err(StorageError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::Io(format!(
            "{}: the lease record changed under every one of {READ_ATTEMPTS} reads",
            self.root.show(&self.prefix())
        )))
    }

    /// Write `record` over version `expected` (see the module docs).
    pub(crate) fn write(&self, record: &[u8], expected: Option<&str>) -> StorageResult<String> {
        if record.len() > MAX_LEASE_RECORD_BYTES {
            return Err(StorageError::InvalidConfig(format!(
                "a lease record of {} bytes is larger than the {MAX_LEASE_RECORD_BYTES} bytes \
                 a backend must store",
                record.len()
            )));
        }
        let expected = match expected {
            None => None,
            Some(v) => Some(v.parse::<u64>().map_err(|_| {
                StorageError::InvalidConfig(format!(
                    "lease version {} is not one this backend gave out",
                    layout::shown(v)
                ))
            })?),
        };
        let shown = self.root.show(&self.prefix());
        let lost = |why: String| StorageError::AlreadyExists(format!("{shown}: {why}"));
        let newest = self.seqs()?.last().copied();
        if newest != expected {
            return Err(lost(match (newest, expected) {
                (Some(n), None) => format!("a lease record exists already (version {n})"),
                (Some(n), Some(e)) => {
                    format!("the lease record is at version {n}, not {e}: it changed")
                }
                (None, _) => "there is no lease record to replace".to_string(),
            }));
        }
        let seq = expected.map_or(1, |e| e.saturating_add(1));
        let key = self.key(seq);
        self.root
            .store
            .put(&key, record, PutMode::Create)
            .map_err(|e| match e {
                StorageError::AlreadyExists(_) => {
                    lost(format!("another writer wrote version {seq} first"))
                }
                other => other,
            })?;
        self.root.store.sync(&[&self.prefix()])?;
        let seqs = self.seqs()?;
        if seqs.last() != Some(&seq) {
            return Err(lost(format!(
                "version {seq} was written, but a newer record exists: another writer won"
            )));
        }
        // All but the two newest go; a failure here only leaves a record to delete next time.
        for old in seqs.iter().filter(|&&s| s + 1 < seq) {
            if let Err(e) = self.root.store.delete(&self.key(*old)) {
                tracing::debug!("removing old lease record {old} of {shown}: {e}");
            }
        }
        Ok(seq.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemStore;

    #[test]
    fn a_register_is_compare_and_swap() {
        let root = MemStore::new().root("memory://");
        let r = Register {
            root: &root,
            job: "j",
        };
        assert_eq!(r.read().unwrap(), None);
        let v1 = r.write(b"one", None).unwrap();
        assert!(matches!(
            r.write(b"again", None),
            Err(StorageError::AlreadyExists(_))
        ));
        let v2 = r.write(b"two", Some(&v1)).unwrap();
        assert_ne!(v1, v2);
        // A stale version loses, and so does a made-up one.
        for stale in [v1.as_str(), "99", "0"] {
            assert!(
                matches!(
                    r.write(b"stale", Some(stale)),
                    Err(StorageError::AlreadyExists(_))
                ),
                "{stale}"
            );
        }
        assert!(matches!(
            r.write(b"x", Some("not a number")),
            Err(StorageError::InvalidConfig(_))
        ));
        let mut v = v2;
        for n in 0..10 {
            v = r.write(format!("r{n}").as_bytes(), Some(&v)).unwrap();
        }
        let got = r.read().unwrap().unwrap();
        assert_eq!(
            (got.bytes.as_slice(), got.version.as_str()),
            (&b"r9"[..], v.as_str())
        );
        // Old records are pruned: two are kept.
        assert_eq!(r.seqs().unwrap().len(), 2);
    }

    /// A store that, just before the create of `at`, lets "other writers" move the log on.
    struct Interleave {
        inner: MemStore,
        at: String,
        meanwhile: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }

    impl crate::BlobStore for Interleave {
        fn put(&self, key: &str, bytes: &[u8], mode: PutMode) -> StorageResult<()> {
            if key == self.at {
                let hook = self.meanwhile.lock().unwrap().take();
                if let Some(hook) = hook {
                    hook();
                }
            }
            self.inner.put(key, bytes, mode)
        }
        fn writer(&self, key: &str) -> StorageResult<Box<dyn crate::BlobWriter>> {
            self.inner.writer(key)
        }
        fn get(&self, key: &str) -> StorageResult<crate::Blob> {
            self.inner.get(key)
        }
        fn delete(&self, key: &str) -> StorageResult<()> {
            self.inner.delete(key)
        }
        fn list(&self, prefix: &str) -> StorageResult<Vec<crate::Listed>> {
            self.inner.list(prefix)
        }
        fn sync(&self, prefixes: &[&str]) -> StorageResult<()> {
            self.inner.sync(prefixes)
        }
    }

    #[test]
    fn a_stale_writer_that_recreates_a_pruned_record_is_told_it_lost() {
        let mem = MemStore::new();
        let plain = mem.clone().root("memory://");
        let v1 = Register {
            root: &plain,
            job: "j",
        }
        .write(b"1", None)
        .unwrap();
        // This writer read version 1; before its create of version 2 lands, others write
        // versions 2 to 5, which prunes 2, so its create succeeds on a free name.
        let others = plain.clone();
        let store = Interleave {
            inner: mem,
            at: Register {
                root: &plain,
                job: "j",
            }
            .key(2),
            meanwhile: std::sync::Mutex::new(Some(Box::new(move || {
                let r = Register {
                    root: &others,
                    job: "j",
                };
                let mut v = "1".to_string();
                for n in 2..6 {
                    v = r.write(n.to_string().as_bytes(), Some(&v)).unwrap();
                }
                assert!(!r.seqs().unwrap().contains(&2));
            }))),
        };
        let slow = Root {
            store: std::sync::Arc::new(store),
            shown: "memory://".into(),
        };
        let r = Register {
            root: &slow,
            job: "j",
        };
        assert!(matches!(
            r.write(b"stale", Some(&v1)),
            Err(StorageError::AlreadyExists(_))
        ));
        assert_eq!(r.read().unwrap().unwrap().bytes, b"5");
    }

    #[test]
    fn record_names_are_strict() {
        assert_eq!(parse_record_name(&record_name(42)), Some(42));
        for bad in ["42", "0000000000000000004x", "+0000000000000000042", ""] {
            assert_eq!(parse_record_name(bad), None, "{bad}");
        }
    }
}
