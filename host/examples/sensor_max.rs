//! A user's own job on cairn's job API: each sensor's hottest reading. Args: `-- cairn.toml`.
use cairn_host::{config::Config, job::*, runtime::*};
/// Reading `n` of the stream: (sensor, millidegrees).
pub fn reading(n: u64) -> (u16, i32) {
    ((n % 16) as u16, (n * 7919 % 40_000) as i32)
}

/// Source `subtask` of `parallelism` emits readings `subtask`, `subtask + parallelism`, ...
pub struct Readings {
    n: u64,
    step: u64,
    end: u64,
}

impl Source for Readings {
    type Record = (u16, i32);
    type Offset = u64; // the next reading: where a restored source resumes
    fn next(&mut self) -> Result<Next<(u16, i32)>, JobError> {
        let n = self.n;
        self.n = (n + self.step).min(self.end);
        Ok(if n < self.end {
            Next::Record(reading(n))
        } else {
            Next::End
        })
    }
    fn offset(&self) -> u64 {
        self.n
    }
}

/// Readings keyed by sensor; a sensor's state is its maximum so far.
pub struct SensorMax(pub u64);

impl Job for SensorMax {
    type Source = Readings;
    type Key = u16;
    type State = i32;
    type Sink = NoSink;
    fn kind(&self) -> &str {
        "sensor-max"
    }
    fn source(&self, ctx: &TaskContext, offset: Option<u64>) -> Result<Readings, JobError> {
        let (n, step) = (offset.unwrap_or(ctx.subtask.into()), ctx.parallelism.into());
        Ok(Readings {
            n,
            step,
            end: self.0,
        })
    }
    fn key(&self, reading: &(u16, i32)) -> u16 {
        reading.0
    }
    fn process(&self, p: &mut Process<'_, Self>, (_, t): (u16, i32)) -> Result<(), JobError> {
        p.state.set(p.state.get().map_or(t, |&max| max.max(t)))
    }
    fn summarize(&self, end: &JobEnd<'_, Self>) -> serde_json::Map<String, serde_json::Value> {
        let all = end.states.iter().flat_map(|s| s.iter());
        all.map(|(sensor, max)| (format!("sensor_{sensor}"), (*max).into()))
            .collect()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(
        std::env::args()
            .nth(1)
            .unwrap_or("cairn.toml".into())
            .as_ref(),
    )?;
    let summary = run_with_config(SensorMax(100_000), &config, &RunOptions::default())?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
