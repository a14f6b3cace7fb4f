//! The cluster zone: every record the Kubernetes DNS specification (kubernetes/dns
//! `docs/specification.md`, schema 1.1.0) defines for the snapshot's Services, built once per
//! snapshot and looked up by name. Sans-IO: a snapshot in, records out; no sockets here.
//!
//! - ClusterIP Service: A/AAAA `<svc>.<ns>.svc.<domain>`, SRV `_<port>._<proto>.<svc>...` per
//!   named port (`0 100 <port> <svc>...`), PTR for each cluster IP.
//! - Headless Service: A/AAAA per ready endpoint, `<hostname>.<svc>...` per endpoint (the
//!   endpoint's hostname, else its address with '-' for '.' or ':'), SRV per named port and
//!   endpoint (`0 <100/n> <endpoint port> <hostname>.<svc>...`), PTR per endpoint address.
//!   With no ready endpoint the name does not exist.
//! - ExternalName Service: CNAME to `spec.externalName`.
//! - `dns-version.<domain>` TXT `1.1.0`; SOA and NS at the apex.
//! - Pod names `a-b-c-d.<ns>.pod.<domain>` answer the address they spell (CoreDNS `pods
//!   insecure`), computed on lookup.
//!
//! Every ancestor of a name, up to the apex, exists (empty non-terminals answer NODATA).

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use rustc_hash::FxHashMap;

use crate::snapshot::{Protocol, ServiceView, Snapshot};

/// The schema version this zone follows (the specification's `dns-version` record).
pub const SCHEMA_VERSION: &str = "1.1.0";

/// What a lookup found.
#[derive(Debug, PartialEq)]
pub enum Lookup {
    /// Records of the asked type (or the name's CNAME), and the Service they belong to when
    /// it names a DNS shaping plugin.
    Answer(Vec<Record>, Option<Arc<ServiceView>>),
    /// The name exists without records of that type.
    NoData,
    /// No such name in the zone.
    NxDomain,
    /// Not a name this zone answers for (forward it, or refuse).
    NotOurs,
}

/// The zone for one snapshot.
pub struct Zone {
    origin: Name,
    lower_origin: LowerName,
    pod_suffix: LowerName,
    ttl: u32,
    soa: Record,
    nodes: FxHashMap<LowerName, Node>,
    /// The same records as precomputed replies (the query fast path).
    pub wire: super::fast::Wire,
}

#[derive(Default)]
struct Node {
    records: Vec<Record>,
    /// The Service whose records these are, when it names a DNS shaping plugin.
    shaped_by: Option<Arc<ServiceView>>,
}

