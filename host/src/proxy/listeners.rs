//! The listener reconciler: after every snapshot it compares the listeners the snapshot asks
//! for ([`table::desired`]) with the open ones, closes what is gone, binds what is new (one
//! `SO_REUSEPORT` socket per worker) and swaps in new targets where a Service changed.
//! A listener that cannot bind is logged, counted and retried with backoff; the rest keep
//! serving. Runs on the main runtime; touches sockets only to bind them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;
use socket2::{Domain, Socket, Type};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::metrics::StateLabels;
use super::select::Target;
use super::table::{self, Conflict, ListenKey, Mode, Route};
use super::{DataPlane, http, tcp, udp};
use crate::snapshot::{Protocol, Snapshot};

struct Active {
    route: Route,
    target: Arc<ArcSwap<Target>>,
    tasks: Vec<AbortHandle>,
    failure: Option<Failure>,
}

struct Failure {
    error: String,
    attempts: u32,
    retry_at: Instant,
}

impl Drop for Active {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One listener as `/debug/listeners` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ListenerInfo {
    pub address: SocketAddr,
    pub protocol: Protocol,
    pub service: String,
    pub port: String,
    pub frontend: table::Frontend,
    pub mode: Mode,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub workers: usize,
    pub usable_endpoints: usize,
    pub node_local: bool,
}

/// Binds one socket per worker for `key`.
fn bind(key: &ListenKey, workers: usize) -> std::io::Result<Vec<Socket>> {
    (0..workers)
        .map(|_| {
            let ty = match key.protocol {
                Protocol::Udp => Type::DGRAM,
                _ => Type::STREAM,
            };
            let s = Socket::new(Domain::for_address(key.addr), ty, None)?;
            s.set_reuse_port(true)?;
            if ty == Type::STREAM {
                s.set_reuse_address(true)?;
            }
            if key.addr.is_ipv6() {
                s.set_only_v6(true)?;
            }
            s.set_nonblocking(true)?;
            s.bind(&key.addr.into())?;
            if ty == Type::STREAM {
                s.listen(4096)?;
            }
            Ok(s)
        })
        .collect()
}

fn backoff(attempts: u32) -> Duration {
    Duration::from_millis(500 << attempts.min(6)).min(Duration::from_secs(30))
}

impl DataPlane {
    fn open(&self, dp: &Arc<DataPlane>, key: &ListenKey, a: &mut Active) {
        match bind(key, self.workers.count()) {
            Ok(sockets) => {
                for t in a.tasks.drain(..) {
                    t.abort();
                }
                for (i, s) in sockets.into_iter().enumerate() {
                    let target = a.target.clone();
                    let dp = dp.clone();
                    let task = match a.route.mode {
                        Mode::Udp => self.workers.spawn(i, udp::serve(s.into(), target, dp)),
                        Mode::Tcp => self.workers.spawn(i, tcp::serve(s.into(), target, dp)),
                        Mode::Http => self.workers.spawn(i, http::serve(s.into(), target, dp)),
                    };
                    a.tasks.push(task);
                }
                if a.failure.take().is_some() {
                    tracing::info!(listener = %key.addr, service = %a.route.service, "listener bound after retrying");
                } else {
                    tracing::debug!(listener = %key.addr, service = %a.route.service, mode = ?a.route.mode, "listener open");
                }
            }
            Err(e) => {
                self.metrics.bind_errors.inc();
                let attempts = a.failure.as_ref().map_or(0, |f| f.attempts + 1);
                let error = format!("binding {:?} {}: {e}", key.protocol, key.addr);
                if attempts.is_multiple_of(10) {
                    tracing::warn!(service = %a.route.service, attempts, "{error}; retrying");
                }
                a.failure = Some(Failure {
                    error,
                    attempts,
                    retry_at: Instant::now() + backoff(attempts),
                });
            }
        }
    }

