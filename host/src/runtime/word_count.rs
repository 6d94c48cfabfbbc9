//! The built-in word count, exactly once: text files in, `word<TAB>running-count` lines out,
//! through a two-phase-commit file sink.
//!
//! **Source.** The regular files of `[job] input`, sorted by name, are dealt to the source
//! subtasks (file `i` to subtask `i % parallelism`). A source reads its files in order and
//! splits them into words on ASCII whitespace (space, tab, newline, carriage return, vertical
//! tab, form feed: what `tr` and `wc -w` split on in the C locale). A word whose bytes are not
//! UTF-8 has each invalid sequence replaced by U+FFFD, and the invalid bytes are counted
//! (`invalid_utf8_bytes` in the summary); that is never an error. Its offset is the file and the
//! byte after the last word it emitted, so a restored source resumes exactly there. The input
//! folder's listing (names and sizes) is part of the job's fingerprint: a checkpoint is not
//! restored over changed input.
//!
//! **Count.** Keyed by word; the state is the word's count so far; every word emits the line
//! `word\tcount` with its new count.
//!
//! **Sink.** [`FileSink`]: each keyed task writes its lines into one part file per checkpoint,
//! `part-<task>-<seq>` under `[job] output`. Until the checkpoint that covers a part file
//! completes, the file is hidden (`.part-<task>-<seq>`); its commit renames it. So the visible
//! output only ever holds lines of completed checkpoints, and after any crash and restore it
//! has each line exactly once. Since every occurrence of a word emits one line with the next
//! count, the committed output holds, for each word, the lines `word\t1` up to `word\tn`: the
//! largest count of a word is what `sort | uniq -c` says.

use std::{
    collections::HashSet,
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::api::{Job, JobEnd, JobError, Next, Process, Source, TaskContext, TwoPhaseCommitSink};
use crate::config::JobConfig;

/// The job kind's name in metadata.
pub const JOB_KIND: &str = "word-count";

/// A word longer than this is cut into pieces of this size (so a file without whitespace never
/// needs unbounded memory).
pub const MAX_WORD_BYTES: usize = 64 * 1024;

/// Whether `b` separates words.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// A source's position in its files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordOffset {
    /// Index of the file being read, among this source's files.
    pub file: u64,
    /// The byte after the last word emitted from it.
    pub pos: u64,
    /// Words emitted so far.
    pub words: u64,
    /// Bytes that were not UTF-8 (replaced) so far.
    pub invalid_utf8_bytes: u64,
}

/// One source subtask: reads its files and emits their words.
pub struct WordSource {
    files: Vec<PathBuf>,
    offset: WordOffset,
    reader: Option<BufReader<File>>,
    /// The position of the reader (bytes consumed from the current file).
    at: u64,
    word: Vec<u8>,
}

impl WordSource {
    fn open(&mut self) -> Result<(), JobError> {
        let path = &self.files[self.offset.file as usize];
        let mut f = File::open(path)
            .map_err(|e| JobError(format!("opening input file {}: {e}", path.display())))?;
        f.seek(SeekFrom::Start(self.offset.pos))
            .map_err(|e| JobError(format!("seeking in {}: {e}", path.display())))?;
        self.reader = Some(BufReader::with_capacity(256 * 1024, f));
        self.at = self.offset.pos;
        Ok(())
    }

    /// The word in `self.word` as text, counting invalid bytes.
    fn take_word(&mut self) -> String {
        let mut text = String::with_capacity(self.word.len());
        for chunk in self.word.utf8_chunks() {
            text.push_str(chunk.valid());
            if !chunk.invalid().is_empty() {
                self.offset.invalid_utf8_bytes += chunk.invalid().len() as u64;
                text.push(char::REPLACEMENT_CHARACTER);
            }
        }
        self.word.clear();
        self.offset.words += 1;
        self.offset.pos = self.at;
        text
    }
}

impl Source for WordSource {
    type Record = String;
    type Offset = WordOffset;

