//! What the CLI writes for people at a terminal, written once: whether stderr is a terminal,
//! the log writer that goes around a live progress bar (never through it), tables that fit the
//! terminal's width (plain columns when output is not a terminal).

use std::{
    io::{IsTerminal, Write},
    sync::Mutex,
};

use comfy_table::{presets, ContentArrangement, Table};
use indicatif::ProgressBar;

/// The progress bar on screen, if any: log lines are printed above it.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Whether stderr (where logs, progress and errors go) is a terminal.
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Show `bar` until [`clear_bar`]: log lines written meanwhile are printed above it.
pub fn set_bar(bar: &ProgressBar) {
    *BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
}

/// Take the progress bar off the screen: log lines go straight to stderr again.
pub fn clear_bar() {
    if let Some(bar) = BAR.lock().unwrap_or_else(|e| e.into_inner()).take() {
        bar.finish_and_clear();
    }
}

/// A bar shown (as [`set_bar`]) until this is dropped, when it is taken off the screen.
#[must_use = "the bar is taken off the screen when this is dropped"]
pub struct Shown;

/// Show `bar` until the returned guard is dropped: log lines go above it meanwhile.
pub fn show(bar: &ProgressBar) -> Shown {
    set_bar(bar);
    Shown
}

impl Drop for Shown {
    fn drop(&mut self) {
        clear_bar();
    }
}

/// Print `line` on stderr, above the progress bar if one is shown.
pub fn say(line: &str) {
    let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match bar {
        Some(bar) if !bar.is_hidden() => bar.println(line),
        _ => eprintln!("{line}"),
    }
}

/// The `tracing` writer: each event goes to stderr in one write, with a live progress bar
/// hidden while it is written and redrawn below it.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match bar {
            Some(bar) if !bar.is_hidden() => bar.suspend(|| std::io::stderr().write_all(buf))?,
            _ => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

pub use cairn_host::words::count;

/// The width tables are fitted to: `COLUMNS` if it is set to a number (as shells and `ls` do),
/// else the terminal's when stdout is one; `None` (plain columns) when stdout is not a
/// terminal.
fn width() -> Option<u16> {
    if let Some(columns) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<u16>().ok())
    {
        return Some(columns);
    }
    if !std::io::stdout().is_terminal() {
        return None;
    }
    terminal_size::terminal_size().map(|(terminal_size::Width(w), _)| w)
}

/// A table with `header` for stdout: fitted to [`width`] (long cells wrap), otherwise plain
/// columns that tools can cut.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header(header.iter().map(|h| h.to_uppercase()));
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    match width() {
        Some(w) => {
            table.set_width(w);
            table.set_content_arrangement(ContentArrangement::Dynamic);
        }
        None => {
            table.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    table
}

/// Right-align the columns `columns` of `table` (numbers and sizes).
pub fn align_right(table: &mut Table, columns: &[usize]) {
    for &i in columns {
        if let Some(c) = table.column_mut(i) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
}

/// A table's lines without trailing spaces.
pub fn render(table: &Table) -> String {
    table
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fitted_table_keeps_within_its_width() {
        let mut t = table(&["name", "path"]);
        t.set_width(40);
        t.set_content_arrangement(ContentArrangement::Dynamic);
        t.add_row(vec!["object-store", &"/very/long/path/".repeat(10)]);
        let text = render(&t);
        assert!(text.starts_with("NAME"), "{text}");
        for line in text.lines() {
            assert!(line.chars().count() <= 40, "{line:?} in\n{text}");
        }
    }
}
