//! HTTP/1.1 upgrades (WebSocket and any other `Upgrade:` protocol) in HTTP mode: the request
//! keeps its `Connection: upgrade` and `Upgrade` headers, goes upstream on a connection of its
//! own (never pooled), and when the endpoint answers `101 Switching Protocols` both sides
//! become one byte tunnel until either closes (or the endpoint leaves the Service and the
//! drain timeout passes). Touches only the two upgraded streams.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::header::{HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::metrics::PortMetrics;
use super::select::Target;

/// The `Upgrade` value of an HTTP/1.1 request that asks for one (`Connection` names the
/// `upgrade` option). `h2c` is not passed on: the upstream leg is HTTP/1.1 or HTTP/2 by the
/// port's `appProtocol`, not by what a client offers.
pub(super) fn requested(h: &HeaderMap) -> Option<HeaderValue> {
    let asks = h
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|o| o.trim().eq_ignore_ascii_case("upgrade"));
    let proto = h.get(hyper::header::UPGRADE)?;
    let h2c = proto
        .to_str()
        .is_ok_and(|p| p.trim().eq_ignore_ascii_case("h2c"));
    (asks && !h2c).then(|| proto.clone())
}

/// Puts the upgrade request headers back (after hop-by-hop headers were stripped).
pub(super) fn restore(h: &mut HeaderMap, proto: HeaderValue) {
    h.insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    h.insert(hyper::header::UPGRADE, proto);
}

/// Joins the client's and the endpoint's upgraded connections (hyper's path) and copies both
/// ways until either side closes.
pub(super) async fn tunnel(
    client: OnUpgrade,
    endpoint: OnUpgrade,
    to: SocketAddr,
    target: Arc<Target>,
    drain: bool,
) {
    let (c, e) = tokio::join!(client, endpoint);
    let (Ok(c), Ok(e)) = (c, e) else {
        tracing::debug!("an upgraded connection ended before it was handed over");
        return;
    };
    let m: &PortMetrics = &target.metrics;
    // hyper's connection task has ended: the tunnel is a connection of its own.
    m.active.inc();
    pipe(TokioIo::new(c), TokioIo::new(e), to, &target, drain).await;
    m.active.dec();
}

/// Copies between an upgraded client and the endpoint at `to` both ways until either side
/// closes, counting bytes into the Service port's metrics as they pass (the caller counts the
/// connection as active). `drain`: the tunnel is closed once `to` has left the Service for
/// the drain timeout, as TCP connections are.
pub(super) async fn pipe<C, E>(client: C, endpoint: E, to: SocketAddr, target: &Target, drain: bool)
where
    C: AsyncRead + AsyncWrite + Unpin,
    E: AsyncRead + AsyncWrite + Unpin,
{
    let m: &PortMetrics = &target.metrics;
    let mut c = Counted {
        io: client,
        read: m.received.clone(),
    };
    let mut e = Counted {
        io: endpoint,
        read: m.sent.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut c, &mut e);
    let result = if drain {
        let (_reg, cut) = super::drain::register(target, to);
        tokio::select! {
            biased;
            r = copy => r,
            _ = cut.notified() => Err(std::io::Error::other("drained")),
        }
    } else {
        copy.await
    };
    if let Err(err) = result {
        tracing::trace!(service = %target.route.service, error = %err, "upgraded connection ended with an error");
    }
}

/// A stream that adds what is read from it to a counter.
struct Counted<T> {
    io: T,
    read: Counter,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        self.read.inc_by((buf.filled().len() - before) as u64);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn an_upgrade_needs_both_headers_and_is_not_h2c() {
        let ws = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(requested(&ws).unwrap(), "websocket");
        assert!(requested(&headers(&[("upgrade", "websocket")])).is_none());
        assert!(requested(&headers(&[("connection", "upgrade")])).is_none());
        let h2c = headers(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ]);
        assert!(requested(&h2c).is_none());
    }
}
