//! Plugin runtime figures (`cargo bench -p switchyard --bench plugins`; env `ROUNDS` to
//! change the sample count). Prints one line per figure:
//! - pick through Wasm with 100 endpoints pushed (median ns per call), against the same
//!   plugins (round-robin, maglev) compiled natively and called through the SDK's traits;
//! - update() with 10 / 1,000 / 10,000 endpoints;
//! - hot swap: load request to the new module serving, precompiled (cache hit) and fresh;
//! - resident memory per instance;
//! - picks left to the fallback during 100 swaps under load on 2 threads (must be 0).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use switchyard::plugin::builtin::BUILTINS;
use switchyard::plugin::loader::Source;
use switchyard::plugin::metrics::PluginMetrics;
use switchyard::plugin::{Limits, Plugins, Request};
use switchyard::snapshot::ServiceView;
use switchyard_sdk::Balancer;
use switchyard_sdk::testing::{Harness, context, endpoints};

fn view(name: &str, endpoints: usize, balancer: Option<&str>) -> Arc<ServiceView> {
    let mut annotations = serde_json::Map::new();
    if let Some(b) = balancer {
        annotations.insert("switchyard.io/balancer".into(), json!(b));
    }
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "bench", "annotations": annotations},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    let eps: Vec<_> = (0..endpoints)
        .map(|i| json!({"addresses": [format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255)], "conditions": {"ready": true}}))
        .collect();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-x"), "namespace": "bench", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"port": 8080, "protocol": "TCP", "name": ""}]
    }))
    .unwrap();
    Arc::new(ServiceView::build(&svc, &[&slice]))
}

fn builtin(name: &str) -> &'static [u8] {
    BUILTINS.iter().find(|(n, _)| *n == name).unwrap().1
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 4
}

fn runtime(cache: Option<std::path::PathBuf>) -> Arc<Plugins> {
    Arc::new(
        Plugins::new(
            None,
            cache,
            Limits::default(),
            Arc::new(PluginMetrics::default()),
        )
        .unwrap(),
    )
}

