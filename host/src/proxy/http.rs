//! L7 HTTP: terminates HTTP/1.1 and HTTP/2 (h2c, prior knowledge) with hyper, runs the policy
//! hook per connection (`on-connect`) and per request (`on-request`: header edits, a direct
//! response, or a reroute to another Service), picks an endpoint per request, and forwards
//! over pooled keep-alive connections ([`pool`], per worker; HTTP/2 upstream for ports whose
//! `appProtocol` is `kubernetes.io/h2c`). Adds `X-Forwarded-For`, `X-Forwarded-Proto` and
//! `Forwarded`. Answers `503` when no endpoint is ready and `502` when the upstream fails;
//! the request goes to another endpoint when a connect fails (it is sent only once connected).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request as HttpRequest, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;

use super::metrics::Reason;
use super::select::Target;
use super::{DataPlane, h1, pool, upgrade};
use crate::plugin::bindings::types::{Header, Protocol};
use crate::plugin::{Action, Request, RequestHead};

/// What goes back: the upstream's body (returning its connection to the pool at the end),
/// or one of ours.
type DownBody = Either<pool::Returning, Full<Bytes>>;

/// Serves one worker's socket of an HTTP listener.
pub(super) async fn serve(
    std: std::net::TcpListener,
    target: Arc<ArcSwap<Target>>,
    dp: Arc<DataPlane>,
) {
    super::tcp::accept_loop(std, |sock, peer| {
        tokio::spawn(connection(sock, peer, target.clone(), dp.clone()));
    })
    .await
}

async fn connection(
    sock: TcpStream,
    peer: SocketAddr,
    target: Arc<ArcSwap<Target>>,
    dp: Arc<DataPlane>,
) {
    let t = target.load_full();
    let m = &t.metrics;
    m.connections.inc();
    if !t.admits(peer.ip()) {
        m.reject(Reason::SourceRange);
        return super::tcp::reset(sock);
    }
    let mut req = Request::tcp(peer);
    req.protocol = Protocol::Http;
    req.node_local = t.node_local;
    if !dp.admit(&t, &req) {
        m.reject(Reason::Policy);
        return super::tcp::reset(sock);
    }
    let _ = sock.set_nodelay(true);
    let Ok(client) = super::tcp::accept_tls(&t, sock).await else {
        return;
    };
    let https = client.is_ok();
    // HTTP/1.x to an HTTP/1.1 upstream takes the fast path (`h1`); HTTP/2 on either side
    // takes hyper.
    let h2_upstream = t.port().app_protocol.as_deref() == Some("kubernetes.io/h2c");
    m.active.inc();
    match client {
        Ok(tls) if h2_upstream || tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
            serve_hyper(tls, peer, https, target, dp).await
        }
        Ok(tls) => {
            if let Some(h1::Http2(io, pre)) = h1::serve(tls, peer, https, &target, &dp, true).await
            {
                serve_hyper(h1::Prefixed::new(pre, io), peer, https, target, dp).await
            }
        }
        Err(sock) if h2_upstream => serve_hyper(sock, peer, https, target, dp).await,
        Err(sock) => {
            if let Some(h1::Http2(io, pre)) = h1::serve(sock, peer, https, &target, &dp, true).await
            {
                serve_hyper(h1::Prefixed::new(pre, io), peer, https, target, dp).await
            }
        }
    }
    m.active.dec();
}

/// Serves a connection with hyper (HTTP/1.1 and HTTP/2).
async fn serve_hyper<I>(
    io: I,
    peer: SocketAddr,
    https: bool,
    target: Arc<ArcSwap<Target>>,
    dp: Arc<DataPlane>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |r| {
        let (target, dp) = (target.clone(), dp.clone());
        async move { Ok::<_, Infallible>(handle(r, peer, https, &target, &dp).await) }
    });
    let mut server = auto::Builder::new(TokioExecutor::new());
    server.http1().timer(TokioTimer::new());
    server.http2().timer(TokioTimer::new());
    if let Err(e) = server
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
    {
        tracing::trace!(client = %peer, error = %e, "HTTP connection ended with an error");
    }
}

