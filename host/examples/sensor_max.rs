//! A user's own job on cairn's job API: each sensor's hottest reading. Args: `-- cairn.toml`.
use cairn_host::{config::Config, job::*, runtime::*};

/// Source `subtask` of `parallelism` emits readings `subtask`, `subtask + parallelism`, ...:
/// `Readings(next, step, end)`. Reading `n` is sensor `n % 16` at `n * 7919 % 40000` m°C.
pub struct Readings(u64, u64, u64);

impl Source for Readings {
    type Record = (u16, i32);
    type Offset = u64; // the next reading: where a restored source resumes
    fn next(&mut self) -> Result<Next<(u16, i32)>, JobError> {
        let Readings(n, step, end) = *self;
        self.0 = (n + step).min(end);
        if n >= end {
            return Ok(Next::End);
        }
        Ok(Next::Record(((n % 16) as u16, (n * 7919 % 40_000) as i32)))
    }
    fn offset(&self) -> u64 {
        self.0
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
        let first = offset.unwrap_or(ctx.subtask.into());
        Ok(Readings(first, ctx.parallelism.into(), self.0))
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
    let path = std::env::args().nth(1).unwrap_or("cairn.toml".into());
    let config = Config::load(path.as_ref())?;
    let summary = run_with_config(SensorMax(100_000), &config, &RunOptions::default())?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
