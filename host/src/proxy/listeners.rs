//! The listener reconciler: after every snapshot it takes the Services that changed (shards
//! the snapshot shares with the last one are skipped), compares the listeners each asks for
//! ([`table::routes_of`]) with the ones it holds, closes what is gone, binds what is new (one
//! `SO_REUSEPORT` socket per worker) and swaps in new targets where a Service changed, so the
//! cost follows the change, not the number of Services.
//! A listener that cannot bind is logged, counted and retried with backoff; the rest keep
//! serving. Runs on the main runtime; touches sockets only to bind them.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;
use socket2::{Domain, Socket, Type};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::metrics::StateLabels;
use super::reroutes::{self, Reroutes};
use super::select::Target;
use super::table::{self, ListenKey, Mode, Route};
use super::{DataPlane, http, tcp, udp, vips};
use crate::events::ServiceEvent;
use crate::snapshot::{Protocol, ServiceKey, Snapshot};
use rustc_hash::FxHashMap;

struct Active {
    route: Route,
    target: Arc<ArcSwap<Target>>,
    tasks: Vec<AbortHandle>,
    failure: Option<Failure>,
}

struct Failure {
    error: String,
    attempts: u32,
    /// When to bind again; `None`: refused for the socket budget, not by the kernel, so
    /// bound again as soon as a closing listener frees sockets (see `reconcile`).
    retry_at: Option<Instant>,
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

/// Binds one socket per worker for `key`; `freebind`: before the address is on the host.
fn bind(key: &ListenKey, workers: usize, freebind: bool) -> std::io::Result<Vec<Socket>> {
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
                s.set_freebind_v6(freebind)?;
            } else {
                s.set_freebind_v4(freebind)?;
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
    /// Binds `key` for `a`; `held`: the listener sockets open (kept within the budget).
    /// Returns whether it was refused for the budget (logged once per pass by the caller).
    fn open(&self, dp: &Arc<DataPlane>, key: &ListenKey, a: &mut Active, held: &mut usize) -> bool {
        // A managed Service address may reach the host just after its listener is bound.
        let freebind = self.vips.is_some() && !key.addr.ip().is_loopback();
        let workers = self.workers.count();
        let others = *held - a.tasks.len();
        let budget = self.socket_budget();
        let over_budget = others + workers > budget;
        let bound = if over_budget {
            Err(std::io::Error::other(format!(
                "no descriptor left for it: {others} listener sockets are open of the {} the \
                 open-file limit of {} allows (the rest is kept for connections and the API); \
                 raise `ulimit -n`",
                budget, self.open_files
            )))
        } else {
            bind(key, workers, freebind)
        };
        match bound {
            Ok(sockets) => {
                for t in a.tasks.drain(..) {
                    t.abort();
                }
                *held = others + sockets.len();
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
                    self.events.report(ServiceEvent::about(
                        &a.target.load().view,
                        false,
                        "ListenerBound",
                        format!(
                            "listening on {:?} {} after retrying",
                            key.protocol, key.addr
                        ),
                    ));
                } else {
                    tracing::debug!(listener = %key.addr, service = %a.route.service, mode = ?a.route.mode, "listener open");
                }
            }
            Err(e) => {
                self.metrics.bind_errors.inc();
                let attempts = a.failure.as_ref().map_or(0, |f| f.attempts + 1);
                let error = format!("binding {:?} {}: {e}", key.protocol, key.addr);
                // Over the budget, only a closing listener can make room: it is retried
                // then (see `reconcile`), not on a timer.
                let (retry, retry_at) = if over_budget {
                    tracing::debug!(service = %a.route.service, "{error}");
                    ("bound once another listener closes", None)
                } else {
                    if attempts.is_multiple_of(10) {
                        tracing::warn!(service = %a.route.service, attempts, "{error}; retrying");
                    }
                    (
                        "retrying with backoff",
                        Some(Instant::now() + backoff(attempts)),
                    )
                };
                if attempts == 0 {
                    self.events.report(ServiceEvent::about(
                        &a.target.load().view,
                        true,
                        "ListenerBindFailed",
                        format!("{error}; {retry}"),
                    ));
                }
                a.failure = Some(Failure {
                    error,
                    attempts,
                    retry_at,
                });
            }
        }
        over_budget
    }

