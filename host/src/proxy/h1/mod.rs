//! The HTTP/1.x path of L7 listeners, run in the client connection's own task with no hyper
//! on it: reads a request head ([`head`]), runs the policy and the pick, sends head and body
//! (passed through with its framing, [`framing`]) on a pooled keep-alive upstream
//! connection ([`upstream`]) and the response back the same way: one write per direction and
//! message where the bytes allow, as haproxy does. HTTP/2 (prior knowledge, or ALPN `h2`) and
//! ports whose upstream speaks HTTP/2 (`kubernetes.io/h2c`) stay on hyper (`super::http`).
//! An upgrade becomes a byte tunnel after `101`. Touches only its two connections.

mod fields;
mod framing;
mod head;
mod prefixed;
mod relay;
mod upstream;

pub(super) use prefixed::Prefixed;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::DataPlane;
use super::metrics::Reason;
use super::select::Target;
use crate::plugin::bindings::types::Header;
use crate::plugin::{Action, Request, RequestHead};
use framing::Framing;
use head::{Client, Field, Head, HeadError};
use relay::{Fail, Relayed, relay, send};

/// The HTTP/2 connection preface: a client speaking HTTP/2 with prior knowledge.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const READ_CHUNK: usize = 64 * 1024;
/// Room kept for a request head while waiting for one.
const HEAD_CHUNK: usize = 4096;
/// How long a client may take over a request head once it has started one.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// What this path hands to hyper: an HTTP/2 client connection and the bytes read from it.
pub(super) struct Http2<S>(pub S, pub BytesMut);

/// One client connection's buffers, kept across its requests.
struct Conn {
    peer: SocketAddr,
    /// The peer as the forwarding fields name it (formatted once per connection).
    client: Client,
    /// Client bytes read and not yet passed on (a pipelined request may wait here).
    buf: BytesMut,
    /// The head being written (to either side).
    out: Vec<u8>,
    up_fields: Vec<Field>,
}

/// After one exchange: go on with the next request, close, or tunnel to this endpoint.
enum Next {
    KeepAlive,
    Close,
    Tunnel(TcpStream, SocketAddr, Arc<Target>),
}

/// Serves requests on `io` until the client or an error ends the connection. `sniff`: the
/// connection is new and may be HTTP/2 with prior knowledge, which goes back to the caller.
pub(super) async fn serve<S>(
    mut io: S,
    peer: SocketAddr,
    https: bool,
    target: &ArcSwap<Target>,
    dp: &Arc<DataPlane>,
    mut sniff: bool,
) -> Option<Http2<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut c = Conn {
        peer,
        client: Client::new(peer.ip(), https),
        buf: BytesMut::new(),
        out: Vec::new(),
        up_fields: Vec::new(),
    };
    // The request head's fields, kept apart from `c` as the head borrows them.
    let mut fields: Vec<Field> = Vec::new();
    loop {
        let req = match read_request(&mut io, &mut c, &mut fields, &mut sniff).await {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(Stop::Http2) => return Some(Http2(io, c.buf)),
            Err(Stop::Bad(e)) => {
                let t = target.load();
                let code = if e == HeadError::TooLarge { 431 } else { 400 };
                t.metrics.status(code);
                let msg = format!("switchyard: {e}\n");
                head::write_local(&mut c.out, code, &[], msg.as_bytes(), false);
                if io.write_all(&c.out).await.is_ok() {
                    linger(&mut io).await;
                }
                return None;
            }
            Err(Stop::Io) => return None,
        };
        let head_bytes = c.buf.split_to(req.len);
        let t = target.load_full();
        let h = Head {
            bytes: &head_bytes,
            fields: &fields,
        };
        match exchange(&mut io, &mut c, &h, &req, t, dp).await {
            // A body's large read buffer is not kept while the connection idles.
            Next::KeepAlive if c.buf.is_empty() && c.buf.capacity() > 2 * HEAD_CHUNK => {
                c.buf = BytesMut::new();
            }
            Next::KeepAlive => {}
            Next::Close => {
                linger(&mut io).await;
                return None;
            }
            Next::Tunnel(up, to, t) => {
                let drain = !dp.settings.drain_timeout.is_zero();
                super::upgrade::pipe(io, up, to, &t, drain).await;
                return None;
            }
        }
    }
}

/// Closes our side, then reads and drops what the client still sends (bounded in time and
/// bytes) before the socket closes: closing with unread bytes would reset the connection
/// and could destroy the response the client has not read yet.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) {
    const LINGER: Duration = Duration::from_secs(1);
    const LINGER_BYTES: usize = 1 << 20;
    if io.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

enum Stop {
    Http2,
    Bad(HeadError),
    Io,
}

