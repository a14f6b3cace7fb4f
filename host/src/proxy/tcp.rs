//! L4 TCP: accept → source ranges → policy `on-connect` → pick (affinity, plugin or native)
//! → connect with a timeout, retrying other endpoints (bounded) and telling the balancer how
//! each attempt went → the worker's [`super::relay`] copies both ways with half-close (a TLS
//! connection is copied by its task). Refusals reset the connection (RST), as kube-proxy
//! rejects traffic for a Service without endpoints.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};

use super::DataPlane;
use super::metrics::Reason;
use super::select::Target;
use crate::plugin::Request;
use crate::plugin::bindings::types::Outcome;

/// Accepts on one worker's socket until the listener is closed (its task aborted), handing
/// each connection to `on`. Shared by the TCP and HTTP listeners.
pub(super) async fn accept_loop(
    std: std::net::TcpListener,
    mut on: impl FnMut(TcpStream, SocketAddr),
) {
    let listener = match TcpListener::from_std(std) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "registering a listener with the worker");
            return;
        }
    };
    let mut last_error: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => on(sock, peer),
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    tracing::warn!(error = %e, "accept failed");
                    last_error = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves one worker's socket of an L4 listener.
pub(super) async fn serve(
    std: std::net::TcpListener,
    target: Arc<ArcSwap<Target>>,
    dp: Arc<DataPlane>,
) {
    accept_loop(std, |sock, peer| {
        tokio::spawn(connection(sock, peer, target.load_full(), dp.clone()));
    })
    .await
}

/// Closes `sock` with a reset rather than a FIN.
pub(super) fn reset(sock: TcpStream) {
    let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO));
}

/// How long a client may take to complete the TLS handshake.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Completes the TLS handshake when the listener terminates TLS: `Ok(None)` for a plain
/// listener, `Err(())` (counted) when the listener cannot serve TLS or the handshake fails.
pub(super) async fn accept_tls(
    t: &Target,
    sock: TcpStream,
) -> Result<Result<Box<tokio_rustls::server::TlsStream<TcpStream>>, TcpStream>, ()> {
    match &t.tls {
        None => Ok(Err(sock)),
        Some(Err(_)) => {
            t.metrics.reject(Reason::Tls);
            reset(sock);
            Err(())
        }
        Some(Ok(cfg)) => {
            // Boxed, so a plain connection's state machine does not carry room for a TLS
            // session (that cost ~5 KiB per idle connection).
            let accept = Box::pin(tokio_rustls::TlsAcceptor::from(cfg.clone()).accept(sock));
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                Ok(Ok(s)) => Ok(Ok(Box::new(s))),
                _ => {
                    t.metrics.reject(Reason::Tls);
                    Err(())
                }
            }
        }
    }
}

async fn connection(sock: TcpStream, peer: SocketAddr, t: Arc<Target>, dp: Arc<DataPlane>) {
    let m = &t.metrics;
    m.connections.inc();
    if !t.admits(peer.ip()) {
        m.reject(Reason::SourceRange);
        return reset(sock);
    }
    let service_addr = sock.local_addr().unwrap_or(peer);
    let _ = sock.set_nodelay(true);
    let Ok(client) = accept_tls(&t, sock).await else {
        return;
    };
    let mut req = Request::tcp(peer);
    req.node_local = t.node_local;
    let Some((mut upstream, index, connect_micros)) = dp.connect(&t, &req).await else {
        if let Err(sock) = client {
            reset(sock);
        }
        return;
    };
    if t.proxy_protocol
        && let Err(e) = send_proxy_header(&mut upstream, peer, service_addr).await
    {
        tracing::debug!(service = %t.route.service, error = %e, "writing the PROXY header failed");
        dp.feedback(&t, index, connect_micros, 0, false);
        return;
    }
    let _ = upstream.set_nodelay(true);
    m.active.inc();
    // The endpoint leaving the Service ends the connection after the drain timeout: the
    // registration lets the worker shut both sockets down, which ends the copy below on its
    // own (nothing extra to poll on every wake-up). `finish` drops it, and its entry is gone,
    // before the sockets close.
    let drain = (!dp.settings.drain_timeout.is_zero()).then(|| {
        let client_fd = match &client {
            Err(sock) => sock.as_raw_fd(),
            Ok(tls) => tls.get_ref().0.as_raw_fd(),
        };
        super::drain::register_sockets(
            &t,
            t.endpoint_addr(index),
            [client_fd, upstream.as_raw_fd()],
        )
    });
    // A plain connection that lasts ends on its worker's relay thread: a balancer that counts
    // connections hears of it back on this worker, where its instance lives (one that did not
    // ask costs the relay thread nothing).
    let worker = dp.wants_feedback(&t).then(tokio::runtime::Handle::current);
    let finish = move |result: std::io::Result<[u64; 2]>| {
        drop(drain);
        let m = &t.metrics;
        m.active.dec();
        if let Ok([from_client, to_client]) = result {
            m.received.inc_by(from_client);
            m.sent.inc_by(to_client);
        }
        // Only the worker runs a tokio runtime; the relay thread does not.
        if tokio::runtime::Handle::try_current().is_ok() {
            dp.feedback(&t, index, connect_micros, 0, true);
        } else if let Some(worker) = worker {
            worker.spawn(async move { dp.feedback(&t, index, connect_micros, 0, true) });
        }
    };
    match client {
        Err(sock) => super::relay::adopt(sock, upstream, Box::new(finish)),
        Ok(mut tls) => {
            let result = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            // The drain registration goes (in `finish`) before the sockets close.
            finish(result.map(|(a, b)| [a, b]));
        }
    }
}

