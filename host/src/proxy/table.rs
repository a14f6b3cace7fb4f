//! Which listeners the snapshot asks for and what each serves. Sans-IO: a snapshot and this
//! node's address in, a map from (address, port, protocol) to a [`Route`] out. The listener
//! reconciler does the binding; nothing here touches a socket.
//!
//! Kubernetes rules followed: a cluster IP listens on each Service port; NodePort and
//! LoadBalancer Services also on `node-ip:nodePort`; LoadBalancer Services on every
//! `status.loadBalancer.ingress` IP; any Service on its `externalIPs`. ExternalName and
//! headless Services get no listener. SCTP is not proxied.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::snapshot::{Protocol, ServiceKey, ServiceType, ServiceView, Snapshot, key};

/// How traffic reached the Service; decides which traffic policy and source ranges apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Frontend {
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalIP,
}

impl Frontend {
    /// Traffic from outside the cluster: `externalTrafficPolicy` applies (else
    /// `internalTrafficPolicy`).
    pub fn external(self) -> bool {
        !matches!(self, Frontend::ClusterIP)
    }
}

/// How a listener handles its traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Mode {
    /// Byte stream: one pick per connection.
    Tcp,
    /// Terminated HTTP/1.1 and HTTP/2: one pick per request.
    Http,
    /// Datagrams: one pick per client flow.
    Udp,
}

/// One listening socket address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ListenKey {
    pub addr: SocketAddr,
    pub protocol: Protocol,
}

/// What a listener serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    pub service: ServiceKey,
    pub port_index: usize,
    pub frontend: Frontend,
    pub mode: Mode,
    /// Terminate TLS (an external frontend of a Service with `switchyard.io/tls-secret`).
    pub tls: bool,
}

/// The mode of `svc`'s port: UDP for UDP ports; HTTP when the port's `appProtocol` is `http`
/// or `kubernetes.io/h2c`, or the annotation `switchyard.io/mode: http`; else TCP. (`https`
/// becomes HTTP on listeners that terminate TLS, see [`routes_of`].)
pub fn mode(svc: &ServiceView, port_index: usize) -> Mode {
    let port = &svc.ports[port_index];
    if port.protocol == Protocol::Udp {
        return Mode::Udp;
    }
    match svc.annotations.get("switchyard.io/mode").map(|s| s.trim()) {
        Some("http") => return Mode::Http,
        Some("tcp") => return Mode::Tcp,
        _ => {}
    }
    match port.app_protocol.as_deref() {
        Some("http" | "kubernetes.io/h2c") => Mode::Http,
        _ => Mode::Tcp,
    }
}

/// Two Services asking for the same listener: the first by namespace/name keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub listen: ListenKey,
    pub kept: ServiceKey,
    pub refused: ServiceKey,
}

/// The listeners one Service asks for (none for headless and ExternalName Services).
pub fn routes_of(svc: &ServiceView, node_ip: IpAddr) -> Vec<(ListenKey, Route)> {
    let mut out = Vec::new();
    if svc.headless || svc.type_ == ServiceType::ExternalName {
        return out;
    }
    let service = key(&svc.namespace, &svc.name);
    for (i, port) in svc.ports.iter().enumerate() {
        if port.protocol == Protocol::Sctp {
            continue;
        }
        let terminates = svc.tls_secret_names().next().is_some();
        let mut add = |ip: IpAddr, p: u16, frontend: Frontend| {
            let tls = terminates && frontend.external() && port.protocol == Protocol::Tcp;
            let mode = match mode(svc, i) {
                // `https` is passed through as TCP unless switchyard terminates the TLS.
                Mode::Tcp if tls && port.app_protocol.as_deref() == Some("https") => Mode::Http,
                m => m,
            };
            let listen = ListenKey {
                addr: SocketAddr::new(ip, p),
                protocol: port.protocol,
            };
            if !out.iter().any(|(k, _)| *k == listen) {
                out.push((
                    listen,
                    Route {
                        service: service.clone(),
                        port_index: i,
                        frontend,
                        mode,
                        tls,
                    },
                ));
            }
        };
        for ip in &svc.cluster_ips {
            add(*ip, port.port, Frontend::ClusterIP);
        }
        if matches!(svc.type_, ServiceType::NodePort | ServiceType::LoadBalancer)
            && let Some(np) = port.node_port
        {
            add(node_ip, np, Frontend::NodePort);
        }
        if svc.type_ == ServiceType::LoadBalancer {
            for ip in &svc.load_balancer_ips {
                add(*ip, port.port, Frontend::LoadBalancer);
            }
        }
        for ip in &svc.external_ips {
            add(*ip, port.port, Frontend::ExternalIP);
        }
    }
    out
}

