//! The runtime against the real built-in components, without sockets: policy and DNS calls,
//! feedback, state hand-off on a swap, and the checks on answers. (Balancer picks, bad
//! modules and misbehaving plugins are covered end to end in `tests/tests/plugins.rs`.)

use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::builtin::BUILTINS;
use super::loader::Source;
use super::metrics::PluginMetrics;
use super::{Action, Answer, Limits, Plugins, Question, Request, RequestHead, Verdict};
use crate::plugin::bindings::types::Outcome;
use crate::snapshot::ServiceView;

fn plugins() -> &'static Plugins {
    static P: OnceLock<Plugins> = OnceLock::new();
    P.get_or_init(|| {
        let p = Plugins::new(
            None,
            None,
            Limits::default(),
            Arc::new(PluginMetrics::default()),
        )
        .unwrap();
        assert_eq!(p.load_builtins(), BUILTINS.len());
        p
    })
}

fn builtin(name: &str) -> &'static [u8] {
    BUILTINS.iter().find(|(n, _)| *n == name).unwrap().1
}

fn view(name: &str, annotations: serde_json::Value, endpoints: usize) -> Arc<ServiceView> {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "t", "annotations": annotations},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}
    }))
    .unwrap();
    let eps: Vec<_> = (0..endpoints)
        .map(|i| json!({"addresses": [format!("10.0.0.{}", i + 1)], "conditions": {"ready": true}}))
        .collect();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-x"), "namespace": "t", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"port": 8080, "protocol": "TCP", "name": ""}]
    }))
    .unwrap();
    Arc::new(ServiceView::build(&svc, &[&slice]))
}

fn from(ip: &str) -> Request<'static> {
    Request::tcp(format!("{ip}:40000").parse().unwrap())
}

