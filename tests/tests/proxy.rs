//! The data plane against the real binary: Services created with kubectl, traffic sent with
//! curl and plain sockets to Python backends on 127.0.0.0/8. Every Service type, multi-port
//! with named targetPorts, UDP, session affinity, traffic policies, source ranges, refusals,
//! half-close, and listeners closed on delete. (`churn.rs`: traffic while things change.)

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use switchyard_e2e::traffic::{
    backends, distinct, jsonpath, keep_alive_gets, listeners, local_endpoints, metric, names,
    served_by, service, wait_listener,
};
use switchyard_e2e::{Backend, Gateway, curl, stderr, wait_for};

#[test]
fn every_service_type_reaches_every_backend_and_delete_closes_listeners() {
    let g = Gateway::start().unwrap();
    let _b = backends(&g, &[11, 12, 13], 9376);
    let eps = local_endpoints(&g, &[11, 12, 13]);
    service(
        &g,
        "web",
        "type: LoadBalancer, ports: [{port: 80, targetPort: 9376}]",
        &eps,
        9376,
    );
    let cluster_ip = jsonpath(&g, &["svc", "web"], "{.spec.clusterIP}");
    let node_port = jsonpath(&g, &["svc", "web"], "{.spec.ports[0].nodePort}");
    let lb_ip = jsonpath(&g, &["svc", "web"], "{.status.loadBalancer.ingress[0].ip}");
    assert!(lb_ip.starts_with(&format!("127.{}.200.", g.net)), "{lb_ip}");
    let addrs = [
        format!("{cluster_ip}:80"),
        format!("{}:{node_port}", g.node_ip()),
        format!("{lb_ip}:80"),
    ];
    for a in &addrs {
        wait_listener(&g, a, 3);
        let seen = served_by(&format!("http://{a}/"), 9, &[]);
        assert_eq!(distinct(&seen), names(&[11, 12, 13]), "{a}: {seen:?}");
    }
    assert!(
        metric(
            &g,
            "switchyard_proxy_connections_total{namespace=\"default\",service=\"web\""
        ) >= 27.0
    );

    g.ok(&["delete", "svc", "web"]);
    let deleted = Instant::now();
    for a in &addrs {
        wait_for(Duration::from_secs(2), &format!("{a} to refuse"), || {
            TcpStream::connect(a).is_err().then_some(())
        })
        .unwrap();
    }
    assert!(deleted.elapsed() < Duration::from_secs(2));
    assert!(!listeners(&g).iter().any(|l| l["service"] == "default/web"));
}

