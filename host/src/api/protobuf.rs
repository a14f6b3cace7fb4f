//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), which kubectl's
//! typed commands send (`kubectl create namespace|secret|configmap|service`, `kubectl run`,
//! `kubectl expose`). The envelope (`k8s\0` + `runtime.Unknown`) and the objects are decoded
//! with k8s-pb's prost types, then mapped to the JSON the rest of the API handles. Responses
//! stay JSON: clients decode by the response's Content-Type. Pure functions.

use base64::Engine;
use k8s_pb::api::core::v1 as pb;
use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

/// Inserts `v` unless it is null, an empty string, an empty list or an empty object.
fn put(m: &mut Map<String, Value>, k: &str, v: Value) {
    let empty = match &v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    if !empty {
        m.insert(k.to_string(), v);
    }
}

fn meta(m: Option<ObjectMeta>) -> Value {
    let m = m.unwrap_or_default();
    let mut o = Map::new();
    put(&mut o, "name", json!(m.name));
    put(&mut o, "generateName", json!(m.generate_name));
    put(&mut o, "namespace", json!(m.namespace));
    put(&mut o, "resourceVersion", json!(m.resource_version));
    put(&mut o, "labels", json!(m.labels));
    put(&mut o, "annotations", json!(m.annotations));
    put(&mut o, "finalizers", json!(m.finalizers));
    Value::Object(o)
}

fn b64(map: std::collections::BTreeMap<String, Vec<u8>>) -> Value {
    let e = base64::engine::general_purpose::STANDARD;
    Value::Object(
        map.into_iter()
            .map(|(k, v)| (k, json!(e.encode(v))))
            .collect(),
    )
}

fn int_or_string(v: Option<IntOrString>) -> Value {
    match v {
        Some(IntOrString {
            r#type: Some(1),
            str_val,
            ..
        }) => json!(str_val.unwrap_or_default()),
        Some(IntOrString { int_val, .. }) => json!(int_val.unwrap_or(0)),
        None => Value::Null,
    }
}

