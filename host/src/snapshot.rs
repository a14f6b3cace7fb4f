//! The gateway's view of the world: an immutable snapshot of Services, their ports and the
//! endpoints behind each port, built from Service and EndpointSlice objects. Sans-IO: plain
//! data in, a `ServiceView` out. The watcher publishes snapshots through `arc-swap`; the data
//! plane and DNS read them without locks.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

/// `namespace/name`.
pub type ServiceKey = Arc<str>;

pub fn key(namespace: &str, name: &str) -> ServiceKey {
    Arc::from(format!("{namespace}/{name}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    fn parse(s: Option<&str>) -> Self {
        match s {
            Some("UDP") => Protocol::Udp,
            Some("SCTP") => Protocol::Sctp,
            _ => Protocol::Tcp,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

/// One backend address of one port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointView {
    /// Stable while the endpoint exists (derived from its address and port): the id plugins
    /// see and return.
    pub id: u32,
    pub addr: IpAddr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// One endpoint address of a headless Service, whatever its ports: what cluster DNS answers
/// (a headless Service may have no ports at all).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostView {
    pub addr: IpAddr,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortView {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    pub target_port: String,
    pub endpoints: Vec<EndpointView>,
}

impl PortView {
    /// Endpoints to send new traffic to: ready ones, or, when none is ready, serving ones that
    /// are terminating (the EndpointSlice rule kube-proxy follows).
    pub fn usable(&self) -> impl Iterator<Item = &EndpointView> {
        self.usable_indices().map(|i| &self.endpoints[i])
    }

    /// Positions in `endpoints` of the [`usable`](Self::usable) endpoints.
    pub fn usable_indices(&self) -> impl Iterator<Item = usize> + '_ {
        let any_ready = self.endpoints.iter().any(|e| e.ready);
        self.endpoints.iter().enumerate().filter_map(move |(i, e)| {
            let usable = if any_ready {
                e.ready
            } else {
                e.serving && e.terminating
            };
            usable.then_some(i)
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_: ServiceType,
    pub headless: bool,
    pub cluster_ips: Vec<IpAddr>,
    pub external_ips: Vec<IpAddr>,
    pub load_balancer_ips: Vec<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    /// `sessionAffinity: ClientIP` timeout, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity_timeout_seconds: Option<u32>,
    pub external_traffic_local: bool,
    pub internal_traffic_local: bool,
    pub load_balancer_source_ranges: Vec<ipnet::IpNet>,
    /// The `switchyard.io/*` annotations (plugins, modes, TLS).
    pub annotations: BTreeMap<String, String>,
    /// The plugins those annotations name.
    pub plugins: PluginRefs,
    pub ports: Vec<PortView>,
    /// Headless Services: every endpoint address once (ready if any of its entries is),
    /// sorted; empty for other Services.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostView>,
    pub resource_version: String,
    /// `metadata.uid`: Events about the Service name it.
    #[serde(skip)]
    pub uid: String,
    /// The `kubernetes.io/tls` Secrets named in `switchyard.io/tls-secret` (comma-separated,
    /// same namespace), in that order, as far as they exist; filled in by the watcher.
    #[serde(skip)]
    pub tls: Vec<Arc<TlsPair>>,
}

/// A certificate chain and its key (PEM), from a `kubernetes.io/tls` Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsPair {
    /// `namespace/name` of the Secret.
    pub secret: String,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPair")
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

impl ServiceView {
    /// The Secret names in `switchyard.io/tls-secret`.
    pub fn tls_secret_names(&self) -> impl Iterator<Item = &str> {
        self.annotations
            .get("switchyard.io/tls-secret")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
    }
}

/// Which plugin runs a hook for a Service, and its config (annotations
/// `switchyard.io/{hook}` and `switchyard.io/{hook}-config`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PluginRef {
    pub name: Arc<str>,
    pub config: Arc<str>,
}

/// The plugins a Service names; `None` means the native default (round-robin, allow,
/// unshaped answers).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PluginRefs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balancer: Option<PluginRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PluginRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<PluginRef>,
}

impl PluginRefs {
    fn from_annotations(a: &BTreeMap<String, String>) -> Self {
        let one = |hook: &str| {
            let name = a.get(&format!("switchyard.io/{hook}"))?.trim();
            (!name.is_empty()).then(|| PluginRef {
                name: Arc::from(name),
                config: Arc::from(
                    a.get(&format!("switchyard.io/{hook}-config"))
                        .map(String::as_str)
                        .unwrap_or(""),
                ),
            })
        };
        PluginRefs {
            balancer: one("balancer"),
            policy: one("policy"),
            dns: one("dns"),
        }
    }
}

/// Gives each endpoint (sorted, deduplicated) an id from a hash of its address and port,
/// probing past collisions, so ids survive other endpoints coming and going.
fn assign_ids(endpoints: &mut [EndpointView]) {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let mut used = std::collections::HashSet::with_capacity(endpoints.len());
    for e in endpoints.iter_mut() {
        let mut id =
            BuildHasherDefault::<DefaultHasher>::default().hash_one((e.addr, e.port)) as u32;
        while !used.insert(id) {
            id = id.wrapping_add(1);
        }
        e.id = id;
    }
}

fn ips(v: Option<&Vec<String>>) -> Vec<IpAddr> {
    v.into_iter()
        .flatten()
        .filter_map(|s| s.parse().ok())
        .collect()
}

impl ServiceView {
    /// Builds the view of `svc` from the EndpointSlices labelled with its name.
    pub fn build(svc: &Service, slices: &[&EndpointSlice]) -> Self {
        let spec = svc.spec.clone().unwrap_or_default();
        let type_ = match spec.type_.as_deref() {
            Some("NodePort") => ServiceType::NodePort,
            Some("LoadBalancer") => ServiceType::LoadBalancer,
            Some("ExternalName") => ServiceType::ExternalName,
            _ => ServiceType::ClusterIP,
        };
        let headless = spec.cluster_ip.as_deref() == Some("None");
        let cluster_ips = if spec.cluster_ips.is_some() {
            ips(spec.cluster_ips.as_ref())
        } else {
            ips(spec.cluster_ip.as_ref().map(|c| vec![c.clone()]).as_ref())
        };
        let load_balancer_ips = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .map(|v| {
                v.iter()
                    .filter_map(|i| i.ip.as_deref()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let ports = spec
            .ports
            .iter()
            .flatten()
            .map(|sp| {
                let name = sp.name.clone().unwrap_or_default();
                let protocol = Protocol::parse(sp.protocol.as_deref());
                let mut endpoints = Vec::new();
                for slice in slices {
                    let Some(port) = slice
                        .ports
                        .iter()
                        .flatten()
                        .find(|p| {
                            p.name.clone().unwrap_or_default() == name
                                && Protocol::parse(p.protocol.as_deref()) == protocol
                        })
                        .and_then(|p| p.port)
                    else {
                        continue;
                    };
                    for ep in &slice.endpoints {
                        let c = ep.conditions.clone().unwrap_or_default();
                        let ready = c.ready.unwrap_or(true);
                        for a in &ep.addresses {
                            let Ok(addr) = a.parse() else { continue };
                            endpoints.push(EndpointView {
                                id: 0,
                                addr,
                                port: port as u16,
                                ready,
                                serving: c.serving.unwrap_or(ready),
                                terminating: c.terminating.unwrap_or(false),
                                node: ep.node_name.clone(),
                                zone: ep.zone.clone(),
                                hostname: ep.hostname.clone(),
                                pod: ep.target_ref.as_ref().and_then(|t| t.name.clone()),
                            });
                        }
                    }
                }
                endpoints.sort_by_key(|e| (e.addr, e.port));
                endpoints.dedup_by(|a, b| a.addr == b.addr && a.port == b.port);
                assign_ids(&mut endpoints);
                PortView {
                    name,
                    port: sp.port as u16,
                    protocol,
                    node_port: sp.node_port.map(|p| p as u16),
                    app_protocol: sp.app_protocol.clone(),
                    target_port: match &sp.target_port {
                        Some(IntOrString::Int(n)) => n.to_string(),
                        Some(IntOrString::String(s)) => s.clone(),
                        None => sp.port.to_string(),
                    },
                    endpoints,
                }
            })
            .collect();
        let annotations: BTreeMap<String, String> = svc
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("switchyard.io/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        ServiceView {
            plugins: PluginRefs::from_annotations(&annotations),
            annotations,
            namespace: svc.metadata.namespace.clone().unwrap_or_default(),
            name: svc.metadata.name.clone().unwrap_or_default(),
            type_,
            headless,
            cluster_ips: if headless { Vec::new() } else { cluster_ips },
            external_ips: ips(spec.external_ips.as_ref()),
            load_balancer_ips,
            external_name: spec
                .external_name
                .clone()
                .filter(|_| type_ == ServiceType::ExternalName),
            affinity_timeout_seconds: (spec.session_affinity.as_deref() == Some("ClientIP")).then(
                || {
                    spec.session_affinity_config
                        .as_ref()
                        .and_then(|c| c.client_ip.as_ref())
                        .and_then(|c| c.timeout_seconds)
                        .unwrap_or(10800) as u32
                },
            ),
            external_traffic_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            internal_traffic_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            load_balancer_source_ranges: spec
                .load_balancer_source_ranges
                .iter()
                .flatten()
                .filter_map(|r| r.trim().parse().ok())
                .collect(),
            ports,
            hosts: if headless { hosts(slices) } else { Vec::new() },
            resource_version: svc.metadata.resource_version.clone().unwrap_or_default(),
            uid: svc.metadata.uid.clone().unwrap_or_default(),
            tls: Vec::new(),
        }
    }
}

/// Every endpoint address in `slices` once, ready if any of its entries is, with the first
/// hostname given for it.
fn hosts(slices: &[&EndpointSlice]) -> Vec<HostView> {
    let mut out: Vec<HostView> = Vec::new();
    for ep in slices.iter().flat_map(|s| &s.endpoints) {
        let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
        for addr in ep.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
            match out.iter_mut().find(|h| h.addr == addr) {
                Some(h) => {
                    h.ready |= ready;
                    h.hostname = h.hostname.take().or_else(|| ep.hostname.clone());
                }
                None => out.push(HostView {
                    addr,
                    ready,
                    hostname: ep.hostname.clone(),
                }),
            }
        }
    }
    out.sort_by_key(|h| h.addr);
    out
}

/// Shards of the Service map: a new snapshot copies only the shards that changed.
pub const SHARDS: usize = 64;

type Shard = HashMap<ServiceKey, Arc<ServiceView>>;

/// Everything the data plane and DNS need, immutable once published.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub generation: u64,
    shards: Vec<Arc<Shard>>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            generation: 0,
            shards: (0..SHARDS).map(|_| Arc::new(Shard::new())).collect(),
        }
    }
}

fn shard_of(key: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

impl Snapshot {
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<ServiceView>> {
        let k = format!("{namespace}/{name}");
        self.shards[shard_of(&k)].get(k.as_str())
    }

    /// The Service under its `namespace/name` key.
    pub fn get_key(&self, key: &str) -> Option<&Arc<ServiceView>> {
        self.shards[shard_of(key)].get(key)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceView>> {
        self.shards.iter().flat_map(|s| s.values())
    }

    /// Services added, changed or removed since `prev` (compared by pointer; shards shared
    /// with `prev` are skipped without looking inside).
    pub fn changed_since(&self, prev: &Snapshot) -> Vec<ServiceKey> {
        let mut out = Vec::new();
        for (new, old) in self.shards.iter().zip(&prev.shards) {
            if Arc::ptr_eq(new, old) {
                continue;
            }
            for (k, v) in new.iter() {
                if old.get(k).is_none_or(|o| !Arc::ptr_eq(o, v)) {
                    out.push(k.clone());
                }
            }
            out.extend(old.keys().filter(|k| !new.contains_key(*k)).cloned());
        }
        out
    }

    /// The next generation: this snapshot with `changes` applied (`None` removes).
    /// Untouched shards are shared with this snapshot, not copied.
    pub fn with_changes(
        &self,
        changes: impl IntoIterator<Item = (ServiceKey, Option<Arc<ServiceView>>)>,
    ) -> Snapshot {
        let mut shards = self.shards.clone();
        for (k, v) in changes {
            let shard = Arc::make_mut(&mut shards[shard_of(&k)]);
            match v {
                Some(v) => shard.insert(k, v),
                None => shard.remove(&k),
            };
        }
        Snapshot {
            generation: self.generation + 1,
            shards,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_view_maps_ports_to_slice_endpoints() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "annotations": {"switchyard.io/balancer": "maglev", "other": "x"}},
            "spec": {"type": "NodePort", "clusterIP": "127.96.0.10", "clusterIPs": ["127.96.0.10"], "sessionAffinity": "ClientIP",
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080, "protocol": "TCP"},
                               {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}]}
        })).unwrap();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": [
                {"addresses": ["127.0.0.12"], "conditions": {"ready": true}},
                {"addresses": ["127.0.0.11"], "conditions": {"ready": false, "serving": true, "terminating": true}, "nodeName": "n1"}
            ]
        })).unwrap();
        let v = ServiceView::build(&svc, &[&slice]);
        assert_eq!(v.type_, ServiceType::NodePort);
        assert_eq!(
            v.cluster_ips,
            vec!["127.96.0.10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(v.affinity_timeout_seconds, Some(10800));
        assert_eq!(
            v.annotations.keys().collect::<Vec<_>>(),
            ["switchyard.io/balancer"]
        );
        let http = &v.ports[0];
        assert_eq!(
            (http.port, http.node_port, http.protocol),
            (80, Some(30080), Protocol::Tcp)
        );
        assert_eq!(
            http.endpoints
                .iter()
                .map(|e| (e.addr.to_string(), e.port))
                .collect::<Vec<_>>(),
            [
                ("127.0.0.11".to_string(), 8080),
                ("127.0.0.12".to_string(), 8080)
            ]
        );
        assert_eq!(
            http.usable().count(),
            1,
            "only the ready one while one is ready"
        );
        assert_eq!(v.ports[1].endpoints[0].port, 5353);
    }

    #[test]
    fn terminating_serving_endpoints_are_the_fallback() {
        let port = PortView {
            name: String::new(),
            port: 80,
            protocol: Protocol::Tcp,
            node_port: None,
            app_protocol: None,
            target_port: "80".into(),
            endpoints: vec![EndpointView {
                id: 1,
                addr: "127.0.0.1".parse().unwrap(),
                port: 80,
                ready: false,
                serving: true,
                terminating: true,
                node: None,
                zone: None,
                hostname: None,
                pod: None,
            }],
        };
        assert_eq!(port.usable().count(), 1);
    }
}
