//! Admission of one write: decoding into the k8s-openapi type (strict mode names the unknown
//! fields), the kind and namespace checks, create-time defaults, and validation (Services are
//! also defaulted and allocated here). Plain data in, the object to store or an `ApiError`
//! out; touches only the allocators it is handed.

use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

use super::WriteOpts;
use crate::alloc::Allocators;
use crate::api::status::ApiError;
use crate::resources::Resource;
use crate::validation::{self, FieldError, objects, service};

pub(super) fn meta_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get("metadata")?.get(key)?.as_str()
}

/// Fields in `orig` that the typed round trip dropped: unknown to the schema.
fn unknown_fields(orig: &Value, canon: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, canon) {
        (Value::Object(o), Value::Object(c)) => {
            for (k, v) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match c.get(k) {
                    Some(cv) => unknown_fields(v, cv, &p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(o), Value::Array(c)) => {
            for (i, (ov, cv)) in o.iter().zip(c).enumerate() {
                unknown_fields(ov, cv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Decode, strict-check, then canonicalize through the k8s-openapi type.
pub(super) fn decode(res: &Resource, v: &Value, opts: WriteOpts) -> Result<Value, ApiError> {
    let canon = res.canonicalize(v).map_err(|e| {
        ApiError::BadRequest(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            res.kind, res.version, res.kind
        ))
    })?;
    if opts.strict {
        let mut unknown = Vec::new();
        unknown_fields(v, &canon, "", &mut unknown);
        unknown.retain(|f| f != "apiVersion" && f != "kind");
        if !unknown.is_empty() {
            let list = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ApiError::BadRequest(format!(
                "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {list}",
                res.kind, res.version, res.kind
            )));
        }
    }
    Ok(canon)
}

pub(super) fn check_kind(res: &Resource, v: &Value) -> Result<(), ApiError> {
    if let Some(k) = v.get("kind").and_then(Value::as_str)
        && !k.is_empty()
        && k != res.kind
    {
        return Err(ApiError::BadRequest(format!(
            "the kind of the object ({k}) does not match the resource ({})",
            res.plural
        )));
    }
    Ok(())
}

/// Resource-specific checks; Services are also defaulted and allocated here.
pub(super) fn admit(
    res: &Resource,
    mut v: Value,
    old: Option<&Value>,
    allocs: &mut Allocators,
) -> Result<Value, ApiError> {
    let name = meta_str(&v, "name").unwrap_or("").to_string();
    let mut errs: Vec<FieldError> = Vec::new();
    if old.is_none() {
        for m in objects::name_errors(res.plural, &name) {
            errs.push(FieldError::invalid(
                "metadata.name",
                validation::q(&name),
                m,
            ));
        }
    }
    errs.extend(objects::metadata(&v));
    match res.plural {
        "pods" => errs.extend(objects::pod(&v)),
        "endpoints" => errs.extend(objects::endpoints(&v)),
        "endpointslices" => errs.extend(objects::endpoint_slice(&v)),
        "secrets" => errs.extend(objects::secret(&v)),
        _ => {}
    }
    if res.plural == "services" && errs.is_empty() {
        let svc: Service =
            serde_json::from_value(v.clone()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let old_svc: Option<Service> = old
            .map(|o| serde_json::from_value(o.clone()))
            .transpose()
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        match service::admit(svc, old_svc.as_ref(), allocs) {
            Ok(valid) => {
                v = res
                    .canonicalize(&serde_json::to_value(valid.into_inner()).expect("serializes"))
                    .map_err(ApiError::BadRequest)?
            }
            Err(e) => errs.extend(e),
        }
    }
    if !errs.is_empty() {
        return Err(ApiError::Invalid {
            kind: res.kind.into(),
            name,
            errors: errs,
        });
    }
    Ok(v)
}

pub(super) fn defaults_on_create(res: &Resource, v: &mut Value) {
    match res.plural {
        "pods" => {
            // As the API server does: a new Pod's status is the kubelet's to write.
            v["status"] = json!({"phase": "Pending"});
            if v.pointer("/spec/restartPolicy").is_none()
                && v.get("spec").is_some_and(Value::is_object)
            {
                v["spec"]["restartPolicy"] = json!("Always");
            }
        }
        "namespaces" => {
            v["spec"] = json!({"finalizers": ["kubernetes"]});
            v["status"] = json!({"phase": "Active"});
        }
        "secrets" if v.get("type").is_none() => v["type"] = json!("Opaque"),
        _ => {}
    }
}

pub(super) fn namespace_of(res: &Resource, url_ns: &str, v: &Value) -> Result<String, ApiError> {
    if !res.namespaced {
        return Ok(String::new());
    }
    match meta_str(v, "namespace") {
        Some(ns) if !ns.is_empty() && ns != url_ns => Err(ApiError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        )),
        _ => Ok(url_ns.to_string()),
    }
}
