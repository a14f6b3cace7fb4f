//! The object store behind the embedded API: every object as compact JSON bytes in memory
//! (for gets, lists and watches) and in a redb file (for durability), one global revision
//! counter like etcd's, and a watch hub. Resource-agnostic: Kubernetes rules live in `api`.
//! Writes run as closures over a `Txn` under one write lock (no I/O inside it); the durable
//! commit happens after, group-committed by `db`'s writer thread.

mod db;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use bytes::Bytes;
use parking_lot::RwLock;
use serde_json::Value;
use tokio::sync::oneshot;

pub use watch::{Event, EventKind, TooOld, WatchHub};

/// How many committed events the watch history keeps.
const HISTORY: usize = 32_768;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(String),
    #[error("{0} is in use by another process (is another switchyard serving this --data-dir?)")]
    Locked(String),
    #[error("stored object {key} is not valid JSON: {error}")]
    Corrupt { key: String, error: String },
}

/// One stored object: its JSON, its resourceVersion and its labels (for selectors).
#[derive(Clone, Debug)]
pub struct Stored {
    pub raw: Bytes,
    pub rv: u64,
    pub labels: Arc<BTreeMap<String, String>>,
}

impl Stored {
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.raw).expect("stored objects are valid JSON")
    }
}

type Objects = BTreeMap<(String, String), Stored>;

struct State {
    objects: HashMap<&'static str, Objects>,
    revision: u64,
}

pub struct Store {
    state: RwLock<State>,
    writer: parking_lot::Mutex<Option<mpsc::Sender<db::Batch>>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    hub: Arc<WatchHub>,
}

impl Drop for Store {
    /// Closes the writer's queue and waits for it to commit what it holds and close the file.
    fn drop(&mut self) {
        self.writer.lock().take();
        if let Some(t) = self.writer_thread.take() {
            let _ = t.join();
        }
    }
}

/// Resolves when the write it belongs to is durable.
pub struct Durable(Option<oneshot::Receiver<()>>);

impl Durable {
    pub async fn wait(self) {
        if let Some(rx) = self.0 {
            // The writer exits the process rather than drop an ack, so an error is shutdown.
            let _ = rx.await;
        }
    }
}

