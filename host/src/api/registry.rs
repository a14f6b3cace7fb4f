//! The registry: Kubernetes write semantics over the store. Metadata (names, generateName,
//! uid, timestamps, resourceVersion preconditions), subresources, namespace lifecycle; each
//! object passes `admission` (decoding into k8s-openapi types, defaults, validation, Service
//! allocation) on its way in. Every write, from the API or from a controller, passes through
//! here under one lock, then waits for durability.

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use k8s_openapi::api::core::v1::Service;
use parking_lot::Mutex;
use rand::Rng;
use serde_json::{Map, Value, json};

mod admission;

use admission::meta_str;

use super::patch;
use super::status::ApiError;
use crate::alloc::{Allocators, IpPool, PortPool};
use crate::resources::{self, Resource};
use crate::store::{Store, Stored, Txn};
use crate::validation::{FieldError, service};

/// What the registry needs to know about the cluster it serves.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub service_cidr: ipnet::Ipv4Net,
    pub node_ports: (u16, u16),
    pub lb_pool: ipnet::Ipv4Net,
    /// Where the `kubernetes` Service's Endpoints point.
    pub api_endpoint: (IpAddr, u16),
}

/// Per-request options from the query string.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOpts {
    pub dry_run: bool,
    /// `fieldValidation=Strict`: unknown fields are an error instead of being dropped.
    pub strict: bool,
}

pub struct Registry {
    pub store: Store,
    allocs: Mutex<Allocators>,
    pub config: RegistryConfig,
}

const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    v["metadata"].as_object_mut().expect("object")
}

impl Registry {
    pub fn open(path: &std::path::Path, config: RegistryConfig) -> anyhow::Result<Self> {
        let store = Store::open(path, &resources::store_keys())?;
        let mut allocs = Allocators {
            cluster_ips: IpPool::new(config.service_cidr),
            node_ports: PortPool::new(config.node_ports.0, config.node_ports.1),
            lb_ips: IpPool::new(config.lb_pool),
        };
        for (_, _, s) in store.list("services", None).0 {
            let svc: Service = serde_json::from_slice(&s.raw)?;
            service::claim_existing(&svc, &mut allocs);
        }
        Ok(Registry {
            store,
            allocs: Mutex::new(allocs),
            config,
        })
    }

