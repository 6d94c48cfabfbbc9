//! Prometheus metrics of a running job, opt-in through `[metrics] listen`.
//!
//! A run's figures live in [`Counters`](crate::runtime::Counters), which the runtime writes
//! whether or not anything is served: counts as atomics, and the distributions as
//! [`Histograms`] (checkpoint duration and size, barrier alignment, the latency of every
//! plugin call the coordinator side makes, by call). [`registry`] describes them to a
//! `prometheus-client` [`Registry`]: the histograms are registered as they are (they share
//! their buckets with the runtime's copy), and the counts and gauges are read at each scrape by
//! a collector, so a scrape never sees a count the run has not published and the run never
//! pays for a scrape.
//!
//! [`MetricsServer`] serves the registry over HTTP on one thread (`tiny_http`, a small
//! synchronous server; the host has no async runtime and needs none for one request every few
//! seconds). `GET /metrics` answers in the Prometheus text format 0.0.4, or in OpenMetrics
//! text when the scraper asks for it in `Accept` (Prometheus does).
//!
//! Names follow Prometheus conventions: the `cairn_` prefix, base units (`_seconds`,
//! `_bytes`), `_total` on counters. The list is in the README.

use std::{
    net::{SocketAddr, TcpListener},
    sync::Arc,
    thread::JoinHandle,
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::ConstCounter,
        family::Family,
        gauge::ConstGauge,
        histogram::{exponential_buckets, Histogram},
        info::Info,
    },
    registry::{Registry, Unit},
};

use crate::runtime::{Counters, Phase};

/// How a plugin call ended, for its latency's `outcome` label (`ok`, `error`, `abandoned`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum CallOutcome {
    /// It returned a value.
    Ok,
    /// It returned an error.
    Error,
    /// It did not return within its deadline (or the run stopped first) and was abandoned.
    Abandoned,
}

impl CallOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Error => "error",
            CallOutcome::Abandoned => "abandoned",
        }
    }
}

/// The labels of a plugin call's latency: which call, and how it ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    /// The call, as the plugin API names it: `commit`, `list_completed`, ...
    call: &'static str,
    /// [`CallOutcome::as_str`].
    outcome: &'static str,
}

type CallFamily = Family<CallLabels, Histogram, fn() -> Histogram>;

/// The distributions of a run. Cloning shares them.
#[derive(Debug, Clone)]
pub struct Histograms {
    checkpoint_duration: Histogram,
    checkpoint_size: Histogram,
    alignment: Histogram,
    plugin_calls: CallFamily,
}

fn seconds_buckets() -> Histogram {
    // 100 µs to about 7 minutes, ×4 per bucket.
    Histogram::new(exponential_buckets(0.0001, 4.0, 12))
}

impl Default for Histograms {
    fn default() -> Self {
        Histograms {
            // 5 ms to about 3 minutes, ×2 per bucket.
            checkpoint_duration: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
            // 1 KiB to 4 TiB, ×4 per bucket.
            checkpoint_size: Histogram::new(exponential_buckets(1024.0, 4.0, 16)),
            alignment: seconds_buckets(),
            plugin_calls: Family::new_with_constructor(seconds_buckets),
        }
    }
}

impl Histograms {
    /// A completed checkpoint or savepoint: trigger to commit, and its state bytes.
    pub fn observe_checkpoint(&self, duration: Duration, state_bytes: u64) {
        self.checkpoint_duration.observe(duration.as_secs_f64());
        self.checkpoint_size.observe(state_bytes as f64);
    }

    /// A keyed task's alignment of one barrier: from the first input's barrier to the last's.
    pub fn observe_alignment(&self, duration: Duration) {
        self.alignment.observe(duration.as_secs_f64());
    }

    /// A plugin call of the coordinator side.
    pub fn observe_call(&self, call: &'static str, outcome: CallOutcome, duration: Duration) {
        self.plugin_calls
            .get_or_create(&CallLabels {
                call,
                outcome: outcome.as_str(),
            })
            .observe(duration.as_secs_f64());
    }
}

