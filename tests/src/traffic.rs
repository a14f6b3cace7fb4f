//! Helpers for data-plane tests: Services with selector-less Endpoints, waiting for
//! listeners, sending traffic with curl or keep-alive GETs on one socket, and reading
//! metrics. Every wait is bounded.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::{Backend, Gateway, curl, stderr, wait_for};

pub fn jsonpath(g: &Gateway, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend(what);
    let p = format!("jsonpath={path}");
    args.extend(["-o", &p]);
    g.ok(&args).trim().to_string()
}

/// A Service (spec given as YAML flow mapping entries) plus a selector-less Endpoints object
/// whose one port is `port` (a YAML flow mapping, or a bare number).
pub fn service(
    g: &Gateway,
    name: &str,
    spec: &str,
    endpoints: &[(String, &str)],
    port: impl std::fmt::Display,
) {
    let port = port.to_string();
    let port = if port.parse::<u16>().is_ok() {
        format!("{{port: {port}}}")
    } else {
        port
    };
    let addrs: String = endpoints
        .iter()
        .map(|(ip, node)| format!("  - ip: {ip}\n    nodeName: {node}\n"))
        .collect();
    let manifest = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{{spec}}}\n---\n\
         apiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}}}\nsubsets:\n- addresses:\n{addrs}  ports:\n  - {port}\n"
    );
    let out = g.apply("apply", &manifest);
    assert!(out.status.success(), "{}", stderr(&out));
}

pub fn listeners(g: &Gateway) -> Vec<Value> {
    let (_, body) = g.admin_get("/debug/listeners").unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    v["listeners"].as_array().unwrap().clone()
}

/// Waits until `addr` is a bound listener with `usable` endpoints.
pub fn wait_listener(g: &Gateway, addr: &str, usable: u64) {
    wait_for(Duration::from_secs(10), &format!("listener {addr}"), || {
        listeners(g)
            .iter()
            .any(|l| {
                l["address"] == addr && l["state"] == "bound" && l["usable_endpoints"] == usable
            })
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", listeners(g), g.log()));
}

/// The backend names that answered `n` GETs to `url` (curl, a new connection each).
pub fn served_by(url: &str, n: usize, extra: &[&str]) -> Vec<String> {
    (0..n)
        .map(|_| {
            let mut args = extra.to_vec();
            args.push(url);
            let (code, body) = curl(&args);
            assert_eq!(code, 0, "curl {url} failed: {body}");
            body.split_whitespace().next().unwrap_or("").to_string()
        })
        .collect()
}

pub fn distinct(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

pub fn backends(g: &Gateway, last: &[u8], port: u16) -> Vec<Backend> {
    last.iter()
        .map(|i| Backend::http(&g.backend_ip(*i), port, &format!("b{i}")).unwrap())
        .collect()
}

pub fn names(last: &[u8]) -> BTreeSet<String> {
    last.iter().map(|i| format!("b{i}")).collect()
}

pub fn metric(g: &Gateway, prefix: &str) -> f64 {
    let (_, body) = g.admin_get("/metrics").unwrap();
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `(backend_ip(i), "test-node")` for each `i`: endpoints on the test gateway's node.
pub fn local_endpoints(g: &Gateway, last: &[u8]) -> Vec<(String, &'static str)> {
    last.iter()
        .map(|i| (g.backend_ip(*i), "test-node"))
        .collect()
}

/// Opens a connection to `addr` and sends `gets` keep-alive GETs on it, one at a time;
/// returns the connection (still open) and the name of the backend that answered them all.
pub fn keep_alive_gets(addr: &str, gets: usize) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut names = BTreeSet::new();
    for _ in 0..gets {
        s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        // The backend's answer is one line after the head: done once the body has its newline.
        let body = loop {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the connection closed: {got:?}");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((_, body)) = text.split_once("\r\n\r\n")
                && body.ends_with('\n')
            {
                break body.to_string();
            }
        };
        let name = body.split_whitespace().next().unwrap_or("").to_string();
        assert!(name.starts_with('b'), "no backend name in {body:?}");
        names.insert(name);
    }
    assert_eq!(names.len(), 1, "one connection, one backend: {names:?}");
    (s, names.pop_first().unwrap())
}
