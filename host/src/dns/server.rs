//! The DNS sockets. UDP: one `SO_REUSEPORT` socket per worker, each served by a plain thread
//! in a blocking loop of batched receives and sends ([`batch`](super::batch); no runtime
//! between the socket and the answer). TCP: a tokio
//! listener, length-prefixed messages (RFC 7766), several queries per connection, closed
//! after 10 s idle. Queries to forward go to tasks on the main runtime. Touches only these
//! sockets and the upstream sockets `forward` opens.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::answer::{self, Answered, Malformed, Outcome, Shaper};
use super::batch::{Rx, Tx};
use super::fast::Shaping;
use super::zone::Zone;
use super::{Dns, forward};
use crate::snapshot::ServiceView;

const TCP_IDLE: Duration = Duration::from_secs(10);

fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// The bound sockets, before anything is answered.
pub(super) struct Sockets {
    udp: Vec<UdpSocket>,
    tcp: TcpListener,
}

/// Binds TCP and one UDP socket per worker (so a bad address fails `serve` at once).
pub(super) async fn bind(addr: SocketAddr, workers: usize) -> std::io::Result<Sockets> {
    let tcp = TcpListener::bind(addr).await?;
    let addr = tcp.local_addr()?;
    let udp = (0..workers.max(1))
        .map(|_| udp_socket(addr))
        .collect::<std::io::Result<_>>()?;
    Ok(Sockets { udp, tcp })
}

/// Starts answering on `sockets` (queries that arrived meanwhile wait in the socket buffers).
pub(super) fn serve(dns: &Arc<Dns>, sockets: Sockets) -> std::io::Result<()> {
    for (i, sock) in sockets.udp.into_iter().enumerate() {
        let d = dns.clone();
        let sock = Arc::new(sock);
        std::thread::Builder::new()
            .name(format!("dns-udp-{i}"))
            .spawn(move || udp_worker(d, sock))?;
    }
    tokio::spawn(tcp_accept(dns.clone(), sockets.tcp));
    Ok(())
}

impl Dns {
    /// The fast path, shaping with the Service's plugin and the default chain; counts what
    /// it answers.
    fn fast_answer(
        &self,
        zone: &Zone,
        packet: &[u8],
        client: SocketAddr,
        tcp: bool,
        out: &mut Vec<u8>,
    ) -> Option<hickory_proto::op::ResponseCode> {
        let run = |svc: Option<&Arc<ServiceView>>, name: &str, qtype: u16, answers| {
            self.shaper
                .shape_answers(svc, name, qtype, client.ip(), answers)
        };
        let shaping = Shaping {
            all: self.shaper.shapes_all(),
            run: &run,
        };
        let forwarding = !self.settings.upstreams.is_empty();
        let rcode = zone.fast_answer(packet, !tcp, forwarding, Some(&shaping), out)?;
        self.metrics.answered(tcp, rcode);
        Some(rcode)
    }

    /// The reference path, on the zone the caller already loaded for the fast path.
    fn answer(&self, zone: &Zone, packet: &[u8], client: SocketAddr, tcp: bool) -> Answered {
        let a = answer::answer(
            zone,
            packet,
            client.ip(),
            !tcp,
            !self.settings.upstreams.is_empty(),
            &self.shaper,
        );
        match a.malformed {
            Some(Malformed::FormErr) => {
                self.metrics.malformed[0].inc();
            }
            Some(Malformed::Dropped) => {
                self.metrics.malformed[1].inc();
            }
            None => {}
        }
        if a.truncated {
            self.metrics.truncated.inc();
        }
        if let Outcome::Reply(_) = a.outcome {
            self.metrics.answered(tcp, a.rcode);
        }
        a
    }

    /// Forwards upstream; the reply, or SERVFAIL when no upstream answered.
    async fn forward(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        match forward::forward(&self.settings.upstreams, query, tcp).await {
            Some(r) => {
                self.metrics.forwarded[0].inc();
                Some(r)
            }
            None => {
                self.metrics.forwarded[1].inc();
                self.metrics
                    .answered(tcp, hickory_proto::op::ResponseCode::ServFail);
                answer::servfail(query)
            }
        }
    }
}

fn udp_worker(dns: Arc<Dns>, sock: Arc<UdpSocket>) {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let (mut rx, mut tx) = (Rx::new(), Tx::new());
    loop {
        let n = match rx.recv(fd) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "DNS UDP receive failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let zone = dns.zone.load();
        for (query, peer, i) in (0..n).filter_map(|i| rx.get(i)) {
            if dns
                .fast_answer(&zone, query, peer, false, tx.next())
                .is_some()
            {
                tx.queue(&rx, i);
                continue;
            }
            match dns.answer(&zone, query, peer, false).outcome {
                Outcome::Reply(reply) => {
                    *tx.next() = reply;
                    tx.queue(&rx, i);
                }
                Outcome::Forward => {
                    let (d, s, query) = (dns.clone(), sock.clone(), query.to_vec());
                    dns.runtime.spawn(async move {
                        if let Some(reply) = d.forward(&query, false).await {
                            let _ = s.send_to(&reply, peer);
                        }
                    });
                }
                Outcome::Drop => {}
            }
        }
        tx.flush(fd);
    }
}

async fn tcp_accept(dns: Arc<Dns>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((s, peer)) => {
                tokio::spawn(tcp_connection(dns.clone(), s, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn tcp_connection(dns: Arc<Dns>, mut s: TcpStream, peer: SocketAddr) {
    let (mut buf, mut fast, mut out) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, s.read_u16()).await else {
            return;
        };
        buf.resize(usize::from(len), 0);
        let Ok(Ok(_)) = tokio::time::timeout(TCP_IDLE, s.read_exact(&mut buf)).await else {
            return;
        };
        let zone = dns.zone.load_full();
        let slow;
        let reply: &[u8] = match dns.fast_answer(&zone, &buf, peer, true, &mut fast) {
            Some(_) => &fast,
            None => {
                slow = match dns.answer(&zone, &buf, peer, true).outcome {
                    Outcome::Reply(r) => r,
                    Outcome::Forward => match dns.forward(&buf, true).await {
                        Some(r) => r,
                        None => return,
                    },
                    Outcome::Drop => return,
                };
                &slow
            }
        };
        // Each message goes after a two-byte length (RFC 1035 §4.2.2).
        let Ok(n) = u16::try_from(reply.len()) else {
            return;
        };
        out.clear();
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(reply);
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}
