//! The text of a config file, and reading values out of it with errors that point at them.
//!
//! Tables deserialize every key that needs checking beyond "is it TOML" as a [`Field`]: the raw
//! value with its byte span. The readers here turn a field into a typed value, or into a
//! [`ConfigError`] whose message starts with the key and the value as written
//! (`checkpointing.interval = "5ms" is below the minimum of 10ms`) and whose line comes from the
//! span. Because the line comes from the parser and not from a scan of the text, it is right
//! however the key was written: under a `[table]` header, as a dotted key, or in an inline table.
//!
//! Why not let serde check the types? Its messages name the Rust type, not the key
//! ("invalid type: integer `5`, expected a string"), and a duration or size needs a message
//! that says which units are allowed. Serde still reports syntax errors and unknown keys, and
//! [`Doc::serde_error`] gives those a line and a key too.

use std::{
    borrow::Cow,
    fmt,
    ops::RangeInclusive,
    path::{Path, PathBuf},
    str::Utf8Error,
    time::Duration,
};

use super::ConfigError;

/// The longest duration any key accepts: 365 days. Longer values mean nothing for a checkpoint
/// or a restart, and one of about 10^19 seconds would overflow the clock arithmetic of the job
/// that uses it; refusing them here keeps that out of `run`.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A value as written, with the byte range it was written at.
pub(super) type Field = toml::Spanned<toml::Value>;

/// The text of a config file, for errors that name the file and the line.
pub(super) struct Doc<'a> {
    /// The whole file.
    pub text: &'a str,
    /// Where it came from, as the user named it.
    pub file: &'a Path,
}

impl<'a> Doc<'a> {
    /// `path` as the file means it: relative paths are taken from the file's directory.
    pub fn resolve(&self, path: PathBuf) -> PathBuf {
        if path.is_absolute() {
            path
        } else {
            self.file.parent().unwrap_or(Path::new("")).join(path)
        }
    }

    /// An error about `key`, whose value starts at byte `offset`.
    pub fn error_at(&self, key: &str, offset: usize, message: String) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: Some(line_of_offset(self.text, offset)),
            column: None,
            key: Some(terminal_safe(key).into_owned()),
            message: terminal_safe(&message).into_owned(),
        }
    }

    /// A TOML syntax error, a wrong type or an unknown key, with its line and, when it can be
    /// found, its key.
    pub fn serde_error(&self, e: &toml::de::Error) -> ConfigError {
        // Without a span (rare: an error about the whole document), the error is about line 1.
        let line = e.span().map_or(1, |s| line_of_offset(self.text, s.start));
        let key = key_at_line(self.text, line);
        // The parser's messages can span lines ("invalid string\nexpected `\"`"); one line, as
        // every cairn error is.
        let mut message = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        if let Some(k) = &key {
            if let Some(why) = super::flink::missing(k) {
                // A Flink key cairn lacks: whatever serde made of it, say what cairn has instead.
                message = format!("{k} is Flink's key, and {why}");
            } else if let Some(rest) = message.strip_prefix("unknown field ") {
                // "unknown field `intervall`, expected one of `interval`, ..." names neither the
                // table nor what a key is; say both.
                let (unknown, allowed) = rest
                    .split_once(", expected ")
                    .unwrap_or((rest, "a key this table has"));
                let names = allowed.split('`').skip(1).step_by(2);
                message = match cairn_plugin_api::did_you_mean(unknown.trim_matches('`'), names) {
                    Some(near) => {
                        format!("{k} is not a known key; did you mean `{near}`? expected {allowed}")
                    }
                    None => format!("{k} is not a known key; expected {allowed}"),
                };
            } else if !message.contains(k.rsplit('.').next().unwrap_or(k)) {
                message = format!("{k}: {message}");
            }
        }
        ConfigError {
            file: self.file.to_path_buf(),
            line: Some(line),
            column: None,
            key: key.map(|k| terminal_safe(&k).into_owned()),
            message: terminal_safe(&message).into_owned(),
        }
    }

    /// Read `table.name` if it is set: `None` when it is absent, the value `read` makes of it,
    /// or the error `read` gives.
    pub fn read<T>(
        &self,
        table: &str,
        name: &str,
        field: Option<&Field>,
        read: impl FnOnce(&Value<'_>) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        self.read_key(&format!("{table}.{name}"), field, read)
    }

    /// [`Doc::read`] of a value whose full key is `key` (`execution.checkpointing.interval`).
    pub fn read_key<T>(
        &self,
        key: &str,
        field: Option<&Field>,
        read: impl FnOnce(&Value<'_>) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        field
            .map(|field| {
                read(&Value {
                    doc: self,
                    key: key.to_string(),
                    field,
                })
            })
            .transpose()
    }
}

/// One value of the file, being read: its full key, where it is, and what was written.
pub(super) struct Value<'a> {
    doc: &'a Doc<'a>,
    key: String,
    field: &'a Field,
}

