//! Plugin endpoints of the admin listener:
//! - `GET /plugins`, `GET /plugins/{name}`: loaded plugins as JSON (hooks, sha256, source,
//!   load time, call and error counters);
//! - `PUT /plugins/{name}` with the component as body: compile, check and swap in; a refused
//!   module gets `400` with the reason and the loaded version stays;
//! - `DELETE /plugins/{name}`;
//! - `GET /debug/pick/{ns}/{name}?port=P&client=IP:PORT&n=N`: N picks through the same path
//!   the data plane takes (plugin or native fallback), to see a balancer's choices.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::AdminState;
use crate::plugin::loader::Source;
use crate::plugin::{PluginError, Request};

/// Largest module `PUT /plugins/{name}` takes.
const MAX_MODULE: usize = 64 << 20;

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/plugins", get(list))
        .route(
            "/plugins/{name}",
            get(one)
                .put(load)
                .delete(remove)
                .layer(DefaultBodyLimit::max(MAX_MODULE)),
        )
        .route("/debug/pick/{ns}/{name}", get(pick))
}

fn error(status: StatusCode, e: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({"error": e.to_string()}))).into_response()
}

async fn list(State(s): State<AdminState>) -> Response {
    axum::Json(json!({"plugins": s.plugins.list()})).into_response()
}

async fn one(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    match s.plugins.get(&name) {
        Some(p) => axum::Json(p).into_response(),
        None => error(StatusCode::NOT_FOUND, PluginError::NotFound(name)),
    }
}

async fn load(State(s): State<AdminState>, Path(name): Path<String>, body: Bytes) -> Response {
    let plugins = s.plugins.clone();
    let started = std::time::Instant::now();
    let result =
        tokio::task::spawn_blocking(move || plugins.load(&name, &body, Source::Admin)).await;
    match result {
        Ok(Ok(info)) => {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let mut v = serde_json::to_value(info).unwrap_or_default();
            v["load_ms"] = json!((ms * 100.0).round() / 100.0);
            (StatusCode::OK, axum::Json(v)).into_response()
        }
        Ok(Err(e @ (PluginError::Store(_) | PluginError::Engine(_) | PluginError::Cache(_)))) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, e)
        }
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn remove(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    match s.plugins.remove(&name) {
        Ok(()) => axum::Json(json!({"removed": name})).into_response(),
        Err(e @ PluginError::NotFound(_)) => error(StatusCode::NOT_FOUND, e),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize)]
struct PickQuery {
    port: Option<String>,
    client: Option<SocketAddr>,
    n: Option<usize>,
}

async fn pick(
    State(s): State<AdminState>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<PickQuery>,
) -> Response {
    let snap = s.snapshot.load();
    let Some(svc) = snap.get(&ns, &name).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            format!("service {ns}/{name} is not in the snapshot"),
        );
    };
    let port_index = match q.port.as_deref() {
        None => 0,
        Some(p) => match svc
            .ports
            .iter()
            .position(|sp| sp.name == p || sp.port.to_string() == p)
        {
            Some(i) => i,
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("service {ns}/{name} has no port {p:?}"),
                );
            }
        },
    };
    if svc.ports.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            format!("service {ns}/{name} has no ports"),
        );
    }
    let client = q
        .client
        .unwrap_or_else(|| "127.0.0.1:40000".parse().expect("valid"));
    let n = q.n.unwrap_or(1).clamp(1, 10_000);
    let port = &svc.ports[port_index];
    let service = format!("{ns}/{name}");
    let picks: Vec<serde_json::Value> = (0..n)
        .map(|_| {
            let by_plugin = s.plugins.pick(&svc, port_index, &Request::tcp(client));
            match by_plugin.and_then(|i| port.endpoints.get(i)) {
                Some(e) => json!({"endpoint": SocketAddr::new(e.addr, e.port).to_string(), "id": e.id, "by_plugin": true}),
                // The data plane's own fallback, on its cluster-IP listener.
                None => {
                    let rr = s.data_plane.get().and_then(|d| d.round_robin_of(&service, port.port));
                    json!({"endpoint": rr.map(|a| a.to_string()), "by_plugin": false})
                }
            }
        })
        .collect();
    axum::Json(json!({
        "service": service,
        "port": port.port,
        "balancer": svc.plugins.balancer.as_ref().map(|b| b.name.to_string()),
        "picks": picks,
    }))
    .into_response()
}
