//! The open-file limit: every listener takes one socket per worker, so thousands of Service
//! ports can exhaust it. Listeners past the data plane's socket budget are refused and
//! reported like a failed bind (log, metric, `/debug/listeners`), the API and admin
//! endpoints keep answering, and sockets a deleted Service frees are used again at once.

use std::time::Duration;

use serde_json::Value;
use switchyard_e2e::traffic::{listeners, metric};
use switchyard_e2e::{Gateway, http, stderr, wait_for};

/// A ClusterIP Service with `ports` named TCP ports (10000, 10001, ...).
fn many_ports(g: &Gateway, name: &str, ports: u16) {
    let list: String = (0..ports)
        .map(|i| format!("  - {{name: p{i}, port: {}, targetPort: 80}}\n", 10000 + i))
        .collect();
    let manifest = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  ports:\n{list}"
    );
    let out = g.apply("apply", &manifest);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// How many listeners are bound (all of them, the `kubernetes` Service's one included), and
/// the refused ones.
fn states(g: &Gateway) -> (usize, Vec<Value>) {
    let all = listeners(g);
    let bound = all.iter().filter(|l| l["state"] == "bound").count();
    let failed = all.into_iter().filter(|l| l["state"] == "failed").collect();
    (bound, failed)
}

fn wide(g: &Gateway) -> usize {
    listeners(g)
        .iter()
        .filter(|l| {
            l["service"]
                .as_str()
                .is_some_and(|s| s.starts_with("default/wide-"))
        })
        .count()
}

#[test]
fn listeners_past_the_open_file_budget_are_refused_and_the_api_keeps_answering() {
    // 300 descriptors leave 225 for listener sockets (a quarter is kept for connections and
    // the API): 112 listeners at 2 workers. Three Services of 50 ports ask for 150.
    let g = Gateway::start_limited(Some(300), &["--workers", "2"]).unwrap();
    for s in ["wide-0", "wide-1", "wide-2"] {
        many_ports(&g, s, 50);
    }
    let (bound, list) = wait_for(
        Duration::from_secs(20),
        "150 listeners, some refused",
        || {
            let (bound, list) = states(&g);
            (wide(&g) == 150 && !list.is_empty()).then_some((bound, list))
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", states(&g), g.log()));
    assert_eq!(
        bound, 112,
        "listeners bound within the budget of 225 sockets"
    );
    let error = list[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("ulimit -n"), "{error}");
    assert!(metric(&g, "switchyard_proxy_listener_bind_errors_total") >= list.len() as f64);
    assert!(
        g.log().contains("raise `ulimit -n`"),
        "the refusal is logged"
    );

    // The API and admin endpoints still accept.
    let (code, _) = http("GET", &g.admin, "/readyz", "text/plain", b"").unwrap();
    assert_eq!(code, 200);
    assert!(g.ok(&["get", "services"]).contains("wide-2"));

    // A deleted Service frees 100 sockets: the refused listeners bind without waiting for
    // their backoff.
    g.ok(&["delete", "service", "wide-0"]);
    wait_for(Duration::from_secs(5), "every listener bound", || {
        let (bound, failed) = states(&g);
        (wide(&g) == 100 && failed.is_empty() && bound >= 100).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", states(&g), g.log()));
}
