//! The one shared wasmtime `Engine` (component model, epoch interruption), the epoch ticker
//! thread that makes call deadlines work, and compilation with an on-disk cache of
//! precompiled artifacts keyed by the module's SHA-256 and the engine's compatibility hash.
//! Touches only its cache directory.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use super::PluginError;

/// How often the epoch advances. Epoch deadlines are only the wall-clock backstop (CPU
/// budgets are fuel, and no host import blocks), so a coarse tick is enough. Each wake-up of
/// the ticker preempts whatever runs on its core, a data plane worker under load: at 1 ms that
/// was ~1,700 involuntary context switches per 5 s of proxy load; at 10 ms it still cost 0.6%
/// of a core (61 µs of CPU per wake-up on this VM, from its `schedstat`), the gateway's only
/// background work when idle. At 100 ms it is ten wake-ups a second.
pub const TICK: Duration = Duration::from_millis(100);

/// The engine plus what every compile and call needs.
pub struct Runtime {
    pub engine: Engine,
    /// When the epoch ticker started; plugins' `now-nanos` counts from here.
    pub started: Instant,
    cache_dir: Option<PathBuf>,
    engine_tag: String,
    stop: Arc<AtomicBool>,
}

impl Runtime {
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.consume_fuel(true);
        config.parallel_compilation(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_tag = format!("{:016x}", h.finish());
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| PluginError::Cache(format!("creating {}: {e}", dir.display())))?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (ticker_engine, ticker_stop) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Engine(format!("epoch ticker: {e}")))?;
        Ok(Runtime {
            engine,
            started: Instant::now(),
            cache_dir,
            engine_tag,
            stop,
        })
    }

    /// Compiles `bytes`, or loads the artifact this host compiled before for the same bytes.
    /// Returns the component, its SHA-256 (hex) and whether the cache answered.
    pub fn compile(&self, bytes: &[u8]) -> Result<(Component, String, bool), PluginError> {
        check_magic(bytes)?;
        let sha = hex(&Sha256::digest(bytes));
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{sha}-{}.cwasm", self.engine_tag)));
        if let Some(path) = cached.as_ref().filter(|p| p.exists()) {
            {
                // SAFETY: the file is in our own cache directory, written by `precompile`
                // below with this same engine configuration (the tag in its name is the
                // engine's compatibility hash); wasmtime checks the header again.
                match unsafe { Component::deserialize_file(&self.engine, path) } {
                    Ok(c) => return Ok((c, sha, true)),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), "ignoring plugin cache entry: {e:#}")
                    }
                }
            }
        }
        let artifact = self
            .engine
            .precompile_component(bytes)
            .map_err(|e| PluginError::Compile(format!("{e:#}")))?;
        // SAFETY: the bytes were just produced by this engine's `precompile_component`.
        let component = unsafe { Component::deserialize(&self.engine, &artifact) }
            .map_err(|e| PluginError::Compile(format!("{e:#}")))?;
        if let Some(Err(e)) = cached.as_ref().map(|path| write_atomic(path, &artifact)) {
            tracing::warn!("could not cache the compiled plugin: {e}");
        }
        Ok((component, sha, false))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Refuses what is not a component with a message saying what it is instead.
fn check_magic(bytes: &[u8]) -> Result<(), PluginError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        let head: String = bytes
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(PluginError::NotWasm(format!(
            "{} bytes starting with [{head}]; a plugin is a WebAssembly component (\\0asm)",
            bytes.len()
        )));
    }
    // Bytes 4..8: version and layer. Core modules are version 1, layer 0; components layer 1.
    if bytes[6..8] == [0, 0] {
        return Err(PluginError::NotComponent);
    }
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
