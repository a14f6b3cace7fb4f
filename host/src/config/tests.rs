//! `serve`'s settings: defaults, the YAML file under the flags, validation.

use super::*;

#[test]
fn defaults() {
    let s = ServeArgs::default().resolve().unwrap();
    assert_eq!(s.api_listen.to_string(), "127.0.0.1:6443");
    assert_eq!(s.service_cidr.to_string(), "127.96.0.0/16");
    assert_eq!(s.node_ports, PortRange(30000, 32767));
    assert_eq!(s.source, Source::Embedded);
}

#[test]
fn flags_win_over_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "api-listen: 127.0.0.1:7000\nadmin-listen: 127.0.0.1:7001\nnode-port-range: 31000-31010\n",
    )
    .unwrap();
    let args = ServeArgs {
        config: Some(path),
        api_listen: Some("127.0.0.1:8000".parse().unwrap()),
        ..Default::default()
    };
    let s = args.resolve().unwrap();
    assert_eq!(s.api_listen.to_string(), "127.0.0.1:8000");
    assert_eq!(s.admin_listen.to_string(), "127.0.0.1:7001");
    assert_eq!(s.node_ports, PortRange(31000, 31010));
}

#[test]
fn the_relay_pause_defaults_to_10_us_and_is_bounded() {
    let pause = |us| {
        ServeArgs {
            relay_pause_us: us,
            ..Default::default()
        }
        .resolve()
    };
    let ten = std::time::Duration::from_micros(10);
    assert_eq!(pause(None).unwrap().proxy.relay_pause, ten);
    assert!(pause(Some(0)).unwrap().proxy.relay_pause.is_zero());
    let err = pause(Some(5000)).unwrap_err().to_string();
    assert!(err.contains("--relay-pause-us 5000"), "{err}");
}

#[test]
fn the_example_config_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/switchyard.yaml");
    let s = ServeArgs {
        config: Some(path),
        ..Default::default()
    }
    .resolve()
    .expect("examples/switchyard.yaml resolves");
    assert_eq!(s.dns.shape.len(), 2);
    assert!(s.dns.upstreams.is_empty());
    assert!(s.plugin_files.iter().any(|(n, _)| n == "my-balancer"));
}

#[test]
fn dns_and_vip_settings_come_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "dns-ttl: 30\ndns-workers: 3\ndns-upstream: [127.0.0.1:5300]\n\
         dns-shape: [rotate, 'limit={\"max\": 1}']\nvip-interface: none\n",
    )
    .unwrap();
    let args = ServeArgs {
        config: Some(path),
        ..Default::default()
    };
    let s = args.resolve().unwrap();
    assert_eq!((s.dns.ttl, s.dns.workers), (30, 3));
    assert_eq!(s.dns.upstreams, ["127.0.0.1:5300".parse().unwrap()]);
    let chain: Vec<_> = s.dns.shape.iter().map(|r| (&*r.name, &*r.config)).collect();
    assert_eq!(chain, [("rotate", ""), ("limit", r#"{"max": 1}"#)]);
    assert_eq!(s.proxy.vip_interface, None);
}

#[test]
fn plugin_files_resolve_against_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "plugins:\n  mine: plugins/mine.wasm\nplugin-timeout-us: 800\n",
    )
    .unwrap();
    let s = ServeArgs {
        config: Some(path),
        plugin: vec!["other=/tmp/o.wasm".into()],
        ..Default::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(s.plugin_timeout.as_micros(), 800);
    assert_eq!(
        s.plugin_files,
        [
            ("mine".to_string(), dir.path().join("plugins/mine.wasm")),
            ("other".to_string(), PathBuf::from("/tmp/o.wasm"))
        ]
    );
}

#[test]
fn bad_config_is_reported_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, "api-lisen: 1\n").unwrap();
    let err = ServeArgs {
        config: Some(path),
        ..Default::default()
    }
    .resolve()
    .unwrap_err()
    .to_string();
    assert!(err.contains("c.yaml") && err.contains("api-lisen"), "{err}");
    let bad = ServeArgs {
        plugin: vec!["nameonly".into()],
        ..Default::default()
    };
    assert!(bad.resolve().unwrap_err().to_string().contains("NAME=PATH"));
    assert!("40000-30000".parse::<PortRange>().is_err());
}
