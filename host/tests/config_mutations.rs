//! Mutated config files: every error `Config::load` gives for them is one line, carries no raw
//! control or bidirectional-formatting character, and names a line of the file.
//!
//! The corpus is made here, from a fixed seed, so a failure is reproducible: the example
//! configs and the `cairn config defaults` output, each mutated one to four times (bit flips,
//! bytes and snippets inserted, lines deleted, duplicated or swapped, values replaced by
//! hostile ones: multi-line strings, escaped control characters, U+202E, invalid UTF-8, huge
//! numbers and durations). The files are written to disk and loaded like a user's file, so the
//! read path (invalid UTF-8) is covered too. A sample also goes through `cairn config check` to
//! show what reaches the terminal.
//!
//! The check for forbidden characters is written here, independently of the escaping code in
//! `cairn_host::config`, so a gap in one is not hidden by the same gap in the other.

use std::path::Path;

use cairn_host::config::Config;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::util::cairn;

/// How many mutated files the test loads.
const FILES: usize = 3000;

/// Values a mutation puts after `key = `.
const VALUES: &[&str] = &[
    "\"1s\"",
    "\"5ms\"",
    "\"500000000000years\"",
    "\"18446744073709551615s\"",
    "\"99999999999999999999d\"",
    "18446744073709551615",
    "-1",
    "0",
    "1e400",
    "inf",
    "nan",
    "true",
    "\"\"",
    "\"\"\"a\nb\"\"\"",
    "'''x\ny'''",
    "\"a\\nb\"",
    "\"\\u0001\"",
    "\"\\u202e\"",
    "\"\\u001b[31mred\"",
    "\"bell\\u0007\"",
    "\"\\u2066x\\u2069\"",
    "[1, 2]",
    "{ a = 1 }",
    "\"5MiB\"",
    "\"1TiB\"",
    "\"unlimited\"",
    "\"\u{202e}reversed\"",
    "\"tab\there\"",
];

/// Snippets a mutation inserts anywhere.
const SNIPPETS: &[&[u8]] = &[
    b"\n",
    b"\r",
    b"\r\n",
    b"\x01",
    b"\x00",
    b"\x1b[2J",
    b"\x7f",
    "\u{202e}".as_bytes(),
    "\u{2067}".as_bytes(),
    "\u{200f}".as_bytes(),
    "\u{feff}".as_bytes(),
    "\u{85}".as_bytes(),
    "\u{2028}".as_bytes(),
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x80",
    b"\"",
    b"'",
    b"\"\"\"",
    b"'''",
    b"[",
    b"]",
    b"[[",
    b"=",
    b"#",
    b".",
    b",",
    b"{",
    b"}",
    b"\\",
    b"[storage]\n",
    b"[checkpointing]\n",
    b"[job]\n",
    b"[restart]\n",
    b"interval = ",
    b"timeout = ",
    b"delay = ",
    b"sha256 = ",
    b"plugin = ",
    b"path = ",
    b"search-path = ",
    b"storage.options.dir = 1\n",
    b"x\x01y = 1\n",
    "k\u{202e}ey = 1\n".as_bytes(),
];

/// One random mutation of `text`.
fn mutate(rng: &mut StdRng, text: &mut Vec<u8>) {
    let at = |rng: &mut StdRng, text: &Vec<u8>| rng.random_range(0..=text.len());
    match rng.random_range(0..7) {
        0 if !text.is_empty() => {
            let i = rng.random_range(0..text.len());
            text[i] ^= 1 << rng.random_range(0..8);
        }
        1 => {
            let i = at(rng, text);
            text.insert(i, rng.random());
        }
        2 => {
            let i = at(rng, text);
            let s = SNIPPETS[rng.random_range(0..SNIPPETS.len())];
            text.splice(i..i, s.iter().copied());
        }
        3 if !text.is_empty() => {
            let i = rng.random_range(0..text.len());
            let n = rng.random_range(1..=16).min(text.len() - i);
            text.drain(i..i + n);
        }
        4 => {
            // Replace the value of a random `key = value` line.
            let lines: Vec<(usize, usize)> = line_ranges(text)
                .into_iter()
                .filter(|&(s, e)| text[s..e].contains(&b'='))
                .collect();
            if let Some(&(s, e)) = lines.get(rng.random_range(0..lines.len().max(1))) {
                let eq = s + text[s..e].iter().position(|&b| b == b'=').unwrap();
                let v = VALUES[rng.random_range(0..VALUES.len())];
                text.splice(eq + 1..e, format!(" {v}").into_bytes());
            }
        }
        5 => {
            // Duplicate a line somewhere else.
            let lines = line_ranges(text);
            if !lines.is_empty() {
                let (s, e) = lines[rng.random_range(0..lines.len())];
                let line: Vec<u8> = text[s..e].iter().copied().chain([b'\n']).collect();
                let (to, _) = lines[rng.random_range(0..lines.len())];
                text.splice(to..to, line);
            }
        }
        _ => {
            // Swap two lines.
            let lines = line_ranges(text);
            if lines.len() >= 2 {
                let a = rng.random_range(0..lines.len());
                let b = rng.random_range(0..lines.len());
                let (a, b) = (lines[a.min(b)], lines[a.max(b)]);
                if a != b {
                    let la = text[a.0..a.1].to_vec();
                    let lb = text[b.0..b.1].to_vec();
                    text.splice(b.0..b.1, la);
                    text.splice(a.0..a.1, lb);
                }
            }
        }
    }
}

