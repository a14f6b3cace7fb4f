//! The bridge from [`answer::Shaper`](super::answer::Shaper) to the Wasm `dns` hook: the
//! Service's `switchyard.io/dns` plugin, then each plugin of the default chain (`--dns-shape`)
//! in order, each given what the one before returned. Records
//! go to the plugin as (name, type, TTL, wire-format rdata) and come back matched against the
//! defaults, so a plugin can reorder, drop or re-time answers but never invent one. A failing
//! plugin (trap, timeout, invented answers) gives back the unshaped answers (the plugin
//! runtime counts and logs it).

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::{LowerName, Record, RecordType};

use super::answer::Shaper;
use crate::plugin::{Answer, Plugins, Question};
use crate::snapshot::{PluginRef, ServiceView};

/// Whether `shaped`, as a plugin returned it, is the default answer `default` (same owner,
/// type and data; the TTL may differ): plugins choose among the defaults, never invent.
pub fn is_default(default: &Answer, shaped: &Answer) -> bool {
    default.rtype == shaped.rtype
        && default.rdata == shaped.rdata
        && default.name.eq_ignore_ascii_case(&shaped.name)
}

/// Shapes with the Service's `switchyard.io/dns` plugin, then the default chain.
pub struct PluginShaper {
    pub plugins: Arc<Plugins>,
    pub chain: Vec<PluginRef>,
}

impl PluginShaper {
    /// The Service's plugin (when it names one), then each plugin of the chain, each given
    /// what the one before returned.
    pub fn shape_answers(
        &self,
        svc: Option<&Arc<ServiceView>>,
        name: &str,
        qtype: u16,
        client: IpAddr,
        answers: Vec<Answer>,
    ) -> Vec<Answer> {
        if answers.is_empty() {
            return answers;
        }
        let question = Question {
            name: name.to_string(),
            qtype,
        };
        let mut shaped = match svc {
            Some(svc) => self.plugins.shape_dns(svc, &question, client, answers),
            None => answers,
        };
        for (i, r) in self.chain.iter().enumerate() {
            if shaped.is_empty() {
                break;
            }
            shaped = self
                .plugins
                .shape_dns_default(i, r, &question, client, shaped);
        }
        shaped
    }
}

impl Shaper for PluginShaper {
    fn shapes_all(&self) -> bool {
        !self.chain.is_empty()
    }

    fn shape(
        &self,
        svc: Option<&Arc<ServiceView>>,
        name: &LowerName,
        qtype: RecordType,
        client: IpAddr,
        answers: Vec<Record>,
    ) -> Vec<Record> {
        let wire: Vec<Answer> = answers
            .iter()
            .map(|r| Answer {
                name: r.name.to_string(),
                rtype: u16::from(r.record_type()),
                ttl: r.ttl,
                rdata: super::fast::rdata_bytes(&r.data).unwrap_or_default(),
            })
            .collect();
        let shaped = self.shape_answers(svc, &name.to_string(), qtype.into(), client, wire.clone());
        shaped
            .iter()
            .filter_map(|s| {
                let i = wire.iter().position(|w| is_default(w, s))?;
                let mut r = answers[i].clone();
                r.ttl = s.ttl;
                Some(r)
            })
            .collect()
    }
}
