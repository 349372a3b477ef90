//! Watch streams: newline-delimited JSON events, resourceVersion continuity from the history
//! ring, bookmarks, 410 Expired, `timeoutSeconds`, `sendInitialEvents`.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast::error::RecvError, mpsc};

use super::{
    ops::to_view,
    resource::ResourceInfo,
    selector::{FieldSelector, LabelSelector},
    server::Emu,
    status::ApiError,
    store::{Change, ChangeType},
    table::{self, As},
};

/// Parsed watch query.
#[derive(Debug, Default)]
pub struct WatchQuery {
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `timeoutSeconds`.
    pub timeout: Option<u64>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: bool,
}

struct Filter {
    res: Arc<ResourceInfo>,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    repr: As,
}

impl Filter {
    fn passes(&self, stored: &Value) -> bool {
        if let Some(ns) = &self.ns
            && stored
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                != Some(ns.as_str())
        {
            return false;
        }
        if !self.labels.is_empty() && !self.labels.matches(stored) {
            return false;
        }
        self.fields.is_empty()
            || self
                .fields
                .matches(&super::ops::selectable(&self.res, stored))
    }

    fn matches(&self, stored: &Value) -> Option<Value> {
        self.passes(stored).then(|| to_view(&self.res, stored))
    }

    fn render(&self, view: Value) -> Value {
        match self.repr {
            As::Object => view,
            As::Metadata => table::partial(&view),
            As::Table => {
                let rv = view
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                table::table(&self.res, &[&view], rv, None, "Metadata")
            }
        }
    }

