//! PATCH bodies: JSON merge (RFC 7386), JSON patch (RFC 6902) through the `json-patch` crate,
//! and Kubernetes strategic merge patch for the types served here: lists merged by their
//! `patchMergeKey`, and the `$patch`, `$retainKeys`, `$setElementOrder/...` and
//! `$deleteFromPrimitiveList/...` directives. Pure functions over JSON values.

use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            _ => None,
        }
    }
}

/// A PATCH request body and how to read it.
#[derive(Clone, Copy, Debug)]
pub struct PatchRequest<'a> {
    pub kind: PatchType,
    pub body: &'a [u8],
}

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    )]
    UnknownFormat,
    #[error("{0}")]
    Invalid(String),
}

pub fn apply(kind: PatchType, doc: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let p: Value = serde_json::from_slice(patch).map_err(|e| PatchError::Invalid(e.to_string()))?;
    let mut out = doc.clone();
    match kind {
        PatchType::Merge => {
            if !p.is_object() {
                return Err(PatchError::Invalid(
                    "a merge patch must be a JSON object".into(),
                ));
            }
            json_patch::merge(&mut out, &p);
        }
        PatchType::Json => {
            let ops: json_patch::Patch =
                serde_json::from_value(p).map_err(|e| PatchError::Invalid(e.to_string()))?;
            json_patch::patch(&mut out, &ops).map_err(|e| PatchError::Invalid(e.to_string()))?;
        }
        PatchType::Strategic => {
            if !p.is_object() {
                return Err(PatchError::Invalid(
                    "a strategic merge patch must be a JSON object".into(),
                ));
            }
            strategic(&mut out, &p, "")?;
        }
    }
    Ok(out)
}

/// The merge key of the list at `path` (dotted field names, no indices), if it merges.
fn merge_key(path: &str) -> Option<&'static str> {
    Some(match path {
        "spec.ports" => "port",
        "spec.containers" | "spec.initContainers" | "spec.ephemeralContainers" => "name",
        "spec.containers.ports" | "spec.initContainers.ports" => "containerPort",
        "spec.containers.env" | "spec.initContainers.env" => "name",
        "spec.containers.volumeMounts" | "spec.initContainers.volumeMounts" => "mountPath",
        "spec.volumes" | "spec.imagePullSecrets" => "name",
        "spec.hostAliases" => "ip",
        "status.conditions" | "status.podIPs" | "status.hostIPs" => match path {
            "status.conditions" => "type",
            _ => "ip",
        },
        "metadata.ownerReferences" => "uid",
        _ => return None,
    })
}

/// Lists of scalars merged as sets.
fn merges_primitives(path: &str) -> bool {
    path == "metadata.finalizers"
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn strategic(doc: &mut Value, patch: &Value, path: &str) -> Result<(), PatchError> {
    let Some(pm) = patch.as_object() else {
        *doc = patch.clone();
        return Ok(());
    };
    match pm.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut m = pm.clone();
            m.remove("$patch");
            *doc = Value::Object(m);
            return Ok(());
        }
        Some("delete") => {
            *doc = Value::Object(Map::new());
            return Ok(());
        }
        Some(other) => return Err(PatchError::Invalid(format!("unknown patch type: {other}"))),
        None => {}
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let dm = doc.as_object_mut().expect("object");
    if let Some(retain) = pm.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        dm.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, pv) in pm {
        if k.starts_with('$') {
            continue;
        }
        let child = join(path, k);
        if pv.is_null() {
            dm.remove(k);
            continue;
        }
        match (dm.get_mut(k), pv) {
            (Some(dv @ Value::Object(_)), Value::Object(_)) => strategic(dv, pv, &child)?,
            (Some(Value::Array(da)), Value::Array(pa)) => {
                if let Some(key) = merge_key(&child) {
                    merge_list(da, pa, key, &child)?;
                } else if merges_primitives(&child) {
                    for v in pa {
                        if !da.contains(v) {
                            da.push(v.clone());
                        }
                    }
                } else {
                    *da = pa.clone();
                }
            }
            (_, Value::Object(_)) => {
                let mut fresh = Value::Object(Map::new());
                strategic(&mut fresh, pv, &child)?;
                dm.insert(k.clone(), fresh);
            }
            (_, Value::Array(pa)) => {
                // A list that did not exist: directives inside it still need removing.
                let mut fresh = Vec::new();
                if let Some(key) = merge_key(&child) {
                    merge_list(&mut fresh, pa, key, &child)?;
                } else {
                    fresh = pa.clone();
                }
                dm.insert(k.clone(), Value::Array(fresh));
            }
            _ => {
                dm.insert(k.clone(), pv.clone());
            }
        }
    }
    for (k, pv) in pm {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/")
            && let (Some(Value::Array(da)), Some(gone)) = (dm.get_mut(field), pv.as_array())
        {
            da.retain(|v| !gone.contains(v));
        }
    }
    for (k, pv) in pm {
        if let Some(field) = k.strip_prefix("$setElementOrder/")
            && let (Some(Value::Array(da)), Some(order)) = (dm.get_mut(field), pv.as_array())
        {
            let key = merge_key(&join(path, field));
            reorder(da, order, key);
        }
    }
    Ok(())
}

