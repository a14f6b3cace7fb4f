//! The resources the embedded API serves: names, kinds, scopes, verbs and the k8s-openapi type
//! each decodes into. Plain data; discovery, OpenAPI and routing are all derived from this table.

use serde_json::Value;

/// One served resource.
#[derive(Debug)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served under `<plural>/<name>/<sub>`.
    pub subresources: &'static [&'static str],
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The key the store files this resource under.
    pub fn store_key(&self) -> &'static str {
        self.plural
    }

    /// `services`, or `endpointslices.discovery.k8s.io`: how Kubernetes names it in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Decodes into the k8s-openapi type and re-encodes: the canonical form Kubernetes would
    /// store (unknown fields dropped). Returns the canonical value or a decode error message.
    pub fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        use k8s_openapi::api::core::v1 as core;
        use k8s_openapi::api::discovery::v1 as discovery;
        fn round<T: serde::de::DeserializeOwned + serde::Serialize>(
            v: &Value,
        ) -> Result<Value, String> {
            let t: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
            serde_json::to_value(t).map_err(|e| e.to_string())
        }
        let mut out = match self.plural {
            "namespaces" => round::<core::Namespace>(v),
            "services" => round::<core::Service>(v),
            "endpoints" => round::<core::Endpoints>(v),
            "pods" => round::<core::Pod>(v),
            "secrets" => round::<core::Secret>(v),
            "configmaps" => round::<core::ConfigMap>(v),
            "events" => round::<core::Event>(v),
            "endpointslices" => round::<discovery::EndpointSlice>(v),
            other => Err(format!("no type for resource {other}")),
        }?;
        if let Some(o) = out.as_object_mut() {
            o.insert("apiVersion".into(), Value::String(self.api_version()));
            o.insert("kind".into(), Value::String(self.kind.to_string()));
        }
        Ok(out)
    }
}

pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        subresources: &["status"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        subresources: &["status"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "endpoints",
        singular: "endpoints",
        kind: "Endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        subresources: &["status"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
    },
];

/// The resource served at `group`/`version` with this plural name.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

pub fn by_plural(plural: &str) -> &'static Resource {
    RESOURCES
        .iter()
        .find(|r| r.plural == plural)
        .expect("known resource")
}

/// Every store key, for opening the store.
pub fn store_keys() -> Vec<&'static str> {
    RESOURCES.iter().map(Resource::store_key).collect()
}

/// The API groups other than core, each with its one version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut g: Vec<_> = RESOURCES
        .iter()
        .filter(|r| !r.group.is_empty())
        .map(|r| (r.group, r.version))
        .collect();
    g.dedup();
    g
}
