//! `maglev`: Maglev consistent hashing (NSDI 2016) over the client address, or over a request
//! header named in the config (`{"header": "x-user"}`; requests without it hash the client
//! address). When one endpoint of N leaves, only about 1/N of keys move.

use serde::Deserialize;
use switchyard_sdk::maglev::{self, Maglev};
use switchyard_sdk::{Balancer, Context, Endpoint, Service, Settings, hash};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    header: Option<String>,
    table_size: Option<usize>,
}

#[derive(Default)]
pub struct MaglevBalancer {
    config: Config,
    table: Maglev,
}

impl Balancer for MaglevBalancer {
    fn configure(&mut self, config: &str) -> Result<Settings, String> {
        self.config = if config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(config).map_err(|e| format!("maglev config: {e}"))?
        };
        if let Some(s) = self.config.table_size.filter(|s| !maglev::is_prime(*s)) {
            return Err(format!("maglev config: table_size {s} is not prime"));
        }
        Ok(Settings {
            headers: self.config.header.iter().cloned().collect(),
            ..Settings::default()
        })
    }

    fn update(&mut self, _service: &Service, endpoints: &[Endpoint]) {
        let usable: Vec<(u32, Vec<u8>)> = switchyard_sdk::usable(endpoints)
            .map(|e| {
                let mut name = Vec::with_capacity(18);
                name.extend_from_slice(&e.address.hi.to_le_bytes());
                name.extend_from_slice(&e.address.lo.to_le_bytes());
                name.extend_from_slice(&e.port.to_le_bytes());
                (e.id, name)
            })
            .collect();
        let size = self
            .config
            .table_size
            .unwrap_or_else(|| maglev::size_for(usable.len()));
        self.table = Maglev::new(usable.iter().map(|(id, n)| (*id, n.as_slice())), size);
    }

    fn pick(&mut self, ctx: &Context) -> Option<u32> {
        let key = match ctx.headers.first() {
            Some(Some(value)) => hash::hash64(value.as_bytes()),
            _ => hash::mix(ctx.client.lo ^ hash::mix(ctx.client.hi)),
        };
        self.table.get(key)
    }
}

switchyard_sdk::export_balancer!(MaglevBalancer);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testing::{Harness, context, endpoints};

    #[test]
    fn same_client_same_endpoint_and_few_move_when_one_leaves() {
        let mut h = Harness::new(MaglevBalancer::default());
        h.configure("").unwrap();
        h.update(endpoints(10));
        let clients: Vec<String> = (0..5000)
            .map(|i| format!("10.{}.{}.7", i / 250, i % 250))
            .collect();
        let before: Vec<u32> = clients.iter().map(|c| h.pick_from(c).unwrap()).collect();
        assert_eq!(h.pick_from(&clients[0]).unwrap(), before[0]);
        let mut less = endpoints(10);
        less.remove(3);
        h.update(less);
        let after: Vec<u32> = clients.iter().map(|c| h.pick_from(c).unwrap()).collect();
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let moved_survivors = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != 3 && b != a)
            .count();
        eprintln!(
            "maglev plugin: {moved} of 5000 clients moved, {moved_survivors} not from the leaver"
        );
        assert!(moved < 5000 * 13 / 100, "moved {moved}");
        assert!(
            moved_survivors < 5000 * 3 / 100,
            "survivors moved {moved_survivors}"
        );
    }

    #[test]
    fn hashes_the_configured_header() {
        let mut h = Harness::new(MaglevBalancer::default());
        let s = h.configure(r#"{"header":"x-user"}"#).unwrap();
        assert_eq!(s.headers, ["x-user"]);
        h.update(endpoints(8));
        let mut ctx = context("10.0.0.1");
        ctx.headers = vec![Some("alice".into())];
        let alice = h.pick(&ctx);
        // A different client address with the same header value lands on the same endpoint.
        let mut ctx2 = context("10.9.9.9");
        ctx2.headers = vec![Some("alice".into())];
        assert_eq!(h.pick(&ctx2), alice);
    }

    #[test]
    fn refuses_bad_config() {
        let mut h = Harness::new(MaglevBalancer::default());
        assert!(
            h.configure("{not json")
                .unwrap_err()
                .contains("maglev config")
        );
        assert!(
            h.configure(r#"{"table_size": 1000}"#)
                .unwrap_err()
                .contains("not prime")
        );
        assert!(h.configure(r#"{"colour": 1}"#).is_err());
    }
}
