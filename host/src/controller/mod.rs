//! The endpoints controller: follows Services, Pods, Endpoints and EndpointSlices through the
//! store's watch hub, keeps indexes, and writes Endpoints and EndpointSlices through the
//! registry (so every watcher sees them). Decisions come from the sans-IO `endpoints` module;
//! this file is the loop: drain events, plan the dirty Services, write the plans concurrently
//! so the store can group-commit them.

pub mod endpoints;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use crate::api::registry::Registry;
use crate::metrics::Metrics;
use crate::resources::by_plural;
use crate::store::{Event, EventKind};
use endpoints::{LabelIndex, MANAGED_BY_LABEL, PodInfo, SERVICE_NAME_LABEL};

/// Writes in flight at once; the store commits them together.
const CONCURRENCY: usize = 128;

type Key = (String, String);

#[derive(Default)]
struct Namespace {
    pods: HashMap<String, PodInfo>,
    pod_index: LabelIndex,
    services: HashMap<String, Arc<Service>>,
    /// Services indexed by their selector pairs.
    selector_index: LabelIndex,
}

#[derive(Default)]
struct State {
    namespaces: HashMap<String, Namespace>,
    /// Slices we manage, per Service.
    slices: HashMap<Key, BTreeSet<String>>,
    dirty: HashSet<Key>,
}

