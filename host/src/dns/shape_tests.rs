//! Shaping on the fast path gives what the reference path gives with the same shaper: for a
//! Service naming a plugin, and for every answer when a default chain is set. The shaper
//! here is native (keep the last two answers in reverse order, TTL 1) and written once for
//! each representation; the plugin bridge itself is tested end to end with real plugins.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{LowerName, Name, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::answer::{Outcome, Shaper, answer};
use super::fast::Shaping;
use super::zone::Zone;
use crate::plugin::Answer;
use crate::snapshot::{ServiceView, Snapshot, key};

struct LastTwoReversed {
    all: bool,
}

impl Shaper for LastTwoReversed {
    fn shapes_all(&self) -> bool {
        self.all
    }

    fn shape(
        &self,
        _: Option<&Arc<ServiceView>>,
        _: &LowerName,
        _: RecordType,
        _: IpAddr,
        mut a: Vec<Record>,
    ) -> Vec<Record> {
        a.reverse();
        a.truncate(2);
        a.iter_mut().for_each(|r| r.ttl = 1);
        a
    }
}

fn shape_answers(mut a: Vec<Answer>) -> Vec<Answer> {
    a.reverse();
    a.truncate(2);
    a.iter_mut().for_each(|r| r.ttl = 1);
    a
}

fn zone(plugin_on_db: bool) -> Zone {
    let web: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "ports": [{"name": "http", "port": 80}]}}))
    .unwrap();
    let annotations = if plugin_on_db {
        json!({"switchyard.io/dns": "some-plugin"})
    } else {
        json!({})
    };
    let db: Service = serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": "shop", "annotations": annotations},
        "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}))
    .unwrap();
    let eps: Vec<_> = (1..=3)
        .map(|i| json!({"addresses": [format!("10.1.0.{i}")], "conditions": {"ready": true}}))
        .collect();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "db-1"}, "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432}], "endpoints": eps}))
    .unwrap();
    let ext: Service = serde_json::from_value(json!({
        "metadata": {"name": "ext", "namespace": "shop"},
        "spec": {"type": "ExternalName", "externalName": "db.example.org"}}))
    .unwrap();
    let views = [
        ServiceView::build(&web, &[]),
        ServiceView::build(&db, &[&slice]),
        ServiceView::build(&ext, &[]),
    ];
    let snap = Snapshot::default().with_changes(views.into_iter().map(|v| {
        let v = Arc::new(v);
        (key(&v.namespace, &v.name), Some(v))
    }));
    Zone::build(&snap, "cluster.local", 5, 1)
}

#[test]
fn shaping_on_the_fast_path_agrees_with_the_reference() {
    let client = IpAddr::from([10, 0, 0, 9]);
    let run = |_: Option<&Arc<ServiceView>>, _: &str, _: u16, a| shape_answers(a);
    let cases = [
        ("db.shop.svc.cluster.local.", RecordType::A),
        ("DB.shop.svc.cluster.local.", RecordType::A),
        ("_pg._tcp.db.shop.svc.cluster.local.", RecordType::SRV),
        ("web.shop.svc.cluster.local.", RecordType::A),
        ("ext.shop.svc.cluster.local.", RecordType::A),
        ("web.shop.svc.cluster.local.", RecordType::AAAA),
        ("nope.shop.svc.cluster.local.", RecordType::A),
    ];
    // (plugin on db, default chain): which names get shaped.
    for (plugin_on_db, all) in [(true, false), (false, true), (false, false)] {
        let z = zone(plugin_on_db);
        let shaper = LastTwoReversed { all };
        let shaping = Shaping { all, run: &run };
        for (name, t) in cases {
            let mut m = Message::query();
            m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
            let q = m.to_vec().unwrap();
            let mut out = Vec::new();
            let fast = z.fast_answer(&q, true, false, Some(&shaping), &mut out);
            assert!(fast.is_some(), "{name} {t}: fast path");
            let Outcome::Reply(slow) = answer(&z, &q, client, true, false, &shaper).outcome else {
                panic!()
            };
            let (f, s) = (
                Message::from_vec(&out).unwrap(),
                Message::from_vec(&slow).unwrap(),
            );
            let case = format!("{name} {t} plugin_on_db={plugin_on_db} all={all}");
            assert_eq!(f.answers, s.answers, "{case}");
            assert_eq!(f.metadata, s.metadata, "{case}");
            assert_eq!(f.authorities, s.authorities, "{case}");
            if !f.answers.is_empty() {
                let shaped = all || (plugin_on_db && name.to_lowercase().contains("db."));
                assert_eq!(f.answers.iter().all(|r| r.ttl == 1), shaped, "{case}");
            }
        }
        // Without a shaper, names to shape take the slow path.
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("db.shop.svc.cluster.local.").unwrap(),
            RecordType::A,
        ));
        let fast = z.fast_answer(&m.to_vec().unwrap(), true, false, None, &mut Vec::new());
        assert_eq!(fast.is_none(), plugin_on_db);
    }
}
