//! Issue 15's GC test: `kill -9` while an incremental checkpoint is in flight (some of its
//! tasks' SHARED objects written, its metadata not), then `cairn checkpoints gc` lists (dry run)
//! and removes exactly the stored objects no completed checkpoint references, and nothing a
//! completed checkpoint references: verify passes and the job resumes exactly once. On the
//! filesystem plugin and on SeaweedFS.
//!
//! The in-flight moment is found, not guessed: the test watches the storage through the plugin
//! (loaded in this process) and kills the job the instant it sees a SHARED object whose header
//! names a checkpoint above the newest completed one. A kill that lands after that checkpoint
//! committed after all is not what this test is about, so the job is resumed and watched again
//! (at most [`ATTEMPTS`] times; each attempt also checks gc).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use crate::util::{cairn_ok, json_of, lib, load, resume_latest_exactly};
use cairn_harness::s3::{unique_prefix, S3Server};
use cairn_host::{metadata::CheckpointMetadata, runtime::keyed_counter};
use cairn_plugin_api::{CheckpointStorage, JobStorage, StateHandle};
use serde_json::Value;

const JOB: &str = "gc-inc";
const KEYS: u64 = 4000;
const PARALLELISM: u32 = 2;
/// Kills until one lands inside an incremental checkpoint.
const ATTEMPTS: usize = 20;
/// The longest wait for the storage to show an in-flight checkpoint: a limit for a stuck job,
/// not a pace.
const WAIT_LIMIT: Duration = Duration::from_secs(180);

/// The state objects' header (`runtime::incremental`): magic, then the checkpoint id at 8..16.
const SEGMENT_MAGIC: &[u8; 4] = b"CKSG";

fn write_config(dir: &Path, package: &str, options: &str) {
    let config = format!(
        "[storage]\npath = {:?}\n[storage.options]\n{options}\n\
         [checkpointing]\ninterval = \"30ms\"\nnum-retained = 2\nincremental = true\n\
         externalized-retention = \"retain-on-cancellation\"\n\n\
         [job]\nid = \"{JOB}\"\nkeys = {KEYS}\nparallelism = {PARALLELISM}\nrate = 20000\n\
         state-bytes-per-key = \"4KiB\"\n",
        lib(package).display().to_string()
    );
    std::fs::write(dir.join("cairn.toml"), config).unwrap();
}

/// The checkpoint a SHARED object was written by, from its header (`None`: not a state object
/// of this format, or not readable now).
fn written_by(storage: &dyn CheckpointStorage, locator: &str, size: u64) -> Option<u64> {
    let handle = StateHandle::Stored {
        locator: locator.to_string(),
        size,
        crc32c: 0,
    };
    let mut input = storage.open_handle(&handle).ok()?;
    let mut header = [0u8; 32];
    let mut got = 0;
    while got < header.len() {
        match input.read(&mut header[got..]) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got += n,
        }
    }
    (&header[..4] == SEGMENT_MAGIC).then(|| u64::from_le_bytes(header[8..16].try_into().unwrap()))
}

fn is_shared(locator: &str) -> bool {
    locator.starts_with(&format!("{JOB}/shared/"))
}

/// Start `cairn run ARGS` in `dir`, its output into files there.
fn spawn(dir: &Path, args: &[&str]) -> Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .current_dir(dir)
        .env("XDG_RUNTIME_DIR", dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::from(
            std::fs::File::create(dir.join("run.out")).unwrap(),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("run.err")).unwrap(),
        ))
        .spawn()
        .expect("run cairn")
}