/// What to write for one Service.
struct Plan {
    ns: String,
    upserts: Vec<(&'static str, Value)>,
    deletes: Vec<(&'static str, String)>,
}

fn selector(svc: &Service) -> Option<&std::collections::BTreeMap<String, String>> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

fn managed(labels: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let by = labels.get(MANAGED_BY_LABEL)?;
    (by == endpoints::CONTROLLER_NAME || by == endpoints::MIRROR_NAME)
        .then(|| labels.get(SERVICE_NAME_LABEL).cloned())?
}

impl State {
    fn apply(&mut self, ev: &Event) {
        let key = (ev.namespace.clone(), ev.name.clone());
        match ev.resource {
            "services" => {
                let ns = self.namespaces.entry(ev.namespace.clone()).or_default();
                if let Some(old) = ns.services.remove(&ev.name)
                    && let Some(sel) = selector(&old)
                {
                    ns.selector_index.remove(&ev.name, sel);
                }
                if ev.kind != EventKind::Deleted
                    && let Ok(svc) = serde_json::from_slice::<Service>(&ev.object.raw)
                {
                    if let Some(sel) = selector(&svc) {
                        ns.selector_index.insert(&ev.name, sel);
                    }
                    ns.services.insert(ev.name.clone(), Arc::new(svc));
                }
                self.dirty.insert(key);
            }
            "pods" => {
                let ns = self.namespaces.entry(ev.namespace.clone()).or_default();
                let mut touched = BTreeSet::new();
                if let Some(old) = ns.pods.remove(&ev.name) {
                    ns.pod_index.remove(&ev.name, &old.labels);
                    touched.extend(ns.selector_index.any_of(&old.labels));
                }
                if ev.kind != EventKind::Deleted
                    && let Ok(pod) = serde_json::from_slice::<Pod>(&ev.object.raw)
                {
                    let info = PodInfo::from_pod(&pod);
                    ns.pod_index.insert(&ev.name, &info.labels);
                    touched.extend(ns.selector_index.any_of(&info.labels));
                    ns.pods.insert(ev.name.clone(), info);
                }
                for svc in touched {
                    self.dirty.insert((ev.namespace.clone(), svc));
                }
            }
            "endpoints" => {
                // User-written Endpoints of selector-less Services are mirrored.
                let svc = self
                    .namespaces
                    .get(&ev.namespace)
                    .and_then(|n| n.services.get(&ev.name));
                if svc.is_some_and(|s| selector(s).is_none()) {
                    self.dirty.insert(key);
                }
            }
            "endpointslices" => {
                if let Some(svc) = managed(&ev.object.labels) {
                    let k = (ev.namespace.clone(), svc);
                    if ev.kind == EventKind::Deleted {
                        if let Some(set) = self.slices.get_mut(&k) {
                            set.remove(&ev.name);
                        }
                        // Someone removed a slice we manage: write it again if still wanted.
                        self.dirty.insert(k);
                    } else {
                        self.slices.entry(k).or_default().insert(ev.name.clone());
                    }
                }
            }
            "namespaces" if ev.kind == EventKind::Deleted => {
                self.namespaces.remove(&ev.name);
            }
            _ => {}
        }
    }

    fn plan(&self, reg: &Registry, (ns_name, svc_name): &Key) -> Plan {
        let mut plan = Plan {
            ns: ns_name.clone(),
            upserts: Vec::new(),
            deletes: Vec::new(),
        };
        let existing = self
            .slices
            .get(&(ns_name.clone(), svc_name.clone()))
            .cloned()
            .unwrap_or_default();
        let svc = self
            .namespaces
            .get(ns_name)
            .and_then(|n| n.services.get(svc_name));
        let external = svc.is_some_and(|s| {
            s.spec.as_ref().and_then(|p| p.type_.as_deref()) == Some("ExternalName")
        });
        let mut wanted = Vec::new();
        match svc {
            Some(svc) if !external && selector(svc).is_some() => {
                let ns = &self.namespaces[ns_name];
                let sel = selector(svc).expect("checked");
                let pods: Vec<&PodInfo> = ns
                    .pod_index
                    .candidates(sel)
                    .iter()
                    .filter_map(|n| ns.pods.get(n))
                    .filter(|p| endpoints::selects(sel, &p.labels))
                    .collect();
                let d = endpoints::desired(svc, &pods);
                plan.upserts.push((
                    "endpoints",
                    serde_json::to_value(&d.endpoints).expect("serializes"),
                ));
                wanted = d.slices;
            }
            Some(svc) if !external => {
                if let Some(eps) = reg.store.get("endpoints", ns_name, svc_name)
                    && let Ok(eps) = serde_json::from_slice::<Endpoints>(&eps.raw)
                {
                    wanted = endpoints::mirror(svc, &eps);
                }
            }
            _ => {
                // Gone (or ExternalName): our Endpoints go too; a user's stay.
                if let Some(eps) = reg.store.get("endpoints", ns_name, svc_name)
                    && eps
                        .labels
                        .get(endpoints::SKIP_MIRROR_LABEL)
                        .is_some_and(|v| v == "true")
                {
                    plan.deletes.push(("endpoints", svc_name.clone()));
                }
            }
        }
        let names: BTreeSet<String> = wanted
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        for s in wanted {
            plan.upserts.push((
                "endpointslices",
                serde_json::to_value(&s).expect("serializes"),
            ));
        }
        for stale in existing.difference(&names) {
            plan.deletes.push(("endpointslices", stale.clone()));
        }
        plan
    }
}

async fn execute(reg: &Registry, metrics: &Metrics, plan: Plan) {
    for (res, v) in plan.upserts {
        metrics.controller_writes.inc();
        if let Err(e) = reg.upsert(by_plural(res), &plan.ns, v).await {
            metrics.controller_errors.inc();
            tracing::warn!(namespace = %plan.ns, resource = res, error = %e, "endpoints controller write failed");
        }
    }
    for (res, name) in plan.deletes {
        metrics.controller_writes.inc();
        if let Err(e) = reg.remove(by_plural(res), &plan.ns, &name).await {
            metrics.controller_errors.inc();
            tracing::warn!(namespace = %plan.ns, resource = res, %name, error = %e, "endpoints controller delete failed");
        }
    }
}

/// Runs until the process ends. Relists everything if it ever falls behind the watch history.
pub async fn run(reg: Arc<Registry>, metrics: Arc<Metrics>) {
    loop {
        let from = reg.store.revision();
        let mut state = State::default();
        for res in ["services", "pods", "endpointslices"] {
            for (ns, name, s) in reg.store.list(res, None).0 {
                let resource = by_plural(res).store_key();
                state.apply(&Event {
                    kind: EventKind::Added,
                    resource,
                    namespace: ns,
                    name,
                    object: s,
                    old_labels: None,
                });
            }
        }
        let Ok((backlog, mut rx)) = reg.store.hub().subscribe(from) else {
            continue;
        };
        for ev in backlog {
            state.apply(&ev);
        }
        tracing::debug!(services = state.dirty.len(), "endpoints controller synced");
        loop {
            if state.dirty.is_empty() {
                match rx.recv().await {
                    Ok(ev) => state.apply(&ev),
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                }
            }
            let mut lagged = false;
            loop {
                match rx.try_recv() {
                    Ok(ev) => state.apply(&ev),
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                        lagged = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if lagged {
                tracing::warn!("endpoints controller fell behind the watch history; resyncing");
                break;
            }
            // Plans are made as writes are started, so at most CONCURRENCY exist at once.
            let dirty = std::mem::take(&mut state.dirty);
            let state = &state;
            futures::stream::iter(dirty.iter())
                .for_each_concurrent(CONCURRENCY, |k| {
                    execute(&reg, &metrics, state.plan(&reg, k))
                })
                .await;
        }
    }
}
