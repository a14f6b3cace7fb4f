//! The foundation issue's user story, driven by the real kubectl against the real binary:
//! the docs Service, Pods and their readiness, apply twice, patch, allocation, namespaces,
//! and data surviving `kill -9`. Rejected input is in `api_errors.rs`.

use std::time::Duration;

use switchyard_e2e::{Gateway, stderr, stdout, wait_for, workspace_root};

fn example(name: &str) -> String {
    workspace_root()
        .join("examples")
        .join(name)
        .to_string_lossy()
        .to_string()
}

fn set_pod_status(g: &Gateway, pod: &str, ip: &str, ready: bool) {
    let patch = format!(
        r#"{{"status":{{"podIP":"{ip}","conditions":[{{"type":"Ready","status":"{}"}}]}}}}"#,
        if ready { "True" } else { "False" }
    );
    g.ok(&["patch", "pod", pod, "--subresource=status", "-p", &patch]);
}

fn jsonpath(g: &Gateway, args: &[&str], path: &str) -> String {
    let p = format!("jsonpath={path}");
    let mut a = args.to_vec();
    a.extend(["-o", &p]);
    g.ok(&a)
}

/// Waits until `kubectl get ... -o jsonpath` prints `want`.
fn eventually(g: &Gateway, args: &[&str], path: &str, want: &str) {
    let got = wait_for(
        Duration::from_secs(5),
        &format!("{args:?} {path} == {want:?}"),
        || {
            let v = jsonpath(g, args, path);
            (v == want).then_some(v)
        },
    );
    assert!(
        got.is_ok(),
        "{:?}; last value: {:?}",
        got.err(),
        jsonpath(g, args, path)
    );
}

