//! Non-loopback Service addresses on the host (`--vip-interface`, netlink), in a network
//! namespace this test makes for itself: cluster and LoadBalancer addresses are added when
//! their listeners open and removed when they close; an address someone else configured is
//! used but never removed; a restart after `kill -9` removes what the dead gateway left.
//!
//! The test thread `unshare`s into a new network namespace (needs root or CAP_SYS_ADMIN, as
//! CI has); every process it starts (gateway, kubectl, curl, backends) and every socket it
//! opens lives there, so the 10.96.0.0/16 and 172.30.0.0/24 traffic never leaves it.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use switchyard_e2e::traffic::{
    backends, distinct, metric, names, served_by, service, wait_listener,
};
use switchyard_e2e::{Gateway, wait_for};

/// Moves this thread (and so what it spawns) into a new network namespace with `lo` up.
fn own_network_namespace() {
    // SAFETY: unshare only changes the calling thread's namespace membership.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        r,
        0,
        "unshare(CLONE_NEWNET) failed ({}): this test needs root or CAP_SYS_ADMIN",
        std::io::Error::last_os_error()
    );
    ip(&["link", "set", "lo", "up"]);
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// IPv4 addresses on any interface of this namespace.
fn host_addresses() -> BTreeSet<String> {
    ip(&["-o", "-4", "addr", "show"])
        .lines()
        .filter_map(|l| {
            let cidr = l.split_whitespace().skip_while(|w| *w != "inet").nth(1)?;
            Some(cidr.split('/').next()?.to_string())
        })
        .collect()
}

fn wait_addresses(present: &[&str], absent: &[&str], g: &Gateway) {
    wait_for(Duration::from_secs(5), "host addresses", || {
        let a = host_addresses();
        (present.iter().all(|p| a.contains(*p)) && absent.iter().all(|p| !a.contains(*p)))
            .then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: have {:?}, want {present:?} and not {absent:?}\n{}",
            host_addresses(),
            g.log()
        )
    });
}

#[test]
fn service_addresses_come_and_go_with_their_listeners() {
    own_network_namespace();
    // Someone else's address, used as an external IP: served, never removed.
    ip(&["addr", "add", "10.97.0.5/32", "dev", "lo"]);
    let flags = [
        "--service-cidr",
        "10.96.0.0/16",
        "--lb-pool",
        "172.30.0.0/24",
        "--node-ip",
        "127.0.0.1",
    ];
    let g = Gateway::start_with(&flags).unwrap();
    let _b = backends(&g, &[1, 2, 3], 9376);
    let eps: Vec<(String, &str)> = [1, 2, 3]
        .iter()
        .map(|i| (g.backend_ip(*i), "node-a"))
        .collect();
    service(
        &g,
        "web",
        "type: LoadBalancer, externalIPs: [10.97.0.5], ports: [{port: 80, targetPort: 9376}]",
        &eps,
        9376,
    );
    let cluster_ip = switchyard_e2e::traffic::jsonpath(&g, &["svc", "web"], "{.spec.clusterIP}");
    let lb_ip = wait_for(Duration::from_secs(5), "LoadBalancer address", || {
        let ip = switchyard_e2e::traffic::jsonpath(
            &g,
            &["svc", "web"],
            "{.status.loadBalancer.ingress[0].ip}",
        );
        (!ip.is_empty()).then_some(ip)
    })
    .unwrap();
    assert!(cluster_ip.starts_with("10.96."), "{cluster_ip}");
    assert!(lb_ip.starts_with("172.30.0."), "{lb_ip}");
    wait_addresses(&[&cluster_ip, &lb_ip, "10.97.0.5", "10.96.0.1"], &[], &g);
    for addr in [&cluster_ip, &lb_ip, "10.97.0.5"] {
        wait_listener(&g, &format!("{addr}:80"), 3);
        let seen = served_by(&format!("http://{addr}/"), 12, &[]);
        assert_eq!(distinct(&seen), names(&[1, 2, 3]), "via {addr}");
    }
    // The kubernetes Service's cluster IP, web's cluster IP and its LoadBalancer address.
    assert_eq!(metric(&g, "switchyard_proxy_vips "), 3.0);
    assert_eq!(metric(&g, "switchyard_proxy_vip_errors_total"), 0.0);

    g.ok(&["delete", "svc", "web"]);
    wait_addresses(&["10.97.0.5", "10.96.0.1"], &[&cluster_ip, &lb_ip], &g);

    // A gateway killed while holding an address; the next one (on an empty store) removes it.
    service(
        &g,
        "web",
        "ports: [{port: 80, targetPort: 9376}]",
        &eps,
        9376,
    );
    let cluster_ip = switchyard_e2e::traffic::jsonpath(&g, &["svc", "web"], "{.spec.clusterIP}");
    wait_addresses(&[&cluster_ip], &[], &g);
    drop(g); // SIGKILL
    assert!(host_addresses().contains(&cluster_ip));
    let g2 = Gateway::start_with(&flags).unwrap();
    wait_addresses(&["10.96.0.1", "10.97.0.5"], &[&cluster_ip], &g2);
}
