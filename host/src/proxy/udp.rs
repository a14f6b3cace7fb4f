//! L4 UDP: a flow per client address, picked once (source ranges, policy, balancer) and kept
//! until it is idle for `--udp-timeout`. Each flow has its own connected upstream socket;
//! replies go back to the client from the listening socket, so they come from the Service
//! address the client sent to. The flows' tasks live in the listener task's `JoinSet`, so
//! closing the listener ends them at once. A flow whose endpoint leaves the Service ends at
//! its next datagram, which picks again (kube-proxy clears such UDP conntrack entries).
//! With `switchyard.io/proxy-protocol: v2` every datagram to the endpoint starts with a
//! PROXY v2 header (datagram, client → Service address), written in front of the payload
//! in the receive buffer, so it costs no copy of the payload.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

use super::DataPlane;
use super::metrics::Reason;
use super::select::Target;
use crate::plugin::Request;
use crate::plugin::bindings::types::Protocol;

struct Flow {
    upstream: Arc<UdpSocket>,
    endpoint: SocketAddr,
    /// The listener target the endpoint was last seen usable in (weak: it keeps the
    /// allocation, so the pointer cannot be reused by a later target).
    seen: Mutex<Weak<Target>>,
    /// Wakes the reply task when the flow ends for its endpoint leaving.
    ended: tokio::sync::Notify,
    /// The PROXY v2 header every datagram to the endpoint starts with, if the Service asks.
    header: Option<Box<[u8]>>,
    /// Milliseconds since `epoch` of the last datagram either way.
    last: AtomicU64,
    refused: AtomicBool,
}

type Flows = Arc<Mutex<FxHashMap<SocketAddr, Arc<Flow>>>>;

/// Room in front of each received datagram for a PROXY v2 header (IPv6: 16 + 36 bytes).
const ROOM: usize = 52;
/// Datagrams taken from one listener per wake-up before the worker serves others.
const BATCH: usize = 64;

thread_local! {
    /// One datagram buffer per worker for replies (flows on a worker never run at once).
    static REPLY: RefCell<Box<[u8]>> = RefCell::new(vec![0; 65536].into_boxed_slice());
    /// One buffer per worker for what clients send, `ROOM` in front: listeners on a worker
    /// never run at once and none holds it across an await, so a listener costs no buffer
    /// of its own (64 KiB each was 245 MB with 3,700 UDP ports).
    static RECV: RefCell<Box<[u8]>> = RefCell::new(vec![0; ROOM + 65536].into_boxed_slice());
}

/// What became of one datagram taken from the listening socket.
enum Taken {
    /// None waiting.
    Empty,
    /// Passed to its flow's endpoint, or dropped.
    Done,
    /// From a client without a usable flow: opening one is async, so the payload is copied.
    NewFlow(SocketAddr, Vec<u8>),
}

