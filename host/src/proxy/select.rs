//! What a listener serves right now (a [`Target`]) and the Kubernetes rules for choosing an
//! endpoint that do not need a plugin: traffic policies (node-local subsets), the usable set
//! (ready, else serving and terminating), native round-robin, `loadBalancerSourceRanges`,
//! and `sessionAffinity: ClientIP`. Sans-IO: plain data in, decisions out.

use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustc_hash::{FxBuildHasher, FxHashMap};

use super::metrics::PortMetrics;
use super::table::{Frontend, Route};
use crate::snapshot::{PortView, ServiceView};

/// A listener's current job: the route, the endpoint set it may use, and its metric handles.
/// Rebuilt by the reconciler when the Service's view changes; read lock-free per connection.
pub struct Target {
    pub route: Route,
    /// The endpoints to balance over: the snapshot's view, or its node-local subset when the
    /// traffic policy for this frontend is `Local`.
    pub view: Arc<ServiceView>,
    /// The snapshot's view this was built from (compared by pointer to notice changes).
    pub source: Arc<ServiceView>,
    pub node_local: bool,
    /// Positions of the usable endpoints in `port().endpoints`.
    pub usable: Box<[u32]>,
    is_usable: Box<[bool]>,
    turn: AtomicUsize,
    /// Client ranges allowed (LoadBalancer frontends with `loadBalancerSourceRanges`); empty:
    /// everyone.
    pub source_ranges: Box<[ipnet::IpNet]>,
    /// `sessionAffinity: ClientIP` timeout.
    pub affinity: Option<Duration>,
    /// Affinity table key part: the Service port (shared by all frontends of the port).
    pub affinity_key: u64,
    /// TLS termination: the server config, or why it could not be built (then connections are
    /// refused rather than served in clear). Set by the reconciler.
    pub tls: Option<Result<Arc<rustls::ServerConfig>, String>>,
    /// Send a PROXY protocol v2 header to the endpoint first (`switchyard.io/proxy-protocol:
    /// v2`; TCP mode).
    pub proxy_protocol: bool,
    pub metrics: PortMetrics,
}

impl Target {
    pub fn new(route: Route, source: Arc<ServiceView>, node: &str, metrics: PortMetrics) -> Self {
        let local = if route.frontend.external() {
            source.external_traffic_local
        } else {
            source.internal_traffic_local
        };
        let view = if local {
            let mut v = (*source).clone();
            for p in &mut v.ports {
                p.endpoints.retain(|e| e.node.as_deref() == Some(node));
            }
            Arc::new(v)
        } else {
            source.clone()
        };
        let port = &view.ports[route.port_index];
        let usable: Box<[u32]> = port.usable_indices().map(|i| i as u32).collect();
        let mut is_usable = vec![false; port.endpoints.len()].into_boxed_slice();
        for &i in usable.iter() {
            is_usable[i as usize] = true;
        }
        let source_ranges = if route.frontend == Frontend::LoadBalancer {
            source
                .load_balancer_source_ranges
                .clone()
                .into_boxed_slice()
        } else {
            Box::default()
        };
        Target {
            affinity: source
                .affinity_timeout_seconds
                .map(|s| Duration::from_secs(s as u64)),
            affinity_key: FxBuildHasher.hash_one((&*route.service, route.port_index)),
            tls: None,
            proxy_protocol: source
                .annotations
                .get("switchyard.io/proxy-protocol")
                .is_some_and(|v| v.trim() == "v2"),
            node_local: local,
            usable,
            is_usable,
            turn: AtomicUsize::new(0),
            source_ranges,
            view,
            source,
            route,
            metrics,
        }
    }

