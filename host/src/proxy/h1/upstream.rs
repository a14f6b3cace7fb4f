//! Idle keep-alive upstream connections of the HTTP/1 path, per worker thread and endpoint:
//! a checkout takes no lock and makes no syscall. A connection the endpoint closed while
//! idle is noticed from the reactor's readiness (a read that would not block means EOF or
//! stray bytes) and dropped. Response read buffers are per worker too ([`Scratch`]).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;

use rustc_hash::FxHashMap;
use tokio::net::TcpStream;

/// Idle connections kept per endpoint and worker.
const MAX_IDLE: usize = 256;

/// Response buffers kept per worker, and the largest one kept.
const MAX_SCRATCH: usize = 64;
const MAX_SCRATCH_BYTES: usize = 256 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static IDLE: RefCell<FxHashMap<SocketAddr, Vec<TcpStream>>> =
        RefCell::new(FxHashMap::default());
}

/// An idle connection to `addr` that still looks open.
pub fn pooled(addr: SocketAddr) -> Option<TcpStream> {
    IDLE.with(|p| {
        let mut p = p.borrow_mut();
        let idle = p.get_mut(&addr)?;
        while let Some(s) = idle.pop() {
            // Idle means nothing to read: WouldBlock. Readiness is the reactor's, so this
            // makes a syscall only when the socket did become readable (EOF, stray bytes).
            match s.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(s),
                _ => continue,
            }
        }
        None
    })
}

/// A new connection to `addr`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let s = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Gives a connection whose last response ended cleanly back for reuse.
pub fn checkin(addr: SocketAddr, s: TcpStream) {
    IDLE.with(|p| {
        let mut p = p.borrow_mut();
        let idle = p.entry(addr).or_default();
        if idle.len() < MAX_IDLE {
            idle.push(s);
        }
    });
}

/// A response read buffer: an exchange takes one while it relays a response and gives it
/// back on drop, so an idle client connection holds none.
pub struct Scratch(BytesMut);

impl Scratch {
    pub fn take() -> Self {
        Scratch(SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default())
    }
}

impl std::ops::Deref for Scratch {
    type Target = BytesMut;
    fn deref(&self) -> &BytesMut {
        &self.0
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut b = std::mem::take(&mut self.0);
        b.clear();
        if b.capacity() <= MAX_SCRATCH_BYTES {
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < MAX_SCRATCH {
                    s.push(b);
                }
            });
        }
    }
}
