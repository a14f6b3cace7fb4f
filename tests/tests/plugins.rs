//! The plugin platform's user story against the real binary: built-ins are there, a custom
//! plugin is loaded with `switchyard plugin load`, a Service points at it by annotation,
//! swapping modules changes picks at run time, bad modules are refused with the old one still
//! serving, misbehaving plugins fall back, and `--plugin` files reload on save.
//! Picks are observed through `/debug/pick`, which takes the data plane's code path.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use switchyard_e2e::{Gateway, http, stderr, stdout, switchyard, wait_for, wasm};

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  ports:
  - port: 80
    targetPort: 9376
---
apiVersion: v1
kind: Endpoints
metadata:
  name: web
subsets:
- addresses:
  - ip: 127.0.0.11
  - ip: 127.0.0.12
  - ip: 127.0.0.13
  ports:
  - port: 9376
"#;

struct Picks {
    endpoints: Vec<String>,
    by_plugin: bool,
}

fn picks(g: &Gateway, client: &str, n: usize) -> Picks {
    let (code, body) = g
        .admin_get(&format!("/debug/pick/default/web?client={client}&n={n}"))
        .expect("admin answers");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let list = v["picks"].as_array().unwrap();
    Picks {
        endpoints: list
            .iter()
            .map(|p| p["endpoint"].as_str().unwrap_or("none").to_string())
            .collect(),
        by_plugin: list.iter().all(|p| p["by_plugin"] == true),
    }
}

fn distinct(p: &Picks) -> usize {
    p.endpoints.iter().collect::<BTreeSet<_>>().len()
}

fn web_with_endpoints(g: &Gateway) {
    let out = g.apply("apply", WEB);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(
        Duration::from_secs(10),
        "3 endpoints in the snapshot",
        || {
            let p = picks(g, "127.0.0.1:5000", 3);
            (distinct(&p) == 3).then_some(())
        },
    )
    .unwrap();
}

fn annotate(g: &Gateway, kv: &[&str]) {
    let mut args = vec!["annotate", "--overwrite", "service", "web"];
    args.extend(kv);
    g.ok(&args);
}

fn admin(g: &Gateway) -> [&str; 2] {
    ["--admin", g.admin.as_str()]
}

fn plugin_cmd(g: &Gateway, args: &[&str]) -> std::process::Output {
    let mut a = vec!["plugin"];
    a.extend(args);
    a.extend(admin(g));
    switchyard(&a)
}

fn sha(g: &Gateway, name: &str) -> String {
    let (code, body) = g.admin_get(&format!("/plugins/{name}")).unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["sha256"]
        .as_str()
        .unwrap()
        .to_string()
}