    /// This target terminating TLS with `tls` (or refusing, with the reason).
    pub fn with_tls(mut self, tls: Result<Arc<rustls::ServerConfig>, String>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// This target with the registered metric handles (built from its own view).
    pub fn with_metrics(mut self, metrics: PortMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn port(&self) -> &PortView {
        &self.view.ports[self.route.port_index]
    }

    pub fn is_usable(&self, index: usize) -> bool {
        self.is_usable.get(index).copied().unwrap_or(false)
    }

    /// Whether a client at `ip` may use this listener (`loadBalancerSourceRanges`).
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.source_ranges.is_empty() || self.source_ranges.iter().any(|n| n.contains(&ip))
    }

    /// Native round-robin over the usable endpoints, skipping `tried` ones.
    pub fn round_robin(&self, tried: &[usize]) -> Option<usize> {
        let n = self.usable.len();
        if n == 0 {
            return None;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| self.usable[(start + k) % n] as usize)
            .find(|i| !tried.contains(i))
    }

    /// The position of the usable endpoint at `addr`, if it still is one.
    pub fn find(&self, addr: SocketAddr) -> Option<usize> {
        let eps = &self.port().endpoints;
        let at = eps
            .binary_search_by(|e| (e.addr, e.port).cmp(&(addr.ip(), addr.port())))
            .ok()?;
        self.is_usable(at).then_some(at)
    }

    pub fn endpoint_addr(&self, index: usize) -> SocketAddr {
        let e = &self.port().endpoints[index];
        SocketAddr::new(e.addr, e.port)
    }
}

const AFFINITY_SHARDS: usize = 32;

/// (Service port key, client IP) → (endpoint, last use).
type Bindings = FxHashMap<(u64, IpAddr), (SocketAddr, Instant)>;

/// `sessionAffinity: ClientIP`: which endpoint each client IP was sent to, per Service port,
/// until `timeoutSeconds` pass without traffic. Sharded by client so workers rarely meet.
pub struct Affinity {
    shards: Box<[Mutex<Bindings>]>,
}

impl Default for Affinity {
    fn default() -> Self {
        Affinity {
            shards: (0..AFFINITY_SHARDS)
                .map(|_| Mutex::new(FxHashMap::default()))
                .collect(),
        }
    }
}

impl Affinity {
    fn shard(&self, k: &(u64, IpAddr)) -> &Mutex<Bindings> {
        &self.shards[FxBuildHasher.hash_one(k) as usize % AFFINITY_SHARDS]
    }

    /// The endpoint `client` is bound to on `t`'s port, if the binding is live and the endpoint
    /// still usable; refreshes the binding's clock.
    pub fn get(&self, t: &Target, client: IpAddr, now: Instant) -> Option<usize> {
        let timeout = t.affinity?;
        let k = (t.affinity_key, client);
        let mut shard = self.shard(&k).lock();
        let (addr, last) = shard.get_mut(&k)?;
        if now.saturating_duration_since(*last) > timeout {
            shard.remove(&k);
            return None;
        }
        let found = t.find(*addr);
        if found.is_some() {
            *last = now;
        } else {
            shard.remove(&k);
        }
        found
    }

    /// Ends `client`'s binding on `t`'s port (its endpoint failed).
    pub fn forget(&self, t: &Target, client: IpAddr) {
        if t.affinity.is_some() {
            let k = (t.affinity_key, client);
            self.shard(&k).lock().remove(&k);
        }
    }

    pub fn put(&self, t: &Target, client: IpAddr, index: usize, now: Instant) {
        if t.affinity.is_none() {
            return;
        }
        let k = (t.affinity_key, client);
        self.shard(&k)
            .lock()
            .insert(k, (t.endpoint_addr(index), now));
    }

    /// Drops bindings idle longer than `max_idle` (the longest timeout in use); returns how
    /// many are left.
    pub fn sweep(&self, now: Instant, max_idle: Duration) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let mut s = s.lock();
                s.retain(|_, (_, last)| now.saturating_duration_since(*last) <= max_idle);
                s.len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::table::Mode;
    use crate::snapshot::{EndpointView, PluginRefs, Protocol, ServiceType};

    fn ep(last: u8, node: &str, ready: bool) -> EndpointView {
        EndpointView {
            id: last as u32,
            addr: IpAddr::from([127, 0, 0, last]),
            port: 9376,
            ready,
            serving: true,
            terminating: !ready,
            node: Some(node.into()),
            zone: None,
            hostname: None,
            pod: None,
        }
    }

    fn view(eps: Vec<EndpointView>, local: bool) -> Arc<ServiceView> {
        Arc::new(ServiceView {
            namespace: "d".into(),
            name: "web".into(),
            type_: ServiceType::LoadBalancer,
            headless: false,
            cluster_ips: vec![],
            external_ips: vec![],
            load_balancer_ips: vec![],
            external_name: None,
            affinity_timeout_seconds: Some(10),
            external_traffic_local: local,
            internal_traffic_local: false,
            load_balancer_source_ranges: vec!["10.0.0.0/8".parse().unwrap()],
            uid: String::new(),
            annotations: Default::default(),
            plugins: PluginRefs::default(),
            ports: vec![PortView {
                name: "http".into(),
                port: 80,
                protocol: Protocol::Tcp,
                node_port: Some(30080),
                app_protocol: None,
                target_port: "9376".into(),
                endpoints: eps,
            }],
            hosts: Vec::new(),
            resource_version: "1".into(),
            tls: Vec::new(),
        })
    }

