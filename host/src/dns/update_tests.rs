//! The incremental zone: after any sequence of Service changes, [`Zone::update`] gives the
//! zone a fresh [`Zone::build`] of the same snapshot gives (names, records, empty
//! non-terminals, shaping), and the fast path answers from it.

use std::sync::Arc;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{LowerName, Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proptest::prelude::*;
use serde_json::json;

use super::zone::{Lookup, Zone};
use crate::snapshot::{ServiceView, Snapshot, key};

/// Service `i` (of a few names in two namespaces) in one of its shapes: ClusterIP with named
/// ports, headless over a few shared pod addresses, ExternalName, and with a DNS plugin.
fn service(i: u8, shape: u8, eps: u8) -> Arc<ServiceView> {
    let (name, ns) = (format!("s{}", i % 4), format!("n{}", i / 4 % 2));
    let plugin = if shape & 4 != 0 {
        json!({"switchyard.io/dns": "rotate"})
    } else {
        json!({})
    };
    let meta = json!({"name": name, "namespace": ns, "annotations": plugin});
    let ports =
        json!([{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]);
    let spec = match shape % 3 {
        0 => {
            json!({"clusterIP": format!("10.96.0.{i}"), "clusterIPs": [format!("10.96.0.{i}")], "ports": ports})
        }
        1 => json!({"clusterIP": "None", "ports": ports}),
        _ => json!({"type": "ExternalName", "externalName": format!("x{shape}.example.org")}),
    };
    let svc: Service = serde_json::from_value(json!({"metadata": meta, "spec": spec})).unwrap();
    // Pod addresses 10.1.0.0..3 are shared between Services (PTR names with two owners).
    let endpoints: Vec<_> = (0..4u8)
        .filter(|b| eps & (1 << b) != 0)
        .map(|b| json!({"addresses": [format!("10.1.0.{b}")], "hostname": if b == 0 { json!("h0") } else { json!(null) },
                        "conditions": {"ready": eps & (16 << b) == 0}}))
        .collect();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-1")}, "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": endpoints}))
    .unwrap();
    Arc::new(ServiceView::build(&svc, &[&slice]))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn updates_equal_a_fresh_build(
        steps in proptest::collection::vec(
            proptest::collection::vec((0u8..8, 0u8..7, any::<u8>()), 1..4), 1..12)
    ) {
        let mut snap = Snapshot::default();
        let mut zone = Zone::build(&snap, "cluster.local", 5, 1);
        for (serial, batch) in steps.into_iter().enumerate() {
            let serial = serial as u32 + 2;
            // shape 6: delete the Service.
            let next = snap.with_changes(batch.into_iter().map(|(i, shape, eps)| {
                let v = service(i, shape, eps);
                let k = key(&v.namespace, &v.name);
                (k, (shape != 6).then_some(v))
            }));
            zone = zone.update(&snap, &next, serial);
            let fresh = Zone::build(&next, "cluster.local", 5, serial);
            prop_assert_eq!(zone.dump(), fresh.dump());
            prop_assert_eq!(zone.len(), fresh.len());
            snap = next;
        }
    }
}

#[test]
fn a_changed_service_is_answered_on_the_fast_path() {
    let a = service(1, 0, 0);
    let snap = Snapshot::default().with_changes([(key(&a.namespace, &a.name), Some(a))]);
    let zone = Zone::build(&snap, "cluster.local", 5, 1);
    let ask = |z: &Zone, name: &str| {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let mut out = Vec::new();
        z.fast_answer(&m.to_vec().unwrap(), true, false, None, &mut out)
            .expect("fast path");
        Message::from_vec(&out).unwrap()
    };
    let m = ask(&zone, "s1.n0.svc.cluster.local.");
    assert_eq!(m.answers[0].data.to_string(), "10.96.0.1");
    // Moved to headless over 10.1.0.1: the old answer and the old PTR go, the new come.
    let b = service(1, 1, 0b10);
    let next = snap.with_changes([(key(&b.namespace, &b.name), Some(b))]);
    let zone = zone.update(&snap, &next, 2);
    let m = ask(&zone, "s1.n0.svc.cluster.local.");
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].data.to_string(), "10.1.0.1");
    let ptr = |z: &Zone, name: &str| {
        z.lookup(
            &LowerName::new(&Name::from_ascii(name).unwrap()),
            RecordType::PTR,
        )
    };
    assert_eq!(ptr(&zone, "1.0.96.10.in-addr.arpa."), Lookup::NotOurs);
    assert!(matches!(
        ptr(&zone, "1.0.1.10.in-addr.arpa."),
        Lookup::Answer(..)
    ));
    // Deleted: NXDOMAIN, and the namespace's empty non-terminal with it.
    let gone = next.with_changes([(key("n0", "s1"), None)]);
    let zone = zone.update(&next, &gone, 3);
    let m = ask(&zone, "s1.n0.svc.cluster.local.");
    assert_eq!(
        m.metadata.response_code,
        hickory_proto::op::ResponseCode::NXDomain
    );
    let m = ask(&zone, "n0.svc.cluster.local.");
    assert_eq!(
        m.metadata.response_code,
        hickory_proto::op::ResponseCode::NXDomain
    );
    assert_eq!(
        zone.dump(),
        Zone::build(&gone, "cluster.local", 5, 3).dump()
    );
}

#[test]
fn a_headless_service_without_ports_has_address_records() {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "bare", "namespace": "n0"}, "spec": {"clusterIP": "None"}}))
    .unwrap();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "bare-1"}, "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.1.0.7"], "hostname": "b0", "conditions": {"ready": true}},
            {"addresses": ["10.1.0.8"], "conditions": {"ready": true}},
            {"addresses": ["10.1.0.9"], "conditions": {"ready": false}}]}))
    .unwrap();
    let v = Arc::new(ServiceView::build(&svc, &[&slice]));
    assert!(v.ports.is_empty());
    let snap = Snapshot::default().with_changes([(key("n0", "bare"), Some(v))]);
    let zone = Zone::build(&snap, "cluster.local", 5, 1);
    let a = |name: &str| match zone.lookup(
        &LowerName::new(&Name::from_ascii(name).unwrap()),
        RecordType::A,
    ) {
        Lookup::Answer(r, _) => {
            let mut v: Vec<String> = r.iter().map(|r| r.data.to_string()).collect();
            v.sort();
            v
        }
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(a("bare.n0.svc.cluster.local."), ["10.1.0.7", "10.1.0.8"]);
    assert_eq!(a("b0.bare.n0.svc.cluster.local."), ["10.1.0.7"]);
    assert_eq!(a("10-1-0-8.bare.n0.svc.cluster.local."), ["10.1.0.8"]);
}
