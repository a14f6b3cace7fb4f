//! The admin listener: `/healthz`, `/readyz` (API serving, watchers synced, built-in plugins
//! compiled), `/metrics` (Prometheus text), `/debug/services` and `/debug/services/{ns}/{name}`
//! (the snapshot as JSON), `/debug/listeners` (the data plane's sockets), `/env/{ns}` (the
//! Service environment variables of a container in that namespace, JSON), and the plugin
//! endpoints in [`plugins`]. Reads shared state; writes only through the plugin runtime.

mod plugins;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

#[derive(Clone)]
pub struct AdminState {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    pub plugins: Arc<crate::plugin::Plugins>,
    pub plugins_ready: Arc<AtomicBool>,
    /// Set once the data plane has started.
    pub data_plane: Arc<std::sync::OnceLock<Arc<crate::proxy::DataPlane>>>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/debug/services", get(services))
        .route("/debug/services/{ns}/{name}", get(service))
        .route("/debug/listeners", get(listeners))
        .route("/env/{ns}", get(env))
        .merge(plugins::routes())
        .with_state(state)
}

async fn readyz(State(s): State<AdminState>) -> Response {
    if !s.plugins_ready.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: compiling the built-in plugins\n",
        )
            .into_response();
    }
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the API and the first snapshot\n",
        )
            .into_response()
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn services(State(s): State<AdminState>) -> Response {
    let snap = s.snapshot.load();
    let mut list: Vec<_> = snap.services().collect();
    list.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    axum::Json(json!({"generation": snap.generation, "services": list})).into_response()
}

async fn env(State(s): State<AdminState>, Path(ns): Path<String>) -> Response {
    let snap = s.snapshot.load();
    let services: Vec<_> = snap
        .services()
        .filter(|v| v.namespace == ns || (v.namespace == "default" && v.name == "kubernetes"))
        .map(|v| crate::envvars::EnvService::from_view(v))
        .collect();
    axum::Json(crate::envvars::for_namespace(&ns, &services)).into_response()
}

async fn listeners(State(s): State<AdminState>) -> Response {
    let list = s
        .data_plane
        .get()
        .map(|d| d.listeners())
        .unwrap_or_default();
    axum::Json(json!({"listeners": list})).into_response()
}

async fn service(
    State(s): State<AdminState>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let snap = s.snapshot.load();
    match snap.get(&ns, &name) {
        Some(v) => axum::Json(json!({"generation": snap.generation, "service": v})).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("service {ns}/{name} is not in the snapshot\n"),
        )
            .into_response(),
    }
}
