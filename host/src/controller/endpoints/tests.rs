//! The controller's mapping, table-style: Service + Pods in, Endpoints/slices out.

use super::*;
use serde_json::json;

fn svc(v: serde_json::Value) -> Service {
    serde_json::from_value(v).unwrap()
}

fn pod(name: &str, ip: Option<&str>, ready: bool, ports: &[(&str, i32)]) -> PodInfo {
    PodInfo {
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: [("app".to_string(), "MyApp".to_string())].into(),
        ip: ip.map(|i| i.parse().unwrap()),
        ready,
        terminating: false,
        finished: false,
        node: Some("node-1".into()),
        zone: None,
        hostname: None,
        subdomain: None,
        ports: ports
            .iter()
            .map(|(n, p)| (n.to_string(), *p, "TCP".to_string()))
            .collect(),
    }
}

fn docs_service() -> Service {
    svc(
        json!({"metadata": {"name": "my-service", "namespace": "default", "uid": "u1"},
               "spec": {"selector": {"app": "MyApp"}, "ports": [{"protocol": "TCP", "port": 80, "targetPort": 9376}]}}),
    )
}

#[test]
fn ready_and_not_ready_pods_split_and_unaddressed_pods_skipped() {
    let a = pod("a", Some("127.0.0.12"), true, &[]);
    let b = pod("b", Some("127.0.0.11"), true, &[]);
    let c = pod("c", Some("127.0.0.13"), false, &[]);
    let d = pod("d", None, true, &[]);
    let out = desired(&docs_service(), &[&a, &b, &c, &d]);
    let subsets = out.endpoints.subsets.unwrap();
    assert_eq!(subsets.len(), 1);
    let ips: Vec<_> = subsets[0]
        .addresses
        .iter()
        .flatten()
        .map(|a| a.ip.as_str())
        .collect();
    assert_eq!(ips, ["127.0.0.11", "127.0.0.12"], "ready, sorted by IP");
    let nr: Vec<_> = subsets[0]
        .not_ready_addresses
        .iter()
        .flatten()
        .map(|a| a.ip.as_str())
        .collect();
    assert_eq!(nr, ["127.0.0.13"]);
    assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 9376);

    assert_eq!(out.slices.len(), 1);
    let s = &out.slices[0];
    assert_eq!(s.metadata.name.as_deref(), Some("my-service"));
    assert_eq!(
        s.metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL],
        "my-service"
    );
    let ready: Vec<_> = s
        .endpoints
        .iter()
        .map(|e| {
            (
                e.addresses[0].as_str(),
                e.conditions.as_ref().unwrap().ready.unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ready,
        [
            ("127.0.0.11", true),
            ("127.0.0.12", true),
            ("127.0.0.13", false)
        ]
    );
    assert_eq!(s.endpoints[0].node_name.as_deref(), Some("node-1"));
}

#[test]
fn named_target_port_resolves_per_pod_and_skips_pods_without_it() {
    let s = svc(json!({"metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "MyApp"}, "ports": [{"name": "http", "port": 80, "targetPort": "http-alt"}, {"name": "metrics", "port": 9090, "targetPort": 9090}]}}));
    let a = pod("a", Some("127.0.0.11"), true, &[("http-alt", 8080)]);
    let b = pod("b", Some("127.0.0.12"), true, &[("http-alt", 8081)]);
    let c = pod("c", Some("127.0.0.13"), true, &[]);
    let out = desired(&s, &[&a, &b, &c]);
    let subsets = out.endpoints.subsets.unwrap();
    let summary: Vec<(Vec<&str>, Vec<i32>)> = subsets
        .iter()
        .map(|s| {
            (
                s.addresses
                    .iter()
                    .flatten()
                    .map(|a| a.ip.as_str())
                    .collect(),
                s.ports.iter().flatten().map(|p| p.port).collect(),
            )
        })
        .collect();
    assert_eq!(summary.len(), 3, "three distinct port sets: {summary:?}");
    assert!(summary.contains(&(vec!["127.0.0.11"], vec![8080, 9090])));
    assert!(summary.contains(&(vec!["127.0.0.12"], vec![8081, 9090])));
    assert!(
        summary.contains(&(vec!["127.0.0.13"], vec![9090])),
        "pod without the named port keeps the numeric one"
    );
    assert_eq!(out.slices.len(), 3);
    let mut names: Vec<_> = out
        .slices
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    names.dedup();
    assert_eq!(names.len(), 3, "slice names unique");
}

#[test]
fn publish_not_ready_and_hostnames_and_placeholder() {
    let mut s = docs_service();
    s.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let mut p = pod("p", Some("127.0.0.11"), false, &[]);
    p.hostname = Some("db-0".into());
    p.subdomain = Some("my-service".into());
    let out = desired(&s, &[&p]);
    let subset = &out.endpoints.subsets.unwrap()[0];
    assert_eq!(
        subset.addresses.as_ref().unwrap()[0].hostname.as_deref(),
        Some("db-0")
    );
    assert!(subset.not_ready_addresses.is_none());
    assert_eq!(
        out.slices[0].endpoints[0]
            .conditions
            .as_ref()
            .unwrap()
            .ready,
        Some(true)
    );

    let empty = desired(&docs_service(), &[]);
    assert!(empty.endpoints.subsets.is_none());
    assert_eq!(empty.slices.len(), 1);
    assert!(empty.slices[0].endpoints.is_empty(), "placeholder slice");
}

#[test]
fn large_services_split_into_slices_of_100() {
    let pods: Vec<PodInfo> = (0..250)
        .map(|i| {
            pod(
                &format!("p{i}"),
                Some(&format!("127.1.{}.{}", i / 200, i % 200 + 1)),
                true,
                &[],
            )
        })
        .collect();
    let refs: Vec<&PodInfo> = pods.iter().collect();
    let out = desired(&docs_service(), &refs);
    assert_eq!(
        out.slices
            .iter()
            .map(|s| s.endpoints.len())
            .collect::<Vec<_>>(),
        [100, 100, 50]
    );
    assert_eq!(out.slices[0].metadata.name.as_deref(), Some("my-service"));
    assert!(
        out.slices[1]
            .metadata
            .name
            .as_deref()
            .unwrap()
            .starts_with("my-service-")
    );
}

#[test]
fn mirroring_selectorless_endpoints() {
    let s = svc(
        json!({"metadata": {"name": "ext", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}}),
    );
    let eps: Endpoints = serde_json::from_value(json!({"metadata": {"name": "ext"}, "subsets": [
        {"addresses": [{"ip": "127.0.0.21"}], "notReadyAddresses": [{"ip": "127.0.0.22"}], "ports": [{"port": 8080}]}]})).unwrap();
    let slices = mirror(&s, &eps);
    assert_eq!(slices.len(), 1);
    assert_eq!(
        slices[0].metadata.labels.as_ref().unwrap()[MANAGED_BY_LABEL],
        MIRROR_NAME
    );
    let got: Vec<_> = slices[0]
        .endpoints
        .iter()
        .map(|e| {
            (
                e.addresses[0].as_str(),
                e.conditions.as_ref().unwrap().ready.unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [("127.0.0.21", true), ("127.0.0.22", false)]);
}

#[test]
fn label_index_candidates() {
    let mut idx = LabelIndex::default();
    let l = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    idx.insert("a", &l(&[("app", "x"), ("tier", "web")]));
    idx.insert("b", &l(&[("app", "x")]));
    assert_eq!(idx.candidates(&l(&[("app", "x"), ("tier", "web")])), ["a"]);
    let mut both = idx.candidates(&l(&[("app", "x")]));
    both.sort();
    assert_eq!(both, ["a", "b"]);
    idx.remove("a", &l(&[("app", "x"), ("tier", "web")]));
    assert!(idx.candidates(&l(&[("tier", "web")])).is_empty());
    assert!(idx.candidates(&l(&[("nope", "x")])).is_empty());
}