    fn next(&mut self) -> Result<Next<String>, JobError> {
        loop {
            if self.offset.file as usize >= self.files.len() {
                return Ok(Next::End);
            }
            if self.reader.is_none() {
                self.open()?;
            }
            let path = &self.files[self.offset.file as usize];
            let reader = self.reader.as_mut().expect("opened above");
            let buf = reader
                .fill_buf()
                .map_err(|e| JobError(format!("reading {}: {e}", path.display())))?;
            if buf.is_empty() {
                // The end of the file ends a word too.
                if !self.word.is_empty() {
                    return Ok(Next::Record(self.take_word()));
                }
                self.reader = None;
                self.offset.file += 1;
                self.offset.pos = 0;
                continue;
            }
            let mut used = 0;
            let mut done = false;
            for &b in buf {
                if is_space(b) {
                    used += 1;
                    if !self.word.is_empty() {
                        done = true;
                        break;
                    }
                } else {
                    self.word.push(b);
                    used += 1;
                    if self.word.len() == MAX_WORD_BYTES {
                        done = true;
                        break;
                    }
                }
            }
            reader.consume(used);
            self.at += used as u64;
            if !done && self.word.is_empty() {
                // Only whitespace so far: the position can move past it.
                self.offset.pos = self.at;
            }
            if done {
                return Ok(Next::Record(self.take_word()));
            }
        }
    }

    fn offset(&self) -> WordOffset {
        self.offset
    }
}

/// A part file: one transaction of a [`FileSink`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartFile {
    /// Its sequence number among the task's part files.
    pub seq: u64,
    /// Lines written.
    pub lines: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// A two-phase-commit sink writing lines into part files of a folder, one per checkpoint and
/// task: hidden (`.part-<task>-<seq>`) until the checkpoint completes, then renamed
/// (`part-<task>-<seq>`). Pre-commit flushes and fsyncs the file and the folder; commit renames
/// and fsyncs the folder, and is idempotent.
pub struct FileSink {
    dir: PathBuf,
    subtask: u32,
    next_seq: u64,
    /// The open transaction's file, once something was written.
    open: Option<(u64, BufWriter<File>)>,
}

fn visible_name(subtask: u32, seq: u64) -> String {
    format!("part-{subtask:03}-{seq:06}")
}

/// The sequence number of a part file of `subtask` (visible or hidden), if `name` is one.
fn part_seq(name: &str, subtask: u32) -> Option<(u64, bool)> {
    let (hidden, rest) = match name.strip_prefix('.') {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    let rest = rest.strip_prefix(&format!("part-{subtask:03}-"))?;
    Some((rest.parse().ok()?, hidden))
}

fn sync_dir(dir: &Path) -> Result<(), JobError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JobError(format!("syncing folder {}: {e}", dir.display())))
}

impl FileSink {
    /// The sink of task `subtask`, writing into `dir` (created if need be).
    pub fn new(dir: &Path, subtask: u32) -> Result<Self, JobError> {
        fs::create_dir_all(dir)
            .map_err(|e| JobError(format!("creating output folder {}: {e}", dir.display())))?;
        let mut next_seq = 1;
        for (seq, _) in Self::parts(dir, subtask)? {
            next_seq = next_seq.max(seq + 1);
        }
        Ok(FileSink {
            dir: dir.to_path_buf(),
            subtask,
            next_seq,
            open: None,
        })
    }

