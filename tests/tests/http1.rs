//! HTTP/1.x framing through the gateway's own HTTP/1 path, against a raw-socket Python
//! backend, with curl and plain sockets as clients: chunked and Content-Length uploads (with
//! `Expect: 100-continue`), chunked responses to HTTP/1.1 and HTTP/1.0 clients, HEAD,
//! responses delimited by close, `103` interim responses, pipelined requests, an
//! absolute-form target, and 400 / 431 for bad heads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use switchyard_e2e::traffic::{jsonpath, local_endpoints, metric, service, wait_listener};
use switchyard_e2e::{Backend, Gateway, curl};

/// A gateway with one HTTP-mode Service `web` in front of one framing backend; returns its
/// `ip:port` too.
fn web() -> (Gateway, Backend, String) {
    let g = Gateway::start().unwrap();
    let b = Backend::http_wire(&g.backend_ip(21), 9380, "w21").unwrap();
    service(
        &g,
        "web",
        "ports: [{name: http, port: 80, targetPort: 9380, appProtocol: http}]",
        &local_endpoints(&g, &[21]),
        "{name: http, port: 9380}",
    );
    let cip = jsonpath(&g, &["svc", "web"], "{.spec.clusterIP}");
    let addr = format!("{cip}:80");
    wait_listener(&g, &addr, 1);
    (g, b, addr)
}

/// `NAME LENGTH SUM` as the backend computes it for `body`.
fn echo_line(body: &[u8]) -> String {
    let sum: u64 = body.iter().map(|&b| b as u64).sum::<u64>() % 4_294_967_296;
    format!("w21 {} {sum}\n", body.len())
}

/// Everything the server sends on `s` until it closes or 3 s pass.
fn read_all(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn uploads_pass_through_chunked_or_with_a_length_and_expect_continue() {
    let (_g, _b, addr) = web();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    // 3 MiB: more than any socket buffer, so the body streams while it is read.
    let body: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(&file, &body).unwrap();
    let data = format!("@{}", file.display());
    let url = format!("http://{addr}/echo");
    for extra in [
        vec!["-H", "Transfer-Encoding: chunked"],
        vec!["-H", "Expect: 100-continue"],
        vec!["-H", "Expect:"],
    ] {
        let mut args = vec!["--http1.1", "--data-binary", data.as_str()];
        args.extend(extra.iter().copied());
        args.push(&url);
        let (code, out) = curl(&args);
        assert_eq!(
            (code, out.as_str()),
            (0, echo_line(&body).as_str()),
            "{extra:?}"
        );
    }
}

#[test]
fn responses_chunked_head_until_close_and_interim_reach_the_client() {
    let (g, _b, addr) = web();
    let lines: String = (0..50).map(|i| format!("line {i}\n")).collect();
    for v in ["--http1.1", "--http1.0"] {
        let (code, out) = curl(&[v, &format!("http://{addr}/chunked")]);
        assert_eq!((code, out.as_str()), (0, lines.as_str()), "{v}");
    }
    // The chunked body passes through as it was sent: curl --raw sees the chunks.
    let (_, raw) = curl(&["--raw", &format!("http://{addr}/chunked")]);
    assert!(raw.starts_with("7\r\nline 0\n\r\n"), "{raw:?}");
    assert!(raw.ends_with("0\r\nX-Done: yes\r\n\r\n"), "{raw:?}");
    // Two HEADs on one connection: a length, no body, and the connection stays usable.
    let (code, out) = curl(&[
        "-sI",
        &format!("http://{addr}/h1"),
        &format!("http://{addr}/h2"),
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.matches("Content-Length: 1234").count(), 2, "{out}");
    let (code, out) = curl(&["-i", &format!("http://{addr}/close")]);
    assert_eq!(code, 0);
    assert!(out.ends_with("\r\n\r\nw21 until close\n"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    let (code, out) = curl(&["-i", &format!("http://{addr}/early")]);
    assert_eq!(code, 0);
    assert!(out.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{out}");
    assert!(out.contains("HTTP/1.1 200 OK\r\n") && out.ends_with("w21 /early 127.0.0.1\n"));
    assert!(
        metric(
            &g,
            "switchyard_proxy_http_requests_total{namespace=\"default\",service=\"web\",port=\"http\",code=\"2xx\"}"
        ) >= 7.0
    );
}

#[test]
fn pipelined_and_absolute_form_requests_and_bad_heads() {
    let (g, _b, addr) = web();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(
        b"GET /p1 HTTP/1.1\r\nHost: web\r\n\r\nGET http://web.default/p2?x HTTP/1.1\r\n\r\nGET /p3 HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let out = read_all(&mut s);
    let bodies: Vec<&str> = out
        .split("\r\n\r\n")
        .skip(1)
        .map(|b| b.split("HTTP/1.1").next().unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            "w21 /p1 127.0.0.1\n",
            "w21 /p2?x 127.0.0.1\n",
            "w21 /p3 127.0.0.1\n"
        ],
        "{out}"
    );
    assert!(
        out.ends_with("w21 /p3 127.0.0.1\n"),
        "closed after the third"
    );

    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let out = read_all(&mut s);
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let out = read_all(&mut s);
    assert!(
        out.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "smuggling-shaped: {out}"
    );
    let mut s = TcpStream::connect(&addr).unwrap();
    let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000));
    let _ = s.write_all(big.as_bytes());
    let out = read_all(&mut s);
    assert!(
        out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{out}"
    );
    assert!(
        metric(
            &g,
            "switchyard_proxy_http_requests_total{namespace=\"default\",service=\"web\",port=\"http\",code=\"4xx\"}"
        ) >= 3.0
    );
}
