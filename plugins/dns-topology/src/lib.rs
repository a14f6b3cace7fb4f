//! `dns-topology`: orders address answers by how close they are to the client — the longest
//! common address prefix first (like BIND's `sortlist`), keeping the original order among
//! equals. Config: `{"keep": 2}` additionally drops all but the closest `keep` answers.

use serde::Deserialize;
use switchyard_sdk::Ip;
use switchyard_sdk::dns::{Answer, DnsShaper, Question};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    keep: Option<usize>,
}

#[derive(Default)]
pub struct DnsTopology {
    config: Config,
}

fn common_prefix(a: std::net::IpAddr, b: Ip) -> u32 {
    let b = std::net::IpAddr::from(b);
    match (a, b) {
        (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) => {
            (u32::from(a) ^ u32::from(b)).leading_zeros()
        }
        (std::net::IpAddr::V6(a), std::net::IpAddr::V6(b)) => {
            (u128::from(a) ^ u128::from(b)).leading_zeros()
        }
        _ => 0,
    }
}

impl DnsShaper for DnsTopology {
    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = if config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(config).map_err(|e| format!("dns-topology config: {e}"))?
        };
        if self.config.keep == Some(0) {
            return Err("dns-topology config: keep must be at least 1".into());
        }
        Ok(())
    }

    fn shape(&mut self, _q: &Question, client: Ip, mut answers: Vec<Answer>) -> Vec<Answer> {
        answers.sort_by_key(|a| {
            std::cmp::Reverse(a.address().map_or(0, |ip| common_prefix(ip, client)))
        });
        if let Some(k) = self.config.keep {
            answers.truncate(k);
        }
        answers
    }
}

switchyard_sdk::export_dns!(DnsTopology);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::dns::rtype;

    #[test]
    fn closest_first() {
        let mut t = DnsTopology::default();
        t.configure(r#"{"keep": 2}"#).unwrap();
        let a = |o: [u8; 4]| Answer {
            name: "s.".into(),
            rtype: rtype::A,
            ttl: 5,
            rdata: o.to_vec(),
        };
        let out = t.shape(
            &Question {
                name: "s.".into(),
                qtype: rtype::A,
            },
            "10.2.0.9".parse().unwrap(),
            vec![a([10, 1, 0, 1]), a([192, 168, 0, 1]), a([10, 2, 0, 1])],
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].rdata, [10, 2, 0, 1]);
        assert_eq!(out[1].rdata, [10, 1, 0, 1]);
        assert!(t.configure(r#"{"keep": 0}"#).is_err());
    }
}
