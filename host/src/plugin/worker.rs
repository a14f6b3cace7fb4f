//! Per-worker plugin instances: the generic machinery every hook's calls go through.
//!
//! Each worker thread keeps its own instance per (plugin user, Service port) in a
//! thread-local table, created from the plugin's pre-instantiated template on first use: no
//! lock is taken on the hot path. An instance notices by pointer comparison when its plugin
//! was swapped or its config changed, and is replaced (with state hand-off when both versions
//! export it) before the call. Every call runs under an epoch deadline and a memory cap; a
//! trap, timeout, memory overrun or invalid answer falls back to the native default for that
//! call, recycles the instance and counts an error with a rate-limited log line.

use std::cell::RefCell;
use std::hash::BuildHasher;

use rustc_hash::{FxBuildHasher, FxHashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};

use wasmtime::component::{Instance, InstancePre};
use wasmtime::{Store, StoreLimitsBuilder};

use super::bindings::{HostState, balancer, dns, policy, types};
use super::loader::{LoadedPlugin, PACKAGE, VERSION};
use super::metrics::{ErrorKind, Hook};
use super::{Plugins, Registry};
use crate::snapshot::{PluginRef, ServiceView};

/// What a call knows about the connection or request.
pub struct Request<'a> {
    pub client: SocketAddr,
    pub protocol: types::Protocol,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    /// Looks up a request header (HTTP only); only headers a plugin declared are asked for.
    pub header: Option<&'a HeaderLookup<'a>>,
    /// The Service view is the node-local subset (traffic policy `Local`): balanced by an
    /// instance of its own, so the full and the local set do not replace each other's.
    pub node_local: bool,
}

/// Finds a request header's value by name.
pub type HeaderLookup<'a> = dyn Fn(&str) -> Option<String> + Sync + 'a;

impl<'a> Request<'a> {
    pub fn tcp(client: SocketAddr) -> Self {
        Request {
            client,
            protocol: types::Protocol::Tcp,
            method: None,
            path: None,
            header: None,
            node_local: false,
        }
    }

    /// An HTTP request: its method, path (without the query) and a lookup of its headers.
    pub fn http(
        client: SocketAddr,
        method: &'a str,
        path: &'a str,
        header: &'a HeaderLookup<'a>,
        node_local: bool,
    ) -> Self {
        Request {
            client,
            protocol: types::Protocol::Http,
            method: Some(method),
            path: Some(path),
            header: Some(header),
            node_local,
        }
    }
}

pub fn ip(a: IpAddr) -> types::Ip {
    match a {
        IpAddr::V4(v4) => types::Ip {
            hi: 0,
            lo: u32::from(v4) as u64,
            v6: false,
        },
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            types::Ip {
                hi: (n >> 64) as u64,
                lo: n as u64,
                v6: true,
            }
        }
    }
}

/// One live instance of one hook.
pub(super) struct Live<B> {
    pub plugin: Arc<LoadedPlugin>,
    pub config: Arc<str>,
    pub store: Store<HostState>,
    pub instance: Instance,
    pub bindings: B,
    /// What the plugin asked for in `configure`.
    pub asked: Asked,
    /// The Service view whose endpoints were pushed last (balancers).
    pub pushed: Weak<ServiceView>,
    /// (endpoint id, index in the port's endpoints), sorted by id (balancers).
    pub ids: Vec<(u32, usize)>,
}

/// A slot per (Service port, worker): the live instance, or why there is none.
pub(super) struct Slot<B> {
    namespace: Box<str>,
    name: Box<str>,
    port: u32,
    pub live: Option<Live<B>>,
    /// `configure` refused this (plugin, config): use the fallback until either changes.
    refused: Option<(Weak<LoadedPlugin>, Arc<str>)>,
}

impl<B> Slot<B> {
    fn new(svc: &ServiceView, port: u32) -> Self {
        Slot {
            namespace: svc.namespace.clone().into(),
            name: svc.name.clone().into(),
            port,
            live: None,
            refused: None,
        }
    }

    fn is_for(&self, svc: &ServiceView, port: u32) -> bool {
        self.port == port && *self.namespace == *svc.namespace && *self.name == *svc.name
    }
}

/// Slots of one hook on one worker, keyed by (runtime id, hash of namespace/name/port).
pub(super) type Slots<B> = FxHashMap<(u64, u64), Slot<B>>;

