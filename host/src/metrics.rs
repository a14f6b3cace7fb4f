//! Prometheus metrics (prometheus-client), served as text on the admin listener's `/metrics`.
//! Handles are cheap to update from any thread: counters and gauges are atomics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    verb: String,
    code: u16,
}

pub struct Metrics {
    registry: Registry,
    api_requests: Family<ApiLabels, Counter>,
    pub snapshot_services: Gauge,
    pub snapshot_endpoints: Gauge,
    pub snapshot_publishes: Counter,
    pub snapshot_build_seconds: Histogram,
    pub controller_writes: Counter,
    pub controller_errors: Counter,
    pub plugins: std::sync::Arc<crate::plugin::metrics::PluginMetrics>,
    pub proxy: std::sync::Arc<crate::proxy::metrics::ProxyMetrics>,
    pub dns: std::sync::Arc<crate::dns::metrics::DnsMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Embedded API requests by HTTP verb and status code",
            api_requests.clone(),
        );
        let snapshot_services = Gauge::default();
        registry.register(
            "snapshot_services",
            "Services in the published snapshot",
            snapshot_services.clone(),
        );
        let snapshot_endpoints = Gauge::default();
        registry.register(
            "snapshot_endpoints",
            "Endpoint entries (per port) in the published snapshot",
            snapshot_endpoints.clone(),
        );
        let snapshot_publishes = Counter::default();
        registry.register(
            "snapshot_publishes",
            "Snapshots published by the watcher",
            snapshot_publishes.clone(),
        );
        let snapshot_build_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register(
            "snapshot_build_seconds",
            "Time to build and publish one snapshot",
            snapshot_build_seconds.clone(),
        );
        let controller_writes = Counter::default();
        registry.register(
            "controller_writes",
            "Endpoints/EndpointSlice writes by the endpoints controller",
            controller_writes.clone(),
        );
        let controller_errors = Counter::default();
        registry.register(
            "controller_errors",
            "Endpoints controller writes that failed",
            controller_errors.clone(),
        );
        let plugins = std::sync::Arc::new(crate::plugin::metrics::PluginMetrics::default());
        plugins.register(&mut registry);
        let proxy = std::sync::Arc::new(crate::proxy::metrics::ProxyMetrics::new());
        proxy.register(&mut registry);
        let dns = std::sync::Arc::new(crate::dns::metrics::DnsMetrics::new());
        dns.register(&mut registry);
        Metrics {
            dns,
            proxy,
            plugins,
            registry,
            api_requests,
            snapshot_services,
            snapshot_endpoints,
            snapshot_publishes,
            snapshot_build_seconds,
            controller_writes,
            controller_errors,
        }
    }

    pub fn api_request(&self, verb: &str, code: u16) {
        self.api_requests
            .get_or_create(&ApiLabels {
                verb: verb.to_string(),
                code,
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