/// Writes a PROXY protocol v2 header (`client` → `service`) to a fresh upstream connection,
/// so the backend sees the client's address.
async fn send_proxy_header(
    upstream: &mut TcpStream,
    client: SocketAddr,
    service: SocketAddr,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let header = proxy_header(client, service, ppp::v2::Protocol::Stream)?;
    upstream.write_all(&header).await
}

/// A PROXY protocol v2 header saying `client` → `service` over `protocol` (stream for TCP,
/// datagram for UDP). Mixed families are sent as IPv6 (v4-mapped).
pub(super) fn proxy_header(
    client: SocketAddr,
    service: SocketAddr,
    protocol: ppp::v2::Protocol,
) -> std::io::Result<Vec<u8>> {
    use ppp::v2::{Builder, Command, Version};
    let v6 = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    };
    let pair = if client.is_ipv4() == service.is_ipv4() {
        (client, service)
    } else {
        (v6(client), v6(service))
    };
    Builder::with_addresses(Version::Two | Command::Proxy, protocol, pair).build()
}

impl DataPlane {
    /// Policy, pick and connect with bounded retries; `None` when the connection must be
    /// refused (counted with its reason).
    pub(super) async fn connect(
        &self,
        t: &Target,
        req: &Request<'_>,
    ) -> Option<(TcpStream, usize, u32)> {
        let m = &t.metrics;
        if !self.admit(t, req) {
            m.reject(Reason::Policy);
            return None;
        }
        let mut tried = [usize::MAX; MAX_ATTEMPTS];
        for attempt in 0..self.settings.connect_attempts.min(MAX_ATTEMPTS) {
            let Some(index) = self.choose(t, req, &tried[..attempt]) else {
                m.reject(if attempt == 0 {
                    Reason::NoEndpoint
                } else {
                    Reason::ConnectFailed
                });
                return None;
            };
            tried[attempt] = index;
            let addr = t.endpoint_addr(index);
            let started = Instant::now();
            let result =
                tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(addr)).await;
            let micros = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
            match result {
                Ok(Ok(s)) => {
                    m.connect_seconds.observe(micros as f64 / 1e6);
                    return Some((s, index, micros));
                }
                Ok(Err(e)) => self.connect_failed(t, index, micros, &e.to_string()),
                Err(_) => self.connect_failed(t, index, micros, "timed out"),
            }
            self.affinity.forget(t, req.client.ip());
        }
        m.reject(Reason::ConnectFailed);
        None
    }

    fn connect_failed(&self, t: &Target, index: usize, micros: u32, error: &str) {
        t.metrics.connect_errors.inc();
        self.feedback(t, index, micros, 0, false);
        let addr = t.endpoint_addr(index);
        tracing::debug!(service = %t.route.service, endpoint = %addr, error, "upstream connect failed");
    }
}

impl DataPlane {
    /// Whether `t`'s balancer on this worker asked to hear how each connection went.
    pub(super) fn wants_feedback(&self, t: &Target) -> bool {
        self.plugins
            .wants_feedback(&t.view, t.route.port_index, t.node_local)
    }

    /// Tells the balancer plugin (if any) how a connection or request it picked for went:
    /// once per pick, when it finishes (or its connect fails).
    pub(super) fn feedback(
        &self,
        t: &Target,
        index: usize,
        connect_micros: u32,
        response_micros: u32,
        success: bool,
    ) {
        if t.view.plugins.balancer.is_some() {
            self.plugins.feedback(
                &t.view,
                t.route.port_index,
                t.node_local,
                index,
                Outcome {
                    connect_micros,
                    response_micros,
                    success,
                },
            );
        }
    }
}

/// Most endpoints tried for one connection.
pub(super) const MAX_ATTEMPTS: usize = 8;
