//! A relay's second stage: each worker's relay thread, with an epoll instance of its own
//! (through `mio`), copies the bytes of the worker's connections that have lasted
//! ([`super::task`] moves them here). A readiness event costs the thread one `epoll_wait`
//! slot and nothing else: no tokio driver bookkeeping, no waker, no task poll, and no syscall
//! beyond the read and the write. An idle connection costs a slab entry and no task.
//!
//! A ready socket is read into the thread's scratch buffer and written straight on to its
//! peer; bytes the peer cannot take at once wait in a per-direction stash until it can. A
//! connection's completion runs on this thread, before its sockets close (a balancer's
//! feedback, which needs the worker's plugin instance, is sent back there by
//! [`crate::proxy::tcp`]). While many connections are active the thread sleeps a short pause
//! after each batch ([`super::pace`]).

use std::cell::{Cell, RefCell};
use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use parking_lot::Mutex;
use slab::Slab;

use super::pace::{DEFAULT_PAUSE, Pacer};
use super::{Done, Half, READS_PER_TURN, SCRATCH_BYTES, Turn, ended};

/// The token of the relay's waker; connections use `key << 1 | side`.
const WAKE: Token = Token(usize::MAX);

thread_local! {
    /// This worker's relay thread, as far as it got.
    static RELAY: RefCell<Stage> = const { RefCell::new(Stage::NotStarted) };
    /// The pause this worker's relay thread takes after a batch while busy (`--relay-pause-us`).
    static PAUSE: Cell<Duration> = const { Cell::new(DEFAULT_PAUSE) };
}

/// Sets the pause of the relay thread this worker thread starts (zero: none).
pub(in crate::proxy) fn set_pause(pause: Duration) {
    PAUSE.set(pause);
}

/// Where a worker's relay thread stands.
enum Stage {
    NotStarted,
    Started(Arc<Relay>),
    /// It failed to start then: no new attempt before [`RETRY_START`] has passed.
    FailedAt(Instant),
}

#[cfg(test)]
thread_local! {
    /// Makes this worker's relay thread fail to start, as at a pids limit.
    pub(super) static FAIL_START: Cell<bool> = const { Cell::new(false) };
}

/// How long a worker whose relay thread failed to start waits before trying again.
const RETRY_START: Duration = Duration::from_secs(1);

/// This worker's relay thread, started if need be. `None` when it cannot start (a pids or
/// thread limit): the worker's connections then stay in its relay task, which serves them as
/// well, for dearer; a new attempt comes at most once per [`RETRY_START`].
pub(super) fn relay() -> Option<Arc<Relay>> {
    RELAY.with(|r| {
        let mut r = r.borrow_mut();
        match &*r {
            Stage::Started(relay) if relay.alive.load(Ordering::Acquire) => {
                return Some(relay.clone());
            }
            Stage::FailedAt(at) if at.elapsed() < RETRY_START => return None,
            // The first connection on this worker to move, the next attempt after a failed
            // start, or its relay thread died (a bug: the connections it held are closed, and
            // the next ones get a new thread).
            _ => {}
        }
        match Relay::start() {
            Ok(relay) => {
                *r = Stage::Started(relay.clone());
                Some(relay)
            }
            Err(e) => {
                *r = Stage::FailedAt(Instant::now());
                tracing::warn!(error = %e, retry_in = ?RETRY_START,
                    "could not start a relay thread: lasting L4 connections stay in the worker's relay task");
                None
            }
        }
    })
}

/// A worker's relay thread, as the worker sees it.
pub(super) struct Relay {
    inbox: Mutex<Vec<Adopted>>,
    waker: mio::Waker,
    /// Cleared when the thread ends (it only ends by panicking).
    alive: AtomicBool,
    /// Pauses taken after a batch.
    #[cfg(test)]
    pub(super) pauses: std::sync::atomic::AtomicU64,
}

struct Adopted {
    sockets: [std::net::TcpStream; 2],
    totals: [u64; 2],
    done: Done,
}

impl Relay {
    /// Hands a connection's two sockets (client, endpoint; non-blocking, in no epoll
    /// instance), which have copied `totals` bytes so far, to this relay thread; `done` runs
    /// there when the connection ends.
    pub(super) fn adopt(&self, sockets: [std::net::TcpStream; 2], totals: [u64; 2], done: Done) {
        let first = {
            let mut inbox = self.inbox.lock();
            inbox.push(Adopted {
                sockets,
                totals,
                done,
            });
            inbox.len() == 1
        };
        if first && let Err(e) = self.waker.wake() {
            tracing::error!(error = %e, "waking the relay thread failed");
        }
    }