#[test]
fn docs_example_endpoints_list_exactly_the_ready_pods() {
    let g = Gateway::start().unwrap();
    assert!(
        stdout(&g.kubectl(&["create", "-f", &example("my-service.yaml")]))
            .contains("service/my-service created")
    );
    g.ok(&["apply", "-f", &example("my-app-pods.yaml")]);
    set_pod_status(&g, "my-app-1", "127.0.0.11", true);
    set_pod_status(&g, "my-app-2", "127.0.0.12", true);
    set_pod_status(&g, "my-app-3", "127.0.0.13", false);

    eventually(
        &g,
        &["get", "endpoints", "my-service"],
        "{.subsets[*].addresses[*].ip}",
        "127.0.0.11 127.0.0.12",
    );
    eventually(
        &g,
        &["get", "endpoints", "my-service"],
        "{.subsets[*].notReadyAddresses[*].ip}",
        "127.0.0.13",
    );
    eventually(
        &g,
        &["get", "endpoints", "my-service"],
        "{.subsets[0].ports[0].port}",
        "9376",
    );
    eventually(
        &g,
        &["get", "endpointslice", "my-service"],
        "{.endpoints[?(@.conditions.ready==true)].addresses[0]}",
        "127.0.0.11 127.0.0.12",
    );
    eventually(
        &g,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=my-service",
        ],
        "{.items[*].metadata.name}",
        "my-service",
    );

    // Readiness flips are followed both ways.
    set_pod_status(&g, "my-app-3", "127.0.0.13", true);
    set_pod_status(&g, "my-app-1", "127.0.0.11", false);
    eventually(
        &g,
        &["get", "endpoints", "my-service"],
        "{.subsets[*].addresses[*].ip}",
        "127.0.0.12 127.0.0.13",
    );

    // A Pod that leaves the selector leaves the Endpoints.
    g.ok(&["label", "pod", "my-app-2", "app=Other", "--overwrite"]);
    eventually(
        &g,
        &["get", "endpoints", "my-service"],
        "{.subsets[*].addresses[*].ip}",
        "127.0.0.13",
    );

    // The gateway's snapshot (through the kube watcher) sees the same.
    let body = wait_for(Duration::from_secs(5), "snapshot", || {
        let (code, body) = g.admin_get("/debug/services/default/my-service").ok()?;
        (code == 200
            && body.contains(r#""addr":"127.0.0.13""#)
            && !body.contains(r#""addr":"127.0.0.12""#))
        .then_some(body)
    })
    .unwrap();
    assert!(body.contains(r#""port":9376"#), "{body}");

    // Deleting the Service removes its Endpoints and slices.
    g.ok(&["delete", "service", "my-service"]);
    wait_for(Duration::from_secs(5), "endpoints gone", || {
        (!g.kubectl(&["get", "endpoints", "my-service"])
            .status
            .success())
        .then_some(())
    })
    .unwrap();
    wait_for(Duration::from_secs(5), "slice gone", || {
        (!g.kubectl(&["get", "endpointslice", "my-service"])
            .status
            .success())
        .then_some(())
    })
    .unwrap();
}

#[test]
fn apply_twice_then_patch_keeps_allocations() {
    let g = Gateway::start().unwrap();
    let v1 = std::fs::read_to_string(example("my-service.yaml")).unwrap();
    assert!(stdout(&g.apply("apply", &v1)).contains("created"));
    let ip = jsonpath(&g, &["get", "svc", "my-service"], "{.spec.clusterIP}");
    assert!(ip.starts_with(&format!("127.{}.", g.net)), "{ip}");
    let v2 = v1.replace("9376", "9377");
    assert!(
        stdout(&g.apply("apply", &v2)).contains("configured"),
        "second apply sends a strategic merge patch"
    );
    assert!(stdout(&g.apply("apply", &v2)).contains("unchanged"));
    assert_eq!(
        jsonpath(
            &g,
            &["get", "svc", "my-service"],
            "{.spec.ports[0].targetPort}"
        ),
        "9377"
    );
    assert_eq!(
        jsonpath(&g, &["get", "svc", "my-service"], "{.spec.clusterIP}"),
        ip,
        "clusterIP kept across applies"
    );

    g.ok(&[
        "patch",
        "svc",
        "my-service",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"tier":"web"}}}"#,
    ]);
    g.ok(&[
        "patch",
        "svc",
        "my-service",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/ports/0/port","value":8080}]"#,
    ]);
    g.ok(&[
        "patch",
        "svc",
        "my-service",
        "-p",
        r#"{"spec":{"ports":[{"port":8080,"name":"web"}]}}"#,
    ]);
    assert_eq!(
        jsonpath(
            &g,
            &["get", "svc", "my-service"],
            "{.metadata.labels.tier} {.spec.ports[0].port} {.spec.ports[0].name} {.spec.ports[0].targetPort}"
        ),
        "web 8080 web 9377"
    );

    // NodePort: a port from the range; changing back to ClusterIP releases it.
    g.ok(&[
        "patch",
        "svc",
        "my-service",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ]);
    let np: u16 = jsonpath(
        &g,
        &["get", "svc", "my-service"],
        "{.spec.ports[0].nodePort}",
    )
    .parse()
    .unwrap();
    assert!((30000..=32767).contains(&np));
    g.ok(&[
        "patch",
        "svc",
        "my-service",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ]);
    assert_eq!(
        jsonpath(
            &g,
            &["get", "svc", "my-service"],
            "{.spec.ports[0].nodePort}"
        ),
        ""
    );
    let reuse = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: reuse}}\nspec:\n  type: NodePort\n  ports: [{{port: 80, nodePort: {np}}}]\n"
    );
    assert!(
        g.apply("create", &reuse).status.success(),
        "released nodePort can be taken again"
    );
    let clash = reuse.replace("name: reuse", "name: clash");
    let out = g.apply("create", &clash);
    assert!(
        stderr(&out).contains(&format!(
            "spec.ports[0].nodePort: Invalid value: {np}: provided port is already allocated"
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn load_balancer_gets_an_address_and_selectorless_endpoints_are_mirrored() {
    let g = Gateway::start().unwrap();
    g.apply("create", "apiVersion: v1\nkind: Service\nmetadata: {name: lb}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n");
    let ip = jsonpath(
        &g,
        &["get", "svc", "lb"],
        "{.status.loadBalancer.ingress[0].ip}",
    );
    assert!(ip.starts_with(&format!("127.{}.200.", g.net)), "{ip}");
    assert!(
        g.ok(&["get", "svc", "lb"]).contains(&ip),
        "EXTERNAL-IP column shows it"
    );

    g.apply("create", "apiVersion: v1\nkind: Service\nmetadata: {name: external-db}\nspec: {ports: [{port: 5432}]}\n");
    g.apply("create", "apiVersion: v1\nkind: Endpoints\nmetadata: {name: external-db}\nsubsets: [{addresses: [{ip: 127.0.0.50}], ports: [{port: 5432}]}]\n");
    eventually(
        &g,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=external-db",
        ],
        "{.items[0].endpoints[0].addresses[0]}",
        "127.0.0.50",
    );
    eventually(
        &g,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=external-db",
        ],
        "{.items[0].metadata.labels.endpointslice\\.kubernetes\\.io/managed-by}",
        "endpointslicemirroring-controller.k8s.io",
    );
    // The built-in `kubernetes` Service points at the API.
    let port = g.api.rsplit(':').next().unwrap().to_string();
    eventually(
        &g,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=kubernetes",
        ],
        "{.items[0].ports[0].port}",
        &port,
    );
}