    /// The event (type, object) a change produces for this watcher, if any. An object that
    /// stops matching the selectors is reported DELETED, one that starts matching ADDED.
    fn event(&self, c: &Change) -> Option<(&'static str, Value)> {
        let now = self.passes(&c.object);
        let before = c.prev.as_ref().is_some_and(|p| self.passes(p));
        match (c.kind, before, now) {
            (ChangeType::Deleted, b, n) if b || n => {
                Some(("DELETED", to_view(&self.res, &c.object)))
            }
            (ChangeType::Added, _, true) | (ChangeType::Modified, false, true) => {
                Some(("ADDED", to_view(&self.res, &c.object)))
            }
            (ChangeType::Modified, true, true) => Some(("MODIFIED", to_view(&self.res, &c.object))),
            (ChangeType::Modified, true, false) => {
                let prev = c.prev.as_deref().unwrap_or(&c.object);
                let mut v = to_view(&self.res, prev);
                v["metadata"]["resourceVersion"] = json!(c.rv.to_string());
                Some(("DELETED", v))
            }
            _ => None,
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Value {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let (kind, api_version) = match self.repr {
            As::Object => (self.res.kind.clone(), self.res.api_version()),
            As::Metadata => ("PartialObjectMetadata".into(), "meta.k8s.io/v1".into()),
            As::Table => ("Table".into(), "meta.k8s.io/v1".into()),
        };
        json!({"kind": kind, "apiVersion": api_version, "metadata": meta})
    }
}

fn line(kind: &str, object: Value) -> Result<Bytes, Infallible> {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Ok(Bytes::from(v))
}

/// Starts a watch; the returned receiver feeds the streaming response body.
pub fn start(
    emu: Arc<Emu>,
    res: Arc<ResourceInfo>,
    ns: Option<String>,
    q: WatchQuery,
    repr: As,
) -> mpsc::Receiver<Result<Bytes, Infallible>> {
    let (tx, out) = mpsc::channel(1024);
    let filter = Filter {
        res: res.clone(),
        ns: ns.clone(),
        labels: q.labels,
        fields: q.fields,
        repr,
    };
    let rv_param = q.resource_version.clone().filter(|r| !r.is_empty());
    let from_now = rv_param.as_deref().is_none_or(|r| r == "0") || q.send_initial_events;

    let mut initial: Vec<Value> = Vec::new();
    let mut replay: Vec<Arc<Change>> = Vec::new();
    let start_rv;
    let sub = {
        let st = emu.lock();
        start_rv = st.rv;
        if from_now {
            if rv_param.is_none() || q.send_initial_events || rv_param.as_deref() == Some("0") {
                for (_, obj) in st.range(&res.store_key, ns.as_deref(), None) {
                    if let Some(v) = filter.matches(obj) {
                        initial.push(v);
                    }
                }
            }
            Ok(st.subscribe())
        } else {
            let n: u64 = rv_param
                .as_deref()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            match st.subscribe_from(&res.store_key, n) {
                Ok((r, rx)) => {
                    replay = r;
                    Ok(rx)
                }
                Err(oldest) => Err(ApiError::expired(format!(
                    "too old resource version: {n} ({oldest})"
                ))),
            }
        }
    };
    let mut rx = match sub {
        Ok(rx) => rx,
        Err(e) => {
            let _ = tx.try_send(line("ERROR", e.body));
            return out;
        }
    };
    let bookmark_every = emu.bookmark_interval;
    let mut shutdown = emu.shutdown_rx.clone();
    let timeout = q.timeout.map(Duration::from_secs);
    let bookmarks = q.bookmarks;
    let send_initial_end = q.send_initial_events && bookmarks;
    let delay_of = emu.clone();
    tokio::spawn(async move {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let sleep_deadline = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep_deadline);
        let mut last_rv = start_rv;
        for v in initial {
            if tx.send(line("ADDED", filter.render(v))).await.is_err() {
                return;
            }
        }
        if send_initial_end
            && tx
                .send(line("BOOKMARK", filter.bookmark(start_rv, true)))
                .await
                .is_err()
        {
            return;
        }
        for c in replay {
            last_rv = last_rv.max(c.rv);
            if let Some((k, v)) = filter.event(&c)
                && tx.send(line(k, filter.render(v))).await.is_err()
            {
                return;
            }
        }
        let mut ticker = tokio::time::interval(bookmark_every.max(Duration::from_millis(10)));
        ticker.tick().await;
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(c) => {
                        if c.rv <= last_rv && c.rv <= start_rv {
                            continue;
                        }
                        last_rv = last_rv.max(c.rv);
                        if &*c.store_key != filter.res.store_key.as_str() {
                            continue;
                        }
                        if let Some((k, v)) = filter.event(&c) {
                            let delay = delay_of
                                .watch_delay
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get(&filter.res.plural)
                                .copied()
                                .unwrap_or_default();
                            if !delay.is_zero() {
                                tokio::time::sleep_until((c.at + delay).into()).await;
                            }
                            if tx.send(line(k, filter.render(v))).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        let e = ApiError::expired(format!("too old resource version: {last_rv}"));
                        let _ = tx.send(line("ERROR", e.body)).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = ticker.tick(), if bookmarks => {
                    // Everything up to the current RV has been broadcast (sends happen under the
                    // store lock), so drain it first; then the bookmark RV is safe.
                    let (current, pending, lagged) = {
                        let st = emu.lock();
                        let mut pending = Vec::new();
                        let mut lagged = false;
                        loop {
                            match rx.try_recv() {
                                Ok(c) => pending.push(c),
                                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                                    lagged = true;
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        (st.rv, pending, lagged)
                    };
                    if lagged {
                        let e = ApiError::expired(format!("too old resource version: {last_rv}"));
                        let _ = tx.send(line("ERROR", e.body)).await;
                        return;
                    }
                    for c in pending {
                        if c.rv <= last_rv && c.rv <= start_rv {
                            continue;
                        }
                        last_rv = last_rv.max(c.rv);
                        if &*c.store_key != filter.res.store_key.as_str() {
                            continue;
                        }
                        if let Some((k, v)) = filter.event(&c)
                            && tx.send(line(k, filter.render(v))).await.is_err() {
                                return;
                            }
                    }
                    last_rv = last_rv.max(current);
                    if tx.send(line("BOOKMARK", filter.bookmark(current, false))).await.is_err() {
                        return;
                    }
                }
                _ = &mut sleep_deadline => return,
                _ = tx.closed() => return,
                _ = shutdown.changed() => return,
            }
        }
    });
    out
}