    /// This task's part files in `dir`: sequence number and whether hidden.
    fn parts(dir: &Path, subtask: u32) -> Result<Vec<(u64, bool)>, JobError> {
        let entries = fs::read_dir(dir)
            .map_err(|e| JobError(format!("listing output folder {}: {e}", dir.display())))?;
        let mut parts = Vec::new();
        for entry in entries {
            let entry = entry
                .map_err(|e| JobError(format!("listing output folder {}: {e}", dir.display())))?;
            if let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|n| part_seq(n, subtask))
            {
                parts.push(p);
            }
        }
        Ok(parts)
    }

    fn hidden(&self, seq: u64) -> PathBuf {
        self.dir
            .join(format!(".{}", visible_name(self.subtask, seq)))
    }

    fn visible(&self, seq: u64) -> PathBuf {
        self.dir.join(visible_name(self.subtask, seq))
    }

    fn close_open(&mut self, seq: u64) -> Result<(), JobError> {
        if let Some((open_seq, w)) = self.open.take() {
            if open_seq != seq {
                self.open = Some((open_seq, w));
                return Ok(());
            }
            let path = self.hidden(seq);
            let file = w
                .into_inner()
                .map_err(|e| JobError(format!("writing {}: {}", path.display(), e.error())))?;
            file.sync_all()
                .map_err(|e| JobError(format!("syncing {}: {e}", path.display())))?;
        }
        Ok(())
    }
}

/// Whether `dir` holds committed part files (an earlier run's output).
pub fn has_committed_parts(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("part-"))
        })
    })
}

impl TwoPhaseCommitSink for FileSink {
    type Input = String;
    type Transaction = PartFile;

    fn begin_transaction(&mut self) -> Result<PartFile, JobError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        Ok(PartFile {
            seq,
            lines: 0,
            bytes: 0,
        })
    }

    fn write(&mut self, txn: &mut PartFile, line: String) -> Result<(), JobError> {
        if self.open.as_ref().is_none_or(|(s, _)| *s != txn.seq) {
            let path = self.hidden(txn.seq);
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| JobError(format!("creating part file {}: {e}", path.display())))?;
            self.open = Some((txn.seq, BufWriter::with_capacity(64 * 1024, file)));
        }
        let (_, w) = self.open.as_mut().expect("opened above");
        w.write_all(line.as_bytes())
            .and_then(|()| w.write_all(b"\n"))
            .map_err(|e| {
                JobError(format!(
                    "writing part file {}: {e}",
                    self.hidden(txn.seq).display()
                ))
            })?;
        txn.lines += 1;
        txn.bytes += line.len() as u64 + 1;
        Ok(())
    }

    fn pre_commit(&mut self, txn: &mut PartFile) -> Result<(), JobError> {
        if txn.lines == 0 {
            return Ok(());
        }
        self.close_open(txn.seq)?;
        sync_dir(&self.dir)
    }

    fn commit(&mut self, txn: PartFile) -> Result<(), JobError> {
        if txn.lines == 0 {
            return Ok(());
        }
        let (hidden, visible) = (self.hidden(txn.seq), self.visible(txn.seq));
        let size_ok = |p: &Path| -> Result<(), JobError> {
            let len = fs::metadata(p)
                .map_err(|e| JobError(format!("{}: {e}", p.display())))?
                .len();
            if len == txn.bytes {
                Ok(())
            } else {
                Err(JobError(format!(
                    "part file {} holds {len} bytes, its transaction wrote {}",
                    p.display(),
                    txn.bytes
                )))
            }
        };
        if hidden.exists() {
            size_ok(&hidden)?;
            fs::rename(&hidden, &visible)
                .map_err(|e| JobError(format!("committing {}: {e}", hidden.display())))?;
            sync_dir(&self.dir)
        } else if visible.exists() {
            // Committed before (a restore commits again): nothing to do.
            size_ok(&visible)
        } else {
            Err(JobError(format!(
                "part file {} of a completed checkpoint is missing (neither {} nor {} exists)",
                visible_name(self.subtask, txn.seq),
                hidden.display(),
                visible.display()
            )))
        }
    }

    fn abort(&mut self, txn: PartFile) -> Result<(), JobError> {
        if let Some((seq, _)) = &self.open {
            if *seq == txn.seq {
                self.open = None;
            }
        }
        match fs::remove_file(self.hidden(txn.seq)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(JobError(format!(
                "aborting {}: {e}",
                self.hidden(txn.seq).display()
            ))),
        }
    }

    fn abort_unknown(&mut self, keep: &[PartFile]) -> Result<(), JobError> {
        let keep: HashSet<u64> = keep.iter().map(|t| t.seq).collect();
        for (seq, hidden) in Self::parts(&self.dir, self.subtask)? {
            if hidden && !keep.contains(&seq) {
                let path = self.hidden(seq);
                match fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!(file = %path.display(), "aborted a part file no checkpoint holds")
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(JobError(format!("aborting {}: {e}", path.display()))),
                }
            }
        }
        Ok(())
    }
}

