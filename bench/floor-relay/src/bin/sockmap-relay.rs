//! The in-kernel relay: `sockmap-relay LISTEN BACKEND`. Userland only accepts, connects and
//! pairs; the bytes never leave the kernel. Both sockets of a pair go into a BPF `SOCKHASH`,
//! each stored under its peer's 4-tuple, and an `sk_skb` verdict program (eBPF, assembled
//! here: no clang needed) redirects every message a socket receives to its peer's egress with
//! `bpf_sk_redirect_hash`. This is the sockmap lever `bench/README.md` weighs for the
//! kernel's share at 100 B: no recv, no send, no epoll wake-up per message. The kernel sends
//! redirected bytes from a workqueue (`sk_psock_backlog`), so on loopback that work runs on
//! the sender's core, not on this process's: compare it by the whole machine's CPU per
//! request (`bench/cpu-split.sh` records `machine_us_per_req`), not by the proxy's own.
//!
//! A FIN is passed on only once every byte that came before it is in the peer's send queue
//! (TCP_INFO's bytes received on one side against bytes acked plus SIOCOUTQ on the other):
//! the kernel's workqueue may still hold redirected bytes, and a FIN sent at once overtakes
//! them (a first version lost an HTTP/1.0 response and a 3 MB echo that way). Bench tool
//! limits, on purpose: one thread, a blocking connect to the backend. Needs CAP_BPF and
//! CAP_NET_ADMIN (root here).
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// `bpf(2)` with an attribute block; the descriptor or value it returns.
fn bpf(cmd: libc::c_int, attr: &mut [u64]) -> io::Result<i32> {
    // SAFETY: `attr` is a zeroed, 8-aligned block at least as large as every command's
    // attribute union member used here; the kernel reads (and for PROG_LOAD's log writes)
    // only within the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as i32)
    }
}

/// Writes `v` at byte offset `off` of the attribute block (native endian).
fn put32(attr: &mut [u64], off: usize, v: u32) {
    let word = &mut attr[off / 8];
    let shift = (off % 8) * 8;
    *word = (*word & !(0xffff_ffffu64 << shift)) | (u64::from(v) << shift);
}

const BPF_MAP_CREATE: i32 = 0;
const BPF_MAP_UPDATE_ELEM: i32 = 2;
const BPF_PROG_LOAD: i32 = 5;
const BPF_PROG_ATTACH: i32 = 8;
const BPF_MAP_TYPE_SOCKHASH: u32 = 18;
const BPF_PROG_TYPE_SK_SKB: u32 = 14;
const BPF_SK_SKB_STREAM_VERDICT: u32 = 5;
const BPF_FUNC_SK_REDIRECT_HASH: i32 = 72;
/// `struct __sk_buff` fields an sk_skb program may read (include/uapi/linux/bpf.h).
const SKB_LEN: i16 = 0;
const SKB_REMOTE_IP4: i16 = 92;
const SKB_LOCAL_IP4: i16 = 96;
const SKB_REMOTE_PORT: i16 = 132;
const SKB_LOCAL_PORT: i16 = 136;
const KEY_LEN: usize = 16;

/// One eBPF instruction: opcode, dst and src registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst | (src << 4)) << 8)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

/// The verdict: key = the receiving socket's (remote ip, local ip, remote port, local port), as
/// the kernel presents them; redirect the message to the socket stored under it, to its
/// egress. It returns SK_PASS either way: a socket whose peer is not stored (yet) keeps its
/// data for a userland read instead of dropping it. An empty message (a FIN on its own) is
/// dropped, not redirected: the workqueue would send zero bytes on the peer, take that as a
/// broken pipe and stop the peer's sending for good (seen on 6.18). The FIN itself is TCP
/// state, and this process passes it on.
fn verdict_program(map_fd: RawFd) -> Vec<u64> {
    const MOV_X: u8 = 0xbf; // r_dst = r_src
    const MOV_K: u8 = 0xb7; // r_dst = imm
    const ADD_K: u8 = 0x07; // r_dst += imm
    const LDX_W: u8 = 0x61; // r_dst = *(u32 *)(r_src + off)
    const STX_W: u8 = 0x63; // *(u32 *)(r_dst + off) = r_src
    const LD_IMM64: u8 = 0x18; // with src 1: the map whose descriptor is imm
    const JEQ_K: u8 = 0x15; // if r_dst == imm: skip `off` instructions
    const CALL: u8 = 0x85;
    const EXIT: u8 = 0x95;
    let mut p = vec![insn(MOV_X, 6, 1, 0, 0)]; // r6 = ctx
    for (i, field) in [
        SKB_REMOTE_IP4,
        SKB_LOCAL_IP4,
        SKB_REMOTE_PORT,
        SKB_LOCAL_PORT,
    ]
    .into_iter()
    .enumerate()
    {
        p.push(insn(LDX_W, 2, 6, field, 0));
        p.push(insn(STX_W, 10, 2, -16 + 4 * i as i16, 0)); // key on the stack at r10 - 16
    }
    p.extend([
        insn(MOV_X, 1, 6, 0, 0),
        insn(LD_IMM64, 2, 1, 0, map_fd),
        0,
        insn(MOV_X, 3, 10, 0, 0),
        insn(ADD_K, 3, 0, 0, -16),
        insn(MOV_K, 4, 0, 0, 0), // flags 0: to the peer's egress
        insn(CALL, 0, 0, 0, BPF_FUNC_SK_REDIRECT_HASH),
        insn(MOV_K, 0, 0, 0, 1), // SK_PASS
        insn(EXIT, 0, 0, 0, 0),
    ]);
    let skip = (p.len() - 1) as i16; // from after the test to the SK_DROP exit below
    p.splice(
        1..1,
        [insn(LDX_W, 2, 6, SKB_LEN, 0), insn(JEQ_K, 2, 0, skip, 0)],
    );
    p.extend([insn(MOV_K, 0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)]); // SK_DROP
    p
}

