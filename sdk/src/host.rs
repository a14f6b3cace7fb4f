//! What the gateway gives a plugin (`interface host`): logging, a monotonic clock, random
//! numbers and counters exported as Prometheus metrics. There is no filesystem, network or
//! environment access.
//!
//! Compiled natively (for `cargo test`), the same functions use the standard library: logs go
//! to stderr and counters to a per-thread table that [`counter`] reads back.

/// Severity of a [`log`] line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Something is wrong and traffic is affected.
    Error,
    /// Something unexpected that the plugin handled.
    Warn,
    /// Normal operation worth recording.
    Info,
    /// Details for debugging (shown with `RUST_LOG=debug`).
    Debug,
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;
    use crate::wasm::balancer::switchyard::plugin::host as h;

    pub fn log(level: Level, message: &str) {
        let level = match level {
            Level::Error => h::Level::Error,
            Level::Warn => h::Level::Warn,
            Level::Info => h::Level::Info,
            Level::Debug => h::Level::Debug,
        };
        h::log(level, message)
    }
    pub fn now_nanos() -> u64 {
        h::now_nanos()
    }
    pub fn random() -> u64 {
        h::random()
    }
    pub fn counter_add(name: &str, delta: u64) {
        h::counter_add(name, delta)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Level;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;
    use std::sync::OnceLock;
    use std::time::Instant;

    thread_local! {
        static RNG: Cell<u64> = Cell::new(0x9e37_79b9_7f4a_7c15 ^ std::process::id() as u64);
        pub(super) static COUNTERS: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
    }

    pub fn log(level: Level, message: &str) {
        eprintln!("[plugin {level:?}] {message}");
    }
    pub fn now_nanos() -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
    pub fn random() -> u64 {
        // splitmix64: good enough for tests, deterministic per thread.
        RNG.with(|s| {
            let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            s.set(x);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    }
    pub fn counter_add(name: &str, delta: u64) {
        COUNTERS.with(|c| *c.borrow_mut().entry(name.to_string()).or_default() += delta);
    }
}

/// A log line, rate-limited by the gateway and labelled with the plugin's name.
pub fn log(level: Level, message: &str) {
    imp::log(level, message)
}

/// Monotonic nanoseconds (not wall-clock time).
pub fn now_nanos() -> u64 {
    imp::now_nanos()
}

/// A random `u64` from the gateway.
pub fn random() -> u64 {
    imp::random()
}

/// Adds `delta` to the counter the gateway exports as
/// `switchyard_plugin_counter_total{plugin="…",name="…"}`.
pub fn counter_add(name: &str, delta: u64) {
    imp::counter_add(name, delta)
}

/// Native builds only: the value of a counter on this thread, for tests.
#[cfg(not(target_arch = "wasm32"))]
pub fn counter(name: &str) -> u64 {
    imp::COUNTERS.with(|c| c.borrow().get(name).copied().unwrap_or(0))
}
