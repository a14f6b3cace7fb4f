//! An example balancer: each client address sticks to one endpoint (rendezvous hashing, so
//! only the clients of a leaving endpoint move). Build it with
//! `cargo build --release --target wasm32-wasip2 -p my-balancer` and load it with
//! `switchyard plugin load my-balancer target/wasm32-wasip2/release/my_balancer.wasm`.

use switchyard_sdk::{Balancer, Context, Endpoint, Service, hash::mix};

#[derive(Default)]
pub struct MyBalancer {
    ids: Vec<u32>,
}

impl Balancer for MyBalancer {
    fn update(&mut self, _service: &Service, endpoints: &[Endpoint]) {
        self.ids = switchyard_sdk::usable(endpoints).map(|e| e.id).collect();
    }

    fn pick(&mut self, ctx: &Context) -> Option<u32> {
        let client = mix(ctx.client.lo ^ mix(ctx.client.hi));
        // Highest score wins; None (no endpoints) lets the gateway fall back.
        self.ids
            .iter()
            .copied()
            .max_by_key(|id| mix(client ^ *id as u64))
    }
}

switchyard_sdk::export_balancer!(MyBalancer);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testing::{Harness, endpoints};

    #[test]
    fn a_client_sticks_and_clients_spread() {
        let mut h = Harness::new(MyBalancer::default());
        h.update(endpoints(4));
        let first = h.pick_from("10.0.0.7");
        assert!((0..20).all(|_| h.pick_from("10.0.0.7") == first));
        let mut seen: Vec<u32> = (0..200)
            .map(|i| h.pick_from(&format!("10.0.{i}.1")).unwrap())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, [0, 1, 2, 3]);
    }
}