    /// Closes, on every worker, the connections to `gone` endpoints still open after the
    /// drain timeout (unless they came back).
    fn drain(&self, target: &Arc<ArcSwap<Target>>, gone: Vec<SocketAddr>) {
        let timeout = self.settings.drain_timeout;
        if timeout.is_zero() {
            return;
        }
        for i in 0..self.workers.count() {
            let (target, gone) = (target.clone(), gone.clone());
            self.workers.spawn(i, async move {
                let service = target.load().route.service.clone();
                let n = super::drain::cut_after(timeout, target, gone).await;
                if n > 0 {
                    tracing::info!(%service, connections = n, "closed connections to endpoints that left, after the drain timeout");
                }
            });
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
        let mut t = t.with_metrics(metrics);
        if t.route.tls {
            let cfg = super::tls::server_config(&svc.tls, t.route.mode == Mode::Http);
            if let Err(e) = &cfg {
                tracing::warn!(service = %t.route.service, error = %e, "TLS listener refuses connections until its Secret is usable");
            }
            t = t.with_tls(cfg);
        }
        Some(t)
    }
}

/// The reroute key of a cluster-IP listener (`namespace/name:port`); other frontends have none.
fn reroute_key(a: &Active) -> Option<String> {
    (a.route.frontend == table::Frontend::ClusterIP)
        .then(|| reroutes::key(&a.route.service, a.target.load().port().port))
}

/// The reconciler's state: the open listeners and which Service holds each.
#[derive(Default)]
pub(super) struct Listeners {
    active: BTreeMap<ListenKey, Active>,
    /// The listen keys each Service holds.
    owners: FxHashMap<ServiceKey, Vec<ListenKey>>,
    /// Listen keys a Service wanted while another held them: retried when freed.
    refused: FxHashMap<ListenKey, ServiceKey>,
    /// The snapshot reconciled last.
    seen: Arc<Snapshot>,
    /// Policy reroutes: the cluster-IP listeners' targets by `namespace/name:port`.
    reroutes: Reroutes,
    /// A cluster-IP listener came or went since the reroute table was published.
    reroutes_changed: bool,
    /// Listeners per address that must be on the host (see [`vips::wanted`]).
    vip_refs: FxHashMap<IpAddr, u32>,
    /// An address came or went from `vip_refs` since the wanted set was sent.
    vips_stale: bool,
    /// Listener sockets open (one per worker per bound listener).
    sockets: usize,
}

impl Listeners {
    /// Brings the listeners in line with `snap`, touching only Services changed since the
    /// last call; then retries failed binds that are due.
    fn reconcile(&mut self, dp: &Arc<DataPlane>, snap: &Arc<Snapshot>) {
        let mut work = snap.changed_since(&self.seen);
        // A listener closed this pass: ones refused for the socket budget may fit now.
        let mut freed = false;
        let mut refused = 0;
        while let Some(service) = work.pop() {
            let wanted = snap
                .get_key(&service)
                .map(|s| table::routes_of(s, dp.settings.node_ip))
                .unwrap_or_default();
            for k in self.owners.remove(&service).unwrap_or_default() {
                let keep = wanted.iter().any(|(w, r)| {
                    *w == k && self.active.get(&k).is_some_and(|a| a.route.mode == r.mode)
                });
                if !keep && let Some(a) = self.active.remove(&k) {
                    self.sockets -= a.tasks.len();
                    freed |= !a.tasks.is_empty();
                    tracing::debug!(listener = %k.addr, service = %a.route.service, "listener closed");
                    self.forget(&k, &a, dp.settings.node_ip);
                    if let Some(waiting) = self.refused.remove(&k) {
                        work.push(waiting);
                    }
                }
            }
            let mut mine = Vec::with_capacity(wanted.len());
            for (k, route) in wanted {
                match self.active.get_mut(&k) {
                    Some(a) if a.route.service != service => {
                        if self.refused.insert(k, service.clone()).is_none() {
                            tracing::warn!(
                                listener = %k.addr,
                                kept = %a.route.service,
                                refused = %service,
                                "two Services ask for the same listener; the one holding it keeps it"
                            );
                        }
                        continue;
                    }
                    Some(a) => {
                        if let Some(t) = dp.target(route.clone(), snap) {
                            let gone = super::drain::gone(&a.target.load(), &t);
                            a.target.store(Arc::new(t));
                            a.route = route;
                            if !gone.is_empty() && a.route.mode != Mode::Udp {
                                dp.drain(&a.target, gone);
                            }
                        }
                    }
                    None => {
                        let Some(t) = dp.target(route.clone(), snap) else {
                            continue;
                        };
                        let mut a = Active {
                            route,
                            target: Arc::new(ArcSwap::from_pointee(t)),
                            tasks: Vec::new(),
                            failure: None,
                        };
                        refused += usize::from(dp.open(dp, &k, &mut a, &mut self.sockets));
                        self.remember(&k, &a, dp.settings.node_ip);
                        self.active.insert(k, a);
                    }
                }
                mine.push(k);
            }
            if !mine.is_empty() {
                self.owners.insert(service, mine);
            }
        }
        let now = Instant::now();
        for (k, a) in self.active.iter_mut() {
            if a.failure
                .as_ref()
                .is_some_and(|f| f.retry_at.map_or(freed, |at| at <= now))
            {
                refused += usize::from(dp.open(dp, k, a, &mut self.sockets));
            }
        }
        if refused > 0 {
            tracing::warn!(
                refused,
                open = self.sockets,
                budget = dp.socket_budget(),
                open_files = dp.open_files,
                "listeners refused: the open-file limit leaves no descriptor for them (one per \
                 worker each); raise `ulimit -n` (each is listed in /debug/listeners)"
            );
        }
        self.seen = snap.clone();
    }

