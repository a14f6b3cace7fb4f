//! The WIT contract parses, is the versioned package the host expects, and each world imports
//! `host` and exports exactly its hook interface.

use wit_parser::{Resolve, WorldItem, WorldKey};

#[test]
fn contract_parses_with_the_expected_worlds() {
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve
        .push_path(concat!(env!("CARGO_MANIFEST_DIR"), "/wit"))
        .expect("plugin.wit parses");
    let package = &resolve.packages[pkg];
    assert_eq!(package.name.to_string(), "switchyard:plugin@0.2.0");
    let name_of = |k: &WorldKey| match k {
        WorldKey::Name(n) => n.clone(),
        WorldKey::Interface(id) => resolve.interfaces[*id].name.clone().unwrap_or_default(),
    };
    for (world, hook) in [
        ("balancer-plugin", "balancer"),
        ("policy-plugin", "policy"),
        ("dns-plugin", "dns"),
    ] {
        let id = package.worlds[world];
        let w = &resolve.worlds[id];
        let exports: Vec<String> = w.exports.keys().map(name_of).collect();
        assert_eq!(exports, [hook], "{world} exports");
        let imports: Vec<String> = w
            .imports
            .iter()
            .filter(|(_, i)| matches!(i, WorldItem::Interface { .. }))
            .map(|(k, _)| name_of(k))
            .collect();
        assert!(
            imports.contains(&"host".to_string()),
            "{world} imports host: {imports:?}"
        );
        assert!(
            !imports.iter().any(|i| i.contains("wasi")),
            "no WASI imports in the contract"
        );
    }
    let balancer = package.interfaces["balancer"];
    let funcs: Vec<&str> = resolve.interfaces[balancer]
        .functions
        .keys()
        .map(String::as_str)
        .collect();
    for f in ["configure", "update", "pick", "feedback"] {
        assert!(funcs.contains(&f), "balancer.{f}");
    }
    // What the SDK builds: each hook plus its state hand-off interface.
    for (world, hook) in [
        ("sdk-balancer", "balancer"),
        ("sdk-policy", "policy"),
        ("sdk-dns", "dns"),
    ] {
        let w = &resolve.worlds[package.worlds[world]];
        let mut exports: Vec<String> = w.exports.keys().map(name_of).collect();
        exports.sort();
        assert_eq!(
            exports,
            [hook.to_string(), format!("{hook}-state")],
            "{world} exports"
        );
    }
}