/// The map, with the verdict program loaded and attached to it.
fn sockhash() -> io::Result<OwnedFd> {
    let mut attr = [0u64; 16];
    put32(&mut attr, 0, BPF_MAP_TYPE_SOCKHASH);
    put32(&mut attr, 4, KEY_LEN as u32);
    put32(&mut attr, 8, 4); // value: a socket descriptor
    put32(&mut attr, 12, 65_536);
    // SAFETY: a descriptor the kernel just created for us.
    let map = unsafe { OwnedFd::from_raw_fd(bpf(BPF_MAP_CREATE, &mut attr)?) };

    let prog = verdict_program(map.as_raw_fd());
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = [0u64; 16];
    put32(&mut attr, 0, BPF_PROG_TYPE_SK_SKB);
    put32(&mut attr, 4, prog.len() as u32);
    attr[1] = prog.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    put32(&mut attr, 24, 1); // log level
    put32(&mut attr, 28, log.len() as u32);
    attr[4] = log.as_mut_ptr() as u64;
    let prog_fd = match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a descriptor the kernel just created for us.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            eprintln!("verifier: {}", String::from_utf8_lossy(&log[..end]));
            return Err(e);
        }
    };

    let mut attr = [0u64; 16];
    put32(&mut attr, 0, map.as_raw_fd() as u32);
    put32(&mut attr, 4, prog_fd.as_raw_fd() as u32);
    put32(&mut attr, 8, BPF_SK_SKB_STREAM_VERDICT);
    bpf(BPF_PROG_ATTACH, &mut attr)?;
    Ok(map) // the attachment holds the program
}

/// The key the verdict builds for a socket that has this local and remote address.
fn key(local: SocketAddr, remote: SocketAddr) -> [u8; KEY_LEN] {
    let (SocketAddr::V4(l), SocketAddr::V4(r)) = (local, remote) else {
        panic!("sockmap-relay speaks IPv4 only");
    };
    let mut k = [0u8; KEY_LEN];
    k[0..4].copy_from_slice(&r.ip().octets());
    k[4..8].copy_from_slice(&l.ip().octets());
    // remote_port: the network-order port in the upper half; local_port: host order.
    k[10..12].copy_from_slice(&r.port().to_be_bytes());
    k[12..16].copy_from_slice(&u32::from(l.port()).to_ne_bytes());
    k
}

/// Stores `value`'s socket under `key`: from then on the verdict runs on its receive path.
fn store(map: &OwnedFd, key: &[u8; KEY_LEN], value: &TcpStream) -> io::Result<()> {
    let fd: u32 = value.as_raw_fd() as u32;
    let mut attr = [0u64; 16];
    put32(&mut attr, 0, map.as_raw_fd() as u32);
    attr[1] = key.as_ptr() as u64;
    attr[2] = &fd as *const u32 as u64;
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// Sets SO_RCVLOWAT, which makes TCP call the socket's data-ready hook if bytes are waiting:
/// bytes that arrived before the socket was stored then go through the verdict too, in order.
fn kick(s: &TcpStream) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Connects the client to a fresh backend connection and stores the pair.
fn pair(map: &OwnedFd, client: TcpStream, backend: SocketAddr) -> io::Result<(Half, Half)> {
    let upstream = TcpStream::connect(backend)?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let (c, u) = (client.as_raw_fd(), upstream.as_raw_fd());
    let (client, upstream) = (Half::new(client, u), Half::new(upstream, c));
    let (cs, us) = (&client.sock, &upstream.sock);
    // The backend's socket first (the backend speaks only when asked), then the client's,
    // whose early bytes the kick sends on.
    store(map, &key(cs.local_addr()?, cs.peer_addr()?), us)?;
    store(map, &key(us.local_addr()?, us.peer_addr()?), cs)?;
    kick(cs)?;
    kick(us)?;
    Ok((client, upstream))
}

/// Watches `fd` for the peer's FIN (and errors) only: data never wakes this process.
fn watch(ep: &OwnedFd, fd: RawFd, op: libc::c_int) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLRDHUP as u32,
        u64: fd as u64,
    };
    // SAFETY: valid epoll and socket descriptors, and an event the call only reads.
    if unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

