//! Follows Services, EndpointSlices and `kubernetes.io/tls` Secrets through `kube` (kube-runtime watchers) — from the
//! embedded API or a real cluster, one code path — and publishes a new [`Snapshot`] through
//! `arc-swap` after each burst of changes, rebuilding only the Services that changed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};

use crate::controller::endpoints::SERVICE_NAME_LABEL;
use crate::metrics::Metrics;
use crate::snapshot::{ServiceKey, ServiceView, Snapshot, TlsPair, key};

enum Change {
    Service(Box<Event<Service>>),
    Slice(Box<Event<EndpointSlice>>),
    Secret(Box<Event<Secret>>),
}

#[derive(Default)]
struct World {
    services: HashMap<ServiceKey, Service>,
    slices: HashMap<ServiceKey, HashMap<String, EndpointSlice>>,
    /// Which Service each slice belongs to, to move or drop it on change.
    slice_owner: HashMap<(String, String), ServiceKey>,
    relist_services: Option<HashMap<ServiceKey, Service>>,
    relist_slices: Option<Vec<EndpointSlice>>,
    /// `kubernetes.io/tls` Secrets by `namespace/name`.
    secrets: HashMap<String, Arc<TlsPair>>,
    relist_secrets: Option<HashMap<String, Arc<TlsPair>>>,
    services_synced: bool,
    slices_synced: bool,
    secrets_synced: bool,
    dirty: HashSet<ServiceKey>,
    all_dirty: bool,
}

fn slice_service(s: &EndpointSlice) -> Option<ServiceKey> {
    let svc = s.labels().get(SERVICE_NAME_LABEL)?;
    Some(key(&s.namespace().unwrap_or_default(), svc))
}

impl World {
    fn put_slice(&mut self, s: EndpointSlice) {
        let id = (s.namespace().unwrap_or_default(), s.name_any());
        self.drop_slice(&id);
        if let Some(k) = slice_service(&s) {
            self.dirty.insert(k.clone());
            self.slice_owner.insert(id.clone(), k.clone());
            self.slices.entry(k).or_default().insert(id.1, s);
        }
    }

    fn drop_slice(&mut self, id: &(String, String)) {
        if let Some(k) = self.slice_owner.remove(id) {
            if let Some(m) = self.slices.get_mut(&k) {
                m.remove(&id.1);
                if m.is_empty() {
                    self.slices.remove(&k);
                }
            }
            self.dirty.insert(k);
        }
    }

    fn apply(&mut self, c: Change) {
        match c {
            Change::Service(e) => self.apply_service(*e),
            Change::Slice(e) => self.apply_slice(*e),
            Change::Secret(e) => self.apply_secret(*e),
        }
    }