/// The word-count job.
#[derive(Debug, Clone)]
pub struct WordCount {
    files: Vec<PathBuf>,
    output: PathBuf,
    parallelism: u32,
    settings: String,
}

impl WordCount {
    /// The job as `[job]` configures it: lists the input folder.
    pub fn new(job: &JobConfig) -> Result<Self, String> {
        let (Some(input), Some(output)) = (&job.input, &job.output) else {
            return Err("job.kind = \"word-count\" needs job.input and job.output".to_string());
        };
        let entries = fs::read_dir(input)
            .map_err(|e| format!("job.input: cannot list {}: {e}", input.display()))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| format!("job.input: listing {}: {e}", input.display()))?;
            let meta = entry
                .metadata()
                .map_err(|e| format!("job.input: {}: {e}", entry.path().display()))?;
            if meta.is_file() {
                files.push((entry.file_name().to_string_lossy().into_owned(), meta.len()));
            }
        }
        files.sort();
        let mut listing = Sha256::new();
        for (name, size) in &files {
            listing.update(name.as_bytes());
            listing.update([0]);
            listing.update(size.to_le_bytes());
        }
        let bytes: u64 = files.iter().map(|(_, s)| s).sum();
        let settings = format!(
            "input = {} ({} files, {bytes} bytes, listing {}), output = {}, parallelism = {}",
            input.display(),
            files.len(),
            &hex::encode(listing.finalize())[..16],
            output.display(),
            job.parallelism
        );
        Ok(WordCount {
            files: files.into_iter().map(|(n, _)| input.join(n)).collect(),
            output: output.clone(),
            parallelism: job.parallelism,
            settings,
        })
    }

    /// The output folder.
    pub fn output(&self) -> &Path {
        &self.output
    }
}

impl Job for WordCount {
    type Source = WordSource;
    type Key = String;
    type State = u64;
    type Sink = FileSink;

    fn kind(&self) -> &str {
        JOB_KIND
    }

    fn settings(&self) -> String {
        self.settings.clone()
    }

