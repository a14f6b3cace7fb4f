//! API and controller benchmark (run with `cargo bench -p switchyard-e2e --bench api`, or
//! `bench/api.sh`): starts the release binary on loopback, creates SERVICES Services and PODS
//! Pods (PODS/SERVICES per Service) through the API with the `kube` client, marks the Pods
//! ready, then measures the time from a Pod readiness change (status PATCH sent) to the
//! gateway's watcher snapshot showing it (`/debug/services/{ns}/{name}` polled every 1 ms).
//! Prints creation rates, the process's memory and latency percentiles. Bounded in time.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use serde_json::json;
use switchyard_e2e::{Gateway, http};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Polls `/metrics` (bounded: 300 s) until the snapshot holds `want` endpoint entries.
async fn snapshot_reaches(g: &Gateway, want: usize) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(300) {
        let (_, m) = http("GET", &g.admin, "/metrics", "text/plain", b"").unwrap();
        let n: usize = m
            .lines()
            .find(|l| l.starts_with("switchyard_snapshot_endpoints "))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        if n >= want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

const NAMESPACES: usize = 10;
const CONCURRENCY: usize = 64;

fn pod_ip(i: usize) -> String {
    format!("127.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256)
}

#[tokio::main]
async fn main() {
    let services = env("SERVICES", 10_000);
    let pods = env("PODS", 100_000);
    let probes = env("PROBES", 200);
    let mut g = Gateway::start().expect("gateway starts");
    let client =
        Client::try_from(Config::new(format!("http://{}", g.api).parse().unwrap())).unwrap();
    let pp = PostParams::default();
    for n in 0..NAMESPACES {
        Api::<Namespace>::all(client.clone())
            .create(
                &pp,
                &serde_json::from_value(json!({"metadata": {"name": format!("bench-{n}")}}))
                    .unwrap(),
            )
            .await
            .unwrap();
    }
    let rss_idle = rss_mib(g.pid());

    let t = Instant::now();
    futures::stream::iter(0..services)
        .map(|i| {
            let api: Api<Service> = Api::namespaced(client.clone(), &format!("bench-{}", i % NAMESPACES));
            let svc: Service = serde_json::from_value(json!({
                "metadata": {"name": format!("svc-{i}")},
                "spec": {"selector": {"app": format!("app-{i}")}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "metrics", "port": 9090}]}
            }))
            .unwrap();
            async move { api.create(&PostParams::default(), &svc).await.expect("service created") }
        })
        .buffer_unordered(CONCURRENCY)
        .for_each(|_| async {})
        .await;
    let svc_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    futures::stream::iter(0..pods)
        .map(|i| {
            let s = i % services;
            let api: Api<Pod> = Api::namespaced(client.clone(), &format!("bench-{}", s % NAMESPACES));
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("pod-{i}"), "labels": {"app": format!("app-{s}")}},
                "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "example/app", "ports": [{"name": "http", "containerPort": 8080}]}]}
            }))
            .unwrap();
            async move { api.create(&PostParams::default(), &pod).await.expect("pod created") }
        })
        .buffer_unordered(CONCURRENCY)
        .for_each(|_| async {})
        .await;
    let pod_secs = t.elapsed().as_secs_f64();

    let status = |i: usize, ready: bool| {
        Patch::Merge(
            json!({"status": {"phase": "Running", "podIP": pod_ip(i), "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}),
        )
    };
    let t = Instant::now();
    futures::stream::iter(0..pods)
        .map(|i| {
            let api: Api<Pod> = Api::namespaced(
                client.clone(),
                &format!("bench-{}", (i % services) % NAMESPACES),
            );
            let patch = status(i, true);
            async move {
                api.patch_status(&format!("pod-{i}"), &PatchParams::default(), &patch)
                    .await
                    .expect("status patched")
            }
        })
        .buffer_unordered(CONCURRENCY)
        .for_each(|_| async {})
        .await;
    let ready_secs = t.elapsed().as_secs_f64();

    // Wait (bounded) until the snapshot holds every endpoint, then let the system go quiet.
    let want = pods * 2; // two ports per Service
    let t = Instant::now();
    let settled = snapshot_reaches(&g, want).await;
    let converge_secs = t.elapsed().as_secs_f64();
    assert!(
        settled,
        "snapshot did not reach {want} endpoints within 300 s"
    );
    let rss_loaded = rss_mib(g.pid());

    // Readiness -> snapshot latency, one probe at a time.
    let mut lat = Vec::with_capacity(probes);
    for k in 0..probes {
        let i = (k * 7919) % pods;
        let s = i % services;
        let ns = format!("bench-{}", s % NAMESPACES);
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let ready_now = k % 2 == 1; // flip to not-ready, then back on the next probe of the same pod
        let path = format!("/debug/services/{ns}/svc-{s}");
        let needle = format!(
            r#""addr":"{}","node":"node-1","pod":"pod-{i}","port":8080,"ready":{ready_now}"#,
            pod_ip(i)
        );
        let t0 = Instant::now();
        api.patch_status(
            &format!("pod-{i}"),
            &PatchParams::default(),
            &status(i, ready_now),
        )
        .await
        .unwrap();
        loop {
            let (_, body) = http("GET", &g.admin, &path, "text/plain", b"").unwrap();
            if body.contains(&needle) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "probe {k} not seen within 10 s: {needle}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.total_cmp(b));

    // kill -9 and restart on the same data: recovery time and steady-state memory.
    let t = Instant::now();
    g.kill9_and_restart().expect("restart");
    let ready_after = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let recovered = snapshot_reaches(&g, want).await;
    assert!(
        recovered,
        "snapshot not rebuilt within 300 s of the restart"
    );
    let recover_secs = ready_after + t.elapsed().as_secs_f64();
    let rss_restarted = rss_mib(g.pid());

    println!(
        "switchyard API benchmark ({} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "services={services} pods={pods} namespaces={NAMESPACES} client concurrency={CONCURRENCY}"
    );
    println!(
        "service creates:   {services} in {svc_secs:.2} s = {:.0}/s",
        services as f64 / svc_secs
    );
    println!(
        "pod creates:       {pods} in {pod_secs:.2} s = {:.0}/s",
        pods as f64 / pod_secs
    );
    println!(
        "pod status writes: {pods} in {ready_secs:.2} s = {:.0}/s",
        pods as f64 / ready_secs
    );
    println!("snapshot converged {converge_secs:.2} s after the last status write");
    println!(
        "memory (VmRSS):    {rss_idle:.0} MiB idle, {rss_loaded:.0} MiB after the load, {rss_restarted:.0} MiB after kill -9 + restart"
    );
    println!(
        "restart:           /readyz after {ready_after:.2} s, full snapshot after {recover_secs:.2} s"
    );
    println!(
        "readiness -> snapshot over {} probes: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        lat[lat.len() - 1]
    );
}