#[test]
fn rate_limit_state_survives_a_swap() {
    let p = plugins();
    p.load("rl", builtin("rate-limit"), Source::Admin).unwrap();
    let svc = view(
        "rl",
        json!({"switchyard.io/policy": "rl", "switchyard.io/policy-config": r#"{"rate": 0.001, "burst": 2}"#}),
        1,
    );
    let a = from("10.1.0.1");
    assert_eq!(p.on_connect(&svc, &a, 80), Verdict::Allow);
    assert_eq!(p.on_connect(&svc, &a, 80), Verdict::Allow);
    assert_eq!(p.on_connect(&svc, &a, 80), Verdict::Deny);
    // HTTP requests over the limit get 429.
    let head = RequestHead {
        method: "GET".into(),
        path: "/".into(),
        authority: "x".into(),
        headers: vec![],
    };
    assert!(matches!(p.on_request(&svc, &a, 80, &head), Action::Respond(r) if r.status == 429));
    // A new version (same bytes, new load) takes over the limited client through snapshot/restore.
    p.load("rl", builtin("rate-limit"), Source::Admin).unwrap();
    assert_eq!(
        p.on_connect(&svc, &a, 80),
        Verdict::Deny,
        "still limited after the swap"
    );
    assert_eq!(p.on_connect(&svc, &from("10.1.0.2"), 80), Verdict::Allow);
}

#[test]
fn source_ranges_and_header_match() {
    let p = plugins();
    let svc = view(
        "sr",
        json!({"switchyard.io/policy": "source-ranges", "switchyard.io/policy-config": r#"{"allow": ["127.0.0.0/8"]}"#}),
        1,
    );
    assert_eq!(p.on_connect(&svc, &from("127.0.0.5"), 80), Verdict::Allow);
    assert_eq!(p.on_connect(&svc, &from("192.0.2.1"), 80), Verdict::Deny);

    let rules = r#"{"rules": [{"header": "x-env", "value": "canary", "action": "reroute", "to": "t/canary:80"}]}"#;
    let svc = view(
        "hm",
        json!({"switchyard.io/policy": "header-match", "switchyard.io/policy-config": rules}),
        1,
    );
    let head = |v: &str| RequestHead {
        method: "GET".into(),
        path: "/".into(),
        authority: "hm".into(),
        headers: vec![crate::plugin::bindings::types::Header {
            name: "x-env".into(),
            value: v.into(),
        }],
    };
    let a = from("10.0.0.9");
    assert!(
        matches!(p.on_request(&svc, &a, 80, &head("canary")), Action::Reroute(to) if to == "t/canary:80")
    );
    assert!(
        matches!(p.on_request(&svc, &a, 80, &head("prod")), Action::Continue(e) if e.is_empty())
    );
    // No policy annotation: allow, continue.
    let plain = view("plain", json!({}), 1);
    assert_eq!(p.on_connect(&plain, &a, 80), Verdict::Allow);
}

fn a_records(n: u8) -> Vec<Answer> {
    (1..=n)
        .map(|i| Answer {
            name: "s.t.svc.cluster.local.".into(),
            rtype: 1,
            ttl: 5,
            rdata: vec![10, 0, 0, i],
        })
        .collect()
}

#[test]
fn dns_shapers_reorder_trim_and_cannot_invent() {
    let p = plugins();
    let q = Question {
        name: "s.t.svc.cluster.local.".into(),
        qtype: 1,
    };
    let client: std::net::IpAddr = "10.0.0.3".parse().unwrap();

    let svc = view(
        "lim",
        json!({"switchyard.io/dns": "limit", "switchyard.io/dns-config": r#"{"max": 2}"#}),
        0,
    );
    assert_eq!(p.shape_dns(&svc, &q, client, a_records(5)).len(), 2);

    let svc = view("rot", json!({"switchyard.io/dns": "rotate"}), 0);
    let firsts: std::collections::BTreeSet<u8> = (0..3)
        .map(|_| p.shape_dns(&svc, &q, client, a_records(3))[0].rdata[3])
        .collect();
    assert_eq!(firsts.len(), 3, "each address comes first in turn");

    let svc = view("top", json!({"switchyard.io/dns": "dns-topology"}), 0);
    let mut far = a_records(1);
    far[0].rdata = vec![192, 168, 1, 1];
    far.extend(a_records(3));
    assert_eq!(
        p.shape_dns(&svc, &q, client, far)[0].rdata,
        [10, 0, 0, 3],
        "exact match first"
    );

    // A shaper naming a plugin without a dns hook: answers unshaped.
    let svc = view("wrong", json!({"switchyard.io/dns": "maglev"}), 0);
    let rdata = |v: Vec<Answer>| v.into_iter().map(|a| a.rdata).collect::<Vec<_>>();
    assert_eq!(
        rdata(p.shape_dns(&svc, &q, client, a_records(3))),
        rdata(a_records(3))
    );
}

#[test]
fn feedback_reaches_least_conn() {
    let p = plugins();
    let svc = view("lc", json!({"switchyard.io/balancer": "least-conn"}), 3);
    let a = from("10.0.0.1");
    let first: Vec<usize> = (0..3).map(|_| p.pick(&svc, 0, &a).unwrap()).collect();
    let mut sorted = first.clone();
    sorted.sort();
    assert_eq!(sorted, [0, 1, 2], "one connection each");
    // Endpoint 1's connection ends: it is now the least loaded, twice in a row.
    p.feedback(
        &svc,
        0,
        false,
        1,
        Outcome {
            connect_micros: 100,
            response_micros: 1000,
            success: true,
        },
    );
    assert_eq!(p.pick(&svc, 0, &a), Some(1));
}

#[test]
fn wall_clock_backstops_are_whole_ticks_past_twenty_times_the_budget() {
    // 100 ms ticks: 20 x 500 us is 10 ms, one tick, plus the one that may come at once.
    let l = Limits::new(std::time::Duration::from_micros(500), 1 << 20);
    assert_eq!((l.call_fuel, l.call_ticks, l.setup_ticks), (500_000, 2, 51));
    // 20 x 10 ms is 200 ms: two ticks, plus one.
    let l = Limits::new(std::time::Duration::from_millis(10), 1 << 20);
    assert_eq!(l.call_ticks, 3);
    // 20 x 5.001 ms is a little over one tick: rounded up.
    let l = Limits::new(std::time::Duration::from_micros(5_001), 1 << 20);
    assert_eq!(l.call_ticks, 3);
}