/// Reads until `c.buf` starts with a whole request head; `None`: the client closed between
/// requests.
async fn read_request<S: AsyncRead + Unpin>(
    io: &mut S,
    c: &mut Conn,
    fields: &mut Vec<Field>,
    sniff: &mut bool,
) -> Result<Option<head::Request>, Stop> {
    let mut started: Option<Instant> = None;
    loop {
        if *sniff && !c.buf.is_empty() {
            let n = c.buf.len().min(PREFACE.len());
            if c.buf[..n] != PREFACE[..n] {
                *sniff = false;
            } else if n == PREFACE.len() {
                return Err(Stop::Http2);
            }
        }
        if !*sniff && !c.buf.is_empty() {
            match head::parse_request(&c.buf, fields) {
                Ok(Some(r)) => return Ok(Some(r)),
                Ok(None) => {}
                Err(e) => return Err(Stop::Bad(e)),
            }
        }
        c.buf.reserve(HEAD_CHUNK);
        let read = match started {
            // Idle between requests: wait as long as the client likes.
            None if c.buf.is_empty() => io.read_buf(&mut c.buf).await,
            _ => {
                let since = *started.get_or_insert_with(Instant::now);
                let left = HEAD_TIMEOUT.saturating_sub(since.elapsed());
                match tokio::time::timeout(left, io.read_buf(&mut c.buf)).await {
                    Ok(r) => r,
                    Err(_) => return Err(Stop::Io),
                }
            }
        };
        match read {
            Ok(0) if c.buf.is_empty() => return Ok(None),
            Ok(0) | Err(_) => return Err(Stop::Io),
            Ok(_) => {
                started.get_or_insert_with(Instant::now);
            }
        }
    }
}

/// The pick's view of a request: method, path (no query) and declared headers.
fn context<'a>(
    h: &Head<'a>,
    r: &head::Request,
    peer: SocketAddr,
    t: &Target,
    lookup: &'a (dyn Fn(&str) -> Option<String> + Sync),
) -> Request<'a> {
    let path = h.span(&r.path);
    let path = &path[..path.iter().position(|&b| b == b'?').unwrap_or(path.len())];
    let path = std::str::from_utf8(path)
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    // httparse accepts only token characters in a method, so this is ASCII.
    let method = std::str::from_utf8(h.span(&r.method)).unwrap_or("");
    Request::http(peer, method, path, lookup, t.node_local)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Sends a response of our own and decides whether the connection goes on: only when the
/// request had no body left unread.
async fn local<S: AsyncWrite + Unpin>(
    io: &mut S,
    c: &mut Conn,
    t: &Target,
    r: &head::Request,
    code: u16,
    fields: &[(&str, &str)],
    body: &[u8],
) -> Next {
    let keep = r.keep_alive && r.framing == Framing::Empty;
    t.metrics.status(code);
    head::write_local(&mut c.out, code, fields, body, keep);
    match io.write_all(&c.out).await {
        Ok(()) if keep => Next::KeepAlive,
        _ => Next::Close,
    }
}

/// One request and its response.
async fn exchange<S>(
    io: &mut S,
    c: &mut Conn,
    h: &Head<'_>,
    r: &head::Request,
    mut t: Arc<Target>,
    dp: &Arc<DataPlane>,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let h = *h;
    let lookup = |name: &str| h.get(name).map(lossy);
    let mut edits = Vec::new();
    if t.view.plugins.policy.is_some() {
        let rh = RequestHead {
            method: lossy(h.span(&r.method)),
            path: lossy(h.span(&r.path)),
            authority: r
                .authority
                .as_ref()
                .map(|a| h.span(a))
                .or_else(|| h.get("host"))
                .map(lossy)
                .unwrap_or_default(),
            headers: h
                .iter()
                .map(|(n, v)| Header {
                    name: lossy(n).to_ascii_lowercase(),
                    value: lossy(v),
                })
                .collect(),
        };
        let ctx = context(&h, r, c.peer, &t, &lookup);
        match dp.plugins.on_request(&t.view, &ctx, t.port().port, &rh) {
            Action::Continue(e) => edits = e,
            Action::Respond(resp) => {
                let set: Vec<(&str, &str)> = resp
                    .headers
                    .iter()
                    .map(|f| (f.name.as_str(), f.value.as_str()))
                    .collect();
                let code = if (200..600).contains(&resp.status) {
                    resp.status
                } else {
                    403
                };
                return local(io, c, &t, r, code, &set, &resp.body).await;
            }
            Action::Reroute(to) => match dp.reroute(&to) {
                Some(other) => t = other,
                None => {
                    let msg = format!(
                        "switchyard: the policy rerouted to {to:?}, which is not a Service port here\n"
                    );
                    return local(io, c, &t, r, 502, &[], msg.as_bytes()).await;
                }
            },
        }
    }
    head::write_request(&mut c.out, &h, r, &edits, &c.client);
    if r.expect_continue && r.framing != Framing::Empty {
        // Answered here (the field is not passed on), so the body follows at once.
        if io
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
        {
            return Next::Close;
        }
    }
    forward(io, c, &h, r, &t, dp, &lookup).await
}

