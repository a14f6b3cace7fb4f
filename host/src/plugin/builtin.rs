//! The built-in plugins, compiled to components by `host/build.rs` and embedded in the
//! binary, so `serve` has them with no extra step.

use super::Plugins;
use super::loader::Source;

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

impl Plugins {
    /// Compiles and publishes every built-in (from the compile cache after the first run).
    /// A built-in that fails is logged and skipped: the gateway serves without it.
    pub fn load_builtins(&self) -> usize {
        let mut n = 0;
        for (name, bytes) in BUILTINS {
            match self.load(name, bytes, Source::Builtin) {
                Ok(_) => n += 1,
                Err(e) => tracing::error!(plugin = name, "built-in plugin not loaded: {e}"),
            }
        }
        n
    }
}
