//! Turns a compiled component into a `LoadedPlugin`: finds which hooks it exports, refuses
//! other worlds and other major versions of the contract with an error naming both, and
//! pre-instantiates a template per hook so each worker's instance is one cheap step away.

use std::sync::Arc;
use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre, Linker};

use super::PluginError;
use super::bindings::{HostState, balancer, dns, policy};
use super::metrics::{Hook, HookLabels, PluginMetrics};

/// The contract this host speaks.
pub const PACKAGE: &str = "switchyard:plugin";
pub const VERSION: &str = "0.2.0";

/// Where a plugin came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Embedded in the binary.
    Builtin,
    /// A file named in `--config`, watched for changes.
    File(String),
    /// `PUT /plugins/NAME` on the admin listener (kept in the data dir).
    Admin,
}

/// One compiled, checked plugin, ready to instantiate for any of its hooks.
pub struct LoadedPlugin {
    pub name: Arc<str>,
    pub sha256: String,
    pub size: usize,
    pub source: Source,
    pub loaded_at: SystemTime,
    pub compile_ms: f64,
    pub from_cache: bool,
    pub hooks: Hooks,
}

impl LoadedPlugin {
    pub fn hook_names(&self) -> Vec<&'static str> {
        let h = &self.hooks;
        [
            (h.balancer.is_some(), "balancer"),
            (h.policy.is_some(), "policy"),
            (h.dns.is_some(), "dns"),
        ]
        .into_iter()
        .filter_map(|(has, name)| has.then_some(name))
        .collect()
    }

    pub fn calls(&self, hook: Hook) -> &Counter {
        &self.hooks.calls[hook as usize]
    }
}

/// What a component says about itself: `switchyard:plugin` interfaces it exports.
struct Exports {
    hooks: Vec<String>,
    other_versions: Vec<String>,
    all: Vec<String>,
}

fn exports(component: &Component, engine: &Engine) -> Exports {
    let ty = component.component_type();
    let mut e = Exports {
        hooks: Vec::new(),
        other_versions: Vec::new(),
        all: Vec::new(),
    };
    for (name, item) in ty.exports(engine) {
        if !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
            e.all.push(name.to_string());
            continue;
        }
        e.all.push(name.to_string());
        let Some(rest) = name.strip_prefix(&format!("{PACKAGE}/")) else {
            continue;
        };
        let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
        if compatible(version) {
            e.hooks.push(iface.to_string());
        } else {
            e.other_versions.push(format!("{PACKAGE}@{version}"));
        }
    }
    e
}

/// Semver compatibility as Cargo reads it: same major, or for 0.x the same minor.
fn compatible(version: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> {
        v.split('.')
            .map(|p| p.parse().unwrap_or(u64::MAX))
            .collect()
    };
    let (want, have) = (parts(VERSION), parts(version));
    if have.len() < 2 {
        return false;
    }
    if want[0] == 0 {
        have[0] == 0 && have[1] == want[1]
    } else {
        have[0] == want[0]
    }
}

pub fn load(
    name: &str,
    component: Component,
    linker: &Linker<HostState>,
    metrics: &PluginMetrics,
) -> Result<Hooks, PluginError> {
    let engine = component.engine().clone();
    let ex = exports(&component, &engine);
    let has = |i: &str| ex.hooks.iter().any(|h| h == i);
    if !has("balancer") && !has("policy") && !has("dns") {
        if let Some(v) = ex.other_versions.first() {
            return Err(PluginError::Version {
                found: v.clone(),
                expected: format!("{PACKAGE}@{VERSION}"),
            });
        }
        return Err(PluginError::World(if ex.all.is_empty() {
            "it exports nothing".to_string()
        } else {
            format!("it exports {}", ex.all.join(", "))
        }));
    }
    // Plugins built with Rust's wasm32-wasip2 std import WASI interfaces. Random seeds and
    // clocks are served (`wasi.rs`); the rest (environment, stdio, files) are defined as
    // traps: a plugin that reaches for them fails that call and falls back, with no access.
    let mut linker = linker.clone();
    super::wasi::define(&mut linker, &component, &engine)
        .map_err(|e| PluginError::Link(format!("{e:#}")))?;
    linker
        .define_unknown_imports_as_traps(&component)
        .map_err(|e| PluginError::Link(format!("{e:#}")))?;
    let pre: InstancePre<HostState> = linker
        .instantiate_pre(&component)
        .map_err(|e| PluginError::Link(format!("{e:#}")))?;
    let calls = [Hook::balancer, Hook::policy, Hook::dns].map(|hook| {
        metrics
            .calls
            .get_or_create(&HookLabels {
                plugin: name.to_string(),
                hook,
            })
            .clone()
    });
    Ok(Hooks {
        balancer: if has("balancer") {
            Some(typed(balancer::BalancerPluginPre::new(pre.clone()))?)
        } else {
            None
        },
        policy: if has("policy") {
            Some(typed(policy::PolicyPluginPre::new(pre.clone()))?)
        } else {
            None
        },
        dns: if has("dns") {
            Some(typed(dns::DnsPluginPre::new(pre))?)
        } else {
            None
        },
        balancer_state: has("balancer-state"),
        policy_state: has("policy-state"),
        dns_state: has("dns-state"),
        calls,
    })
}

fn typed<T>(r: wasmtime::Result<T>) -> Result<T, PluginError> {
    r.map_err(|e| PluginError::Link(format!("{e:#}")))
}

/// The hooks a plugin has, each pre-instantiated, and its call counters.
pub struct Hooks {
    pub balancer: Option<balancer::BalancerPluginPre<HostState>>,
    pub policy: Option<policy::PolicyPluginPre<HostState>>,
    pub dns: Option<dns::DnsPluginPre<HostState>>,
    /// Whether the component exports `<hook>-state` (snapshot/restore on swap).
    pub balancer_state: bool,
    pub policy_state: bool,
    pub dns_state: bool,
    pub calls: [Counter; 3],
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions() {
        assert!(super::compatible("0.2.0"));
        assert!(super::compatible("0.2.7"));
        assert!(!super::compatible("0.1.0"), "0.1 settings lack `feedback`");
        assert!(!super::compatible("0.3.0"));
        assert!(!super::compatible("1.0.0"));
        assert!(!super::compatible(""));
    }
}