fn set_pod_status(g: &Gateway, pod: &str, ip: &str) {
    let patch = format!(
        r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"True"}}]}}}}"#
    );
    g.ok(&[
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
}

#[test]
fn multi_port_service_with_named_target_ports() {
    let g = Gateway::start().unwrap();
    let ip = g.backend_ip(21);
    let _web = Backend::http(&ip, 9376, "web").unwrap();
    let _admin = Backend::http(&ip, 9377, "admin").unwrap();
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata: {name: multi-1, labels: {app: multi}}\n\
        spec: {nodeName: test-node, containers: [{name: app, image: x, ports: [{name: http, containerPort: 9376}, {name: metrics, containerPort: 9377}]}]}\n---\n\
        apiVersion: v1\nkind: Service\nmetadata: {name: multi}\nspec: {selector: {app: multi}, ports: [\
        {name: web, port: 80, targetPort: http}, {name: admin, port: 8080, targetPort: metrics}]}\n";
    let out = g.apply("apply", manifest);
    assert!(out.status.success(), "{}", stderr(&out));
    set_pod_status(&g, "multi-1", &ip);
    let cip = jsonpath(&g, &["svc", "multi"], "{.spec.clusterIP}");
    wait_listener(&g, &format!("{cip}:80"), 1);
    wait_listener(&g, &format!("{cip}:8080"), 1);
    assert_eq!(served_by(&format!("http://{cip}/"), 2, &[]), ["web", "web"]);
    assert_eq!(
        served_by(&format!("http://{cip}:8080/"), 2, &[]),
        ["admin", "admin"]
    );
}

#[test]
fn udp_flows_round_trip_from_the_service_address() {
    let g = Gateway::start().unwrap();
    let _b: Vec<Backend> = [31u8, 32]
        .iter()
        .map(|i| Backend::udp_echo(&g.backend_ip(*i), 5300, &format!("u{i}")).unwrap())
        .collect();
    let eps = local_endpoints(&g, &[31, 32]);
    service(
        &g,
        "dns",
        "ports: [{name: dns, port: 53, protocol: UDP, targetPort: 5300}]",
        &eps,
        "{name: dns, port: 5300, protocol: UDP}",
    );
    let cip = jsonpath(&g, &["svc", "dns"], "{.spec.clusterIP}");
    let svc_addr = format!("{cip}:53");
    wait_listener(&g, &svc_addr, 2);
    let mut seen = BTreeMap::new();
    let mut on_u31 = Vec::new();
    for client in 0..6 {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut first = None;
        for round in 0..3 {
            s.send_to(format!("hello {client} {round}").as_bytes(), &svc_addr)
                .unwrap();
            let mut buf = [0u8; 256];
            let (n, from) = s.recv_from(&mut buf).expect("a reply within 2 s");
            assert_eq!(
                from.to_string(),
                svc_addr,
                "the reply comes from the Service address"
            );
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(text.ends_with(&format!("hello {client} {round}")), "{text}");
            let name = text.split(' ').next().unwrap().to_string();
            // One flow, one backend.
            assert_eq!(first.get_or_insert(name.clone()), &name);
        }
        let first = first.unwrap();
        if first == "u31" {
            on_u31.push(s);
        }
        *seen.entry(first).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "flows spread over both backends: {seen:?}");
    assert!(
        metric(
            &g,
            "switchyard_proxy_connections_active{namespace=\"default\",service=\"dns\""
        ) >= 6.0
    );
    // u31 leaves the Service: its flows' next datagrams pick again, and reach u32.
    service(
        &g,
        "dns",
        "ports: [{name: dns, port: 53, protocol: UDP, targetPort: 5300}]",
        &local_endpoints(&g, &[32]),
        "{name: dns, port: 5300, protocol: UDP}",
    );
    wait_listener(&g, &svc_addr, 1);
    for s in &on_u31 {
        s.send_to(b"after", &svc_addr).unwrap();
        let mut buf = [0u8; 256];
        let (n, _) = s.recv_from(&mut buf).expect("a reply within 2 s");
        assert_eq!(
            &buf[..n],
            b"u32 after",
            "the flow moved off the endpoint that left"
        );
    }
}

#[test]
fn udp_datagrams_carry_a_proxy_v2_header_when_asked() {
    let g = Gateway::start().unwrap();
    let _b = Backend::udp_proxy_v2(&g.backend_ip(35), 5301, "pp").unwrap();
    service(
        &g,
        "syslog",
        "ports: [{name: syslog, port: 514, protocol: UDP, targetPort: 5301}]",
        &local_endpoints(&g, &[35]),
        "{name: syslog, port: 5301, protocol: UDP}",
    );
    g.ok(&[
        "annotate",
        "svc",
        "syslog",
        "switchyard.io/proxy-protocol=v2",
    ]);
    let cip = jsonpath(&g, &["svc", "syslog"], "{.spec.clusterIP}");
    let svc_addr = format!("{cip}:514");
    wait_listener(&g, &svc_addr, 1);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let me = s.local_addr().unwrap();
    // The annotation reaches the listener's target shortly after the Service was created.
    let reply = wait_for(Duration::from_secs(10), "a PROXY v2 header", || {
        s.send_to(b"<13>hello", &svc_addr).ok()?;
        let mut buf = [0u8; 256];
        let (n, _) = s.recv_from(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        (!text.contains("no header")).then_some(text)
    })
    .unwrap();
    assert_eq!(reply, format!("pp src={me} dst={svc_addr} <13>hello"));
}

#[test]
fn session_affinity_client_ip_sticks_per_client() {
    let g = Gateway::start().unwrap();
    let _b = backends(&g, &[51, 52, 53], 9376);
    let eps = local_endpoints(&g, &[51, 52, 53]);
    service(
        &g,
        "sticky",
        "sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}, ports: [{port: 80, targetPort: 9376}]",
        &eps,
        9376,
    );
    let cip = jsonpath(&g, &["svc", "sticky"], "{.spec.clusterIP}");
    wait_listener(&g, &format!("{cip}:80"), 3);
    let mut per_client = BTreeSet::new();
    for c in 1..=6u8 {
        let from = format!("127.{}.230.{c}", g.net);
        let seen = served_by(&format!("http://{cip}/"), 5, &["--interface", &from]);
        assert_eq!(distinct(&seen).len(), 1, "client {from} moved: {seen:?}");
        per_client.insert(seen[0].clone());
    }
    assert!(
        per_client.len() >= 2,
        "all six clients on one backend: {per_client:?}"
    );
}

#[test]
fn traffic_policy_local_keeps_traffic_on_this_node() {
    let g = Gateway::start().unwrap();
    let _b = backends(&g, &[41, 42, 43], 9376);
    let eps = vec![
        (g.backend_ip(41), "test-node"),
        (g.backend_ip(42), "test-node"),
        (g.backend_ip(43), "other-node"),
    ];
    service(
        &g,
        "ext",
        "type: NodePort, externalTrafficPolicy: Local, ports: [{port: 80, targetPort: 9376}]",
        &eps,
        9376,
    );
    service(
        &g,
        "int",
        "internalTrafficPolicy: Local, ports: [{port: 80, targetPort: 9376}]",
        &eps,
        9376,
    );
    let ext_ip = jsonpath(&g, &["svc", "ext"], "{.spec.clusterIP}");
    let np = jsonpath(&g, &["svc", "ext"], "{.spec.ports[0].nodePort}");
    let int_ip = jsonpath(&g, &["svc", "int"], "{.spec.clusterIP}");
    let node = format!("{}:{np}", g.node_ip());
    wait_listener(&g, &node, 2);
    wait_listener(&g, &format!("{ext_ip}:80"), 3);
    wait_listener(&g, &format!("{int_ip}:80"), 2);
    let local = names(&[41, 42]);
    assert_eq!(
        distinct(&served_by(&format!("http://{node}/"), 8, &[])),
        local
    );
    assert_eq!(
        distinct(&served_by(&format!("http://{ext_ip}/"), 9, &[])),
        names(&[41, 42, 43])
    );
    assert_eq!(
        distinct(&served_by(&format!("http://{int_ip}/"), 8, &[])),
        local
    );
}

#[test]
fn source_ranges_guard_load_balancer_addresses_only() {
    let g = Gateway::start().unwrap();
    let _b = backends(&g, &[61], 9376);
    let allowed = format!("127.{}.230.0/24", g.net);
    service(
        &g,
        "guarded",
        &format!(
            "type: LoadBalancer, loadBalancerSourceRanges: [\"{allowed}\"], ports: [{{port: 80, targetPort: 9376}}]"
        ),
        &[(g.backend_ip(61), "test-node")],
        9376,
    );
    let lb = jsonpath(
        &g,
        &["svc", "guarded"],
        "{.status.loadBalancer.ingress[0].ip}",
    );
    let np = jsonpath(&g, &["svc", "guarded"], "{.spec.ports[0].nodePort}");
    wait_listener(&g, &format!("{lb}:80"), 1);
    let inside = format!("127.{}.230.9", g.net);
    assert_eq!(
        served_by(&format!("http://{lb}/"), 1, &["--interface", &inside]),
        ["b61"]
    );
    let (code, _) = curl(&[&format!("http://{lb}/")]);
    assert_ne!(code, 0, "127.0.0.1 is outside {allowed}");
    assert_eq!(
        served_by(&format!("http://{}:{np}/", g.node_ip()), 1, &[]),
        ["b61"]
    );
    assert_eq!(
        metric(
            &g,
            "switchyard_proxy_rejected_total{namespace=\"default\",service=\"guarded\",port=\"80\",reason=\"source_range\"}"
        ),
        1.0
    );
}

#[test]
fn no_ready_endpoint_resets_at_once() {
    let g = Gateway::start().unwrap();
    g.apply(
        "apply",
        "apiVersion: v1\nkind: Service\nmetadata: {name: empty}\nspec: {ports: [{port: 80}]}\n",
    );
    let cip = jsonpath(&g, &["svc", "empty"], "{.spec.clusterIP}");
    wait_listener(&g, &format!("{cip}:80"), 0);
    let started = Instant::now();
    let mut s = TcpStream::connect(format!("{cip}:80")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let err = s.read(&mut buf).expect_err("reset, not data or EOF");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        metric(
            &g,
            "switchyard_proxy_rejected_total{namespace=\"default\",service=\"empty\",port=\"80\",reason=\"no_endpoint\"}"
        ),
        1.0
    );
}

#[test]
fn half_close_reaches_the_backend_and_the_answer_comes_back() {
    use std::io::Write;
    let g = Gateway::start().unwrap();
    // A backend that reads until the client's FIN, then answers with the byte count.
    let ip = g.backend_ip(95);
    let listener = std::net::TcpListener::bind(format!("{ip}:9400")).unwrap();
    let backend = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(format!("got {} bytes", got.len()).as_bytes())
            .unwrap();
    });
    service(
        &g,
        "half",
        "ports: [{port: 80, targetPort: 9400}]",
        &[(ip, "test-node")],
        9400,
    );
    let cip = jsonpath(&g, &["svc", "half"], "{.spec.clusterIP}");
    wait_listener(&g, &format!("{cip}:80"), 1);
    let mut s = TcpStream::connect(format!("{cip}:80")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // More than the socket buffers hold at once, so the copy has to wait for the peer.
    let payload = vec![7u8; 8 << 20];
    s.write_all(&payload).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, format!("got {} bytes", 8 << 20));
    backend.join().unwrap();
}

