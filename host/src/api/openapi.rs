//! OpenAPI v3 documents as kubectl fetches them: `/openapi/v3` (an index of group/versions)
//! and one document per group/version with a path per resource operation. Each PATCH names its
//! `x-kubernetes-group-version-kind` and the `fieldValidation` parameter, so kubectl hands
//! validation to the server (`fieldValidation=Strict`); schemas come from k8s-openapi's
//! `schemars` derivations so `kubectl explain` and client-side tools see the real types.

use serde_json::{Map, Value, json};

use crate::resources::{RESOURCES, Resource, groups};

/// Paths of the index: `api/v1`, `apis/discovery.k8s.io/v1`.
pub fn group_versions() -> Vec<(String, &'static str, &'static str)> {
    let mut out = vec![("api/v1".to_string(), "", "v1")];
    for (g, v) in groups() {
        out.push((format!("apis/{g}/{v}"), g, v));
    }
    out
}

pub fn index() -> Value {
    let mut paths = Map::new();
    for (p, _, _) in group_versions() {
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash())}),
        );
    }
    json!({"paths": paths})
}

/// Changes with the binary, so clients cache by it safely.
fn hash() -> &'static str {
    concat!("switchyard-", env!("CARGO_PKG_VERSION"))
}

fn schema_name(r: &Resource) -> String {
    let g = if r.group.is_empty() {
        "core".to_string()
    } else {
        r.group.split('.').next().unwrap_or(r.group).to_string()
    };
    format!("io.k8s.api.{g}.{}.{}", r.version, r.kind)
}

fn gvk(r: &Resource) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

fn param(name: &str, location: &str) -> Value {
    json!({"name": name, "in": location, "required": location == "path", "schema": {"type": "string", "uniqueItems": true}})
}

fn op(r: &Resource, action: &str, body: bool, extra: &[&str]) -> Value {
    let schema_ref = json!({"$ref": format!("#/components/schemas/{}", schema_name(r))});
    let mut o = json!({
        "operationId": format!("{action}{}", r.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(r),
        "parameters": extra.iter().map(|p| param(p, "query")).collect::<Vec<_>>(),
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref.clone()}}}},
    });
    if body {
        let ct = if action == "patch" {
            json!({
                "application/json-patch+json": {"schema": {"type": "object"}},
                "application/merge-patch+json": {"schema": {"type": "object"}},
                "application/strategic-merge-patch+json": {"schema": {"type": "object"}},
            })
        } else {
            json!({"application/json": {"schema": schema_ref}})
        };
        o["requestBody"] = json!({"content": ct});
    }
    o
}

/// Registers the resource's type (and everything it references) with the generator.
fn add_schema(r: &Resource, generator: &mut schemars::SchemaGenerator) {
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::api::discovery::v1 as discovery;
    match r.plural {
        "namespaces" => generator.subschema_for::<core::Namespace>(),
        "services" => generator.subschema_for::<core::Service>(),
        "endpoints" => generator.subschema_for::<core::Endpoints>(),
        "pods" => generator.subschema_for::<core::Pod>(),
        "secrets" => generator.subschema_for::<core::Secret>(),
        "configmaps" => generator.subschema_for::<core::ConfigMap>(),
        "events" => generator.subschema_for::<core::Event>(),
        "endpointslices" => generator.subschema_for::<discovery::EndpointSlice>(),
        _ => return,
    };
}

/// The document for one group/version; `None` if it is not served.
pub fn document(path: &str) -> Option<Value> {
    let (_, group, version) = group_versions().into_iter().find(|(p, _, _)| p == path)?;
    let mut paths = Map::new();
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let write = ["dryRun", "fieldManager", "fieldValidation"];
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let base = if group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{group}/{version}")
        };
        let coll = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        let list = [
            "labelSelector",
            "fieldSelector",
            "resourceVersion",
            "watch",
            "limit",
            "continue",
            "timeoutSeconds",
            "allowWatchBookmarks",
        ];
        paths.insert(
            coll.clone(),
            json!({"get": op(r, "list", false, &list), "post": op(r, "post", true, &write)}),
        );
        let item = format!("{coll}/{{name}}");
        paths.insert(item.clone(), json!({
            "get": op(r, "get", false, &[]),
            "put": op(r, "put", true, &write),
            "patch": op(r, "patch", true, &["dryRun", "fieldManager", "fieldValidation", "force"]),
            "delete": op(r, "delete", false, &["dryRun", "gracePeriodSeconds", "propagationPolicy"]),
        }));
        for sub in r.subresources {
            paths.insert(format!("{item}/{sub}"), json!({
                "get": op(r, "get", false, &[]),
                "put": op(r, "put", true, &write),
                "patch": op(r, "patch", true, &["dryRun", "fieldManager", "fieldValidation", "force"]),
            }));
        }
        add_schema(r, &mut generator);
    }
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        if let Some(Value::Object(o)) = schemas.get_mut(&schema_name(r)) {
            o.insert("x-kubernetes-group-version-kind".into(), json!([gvk(r)]));
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
