//! Services: defaulting, validation and allocation, in the order the API server runs them.
//! `admit` is the only way to get a [`ValidService`], the type the registry stores. Pure: the
//! caller passes the allocators (under its write lock) and the previous object on update.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{
    ClientIPConfig, Service, ServicePort, ServiceSpec, SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names;
use super::{FieldError, q};
use crate::alloc::Allocators;

mod allocation;
pub use allocation::{claim_existing, owned_lb_ips, owned_node_ports, release};

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// A Service that passed defaulting, validation and allocation.
#[derive(Clone, Debug)]
pub struct ValidService(Service);

impl ValidService {
    pub fn into_inner(self) -> Service {
        self.0
    }
    pub fn get(&self) -> &Service {
        &self.0
    }
}

fn spec_type(spec: &ServiceSpec) -> &str {
    spec.type_.as_deref().unwrap_or("ClusterIP")
}

fn wants_node_ports(spec: &ServiceSpec) -> bool {
    match spec_type(spec) {
        "NodePort" => true,
        "LoadBalancer" => spec.allocate_load_balancer_node_ports != Some(false),
        _ => false,
    }
}

fn wants_cluster_ip(spec: &ServiceSpec) -> bool {
    spec_type(spec) != "ExternalName" && spec.cluster_ip.as_deref() != Some("None")
}

/// Fills in what the API server defaults.
pub fn default(svc: &mut Service) {
    let spec = svc.spec.get_or_insert_with(Default::default);
    if spec.type_.as_deref().unwrap_or("").is_empty() {
        spec.type_ = Some("ClusterIP".into());
    }
    let ty = spec.type_.clone().unwrap_or_default();
    if spec.session_affinity.as_deref().unwrap_or("").is_empty() {
        spec.session_affinity = Some("None".into());
    }
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let cfg = spec
            .session_affinity_config
            .get_or_insert_with(SessionAffinityConfig::default);
        let ip = cfg.client_ip.get_or_insert_with(ClientIPConfig::default);
        ip.timeout_seconds.get_or_insert(10800);
    }
    for p in spec.ports.iter_mut().flatten() {
        if p.protocol.as_deref().unwrap_or("").is_empty() {
            p.protocol = Some("TCP".into());
        }
        let unset = match &p.target_port {
            None => true,
            Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(s)) => s.is_empty(),
            _ => false,
        };
        if unset {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
    if ty != "ExternalName" && spec.internal_traffic_policy.is_none() {
        spec.internal_traffic_policy = Some("Cluster".into());
    }
    if (ty == "NodePort" || ty == "LoadBalancer") && spec.external_traffic_policy.is_none() {
        spec.external_traffic_policy = Some("Cluster".into());
    }
    if ty == "LoadBalancer" && spec.allocate_load_balancer_node_ports.is_none() {
        spec.allocate_load_balancer_node_ports = Some(true);
    }
    // clusterIP and clusterIPs describe the same thing; fill whichever is missing.
    let ip = spec.cluster_ip.clone().unwrap_or_default();
    let ips = spec.cluster_ips.clone().unwrap_or_default();
    if !ip.is_empty() && ips.is_empty() {
        spec.cluster_ips = Some(vec![ip]);
    } else if ip.is_empty() && !ips.is_empty() {
        spec.cluster_ip = Some(ips[0].clone());
    }
}

/// On update: carry over what the user did not restate, and drop what the new type does not
/// use, as the API server's `patchAllocatedValues` / `dropTypeDependentFields` do.
fn carry_over(new: &mut Service, old: &Service) {
    let (Some(spec), Some(old_spec)) = (new.spec.as_mut(), old.spec.as_ref()) else {
        return;
    };
    let old_ty = spec_type(old_spec).to_string();
    let ty = spec_type(spec).to_string();
    if wants_cluster_ip(spec) && spec.cluster_ip.as_deref().unwrap_or("").is_empty() {
        spec.cluster_ip = old_spec.cluster_ip.clone();
        spec.cluster_ips = old_spec.cluster_ips.clone();
    }
    if ty == "ExternalName" && old_ty != "ExternalName" && spec.cluster_ip == old_spec.cluster_ip {
        spec.cluster_ip = None;
        spec.cluster_ips = None;
        spec.ip_families = None;
        spec.ip_family_policy = None;
        spec.internal_traffic_policy = None;
    }
    if wants_node_ports(spec) {
        for p in spec.ports.iter_mut().flatten() {
            if p.node_port.unwrap_or(0) == 0 {
                let same = old_spec.ports.iter().flatten().find(|o| {
                    o.port == p.port && o.protocol == p.protocol
                        || (p.name.is_some() && o.name == p.name)
                });
                p.node_port = same.and_then(|o| o.node_port);
            }
        }
    } else if wants_node_ports(old_spec) {
        let old_ports = owned_node_ports(old);
        for p in spec.ports.iter_mut().flatten() {
            if p.node_port.is_some_and(|np| old_ports.contains(&np)) {
                p.node_port = None;
            }
        }
    }
    if ty != "NodePort" && ty != "LoadBalancer" {
        spec.external_traffic_policy = None;
    }
    // Status is not writable through the main resource: keep the stored one.
    new.status = old.status.clone();
    if ty != "LoadBalancer" {
        new.status = None;
    }
}