    fn target(&self, route: Route, snap: &Snapshot) -> Option<Target> {
        let svc = snap.get_key(&route.service)?.clone();
        let port_index = route.port_index;
        let t = Target::new(
            route,
            svc.clone(),
            &self.settings.node_name,
            super::metrics::PortMetrics::detached(),
        );
        let metrics = self.metrics.port(&svc, port_index, &t.view);
        Some(t.with_metrics(metrics))
    }
}

/// Reconciles after every published snapshot (and when a failed bind is due a retry).
pub(super) async fn run(
    dp: Arc<DataPlane>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    mut published: watch::Receiver<u64>,
) {
    let mut active: BTreeMap<ListenKey, Active> = BTreeMap::new();
    let mut reported: BTreeSet<(ListenKey, String)> = BTreeSet::new();
    let mut last_sweep = Instant::now();
    loop {
        let snap = snapshot.load_full();
        let (desired, conflicts) = table::desired(&snap, dp.settings.node_ip);
        report(&conflicts, &mut reported);
        active.retain(|k, a| {
            let keep = desired.get(k).is_some_and(|r| r.mode == a.route.mode);
            if !keep {
                tracing::debug!(listener = %k.addr, service = %a.route.service, "listener closed");
            }
            keep
        });
        let mut longest_affinity = Duration::ZERO;
        for (k, route) in desired {
            match active.get_mut(&k) {
                Some(a) => {
                    let current = a.target.load();
                    let changed = a.route != route
                        || snap
                            .get_key(&route.service)
                            .is_some_and(|s| !Arc::ptr_eq(s, &current.source));
                    if changed && let Some(t) = dp.target(route.clone(), &snap) {
                        a.target.store(Arc::new(t));
                        a.route = route;
                    }
                    if a.failure
                        .as_ref()
                        .is_some_and(|f| f.retry_at <= Instant::now())
                    {
                        dp.open(&dp, &k, a);
                    }
                }
                None => {
                    let Some(t) = dp.target(route.clone(), &snap) else {
                        continue;
                    };
                    let mut a = Active {
                        route,
                        target: Arc::new(ArcSwap::from_pointee(t)),
                        tasks: Vec::new(),
                        failure: None,
                    };
                    dp.open(&dp, &k, &mut a);
                    active.insert(k, a);
                }
            }
            if let Some(t) = active.get(&k).and_then(|a| a.target.load().affinity) {
                longest_affinity = longest_affinity.max(t);
            }
        }
        publish(&dp, &active);
        if last_sweep.elapsed() > Duration::from_secs(10) {
            dp.affinity.sweep(Instant::now(), longest_affinity);
            last_sweep = Instant::now();
        }
        let next_retry = active
            .values()
            .filter_map(|a| a.failure.as_ref().map(|f| f.retry_at))
            .min();
        let wait = next_retry
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(10));
        tokio::select! {
            r = published.changed() => if r.is_err() {
                tokio::time::sleep(wait).await;
            },
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn report(conflicts: &[Conflict], reported: &mut BTreeSet<(ListenKey, String)>) {
    let now: BTreeSet<(ListenKey, String)> = conflicts
        .iter()
        .map(|c| (c.listen, c.refused.to_string()))
        .collect();
    for c in conflicts {
        if !reported.contains(&(c.listen, c.refused.to_string())) {
            tracing::warn!(
                listener = %c.listen.addr,
                kept = %c.kept,
                refused = %c.refused,
                "two Services ask for the same listener; the first by namespace/name serves it"
            );
        }
    }
    *reported = now;
}

fn publish(dp: &DataPlane, active: &BTreeMap<ListenKey, Active>) {
    let list: Vec<ListenerInfo> = active
        .iter()
        .map(|(k, a)| {
            let t = a.target.load();
            let port = t.port();
            ListenerInfo {
                address: k.addr,
                protocol: k.protocol,
                service: a.route.service.to_string(),
                port: if port.name.is_empty() {
                    port.port.to_string()
                } else {
                    port.name.clone()
                },
                frontend: a.route.frontend,
                mode: a.route.mode,
                state: if a.failure.is_some() {
                    "failed"
                } else {
                    "bound"
                },
                error: a.failure.as_ref().map(|f| f.error.clone()),
                workers: a.tasks.len(),
                usable_endpoints: t.usable.len(),
                node_local: t.node_local,
            }
        })
        .collect();
    let failed = list.iter().filter(|l| l.state == "failed").count() as i64;
    dp.metrics
        .listeners
        .get_or_create(&StateLabels {
            state: "bound".into(),
        })
        .set(list.len() as i64 - failed);
    dp.metrics
        .listeners
        .get_or_create(&StateLabels {
            state: "failed".into(),
        })
        .set(failed);
    dp.listeners.store(Arc::new(list));
    // Where a policy's reroute (`namespace/name:port`) lands: the cluster-IP listener's target.
    let routes = active
        .values()
        .filter(|a| a.route.frontend == table::Frontend::ClusterIP)
        .map(|a| {
            let t = a.target.load();
            (
                format!("{}:{}", a.route.service, t.port().port),
                a.target.clone(),
            )
        })
        .collect();
    dp.routes.store(Arc::new(routes));
}