fn metric(g: &Gateway, needle: &str) -> f64 {
    let (_, text) = g.admin_get("/metrics").unwrap();
    text.lines()
        .filter(|l| l.contains(needle) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn builtins_custom_plugin_annotations_and_swaps() {
    let g = Gateway::start().unwrap();

    // Every built-in is loaded, with its hooks.
    let out = plugin_cmd(&g, &["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    for (name, hook) in [
        ("round-robin", "balancer"),
        ("random", "balancer"),
        ("least-conn", "balancer"),
        ("maglev", "balancer"),
        ("p2c-ewma", "balancer"),
        ("topology", "balancer"),
        ("rate-limit", "policy"),
        ("source-ranges", "policy"),
        ("header-match", "policy"),
        ("rotate", "dns"),
        ("dns-topology", "dns"),
        ("limit", "dns"),
    ] {
        assert!(
            table.lines().any(|l| l.starts_with(&format!("{name} "))
                && l.contains(hook)
                && l.contains("builtin")),
            "{name} ({hook}) missing from:\n{table}"
        );
    }

    // No annotation: the native round-robin.
    web_with_endpoints(&g);
    let p = picks(&g, "127.0.0.1:5000", 6);
    assert!(!p.by_plugin);
    assert_eq!(distinct(&p), 3);

    // maglev by annotation: the same client always gets the same endpoint.
    annotate(&g, &["switchyard.io/balancer=maglev"]);
    let p = wait_for(Duration::from_secs(10), "maglev picks", || {
        let p = picks(&g, "127.0.0.1:5000", 20);
        p.by_plugin.then_some(p)
    })
    .unwrap();
    assert_eq!(distinct(&p), 1, "{:?}", p.endpoints);
    let clients: BTreeSet<String> = (0..60)
        .map(|i| picks(&g, &format!("127.0.{i}.9:5000"), 1).endpoints[0].clone())
        .collect();
    assert_eq!(
        clients.len(),
        3,
        "different clients spread over all endpoints"
    );

    // Every built-in balancer serves picks itself (std HashMaps, clocks and random work).
    for (name, config) in [
        ("round-robin", ""),
        ("random", ""),
        ("least-conn", ""),
        ("p2c-ewma", r#"{"half_life_ms": 1000}"#),
        ("topology", r#"{"zone": "a"}"#),
    ] {
        annotate(
            &g,
            &[
                &format!("switchyard.io/balancer={name}"),
                &format!("switchyard.io/balancer-config={config}"),
            ],
        );
        let p = wait_for(Duration::from_secs(10), name, || {
            let p = picks(&g, "127.0.0.1:5000", 30);
            p.by_plugin.then_some(p)
        })
        .unwrap();
        assert!(
            p.endpoints.iter().all(|e| e.starts_with("127.0.0.1")),
            "{name}: {:?}",
            p.endpoints
        );
        assert!(distinct(&p) >= 2, "{name} spreads: {:?}", p.endpoints);
    }
    g.ok(&[
        "annotate",
        "service",
        "web",
        "switchyard.io/balancer-config-",
    ]);

    // A custom plugin, loaded through the CLI, and a Service pointed at it.
    let mine = wasm("my_balancer");
    let out = plugin_cmd(&g, &["load", "my-balancer", mine.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("loaded my-balancer: hooks balancer"),
        "{}",
        stdout(&out)
    );
    annotate(&g, &["switchyard.io/balancer=my-balancer"]);
    let p = wait_for(Duration::from_secs(10), "my-balancer picks", || {
        let p = picks(&g, "127.0.0.1:5000", 10);
        p.by_plugin.then_some(p)
    })
    .unwrap();
    assert_eq!(distinct(&p), 1, "sticky per client: {:?}", p.endpoints);

    // Swap another module in under the same name: the next picks use it.
    let before = sha(&g, "my-balancer");
    let out = plugin_cmd(
        &g,
        &["load", "my-balancer", wasm("round_robin").to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(sha(&g, "my-balancer"), before);
    let p = picks(&g, "127.0.0.1:5000", 9);
    assert!(p.by_plugin);
    assert_eq!(
        distinct(&p),
        3,
        "round-robin after the swap: {:?}",
        p.endpoints
    );

    // The list shows source, hash, and the calls made.
    let out = plugin_cmd(&g, &["list", "--json"]);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let mine = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "my-balancer")
        .unwrap()
        .clone();
    assert_eq!(mine["source"], "admin");
    assert!(mine["calls"].as_u64().unwrap() >= 9, "{mine}");
    assert_eq!(mine["hooks"], serde_json::json!(["balancer"]));

    // A plugin without a balancer hook named as balancer: fallback, counted as missing.
    annotate(&g, &["switchyard.io/balancer=rotate"]);
    wait_for(Duration::from_secs(10), "fallback for a dns plugin", || {
        let p = picks(&g, "127.0.0.1:5000", 3);
        (!p.by_plugin && distinct(&p) == 3).then_some(())
    })
    .unwrap();
    assert!(metric(&g, r#"plugin="rotate",hook="balancer",kind="missing""#) >= 1.0);

    // Removing the annotation goes back to the native default.
    g.ok(&["annotate", "service", "web", "switchyard.io/balancer-"]);
    wait_for(Duration::from_secs(10), "native again", || {
        (!picks(&g, "127.0.0.1:5000", 1).by_plugin).then_some(())
    })
    .unwrap();

    // Removing an admin plugin works; removing a built-in is refused.
    assert!(plugin_cmd(&g, &["remove", "my-balancer"]).status.success());
    assert_eq!(g.admin_get("/plugins/my-balancer").unwrap().0, 404);
    let out = plugin_cmd(&g, &["remove", "maglev"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("built in"), "{}", stderr(&out));
}

#[test]
fn bad_modules_are_refused_and_the_loaded_one_keeps_serving() {
    let g = Gateway::start().unwrap();
    web_with_endpoints(&g);
    let good = std::fs::read(wasm("my_balancer")).unwrap();
    let (code, body) = http("PUT", &g.admin, "/plugins/mine", "application/wasm", &good).unwrap();
    assert_eq!(code, 200, "{body}");
    annotate(&g, &["switchyard.io/balancer=mine"]);
    let good_sha = sha(&g, "mine");

    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, b"hello, I am not wasm\n").unwrap();
    let cases = [
        (text, "not a WebAssembly file"),
        (core, "a core WebAssembly module, not a component"),
        (
            wasm("future_major"),
            "built for switchyard:plugin@1.0.0, but this gateway speaks switchyard:plugin@0.2.0",
        ),
        (wasm("other_world"), "not a switchyard plugin"),
    ];
    for (file, want) in cases {
        let out = plugin_cmd(&g, &["load", "mine", file.to_str().unwrap()]);
        assert!(!out.status.success(), "{} was accepted", file.display());
        assert!(
            stderr(&out).contains(want),
            "{}: {}",
            file.display(),
            stderr(&out)
        );
        assert_eq!(sha(&g, "mine"), good_sha, "the loaded module stays");
        let p = picks(&g, "127.0.0.1:5000", 3);
        assert!(
            p.by_plugin && distinct(&p) == 1,
            "still served by the good module"
        );
    }
    let (code, body) = http(
        "PUT",
        &g.admin,
        "/plugins/Bad_Name",
        "application/wasm",
        &good,
    )
    .unwrap();
    assert_eq!(code, 400);
    assert!(body.contains("invalid plugin name"), "{body}");
    // Nothing refused was stored: after a restart only the good module is back.
    let mut g = g;
    g.kill9_and_restart().unwrap();
    assert_eq!(sha(&g, "mine"), good_sha);
    let (_, body) = g.admin_get("/plugins/mine").unwrap();
    assert!(
        body.contains(r#""cached":true"#),
        "reloaded from the compile cache: {body}"
    );
}

/// Loads the `misbehave` test plugin through the admin API.
fn load_misbehave(g: &Gateway) {
    let bytes = std::fs::read(wasm("misbehave")).unwrap();
    let (code, body) = http(
        "PUT",
        &g.admin,
        "/plugins/misbehave",
        "application/wasm",
        &bytes,
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
}

#[test]
fn misbehaving_plugins_fall_back_and_recover() {
    let g = Gateway::start_with(&["--plugin-timeout-us", "300"]).unwrap();
    web_with_endpoints(&g);
    load_misbehave(&g);

    for (config, kind) in [
        ("trap-configure", "trap"),
        ("refuse", "config"),
        ("trap-pick", "trap"),
        ("loop-pick", "timeout"),
        ("grow-pick", "memory"),
        ("bad-id", "invalid_answer"),
    ] {
        annotate(
            &g,
            &[
                "switchyard.io/balancer=misbehave",
                &format!("switchyard.io/balancer-config={config}"),
            ],
        );
        let needle = format!(r#"plugin="misbehave",hook="balancer",kind="{kind}""#);
        // Each pick still gets an endpoint (the fallback), and the error is counted.
        let p = wait_for(
            Duration::from_secs(10),
            &format!("{config} counted"),
            || {
                let p = picks(&g, "127.0.0.1:5000", 3);
                (metric(&g, &needle) >= 1.0).then_some(p)
            },
        )
        .unwrap();
        assert!(!p.by_plugin, "{config}: fell back");
        assert!(
            p.endpoints.iter().all(|e| e != "none"),
            "{config}: {:?}",
            p.endpoints
        );
    }
    // A looping pick costs about the deadline, not a hang.
    let started = std::time::Instant::now();
    picks(&g, "127.0.0.1:5000", 20);
    assert!(started.elapsed() < Duration::from_secs(5));

    // A good config again: the plugin serves (a fresh instance).
    annotate(&g, &["switchyard.io/balancer-config=ok"]);
    wait_for(Duration::from_secs(10), "recovered", || {
        picks(&g, "127.0.0.1:5000", 3).by_plugin.then_some(())
    })
    .unwrap();
    assert!(
        metric(
            &g,
            r#"switchyard_plugin_counter_total{plugin="misbehave",name="picks"}"#
        ) >= 3.0
    );
    assert!(
        g.log()
            .contains("plugin call failed, using the native default")
    );

    // Invalid config JSON for a built-in: refused by configure, fallback, counted.
    annotate(
        &g,
        &[
            "switchyard.io/balancer=maglev",
            "switchyard.io/balancer-config={not json",
        ],
    );
    wait_for(Duration::from_secs(10), "maglev config refused", || {
        picks(&g, "127.0.0.1:5000", 1);
        (metric(&g, r#"plugin="maglev",hook="balancer",kind="config""#) >= 1.0).then_some(())
    })
    .unwrap();
    assert!(
        g.log().contains("maglev config"),
        "the log names the config error"
    );
}

#[test]
fn feedback_and_the_request_line_reach_a_balancer_only_when_it_asks() {
    use switchyard_e2e::curl;
    use switchyard_e2e::traffic::{backends, jsonpath, metric, service, wait_listener};
    let g = Gateway::start().unwrap();
    let _b = backends(&g, &[96], 9376);
    let spec = "ports: [{port: 80, targetPort: 9376}]";
    service(&g, "fb", spec, &[(g.backend_ip(96), "test-node")], 9376);
    let cip = jsonpath(&g, &["svc", "fb"], "{.spec.clusterIP}");
    wait_listener(&g, &format!("{cip}:80"), 1);
    load_misbehave(&g);
    let counter = |name: &str| {
        metric(
            &g,
            &format!(r#"switchyard_plugin_counter_total{{plugin="misbehave",name="{name}"}}"#),
        )
    };
    let url = format!("http://{cip}/");
    // (config, asks for feedback, asks for the request line)
    for (config, feedback, line) in [
        ("quiet", false, false),
        ("feedback", true, false),
        ("request-line", false, true),
    ] {
        g.ok(&[
            "annotate",
            "--overwrite",
            "service",
            "fb",
            "switchyard.io/mode=http",
            "switchyard.io/balancer=misbehave",
            &format!("switchyard.io/balancer-config={config}"),
        ]);
        // The instance with this config picks for real requests...
        let picks = counter("picks");
        wait_for(Duration::from_secs(10), &format!("{config}: picks"), || {
            let (code, body) = curl(&[&url]);
            (code == 0 && body.starts_with("b96") && counter("picks") >= picks + 3.0).then_some(())
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(300)); // feedback of those requests lands
        let (feedbacks, paths) = (counter("feedbacks"), counter("with-path"));
        for _ in 0..5 {
            let (code, body) = curl(&[&url]);
            assert!(code == 0 && body.starts_with("b96"), "{code} {body}");
        }
        // ...and hears how each went, or sees its path, only if its configure asked.
        if feedback {
            wait_for(Duration::from_secs(5), "feedback calls", || {
                (counter("feedbacks") >= feedbacks + 5.0).then_some(())
            })
            .unwrap();
        } else {
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(
                counter("feedbacks"),
                feedbacks,
                "{config}: no feedback unless asked"
            );
        }
        let seen = counter("with-path") - paths;
        assert_eq!(
            seen,
            if line { 5.0 } else { 0.0 },
            "{config}: picks that saw the path"
        );
    }
}

#[test]
fn plugin_files_reload_on_save() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("watched.wasm");
    std::fs::copy(wasm("my_balancer"), &file).unwrap();
    let g = Gateway::start_with(&["--plugin", &format!("watched={}", file.display())]).unwrap();
    let first = sha(&g, "watched");
    let (_, body) = g.admin_get("/plugins/watched").unwrap();
    assert!(body.contains("file:"), "{body}");

    // Save another module over it (write to a temp name, rename, as cargo and editors do).
    let tmp = dir.path().join("watched.wasm.tmp");
    std::fs::copy(wasm("round_robin"), &tmp).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    wait_for(Duration::from_secs(10), "reloaded", || {
        (sha(&g, "watched") != first).then_some(())
    })
    .unwrap();

    // A broken save is refused; the last good version keeps serving.
    let good = sha(&g, "watched");
    std::fs::write(&file, b"garbage").unwrap();
    wait_for(Duration::from_secs(10), "refusal logged", || {
        g.log().contains("plugin file refused").then_some(())
    })
    .unwrap();
    assert_eq!(sha(&g, "watched"), good);
}

#[test]
fn config_file_names_plugins_relative_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::fs::copy(wasm("my_balancer"), dir.path().join("plugins/sticky.wasm")).unwrap();
    let config = dir.path().join("switchyard.yaml");
    std::fs::write(
        &config,
        "plugins:\n  sticky: plugins/sticky.wasm\nplugin-timeout-us: 800\n",
    )
    .unwrap();
    let g = Gateway::start_with(&["--config", config.to_str().unwrap()]).unwrap();
    let (code, body) = g.admin_get("/plugins/sticky").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("plugins/sticky.wasm"), "{body}");
    web_with_endpoints(&g);
    annotate(&g, &["switchyard.io/balancer=sticky"]);
    wait_for(Duration::from_secs(10), "sticky serves", || {
        let p = picks(&g, "127.0.0.1:5000", 5);
        (p.by_plugin && distinct(&p) == 1).then_some(())
    })
    .unwrap();
}
