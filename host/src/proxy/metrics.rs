//! The data plane's Prometheus families, and [`PortMetrics`]: the handles of one Service port,
//! resolved once, on the port's first use, so the hot path only touches atomics (no family
//! lookup, no label formatting per connection) and a port that never sees traffic adds no
//! series to `/metrics` (10,000 idle Services made every scrape ~150 MB when they were
//! resolved up front).

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::snapshot::ServiceView;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabels {
    pub namespace: String,
    pub service: String,
    pub port: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub namespace: String,
    pub service: String,
    pub port: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub namespace: String,
    pub service: String,
    pub port: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub namespace: String,
    pub service: String,
    pub port: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

fn latency() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

fn pick_latency() -> Histogram {
    // 250 ns .. ~0.5 ms
    Histogram::new(exponential_buckets(0.00000025, 2.0, 12))
}

/// Why a connection, flow or request was refused or failed.
#[derive(Clone, Copy, Debug)]
pub enum Reason {
    NoEndpoint,
    SourceRange,
    Policy,
    ConnectFailed,
    /// The TLS handshake failed, or the listener has no usable certificate.
    Tls,
}

impl Reason {
    const ALL: [Reason; 5] = [
        Reason::NoEndpoint,
        Reason::SourceRange,
        Reason::Policy,
        Reason::ConnectFailed,
        Reason::Tls,
    ];
    fn label(self) -> &'static str {
        match self {
            Reason::NoEndpoint => "no_endpoint",
            Reason::SourceRange => "source_range",
            Reason::Policy => "policy",
            Reason::ConnectFailed => "connect_failed",
            Reason::Tls => "tls",
        }
    }
}

pub struct ProxyMetrics {
    connections: Family<PortLabels, Counter>,
    active: Family<PortLabels, Gauge>,
    received: Family<PortLabels, Counter>,
    sent: Family<PortLabels, Counter>,
    rejected: Family<ReasonLabels, Counter>,
    connect_errors: Family<PortLabels, Counter>,
    connect_seconds: Family<PortLabels, Histogram, fn() -> Histogram>,
    response_seconds: Family<PortLabels, Histogram, fn() -> Histogram>,
    pick_seconds: Family<PortLabels, Histogram, fn() -> Histogram>,
    requests: Family<CodeLabels, Counter>,
    picks: Family<EndpointLabels, Counter>,
    pub listeners: Family<StateLabels, Gauge>,
    pub bind_errors: Counter,
    pub reconcile_seconds: Histogram,
    /// Service addresses held on the VIP interface.
    pub vips: Gauge,
    pub vip_errors: Counter,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyMetrics {
    pub fn new() -> Self {
        ProxyMetrics {
            connect_seconds: Family::new_with_constructor(latency),
            response_seconds: Family::new_with_constructor(latency),
            pick_seconds: Family::new_with_constructor(pick_latency),
            connections: Family::default(),
            active: Family::default(),
            received: Family::default(),
            sent: Family::default(),
            rejected: Family::default(),
            connect_errors: Family::default(),
            requests: Family::default(),
            picks: Family::default(),
            listeners: Family::default(),
            bind_errors: Counter::default(),
            reconcile_seconds: latency(),
            vips: Gauge::default(),
            vip_errors: Counter::default(),
        }
    }

    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("proxy");
        r.register(
            "connections",
            "Connections (TCP), flows (UDP) or requests (HTTP) accepted per Service port",
            self.connections.clone(),
        );
        r.register(
            "connections_active",
            "Open proxied connections and UDP flows per Service port",
            self.active.clone(),
        );
        r.register(
            "received_bytes",
            "Bytes from clients per Service port",
            self.received.clone(),
        );
        r.register(
            "sent_bytes",
            "Bytes to clients per Service port",
            self.sent.clone(),
        );
        r.register(
            "rejected",
            "Connections, flows or requests refused or failed, by reason",
            self.rejected.clone(),
        );
        r.register(
            "upstream_connect_errors",
            "Upstream connect attempts that failed or timed out (each retry counts)",
            self.connect_errors.clone(),
        );
        r.register(
            "upstream_connect_seconds",
            "Time to connect to the chosen endpoint",
            self.connect_seconds.clone(),
        );
        r.register(
            "upstream_response_seconds",
            "HTTP: time from sending the request upstream to its response head",
            self.response_seconds.clone(),
        );
        r.register(
            "pick_seconds",
            "Time to choose an endpoint (plugin call or native round-robin)",
            self.pick_seconds.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests answered, by status code",
            self.requests.clone(),
        );
        r.register(
            "endpoint_picks",
            "Times each endpoint was chosen",
            self.picks.clone(),
        );
        r.register(
            "listeners",
            "Listening sockets by state (bound, failed)",
            self.listeners.clone(),
        );
        r.register(
            "vips",
            "Service addresses switchyard holds on its VIP interface",
            self.vips.clone(),
        );
        r.register(
            "vip_errors",
            "Netlink changes of Service addresses that failed (retried)",
            self.vip_errors.clone(),
        );
        r.register(
            "reconcile_seconds",
            "Time to bring the listeners in line with one snapshot",
            self.reconcile_seconds.clone(),
        );
        r.register(
            "listener_bind_errors",
            "Attempts to bind a listener that failed (retried)",
            self.bind_errors.clone(),
        );
    }

