//! Validation of metadata and of the non-Service resources (Pods, Endpoints, EndpointSlices,
//! Secrets, Namespaces), to the depth a gateway relies on. Pure functions over JSON values
//! already decoded once into their k8s-openapi types.

use std::net::IpAddr;

use serde_json::Value;

use super::names;
use super::{FieldError, q};

/// Which name format a resource's `metadata.name` must follow.
pub fn name_errors(plural: &str, name: &str) -> Vec<String> {
    match plural {
        "services" => names::dns1035_label(name),
        "namespaces" => names::dns1123_label(name),
        _ => names::dns1123_subdomain(name),
    }
}

/// Labels and annotations keys/values.
pub fn metadata(v: &Value) -> Vec<FieldError> {
    let mut e = Vec::new();
    if let Some(labels) = v.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, val) in labels {
            for m in names::label_key(k) {
                e.push(FieldError::invalid("metadata.labels", q(k), m));
            }
            for m in names::label_value(val.as_str().unwrap_or("")) {
                e.push(FieldError::invalid(
                    "metadata.labels",
                    q(val.as_str().unwrap_or("")),
                    m,
                ));
            }
        }
    }
    if let Some(ann) = v
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        let size: usize = ann
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if size > 256 * 1024 {
            e.push(FieldError {
                kind: super::ErrorType::TooLong,
                field: "metadata.annotations".into(),
                value: None,
                detail: "may not be more than 262144 bytes".into(),
            });
        }
        for k in ann.keys() {
            for m in names::label_key(k) {
                e.push(FieldError::invalid("metadata.annotations", q(k), m));
            }
        }
    }
    e
}

fn ip_error(field: String, s: &str) -> Option<FieldError> {
    s.parse::<IpAddr>().is_err().then(|| {
        FieldError::invalid(
            field,
            q(s),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        )
    })
}

fn port_errors(path: &str, p: &Value, e: &mut Vec<FieldError>) {
    if let Some(n) = p.get("port").and_then(Value::as_i64)
        && !(1..=65535).contains(&n)
    {
        e.push(FieldError::invalid(
            format!("{path}.port"),
            n.to_string(),
            "must be between 1 and 65535, inclusive",
        ));
    }
    if let Some(proto) = p.get("protocol").and_then(Value::as_str)
        && !["TCP", "UDP", "SCTP"].contains(&proto)
    {
        e.push(FieldError::not_supported(
            format!("{path}.protocol"),
            q(proto),
            &["SCTP", "TCP", "UDP"],
        ));
    }
}

pub fn pod(v: &Value) -> Vec<FieldError> {
    let mut e = Vec::new();
    let containers = v.pointer("/spec/containers").and_then(Value::as_array);
    match containers {
        None => e.push(FieldError::required("spec.containers", "")),
        Some(cs) if cs.is_empty() => e.push(FieldError::required("spec.containers", "")),
        Some(cs) => {
            for (i, c) in cs.iter().enumerate() {
                let name = c.get("name").and_then(Value::as_str).unwrap_or("");
                if name.is_empty() {
                    e.push(FieldError::required(
                        format!("spec.containers[{i}].name"),
                        "",
                    ));
                } else {
                    for m in names::dns1123_label(name) {
                        e.push(FieldError::invalid(
                            format!("spec.containers[{i}].name"),
                            q(name),
                            m,
                        ));
                    }
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    e.push(FieldError::required(
                        format!("spec.containers[{i}].image"),
                        "",
                    ));
                }
                for (j, p) in c
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let path = format!("spec.containers[{i}].ports[{j}]");
                    if let Some(n) = p.get("name").and_then(Value::as_str) {
                        for m in names::iana_svc_name(n) {
                            e.push(FieldError::invalid(format!("{path}.name"), q(n), m));
                        }
                    }
                    let cp = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                    if !(1..=65535).contains(&cp) {
                        e.push(FieldError::invalid(
                            format!("{path}.containerPort"),
                            cp.to_string(),
                            "must be between 1 and 65535, inclusive",
                        ));
                    }
                }
            }
        }
    }
    if let Some(ip) = v.pointer("/status/podIP").and_then(Value::as_str)
        && !ip.is_empty()
        && let Some(err) = ip_error("status.podIP".into(), ip)
    {
        e.push(err);
    }
    e
}

