//! `switchyard serve`: opens the store, starts the embedded API, the endpoints controller,
//! the watcher and the admin listener, and waits for a signal. The only place that wires
//! modules together.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use crate::api::registry::{Registry, RegistryConfig};
use crate::api::{self, ApiState};
use crate::config::{Settings, Source};
use crate::metrics::Metrics;
use crate::plugin::{self, Limits, Plugins};
use crate::snapshot::Snapshot;
use crate::{admin, controller, proxy, watcher};

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} listener on {addr}"))
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    let ready = Arc::new(AtomicBool::new(false));

    // Also when watching a cluster: the data dir holds stored plugins and the compile cache.
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
    let plugins = Arc::new(
        Plugins::new(
            Some(settings.data_dir.join("plugins")),
            Some(settings.plugin_cache.clone()),
            Limits::new(settings.plugin_timeout, settings.plugin_memory_bytes),
            metrics.plugins.clone(),
        )
        .context("starting the plugin runtime")?,
    );
    let plugins_ready = Arc::new(AtomicBool::new(false));
    let data_plane_cell = Arc::new(std::sync::OnceLock::new());
    let admin_listener = bind(settings.admin_listen, "admin").await?;
    let admin = admin::router(admin::AdminState {
        snapshot: snapshot.clone(),
        ready: ready.clone(),
        metrics: metrics.clone(),
        plugins: plugins.clone(),
        plugins_ready: plugins_ready.clone(),
        data_plane: data_plane_cell.clone(),
    });
    tokio::spawn(async move { axum::serve(admin_listener, admin).await });

    let client = match &settings.source {
        Source::Embedded => {
            let api_ip = if settings.api_listen.ip().is_unspecified() {
                settings.node_ip
            } else {
                settings.api_listen.ip()
            };
            let registry = Arc::new(
                Registry::open(
                    &settings.data_dir.join("store.redb"),
                    RegistryConfig {
                        service_cidr: settings.service_cidr,
                        node_ports: (settings.node_ports.0, settings.node_ports.1),
                        lb_pool: settings.lb_pool,
                        api_endpoint: (api_ip, settings.api_listen.port()),
                    },
                )
                .with_context(|| format!("opening the store in {}", settings.data_dir.display()))?,
            );
            let listener = bind(settings.api_listen, "API").await?;
            let state = ApiState {
                registry: registry.clone(),
                metrics: metrics.clone(),
                server_addr: settings.api_listen.to_string(),
            };
            let app = api::router(state);
            tokio::spawn(async move { axum::serve(listener, app).await });
            registry
                .bootstrap()
                .await
                .map_err(|e| anyhow::anyhow!("bootstrapping the default objects: {e}"))?;
            tokio::spawn(controller::run(registry.clone(), metrics.clone()));
            let host = match api_ip {
                IpAddr::V6(ip) => format!("[{ip}]"),
                IpAddr::V4(ip) => ip.to_string(),
            };
            let url = format!("http://{host}:{}", settings.api_listen.port());
            tracing::info!(api = %url, data_dir = %settings.data_dir.display(), "embedded API serving");
            kube::Client::try_from(kube::Config::new(url.parse()?))?
        }
        Source::Kubeconfig(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
            tracing::info!(cluster = %cfg.cluster_url, "watching a cluster from kubeconfig");
            kube::Client::try_from(cfg)?
        }
        Source::InCluster => kube::Client::try_from(
            kube::Config::incluster().context("reading the in-cluster service account")?,
        )?,
    };
    let events = crate::events::Events::start(client.clone(), settings.proxy.node_name.clone());
    let (published, published_rx) = tokio::sync::watch::channel(0);
    let published_dns_rx = published_rx.clone();
    let snapshot_for_dns = snapshot.clone();
    tokio::spawn(watcher::run(
        client,
        snapshot.clone(),
        ready,
        metrics.clone(),
        published,
    ));
    let data_plane = proxy::DataPlane::start(
        settings.proxy.clone(),
        snapshot,
        published_rx,
        plugins.clone(),
        metrics.proxy.clone(),
        events,
    )
    .context("starting the data plane workers")?;
    let _dns = crate::dns::Dns::start(
        settings.dns.clone(),
        snapshot_for_dns,
        published_dns_rx,
        plugins.clone(),
        metrics.dns.clone(),
    )
    .await
    .with_context(|| format!("starting cluster DNS on {}", settings.dns.listen))?;
    data_plane_cell
        .set(data_plane.clone())
        .map_err(|_| anyhow::anyhow!("data plane started twice"))?;
    tracing::info!(
        workers = settings.proxy.workers,
        node = %settings.proxy.node_name,
        "data plane running"
    );
    // Built-ins first, then what the admin API stored, then files: a later source may
    // replace an earlier one of the same name.
    let files = settings.plugin_files.clone();
    let _file_watch = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let n = plugins.load_builtins();
        plugins.load_stored();
        let watch = plugin::files::watch(plugins.clone(), files);
        plugins_ready.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(
            builtins = n,
            ms = started.elapsed().as_millis() as u64,
            "plugins ready"
        );
        watch
    })
    .await?
    .context("watching plugin files")?;
    tracing::info!(admin = %settings.admin_listen, "switchyard running");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    Ok(())
}
