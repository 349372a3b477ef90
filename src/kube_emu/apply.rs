//! managedFields tracking and server-side apply (a simplified structured-merge-diff: maps merge
//! per key, lists and scalars are atomic leaves).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// A field path as FieldsV1 keys, e.g. `["f:spec", "f:size"]`.
pub type FieldPath = Vec<String>;
/// A set of owned leaf paths.
pub type FieldSet = BTreeSet<FieldPath>;

/// Which part of an object a write may touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything tracked (no status subresource).
    All,
    /// Everything but `status` (main resource of a type with a status subresource).
    NoStatus,
    /// Only `status`.
    StatusOnly,
}

const TRACKED_META: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

/// Tracked leaves of an object within `scope`.
pub fn leaves(obj: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(m) = obj.as_object() else { return out };
    for (k, v) in m {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                if scope == Scope::StatusOnly {
                    continue;
                }
                if let Some(meta) = v.as_object() {
                    for mk in TRACKED_META {
                        if let Some(mv) = meta.get(mk) {
                            walk(mv, vec!["f:metadata".into(), format!("f:{mk}")], &mut out);
                        }
                    }
                }
            }
            "status" if scope == Scope::NoStatus => {}
            _ if scope == Scope::StatusOnly && k != "status" => {}
            _ => walk(v, vec![format!("f:{k}")], &mut out),
        }
    }
    out
}

fn walk(v: &Value, path: FieldPath, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                let mut p = path.clone();
                p.push(format!("f:{k}"));
                walk(c, p, out);
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

/// FieldsV1 JSON for a set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for seg in path {
            let next = cur.entry(seg.clone()).or_insert_with(|| json!({}));
            cur = next.as_object_mut().expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// Leaf set of a FieldsV1 JSON (`.` markers are ignored).
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn rec(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        let children: Vec<_> = m.iter().filter(|(k, _)| k.as_str() != ".").collect();
        if children.is_empty() {
            if !path.is_empty() {
                out.insert(path.clone());
            }
            return;
        }
        for (k, c) in children {
            path.push(k.clone());
            rec(c, path, out);
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    rec(v, &mut Vec::new(), &mut out);
    out
}

/// Value at a path (only `f:` segments are navigable).
pub fn get_path<'a>(obj: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        cur = cur.get(seg.strip_prefix("f:")?)?;
    }
    Some(cur)
}

/// Removes the field at a path (if present), then empty parent maps.
pub fn remove_path(obj: &mut Value, path: &FieldPath) {
    fn rec(cur: &mut Value, path: &[String]) {
        let Some(key) = path[0].strip_prefix("f:") else {
            return;
        };
        let Some(m) = cur.as_object_mut() else { return };
        if path.len() == 1 {
            m.remove(key);
            return;
        }
        if let Some(child) = m.get_mut(key) {
            rec(child, &path[1..]);
            if child.as_object().is_some_and(Map::is_empty) {
                m.remove(key);
            }
        }
    }
    if !path.is_empty() {
        rec(obj, path);
    }
}

/// `.spec.foo` rendering of a path.
pub fn path_string(path: &FieldPath) -> String {
    path.iter()
        .map(|s| match s.strip_prefix("f:") {
            Some(f) => format!(".{f}"),
            None => format!("[{}]", s.get(2..).unwrap_or(s)),
        })
        .collect()
}

fn overlaps(a: &FieldPath, b: &FieldPath) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Whether any path of `set` overlaps `p` (equal, ancestor or descendant).
pub fn owns(set: &FieldSet, p: &FieldPath) -> bool {
    set.iter().any(|q| overlaps(p, q))
}

/// One managedFields entry, parsed.
#[derive(Clone, Debug)]
pub struct Manager {
    /// Manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// apiVersion it used.
    pub api_version: String,
    /// When.
    pub time: String,
    /// `status` or empty.
    pub subresource: String,
    /// Owned leaves.
    pub fields: FieldSet,
}

impl Manager {
    /// `"name"`, `"name" using v1 at T`, `"name" with subresource "status"` like the real server.
    pub fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {:?}", self.subresource);
        }
        if self.operation == "Update" {
            if self.time.is_empty() {
                s = format!("{s} using {}", self.api_version);
            } else {
                s = format!("{s} using {} at {}", self.api_version, self.time);
            }
        }
        s
    }
}

