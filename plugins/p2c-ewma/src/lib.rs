//! `p2c-ewma`: power of two random choices, keeping the endpoint with the lower cost, where
//! cost = EWMA of response latency x (requests in flight + 1) — linkerd's and Finagle's
//! "peak EWMA" balancer in its simplest form. Config: `{"half_life_ms": 10000}`.

use serde::Deserialize;
use std::collections::HashMap;
use switchyard_sdk::ewma::Ewma;
use switchyard_sdk::{Balancer, Context, Endpoint, Outcome, Service, Settings, host};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    half_life_ms: u64,
    /// Latency assumed for an endpoint with no samples yet, in microseconds.
    initial_micros: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            half_life_ms: 10_000,
            initial_micros: 1_000.0,
        }
    }
}

struct Stats {
    latency: Ewma,
    in_flight: u32,
}

#[derive(Default)]
pub struct P2cEwma {
    config: Config,
    ids: Vec<u32>,
    stats: HashMap<u32, Stats>,
}

impl P2cEwma {
    fn cost(&self, id: u32) -> f64 {
        match self.stats.get(&id) {
            Some(s) => s.latency.value() * (s.in_flight as f64 + 1.0),
            None => self.config.initial_micros,
        }
    }
}

impl Balancer for P2cEwma {
    fn configure(&mut self, config: &str) -> Result<Settings, String> {
        if !config.trim().is_empty() {
            self.config =
                serde_json::from_str(config).map_err(|e| format!("p2c-ewma config: {e}"))?;
        }
        // The latencies it balances on come from `feedback`.
        Ok(Settings {
            feedback: true,
            ..Settings::default()
        })
    }

    fn update(&mut self, _service: &Service, endpoints: &[Endpoint]) {
        self.ids = switchyard_sdk::usable(endpoints).map(|e| e.id).collect();
        let half_life = self.config.half_life_ms * 1_000_000;
        let initial = self.config.initial_micros;
        let mut stats = std::mem::take(&mut self.stats);
        self.stats = self
            .ids
            .iter()
            .map(|id| {
                let s = stats.remove(id).unwrap_or_else(|| Stats {
                    latency: Ewma::new(half_life, initial),
                    in_flight: 0,
                });
                (*id, s)
            })
            .collect();
    }

    fn pick(&mut self, _ctx: &Context) -> Option<u32> {
        let n = self.ids.len() as u64;
        let id = match n {
            0 => return None,
            1 => self.ids[0],
            _ => {
                let r = host::random();
                let a = (r % n) as usize;
                let b = ((r >> 32) % (n - 1)) as usize;
                let b = if b >= a { b + 1 } else { b };
                let (a, b) = (self.ids[a], self.ids[b]);
                if self.cost(a) <= self.cost(b) { a } else { b }
            }
        };
        if let Some(s) = self.stats.get_mut(&id) {
            s.in_flight += 1;
        }
        Some(id)
    }

    fn feedback(&mut self, endpoint: u32, outcome: Outcome) {
        let now = host::now_nanos();
        if let Some(s) = self.stats.get_mut(&endpoint) {
            s.in_flight = s.in_flight.saturating_sub(1);
            // A failure counts as slow, so errors steer traffic away like latency does.
            let sample = if outcome.success {
                outcome.response_micros.max(outcome.connect_micros) as f64
            } else {
                1_000_000.0
            };
            s.latency.observe(sample, now);
        }
    }
}

switchyard_sdk::export_balancer!(P2cEwma);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testing::{Harness, endpoints};

    #[test]
    fn steers_away_from_the_slow_endpoint() {
        let mut h = Harness::new(P2cEwma::default());
        h.configure("").unwrap();
        h.update(endpoints(3));
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            let id = h.pick_from("10.0.0.1").unwrap();
            counts[id as usize] += 1;
            let micros = if id == 2 { 50_000 } else { 500 };
            h.feedback(
                id,
                Outcome {
                    connect_micros: 100,
                    response_micros: micros,
                    success: true,
                },
            );
        }
        assert!(counts[2] < 300, "slow endpoint got {counts:?}");
        assert!(counts[0] > 1000 && counts[1] > 1000, "{counts:?}");
    }
}
