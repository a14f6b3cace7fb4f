//! Where a policy's reroute (`namespace/name:port`) lands: the cluster-IP listener's target,
//! kept in shards so that a listener coming or going copies one shard, not the table (10,000
//! Services made rebuilding it the bulk of a reconcile). Targets update in place through
//! their `ArcSwap`, so only new or closed listeners touch this. One Service port may have
//! several cluster-IP listeners (both address families, TCP and UDP on one port number):
//! the entry lives while any of them does. Sans-IO.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustc_hash::{FxBuildHasher, FxHashMap};

use super::select::Target;
use super::table::ListenKey;

const SHARDS: usize = 64;

type Shard = FxHashMap<String, Vec<(ListenKey, Arc<ArcSwap<Target>>)>>;

/// `namespace/name:port` → the target of that Service port's cluster-IP listener.
#[derive(Clone)]
pub struct Reroutes {
    shards: Vec<Arc<Shard>>,
}

impl Default for Reroutes {
    fn default() -> Self {
        Reroutes {
            shards: (0..SHARDS).map(|_| Arc::new(Shard::default())).collect(),
        }
    }
}

fn shard_of(key: &str) -> usize {
    let mut h = FxBuildHasher.build_hasher();
    key.hash(&mut h);
    (std::hash::Hasher::finish(&h) >> 32) as usize % SHARDS
}

/// The key of `service` (`namespace/name`) port `port`.
pub fn key(service: &str, port: u16) -> String {
    format!("{service}:{port}")
}

impl Reroutes {
    /// The target of the first listener still open for `key`.
    pub fn get(&self, key: &str) -> Option<&Arc<ArcSwap<Target>>> {
        self.shards[shard_of(key)].get(key)?.first().map(|(_, t)| t)
    }

    /// `listener` serves `key` with `target`.
    pub fn insert(&mut self, key: String, listener: ListenKey, target: Arc<ArcSwap<Target>>) {
        let shard = Arc::make_mut(&mut self.shards[shard_of(&key)]);
        let entry = shard.entry(key).or_default();
        entry.retain(|(l, _)| *l != listener);
        entry.push((listener, target));
    }

    /// `listener` closed; `key` goes with its last listener.
    pub fn remove(&mut self, key: &str, listener: &ListenKey) {
        let shard = &mut self.shards[shard_of(key)];
        if !shard
            .get(key)
            .is_some_and(|v| v.iter().any(|(l, _)| l == listener))
        {
            return;
        }
        let shard = Arc::make_mut(shard);
        if let Some(v) = shard.get_mut(key) {
            v.retain(|(l, _)| l != listener);
            if v.is_empty() {
                shard.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::metrics::PortMetrics;
    use crate::proxy::table::{Frontend, Mode, Route};
    use crate::snapshot::{Protocol, ServiceView};

    fn listener(family: u8, port: u16, protocol: Protocol) -> ListenKey {
        let ip: std::net::IpAddr = if family == 4 {
            [10, 96, 0, 1].into()
        } else {
            "fd00::1".parse().unwrap()
        };
        ListenKey {
            addr: std::net::SocketAddr::new(ip, port),
            protocol,
        }
    }

    fn target() -> Target {
        let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "d"},
            "spec": {"ports": [{"port": 80}]}}))
        .unwrap();
        let route = Route {
            service: "d/web".into(),
            port_index: 0,
            frontend: Frontend::ClusterIP,
            mode: Mode::Tcp,
            tls: false,
        };
        let view = Arc::new(ServiceView::build(&svc, &[]));
        Target::new(route, view, "me", PortMetrics::detached())
    }

    #[test]
    fn a_change_copies_one_shard_and_leaves_the_published_table_alone() {
        let mut r = Reroutes::default();
        let published = r.clone();
        for i in 0..200 {
            let t: Arc<ArcSwap<Target>> = Arc::new(ArcSwap::from_pointee(target()));
            r.insert(key("d/web", i), listener(4, i, Protocol::Tcp), t);
        }
        assert!(r.get("d/web:7").is_some());
        assert!(published.get("d/web:7").is_none(), "a clone is a snapshot");
        let before = r.clone();
        r.remove("d/web:7", &listener(4, 7, Protocol::Tcp));
        assert!(r.get("d/web:7").is_none());
        assert!(before.get("d/web:7").is_some());
        let shared = (0..SHARDS)
            .filter(|i| Arc::ptr_eq(&r.shards[*i], &before.shards[*i]))
            .count();
        assert_eq!(shared, SHARDS - 1, "only the touched shard was copied");
    }

    #[test]
    fn a_port_keeps_its_entry_while_any_of_its_listeners_is_open() {
        let mut r = Reroutes::default();
        let t = || Arc::new(ArcSwap::from_pointee(target()));
        let (v4, v6, udp) = (
            listener(4, 53, Protocol::Tcp),
            listener(6, 53, Protocol::Tcp),
            listener(4, 53, Protocol::Udp),
        );
        for l in [v4, v6, udp] {
            r.insert(key("d/dns", 53), l, t());
        }
        r.remove("d/dns:53", &v6);
        r.remove("d/dns:53", &udp);
        assert!(
            r.get("d/dns:53").is_some(),
            "the IPv4 TCP listener is still open"
        );
        r.remove("d/dns:53", &listener(4, 54, Protocol::Tcp));
        assert!(
            r.get("d/dns:53").is_some(),
            "another listener's close changes nothing"
        );
        r.remove("d/dns:53", &v4);
        assert!(r.get("d/dns:53").is_none());
    }
}
