//! `limit`: at most `max` answers (default 1), keeping the first ones. Pair it behind
//! `rotate` semantics by using `{"max": 2, "rotate": true}`.

use serde::Deserialize;
use switchyard_sdk::Ip;
use switchyard_sdk::dns::{Answer, DnsShaper, Question};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    max: usize,
    rotate: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max: 1,
            rotate: false,
        }
    }
}

#[derive(Default)]
pub struct Limit {
    config: Config,
    turn: usize,
}

impl DnsShaper for Limit {
    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = if config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(config).map_err(|e| format!("limit config: {e}"))?
        };
        if self.config.max == 0 {
            return Err("limit config: max must be at least 1".into());
        }
        Ok(())
    }

    fn shape(&mut self, _q: &Question, _client: Ip, mut answers: Vec<Answer>) -> Vec<Answer> {
        if self.config.rotate && !answers.is_empty() {
            self.turn = self.turn.wrapping_add(1);
            let n = answers.len();
            answers.rotate_left(self.turn % n);
        }
        answers.truncate(self.config.max);
        answers
    }
}

switchyard_sdk::export_dns!(Limit);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::dns::rtype;

    #[test]
    fn keeps_at_most_max() {
        let mut l = Limit::default();
        l.configure(r#"{"max": 2}"#).unwrap();
        let answers: Vec<Answer> = (1..=5)
            .map(|i| Answer {
                name: "a.".into(),
                rtype: rtype::A,
                ttl: 5,
                rdata: vec![10, 0, 0, i],
            })
            .collect();
        let q = Question {
            name: "a.".into(),
            qtype: rtype::A,
        };
        let out = l.shape(&q, Ip::default(), answers);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].rdata[3], 1);
        assert!(l.configure(r#"{"max": 0}"#).is_err());
        assert!(l.configure("[").is_err());
    }
}