impl Store {
    /// Opens the database at `path`; `resources` names every resource the store may hold.
    pub fn open(path: &Path, resources: &[&'static str]) -> Result<Self, StoreError> {
        let (db, rows, revision) = db::open(path)?;
        let mut objects: HashMap<&'static str, Objects> =
            resources.iter().map(|r| (*r, Objects::new())).collect();
        let mut max_rv = revision;
        for (key, raw) in rows {
            let mut parts = key.splitn(3, '/');
            let (Some(res), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                tracing::warn!(%key, "skipping stored key of unknown shape");
                continue;
            };
            let Some(res) = resources.iter().find(|r| **r == res) else {
                tracing::warn!(%key, "skipping stored object of unknown resource");
                continue;
            };
            let value: Value = serde_json::from_slice(&raw).map_err(|e| StoreError::Corrupt {
                key: key.clone(),
                error: e.to_string(),
            })?;
            let rv = resource_version(&value);
            max_rv = max_rv.max(rv);
            let stored = Stored {
                raw,
                rv,
                labels: Arc::new(labels_of(&value)),
            };
            objects
                .get_mut(res)
                .expect("all resources present")
                .insert((ns.to_string(), name.to_string()), stored);
        }
        let hub = Arc::new(WatchHub::new(max_rv, HISTORY));
        let (tx, rx) = mpsc::channel();
        let writer_thread = db::spawn_writer(db, rx, hub.clone());
        Ok(Store {
            state: RwLock::new(State {
                objects,
                revision: max_rv,
            }),
            writer: parking_lot::Mutex::new(Some(tx)),
            writer_thread: Some(writer_thread),
            hub,
        })
    }

    pub fn revision(&self) -> u64 {
        self.state.read().revision
    }

    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Stored> {
        let state = self.state.read();
        state
            .objects
            .get(resource)?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every object of `resource` (in `namespace` if given), with the store revision.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> (Vec<Listed>, u64) {
        let state = self.state.read();
        let out = state
            .objects
            .get(resource)
            .map(|m| collect(m, namespace))
            .unwrap_or_default();
        (out, state.revision)
    }

    pub fn hub(&self) -> &Arc<WatchHub> {
        &self.hub
    }

    /// Runs `f` atomically against the current state. Nothing is changed if `f` errs.
    pub fn write<T, E>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, E>,
    ) -> Result<(T, Durable), E> {
        let mut state = self.state.write();
        let mut txn = Txn {
            state: &mut state,
            ops: Vec::new(),
            events: Vec::new(),
            undo: Vec::new(),
            start_revision: 0,
        };
        txn.start_revision = txn.state.revision;
        match f(&mut txn) {
            Ok(v) => {
                if txn.ops.is_empty() {
                    return Ok((v, Durable(None)));
                }
                let (ack_tx, ack_rx) = oneshot::channel();
                let batch = db::Batch {
                    ops: std::mem::take(&mut txn.ops),
                    events: std::mem::take(&mut txn.events),
                    revision: txn.state.revision,
                    ack: Some(ack_tx),
                };
                // Sent under the state lock, so the writer sees batches in revision order.
                self.writer
                    .lock()
                    .as_ref()
                    .expect("store is open")
                    .send(batch)
                    .expect("store writer thread is alive");
                Ok((v, Durable(Some(ack_rx))))
            }
            Err(e) => {
                txn.rollback();
                Err(e)
            }
        }
    }
}

/// One listed object: namespace, name and the stored object.
pub type Listed = (String, String, Stored);

fn collect(m: &Objects, namespace: Option<&str>) -> Vec<Listed> {
    let entry =
        |((ns, name), s): (&(String, String), &Stored)| (ns.clone(), name.clone(), s.clone());
    match namespace {
        None => m.iter().map(entry).collect(),
        Some(ns) => m
            .range((ns.to_string(), String::new())..)
            .take_while(|((n, _), _)| n == ns)
            .map(entry)
            .collect(),
    }
}

/// A write in progress; see [`Store::write`].
pub struct Txn<'a> {
    state: &'a mut State,
    ops: Vec<db::Op>,
    events: Vec<Arc<Event>>,
    undo: Vec<(&'static str, (String, String), Option<Stored>)>,
    start_revision: u64,
}

impl Txn<'_> {
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<&Stored> {
        self.state
            .objects
            .get(resource)?
            .get(&(namespace.to_string(), name.to_string()))
    }

    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Listed> {
        self.state
            .objects
            .get(resource)
            .map(|m| collect(m, namespace))
            .unwrap_or_default()
    }

    /// Stores `obj` (setting `metadata.resourceVersion`) and returns what was stored.
    pub fn put(
        &mut self,
        resource: &'static str,
        namespace: &str,
        name: &str,
        obj: &mut Value,
    ) -> Stored {
        self.state.revision += 1;
        let rv = self.state.revision;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let raw = compact(obj);
        let stored = Stored {
            raw: raw.clone(),
            rv,
            labels: Arc::new(labels_of(obj)),
        };
        let key = (namespace.to_string(), name.to_string());
        let old = self
            .state
            .objects
            .get_mut(resource)
            .expect("known resource")
            .insert(key.clone(), stored.clone());
        self.undo.push((resource, key, old.clone()));
        self.ops.push(db::Op::Put {
            key: storage_key(resource, namespace, name),
            raw,
        });
        self.events.push(Arc::new(Event {
            kind: if old.is_some() {
                EventKind::Modified
            } else {
                EventKind::Added
            },
            resource,
            namespace: namespace.to_string(),
            name: name.to_string(),
            object: stored.clone(),
            old_labels: old.as_ref().map(|o| o.labels.clone()),
        }));
        stored
    }

    /// Removes an object; the returned copy carries the deletion revision.
    pub fn delete(
        &mut self,
        resource: &'static str,
        namespace: &str,
        name: &str,
    ) -> Option<Stored> {
        let key = (namespace.to_string(), name.to_string());
        let old = self.state.objects.get_mut(resource)?.remove(&key)?;
        self.state.revision += 1;
        let rv = self.state.revision;
        let mut value = old.value();
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let gone = Stored {
            raw: compact(&value),
            rv,
            labels: old.labels.clone(),
        };
        self.undo.push((resource, key, Some(old)));
        self.ops.push(db::Op::Delete {
            key: storage_key(resource, namespace, name),
        });
        self.events.push(Arc::new(Event {
            kind: EventKind::Deleted,
            resource,
            namespace: namespace.to_string(),
            name: name.to_string(),
            object: gone.clone(),
            old_labels: None,
        }));
        Some(gone)
    }