impl Value<'_> {
    /// The value exactly as written in the file (`"5ms"`, `5`, `'5ms'`), or as TOML would write
    /// it if it spans several lines.
    pub fn written(&self) -> String {
        match self.doc.text.get(self.field.span()) {
            // A multi-line value keeps its text, with the line breaks escaped.
            Some(text) => terminal_safe(text.trim()).into_owned(),
            None => terminal_safe(&self.field.get_ref().to_string()).into_owned(),
        }
    }

    /// The error `KEY = VALUE WHAT`, at this value's line.
    pub fn fail(&self, what: impl fmt::Display) -> ConfigError {
        self.doc.error_at(
            &self.key,
            self.field.span().start,
            format!("{} = {} {what}", self.key, self.written()),
        )
    }

    /// A duration: a string with a unit, or a number of milliseconds (an integer or a string of
    /// digits, as Flink reads durations); at least `min`.
    pub fn duration(&self, min: Duration) -> Result<Duration, ConfigError> {
        let d = match self.field.get_ref() {
            toml::Value::String(s) => cairn_plugin_api::parse_duration(s).map_err(|e| {
                self.fail(format!(
                    "is not a duration ({e}); write a number and a unit, such as \"500ms\", \"10s\" or \"10min\", or a number of milliseconds"
                ))
            })?,
            // A bare number is milliseconds, as in Flink.
            toml::Value::Integer(n) if *n >= 0 => Duration::from_millis(*n as u64),
            toml::Value::Integer(_) => {
                return Err(self.fail(format!("is below the minimum of {}", format_duration(min))))
            }
            _ => {
                return Err(self.fail(
                    "is not a duration; write a string with a unit, such as \"500ms\", \"10s\" or \"10min\", or a number of milliseconds",
                ))
            }
        };
        if d < min {
            return Err(self.fail(format!("is below the minimum of {}", format_duration(min))));
        }
        if d > MAX_DURATION {
            return Err(self.fail(format!(
                "is above the maximum of {} for any duration",
                format_duration(MAX_DURATION)
            )));
        }
        Ok(d)
    }

    /// A whole number in `range`. A range that ends at `u32::MAX` or above has no upper limit
    /// other than the type's, and the message does not mention one unless it is crossed.
    pub fn integer(&self, range: RangeInclusive<u64>) -> Result<u64, ConfigError> {
        let (min, max) = (*range.start(), *range.end());
        let n = match self.field.get_ref() {
            toml::Value::Integer(n) => *n,
            _ => {
                let allowed = if max >= u64::from(u32::MAX) {
                    format!("at least {min}")
                } else {
                    format!("from {min} to {max}")
                };
                return Err(self.fail(format!(
                    "is not a whole number; expected an integer {allowed}, without quotes"
                )));
            }
        };
        if n < 0 || (n as u64) < min {
            return Err(self.fail(format!("is below the minimum of {min}")));
        }
        if n as u64 > max {
            return Err(self.fail(format!("is above the maximum of {max}")));
        }
        Ok(n as u64)
    }

    /// A whole number in `range` that fits a `u32`.
    pub fn integer_u32(&self, range: RangeInclusive<u32>) -> Result<u32, ConfigError> {
        let n = self.integer(u64::from(*range.start())..=u64::from(*range.end()))?;
        Ok(u32::try_from(n).expect("the range is within u32"))
    }

    /// `true` or `false`.
    pub fn boolean(&self) -> Result<bool, ConfigError> {
        match self.field.get_ref() {
            toml::Value::Boolean(b) => Ok(*b),
            _ => Err(self.fail("is not a boolean; expected true or false, without quotes")),
        }
    }

    /// A string.
    pub fn string(&self, what: &str) -> Result<&str, ConfigError> {
        match self.field.get_ref() {
            toml::Value::String(s) => Ok(s),
            _ => Err(self.fail(format!("is not {what}; write it as a string"))),
        }
    }

    /// One of `choices`, by its name; `what` names the kind of thing ("a checkpointing mode").
    /// Flink's spellings of the same names are accepted too: any case, `_` for `-`
    /// (`EXACTLY_ONCE`), as Flink reads an enum option; `aliases` adds Flink names that differ
    /// further (`NO_EXTERNALIZED_CHECKPOINTS`).
    pub fn choice<T: Copy>(
        &self,
        what: &str,
        choices: &[(&str, T)],
        aliases: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let name = match self.field.get_ref() {
            toml::Value::String(s) => Some(s.trim().to_ascii_lowercase().replace('_', "-")),
            _ => None,
        };
        choices
            .iter()
            .chain(aliases)
            .find(|(n, _)| Some(*n) == name.as_deref())
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
                self.fail(format!("is not {what}; expected {}", one_of(&names)))
            })
    }

    /// A size in bytes: an integer, or a string such as `"64B"`, `"1KiB"`, `"5MiB"` or Flink's
    /// `"1kb"` (1024 bytes, `cairn_plugin_api::parse_size`); at least `min` bytes.
    pub fn size(&self, min: u64) -> Result<u64, ConfigError> {
        let not_a_size = || {
            self.fail("is not a size; write a number of bytes, or a string such as \"64B\", \"1KiB\" or \"5MiB\"")
        };
        let bytes = match self.field.get_ref() {
            toml::Value::Integer(n) if *n >= 0 => *n as u64,
            toml::Value::Integer(_) => {
                return Err(self.fail(format!("is below the minimum of {}", format_size(min))))
            }
            toml::Value::String(s) => cairn_plugin_api::parse_size(s).ok_or_else(not_a_size)?,
            _ => return Err(not_a_size()),
        };
        if bytes < min {
            return Err(self.fail(format!("is below the minimum of {}", format_size(min))));
        }
        Ok(bytes)
    }
}

