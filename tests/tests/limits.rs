//! The open-file limit: every listener takes one socket per worker, so thousands of Service
//! ports can exhaust it. Listeners past the data plane's socket budget are refused and
//! reported like a failed bind (log, metric, `/debug/listeners`), the API and admin
//! endpoints keep answering, and sockets a deleted Service frees are used again at once.
//!
//! The pids limit (a pod's `pids.max`): a worker whose relay thread cannot start keeps its
//! lasting L4 connections in its relay task, and the thread starts once the limit allows.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use switchyard_e2e::traffic::{
    backends, jsonpath, keep_alive_gets, listeners, local_endpoints, metric, service, wait_listener,
};
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

/// A cgroup (v1 `pids` controller) holding one process, removed on drop.
struct PidsCgroup {
    dir: PathBuf,
    pid: u32,
}

const PIDS_ROOT: &str = "/sys/fs/cgroup/pids";

impl PidsCgroup {
    /// Puts `pid` (every thread of it) in a new cgroup; `None` where none can be made (no v1
    /// `pids` hierarchy, or not root).
    fn hold(pid: u32) -> Option<PidsCgroup> {
        let dir = Path::new(PIDS_ROOT).join(format!("switchyard-e2e-{pid}"));
        std::fs::create_dir(&dir).ok()?;
        let cg = PidsCgroup { dir, pid };
        std::fs::write(cg.dir.join("cgroup.procs"), pid.to_string()).ok()?;
        Some(cg)
    }

    /// No new thread or process in the cgroup: `pids.max` at what it holds now.
    fn freeze(&self) {
        let now = std::fs::read_to_string(self.dir.join("pids.current")).unwrap();
        std::fs::write(self.dir.join("pids.max"), now.trim()).unwrap();
    }

    /// No limit.
    fn thaw(&self) {
        std::fs::write(self.dir.join("pids.max"), "max").unwrap();
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("pids.max"), "max");
        let _ = std::fs::write(
            Path::new(PIDS_ROOT).join("cgroup.procs"),
            self.pid.to_string(),
        );
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The gateway's relay threads, by name.
fn relay_threads(pid: u32) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("sy-relay"))
        .count()
}

#[test]
fn a_lasting_connection_outlives_a_pids_limit_that_stops_the_relay_thread() {
    let g = Gateway::start_with(&["--workers", "1"]).unwrap();
    let Some(cg) = PidsCgroup::hold(g.pid()) else {
        eprintln!("skipped: no v1 pids cgroup can be made here ({PIDS_ROOT}, needs root)");
        return;
    };
    let _b = backends(&g, &[31], 9376);
    let eps = local_endpoints(&g, &[31]);
    service(
        &g,
        "pl",
        "ports: [{port: 80, targetPort: 9376}]",
        &eps,
        9376,
    );
    let addr = format!("{}:80", jsonpath(&g, &["svc", "pl"], "{.spec.clusterIP}"));
    wait_listener(&g, &addr, 1);
    assert_eq!(relay_threads(g.pid()), 0, "no connection has lasted yet");

    // Ten exchanges on one connection, each answered: six of them after the four at which it
    // would have moved.
    cg.freeze();
    let (_held, name) = keep_alive_gets(&addr, 10);
    assert_eq!(name, "b31");
    assert_eq!(relay_threads(g.pid()), 0, "no thread could start");
    assert!(
        g.log().contains("could not start a relay thread"),
        "the refusal is logged:\n{}",
        g.log()
    );
    // Once the limit is lifted (and the second between attempts has passed), the next
    // lasting connection moves and the thread is there.
    cg.thaw();
    std::thread::sleep(Duration::from_millis(1100));
    let (_lasting, _) = keep_alive_gets(&addr, 10);
    wait_for(Duration::from_secs(5), "a relay thread", || {
        (relay_threads(g.pid()) == 1).then_some(())
    })
    .unwrap();
}
