//! The bare io_uring relay: `uring-relay LISTEN BACKEND`. One thread, one ring (single issuer,
//! deferred task work), a multishot accept, and per connection one receive and one send in
//! flight per direction over a 64 KiB buffer each. No lookup, no plugin, no metrics: the floor
//! a one-core L4 proxy could reach with fewer syscalls than an epoll loop makes.
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use std::net::{SocketAddr, SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, RawFd};

const BUF: usize = 64 * 1024;
const ACCEPT: u64 = 0;
const CONNECT: u64 = 1;
const RECV_C: u64 = 2; // from the client
const RECV_B: u64 = 3; // from the backend
const SEND_C: u64 = 4; // to the client
const SEND_B: u64 = 5; // to the backend

struct Dir {
    buf: Box<[u8]>,
    len: usize,
    off: usize,
    eof: bool,
}

struct Conn {
    client: RawFd,
    backend: RawFd,
    c2b: Dir,
    b2c: Dir,
    inflight: u32,
    closing: bool,
}

impl Conn {
    /// One direction: where it reads from, where it writes to, and its buffer.
    fn way(&mut self, c2b: bool) -> (RawFd, RawFd, &mut Dir) {
        if c2b {
            (self.client, self.backend, &mut self.c2b)
        } else {
            (self.backend, self.client, &mut self.b2c)
        }
    }
}

fn dir() -> Dir {
    Dir {
        buf: vec![0; BUF].into_boxed_slice(),
        len: 0,
        off: 0,
        eof: false,
    }
}

fn nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: fd is an open TCP socket; the option value outlives the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw const one).cast(),
            4,
        );
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

struct Relay {
    ring: IoUring,
    conns: Vec<Option<Box<Conn>>>,
    free: Vec<usize>,
    backend: Box<libc::sockaddr_in>,
    listener: RawFd,
}

impl Relay {
    fn push(&mut self, e: squeue::Entry) {
        // SAFETY: every buffer and address an entry points at lives in a boxed Conn (or in
        // self.backend) until its completion has been reaped.
        while unsafe { self.ring.submission().push(&e) }.is_err() {
            self.ring.submit().expect("io_uring submit");
        }
    }

    /// Receives the next chunk of one direction (`c2b`: client to backend).
    fn recv(&mut self, slot: usize, c2b: bool) {
        let c = self.conns[slot].as_mut().unwrap();
        let (from, _, d) = c.way(c2b);
        let e = opcode::Recv::new(types::Fd(from), d.buf.as_mut_ptr(), BUF as u32)
            .build()
            .user_data((slot as u64) << 3 | if c2b { RECV_C } else { RECV_B });
        c.inflight += 1;
        self.push(e);
    }

    /// Sends what is left of one direction's chunk.
    fn send(&mut self, slot: usize, c2b: bool) {
        let c = self.conns[slot].as_mut().unwrap();
        let (_, to, d) = c.way(c2b);
        // SAFETY: off < len <= BUF.
        let p = unsafe { d.buf.as_ptr().add(d.off) };
        let e = opcode::Send::new(types::Fd(to), p, (d.len - d.off) as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data((slot as u64) << 3 | if c2b { SEND_B } else { SEND_C });
        c.inflight += 1;
        self.push(e);
    }

    fn teardown(&mut self, slot: usize) {
        let c = self.conns[slot].as_mut().unwrap();
        if !c.closing {
            c.closing = true;
            // SAFETY: both fds are open; shutting them down completes the receives in flight.
            unsafe {
                libc::shutdown(c.client, libc::SHUT_RDWR);
                libc::shutdown(c.backend, libc::SHUT_RDWR);
            }
        }
        self.reap(slot);
    }

    fn reap(&mut self, slot: usize) {
        let c = self.conns[slot].as_ref().unwrap();
        if c.closing && c.inflight == 0 {
            // SAFETY: nothing in flight refers to these fds or buffers any more.
            unsafe {
                libc::close(c.client);
                libc::close(c.backend);
            }
            self.conns[slot] = None;
            self.free.push(slot);
        }
    }

    fn accepted(&mut self, client: RawFd) {
        // SAFETY: plain socket(2).
        let backend =
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if backend < 0 {
            // SAFETY: the accepted fd is ours and referred to by nothing else.
            unsafe { libc::close(client) };
            return;
        }
        nodelay(client);
        nodelay(backend);
        let conn = Box::new(Conn {
            client,
            backend,
            c2b: dir(),
            b2c: dir(),
            inflight: 1,
            closing: false,
        });
        let slot = match self.free.pop() {
            Some(s) => {
                self.conns[s] = Some(conn);
                s
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        };
        let addr = (&raw const *self.backend).cast::<libc::sockaddr>();
        let e = opcode::Connect::new(
            types::Fd(backend),
            addr,
            size_of::<libc::sockaddr_in>() as u32,
        )
        .build()
        .user_data((slot as u64) << 3 | CONNECT);
        self.push(e);
    }

    fn accept(&mut self) {
        let e = opcode::AcceptMulti::new(types::Fd(self.listener))
            .build()
            .user_data(ACCEPT);
        self.push(e);
    }

    fn complete(&mut self, ud: u64, res: i32, flags: u32) {
        if ud == ACCEPT {
            if res >= 0 {
                self.accepted(res);
            }
            if !cqueue::more(flags) {
                self.accept();
            }
            return;
        }
        let (slot, op) = ((ud >> 3) as usize, ud & 7);
        let c = self.conns[slot].as_mut().unwrap();
        c.inflight -= 1;
        if c.closing {
            return self.reap(slot);
        }
        if op == CONNECT {
            if res < 0 {
                return self.teardown(slot);
            }
            self.recv(slot, true);
            return self.recv(slot, false);
        }
        if res < 0 {
            return self.teardown(slot);
        }
        // Receiving from the client and sending to the backend are the c2b direction.
        let c2b = op == RECV_C || op == SEND_B;
        let (_, to, d) = c.way(c2b);
        if op == RECV_C || op == RECV_B {
            if res > 0 {
                (d.len, d.off) = (res as usize, 0);
                return self.send(slot, c2b);
            }
            d.eof = true;
            // SAFETY: the fd is open; end the write side the peer reads this direction from.
            unsafe { libc::shutdown(to, libc::SHUT_WR) };
            if c.c2b.eof && c.b2c.eof {
                self.teardown(slot);
            }
        } else {
            d.off += res as usize;
            if d.off < d.len {
                self.send(slot, c2b);
            } else {
                self.recv(slot, c2b);
            }
        }
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().expect("LISTEN").parse().expect("LISTEN addr");
    let SocketAddr::V4(backend) = args.next().expect("BACKEND").parse().expect("BACKEND addr")
    else {
        panic!("BACKEND must be IPv4")
    };
    let listener = TcpListener::bind(listen)?;
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(4096)?;
    let mut relay = Relay {
        ring,
        conns: Vec::new(),
        free: Vec::new(),
        backend: Box::new(sockaddr(backend)),
        listener: listener.as_raw_fd(),
    };
    relay.accept();
    let mut done = Vec::with_capacity(1024);
    loop {
        relay.ring.submit_and_wait(1)?;
        done.extend(
            relay
                .ring
                .completion()
                .map(|e| (e.user_data(), e.result(), e.flags())),
        );
        for (ud, res, flags) in done.drain(..) {
            relay.complete(ud, res, flags);
        }
    }
}
