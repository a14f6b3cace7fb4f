//! Table-driven tests of Service admission: each case is a manifest and the exact field paths
//! the API server names (empty = accepted).

use super::*;
use crate::alloc::{IpPool, PortPool};
use serde_json::{Value, json};

fn allocs() -> Allocators {
    Allocators {
        cluster_ips: IpPool::new("127.96.0.0/16".parse().unwrap()),
        node_ports: PortPool::new(30000, 32767),
        lb_ips: IpPool::new("127.200.0.0/24".parse().unwrap()),
    }
}

fn svc(spec: Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": "my-service"}, "spec": spec})).unwrap()
}

fn fields(r: Result<ValidService, Vec<FieldError>>) -> Vec<String> {
    match r {
        Ok(_) => vec![],
        Err(e) => e.into_iter().map(|e| e.field).collect(),
    }
}

#[test]
fn admission_table() {
    let port = |name: &str| json!({"name": name, "port": 80});
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "docs example",
            json!({"selector": {"app": "MyApp"}, "ports": [{"protocol": "TCP", "port": 80, "targetPort": 9376}]}),
            vec![],
        ),
        (
            "port name 123-abc ok",
            json!({"ports": [port("123-abc"), {"name": "web", "port": 81}]}),
            vec![],
        ),
        (
            "port name 123_abc bad",
            json!({"ports": [port("123_abc")]}),
            vec!["spec.ports[0].name"],
        ),
        (
            "port name -web bad",
            json!({"ports": [port("-web")]}),
            vec!["spec.ports[0].name"],
        ),
        (
            "second port unnamed",
            json!({"ports": [port("a"), {"port": 81}]}),
            vec!["spec.ports[1].name"],
        ),
        (
            "duplicate names",
            json!({"ports": [port("a"), {"name": "a", "port": 81}]}),
            vec!["spec.ports[1].name"],
        ),
        (
            "duplicate port+protocol",
            json!({"ports": [port("a"), port("b")]}),
            vec!["spec.ports[1]"],
        ),
        (
            "same port two protocols ok",
            json!({"ports": [port("a"), {"name": "b", "port": 80, "protocol": "UDP"}]}),
            vec![],
        ),
        (
            "port 0 (targetPort defaults to it)",
            json!({"ports": [{"port": 0}]}),
            vec!["spec.ports[0].port", "spec.ports[0].targetPort"],
        ),
        (
            "port 65536",
            json!({"ports": [{"port": 65536}]}),
            vec!["spec.ports[0].port", "spec.ports[0].targetPort"],
        ),
        (
            "port 65536 with valid targetPort",
            json!({"ports": [{"port": 65536, "targetPort": 80}]}),
            vec!["spec.ports[0].port"],
        ),
        (
            "targetPort 70000",
            json!({"ports": [{"port": 80, "targetPort": 70000}]}),
            vec!["spec.ports[0].targetPort"],
        ),
        (
            "targetPort named ok",
            json!({"ports": [{"port": 80, "targetPort": "http-alt"}]}),
            vec![],
        ),
        (
            "targetPort bad name",
            json!({"ports": [{"port": 80, "targetPort": "http--x"}]}),
            vec!["spec.ports[0].targetPort"],
        ),
        (
            "targetPort digits only",
            json!({"ports": [{"port": 80, "targetPort": "8080"}]}),
            vec!["spec.ports[0].targetPort"],
        ),
        (
            "protocol",
            json!({"ports": [{"port": 80, "protocol": "HTTP"}]}),
            vec!["spec.ports[0].protocol"],
        ),
        (
            "no ports",
            json!({"selector": {"a": "b"}}),
            vec!["spec.ports"],
        ),
        (
            "headless needs no ports",
            json!({"clusterIP": "None"}),
            vec![],
        ),
        (
            "type",
            json!({"type": "Magic", "ports": [{"port": 80}]}),
            vec!["spec.type"],
        ),
        (
            "nodePort on ClusterIP",
            json!({"ports": [{"port": 80, "nodePort": 30080}]}),
            vec!["spec.ports[0].nodePort"],
        ),
        (
            "nodePort out of range",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 40000}]}),
            vec!["spec.ports[0].nodePort"],
        ),
        (
            "clusterIP garbage",
            json!({"clusterIP": "abc", "ports": [{"port": 80}]}),
            vec!["spec.clusterIPs[0]"],
        ),
        (
            "clusterIP outside cidr",
            json!({"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}),
            vec!["spec.clusterIPs[0]"],
        ),
        (
            "clusterIP in cidr",
            json!({"clusterIP": "127.96.5.5", "ports": [{"port": 80}]}),
            vec![],
        ),
        (
            "None for NodePort",
            json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}),
            vec!["spec.clusterIPs[0]"],
        ),
        (
            "ExternalName ok",
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
            vec![],
        ),
        (
            "ExternalName missing",
            json!({"type": "ExternalName"}),
            vec!["spec.externalName"],
        ),
        (
            "ExternalName invalid",
            json!({"type": "ExternalName", "externalName": "not_valid!"}),
            vec!["spec.externalName"],
        ),
        (
            "affinity timeout",
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}, "ports": [{"port": 80}]}),
            vec!["spec.sessionAffinityConfig.clientIP.timeoutSeconds"],
        ),
        (
            "affinity value",
            json!({"sessionAffinity": "Sticky", "ports": [{"port": 80}]}),
            vec!["spec.sessionAffinity"],
        ),
        (
            "etp on ClusterIP",
            json!({"externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
            vec!["spec.externalTrafficPolicy"],
        ),
        (
            "source ranges on ClusterIP",
            json!({"loadBalancerSourceRanges": ["10.0.0.0/8"], "ports": [{"port": 80}]}),
            vec!["spec.loadBalancerSourceRanges"],
        ),
        (
            "bad source range",
            json!({"type": "LoadBalancer", "loadBalancerSourceRanges": ["nope"], "ports": [{"port": 80}]}),
            vec!["spec.loadBalancerSourceRanges[0]"],
        ),
        (
            "bad external ip",
            json!({"externalIPs": ["1.2.3"], "ports": [{"port": 80}]}),
            vec!["spec.externalIPs[0]"],
        ),
        (
            "bad selector",
            json!({"selector": {"app": "bad value"}, "ports": [{"port": 80}]}),
            vec!["spec.selector"],
        ),
    ];
    for (name, spec, want) in cases {
        let got = fields(admit(svc(spec), None, &mut allocs()));
        assert_eq!(got, want, "case {name:?}");
    }
}