fn service(s: pb::Service) -> Value {
    let spec = s.spec.unwrap_or_default();
    let ports: Vec<Value> = spec
        .ports
        .into_iter()
        .map(|p| {
            let mut o = Map::new();
            put(&mut o, "name", json!(p.name));
            put(&mut o, "protocol", json!(p.protocol));
            put(&mut o, "appProtocol", json!(p.app_protocol));
            put(&mut o, "port", json!(p.port));
            put(&mut o, "targetPort", int_or_string(p.target_port));
            if p.node_port.unwrap_or(0) != 0 {
                put(&mut o, "nodePort", json!(p.node_port));
            }
            Value::Object(o)
        })
        .collect();
    let mut o = Map::new();
    put(&mut o, "ports", json!(ports));
    put(&mut o, "selector", json!(spec.selector));
    put(&mut o, "clusterIP", json!(spec.cluster_ip));
    put(&mut o, "clusterIPs", json!(spec.cluster_ips));
    put(&mut o, "type", json!(spec.r#type));
    put(&mut o, "externalIPs", json!(spec.external_ips));
    put(&mut o, "sessionAffinity", json!(spec.session_affinity));
    put(&mut o, "loadBalancerIP", json!(spec.load_balancer_ip));
    put(
        &mut o,
        "loadBalancerSourceRanges",
        json!(spec.load_balancer_source_ranges),
    );
    put(&mut o, "externalName", json!(spec.external_name));
    put(
        &mut o,
        "externalTrafficPolicy",
        json!(spec.external_traffic_policy),
    );
    put(
        &mut o,
        "publishNotReadyAddresses",
        json!(spec.publish_not_ready_addresses),
    );
    put(
        &mut o,
        "internalTrafficPolicy",
        json!(spec.internal_traffic_policy),
    );
    if let Some(t) = spec
        .session_affinity_config
        .and_then(|c| c.client_ip)
        .and_then(|c| c.timeout_seconds)
    {
        put(
            &mut o,
            "sessionAffinityConfig",
            json!({"clientIP": {"timeoutSeconds": t}}),
        );
    }
    json!({"metadata": meta(s.metadata), "spec": o})
}

fn pod(p: pb::Pod) -> Value {
    let spec = p.spec.unwrap_or_default();
    let containers: Vec<Value> = spec
        .containers
        .into_iter()
        .map(|c| {
            let mut o = Map::new();
            put(&mut o, "name", json!(c.name));
            put(&mut o, "image", json!(c.image));
            put(&mut o, "command", json!(c.command));
            put(&mut o, "args", json!(c.args));
            put(&mut o, "workingDir", json!(c.working_dir));
            put(&mut o, "imagePullPolicy", json!(c.image_pull_policy));
            let ports: Vec<Value> = c
                .ports
                .into_iter()
                .map(|p| {
                    let mut po = Map::new();
                    put(&mut po, "name", json!(p.name));
                    put(&mut po, "containerPort", json!(p.container_port));
                    put(&mut po, "protocol", json!(p.protocol));
                    Value::Object(po)
                })
                .collect();
            put(&mut o, "ports", json!(ports));
            let env: Vec<Value> = c
                .env
                .into_iter()
                .map(|e| json!({"name": e.name, "value": e.value.unwrap_or_default()}))
                .collect();
            put(&mut o, "env", json!(env));
            Value::Object(o)
        })
        .collect();
    let mut o = Map::new();
    put(&mut o, "containers", json!(containers));
    put(&mut o, "restartPolicy", json!(spec.restart_policy));
    put(&mut o, "nodeName", json!(spec.node_name));
    put(&mut o, "hostname", json!(spec.hostname));
    put(&mut o, "subdomain", json!(spec.subdomain));
    put(&mut o, "dnsPolicy", json!(spec.dns_policy));
    json!({"metadata": meta(p.metadata), "spec": o})
}

/// Decodes a protobuf body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the body lacks the Kubernetes protobuf prefix")?;
    let unknown = Unknown::decode(rest).map_err(|e| format!("protobuf envelope: {e}"))?;
    let tm = unknown.type_meta.unwrap_or_default();
    let (api_version, kind) = (
        tm.api_version.unwrap_or_default(),
        tm.kind.unwrap_or_default(),
    );
    let raw = unknown.raw.unwrap_or_default();
    let err = |e: prost::DecodeError| format!("protobuf {kind}: {e}");
    let mut v = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => {
            json!({"metadata": meta(pb::Namespace::decode(&raw[..]).map_err(err)?.metadata)})
        }
        ("v1", "Secret") => {
            let s = pb::Secret::decode(&raw[..]).map_err(err)?;
            let mut o = Map::new();
            put(&mut o, "metadata", meta(s.metadata));
            put(&mut o, "data", b64(s.data));
            put(&mut o, "stringData", json!(s.string_data));
            put(&mut o, "type", json!(s.r#type));
            put(&mut o, "immutable", json!(s.immutable));
            Value::Object(o)
        }
        ("v1", "ConfigMap") => {
            let c = pb::ConfigMap::decode(&raw[..]).map_err(err)?;
            let mut o = Map::new();
            put(&mut o, "metadata", meta(c.metadata));
            put(&mut o, "data", json!(c.data));
            put(&mut o, "binaryData", b64(c.binary_data));
            put(&mut o, "immutable", json!(c.immutable));
            Value::Object(o)
        }
        ("v1", "Service") => service(pb::Service::decode(&raw[..]).map_err(err)?),
        ("v1", "Pod") => pod(pb::Pod::decode(&raw[..]).map_err(err)?),
        _ => {
            return Err(format!(
                "protobuf bodies of {api_version}/{kind} are not supported here; send JSON or YAML (kubectl create -f / apply -f)"
            ));
        }
    };
    v["apiVersion"] = json!(api_version);
    v["kind"] = json!(kind);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut b = MAGIC.to_vec();
        b.extend(u.encode_to_vec());
        b
    }

    #[test]
    fn secret_and_service_round_trip() {
        let secret = pb::Secret {
            metadata: Some(ObjectMeta {
                name: Some("tls".into()),
                ..Default::default()
            }),
            data: [("tls.crt".to_string(), b"cert".to_vec())].into(),
            r#type: Some("kubernetes.io/tls".into()),
            ..Default::default()
        };
        let v = decode(&envelope("v1", "Secret", secret.encode_to_vec())).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"}, "data": {"tls.crt": "Y2VydA=="}, "type": "kubernetes.io/tls"})
        );

        let svc = pb::Service {
            metadata: Some(ObjectMeta {
                name: Some("web".into()),
                ..Default::default()
            }),
            spec: Some(pb::ServiceSpec {
                ports: vec![pb::ServicePort {
                    name: Some("80-8080".into()),
                    port: Some(80),
                    protocol: Some("TCP".into()),
                    target_port: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(8080),
                        str_val: None,
                    }),
                    ..Default::default()
                }],
                selector: [("app".to_string(), "web".to_string())].into(),
                r#type: Some("ClusterIP".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = decode(&envelope("v1", "Service", svc.encode_to_vec())).unwrap();
        assert_eq!(
            v["spec"]["ports"][0],
            json!({"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080})
        );
        assert_eq!(v["spec"]["selector"], json!({"app": "web"}));
    }

    #[test]
    fn unsupported_and_garbage_are_errors() {
        assert!(decode(b"not protobuf").is_err());
        assert!(decode(b"k8s\0\xff\xff\xff").is_err());
        assert!(
            decode(&envelope("apps/v1", "Deployment", vec![]))
                .unwrap_err()
                .contains("not supported")
        );
    }
}
