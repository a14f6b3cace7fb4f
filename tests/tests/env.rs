//! `switchyard env` and `switchyard exec` against the real binary: the variables compared
//! with what the kubelet's rules give for a multi-port Service, a headless one, an
//! ExternalName and a Service of another namespace (and `default/kubernetes`); the same
//! through the admin API as JSON; `exec` passing them to a command and registering it as a
//! ready Pod that a Service sends traffic to, removed when the command exits or crashes.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use switchyard_e2e::traffic::{jsonpath, wait_listener};
use switchyard_e2e::{Gateway, binary, curl, free_port, wait_for};

fn setup(g: &Gateway) -> (String, String) {
    g.ok(&["create", "namespace", "shop"]);
    let manifest = "\
apiVersion: v1
kind: Service
metadata: {name: my-db, namespace: shop}
spec: {ports: [{name: pg, port: 5432}, {name: metrics-udp, port: 9187, protocol: UDP}]}
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: shop}
spec: {clusterIP: None, ports: [{name: x, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: shop}
spec: {type: ExternalName, externalName: db.example.org}
---
apiVersion: v1
kind: Service
metadata: {name: elsewhere, namespace: default}
spec: {ports: [{port: 80}]}
";
    let out = g.apply("apply", manifest);
    assert!(out.status.success(), "{}", switchyard_e2e::stderr(&out));
    (
        jsonpath(g, &["svc", "my-db", "-n", "shop"], "{.spec.clusterIP}"),
        jsonpath(g, &["svc", "kubernetes"], "{.spec.clusterIP}"),
    )
}

/// What the kubelet gives a container in `shop`, written out by its rules.
fn expected(db: &str, k8s: &str) -> BTreeMap<String, String> {
    [
        ("KUBERNETES_PORT", format!("tcp://{k8s}:443")),
        ("KUBERNETES_PORT_443_TCP", format!("tcp://{k8s}:443")),
        ("KUBERNETES_PORT_443_TCP_ADDR", k8s.to_string()),
        ("KUBERNETES_PORT_443_TCP_PORT", "443".into()),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp".into()),
        ("KUBERNETES_SERVICE_HOST", k8s.to_string()),
        ("KUBERNETES_SERVICE_PORT", "443".into()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443".into()),
        ("MY_DB_PORT", format!("tcp://{db}:5432")),
        ("MY_DB_PORT_5432_TCP", format!("tcp://{db}:5432")),
        ("MY_DB_PORT_5432_TCP_ADDR", db.to_string()),
        ("MY_DB_PORT_5432_TCP_PORT", "5432".into()),
        ("MY_DB_PORT_5432_TCP_PROTO", "tcp".into()),
        ("MY_DB_PORT_9187_UDP", format!("udp://{db}:9187")),
        ("MY_DB_PORT_9187_UDP_ADDR", db.to_string()),
        ("MY_DB_PORT_9187_UDP_PORT", "9187".into()),
        ("MY_DB_PORT_9187_UDP_PROTO", "udp".into()),
        ("MY_DB_SERVICE_HOST", db.to_string()),
        ("MY_DB_SERVICE_PORT", "5432".into()),
        ("MY_DB_SERVICE_PORT_METRICS_UDP", "9187".into()),
        ("MY_DB_SERVICE_PORT_PG", "5432".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[test]
fn env_prints_what_the_kubelet_would_set() {
    let g = Gateway::start().unwrap();
    let (db, k8s) = setup(&g);
    let server = format!("http://{}", g.api);
    let out = switchyard_e2e::switchyard(&["env", "-n", "shop", "--server", &server]);
    assert!(out.status.success(), "{}", switchyard_e2e::stderr(&out));
    let got: BTreeMap<String, String> = switchyard_e2e::stdout(&out)
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            (k.to_string(), v.to_string())
        })
        .collect();
    assert_eq!(got, expected(&db, &k8s));
    // The admin API says the same, from the snapshot.
    let json = wait_for(Duration::from_secs(5), "env in the snapshot", || {
        let (_, body) = g.admin_get("/env/shop").ok()?;
        let m: BTreeMap<String, String> = serde_json::from_str(&body).ok()?;
        (m.len() == got.len()).then_some(m)
    })
    .unwrap();
    assert_eq!(json, got);
    // In `default`: only default's Services (kubernetes, elsewhere), none of shop's.
    let out = switchyard_e2e::switchyard(&["env", "--server", &server]);
    let text = switchyard_e2e::stdout(&out);
    assert!(text.contains("ELSEWHERE_SERVICE_PORT=80\n"), "{text}");
    assert!(!text.contains("MY_DB"), "{text}");
}

#[test]
fn exec_runs_a_backend_registered_as_a_pod() {
    let g = Gateway::start().unwrap();
    let (db, _) = setup(&g);
    let server = format!("http://{}", g.api);
    // The command sees the variables.
    let out = switchyard_e2e::switchyard(&[
        "exec",
        "-n",
        "shop",
        "--server",
        &server,
        "--",
        "sh",
        "-c",
        "echo $MY_DB_SERVICE_HOST",
    ]);
    assert!(out.status.success(), "{}", switchyard_e2e::stderr(&out));
    assert_eq!(switchyard_e2e::stdout(&out).trim(), db);

    // A Service selecting app=local, targetPort by name.
    let m = "apiVersion: v1\nkind: Service\nmetadata: {name: local, namespace: shop}\n\
             spec: {selector: {app: local}, ports: [{port: 80, targetPort: web}]}\n";
    assert!(g.apply("apply", m).status.success());
    let cip = jsonpath(&g, &["svc", "local", "-n", "shop"], "{.spec.clusterIP}");
    let port = free_port();
    let mut child = Command::new(binary())
        .args([
            "exec", "-n", "shop", "--server", &server, "--name", "local-1",
        ])
        .args([
            "--label",
            "app=local",
            "--port",
            &format!("web={port}"),
            "--",
        ])
        .args([
            "python3",
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listener(&g, &format!("{cip}:80"), 1);
    let ep = jsonpath(
        &g,
        &["endpoints", "local", "-n", "shop"],
        "{.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}",
    );
    assert_eq!(ep, format!("127.0.0.1:{port}"));
    wait_for(Duration::from_secs(10), "the command listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .unwrap();
    let (code, body) = curl(&[&format!("http://{cip}/")]);
    assert_eq!(code, 0);
    assert!(body.contains("Directory listing"), "{body}");
    // SIGTERM to exec: the command ends and the Pod goes.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(!status.success());
    let pods = g.ok(&["get", "pods", "-n", "shop", "-o", "name"]);
    assert!(!pods.contains("local-1"), "{pods}");
    wait_listener(&g, &format!("{cip}:80"), 0);

    // The command crashing (SIGKILL on itself): exec reports 137 and removes the Pod.
    let out = switchyard_e2e::switchyard(&[
        "exec",
        "-n",
        "shop",
        "--server",
        &server,
        "--name",
        "crashy",
        "--label",
        "app=local",
        "--",
        "sh",
        "-c",
        "sleep 0.5; kill -9 $$",
    ]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "{}",
        switchyard_e2e::stderr(&out)
    );
    let pods = g.ok(&["get", "pods", "-n", "shop", "-o", "name"]);
    assert!(!pods.contains("crashy"), "{pods}");
}