#[derive(Default)]
pub(super) struct Worker {
    pub balancers: Slots<balancer::BalancerPlugin>,
    pub policies: Slots<policy::PolicyPlugin>,
    pub dns: Slots<dns::DnsPlugin>,
}

thread_local! {
    pub(super) static WORKER: RefCell<Worker> = RefCell::new(Worker::default());
}

/// Bounds the per-worker tables: beyond this many slots, slots whose Service view is gone
/// from every snapshot are dropped.
const PRUNE_AT: usize = 4096;

/// This worker's slot for `svc`'s `port` (port 0: the whole Service; bit 16 set: the
/// node-local view of the port).
pub(super) fn slot<'a, B>(
    slots: &'a mut Slots<B>,
    runtime: u64,
    svc: &ServiceView,
    port: u32,
) -> &'a mut Slot<B> {
    if slots.len() > PRUNE_AT {
        slots.retain(|_, s| s.live.as_ref().is_some_and(|l| l.pushed.strong_count() > 0));
    }
    let h = FxBuildHasher.hash_one((&svc.namespace, &svc.name, port));
    let slot = slots
        .entry((runtime, h))
        .or_insert_with(|| Slot::new(svc, port));
    if !slot.is_for(svc, port) {
        *slot = Slot::new(svc, port);
    }
    slot
}

pub(super) fn classify(e: &wasmtime::Error) -> ErrorKind {
    if let Some(t) = e.downcast_ref::<wasmtime::Trap>() {
        return match t {
            wasmtime::Trap::Interrupt | wasmtime::Trap::OutOfFuel => ErrorKind::timeout,
            _ => ErrorKind::trap,
        };
    }
    let msg = format!("{e:#}");
    if msg.contains("memory") && (msg.contains("grow") || msg.contains("limit")) {
        ErrorKind::memory
    } else {
        ErrorKind::trap
    }
}

/// What a plugin's `configure` asked of the host (`types.settings`).
#[derive(Default)]
pub(super) struct Asked {
    /// Request headers whose values the context carries.
    pub headers: Vec<String>,
    /// Balancers: `feedback` calls after each connection or request.
    pub feedback: bool,
    /// The context carries the HTTP method and path.
    pub request_line: bool,
}

impl From<types::Settings> for Asked {
    fn from(s: types::Settings) -> Self {
        Asked {
            headers: s.headers,
            feedback: s.feedback,
            request_line: s.request_line,
        }
    }
}

/// What differs between hooks when creating and configuring an instance.
pub(super) trait HookKind {
    type Bindings;
    const HOOK: Hook;
    /// `<hook>-state` interface name.
    const STATE: &'static str;
    fn pre(p: &LoadedPlugin) -> Option<&InstancePre<HostState>>;
    fn has_state(p: &LoadedPlugin) -> bool;
    fn bind(store: &mut Store<HostState>, instance: &Instance) -> wasmtime::Result<Self::Bindings>;
    /// `Ok(Err(msg))`: the plugin refused the config. `Ok(Ok(asked))`: accepted.
    fn configure(
        b: &Self::Bindings,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<Asked, String>>;
}

pub(super) struct BalancerHook;
pub(super) struct PolicyHook;
pub(super) struct DnsHook;

impl HookKind for BalancerHook {
    type Bindings = balancer::BalancerPlugin;
    const HOOK: Hook = Hook::balancer;
    const STATE: &'static str = "balancer-state";
    fn pre(p: &LoadedPlugin) -> Option<&InstancePre<HostState>> {
        p.hooks.balancer.as_ref().map(|b| b.instance_pre())
    }
    fn has_state(p: &LoadedPlugin) -> bool {
        p.hooks.balancer_state
    }
    fn bind(store: &mut Store<HostState>, instance: &Instance) -> wasmtime::Result<Self::Bindings> {
        balancer::BalancerPlugin::new(store, instance)
    }
    fn configure(
        b: &Self::Bindings,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<Asked, String>> {
        Ok(b.switchyard_plugin_balancer()
            .call_configure(store, config)?
            .map(Asked::from))
    }
}

impl HookKind for PolicyHook {
    type Bindings = policy::PolicyPlugin;
    const HOOK: Hook = Hook::policy;
    const STATE: &'static str = "policy-state";
    fn pre(p: &LoadedPlugin) -> Option<&InstancePre<HostState>> {
        p.hooks.policy.as_ref().map(|b| b.instance_pre())
    }
    fn has_state(p: &LoadedPlugin) -> bool {
        p.hooks.policy_state
    }
    fn bind(store: &mut Store<HostState>, instance: &Instance) -> wasmtime::Result<Self::Bindings> {
        policy::PolicyPlugin::new(store, instance)
    }
    fn configure(
        b: &Self::Bindings,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<Asked, String>> {
        Ok(b.switchyard_plugin_policy()
            .call_configure(store, config)?
            .map(|s| Asked {
                feedback: false, // a balancer's setting
                ..s.into()
            }))
    }
}

impl HookKind for DnsHook {
    type Bindings = dns::DnsPlugin;
    const HOOK: Hook = Hook::dns;
    const STATE: &'static str = "dns-state";
    fn pre(p: &LoadedPlugin) -> Option<&InstancePre<HostState>> {
        p.hooks.dns.as_ref().map(|b| b.instance_pre())
    }
    fn has_state(p: &LoadedPlugin) -> bool {
        p.hooks.dns_state
    }
    fn bind(store: &mut Store<HostState>, instance: &Instance) -> wasmtime::Result<Self::Bindings> {
        dns::DnsPlugin::new(store, instance)
    }
    fn configure(
        b: &Self::Bindings,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<Asked, String>> {
        Ok(b.switchyard_plugin_dns()
            .call_configure(store, config)?
            .map(|()| Asked::default()))
    }
}

impl Plugins {
    fn new_store(&self, plugin: &LoadedPlugin) -> Store<HostState> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .trap_on_grow_failure(true)
            .instances(8)
            .memories(4)
            .tables(8)
            .table_elements(100_000)
            .build();
        let state = HostState::new(
            plugin.name.clone(),
            limits,
            self.metrics.clone(),
            self.runtime.started,
        );
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        self.metrics.instances.inc();
        store
    }

