//! The bare tokio relay: `tokio-relay LISTEN BACKEND`. One current-thread runtime; per accepted
//! connection a task that connects to BACKEND, sets TCP_NODELAY on both sides and runs
//! `copy_bidirectional`. No lookup, no plugin, no metrics: the epoll floor.
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().expect("LISTEN").parse().expect("LISTEN addr");
    let backend: SocketAddr = args.next().expect("BACKEND").parse().expect("BACKEND addr");
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