    fn rollback(&mut self) {
        while let Some((res, key, old)) = self.undo.pop() {
            let m = self.state.objects.get_mut(res).expect("known resource");
            match old {
                Some(s) => {
                    m.insert(key, s);
                }
                None => {
                    m.remove(&key);
                }
            }
        }
        self.state.revision = self.start_revision;
    }
}

/// JSON bytes without the slack serde's buffer growth leaves (objects live long in memory).
fn compact(v: &Value) -> Bytes {
    let mut buf = serde_json::to_vec(v).expect("JSON values serialize");
    buf.shrink_to_fit();
    Bytes::from(buf)
}

fn storage_key(resource: &str, namespace: &str, name: &str) -> String {
    format!("{resource}/{namespace}/{name}")
}

pub fn resource_version(v: &Value) -> u64 {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn open(dir: &tempfile::TempDir) -> Store {
        Store::open(&dir.path().join("db.redb"), &["services", "pods"]).unwrap()
    }

    #[tokio::test]
    async fn writes_survive_reopen_and_revisions_stay_monotonic() {
        let dir = tempfile::tempdir().unwrap();
        let rv_before;
        {
            let store = open(&dir);
            let (_, durable) = store
                .write(|t| {
                    t.put(
                        "services",
                        "default",
                        "a",
                        &mut json!({"metadata":{"name":"a"}}),
                    );
                    t.put(
                        "services",
                        "default",
                        "b",
                        &mut json!({"metadata":{"name":"b"}}),
                    );
                    Ok::<_, ()>(())
                })
                .unwrap();
            durable.wait().await;
            let (_, d) = store
                .write(|t| {
                    t.delete("services", "default", "b");
                    Ok::<_, ()>(())
                })
                .unwrap();
            d.wait().await;
            rv_before = store.revision();
            assert_eq!(rv_before, 3);
        }
        let store = open(&dir);
        assert_eq!(store.revision(), rv_before, "deletion revision persisted");
        assert!(store.get("services", "default", "a").is_some());
        assert!(store.get("services", "default", "b").is_none());
        let (_, d) = store
            .write(|t| {
                let s = t.put(
                    "pods",
                    "default",
                    "p",
                    &mut json!({"metadata":{"name":"p"}}),
                );
                assert_eq!(s.rv, rv_before + 1);
                Ok::<_, ()>(())
            })
            .unwrap();
        d.wait().await;
    }

    #[test]
    fn a_second_open_of_the_same_file_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(&dir);
        let second = Store::open(&dir.path().join("db.redb"), &["services"]);
        assert!(
            matches!(second, Err(StoreError::Locked(_))),
            "{:?}",
            second.err()
        );
    }

    #[test]
    fn failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let r: Result<((), Durable), &str> = store.write(|t| {
            t.put(
                "services",
                "default",
                "a",
                &mut json!({"metadata":{"name":"a"}}),
            );
            Err("rejected")
        });
        assert!(r.is_err());
        assert!(store.get("services", "default", "a").is_none());
        assert_eq!(store.revision(), 0);
    }

    #[tokio::test]
    async fn watch_replays_history_then_goes_live_and_refuses_too_old() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        for n in ["a", "b"] {
            let (_, d) = store
                .write(|t| {
                    t.put("services", "ns", n, &mut json!({"metadata":{"name":n}}));
                    Ok::<_, ()>(())
                })
                .unwrap();
            d.wait().await;
        }
        let (backlog, mut rx) = store.hub().subscribe(1).unwrap();
        assert_eq!(
            backlog.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        let (_, d) = store
            .write(|t| {
                t.delete("services", "ns", "a");
                Ok::<_, ()>(())
            })
            .unwrap();
        d.wait().await;
        let ev = rx.recv().await.unwrap();
        assert_eq!(
            (ev.kind, ev.name.as_str(), ev.object.rv),
            (EventKind::Deleted, "a", 3)
        );

        let small = WatchHub::new(0, 1);
        small.publish(vec![ev.clone()]);
        small.publish(vec![ev]);
        assert!(
            small.subscribe(0).is_err(),
            "history trimmed past revision 0"
        );
    }
}