#[test]
fn namespaces_scope_objects_and_protected_ones_stay() {
    let g = Gateway::start().unwrap();
    g.ok(&["create", "namespace", "team-a"]);
    g.apply("create", "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: team-a}\nspec: {ports: [{port: 80}]}\n");
    assert!(g.ok(&["get", "svc", "-A"]).contains("team-a"));
    let missing = g.apply("create", "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: nope}\nspec: {ports: [{port: 80}]}\n");
    assert!(
        stderr(&missing).contains(r#"namespaces "nope" not found"#),
        "{}",
        stderr(&missing)
    );
    g.ok(&["delete", "namespace", "team-a"]);
    assert!(!g.ok(&["get", "svc", "-A"]).contains("team-a"));
    let out = g.kubectl(&["delete", "namespace", "default"]);
    assert!(stderr(&out).contains("forbidden"), "{}", stderr(&out));
    assert!(g.ok(&["api-resources"]).contains("endpointslices"));
    assert!(
        g.ok(&["get", "--raw", "/openapi/v3"])
            .contains("apis/discovery.k8s.io/v1")
    );
}

#[test]
fn everything_survives_kill_9() {
    let mut g = Gateway::start().unwrap();
    g.ok(&["create", "-f", &example("my-service.yaml")]);
    g.ok(&["apply", "-f", &example("my-app-pods.yaml")]);
    set_pod_status(&g, "my-app-1", "127.0.0.11", true);
    eventually(
        &g,
        &["get", "endpoints", "my-service"],
        "{.subsets[*].addresses[*].ip}",
        "127.0.0.11",
    );
    g.apply("create", "apiVersion: v1\nkind: Service\nmetadata: {name: np}\nspec: {type: NodePort, ports: [{port: 80}]}\n");
    let before = g.ok(&["get", "svc,pods,endpoints,endpointslices", "-o", "custom-columns=KIND:.kind,NAME:.metadata.name,RV:.metadata.resourceVersion,UID:.metadata.uid"]);
    let np = jsonpath(&g, &["get", "svc", "np"], "{.spec.ports[0].nodePort}");
    let max_rv: u64 = before
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
        .max()
        .unwrap();

    g.kill9_and_restart().unwrap();
    let after = g.ok(&["get", "svc,pods,endpoints,endpointslices", "-o", "custom-columns=KIND:.kind,NAME:.metadata.name,RV:.metadata.resourceVersion,UID:.metadata.uid"]);
    assert_eq!(
        before, after,
        "every object as it was, same uid and resourceVersion"
    );

    // Allocators agree with the store: the same nodePort is refused, a new Service gets a new IP.
    let clash = g.apply("create", &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: np2}}\nspec: {{type: NodePort, ports: [{{port: 80, nodePort: {np}}}]}}\n"));
    assert!(
        stderr(&clash).contains("already allocated"),
        "{}",
        stderr(&clash)
    );
    g.apply(
        "create",
        "apiVersion: v1\nkind: Service\nmetadata: {name: fresh}\nspec: {ports: [{port: 80}]}\n",
    );
    let taken: Vec<String> = jsonpath(&g, &["get", "svc"], "{.items[*].spec.clusterIP}")
        .split_whitespace()
        .map(String::from)
        .collect();
    let mut dedup = taken.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(
        taken.len(),
        dedup.len(),
        "no cluster IP handed out twice: {taken:?}"
    );
    let rv: u64 = jsonpath(&g, &["get", "svc", "fresh"], "{.metadata.resourceVersion}")
        .parse()
        .unwrap();
    assert!(rv > max_rv, "resourceVersion {rv} continues after {max_rv}");
    // The controller still follows Pods after the restart.
    set_pod_status(&g, "my-app-2", "127.0.0.12", true);
    eventually(
        &g,
        &["get", "endpoints", "my-service"],
        "{.subsets[*].addresses[*].ip}",
        "127.0.0.11 127.0.0.12",
    );
}

