//! The bounded fuzz campaign of `cargo test`: every corpus input of every target, then
//! random mutations of them (bit flips, inserted and deleted bytes, spliced inputs, tokens each
//! decoder cares about), from a fixed seed so a failure reproduces. The long, coverage-guided
//! campaign is AFL++ on the same targets (`afl/`, see the README); this one keeps CI honest
//! about the corpus and catches the shallow regressions.
//!
//! `CAIRN_FUZZ_ITERATIONS` sets the mutations per target (default 20,000), `CAIRN_FUZZ_SEED`
//! the seed, `CAIRN_FUZZ_TARGETS` (comma-separated names) limits the targets. A failing input is written to `target/fuzz-failures/<target>-<n>` and named.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
};

use cairn_fuzz::TARGETS;
use rand::{rngs::StdRng, Rng, SeedableRng};

const TOKENS: &[&[u8]] = &[
    b"\n",
    b"\"",
    b"'''",
    b"[",
    b"]",
    b"=",
    b"{",
    b"}",
    b",",
    b".",
    b"/",
    b"..",
    b"\\",
    b"\0",
    b"\x01",
    b"\xff",
    b"\xc3",
    "\u{202e}".as_bytes(),
    b"://",
    b"s3://",
    b"memory://",
    b"file:///",
    b"chk-",
    b"shared",
    b"taskowned",
    b"savepoint-",
    b"_metadata",
    b"CAIRNCKP",
    b"CAIRNMAN",
    b"\"kind\":\"inline\"",
    b"\"kind\":\"stored\"",
    b"\"base64\":",
    b"\"locator\":",
    b"==",
    b"18446744073709551615",
    b"-1",
    b"1e999",
    b"\"500000000000years\"",
    b"interval = ",
    b"0123456789abcdef0123456789abcdef",
];

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, others: &[(PathBuf, Vec<u8>)]) {
    for _ in 0..rng.random_range(1..=8) {
        let at = rng.random_range(0..=input.len());
        match rng.random_range(0..6) {
            0 if !input.is_empty() => {
                let i = rng.random_range(0..input.len());
                input[i] ^= 1 << rng.random_range(0..8);
            }
            1 => input.insert(at, rng.random()),
            2 if !input.is_empty() => {
                let n = rng
                    .random_range(1..=32)
                    .min(input.len() - at.min(input.len() - 1));
                let start = at.min(input.len() - 1);
                input.drain(start..(start + n).min(input.len()));
            }
            3 => {
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                input.splice(at..at, t.iter().copied());
            }
            4 => {
                // Splice in a piece of another corpus input.
                let other = &others[rng.random_range(0..others.len())].1;
                if !other.is_empty() {
                    let s = rng.random_range(0..other.len());
                    let e = rng.random_range(s..=other.len().min(s + 64));
                    input.splice(at..at, other[s..e].iter().copied());
                }
            }
            _ => input.truncate(at),
        }
    }
}

fn run_one(name: &str, f: fn(&[u8]), input: &[u8], n: usize) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(input))) {
        let why = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let _ = std::panic::take_hook();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}-{n}"));
        std::fs::write(&path, input).unwrap();
        panic!(
            "target {name} failed on input {n}, saved to {} ({} bytes): {why}",
            path.display(),
            input.len()
        );
    }
}

#[test]
fn every_target_survives_its_corpus_and_random_mutations_of_it() {
    let iterations: usize = std::env::var("CAIRN_FUZZ_ITERATIONS")
        .map(|v| v.parse().expect("CAIRN_FUZZ_ITERATIONS is a number"))
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("CAIRN_FUZZ_SEED")
        .map(|v| v.parse().expect("CAIRN_FUZZ_SEED is a number"))
        .unwrap_or(0x5eed_ca1e);
    // Panics are caught and reported with their input; the default hook would print each one.
    std::panic::set_hook(Box::new(|_| {}));
    let only: Option<Vec<String>> = std::env::var("CAIRN_FUZZ_TARGETS")
        .ok()
        .map(|v| v.split(',').map(|t| t.trim().to_string()).collect());
    for &(name, f) in TARGETS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|t| t == name)) {
            continue;
        }
        let inputs = corpus(name);
        for (n, (_, input)) in inputs.iter().enumerate() {
            run_one(name, f, input, n);
        }
        let mut rng = StdRng::seed_from_u64(seed ^ name.len() as u64);
        let started = std::time::Instant::now();
        for n in 0..iterations {
            let mut input = inputs[rng.random_range(0..inputs.len())].1.clone();
            mutate(&mut rng, &mut input, &inputs);
            run_one(name, f, &input, inputs.len() + n);
        }
        eprintln!(
            "{name}: {} corpus inputs and {iterations} mutations in {:.1?}",
            inputs.len(),
            started.elapsed()
        );
    }
    let _ = std::panic::take_hook();
}
