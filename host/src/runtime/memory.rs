//! Whether a job's state fits in this machine's memory.
//!
//! The runtime holds keyed state in memory, so a job whose state is larger than the machine
//! cannot run: the allocator fails (an abort) or the kernel's OOM killer ends the process.
//! `cairn config check` and `cairn run` compare the job's estimate
//! ([`Job::state_estimate`](super::api::Job::state_estimate)) with the machine's memory before
//! anything is allocated: more than the memory the machine (or its cgroup) has is an error,
//! more than is available right now is a warning. Past that check, state grows through fallible
//! reservations, so a failed allocation is an error of the task, never an abort.

/// This machine's memory, as far as it can be read (Linux: `/proc/meminfo` and the cgroup v2
/// `memory.max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Machine {
    /// Memory the process may use at most: physical memory, or the cgroup's limit if lower.
    pub total: Option<u64>,
    /// Memory available now without swapping (`MemAvailable`).
    pub available: Option<u64>,
}

fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let value = line[key.len()..].trim().trim_end_matches("kB").trim();
    value.parse::<u64>().ok()?.checked_mul(1024)
}

impl Machine {
    /// The memory of the machine this runs on.
    pub fn current() -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let physical = meminfo_kib(&meminfo, "MemTotal:");
        let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        let total = match (physical, cgroup) {
            (Some(p), Some(c)) => Some(p.min(c)),
            (p, c) => p.or(c),
        };
        Machine {
            total,
            available: meminfo_kib(&meminfo, "MemAvailable:"),
        }
    }
}

/// What [`check`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    /// It fits, or the machine's memory is unknown.
    Fits,
    /// It fits in the machine, but not in the memory available now: a warning.
    Tight(String),
    /// It cannot fit in the machine at all: an error.
    TooLarge(String),
}

fn human(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

/// Compare a state estimate with `machine`.
pub fn check(state_bytes: u64, machine: &Machine) -> Fit {
    if let Some(total) = machine.total {
        if state_bytes > total {
            return Fit::TooLarge(format!(
                "the job's state needs about {} of memory, more than this machine's {}; \
                 lower job.keys or job.state-bytes-per-key",
                human(state_bytes),
                human(total)
            ));
        }
    }
    if let Some(available) = machine.available {
        if state_bytes > available {
            return Fit::Tight(format!(
                "the job's state needs about {} of memory, more than the {} available now; \
                 the run may be stopped by the out-of-memory killer",
                human(state_bytes),
                human(available)
            ));
        }
    }
    Fit::Fits
}

/// For `cairn run`: an error when the state cannot fit, a logged warning when it is tight.
pub fn check_fits(state_bytes: u64, machine: &Machine) -> Result<(), String> {
    match check(state_bytes, machine) {
        Fit::Fits => Ok(()),
        Fit::Tight(warning) => {
            tracing::warn!("{warning}");
            Ok(())
        }
        Fit::TooLarge(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_large_tight_and_fitting() {
        let m = Machine {
            total: Some(24 << 30),
            available: Some(8 << 30),
        };
        assert_eq!(check(1 << 30, &m), Fit::Fits);
        assert!(matches!(check(10 << 30, &m), Fit::Tight(w) if w.contains("available now")));
        let Fit::TooLarge(e) = check(1 << 40, &m) else {
            panic!("1 TiB fits in 24 GiB?")
        };
        assert!(e.contains("TiB") && e.contains("24.0 GiB"), "{e}");
        assert_eq!(check(u64::MAX, &Machine::default()), Fit::Fits);
    }

    #[test]
    fn meminfo_is_read() {
        let text = "MemTotal:       24683584 kB\nMemFree:        18959212 kB\nMemAvailable:   23811788 kB\n";
        assert_eq!(meminfo_kib(text, "MemTotal:"), Some(24683584 * 1024));
        assert_eq!(meminfo_kib(text, "MemAvailable:"), Some(23811788 * 1024));
        assert_eq!(meminfo_kib(text, "SwapTotal:"), None);
        let here = Machine::current();
        if cfg!(target_os = "linux") {
            assert!(here.total.is_some_and(|t| t > 0));
        }
    }
}
