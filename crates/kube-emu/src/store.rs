//! In-memory object storage: one global resourceVersion, ordered tables, a bounded event history
//! and a broadcast channel for watch fan-out.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use serde_json::Value;
use tokio::sync::broadcast;

/// Kind of a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Removed.
    Deleted,
}

impl ChangeType {
    /// The watch event type string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One committed change, in storage form.
#[derive(Clone, Debug)]
pub struct Change {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// The table it happened in.
    pub store_key: Arc<str>,
    /// What happened.
    pub kind: ChangeType,
    /// The object after the change (for Deleted: the last state, with the deletion RV).
    pub object: Arc<Value>,
    /// The object before the change (None for Added).
    pub prev: Option<Arc<Value>>,
    /// When it was committed (lagging watches deliver it a fixed delay after this).
    pub at: std::time::Instant,
}

/// (namespace, name); namespace is "" for cluster-scoped objects.
pub type ObjKey = (String, String);

/// The mutable state behind one mutex.
pub struct StoreInner {
    /// Last issued resourceVersion.
    pub rv: u64,
    tables: HashMap<Arc<str>, BTreeMap<ObjKey, Arc<Value>>>,
    history: VecDeque<Arc<Change>>,
    history_cap: usize,
    /// Events with rv <= floor may have been evicted.
    pub history_floor: u64,
    tx: broadcast::Sender<Arc<Change>>,
    count: usize,
}

impl StoreInner {
    /// New empty store.
    pub fn new(history_cap: usize) -> Self {
        let (tx, _) = broadcast::channel(history_cap.clamp(1024, 1 << 16));
        Self {
            rv: 1,
            tables: HashMap::new(),
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
            history_floor: 0,
            tx,
            count: 0,
        }
    }

    /// Next resourceVersion.
    pub fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Number of stored objects.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Get one object.
    pub fn get(&self, key: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.tables
            .get(key)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Objects of a table, optionally in one namespace, with keys strictly after `after`.
    pub fn range<'a>(
        &'a self,
        key: &str,
        ns: Option<&'a str>,
        after: Option<&'a ObjKey>,
    ) -> Box<dyn Iterator<Item = (&'a ObjKey, &'a Arc<Value>)> + 'a> {
        use std::ops::Bound;
        let Some(t) = self.tables.get(key) else {
            return Box::new(std::iter::empty());
        };
        let lower = match after {
            Some(k) => Bound::Excluded(k.clone()),
            None => match ns {
                Some(ns) => Bound::Included((ns.to_string(), String::new())),
                None => Bound::Unbounded,
            },
        };
        let it = t.range((lower, Bound::Unbounded));
        match ns {
            Some(ns) => Box::new(it.take_while(move |(k, _)| k.0 == ns)),
            None => Box::new(it),
        }
    }

    /// Insert or replace an object and record the change (the object must carry `rv`).
    pub fn put(&mut self, key: &str, ns: &str, name: &str, obj: Value, rv: u64) -> Arc<Value> {
        let obj = Arc::new(obj);
        let store_key = self.intern(key);
        let table = self.tables.entry(store_key.clone()).or_default();
        let prev = table.insert((ns.to_string(), name.to_string()), obj.clone());
        if prev.is_none() {
            self.count += 1;
        }
        let kind = if prev.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.record(Change {
            rv,
            store_key,
            kind,
            object: obj.clone(),
            prev,
            at: std::time::Instant::now(),
        });
        obj
    }

    /// Remove an object; `last` is its final state (carrying the deletion RV).
    pub fn remove(&mut self, key: &str, ns: &str, name: &str, last: Value, rv: u64) -> Arc<Value> {
        let store_key = self.intern(key);
        let prev = self
            .tables
            .get_mut(key)
            .and_then(|t| t.remove(&(ns.to_string(), name.to_string())));
        if prev.is_some() {
            self.count -= 1;
        }
        let obj = Arc::new(last);
        self.record(Change {
            rv,
            store_key,
            kind: ChangeType::Deleted,
            object: obj.clone(),
            prev,
            at: std::time::Instant::now(),
        });
        obj
    }

    fn intern(&mut self, key: &str) -> Arc<str> {
        match self.tables.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(key);
                self.tables.insert(k.clone(), BTreeMap::new());
                k
            }
        }
    }

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        if self.history.len() >= self.history_cap
            && let Some(old) = self.history.pop_front()
        {
            self.history_floor = old.rv;
        }
        self.history.push_back(change.clone());
        let _ = self.tx.send(change);
    }

    /// Subscribe to changes after `rv`: returns the replay (changes of `key` with rv > `rv`) and a
    /// receiver for everything later, or Err(oldest available rv) when `rv` is too old.
    #[allow(clippy::type_complexity)]
    pub fn subscribe_from(
        &self,
        key: &str,
        rv: u64,
    ) -> Result<(Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>), u64> {
        if rv < self.history_floor {
            return Err(self.history_floor + 1);
        }
        let start = self.history.partition_point(|c| c.rv <= rv);
        let replay = self
            .history
            .range(start..)
            .filter(|c| &*c.store_key == key)
            .cloned()
            .collect();
        Ok((replay, self.tx.subscribe()))
    }

    /// Subscribe to changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }
}
