//! The bare tokio relay: `tokio-relay LISTEN BACKEND [SPARE_THREADS]`. One current-thread
//! runtime; per accepted connection a task that connects to BACKEND, sets TCP_NODELAY on both
//! sides and runs `copy_bidirectional`. No lookup, no plugin, no metrics: the epoll floor.
//! SPARE_THREADS (default 0) more threads are started and parked for good: they never run, but
//! they make the process multi-threaded like the gateway (one shared descriptor table, so the
//! kernel counts a reference on the file in every descriptor syscall), nothing else changed.
fn main() -> std::io::Result<()> {
    let (listen, backend, mut rest) = floor_relay::args();
    let spare: usize = rest
        .next()
        .map_or(0, |n| n.parse().expect("SPARE_THREADS count"));
    for _ in 0..spare {
        std::thread::spawn(|| {
            loop {
                std::thread::park();
            }
        });
    }
    floor_relay::serve(listen, backend, |mut client, mut upstream| async move {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    })
}
