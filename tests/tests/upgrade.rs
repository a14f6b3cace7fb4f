//! HTTP upgrades in HTTP mode: WebSocket clients (this test, speaking RFC 6455 on plain
//! sockets) through a Service in HTTP mode to Python WebSocket backends. The handshake passes
//! through with its headers, each upgraded connection becomes one tunnel to one backend, the
//! upgrade requests are balanced, and a plain request to the same backends still gets their
//! normal answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use switchyard_e2e::traffic::{jsonpath, local_endpoints, metric, service, wait_listener};
use switchyard_e2e::{Backend, Gateway, curl};

/// The example key of RFC 6455 §1.3 and the accept value it defines for it.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Sends the upgrade request; returns the socket and the response head.
fn handshake(addr: &str) -> (BufReader<TcpStream>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /chat HTTP/1.1\r\nHost: chat.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).unwrap() > 0,
            "closed during the handshake: {head}"
        );
        if line == "\r\n" {
            return (r, head);
        }
        head.push_str(&line);
    }
}

/// One masked text frame, as a client must send it.
fn send_text(s: &mut TcpStream, text: &str) {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | text.len() as u8];
    frame.extend(mask);
    frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).unwrap();
}

fn read_frame(r: &mut BufReader<TcpStream>) -> (u8, String) {
    let mut h = [0u8; 2];
    r.read_exact(&mut h).unwrap();
    let mut data = vec![0u8; (h[1] & 127) as usize];
    r.read_exact(&mut data).unwrap();
    (h[0] & 15, String::from_utf8(data).unwrap())
}

#[test]
fn websocket_upgrades_become_tunnels_to_one_backend_each() {
    let g = Gateway::start().unwrap();
    let _b: Vec<Backend> = [1, 2, 3]
        .iter()
        .map(|i| Backend::websocket(&g.backend_ip(*i), 9400, &format!("b{i}")).unwrap())
        .collect();
    let eps = local_endpoints(&g, &[1, 2, 3]);
    service(
        &g,
        "chat",
        "ports: [{name: ws, port: 80, targetPort: 9400, appProtocol: http}]",
        &eps,
        "{name: ws, port: 9400}",
    );
    let cip = jsonpath(&g, &["svc", "chat"], "{.spec.clusterIP}");
    let addr = format!("{cip}:80");
    wait_listener(&g, &addr, 3);

    // Six tunnels open at once; each keeps to the backend its upgrade request was sent to.
    let mut open = Vec::new();
    for _ in 0..6 {
        let (r, head) = handshake(&addr);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("upgrade: websocket"), "{head}");
        assert!(lower.contains("connection: upgrade"), "{head}");
        assert!(
            head.lines().any(|l| l
                .eq_ignore_ascii_case(&format!("sec-websocket-accept: {ACCEPT}"))
                && l.ends_with(ACCEPT)),
            "{head}"
        );
        open.push(r);
    }
    let mut backends = std::collections::BTreeSet::new();
    for round in 0..20 {
        for (n, r) in open.iter_mut().enumerate() {
            let msg = format!("tunnel {n} message {round}");
            send_text(r.get_mut(), &msg);
            let (op, text) = read_frame(r);
            assert_eq!(op, 1, "a text frame back");
            let (backend, echoed) = text.split_once(": ").unwrap();
            assert_eq!(echoed, msg);
            if round == 0 {
                backends.insert((n, backend.to_string()));
            } else {
                assert!(
                    backends.contains(&(n, backend.to_string())),
                    "tunnel {n} moved to {backend}"
                );
            }
        }
    }
    let distinct: std::collections::BTreeSet<_> = backends.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(
        distinct.len(),
        3,
        "upgrade requests are balanced: {backends:?}"
    );

    // Closing handshake, end to end.
    let r = &mut open[0];
    r.get_mut().write_all(&[0x88, 0x80, 1, 2, 3, 4]).unwrap();
    assert_eq!(read_frame(r).0, 8);

    // A plain request still gets the backend's own answer.
    let (code, body) = curl(&["-s", &format!("http://{addr}/chat")]);
    assert_eq!(code, 0);
    assert_eq!(body, "not a WebSocket upgrade\n");
    // The tunnels' bytes are counted as they pass: at least 20 bytes per frame each way.
    for family in ["received", "sent"] {
        let bytes = metric(
            &g,
            &format!(
                "switchyard_proxy_{family}_bytes_total{{namespace=\"default\",service=\"chat\""
            ),
        );
        assert!(bytes >= 6.0 * 20.0 * 20.0, "{family}: {bytes}");
    }
}

#[test]
fn a_tunnel_to_an_endpoint_that_left_closes_after_the_drain_timeout() {
    let g = Gateway::start_with(&["--drain-timeout-s", "1"]).unwrap();
    let _b: Vec<Backend> = [4, 5]
        .iter()
        .map(|i| Backend::websocket(&g.backend_ip(*i), 9400, &format!("b{i}")).unwrap())
        .collect();
    let spec = "ports: [{name: ws, port: 80, targetPort: 9400, appProtocol: http}]";
    service(
        &g,
        "chat",
        spec,
        &local_endpoints(&g, &[4, 5]),
        "{name: ws, port: 9400}",
    );
    let cip = jsonpath(&g, &["svc", "chat"], "{.spec.clusterIP}");
    let addr = format!("{cip}:80");
    wait_listener(&g, &addr, 2);
    // Tunnels until one reaches each backend.
    let mut on = std::collections::BTreeMap::new();
    for n in 0..20 {
        if on.len() == 2 {
            break;
        }
        let (mut r, head) = handshake(&addr);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        send_text(r.get_mut(), &format!("hello {n}"));
        let (_, text) = read_frame(&mut r);
        let backend = text.split_once(": ").unwrap().0.to_string();
        on.entry(backend).or_insert(r);
    }
    assert_eq!(on.len(), 2, "upgrade requests reach both backends");
    service(
        &g,
        "chat",
        spec,
        &local_endpoints(&g, &[5]),
        "{name: ws, port: 9400}",
    );
    let removed = std::time::Instant::now();
    // b4's tunnel is closed 1-4 s later; b5's stays and still echoes.
    let gone = on.get_mut("b4").unwrap();
    gone.get_mut()
        .set_read_timeout(Some(Duration::from_secs(6)))
        .unwrap();
    let mut buf = [0u8; 16];
    let read = gone.read(&mut buf);
    let waited = removed.elapsed();
    assert!(
        matches!(&read, Ok(0))
            || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the tunnel to the endpoint that left is closed, not idle: {read:?}"
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    let kept = on.get_mut("b5").unwrap();
    send_text(kept.get_mut(), "still here");
    assert_eq!(read_frame(kept).1, "b5: still here");
}
