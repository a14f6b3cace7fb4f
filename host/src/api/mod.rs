//! The embedded Kubernetes-compatible API server (plain HTTP on `--api-listen`): routing,
//! request decoding and response encoding. Semantics live in `registry`; watches in `watch`.
//! Touches the registry and the metrics, nothing else.

pub mod discovery;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod registry;
#[cfg(test)]
mod robustness;
pub mod status;
mod table;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use crate::metrics::Metrics;
use crate::resources::{self, Resource};
use crate::selector::{FieldSelector, LabelSelector};
use registry::{Registry, WriteOpts};
use status::ApiError;

/// Kubernetes' request body limit.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

#[derive(Clone)]
pub struct ApiState {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// host:port clients reach us at (for `/api`'s serverAddressByClientCIDRs).
    pub server_addr: String,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/version", get(|| async { json(&discovery::version()) }))
        .route(
            "/api",
            get(|State(s): State<ApiState>| async move {
                json(&discovery::core_versions(&s.server_addr))
            }),
        )
        .route(
            "/api/v1",
            get(|| async { json(&discovery::resource_list("", "v1").expect("core")) }),
        )
        .route("/apis", get(|| async { json(&discovery::group_list()) }))
        .route("/openapi/v3", get(|| async { json(&openapi::index()) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .fallback(dispatch)
        .with_state(state)
}

pub(crate) fn json(v: &Value) -> Response {
    raw_json(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(v).expect("serializes")),
    )
}

fn raw_json(code: StatusCode, b: Bytes) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], b).into_response()
}

/// Where a resource request points.
#[derive(Debug)]
struct Target {
    res: &'static Resource,
    ns: String,
    name: Option<String>,
    sub: Option<String>,
}

/// `None`: not a resource path at all; `Some(Err)`: a resource path we do not serve.
fn parse_path(path: &str) -> Option<Result<Target, ApiError>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let t = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if resources::find(group, version, plural).is_some_and(|r| r.namespaced) =>
        {
            if tail.len() > 2 {
                return Some(Err(ApiError::NoResource));
            }
            Target {
                res: resources::find(group, version, plural).expect("checked"),
                ns: ns.to_string(),
                name: tail.first().map(|s| s.to_string()),
                sub: tail.get(1).map(|s| s.to_string()),
            }
        }
        [plural, tail @ ..] if tail.len() <= 2 => match resources::find(group, version, plural) {
            Some(res) if res.namespaced && !tail.is_empty() => {
                return Some(Err(ApiError::NoResource));
            }
            Some(res) => Target {
                res,
                ns: String::new(),
                name: tail.first().map(|s| s.to_string()),
                sub: tail.get(1).map(|s| s.to_string()),
            },
            None => return Some(Err(ApiError::NoResource)),
        },
        _ => return Some(Err(ApiError::NoResource)),
    };
    if let Some(sub) = &t.sub
        && !t.res.subresources.contains(&sub.as_str())
    {
        return Some(Err(ApiError::NoResource));
    }
    Some(Ok(t))
}

async fn dispatch(
    State(s): State<ApiState>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = uri.path().to_string();
    let verb = method.as_str().to_string();
    let resp = match handle(&s, &method, &path, &q, &headers, body).await {
        Ok(r) => r,
        Err(e) => {
            if e.code().is_server_error() {
                tracing::error!(%method, %path, error = %e, "API request failed");
            } else {
                tracing::debug!(%method, %path, error = %e, "API request refused");
            }
            e.into_response()
        }
    };
    s.metrics.api_request(&verb, resp.status().as_u16());
    resp
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(ApiError::TooLarge(MAX_BODY));
    }
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::TooLarge(MAX_BODY))
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
}

/// JSON or YAML object bodies.
fn decode_object(headers: &HeaderMap, b: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type(headers);
    let v: Value = if ct.contains("yaml") {
        serde_yaml::from_slice(b)
            .map_err(|e| ApiError::BadRequest(format!("error converting YAML to JSON: {e}")))?
    } else if ct.contains("protobuf") {
        protobuf::decode(b).map_err(ApiError::BadRequest)?
    } else {
        serde_json::from_slice(b).map_err(|e| {
            ApiError::BadRequest(format!("couldn't get version/kind; json parse error: {e}"))
        })?
    };
    if !v.is_object() {
        return Err(ApiError::BadRequest(
            "the request body must be a JSON object".into(),
        ));
    }
    Ok(v)
}

fn write_opts(q: &HashMap<String, String>) -> WriteOpts {
    WriteOpts {
        dry_run: q.get("dryRun").is_some_and(|v| v == "All"),
        strict: q.get("fieldValidation").is_some_and(|v| v == "Strict"),
    }
}

