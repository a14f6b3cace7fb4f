//! `source-ranges`: allow only clients whose address is in one of the listed CIDRs; others
//! are refused (L4) or get `403 Forbidden` (HTTP). Config: `{"allow": ["10.0.0.0/8"]}`.

use serde::Deserialize;
use switchyard_sdk::net::Cidr;
use switchyard_sdk::policy::{Action, Policy, RequestHead, Response, Verdict};
use switchyard_sdk::{Context, Settings, host};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    allow: Vec<String>,
}

#[derive(Default)]
pub struct SourceRanges {
    allow: Vec<Cidr>,
}

impl SourceRanges {
    fn allowed(&self, ctx: &Context) -> bool {
        let ok = self.allow.iter().any(|c| c.contains(ctx.client));
        if !ok {
            host::counter_add("denied", 1);
        }
        ok
    }
}

impl Policy for SourceRanges {
    fn configure(&mut self, config: &str) -> Result<Settings, String> {
        let c: Config =
            serde_json::from_str(config).map_err(|e| format!("source-ranges config: {e}"))?;
        self.allow = c
            .allow
            .iter()
            .map(|s| {
                s.parse::<Cidr>()
                    .map_err(|e| format!("source-ranges config: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Settings::default())
    }

    fn on_connect(&mut self, ctx: &Context) -> Verdict {
        if self.allowed(ctx) {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }

    fn on_request(&mut self, ctx: &Context, _head: &RequestHead) -> Action {
        if self.allowed(ctx) {
            return Action::default();
        }
        Action::Respond(Response {
            status: 403,
            headers: Vec::new(),
            body: b"source address not allowed\n".to_vec(),
        })
    }
}

switchyard_sdk::export_policy!(SourceRanges);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testing::context;

    #[test]
    fn allows_listed_ranges_only() {
        let mut p = SourceRanges::default();
        p.configure(r#"{"allow": ["127.0.0.0/8", "fd00::/8"]}"#)
            .unwrap();
        assert_eq!(p.on_connect(&context("127.0.0.9")), Verdict::Allow);
        assert_eq!(p.on_connect(&context("fd00::1")), Verdict::Allow);
        assert_eq!(p.on_connect(&context("10.1.2.3")), Verdict::Deny);
        assert!(
            matches!(p.on_request(&context("10.1.2.3"), &RequestHead::default()), Action::Respond(r) if r.status == 403)
        );
        let e = p.configure(r#"{"allow": ["10.0.0.0/33"]}"#).unwrap_err();
        assert!(e.contains("source-ranges config"), "{e}");
    }
}