    fn source(
        &self,
        ctx: &TaskContext,
        offset: Option<WordOffset>,
    ) -> Result<WordSource, JobError> {
        let files: Vec<PathBuf> = self
            .files
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u64 % u64::from(self.parallelism) == u64::from(ctx.subtask))
            .map(|(_, f)| f.clone())
            .collect();
        let offset = offset.unwrap_or_default();
        if offset.file as usize > files.len() {
            return Err(JobError(format!(
                "the restored offset names file {} of source {}, which has {} files",
                offset.file,
                ctx.subtask,
                files.len()
            )));
        }
        Ok(WordSource {
            files,
            offset,
            reader: None,
            at: offset.pos,
            word: Vec::new(),
        })
    }

    fn key(&self, word: &String) -> String {
        word.clone()
    }

    fn process(&self, p: &mut Process<'_, Self>, word: String) -> Result<(), JobError> {
        let count = p.state.get_or_insert_with(|| 0)?;
        *count += 1;
        let line = format!("{word}\t{count}");
        p.emit(line);
        Ok(())
    }

    fn sink(&self, ctx: &TaskContext) -> Result<Option<FileSink>, JobError> {
        FileSink::new(&self.output, ctx.subtask).map(Some)
    }

    fn summarize(&self, end: &JobEnd<'_, Self>) -> serde_json::Map<String, serde_json::Value> {
        let words: u64 = end
            .states
            .iter()
            .flat_map(|s| s.iter())
            .map(|(_, c)| c)
            .sum();
        let distinct: usize = end.states.iter().map(|s| s.len()).sum();
        let invalid: u64 = end.offsets.iter().map(|o| o.invalid_utf8_bytes).sum();
        let parts = fs::read_dir(&self.output).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with("part-"))
                })
                .count()
        });
        let mut details = serde_json::Map::new();
        details.insert("words".into(), words.into());
        details.insert("distinct_words".into(), (distinct as u64).into());
        details.insert("invalid_utf8_bytes".into(), invalid.into());
        details.insert("output".into(), self.output.display().to_string().into());
        details.insert("part_files".into(), (parts as u64).into());
        details
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words_of(text: &[u8]) -> (Vec<String>, WordOffset) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        fs::write(&f, text).unwrap();
        let mut s = WordSource {
            files: vec![f],
            offset: WordOffset::default(),
            reader: None,
            at: 0,
            word: Vec::new(),
        };
        let mut out = Vec::new();
        while let Next::Record(w) = s.next().unwrap() {
            out.push(w);
        }
        (out, s.offset())
    }

    #[test]
    fn splits_on_ascii_whitespace_and_replaces_invalid_utf8() {
        let (words, offset) = words_of(b"  the cat\tsat\n\non  the\xff mat\r\n");
        assert_eq!(words, ["the", "cat", "sat", "on", "the\u{fffd}", "mat"]);
        assert_eq!(offset.invalid_utf8_bytes, 1);
        assert_eq!(offset.words, 6);
        let (words, _) = words_of("héllo wörld".as_bytes());
        assert_eq!(words, ["héllo", "wörld"]);
        let (words, _) = words_of(b"");
        assert!(words.is_empty());
    }

    #[test]
    fn a_source_resumes_exactly_after_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let text = b"one two  three\nfour five six seven";
        fs::write(dir.path().join("a"), text).unwrap();
        fs::write(dir.path().join("b"), b"eight nine").unwrap();
        let make = |offset| WordSource {
            files: vec![dir.path().join("a"), dir.path().join("b")],
            offset,
            reader: None,
            at: offset.pos,
            word: Vec::new(),
        };
        let mut all = make(WordOffset::default());
        let mut seen = Vec::new();
        let mut offsets = Vec::new();
        while let Next::Record(w) = all.next().unwrap() {
            seen.push(w);
            offsets.push(all.offset());
        }
        assert_eq!(seen.len(), 9);
        for (i, &o) in offsets.iter().enumerate() {
            let mut resumed = make(o);
            let mut rest = Vec::new();
            while let Next::Record(w) = resumed.next().unwrap() {
                rest.push(w);
            }
            assert_eq!(rest, seen[i + 1..], "resumed after word {i} at {o:?}");
        }
    }

    #[test]
    fn the_file_sink_commits_once_and_aborts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::new(dir.path(), 0).unwrap();
        let mut t = sink.begin_transaction().unwrap();
        sink.write(&mut t, "a\t1".into()).unwrap();
        sink.pre_commit(&mut t).unwrap();
        assert!(dir.path().join(".part-000-000001").exists());
        assert!(!dir.path().join("part-000-000001").exists());
        sink.commit(t.clone()).unwrap();
        sink.commit(t.clone()).unwrap(); // again: idempotent
        assert_eq!(
            fs::read_to_string(dir.path().join("part-000-000001")).unwrap(),
            "a\t1\n"
        );
        let mut u = sink.begin_transaction().unwrap();
        sink.write(&mut u, "b\t1".into()).unwrap();
        sink.pre_commit(&mut u).unwrap();
        // A new sink (a restart) that does not know transaction 2 aborts it, and numbers on.
        let mut again = FileSink::new(dir.path(), 0).unwrap();
        again.abort_unknown(&[]).unwrap();
        assert!(!dir.path().join(".part-000-000002").exists());
        assert_eq!(again.begin_transaction().unwrap().seq, 3);
        // A transaction whose file vanished is an error, not silence.
        assert!(again
            .commit(PartFile {
                seq: 9,
                lines: 1,
                bytes: 2
            })
            .unwrap_err()
            .0
            .contains("missing"));
    }
}
