//! The word count through `cairn run`: exactly-once output after `kill -9` at random points and
//! `--from latest`, part files visible only once their checkpoint completed, non-UTF-8 input.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use crate::util::{cairn, cairn_ok, dir_with_plugins, json_of, FS_PLUGIN};

/// A folder with the filesystem plugin, input files and a word-count config.
fn setup(input: &[(String, Vec<u8>)]) -> tempfile::TempDir {
    setup_with(input, "", "rate = 40000\n")
}

/// [`setup`] with `checkpointing` and `job` lines added to the config.
fn setup_with(input: &[(String, Vec<u8>)], checkpointing: &str, job: &str) -> tempfile::TempDir {
    let dir = dir_with_plugins(&[FS_PLUGIN]);
    std::fs::create_dir(dir.path().join("input")).unwrap();
    for (name, bytes) in input {
        std::fs::write(dir.path().join("input").join(name), bytes).unwrap();
    }
    std::fs::write(
        dir.path().join("cairn.toml"),
        format!(
            "[plugins]\nsearch-path = [\"plugins\"]\n\n[checkpointing]\ninterval = \"100ms\"\n\
             num-retained = 2\n{checkpointing}\n[job]\nid = \"wc\"\nkind = \"word-count\"\n\
             input = \"input\"\noutput = \"output\"\n{job}"
        ),
    )
    .unwrap();
    dir
}

/// xorshift64: the test's own deterministic randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Text files of words from a small vocabulary, with multi-byte words and a few bytes that are
/// not UTF-8.
fn input(files: usize, words: usize) -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let vocabulary: Vec<Vec<u8>> = (0..400)
        .map(|i| match i % 50 {
            0 => format!("wörd{i}").into_bytes(),
            1 => [b"bad".as_slice(), &[0xff, 0xfe], format!("{i}").as_bytes()].concat(),
            _ => format!("w{i}").into_bytes(),
        })
        .collect();
    (0..files)
        .map(|f| {
            let mut text = Vec::new();
            for w in 0..words {
                text.extend_from_slice(&vocabulary[(rng.next() % 400) as usize]);
                text.push(match w % 11 {
                    10 => b'\n',
                    5 => b'\t',
                    _ => b' ',
                });
            }
            (format!("part{f:02}.txt"), text)
        })
        .collect()
}

/// Every committed line, sorted.
fn committed_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir.join("output")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.starts_with("part-") {
            lines.extend(
                std::fs::read_to_string(&path)
                    .unwrap()
                    .lines()
                    .map(String::from),
            );
        }
    }
    lines.sort();
    lines
}

/// The visible and hidden part files: `(task, seq, hidden)`.
fn parts(dir: &Path) -> Vec<(u32, u64, bool)> {
    let Ok(entries) = std::fs::read_dir(dir.join("output")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_str()?.to_string();
            let (hidden, rest) = match name.strip_prefix('.') {
                Some(r) => (true, r.to_string()),
                None => (false, name),
            };
            let mut it = rest.strip_prefix("part-")?.split('-');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?, hidden))
        })
        .collect()
}