    fn target(v: Arc<ServiceView>, frontend: Frontend) -> Target {
        let route = Route {
            service: "d/web".into(),
            port_index: 0,
            frontend,
            mode: Mode::Tcp,
            tls: false,
        };
        Target::new(route, v, "me", PortMetrics::detached())
    }

    #[test]
    fn local_policy_limits_external_frontends_to_this_node() {
        let v = view(
            vec![
                ep(11, "me", true),
                ep(12, "other", true),
                ep(13, "me", true),
            ],
            true,
        );
        let lb = target(v.clone(), Frontend::LoadBalancer);
        assert!(lb.node_local);
        assert_eq!(lb.port().endpoints.len(), 2);
        let picks: Vec<SocketAddr> = (0..4)
            .map(|_| lb.endpoint_addr(lb.round_robin(&[]).unwrap()))
            .collect();
        assert!(
            picks
                .iter()
                .all(|a| a.ip() != IpAddr::from([127, 0, 0, 12]))
        );
        let cluster = target(v, Frontend::ClusterIP);
        assert!(!cluster.node_local);
        assert_eq!(cluster.usable.len(), 3);
        // No local endpoint: nothing to pick (kube-proxy drops such traffic).
        let none = target(view(vec![ep(12, "other", true)], true), Frontend::NodePort);
        assert_eq!(none.round_robin(&[]), None);
    }

    #[test]
    fn round_robin_skips_tried_and_unready() {
        let t = target(
            view(
                vec![ep(11, "me", true), ep(12, "me", false), ep(13, "me", true)],
                false,
            ),
            Frontend::ClusterIP,
        );
        let seen: std::collections::BTreeSet<usize> =
            (0..6).map(|_| t.round_robin(&[]).unwrap()).collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [0, 2]);
        assert_eq!(t.round_robin(&[0]), Some(2));
        assert_eq!(t.round_robin(&[0, 2]), None);
        assert_eq!(
            t.find("127.0.0.12:9376".parse().unwrap()),
            None,
            "not ready"
        );
        assert_eq!(t.find("127.0.0.13:9376".parse().unwrap()), Some(2));
    }

    #[test]
    fn source_ranges_apply_to_load_balancer_frontends_only() {
        let v = view(vec![ep(11, "me", true)], false);
        let lb = target(v.clone(), Frontend::LoadBalancer);
        assert!(lb.admits("10.1.2.3".parse().unwrap()));
        assert!(lb.admits("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!lb.admits("127.0.0.1".parse().unwrap()));
        assert!(target(v, Frontend::NodePort).admits("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn affinity_sticks_until_timeout_or_endpoint_goes() {
        let a = Affinity::default();
        let t = target(
            view(vec![ep(11, "me", true), ep(12, "me", true)], false),
            Frontend::ClusterIP,
        );
        let client: IpAddr = "127.1.1.1".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(a.get(&t, client, t0), None);
        a.put(&t, client, 1, t0);
        assert_eq!(a.get(&t, client, t0 + Duration::from_secs(9)), Some(1));
        // Refreshed at 9 s, so still bound at 18 s; gone 11 s after the last use.
        assert_eq!(a.get(&t, client, t0 + Duration::from_secs(18)), Some(1));
        assert_eq!(a.get(&t, client, t0 + Duration::from_secs(30)), None);
        // The endpoint leaving ends the binding.
        a.put(&t, client, 1, t0);
        let gone = target(view(vec![ep(11, "me", true)], false), Frontend::ClusterIP);
        assert_eq!(a.get(&gone, client, t0), None);
        assert_eq!(a.sweep(t0, Duration::from_secs(10)), 0);
        a.put(&t, client, 0, t0);
        assert_eq!(
            a.sweep(t0 + Duration::from_secs(5), Duration::from_secs(10)),
            1
        );
        assert_eq!(
            a.sweep(t0 + Duration::from_secs(11), Duration::from_secs(10)),
            0
        );
    }
}