    /// A listener opened: its reroute entry and host address.
    fn remember(&mut self, k: &ListenKey, a: &Active, node_ip: IpAddr) {
        if let Some(key) = reroute_key(a) {
            self.reroutes.insert(key, *k, a.target.clone());
            self.reroutes_changed = true;
        }
        if vips::needs_host(k.addr.ip(), node_ip) {
            let n = self.vip_refs.entry(k.addr.ip()).or_default();
            *n += 1;
            self.vips_stale |= *n == 1;
        }
    }

    /// A listener closed: the reverse of [`Self::remember`].
    fn forget(&mut self, k: &ListenKey, a: &Active, node_ip: IpAddr) {
        if let Some(key) = reroute_key(a) {
            self.reroutes.remove(&key, k);
            self.reroutes_changed = true;
        }
        if vips::needs_host(k.addr.ip(), node_ip)
            && let Some(n) = self.vip_refs.get_mut(&k.addr.ip())
        {
            *n -= 1;
            if *n == 0 {
                self.vip_refs.remove(&k.addr.ip());
                self.vips_stale = true;
            }
        }
    }

    fn next_retry(&self) -> Option<Instant> {
        self.active
            .values()
            .filter_map(|a| a.failure.as_ref()?.retry_at)
            .min()
    }

    fn longest_affinity(&self) -> Duration {
        self.active
            .values()
            .filter_map(|a| a.target.load().affinity)
            .max()
            .unwrap_or_default()
    }

    /// The listeners as `/debug/listeners` shows them.
    pub(super) fn info(&self) -> Vec<ListenerInfo> {
        self.active
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
            .collect()
    }

    fn publish(&mut self, dp: &DataPlane) {
        let failed = self.active.values().filter(|a| a.failure.is_some()).count() as i64;
        let gauge = |state: &str| {
            dp.metrics
                .listeners
                .get_or_create(&StateLabels {
                    state: state.into(),
                })
                .clone()
        };
        gauge("bound").set(self.active.len() as i64 - failed);
        gauge("failed").set(failed);
        if std::mem::take(&mut self.vips_stale)
            && let Some(tx) = &dp.vips
        {
            let wanted: std::collections::BTreeSet<IpAddr> =
                self.vip_refs.keys().copied().collect();
            tx.send_if_modified(|held| {
                let changed = *held != wanted;
                *held = wanted;
                changed
            });
        }
        if std::mem::take(&mut self.reroutes_changed) {
            dp.routes.store(Arc::new(self.reroutes.clone()));
        }
    }
}

/// Reconciles after every published snapshot (and when a failed bind is due a retry).
pub(super) async fn run(
    dp: Arc<DataPlane>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    mut published: watch::Receiver<u64>,
) {
    let mut last_sweep = Instant::now();
    loop {
        let snap = snapshot.load_full();
        let (next_retry, sweep) = {
            let mut l = dp.listeners.lock();
            let started = Instant::now();
            l.reconcile(&dp, &snap);
            l.publish(&dp);
            dp.metrics
                .reconcile_seconds
                .observe(started.elapsed().as_secs_f64());
            // The affinity sweep's horizon: a scan of every listener, so only when due.
            let sweep =
                (last_sweep.elapsed() > Duration::from_secs(10)).then(|| l.longest_affinity());
            (l.next_retry(), sweep)
        };
        if let Some(longest_affinity) = sweep {
            dp.affinity.sweep(Instant::now(), longest_affinity);
            last_sweep = Instant::now();
        }
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
