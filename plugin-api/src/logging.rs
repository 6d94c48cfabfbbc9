//! Forwarding a loaded plugin's `tracing` events to the host's subscriber.
//!
//! A plugin library has its own copy of every static, including `tracing`'s global dispatcher,
//! so events it emits would go nowhere. At open, the host hands over a C callback
//! (`host_log_sink`); the plugin side installs a small subscriber (`Forwarder`) as its global
//! default that formats each event and sends it through that callback. The host re-emits it with
//! target `cairn::plugin` and the plugin's own target as a field.
//!
//! Spans are not forwarded: only events cross, which keeps the callback to one function and no
//! state. When a plugin is linked into the host (unit tests, benchmarks) nothing is installed and
//! its events reach the host's subscriber directly.

use std::{fmt::Write as _, sync::OnceLock};

use abi_stable::std_types::RStr;
use tracing_core::{
    field::{Field, Visit},
    span,
    subscriber::Interest,
    Event, Level, LevelFilter, Metadata, Subscriber,
};

use crate::abi::RHostLog;

/// The host's logging callback, re-emitted as a host `tracing` event.
extern "C" fn host_log(level: u8, target: RStr<'_>, message: RStr<'_>) {
    let (target, message) = (target.as_str(), message.as_str());
    match level {
        1 => tracing::error!(target: "cairn::plugin", plugin_target = target, "{message}"),
        2 => tracing::warn!(target: "cairn::plugin", plugin_target = target, "{message}"),
        3 => tracing::info!(target: "cairn::plugin", plugin_target = target, "{message}"),
        4 => tracing::debug!(target: "cairn::plugin", plugin_target = target, "{message}"),
        _ => tracing::trace!(target: "cairn::plugin", plugin_target = target, "{message}"),
    }
}

/// The most verbose level any of the host's subscribers wants now.
extern "C" fn host_max_level() -> u8 {
    match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 1,
        LevelFilter::WARN => 2,
        LevelFilter::INFO => 3,
        LevelFilter::DEBUG => 4,
        _ => 5,
    }
}

/// The callbacks the host passes at open.
pub(crate) fn host_log_sink() -> RHostLog {
    RHostLog {
        log: host_log,
        max_level: host_max_level,
    }
}

fn level_number(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        _ => 5,
    }
}

/// Install the forwarder as this library's global subscriber, once. Called in the plugin, in
/// the code the export macro generates, at every open; later calls keep the first callback (the
/// host hands the same one every time).
pub(crate) fn forward_to_host(log: RHostLog) {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Fails only if this library already has a global subscriber, which is then kept.
        let _ = tracing::subscriber::set_global_default(Forwarder { log });
        // This library has its own copy of std, so its panics go to its own hook, which would
        // print to stderr. Every panic in a plugin call already reaches the host as a `Panicked`
        // error with its message; the hook adds where it happened, to the host's debug log. A
        // plugin that installs its own hook later replaces this one.
        std::panic::set_hook(Box::new(|info| {
            tracing::debug!(target: "cairn_plugin_panic", "plugin panicked: {info}");
        }));
    });
}

struct Forwarder {
    log: RHostLog,
}

impl Subscriber for Forwarder {
    fn register_callsite(&self, _metadata: &'static Metadata<'static>) -> Interest {
        // The host's filter can change at any time, so never cache a decision per call site.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        level_number(metadata.level()) <= (self.log.max_level)()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // Unknown: the host decides per event.
        None
    }

    fn new_span(&self, _span: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _span: &span::Id, _values: &span::Record<'_>) {}

    fn record_follows_from(&self, _span: &span::Id, _follows: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut text = FieldText::default();
        event.record(&mut text);
        let meta = event.metadata();
        (self.log.log)(
            level_number(meta.level()),
            RStr::from_str(meta.target()),
            RStr::from_str(&text.0),
        );
    }

    fn enter(&self, _span: &span::Id) {}

    fn exit(&self, _span: &span::Id) {}
}

/// Formats an event as `message key=value ...`.
#[derive(Default)]
struct FieldText(String);

impl Visit for FieldText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            self.0.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}