/// Every visible part file belongs to a completed checkpoint: its transaction began before the
/// barrier of the latest completed checkpoint.
fn check_visible_parts_are_covered(dir: &Path) {
    let listed = json_of(&cairn_ok(&["checkpoints", "list", "--json"], dir));
    let latest = listed["checkpoints"].as_array().unwrap().last().cloned();
    let visible: Vec<(u32, u64)> = parts(dir)
        .into_iter()
        .filter(|(_, _, hidden)| !hidden)
        .map(|(t, s, _)| (t, s))
        .collect();
    let Some(latest) = latest else {
        assert!(
            visible.is_empty(),
            "part files visible with no completed checkpoint: {visible:?}"
        );
        return;
    };
    let id = latest["id"].to_string();
    let shown = json_of(&cairn_ok(&["checkpoints", "show", &id, "--json"], dir));
    for (task, seq) in visible {
        let t = shown["metadata"]["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["subtask"] == task)
            .unwrap();
        let open = t["sink"]["current"]["seq"].as_u64().unwrap();
        assert!(
            seq < open,
            "part-{task:03}-{seq:06} is visible but began after checkpoint {id}'s barrier"
        );
    }
}

/// The count of every word, as `tr -s '[:space:]' '\n' | sort | uniq -c` would say (with
/// invalid UTF-8 replaced, as the job does).
fn expected_counts(input: &[(String, Vec<u8>)]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for (_, text) in input {
        for word in text
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
        {
            *counts
                .entry(String::from_utf8_lossy(word).into_owned())
                .or_insert(0) += 1;
        }
    }
    counts
}

fn final_counts(lines: &[String]) -> BTreeMap<String, u64> {
    let mut max = BTreeMap::new();
    for line in lines {
        let (word, count) = line.rsplit_once('\t').unwrap();
        let c: u64 = count.parse().unwrap();
        let m = max.entry(word.to_string()).or_insert(0);
        *m = (*m).max(c);
    }
    max
}

/// One `cairn run`, killed with SIGKILL `kill_after` after it started the job unless it ended
/// first; whether it finished, and its stdout.
fn run_once(dir: &Path, resume: bool, kill_after: Option<Duration>) -> (bool, String) {
    let mut args = vec!["run", "--json"];
    if resume {
        args.extend(["--from", "latest"]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(&args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let (started_tx, started) = crossbeam_channel::bounded(1);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let errors = std::thread::spawn(move || {
        let mut all = String::new();
        let mut line = String::new();
        while stderr.read_line(&mut line).unwrap_or(0) > 0 {
            if line.starts_with("cairn: job") {
                let _ = started_tx.try_send(());
            }
            all.push_str(&line);
            line.clear();
        }
        all
    });
    if let Some(after) = kill_after {
        // The job has started (or cairn ended early, which `wait` shows); then a random moment
        // to crash at, not a synchronization.
        let _ = started.recv_timeout(Duration::from_secs(120));
        std::thread::sleep(after);
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let stdout = reader.join().unwrap();
    let stderr = errors.join().unwrap();
    if kill_after.is_none() {
        assert!(status.success(), "{stderr}");
    }
    (stdout.contains("\"status\": \"finished\""), stdout)
}

/// Bytes of the input that are not UTF-8 (the input's only ones are 0xff and 0xfe).
fn invalid_bytes(input: &[(String, Vec<u8>)]) -> u64 {
    input
        .iter()
        .flat_map(|(_, b)| b.iter())
        .filter(|&&b| b == 0xff || b == 0xfe)
        .count() as u64
}

#[test]
fn committed_output_is_exactly_once_after_kills_at_random_points() {
    let input = input(6, 12_000);
    // The uninterrupted run.
    let clean = setup(&input);
    let (finished, stdout) = run_once(clean.path(), false, None);
    assert!(finished, "{stdout}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let expected = committed_lines(clean.path());
    assert_eq!(final_counts(&expected), expected_counts(&input));
    assert_eq!(summary["words"], 72_000);
    assert!(invalid_bytes(&input) > 0);
    assert_eq!(summary["invalid_utf8_bytes"], invalid_bytes(&input));
    assert!(parts(clean.path()).iter().all(|(_, _, hidden)| !hidden));

    // The same input, killed with SIGKILL at random moments, resumed each time.
    let dir = setup(&input);
    let mut rng = Rng(42);
    let mut kills = 0;
    let mut finished = false;
    let mut runs = 0;
    while !finished {
        runs += 1;
        assert!(runs <= 30, "no end after 30 runs");
        let has_checkpoint = dir.path().join("checkpoints").join("wc").is_dir()
            && !json_of(&cairn_ok(&["checkpoints", "list", "--json"], dir.path()))["checkpoints"]
                .as_array()
                .unwrap()
                .is_empty();
        let kill = (kills < 4).then(|| Duration::from_millis(rng.next() % 1500));
        let (done, stdout) = run_once(dir.path(), has_checkpoint, kill);
        finished = done;
        if !done {
            kills += 1;
            check_visible_parts_are_covered(dir.path());
        } else {
            let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(summary["invalid_utf8_bytes"], invalid_bytes(&input));
        }
    }
    assert!(kills >= 1, "no run was killed");
    assert_eq!(
        committed_lines(dir.path()),
        expected,
        "committed lines differ from the uninterrupted run's after {kills} kills"
    );
    assert!(
        parts(dir.path()).iter().all(|(_, _, hidden)| !hidden),
        "hidden part files left: {:?}",
        parts(dir.path())
    );
}

#[test]
fn a_fresh_run_into_committed_output_is_refused() {
    let dir = setup(&input(1, 100));
    let (finished, _) = run_once(dir.path(), false, None);
    assert!(finished);
    let out = cairn(&["run"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already holds committed part files"), "{err}");
}

#[test]
fn settings_of_the_other_job_kind_are_refused() {
    let dir = setup(&[]);
    let config = dir.path().join("cairn.toml");
    let text = std::fs::read_to_string(&config).unwrap() + "keys = 5\n";
    std::fs::write(&config, text).unwrap();
    let out = cairn(&["config", "check", "cairn.toml"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("job.keys does not apply to job.kind = \"word-count\""),
        "{err}"
    );
}

/// Under `unaligned = true` with a slow operator, a failover restores a checkpoint holding
/// channel state, and the committed output is the uninterrupted run's.
#[test]
fn unaligned_failover_commits_the_uninterrupted_output() {
    let input = input(3, 5000);
    let clean = setup(&input);
    let (finished, stdout) = run_once(clean.path(), false, None);
    assert!(finished, "{stdout}");
    let expected = committed_lines(clean.path());

    let dir = setup_with(
        &input,
        "unaligned = true\n",
        "rate = 40000\noperator-rate = 10000\nfail-after-records = 3000\n\n\
         [restart]\nattempts = 1\ndelay = \"10ms\"\n",
    );
    let out = cairn_ok(&["run", "--json"], dir.path());
    let summary = json_of(&out);
    assert_eq!(summary["status"], "finished", "{summary}");
    assert_eq!(summary["attempts"], 2, "{summary}");
    // The checkpoint the failover restored from held channel state, as its line says.
    let log = String::from_utf8_lossy(&out.stderr);
    let from = log
        .lines()
        .find_map(|l| l.split_once("; restarting from ").map(|(_, p)| p.trim()))
        .unwrap_or_else(|| panic!("no restart from a checkpoint: {log}"));
    let line = log
        .lines()
        .find(|l| l.ends_with(&format!(": {from}")) && l.contains(" completed in "))
        .unwrap_or_else(|| panic!("no line for {from}: {log}"));
    assert!(line.contains("(unaligned, "), "{line}");
    assert!(!line.contains(", 0 B of channel state"), "{line}");
    assert_eq!(committed_lines(dir.path()), expected);
    assert!(parts(dir.path()).iter().all(|(_, _, hidden)| !hidden));
}
