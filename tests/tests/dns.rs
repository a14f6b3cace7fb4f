//! Cluster DNS against the real binary with `dig` as the client, over UDP and TCP: every record
//! kind of the Kubernetes DNS specification, NXDOMAIN vs NODATA with the SOA, truncation and
//! the retry over TCP, forwarding off (REFUSED) and on (to a resolver this test starts on
//! loopback), and answers following Service changes.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_e2e::traffic::{jsonpath, service};
use switchyard_e2e::{Gateway, wait_for};

/// `dig` against the gateway: (status, answer rdata sorted, whole output).
fn dig(dns: &str, q: &[&str]) -> (String, Vec<String>, String) {
    let (host, port) = dns.split_once(':').unwrap();
    let out = Command::new("dig")
        .arg(format!("@{host}"))
        .args([
            "-p",
            port,
            "+time=2",
            "+tries=1",
            "+norec",
            "+noall",
            "+answer",
            "+comments",
        ])
        .args(q)
        .output()
        .expect("dig runs (scripts/install-test-deps.sh installs bind9-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("NO-REPLY")
        .to_string();
    let mut answers: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().skip(4).collect::<Vec<_>>().join(" "))
        .collect();
    answers.sort();
    (status, answers, text)
}

fn authority_soa(dns: &str, q: &[&str]) -> bool {
    let mut args = vec!["+authority"];
    args.extend(q);
    let (_, _, text) = dig(dns, &args);
    text.contains("SOA\tns.dns.cluster.local. hostmaster.cluster.local.")
}

fn setup(g: &Gateway) -> String {
    service(
        g,
        "web",
        "ports: [{name: http, port: 80, targetPort: 9376}, {name: dns, port: 53, protocol: UDP}]",
        &[(g.backend_ip(1), "test-node")],
        "{name: http, port: 9376}",
    );
    let eps = [(g.backend_ip(5), "n1"), (g.backend_ip(6), "n1")];
    service(
        g,
        "db",
        "clusterIP: None, ports: [{name: pg, port: 5432}]",
        &eps,
        "{name: pg, port: 5432}",
    );
    let ext = "apiVersion: v1\nkind: Service\nmetadata: {name: ext, namespace: default}\nspec: {type: ExternalName, externalName: db.example.org}\n";
    assert!(g.apply("apply", ext).status.success());
    // Headless without ports: address records only.
    let n = g.net;
    let bare = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: bare}}\nspec: {{clusterIP: None}}\n---\n\
         apiVersion: v1\nkind: Endpoints\nmetadata: {{name: bare}}\nsubsets:\n- addresses:\n\
         \x20 - {{ip: 127.{n}.220.7, hostname: bare-0}}\n  - {{ip: 127.{n}.220.8}}\n"
    );
    let out = g.apply("apply", &bare);
    assert!(out.status.success(), "{}", switchyard_e2e::stderr(&out));
    jsonpath(g, &["svc", "web"], "{.spec.clusterIP}")
}

