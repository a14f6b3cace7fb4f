//! Traffic while things change, against the real binary: a backend killed mid-run, endpoints
//! added and removed under load, a plugin swapped under load, and connections to a removed
//! endpoint drained for a bounded time. Python backends on 127.0.0.0/8; every wait bounded.

use std::io::Read;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use switchyard_e2e::traffic::{
    backends, jsonpath, local_endpoints, metric, service, wait_listener,
};
use switchyard_e2e::{Gateway, curl, http, stderr, switchyard, wait_for, wasm};

/// When each request finished, and the backend that served it or the error.
type Outcomes = Vec<(Instant, Result<String, String>)>;

/// Clients sending GETs (a new connection each) until stopped; at most 60 s.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Outcomes>>,
}

impl Load {
    fn start(addr: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let (stop, addr) = (stop.clone(), addr.to_string());
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let mut out = Vec::new();
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let r = match http("GET", &addr, "/", "text/plain", b"") {
                            Ok((200, body)) => {
                                Ok(body.split_whitespace().next().unwrap_or("").to_string())
                            }
                            Ok((code, body)) => Err(format!("{code} {body}")),
                            Err(e) => Err(format!("{e:#}")),
                        };
                        out.push((Instant::now(), r));
                    }
                    out
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn finish(self) -> Outcomes {
        self.stop.store(true, Ordering::Relaxed);
        let mut all: Vec<_> = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_by_key(|(t, _)| *t);
        all
    }
}

fn failures(results: &[(Instant, Result<String, String>)]) -> Vec<&String> {
    results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect()
}

#[test]
fn a_backend_killed_mid_run_costs_at_most_its_requests_in_flight() {
    let g = Gateway::start().unwrap();
    let mut b = backends(&g, &[71, 72, 73], 9376);
    let eps = local_endpoints(&g, &[71, 72, 73]);
    service(
        &g,
        "kill",
        "ports: [{port: 80, targetPort: 9376}]",
        &eps,
        9376,
    );
    let cip = jsonpath(&g, &["svc", "kill"], "{.spec.clusterIP}");
    wait_listener(&g, &format!("{cip}:80"), 3);
    const CLIENTS: usize = 4;
    let load = Load::start(&format!("{cip}:80"), CLIENTS);
    std::thread::sleep(Duration::from_millis(700));
    b[1].kill();
    let killed = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let results = load.finish();
    let failed = failures(&results);
    let after: Vec<&String> = results
        .iter()
        .filter(|(t, _)| *t > killed + Duration::from_millis(100))
        .filter_map(|(_, r)| r.as_ref().ok())
        .collect();
    eprintln!(
        "{} requests, {} failed ({:?}), {} served after the kill",
        results.len(),
        failed.len(),
        failed.iter().take(3).collect::<Vec<_>>(),
        after.len()
    );
    assert!(
        failed.len() <= CLIENTS,
        "more failures than requests in flight: {failed:?}"
    );
    assert!(after.len() > 20, "traffic kept flowing after the kill");
    assert!(after.iter().all(|n| *n != "b72"));
    // Connects to the dead backend were retried on another endpoint and counted.
    assert!(
        metric(
            &g,
            "switchyard_proxy_upstream_connect_errors_total{namespace=\"default\",service=\"kill\""
        ) >= 1.0
    );
}

#[test]
fn endpoints_added_and_removed_under_load_lose_nothing() {
    let g = Gateway::start().unwrap();
    let _b = backends(&g, &[81, 82, 83], 9376);
    let ep = |i: u8| (g.backend_ip(i), "test-node");
    let spec = "ports: [{port: 80, targetPort: 9376}]";
    service(&g, "moving", spec, &[ep(81), ep(82)], 9376);
    let cip = jsonpath(&g, &["svc", "moving"], "{.spec.clusterIP}");
    wait_listener(&g, &format!("{cip}:80"), 2);
    let load = Load::start(&format!("{cip}:80"), 3);
    std::thread::sleep(Duration::from_millis(500));
    service(&g, "moving", spec, &[ep(81), ep(82), ep(83)], 9376);
    std::thread::sleep(Duration::from_millis(700));
    service(&g, "moving", spec, &[ep(82), ep(83)], 9376);
    let removed = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    let results = load.finish();
    assert!(failures(&results).is_empty(), "{:?}", failures(&results));
    let served: Vec<(Instant, &String)> = results
        .iter()
        .filter_map(|(t, r)| Some((*t, r.as_ref().ok()?)))
        .collect();
    assert!(
        served.iter().any(|(_, n)| *n == "b83"),
        "the added endpoint got traffic"
    );
    let late_b81 = served
        .iter()
        .filter(|(t, n)| *t > removed + Duration::from_millis(300) && *n == "b81")
        .count();
    assert_eq!(late_b81, 0, "the removed endpoint took new connections");
}

