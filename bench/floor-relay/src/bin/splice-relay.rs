//! The zero-copy relay: `splice-relay LISTEN BACKEND`. Like `tokio-relay` (one current-thread
//! runtime, a task per connection, TCP_NODELAY), but the bytes never enter userland: each
//! direction owns a pipe, and `splice(2)` moves what the socket received into the pipe and
//! from the pipe into the other socket (the kernel passes page references, not copies). This
//! is the `splice(2)` that issue #4 asks to consider: two syscalls per direction and message,
//! as with read/write, plus a pipe per direction.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// What one splice call may move: the pipe's default capacity (16 pages).
const CHUNK: usize = 64 * 1024;

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// One non-blocking splice of up to `len` bytes; `WouldBlock` when nothing can move now.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: plain descriptors, no offsets (both ends are a socket or a pipe).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `from` → pipe → `to` until `from` ends, then half-closes `to`.
async fn one_way(from: &TcpStream, to: &TcpStream) -> io::Result<()> {
    let (pipe_r, pipe_w) = pipe()?;
    loop {
        from.readable().await?;
        // try_io clears the readiness on WouldBlock, so the next readable() waits for epoll.
        // A short splice drained the socket: it reports WouldBlock too (keeping the count), so
        // no second splice is spent learning EAGAIN, as tokio's own poll_read does for a short
        // read. Without it this relay made three syscalls per message and direction, not two.
        let mut moved = 0;
        let n = match from.try_io(Interest::READABLE, || {
            moved = splice(from.as_raw_fd(), pipe_w.as_raw_fd(), CHUNK)?;
            if moved > 0 && moved < CHUNK {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(moved)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && moved > 0 => moved,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            // SAFETY: shutting down the write side of a socket this task borrows.
            unsafe { libc::shutdown(to.as_raw_fd(), libc::SHUT_WR) };
            return Ok(());
        }
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe_r.as_raw_fd(), to.as_raw_fd(), left)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn main() -> io::Result<()> {
    let (listen, backend, _) = floor_relay::args();
    floor_relay::serve(listen, backend, |client, upstream| async move {
        let _ = tokio::try_join!(one_way(&client, &upstream), one_way(&upstream, &client));
    })
}
