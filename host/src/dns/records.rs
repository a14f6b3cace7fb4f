//! The records one Service contributes to the cluster zone, by the Kubernetes DNS
//! specification (kubernetes/dns `docs/specification.md`, schema 1.1.0). A pure function of the
//! Service: the zone calls it for the old and the new version of a changed Service and swaps
//! one set for the other. Sans-IO.
//!
//! - ClusterIP Service: A/AAAA `<svc>.<ns>.svc.<domain>`, SRV `_<port>._<proto>.<svc>...` per
//!   named port (`0 100 <port> <svc>...`), PTR for each cluster IP.
//! - Headless Service: A/AAAA per ready endpoint, `<hostname>.<svc>...` per endpoint (the
//!   endpoint's hostname, else its address with '-' for '.' or ':'), SRV per named port and
//!   endpoint (`0 <100/n> <endpoint port> <hostname>.<svc>...`), PTR per endpoint address.
//!   With no ready endpoint the Service contributes nothing, so its name does not exist. A
//!   headless Service without ports gets the same address records (and no SRV).
//! - ExternalName Service: CNAME to `spec.externalName`.

use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SRV};
use hickory_proto::rr::{Name, RData, Record};

use crate::snapshot::{Protocol, ServiceView};

/// One record and whether its name belongs to the Service alone (its own name and the names
/// below it) rather than being shared with other Services (PTR names).
pub struct Contributed {
    pub record: Record,
    pub own: bool,
}

/// An absolute name from text, or `None` when it is not a valid DNS name.
pub fn absolute(s: &str) -> Option<Name> {
    let mut n = Name::from_ascii(s).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// `1.2.3.4` → `1-2-3-4`, `fd00::1` → `fd00--1`: an endpoint's name when it has no hostname.
pub fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// An A or AAAA record for `ip` at `owner`.
pub fn address(owner: &Name, ip: IpAddr, ttl: u32) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), ttl, data)
}

/// `<svc>.<ns>.svc.<origin>`.
pub fn service_name(svc: &ServiceView, origin: &Name) -> Option<Name> {
    Name::from_ascii(format!("{}.{}.svc", svc.name, svc.namespace))
        .ok()?
        .append_domain(origin)
        .ok()
}

/// Every record `svc` contributes under `origin`, each with `ttl`.
pub fn of_service(svc: &ServiceView, origin: &Name, ttl: u32) -> Vec<Contributed> {
    let mut out = Vec::new();
    let Some(fqdn) = service_name(svc, origin) else {
        return out;
    };
    let mut own = |record| out.push(Contributed { record, own: true });
    if let Some(target) = &svc.external_name {
        if let Some(target) = absolute(target) {
            own(Record::from_rdata(fqdn, ttl, RData::CNAME(CNAME(target))));
        }
        return out;
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
    let ptr = |ip: IpAddr, target: &Name| Contributed {
        record: Record::from_rdata(Name::from(ip), ttl, RData::PTR(PTR(target.clone()))),
        own: false,
    };
    if !svc.headless {
        for ip in &svc.cluster_ips {
            own(address(&fqdn, *ip, ttl));
        }
        for p in svc.ports.iter().filter(|p| !p.name.is_empty()) {
            if let Some(owner) = srv_name(&p.name, p.protocol) {
                let srv = SRV::new(0, 100, p.port, fqdn.clone());
                own(Record::from_rdata(owner, ttl, RData::SRV(srv)));
            }
        }
        out.extend(svc.cluster_ips.iter().map(|ip| ptr(*ip, &fqdn)));
        return out;
    }
    // Headless: the ready endpoint addresses (with or without ports).
    let hosts: Vec<(IpAddr, Name)> = svc
        .hosts
        .iter()
        .filter(|h| h.ready)
        .filter_map(|h| {
            let label = h.hostname.clone().unwrap_or_else(|| dashed(h.addr));
            let host = Name::from_ascii(&label).ok()?.append_domain(&fqdn).ok()?;
            Some((h.addr, host))
        })
        .collect();
    for (ip, host) in &hosts {
        own(address(&fqdn, *ip, ttl));
        own(address(host, *ip, ttl));
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
                own(Record::from_rdata(owner.clone(), ttl, RData::SRV(srv)));
            }
        }
    }
    out.extend(hosts.iter().map(|(ip, host)| ptr(*ip, host)));
    out
}