#[test]
fn proxy_protocol_v2_tells_the_backend_who_the_client_is() {
    let g = Gateway::start().unwrap();
    let _b = Backend::proxy_v2(&g.backend_ip(98), 9500, "pp").unwrap();
    service(
        &g,
        "pp",
        "ports: [{port: 80, targetPort: 9500}]",
        &[(g.backend_ip(98), "test-node")],
        9500,
    );
    g.ok(&["annotate", "svc", "pp", "switchyard.io/proxy-protocol=v2"]);
    let cip = jsonpath(&g, &["svc", "pp"], "{.spec.clusterIP}");
    wait_listener(&g, &format!("{cip}:80"), 1);
    let client = format!("127.{}.230.8", g.net);
    // The annotation reaches the listener's target through the snapshot.
    let body = wait_for(Duration::from_secs(10), "a PROXY header", || {
        let (code, body) = curl(&["--interface", &client, &format!("http://{cip}/")]);
        (code == 0 && body.starts_with("pp src=")).then_some(body)
    })
    .unwrap();
    assert!(body.starts_with(&format!("pp src={client}:")), "{body}");
    assert!(
        body.trim_end().ends_with(&format!("dst={cip}:80")),
        "{body}"
    );
}

#[test]
fn a_listener_that_cannot_bind_is_reported_and_retried() {
    let g = Gateway::start().unwrap();
    let _b = backends(&g, &[1], 9376);
    // Someone else holds the NodePort (no SO_REUSEPORT, so ours cannot share it).
    let squatter = std::net::TcpListener::bind(format!("{}:30777", g.node_ip())).unwrap();
    service(
        &g,
        "busy",
        "type: NodePort, ports: [{port: 80, targetPort: 9376, nodePort: 30777}]",
        &local_endpoints(&g, &[1]),
        9376,
    );
    let addr = format!("{}:30777", g.node_ip());
    wait_for(Duration::from_secs(10), "a failed listener", || {
        listeners(&g)
            .iter()
            .find(|l| l["address"] == addr.as_str() && l["state"] == "failed")
            .map(|l| l["error"].as_str().unwrap_or("").to_string())
    })
    .map(|e| assert!(e.contains("Address already in use"), "{e}"))
    .unwrap_or_else(|e| panic!("{e}: {:?}", listeners(&g)));
    assert!(metric(&g, "switchyard_proxy_listener_bind_errors_total") >= 1.0);
    let events = |reason: &str| {
        g.ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name=busy,reason={reason}"),
            "-o",
            "jsonpath={range .items[*]}{.type} {.message}{\"\\n\"}{end}",
        ])
    };
    let failed = wait_for(Duration::from_secs(5), "a Warning event", || {
        Some(events("ListenerBindFailed")).filter(|e| !e.is_empty())
    })
    .unwrap();
    assert!(failed.starts_with("Warning "), "{failed}");
    assert!(
        failed.contains(&addr) && failed.contains("Address already in use"),
        "{failed}"
    );
    // kubectl describe shows it with the Service (it filters events by the Service's uid).
    let described = g.ok(&["describe", "svc", "busy"]);
    assert!(described.contains("ListenerBindFailed"), "{described}");

    // The address is freed: the retry binds it, traffic flows, and a Normal event says so.
    drop(squatter);
    wait_listener(&g, &addr, 1);
    let seen = served_by(&format!("http://{addr}/"), 2, &[]);
    assert_eq!(distinct(&seen), names(&[1]));
    let bound = wait_for(Duration::from_secs(5), "a Normal event", || {
        Some(events("ListenerBound")).filter(|e| !e.is_empty())
    })
    .unwrap();
    assert!(
        bound.starts_with("Normal ") && bound.contains(&addr),
        "{bound}"
    );
}

