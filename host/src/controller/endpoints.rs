//! The endpoints controller's decisions, sans-IO: from a Service and the Pods its selector
//! picks, the Endpoints object and EndpointSlices Kubernetes would write; and, for Services
//! without a selector, the EndpointSlices mirrored from user-written Endpoints.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::api::discovery::v1::{self as discovery, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
pub const MIRROR_NAME: &str = "endpointslicemirroring-controller.k8s.io";
/// Kubernetes marks the Endpoints its controller writes with this, so they are not mirrored.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
const MAX_PER_SLICE: usize = 100;

/// What the controller needs of a Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub ip: Option<IpAddr>,
    pub ready: bool,
    pub terminating: bool,
    pub finished: bool,
    pub node: Option<String>,
    pub zone: Option<String>,
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
    /// (name, port, protocol) of every container port.
    pub ports: Vec<(String, i32, String)>,
}

impl PodInfo {
    pub fn from_pod(p: &Pod) -> Self {
        let status = p.status.as_ref();
        let spec = p.spec.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
        let labels = p.metadata.labels.clone().unwrap_or_default();
        PodInfo {
            name: p.metadata.name.clone().unwrap_or_default(),
            uid: p.metadata.uid.clone().unwrap_or_default(),
            zone: labels.get("topology.kubernetes.io/zone").cloned(),
            labels,
            ip: status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            ready,
            terminating: p.metadata.deletion_timestamp.is_some(),
            finished: phase == "Succeeded" || phase == "Failed",
            node: spec.and_then(|s| s.node_name.clone()),
            hostname: spec.and_then(|s| s.hostname.clone()),
            subdomain: spec.and_then(|s| s.subdomain.clone()),
            ports: spec
                .map(|s| {
                    s.containers
                        .iter()
                        .flat_map(|c| c.ports.iter().flatten())
                        .map(|cp| {
                            (
                                cp.name.clone().unwrap_or_default(),
                                cp.container_port,
                                cp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Does `selector` (a Service's) pick these labels? An empty selector picks nothing.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The Pod port a Service port reaches, if the Pod has it.
fn resolve(sp: &ServicePort, pod: &PodInfo) -> Option<i32> {
    let proto = sp.protocol.as_deref().unwrap_or("TCP");
    match sp.target_port.as_ref() {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod
            .ports
            .iter()
            .find(|(n, _, p)| n == name && p == proto)
            .map(|(_, port, _)| *port),
    }
}

/// One resolved port of an endpoint: (name, port, protocol, appProtocol).
type PortKey = (String, i32, String, Option<String>);

/// Desired objects for a Service with a selector.
#[derive(Debug, Clone)]
pub struct Desired {
    pub endpoints: Endpoints,
    pub slices: Vec<EndpointSlice>,
}

fn owner(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// Slice names: the first is the Service's own name, the rest add a stable suffix.
fn slice_name(svc: &str, index: usize, key: &str) -> String {
    if index == 0 {
        return svc.to_string();
    }
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.bytes().chain(index.to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..5)
        .map(|i| ALPHABET[((h >> (i * 8)) % ALPHABET.len() as u64) as usize] as char)
        .collect();
    let base: String = svc.chars().take(57).collect();
    format!("{base}-{suffix}")
}

fn slice_meta(svc: &Service, name: String, managed_by: &str) -> ObjectMeta {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), managed_by.into());
    ObjectMeta {
        name: Some(name),
        namespace: svc.metadata.namespace.clone(),
        labels: Some(labels),
        owner_references: Some(vec![owner(svc)]),
        ..Default::default()
    }
}

fn slice_ports(ports: &[PortKey]) -> Option<Vec<discovery::EndpointPort>> {
    Some(
        ports
            .iter()
            .map(|(name, port, proto, app)| discovery::EndpointPort {
                name: Some(name.clone()),
                port: Some(*port),
                protocol: Some(proto.clone()),
                app_protocol: app.clone(),
            })
            .collect(),
    )
}

fn endpoint_ports(ports: &[PortKey]) -> Option<Vec<EndpointPort>> {
    (!ports.is_empty()).then(|| {
        ports
            .iter()
            .map(|(name, port, proto, app)| EndpointPort {
                name: (!name.is_empty()).then(|| name.clone()),
                port: *port,
                protocol: Some(proto.clone()),
                app_protocol: app.clone(),
            })
            .collect()
    })
}

/// The Endpoints and EndpointSlices for `svc` given the Pods its selector picked.
pub fn desired(svc: &Service, pods: &[&PodInfo]) -> Desired {
    let spec = svc.spec.clone().unwrap_or_default();
    let svc_name = svc.metadata.name.clone().unwrap_or_default();
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let sports = spec.ports.clone().unwrap_or_default();

    // Group pods by the ports they resolve to (a named targetPort may differ per Pod).
    let mut groups: BTreeMap<(String, Vec<PortKey>), Vec<&PodInfo>> = BTreeMap::new();
    for pod in pods {
        let Some(ip) = pod.ip else { continue };
        if pod.finished {
            continue;
        }
        let ports: Vec<PortKey> = sports
            .iter()
            .filter_map(|sp| {
                resolve(sp, pod).map(|p| {
                    (
                        sp.name.clone().unwrap_or_default(),
                        p,
                        sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        sp.app_protocol.clone(),
                    )
                })
            })
            .collect();
        if ports.is_empty() && !sports.is_empty() {
            continue;
        }
        groups
            .entry((family(&ip).to_string(), ports))
            .or_default()
            .push(pod);
    }

    let address = |pod: &PodInfo| EndpointAddress {
        ip: pod.ip.expect("filtered").to_string(),
        hostname: pod
            .hostname
            .clone()
            .filter(|_| pod.subdomain.as_deref() == Some(svc_name.as_str())),
        node_name: pod.node.clone(),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            name: Some(pod.name.clone()),
            namespace: Some(ns.clone()),
            uid: Some(pod.uid.clone()),
            ..Default::default()
        }),
    };

    let mut subsets = Vec::new();
    let mut slices = Vec::new();
    for ((fam, ports), mut members) in groups {
        members.sort_by(|a, b| a.ip.cmp(&b.ip).then(a.name.cmp(&b.name)));
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for p in &members {
            if p.terminating && !publish_not_ready {
                continue;
            }
            if p.ready || publish_not_ready {
                ready.push(address(p));
            } else {
                not_ready.push(address(p));
            }
        }
        if !ready.is_empty() || !not_ready.is_empty() {
            subsets.push(EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: endpoint_ports(&ports),
            });
        }
        let key = format!("{fam}{ports:?}");
        for chunk in members.chunks(MAX_PER_SLICE) {
            let endpoints = chunk
                .iter()
                .map(|p| {
                    let addr = address(p);
                    discovery::Endpoint {
                        addresses: vec![addr.ip],
                        conditions: Some(EndpointConditions {
                            ready: Some(publish_not_ready || (p.ready && !p.terminating)),
                            serving: Some(p.ready || publish_not_ready),
                            terminating: Some(p.terminating),
                        }),
                        hostname: addr.hostname,
                        node_name: addr.node_name,
                        target_ref: addr.target_ref,
                        zone: p.zone.clone(),
                        ..Default::default()
                    }
                })
                .collect();
            let name = slice_name(&svc_name, slices.len(), &key);
            slices.push(EndpointSlice {
                metadata: slice_meta(svc, name, CONTROLLER_NAME),
                address_type: fam.clone(),
                endpoints,
                ports: slice_ports(&ports),
            });
        }
    }
    if slices.is_empty() {
        // Kubernetes keeps a placeholder slice so watchers see the Service has no endpoints.
        slices.push(EndpointSlice {
            metadata: slice_meta(svc, svc_name.clone(), CONTROLLER_NAME),
            address_type: "IPv4".into(),
            endpoints: Vec::new(),
            ports: None,
        });
    }

    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if spec.cluster_ip.as_deref() == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), String::new());
    }
    labels.insert(SKIP_MIRROR_LABEL.into(), "true".into());
    let endpoints = Endpoints {
        metadata: ObjectMeta {
            name: Some(svc_name),
            namespace: Some(ns),
            labels: Some(labels),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    };
    Desired { endpoints, slices }
}

/// EndpointSlices mirrored from user-written Endpoints of a Service without a selector.
pub fn mirror(svc: &Service, eps: &Endpoints) -> Vec<EndpointSlice> {
    let svc_name = svc.metadata.name.clone().unwrap_or_default();
    let mut by_key: BTreeMap<(String, Vec<PortKey>), Vec<discovery::Endpoint>> = BTreeMap::new();
    for subset in eps.subsets.iter().flatten() {
        let ports: Vec<PortKey> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| {
                (
                    p.name.clone().unwrap_or_default(),
                    p.port,
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    p.app_protocol.clone(),
                )
            })
            .collect();
        for (addrs, ready) in [
            (&subset.addresses, true),
            (&subset.not_ready_addresses, false),
        ] {
            for a in addrs.iter().flatten() {
                let Ok(ip) = a.ip.parse::<IpAddr>() else {
                    continue;
                };
                by_key
                    .entry((family(&ip).to_string(), ports.clone()))
                    .or_default()
                    .push(discovery::Endpoint {
                        addresses: vec![a.ip.clone()],
                        conditions: Some(EndpointConditions {
                            ready: Some(ready),
                            serving: Some(ready),
                            terminating: Some(false),
                        }),
                        hostname: a.hostname.clone(),
                        node_name: a.node_name.clone(),
                        target_ref: a.target_ref.clone(),
                        ..Default::default()
                    });
            }
        }
    }
    let mut out = Vec::new();
    for ((fam, ports), eps) in by_key {
        let key = format!("{fam}{ports:?}");
        for chunk in eps.chunks(MAX_PER_SLICE) {
            let name = slice_name(&svc_name, out.len(), &key);
            out.push(EndpointSlice {
                metadata: slice_meta(svc, name, MIRROR_NAME),
                address_type: fam.clone(),
                endpoints: chunk.to_vec(),
                ports: slice_ports(&ports),
            });
        }
    }
    out
}

/// Index of Pods by label pair, so a Service's candidates are found without a scan.
#[derive(Default, Debug)]
pub struct LabelIndex {
    by_pair: HashMap<(String, String), std::collections::BTreeSet<String>>,
}

impl LabelIndex {
    pub fn insert(&mut self, name: &str, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            self.by_pair
                .entry((k.clone(), v.clone()))
                .or_default()
                .insert(name.to_string());
        }
    }
    pub fn remove(&mut self, name: &str, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            if let Some(set) = self.by_pair.get_mut(&(k.clone(), v.clone())) {
                set.remove(name);
                if set.is_empty() {
                    self.by_pair.remove(&(k.clone(), v.clone()));
                }
            }
        }
    }
    /// Names carrying at least one of these pairs.
    pub fn any_of(&self, labels: &BTreeMap<String, String>) -> std::collections::BTreeSet<String> {
        labels
            .iter()
            .filter_map(|(k, v)| self.by_pair.get(&(k.clone(), v.clone())))
            .flatten()
            .cloned()
            .collect()
    }
    /// Names carrying every pair of `selector` (smallest posting list, then filtered by caller).
    pub fn candidates(&self, selector: &BTreeMap<String, String>) -> Vec<String> {
        let lists: Option<Vec<_>> = selector
            .iter()
            .map(|(k, v)| self.by_pair.get(&(k.clone(), v.clone())))
            .collect();
        match lists {
            Some(mut ls) if !ls.is_empty() => {
                ls.sort_by_key(|l| l.len());
                ls[0]
                    .iter()
                    .filter(|n| ls[1..].iter().all(|l| l.contains(*n)))
                    .cloned()
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
