//! The L4 byte relay. Once [`super::tcp`] has accepted, admitted, picked and connected a
//! plain TCP connection, its two sockets move here: one task per worker copies the bytes of
//! all the worker's relayed connections. The sockets stay registered with the worker's tokio
//! driver, but each connection's waker only queues the connection in the worker's inbox, so
//! a readiness event costs no task wake-up, no task poll and no poll of the direction that
//! has nothing to do (a tenth of an L4 request's userland, measured against a task per
//! connection), and no syscall beyond the read and the write (a second epoll instance would
//! cost one `epoll_wait` per batch: measured, it made an L4 request no cheaper). An idle
//! connection costs a slab entry, a waker and no task: 0.8 KiB against 2.6 KiB.
//!
//! A ready socket is read into the worker's scratch buffer and written straight on to its
//! peer; bytes the peer cannot take at once wait in a per-direction stash until it can, so
//! an idle connection holds no buffer. Half-close is kept: a FIN read on one side is passed
//! on as a `shutdown(SHUT_WR)` of the other once everything before it is written. The inbox's
//! lock is the worker's own: its wakers run on its thread, from its tokio driver. Touches only
//! the sockets handed to it.

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

/// The worker's read buffer, shared by all its connections.
const SCRATCH_BYTES: usize = 64 * 1024;

/// Reads per direction in one turn of a connection (1 MiB at most): a bulk transfer then
/// waits its turn behind the worker's other connections and tasks instead of holding the
/// worker for as long as both of its peers keep up.
const READS_PER_TURN: usize = 16;

/// Called once when a relayed connection ends, with the bytes copied each way (client →
/// endpoint, endpoint → client) or the error that ended it. The two sockets close after it
/// returns, so a drain registration naming their descriptors can be dropped inside it.
pub(super) type Done = Box<dyn FnOnce(io::Result<[u64; 2]>) + Send>;

thread_local! {
    /// This worker's relay: its inbox and the task that empties it.
    static RELAY: RefCell<Option<(Arc<Inbox>, JoinHandle<()>)>> = const { RefCell::new(None) };
}

