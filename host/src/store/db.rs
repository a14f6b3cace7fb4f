//! Durable half of the store: a redb file in the data dir and the single writer thread that
//! group-commits batches of puts/deletes. Touches only the redb file; knows nothing of
//! Kubernetes semantics. A write is acknowledged only after its batch is committed with
//! `Durability::Immediate` (fsync), so every acknowledged write survives `kill -9`.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::StoreError;
use super::watch::{Event, WatchHub};

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";
const CACHE_BYTES: usize = 32 << 20;

/// One mutation inside a batch.
pub(crate) enum Op {
    Put { key: String, raw: Bytes },
    Delete { key: String },
}

/// What one logical write (one API request) hands to the writer thread.
pub(crate) struct Batch {
    pub ops: Vec<Op>,
    pub events: Vec<Arc<Event>>,
    pub revision: u64,
    pub ack: Option<oneshot::Sender<()>>,
}

/// Opens (or creates) the database and returns every stored object and the last revision.
/// Every stored (key, JSON) row.
pub(crate) type Rows = Vec<(String, Bytes)>;

pub(crate) fn open(path: &Path) -> Result<(Database, Rows, u64), StoreError> {
    // Objects are served from memory; redb is read only at start, so its page cache stays small
    // (its default is 1 GiB).
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                StoreError::Locked(path.display().to_string())
            }
            other => StoreError::Db(other.to_string()),
        })?;
    let txn = db.begin_write().map_err(db_err)?;
    {
        txn.open_table(OBJECTS).map_err(db_err)?;
        txn.open_table(META).map_err(db_err)?;
    }
    txn.commit().map_err(db_err)?;

    let read = db.begin_read().map_err(db_err)?;
    let objects = read.open_table(OBJECTS).map_err(db_err)?;
    let mut out = Vec::new();
    for row in objects.iter().map_err(db_err)? {
        let (k, v) = row.map_err(db_err)?;
        out.push((k.value().to_string(), Bytes::copy_from_slice(v.value())));
    }
    let meta = read.open_table(META).map_err(db_err)?;
    let revision = meta
        .get(REVISION_KEY)
        .map_err(db_err)?
        .map(|v| v.value())
        .unwrap_or(0);
    Ok((db, out, revision))
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Runs the writer loop on its own OS thread: take every batch waiting, commit them in one
/// transaction, then publish their events (in revision order) and acknowledge the writers.
pub(crate) fn spawn_writer(
    db: Database,
    rx: mpsc::Receiver<Batch>,
    hub: Arc<WatchHub>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batches = vec![first];
                while batches.len() < 4096 {
                    match rx.try_recv() {
                        Ok(b) => batches.push(b),
                        Err(_) => break,
                    }
                }
                if let Err(e) = commit(&db, &batches) {
                    // A store that cannot persist must not acknowledge anything: stop, as etcd does.
                    tracing::error!(error = %e, "store commit failed; exiting to protect acknowledged data");
                    std::process::exit(70);
                }
                for b in batches {
                    hub.publish(b.events);
                    if let Some(ack) = b.ack {
                        let _ = ack.send(());
                    }
                }
            }
        })
        .expect("spawn store writer thread")
}

fn commit(db: &Database, batches: &[Batch]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut objects = txn.open_table(OBJECTS).map_err(db_err)?;
        for b in batches {
            for op in &b.ops {
                match op {
                    Op::Put { key, raw } => {
                        objects.insert(key.as_str(), raw.as_ref()).map_err(db_err)?;
                    }
                    Op::Delete { key } => {
                        objects.remove(key.as_str()).map_err(db_err)?;
                    }
                }
            }
        }
        let mut meta = txn.open_table(META).map_err(db_err)?;
        let last = batches.iter().map(|b| b.revision).max().unwrap_or(0);
        meta.insert(REVISION_KEY, last).map_err(db_err)?;
    }
    txn.commit().map_err(db_err)?;
    Ok(())
}
