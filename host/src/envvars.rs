//! Service environment variables exactly as the kubelet sets them in a container
//! (kubernetes/kubernetes `pkg/kubelet/envvars` and `kubelet_pods.go` `getServiceEnvVarMap`).
//! Sans-IO: Services in, `KEY=VALUE` pairs out, sorted by name.
//!
//! - Services of the Pod's namespace, plus `kubernetes` of `default` (a Service named
//!   `kubernetes` in the Pod's own namespace wins over it).
//! - Only Services with a cluster IP: headless (`None`) and ExternalName Services are left out.
//! - `{SVC}_SERVICE_HOST`, `{SVC}_SERVICE_PORT` (first port), `{SVC}_SERVICE_PORT_{NAME}` per
//!   named port, and the Docker-link set: `{SVC}_PORT` (first port),
//!   `{SVC}_PORT_{P}_{PROTO}`, `…_PROTO`, `…_PORT`, `…_ADDR` per port. Names upper-cased,
//!   '-' → '_'; IPv6 addresses bracketed in URLs.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::snapshot::{Protocol, ServiceView};

/// What the rules need of one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvService {
    pub namespace: String,
    pub name: String,
    /// `spec.clusterIP`; `None` for headless and ExternalName Services.
    pub cluster_ip: Option<IpAddr>,
    /// `spec.ports` in order: (name, port, protocol).
    pub ports: Vec<(String, u16, Protocol)>,
}

impl EnvService {
    pub fn from_view(v: &ServiceView) -> Self {
        EnvService {
            namespace: v.namespace.clone(),
            name: v.name.clone(),
            cluster_ip: if v.headless || v.external_name.is_some() {
                None
            } else {
                v.cluster_ips.first().copied()
            },
            ports: v
                .ports
                .iter()
                .map(|p| (p.name.clone(), p.port, p.protocol))
                .collect(),
        }
    }
}

fn env_name(s: &str) -> String {
    s.replace('-', "_").to_ascii_uppercase()
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    }
}

/// The variables a container in `namespace` gets, sorted by name.
pub fn for_namespace<'a>(
    namespace: &str,
    services: impl IntoIterator<Item = &'a EnvService>,
) -> BTreeMap<String, String> {
    // The kubelet's map by Service name: the Pod's namespace, and `default/kubernetes`
    // unless the namespace has its own `kubernetes`.
    let mut chosen: BTreeMap<&str, &EnvService> = BTreeMap::new();
    for s in services {
        let Some(_) = s.cluster_ip else { continue };
        if s.ports.is_empty() {
            continue;
        }
        if s.namespace == "default" && s.name == "kubernetes" {
            chosen.entry(&s.name).or_insert(s);
        } else if s.namespace == namespace {
            chosen.insert(&s.name, s);
        }
    }
    let mut out = BTreeMap::new();
    for s in chosen.values() {
        add(&mut out, s);
    }
    out
}

fn add(out: &mut BTreeMap<String, String>, s: &EnvService) {
    let Some(ip) = s.cluster_ip else { return };
    let prefix = env_name(&s.name);
    let (_, first, _) = &s.ports[0];
    out.insert(format!("{prefix}_SERVICE_HOST"), ip.to_string());
    out.insert(format!("{prefix}_SERVICE_PORT"), first.to_string());
    for (name, port, _) in &s.ports {
        if !name.is_empty() {
            out.insert(
                format!("{prefix}_SERVICE_PORT_{}", env_name(name)),
                port.to_string(),
            );
        }
    }
    for (i, (_, port, protocol)) in s.ports.iter().enumerate() {
        let upper = proto(*protocol);
        let lower = upper.to_ascii_lowercase();
        let host_port = std::net::SocketAddr::new(ip, *port).to_string();
        let url = format!("{lower}://{host_port}");
        if i == 0 {
            out.insert(format!("{prefix}_PORT"), url.clone());
        }
        let pp = format!("{prefix}_PORT_{port}_{upper}");
        out.insert(format!("{pp}_PROTO"), lower);
        out.insert(format!("{pp}_PORT"), port.to_string());
        out.insert(format!("{pp}_ADDR"), ip.to_string());
        out.insert(pp, url);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ip: Option<&str>, ports: &[(&str, u16, Protocol)]) -> EnvService {
        EnvService {
            namespace: ns.into(),
            name: name.into(),
            cluster_ip: ip.map(|i| i.parse().unwrap()),
            ports: ports
                .iter()
                .map(|(n, p, pr)| (n.to_string(), *p, *pr))
                .collect(),
        }
    }

    fn kubernetes() -> EnvService {
        svc(
            "default",
            "kubernetes",
            Some("10.96.0.1"),
            &[("https", 443, Protocol::Tcp)],
        )
    }

    #[test]
    fn the_kubelet_rules() {
        let all = [
            kubernetes(),
            svc(
                "shop",
                "my-db",
                Some("10.96.0.20"),
                &[("pg", 5432, Protocol::Tcp), ("stats", 9187, Protocol::Udp)],
            ),
            svc("shop", "headless", None, &[("x", 80, Protocol::Tcp)]),
            svc(
                "other",
                "web",
                Some("10.96.0.30"),
                &[("", 80, Protocol::Tcp)],
            ),
            svc("shop", "v6", Some("fd00::7"), &[("", 8080, Protocol::Tcp)]),
        ];
        let env = for_namespace("shop", &all);
        let want = [
            ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("MY_DB_PORT", "tcp://10.96.0.20:5432"),
            ("MY_DB_PORT_5432_TCP", "tcp://10.96.0.20:5432"),
            ("MY_DB_PORT_5432_TCP_ADDR", "10.96.0.20"),
            ("MY_DB_PORT_5432_TCP_PORT", "5432"),
            ("MY_DB_PORT_5432_TCP_PROTO", "tcp"),
            ("MY_DB_PORT_9187_UDP", "udp://10.96.0.20:9187"),
            ("MY_DB_PORT_9187_UDP_ADDR", "10.96.0.20"),
            ("MY_DB_PORT_9187_UDP_PORT", "9187"),
            ("MY_DB_PORT_9187_UDP_PROTO", "udp"),
            ("MY_DB_SERVICE_HOST", "10.96.0.20"),
            ("MY_DB_SERVICE_PORT", "5432"),
            ("MY_DB_SERVICE_PORT_PG", "5432"),
            ("MY_DB_SERVICE_PORT_STATS", "9187"),
            ("V6_PORT", "tcp://[fd00::7]:8080"),
            ("V6_PORT_8080_TCP", "tcp://[fd00::7]:8080"),
            ("V6_PORT_8080_TCP_ADDR", "fd00::7"),
            ("V6_PORT_8080_TCP_PORT", "8080"),
            ("V6_PORT_8080_TCP_PROTO", "tcp"),
            ("V6_SERVICE_HOST", "fd00::7"),
            ("V6_SERVICE_PORT", "8080"),
        ];
        let got: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_namespace_kubernetes_service_wins_over_the_default_one() {
        let all = [
            kubernetes(),
            svc(
                "shop",
                "kubernetes",
                Some("10.96.0.9"),
                &[("", 80, Protocol::Tcp)],
            ),
        ];
        assert_eq!(
            for_namespace("shop", &all)["KUBERNETES_SERVICE_HOST"],
            "10.96.0.9"
        );
        assert_eq!(
            for_namespace("default", &all)["KUBERNETES_SERVICE_HOST"],
            "10.96.0.1"
        );
    }
}