/// Defaulting + validation + allocation. `allocs` is changed only when this returns `Ok`.
pub fn admit(
    mut svc: Service,
    old: Option<&Service>,
    allocs: &mut Allocators,
) -> Result<ValidService, Vec<FieldError>> {
    if old.is_none() {
        svc.status = None;
    }
    default(&mut svc);
    if let Some(old) = old {
        carry_over(&mut svc, old);
        default(&mut svc);
    }
    let mut errs = validate(&svc, old);
    if !errs.is_empty() {
        return Err(errs);
    }
    let mut trial = allocs.clone();
    allocation::allocate(&mut svc, old, &mut trial, &mut errs);
    if !errs.is_empty() {
        return Err(errs);
    }
    *allocs = trial;
    Ok(ValidService(svc))
}

/// Field checks on a defaulted Service.
pub fn validate(svc: &Service, old: Option<&Service>) -> Vec<FieldError> {
    let mut e = Vec::new();
    let name = svc.metadata.name.clone().unwrap_or_default();
    if old.is_none() {
        for m in names::dns1035_label(&name) {
            e.push(FieldError::invalid("metadata.name", q(&name), m));
        }
    }
    let default_spec = ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&default_spec);
    let ty = spec_type(spec);
    if !TYPES.contains(&ty) {
        e.push(FieldError::not_supported("spec.type", q(ty), TYPES));
    }
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    let headless = spec.cluster_ip.as_deref() == Some("None");
    if ports.is_empty() && ty != "ExternalName" && !headless {
        e.push(FieldError::required("spec.ports", ""));
    }
    let mut names_seen = HashSet::new();
    let mut keys_seen = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        validate_port(
            p,
            i,
            ports.len(),
            ty,
            &mut names_seen,
            &mut keys_seen,
            &mut e,
        );
    }
    validate_cluster_ips(spec, ty, old, &mut e);
    if ty == "ExternalName" {
        let ext = spec.external_name.clone().unwrap_or_default();
        if ext.is_empty() {
            e.push(FieldError::required("spec.externalName", ""));
        } else {
            for m in names::dns1123_subdomain(ext.trim_end_matches('.')) {
                e.push(FieldError::invalid("spec.externalName", q(&ext), m));
            }
        }
    }
    let affinity = spec.session_affinity.as_deref().unwrap_or("None");
    if !["ClientIP", "None"].contains(&affinity) {
        e.push(FieldError::not_supported(
            "spec.sessionAffinity",
            q(affinity),
            &["ClientIP", "None"],
        ));
    }
    if affinity == "ClientIP" {
        let t = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .unwrap_or(10800);
        if !(1..=86400).contains(&t) {
            e.push(FieldError::invalid(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                t.to_string(),
                "must be greater than 0 and less than 86400",
            ));
        }
    }
    if let Some(p) = spec.external_traffic_policy.as_deref() {
        if ty != "NodePort" && ty != "LoadBalancer" {
            e.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                q(p),
                "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
            ));
        } else if !["Cluster", "Local"].contains(&p) {
            e.push(FieldError::not_supported(
                "spec.externalTrafficPolicy",
                q(p),
                &["Cluster", "Local"],
            ));
        }
    }
    if let Some(p) = spec.internal_traffic_policy.as_deref()
        && !["Cluster", "Local"].contains(&p)
    {
        e.push(FieldError::not_supported(
            "spec.internalTrafficPolicy",
            q(p),
            &["Cluster", "Local"],
        ));
    }
    let ranges = spec.load_balancer_source_ranges.as_deref().unwrap_or(&[]);
    if !ranges.is_empty() && ty != "LoadBalancer" {
        e.push(FieldError::forbidden(
            "spec.loadBalancerSourceRanges",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    for (i, r) in ranges.iter().enumerate() {
        if r.trim().parse::<ipnet::IpNet>().is_err() {
            e.push(FieldError::invalid(
                format!("spec.loadBalancerSourceRanges[{i}]"),
                q(r),
                "must be a CIDR",
            ));
        }
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        if ip.parse::<IpAddr>().is_err() {
            e.push(FieldError::invalid(
                format!("spec.externalIPs[{i}]"),
                q(ip),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }
    for (k, v) in spec.selector.iter().flatten() {
        for m in names::label_key(k) {
            e.push(FieldError::invalid("spec.selector", q(k), m));
        }
        for m in names::label_value(v) {
            e.push(FieldError::invalid("spec.selector", q(v), m));
        }
    }
    e
}

fn validate_port(
    p: &ServicePort,
    i: usize,
    count: usize,
    ty: &str,
    names_seen: &mut HashSet<String>,
    keys_seen: &mut HashSet<(i32, String)>,
    e: &mut Vec<FieldError>,
) {
    let path = format!("spec.ports[{i}]");
    let name = p.name.clone().unwrap_or_default();
    if name.is_empty() {
        if count > 1 {
            e.push(FieldError::required(format!("{path}.name"), ""));
        }
    } else {
        for m in names::dns1123_label(&name) {
            e.push(FieldError::invalid(format!("{path}.name"), q(&name), m));
        }
        if !names_seen.insert(name.clone()) {
            e.push(FieldError::duplicate(format!("{path}.name"), q(&name)));
        }
    }
    if !(1..=65535).contains(&p.port) {
        e.push(FieldError::invalid(
            format!("{path}.port"),
            p.port.to_string(),
            "must be between 1 and 65535, inclusive",
        ));
    }
    let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
    if !PROTOCOLS.contains(&proto.as_str()) {
        e.push(FieldError::not_supported(
            format!("{path}.protocol"),
            q(&proto),
            PROTOCOLS,
        ));
    }
    match &p.target_port {
        Some(IntOrString::Int(t)) if !(1..=65535).contains(t) => e.push(FieldError::invalid(
            format!("{path}.targetPort"),
            t.to_string(),
            "must be between 1 and 65535, inclusive",
        )),
        Some(IntOrString::String(s)) => {
            for m in names::iana_svc_name(s) {
                e.push(FieldError::invalid(format!("{path}.targetPort"), q(s), m));
            }
        }
        _ => {}
    }
    if !keys_seen.insert((p.port, proto.clone())) {
        e.push(FieldError::duplicate(
            path.clone(),
            format!("{}/{}", p.port, proto),
        ));
    }
    if p.node_port.unwrap_or(0) != 0 && (ty == "ClusterIP" || ty == "ExternalName") {
        e.push(FieldError::forbidden(
            format!("{path}.nodePort"),
            format!("may not be used when `type` is '{ty}'"),
        ));
    }
}

fn validate_cluster_ips(
    spec: &ServiceSpec,
    ty: &str,
    old: Option<&Service>,
    e: &mut Vec<FieldError>,
) {
    let ip = spec.cluster_ip.clone().unwrap_or_default();
    let ips = spec.cluster_ips.clone().unwrap_or_default();
    if ty == "ExternalName" {
        if !ip.is_empty() {
            e.push(FieldError::forbidden(
                "spec.clusterIPs",
                "may not be set for ExternalName services",
            ));
        }
        return;
    }
    if !ips.is_empty() && ips[0] != ip {
        e.push(FieldError::invalid(
            "spec.clusterIPs",
            format!("{ips:?}"),
            "element [0] must match clusterIP",
        ));
    }
    if ips.len() > 1 {
        e.push(FieldError::invalid(
            "spec.clusterIPs",
            format!("{ips:?}"),
            "only one address per family; dual-stack is not supported",
        ));
    }
    if ip == "None" {
        if ty == "NodePort" || ty == "LoadBalancer" {
            e.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                q(&ip),
                format!("may not be set to 'None' for {ty} services"),
            ));
        }
    } else if !ip.is_empty() && ip.parse::<Ipv4Addr>().is_err() {
        let detail = if ip.parse::<IpAddr>().is_ok() {
            "only IPv4 service CIDRs are supported"
        } else {
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
        };
        e.push(FieldError::invalid("spec.clusterIPs[0]", q(&ip), detail));
    }
    if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
        let old_ip = old_spec.cluster_ip.clone().unwrap_or_default();
        if spec_type(old_spec) != "ExternalName" && !old_ip.is_empty() && old_ip != ip {
            e.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                q(&ip),
                "may not change once set",
            ));
        }
    }
}

#[cfg(test)]
mod tests;
