//! Plugin metrics: calls and errors per plugin and hook, the counters plugins keep through
//! `host.counter-add`, dropped log lines and swaps. Per-call handles are fetched once per
//! loaded plugin, so the hot path only bumps an atomic.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The hook a call went to.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Hook {
    balancer,
    policy,
    dns,
}

/// Why a call fell back to the native default.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ErrorKind {
    /// The guest trapped (panic, unreachable, out of bounds).
    trap,
    /// The call ran past its epoch deadline.
    timeout,
    /// The guest tried to grow memory past the cap.
    memory,
    /// The plugin answered with an endpoint id it was never given, or an invalid answer.
    invalid_answer,
    /// `configure` refused the Service's config.
    config,
    /// Creating the instance failed.
    instantiate,
    /// The Service names a plugin that is not loaded or lacks the hook.
    missing,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::trap,
        ErrorKind::timeout,
        ErrorKind::memory,
        ErrorKind::invalid_answer,
        ErrorKind::config,
        ErrorKind::instantiate,
        ErrorKind::missing,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    pub plugin: String,
    pub hook: Hook,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub plugin: String,
    pub hook: Hook,
    pub kind: ErrorKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CounterLabels {
    plugin: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Default)]
pub struct PluginMetrics {
    pub calls: Family<HookLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    counters: Family<CounterLabels, Counter>,
    logs_dropped: Family<PluginLabel, Counter>,
    swaps: Family<PluginLabel, Counter>,
    pub instances: Counter,
}

impl PluginMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "plugin_calls",
            "Calls into plugins by plugin and hook",
            self.calls.clone(),
        );
        registry.register(
            "plugin_errors",
            "Plugin calls that fell back to the native default, by cause",
            self.errors.clone(),
        );
        registry.register(
            "plugin_counter",
            "Counters plugins keep through host.counter-add",
            self.counters.clone(),
        );
        registry.register(
            "plugin_logs_dropped",
            "Plugin log lines dropped by the rate limit",
            self.logs_dropped.clone(),
        );
        registry.register(
            "plugin_swaps",
            "Times a plugin name was (re)loaded",
            self.swaps.clone(),
        );
        registry.register(
            "plugin_instances_created",
            "Plugin instances created (first use, swaps, recycling after errors)",
            self.instances.clone(),
        );
    }

    pub fn counter_add(&self, plugin: &str, name: &str, delta: u64) {
        let name: String = name.chars().take(64).collect();
        self.counters
            .get_or_create(&CounterLabels {
                plugin: plugin.to_string(),
                name,
            })
            .inc_by(delta);
    }

    pub fn log_dropped(&self, plugin: &str) {
        self.logs_dropped
            .get_or_create(&PluginLabel {
                plugin: plugin.to_string(),
            })
            .inc();
    }

    pub fn swapped(&self, plugin: &str) {
        self.swaps
            .get_or_create(&PluginLabel {
                plugin: plugin.to_string(),
            })
            .inc();
    }

    /// Errors counted so far for `plugin`'s `hook` of this kind.
    pub fn errors_of(&self, plugin: &str, hook: Hook, kind: ErrorKind) -> u64 {
        let labels = ErrorLabels {
            plugin: plugin.to_string(),
            hook,
            kind,
        };
        self.errors.get(&labels).map_or(0, |c| c.get())
    }

    pub fn error(&self, plugin: &str, hook: Hook, kind: ErrorKind) -> u64 {
        self.errors
            .get_or_create(&ErrorLabels {
                plugin: plugin.to_string(),
                hook,
                kind,
            })
            .inc()
    }
}