#[test]
fn a_plugin_swapped_under_load_fails_no_request() {
    let g = Gateway::start().unwrap();
    let _b = backends(&g, &[91, 92, 93], 9376);
    let eps = local_endpoints(&g, &[91, 92, 93]);
    let admin = g.admin.clone();
    let load_plugin = |file: &std::path::Path| {
        let out = switchyard(&[
            "plugin",
            "load",
            "--admin",
            &admin,
            "swapped",
            file.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    load_plugin(&wasm("round-robin"));
    service(
        &g,
        "swap",
        "ports: [{port: 80, targetPort: 9376}]",
        &eps,
        9376,
    );
    g.ok(&["annotate", "svc", "swap", "switchyard.io/balancer=swapped"]);
    let cip = jsonpath(&g, &["svc", "swap"], "{.spec.clusterIP}");
    wait_listener(&g, &format!("{cip}:80"), 3);
    let calls = |g: &Gateway| metric(g, "switchyard_plugin_calls_total{plugin=\"swapped\"");
    let load = Load::start(&format!("{cip}:80"), 4);
    let started = Instant::now();
    let mut swaps = 0;
    while started.elapsed() < Duration::from_secs(4) {
        load_plugin(&wasm(if swaps % 2 == 0 {
            "my-balancer"
        } else {
            "round-robin"
        }));
        swaps += 1;
    }
    let results = load.finish();
    eprintln!("{swaps} swaps under {} requests", results.len());
    assert!(swaps >= 6, "only {swaps} swaps");
    assert!(results.len() > 100);
    assert!(failures(&results).is_empty(), "{:?}", failures(&results));
    assert!(
        calls(&g) >= results.len() as f64 * 0.9,
        "picks went through the plugin"
    );
    assert_eq!(
        metric(&g, "switchyard_plugin_errors_total{plugin=\"swapped\""),
        0.0
    );
}

/// Reads from `s` until the bytes read contain `needle` (or EOF, an error, or 5 s).
fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let mut text = String::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !text.contains(needle) && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    text
}

#[test]
fn connections_to_a_removed_endpoint_drain_for_a_bounded_time() {
    use std::io::Write;
    let g = Gateway::start_with(&["--drain-timeout-s", "1"]).unwrap();
    let _b = backends(&g, &[96, 97], 9376);
    let spec = "ports: [{port: 80, targetPort: 9376}]";
    service(&g, "drain", spec, &[(g.backend_ip(96), "test-node")], 9376);
    let cip = jsonpath(&g, &["svc", "drain"], "{.spec.clusterIP}");
    wait_listener(&g, &format!("{cip}:80"), 1);
    // A keep-alive connection through to a backend, idle after one request.
    let open = |expect: &str| {
        let mut s = TcpStream::connect(format!("{cip}:80")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let text = read_until(&mut s, expect);
        assert!(text.contains(expect), "{text}");
        s
    };
    let mut old = open("b96");
    service(&g, "drain", spec, &[(g.backend_ip(97), "test-node")], 9376);
    let changed = Instant::now();
    wait_for(Duration::from_secs(5), "new connections to b97", || {
        let (code, body) = curl(&[&format!("http://{cip}/")]);
        (code == 0 && body.starts_with("b97")).then_some(())
    })
    .unwrap();
    let mut fresh = open("b97");
    // The old connection still works inside the drain window...
    if changed.elapsed() < Duration::from_millis(700) {
        old.write_all(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert!(read_until(&mut old, "/again").contains("b96 "));
    }
    // ...and is closed once the window has passed; the one to the remaining endpoint is not.
    let mut buf = [0u8; 512];
    let ended = loop {
        match old.read(&mut buf) {
            Ok(0) | Err(_) => break changed.elapsed(),
            Ok(_) => continue,
        }
    };
    assert!(
        ended >= Duration::from_millis(900) && ended < Duration::from_secs(4),
        "{ended:?}"
    );
    fresh
        .write_all(b"GET /still HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(read_until(&mut fresh, "/still").contains("b97 "));
}
