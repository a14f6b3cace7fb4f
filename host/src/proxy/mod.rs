//! The data plane: terminates ClusterIP, NodePort, LoadBalancer and external-IP traffic and
//! forwards it to endpoints, calling the plugins on every new connection, flow or request.
//!
//! Data flows snapshot → [`listeners`] (reconciler, main runtime) → per-worker accept loops
//! ([`tcp`], [`udp`], [`http`]) → [`DataPlane::choose`] (affinity, balancer plugin or native
//! round-robin over [`select::Target`]) → backends; a plain TCP connection's bytes are then
//! copied by its worker's [`relay`]. The decisions ([`table`], [`select`]) are sans-IO; this
//! module only wires them to sockets.

mod drain;
mod h1;
mod http;
pub mod listeners;
pub mod metrics;
mod pool;
mod relay;
mod reroutes;
pub mod select;
pub mod table;
mod tcp;
mod tls;
mod udp;
mod upgrade;
pub mod vips;
mod workers;

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::plugin::{Plugins, Request, Verdict};
use crate::snapshot::Snapshot;
use listeners::ListenerInfo;
use metrics::ProxyMetrics;
use select::{Affinity, Target};

/// `--relay-pause-us`'s default.
pub const DEFAULT_RELAY_PAUSE: Duration = relay::DEFAULT_PAUSE;

/// The data plane's settings (from `serve` flags).
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// NodePorts listen here.
    pub node_ip: IpAddr,
    /// This node's name: endpoints with this `nodeName` are node-local.
    pub node_name: String,
    pub workers: usize,
    /// What a worker's relay thread sleeps after each batch of events while many connections
    /// are active (zero: never), so the next batch is bigger.
    pub relay_pause: Duration,
    pub connect_timeout: Duration,
    /// Endpoints tried per connection before giving up.
    pub connect_attempts: usize,
    pub udp_timeout: Duration,
    /// TCP connections to an endpoint that left its Service are closed after this long
    /// (zero: never).
    pub drain_timeout: Duration,
    /// Where non-loopback Service addresses are added ([`vips`]); `None`: nowhere.
    pub vip_interface: Option<String>,
}

pub struct DataPlane {
    pub settings: ProxySettings,
    pub plugins: Arc<Plugins>,
    pub metrics: Arc<ProxyMetrics>,
    /// Service events (a listener that cannot bind, and when it binds again).
    events: crate::events::Events,
    affinity: Affinity,
    workers: workers::Workers,
    listeners: parking_lot::Mutex<listeners::Listeners>,
    /// `namespace/name:port` → the cluster-IP listener's target (policy reroutes).
    routes: ArcSwap<reroutes::Reroutes>,
    /// The non-loopback addresses listened on, for [`vips::run`] (`None`: not managed).
    vips: Option<watch::Sender<std::collections::BTreeSet<IpAddr>>>,
    /// The open-file limit in force (see [`Self::socket_budget`]).
    open_files: u64,
}

thread_local! {
    static PICKS: Cell<u32> = const { Cell::new(0) };
}

impl DataPlane {
    /// Starts the worker threads and the listener reconciler (on the calling runtime).
    pub fn start(
        settings: ProxySettings,
        snapshot: Arc<ArcSwap<Snapshot>>,
        published: watch::Receiver<u64>,
        plugins: Arc<Plugins>,
        metrics: Arc<ProxyMetrics>,
        events: crate::events::Events,
    ) -> std::io::Result<Arc<Self>> {
        let files = workers::raise_fd_limit();
        tracing::debug!(open_files = files, "file descriptor limit");
        let vips = settings.vip_interface.clone().map(|interface| {
            let (tx, rx) = watch::channel(Default::default());
            tokio::spawn(vips::run(interface, rx, metrics.clone()));
            tx
        });
        let dp = Arc::new(DataPlane {
            vips,
            open_files: files,
            workers: workers::Workers::start(settings.workers, settings.relay_pause)?,
            settings,
            plugins,
            metrics,
            events,
            affinity: Affinity::default(),
            listeners: Default::default(),
            routes: ArcSwap::from_pointee(Default::default()),
        });
        tokio::spawn(listeners::run(dp.clone(), snapshot, published));
        Ok(dp)
    }

    /// How many listener sockets may be open under the open-file limit.
    fn socket_budget(&self) -> usize {
        workers::listener_socket_budget(self.open_files)
    }

    /// The open (and failing) listeners, as of the last reconcile.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.listeners.lock().info()
    }

    /// The current target of the Service port a policy rerouted to (`namespace/name:port`).
    fn reroute(&self, to: &str) -> Option<Arc<Target>> {
        self.routes.load().get(to.trim()).map(|t| t.load_full())
    }

    /// The endpoint the native round-robin gives next on the cluster-IP listener of
    /// `service` (`namespace/name`) port `port`: what a connection gets when the balancer
    /// plugin declines or fails. `None`: no such listener, or no usable endpoint.
    pub fn round_robin_of(&self, service: &str, port: u16) -> Option<SocketAddr> {
        let t = self.reroute(&reroutes::key(service, port))?;
        t.round_robin(&[]).map(|i| t.endpoint_addr(i))
    }

    /// The Service's policy plugin admits the connection (no policy: yes).
    fn admit(&self, t: &Target, req: &Request<'_>) -> bool {
        t.view.plugins.policy.is_none()
            || self.plugins.on_connect(&t.view, req, t.port().port) == Verdict::Allow
    }

    /// The endpoint for a new connection, flow or request, skipping `tried` ones: the client's
    /// affinity binding if live, else the balancer plugin's pick if it names a usable
    /// endpoint, else native round-robin. `None`: no usable endpoint is left.
    fn choose(&self, t: &Target, req: &Request<'_>, tried: &[usize]) -> Option<usize> {
        let client = req.client.ip();
        if tried.is_empty()
            && t.affinity.is_some()
            && let Some(i) = self.affinity.get(t, client, Instant::now())
        {
            return Some(i);
        }
        let index = if t.view.plugins.balancer.is_some() && !t.usable.is_empty() {
            // Time one pick in 16: the clock costs as much as a native pick.
            let timed = PICKS.with(|c| {
                c.set(c.get().wrapping_add(1));
                c.get() % 16 == 0
            });
            let started = timed.then(Instant::now);
            let p = self.plugins.pick(&t.view, t.route.port_index, req);
            if let Some(s) = started {
                t.metrics.pick_seconds.observe(s.elapsed().as_secs_f64());
            }
            match p {
                Some(i) if t.is_usable(i) && !tried.contains(&i) => Some(i),
                _ => t.round_robin(tried),
            }
        } else {
            t.round_robin(tried)
        };
        if let Some(i) = index {
            t.metrics.picked(i);
            if t.affinity.is_some() {
                self.affinity.put(t, client, i, Instant::now());
            }
        }
        index
    }
}