#[test]
fn every_record_kind_over_udp_and_tcp() {
    let g = Gateway::start().unwrap();
    let cip = setup(&g);
    let n = g.net;
    let d = &g.dns;
    wait_for(Duration::from_secs(5), "db and bare in DNS", || {
        let ready = |name: &str| dig(d, &[name, "A"]).1.len() == 2;
        (ready("db.default.svc.cluster.local") && ready("bare.default.svc.cluster.local"))
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", g.log()));
    for transport in ["+notcp", "+tcp"] {
        let q = |name: &str, t: &str| dig(d, &[transport, name, t]);
        let (status, answers, _) = q("web.default.svc.cluster.local", "A");
        assert_eq!((status.as_str(), answers), ("NOERROR", vec![cip.clone()]));
        assert_eq!(
            q("_http._tcp.web.default.svc.cluster.local", "SRV").1,
            ["0 100 80 web.default.svc.cluster.local."]
        );
        assert_eq!(
            q("_dns._udp.web.default.svc.cluster.local", "SRV").1,
            ["0 100 53 web.default.svc.cluster.local."]
        );
        let rev: Vec<&str> = cip.split('.').rev().collect();
        assert_eq!(
            q(&format!("{}.in-addr.arpa", rev.join(".")), "PTR").1,
            ["web.default.svc.cluster.local."]
        );
        // Headless: one A per endpoint, a name per endpoint, SRV per endpoint, PTR per address.
        assert_eq!(
            q("db.default.svc.cluster.local", "A").1,
            [format!("127.{n}.220.5"), format!("127.{n}.220.6")]
        );
        assert_eq!(
            q(&format!("127-{n}-220-5.db.default.svc.cluster.local"), "A").1,
            [format!("127.{n}.220.5")]
        );
        assert_eq!(
            q("_pg._tcp.db.default.svc.cluster.local", "SRV").1,
            [
                format!("0 50 5432 127-{n}-220-5.db.default.svc.cluster.local."),
                format!("0 50 5432 127-{n}-220-6.db.default.svc.cluster.local.")
            ]
        );
        assert_eq!(
            q(&format!("6.220.{n}.127.in-addr.arpa"), "PTR").1,
            [format!("127-{n}-220-6.db.default.svc.cluster.local.")]
        );
        assert_eq!(
            q("ext.default.svc.cluster.local", "A").1,
            ["db.example.org."]
        );
        // Headless without ports: A per address, the hostname's name, PTR; no SRV names.
        assert_eq!(
            q("bare.default.svc.cluster.local", "A").1,
            [format!("127.{n}.220.7"), format!("127.{n}.220.8")]
        );
        assert_eq!(
            q("bare-0.bare.default.svc.cluster.local", "A").1,
            [format!("127.{n}.220.7")]
        );
        assert_eq!(
            q(&format!("8.220.{n}.127.in-addr.arpa"), "PTR").1,
            [format!("127-{n}-220-8.bare.default.svc.cluster.local.")]
        );
        assert_eq!(
            q("_x._tcp.bare.default.svc.cluster.local", "SRV").0,
            "NXDOMAIN"
        );
        assert_eq!(q("dns-version.cluster.local", "TXT").1, ["\"1.1.0\""]);
        assert_eq!(
            q("10-244-1-7.default.pod.cluster.local", "A").1,
            ["10.244.1.7"]
        );
        assert_eq!(q("kubernetes.default.svc.cluster.local", "A").0, "NOERROR");
        // NXDOMAIN vs NODATA, both with the SOA.
        let nx = q("nope.default.svc.cluster.local", "A");
        assert_eq!((nx.0.as_str(), nx.1.len()), ("NXDOMAIN", 0));
        let nodata = q("web.default.svc.cluster.local", "AAAA");
        assert_eq!((nodata.0.as_str(), nodata.1.len()), ("NOERROR", 0));
        assert!(authority_soa(
            d,
            &[transport, "nope.default.svc.cluster.local", "A"]
        ));
        assert!(authority_soa(
            d,
            &[transport, "web.default.svc.cluster.local", "AAAA"]
        ));
        assert_eq!(
            q("default.svc.cluster.local", "A").0,
            "NOERROR",
            "an empty non-terminal exists"
        );
    }
    // Names outside the cluster domain with forwarding off.
    assert_eq!(dig(d, &["example.com", "A"]).0, "REFUSED");
}

#[test]
fn big_answers_truncate_and_dig_retries_over_tcp() {
    let g = Gateway::start().unwrap();
    let eps: Vec<(String, &str)> = (1..=60).map(|i| (g.backend_ip(i), "n1")).collect();
    service(
        &g,
        "many",
        "clusterIP: None, ports: [{name: x, port: 80}]",
        &eps,
        "{name: x, port: 80}",
    );
    let d = &g.dns;
    wait_for(Duration::from_secs(5), "60 endpoints in DNS", || {
        (dig(d, &["+tcp", "many.default.svc.cluster.local"]).1.len() == 60).then_some(())
    })
    .unwrap();
    // No EDNS, no TCP fallback: 512 bytes at most, so TC and no answers.
    let (status, answers, text) = dig(d, &["+noedns", "+ignore", "many.default.svc.cluster.local"]);
    assert_eq!(status, "NOERROR");
    assert!(text.contains(" tc"), "{text}");
    assert!(answers.is_empty());
    // dig's default: sees TC, asks again over TCP, gets all 60.
    let (_, answers, text) = dig(d, &["+noedns", "many.default.svc.cluster.local"]);
    assert_eq!(answers.len(), 60, "{text}");
    // EDNS 4096: we cap at 1232, 60 A records (~1 KiB) fit.
    let (_, answers, text) = dig(
        d,
        &["+bufsize=4096", "+ignore", "many.default.svc.cluster.local"],
    );
    assert_eq!(answers.len(), 60, "{text}");
    assert!(text.contains("udp: 1232"), "{text}");
}

/// A resolver on loopback that answers every A query with 203.0.113.7.
fn upstream(addr: &str) -> Child {
    const SCRIPT: &str = r#"
import sys, socket, signal
signal.alarm(300)
ip, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((ip, port))
while True:
    q, a = s.recvfrom(4096)
    end = q.index(b"\0", 12) + 5
    s.sendto(q[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + q[12:end]
             + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([203, 0, 113, 7]), a)
"#;
    let (ip, port) = addr.split_once(':').unwrap();
    Command::new("python3")
        .args(["-c", SCRIPT, ip, port])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn outside_names_go_to_the_upstream_resolver() {
    let up_addr = format!("127.0.0.1:{}", switchyard_e2e::free_port());
    let mut up = upstream(&up_addr);
    let g = Gateway::start_with(&["--dns-upstream", &up_addr]).unwrap();
    let d = &g.dns;
    let got = wait_for(Duration::from_secs(5), "a forwarded answer", || {
        let (status, answers, _) = dig(d, &["+rec", "example.com", "A"]);
        (status == "NOERROR" && !answers.is_empty()).then_some(answers)
    });
    let metrics = g.admin_get("/metrics").unwrap().1;
    let _ = up.kill();
    let _ = up.wait();
    assert_eq!(got.unwrap(), ["203.0.113.7"]);
    assert!(
        metrics.contains("switchyard_dns_forwarded_total{kind=\"answered\"}"),
        "{metrics}"
    );
    // The upstream gone: SERVFAIL after the upstream timeout; cluster names still answer.
    let (status, _, _) = dig(d, &["+time=5", "example.com", "A"]);
    assert_eq!(status, "SERVFAIL");
    assert_eq!(
        dig(d, &["kubernetes.default.svc.cluster.local", "A"]).0,
        "NOERROR"
    );
}

#[test]
fn answers_follow_service_changes() {
    let g = Gateway::start().unwrap();
    let d = &g.dns;
    let started = Instant::now();
    g.ok(&["create", "service", "clusterip", "late", "--tcp=8080:80"]);
    let cip = jsonpath(&g, &["svc", "late"], "{.spec.clusterIP}");
    let seen = wait_for(Duration::from_secs(5), "the new Service in DNS", || {
        let (s, a, _) = dig(d, &["late.default.svc.cluster.local", "A"]);
        (s == "NOERROR" && a == [cip.clone()]).then_some(started.elapsed())
    })
    .unwrap();
    eprintln!("created → answered in {seen:?} (including kubectl)");
    assert_eq!(
        dig(d, &["_8080-80._tcp.late.default.svc.cluster.local", "SRV"]).1,
        ["0 100 8080 late.default.svc.cluster.local."]
    );
    // A changed port shows in SRV.
    g.ok(&[
        "patch",
        "svc",
        "late",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/ports/0/name","value":"web"}]"#,
    ]);
    wait_for(Duration::from_secs(5), "the renamed port in SRV", || {
        (dig(d, &["_web._tcp.late.default.svc.cluster.local", "SRV"])
            .1
            .len()
            == 1)
            .then_some(())
    })
    .unwrap();
    assert_eq!(
        dig(d, &["_8080-80._tcp.late.default.svc.cluster.local", "SRV"]).0,
        "NXDOMAIN"
    );
    // Deleted: NXDOMAIN.
    g.ok(&["delete", "svc", "late"]);
    wait_for(
        Duration::from_secs(5),
        "the deleted Service gone from DNS",
        || (dig(d, &["late.default.svc.cluster.local", "A"]).0 == "NXDOMAIN").then_some(()),
    )
    .unwrap();
    let (_, body) = g.admin_get("/metrics").unwrap();
    assert!(body.contains("switchyard_dns_queries_total{transport=\"udp\",rcode=\"NXDOMAIN\"}"));
}

#[test]
fn a_shaping_plugin_trims_and_rotates_answers_and_a_broken_one_falls_back() {
    let g = Gateway::start().unwrap();
    let eps: Vec<(String, &str)> = (1..=4).map(|i| (g.backend_ip(i), "n1")).collect();
    let shaped = "clusterIP: None, ports: [{name: x, port: 80}]";
    service(&g, "shaped", shaped, &eps, "{name: x, port: 80}");
    g.ok(&[
        "annotate",
        "svc",
        "shaped",
        "switchyard.io/dns=limit",
        r#"switchyard.io/dns-config={"max": 2, "rotate": true}"#,
    ]);
    service(&g, "wrong", shaped, &eps, "{name: x, port: 80}");
    // A balancer named as the DNS plugin: the answers go out unshaped.
    g.ok(&["annotate", "svc", "wrong", "switchyard.io/dns=round-robin"]);
    let d = &g.dns;
    let mut seen = std::collections::BTreeSet::new();
    wait_for(
        Duration::from_secs(10),
        "two rotated answers covering all four",
        || {
            let (status, answers, _) = dig(d, &["shaped.default.svc.cluster.local", "A"]);
            assert_eq!(status, "NOERROR");
            if answers.len() == 2 {
                seen.extend(answers);
            }
            (seen.len() == 4).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {seen:?}\n{}", g.log()));
    wait_for(
        Duration::from_secs(5),
        "unshaped answers from the broken plugin",
        || (dig(d, &["wrong.default.svc.cluster.local", "A"]).1.len() == 4).then_some(()),
    )
    .unwrap();
    let (_, metrics) = g.admin_get("/metrics").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_plugin_errors_total") && l.contains("hook=\"dns\"")),
        "{metrics}"
    );
}

/// The default chain from `--config` (`dns-shape`) shapes every answer of the zone, also of
/// Services that name no plugin, after a Service's own plugin; a chain entry that cannot run
/// passes the answers on unshaped (counted); a bad entry stops the start with the flag named.
#[test]
fn the_default_shaping_chain_from_the_config_file_shapes_every_answer() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.yaml");
    std::fs::write(
        &config,
        "dns-shape:\n  - rotate\n  - nope\n  - 'limit={\"max\": 1}'\n",
    )
    .unwrap();
    let g = Gateway::start_with(&["--config", config.to_str().unwrap()]).unwrap();
    let eps: Vec<(String, &str)> = (1..=4).map(|i| (g.backend_ip(i), "n1")).collect();
    let headless = "clusterIP: None, ports: [{name: x, port: 80}]";
    service(&g, "plain", headless, &eps, "{name: x, port: 80}");
    service(&g, "own", headless, &eps, "{name: x, port: 80}");
    // The Service's own plugin runs first: it keeps two, the chain then one of them.
    g.ok(&[
        "annotate",
        "svc",
        "own",
        "switchyard.io/dns=limit",
        r#"switchyard.io/dns-config={"max": 2}"#,
    ]);
    let d = &g.dns;
    let mut seen = std::collections::BTreeSet::new();
    wait_for(
        Duration::from_secs(10),
        "one answer at a time, rotating over all four",
        || {
            let (status, answers, _) = dig(d, &["plain.default.svc.cluster.local", "A"]);
            assert_eq!(status, "NOERROR");
            assert!(answers.len() <= 1, "the chain's limit holds: {answers:?}");
            seen.extend(answers);
            (seen.len() == 4).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {seen:?}\n{}", g.log()));
    // Over TCP too, and for SRV.
    let (status, answers, _) = dig(
        d,
        &["+tcp", "_x._tcp.plain.default.svc.cluster.local", "SRV"],
    );
    assert_eq!((status.as_str(), answers.len()), ("NOERROR", 1));
    let mut own = std::collections::BTreeSet::new();
    wait_for(
        Duration::from_secs(10),
        "the Service's plugin before the chain",
        || {
            let (_, answers, _) = dig(d, &["own.default.svc.cluster.local", "A"]);
            assert!(answers.len() <= 1, "{answers:?}");
            own.extend(answers);
            (own.len() == 2).then_some(())
        },
    )
    .unwrap();
    for _ in 0..20 {
        own.extend(dig(d, &["own.default.svc.cluster.local", "A"]).1);
    }
    assert_eq!(
        own.len(),
        2,
        "only the two the Service's plugin kept: {own:?}"
    );
    let (_, metrics) = g.admin_get("/metrics").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_plugin_errors_total")
                && l.contains("plugin=\"nope\"")
                && l.contains("kind=\"missing\"")),
        "{metrics}"
    );
    // A bad entry: the start fails, naming the flag.
    let out = switchyard_e2e::switchyard(&["serve", "--dns-shape", "Not A Name"]);
    assert!(!out.status.success());
    assert!(
        switchyard_e2e::stderr(&out).contains("--dns-shape"),
        "{}",
        switchyard_e2e::stderr(&out)
    );
}