/// Parses `metadata.managedFields`.
pub fn managers_of(obj: &Value) -> Vec<Manager> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            let s = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            Manager {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                subresource: s("subresource"),
                fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
            }
        })
        .collect()
}

/// Writes managers back into `metadata.managedFields` (dropping empty ones).
pub fn set_managers(obj: &mut Value, managers: &[Manager]) {
    let entries: Vec<Value> = managers
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = json!({
                "manager": m.manager,
                "operation": m.operation,
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&m.fields),
            });
            if !m.subresource.is_empty() {
                e["subresource"] = json!(m.subresource);
            }
            e
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

/// Drop paths that no longer exist in `obj` from every manager.
pub fn prune(managers: &mut [Manager], obj: &Value) {
    for m in managers.iter_mut() {
        m.fields.retain(|p| get_path(obj, p).is_some());
    }
}

/// Records an Update by `manager`: every changed/added leaf (within scope) moves to it.
#[allow(clippy::too_many_arguments)]
pub fn record_update(
    old: &Value,
    new: &mut Value,
    base: Vec<Manager>,
    manager: Option<&str>,
    api_version: &str,
    subresource: &str,
    scope: Scope,
    now: &str,
) {
    let mut managers = base;
    if let Some(name) = manager {
        let new_leaves = leaves(new, scope);
        let changed: FieldSet = new_leaves
            .into_iter()
            .filter(|p| get_path(old, p) != get_path(new, p))
            .collect();
        if !changed.is_empty() {
            for m in managers.iter_mut() {
                m.fields.retain(|p| !changed.contains(p));
            }
            let idx = managers.iter().position(|m| {
                m.manager == name && m.operation == "Update" && m.subresource == subresource
            });
            let entry = match idx {
                Some(i) => &mut managers[i],
                None => {
                    managers.push(Manager {
                        manager: name.to_string(),
                        operation: "Update".into(),
                        api_version: api_version.into(),
                        time: now.into(),
                        subresource: subresource.into(),
                        fields: FieldSet::new(),
                    });
                    managers.last_mut().expect("just pushed")
                }
            };
            entry.fields.extend(changed);
            entry.time = now.into();
            entry.api_version = api_version.into();
        }
    }
    prune(&mut managers, new);
    set_managers(new, &managers);
}

/// Deep merge for apply: maps merge per key, everything else replaces. Only the tracked
/// metadata keys (and resourceVersion, for the conflict check) are taken from the applied config.
pub fn merge_applied(live: &mut Value, applied: &Value) {
    fn rec(l: &mut Value, a: &Value) {
        match (l.as_object_mut(), a.as_object()) {
            (Some(lm), Some(am)) if !am.is_empty() => {
                for (k, av) in am {
                    match lm.get_mut(k) {
                        Some(lv) if lv.is_object() && av.is_object() => rec(lv, av),
                        _ => {
                            lm.insert(k.clone(), av.clone());
                        }
                    }
                }
            }
            _ => *l = a.clone(),
        }
    }
    let (Some(lm), Some(am)) = (live.as_object_mut(), applied.as_object()) else {
        return;
    };
    for (k, av) in am {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                let meta = lm.entry("metadata").or_insert_with(|| json!({}));
                if let (Some(mm), Some(am)) = (meta.as_object_mut(), av.as_object()) {
                    for mk in TRACKED_META.iter().chain(["resourceVersion"].iter()) {
                        if let Some(v) = am.get(*mk) {
                            match mm.get_mut(*mk) {
                                Some(lv) => rec(lv, v),
                                None => {
                                    mm.insert(mk.to_string(), v.clone());
                                }
                            }
                        }
                    }
                }
            }
            _ => match lm.get_mut(k) {
                Some(lv) => rec(lv, av),
                None => {
                    lm.insert(k.clone(), av.clone());
                }
            },
        }
    }
}

/// A conflict: who owns which path.
#[derive(Debug, Clone)]
pub struct Conflict {
    /// The other manager's description (`"kubectl-client-side-apply" using v1 at T`).
    pub manager: String,
    /// The path, e.g. `.spec.foo`.
    pub path: String,
}

