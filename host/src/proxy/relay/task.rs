//! A relay's first stage: one tokio task per worker copies the bytes of the worker's new
//! plain TCP connections. The sockets stay registered with the worker's tokio driver, but each
//! connection's waker only queues the connection in the worker's inbox, so a readiness event
//! costs no task wake-up, no task poll and no poll of the direction that has nothing to do,
//! and no syscall beyond the read and the write. An idle connection costs a slab entry, a
//! waker and no task. A connection that has shown it lasts moves on to the worker's relay
//! thread ([`super::thread`]).
//!
//! A ready socket is read into the worker's scratch buffer and written straight on to its
//! peer; bytes the peer cannot take at once wait in a per-direction stash until it can. The
//! inbox's lock is the worker's own: its wakers run on its thread, from its tokio driver.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, ErrorKind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use parking_lot::Mutex;
use slab::Slab;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::{Done, Half, READS_PER_TURN, SCRATCH_BYTES, SETTLE_AFTER_READS, Turn, ended};

thread_local! {
    /// This worker's relay: its inbox and the task that empties it.
    static RELAY: RefCell<Option<(Arc<Inbox>, JoinHandle<()>)>> = const { RefCell::new(None) };
}

/// Hands `client` and `upstream` (connected, `TCP_NODELAY` already set) to this worker's
/// relay; `done` runs when the connection ends. Must be called on a worker's runtime.
pub(in crate::proxy) fn adopt(client: TcpStream, upstream: TcpStream, done: Done) {
    let inbox = RELAY.with(|r| {
        let mut r = r.borrow_mut();
        match &*r {
            Some((inbox, task)) if !task.is_finished() => inbox.clone(),
            // The first connection on this worker (or its runtime was replaced).
            _ => {
                let inbox = Arc::new(Inbox::default());
                // Unconstrained: the task does the work of many connections per poll, which
                // tokio's per-task budget would cut short for nothing.
                let task = tokio::spawn(tokio::task::unconstrained(drive(inbox.clone())));
                *r = Some((inbox.clone(), task));
                inbox
            }
        }
    });
    inbox.post(|m| m.adopted.push((client, upstream, done)));
}

/// What the worker's wakers and new connections leave for the relay task.
#[derive(Default)]
struct Inbox(Mutex<Mail>);

#[derive(Default)]
struct Mail {
    /// Connections whose sockets had an event (slab keys; may repeat or be stale).
    ready: Vec<usize>,
    adopted: Vec<(TcpStream, TcpStream, Done)>,
    /// The relay task, while it waits for mail.
    task: Option<Waker>,
}

impl Inbox {
    fn post(&self, write: impl FnOnce(&mut Mail)) {
        let task = {
            let mut m = self.0.lock();
            write(&mut m);
            m.task.take()
        };
        if let Some(t) = task {
            t.wake();
        }
    }
}

/// A connection's waker: tokio's driver calls it on any event of either socket.
struct ConnWaker {
    key: usize,
    inbox: Arc<Inbox>,
}

impl Wake for ConnWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.inbox.post(|m| m.ready.push(self.key));
    }
}

