//! `cairn bench storage --plugin object-store`: the plugin ÷ the `object_store` crate used
//! directly, on the same store and the same bytes, in the same run.
//!
//! The plugin side is the plugin ÷ raw loop's own write + commit and read figures. The direct
//! side runs in the companion executable (`cairn-bench-linked --object-store-direct`), which
//! links `object_store` as a baseline library (the `cairn` binary links no backend and no
//! `object_store`). It gets the plugin's options, builds the same client, and uploads the same
//! number of bytes in the same chunks with the plugin's strategy (one PUT up to `part-size`,
//! else a multipart upload with four parts in flight), puts a metadata object with a
//! conditional create, and reads the object back. One direct round follows each plugin round,
//! so drift falls on both sides alike. The target (≥ 0.9) is printed, never enforced.

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use cairn_conformance::bench::{DirectOutput, DirectRequest, OBJECT_STORE_DIRECT_ARG};
use serde_json::{json, Value};

use super::{throughput_ratio, Samples};

/// The manifest name of the plugin this comparison is for.
pub(super) const PLUGIN: &str = "object-store";

/// The target of both ratios; informative only.
const TARGET: f64 = 0.9;

/// The direct side: its companion process and figures.
pub(super) struct Direct {
    process: Option<(Child, ChildStdin, BufReader<ChildStdout>)>,
    options: String,
    write: Samples,
    read: Samples,
    /// Why the direct side is (no longer) measured.
    pub(super) error: Option<String>,
}

impl Direct {
    /// Start the companion `runner` in its object-store mode, for a plugin opened with
    /// `options`. A missing runner is recorded, not fatal: the rest of the benchmark runs.
    pub(super) fn start(runner: &Result<PathBuf, String>, options: String) -> Self {
        let mut direct = Direct {
            process: None,
            options,
            write: Samples::default(),
            read: Samples::default(),
            error: None,
        };
        let spawned = runner.clone().and_then(|path| {
            let mut child = Command::new(&path)
                .arg(OBJECT_STORE_DIRECT_ARG)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run the linked runner {}: {e}", path.display()))?;
            let stdin = child.stdin.take().expect("stdin is piped");
            let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
            Ok((child, stdin, stdout))
        });
        match spawned {
            Ok(p) => direct.process = Some(p),
            Err(e) => direct.error = Some(format!("object_store direct not measured: {e}")),
        }
        direct
    }

    /// One direct round of `size` bytes in `chunk`-byte writes.
    pub(super) fn round(&mut self, round: u64, size: u64, chunk: u64) {
        if self.error.is_some() {
            return;
        }
        let Some((child, stdin, stdout)) = &mut self.process else {
            return;
        };
        let request = DirectRequest {
            options: self.options.clone(),
            prefix: format!("bench-object-store-direct-{}-{round}", std::process::id()),
            size,
            chunk,
        };
        let mut line = serde_json::to_string(&request).unwrap_or_default();
        line.push('\n');
        let mut answer = String::new();
        let ok = stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .is_ok()
            && matches!(stdout.read_line(&mut answer), Ok(n) if n > 0);
        if !ok {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            self.error = Some(format!(
                "object_store direct failed: {}",
                stderr.trim().trim_start_matches("error: ")
            ));
            return;
        }
        match serde_json::from_str::<DirectOutput>(&answer) {
            Ok(out) => {
                self.write.0.push(out.write);
                self.read.0.push(out.read);
            }
            Err(e) => {
                self.error = Some(format!(
                    "the linked runner printed figures this cairn does not understand ({e})"
                ))
            }
        }
    }

    fn ratios(&self, plugin_write: &Samples, plugin_read: &Samples) -> (Option<f64>, Option<f64>) {
        (
            throughput_ratio(plugin_write, &self.write),
            throughput_ratio(plugin_read, &self.read),
        )
    }

    /// The `plugin_vs_object_store` section of the JSON report.
    pub(super) fn to_json(&self, plugin_write: &Samples, plugin_read: &Samples) -> Value {
        let (w, r) = self.ratios(plugin_write, plugin_read);
        let met = |v: Option<f64>| v.map(|v| v >= TARGET);
        json!({
            "plugin_write_commit": plugin_write.to_json(),
            "direct_write": self.write.to_json(),
            "plugin_read": plugin_read.to_json(),
            "direct_read": self.read.to_json(),
            "write_ratio": w,
            "read_ratio": r,
            "target": TARGET,
            "write_target_met": met(w),
            "read_target_met": met(r),
            "error": self.error,
        })
    }

    /// The text section.
    pub(super) fn print(
        &self,
        out: &mut impl Write,
        plugin_write: &Samples,
        plugin_read: &Samples,
    ) -> std::io::Result<()> {
        let (w, r) = self.ratios(plugin_write, plugin_read);
        let rate = |s: &Samples| match s.best() {
            Some(b) => format!("{:.1} MiB/s", b.mib_per_sec()),
            None => "-".into(),
        };
        let verdict = |v: Option<f64>| match v {
            Some(v) if v >= TARGET => format!("{v:>7.3}  target ≥ {TARGET:.2}: met"),
            Some(v) => format!("{v:>7.3}  target ≥ {TARGET:.2}: MISSED"),
            None => format!("{:>7}  target ≥ {TARGET:.2}: not measured", "-"),
        };
        writeln!(
            out,
            "\n{PLUGIN} ÷ object_store used directly (same store, same bytes)"
        )?;
        writeln!(
            out,
            "  {:<26} {:>16} {:>16} {:>7}",
            "", PLUGIN, "object_store", "ratio"
        )?;
        writeln!(
            out,
            "  {:<26} {:>16} {:>16} {}",
            "write + commit",
            rate(plugin_write),
            rate(&self.write),
            verdict(w)
        )?;
        writeln!(
            out,
            "  {:<26} {:>16} {:>16} {}",
            "read back",
            rate(plugin_read),
            rate(&self.read),
            verdict(r)
        )?;
        if let Some(e) = &self.error {
            writeln!(out, "  {e}")?;
        }
        Ok(())
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        if let Some((mut child, stdin, _)) = self.process.take() {
            // Closing stdin ends the companion's loop.
            drop(stdin);
            let _ = child.wait();
        }
    }
}
