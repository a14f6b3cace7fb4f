//! Batched UDP for the DNS workers: `recvmmsg(2)` takes up to [`BATCH`] queries in one system
//! call (blocking for the first, then whatever is queued) and `sendmmsg(2)` sends the replies
//! in one, as gdnsd and knot do. The only unsafe code of the DNS server; it touches only the
//! socket it is given and its own buffers.

use std::net::SocketAddr;
use std::os::fd::RawFd;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Largest query taken (a bigger one is dropped, flagged by MSG_TRUNC).
const SIZE: usize = 4096;

/// Received queries and their senders.
pub struct Rx {
    bufs: Box<[[u8; SIZE]; BATCH]>,
    addrs: Box<[libc::sockaddr_storage; BATCH]>,
    iov: Box<[libc::iovec; BATCH]>,
    hdrs: Box<[libc::mmsghdr; BATCH]>,
}

/// Replies waiting to go out.
pub struct Tx {
    bufs: Vec<Vec<u8>>,
    to: Vec<libc::sockaddr_storage>,
    to_len: Vec<libc::socklen_t>,
    queued: usize,
}

fn zeroed<T>() -> T {
    // SAFETY: only used for plain C structs (iovec, mmsghdr, sockaddr_storage) for which all
    // zero bytes is a valid value.
    unsafe { std::mem::zeroed() }
}

impl Rx {
    pub fn new() -> Self {
        Rx {
            bufs: Box::new([[0; SIZE]; BATCH]),
            addrs: Box::new([zeroed(); BATCH]),
            iov: Box::new([zeroed(); BATCH]),
            hdrs: Box::new([zeroed(); BATCH]),
        }
    }

    /// Blocks until at least one datagram is there; returns how many were taken.
    pub fn recv(&mut self, fd: RawFd) -> std::io::Result<usize> {
        for i in 0..BATCH {
            self.iov[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: SIZE,
            };
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_iov = &mut self.iov[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points at buffers and addresses owned by `self`, sized as
        // declared, and alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Datagram `i` of the last [`recv`](Self::recv) and its sender; `None` if it was cut
    /// short or came from no usable address.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr, usize)> {
        let h = &self.hdrs[i];
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let addr = socket_addr(&self.addrs[i], h.msg_hdr.msg_namelen)?;
        Some((&self.bufs[i][..h.msg_len as usize], addr, i))
    }
}

/// The address the kernel wrote (IPv4 or IPv6), if it is one.
fn socket_addr(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(ss.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says this storage holds a sockaddr_in, and it is long enough.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into(),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

impl Tx {
    pub fn new() -> Self {
        Tx {
            bufs: (0..BATCH).map(|_| Vec::with_capacity(1024)).collect(),
            to: vec![zeroed(); BATCH],
            to_len: vec![0; BATCH],
            queued: 0,
        }
    }

    /// The buffer for the next reply (empty).
    pub fn next(&mut self) -> &mut Vec<u8> {
        let b = &mut self.bufs[self.queued];
        b.clear();
        b
    }

    /// Queues what was written into [`next`](Self::next), to the sender of `rx` datagram `i`.
    pub fn queue(&mut self, rx: &Rx, i: usize) {
        self.to[self.queued] = rx.addrs[i];
        self.to_len[self.queued] = rx.hdrs[i].msg_hdr.msg_namelen;
        self.queued += 1;
    }

    /// Sends every queued reply (a reply the kernel refuses is dropped, as with `sendto`).
    pub fn flush(&mut self, fd: RawFd) {
        let mut iov: [libc::iovec; BATCH] = zeroed();
        let mut hdrs: [libc::mmsghdr; BATCH] = zeroed();
        for i in 0..self.queued {
            iov[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.bufs[i].len(),
            };
            hdrs[i].msg_hdr.msg_name = (&mut self.to[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = self.to_len[i];
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < self.queued {
            // SAFETY: headers sent..queued point at live buffers and addresses of `self`.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs[sent..].as_mut_ptr(),
                    (self.queued - sent) as u32,
                    0,
                )
            };
            if n <= 0 {
                sent += 1; // skip the one that failed
            } else {
                sent += n as usize;
            }
        }
        self.queued = 0;
    }
}