/// Hands `client` and `upstream` (connected, `TCP_NODELAY` already set) to this worker's
/// relay; `done` runs when the connection ends. Must be called on a worker's runtime.
pub(super) fn adopt(client: TcpStream, upstream: TcpStream, done: Done) {
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
                });
                ready.push(key);
            }
            for key in ready.drain(..) {
                // A key may be stale: its connection ended, and the slot may hold a new one,
                // for which a pump with nothing ready costs two readiness checks.
                let Some(conn) = conns.get_mut(key) else {
                    continue;
                };
                let result = match conn.pump(&mut scratch) {
                    Ok(Turn::Waiting) => continue,
                    Ok(Turn::Unfinished) => {
                        again.push(key);
                        continue;
                    }
                    Ok(Turn::Done) => Ok([conn.halves[0].total, conn.halves[1].total]),
                    Err(e) => Err(e),
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
}

/// One direction of a connection.
#[derive(Default)]
struct Half {
    /// Read but not yet written.
    stash: Vec<u8>,
    /// The source has sent its FIN.
    eof: bool,
    /// The FIN has been passed on.
    shut: bool,
    total: u64,
}

/// How a connection's turn ended.
enum Turn {
    /// Both FINs passed on.
    Done,
    /// Every socket it needs would block; its waker is registered.
    Waiting,
    /// A direction used its reads for the turn with bytes perhaps still to come.
    Unfinished,
}

impl Conn {
    /// Moves whatever both directions can move now, up to [`READS_PER_TURN`] reads each;
    /// `Err` when a socket failed.
    fn pump(&mut self, scratch: &mut [u8]) -> io::Result<Turn> {
        let mut cx = Context::from_waker(&self.waker);
        let [client, upstream] = &mut self.sockets;
        let [up, down] = &mut self.halves;
        let up_waits = up.pump(client, upstream, &mut cx, scratch)?;
        let down_waits = down.pump(upstream, client, &mut cx, scratch)?;
        Ok(if up.shut && down.shut {
            Turn::Done
        } else if up_waits && down_waits {
            Turn::Waiting
        } else {
            Turn::Unfinished
        })
    }
}

impl Half {
    /// Copies `from` → `to` until one of them would block (its waker then registered:
    /// `Ok(true)`), `from` has ended and its FIN has been passed on (`Ok(true)`), or the turn's
    /// reads are used up (`Ok(false)`).
    fn pump(
        &mut self,
        from: &mut TcpStream,
        to: &mut TcpStream,
        cx: &mut Context<'_>,
        scratch: &mut [u8],
    ) -> io::Result<bool> {
        for _ in 0..READS_PER_TURN {
            if !self.stash.is_empty() && !self.flush(to, cx)? {
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
    fn flush(&mut self, to: &mut TcpStream, cx: &mut Context<'_>) -> io::Result<bool> {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;
    use tokio::time::timeout;

    use super::adopt;

    type Totals = std::io::Result<[u64; 2]>;

    /// A connection through the relay, on loopback: the client's end, the endpoint's end, and
    /// what `done` is called with.
    async fn relayed() -> (TcpStream, TcpStream, oneshot::Receiver<Totals>) {
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let back = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(front.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = front.accept().await.unwrap();
        let upstream = TcpStream::connect(back.local_addr().unwrap())
            .await
            .unwrap();
        let (endpoint, _) = back.accept().await.unwrap();
        let (tx, rx) = oneshot::channel();
        adopt(
            accepted,
            upstream,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        (client, endpoint, rx)
    }

    const LIMIT: Duration = Duration::from_secs(20);

    /// Everything `s` sends until its FIN, within [`LIMIT`].
    async fn read_all(s: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
        let mut got = Vec::new();
        timeout(LIMIT, s.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        got
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_and_each_fin_is_passed_on() {
        let (mut client, mut endpoint, done) = relayed().await;
        client.write_all(b"ping").await.unwrap();
        client.shutdown().await.unwrap();
        // The endpoint sees the request end (EOF) while the client can still read.
        assert_eq!(read_all(&mut endpoint).await, b"ping");
        endpoint.write_all(b"pong!").await.unwrap();
        endpoint.shutdown().await.unwrap();
        assert_eq!(read_all(&mut client).await, b"pong!");
        let totals = timeout(LIMIT, done).await.unwrap().unwrap().unwrap();
        assert_eq!(totals, [4, 5]);
    }

    #[tokio::test]
    async fn a_slow_reader_holds_the_sender_back_and_loses_nothing() {
        // Far more than loopback's socket buffers hold, so both directions stash and wait.
        let up: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = up.iter().rev().copied().collect();
        let (client, endpoint, done) = relayed().await;
        let (mut client_r, mut client_w) = client.into_split();
        let (mut endpoint_r, mut endpoint_w) = endpoint.into_split();
        let (up2, down2) = (up.clone(), down.clone());
        let sending = tokio::spawn(async move {
            client_w.write_all(&up2).await.unwrap();
            client_w.shutdown().await.unwrap();
        });
        let answering = tokio::spawn(async move {
            endpoint_w.write_all(&down2).await.unwrap();
            endpoint_w.shutdown().await.unwrap();
        });
        // Neither reader starts until the writers have filled everything in between.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (mut at_endpoint, mut at_client) = (Vec::new(), Vec::new());
        let reads = async {
            tokio::try_join!(
                endpoint_r.read_to_end(&mut at_endpoint),
                client_r.read_to_end(&mut at_client)
            )
        };
        timeout(LIMIT, reads).await.unwrap().unwrap();
        timeout(LIMIT, sending).await.unwrap().unwrap();
        timeout(LIMIT, answering).await.unwrap().unwrap();
        assert!(at_endpoint == up, "client → endpoint bytes differ");
        assert!(at_client == down, "endpoint → client bytes differ");
        let totals = timeout(LIMIT, done).await.unwrap().unwrap().unwrap();
        assert_eq!(totals, [up.len() as u64, down.len() as u64]);
    }

    #[tokio::test]
    async fn a_reset_from_the_endpoint_ends_the_connection_with_an_error() {
        let (mut client, endpoint, done) = relayed().await;
        client.write_all(b"hello").await.unwrap();
        socket2::SockRef::from(&endpoint)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(endpoint);
        let result = timeout(LIMIT, done).await.unwrap().unwrap();
        assert!(
            result.is_err(),
            "a reset must end the relay with an error: {result:?}"
        );
        // The client's side is closed with it.
        let mut rest = Vec::new();
        let _ = timeout(LIMIT, client.read_to_end(&mut rest)).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn one_worker_relays_many_connections_at_once() {
        let mut pairs = Vec::new();
        for _ in 0..100 {
            pairs.push(relayed().await);
        }
        // Every request is on its way before any answer is read.
        for (i, (client, _, _)) in pairs.iter_mut().enumerate() {
            client
                .write_all(format!("request {i}").as_bytes())
                .await
                .unwrap();
        }
        for (i, (client, endpoint, done)) in pairs.into_iter().enumerate() {
            let want = format!("request {i}");
            let mut got = vec![0; want.len()];
            timeout(LIMIT, answer_one(client, endpoint, &mut got, done))
                .await
                .unwrap();
            assert_eq!(got, want.as_bytes());
        }
    }

    /// Reads one request (`got.len()` bytes) at the endpoint, answers it and closes, and
    /// checks the client gets the answer and the relay its totals.
    async fn answer_one(
        mut client: TcpStream,
        mut endpoint: TcpStream,
        got: &mut [u8],
        done: oneshot::Receiver<Totals>,
    ) {
        endpoint.read_exact(got).await.unwrap();
        endpoint.write_all(b"ok").await.unwrap();
        drop(endpoint);
        assert_eq!(read_all(&mut client).await, b"ok");
        drop(client);
        let totals = done.await.unwrap().unwrap();
        assert_eq!(totals, [got.len() as u64, 2]);
    }
}