fn plain(status: StatusCode, text: String) -> Response<DownBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(text))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(
    mut r: HttpRequest<Incoming>,
    peer: SocketAddr,
    https: bool,
    target: &ArcSwap<Target>,
    dp: &Arc<DataPlane>,
) -> Response<DownBody> {
    let mut t = target.load_full();
    if t.view.plugins.policy.is_some() {
        match on_request(&t, &r, peer, dp) {
            Action::Continue(edits) => {
                for e in edits {
                    let Ok(name) = HeaderName::from_bytes(e.name.as_bytes()) else {
                        continue;
                    };
                    match e.value.map(HeaderValue::try_from) {
                        Some(Ok(v)) => {
                            r.headers_mut().insert(name, v);
                        }
                        Some(Err(_)) => {}
                        None => {
                            r.headers_mut().remove(name);
                        }
                    }
                }
            }
            Action::Respond(resp) => {
                let status = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::FORBIDDEN);
                let mut out = Response::new(Either::Right(Full::new(Bytes::from(resp.body))));
                *out.status_mut() = status;
                for h in resp.headers {
                    if let (Ok(n), Ok(v)) = (
                        HeaderName::from_bytes(h.name.as_bytes()),
                        HeaderValue::try_from(h.value),
                    ) {
                        out.headers_mut().append(n, v);
                    }
                }
                t.metrics.status(status.as_u16());
                return out;
            }
            Action::Reroute(to) => match dp.reroute(&to) {
                Some(other) => t = other,
                None => {
                    let out = plain(
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "switchyard: the policy rerouted to {to:?}, which is not a Service port here\n"
                        ),
                    );
                    t.metrics.status(502);
                    return out;
                }
            },
        }
    }
    let resp = forward(r, peer, https, &t, dp).await;
    t.metrics.status(resp.status().as_u16());
    resp
}

fn on_request(t: &Target, r: &HttpRequest<Incoming>, peer: SocketAddr, dp: &DataPlane) -> Action {
    let head = RequestHead {
        method: r.method().as_str().to_string(),
        path: r
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
        authority: authority(r).unwrap_or_default(),
        headers: r
            .headers()
            .iter()
            .map(|(n, v)| Header {
                name: n.as_str().to_string(),
                value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
            })
            .collect(),
    };
    let lookup = |name: &str| header(r.headers(), name);
    let req = context(r, peer, t, &lookup);
    dp.plugins.on_request(&t.view, &req, t.port().port, &head)
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)?.to_str().ok().map(str::to_string)
}

fn authority(r: &HttpRequest<Incoming>) -> Option<String> {
    r.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| header(r.headers(), "host"))
}

fn context<'a>(
    r: &'a HttpRequest<Incoming>,
    peer: SocketAddr,
    t: &Target,
    lookup: &'a (dyn Fn(&str) -> Option<String> + Sync),
) -> Request<'a> {
    Request::http(
        peer,
        r.method().as_str(),
        r.uri().path(),
        lookup,
        t.node_local,
    )
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): not forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

