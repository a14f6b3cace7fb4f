//! `?watch=true` responses: a chunked stream of `{"type":..,"object":..}` lines, starting after
//! the requested resourceVersion (or with the current state as ADDED when none is given),
//! optional BOOKMARKs, `410 Gone` for revisions older than the history, and the end of the
//! stream at `timeoutSeconds`. One task per watcher, reading the store's broadcast.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use super::Filter;
use super::registry::Registry;
use super::status::ApiError;
use crate::resources::Resource;
use crate::store::{Event, EventKind, Stored};

const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

fn line(kind: &str, raw: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(raw.len() + 32);
    v.extend_from_slice(br#"{"type":""#);
    v.extend_from_slice(kind.as_bytes());
    v.extend_from_slice(br#"","object":"#);
    v.extend_from_slice(raw);
    v.extend_from_slice(b"}\n");
    Bytes::from(v)
}

fn status_line(e: &ApiError) -> Bytes {
    line(
        "ERROR",
        &serde_json::to_vec(&e.to_status()).expect("serializes"),
    )
}

pub async fn serve(
    reg: Arc<Registry>,
    res: &'static Resource,
    ns: String,
    q: &HashMap<String, String>,
    table: bool,
) -> Result<Response, ApiError> {
    let filter = Filter::from_query(q)?;
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let requested = q.get("resourceVersion").map(String::as_str).unwrap_or("");
    let scope = (res.namespaced && !ns.is_empty()).then_some(ns.clone());

    // No revision (or "0"): start with the current state as ADDED events.
    let mut initial = Vec::new();
    let from = match requested {
        "" | "0" => {
            let (items, rv) = reg.store.list(res.store_key(), scope.as_deref());
            initial = items
                .into_iter()
                .map(|(_, _, s)| s)
                .filter(|s| filter.matches(s))
                .collect::<Vec<Stored>>();
            rv
        }
        r => r
            .parse::<u64>()
            .map_err(|_| ApiError::BadRequest(format!("invalid resource version: {r}")))?,
    };
    let (backlog, rx) = reg
        .store
        .hub()
        .subscribe(from)
        .map_err(|e| ApiError::Gone {
            requested: from,
            oldest: e.oldest,
        })?;

    let (tx, out_rx) = mpsc::channel::<Bytes>(256);
    let state = WatchState {
        res,
        scope,
        filter,
        last: from,
        kind: res.kind,
        table,
        columns_sent: false,
    };
    tokio::spawn(state.run(initial, backlog, rx, tx, bookmarks, timeout));
    let stream = futures::stream::unfold(out_rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

struct WatchState {
    res: &'static Resource,
    scope: Option<String>,
    filter: Filter,
    last: u64,
    kind: &'static str,
    /// `Accept: ...;as=Table`: each event's object is a one-row Table, as `kubectl get -w` asks.
    table: bool,
    columns_sent: bool,
}

impl WatchState {
    /// The line to send for `ev`, if this watcher sees it.
    fn render(&mut self, ev: &Event) -> Option<Bytes> {
        if ev.object.rv <= self.last {
            return None;
        }
        self.last = ev.object.rv;
        if ev.resource != self.res.store_key()
            || self.scope.as_deref().is_some_and(|ns| ns != ev.namespace)
        {
            return None;
        }
        let now = self.filter.matches(&ev.object);
        let before = ev
            .old_labels
            .as_ref()
            .is_some_and(|l| self.filter.matches_labels(l, &ev.object));
        let kind = match (ev.kind, now, before) {
            (EventKind::Deleted, true, _) => "DELETED",
            (EventKind::Added, true, _) => "ADDED",
            (EventKind::Modified, true, true) => "MODIFIED",
            (EventKind::Modified, true, false) => "ADDED",
            (EventKind::Modified, false, true) => "DELETED",
            _ => return None,
        };
        Some(self.event(kind, &ev.object))
    }

    /// One event line, the object as stored or as a Table row.
    fn event(&mut self, kind: &str, obj: &Stored) -> Bytes {
        if !self.table {
            return line(kind, &obj.raw);
        }
        let mut t = super::table::render(self.res, &[obj.value()], None);
        if self.columns_sent {
            t["columnDefinitions"] = serde_json::json!([]);
        }
        self.columns_sent = true;
        line(kind, &serde_json::to_vec(&t).expect("serializes"))
    }

    fn bookmark(&self) -> Bytes {
        let obj = json!({"kind": self.kind, "apiVersion": self.res.api_version(), "metadata": {"resourceVersion": self.last.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
        line("BOOKMARK", &serde_json::to_vec(&obj).expect("serializes"))
    }

    async fn run(
        mut self,
        initial: Vec<Stored>,
        backlog: Vec<Arc<Event>>,
        mut rx: broadcast::Receiver<Arc<Event>>,
        tx: mpsc::Sender<Bytes>,
        bookmarks: bool,
        timeout: Duration,
    ) {
        for s in initial {
            if tx.send(self.event("ADDED", &s)).await.is_err() {
                return;
            }
        }
        for ev in backlog {
            if let Some(l) = self.render(&ev)
                && tx.send(l).await.is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(self.bookmark()).await.is_err() { return; }
                }
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        if let Some(l) = self.render(&ev)
                            && tx.send(l).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow to keep up: the client relists, as after a 410.
                        let _ = tx.send(status_line(&ApiError::Gone { requested: self.last, oldest: self.last + 1 })).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }
}
