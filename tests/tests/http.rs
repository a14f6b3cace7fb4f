//! HTTP mode against the real binary, with curl as the client and Python backends: a pick per
//! request on one keep-alive connection (HTTP/1.1 and h2c), forwarding headers, 503 and 502
//! with clear bodies, the mode annotation, and a policy plugin denying and rerouting requests.

use switchyard_e2e::traffic::{
    backends, distinct, jsonpath, local_endpoints, metric, names, service, wait_listener,
};
use switchyard_e2e::{Gateway, curl};

/// Sends three GETs on one connection (curl reuses it for URLs given together); returns
/// curl's exit code and the lines the backends answered.
fn three_on_one_connection(base: &str, extra: &[&str]) -> (i32, Vec<String>) {
    let urls = [
        format!("{base}/a"),
        format!("{base}/b"),
        format!("{base}/c"),
    ];
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(urls.iter().map(String::as_str));
    let (code, out) = curl(&args);
    (code, out.lines().map(str::to_string).collect())
}

/// Three GETs as three streams of one HTTP/2 connection (prior knowledge) with `nghttp`
/// (curl 7.88 cannot reuse a prior-knowledge connection: it fails the second transfer with
/// exit code 16, against any server).
fn three_streams_h2c(base: &str) -> (i32, Vec<String>) {
    let out = std::process::Command::new("nghttp")
        .args([
            "-t",
            "5",
            &format!("{base}/a"),
            &format!("{base}/b"),
            &format!("{base}/c"),
        ])
        .output()
        .expect("nghttp runs (scripts/install-test-deps.sh installs nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    (
        out.status.code().unwrap_or(-1),
        text.lines().map(str::to_string).collect(),
    )
}

#[test]
fn http1_and_h2c_pick_per_request_and_forward_the_client() {
    let g = Gateway::start().unwrap();
    let _b = backends(&g, &[11, 12, 13], 9376);
    let eps = local_endpoints(&g, &[11, 12, 13]);
    service(
        &g,
        "web",
        "ports: [{name: http, port: 80, targetPort: 9376, appProtocol: http}]",
        &eps,
        "{name: http, port: 9376}",
    );
    let cip = jsonpath(&g, &["svc", "web"], "{.spec.clusterIP}");
    wait_listener(&g, &format!("{cip}:80"), 3);
    let client = format!("127.{}.230.4", g.net);
    let base = format!("http://{cip}");
    for version in ["HTTP/1.1", "h2c"] {
        let (code, lines) = if version == "h2c" {
            three_streams_h2c(&base)
        } else {
            three_on_one_connection(&base, &["--http1.1", "--interface", &client])
        };
        let client = if version == "h2c" {
            "127.0.0.1"
        } else {
            &client
        };
        assert_eq!(code, 0, "{version}: {lines:?}");
        let served: Vec<String> = lines
            .iter()
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect();
        assert_eq!(
            distinct(&served),
            names(&[11, 12, 13]),
            "{version}: one pick per request: {lines:?}"
        );
        let mut paths = Vec::new();
        for line in &lines {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f[2], client, "X-Forwarded-For carries the client: {line}");
            paths.push(f[3]);
        }
        paths.sort();
        assert_eq!(paths, ["/a", "/b", "/c"]);
    }
    let (code, v) = curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &format!("{base}/"),
    ]);
    assert_eq!((code, v.as_str()), (0, "2"));
    // One connection accepted per curl run, three requests each, all 2xx.
    assert!(
        metric(
            &g,
            "switchyard_proxy_http_requests_total{namespace=\"default\",service=\"web\",port=\"http\",code=\"2xx\"}"
        ) >= 6.0
    );
}

