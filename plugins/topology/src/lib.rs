//! `topology`: round-robin over the usable endpoints in the configured zone (or on the
//! configured node), falling back to all usable endpoints when none is local. Config:
//! `{"zone": "zone-a"}` and/or `{"node": "node-1"}` (node wins when both match).

use serde::Deserialize;
use switchyard_sdk::{Balancer, Context, Endpoint, Service, Settings};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    zone: Option<String>,
    node: Option<String>,
}

#[derive(Default)]
pub struct Topology {
    config: Config,
    ids: Vec<u32>,
    next: usize,
}

impl Balancer for Topology {
    fn configure(&mut self, config: &str) -> Result<Settings, String> {
        let c: Config = serde_json::from_str(if config.trim().is_empty() {
            "{}"
        } else {
            config
        })
        .map_err(|e| format!("topology config: {e}"))?;
        if c.zone.is_none() && c.node.is_none() {
            return Err("topology config: name a \"zone\" or a \"node\"".into());
        }
        self.config = c;
        Ok(Settings::default())
    }

    fn update(&mut self, _service: &Service, endpoints: &[Endpoint]) {
        let usable: Vec<&Endpoint> = switchyard_sdk::usable(endpoints).collect();
        let on_node: Vec<u32> = usable
            .iter()
            .filter(|e| self.config.node.is_some() && e.node == self.config.node)
            .map(|e| e.id)
            .collect();
        let in_zone: Vec<u32> = usable
            .iter()
            .filter(|e| self.config.zone.is_some() && e.zone == self.config.zone)
            .map(|e| e.id)
            .collect();
        self.ids = if !on_node.is_empty() {
            on_node
        } else if !in_zone.is_empty() {
            in_zone
        } else {
            usable.iter().map(|e| e.id).collect()
        };
    }

    fn pick(&mut self, _ctx: &Context) -> Option<u32> {
        if self.ids.is_empty() {
            return None;
        }
        self.next = (self.next + 1) % self.ids.len();
        Some(self.ids[self.next])
    }
}

switchyard_sdk::export_balancer!(Topology);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testing::{Harness, endpoints};

    #[test]
    fn prefers_the_zone_and_falls_back() {
        let mut h = Harness::new(Topology::default());
        h.configure(r#"{"zone":"a"}"#).unwrap();
        let mut eps = endpoints(4);
        eps[1].zone = Some("a".into());
        eps[3].zone = Some("a".into());
        eps[0].zone = Some("b".into());
        h.update(eps.clone());
        for _ in 0..10 {
            let id = h.pick_from("10.0.0.1").unwrap();
            assert!(id == 1 || id == 3, "picked {id}");
        }
        eps[1].ready = false;
        eps[3].ready = false;
        h.update(eps);
        let id = h.pick_from("10.0.0.1").unwrap();
        assert!(id == 0 || id == 2);
        assert!(h.configure("{}").is_err());
    }
}