async fn handle(
    s: &ApiState,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Group discovery and OpenAPI documents first; then resources.
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["apis", g] => {
            return discovery::group(g)
                .map(|v| json(&v))
                .ok_or(ApiError::NoResource);
        }
        ["apis", g, v] => {
            return discovery::resource_list(g, v)
                .map(|v| json(&v))
                .ok_or(ApiError::NoResource);
        }
        ["openapi", "v3", rest @ ..] => {
            return openapi::document(&rest.join("/"))
                .map(|v| json(&v))
                .ok_or(ApiError::NoResource);
        }
        _ => {}
    }
    let t = parse_path(path).ok_or(ApiError::NoResource)??;
    let reg = &s.registry;
    let res = t.res;
    let opts = write_opts(q);
    match (method.clone(), t.name.as_deref()) {
        (Method::GET, None) if q.get("watch").is_some_and(|v| v == "true" || v == "1") => {
            watch::serve(reg.clone(), res, t.ns.clone(), q, table::wanted(headers)).await
        }
        (Method::GET, None) => list(s, res, &t.ns, q, headers),
        (Method::GET, Some(name)) => {
            let obj = reg.get(res, &t.ns, name)?;
            if table::wanted(headers) {
                return Ok(json(&table::render(res, &[obj.value()], None)));
            }
            Ok(raw_json(StatusCode::OK, obj.raw))
        }
        (Method::POST, None) => {
            let b = read_body(headers, body).await?;
            let v = decode_object(headers, &b)?;
            let out = reg.create(res, &t.ns, v, opts).await?;
            Ok(raw_json(StatusCode::CREATED, out))
        }
        (Method::PUT, Some(name)) => {
            let b = read_body(headers, body).await?;
            let v = decode_object(headers, &b)?;
            Ok(raw_json(
                StatusCode::OK,
                reg.update(res, &t.ns, name, t.sub.as_deref(), v, opts)
                    .await?,
            ))
        }
        (Method::PATCH, Some(name)) => {
            let b = read_body(headers, body).await?;
            let kind = patch::PatchType::from_content_type(content_type(headers))
                .ok_or(ApiError::UnsupportedMediaType)?;
            Ok(raw_json(
                StatusCode::OK,
                reg.patch(
                    res,
                    &t.ns,
                    name,
                    t.sub.as_deref(),
                    patch::PatchRequest { kind, body: &b },
                    opts,
                )
                .await?,
            ))
        }
        (Method::DELETE, Some(name)) if t.sub.is_none() => Ok(raw_json(
            StatusCode::OK,
            reg.delete(res, &t.ns, name, opts).await?,
        )),
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// Parsed `labelSelector` and `fieldSelector`.
pub(crate) struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    pub(crate) fn from_query(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::BadRequest(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::BadRequest(format!("invalid field selector: {e}")))?;
        Ok(Filter { labels, fields })
    }

    pub(crate) fn matches(&self, s: &crate::store::Stored) -> bool {
        self.matches_labels(&s.labels, s)
    }

    /// `labels` with the fields of `s` (for an object's labels before a change).
    pub(crate) fn matches_labels(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
        s: &crate::store::Stored,
    ) -> bool {
        self.labels.matches(labels) && (self.fields.is_empty() || self.fields.matches(&s.value()))
    }
}

fn list(
    s: &ApiState,
    res: &'static Resource,
    ns: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let filter = Filter::from_query(q)?;
    let scope = (res.namespaced && !ns.is_empty()).then_some(ns);
    let (items, rv) = s.registry.store.list(res.store_key(), scope);
    let items: Vec<_> = items
        .into_iter()
        .map(|(_, _, o)| o)
        .filter(|o| filter.matches(o))
        .collect();
    if table::wanted(headers) {
        let values: Vec<Value> = items.iter().map(|o| o.value()).collect();
        return Ok(json(&table::render(res, &values, Some(rv))));
    }
    let mut out =
        BytesMut::with_capacity(64 + items.iter().map(|o| o.raw.len() + 1).sum::<usize>());
    out.put_slice(format!(r#"{{"kind":"{}List","apiVersion":"{}","metadata":{{"resourceVersion":"{rv}"}},"items":["#, res.kind, res.api_version()).as_bytes());
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(&o.raw);
    }
    out.put_slice(b"]}");
    Ok(raw_json(StatusCode::OK, out.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = parse_path("/api/v1/namespaces/default/services/my-service/status")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                t.res.plural,
                t.ns.as_str(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            ("services", "default", Some("my-service"), Some("status"))
        );
        let t = parse_path("/api/v1/namespaces/kube-system")
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.res.plural, t.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let t = parse_path("/api/v1/namespaces/x/status").unwrap().unwrap();
        assert_eq!(
            (t.res.plural, t.name.as_deref(), t.sub.as_deref()),
            ("namespaces", Some("x"), Some("status"))
        );
        let t = parse_path("/apis/discovery.k8s.io/v1/endpointslices")
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.res.plural, t.ns.as_str(), t.name),
            ("endpointslices", "", None)
        );
        assert!(parse_path("/api/v1/widgets").unwrap().is_err());
        assert!(
            parse_path("/api/v1/services/x").unwrap().is_err(),
            "namespaced resource needs a namespace"
        );
        assert!(
            parse_path("/api/v1/namespaces/d/services/x/proxy")
                .unwrap()
                .is_err()
        );
        assert!(parse_path("/healthz").is_none());
    }
}
