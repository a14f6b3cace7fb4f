//! TLS termination against the real binary: certificates made with `openssl`, stored with
//! `kubectl create secret tls`, served on a LoadBalancer address and checked with curl
//! (`--cacert`, `--resolve` for SNI): SNI picks among two Secrets, ALPN gives HTTP/2, the
//! cluster IP stays plain HTTP, a rotated Secret is served without a restart, and a listener
//! whose Secret is missing refuses rather than serving in clear.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use switchyard_e2e::traffic::{backends, jsonpath, metric, service, wait_listener};
use switchyard_e2e::{Gateway, curl, wait_for};

/// A self-signed certificate for `name` (and its key) in `dir`: (cert, key).
fn cert(dir: &Path, name: &str, tag: &str) -> (PathBuf, PathBuf) {
    let (c, k) = (
        dir.join(format!("{tag}.crt")),
        dir.join(format!("{tag}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
        .args(["-addext", &format!("subjectAltName=DNS:{name}")])
        .arg("-keyout")
        .arg(&k)
        .arg("-out")
        .arg(&c)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (c, k)
}

fn secret(g: &Gateway, name: &str, (c, k): &(PathBuf, PathBuf)) {
    let yaml = g.ok(&[
        "create",
        "secret",
        "tls",
        name,
        "--dry-run=client",
        "-o",
        "yaml",
        &format!("--cert={}", c.display()),
        &format!("--key={}", k.display()),
    ]);
    let out = g.apply("apply", &yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// GET https://NAME/ at `ip:443`, trusting `ca`: (curl exit code, HTTP version, body).
fn get(name: &str, ip: &str, ca: &Path) -> (i32, String) {
    curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &format!("{name}:443:{ip}"),
        "-w",
        " HTTP/%{http_version}",
        &format!("https://{name}/"),
    ])
}

#[test]
fn tls_termination_with_sni_alpn_and_rotation() {
    let g = Gateway::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = cert(dir.path(), "a.example", "a");
    let b = cert(dir.path(), "b.example", "b");
    secret(&g, "a-tls", &a);
    secret(&g, "b-tls", &b);
    let _b = backends(&g, &[11], 9376);
    service(
        &g,
        "secure",
        "type: LoadBalancer, ports: [{name: https, port: 443, targetPort: 9376, appProtocol: https}]",
        &[(g.backend_ip(11), "test-node")],
        "{name: https, port: 9376}",
    );
    g.ok(&[
        "annotate",
        "svc",
        "secure",
        "switchyard.io/tls-secret=a-tls, b-tls",
    ]);
    let lb = jsonpath(
        &g,
        &["svc", "secure"],
        "{.status.loadBalancer.ingress[0].ip}",
    );
    let cip = jsonpath(&g, &["svc", "secure"], "{.spec.clusterIP}");
    wait_listener(&g, &format!("{lb}:443"), 1);
    // SNI picks each Secret's certificate; ALPN negotiates HTTP/2.
    for (name, pair) in [("a.example", &a), ("b.example", &b)] {
        let (code, out) = wait_for(Duration::from_secs(10), name, || {
            let r = get(name, &lb, &pair.0);
            (r.0 == 0).then_some(r)
        })
        .unwrap();
        assert_eq!(code, 0);
        assert!(out.starts_with("b11 ") && out.ends_with(" HTTP/2"), "{out}");
    }
    // With the wrong CA the handshake fails: the certificate really is the other one.
    assert_ne!(get("b.example", &lb, &a.0).0, 0);
    // The cluster IP is not a TLS frontend: `https` is passed through to the endpoint as TCP
    // there, and this endpoint speaks plain HTTP.
    let (code, out) = curl(&[&format!("http://{cip}:443/")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("b11 "));

    // Rotation: a new certificate in the same Secret is served without a restart.
    let a2 = cert(dir.path(), "a.example", "a2");
    secret(&g, "a-tls", &a2);
    wait_for(Duration::from_secs(10), "the rotated certificate", || {
        (get("a.example", &lb, &a2.0).0 == 0).then_some(())
    })
    .unwrap();
    assert_ne!(
        get("a.example", &lb, &a.0).0,
        0,
        "the old certificate is gone"
    );
}

#[test]
fn a_listener_without_its_secret_refuses_instead_of_serving_in_clear() {
    let g = Gateway::start().unwrap();
    let _b = backends(&g, &[12], 9376);
    service(
        &g,
        "nosecret",
        "type: LoadBalancer, ports: [{port: 443, targetPort: 9376, appProtocol: http}]",
        &[(g.backend_ip(12), "test-node")],
        9376,
    );
    g.ok(&[
        "annotate",
        "svc",
        "nosecret",
        "switchyard.io/tls-secret=missing",
    ]);
    let lb = jsonpath(
        &g,
        &["svc", "nosecret"],
        "{.status.loadBalancer.ingress[0].ip}",
    );
    wait_listener(&g, &format!("{lb}:443"), 1);
    wait_for(Duration::from_secs(10), "refusals", || {
        let (code, _) = curl(&[&format!("http://{lb}:443/")]);
        (code != 0
            && metric(&g, "switchyard_proxy_rejected_total{namespace=\"default\",service=\"nosecret\",port=\"443\",reason=\"tls\"}") >= 1.0)
            .then_some(())
    })
    .unwrap();
    assert!(
        g.log()
            .contains("none of the Secrets named in switchyard.io/tls-secret")
    );
}
