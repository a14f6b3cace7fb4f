//! The relay against real loopback sockets: bytes, half-close, back-pressure, resets, many
//! connections at once, a lasting connection's move from the worker's task to its relay
//! thread, and that thread's pauses while many connections are busy.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;

use super::adopt;
use super::pace::BUSY_CONNS;
use super::task::SETTLED;
use super::thread::{FAIL_START, relay, set_pause};

type Totals = std::io::Result<[u64; 2]>;

/// A connection through the relay: the client's end, the endpoint's end, and what `done` is
/// called with.
type Relayed = (TcpStream, TcpStream, oneshot::Receiver<Totals>);

/// A connection through the relay, on loopback.
async fn relayed() -> Relayed {
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let back = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(front.local_addr().unwrap())
        .await
        .unwrap();
    let (accepted, _) = front.accept().await.unwrap();
    let upstream = TcpStream::connect(back.local_addr().unwrap())
        .await
        .unwrap();
    let (endpoint, _) = back.accept().await.unwrap();
    // As the gateway's sockets are (proxy::tcp).
    accepted.set_nodelay(true).unwrap();
    upstream.set_nodelay(true).unwrap();
    let (tx, rx) = oneshot::channel();
    adopt(
        accepted,
        upstream,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    (client, endpoint, rx)
}

const LIMIT: Duration = Duration::from_secs(20);

/// Twenty exchanges (40 reads with data, past the eight after which a connection moves): 10
/// bytes from the client, 20 back.
async fn twenty_exchanges(client: &mut TcpStream, endpoint: &mut TcpStream) {
    for i in 0..20u8 {
        client.write_all(&[i; 10]).await.unwrap();
        let mut got = [0u8; 10];
        timeout(LIMIT, endpoint.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, [i; 10]);
        endpoint.write_all(&[i; 20]).await.unwrap();
        let mut back = [0u8; 20];
        timeout(LIMIT, client.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, [i; 20]);
    }
}

/// The client's FIN, then the endpoint's "bye" and FIN; `done` must report 200 bytes up and
/// 403 down (after [`twenty_exchanges`]).
async fn close_both_ways(
    mut client: TcpStream,
    mut endpoint: TcpStream,
    done: oneshot::Receiver<Totals>,
) {
    client.shutdown().await.unwrap();
    assert_eq!(read_all(&mut endpoint).await, b"");
    endpoint.write_all(b"bye").await.unwrap();
    endpoint.shutdown().await.unwrap();
    assert_eq!(read_all(&mut client).await, b"bye");
    let totals = timeout(LIMIT, done).await.unwrap().unwrap().unwrap();
    assert_eq!(totals, [200, 403]);
}

/// Everything `s` sends until its FIN, within [`LIMIT`].
async fn read_all(s: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    timeout(LIMIT, s.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    got
}

#[tokio::test]
async fn bytes_cross_both_ways_and_each_fin_is_passed_on() {
    let settled = SETTLED.with(|n| n.get());
    let (mut client, mut endpoint, done) = relayed().await;
    client.write_all(b"ping").await.unwrap();
    client.shutdown().await.unwrap();
    // The endpoint sees the request end (EOF) while the client can still read.
    assert_eq!(read_all(&mut endpoint).await, b"ping");
    endpoint.write_all(b"pong!").await.unwrap();
    endpoint.shutdown().await.unwrap();
    assert_eq!(read_all(&mut client).await, b"pong!");
    let totals = timeout(LIMIT, done).await.unwrap().unwrap().unwrap();
    assert_eq!(totals, [4, 5]);
    // A short connection lives and ends in the worker's task.
    assert_eq!(SETTLED.with(|n| n.get()), settled);
}

#[tokio::test]
async fn a_lasting_connection_moves_to_the_relay_thread_and_keeps_its_totals() {
    let settled = SETTLED.with(|n| n.get());
    let (mut client, mut endpoint, done) = relayed().await;
    twenty_exchanges(&mut client, &mut endpoint).await;
    assert_eq!(SETTLED.with(|n| n.get()) - settled, 1, "moved once");
    // Half-close works the same on the relay thread, and the totals count both stages.
    close_both_ways(client, endpoint, done).await;
}

#[tokio::test]
async fn a_lasting_connection_stays_in_the_task_when_no_relay_thread_can_start() {
    FAIL_START.set(true);
    let settled = SETTLED.with(|n| n.get());
    let (mut client, mut endpoint, done) = relayed().await;
    // Far past the reads that would move it (after each miss the count starts again).
    twenty_exchanges(&mut client, &mut endpoint).await;
    assert_eq!(SETTLED.with(|n| n.get()), settled, "never moved");
    close_both_ways(client, endpoint, done).await;
    FAIL_START.set(false);
}

#[tokio::test]
async fn a_slow_reader_holds_the_sender_back_and_loses_nothing() {
    // Far more than loopback's socket buffers hold, so both directions stash and wait.
    let up: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    let down: Vec<u8> = up.iter().rev().copied().collect();
    let (client, endpoint, done) = relayed().await;
    let (mut client_r, mut client_w) = client.into_split();
    let (mut endpoint_r, mut endpoint_w) = endpoint.into_split();
    let (up2, down2) = (up.clone(), down.clone());
    let sending = tokio::spawn(async move {
        client_w.write_all(&up2).await.unwrap();
        client_w.shutdown().await.unwrap();
    });
    let answering = tokio::spawn(async move {
        endpoint_w.write_all(&down2).await.unwrap();
        endpoint_w.shutdown().await.unwrap();
    });
    // Neither reader starts until the writers have filled everything in between.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut at_endpoint, mut at_client) = (Vec::new(), Vec::new());
    let reads = async {
        tokio::try_join!(
            endpoint_r.read_to_end(&mut at_endpoint),
            client_r.read_to_end(&mut at_client)
        )
    };
    timeout(LIMIT, reads).await.unwrap().unwrap();
    timeout(LIMIT, sending).await.unwrap().unwrap();
    timeout(LIMIT, answering).await.unwrap().unwrap();
    assert!(at_endpoint == up, "client → endpoint bytes differ");
    assert!(at_client == down, "endpoint → client bytes differ");
    let totals = timeout(LIMIT, done).await.unwrap().unwrap().unwrap();
    assert_eq!(totals, [up.len() as u64, down.len() as u64]);
}

#[tokio::test]
async fn a_reset_from_the_endpoint_ends_the_connection_with_an_error() {
    let (mut client, endpoint, done) = relayed().await;
    client.write_all(b"hello").await.unwrap();
    socket2::SockRef::from(&endpoint)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(endpoint);
    let result = timeout(LIMIT, done).await.unwrap().unwrap();
    assert!(
        result.is_err(),
        "a reset must end the relay with an error: {result:?}"
    );
    // The client's side is closed with it.
    let mut rest = Vec::new();
    let _ = timeout(LIMIT, client.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn one_worker_relays_many_connections_at_once() {
    let mut pairs = Vec::new();
    for _ in 0..100 {
        pairs.push(relayed().await);
    }
    // Every request is on its way before any answer is read.
    for (i, (client, _, _)) in pairs.iter_mut().enumerate() {
        client
            .write_all(format!("request {i}").as_bytes())
            .await
            .unwrap();
    }
    for (i, (client, endpoint, done)) in pairs.into_iter().enumerate() {
        let want = format!("request {i}");
        let mut got = vec![0; want.len()];
        timeout(LIMIT, answer_one(client, endpoint, &mut got, done))
            .await
            .unwrap();
        assert_eq!(got, want.as_bytes());
    }
}

/// Reads one request (`got.len()` bytes) at the endpoint, answers it and closes, and
/// checks the client gets the answer and the relay its totals.
async fn answer_one(
    mut client: TcpStream,
    mut endpoint: TcpStream,
    got: &mut [u8],
    done: oneshot::Receiver<Totals>,
) {
    endpoint.read_exact(got).await.unwrap();
    endpoint.write_all(b"ok").await.unwrap();
    drop(endpoint);
    assert_eq!(read_all(&mut client).await, b"ok");
    drop(client);
    let totals = done.await.unwrap().unwrap();
    assert_eq!(totals, [got.len() as u64, 2]);
}

/// `n` connections through the relay, each moved to the relay thread by [`twenty_exchanges`].
async fn lasting(n: u32) -> Vec<Relayed> {
    let mut pairs = Vec::new();
    for _ in 0..n {
        let (mut client, mut endpoint, done) = relayed().await;
        twenty_exchanges(&mut client, &mut endpoint).await;
        pairs.push((client, endpoint, done));
    }
    pairs
}

/// `rounds` exchanges on every connection at once: each client sends 10 bytes, each endpoint
/// answers 20 in two writes (a head and a body, as an HTTP server answers; with
/// `TCP_NODELAY`, as nginx sets it, so the second is not held back for the first's ACK).
async fn exchanges_at_once(pairs: &mut [Relayed], rounds: u8) {
    for (_, endpoint, _) in pairs.iter() {
        endpoint.set_nodelay(true).unwrap();
    }
    for r in 0..rounds {
        for (client, _, _) in pairs.iter_mut() {
            client.write_all(&[r; 10]).await.unwrap();
        }
        for (_, endpoint, _) in pairs.iter_mut() {
            let mut got = [0u8; 10];
            timeout(LIMIT, endpoint.read_exact(&mut got))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got, [r; 10]);
            endpoint.write_all(&[r; 12]).await.unwrap();
            endpoint.write_all(&[r; 8]).await.unwrap();
        }
        for (client, _, _) in pairs.iter_mut() {
            let mut back = [0u8; 20];
            timeout(LIMIT, client.read_exact(&mut back))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(back, [r; 20]);
        }
    }
}

/// Closes every connection (the client's FIN, then the endpoint's) and checks its totals.
async fn close_all(pairs: Vec<Relayed>, totals: [u64; 2]) {
    for (mut client, mut endpoint, done) in pairs {
        client.shutdown().await.unwrap();
        assert_eq!(read_all(&mut endpoint).await, b"");
        endpoint.shutdown().await.unwrap();
        assert_eq!(read_all(&mut client).await, b"");
        assert_eq!(
            timeout(LIMIT, done).await.unwrap().unwrap().unwrap(),
            totals
        );
    }
}

#[tokio::test]
async fn many_busy_connections_make_the_relay_thread_pause_and_lose_nothing() {
    set_pause(Duration::from_micros(50));
    let mut pairs = lasting(2 * BUSY_CONNS).await;
    exchanges_at_once(&mut pairs, 200).await;
    let pauses = relay().unwrap().pauses.load(Ordering::Relaxed);
    assert!(pauses > 0, "no pause with {} busy connections", pairs.len());
    close_all(pairs, [200 + 200 * 10, 400 + 200 * 20]).await;
}

#[tokio::test]
async fn a_relay_thread_set_to_no_pause_never_pauses() {
    set_pause(Duration::ZERO);
    let mut pairs = lasting(2 * BUSY_CONNS).await;
    exchanges_at_once(&mut pairs, 200).await;
    assert_eq!(relay().unwrap().pauses.load(Ordering::Relaxed), 0);
    close_all(pairs, [200 + 200 * 10, 400 + 200 * 20]).await;
}
