//! The Wasm plugin runtime: compiles and checks plugin components, keeps the named set of
//! loaded plugins behind `arc-swap` (built-ins, `--config` files, the admin API), and runs
//! hook calls on per-worker instances with deadlines, a memory cap and native fallbacks.
//!
//! - `engine`: the shared wasmtime `Engine`, epoch ticker, compile cache on disk.
//! - `loader`: which hooks a component exports, version checks, pre-instantiation.
//! - `bindings`: `bindgen!` output and the `host` imports.
//! - `worker`: per-thread instances, limits, recycling and state hand-off.
//! - `calls`: the hook calls (pick, feedback, policy, DNS shaping) and their fallbacks.
//! - `builtin`: the plugins embedded in the binary.
//! - `files`: `--config` plugin files, watched with `notify`.
//!
//! Touches the data dir (`plugins/` for admin-loaded modules, `plugin-cache/` for compiled
//! artifacts) and nothing else.

pub mod bindings;
pub mod builtin;
pub mod calls;
pub mod engine;
pub mod files;
pub mod loader;
pub mod metrics;
#[cfg(test)]
mod tests;
pub mod wasi;
pub mod worker;

use rustc_hash::FxHashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use wasmtime::component::Linker;

use bindings::HostState;
use loader::{LoadedPlugin, Source};
use metrics::{Hook, PluginMetrics};

pub use calls::{Action, Answer, HeaderEdit, Question, RequestHead, Verdict};
pub use worker::Request;

/// Why a plugin was refused. The previously loaded plugin of that name keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("not a WebAssembly file: {0}")]
    NotWasm(String),
    #[error(
        "a core WebAssembly module, not a component: build the plugin with `cargo build --target wasm32-wasip2` (or wrap it with `wasm-tools component new`)"
    )]
    NotComponent,
    #[error(
        "built for {found}, but this gateway speaks {expected}; rebuild it against a matching switchyard-sdk"
    )]
    Version { found: String, expected: String },
    #[error(
        "not a switchyard plugin: it exports none of switchyard:plugin/balancer, policy or dns ({0})"
    )]
    World(String),
    #[error("compiling the component failed: {0}")]
    Compile(String),
    #[error("linking the component failed: {0}")]
    Link(String),
    #[error(
        "invalid plugin name {0:?}: use lowercase letters, digits and '-', at most 63 characters"
    )]
    Name(String),
    #[error("no plugin named {0:?}")]
    NotFound(String),
    #[error(
        "plugin {0:?} is built in and cannot be removed (load another module under its name to replace it)"
    )]
    Builtin(String),
    #[error("plugin engine: {0}")]
    Engine(String),
    #[error("plugin cache: {0}")]
    Cache(String),
    #[error("storing the plugin: {0}")]
    Store(String),
}

/// Per-call limits. A call's CPU budget is counted in guest instructions (wasmtime fuel,
/// about one per nanosecond), so a worker thread the OS preempts mid-call is not mistaken for
/// a slow plugin; an epoch deadline in wall-clock time backs it up.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Fuel for a pick / policy / DNS call.
    pub call_fuel: u64,
    /// Fuel for configure, update and state hand-off.
    pub setup_fuel: u64,
    /// Wall-clock backstop for a pick / policy / DNS call, in epoch ticks.
    pub call_ticks: u64,
    /// Wall-clock backstop for setup calls, in epoch ticks.
    pub setup_ticks: u64,
    /// Linear memory cap per instance.
    pub memory_bytes: usize,
}

impl Limits {
    pub fn new(call_timeout: std::time::Duration, memory_bytes: usize) -> Self {
        let tick = engine::TICK.as_micros() as u64;
        let us = call_timeout.as_micros() as u64;
        Limits {
            call_fuel: us * 1_000,
            setup_fuel: 2_000_000_000, // ~2 s of guest work: update with 100k endpoints
            // Wall clock: 20x the budget rounded up to whole ticks (so at least one), so
            // only a thread stalled far beyond any scheduling delay trips it. One tick
            // more, as the first one may come at once.
            call_ticks: (us * 20).div_ceil(tick).max(1) + 1,
            setup_ticks: 5_000_000_u64.div_ceil(tick) + 1,
            memory_bytes,
        }
    }

    /// Arms `store` for one pick / policy / DNS call.
    pub(crate) fn call(&self, store: &mut wasmtime::Store<HostState>) {
        let _ = store.set_fuel(self.call_fuel);
        store.set_epoch_deadline(self.call_ticks);
    }

    /// Arms `store` for configure, update or a state hand-off.
    pub(crate) fn setup(&self, store: &mut wasmtime::Store<HostState>) {
        let _ = store.set_fuel(self.setup_fuel);
        store.set_epoch_deadline(self.setup_ticks);
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(std::time::Duration::from_micros(500), 16 << 20)
    }
}

/// What `GET /plugins` and `switchyard plugin list` show for one plugin.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct PluginInfo {
    pub name: String,
    pub hooks: Vec<String>,
    pub sha256: String,
    pub size: usize,
    pub source: String,
    pub loaded_at: String,
    pub compile_ms: f64,
    pub cached: bool,
    pub state_handoff: bool,
    pub calls: u64,
    pub errors: u64,
}

/// Loaded plugins by name.
type Registry = FxHashMap<Arc<str>, Arc<LoadedPlugin>>;

static RUNTIME_IDS: AtomicU64 = AtomicU64::new(1);

