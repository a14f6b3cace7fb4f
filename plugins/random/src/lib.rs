//! `random`: a uniformly random usable endpoint, as kube-proxy's iptables mode chooses.

use switchyard_sdk::{Balancer, Context, Endpoint, Service, host};

#[derive(Default)]
pub struct Random {
    ids: Vec<u32>,
}

impl Balancer for Random {
    fn update(&mut self, _service: &Service, endpoints: &[Endpoint]) {
        self.ids = switchyard_sdk::usable(endpoints).map(|e| e.id).collect();
    }

    fn pick(&mut self, _ctx: &Context) -> Option<u32> {
        if self.ids.is_empty() {
            return None;
        }
        // Multiply-shift instead of `%`: unbiased enough and no division.
        let i = ((host::random() >> 32) * self.ids.len() as u64) >> 32;
        Some(self.ids[i as usize])
    }
}

switchyard_sdk::export_balancer!(Random);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testing::{Harness, endpoints};

    #[test]
    fn spreads_evenly() {
        let mut h = Harness::new(Random::default());
        h.update(endpoints(4));
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[h.pick_from("10.0.0.1").unwrap() as usize] += 1;
        }
        assert!(
            counts.iter().all(|c| (9_000..11_000).contains(c)),
            "{counts:?}"
        );
    }
}