    /// Namespaces `default`, `kube-system`, `kube-public`, and the `kubernetes` Service with
    /// Endpoints pointing at the API.
    pub async fn bootstrap(&self) -> Result<(), ApiError> {
        for ns in PROTECTED_NAMESPACES {
            if self.store.get("namespaces", "", ns).is_none() {
                self.create(
                    resources::by_plural("namespaces"),
                    "",
                    json!({"metadata": {"name": ns}}),
                    WriteOpts::default(),
                )
                .await?;
            }
        }
        let first = self
            .config
            .service_cidr
            .hosts()
            .next()
            .unwrap_or(Ipv4Addr::LOCALHOST);
        if self
            .store
            .get("services", "default", "kubernetes")
            .is_none()
        {
            let svc = json!({
                "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"clusterIP": first.to_string(), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": self.config.api_endpoint.1}]}
            });
            self.create(
                resources::by_plural("services"),
                "default",
                svc,
                WriteOpts::default(),
            )
            .await?;
        }
        let (ip, port) = self.config.api_endpoint;
        let eps = json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": ip.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]
        });
        self.upsert(resources::by_plural("endpoints"), "default", eps)
            .await?;
        Ok(())
    }

    pub fn get(&self, res: &Resource, ns: &str, name: &str) -> Result<Stored, ApiError> {
        self.store
            .get(res.store_key(), ns, name)
            .ok_or_else(|| not_found(res, name))
    }

    pub async fn create(
        &self,
        res: &'static Resource,
        url_ns: &str,
        body: Value,
        opts: WriteOpts,
    ) -> Result<Bytes, ApiError> {
        admission::check_kind(res, &body)?;
        let mut v = admission::decode(res, &body, opts)?;
        let ns = admission::namespace_of(res, url_ns, &v)?;
        let meta = meta_mut(&mut v);
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            let gen_name = meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if gen_name.is_empty() {
                return Err(ApiError::Invalid {
                    kind: res.kind.into(),
                    name: String::new(),
                    errors: vec![FieldError::required(
                        "metadata.name",
                        "name or generateName is required",
                    )],
                });
            }
            name = format!("{gen_name}{}", random_suffix());
        }
        meta.insert("name".into(), json!(name));
        if res.namespaced {
            meta.insert("namespace".into(), json!(ns));
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.remove("resourceVersion");
        meta.remove("deletionTimestamp");
        meta.remove("managedFields");
        admission::defaults_on_create(res, &mut v);
        let (out, durable) = {
            let mut allocs = self.allocs.lock();
            let mut trial = allocs.clone();
            let stored = self.store.write(|t| {
                if res.namespaced && t.get("namespaces", "", &ns).is_none() {
                    return Err(ApiError::NotFound {
                        resource: "namespaces".into(),
                        name: ns.clone(),
                    });
                }
                if t.get(res.store_key(), &ns, &name).is_some() {
                    return Err(ApiError::AlreadyExists {
                        resource: res.qualified(),
                        name: name.clone(),
                    });
                }
                let mut v = admission::admit(res, v, None, &mut trial)?;
                if opts.dry_run {
                    return Ok(Bytes::from(serde_json::to_vec(&v).expect("serializes")));
                }
                Ok(t.put(res.store_key(), &ns, &name, &mut v).raw)
            })?;
            if !opts.dry_run {
                *allocs = trial;
            }
            stored
        };
        durable.wait().await;
        Ok(out)
    }

    /// PUT, on the object or on its `status` subresource.
    pub async fn update(
        &self,
        res: &'static Resource,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        body: Value,
        opts: WriteOpts,
    ) -> Result<Bytes, ApiError> {
        admission::check_kind(res, &body)?;
        let v = admission::decode(res, &body, opts)?;
        if let Some(n) = meta_str(&v, "name")
            && n != name
        {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        admission::namespace_of(res, ns, &v)?;
        self.replace(res, ns, name, sub, opts, |_| Ok(v)).await
    }

    pub async fn patch(
        &self,
        res: &'static Resource,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        req: patch::PatchRequest<'_>,
        opts: WriteOpts,
    ) -> Result<Bytes, ApiError> {
        self.replace(res, ns, name, sub, opts, |current| {
            let patched = patch::apply(req.kind, current, req.body)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            admission::check_kind(res, &patched)?;
            if meta_str(&patched, "name") != Some(name) {
                return Err(ApiError::BadRequest(
                    "metadata.name may not be changed by a patch".into(),
                ));
            }
            admission::decode(res, &patched, opts)
        })
        .await
    }

    /// Read-modify-write under the registry lock: `f` gets the current object and returns the
    /// requested new one; metadata, subresource and resourceVersion rules are applied after.
    async fn replace(
        &self,
        res: &'static Resource,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        opts: WriteOpts,
        f: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Bytes, ApiError> {
        let (out, durable) = {
            let mut allocs = self.allocs.lock();
            let mut trial = allocs.clone();
            let result = self.store.write(|t| {
                let current = t.get(res.store_key(), ns, name).ok_or_else(|| not_found(res, name))?.value();
                let mut new = f(&current)?;
                let want_rv = meta_str(&new, "resourceVersion").unwrap_or("").to_string();
                if !want_rv.is_empty() && Some(want_rv.as_str()) != meta_str(&current, "resourceVersion") {
                    return Err(ApiError::Conflict {
                        resource: res.qualified(),
                        name: name.into(),
                        reason: "the object has been modified; please apply your changes to the latest version and try again".into(),
                    });
                }
                // Identity and server-owned metadata stay as stored.
                let cur_meta = current["metadata"].clone();
                let meta = meta_mut(&mut new);
                for k in ["name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "generateName"] {
                    match cur_meta.get(k) {
                        Some(v) => meta.insert(k.into(), v.clone()),
                        None => meta.remove(k),
                    };
                }
                meta.remove("managedFields");
                match sub {
                    Some("status") => {
                        let status = new.get("status").cloned().unwrap_or(Value::Null);
                        new = current.clone();
                        new["status"] = status;
                    }
                    Some(other) => return Err(ApiError::BadRequest(format!("unknown subresource {other}"))),
                    None if res.subresources.contains(&"status") && res.plural != "services" => {
                        // Main-resource writes do not change status (Services: see validation).
                        match current.get("status") {
                            Some(s) => new["status"] = s.clone(),
                            None => {
                                new.as_object_mut().expect("object").remove("status");
                            }
                        }
                    }
                    None => {}
                }
                let mut new = if sub.is_some() && res.plural == "services" {
                    // Status writes skip spec admission (as MetalLB-style controllers expect).
                    new
                } else {
                    admission::admit(res, new, Some(&current), &mut trial)?
                };
                if new == current || opts.dry_run {
                    return Ok(Bytes::from(serde_json::to_vec(&new).expect("serializes")));
                }
                Ok(t.put(res.store_key(), ns, name, &mut new).raw)
            })?;
            if !opts.dry_run {
                *allocs = trial;
            }
            result
        };
        durable.wait().await;
        Ok(out)
    }

    pub async fn delete(
        &self,
        res: &'static Resource,
        ns: &str,
        name: &str,
        opts: WriteOpts,
    ) -> Result<Bytes, ApiError> {
        if res.plural == "namespaces" && PROTECTED_NAMESPACES.contains(&name) {
            return Err(ApiError::Forbidden {
                resource: "namespaces".into(),
                name: name.into(),
                reason: "this namespace may not be deleted".into(),
            });
        }
        let (out, durable) = {
            let mut allocs = self.allocs.lock();
            self.store.write(|t| {
                let current = t
                    .get(res.store_key(), ns, name)
                    .ok_or_else(|| not_found(res, name))?
                    .clone();
                if opts.dry_run {
                    return Ok(current.raw);
                }
                if res.plural == "namespaces" {
                    delete_namespace_contents(t, name, &mut allocs);
                }
                if res.plural == "services"
                    && let Ok(svc) = serde_json::from_slice::<Service>(&current.raw)
                {
                    service::release(&svc, &mut allocs);
                }
                Ok(t.delete(res.store_key(), ns, name).expect("present").raw)
            })?
        };
        durable.wait().await;
        Ok(out)
    }

    /// Create or replace without preconditions; no write when nothing changed. For controllers.
    pub async fn upsert(
        &self,
        res: &'static Resource,
        ns: &str,
        mut v: Value,
    ) -> Result<(), ApiError> {
        let name = meta_str(&v, "name").unwrap_or("").to_string();
        meta_mut(&mut v).remove("resourceVersion");
        let strip = |mut x: Value| {
            let m = meta_mut(&mut x);
            for k in ["uid", "creationTimestamp", "resourceVersion", "namespace"] {
                m.remove(k);
            }
            x
        };
        // Canonical once: compared with what is stored, and written as is.
        let canon = res.canonicalize(&v).map_err(ApiError::BadRequest)?;
        // Bounded: a create can lose a race to another writer at most a few times.
        for _ in 0..3 {
            let result = match self.store.get(res.store_key(), ns, &name) {
                None => self
                    .create(res, ns, v.clone(), WriteOpts::default())
                    .await
                    .map(|_| ()),
                Some(cur) => {
                    if strip(canon.clone()) == strip(cur.value()) {
                        return Ok(());
                    }
                    let desired = canon.clone();
                    self.replace(res, ns, &name, None, WriteOpts::default(), |_| Ok(desired))
                        .await
                        .map(|_| ())
                }
            };
            match result {
                Err(ApiError::AlreadyExists { .. }) | Err(ApiError::NotFound { .. }) => continue,
                other => return other,
            }
        }
        Ok(())
    }

    /// Delete if present (controllers).
    pub async fn remove(
        &self,
        res: &'static Resource,
        ns: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        match self.delete(res, ns, name, WriteOpts::default()).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn delete_namespace_contents(t: &mut Txn<'_>, ns: &str, allocs: &mut Allocators) {
    for r in resources::RESOURCES.iter().filter(|r| r.namespaced) {
        for (_, name, s) in t.list(r.store_key(), Some(ns)) {
            if r.plural == "services"
                && let Ok(svc) = serde_json::from_slice::<Service>(&s.raw)
            {
                service::release(&svc, allocs);
            }
            t.delete(r.store_key(), ns, &name);
        }
    }
}

fn not_found(res: &Resource, name: &str) -> ApiError {
    ApiError::NotFound {
        resource: res.qualified(),
        name: name.into(),
    }
}
