//! Zone and answer logic without sockets: Services as the API stores them, queries as bytes.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::answer::{Outcome, Unshaped, answer};
use super::zone::Zone;
use crate::snapshot::{ServiceView, Snapshot, key};

fn view(svc: serde_json::Value, slices: &[serde_json::Value]) -> Arc<ServiceView> {
    let svc: Service = serde_json::from_value(svc).unwrap();
    let slices: Vec<EndpointSlice> = slices
        .iter()
        .map(|s| serde_json::from_value(s.clone()).unwrap())
        .collect();
    let refs: Vec<&EndpointSlice> = slices.iter().collect();
    Arc::new(ServiceView::build(&svc, &refs))
}

fn zone() -> Zone {
    let web = view(
        json!({"metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
               "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                  {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
        &[],
    );
    let db = view(
        json!({"metadata": {"name": "db", "namespace": "shop"},
               "spec": {"clusterIP": "None", "clusterIPs": ["None"],
                        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}}),
        &[json!({"metadata": {"name": "db-1"}, "addressType": "IPv4",
                 "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
                 "endpoints": [
                    {"addresses": ["10.1.0.1"], "hostname": "db-0", "conditions": {"ready": true}},
                    {"addresses": ["10.1.0.2"], "conditions": {"ready": true}},
                    {"addresses": ["10.1.0.3"], "conditions": {"ready": false}}]})],
    );
    let empty = view(
        json!({"metadata": {"name": "empty", "namespace": "shop"},
               "spec": {"clusterIP": "None", "ports": [{"name": "x", "port": 1}]}}),
        &[],
    );
    let ext = view(
        json!({"metadata": {"name": "ext", "namespace": "shop"},
               "spec": {"type": "ExternalName", "externalName": "db.example.org"}}),
        &[],
    );
    let snap = Snapshot::default().with_changes(
        [web, db, empty, ext]
            .into_iter()
            .map(|v| (key(&v.namespace, &v.name), Some(v))),
    );
    Zone::build(&snap, "cluster.local", 5, 7)
}

fn query(name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn ask(z: &Zone, name: &str, t: RecordType) -> Message {
    let a = answer(
        z,
        &query(name, t, None),
        "10.0.0.9".parse().unwrap(),
        true,
        false,
        &Unshaped,
    );
    let Outcome::Reply(bytes) = a.outcome else {
        panic!("no reply for {name}: {:?}", a.outcome);
    };
    Message::from_vec(&bytes).unwrap()
}

fn data(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

#[test]
fn cluster_ip_service_records() {
    let z = zone();
    let m = ask(&z, "web.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(m.metadata.id, 4242);
    assert_eq!(data(&m), ["10.96.0.10"]);
    assert_eq!(m.answers[0].ttl, 5);
    let srv = ask(
        &z,
        "_http._tcp.web.shop.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(data(&srv), ["0 100 80 web.shop.svc.cluster.local."]);
    let srv = ask(&z, "_dns._udp.web.shop.svc.cluster.local.", RecordType::SRV);
    assert_eq!(data(&srv), ["0 100 53 web.shop.svc.cluster.local."]);
    let ptr = ask(&z, "10.0.96.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(data(&ptr), ["web.shop.svc.cluster.local."]);
    // Case does not matter.
    assert_eq!(
        data(&ask(&z, "WEB.Shop.svc.cluster.local.", RecordType::A)),
        ["10.96.0.10"]
    );
}

#[test]
fn headless_service_records() {
    let z = zone();
    let m = ask(&z, "db.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&m), ["10.1.0.1", "10.1.0.2"], "ready endpoints only");
    assert_eq!(
        data(&ask(&z, "db-0.db.shop.svc.cluster.local.", RecordType::A)),
        ["10.1.0.1"]
    );
    assert_eq!(
        data(&ask(
            &z,
            "10-1-0-2.db.shop.svc.cluster.local.",
            RecordType::A
        )),
        ["10.1.0.2"]
    );
    assert_eq!(
        data(&ask(
            &z,
            "_pg._tcp.db.shop.svc.cluster.local.",
            RecordType::SRV
        )),
        [
            "0 50 5432 10-1-0-2.db.shop.svc.cluster.local.",
            "0 50 5432 db-0.db.shop.svc.cluster.local."
        ]
    );
    assert_eq!(
        data(&ask(&z, "1.0.1.10.in-addr.arpa.", RecordType::PTR)),
        ["db-0.db.shop.svc.cluster.local."]
    );
    let none = ask(&z, "empty.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(
        none.metadata.response_code,
        ResponseCode::NXDomain,
        "no ready endpoint"
    );
}

#[test]
fn negative_answers_carry_the_soa() {
    let z = zone();
    let nx = ask(&z, "nope.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.answers.is_empty());
    assert!(matches!(nx.authorities[0].data, RData::SOA(_)));
    let nodata = ask(&z, "web.shop.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authorities.len(), 1);
    // Empty non-terminals exist.
    for ent in [
        "shop.svc.cluster.local.",
        "svc.cluster.local.",
        "_tcp.web.shop.svc.cluster.local.",
    ] {
        let m = ask(&z, ent, RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{ent}");
        assert!(m.answers.is_empty(), "{ent}");
    }
}

#[test]
fn external_name_version_and_pods() {
    let z = zone();
    let m = ask(&z, "ext.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&m), ["db.example.org."]);
    assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
    let v = ask(&z, "dns-version.cluster.local.", RecordType::TXT);
    assert_eq!(data(&v), ["1.1.0"]);
    assert_eq!(
        data(&ask(&z, "10-2-3-4.any.pod.cluster.local.", RecordType::A)),
        ["10.2.3.4"]
    );
    let bad = ask(&z, "not-an-ip.any.pod.cluster.local.", RecordType::A);
    assert_eq!(bad.metadata.response_code, ResponseCode::NXDomain);
    let soa = ask(&z, "cluster.local.", RecordType::SOA);
    assert!(matches!(soa.answers[0].data, RData::SOA(_)));
}

#[test]
fn outside_names_are_refused_or_forwarded() {
    let z = zone();
    let refused = ask(&z, "example.com.", RecordType::A);
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    let a = answer(
        &z,
        &query("example.com.", RecordType::A, None),
        IpAddr::from([10, 0, 0, 9]),
        true,
        true,
        &Unshaped,
    );
    assert_eq!(a.outcome, Outcome::Forward);
}

#[test]
fn large_answers_truncate_over_udp_unless_edns_allows() {
    // 60 ready endpoints: 60 A records do not fit 512 bytes.
    let eps: Vec<_> = (1..=60)
        .map(|i| json!({"addresses": [format!("10.2.0.{i}")], "conditions": {"ready": true}}))
        .collect();
    let big = view(
        json!({"metadata": {"name": "big", "namespace": "shop"},
               "spec": {"clusterIP": "None", "ports": [{"name": "x", "port": 1}]}}),
        &[json!({"metadata": {"name": "big-1"}, "addressType": "IPv4",
                 "ports": [{"name": "x", "port": 1}], "endpoints": eps})],
    );
    let snap = Snapshot::default().with_changes([(key("shop", "big"), Some(big))]);
    let z = Zone::build(&snap, "cluster.local", 5, 1);
    let client = IpAddr::from([10, 0, 0, 9]);
    let name = "big.shop.svc.cluster.local.";
    for (edns, udp, truncated, n) in [
        (None, true, true, 0),
        (Some(4096), true, false, 60),
        (None, false, false, 60),
    ] {
        let a = answer(
            &z,
            &query(name, RecordType::A, edns),
            client,
            udp,
            false,
            &Unshaped,
        );
        assert_eq!(a.truncated, truncated);
        let Outcome::Reply(bytes) = a.outcome else {
            panic!()
        };
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.metadata.truncation, truncated);
        assert_eq!(m.answers.len(), n);
        assert_eq!(m.edns.is_some(), edns.is_some(), "OPT back only when asked");
    }
}

#[test]
fn malformed_packets_get_formerr_or_nothing() {
    let z = zone();
    let client = IpAddr::from([10, 0, 0, 9]);
    // Too short: dropped.
    assert_eq!(
        answer(&z, &[1, 2, 3], client, true, false, &Unshaped).outcome,
        Outcome::Drop
    );
    // A header claiming a question that is not there: FORMERR with the ID.
    let mut p = query("web.shop.svc.cluster.local.", RecordType::A, None);
    p.truncate(20);
    let a = answer(&z, &p, client, true, false, &Unshaped);
    let Outcome::Reply(bytes) = a.outcome else {
        panic!("{:?}", a.outcome)
    };
    let m = Message::from_vec(&bytes).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(m.metadata.id, 4242);
    // A response sent to us: dropped.
    let mut r = query("web.shop.svc.cluster.local.", RecordType::A, None);
    r[2] |= 0x80;
    assert_eq!(
        answer(&z, &r, client, true, false, &Unshaped).outcome,
        Outcome::Drop
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]
        /// Any bytes: no panic, and every reply parses.
        #[test]
        fn random_packets_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let z = zone();
            let a = answer(&z, &bytes, IpAddr::from([10, 0, 0, 9]), true, false, &Unshaped);
            if let Outcome::Reply(r) = a.outcome {
                prop_assert!(Message::from_vec(&r).is_ok());
            }
        }

        /// A valid query with bytes flipped: no panic.
        #[test]
        fn mutated_queries_never_panic(i in 0usize..60, b in any::<u8>()) {
            let z = zone();
            let mut q = query("_http._tcp.web.shop.svc.cluster.local.", RecordType::SRV, Some(1232));
            let len = q.len();
            q[i % len] = b;
            let _ = answer(&z, &q, IpAddr::from([10, 0, 0, 9]), true, false, &Unshaped);
        }
    }
}

/// The fast path gives what the reference path gives, for every kind of plain query.
#[test]
fn the_fast_path_agrees_with_the_reference() {
    let z = zone();
    let client = IpAddr::from([10, 0, 0, 9]);
    let mut out = Vec::new();
    let cases = [
        ("web.shop.svc.cluster.local.", RecordType::A),
        ("WEB.Shop.svc.cluster.local.", RecordType::A),
        ("web.shop.svc.cluster.local.", RecordType::AAAA),
        ("_http._tcp.web.shop.svc.cluster.local.", RecordType::SRV),
        ("db.shop.svc.cluster.local.", RecordType::A),
        ("db-0.db.shop.svc.cluster.local.", RecordType::A),
        ("_pg._tcp.db.shop.svc.cluster.local.", RecordType::SRV),
        ("10.0.96.10.in-addr.arpa.", RecordType::PTR),
        ("ext.shop.svc.cluster.local.", RecordType::A),
        ("ext.shop.svc.cluster.local.", RecordType::CNAME),
        ("nope.shop.svc.cluster.local.", RecordType::A),
        ("shop.svc.cluster.local.", RecordType::A),
        ("dns-version.cluster.local.", RecordType::TXT),
        ("cluster.local.", RecordType::SOA),
        ("cluster.local.", RecordType::NS),
    ];
    for (name, t) in cases {
        for edns in [None, Some(1232), Some(4096)] {
            for forwarding in [false, true] {
                let q = query(name, t, edns);
                let fast = z.fast_answer(&q, true, forwarding, None, &mut out);
                assert!(fast.is_some(), "{name} {t} took the slow path");
                let reference = answer(&z, &q, client, true, forwarding, &Unshaped);
                let Outcome::Reply(slow) = reference.outcome else {
                    panic!()
                };
                let (f, s) = (
                    Message::from_vec(&out).unwrap(),
                    Message::from_vec(&slow).unwrap(),
                );
                assert_eq!(fast, Some(reference.rcode), "{name} {t}");
                assert_eq!(f.metadata, s.metadata, "{name} {t}");
                assert_eq!(f.queries, s.queries, "{name} {t}");
                assert_eq!(f.answers, s.answers, "{name} {t}");
                assert_eq!(f.authorities, s.authorities, "{name} {t}");
                assert_eq!(
                    f.edns.map(|e| e.max_payload()),
                    s.edns.map(|e| e.max_payload())
                );
            }
        }
    }
    // What the fast path leaves to the reference: pods, outside names, ANY, truncation.
    for (name, t) in [
        ("10-1-2-3.x.pod.cluster.local.", RecordType::A),
        ("example.com.", RecordType::A),
        ("web.shop.svc.cluster.local.", RecordType::ANY),
    ] {
        assert!(
            z.fast_answer(&query(name, t, None), true, false, None, &mut out)
                .is_none(),
            "{name}"
        );
    }
}
