//! Cluster DNS on `--dns-listen`, UDP and TCP, to the Kubernetes DNS specification.
//!
//! Data flows snapshot → [`zone::Zone`] (rebuilt off the query path after every published
//! snapshot, swapped in with `arc-swap`) → [`answer::answer`] (sans-IO: bytes in, bytes or
//! "forward" out; the Service's `switchyard.io/dns` plugin shapes answers through
//! [`shape`]) → the sockets in [`server`]. Names outside the cluster domain go to
//! [`forward`] or get REFUSED. The query path takes no lock.

pub mod answer;
mod batch;
pub mod fast;
pub mod forward;
pub mod metrics;
pub mod records;
mod server;
pub mod settings;
pub mod shape;
pub mod zone;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::plugin::Plugins;
use crate::snapshot::Snapshot;
use metrics::DnsMetrics;
pub use settings::DnsSettings;
use zone::Zone;

/// The running DNS server.
pub struct Dns {
    pub settings: DnsSettings,
    zone: ArcSwap<Zone>,
    metrics: Arc<DnsMetrics>,
    shaper: shape::PluginShaper,
    runtime: tokio::runtime::Handle,
}

impl Dns {
    /// Binds the sockets, then (in the background) waits for the watcher's first snapshot,
    /// so no name is NXDOMAIN just because the Services were not listed yet (as CoreDNS waits
    /// for its informers), and starts answering; the zone then follows every snapshot.
    pub async fn start(
        settings: DnsSettings,
        snapshot: Arc<ArcSwap<Snapshot>>,
        mut published: watch::Receiver<u64>,
        plugins: Arc<Plugins>,
        metrics: Arc<DnsMetrics>,
    ) -> std::io::Result<Arc<Dns>> {
        let sockets = server::bind(settings.listen, settings.workers).await?;
        let dns = Arc::new(Dns {
            zone: ArcSwap::from_pointee(Zone::build(
                &Snapshot::default(),
                &settings.domain,
                settings.ttl,
                1,
            )),
            shaper: shape::PluginShaper {
                plugins,
                chain: settings.shape.clone(),
            },
            runtime: tokio::runtime::Handle::current(),
            settings,
            metrics,
        });
        let d = dns.clone();
        tokio::spawn(async move {
            let synced = tokio::time::timeout(SYNC_WAIT, async {
                published.wait_for(|g| *g > 0).await.is_ok()
            })
            .await;
            if synced.is_err() {
                tracing::warn!(
                    "no snapshot after {SYNC_WAIT:?}; cluster DNS answers from what it has"
                );
            }
            let first = snapshot.load_full();
            let z = Zone::build(&first, &d.settings.domain, d.settings.ttl, 1);
            d.metrics.zone_names.set(z.len() as i64);
            d.zone.store(Arc::new(z));
            if let Err(e) = server::serve(&d, sockets) {
                tracing::error!(error = %e, "cannot start the cluster DNS workers");
                return;
            }
            tracing::info!(listen = %d.settings.listen, domain = %d.settings.domain, workers = d.settings.workers, upstreams = ?d.settings.upstreams, "cluster DNS serving");
            follow(d, snapshot, published, first).await;
        });
        Ok(dns)
    }
}

/// How long answering waits for the first snapshot.
const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Moves the zone along with every published snapshot: only the names of the Services that
/// changed are rebuilt (on a blocking thread, so a burst of changes never stalls the runtime).
async fn follow(
    dns: Arc<Dns>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    mut published: watch::Receiver<u64>,
    mut prev: Arc<Snapshot>,
) {
    while published.changed().await.is_ok() {
        let generation = *published.borrow_and_update();
        let next = snapshot.load_full();
        let zone = dns.zone.load_full();
        let from = prev.clone();
        let to = next.clone();
        let built = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let serial = u32::try_from(generation % u64::from(u32::MAX))
                .unwrap_or(1)
                .max(1);
            (zone.update(&from, &to, serial), started.elapsed())
        })
        .await;
        let Ok((z, took)) = built else {
            continue;
        };
        prev = next;
        dns.metrics.zone_names.set(z.len() as i64);
        dns.metrics.zone_build_seconds.observe(took.as_secs_f64());
        dns.zone.store(Arc::new(z));
    }
}

#[cfg(test)]
mod shape_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod update_tests;
