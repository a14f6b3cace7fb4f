//! What a Service owns in the allocators (cluster IP, NodePorts, LoadBalancer addresses) and
//! how it gets them: `allocate` runs last in `admit`, after defaulting and validation; claim and
//! release serve the registry at start and on delete. Pure, like its parent: the caller holds
//! the allocators under its write lock.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus};

use super::{spec_type, wants_cluster_ip, wants_node_ports};
use crate::alloc::{Allocators, Refusal};
use crate::validation::{FieldError, q};

/// The cluster IP a Service owns in the pool, if any.
fn owned_cluster_ip(svc: &Service) -> Option<Ipv4Addr> {
    let spec = svc.spec.as_ref()?;
    if !wants_cluster_ip(spec) {
        return None;
    }
    spec.cluster_ip.as_deref()?.parse().ok()
}

/// NodePorts a Service owns.
pub fn owned_node_ports(svc: &Service) -> Vec<i32> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let mut v: Vec<i32> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.node_port)
        .filter(|p| *p != 0)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// LoadBalancer addresses a Service holds in its status.
pub fn owned_lb_ips(svc: &Service) -> Vec<Ipv4Addr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|v| {
            v.iter()
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Claims everything a stored Service owns (used when rebuilding allocators at start).
pub fn claim_existing(svc: &Service, a: &mut Allocators) {
    if let Some(ip) = owned_cluster_ip(svc) {
        let _ = a.cluster_ips.claim(ip);
    }
    for p in owned_node_ports(svc) {
        let _ = a.node_ports.claim(p);
    }
    for ip in owned_lb_ips(svc) {
        let _ = a.lb_ips.claim(ip);
    }
}

/// Releases everything a deleted Service owned.
pub fn release(svc: &Service, a: &mut Allocators) {
    if let Some(ip) = owned_cluster_ip(svc) {
        a.cluster_ips.release(ip);
    }
    for p in owned_node_ports(svc) {
        a.node_ports.release(p);
    }
    for ip in owned_lb_ips(svc) {
        if a.lb_ips.contains(ip) {
            a.lb_ips.release(ip);
        }
    }
}

pub(super) fn allocate(
    svc: &mut Service,
    old: Option<&Service>,
    a: &mut Allocators,
    e: &mut Vec<FieldError>,
) {
    let old_ip = old.and_then(owned_cluster_ip);
    let old_ports = old.map(owned_node_ports).unwrap_or_default();
    let old_lb = old.map(owned_lb_ips).unwrap_or_default();
    if let Some(ip) = old_ip {
        a.cluster_ips.release(ip);
    }
    for p in &old_ports {
        a.node_ports.release(*p);
    }
    for ip in &old_lb {
        a.lb_ips.release(*ip);
    }
    let spec = svc.spec.as_mut().expect("defaulted");
    let ty = spec_type(spec).to_string();
    if ty != "ExternalName" {
        spec.ip_families.get_or_insert_with(|| vec!["IPv4".into()]);
        spec.ip_family_policy
            .get_or_insert_with(|| "SingleStack".into());
    }
    if wants_cluster_ip(spec) {
        let requested = spec.cluster_ip.clone().unwrap_or_default();
        if requested.is_empty() {
            match a.cluster_ips.allocate() {
                Some(ip) => {
                    spec.cluster_ip = Some(ip.to_string());
                    spec.cluster_ips = Some(vec![ip.to_string()]);
                }
                None => e.push(FieldError::invalid(
                    "spec.clusterIPs",
                    "[]",
                    format!(
                        "failed to allocate a serviceIP: range {} is full",
                        a.cluster_ips.net()
                    ),
                )),
            }
        } else if let Ok(ip) = requested.parse::<Ipv4Addr>() {
            match a.cluster_ips.claim(ip) {
                Ok(()) => {}
                Err(Refusal::OutOfRange) => e.push(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    q(&requested),
                    format!(
                        "failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is {}",
                        a.cluster_ips.net()
                    ),
                )),
                Err(Refusal::Taken) => e.push(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    q(&requested),
                    format!("failed to allocate IP {requested}: provided IP is already allocated"),
                )),
            }
        }
    }
    if wants_node_ports(spec) {
        let (lo, hi) = a.node_ports.range();
        let mut claimed: Vec<i32> = Vec::new();
        for (i, p) in spec.ports.iter_mut().flatten().enumerate() {
            let path = format!("spec.ports[{i}].nodePort");
            match p.node_port.unwrap_or(0) {
                0 => match a.node_ports.allocate() {
                    Some(np) => {
                        p.node_port = Some(np);
                        claimed.push(np);
                    }
                    None => e.push(FieldError::invalid(path, "0", "failed to allocate a nodePort: range is full")),
                },
                // The same nodePort may serve two protocols of one Service.
                np if claimed.contains(&np) => {}
                np => match a.node_ports.claim(np) {
                    Ok(()) => claimed.push(np),
                    Err(Refusal::OutOfRange) => e.push(FieldError::invalid(
                        path,
                        np.to_string(),
                        format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                    )),
                    Err(Refusal::Taken) => {
                        e.push(FieldError::invalid(path, np.to_string(), "provided port is already allocated"))
                    }
                },
            }
        }
    }
    if ty == "LoadBalancer" {
        let keep = old_lb
            .first()
            .copied()
            .filter(|ip| a.lb_ips.claim(*ip).is_ok());
        let wanted = spec
            .load_balancer_ip
            .as_deref()
            .and_then(|s| s.parse::<Ipv4Addr>().ok());
        let ip = match (keep, wanted) {
            (Some(ip), w) if w.is_none() || w == Some(ip) => Some(ip),
            (k, Some(w)) => {
                if let Some(k) = k {
                    a.lb_ips.release(k);
                }
                match a.lb_ips.claim(w) {
                    Ok(()) => Some(w),
                    Err(_) => {
                        e.push(FieldError::invalid(
                            "spec.loadBalancerIP",
                            q(&w.to_string()),
                            format!(
                                "must be a free address in the load-balancer pool {}",
                                a.lb_ips.net()
                            ),
                        ));
                        None
                    }
                }
            }
            // Pool exhausted: the Service stays pending, as with a cloud LB that has no capacity.
            _ => a.lb_ips.allocate(),
        };
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: ip.map(|ip| {
                    vec![LoadBalancerIngress {
                        ip: Some(ip.to_string()),
                        ip_mode: Some("VIP".into()),
                        ..Default::default()
                    }]
                }),
            }),
            ..Default::default()
        });
    }
}
