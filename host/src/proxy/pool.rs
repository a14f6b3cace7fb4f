//! Per-worker upstream HTTP connections: keep-alive HTTP/1.1 connections kept idle per
//! endpoint, and one multiplexed HTTP/2 connection per endpoint. Thread-local, so a checkout
//! takes no lock; an HTTP/1.1 connection goes back to the pool when the response body it
//! carried has been read to the end (see [`Returning`]).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustc_hash::FxHashMap;
use tokio::net::TcpStream;

/// Idle HTTP/1.1 connections kept per endpoint and worker.
const MAX_IDLE: usize = 256;

thread_local! {
    static IDLE: RefCell<FxHashMap<SocketAddr, Vec<http1::SendRequest<Incoming>>>> =
        RefCell::new(FxHashMap::default());
    static H2: RefCell<FxHashMap<SocketAddr, http2::SendRequest<Incoming>>> =
        RefCell::new(FxHashMap::default());
}

pub enum Sender {
    H1(http1::SendRequest<Incoming>),
    H2(http2::SendRequest<Incoming>),
}

/// A connection to `addr`: pooled if one is idle (`true`), else new. `upgrade`: a new HTTP/1.1
/// connection of its own that may switch protocols (never pooled).
pub async fn checkout(
    addr: SocketAddr,
    h2: bool,
    upgrade: bool,
    connect_timeout: Duration,
) -> std::io::Result<(Sender, bool)> {
    if !upgrade && let Some(s) = pooled(addr, h2).await {
        return Ok((s, true));
    }
    let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    let io = TokioIo::new(tcp);
    if h2 {
        let (s, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H2.with(|p| p.borrow_mut().insert(addr, s.clone()));
        Ok((Sender::H2(s), false))
    } else {
        let (s, conn) = http1::handshake(io).await.map_err(std::io::Error::other)?;
        if upgrade {
            tokio::spawn(async move {
                let _ = conn.with_upgrades().await;
            });
        } else {
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        Ok((Sender::H1(s), false))
    }
}

/// The worker's HTTP/2 connection to `addr`, or an idle HTTP/1.1 one, if usable.
async fn pooled(addr: SocketAddr, h2: bool) -> Option<Sender> {
    if h2 {
        return H2.with(|p| {
            let mut p = p.borrow_mut();
            match p.get(&addr) {
                Some(s) if !s.is_closed() && s.is_ready() => Some(Sender::H2(s.clone())),
                Some(_) => {
                    p.remove(&addr);
                    None
                }
                None => None,
            }
        });
    }
    while let Some(mut s) = IDLE.with(|p| p.borrow_mut().get_mut(&addr).and_then(Vec::pop)) {
        if s.is_closed() {
            continue;
        }
        // Ready at once unless the connection task has not yet seen the last body end.
        if s.ready().await.is_ok() {
            return Some(Sender::H1(s));
        }
    }
    None
}

fn checkin(addr: SocketAddr, s: http1::SendRequest<Incoming>) {
    if s.is_closed() {
        return;
    }
    IDLE.with(|p| {
        let mut p = p.borrow_mut();
        let idle = p.entry(addr).or_default();
        if idle.len() < MAX_IDLE {
            idle.push(s);
        }
    });
}

/// An upstream response body that gives its HTTP/1.1 connection back to the pool when it was
/// read to the end (a body dropped half-read closes its connection instead).
pub struct Returning {
    body: Incoming,
    back: Option<(SocketAddr, http1::SendRequest<Incoming>)>,
    ended: bool,
}

impl Returning {
    pub fn new(body: Incoming, back: Option<(SocketAddr, http1::SendRequest<Incoming>)>) -> Self {
        Returning {
            body,
            back,
            ended: false,
        }
    }
}

impl Body for Returning {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let Some((addr, s)) = self.back.take()
            && (self.ended || self.body.is_end_stream())
        {
            checkin(addr, s);
        }
    }
}