/// The byte ranges of the lines of `text`, without their `\n`.
fn line_ranges(text: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        if b == b'\n' {
            out.push((start, i));
            start = i + 1;
        }
    }
    if start < text.len() {
        out.push((start, text.len()));
    }
    out
}

/// What a terminal must never receive raw: control characters (C0, DEL, C1) and the
/// characters that reorder, hide or break text (bidirectional controls, zero-width characters,
/// line and paragraph separators, the byte-order mark).
fn forbidden(c: char) -> bool {
    let u = c as u32;
    u < 0x20
        || (0x7f..=0x9f).contains(&u)
        || matches!(
            u,
            0x00ad
                | 0x061c
                | 0x180e
                | 0x200b..=0x200f
                | 0x2028..=0x202e
                | 0x2060..=0x2069
                | 0xfeff
                | 0xfff9..=0xfffb
        )
}

/// What is wrong with one error message, if anything.
fn problems_of(shown: &str, line: Option<usize>) -> Vec<&'static str> {
    let mut out = Vec::new();
    if shown.contains('\n') || shown.contains('\r') {
        out.push("spans several lines");
    }
    if shown.chars().any(forbidden) {
        out.push("echoes a raw control or bidi character");
    }
    match line {
        Some(l) if shown.contains(&format!(":{l}")) => {}
        Some(_) => out.push("has a line that the message does not show"),
        None => out.push("names no line"),
    }
    out
}

fn seeds() -> Vec<Vec<u8>> {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    vec![
        std::fs::read(configs.join("quickstart.toml")).unwrap(),
        std::fs::read(configs.join("memory.toml")).unwrap(),
        cairn_host::config::defaults_toml().into_bytes(),
        b"[checkpointing]\ninterval = \"1s\"\ntimeout = \"1min\"\nnum-retained = 3\n\n[restart]\n\
          delay = \"1s\"\nattempts = 2\n\n[job]\nid = \"j\"\nkeys = 10\n\
          state-bytes-per-key = \"1KiB\"\nrate = \"unlimited\"\n\n[storage]\nplugin = \"memory\"\n\
          sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n"
            .to_vec(),
        b"storage = { plugin = \"filesystem\", options = { dir = \"x\" } }\n\
          checkpointing.interval = \"2s\"\ncheckpointing.min-pause = \"1s\"\n\
          plugins.search-path = [\"p\"]\nsavepoints = { dir = \"sp\", on-sigterm = true }\n"
            .to_vec(),
    ]
}

#[test]
fn every_error_from_a_mutated_config_is_one_escaped_line_that_names_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let seeds = seeds();
    let mut rng = StdRng::seed_from_u64(0x00c0_ffee_ca1e);
    let (mut errors, mut non_utf8) = (0, 0);
    let mut bad: Vec<String> = Vec::new();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut samples = Vec::new();
    for i in 0..FILES {
        let mut text = seeds[i % seeds.len()].clone();
        for _ in 0..rng.random_range(1..=4) {
            mutate(&mut rng, &mut text);
        }
        let path = dir.path().join(format!("m{i}.toml"));
        std::fs::write(&path, &text).unwrap();
        non_utf8 += usize::from(std::str::from_utf8(&text).is_err());
        let Err(e) = Config::load(&path) else {
            continue;
        };
        errors += 1;
        let shown = e.to_string();
        let problems = problems_of(&shown, e.line);
        for p in &problems {
            *counts.entry(p).or_default() += 1;
        }
        if !problems.is_empty() && bad.len() < 10 {
            bad.push(format!("{}: {shown:?} ({problems:?})", path.display()));
        }
        if samples.len() < 40 && i % 7 == 0 {
            samples.push(path);
        }
    }
    eprintln!(
        "{FILES} mutated files: {errors} errors ({non_utf8} files not UTF-8); problems: {counts:?}"
    );
    assert!(
        errors > FILES / 2,
        "the mutations should break most files; only {errors} of {FILES} were refused"
    );
    assert!(non_utf8 > 50, "only {non_utf8} files are not UTF-8");
    assert!(
        counts.is_empty(),
        "problems: {counts:?}; first offenders:\n{}",
        bad.join("\n")
    );

    // What `cairn config check` prints for some of them: one `error:` line on stderr.
    for path in samples {
        let out = cairn(&["config", "check", path.to_str().unwrap()], dir.path());
        let stderr = String::from_utf8(out.stderr).expect("stderr is UTF-8");
        if out.status.success() {
            continue;
        }
        assert!(
            stderr.starts_with("error: ") && stderr.ends_with('\n'),
            "{stderr:?}"
        );
        let line = stderr.trim_end_matches('\n');
        assert!(
            !line.contains('\n') && !line.chars().any(forbidden),
            "{line:?}"
        );
    }
}
