//! Rejected input, driven by the real kubectl and by raw HTTP against the real binary:
//! validation errors as kubectl prints them (the field named, nothing stored, nothing
//! allocated) and malformed requests answered with Kubernetes `Status` objects.

use switchyard_e2e::traffic::jsonpath;
use switchyard_e2e::{Gateway, http, stderr};

#[test]
fn validation_errors_name_the_field_and_store_nothing() {
    let g = Gateway::start().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "ports: [{name: 123_abc, port: 80}]",
            r#"spec.ports[0].name: Invalid value: "123_abc""#,
        ),
        (
            "ports: [{name: -web, port: 80}]",
            r#"spec.ports[0].name: Invalid value: "-web""#,
        ),
        (
            "ports: [{name: a, port: 80}, {port: 81}]",
            "spec.ports[1].name: Required value",
        ),
        (
            "ports: [{name: a, port: 80}, {name: b, port: 80}]",
            "spec.ports[1]: Duplicate value",
        ),
        (
            "ports: [{port: 80, targetPort: 70000}]",
            "spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ),
        (
            "ports: [{port: 80, targetPort: http--x}]",
            "spec.ports[0].targetPort: Invalid value: \"http--x\": must not contain consecutive hyphens",
        ),
        (
            "ports: [{port: 80, protocol: HTTP}]",
            r#"spec.ports[0].protocol: Unsupported value: "HTTP""#,
        ),
        (
            "{type: NodePort, ports: [{port: 80, nodePort: 40000}]}",
            "spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-32767",
        ),
        (
            "{clusterIP: 10.0.0.1, ports: [{port: 80}]}",
            r#"spec.clusterIPs[0]: Invalid value: "10.0.0.1""#,
        ),
        (
            "{clusterIP: bogus, ports: [{port: 80}]}",
            r#"spec.clusterIPs[0]: Invalid value: "bogus": must be a valid IP address"#,
        ),
        ("{type: ExternalName}", "spec.externalName: Required value"),
    ];
    for (spec, want) in cases {
        let spec = if spec.starts_with('{') {
            spec.to_string()
        } else {
            format!("{{{spec}}}")
        };
        let manifest =
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: bad}}\nspec: {spec}\n");
        let out = g.apply("create", &manifest);
        assert!(!out.status.success(), "{spec} was accepted");
        let err = stderr(&out);
        assert!(
            err.contains("The Service \"bad\" is invalid") && err.contains(want),
            "{spec}: expected {want:?} in:\n{err}"
        );
        assert!(
            !g.kubectl(&["get", "svc", "bad"]).status.success(),
            "{spec}: rejected Service was stored"
        );
    }
    let bad_name = g.apply(
        "create",
        "apiVersion: v1\nkind: Service\nmetadata: {name: 1bad}\nspec: {ports: [{port: 80}]}\n",
    );
    assert!(
        stderr(&bad_name).contains("metadata.name: Invalid value: \"1bad\": a DNS-1035 label"),
        "{}",
        stderr(&bad_name)
    );
    let unknown = g.apply("create", "apiVersion: v1\nkind: Service\nmetadata: {name: typo}\nspec: {portz: 1, ports: [{port: 80}]}\n");
    assert!(
        stderr(&unknown).contains(r#"strict decoding error: unknown field "spec.portz""#),
        "{}",
        stderr(&unknown)
    );
    // Nothing was allocated by the rejected requests: the next Service gets the second address.
    g.apply(
        "create",
        "apiVersion: v1\nkind: Service\nmetadata: {name: good}\nspec: {ports: [{port: 80}]}\n",
    );
    assert_eq!(
        jsonpath(&g, &["svc", "good"], "{.spec.clusterIP}"),
        format!("127.{}.0.2", g.net)
    );
}

#[test]
fn raw_http_errors_are_kubernetes_statuses() {
    let g = Gateway::start().unwrap();
    let svc_path = "/api/v1/namespaces/default/services";
    let (code, body) = http("POST", &g.api, svc_path, "application/json", b"{not json").unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains(r#""reason":"BadRequest""#));
    let big = vec![b'a'; 3 * 1024 * 1024 + 1];
    let (code, body) = http("POST", &g.api, svc_path, "application/json", &big).unwrap();
    assert_eq!(code, 413, "{body}");
    let get = |path| http("GET", &g.api, path, "application/json", b"").unwrap();
    let (code, body) = get("/api/v1/namespaces/default/widgets");
    assert_eq!(code, 404, "{body}");
    let (code, _) = get("/api/v1/namespaces/default/services/nope");
    assert_eq!(code, 404);
    // Garbage of every shape never takes the server down.
    for body in [
        "[]",
        "null",
        "{\"spec\": 5}",
        "{\"metadata\": {\"name\": 7}}",
        "{\"spec\":{\"ports\":[{\"port\":\"x\"}]}}",
        "\u{0}\u{1}",
    ] {
        let (code, _) = http(
            "POST",
            &g.api,
            svc_path,
            "application/json",
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(code, 400, "{body:?}");
    }
    let (code, body) = http(
        "POST",
        &g.api,
        svc_path,
        "application/yaml",
        b"metadata: {name: from-yaml}\nspec: {ports: [{port: 80}]}\n",
    )
    .unwrap();
    assert_eq!(code, 201, "YAML bodies accepted: {body}");
    // Patches that break the object are refused and leave it as it was.
    let item = format!("{svc_path}/from-yaml");
    for (ct, body) in [
        (
            "application/json-patch+json",
            r#"[{"op":"replace","path":"","value":5}]"#,
        ),
        (
            "application/json-patch+json",
            r#"[{"op":"remove","path":"/nope"}]"#,
        ),
        (
            "application/merge-patch+json",
            r#"{"metadata":{"name":"renamed"}}"#,
        ),
        (
            "application/strategic-merge-patch+json",
            r#"{"spec":{"ports":[{"targetPort":1}]}}"#,
        ),
        (
            "application/strategic-merge-patch+json",
            r#"{"spec":{"ports":[{"port":0}]}}"#,
        ),
        ("text/plain", "x"),
    ] {
        let (code, out) = http("PATCH", &g.api, &item, ct, body.as_bytes()).unwrap();
        assert!((400..500).contains(&code), "{ct} {body}: {code} {out}");
    }
    let (code, _) = http("GET", &g.api, &item, "", b"").unwrap();
    assert_eq!(code, 200);
    // resourceVersion conflicts are 409.
    let (_, cur) = http("GET", &g.api, &format!("{svc_path}/from-yaml"), "", b"").unwrap();
    let stale = cur.replace(r#""resourceVersion":""#, r#""resourceVersion":"1"#);
    let (code, body) = http(
        "PUT",
        &g.api,
        &format!("{svc_path}/from-yaml"),
        "application/json",
        stale.as_bytes(),
    )
    .unwrap();
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("the object has been modified"));
    let (code, _) = http(
        "PUT",
        &g.api,
        &format!("{svc_path}/from-yaml"),
        "application/json",
        cur.as_bytes(),
    )
    .unwrap();
    assert_eq!(
        code, 200,
        "update with the current resourceVersion succeeds"
    );
}