    /// Records a failed call: counter, and a log line for the first and every 1000th.
    pub(super) fn failed(
        &self,
        plugin: &str,
        hook: Hook,
        kind: ErrorKind,
        svc: &ServiceView,
        detail: &str,
    ) {
        let n = self.metrics.error(plugin, hook, kind);
        if n.is_multiple_of(1000) {
            tracing::warn!(
                plugin,
                hook = ?hook,
                kind = ?kind,
                service = %format_args!("{}/{}", svc.namespace, svc.name),
                errors = n + 1,
                "plugin call failed, using the native default: {detail}"
            );
        }
    }

    /// The loaded plugin `r` names, if it has hook `H`; otherwise counts a `missing` error.
    /// Looks it up in `reg`, a registry view the caller holds for the call, so the hot path
    /// takes no reference count.
    pub(super) fn current<'a, H: HookKind>(
        &self,
        reg: &'a Registry,
        r: &PluginRef,
        svc: &ServiceView,
    ) -> Option<&'a Arc<LoadedPlugin>> {
        let p = reg.get(&*r.name);
        match p {
            Some(p) if H::pre(p).is_some() => Some(p),
            _ => {
                let detail = match p {
                    None => format!("no plugin named {:?} is loaded", r.name),
                    Some(p) => format!(
                        "plugin {:?} has no {:?} hook (it has: {})",
                        r.name,
                        H::HOOK,
                        p.hook_names().join(", ")
                    ),
                };
                self.failed(&r.name, H::HOOK, ErrorKind::missing, svc, &detail);
                None
            }
        }
    }

    pub(super) fn context(
        &self,
        req: &Request<'_>,
        service_port: u16,
        asked: &Asked,
    ) -> types::Context {
        // Strings are copied into the guest through its allocator: only what it asked for.
        let line = |s: Option<&str>| s.filter(|_| asked.request_line).map(str::to_string);
        types::Context {
            client: ip(req.client.ip()),
            client_port: req.client.port(),
            service_port,
            protocol: req.protocol,
            method: line(req.method),
            path: line(req.path),
            headers: match req.header {
                Some(h) if !asked.headers.is_empty() => {
                    Some(asked.headers.iter().map(|n| h(n)).collect())
                }
                _ => None,
            },
        }
    }

