//! Cluster DNS figures without sockets (`cargo bench -p switchyard --bench dns`; env
//! `SERVICES` for the zone size, default 10,000). Prints one line per figure:
//! - building the zone from a snapshot (at start), and moving it along one changed Service
//!   (what every Service change costs);
//! - answering one A query on the precomputed fast path and on the hickory reference path
//!   (median ns per query).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use serde_json::json;
use switchyard::dns::answer::{Unshaped, answer};
use switchyard::dns::zone::Zone;
use switchyard::snapshot::{ServiceView, Snapshot, key};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("SERVICES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let view = |i: usize, port: u16| {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": format!("svc-{i}"), "namespace": format!("ns-{}", i % 8)},
            "spec": {"clusterIP": format!("10.96.{}.{}", i >> 8, i & 255),
                     "ports": [{"name": "http", "port": port}, {"name": "grpc", "port": 9090}]}
        }))
        .unwrap();
        let v = Arc::new(ServiceView::build(&svc, &[]));
        (key(&v.namespace, &v.name), Some(v))
    };
    let snap = Snapshot::default().with_changes((0..n).map(|i| view(i, 80)));
    let builds: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let z = Zone::build(&snap, "cluster.local", 5, 1);
            assert!(!z.is_empty());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    println!("zone build, {n} Services: median {:.1} ms", median(builds));

    let z = Zone::build(&snap, "cluster.local", 5, 1);
    let updates: Vec<f64> = (0..200)
        .map(|i| {
            let next = snap.with_changes([view(i * 37 % n, 81)]);
            let t = Instant::now();
            let moved = z.update(&snap, &next, 2);
            let took = t.elapsed().as_secs_f64() * 1e6;
            assert_eq!(moved.len(), z.len());
            took
        })
        .collect();
    println!(
        "zone update, one Service changed of {n}: median {:.0} µs",
        median(updates)
    );
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii("svc-77.ns-5.svc.cluster.local.").unwrap(),
        RecordType::A,
    ));
    let q = q.to_vec().unwrap();
    let client = IpAddr::from([10, 0, 0, 1]);
    let mut out = Vec::new();
    let rounds = 200_000;
    let mut fast = Vec::new();
    let mut slow = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..rounds {
            assert!(z.fast_answer(&q, true, false, None, &mut out).is_some());
        }
        fast.push(t.elapsed().as_nanos() as f64 / rounds as f64);
        let t = Instant::now();
        for _ in 0..rounds / 10 {
            let _ = answer(&z, &q, client, true, false, &Unshaped);
        }
        slow.push(t.elapsed().as_nanos() as f64 / (rounds / 10) as f64);
    }
    println!(
        "answer A, fast path: median {:.0} ns per query",
        median(fast)
    );
    println!(
        "answer A, reference path: median {:.0} ns per query",
        median(slow)
    );
}