#[test]
fn typed_kubectl_commands_send_protobuf_and_work() {
    let g = Gateway::start().unwrap();
    g.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=user=admin",
    ]);
    assert_eq!(
        jsonpath(&g, &["get", "secret", "s1"], "{.data.user}"),
        "YWRtaW4="
    );
    g.ok(&["create", "configmap", "c1", "--from-literal=mode=fast"]);
    assert_eq!(
        jsonpath(&g, &["get", "configmap", "c1"], "{.data.mode}"),
        "fast"
    );
    g.ok(&["create", "service", "nodeport", "web", "--tcp=80:8080"]);
    assert_eq!(
        jsonpath(
            &g,
            &["get", "svc", "web"],
            "{.spec.type} {.spec.selector.app} {.spec.ports[0].targetPort}"
        ),
        "NodePort web 8080"
    );
    g.ok(&[
        "run",
        "web-1",
        "--image=example/web",
        "--port=8080",
        "--labels=app=web",
    ]);
    set_pod_status(&g, "web-1", "127.0.0.31", true);
    eventually(
        &g,
        &["get", "endpoints", "web"],
        "{.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}",
        "127.0.0.31:8080",
    );
    g.ok(&[
        "expose",
        "pod",
        "web-1",
        "--name=web-direct",
        "--port=9090",
        "--target-port=8080",
    ]);
    eventually(
        &g,
        &["get", "endpoints", "web-direct"],
        "{.subsets[0].addresses[0].ip}",
        "127.0.0.31",
    );
    // A resource this server does not serve (apps/v1 Deployments) is refused.
    let out = g.kubectl(&["create", "deployment", "d", "--image=x"]);
    assert!(!out.status.success());
}

#[test]
fn kubectl_get_watch_prints_table_rows() {
    use std::process::{Command, Stdio};
    let g = Gateway::start().unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut watch = Command::new(switchyard_e2e::kubectl_path())
        .args(["--server", &format!("http://{}", g.api), "get", "svc", "-w"])
        .env("KUBECONFIG", "/dev/null")
        .stdout(Stdio::from(out.reopen().unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(5), "watch started", || {
        std::fs::read_to_string(out.path())
            .ok()
            .filter(|s| s.contains("kubernetes"))
    })
    .unwrap();
    g.ok(&["create", "service", "nodeport", "late", "--tcp=80:8080"]);
    let text = wait_for(Duration::from_secs(5), "the new row", || {
        std::fs::read_to_string(out.path())
            .ok()
            .filter(|s| s.contains("late"))
    })
    .unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    let row = text.lines().find(|l| l.starts_with("late")).unwrap();
    assert!(
        row.contains("NodePort") && row.contains("80:3"),
        "watch rows carry the table columns: {text}"
    );
}
