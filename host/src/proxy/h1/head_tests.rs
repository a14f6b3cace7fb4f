use super::*;

/// Parses the response `wire` (not to a HEAD) and writes it back into `out` for a client
/// speaking HTTP/1.`minor`; returns the parsed response.
fn written(out: &mut Vec<u8>, wire: &[u8], minor: u8, keep: bool) -> Response {
    let (r, f) = resp(wire, false);
    let h = Head {
        bytes: wire,
        fields: &f,
    };
    write_response(out, &h, &r, minor, keep);
    r
}

fn req(wire: &[u8]) -> (Request, Vec<Field>) {
    let mut f = Vec::new();
    let r = parse_request(wire, &mut f).unwrap().expect("complete");
    (r, f)
}

fn upstream(wire: &[u8], edits: &[HeaderEdit], ip: &str) -> String {
    let (r, f) = req(wire);
    let mut out = Vec::new();
    let c = Client::new(ip.parse().unwrap(), false);
    write_request(
        &mut out,
        &Head {
            bytes: wire,
            fields: &f,
        },
        &r,
        edits,
        &c,
    );
    String::from_utf8(out).unwrap()
}

#[test]
fn a_request_is_forwarded_without_hop_by_hop_fields_and_with_forwarding_fields() {
    let wire = b"GET /a?b=1 HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, x-secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nX-Forwarded-For: 10.0.0.1\r\nAccept: */*\r\n\r\n";
    let out = upstream(wire, &[], "127.0.0.9");
    assert_eq!(
        out,
        "GET /a?b=1 HTTP/1.1\r\nHost: web\r\nAccept: */*\r\nx-forwarded-for: 10.0.0.1, 127.0.0.9\r\nx-forwarded-proto: http\r\nforwarded: for=127.0.0.9;proto=http;host=\"web\"\r\n\r\n"
    );
}