/// Picks, connects (bounded retries), sends the request and relays the response.
async fn forward<S>(
    io: &mut S,
    c: &mut Conn,
    h: &Head<'_>,
    r: &head::Request,
    t: &Arc<Target>,
    dp: &Arc<DataPlane>,
    lookup: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let m = &t.metrics;
    let attempts = dp.settings.connect_attempts.min(super::tcp::MAX_ATTEMPTS);
    let mut tried = [usize::MAX; super::tcp::MAX_ATTEMPTS];
    let mut last_error = String::new();
    let replayable = r.replayable(h);
    let mut attempt = 0;
    while attempt < attempts {
        let ctx = context(h, r, c.peer, t, lookup);
        let Some(index) = dp.choose(t, &ctx, &tried[..attempt]) else {
            if attempt == 0 {
                m.reject(Reason::NoEndpoint);
                let msg = format!(
                    "switchyard: no ready endpoint for Service {} port {}\n",
                    t.route.service,
                    t.port().port
                );
                return local(io, c, t, r, 503, &[], msg.as_bytes()).await;
            }
            break;
        };
        tried[attempt] = index;
        let addr = t.endpoint_addr(index);
        let started = Instant::now();
        let pooled = if r.upgrade.is_none() {
            upstream::pooled(addr)
        } else {
            None
        };
        let reused = pooled.is_some();
        let mut up = match pooled {
            Some(s) => s,
            None => match upstream::connect(addr, dp.settings.connect_timeout).await {
                Ok(s) => {
                    m.connect_seconds.observe(started.elapsed().as_secs_f64());
                    s
                }
                Err(e) => {
                    m.connect_errors.inc();
                    let micros = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    dp.feedback(t, index, micros, 0, false);
                    last_error = format!("{addr}: {e}");
                    attempt += 1;
                    continue;
                }
            },
        };
        let sent = Instant::now();
        match send(io, c, &mut up, r).await {
            Ok(()) => {}
            Err(Fail::Client) => return Next::Close,
            Err(Fail::Upstream(e)) if reused && replayable => {
                // A pooled connection the endpoint had closed: the same pick again, fresh.
                last_error = format!("{addr}: {e}");
                tried[attempt] = usize::MAX;
                continue;
            }
            Err(Fail::Upstream(e)) => {
                dp.feedback(t, index, 0, 0, false);
                return upstream_failed(io, c, t, r, addr, &e).await;
            }
        }
        match relay(io, c, &mut up, r, r.is_head(h), t).await {
            Relayed::Done {
                code,
                reusable,
                keep,
            } => {
                let micros = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
                m.response_seconds.observe(micros as f64 / 1e6);
                dp.feedback(t, index, 0, micros, code < 500);
                if reusable {
                    upstream::checkin(addr, up);
                }
                return if keep { Next::KeepAlive } else { Next::Close };
            }
            Relayed::Upgraded => {
                dp.feedback(t, index, 0, 0, true);
                return Next::Tunnel(up, addr, t.clone());
            }
            Relayed::NoResponse(e) if reused && replayable => {
                last_error = format!("{addr}: {e}");
                tried[attempt] = usize::MAX;
                continue;
            }
            Relayed::NoResponse(e) => {
                dp.feedback(t, index, 0, 0, false);
                return upstream_failed(io, c, t, r, addr, &e).await;
            }
            Relayed::Cut => {
                dp.feedback(t, index, 0, 0, false);
                return Next::Close;
            }
        }
    }
    m.reject(Reason::ConnectFailed);
    let msg = format!(
        "switchyard: no endpoint of Service {} port {} accepted the request (last: {last_error})\n",
        t.route.service,
        t.port().port
    );
    local(io, c, t, r, 502, &[], msg.as_bytes()).await
}

async fn upstream_failed<S: AsyncWrite + Unpin>(
    io: &mut S,
    c: &mut Conn,
    t: &Target,
    r: &head::Request,
    addr: SocketAddr,
    e: &str,
) -> Next {
    t.metrics.reject(Reason::ConnectFailed);
    let msg = format!("switchyard: upstream {addr} failed: {e}\n");
    local(io, c, t, r, 502, &[], msg.as_bytes()).await
}
