//! What the two tokio relays share: their arguments and the accept loop. One current-thread
//! runtime with I/O only; per accepted connection a task that connects to the backend, sets
//! TCP_NODELAY on both sides and hands the pair to the relay's copy.
use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// `LISTEN BACKEND` from the command line, and what follows them.
pub fn args() -> (SocketAddr, SocketAddr, std::iter::Skip<std::env::Args>) {
    let mut args = std::env::args().skip(1);
    let listen = args.next().expect("LISTEN").parse().expect("LISTEN addr");
    let backend = args.next().expect("BACKEND").parse().expect("BACKEND addr");
    (listen, backend, args)
}

/// Accepts on `listen` for good; each client and its fresh backend connection go to `copy`.
pub fn serve<F, Fut>(listen: SocketAddr, backend: SocketAddr, copy: F) -> io::Result<()>
where
    F: Fn(TcpStream, TcpStream) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (client, _) = listener.accept().await?;
            tokio::spawn(async move {
                let Ok(upstream) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                copy(client, upstream).await;
            });
        }
    })
}