/// The plugin runtime: one per gateway.
pub struct Plugins {
    id: u64,
    runtime: engine::Runtime,
    linker: Linker<HostState>,
    registry: ArcSwap<Registry>,
    /// Serialises loads (not calls): a load reads, compiles and swaps.
    load_lock: parking_lot::Mutex<()>,
    limits: Limits,
    pub metrics: Arc<PluginMetrics>,
    store_dir: Option<PathBuf>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

impl Plugins {
    /// A runtime with no plugins. `store_dir`: where admin-loaded modules are kept;
    /// `cache_dir`: compiled artifacts (`None`: nothing on disk).
    pub fn new(
        store_dir: Option<PathBuf>,
        cache_dir: Option<PathBuf>,
        limits: Limits,
        metrics: Arc<PluginMetrics>,
    ) -> Result<Self, PluginError> {
        let runtime = engine::Runtime::new(cache_dir)?;
        let mut linker = Linker::new(&runtime.engine);
        bindings::balancer::BalancerPlugin::add_to_linker::<
            HostState,
            wasmtime::component::HasSelf<HostState>,
        >(&mut linker, |s| s)
        .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        if let Some(d) = &store_dir {
            std::fs::create_dir_all(d)
                .map_err(|e| PluginError::Store(format!("{}: {e}", d.display())))?;
        }
        Ok(Plugins {
            id: RUNTIME_IDS.fetch_add(1, Ordering::Relaxed),
            runtime,
            linker,
            registry: ArcSwap::from_pointee(FxHashMap::default()),
            load_lock: parking_lot::Mutex::new(()),
            limits,
            metrics,
            store_dir,
        })
    }

    /// Compiles, checks and publishes `bytes` as plugin `name`. New calls use it at once;
    /// each worker's instance of the old version is replaced on its next call (with state
    /// hand-off when both versions export it). On error nothing changes.
    pub fn load(
        &self,
        name: &str,
        bytes: &[u8],
        source: Source,
    ) -> Result<PluginInfo, PluginError> {
        if !valid_name(name) {
            return Err(PluginError::Name(name.to_string()));
        }
        let started = Instant::now();
        let (component, sha256, from_cache) = self.runtime.compile(bytes)?;
        let compile_ms = started.elapsed().as_secs_f64() * 1000.0;
        let hooks = loader::load(name, component, &self.linker, &self.metrics)?;
        if let (Source::Admin, Some(d)) = (&source, &self.store_dir) {
            engine::write_atomic(&d.join(format!("{name}.wasm")), bytes)
                .map_err(|e| PluginError::Store(format!("{}: {e}", d.display())))?;
        }
        let plugin = Arc::new(LoadedPlugin {
            name: Arc::from(name),
            sha256,
            size: bytes.len(),
            source,
            loaded_at: SystemTime::now(),
            compile_ms,
            from_cache,
            hooks,
        });
        let _guard = self.load_lock.lock();
        let mut next = FxHashMap::clone(&self.registry.load());
        next.insert(plugin.name.clone(), plugin.clone());
        self.registry.store(Arc::new(next));
        self.metrics.swapped(name);
        tracing::info!(
            plugin = name,
            hooks = %plugin.hook_names().join(","),
            sha256 = %&plugin.sha256[..12],
            compile_ms = format_args!("{compile_ms:.1}"),
            cached = from_cache,
            "plugin loaded"
        );
        Ok(self.info(&plugin))
    }

    /// Unloads an admin- or file-loaded plugin. Services naming it fall back to the default.
    pub fn remove(&self, name: &str) -> Result<(), PluginError> {
        let _guard = self.load_lock.lock();
        let current = self.registry.load();
        let Some(p) = current.get(name) else {
            return Err(PluginError::NotFound(name.to_string()));
        };
        if p.source == Source::Builtin {
            return Err(PluginError::Builtin(name.to_string()));
        }
        if let Some(d) = &self.store_dir {
            let _ = std::fs::remove_file(d.join(format!("{name}.wasm")));
        }
        let mut next = FxHashMap::clone(&current);
        next.remove(name);
        self.registry.store(Arc::new(next));
        tracing::info!(plugin = name, "plugin removed");
        Ok(())
    }

    /// Loads the modules a previous run stored through the admin API.
    pub fn load_stored(&self) {
        let Some(d) = &self.store_dir else { return };
        let Ok(entries) = std::fs::read_dir(d) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| PluginError::Store(e.to_string()))
                .and_then(|b| self.load(&name, &b, Source::Admin))
            {
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(plugin = %name, path = %path.display(), "stored plugin not loaded: {e}")
                }
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<PluginInfo> {
        self.registry.load().get(name).map(|p| self.info(p))
    }

    pub fn list(&self) -> Vec<PluginInfo> {
        let mut v: Vec<PluginInfo> = self
            .registry
            .load()
            .values()
            .map(|p| self.info(p))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn info(&self, p: &LoadedPlugin) -> PluginInfo {
        let errors: u64 = [Hook::balancer, Hook::policy, Hook::dns]
            .into_iter()
            .flat_map(|hook| metrics::ErrorKind::ALL.map(move |kind| (hook, kind)))
            .map(|(hook, kind)| self.metrics.errors_of(&p.name, hook, kind))
            .sum();
        PluginInfo {
            name: p.name.to_string(),
            hooks: p.hook_names().into_iter().map(String::from).collect(),
            sha256: p.sha256.clone(),
            size: p.size,
            source: match &p.source {
                Source::Builtin => "builtin".to_string(),
                Source::Admin => "admin".to_string(),
                Source::File(f) => format!("file:{f}"),
            },
            loaded_at: jiff::Timestamp::try_from(p.loaded_at)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            compile_ms: (p.compile_ms * 10.0).round() / 10.0,
            cached: p.from_cache,
            state_handoff: p.hooks.balancer_state || p.hooks.policy_state || p.hooks.dns_state,
            calls: p.hooks.calls.iter().map(|c| c.get()).sum(),
            errors,
        }
    }
}
