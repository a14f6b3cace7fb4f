//! Watch fan-out: a bounded history ring of committed events plus a broadcast channel.
//! A watcher asking for revision N gets every event after N from the ring, then live events,
//! with no gap and no duplicate; N older than the ring's floor is `TooOld` (HTTP 410 Gone).
//! Touches nothing outside memory.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::Stored;

/// ADDED / MODIFIED / DELETED, as Kubernetes names them on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One committed change of one object.
#[derive(Debug)]
pub struct Event {
    pub kind: EventKind,
    pub resource: &'static str,
    pub namespace: String,
    pub name: String,
    /// The object after the change (for DELETED: its last state, at the deletion revision).
    pub object: Stored,
    /// For MODIFIED: the labels before the change, so label-selected watches can turn a
    /// change that leaves the selection into DELETED. (Only labels: keeping whole previous
    /// objects in the history would multiply its memory.)
    pub old_labels: Option<Arc<std::collections::BTreeMap<String, String>>>,
}

pub struct WatchHub {
    inner: Mutex<Ring>,
    tx: broadcast::Sender<Arc<Event>>,
}

struct Ring {
    events: VecDeque<Arc<Event>>,
    /// Watches from a revision below this cannot be served from history.
    floor: u64,
    cap: usize,
}

/// Events still in history after the requested revision, then the live feed.
pub type Subscription = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// The requested revision is older than the history kept.
#[derive(Debug)]
pub struct TooOld {
    pub oldest: u64,
}

impl WatchHub {
    pub fn new(floor: u64, history: usize) -> Self {
        let (tx, _) = broadcast::channel(history.clamp(1, 32_768));
        WatchHub {
            inner: Mutex::new(Ring {
                events: VecDeque::with_capacity(history.min(1 << 16)),
                floor,
                cap: history,
            }),
            tx,
        }
    }

    pub(crate) fn publish(&self, events: Vec<Arc<Event>>) {
        let mut ring = self.inner.lock();
        for ev in events {
            if ring.events.len() == ring.cap
                && let Some(old) = ring.events.pop_front()
            {
                ring.floor = old.object.rv;
            }
            ring.events.push_back(ev.clone());
            let _ = self.tx.send(ev);
        }
    }

    /// Events after `from` still in history, and a receiver for everything later.
    pub fn subscribe(&self, from: u64) -> Result<Subscription, TooOld> {
        let ring = self.inner.lock();
        if from < ring.floor {
            return Err(TooOld { oldest: ring.floor });
        }
        let rx = self.tx.subscribe();
        let backlog = ring
            .events
            .iter()
            .filter(|e| e.object.rv > from)
            .cloned()
            .collect();
        Ok((backlog, rx))
    }
}