    /// Makes sure `slot` holds a live instance of `plugin` configured with `r.config`.
    /// False: use the fallback for this call (the reason is already counted).
    pub(super) fn ensure<H: HookKind>(
        &self,
        slot: &mut Slot<H::Bindings>,
        plugin: &Arc<LoadedPlugin>,
        r: &PluginRef,
        svc: &ServiceView,
    ) -> bool {
        let same = |p: &Arc<LoadedPlugin>, c: &Arc<str>| {
            Arc::ptr_eq(p, plugin) && (Arc::ptr_eq(c, &r.config) || **c == *r.config)
        };
        if let Some((p, c)) = &slot.refused {
            if p.upgrade().is_some_and(|p| same(&p, c)) {
                return false;
            }
            slot.refused = None;
        }
        if slot
            .live
            .as_ref()
            .is_some_and(|l| same(&l.plugin, &l.config))
        {
            return true;
        }
        let old = slot.live.take();
        match self.new_live::<H>(plugin, r, old) {
            Ok(live) => {
                slot.live = Some(live);
                true
            }
            Err((kind, detail)) => {
                self.failed(&r.name, H::HOOK, kind, svc, &detail);
                if kind == ErrorKind::config {
                    slot.refused = Some((Arc::downgrade(plugin), r.config.clone()));
                }
                false
            }
        }
    }

    fn new_live<H: HookKind>(
        &self,
        plugin: &Arc<LoadedPlugin>,
        r: &PluginRef,
        old: Option<Live<H::Bindings>>,
    ) -> Result<Live<H::Bindings>, (ErrorKind, String)> {
        let pre = H::pre(plugin).expect("checked by current()");
        let mut store = self.new_store(plugin);
        self.limits.setup(&mut store);
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| (ErrorKind::instantiate, format!("instantiate: {e:#}")))?;
        let bindings = H::bind(&mut store, &instance)
            .map_err(|e| (ErrorKind::instantiate, format!("bind: {e:#}")))?;
        let asked = match H::configure(&bindings, &mut store, &r.config) {
            Ok(Ok(a)) => a,
            Ok(Err(msg)) => {
                return Err((
                    ErrorKind::config,
                    format!("configure refused the config: {msg}"),
                ));
            }
            Err(e) => return Err((classify(&e), format!("configure: {e:#}"))),
        };
        let mut live = Live {
            plugin: plugin.clone(),
            config: r.config.clone(),
            store,
            instance,
            bindings,
            asked,
            pushed: Weak::new(),
            ids: Vec::new(),
        };
        if let Some(mut old) = old.filter(|o| {
            H::has_state(&o.plugin) && H::has_state(plugin) && !Arc::ptr_eq(&o.plugin, plugin)
        }) {
            self.hand_off(&mut old, &mut live, H::STATE);
        }
        Ok(live)
    }

    /// Moves state from an old instance to its replacement through `<iface>`'s
    /// snapshot/restore. Failures only cost the state, never the swap.
    fn hand_off<B>(&self, from: &mut Live<B>, to: &mut Live<B>, iface: &str) {
        let name = format!("{PACKAGE}/{iface}@{VERSION}");
        let result = (|| -> wasmtime::Result<()> {
            let (fs, fi) = (&mut from.store, &from.instance);
            let idx = fi
                .get_export_index(&mut *fs, None, &name)
                .ok_or_else(|| wasmtime::format_err!("no {name}"))?;
            let snap = fi
                .get_export_index(&mut *fs, Some(&idx), "snapshot")
                .ok_or_else(|| wasmtime::format_err!("no snapshot"))?;
            let f = fi.get_typed_func::<(), (Vec<u8>,)>(&mut *fs, &snap)?;
            self.limits.setup(fs);
            let (data,) = f.call(&mut *fs, ())?;
            let (ts, ti) = (&mut to.store, &to.instance);
            let idx = ti
                .get_export_index(&mut *ts, None, &name)
                .ok_or_else(|| wasmtime::format_err!("no {name}"))?;
            let rest = ti
                .get_export_index(&mut *ts, Some(&idx), "restore")
                .ok_or_else(|| wasmtime::format_err!("no restore"))?;
            let g = ti.get_typed_func::<(&[u8],), ()>(&mut *ts, &rest)?;
            self.limits.setup(ts);
            g.call(&mut *ts, (&data,))?;
            Ok(())
        })();
        match result {
            Ok(()) => tracing::debug!(iface, "plugin state handed to the new version"),
            Err(e) => tracing::warn!(iface, "plugin state hand-off failed, starting fresh: {e:#}"),
        }
    }
}