/// The labels of `cairn_job_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job_id: String,
    job_kind: String,
}

/// A registry of everything `counters` holds, for the job `job_id` of kind `job_kind`.
pub fn registry(counters: Arc<Counters>, job_id: &str, job_kind: &str) -> Registry {
    let mut r = Registry::with_prefix("cairn");
    let h = &counters.histograms;
    r.register(
        "job",
        "The job this process runs (always 1)",
        Info::new(JobLabels {
            job_id: job_id.to_string(),
            job_kind: job_kind.to_string(),
        }),
    );
    r.register_with_unit(
        "checkpoint_duration",
        "Completed checkpoints and savepoints, trigger to commit",
        Unit::Seconds,
        h.checkpoint_duration.clone(),
    );
    r.register_with_unit(
        "checkpoint_size",
        "Completed checkpoints and savepoints, bytes of state",
        Unit::Bytes,
        h.checkpoint_size.clone(),
    );
    r.register_with_unit(
        "checkpoint_alignment",
        "Barrier alignment in keyed tasks, from the first input's barrier to the last's",
        Unit::Seconds,
        h.alignment.clone(),
    );
    r.register_with_unit(
        "plugin_call_duration",
        "Storage plugin calls of the coordinator side, by call and outcome",
        Unit::Seconds,
        h.plugin_calls.clone(),
    );
    r.register_collector(Box::new(Figures(counters)));
    r
}

/// The counts and gauges of a run, read at each scrape.
#[derive(Debug)]
struct Figures(Arc<Counters>);

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge<N>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: N,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, unit, g.metric_type())?)
}

impl Collector for Figures {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.0;
        let live = c.live();
        counter(
            &mut e,
            "checkpoints_completed",
            "Checkpoints and savepoints completed.",
            c.checkpoints_completed.load(Relaxed),
        )?;
        counter(
            &mut e,
            "checkpoints_failed",
            "Checkpoint failures: declined, expired, I/O or finalize errors (expired ones included).",
            c.checkpoints_failed.load(Relaxed),
        )?;
        counter(
            &mut e,
            "checkpoints_expired",
            "Checkpoints that expired (checkpointing.timeout).",
            c.checkpoints_expired.load(Relaxed),
        )?;
        counter(
            &mut e,
            "records_in",
            "Records the keyed tasks processed, replays after a failover included.",
            c.records.load(Relaxed),
        )?;
        counter(
            &mut e,
            "records_out",
            "Records the keyed tasks emitted to their sinks.",
            c.records_out.load(Relaxed),
        )?;
        counter(
            &mut e,
            "restarts",
            "Restarts after a failure (attempts after the first).",
            c.failovers.load(Relaxed),
        )?;
        gauge(
            &mut e,
            "checkpoints_in_flight",
            "Checkpoints and savepoints triggered and not yet completed or failed.",
            None,
            c.checkpoints_in_flight.load(Relaxed) as i64,
        )?;
        gauge(
            &mut e,
            "attempt",
            "The attempt running, from 1.",
            None,
            i64::from(live.attempt),
        )?;
        gauge(
            &mut e,
            "running",
            "1 while the job processes records, 0 while it starts, restores, restarts or stops.",
            None,
            i64::from(live.phase == Phase::Running),
        )?;
        gauge(
            &mut e,
            "state_entries",
            "Keys held by the keyed tasks.",
            None,
            c.state_entries.load(Relaxed) as i64,
        )?;
        let now = crate::runtime::epoch_ms();
        let since = live
            .last_checkpoint
            .as_ref()
            .map_or(c.started_ms.load(Relaxed), |l| l.completed_ms);
        gauge(
            &mut e,
            "last_checkpoint_age",
            "Time since the last checkpoint completed (since the run started, before the first).",
            Some(&Unit::Seconds),
            now.saturating_sub(since) as f64 / 1000.0,
        )?;
        Ok(())
    }
}

