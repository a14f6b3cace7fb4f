//! The bare tokio relay: `tokio-relay LISTEN BACKEND [SPARE_THREADS]`. One current-thread
//! runtime; per accepted connection a task that connects to BACKEND, sets TCP_NODELAY on both
//! sides and runs `copy_bidirectional`. No lookup, no plugin, no metrics: the epoll floor.
//! SPARE_THREADS (default 0) more threads are started and parked for good: they never run, but
//! they make the process multi-threaded like the gateway (one shared descriptor table, so the
//! kernel counts a reference on the file in every descriptor syscall), nothing else changed.
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().expect("LISTEN").parse().expect("LISTEN addr");
    let backend: SocketAddr = args.next().expect("BACKEND").parse().expect("BACKEND addr");
    let spare: usize = args
        .next()
        .map_or(0, |n| n.parse().expect("SPARE_THREADS count"));
    for _ in 0..spare {
        std::thread::spawn(|| {
            loop {
                std::thread::park();
            }
        });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (mut client, _) = listener.accept().await?;
            tokio::spawn(async move {
                let Ok(mut upstream) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    })
}
