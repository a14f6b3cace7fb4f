//! The data plane's worker threads: each runs a single-threaded tokio runtime, so a
//! connection stays on one worker from accept to close (no work stealing) and plugin
//! instances stay thread-local; a plain L4 connection's bytes move on the worker's own relay
//! thread ([`super::relay`]), its completion back on the worker. Listeners are bound once per worker
//! with `SO_REUSEPORT`, so the kernel spreads connections over the workers.

use std::future::Future;

use tokio::runtime::Handle;
use tokio::task::AbortHandle;

/// Raises the open-file soft limit to the hard limit: every listener takes one socket per
/// worker and every proxied connection two. Returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 0;
        }
        if l.rlim_cur < l.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: l.rlim_max,
                rlim_max: l.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                return wanted.rlim_cur;
            }
        }
    }
    l.rlim_cur
}

/// How many listener sockets the data plane may hold under an open-file limit of `limit`
/// (0: unknown, no budget): all but a reserve (a quarter of the limit, at most 1,024) kept
/// for accepted connections and the API, admin and DNS sockets. Past it a listener is
/// refused like one that cannot bind, so thousands of Services never leave the API and
/// admin endpoints unable to accept.
pub fn listener_socket_budget(limit: u64) -> usize {
    if limit == 0 {
        return usize::MAX;
    }
    let reserve = (limit / 4).min(1024);
    usize::try_from(limit - reserve).unwrap_or(usize::MAX)
}

pub struct Workers {
    handles: Vec<Handle>,
}

impl Workers {
    /// Starts `n` worker threads (at least one); `relay_pause` is their relay threads' pause
    /// after a busy batch ([`super::relay`]).
    pub fn start(n: usize, relay_pause: std::time::Duration) -> std::io::Result<Self> {
        let mut handles = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name(format!("sy-worker-{i}"))
                .spawn(move || {
                    super::relay::set_pause(relay_pause);
                    // I/O and timers. `enable_io` also brings tokio's signal and process
                    // drivers (the crate uses both elsewhere); at each park they cost a flag
                    // check and a try-lock of the empty orphan queue, 0.1% of an L4 request.
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_io()
                        .enable_time()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(rt.handle().clone()));
                    rt.block_on(std::future::pending::<()>());
                })?;
            handles.push(
                rx.recv()
                    .map_err(|_| std::io::Error::other("worker thread died while starting"))??,
            );
        }
        Ok(Workers { handles })
    }

    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// Runs `task` on worker `i`; the handle stops it.
    pub fn spawn<F>(&self, i: usize, task: F) -> AbortHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handles[i % self.handles.len()]
            .spawn(task)
            .abort_handle()
    }
}

#[cfg(test)]
mod tests {
    use super::listener_socket_budget;

    #[test]
    fn the_listener_budget_leaves_a_reserve_for_connections_and_the_api() {
        assert_eq!(listener_socket_budget(20_000), 18_976);
        assert_eq!(listener_socket_budget(1_048_576), 1_047_552);
        assert_eq!(listener_socket_budget(1_024), 768);
        assert_eq!(listener_socket_budget(0), usize::MAX);
        assert_eq!(listener_socket_budget(u64::MAX), usize::MAX - 1024);
    }
}