/// Real-server wording: `Apply failed with 1 conflict: conflict with "m" using v: .spec.x`.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if conflicts.len() == 1 {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            conflicts[0].manager, conflicts[0].path
        );
    }
    let mut managers: Vec<&str> = conflicts.iter().map(|c| c.manager.as_str()).collect();
    managers.sort();
    managers.dedup();
    let mut lines = Vec::new();
    for m in managers {
        lines.push(format!("conflicts with {m}:"));
        for c in conflicts.iter().filter(|c| c.manager == m) {
            lines.push(format!("- {}", c.path));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Server-side apply of `applied` over `live` by `manager`. Returns the new object (with
/// managedFields set) or the conflicts.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    live: &Value,
    applied: &Value,
    manager: &str,
    api_version: &str,
    subresource: &str,
    scope: Scope,
    force: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let mut managers = managers_of(live);
    let applied_set = leaves(applied, scope);
    let is_me = |m: &Manager| {
        m.manager == manager && m.operation == "Apply" && m.subresource == subresource
    };
    let previous: FieldSet = managers
        .iter()
        .filter(|m| is_me(m))
        .flat_map(|m| m.fields.clone())
        .collect();

    let mut conflicts = Vec::new();
    let mut forced: Vec<FieldPath> = Vec::new();
    for p in &applied_set {
        if get_path(live, p) == get_path(applied, p) {
            continue;
        }
        for m in managers
            .iter()
            .filter(|m| !is_me(m) && m.manager != manager)
        {
            if owns(&m.fields, p) {
                conflicts.push(Conflict {
                    manager: m.describe(),
                    path: path_string(p),
                });
                forced.push(p.clone());
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for m in managers.iter_mut() {
        if !is_me(m) {
            m.fields.retain(|q| !forced.iter().any(|p| overlaps(p, q)));
        }
    }

    let mut new = live.clone();
    for p in previous.difference(&applied_set) {
        let owned_elsewhere = managers.iter().any(|m| !is_me(m) && m.fields.contains(p));
        if !owned_elsewhere && !applied_set.iter().any(|a| a.starts_with(p)) {
            remove_path(&mut new, p);
        }
    }
    let mut scoped = applied.clone();
    if let Some(m) = scoped.as_object_mut() {
        match scope {
            Scope::NoStatus => {
                m.remove("status");
            }
            Scope::StatusOnly => m.retain(|k, _| k == "status" || k == "metadata"),
            Scope::All => {}
        }
        if scope == Scope::StatusOnly
            && let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.retain(|k, _| k == "resourceVersion");
        }
    }
    merge_applied(&mut new, &scoped);

    // Keep the entry's position so a repeated identical apply is a no-op.
    let entry = Manager {
        manager: manager.into(),
        operation: "Apply".into(),
        api_version: api_version.into(),
        time: now.into(),
        subresource: subresource.into(),
        fields: applied_set,
    };
    match managers.iter().position(is_me) {
        Some(i) => managers[i] = entry,
        None => managers.push(entry),
    }
    prune(&mut managers, &new);
    set_managers(&mut new, &managers);
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_conflicts_and_force() {
        let live0 =
            json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a"}, "spec": {"a": 1}});
        let created = apply(&json!({}), &live0, "one", "v1", "", Scope::All, false, "t").unwrap();
        let ms = managers_of(&created);
        assert_eq!(ms.len(), 1);
        assert!(
            ms[0]
                .fields
                .contains(&vec!["f:spec".to_string(), "f:a".to_string()])
        );
        let other = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a"}, "spec": {"a": 2, "b": 1}});
        let err = apply(&created, &other, "two", "v1", "", Scope::All, false, "t")
            .err()
            .unwrap();
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"one\": .spec.a"
        );
        let forced = apply(&created, &other, "two", "v1", "", Scope::All, true, "t").unwrap();
        assert_eq!(forced["spec"], json!({"a": 2, "b": 1}));
        assert_eq!(managers_of(&forced).len(), 1);
        // "two" drops field b: it is removed.
        let less =
            json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a"}, "spec": {"a": 2}});
        let after = apply(&forced, &less, "two", "v1", "", Scope::All, false, "t").unwrap();
        assert_eq!(after["spec"], json!({"a": 2}));
    }
}
