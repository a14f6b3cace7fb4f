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

    fn recv(&mut self, slot: usize, from_client: bool) {
        let c = self.conns[slot].as_mut().unwrap();
        let (fd, d, op) = if from_client {
            (c.client, &mut c.c2b, RECV_C)
        } else {
            (c.backend, &mut c.b2c, RECV_B)
        };
        let e = opcode::Recv::new(types::Fd(fd), d.buf.as_mut_ptr(), BUF as u32)
            .build()
            .user_data((slot as u64) << 3 | op);
        c.inflight += 1;
        self.push(e);
    }

    fn send(&mut self, slot: usize, to_backend: bool) {
        let c = self.conns[slot].as_mut().unwrap();
        let (fd, d, op) = if to_backend {
            (c.backend, &mut c.c2b, SEND_B)
        } else {
            (c.client, &mut c.b2c, SEND_C)
        };
        // SAFETY: off < len <= BUF.
        let p = unsafe { d.buf.as_ptr().add(d.off) };
        let e = opcode::Send::new(types::Fd(fd), p, (d.len - d.off) as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data((slot as u64) << 3 | op);
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
        let op = ud & 7;
        if ud == ACCEPT {
            if res >= 0 {
                self.accepted(res);
            }
            if !cqueue::more(flags) {
                self.accept();
            }
            return;
        }
        let slot = (ud >> 3) as usize;
        let c = self.conns[slot].as_mut().unwrap();
        c.inflight -= 1;
        if c.closing {
            return self.reap(slot);
        }
        match op {
            CONNECT if res < 0 => self.teardown(slot),
            CONNECT => {
                self.recv(slot, true);
                self.recv(slot, false);
            }
            RECV_C | RECV_B => {
                let from_client = op == RECV_C;
                let d = if from_client { &mut c.c2b } else { &mut c.b2c };
                if res > 0 {
                    d.len = res as usize;
                    d.off = 0;
                    self.send(slot, from_client);
                } else if res == 0 {
                    d.eof = true;
                    let (other, done) = if from_client {
                        (c.backend, c.b2c.eof)
                    } else {
                        (c.client, c.c2b.eof)
                    };
                    // SAFETY: the fd is open; half-close the peer's write side.
                    unsafe { libc::shutdown(other, libc::SHUT_WR) };
                    if done {
                        self.teardown(slot);
                    }
                } else {
                    self.teardown(slot);
                }
            }
            _ => {
                let to_backend = op == SEND_B;
                let d = if to_backend { &mut c.c2b } else { &mut c.b2c };
                if res < 0 {
                    return self.teardown(slot);
                }
                d.off += res as usize;
                if d.off < d.len {
                    self.send(slot, to_backend);
                } else {
                    self.recv(slot, to_backend);
                }
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
