//! `example-sqlite`: a complete cairn storage plugin in one file. Checkpoints live in a SQLite
//! database, `<dir>/cairn.sqlite` (one table of blobs); savepoints in one under their target
//! directory. The plugin kit does everything else: layout, streams, checksums, commit-once,
//! listings, options.

use std::sync::{Arc, Mutex};

use cairn_plugin_api::{Capabilities, CheckpointStorage, Manifest, StorageError, StoragePlugin, StorageResult};
use cairn_plugin_kit::{options, Blob, BlobStore, BlobWriter, Checkpoints, Listed, PutMode, Root, Settings};
use rusqlite::{params, Connection, OpenFlags};

/// One database; every write is a transaction of its own, durable when it returns.
#[derive(Clone)]
struct Db(Arc<Mutex<Connection>>);

fn err(what: &str, e: rusqlite::Error) -> StorageError {
    let taken = e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation);
    match e {
        rusqlite::Error::QueryReturnedNoRows => StorageError::NotFound(format!("{what}: no such object")),
        _ if taken => StorageError::AlreadyExists(format!("{what} exists")),
        e => StorageError::Io(format!("{what}: {e}")),
    }
}

/// The database under directory `place`, as the kit's places: made with `create`, else opened.
fn open(place: &str, create: bool) -> StorageResult<Root> {
    let dir = cairn_plugin_kit::local_dir(place, create, "directory")?;
    let flags = if create { OpenFlags::default() } else { OpenFlags::SQLITE_OPEN_READ_WRITE };
    let conn = Connection::open_with_flags(dir.join("cairn.sqlite"), flags).map_err(|e| err(place, e))?;
    let table = "CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, data BLOB NOT NULL)";
    conn.execute(table, []).map_err(|e| err(place, e))?;
    Ok(Root { store: Arc::new(Db(Arc::new(Mutex::new(conn)))), shown: dir.to_string_lossy().into_owned() })
}

impl Db {
    fn run<T>(&self, key: &str, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StorageResult<T> {
        f(&self.0.lock().unwrap_or_else(|p| p.into_inner())).map_err(|e| err(key, e))
    }
}

impl BlobStore for Db {
    fn put(&self, key: &str, bytes: &[u8], mode: PutMode) -> StorageResult<()> {
        let sql = match mode {
            PutMode::Create => "INSERT INTO blobs (key, data) VALUES (?1, ?2)",
            PutMode::Overwrite => "INSERT OR REPLACE INTO blobs (key, data) VALUES (?1, ?2)",
        };
        self.run(key, |c| c.execute(sql, params![key, bytes])).map(drop)
    }
    fn writer(&self, key: &str) -> StorageResult<Box<dyn BlobWriter>> {
        let (db, key) = (self.clone(), key.to_string());
        Ok(cairn_plugin_kit::buffered_writer(move |bytes| db.put(&key, &bytes, PutMode::Overwrite)))
    }
    fn get(&self, key: &str) -> StorageResult<Blob> {
        self.run(key, |c| c.query_row("SELECT data FROM blobs WHERE key = ?1", [key], |r| r.get(0)))
            .map(Blob::from_bytes)
    }
    fn delete(&self, key: &str) -> StorageResult<()> {
        self.run(key, |c| c.execute("DELETE FROM blobs WHERE key = ?1", [key])).map(drop)
    }
    fn list(&self, prefix: &str) -> StorageResult<Vec<Listed>> {
        let from = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
        self.run(prefix, |c| {
            let mut q = c.prepare("SELECT key, length(data) FROM blobs WHERE substr(key, 1, length(?1)) = ?1")?;
            let rows = q.query_map([&from], |r| Ok(Listed { key: r.get(0)?, size: r.get(1)? }))?;
            rows.collect()
        })
    }
    fn sync(&self, _prefixes: &[&str]) -> StorageResult<()> {
        Ok(()) // Every write above committed durably already.
    }
}

/// The plugin: options `dir` (required) and `savepoint-dir`, plus the kit's `inline-threshold`.
pub struct ExamplePlugin;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Own {
    dir: toml::Value,
    savepoint_dir: Option<toml::Value>,
}

impl StoragePlugin for ExamplePlugin {
    fn manifest() -> Manifest {
        let caps = cairn_plugin_kit::CAPABILITIES | Capabilities::PERSISTENT;
        Manifest::new("example-sqlite", env!("CARGO_PKG_VERSION"), "checkpoints in SQLite databases", caps)
            .with_test_options("dir = \"{scratch}/db\"\nsavepoint-dir = \"{scratch}/savepoints\"\n")
    }
    fn open(document: &str) -> StorageResult<Box<dyn CheckpointStorage>> {
        let (common, own): (_, Own) = options::parse(document, options::CommonSpec::ALL)?;
        let savepoints = own.savepoint_dir.map(|v| options::string("savepoint-dir", &v)).transpose()?;
        let base = open(&options::string("dir", &own.dir)?, true)?;
        let settings = Settings::stored(common.inline_threshold, Self::manifest().capabilities);
        Ok(Box::new(Checkpoints::new(base, Arc::new(open), savepoints, settings)))
    }
}

cairn_plugin_api::export_storage_plugin!(ExamplePlugin);