    /// The handles for `svc`'s port `port_index`, with one pick counter per endpoint of
    /// `endpoints_of` (the view the target balances over), registered on first use.
    pub fn port(
        self: &Arc<Self>,
        svc: &ServiceView,
        port_index: usize,
        endpoints_of: &ServiceView,
    ) -> PortMetrics {
        let p = &svc.ports[port_index];
        let labels = PortLabels {
            namespace: svc.namespace.clone(),
            service: svc.name.clone(),
            port: if p.name.is_empty() {
                p.port.to_string()
            } else {
                p.name.clone()
            },
        };
        let endpoints = endpoints_of.ports[port_index]
            .endpoints
            .iter()
            .map(|e| std::net::SocketAddr::new(e.addr, e.port).to_string())
            .collect();
        PortMetrics(Arc::new(Lazy {
            handles: OnceLock::new(),
            source: Some((self.clone(), labels, endpoints)),
        }))
    }

    /// Registers (or finds) the series of one port.
    fn handles(&self, labels: &PortLabels, endpoints: &[String]) -> Handles {
        let reason = |r: Reason| {
            self.rejected
                .get_or_create(&ReasonLabels {
                    namespace: labels.namespace.clone(),
                    service: labels.service.clone(),
                    port: labels.port.clone(),
                    reason: r.label().into(),
                })
                .clone()
        };
        Handles {
            connections: self.connections.get_or_create(labels).clone(),
            active: self.active.get_or_create(labels).clone(),
            received: self.received.get_or_create(labels).clone(),
            sent: self.sent.get_or_create(labels).clone(),
            rejected: Reason::ALL.map(reason),
            connect_errors: self.connect_errors.get_or_create(labels).clone(),
            connect_seconds: self.connect_seconds.get_or_create(labels).clone(),
            response_seconds: self.response_seconds.get_or_create(labels).clone(),
            pick_seconds: self.pick_seconds.get_or_create(labels).clone(),
            picks: endpoints
                .iter()
                .map(|endpoint| {
                    self.picks
                        .get_or_create(&EndpointLabels {
                            namespace: labels.namespace.clone(),
                            service: labels.service.clone(),
                            port: labels.port.clone(),
                            endpoint: endpoint.clone(),
                        })
                        .clone()
                })
                .collect(),
            codes: std::array::from_fn(|class| {
                self.requests
                    .get_or_create(&CodeLabels {
                        namespace: labels.namespace.clone(),
                        service: labels.service.clone(),
                        port: labels.port.clone(),
                        code: format!("{}xx", class + 1),
                    })
                    .clone()
            }),
        }
    }
}

/// One Service port's metric handles, registered on first use (a deref away).
#[derive(Clone)]
pub struct PortMetrics(Arc<Lazy>);

struct Lazy {
    handles: OnceLock<Handles>,
    /// Where and under which labels to register them (with the endpoints' labels, in the
    /// target's order); `None`: registered nowhere (tests).
    source: Option<(Arc<ProxyMetrics>, PortLabels, Box<[String]>)>,
}

impl std::ops::Deref for PortMetrics {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        self.0.handles.get_or_init(|| match &self.0.source {
            Some((m, labels, endpoints)) => m.handles(labels, endpoints),
            None => Handles::detached(),
        })
    }
}

impl PortMetrics {
    /// Handles registered nowhere (tests, and a target before its port's are known).
    pub fn detached() -> Self {
        PortMetrics(Arc::new(Lazy {
            handles: OnceLock::new(),
            source: None,
        }))
    }
}

/// One Service port's metric handles (atomics shared with the registered families).
pub struct Handles {
    pub connections: Counter,
    pub active: Gauge,
    pub received: Counter,
    pub sent: Counter,
    rejected: [Counter; 5],
    pub connect_errors: Counter,
    pub connect_seconds: Histogram,
    pub response_seconds: Histogram,
    pub pick_seconds: Histogram,
    /// Per endpoint, in the target's endpoint order.
    pub picks: Box<[Counter]>,
    /// HTTP responses by class: 1xx .. 5xx.
    pub codes: [Counter; 5],
}

impl Handles {
    fn detached() -> Self {
        Handles {
            connections: Counter::default(),
            active: Gauge::default(),
            received: Counter::default(),
            sent: Counter::default(),
            rejected: Default::default(),
            connect_errors: Counter::default(),
            connect_seconds: latency(),
            response_seconds: latency(),
            pick_seconds: pick_latency(),
            picks: Box::default(),
            codes: Default::default(),
        }
    }

    pub fn reject(&self, r: Reason) {
        self.rejected[r as usize].inc();
    }

    pub fn picked(&self, index: usize) {
        if let Some(c) = self.picks.get(index) {
            c.inc();
        }
    }

    pub fn status(&self, code: u16) {
        if let Some(c) = self.codes.get((code / 100) as usize - 1) {
            c.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn a_port_adds_series_on_first_use_only() {
        let metrics = Arc::new(ProxyMetrics::new());
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "idle", "namespace": "d"},
            "spec": {"ports": [{"name": "http", "port": 80}]}}))
        .unwrap();
        let view = ServiceView::build(&svc, &[]);
        let port = metrics.port(&view, 0, &view);
        let text = |r: &Registry| {
            let mut out = String::new();
            encode(&mut out, r).unwrap();
            out
        };
        assert!(!text(&registry).contains("service=\"idle\""));
        port.connections.inc();
        let after = text(&registry);
        assert!(
            after.contains(
                "proxy_connections_total{namespace=\"d\",service=\"idle\",port=\"http\"} 1"
            ),
            "{after}"
        );
        // A second handle set for the same port shares the series.
        metrics.port(&view, 0, &view).connections.inc();
        assert!(text(&registry).contains("service=\"idle\",port=\"http\"} 2"));
    }
}