async fn forward(
    mut r: HttpRequest<Incoming>,
    peer: SocketAddr,
    https: bool,
    t: &Arc<Target>,
    dp: &DataPlane,
) -> Response<DownBody> {
    let m = &t.metrics;
    let h2 = t.port().app_protocol.as_deref() == Some("kubernetes.io/h2c");
    let upgrade = match r.version() {
        Version::HTTP_11 if !h2 => upgrade::requested(r.headers()),
        _ => None,
    };
    let mut client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut r));
    let (mut parts, body) = r.into_parts();
    let host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get("host").cloned(),
    };
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    if let Some(p) = &upgrade {
        upgrade::restore(&mut parts.headers, p.clone());
    }
    if let Some(h) = &host
        && !parts.headers.contains_key("host")
    {
        parts.headers.insert("host", h.clone());
    }
    forwarding_headers(&mut parts.headers, peer, https, host.as_ref());
    parts.version = if h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    let mut request = Some(HttpRequest::from_parts(parts, body));
    let mut tried = [usize::MAX; super::tcp::MAX_ATTEMPTS];
    let mut last_error = String::new();
    let attempts = dp.settings.connect_attempts.min(super::tcp::MAX_ATTEMPTS);
    for attempt in 0..attempts {
        let req = request.as_ref().expect("the request is still ours");
        let index = {
            let lookup = |name: &str| header(req.headers(), name);
            dp.choose(t, &context(req, peer, t, &lookup), &tried[..attempt])
        };
        let Some(index) = index else {
            if attempt == 0 {
                m.reject(Reason::NoEndpoint);
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "switchyard: no ready endpoint for Service {} port {}\n",
                        t.route.service,
                        t.port().port
                    ),
                );
            }
            break;
        };
        tried[attempt] = index;
        let addr = t.endpoint_addr(index);
        let started = Instant::now();
        let (sender, reused) =
            match pool::checkout(addr, h2, upgrade.is_some(), dp.settings.connect_timeout).await {
                Ok(s) => s,
                Err(e) => {
                    m.connect_errors.inc();
                    let micros = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    dp.feedback(t, index, micros, 0, false);
                    last_error = format!("{addr}: {e}");
                    continue;
                }
            };
        if !reused {
            m.connect_seconds.observe(started.elapsed().as_secs_f64());
        }
        let mut req = request.take().expect("the request is still ours");
        set_target(&mut req, addr, h2);
        let sent = Instant::now();
        let (result, back) = match sender {
            pool::Sender::H1(mut s) => {
                let r = s.try_send_request(req).await;
                (r, upgrade.is_none().then_some((addr, s)))
            }
            pool::Sender::H2(mut s) => (s.try_send_request(req).await, None),
        };
        let micros = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
        match result {
            Ok(mut resp) => {
                m.response_seconds.observe(micros as f64 / 1e6);
                dp.feedback(t, index, 0, micros, resp.status().as_u16() < 500);
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    && let Some(client) = client_upgrade.take()
                {
                    let endpoint = hyper::upgrade::on(&mut resp);
                    let drain = !dp.settings.drain_timeout.is_zero();
                    tokio::spawn(upgrade::tunnel(client, endpoint, addr, t.clone(), drain));
                    let (mut rp, _) = resp.into_parts();
                    let proto = rp.headers.get(hyper::header::UPGRADE).cloned();
                    for h in HOP_BY_HOP {
                        rp.headers.remove(h);
                    }
                    if let Some(p) = proto {
                        upgrade::restore(&mut rp.headers, p);
                    }
                    return Response::from_parts(rp, Either::Right(Full::new(Bytes::new())));
                }
                let (mut rp, rb) = resp.into_parts();
                for h in HOP_BY_HOP {
                    rp.headers.remove(h);
                }
                return Response::from_parts(rp, Either::Left(pool::Returning::new(rb, back)));
            }
            Err(mut e) => {
                dp.feedback(t, index, 0, micros, false);
                // Not sent at all (a pooled connection the backend had closed): try again.
                if let Some(unsent) = e.take_message() {
                    last_error = format!("{addr}: {}", e.error());
                    request = Some(unsent);
                    if reused {
                        tried[attempt] = usize::MAX;
                    }
                    continue;
                }
                m.reject(Reason::ConnectFailed);
                return plain(
                    StatusCode::BAD_GATEWAY,
                    format!("switchyard: upstream {addr} failed: {:#}\n", e.error()),
                );
            }
        }
    }
    m.reject(Reason::ConnectFailed);
    plain(
        StatusCode::BAD_GATEWAY,
        format!(
            "switchyard: no endpoint of Service {} port {} accepted the request (last: {last_error})\n",
            t.route.service,
            t.port().port
        ),
    )
}

/// `X-Forwarded-For` (appended), `X-Forwarded-Proto` and `Forwarded` (RFC 7239).
fn forwarding_headers(
    h: &mut HeaderMap,
    peer: SocketAddr,
    https: bool,
    host: Option<&HeaderValue>,
) {
    let proto = if https { "https" } else { "http" };
    let ip = peer.ip().to_string();
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => HeaderValue::try_from(format!("{prev}, {ip}")),
        None => HeaderValue::try_from(ip.as_str()),
    };
    if let Ok(v) = xff {
        h.insert("x-forwarded-for", v);
    }
    h.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    let node = if peer.is_ipv6() {
        format!("\"[{ip}]\"")
    } else {
        ip
    };
    let forwarded = match host.and_then(|v| v.to_str().ok()) {
        Some(host) => format!("for={node};proto={proto};host=\"{host}\""),
        None => format!("for={node};proto={proto}"),
    };
    if let Ok(v) = HeaderValue::try_from(forwarded) {
        h.append("forwarded", v);
    }
}

/// HTTP/1.1 upstream: origin-form target (`/path?query`). HTTP/2: absolute, so `:scheme` and
/// `:authority` are set.
fn set_target(req: &mut HttpRequest<Incoming>, addr: SocketAddr, h2: bool) {
    let pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
    let mut uri = hyper::http::uri::Parts::default();
    if h2 {
        uri.scheme = Some(hyper::http::uri::Scheme::HTTP);
        uri.authority = req
            .headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse().ok())
            .or_else(|| addr.to_string().parse().ok());
    }
    uri.path_and_query = Some(pq);
    if let Ok(u) = Uri::from_parts(uri) {
        *req.uri_mut() = u;
    }
}
