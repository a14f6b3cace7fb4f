//! `least-conn`: the usable endpoint with the fewest connections or requests in flight on this
//! worker (each pick counts one, each `feedback` ends one). Ties go round-robin.

use std::collections::HashMap;
use switchyard_sdk::{Balancer, Context, Endpoint, Outcome, Service, Settings};

#[derive(Default)]
pub struct LeastConn {
    ids: Vec<u32>,
    active: HashMap<u32, u32>,
    next: usize,
}

impl Balancer for LeastConn {
    fn configure(&mut self, _config: &str) -> Result<Settings, String> {
        // `feedback` is how a connection or request in flight ends.
        Ok(Settings {
            feedback: true,
            ..Settings::default()
        })
    }

    fn update(&mut self, _service: &Service, endpoints: &[Endpoint]) {
        self.ids = switchyard_sdk::usable(endpoints).map(|e| e.id).collect();
        // Keep counts of endpoints that stay; connections to removed ones drain elsewhere.
        let keep: HashMap<u32, u32> = endpoints
            .iter()
            .map(|e| (e.id, self.active.get(&e.id).copied().unwrap_or(0)))
            .collect();
        self.active = keep;
    }

    fn pick(&mut self, _ctx: &Context) -> Option<u32> {
        let n = self.ids.len();
        if n == 0 {
            return None;
        }
        self.next = (self.next + 1) % n;
        let mut best = self.ids[self.next];
        let mut best_load = u32::MAX;
        for k in 0..n {
            let id = self.ids[(self.next + k) % n];
            let load = self.active.get(&id).copied().unwrap_or(0);
            if load < best_load {
                best = id;
                best_load = load;
            }
        }
        *self.active.entry(best).or_default() += 1;
        Some(best)
    }

    fn feedback(&mut self, endpoint: u32, _outcome: Outcome) {
        if let Some(c) = self.active.get_mut(&endpoint) {
            *c = c.saturating_sub(1);
        }
    }
}

switchyard_sdk::export_balancer!(LeastConn);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testing::{Harness, endpoints};

    #[test]
    fn avoids_the_busy_endpoint() {
        let mut h = Harness::new(LeastConn::default());
        h.update(endpoints(3));
        // Three long-lived connections, one per endpoint; then two finish on 0 and 2.
        let a = h.pick_from("10.0.0.1").unwrap();
        let b = h.pick_from("10.0.0.1").unwrap();
        let c = h.pick_from("10.0.0.1").unwrap();
        let mut all = vec![a, b, c];
        all.sort();
        assert_eq!(all, [0, 1, 2]);
        h.feedback(0, Outcome::default());
        h.feedback(2, Outcome::default());
        // Endpoint 1 still has one open: the next picks go to 0 and 2 first.
        let mut next = vec![
            h.pick_from("10.0.0.1").unwrap(),
            h.pick_from("10.0.0.1").unwrap(),
        ];
        next.sort();
        assert_eq!(next, [0, 2]);
    }
}
