//! `rate-limit`: a token bucket per client address (`"per": "client"`, the default) or one
//! for the whole Service (`"per": "service"`). Connections over the limit are refused;
//! HTTP requests over it get `429 Too Many Requests` with `Retry-After: 1`.
//! Config: `{"rate": 100, "burst": 200, "per": "client"}`. Buckets survive a hot swap.

use serde::Deserialize;
use std::collections::HashMap;
use switchyard_sdk::bucket::TokenBucket;
use switchyard_sdk::policy::{Action, Header, Policy, RequestHead, Response, Verdict};
use switchyard_sdk::{Context, Ip, Settings, host};

/// Client buckets kept at most; the oldest half is dropped beyond it.
const MAX_CLIENTS: usize = 65_536;

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
enum Per {
    #[default]
    Client,
    Service,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    rate: f64,
    burst: Option<f64>,
    #[serde(default)]
    per: Per,
}

#[derive(Default)]
pub struct RateLimit {
    config: Option<Config>,
    service: Option<TokenBucket>,
    clients: HashMap<Ip, (TokenBucket, u64)>,
}

impl RateLimit {
    fn admit(&mut self, client: Ip) -> bool {
        let Some(c) = &self.config else { return true };
        let now = host::now_nanos();
        let (rate, burst) = (c.rate, c.burst.unwrap_or(c.rate));
        let allowed = match c.per {
            Per::Service => self
                .service
                .get_or_insert_with(|| TokenBucket::new(rate, burst, now))
                .take(1.0, now),
            Per::Client => {
                if self.clients.len() >= MAX_CLIENTS && !self.clients.contains_key(&client) {
                    let mut ages: Vec<u64> = self.clients.values().map(|(_, t)| *t).collect();
                    ages.sort_unstable();
                    let cut = ages[ages.len() / 2];
                    self.clients.retain(|_, (_, t)| *t > cut);
                }
                let (b, seen) = self
                    .clients
                    .entry(client)
                    .or_insert_with(|| (TokenBucket::new(rate, burst, now), now));
                *seen = now;
                b.take(1.0, now)
            }
        };
        if !allowed {
            host::counter_add("limited", 1);
        }
        allowed
    }
}

impl Policy for RateLimit {
    fn configure(&mut self, config: &str) -> Result<Settings, String> {
        let c: Config =
            serde_json::from_str(config).map_err(|e| format!("rate-limit config: {e}"))?;
        let valid = |x: f64, min: f64| x.is_finite() && x >= min;
        if !valid(c.rate, f64::MIN_POSITIVE) || c.burst.is_some_and(|b| !valid(b, 1.0)) {
            return Err("rate-limit config: rate must be > 0 and burst >= 1".into());
        }
        self.config = Some(c);
        Ok(Settings::default())
    }

    fn on_connect(&mut self, ctx: &Context) -> Verdict {
        if self.admit(ctx.client) {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }

    fn on_request(&mut self, ctx: &Context, _head: &RequestHead) -> Action {
        if self.admit(ctx.client) {
            return Action::default();
        }
        Action::Respond(Response {
            status: 429,
            headers: vec![Header {
                name: "retry-after".into(),
                value: "1".into(),
            }],
            body: b"rate limited\n".to_vec(),
        })
    }

    fn snapshot(&mut self) -> Vec<u8> {
        // Only the clients that are currently limited matter; record them as "empty bucket".
        let now = host::now_nanos();
        let mut out = Vec::new();
        for (ip, (b, _)) in &self.clients {
            if !b.clone().take(1.0, now) {
                out.extend_from_slice(&ip.hi.to_le_bytes());
                out.extend_from_slice(&ip.lo.to_le_bytes());
                out.push(ip.v6 as u8);
            }
        }
        out
    }

    fn restore(&mut self, data: &[u8]) {
        let Some(c) = &self.config else { return };
        let now = host::now_nanos();
        for rec in data.chunks_exact(17) {
            let ip = Ip {
                hi: u64::from_le_bytes(rec[0..8].try_into().unwrap()),
                lo: u64::from_le_bytes(rec[8..16].try_into().unwrap()),
                v6: rec[16] != 0,
            };
            let burst = c.burst.unwrap_or(c.rate);
            let mut b = TokenBucket::new(c.rate, burst, now);
            while b.take(1.0, now) {}
            self.clients.insert(ip, (b, now));
        }
    }
}

switchyard_sdk::export_policy!(RateLimit);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testing::context;

    #[test]
    fn limits_each_client_on_its_own() {
        let mut p = RateLimit::default();
        p.configure(r#"{"rate": 0.001, "burst": 3}"#).unwrap();
        let a = context("10.0.0.1");
        let b = context("10.0.0.2");
        for _ in 0..3 {
            assert_eq!(p.on_connect(&a), Verdict::Allow);
        }
        assert_eq!(p.on_connect(&a), Verdict::Deny);
        assert_eq!(p.on_connect(&b), Verdict::Allow);
        match p.on_request(&a, &RequestHead::default()) {
            Action::Respond(r) => assert_eq!(r.status, 429),
            other => panic!("{other:?}"),
        }
        // The limited client stays limited across a swap.
        let state = p.snapshot();
        let mut q = RateLimit::default();
        q.configure(r#"{"rate": 0.001, "burst": 3}"#).unwrap();
        q.restore(&state);
        assert_eq!(q.on_connect(&a), Verdict::Deny);
        assert_eq!(q.on_connect(&b), Verdict::Allow);
    }

    #[test]
    fn per_service_bucket_and_bad_config() {
        let mut p = RateLimit::default();
        p.configure(r#"{"rate": 0.001, "burst": 2, "per": "service"}"#)
            .unwrap();
        assert_eq!(p.on_connect(&context("10.0.0.1")), Verdict::Allow);
        assert_eq!(p.on_connect(&context("10.0.0.2")), Verdict::Allow);
        assert_eq!(p.on_connect(&context("10.0.0.3")), Verdict::Deny);
        assert!(p.configure("{}").is_err());
        assert!(p.configure(r#"{"rate": 0}"#).is_err());
    }
}