fn merge_list(da: &mut Vec<Value>, pa: &[Value], key: &str, path: &str) -> Result<(), PatchError> {
    if pa.len() == 1 && pa[0].get("$patch").and_then(Value::as_str) == Some("replace") {
        da.clear();
        return Ok(());
    }
    for item in pa {
        let Some(kv) = item.get(key) else {
            return Err(PatchError::Invalid(format!(
                "map: {item} does not contain declared merge key: {key}"
            )));
        };
        let pos = da.iter().position(|d| d.get(key) == Some(kv));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                da.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => strategic(&mut da[i], item, path)?,
            None => {
                let mut fresh = Value::Object(Map::new());
                strategic(&mut fresh, item, path)?;
                da.push(fresh);
            }
        }
    }
    Ok(())
}

/// Orders `da` as `order` lists it; elements not named keep their relative order at the end.
fn reorder(da: &mut [Value], order: &[Value], key: Option<&str>) {
    let id = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let rank = |v: &Value| {
        order
            .iter()
            .position(|o| id(o) == id(v))
            .unwrap_or(usize::MAX)
    };
    da.sort_by_key(|v| rank(v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(doc: Value, patch: Value) -> Value {
        apply(PatchType::Strategic, &doc, patch.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn ports_merge_by_port_and_keep_allocated_fields() {
        let doc = json!({"spec": {"clusterIP": "127.96.0.5", "ports": [{"port": 80, "targetPort": 9376, "protocol": "TCP", "nodePort": 30001}]}});
        let out = smp(
            doc,
            json!({"spec": {"$setElementOrder/ports": [{"port": 80}], "ports": [{"port": 80, "targetPort": 9377}]}}),
        );
        assert_eq!(
            out,
            json!({"spec": {"clusterIP": "127.96.0.5", "ports": [{"port": 80, "targetPort": 9377, "protocol": "TCP", "nodePort": 30001}]}})
        );
    }

    #[test]
    fn delete_directives_and_nulls() {
        let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y"]}, "spec": {"ports": [{"port": 80}, {"port": 81}]}});
        let out = smp(
            doc,
            json!({
                "metadata": {"labels": {"a": null}, "$deleteFromPrimitiveList/finalizers": ["x"]},
                "spec": {"ports": [{"port": 80, "$patch": "delete"}]}
            }),
        );
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2"}, "finalizers": ["y"]}, "spec": {"ports": [{"port": 81}]}})
        );
    }

    #[test]
    fn set_element_order_and_new_elements() {
        let doc = json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}});
        let out = smp(
            doc,
            json!({"spec": {"$setElementOrder/ports": [{"port": 82}, {"port": 81}, {"port": 80}], "ports": [{"port": 82}]}}),
        );
        assert_eq!(
            out,
            json!({"spec": {"ports": [{"port": 82}, {"port": 81}, {"port": 80}]}})
        );
    }

    #[test]
    fn conditions_merge_by_type_and_unkeyed_lists_replace() {
        let doc = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Scheduled", "status": "True"}]}, "spec": {"externalIPs": ["1.1.1.1"]}});
        let out = smp(
            doc,
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}, "spec": {"externalIPs": ["2.2.2.2"]}}),
        );
        assert_eq!(
            out["status"]["conditions"][0],
            json!({"type": "Ready", "status": "True"})
        );
        assert_eq!(out["status"]["conditions"][1]["type"], "Scheduled");
        assert_eq!(out["spec"]["externalIPs"], json!(["2.2.2.2"]));
    }

    #[test]
    fn replace_and_retain_keys() {
        let doc = json!({"spec": {"selector": {"a": "1", "b": "2"}, "x": 1, "y": 2}});
        let out = smp(
            doc.clone(),
            json!({"spec": {"selector": {"$patch": "replace", "c": "3"}}}),
        );
        assert_eq!(out["spec"]["selector"], json!({"c": "3"}));
        let out = smp(
            doc,
            json!({"spec": {"$retainKeys": ["x", "selector"], "x": 5}}),
        );
        assert_eq!(
            out["spec"],
            json!({"selector": {"a": "1", "b": "2"}, "x": 5})
        );
    }

    #[test]
    fn merge_and_json_patch() {
        let doc = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"ports": [{"port": 80}]}});
        let m = apply(
            PatchType::Merge,
            &doc,
            br#"{"metadata":{"labels":{"a":null,"b":"2"}}}"#,
        )
        .unwrap();
        assert_eq!(m["metadata"]["labels"], json!({"b": "2"}));
        let j = apply(
            PatchType::Json,
            &doc,
            br#"[{"op":"replace","path":"/spec/ports/0/port","value":81}]"#,
        )
        .unwrap();
        assert_eq!(j["spec"]["ports"][0]["port"], 81);
        assert!(
            apply(
                PatchType::Json,
                &doc,
                br#"[{"op":"remove","path":"/nope"}]"#
            )
            .is_err()
        );
        assert!(
            apply(
                PatchType::Strategic,
                &doc,
                br#"{"spec":{"ports":[{"targetPort":1}]}}"#
            )
            .is_err()
        );
    }
}