pub(super) async fn serve(
    std: std::net::UdpSocket,
    target: Arc<ArcSwap<Target>>,
    dp: Arc<DataPlane>,
) {
    let sock = match UdpSocket::from_std(std) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %e, "registering a UDP listener with the worker");
            return;
        }
    };
    let epoch = Instant::now();
    let flows: Flows = Arc::default();
    let mut tasks = JoinSet::new();
    let service = sock.local_addr().ok();
    loop {
        tokio::select! {
            r = sock.readable() => {
                if r.is_err() {
                    continue;
                }
                let mut drained = false;
                for _ in 0..BATCH {
                    let (client, payload) = match take(&sock, &flows, &target, epoch) {
                        Taken::Empty => {
                            drained = true;
                            break;
                        }
                        Taken::Done => continue,
                        Taken::NewFlow(client, payload) => (client, payload),
                    };
                    let t = target.load_full();
                    let Some(f) = open(&t, client, service, &dp).await else { continue };
                    flows.lock().insert(client, f.clone());
                    tasks.spawn(replies(f.clone(), client, sock.clone(), flows.clone(), t.clone(), dp.clone(), epoch));
                    received(&f, &t, epoch, payload.len());
                    let datagram = match &f.header {
                        Some(h) => [&h[..], &payload].concat(),
                        None => payload,
                    };
                    let _ = f.upstream.send(&datagram).await;
                }
                if !drained {
                    // The socket is still readable: let the worker's other tasks run first.
                    tokio::task::yield_now().await;
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// Books `n` bytes from the client on `flow`: its idle clock restarts, the port counts them.
fn received(flow: &Flow, t: &Target, epoch: Instant, n: usize) {
    flow.last
        .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    t.metrics.received.inc_by(n as u64);
}

/// Takes one datagram from `sock` into the worker's buffer and, when its client has a usable
/// flow, sends it on at once (PROXY header written into the room in front of it).
fn take(sock: &UdpSocket, flows: &Flows, target: &ArcSwap<Target>, epoch: Instant) -> Taken {
    RECV.with(|b| {
        let mut buf = b.borrow_mut();
        let (n, client) = match sock.try_recv_from(&mut buf[ROOM..]) {
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Taken::Empty,
            Err(_) => return Taken::Done,
        };
        let known = flows.lock().get(&client).cloned();
        let Some(flow) = known.filter(|f| still_usable(f, &target.load(), client, flows)) else {
            return Taken::NewFlow(client, buf[ROOM..ROOM + n].to_vec());
        };
        received(&flow, &target.load(), epoch, n);
        let start = match &flow.header {
            Some(h) if h.len() <= ROOM => {
                buf[ROOM - h.len()..ROOM].copy_from_slice(h);
                ROOM - h.len()
            }
            _ => ROOM,
        };
        // Non-blocking: a datagram the endpoint's socket cannot take now is dropped, as
        // the network may drop any datagram.
        let _ = flow.upstream.try_send(&buf[start..ROOM + n]);
        Taken::Done
    })
}

/// Whether `f` still fits the listener's target `t`: its endpoint usable, its PROXY header
/// as the Service asks. If not, the flow ends (its reply task stops) and is forgotten.
fn still_usable(f: &Arc<Flow>, t: &Arc<Target>, client: SocketAddr, flows: &Flows) -> bool {
    let mut seen = f.seen.lock();
    if std::ptr::eq(seen.as_ptr(), Arc::as_ptr(t)) {
        return true;
    }
    if t.find(f.endpoint).is_some() && t.proxy_protocol == f.header.is_some() {
        *seen = Arc::downgrade(t);
        return true;
    }
    drop(seen);
    forget(flows, client, f);
    f.ended.notify_one();
    false
}

/// Removes `f` from the table if it still is `client`'s flow.
fn forget(flows: &Flows, client: SocketAddr, f: &Arc<Flow>) {
    let mut flows = flows.lock();
    if flows.get(&client).is_some_and(|g| Arc::ptr_eq(g, f)) {
        flows.remove(&client);
    }
}

/// A new flow: admission and pick; `None` drops the datagram (counted).
async fn open(
    t: &Arc<Target>,
    client: SocketAddr,
    service: Option<SocketAddr>,
    dp: &DataPlane,
) -> Option<Arc<Flow>> {
    let m = &t.metrics;
    m.connections.inc();
    if !t.admits(client.ip()) {
        m.reject(Reason::SourceRange);
        return None;
    }
    let mut req = Request::tcp(client);
    req.protocol = Protocol::Udp;
    req.node_local = t.node_local;
    if !dp.admit(t, &req) {
        m.reject(Reason::Policy);
        return None;
    }
    let Some(index) = dp.choose(t, &req, &[]) else {
        m.reject(Reason::NoEndpoint);
        return None;
    };
    let addr = t.endpoint_addr(index);
    let local: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let upstream = match UdpSocket::bind(local).await {
        Ok(u) if u.connect(addr).await.is_ok() => u,
        _ => {
            m.reject(Reason::ConnectFailed);
            dp.feedback(t, index, 0, 0, false);
            return None;
        }
    };
    let header = match service {
        Some(service) if t.proxy_protocol => {
            super::tcp::proxy_header(client, service, ppp::v2::Protocol::Datagram)
                .ok()
                .map(Vec::into_boxed_slice)
        }
        _ => None,
    };
    m.active.inc();
    Some(Arc::new(Flow {
        header,
        upstream: Arc::new(upstream),
        endpoint: addr,
        seen: Mutex::new(Arc::downgrade(t)),
        ended: tokio::sync::Notify::new(),
        last: AtomicU64::new(0),
        refused: AtomicBool::new(false),
    }))
}

async fn replies(
    flow: Arc<Flow>,
    client: SocketAddr,
    sock: Arc<UdpSocket>,
    flows: Flows,
    t: Arc<Target>,
    dp: Arc<DataPlane>,
    epoch: Instant,
) {
    let idle = dp.settings.udp_timeout;
    let index = t.find(flow.endpoint).unwrap_or(usize::MAX);
    loop {
        let since = epoch.elapsed().as_millis() as u64 - flow.last.load(Ordering::Relaxed);
        let left = idle.saturating_sub(Duration::from_millis(since));
        if left.is_zero() {
            break;
        }
        let ready = tokio::select! {
            r = tokio::time::timeout(left, flow.upstream.readable()) => r,
            _ = flow.ended.notified() => break,
        };
        match ready {
            Err(_) => continue, // re-check: the client may have sent meanwhile
            Ok(Err(_)) => break,
            Ok(Ok(())) => {
                let got = REPLY.with(|b| {
                    let mut b = b.borrow_mut();
                    match flow.upstream.try_recv(&mut b) {
                        Ok(n) => {
                            let _ = sock.try_send_to(&b[..n], client);
                            Ok(n)
                        }
                        Err(e) => Err(e),
                    }
                });
                match got {
                    Ok(n) => {
                        flow.last
                            .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                        t.metrics.sent.inc_by(n as u64);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    // ICMP port unreachable: nobody listens on the endpoint any more.
                    Err(_) => {
                        flow.refused.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
    forget(&flows, client, &flow);
    t.metrics.active.dec();
    if index != usize::MAX {
        dp.feedback(&t, index, 0, 0, !flow.refused.load(Ordering::Relaxed));
    }
}