pub fn endpoints(v: &Value) -> Vec<FieldError> {
    let mut e = Vec::new();
    for (i, s) in v
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        for key in ["addresses", "notReadyAddresses"] {
            for (j, a) in s
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let ip = a.get("ip").and_then(Value::as_str).unwrap_or("");
                if let Some(err) = ip_error(format!("subsets[{i}].{key}[{j}].ip"), ip) {
                    e.push(err);
                }
            }
        }
        let ports = s
            .get("ports")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for (j, p) in ports.iter().enumerate() {
            let path = format!("subsets[{i}].ports[{j}]");
            if ports.len() > 1
                && p.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
            {
                e.push(FieldError::required(format!("{path}.name"), ""));
            }
            port_errors(&path, p, &mut e);
        }
    }
    e
}

pub fn endpoint_slice(v: &Value) -> Vec<FieldError> {
    let mut e = Vec::new();
    let at = v.get("addressType").and_then(Value::as_str).unwrap_or("");
    if !["IPv4", "IPv6", "FQDN"].contains(&at) {
        e.push(FieldError::not_supported(
            "addressType",
            q(at),
            &["FQDN", "IPv4", "IPv6"],
        ));
    }
    for (i, ep) in v
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let addrs = ep
            .get("addresses")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if addrs.is_empty() {
            e.push(FieldError::required(
                format!("endpoints[{i}].addresses"),
                "",
            ));
        }
        if at != "FQDN" {
            for (j, a) in addrs.iter().enumerate() {
                if let Some(err) = ip_error(
                    format!("endpoints[{i}].addresses[{j}]"),
                    a.as_str().unwrap_or(""),
                ) {
                    e.push(err);
                }
            }
        }
    }
    for (j, p) in v
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        port_errors(&format!("ports[{j}]"), p, &mut e);
    }
    e
}

pub fn secret(v: &Value) -> Vec<FieldError> {
    let mut e = Vec::new();
    if v.get("type").and_then(Value::as_str) == Some("kubernetes.io/tls") {
        for key in ["tls.crt", "tls.key"] {
            if v.pointer(&format!("/data/{}", key.replace('/', "~1")))
                .is_none()
            {
                e.push(FieldError::required(format!("data[{key}]"), ""));
            }
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(e: Vec<FieldError>) -> Vec<String> {
        e.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn pods() {
        assert!(pod(&json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 9376}]}]}})).is_empty());
        assert_eq!(fields(pod(&json!({"spec": {}}))), ["spec.containers"]);
        assert_eq!(
            fields(pod(
                &json!({"spec": {"containers": [{"name": "C_1", "ports": [{"name": "x--y", "containerPort": 0}]}]}})
            )),
            [
                "spec.containers[0].name",
                "spec.containers[0].image",
                "spec.containers[0].ports[0].name",
                "spec.containers[0].ports[0].containerPort"
            ]
        );
        assert_eq!(
            fields(pod(
                &json!({"spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"podIP": "nope"}})
            )),
            ["status.podIP"]
        );
    }

    #[test]
    fn endpoints_and_slices() {
        assert_eq!(
            fields(endpoints(
                &json!({"subsets": [{"addresses": [{"ip": "x"}], "ports": [{"port": 80}, {"port": 0, "name": "b"}]}]})
            )),
            [
                "subsets[0].addresses[0].ip",
                "subsets[0].ports[0].name",
                "subsets[0].ports[1].port"
            ]
        );
        assert_eq!(
            fields(endpoint_slice(
                &json!({"addressType": "IPv4", "endpoints": [{"addresses": ["1.2.3"]}]})
            )),
            ["endpoints[0].addresses[0]"]
        );
        assert_eq!(
            fields(endpoint_slice(&json!({"addressType": "IPX"}))),
            ["addressType"]
        );
    }

    #[test]
    fn tls_secrets_need_both_keys() {
        assert_eq!(
            fields(secret(
                &json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}})
            )),
            ["data[tls.key]"]
        );
        assert!(secret(&json!({"type": "Opaque"})).is_empty());
    }

    #[test]
    fn labels() {
        assert_eq!(
            fields(metadata(
                &json!({"metadata": {"labels": {"-a": "b", "ok": "not ok"}}})
            )),
            ["metadata.labels", "metadata.labels"]
        );
    }
}
