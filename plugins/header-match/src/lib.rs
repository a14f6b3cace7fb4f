//! `header-match`: rules over request headers, first match wins. Each rule names a header, an
//! exact value (or `"present": true`), and an action: `deny` (403, or `status`) or `reroute`
//! to another Service (`"to": "namespace/name:port"`). Config:
//! `{"rules": [{"header": "x-env", "value": "canary", "action": "reroute", "to": "default/app-canary:80"}]}`

use serde::Deserialize;
use switchyard_sdk::policy::{Action, Policy, RequestHead, Response};
use switchyard_sdk::{Context, Settings};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum Kind {
    Deny,
    Reroute,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    header: String,
    value: Option<String>,
    #[serde(default)]
    present: bool,
    action: Kind,
    to: Option<String>,
    status: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    rules: Vec<Rule>,
}

#[derive(Default)]
pub struct HeaderMatch {
    rules: Vec<Rule>,
}

impl Policy for HeaderMatch {
    fn configure(&mut self, config: &str) -> Result<Settings, String> {
        let c: Config =
            serde_json::from_str(config).map_err(|e| format!("header-match config: {e}"))?;
        for (i, r) in c.rules.iter().enumerate() {
            if matches!(r.action, Kind::Reroute) && r.to.is_none() {
                return Err(format!(
                    "header-match config: rules[{i}]: reroute needs \"to\""
                ));
            }
            if r.value.is_none() && !r.present {
                return Err(format!(
                    "header-match config: rules[{i}]: give a \"value\" or \"present\": true"
                ));
            }
        }
        self.rules = c.rules;
        Ok(Settings::default())
    }

    fn on_request(&mut self, _ctx: &Context, head: &RequestHead) -> Action {
        for r in &self.rules {
            let Some(v) = head.header(&r.header) else {
                continue;
            };
            if r.value.as_deref().is_some_and(|want| want != v) {
                continue;
            }
            return match r.action {
                Kind::Deny => Action::Respond(Response {
                    status: r.status.unwrap_or(403),
                    headers: Vec::new(),
                    body: format!("denied by header {}\n", r.header).into_bytes(),
                }),
                Kind::Reroute => Action::Reroute(r.to.clone().unwrap_or_default()),
            };
        }
        Action::default()
    }
}

switchyard_sdk::export_policy!(HeaderMatch);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::policy::Header;
    use switchyard_sdk::testing::context;

    fn head(name: &str, value: &str) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            path: "/".into(),
            authority: "app".into(),
            headers: vec![Header {
                name: name.into(),
                value: value.into(),
            }],
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let mut p = HeaderMatch::default();
        p.configure(r#"{"rules": [
            {"header": "x-env", "value": "canary", "action": "reroute", "to": "default/app-canary:80"},
            {"header": "x-debug", "present": true, "action": "deny", "status": 451}
        ]}"#).unwrap();
        let ctx = context("10.0.0.1");
        assert_eq!(
            p.on_request(&ctx, &head("X-Env", "canary")),
            Action::Reroute("default/app-canary:80".into())
        );
        assert_eq!(
            p.on_request(&ctx, &head("x-env", "prod")),
            Action::default()
        );
        assert!(
            matches!(p.on_request(&ctx, &head("x-debug", "1")), Action::Respond(r) if r.status == 451)
        );
        assert!(
            p.configure(r#"{"rules": [{"header": "a", "value": "b", "action": "reroute"}]}"#)
                .is_err()
        );
    }
}