/// Watch the storage while `child` runs and kill it (SIGKILL) the moment a SHARED object of a
/// checkpoint newer than every completed one exists. Returns that checkpoint's id.
fn kill_when_in_flight(
    dir: &Path,
    child: &mut Child,
    storage: &dyn CheckpointStorage,
    job: &dyn JobStorage,
) -> u64 {
    let mut headers: BTreeMap<String, Option<u64>> = BTreeMap::new();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "cairn run ended ({status}) before an incremental checkpoint was caught in flight: {}",
                std::fs::read_to_string(dir.join("run.err")).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < WAIT_LIMIT,
            "no checkpoint was seen in flight in {WAIT_LIMIT:?}"
        );
        // Objects first, then the completed ones: a checkpoint that commits in between is seen
        // as completed.
        let Ok(objects) = job.list_objects() else {
            continue;
        };
        let Ok(completed) = job.list_completed() else {
            continue;
        };
        let newest = completed.iter().map(|c| c.checkpoint_id).max().unwrap_or(0);
        if newest == 0 {
            continue;
        }
        for o in objects.iter().filter(|o| is_shared(&o.locator)) {
            let id = *headers
                .entry(o.locator.clone())
                .or_insert_with(|| written_by(storage, &o.locator, o.size));
            if id.is_some_and(|id| id > newest) {
                child.kill().unwrap();
                child.wait().unwrap();
                return id.unwrap();
            }
        }
    }
}

/// Every stored object a completed checkpoint references, read from the metadata here (not with
/// the host's own helper, so the test checks gc's rule rather than repeating it).
fn referenced(storage: &dyn CheckpointStorage, job: &dyn JobStorage) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for c in job.list_completed().unwrap() {
        let r = storage.resolve(&c.pointer).unwrap();
        let m = CheckpointMetadata::decode(&r.metadata).unwrap();
        for t in &m.tasks {
            let handles = t
                .handles
                .iter()
                .chain(t.channel_state.iter().map(|c| &c.handle));
            let segments = t.segments.iter().map(|s| &s.object);
            for h in handles.chain(segments) {
                if let Ok(StateHandle::Stored { locator, .. }) = h.to_handle() {
                    out.insert(locator);
                }
            }
        }
    }
    out
}

fn objects(job: &dyn JobStorage) -> BTreeMap<String, u64> {
    job.list_objects()
        .unwrap()
        .into_iter()
        .map(|o| (o.locator, o.size))
        .collect()
}

fn expected_digest(records: u64) -> String {
    keyed_counter::counts_digest(&keyed_counter::expected_counts(KEYS, PARALLELISM, records))
}