    fn apply_secret(&mut self, e: Event<Secret>) {
        let pair = |s: &Secret| {
            let id = format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any());
            let data = s.data.as_ref();
            let get = |k: &str| data.and_then(|d| d.get(k)).map(|b| b.0.clone());
            let pair = match (get("tls.crt"), get("tls.key")) {
                (Some(cert_pem), Some(key_pem)) => Some(Arc::new(TlsPair {
                    secret: id.clone(),
                    cert_pem,
                    key_pem,
                })),
                _ => None,
            };
            (id, pair)
        };
        match e {
            Event::Init => self.relist_secrets = Some(HashMap::new()),
            Event::InitApply(s) => {
                if let (id, Some(p)) = pair(&s) {
                    self.relist_secrets.get_or_insert_default().insert(id, p);
                }
            }
            Event::InitDone => {
                self.secrets = self.relist_secrets.take().unwrap_or_default();
                self.secrets_synced = true;
                self.all_dirty = true;
            }
            Event::Apply(s) => {
                let (id, p) = pair(&s);
                match p {
                    Some(p) => self.secrets.insert(id.clone(), p),
                    None => self.secrets.remove(&id),
                };
                self.secret_changed(&id);
            }
            Event::Delete(s) => {
                let (id, _) = pair(&s);
                self.secrets.remove(&id);
                self.secret_changed(&id);
            }
        }
    }

    /// Marks the Services that name Secret `id` (`namespace/name`) for a rebuild.
    fn secret_changed(&mut self, id: &str) {
        let Some((ns, name)) = id.split_once('/') else {
            return;
        };
        for (k, svc) in &self.services {
            let names = svc
                .annotations()
                .get("switchyard.io/tls-secret")
                .map(String::as_str)
                .unwrap_or("");
            if svc.namespace().as_deref() == Some(ns) && names.split(',').any(|n| n.trim() == name)
            {
                self.dirty.insert(k.clone());
            }
        }
    }

    fn apply_service(&mut self, e: Event<Service>) {
        match e {
            Event::InitApply(s) => {
                let k = key(&s.namespace().unwrap_or_default(), &s.name_any());
                self.relist_services.get_or_insert_default().insert(k, s);
            }
            Event::Apply(s) => {
                let k = key(&s.namespace().unwrap_or_default(), &s.name_any());
                self.dirty.insert(k.clone());
                self.services.insert(k, s);
            }
            Event::Delete(s) => {
                let k = key(&s.namespace().unwrap_or_default(), &s.name_any());
                self.services.remove(&k);
                self.dirty.insert(k);
            }
            Event::Init => self.relist_services = Some(HashMap::new()),
            Event::InitDone => {
                self.services = self.relist_services.take().unwrap_or_default();
                self.services_synced = true;
                self.all_dirty = true;
            }
        }
    }

    fn apply_slice(&mut self, e: Event<EndpointSlice>) {
        match e {
            Event::Init => self.relist_slices = Some(Vec::new()),
            Event::InitApply(s) => self.relist_slices.get_or_insert_default().push(s),
            Event::InitDone => {
                self.slices.clear();
                self.slice_owner.clear();
                for s in self.relist_slices.take().unwrap_or_default() {
                    self.put_slice(s);
                }
                self.slices_synced = true;
                self.all_dirty = true;
            }
            Event::Apply(s) => self.put_slice(s),
            Event::Delete(s) => self.drop_slice(&(s.namespace().unwrap_or_default(), s.name_any())),
        }
    }

    fn view(&self, k: &ServiceKey) -> Option<Arc<ServiceView>> {
        let svc = self.services.get(k)?;
        let slices: Vec<&EndpointSlice> = self
            .slices
            .get(k)
            .map(|m| m.values().collect())
            .unwrap_or_default();
        let mut view = ServiceView::build(svc, &slices);
        view.tls = view
            .tls_secret_names()
            .filter_map(|n| {
                self.secrets
                    .get(&format!("{}/{n}", view.namespace))
                    .cloned()
            })
            .collect();
        Some(Arc::new(view))
    }

    /// The next snapshot: the previous one with the dirty Services rebuilt.
    fn next(&mut self, prev: &Snapshot) -> Snapshot {
        let next = if self.all_dirty {
            let mut fresh = Snapshot::default();
            fresh.generation = prev.generation;
            fresh.with_changes(self.services.keys().map(|k| (k.clone(), self.view(k))))
        } else {
            prev.with_changes(self.dirty.iter().map(|k| (k.clone(), self.view(k))))
        };
        self.dirty.clear();
        self.all_dirty = false;
        next
    }
}

