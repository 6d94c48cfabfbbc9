//! `[metrics]`: whether, and where, the running job serves Prometheus metrics.
//!
//! Off unless `listen` is set. The endpoint has no authentication (like Flink's Prometheus
//! reporter), so an address other than a loopback one, which other machines could reach, must
//! be allowed in so many words with `allow-remote = true`; the error says so.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{
    doc::{Doc, Field},
    ConfigError,
};

/// The port of Flink's Prometheus reporter, shown in examples.
pub const FLINK_PROMETHEUS_PORT: u16 = 9249;

/// `[metrics]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `listen`: the address to serve `GET /metrics` on (port 0: any free port, which `cairn
    /// run` prints and `cairn status` reports). `None`: no metrics are served.
    pub listen: Option<SocketAddr>,
    /// `allow-remote`: a `listen` address that is not loopback is allowed.
    pub allow_remote: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawMetrics {
    listen: Option<Field>,
    allow_remote: Option<Field>,
}

impl RawMetrics {
    pub(super) fn validate(self, doc: &Doc<'_>) -> Result<MetricsConfig, ConfigError> {
        const T: &str = "metrics";
        let allow_remote = doc.read(T, "allow-remote", self.allow_remote.as_ref(), |v| {
            v.boolean()
        })?;
        let listen = doc.read(T, "listen", self.listen.as_ref(), |v| {
            let text = v.string("an address")?;
            let addr: SocketAddr = text.trim().parse().map_err(|_| {
                v.fail(format!(
                    "is not an IP address and port; write one such as \"127.0.0.1:{FLINK_PROMETHEUS_PORT}\" \
                     or \"[::1]:{FLINK_PROMETHEUS_PORT}\" (port 0: any free port)"
                ))
            })?;
            if !addr.ip().is_loopback() && allow_remote != Some(true) {
                return Err(v.fail(
                    "is not a loopback address; the metrics endpoint has no authentication, so \
                     serving it to other machines needs metrics.allow-remote = true",
                ));
            }
            Ok(addr)
        })?;
        if listen.is_none() && allow_remote.is_some() {
            let at = self.allow_remote.as_ref().expect("set");
            return Err(doc.error_at(
                "metrics.allow-remote",
                at.span().start,
                "metrics.allow-remote is set but metrics.listen is not; set listen to serve \
                 metrics, or remove allow-remote"
                    .to_string(),
            ));
        }
        Ok(MetricsConfig {
            listen,
            allow_remote: allow_remote.unwrap_or(false),
        })
    }
}
