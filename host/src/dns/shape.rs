//! The bridge from [`answer::Shaper`](super::answer::Shaper) to the Wasm `dns` hook: records
//! go to the plugin as (name, type, TTL, wire-format rdata) and come back matched against the
//! defaults, so a plugin can reorder, drop or re-time answers but never invent one. A failing
//! plugin (trap, timeout, invented answers) gives back the unshaped answers (the plugin
//! runtime counts and logs it).

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::{LowerName, Record, RecordType};

use super::answer::Shaper;
use crate::plugin::{Answer, Plugins, Question};
use crate::snapshot::ServiceView;

/// Shapes with the Service's `switchyard.io/dns` plugin.
pub struct PluginShaper(pub Arc<Plugins>);

impl Shaper for PluginShaper {
    fn shape(
        &self,
        svc: &Arc<ServiceView>,
        name: &LowerName,
        qtype: RecordType,
        client: IpAddr,
        answers: Vec<Record>,
    ) -> Vec<Record> {
        if answers.is_empty() {
            return answers;
        }
        let question = Question {
            name: name.to_string(),
            qtype: u16::from(qtype),
        };
        let wire: Vec<Answer> = answers
            .iter()
            .map(|r| Answer {
                name: r.name.to_string(),
                rtype: u16::from(r.record_type()),
                ttl: r.ttl,
                rdata: super::fast::rdata_bytes(&r.data).unwrap_or_default(),
            })
            .collect();
        let shaped = self.0.shape_dns(svc, &question, client, wire.clone());
        shaped
            .iter()
            .filter_map(|s| {
                let i = wire.iter().position(|w| {
                    w.rtype == s.rtype && w.rdata == s.rdata && w.name.eq_ignore_ascii_case(&s.name)
                })?;
                let mut r = answers[i].clone();
                r.ttl = s.ttl;
                Some(r)
            })
            .collect()
    }
}