/// Errors counted for `plugin`'s balancer hook, by kind.
fn errors(p: &Plugins, plugin: &str) -> String {
    use switchyard::plugin::metrics::{ErrorKind, Hook};
    let counts: Vec<String> = ErrorKind::ALL
        .into_iter()
        .filter_map(|kind| {
            let n = p.metrics.errors_of(plugin, Hook::balancer, kind);
            (n > 0).then(|| format!("{kind:?} {n}"))
        })
        .collect();
    if counts.is_empty() {
        "none".into()
    } else {
        counts.join(", ")
    }
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let plugins = runtime(None);
    plugins
        .load("round-robin", builtin("round-robin"), Source::Builtin)
        .unwrap();
    plugins
        .load("maglev", builtin("maglev"), Source::Builtin)
        .unwrap();
    let client = Request::tcp("10.1.2.3:40000".parse().unwrap());

    // pick with 100 endpoints: Wasm round-robin and maglev vs the same crates built natively.
    // The machine drifts between fast and slow phases, so each round measures all four back
    // to back and the ratio is taken per round.
    const BATCH: usize = 1000;
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..BATCH {
            f();
        }
        t.elapsed().as_nanos() as f64 / BATCH as f64
    };
    let per_call = |svc: &Arc<ServiceView>| {
        plugins.pick(svc, 0, &client); // instantiate + push endpoints
        median(
            (0..rounds)
                .map(|_| {
                    time(&mut || {
                        std::hint::black_box(plugins.pick(svc, 0, &client));
                    })
                })
                .collect(),
        )
    };
    let (rr, mg) = (
        view("rr", 100, Some("round-robin")),
        view("mg", 100, Some("maglev")),
    );
    for v in [&rr, &mg] {
        assert!(plugins.pick(v, 0, &client).is_some(), "the plugin picks");
    }
    let mut native_rr = Harness::new(round_robin::RoundRobin::default());
    native_rr.update(endpoints(100));
    let mut native_mg = Harness::new(maglev::MaglevBalancer::default());
    native_mg.configure("").unwrap();
    native_mg.update(endpoints(100));
    let ctx = context("10.1.2.3");
    let mut rows: Vec<[f64; 4]> = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        rows.push([
            time(&mut || {
                std::hint::black_box(plugins.pick(&rr, 0, &client));
            }),
            time(&mut || {
                std::hint::black_box(plugins.pick(&mg, 0, &client));
            }),
            time(&mut || {
                std::hint::black_box(native_rr.plugin.pick(std::hint::black_box(&ctx)));
            }),
            time(&mut || {
                std::hint::black_box(native_mg.plugin.pick(std::hint::black_box(&ctx)));
            }),
        ]);
    }
    let col = |i: usize| median(rows.iter().map(|r| r[i]).collect());
    let fastest = |i: usize| rows.iter().map(|r| r[i]).fold(f64::MAX, f64::min);
    let ratio = |w: usize, n: usize| median(rows.iter().map(|r| r[w] / r[n]).collect());
    println!(
        "pick, 100 endpoints pushed (median per call): wasm round-robin {:.0} ns, wasm maglev {:.0} ns; best round {:.0} / {:.0} ns",
        col(0),
        col(1),
        fastest(0),
        fastest(1)
    );
    println!(
        "pick, the same crates native: round-robin {:.1} ns, maglev {:.1} ns; wasm/native per round {:.0}x / {:.0}x",
        col(2),
        col(3),
        ratio(0, 2),
        ratio(1, 3)
    );

    if std::env::var("ONLY").as_deref() == Ok("pick") {
        return;
    }

    // update() for 10 / 1,000 / 10,000 endpoints: a fresh view each time forces a push.
    for n in [10usize, 1_000, 10_000] {
        let views: Vec<Arc<ServiceView>> = (0..20)
            .map(|_| view("upd", n, Some("round-robin")))
            .collect();
        plugins.pick(&views[0], 0, &client);
        let pick_only = per_call(&views[0]);
        let samples: Vec<f64> = views[1..]
            .iter()
            .map(|v| {
                let t = Instant::now();
                plugins.pick(v, 0, &client);
                t.elapsed().as_nanos() as f64
            })
            .collect();
        let upd = median(samples) - pick_only;
        println!(
            "update, {n} endpoints: {:.1} us ({:.0} ns per endpoint)",
            upd / 1000.0,
            upd / n as f64
        );
    }

    // Hot swap: load request to the first pick served by the new module.
    let dir = tempfile::tempdir().unwrap();
    let cached = runtime(Some(dir.path().to_path_buf()));
    let rr = builtin("round-robin");
    cached.load("swap", rr, Source::Admin).unwrap(); // fills the cache
    let svc = view("swap", 100, Some("swap"));
    let swap_time = |p: &Plugins, bytes: &[u8]| {
        let t = Instant::now();
        p.load("swap", bytes, Source::Admin).unwrap();
        assert!(p.pick(&svc, 0, &client).is_some(), "the new module picks");
        t.elapsed().as_secs_f64() * 1000.0
    };
    let pre = median((0..20).map(|_| swap_time(&cached, rr)).collect());
    let fresh_rt = runtime(None);
    let fresh = median((0..5).map(|_| swap_time(&fresh_rt, rr)).collect());
    println!(
        "hot swap to serving, {} KB module: precompiled {pre:.2} ms, fresh compile {fresh:.1} ms",
        rr.len() / 1000
    );

    // Memory per instance: 1,000 Services with their own instance on this thread.
    let views: Vec<Arc<ServiceView>> = (0..1000)
        .map(|i| view(&format!("m{i}"), 10, Some("round-robin")))
        .collect();
    let before = rss_kib();
    for v in &views {
        plugins.pick(v, 0, &client);
    }
    let per = (rss_kib() - before) as f64 / views.len() as f64;
    println!(
        "memory: {per:.0} KiB resident per instance (1,000 instances, 10 endpoints each, guest heap included)"
    );

    // 100 swaps under load on 2 threads: every pick should come from a plugin (a `None`
    // would be served by the data plane's native round-robin, so no pick fails outright;
    // requests failed under swaps are counted end to end in tests/tests/churn.rs).
    let load = runtime(Some(dir.path().to_path_buf()));
    load.load("hot", rr, Source::Admin).unwrap();
    let rg = builtin("random");
    load.load("hot", rg, Source::Admin).unwrap();
    let svc = view("hot", 100, Some("hot"));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, fallback) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (load, svc, stop) = (load.clone(), svc.clone(), stop.clone());
            let (ok, fallback) = (ok.clone(), fallback.clone());
            std::thread::spawn(move || {
                let client = Request::tcp("10.1.2.3:40000".parse().unwrap());
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    // None: the plugin was not there or failed; the data plane would fall
                    // back to its native round-robin.
                    let counter = match load.pick(&svc, 0, &client) {
                        Some(_) => &ok,
                        None => &fallback,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let t = Instant::now();
    for i in 0..100 {
        load.load("hot", if i % 2 == 0 { rr } else { rg }, Source::Admin)
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let swaps_ms = t.elapsed().as_millis();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    println!(
        "100 swaps in {swaps_ms} ms under load on 2 threads: {} picks by the plugin, {} by the fallback (plugin errors: {})",
        ok.load(Ordering::Relaxed),
        fallback.load(Ordering::Relaxed),
        errors(&load, "hot"),
    );
}