/// Why the metrics endpoint could not be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound.
    #[error("metrics.listen = \"{addr}\": cannot listen there: {source}{hint}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// The server could not start.
    #[error("metrics.listen = \"{addr}\": cannot serve: {message}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        message: String,
    },
}

/// The metrics endpoint: one thread answering `GET /metrics`. Dropping it stops the thread.
pub struct MetricsServer {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

/// The `Content-Type` of OpenMetrics text.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl MetricsServer {
    /// Listen on `addr` (port 0: any free port; [`MetricsServer::addr`] says which) and serve
    /// `registry`.
    pub fn start(addr: SocketAddr, registry: Registry) -> Result<MetricsServer, MetricsError> {
        let listener = TcpListener::bind(addr).map_err(|source| MetricsError::Bind {
            addr,
            hint: match source.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "; another process holds the port (another cairn run with the same \
                     [metrics] listen?): pick another port, or 0 for any free one"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "; ports below 1024 need privileges: pick a higher one"
                }
                std::io::ErrorKind::AddrNotAvailable => {
                    "; no interface of this machine has that address"
                }
                _ => "",
            },
            source,
        })?;
        let bound = listener.local_addr().map_err(|e| MetricsError::Serve {
            addr,
            message: e.to_string(),
        })?;
        let server = Arc::new(
            tiny_http::Server::from_listener(listener, None).map_err(|e| MetricsError::Serve {
                addr,
                message: e.to_string(),
            })?,
        );
        let registry = Arc::new(registry);
        let theirs = server.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".to_string())
            .spawn(move || {
                for request in theirs.incoming_requests() {
                    answer(request, &registry);
                }
            })
            .map_err(|e| MetricsError::Serve {
                addr,
                message: format!("cannot start its thread: {e}"),
            })?;
        tracing::debug!(%bound, "serving metrics");
        Ok(MetricsServer {
            addr: bound,
            server,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/metrics`.
    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The text of `registry`: OpenMetrics if `openmetrics`, else Prometheus text 0.0.4; and its
/// content type.
pub fn encode(registry: &Registry, openmetrics: bool) -> (String, &'static str) {
    let mut text = String::new();
    let done = if openmetrics {
        prometheus_client::encoding::text::encode(&mut text, registry).map(|()| OPENMETRICS)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut text, registry)
            .map(|()| prometheus_client::encoding::prometheus_text::CONTENT_TYPE)
    };
    match done {
        Ok(content_type) => (text, content_type),
        // Writing into a String fails only if a collector does, and ours do not.
        Err(_) => (String::new(), "text/plain; charset=utf-8"),
    }
}

fn answer(request: tiny_http::Request, registry: &Registry) {
    use tiny_http::{Header, Method, Response};
    let header = |value: &str| {
        Header::from_bytes(&b"Content-Type"[..], value.as_bytes()).expect("a valid header")
    };
    let plain = "text/plain; charset=utf-8";
    let response = match (request.method(), request.url()) {
        (Method::Get | Method::Head, "/metrics") => {
            let openmetrics = request.headers().iter().any(|h| {
                h.field.equiv("Accept") && h.value.as_str().contains("application/openmetrics-text")
            });
            let (text, content_type) = encode(registry, openmetrics);
            Response::from_string(text).with_header(header(content_type))
        }
        (Method::Get | Method::Head, "/") => {
            Response::from_string("cairn: the job's metrics are at /metrics\n")
                .with_header(header(plain))
        }
        (Method::Get | Method::Head, _) => Response::from_string("not found: try /metrics\n")
            .with_status_code(404)
            .with_header(header(plain)),
        _ => Response::from_string("only GET and HEAD are served\n")
            .with_status_code(405)
            .with_header(header(plain)),
    };
    if let Err(e) = request.respond(response) {
        tracing::debug!("answering a metrics request failed: {e}");
    }
}