    fn start() -> io::Result<Arc<Relay>> {
        #[cfg(test)]
        if FAIL_START.get() {
            return Err(io::Error::other("no relay thread (test)"));
        }
        let poll = Poll::new()?;
        let relay = Arc::new(Relay {
            inbox: Mutex::new(Vec::new()),
            waker: mio::Waker::new(poll.registry(), WAKE)?,
            alive: AtomicBool::new(true),
            #[cfg(test)]
            pauses: Default::default(),
        });
        // `sy-worker-3`'s relay is `sy-relay-3`: both fit the kernel's 15-byte thread name,
        // so `top -H` and /proc/<pid>/task/*/comm tell them apart.
        let name = std::thread::current().name().map_or_else(
            || "sy-relay".to_owned(),
            |n| n.replacen("worker", "relay", 1),
        );
        let r = relay.clone();
        let pause = PAUSE.get();
        std::thread::Builder::new().name(name).spawn(move || {
            let _dead = Dead(&r);
            run(poll, &r, pause);
        })?;
        Ok(relay)
    }
}

/// Marks the relay dead when its thread unwinds.
struct Dead<'a>(&'a Relay);

impl Drop for Dead<'_> {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Release);
        tracing::error!("a relay thread ended; its connections were closed");
    }
}

/// The relay thread: waits for events and moves the bytes they allow, for ever.
fn run(mut poll: Poll, relay: &Relay, pause: Duration) -> ! {
    let mut events = Events::with_capacity(256);
    let mut conns: Slab<Conn> = Slab::new();
    let mut scratch = vec![0u8; SCRATCH_BYTES].into_boxed_slice();
    let mut ready: Vec<usize> = Vec::new();
    let mut again: Vec<usize> = Vec::new();
    let mut adopted: Vec<Adopted> = Vec::new();
    let mut pacer = Pacer::new(pause, Instant::now());
    if !pause.is_zero() {
        // The pause is a few microseconds: the default timer slack of 50 µs would make it
        // several times longer. SAFETY: prctl with an integer argument touches no memory.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong) };
    }
    let mut paused = false;
    loop {
        // Connections with reads left to do go round again at once, after the others; after
        // a pause the thread looks once, and only sleeps in epoll_wait if nothing came.
        let timeout = (paused || !again.is_empty()).then_some(Duration::ZERO);
        paused = false;
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != ErrorKind::Interrupted {
                tracing::error!(error = %e, "the relay's epoll_wait failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        ready.append(&mut again);
        for ev in &events {
            if ev.token() == WAKE {
                std::mem::swap(&mut adopted, &mut relay.inbox.lock());
                continue;
            }
            let (key, side) = (ev.token().0 >> 1, ev.token().0 & 1);
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            pacer.saw(&mut conn.mark);
            let s = &mut conn.sockets[side];
            if ev.is_error() || ev.is_read_closed() {
                s.closed = true;
            }
            s.readable |= ev.is_readable() || s.closed;
            s.writable |= ev.is_writable() || ev.is_write_closed() || ev.is_error();
            ready.push(key);
        }
        for a in adopted.drain(..) {
            let entry = conns.vacant_entry();
            let key = entry.key();
            let [client, upstream] = a.sockets;
            let mut conn = Conn {
                sockets: [Side::new(client), Side::new(upstream)],
                halves: a.totals.map(|total| Half {
                    total,
                    ..Half::default()
                }),
                done: a.done,
                mark: 0,
            };
            let registered = conn.sockets.iter_mut().enumerate().try_for_each(|(i, s)| {
                poll.registry().register(
                    &mut s.sock,
                    Token(key << 1 | i),
                    Interest::READABLE | Interest::WRITABLE,
                )
            });
            match registered {
                Ok(()) => {
                    entry.insert(conn);
                }
                Err(e) => conn.finish(Err(e)),
            }
        }
        for key in ready.drain(..) {
            // A key may repeat (both sockets had events): the second pump finds nothing
            // ready and costs no syscall.
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            let before = conn.moved();
            let pumped = conn.pump(&mut scratch);
            pacer.moved(conn.moved() - before);
            let Some(result) = ended(pumped, key, &mut again) else {
                continue;
            };
            conns.remove(key).finish(result);
            if conns.is_empty() && conns.capacity() > 1024 {
                // Give back the room a burst of connections took.
                conns.shrink_to_fit();
            }
        }
        if !events.is_empty()
            && !pause.is_zero()
            && let Some(pause) = pacer.after_batch(Instant::now(), !again.is_empty())
        {
            std::thread::sleep(pause);
            paused = true;
            #[cfg(test)]
            relay.pauses.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A relayed connection: `sockets[0]` is the client's, `sockets[1]` the endpoint's;
/// `halves[0]` copies client → endpoint, `halves[1]` endpoint → client.
struct Conn {
    sockets: [Side; 2],
    halves: [Half; 2],
    done: Done,
    /// The last window [`Pacer`] counted this connection in.
    mark: u32,
}

/// A socket and what epoll last said of it.
struct Side {
    sock: MioStream,
    /// A read may find bytes (cleared when a read comes back short or would block).
    readable: bool,
    /// A write may take bytes (cleared when one would block).
    writable: bool,
    /// The peer's FIN or an error was reported: reads stay worth trying until they say so.
    closed: bool,
}

impl Side {
    fn new(sock: std::net::TcpStream) -> Side {
        Side {
            sock: MioStream::from_std(sock),
            // Registering reports what the socket is ready for at once (epoll queues an
            // event for a ready file on insertion), so nothing is tried blind.
            readable: false,
            writable: false,
            closed: false,
        }
    }
}

impl Conn {
    /// Moves whatever both directions can move now, up to [`READS_PER_TURN`] reads each;
    /// `Err` when a socket failed.
    fn pump(&mut self, scratch: &mut [u8]) -> io::Result<Turn> {
        let [client, upstream] = &mut self.sockets;
        let [up, down] = &mut self.halves;
        let up_waits = up.pump(client, upstream, scratch)?;
        let down_waits = down.pump(upstream, client, scratch)?;
        Ok(Turn::after([&*up, &*down], up_waits, down_waits))
    }

    /// Bytes read so far, both directions.
    fn moved(&self) -> u64 {
        self.halves[0].total + self.halves[1].total
    }

    /// Runs `done`, then closes the sockets (which takes them out of the epoll instance).
    fn finish(self, result: io::Result<[u64; 2]>) {
        let Conn { sockets, done, .. } = self;
        done(result);
        drop(sockets);
    }
}

impl Half {
    /// Copies `from` → `to` until one of them would block (`Ok(true)`), `from` has ended and
    /// its FIN has been passed on (`Ok(true)`), or the turn's reads are used up (`Ok(false)`).
    fn pump(&mut self, from: &mut Side, to: &mut Side, scratch: &mut [u8]) -> io::Result<bool> {
        for _ in 0..READS_PER_TURN {
            if !self.stash.is_empty() && !self.flush(to)? {
                return Ok(true);
            }
            if self.eof {
                if !self.shut {
                    self.shut = true;
                    // The peer may have gone already; the other direction reports that.
                    let _ = to.sock.shutdown(std::net::Shutdown::Write);
                }
                return Ok(true);
            }
            if !from.readable {
                return Ok(true);
            }
            let n = match from.sock.read(scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    from.readable = false;
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                self.eof = true;
                continue;
            }
            // A short read drained the socket: epoll reports the next bytes (edge-triggered),
            // so an exchange costs one read per direction, not a second one to learn EAGAIN.
            if n < scratch.len() && !from.closed {
                from.readable = false;
            }
            self.total += n as u64;
            let bytes = &scratch[..n];
            if !to.writable {
                self.stash.extend_from_slice(bytes);
                continue;
            }
            match to.sock.write(bytes) {
                Ok(w) => self.stash.extend_from_slice(&bytes[w..]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    to.writable = false;
                    self.stash.extend_from_slice(bytes);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Writes the stash to `to` until it is empty (`Ok(true)`) or `to` would block
    /// (`Ok(false)`).
    fn flush(&mut self, to: &mut Side) -> io::Result<bool> {
        while !self.stash.is_empty() {
            if !to.writable {
                return Ok(false);
            }
            match to.sock.write(&self.stash) {
                Ok(n) => {
                    self.stash.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => to.writable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.stash = Vec::new();
        Ok(true)
    }
}