#[test]
fn no_endpoint_is_503_and_a_dead_endpoint_is_502() {
    let g = Gateway::start().unwrap();
    g.apply("apply", "apiVersion: v1\nkind: Service\nmetadata: {name: none, annotations: {switchyard.io/mode: http}}\nspec: {ports: [{port: 80}]}\n");
    // Nothing listens on the endpoint.
    service(
        &g,
        "dead",
        "ports: [{port: 80, appProtocol: http}]",
        &[(g.backend_ip(99), "test-node")],
        9376,
    );
    let none = jsonpath(&g, &["svc", "none"], "{.spec.clusterIP}");
    let dead = jsonpath(&g, &["svc", "dead"], "{.spec.clusterIP}");
    wait_listener(&g, &format!("{none}:80"), 0);
    wait_listener(&g, &format!("{dead}:80"), 1);
    let (code, body) = curl(&["-w", " %{http_code}", &format!("http://{none}/")]);
    assert_eq!(code, 0);
    assert!(
        body.ends_with(" 503") && body.contains("no ready endpoint for Service default/none"),
        "{body}"
    );
    let (code, body) = curl(&["-w", " %{http_code}", &format!("http://{dead}/")]);
    assert_eq!(code, 0);
    assert!(
        body.ends_with(" 502") && body.contains(&g.backend_ip(99)),
        "{body}"
    );
}

/// curl's body and status (` NNN` appended) for a GET of `url` with headers `h`.
fn get_with_headers(url: &str, h: &[&str]) -> String {
    let mut args = vec!["-w", " %{http_code}"];
    for x in h {
        args.extend(["-H", x]);
    }
    args.push(url);
    curl(&args).1
}

#[test]
fn a_policy_plugin_denies_and_reroutes_requests() {
    let g = Gateway::start().unwrap();
    let _b = backends(&g, &[21, 22], 9376);
    service(
        &g,
        "main",
        "ports: [{port: 80, targetPort: 9376, appProtocol: http}]",
        &[(g.backend_ip(21), "test-node")],
        9376,
    );
    service(
        &g,
        "canary",
        "ports: [{port: 80, targetPort: 9376}]",
        &[(g.backend_ip(22), "test-node")],
        9376,
    );
    let config = r#"{"rules": [{"header": "x-block", "present": true, "action": "deny", "status": 451}, {"header": "x-env", "value": "canary", "action": "reroute", "to": "default/canary:80"}]}"#;
    g.ok(&[
        "annotate",
        "svc",
        "main",
        "switchyard.io/policy=header-match",
        &format!("switchyard.io/policy-config={config}"),
    ]);
    let cip = jsonpath(&g, &["svc", "main"], "{.spec.clusterIP}");
    wait_listener(&g, &format!("{cip}:80"), 1);
    let url = format!("http://{cip}/");
    let get = |h: &[&str]| get_with_headers(&url, h);
    // The annotation reaches the data plane through the snapshot; wait for the policy.
    switchyard_e2e::wait_for(std::time::Duration::from_secs(10), "the policy", || {
        get(&["x-block: 1"]).ends_with(" 451").then_some(())
    })
    .unwrap();
    assert!(
        get(&[]).starts_with("b21 "),
        "no rule matches: the Service's own endpoint"
    );
    assert!(
        get(&["x-env: canary"]).starts_with("b22 "),
        "rerouted to default/canary"
    );
    assert!(get(&["x-env: prod"]).starts_with("b21 "));
}

#[test]
fn the_http_example_manifest_works_as_documented() {
    let g = Gateway::start().unwrap();
    let _b: Vec<switchyard_e2e::Backend> = [21u8, 22, 23]
        .iter()
        .map(|i| {
            switchyard_e2e::Backend::http(&format!("127.0.0.{i}"), 8080, &format!("b{i}")).unwrap()
        })
        .collect();
    let path = switchyard_e2e::workspace_root().join("examples/web-http.yaml");
    g.ok(&["apply", "-f", path.to_str().unwrap()]);
    let lb = jsonpath(&g, &["svc", "web"], "{.status.loadBalancer.ingress[0].ip}");
    wait_listener(&g, &format!("{lb}:80"), 2);
    let url = format!("http://{lb}/");
    let get = |h: &[&str]| get_with_headers(&url, h);
    let served: Vec<String> = (0..6)
        .map(|_| get(&[]).split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(distinct(&served), names(&[21, 22]), "{served:?}");
    assert!(get(&["x-block: yes"]).ends_with(" 403"));
    assert!(get(&["x-env: canary"]).starts_with("b23 "));
}