struct Half {
    sock: TcpStream,
    peer: RawFd,
    ended: bool,
    /// TCP_INFO's bytes acked when the pair was made.
    acked0: u64,
}

impl Half {
    /// Taken before the pair is stored: from then on the kernel may send on it.
    fn new(sock: TcpStream, peer: RawFd) -> Half {
        let acked0 = tcp_info(&sock).map_or(0, |i| i.tcpi_bytes_acked);
        Half {
            sock,
            peer,
            ended: false,
            acked0,
        }
    }
}

fn main() -> io::Result<()> {
    let (listen, backend, _) = floor_relay::args();
    let map = sockhash()?;
    let listener = TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    // SAFETY: a descriptor the kernel just created for us.
    let ep = unsafe { OwnedFd::from_raw_fd(libc::epoll_create1(libc::EPOLL_CLOEXEC)) };
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: u64::MAX,
    };
    // SAFETY: as in `watch`.
    if unsafe {
        libc::epoll_ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            listener.as_raw_fd(),
            &mut ev,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    let mut halves: HashMap<RawFd, Half> = HashMap::new();
    // Ends seen but not yet passed on: (when to give up waiting, the half, reset).
    let mut ends: Vec<(Instant, RawFd, bool)> = Vec::new();
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    loop {
        let timeout = if ends.is_empty() { -1 } else { 1 };
        // SAFETY: `events` has room for the 64 entries the kernel may write.
        let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), 64, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events[..n as usize] {
            if ev.u64 == u64::MAX {
                while let Ok((client, _)) = listener.accept() {
                    let Ok((c, u)) = pair(&map, client, backend) else {
                        continue;
                    };
                    let (cfd, ufd) = (c.sock.as_raw_fd(), u.sock.as_raw_fd());
                    watch(&ep, cfd, libc::EPOLL_CTL_ADD)?;
                    watch(&ep, ufd, libc::EPOLL_CTL_ADD)?;
                    halves.insert(cfd, c);
                    halves.insert(ufd, u);
                }
                continue;
            }
            let fd = ev.u64 as RawFd;
            let _ = watch(&ep, fd, libc::EPOLL_CTL_DEL);
            // HUP alone is both directions shut, which a half-closed pair reaches normally.
            let reset = ev.events & libc::EPOLLERR as u32 != 0;
            ends.push((Instant::now() + LINGER, fd, reset));
        }
        let mut i = 0;
        while i < ends.len() {
            let (give_up, fd, reset) = ends[i];
            if !(reset || give_up <= Instant::now() || forwarded(&halves, fd)) {
                i += 1;
                continue;
            }
            ends.swap_remove(i);
            if let Some(peer) = end(&mut halves, fd, reset) {
                // Their numbers may be reused by the next accept: forget their pending ends.
                ends.retain(|&(_, f, _)| f != fd && f != peer);
                i = 0;
            }
        }
    }
}

/// The longest a FIN waits for the bytes before it to reach the peer's send queue.
const LINGER: Duration = Duration::from_secs(5);

fn tcp_info(s: &TcpStream) -> Option<libc::tcp_info> {
    // SAFETY: tcp_info is plain integers, valid zeroed; the kernel writes at most `len` bytes.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a valid socket, and `info` with its size in `len`.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(info)
}

/// Whether every byte `fd` received has been handed to its peer's send queue.
fn forwarded(halves: &HashMap<RawFd, Half>, fd: RawFd) -> bool {
    let Some(half) = halves.get(&fd) else {
        return true;
    };
    let Some(peer) = halves.get(&half.peer) else {
        return true;
    };
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one c_int: the bytes in the send queue not yet acked.
    if unsafe { libc::ioctl(peer.sock.as_raw_fd(), libc::TIOCOUTQ, &mut queued) } < 0 {
        return true;
    }
    match (tcp_info(&half.sock), tcp_info(&peer.sock)) {
        // The received count includes the FIN (this is called after it came); the peer's acked
        // count is taken from the pairing on (a connecting socket's includes its SYN).
        (Some(from), Some(to)) => {
            from.tcpi_bytes_received.saturating_sub(1)
                <= to.tcpi_bytes_acked - peer.acked0 + queued as u64
        }
        _ => true,
    }
}

/// One side of a pair ended: half-close the other, or close both when both ended or one reset
/// (closing a socket drops it from the map). Returns the peer when both were closed.
fn end(halves: &mut HashMap<RawFd, Half>, fd: RawFd, reset: bool) -> Option<RawFd> {
    let half = halves.get_mut(&fd)?;
    half.ended = true;
    let peer = half.peer;
    if reset || halves.get(&peer).is_none_or(|p| p.ended) {
        halves.remove(&fd);
        halves.remove(&peer);
        return Some(peer);
    }
    if let Some(p) = halves.get(&peer) {
        let _ = p.sock.shutdown(std::net::Shutdown::Write);
    }
    None
}