fn gc_after_a_kill_in_an_incremental_checkpoint(package: &str, options: &str) {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), package, options);
    let plugin = load(package);
    let storage: Box<dyn CheckpointStorage> = plugin.open(options).unwrap();
    let job = storage.job(JOB).unwrap();

    let mut caught = None;
    for attempt in 0..ATTEMPTS {
        let args: &[&str] = if attempt == 0 {
            &["run"]
        } else {
            &["run", "--from", "latest"]
        };
        let mut child = spawn(dir.path(), args);
        let in_flight = kill_when_in_flight(dir.path(), &mut child, storage.as_ref(), job.as_ref());
        let completed: BTreeSet<u64> = job
            .list_completed()
            .unwrap()
            .iter()
            .map(|c| c.checkpoint_id)
            .collect();
        if !completed.contains(&in_flight) {
            caught = Some(in_flight);
            break;
        }
        eprintln!(
            "attempt {attempt}: checkpoint {in_flight} committed before the kill landed; again"
        );
    }
    let in_flight = caught.unwrap_or_else(|| {
        panic!("in {ATTEMPTS} kills none landed inside an incremental checkpoint")
    });

    // What the storage holds now, and what the completed checkpoints reference.
    let before = objects(job.as_ref());
    let keep = referenced(storage.as_ref(), job.as_ref());
    let unreferenced: BTreeMap<String, u64> = before
        .iter()
        .filter(|(l, _)| !keep.contains(*l))
        .map(|(l, s)| (l.clone(), *s))
        .collect();
    let of_in_flight: Vec<&String> = unreferenced
        .iter()
        .filter(|(l, s)| is_shared(l) && written_by(storage.as_ref(), l, **s) == Some(in_flight))
        .map(|(l, _)| l)
        .collect();
    assert!(
        !of_in_flight.is_empty(),
        "checkpoint {in_flight} was in flight with a SHARED object, which must be unreferenced now: {unreferenced:?}"
    );
    assert!(
        keep.iter().any(|l| is_shared(l)),
        "the completed checkpoints reference SHARED objects: {keep:?}"
    );

    // The dry run lists exactly the unreferenced objects, with their sizes, and removes nothing.
    let dry = json_of(&cairn_ok(
        &["checkpoints", "gc", "--dry-run", "--json"],
        dir.path(),
    ));
    let listed: BTreeMap<String, u64> = dry["orphaned_objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["locator"].as_str().unwrap().to_string(),
                o["size_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, unreferenced, "{dry:#}");
    assert_eq!(objects(job.as_ref()), before, "a dry run removes nothing");

    // gc removes exactly them: what is left is what the completed checkpoints reference.
    let done = json_of(&cairn_ok(&["checkpoints", "gc", "--json"], dir.path()));
    assert_eq!(done["errors"].as_array().unwrap().len(), 0, "{done:#}");
    assert_eq!(
        done["removed_bytes"].as_u64().unwrap(),
        unreferenced.values().sum::<u64>(),
        "{done:#}"
    );
    let after = objects(job.as_ref());
    assert_eq!(
        after.keys().cloned().collect::<BTreeSet<_>>(),
        keep,
        "gc left exactly what the completed checkpoints reference"
    );
    assert!(job.list_uncommitted().unwrap().is_empty());

    // Nothing a completed checkpoint needs is gone: verify reads every shared object back, and
    // the job resumes exactly once from the latest.
    cairn_ok(&["checkpoints", "verify", "--json"], dir.path());
    let list = json_of(&cairn_ok(&["checkpoints", "list", "--json"], dir.path()));
    let latest = list["checkpoints"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let records = latest["records"].as_u64().unwrap() + 10_000;
    resume_latest_exactly(
        dir.path(),
        records,
        latest["id"].as_u64().unwrap(),
        &expected_digest(records),
    );
}

#[test]
fn gc_after_kill_9_in_an_incremental_checkpoint_removes_exactly_the_unreferenced_objects() {
    let storage = tempfile::tempdir().unwrap();
    let options = format!("dir = {:?}\n", storage.path().display().to_string());
    gc_after_a_kill_in_an_incremental_checkpoint("cairn-storage-fs-cdylib", &options);
}

#[test]
fn gc_after_kill_9_in_an_incremental_checkpoint_on_s3() {
    let server = S3Server::get();
    let options = server
        .endpoint()
        .plugin_options(&unique_prefix("gc-inc"), "");
    gc_after_a_kill_in_an_incremental_checkpoint("cairn-storage-object-cdylib", &options);
}

/// `show` reports an incremental checkpoint's full and incremental bytes and the SHARED objects
/// it references with the checkpoint each came from (text and JSON, in the contract's names);
/// `verify` reads those objects too, so damage to one an older checkpoint wrote is found in
/// every checkpoint that references it.
#[test]
fn show_and_verify_cover_the_shared_objects_of_a_chain() {
    let dir = tempfile::tempdir().unwrap();
    let storage_dir = dir.path().join("storage");
    let options = format!("dir = {:?}\n", storage_dir.display().to_string());
    write_config(dir.path(), "cairn-storage-fs-cdylib", &options);
    crate::util::run_until_checkpoints(&["run"], dir.path(), 4);

    let shown = json_of(&cairn_ok(
        &["checkpoints", "show", "latest", "--json"],
        dir.path(),
    ));
    let id = shown["id"].as_u64().unwrap();
    let state = &shown["state"];
    assert_eq!(state["kind"], "incremental", "{shown:#}");
    assert_eq!(state["full_bytes"], shown["state_bytes"], "{shown:#}");
    let full = state["full_bytes"].as_u64().unwrap();
    let written = state["incremental_bytes"].as_u64().unwrap();
    assert!(written < full, "{shown:#}");
    assert!(state["depth"].as_u64().unwrap() >= 1, "{shown:#}");
    assert!(state["base_id"].as_u64().unwrap() < id, "{shown:#}");
    // One row per segment object, each with the checkpoint that wrote it; they add up to the
    // full bytes, and those this checkpoint wrote to its incremental bytes.
    let objects = state["shared_objects"].as_array().unwrap();
    let segments: Vec<&Value> = shown["metadata"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["segments"].as_array().unwrap())
        .collect();
    assert_eq!(objects.len(), segments.len(), "{shown:#}");
    for seg in &segments {
        assert!(
            seg["from_id"].is_u64() && seg.get("checkpoint_id").is_none(),
            "{seg}"
        );
        assert!(seg["object"]["size_bytes"].is_u64(), "{seg}");
    }
    let size = |o: &Value| o["size_bytes"].as_u64().unwrap();
    assert_eq!(objects.iter().map(size).sum::<u64>(), full, "{shown:#}");
    let own = objects.iter().filter(|o| o["from_id"] == id);
    assert_eq!(own.map(size).sum::<u64>(), written, "{shown:#}");
    let older: Vec<&Value> = objects
        .iter()
        .filter(|o| o["from_id"].as_u64().unwrap() < id)
        .collect();
    assert!(!older.is_empty(), "{shown:#}");

    let list = json_of(&cairn_ok(&["checkpoints", "list", "--json"], dir.path()));
    let row = list["checkpoints"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(row["incremental_bytes"], written, "{list:#}");
    assert_eq!(row["state_bytes"], full, "{list:#}");

    let text =
        String::from_utf8(cairn_ok(&["checkpoints", "show", "latest"], dir.path()).stdout).unwrap();
    assert!(
        text.contains(&format!(
            "shared:       {} shared objects referenced",
            objects.len()
        )),
        "{text}"
    );
    let victim = older[0]["locator"].as_str().unwrap();
    let from = older[0]["from_id"].as_u64().unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains(victim) && l.contains(&format!("from checkpoint {from}"))),
        "{text}"
    );

    // copy carries the chain over: every object its segments lie in (older checkpoints' too)
    // goes into the copy, each once, so the copy verifies there and references nothing of the
    // source (it still verifies after the source's object is damaged, below).
    let other = format!(
        "[storage]\npath = {:?}\n[storage.options]\ndir = \"copies\"\n\n[job]\nid = \"{JOB}\"\n",
        lib("cairn-storage-fs-cdylib").display().to_string()
    );
    std::fs::write(dir.path().join("other.toml"), other).unwrap();
    let report = json_of(&cairn_ok(
        &[
            "checkpoints",
            "copy",
            &id.to_string(),
            "--to-config",
            "other.toml",
            "--json",
        ],
        dir.path(),
    ));
    assert_eq!(report["id"], id, "{report:#}");
    let copied = json_of(&cairn_ok(
        &[
            "checkpoints",
            "show",
            "latest",
            "--config",
            "other.toml",
            "--json",
        ],
        dir.path(),
    ));
    assert_eq!(copied["id"], id, "{copied:#}");
    let copied_objects = copied["state"]["shared_objects"].as_array().unwrap();
    assert_eq!(copied_objects.len(), objects.len(), "{copied:#}");
    assert_eq!(
        copied["state"]["full_bytes"], state["full_bytes"],
        "{copied:#}"
    );
    for o in copied_objects {
        let locator = o["locator"].as_str().unwrap();
        assert!(
            objects.iter().all(|s| s["locator"] != o["locator"]),
            "the copy references the source's {locator}"
        );
    }
    let verify_copy = || {
        json_of(&cairn_ok(
            &["checkpoints", "verify", "--config", "other.toml", "--json"],
            dir.path(),
        ))
    };
    assert_eq!(verify_copy()["ok"], true);

    // Damage that object (an older checkpoint's, which may be subsumed by now): the latest
    // checkpoint is damaged, and verify names the object.
    let verified = json_of(&cairn_ok(&["checkpoints", "verify", "--json"], dir.path()));
    assert_eq!(verified["ok"], true, "{verified:#}");
    let path = storage_dir.join(victim);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x5a;
    std::fs::write(&path, &bytes).unwrap();
    let out = crate::util::cairn(&["checkpoints", "verify", "--json"], dir.path());
    assert!(!out.status.success());
    let report = json_of(&out);
    let damaged: Vec<u64> = report["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "damaged")
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert!(damaged.contains(&id), "{report:#}");
    for c in report["checkpoints"].as_array().unwrap() {
        if c["status"] == "damaged" {
            let problems = c["problems"].to_string();
            assert!(problems.contains(victim), "{c}");
        }
    }
    // The copy is untouched by the damage: it holds its own copies of the objects.
    assert_eq!(
        verify_copy()["ok"],
        true,
        "the copy read the source's damaged object"
    );
    // A missing one is damage too, not a checkpoint removed while verifying.
    std::fs::remove_file(&path).unwrap();
    let report = json_of(&crate::util::cairn(
        &["checkpoints", "verify", "latest", "--json"],
        dir.path(),
    ));
    assert_eq!(report["checkpoints"][0]["status"], "damaged", "{report:#}");
}

/// Issue 15's target table: after 200 incremental checkpoints with num-retained 3, and then gc,
/// the only objects left are those the 3 retained checkpoints reference (every SHARED object
/// of the subsumed ones is gone, by the registry or by gc), and they verify.
#[test]
fn after_200_incremental_checkpoints_with_num_retained_3_gc_leaves_only_what_the_3_reference() {
    let dir = tempfile::tempdir().unwrap();
    let storage_dir = dir.path().join("storage");
    let options = format!("dir = {:?}\n", storage_dir.display().to_string());
    let config = format!(
        "[storage]\npath = {:?}\n[storage.options]\n{options}\n\
         [checkpointing]\ninterval = \"10ms\"\nnum-retained = 3\nincremental = true\n\
         externalized-retention = \"retain-on-cancellation\"\n\n\
         [job]\nid = \"{JOB}\"\nkeys = 2000\nparallelism = {PARALLELISM}\nrate = 2000\n\
         state-bytes-per-key = \"256B\"\n",
        lib("cairn-storage-fs-cdylib").display().to_string()
    );
    std::fs::write(dir.path().join("cairn.toml"), config).unwrap();
    crate::util::run_until_checkpoints(&["run"], dir.path(), 200);

    let plugin = load("cairn-storage-fs-cdylib");
    let storage: Box<dyn CheckpointStorage> = plugin.open(&options).unwrap();
    let job = storage.job(JOB).unwrap();
    let retained = job.list_completed().unwrap();
    assert_eq!(retained.len(), 3, "{retained:?}");
    assert!(retained[2].checkpoint_id >= 200, "{retained:?}");
    let keep = referenced(storage.as_ref(), job.as_ref());
    let before = objects(job.as_ref());
    cairn_ok(&["checkpoints", "gc", "--json"], dir.path());
    let after = objects(job.as_ref());
    eprintln!(
        "after {} checkpoints: {} objects ({} shared) before gc, {} after, {} referenced by the 3 retained",
        retained[2].checkpoint_id,
        before.len(),
        before.keys().filter(|l| is_shared(l)).count(),
        after.len(),
        keep.len()
    );
    assert_eq!(after.keys().cloned().collect::<BTreeSet<_>>(), keep);
    // A few keys change per checkpoint, so the retained ones reference older checkpoints'
    // objects too (chains), not only their own.
    assert!(keep.len() > 3 * PARALLELISM as usize, "{keep:?}");
    cairn_ok(&["checkpoints", "verify"], dir.path());
}