#[test]
fn bad_service_name_is_named() {
    let mut s = svc(json!({"ports": [{"port": 80}]}));
    s.metadata.name = Some("1-bad".into());
    assert_eq!(fields(admit(s, None, &mut allocs())), ["metadata.name"]);
}

#[test]
fn defaults_and_allocation() {
    let mut a = allocs();
    let s = admit(
        svc(json!({"type": "LoadBalancer", "ports": [{"port": 80}]})),
        None,
        &mut a,
    )
    .unwrap()
    .into_inner();
    let spec = s.spec.as_ref().unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("127.96.0.1"));
    assert_eq!(spec.cluster_ips, Some(vec!["127.96.0.1".to_string()]));
    let p = &spec.ports.as_ref().unwrap()[0];
    assert_eq!(p.protocol.as_deref(), Some("TCP"));
    assert_eq!(p.target_port, Some(IntOrString::Int(80)));
    assert!((30000..=32767).contains(&p.node_port.unwrap()));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
    assert_eq!(
        owned_lb_ips(&s),
        vec!["127.200.0.1".parse::<Ipv4Addr>().unwrap()]
    );
    assert_eq!(
        (a.cluster_ips.used(), a.node_ports.used(), a.lb_ips.used()),
        (1, 1, 1)
    );
}

#[test]
fn rejected_service_allocates_nothing_and_taken_values_are_refused() {
    let mut a = allocs();
    let first = admit(
        svc(
            json!({"type": "NodePort", "clusterIP": "127.96.0.9", "ports": [{"port": 80, "nodePort": 30080}]}),
        ),
        None,
        &mut a,
    );
    assert!(first.is_ok());
    let second = admit(
        svc(
            json!({"type": "NodePort", "clusterIP": "127.96.0.9", "ports": [{"port": 80, "nodePort": 30080}]}),
        ),
        None,
        &mut a,
    );
    assert_eq!(
        fields(second),
        ["spec.clusterIPs[0]", "spec.ports[0].nodePort"]
    );
    assert_eq!((a.cluster_ips.used(), a.node_ports.used()), (1, 1));
    let bad = admit(
        svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30081}, {"port": 81}]})),
        None,
        &mut a,
    );
    assert!(bad.is_err());
    assert_eq!(
        (a.cluster_ips.used(), a.node_ports.used()),
        (1, 1),
        "nothing leaked"
    );
}

#[test]
fn type_changes_follow_kubernetes() {
    let mut a = allocs();
    let np = admit(
        svc(json!({"type": "NodePort", "ports": [{"port": 80}]})),
        None,
        &mut a,
    )
    .unwrap()
    .into_inner();
    let ip = np.spec.as_ref().unwrap().cluster_ip.clone();
    // NodePort -> ClusterIP: nodePort released, clusterIP kept.
    let mut to_cip = np.clone();
    to_cip.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
    let cip = admit(to_cip, Some(&np), &mut a).unwrap().into_inner();
    assert_eq!(cip.spec.as_ref().unwrap().cluster_ip, ip);
    assert_eq!(owned_node_ports(&cip), Vec::<i32>::new());
    assert_eq!(a.node_ports.used(), 0);
    // ClusterIP -> ExternalName: clusterIP released.
    let mut to_ext = cip.clone();
    let spec = to_ext.spec.as_mut().unwrap();
    spec.type_ = Some("ExternalName".into());
    spec.external_name = Some("db.example.com".into());
    let ext = admit(to_ext, Some(&cip), &mut a).unwrap().into_inner();
    assert_eq!(ext.spec.as_ref().unwrap().cluster_ip, None);
    assert_eq!(a.cluster_ips.used(), 0);
    // Changing an assigned clusterIP is refused.
    let mut moved = cip.clone();
    moved.spec.as_mut().unwrap().cluster_ip = Some("127.96.9.9".into());
    moved.spec.as_mut().unwrap().cluster_ips = Some(vec!["127.96.9.9".into()]);
    let mut a2 = allocs();
    claim_existing(&cip, &mut a2);
    assert_eq!(
        fields(admit(moved, Some(&cip), &mut a2)),
        ["spec.clusterIPs[0]"]
    );
    // ClusterIP -> LoadBalancer: gets nodePorts and an address.
    let mut to_lb = cip.clone();
    to_lb.spec.as_mut().unwrap().type_ = Some("LoadBalancer".into());
    let lb = admit(to_lb, Some(&cip), &mut a2).unwrap().into_inner();
    assert_eq!(owned_node_ports(&lb).len(), 1);
    assert_eq!(owned_lb_ips(&lb).len(), 1);
    assert_eq!(lb.spec.as_ref().unwrap().cluster_ip, ip, "clusterIP kept");
}