/// `"a"`, `"a" or "b"`, `"a", "b" or "c"`.
pub(super) fn one_of(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// A duration the way a config file writes it: `"10min"`, `"1s"`, `"10ms"`, `"0s"`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if d.subsec_nanos() % 1_000_000 != 0 {
        humantime::format_duration(d).to_string().replace(' ', "")
    } else if ms == 0 {
        "0s".to_string()
    } else if ms % 86_400_000 == 0 {
        format!("{}d", ms / 86_400_000)
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}min", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A size the way a config file writes it: `"64B"`, `"1KiB"`, `"5MiB"`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    UNITS
        .iter()
        .find(|(unit, _)| bytes != 0 && bytes % unit == 0)
        .map(|(unit, name)| format!("{}{name}", bytes / unit))
        .unwrap_or_else(|| format!("{bytes}B"))
}

/// `text` with every character that could break, reorder or hide terminal output escaped:
/// control characters (C0, DEL, C1) as `\n`, `\t` or `\u{1b}`, and the invisible formatting
/// characters (bidirectional controls such as U+202E, zero-width characters, the line and
/// paragraph separators, the byte-order mark) as `\u{202e}`. Escaping is idempotent, so a
/// message may be escaped where it is built and again where it is shown.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control()
            || matches!(
                c,
                '\u{ad}'
                    | '\u{61c}'
                    | '\u{180e}'
                    | '\u{200b}'..='\u{200f}'
                    | '\u{2028}'..='\u{202e}'
                    | '\u{2060}'..='\u{2069}'
                    | '\u{feff}'
                    | '\u{fff9}'..='\u{fffb}'
            )
    }
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The error for a file whose bytes are not UTF-8: the line and column (in characters) of the
/// first bad byte, and the bytes.
pub(super) fn not_utf8(bytes: &[u8], e: &Utf8Error, file: &Path) -> ConfigError {
    let good = &bytes[..e.valid_up_to()];
    let prefix = std::str::from_utf8(good).unwrap_or_default();
    let line = prefix.matches('\n').count() + 1;
    let line_start = prefix.rfind('\n').map_or(0, |i| i + 1);
    let column = prefix[line_start..].chars().count() + 1;
    let bad = &bytes[e.valid_up_to()..];
    let bad = &bad[..e.error_len().unwrap_or(bad.len()).min(4)];
    let hex: Vec<String> = bad.iter().map(|b| format!("{b:02x}")).collect();
    let what = if e.error_len().is_some() {
        "an invalid UTF-8 sequence"
    } else {
        "an incomplete UTF-8 sequence at the end of the file"
    };
    let lossy = String::from_utf8_lossy(bytes);
    ConfigError {
        file: file.to_path_buf(),
        line: Some(line),
        column: Some(column),
        key: key_at_line(&lossy, line).map(|k| terminal_safe(&k).into_owned()),
        message: format!(
            "the file is not UTF-8 text: {what} (bytes {}); save it as UTF-8",
            hex.join(" ")
        ),
    }
}

/// The 1-based line of byte `offset`.
fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The 1-based line where `key` (`storage.options.dir`) is written, if a line writes it.
pub(super) fn line_of_key(text: &str, key: &str) -> Option<usize> {
    (1..=text.lines().count()).find(|&line| key_at_line(text, line).as_deref() == Some(key))
}

/// The table that line `line` (1-based) belongs to, and its key if the line is `key = value`:
/// `storage.sha256`. A simple scan that handles the `[table]` and `key = value` lines configs
/// use; values are located by their spans instead (see the module docs).
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let mut table = String::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        let header = t.starts_with('[') && !t.starts_with("[[");
        if header {
            // `[storage.options]   # a comment`: the name is what the brackets hold.
            let inner = t[1..].split(']').next().unwrap_or("");
            table = inner
                .split('.')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(".");
        }
        if i + 1 == line {
            if header {
                return Some(table);
            }
            let key = t.split('=').next()?.trim().trim_matches('"');
            if key.is_empty() || key.starts_with('#') {
                return None;
            }
            return Some(if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            });
        }
    }
    None
}