#[test]
fn least_conn_hears_when_a_relayed_connection_ends() {
    // One worker, so the balancer keeps one table of counts. A plain L4 connection that lasts
    // moves to the worker's relay thread and ends there; its end must still reach the
    // instance that picked it, or least-conn would count it as open for ever.
    let g = Gateway::start_with(&["--workers", "1"]).unwrap();
    let _b = backends(&g, &[21, 22, 23], 9376);
    let eps = local_endpoints(&g, &[21, 22, 23]);
    service(
        &g,
        "lc",
        "ports: [{port: 80, targetPort: 9376}]",
        &eps,
        9376,
    );
    g.ok(&[
        "annotate",
        "service",
        "lc",
        "switchyard.io/balancer=least-conn",
    ]);
    let addr = format!("{}:80", jsonpath(&g, &["svc", "lc"], "{.spec.clusterIP}"));
    wait_listener(&g, &addr, 3);
    let active = |n: f64| {
        wait_for(Duration::from_secs(10), "connections to end", || {
            let now = metric(
                &g,
                "switchyard_proxy_connections_active{namespace=\"default\",service=\"lc\"",
            );
            (now == n).then_some(())
        })
        .unwrap();
    };
    // Once least-conn picks, a held connection's endpoint gets no short one.
    let (first, busy) = wait_for(Duration::from_secs(20), "least-conn to pick", || {
        let (s, busy) = keep_alive_gets(&addr, 1);
        let mut seen = Vec::new();
        for _ in 0..6 {
            active(1.0);
            seen.extend(served_by(&format!("http://{addr}/"), 1, &[]));
        }
        if seen.iter().all(|n| *n != busy) {
            return Some((s, busy));
        }
        drop(s);
        active(0.0);
        None
    })
    .unwrap();
    active(1.0);
    // A second held connection goes elsewhere; now one endpoint has none open, and every
    // connection, ending before the next starts, must go there: short ones (one GET, ending in
    // the worker's relay task) and lasting ones (six GETs, moved to the relay thread first).
    let (second, busy2) = keep_alive_gets(&addr, 1);
    assert_ne!(busy2, busy);
    let free: Vec<String> = names(&[21, 22, 23])
        .into_iter()
        .filter(|n| *n != busy && *n != busy2)
        .collect();
    for i in 0..8 {
        active(2.0);
        let (s, name) = keep_alive_gets(&addr, if i % 2 == 0 { 1 } else { 6 });
        drop(s);
        assert_eq!(vec![name], free, "connection {i} (held: {busy}, {busy2})");
    }
    drop((first, second));
    active(0.0);
}
