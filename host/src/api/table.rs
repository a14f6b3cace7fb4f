//! Server-side `Table` rendering (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), so
//! `kubectl get` prints the columns it prints against a real API server.

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};

use crate::resources::Resource;

pub fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// `5s`, `3m`, `2h5m`, `4d`: kubectl's short human duration.
fn age(v: &Value) -> String {
    let Ok(t) = s(v, "/metadata/creationTimestamp").parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match secs {
        0..=119 => format!("{secs}s"),
        120..=599 => format!("{}m{}s", secs / 60, secs % 60),
        600..=10799 => format!("{}m", secs / 60),
        10800..=172799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

fn ports(v: &Value) -> String {
    let ps = v
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ps.is_empty() {
        return "<none>".into();
    }
    ps.iter()
        .map(|p| {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn external_ip(v: &Value) -> String {
    let mut ips: Vec<String> = v
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(String::from))
        .collect();
    for i in v
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(ip) = i.get("ip").and_then(Value::as_str) {
            ips.push(ip.into());
        }
    }
    match s(v, "/spec/type") {
        "ExternalName" => s(v, "/spec/externalName").to_string(),
        "LoadBalancer" if ips.is_empty() => "<pending>".into(),
        _ if ips.is_empty() => "<none>".into(),
        _ => ips.join(","),
    }
}

fn endpoints_summary(v: &Value) -> String {
    let mut out = Vec::new();
    for sub in v
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ports: Vec<i64> = sub
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("port")?.as_i64())
            .collect();
        for a in sub
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ip = a.get("ip").and_then(Value::as_str).unwrap_or("");
            if ports.is_empty() {
                out.push(ip.to_string());
            }
            for p in &ports {
                out.push(format!("{ip}:{p}"));
            }
        }
    }
    summarize(out)
}

fn summarize(items: Vec<String>) -> String {
    match items.len() {
        0 => "<none>".into(),
        1..=3 => items.join(","),
        n => format!("{} + {} more...", items[..3].join(","), n - 3),
    }
}

fn slice_endpoints(v: &Value) -> String {
    summarize(
        v.get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|e| {
                e.get("addresses")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|a| a.as_str().map(String::from))
            .collect(),
    )
}

fn pod_ready(v: &Value) -> String {
    let total = v
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = v
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    format!("{ready}/{total}")
}

fn columns(res: &Resource) -> Vec<&'static str> {
    match res.plural {
        "services" => vec![
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age",
        ],
        "pods" => vec!["Name", "Ready", "Status", "IP", "Age"],
        "endpoints" => vec!["Name", "Endpoints", "Age"],
        "endpointslices" => vec!["Name", "AddressType", "Ports", "Endpoints", "Age"],
        "namespaces" => vec!["Name", "Status", "Age"],
        "secrets" => vec!["Name", "Type", "Data", "Age"],
        "configmaps" => vec!["Name", "Data", "Age"],
        "events" => vec!["Name", "Type", "Reason", "Object", "Message"],
        _ => vec!["Name", "Age"],
    }
}

fn cells(res: &Resource, v: &Value) -> Vec<Value> {
    let name = json!(s(v, "/metadata/name"));
    let count = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_object)
            .map_or(0, |m| m.len())
    };
    match res.plural {
        "services" => {
            let cip = match s(v, "/spec/clusterIP") {
                "" => "<none>",
                x => x,
            };
            vec![
                name,
                json!(s(v, "/spec/type")),
                json!(cip),
                json!(external_ip(v)),
                json!(ports(v)),
                json!(age(v)),
            ]
        }
        "pods" => vec![
            name,
            json!(pod_ready(v)),
            json!(s(v, "/status/phase")),
            json!(match s(v, "/status/podIP") {
                "" => "<none>",
                x => x,
            }),
            json!(age(v)),
        ],
        "endpoints" => vec![name, json!(endpoints_summary(v)), json!(age(v))],
        "endpointslices" => {
            let ports: Vec<String> = v
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("port")?.as_i64().map(|n| n.to_string()))
                .collect();
            let ports = if ports.is_empty() {
                "<unset>".to_string()
            } else {
                ports.join(",")
            };
            vec![
                name,
                json!(s(v, "/addressType")),
                json!(ports),
                json!(slice_endpoints(v)),
                json!(age(v)),
            ]
        }
        "namespaces" => vec![name, json!(s(v, "/status/phase")), json!(age(v))],
        "secrets" => vec![
            name,
            json!(s(v, "/type")),
            json!(count("/data")),
            json!(age(v)),
        ],
        "configmaps" => vec![name, json!(count("/data")), json!(age(v))],
        "events" => vec![
            name,
            json!(s(v, "/type")),
            json!(s(v, "/reason")),
            json!(format!(
                "{}/{}",
                s(v, "/involvedObject/kind").to_lowercase(),
                s(v, "/involvedObject/name")
            )),
            json!(s(v, "/message")),
        ],
        _ => vec![name, json!(age(v))],
    }
}

pub fn render(res: &Resource, items: &[Value], rv: Option<u64>) -> Value {
    let defs: Vec<Value> = columns(res)
        .iter()
        .map(|c| json!({"name": c, "type": "string", "format": if *c == "Name" { "name" } else { "" }, "description": "", "priority": 0}))
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|v| json!({
            "cells": cells(res, v),
            "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": v.get("metadata").cloned().unwrap_or(json!({}))},
        }))
        .collect();
    let mut t = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "columnDefinitions": defs, "rows": rows});
    if let Some(rv) = rv {
        t["metadata"]["resourceVersion"] = json!(rv.to_string());
    }
    t
}