fn name(s: &str) -> Option<Name> {
    let mut n = Name::from_ascii(s).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// `1.2.3.4` → `1-2-3-4`, `fd00::1` → `fd00--1`: an endpoint's name when it has no hostname.
pub fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

fn reverse(ip: IpAddr) -> Name {
    Name::from(ip)
}

impl Zone {
    /// The zone of `snap` under `domain` (e.g. `cluster.local`), with `ttl` on every record.
    pub fn build(snap: &Snapshot, domain: &str, ttl: u32, serial: u32) -> Zone {
        let origin = name(domain).unwrap_or_else(|| name("cluster.local").expect("valid"));
        let at = |label: &str| {
            Name::from_ascii(label)
                .and_then(|l| l.append_domain(&origin))
                .expect("a valid name under the origin")
        };
        let soa = Record::from_rdata(
            origin.clone(),
            ttl,
            RData::SOA(SOA::new(
                at("ns.dns"),
                at("hostmaster"),
                serial,
                7200,
                1800,
                86400,
                ttl,
            )),
        );
        let mut z = Zone {
            lower_origin: LowerName::new(&origin),
            pod_suffix: LowerName::new(&at("pod")),
            origin: origin.clone(),
            ttl,
            soa: soa.clone(),
            nodes: FxHashMap::with_capacity_and_hasher(snap.len() * 4, Default::default()),
            wire: Default::default(),
        };
        z.add(soa);
        z.add(Record::from_rdata(
            origin.clone(),
            ttl,
            RData::NS(NS(at("ns.dns"))),
        ));
        z.add(Record::from_rdata(
            at("dns-version"),
            ttl,
            RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
        ));
        for svc in snap.services() {
            z.add_service(svc);
        }
        // Few Services name a shaping plugin: one pass each over the zone is fine.
        for svc in snap.services().filter(|s| s.plugins.dns.is_some()) {
            if let Ok(fqdn) = Name::from_ascii(format!("{}.{}.svc", svc.name, svc.namespace))
                .and_then(|n| n.append_domain(&z.origin))
            {
                z.shaped(svc, &fqdn);
            }
        }
        let mut wire = super::fast::Wire::new(&z.origin, &Name::from(z.pod_suffix.clone()), &z.soa);
        for (name, node) in &z.nodes {
            wire.add(
                &Name::from(name.clone()),
                &node.records,
                node.shaped_by.is_some(),
            );
        }
        z.wire = wire;
        z
    }

    fn add(&mut self, r: Record) {
        let owner = LowerName::new(&r.name);
        if !self.nodes.contains_key(&owner) && self.lower_origin.zone_of(&owner) {
            // Ancestors up to the apex exist (empty non-terminals); once one is there, so
            // are the ones above it.
            let mut up = owner.base_name();
            while up != self.lower_origin
                && self.lower_origin.zone_of(&up)
                && !self.nodes.contains_key(&up)
            {
                self.nodes.insert(up.clone(), Node::default());
                up = up.base_name();
            }
        }
        self.nodes.entry(owner).or_default().records.push(r);
    }

    /// Marks the names of `svc` as shaped by its plugin.
    fn shaped(&mut self, svc: &Arc<ServiceView>, under: &Name) {
        let under = LowerName::new(under);
        for (name, node) in self.nodes.iter_mut() {
            if under.zone_of(name) && !node.records.is_empty() {
                node.shaped_by = Some(svc.clone());
            }
        }
    }

    fn address(&self, owner: &Name, ip: IpAddr) -> Record {
        let data = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        Record::from_rdata(owner.clone(), self.ttl, data)
    }

    fn add_service(&mut self, svc: &Arc<ServiceView>) {
        let Some(fqdn) = Name::from_ascii(format!("{}.{}.svc", svc.name, svc.namespace))
            .ok()
            .and_then(|n| n.append_domain(&self.origin).ok())
        else {
            return;
        };
        let ttl = self.ttl;
        if let Some(target) = &svc.external_name {
            if let Some(target) = name(target) {
                self.add(Record::from_rdata(fqdn, ttl, RData::CNAME(CNAME(target))));
            }
            return;
        }
        let srv_name = |port: &str, proto: Protocol| {
            let proto = match proto {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
                Protocol::Sctp => "sctp",
            };
            Name::from_ascii(format!("_{port}._{proto}"))
                .ok()
                .and_then(|n| n.append_domain(&fqdn).ok())
        };
        if !svc.headless {
            for ip in &svc.cluster_ips {
                self.add(self.address(&fqdn, *ip));
                self.add(Record::from_rdata(
                    reverse(*ip),
                    ttl,
                    RData::PTR(PTR(fqdn.clone())),
                ));
            }
            for p in svc.ports.iter().filter(|p| !p.name.is_empty()) {
                if let Some(owner) = srv_name(&p.name, p.protocol) {
                    let srv = SRV::new(0, 100, p.port, fqdn.clone());
                    self.add(Record::from_rdata(owner, ttl, RData::SRV(srv)));
                }
            }
            return;
        }
        // Headless: the ready endpoints, once per address across ports.
        let mut hosts: Vec<(IpAddr, Name)> = Vec::new();
        for e in svc
            .ports
            .iter()
            .flat_map(|p| &p.endpoints)
            .filter(|e| e.ready)
        {
            if hosts.iter().any(|(ip, _)| *ip == e.addr) {
                continue;
            }
            let label = e.hostname.clone().unwrap_or_else(|| dashed(e.addr));
            if let Some(host) = Name::from_ascii(&label)
                .ok()
                .and_then(|l| l.append_domain(&fqdn).ok())
            {
                hosts.push((e.addr, host));
            }
        }
        for (ip, host) in &hosts {
            self.add(self.address(&fqdn, *ip));
            self.add(self.address(host, *ip));
            self.add(Record::from_rdata(
                reverse(*ip),
                ttl,
                RData::PTR(PTR(host.clone())),
            ));
        }
        for p in svc.ports.iter().filter(|p| !p.name.is_empty()) {
            let ready: Vec<_> = p.endpoints.iter().filter(|e| e.ready).collect();
            let Some(owner) = srv_name(&p.name, p.protocol) else {
                continue;
            };
            let weight = 100 / ready.len().max(1) as u16;
            for e in ready {
                if let Some((_, host)) = hosts.iter().find(|(ip, _)| *ip == e.addr) {
                    let srv = SRV::new(0, weight, e.port, host.clone());
                    self.add(Record::from_rdata(owner.clone(), ttl, RData::SRV(srv)));
                }
            }
        }
    }

    /// The SOA record (for the authority section of negative answers).
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// Whether `name` is in the cluster domain (this server is its authority).
    pub fn is_ours(&self, name: &LowerName) -> bool {
        self.lower_origin.zone_of(name)
    }

    /// The records of `qtype` at `name`.
    pub fn lookup(&self, name: &LowerName, qtype: RecordType) -> Lookup {
        match self.nodes.get(name) {
            Some(Node { records, shaped_by }) => {
                let of_type: Vec<Record> = records
                    .iter()
                    .filter(|r| r.record_type() == qtype || qtype == RecordType::ANY)
                    .cloned()
                    .collect();
                if !of_type.is_empty() {
                    return Lookup::Answer(of_type, shaped_by.clone());
                }
                let cname: Vec<Record> = records
                    .iter()
                    .filter(|r| r.record_type() == RecordType::CNAME)
                    .cloned()
                    .collect();
                if !cname.is_empty() {
                    return Lookup::Answer(cname, shaped_by.clone());
                }
                Lookup::NoData
            }
            None if self.pod_suffix.zone_of(name) => self.pod(name, qtype),
            None if self.is_ours(name) => Lookup::NxDomain,
            None => Lookup::NotOurs,
        }
    }

    /// `a-b-c-d.<ns>.pod.<domain>`: the address it spells (any namespace, as `pods insecure`).
    fn pod(&self, name: &LowerName, qtype: RecordType) -> Lookup {
        let n = Name::from(name.clone());
        // <ip>.<ns>.pod.<domain>: exactly two labels above `pod.<domain>`.
        if n.num_labels() != self.pod_suffix.num_labels() + 2 {
            return if n.num_labels() == self.pod_suffix.num_labels() + 1
                || Name::from(self.pod_suffix.clone()) == n
            {
                Lookup::NoData
            } else {
                Lookup::NxDomain
            };
        }
        let first = n
            .iter()
            .next()
            .map(|l| String::from_utf8_lossy(l).to_string());
        let ip = first.as_deref().and_then(|l| {
            l.replace('-', ".")
                .parse::<std::net::Ipv4Addr>()
                .map(IpAddr::V4)
                .ok()
                .or_else(|| l.replace('-', ":").parse().ok())
        });
        match ip {
            Some(ip) => {
                let fits = matches!(
                    (ip, qtype),
                    (IpAddr::V4(_), RecordType::A | RecordType::ANY)
                        | (IpAddr::V6(_), RecordType::AAAA | RecordType::ANY)
                );
                if fits {
                    Lookup::Answer(vec![self.address(&n, ip)], None)
                } else {
                    Lookup::NoData
                }
            }
            None => Lookup::NxDomain,
        }
    }

    /// How many names the zone holds (for logs and tests).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}