/// Watches until the process ends; `ready` turns true once both watches have listed once.
pub async fn run(
    client: Client,
    snapshot: Arc<ArcSwap<Snapshot>>,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    published: tokio::sync::watch::Sender<u64>,
) {
    let cfg = watcher::Config::default();
    let services = watcher::watcher(Api::<Service>::all(client.clone()), cfg.clone())
        .map(|r| r.map(|e| Change::Service(Box::new(e))));
    let slices = watcher::watcher(Api::<EndpointSlice>::all(client.clone()), cfg.clone())
        .map(|r| r.map(|e| Change::Slice(Box::new(e))));
    // Only TLS Secrets, for `switchyard.io/tls-secret` (a real cluster's role must allow
    // list/watch on secrets).
    let secrets = watcher::watcher(
        Api::<Secret>::all(client),
        cfg.fields("type=kubernetes.io/tls"),
    )
    .map(|r| r.map(|e| Change::Secret(Box::new(e))));
    let mut changes =
        futures::stream::select(futures::stream::select(services, slices), secrets).boxed();
    let mut world = World::default();
    let mut last_error: Option<Instant> = None;
    while let Some(first) = changes.next().await {
        let mut batch = vec![first];
        // Take everything already waiting, so a burst becomes one snapshot.
        while let Some(Some(more)) = changes.next().now_or_never() {
            batch.push(more);
            if batch.len() >= 10_000 {
                break;
            }
        }
        for item in batch {
            match item {
                Ok(c) => world.apply(c),
                Err(e) => {
                    // kube-runtime retries by itself; say so at most once a second.
                    if last_error.is_none_or(|t| t.elapsed().as_secs() >= 1) {
                        tracing::warn!(error = %e, "watch error; retrying");
                        last_error = Some(Instant::now());
                    }
                }
            }
        }
        if !(world.services_synced && world.slices_synced && world.secrets_synced)
            || (world.dirty.is_empty() && !world.all_dirty)
        {
            continue;
        }
        let started = Instant::now();
        let next = world.next(&snapshot.load());
        metrics.snapshot_services.set(next.len() as i64);
        metrics.snapshot_endpoints.set(
            next.services()
                .flat_map(|s| &s.ports)
                .map(|p| p.endpoints.len() as i64)
                .sum(),
        );
        let generation = next.generation;
        snapshot.store(Arc::new(next));
        published.send_replace(generation);
        metrics.snapshot_publishes.inc();
        metrics
            .snapshot_build_seconds
            .observe(started.elapsed().as_secs_f64());
        if !ready.swap(true, Ordering::SeqCst) {
            tracing::info!("watchers synced; snapshot published");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns"}, "spec": {"clusterIP": "127.96.0.5", "ports": [{"port": 80}]}})).unwrap()
    }

    fn slice(name: &str, svc: &str, ip: &str) -> EndpointSlice {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns", "labels": {SERVICE_NAME_LABEL: svc}},
            "addressType": "IPv4", "ports": [{"name": "", "port": 8080, "protocol": "TCP"}], "endpoints": [{"addresses": [ip]}]})).unwrap()
    }

    #[test]
    fn snapshots_follow_changes_incrementally() {
        let mut w = World::default();
        for c in [
            Change::Service(Box::new(Event::Init)),
            Change::Service(Box::new(Event::InitApply(svc("a")))),
            Change::Service(Box::new(Event::InitApply(svc("c")))),
            Change::Service(Box::new(Event::InitDone)),
            Change::Slice(Box::new(Event::Init)),
            Change::Slice(Box::new(Event::InitApply(slice("a", "a", "127.0.0.11")))),
            Change::Slice(Box::new(Event::InitDone)),
        ] {
            w.apply(c);
        }
        let s1 = w.next(&Snapshot::default());
        assert_eq!(s1.get("ns", "a").unwrap().ports[0].endpoints.len(), 1);
        w.apply(Change::Service(Box::new(Event::Apply(svc("b")))));
        w.apply(Change::Slice(Box::new(Event::Apply(slice(
            "a-x",
            "a",
            "127.0.0.12",
        )))));
        let s2 = w.next(&s1);
        assert_eq!(s2.generation, 2);
        assert_eq!(s2.get("ns", "a").unwrap().ports[0].endpoints.len(), 2);
        assert!(s2.get("ns", "b").unwrap().ports[0].endpoints.is_empty());
        w.apply(Change::Slice(Box::new(Event::Delete(slice(
            "a",
            "a",
            "127.0.0.11",
        )))));
        w.apply(Change::Service(Box::new(Event::Delete(svc("b")))));
        let s3 = w.next(&s2);
        assert_eq!(
            s3.get("ns", "a").unwrap().ports[0].endpoints[0]
                .addr
                .to_string(),
            "127.0.0.12"
        );
        assert!(s3.get("ns", "b").is_none());
        assert!(
            Arc::ptr_eq(s1.get("ns", "c").unwrap(), s3.get("ns", "c").unwrap()),
            "an untouched Service's view is shared between snapshots, not rebuilt"
        );
    }
}
