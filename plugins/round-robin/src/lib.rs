//! `round-robin`: each usable endpoint in turn. The gateway's default; its native fallback
//! does the same.

use switchyard_sdk::{Balancer, Context, Endpoint, Service};

#[derive(Default)]
pub struct RoundRobin {
    ids: Vec<u32>,
    next: usize,
}

impl Balancer for RoundRobin {
    fn update(&mut self, _service: &Service, endpoints: &[Endpoint]) {
        self.ids = switchyard_sdk::usable(endpoints).map(|e| e.id).collect();
    }

    fn pick(&mut self, _ctx: &Context) -> Option<u32> {
        if self.ids.is_empty() {
            return None;
        }
        self.next = (self.next + 1) % self.ids.len();
        Some(self.ids[self.next])
    }
}

switchyard_sdk::export_balancer!(RoundRobin);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testing::{Harness, endpoints};

    #[test]
    fn visits_every_endpoint_once_per_round() {
        let mut h = Harness::new(RoundRobin::default());
        h.update(endpoints(5));
        let mut seen: Vec<u32> = (0..5).map(|_| h.pick_from("10.0.0.1").unwrap()).collect();
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn skips_unready_and_answers_none_when_empty() {
        let mut h = Harness::new(RoundRobin::default());
        let mut eps = endpoints(3);
        eps[1].ready = false;
        h.update(eps);
        for _ in 0..10 {
            assert_ne!(h.pick_from("10.0.0.1"), Some(1));
        }
        h.update(Vec::new());
        assert_eq!(h.pick_from("10.0.0.1"), None);
    }
}