/// The relay task of one worker: takes the mail and moves the bytes it allows, for ever.
async fn drive(inbox: Arc<Inbox>) {
    let mut conns: Slab<Conn> = Slab::new();
    let mut scratch = vec![0u8; SCRATCH_BYTES].into_boxed_slice();
    let mut ready: Vec<usize> = Vec::new();
    let mut adopted = Vec::new();
    let mut again: Vec<usize> = Vec::new();
    poll_fn(|cx| {
        loop {
            {
                let mut m = inbox.0.lock();
                if m.ready.is_empty() && m.adopted.is_empty() {
                    m.task = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                std::mem::swap(&mut ready, &mut m.ready);
                std::mem::swap(&mut adopted, &mut m.adopted);
            }
            for (client, upstream, done) in adopted.drain(..) {
                let entry = conns.vacant_entry();
                let key = entry.key();
                let waker = Waker::from(Arc::new(ConnWaker {
                    key,
                    inbox: inbox.clone(),
                }));
                entry.insert(Conn {
                    sockets: [client, upstream],
                    halves: [Half::default(), Half::default()],
                    waker,
                    done,
                    reads: 0,
                });
                ready.push(key);
            }
            for key in ready.drain(..) {
                // A key may be stale: its connection ended, and the slot may hold a new one,
                // for which a pump with nothing ready costs two readiness checks.
                let Some(conn) = conns.get_mut(key) else {
                    continue;
                };
                let turn = conn.pump(&mut scratch);
                if matches!(turn, Ok(Turn::Waiting)) && conn.settled() {
                    if let Some(relay) = super::thread::relay() {
                        conns.remove(key).settle(&relay);
                        continue;
                    }
                    // No relay thread to be had: the connection stays, to try again after
                    // as many reads.
                    conn.reads = 0;
                }
                let Some(result) = ended(turn, key, &mut again) else {
                    continue;
                };
                let Conn { sockets, done, .. } = conns.remove(key);
                done(result);
                // The sockets close only now, after `done`.
                drop(sockets);
                if conns.is_empty() && conns.capacity() > 1024 {
                    // Give back the room a burst of connections took.
                    conns.shrink_to_fit();
                }
            }
            if !again.is_empty() {
                // Let the worker's other tasks and its I/O driver run before the next turn.
                inbox.0.lock().ready.append(&mut again);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    })
    .await
}

/// A relayed connection: `sockets[0]` is the client's, `sockets[1]` the endpoint's;
/// `halves[0]` copies client → endpoint, `halves[1]` endpoint → client.
struct Conn {
    sockets: [TcpStream; 2],
    halves: [Half; 2],
    /// Registered with both sockets for every interest the pump waits on.
    waker: Waker,
    done: Done,
    /// Reads that brought data, up to [`SETTLE_AFTER_READS`].
    reads: u32,
}

impl Conn {
    /// Moves whatever both directions can move now, up to [`READS_PER_TURN`] reads each;
    /// `Err` when a socket failed.
    fn pump(&mut self, scratch: &mut [u8]) -> io::Result<Turn> {
        let mut cx = Context::from_waker(&self.waker);
        let [client, upstream] = &mut self.sockets;
        let [up, down] = &mut self.halves;
        let up_waits = up.pump_polled(client, upstream, &mut cx, scratch, &mut self.reads)?;
        let down_waits = down.pump_polled(upstream, client, &mut cx, scratch, &mut self.reads)?;
        Ok(Turn::after([&*up, &*down], up_waits, down_waits))
    }

    /// Whether the connection has lasted long enough to move to the relay thread, and can:
    /// nothing stashed, no FIN seen.
    fn settled(&self) -> bool {
        self.reads >= SETTLE_AFTER_READS && self.halves.iter().all(|h| h.stash.is_empty() && !h.eof)
    }

    /// Moves the connection to this worker's relay thread, `relay`: its sockets leave the
    /// worker's driver (`epoll_ctl` DEL each) for the thread's epoll instance.
    fn settle(self, relay: &super::thread::Relay) {
        let Conn {
            sockets: [client, upstream],
            halves,
            done,
            ..
        } = self;
        let totals = [halves[0].total, halves[1].total];
        // On an error the other socket is still held here, so both close after `done`.
        match (client.into_std(), upstream.into_std()) {
            (Ok(c), Ok(u)) => relay.adopt([c, u], totals, done),
            (Err(e), _) | (_, Err(e)) => done(Err(e)),
        }
        #[cfg(test)]
        SETTLED.with(|n| n.set(n.get() + 1));
    }
}

#[cfg(test)]
thread_local! {
    /// Connections this thread's relay task moved to the relay thread.
    pub(super) static SETTLED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Half {
    /// Copies `from` → `to` until one of them would block (its waker then registered:
    /// `Ok(true)`), `from` has ended and its FIN has been passed on (`Ok(true)`), or the turn's
    /// reads are used up (`Ok(false)`).
    fn pump_polled(
        &mut self,
        from: &mut TcpStream,
        to: &mut TcpStream,
        cx: &mut Context<'_>,
        scratch: &mut [u8],
        reads: &mut u32,
    ) -> io::Result<bool> {
        for _ in 0..READS_PER_TURN {
            if !self.stash.is_empty() && !self.flush_polled(to, cx)? {
                return Ok(true);
            }
            if self.eof {
                if !self.shut {
                    self.shut = true;
                    // The peer may have gone already; the other direction reports that.
                    let _ = socket2::SockRef::from(&*to).shutdown(std::net::Shutdown::Write);
                }
                return Ok(true);
            }
            // `poll_read`, not `try_read`: tokio takes a short read as the socket being
            // drained and clears its readiness, so an exchange costs one `recvfrom` per
            // direction instead of two (the second one only to learn `EAGAIN`).
            let mut buf = ReadBuf::new(scratch);
            match Pin::new(&mut *from).poll_read(cx, &mut buf) {
                Poll::Pending => return Ok(true),
                Poll::Ready(r) => r?,
            }
            let bytes = buf.filled();
            if bytes.is_empty() {
                self.eof = true;
                continue;
            }
            self.total += bytes.len() as u64;
            *reads = reads.saturating_add(1);
            match to.try_write(bytes) {
                Ok(w) => self.stash.extend_from_slice(&bytes[w..]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.stash.extend_from_slice(bytes),
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Writes the stash to `to` until it is empty (`Ok(true)`) or `to` would block
    /// (`Ok(false)`, its waker registered).
    fn flush_polled(&mut self, to: &mut TcpStream, cx: &mut Context<'_>) -> io::Result<bool> {
        while !self.stash.is_empty() {
            match to.poll_write_ready(cx) {
                Poll::Pending => return Ok(false),
                Poll::Ready(r) => r?,
            }
            match to.try_write(&self.stash) {
                Ok(n) => {
                    self.stash.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        self.stash = Vec::new();
        Ok(true)
    }
}