#[test]
fn framing_keep_alive_expect_and_upgrade_are_read_from_the_head() {
    let (r, _) =
        req(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(r.framing, Framing::Length(12));
    assert!(r.keep_alive && r.expect_continue);
    let (r, _) =
        req(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n");
    assert_eq!(r.framing, Framing::Chunked);
    assert!(!r.keep_alive);
    let (r, _) = req(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(
        (r.framing, r.keep_alive, r.minor),
        (Framing::Empty, false, 0)
    );
    let wire = b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
    let (r, f) = req(wire);
    assert!(r.keep_alive);
    assert!(r.replayable(&Head {
        bytes: wire,
        fields: &f
    }));
    let wire = b"DELETE /x HTTP/1.1\r\n\r\n";
    let (r, f) = req(wire);
    assert!(
        !r.replayable(&Head {
            bytes: wire,
            fields: &f
        }),
        "not a safe method"
    );
    let wire = b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let (r, f) = req(wire);
    assert_eq!(
        Head {
            bytes: wire,
            fields: &f
        }
        .span(r.upgrade.as_ref().unwrap()),
        b"websocket"
    );
    assert!(
        upstream(wire, &[], "127.0.0.1").contains("connection: upgrade\r\nupgrade: websocket\r\n")
    );
    let (r, _) = req(b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n");
    assert_eq!(r.upgrade, None, "h2c is not passed on");
}

#[test]
fn smuggling_shaped_and_malformed_requests_are_refused() {
    let mut f = Vec::new();
    for bad in [
        &b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET foo HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01 binary\r\n\r\n",
    ] {
        assert!(
            matches!(parse_request(bad, &mut f), Err(HeadError::Malformed(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(
        parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n", &mut f),
        Ok(None)
    );
    let huge = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &vec![b'a'; MAX_HEAD]].concat();
    assert_eq!(parse_request(&huge, &mut f), Err(HeadError::TooLarge));
    // Equal repeated lengths are one length.
    let (r, _) = req(b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n");
    assert_eq!(r.framing, Framing::Length(3));
}

#[test]
fn an_absolute_form_target_becomes_origin_form_with_its_host() {
    let out = upstream(
        b"GET http://web.default:8080/x?y HTTP/1.1\r\n\r\n",
        &[],
        "::1",
    );
    assert!(
        out.starts_with("GET /x?y HTTP/1.1\r\nhost: web.default:8080\r\n"),
        "{out}"
    );
    assert!(out.contains("forwarded: for=\"[::1]\";proto=http;host=\"web.default:8080\"\r\n"));
    let out = upstream(b"GET http://web HTTP/1.1\r\n\r\n", &[], "127.0.0.1");
    assert!(out.starts_with("GET / HTTP/1.1\r\nhost: web\r\n"), "{out}");
}

#[test]
fn policy_edits_replace_and_remove_fields() {
    let wire = b"GET / HTTP/1.1\r\nHost: a\r\nX-User: eve\r\nCookie: c\r\n\r\n";
    let out = upstream(
        wire,
        &[
            HeaderEdit {
                name: "x-user".into(),
                value: Some("mallory".into()),
            },
            HeaderEdit {
                name: "cookie".into(),
                value: None,
            },
        ],
        "127.0.0.1",
    );
    assert!(out.contains("x-user: mallory\r\n"), "{out}");
    assert!(!out.contains("eve") && !out.contains("ookie"), "{out}");
}

fn resp(wire: &[u8], head: bool) -> (Response, Vec<Field>) {
    let mut f = Vec::new();
    let r = parse_response(wire, head, &mut f)
        .unwrap()
        .expect("complete");
    (r, f)
}

#[test]
fn response_framing_and_reuse() {
    let (r, _) = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false);
    assert_eq!(
        (r.code, r.framing, r.reusable),
        (200, Framing::Length(5), true)
    );
    let (r, _) = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true);
    assert_eq!(r.framing, Framing::Empty, "HEAD has no body");
    for code in ["100 Continue", "204 No Content", "304 Not Modified"] {
        let wire = format!("HTTP/1.1 {code}\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(resp(wire.as_bytes(), false).0.framing, Framing::Empty);
    }
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut out = Vec::new();
    let r = written(&mut out, wire, 1, true);
    assert_eq!((r.framing, r.reusable), (Framing::Chunked, true));
    assert_eq!(
        out, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "chunked wins"
    );
    let (r, _) = resp(b"HTTP/1.1 200 OK\r\n\r\n", false);
    assert_eq!((r.framing, r.reusable), (Framing::UntilClose, false));
    let (r, _) = resp(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        false,
    );
    assert!(!r.reusable);
    let (r, _) = resp(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
    assert!(!r.reusable);
    let mut f = Vec::new();
    assert!(
        parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            false,
            &mut f
        )
        .is_err()
    );
}

#[test]
fn responses_go_back_without_hop_by_hop_fields() {
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\nX-A: 1\r\n\r\nhi";
    let (r, f) = resp(wire, false);
    let h = Head {
        bytes: wire,
        fields: &f,
    };
    let mut out = Vec::new();
    write_response(&mut out, &h, &r, 1, true);
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\n"
    );
    write_response(&mut out, &h, &r, 0, true);
    assert!(out.ends_with(b"connection: keep-alive\r\n\r\n"));
    write_response(&mut out, &h, &r, 1, false);
    assert!(out.ends_with(b"connection: close\r\n\r\n"));
    // Fields the Connection field names are hop-by-hop too, "close" among them.
    let wire = b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nClose: 2\r\nX-B: 3\r\nContent-Length: 0\r\n\r\n";
    written(&mut out, wire, 1, false);
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nX-B: 3\r\nContent-Length: 0\r\nconnection: close\r\n\r\n"
    );
    let wire = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: k\r\n\r\n";
    written(&mut out, wire, 1, true);
    assert_eq!(
        out,
        b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: k\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
    );
}

#[test]
fn kept_field_lines_go_on_as_they_came_and_odd_ones_are_normalised() {
    // Runs of kept lines keep their spelling and spacing; a dropped field splits a run; a
    // value with trailing whitespace, or an empty one after it, is written out again.
    let wire = b"HTTP/1.1 200 OK\r\nX-A:1\r\ncontent-LENGTH:  2\r\nConnection: keep-alive\r\nX-B: b \t\r\nX-Empty:\r\nX-C: c\r\n\r\nhi";
    let mut out = Vec::new();
    written(&mut out, wire, 1, true);
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        "HTTP/1.1 200 OK\r\nX-A:1\r\ncontent-LENGTH:  2\r\nX-B: b\r\nX-Empty:\r\nX-C: c\r\n\r\n"
    );
    // Bare LF line ends (httparse accepts them) go on as CRLF.
    written(
        &mut out,
        b"HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 0\n\n",
        1,
        true,
    );
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n"
    );
    let wire = b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nAccept:*/*\r\nX-Forwarded-Proto: https\r\nX-Z: z  \r\n\r\n";
    let out = upstream(wire, &[], "127.0.0.9");
    assert!(
        out.starts_with(
            "GET / HTTP/1.1\r\nHost: a\r\nAccept:*/*\r\nX-Z: z\r\nx-forwarded-for: 127.0.0.9\r\n"
        ),
        "{out}"
    );
}

#[test]
fn local_responses_carry_their_length_and_drop_framing_fields() {
    let mut out = Vec::new();
    write_local(
        &mut out,
        451,
        &[
            ("x-why", "policy"),
            ("content-length", "99"),
            ("bad\r\nx", "y"),
        ],
        b"no",
        false,
    );
    assert_eq!(
        out,
        b"HTTP/1.1 451 Unavailable For Legal Reasons\r\nx-why: policy\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno"
    );
}

#[test]
fn the_client_address_is_written_as_text_for_both_families() {
    for ip in [
        "10.1.2.3",
        "255.255.255.255",
        "::1",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ] {
        assert_eq!(
            Client::new(ip.parse().unwrap(), false).ip_text(),
            ip.as_bytes()
        );
    }
}

#[test]
fn numbers_are_written_in_decimal() {
    for n in [0usize, 7, 10, 204, 65536, usize::MAX] {
        let mut out = b"x".to_vec();
        number(&mut out, n);
        assert_eq!(out, format!("x{n}").into_bytes());
    }
}