/// Every listener `snap` asks for on a node whose NodePorts listen on `node_ip`; where two
/// Services ask for the same one, the first by namespace/name gets it.
pub fn desired(snap: &Snapshot, node_ip: IpAddr) -> (BTreeMap<ListenKey, Route>, Vec<Conflict>) {
    let mut services: Vec<&ServiceView> = snap.services().map(|s| &**s).collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut out: BTreeMap<ListenKey, Route> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for svc in services {
        for (listen, route) in routes_of(svc, node_ip) {
            match out.get(&listen) {
                Some(kept) => conflicts.push(Conflict {
                    listen,
                    kept: kept.service.clone(),
                    refused: route.service,
                }),
                None => {
                    out.insert(listen, route);
                }
            }
        }
    }
    (out, conflicts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use serde_json::json;
    use std::sync::Arc;

    fn snap(services: Vec<serde_json::Value>) -> Snapshot {
        Snapshot::default().with_changes(services.into_iter().map(|v| {
            let svc: Service = serde_json::from_value(v).unwrap();
            let view = ServiceView::build(&svc, &[]);
            (key(&view.namespace, &view.name), Some(Arc::new(view)))
        }))
    }

    fn keys(m: &BTreeMap<ListenKey, Route>) -> Vec<String> {
        m.iter()
            .map(|(k, r)| format!("{:?} {} {:?} {:?}", k.protocol, k.addr, r.frontend, r.mode))
            .collect()
    }

    #[test]
    fn every_service_type_gets_its_listeners() {
        let s = snap(vec![
            json!({"metadata": {"name": "a", "namespace": "d"}, "spec": {"clusterIP": "127.96.0.2", "ports": [
                {"name": "web", "port": 80, "appProtocol": "http"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
            json!({"metadata": {"name": "np", "namespace": "d"}, "spec": {"type": "NodePort", "clusterIP": "127.96.0.3",
                "externalIPs": ["127.5.0.1"], "ports": [{"port": 8080, "nodePort": 30080}]}}),
            json!({"metadata": {"name": "lb", "namespace": "d"}, "spec": {"type": "LoadBalancer", "clusterIP": "127.96.0.4",
                "ports": [{"port": 443, "nodePort": 30443}]}, "status": {"loadBalancer": {"ingress": [{"ip": "127.200.0.1"}]}}}),
            json!({"metadata": {"name": "hl", "namespace": "d"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
            json!({"metadata": {"name": "ext", "namespace": "d"}, "spec": {"type": "ExternalName", "externalName": "x.example", "ports": [{"port": 80}]}}),
            json!({"metadata": {"name": "sctp", "namespace": "d"}, "spec": {"clusterIP": "127.96.0.6", "ports": [{"port": 9, "protocol": "SCTP"}]}}),
        ]);
        let (m, conflicts) = desired(&s, "127.0.0.1".parse().unwrap());
        assert!(conflicts.is_empty());
        assert_eq!(
            keys(&m),
            [
                "Tcp 127.0.0.1:30080 NodePort Tcp",
                "Tcp 127.0.0.1:30443 NodePort Tcp",
                "Tcp 127.5.0.1:8080 ExternalIP Tcp",
                "Udp 127.96.0.2:53 ClusterIP Udp",
                "Tcp 127.96.0.2:80 ClusterIP Http",
                "Tcp 127.96.0.3:8080 ClusterIP Tcp",
                "Tcp 127.96.0.4:443 ClusterIP Tcp",
                "Tcp 127.200.0.1:443 LoadBalancer Tcp",
            ]
        );
        assert_eq!(
            m.values().find(|r| r.mode == Mode::Udp).unwrap().port_index,
            1
        );
    }

    #[test]
    fn a_shared_external_ip_goes_to_the_first_service() {
        let s = snap(vec![
            json!({"metadata": {"name": "b", "namespace": "d"}, "spec": {"clusterIP": "127.96.0.3", "externalIPs": ["127.5.0.1"], "ports": [{"port": 80}]}}),
            json!({"metadata": {"name": "a", "namespace": "d"}, "spec": {"clusterIP": "127.96.0.2", "externalIPs": ["127.5.0.1"], "ports": [{"port": 80}]}}),
        ]);
        let (m, conflicts) = desired(&s, "127.0.0.1".parse().unwrap());
        let shared = ListenKey {
            addr: "127.5.0.1:80".parse().unwrap(),
            protocol: Protocol::Tcp,
        };
        assert_eq!(&*m[&shared].service, "d/a");
        assert_eq!(conflicts.len(), 1);
        assert_eq!(&*conflicts[0].refused, "d/b");
    }

    #[test]
    fn changed_since_names_only_what_changed() {
        let v = |name: &str, ip: &str| json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"clusterIP": ip, "ports": [{"port": 80}]}});
        let one = snap(
            (0..100)
                .map(|i| v(&format!("s{i}"), "127.96.0.2"))
                .collect(),
        );
        assert_eq!(one.changed_since(&Snapshot::default()).len(), 100);
        let svc: Service = serde_json::from_value(v("s7", "127.96.0.9")).unwrap();
        let two = one.with_changes([
            (
                key("d", "s7"),
                Some(Arc::new(ServiceView::build(&svc, &[]))),
            ),
            (key("d", "s9"), None),
        ]);
        let mut changed: Vec<String> = two
            .changed_since(&one)
            .iter()
            .map(|k| k.to_string())
            .collect();
        changed.sort();
        assert_eq!(changed, ["d/s7", "d/s9"]);
        assert!(two.changed_since(&two).is_empty());
    }

    #[test]
    fn tls_terminates_on_external_frontends_only() {
        let s = snap(vec![
            json!({"metadata": {"name": "s", "namespace": "d", "annotations": {"switchyard.io/tls-secret": "s-tls"}},
                "spec": {"type": "LoadBalancer", "clusterIP": "127.96.0.2", "ports": [{"port": 443, "nodePort": 30443, "appProtocol": "https"}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "127.200.0.1"}]}}}),
        ]);
        let (m, _) = desired(&s, "127.0.0.1".parse().unwrap());
        let got: Vec<(Frontend, Mode, bool)> =
            m.values().map(|r| (r.frontend, r.mode, r.tls)).collect();
        assert_eq!(
            got,
            [
                (Frontend::NodePort, Mode::Http, true),
                (Frontend::ClusterIP, Mode::Tcp, false),
                (Frontend::LoadBalancer, Mode::Http, true),
            ]
        );
    }

    #[test]
    fn the_mode_annotation_wins_over_app_protocol() {
        let s = snap(vec![
            json!({"metadata": {"name": "a", "namespace": "d", "annotations": {"switchyard.io/mode": "tcp"}},
                "spec": {"clusterIP": "127.96.0.2", "ports": [{"port": 80, "appProtocol": "http"}]}}),
            json!({"metadata": {"name": "b", "namespace": "d", "annotations": {"switchyard.io/mode": "http"}},
                "spec": {"clusterIP": "127.96.0.3", "ports": [{"port": 80}]}}),
        ]);
        let (m, _) = desired(&s, "127.0.0.1".parse().unwrap());
        let modes: Vec<Mode> = m.values().map(|r| r.mode).collect();
        assert_eq!(modes, [Mode::Tcp, Mode::Http]);
    }
}
