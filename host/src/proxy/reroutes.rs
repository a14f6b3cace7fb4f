//! Where a policy's reroute (`namespace/name:port`) lands: the cluster-IP listener's target,
//! kept in shards so that a listener coming or going copies one shard, not the table (10,000
//! Services made rebuilding it the bulk of a reconcile). Targets update in place through
//! their `ArcSwap`, so only new or closed listeners touch this. Sans-IO.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustc_hash::{FxBuildHasher, FxHashMap};

use super::select::Target;

const SHARDS: usize = 64;

type Shard = FxHashMap<String, Arc<ArcSwap<Target>>>;

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
    pub fn get(&self, key: &str) -> Option<&Arc<ArcSwap<Target>>> {
        self.shards[shard_of(key)].get(key)
    }

    pub fn insert(&mut self, key: String, target: Arc<ArcSwap<Target>>) {
        Arc::make_mut(&mut self.shards[shard_of(&key)]).insert(key, target);
    }

    pub fn remove(&mut self, key: &str) {
        let shard = &mut self.shards[shard_of(key)];
        if shard.contains_key(key) {
            Arc::make_mut(shard).remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::metrics::PortMetrics;
    use crate::proxy::table::{Frontend, Mode, Route};
    use crate::snapshot::ServiceView;

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
            r.insert(key("d/web", i), t);
        }
        assert!(r.get("d/web:7").is_some());
        assert!(published.get("d/web:7").is_none(), "a clone is a snapshot");
        let before = r.clone();
        r.remove("d/web:7");
        assert!(r.get("d/web:7").is_none());
        assert!(before.get("d/web:7").is_some());
        let shared = (0..SHARDS)
            .filter(|i| Arc::ptr_eq(&r.shards[*i], &before.shards[*i]))
            .count();
        assert_eq!(shared, SHARDS - 1, "only the touched shard was copied");
    }
}
