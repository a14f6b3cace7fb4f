//! Bounded draining: a TCP connection to an endpoint that left its Service keeps running for
//! at most `--drain-timeout-s`, then is closed. Each worker keeps its open connections per
//! (Service port, endpoint) in a thread-local table (no lock); the reconciler, seeing an
//! endpoint go, schedules a check on every worker after the timeout, which closes the ones
//! still connected to an endpoint that has not come back: a plain TCP connection by shutting
//! its two sockets down (its relay then ends it as on any close), an upgraded HTTP tunnel
//! by waking the `Notify` its task selects on.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use tokio::sync::Notify;

use super::select::Target;

type Key = (u64, SocketAddr);

thread_local! {
    static OPEN: RefCell<FxHashMap<Key, FxHashMap<u64, Cut>>> =
        RefCell::new(FxHashMap::default());
    static NEXT_ID: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How a connection is closed when its endpoint has been gone for the drain timeout.
enum Cut {
    /// Wake the connection's task, which selects on this.
    Wake(Arc<Notify>),
    /// `shutdown(2)` both sockets (client, endpoint).
    Shutdown([RawFd; 2]),
}

/// A connection's entry in its worker's table; removed on drop.
pub struct Registration {
    key: Key,
    id: u64,
}

fn insert(t: &Target, endpoint: SocketAddr, cut: Cut) -> Registration {
    let key = (t.affinity_key, endpoint);
    let id = NEXT_ID.with(|n| {
        n.set(n.get() + 1);
        n.get()
    });
    OPEN.with(|o| o.borrow_mut().entry(key).or_default().insert(id, cut));
    Registration { key, id }
}

/// Registers a connection of `t`'s Service port to `endpoint` on this worker; the `Notify`
/// fires when it is to be closed.
pub fn register(t: &Target, endpoint: SocketAddr) -> (Registration, Arc<Notify>) {
    let cut = Arc::new(Notify::new());
    (insert(t, endpoint, Cut::Wake(cut.clone())), cut)
}

/// Registers a TCP connection of `t`'s Service port to `endpoint` by its two sockets, which
/// are shut down when it is to be closed. The registration must be dropped before the
/// sockets are closed (the relay's completion drops it first): while it lives, the
/// descriptors name them.
pub fn register_sockets(t: &Target, endpoint: SocketAddr, fds: [RawFd; 2]) -> Registration {
    insert(t, endpoint, Cut::Shutdown(fds))
}

impl Drop for Registration {
    fn drop(&mut self) {
        OPEN.with(|o| {
            let mut o = o.borrow_mut();
            if let Some(m) = o.get_mut(&self.key) {
                m.remove(&self.id);
                if m.is_empty() {
                    o.remove(&self.key);
                }
            }
        });
    }
}

/// The endpoints of `old`'s Service port that `new` no longer has.
pub fn gone(old: &Target, new: &Target) -> Vec<SocketAddr> {
    fn port(t: &Target) -> &crate::snapshot::PortView {
        &t.source.ports[t.route.port_index]
    }
    let now = port(new);
    port(old)
        .endpoints
        .iter()
        .filter(|e| {
            !now.endpoints
                .iter()
                .any(|n| n.addr == e.addr && n.port == e.port)
        })
        .map(|e| SocketAddr::new(e.addr, e.port))
        .collect()
}

/// Runs on a worker: after `timeout`, closes this worker's connections to those of `gone`
/// that the listener's current target still lacks. Returns how many it closed.
pub async fn cut_after(
    timeout: Duration,
    target: Arc<ArcSwap<Target>>,
    gone: Vec<SocketAddr>,
) -> usize {
    tokio::time::sleep(timeout).await;
    let t = target.load();
    let eps = &t.source.ports[t.route.port_index].endpoints;
    let mut closed = 0;
    for addr in gone {
        if eps
            .iter()
            .any(|e| e.addr == addr.ip() && e.port == addr.port())
        {
            continue; // it came back
        }
        let conns = OPEN.with(|o| o.borrow_mut().remove(&(t.affinity_key, addr)));
        for (_, cut) in conns.into_iter().flatten() {
            match cut {
                Cut::Wake(n) => n.notify_one(),
                Cut::Shutdown(fds) => {
                    for fd in fds {
                        // SAFETY: the entry was in this worker's table, so its connection
                        // (on this thread, not running now) still holds both sockets open;
                        // shutdown(2) only changes their state.
                        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                    }
                }
            }
            closed += 1;
        }
    }
    closed
}
