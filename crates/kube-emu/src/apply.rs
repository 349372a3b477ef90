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

/// The schema of property `k` of an object schema (or its `additionalProperties`).
fn child_schema<'a>(schema: Option<&'a Value>, k: &str) -> Option<&'a Value> {
    let s = schema?;
    s.get("properties")
        .and_then(|p| p.get(k))
        .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
}

/// The key names of an `x-kubernetes-list-type: map` list schema.
fn list_map_keys(schema: Option<&Value>) -> Option<Vec<&str>> {
    let s = schema?;
    if s.get("x-kubernetes-list-type").and_then(Value::as_str) != Some("map") {
        return None;
    }
    let keys: Vec<&str> = s
        .get("x-kubernetes-list-map-keys")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    (!keys.is_empty()).then_some(keys)
}

/// `k:{"type":"Ready"}` for a list-map item, if it carries every key.
fn key_segment(item: &Value, keys: &[&str]) -> Option<String> {
    let mut m = Map::new();
    for k in keys {
        m.insert((*k).to_string(), item.get(*k)?.clone());
    }
    Some(format!("k:{}", Value::Object(m)))
}

fn item_matches(item: &Value, seg: &str) -> bool {
    let Some(Ok(Value::Object(key))) = seg.strip_prefix("k:").map(serde_json::from_str::<Value>)
    else {
        return false;
    };
    key.iter().all(|(k, v)| item.get(k) == Some(v))
}

/// Tracked leaves of an object within `scope`. With a schema, lists marked
/// `x-kubernetes-list-type: map` are tracked per item (`k:{...}` segments); other lists are atomic.
pub fn leaves(obj: &Value, scope: Scope, schema: Option<&Value>) -> FieldSet {
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
                            walk(
                                mv,
                                vec!["f:metadata".into(), format!("f:{mk}")],
                                &mut out,
                                None,
                            );
                        }
                    }
                }
            }
            "status" if scope == Scope::NoStatus => {}
            _ if scope == Scope::StatusOnly && k != "status" => {}
            _ => walk(v, vec![format!("f:{k}")], &mut out, child_schema(schema, k)),
        }
    }
    out
}

fn walk(v: &Value, path: FieldPath, out: &mut FieldSet, schema: Option<&Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                let mut p = path.clone();
                p.push(format!("f:{k}"));
                walk(c, p, out, child_schema(schema, k));
            }
        }
        // An empty list-map claims no items (other managers' items stay).
        Value::Array(items) if items.is_empty() && list_map_keys(schema).is_some() => {}
        Value::Array(items) if !items.is_empty() => {
            let keyed = list_map_keys(schema).and_then(|keys| {
                items
                    .iter()
                    .map(|i| key_segment(i, &keys).filter(|_| i.is_object()))
                    .collect::<Option<Vec<_>>>()
            });
            let Some(segs) = keyed else {
                out.insert(path);
                return;
            };
            let item_schema = schema.and_then(|s| s.get("items"));
            for (item, seg) in items.iter().zip(segs) {
                for (k, c) in item.as_object().into_iter().flatten() {
                    let mut p = path.clone();
                    p.push(seg.clone());
                    p.push(format!("f:{k}"));
                    walk(c, p, out, child_schema(item_schema, k));
                }
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

/// Value at a path (`f:` fields and `k:` list-map items are navigable).
pub fn get_path<'a>(obj: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        cur = match seg.strip_prefix("f:") {
            Some(f) => cur.get(f)?,
            None => cur.as_array()?.iter().find(|i| item_matches(i, seg))?,
        };
    }
    Some(cur)
}

/// Removes the field at a path (if present), then empty parent maps and list-map items left
/// with nothing but their keys.
pub fn remove_path(obj: &mut Value, path: &FieldPath) {
    fn only_keys(item: &Value, seg: &str) -> bool {
        let Some(Ok(Value::Object(key))) =
            seg.strip_prefix("k:").map(serde_json::from_str::<Value>)
        else {
            return false;
        };
        item.as_object()
            .is_some_and(|m| m.keys().all(|k| key.contains_key(k)))
    }
    fn rec(cur: &mut Value, path: &[String]) {
        let seg = &path[0];
        if seg.starts_with("k:") {
            let Some(items) = cur.as_array_mut() else {
                return;
            };
            let Some(i) = items.iter().position(|it| item_matches(it, seg)) else {
                return;
            };
            if path.len() == 1 {
                items.remove(i);
                return;
            }
            rec(&mut items[i], &path[1..]);
            if only_keys(&items[i], seg) {
                items.remove(i);
            }
            return;
        }
        let Some(key) = seg.strip_prefix("f:") else {
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
            None => match s.strip_prefix("k:").map(serde_json::from_str::<Value>) {
                Some(Ok(Value::Object(key))) => {
                    let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("[{}]", parts.join(","))
                }
                _ => format!("[{}]", s.get(2..).unwrap_or(s)),
            },
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
    schema: Option<&Value>,
    now: &str,
) {
    let mut managers = base;
    if let Some(name) = manager {
        let new_leaves = leaves(new, scope, schema);
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

/// Deep merge for apply: maps merge per key, list-map items merge per key, everything else
/// replaces. Only the tracked metadata keys (and resourceVersion, for the conflict check) are
/// taken from the applied config.
pub fn merge_applied(live: &mut Value, applied: &Value, schema: Option<&Value>) {
    fn rec(l: &mut Value, a: &Value, schema: Option<&Value>) {
        if let (Some(keys), Some(li), Some(ai)) =
            (list_map_keys(schema), l.as_array(), a.as_array())
            && li
                .iter()
                .chain(ai)
                .all(|i| i.is_object() && key_segment(i, &keys).is_some())
        {
            let item_schema = schema.and_then(|s| s.get("items"));
            let li = l.as_array_mut().expect("array");
            for item in ai {
                let seg = key_segment(item, &keys).expect("checked");
                match li.iter_mut().find(|x| item_matches(x, &seg)) {
                    Some(x) => rec(x, item, item_schema),
                    None => li.push(item.clone()),
                }
            }
            return;
        }
        match (l.as_object_mut(), a.as_object()) {
            (Some(lm), Some(am)) if !am.is_empty() => {
                for (k, av) in am {
                    match lm.get_mut(k) {
                        Some(lv)
                            if (lv.is_object() && av.is_object())
                                || (lv.is_array() && av.is_array()) =>
                        {
                            rec(lv, av, child_schema(schema, k))
                        }
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
                                Some(lv) => rec(lv, v, None),
                                None => {
                                    mm.insert(mk.to_string(), v.clone());
                                }
                            }
                        }
                    }
                }
            }
            _ => match lm.get_mut(k) {
                Some(lv) => rec(lv, av, child_schema(schema, k)),
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
    schema: Option<&Value>,
    force: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let mut managers = managers_of(live);
    let applied_set = leaves(applied, scope, schema);
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
    merge_applied(&mut new, &scoped, schema);

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
        let created = apply(
            &json!({}),
            &live0,
            "one",
            "v1",
            "",
            Scope::All,
            None,
            false,
            "t",
        )
        .unwrap();
        let ms = managers_of(&created);
        assert_eq!(ms.len(), 1);
        assert!(
            ms[0]
                .fields
                .contains(&vec!["f:spec".to_string(), "f:a".to_string()])
        );
        let other = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a"}, "spec": {"a": 2, "b": 1}});
        let err = apply(
            &created,
            &other,
            "two",
            "v1",
            "",
            Scope::All,
            None,
            false,
            "t",
        )
        .err()
        .unwrap();
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"one\": .spec.a"
        );
        let forced = apply(
            &created,
            &other,
            "two",
            "v1",
            "",
            Scope::All,
            None,
            true,
            "t",
        )
        .unwrap();
        assert_eq!(forced["spec"], json!({"a": 2, "b": 1}));
        assert_eq!(managers_of(&forced).len(), 1);
        // "two" drops field b: it is removed.
        let less =
            json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a"}, "spec": {"a": 2}});
        let after = apply(
            &forced,
            &less,
            "two",
            "v1",
            "",
            Scope::All,
            None,
            false,
            "t",
        )
        .unwrap();
        assert_eq!(after["spec"], json!({"a": 2}));
    }

    #[test]
    fn list_map_items_are_owned_per_key() {
        let schema = json!({"type": "object", "properties": {"status": {"type": "object", "properties": {
            "conditions": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                "items": {"type": "object", "properties": {"type": {"type": "string"}, "status": {"type": "string"}}}},
            "tags": {"type": "array", "items": {"type": "string"}}}}}});
        let sc = Some(&schema);
        let cond = |t: &str, st: &str| json!({"type": t, "status": st});
        let cfg = |conds: Vec<Value>| json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a"}, "status": {"conditions": conds}});
        let live = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a"}});
        let a = apply(
            &live,
            &cfg(vec![cond("Ready", "True")]),
            "a",
            "v1",
            "",
            Scope::All,
            sc,
            false,
            "t",
        )
        .unwrap();
        let b = apply(
            &a,
            &cfg(vec![cond("Synced", "False")]),
            "b",
            "v1",
            "",
            Scope::All,
            sc,
            false,
            "t",
        )
        .unwrap();
        assert_eq!(
            b["status"]["conditions"],
            json!([cond("Ready", "True"), cond("Synced", "False")])
        );
        let mf = &b["metadata"]["managedFields"];
        assert!(
            mf[0]["fieldsV1"]["f:status"]["f:conditions"]
                .get("k:{\"type\":\"Ready\"}")
                .is_some(),
            "{mf}"
        );
        // b touching a's condition conflicts on that item's field only.
        let err = apply(
            &b,
            &cfg(vec![cond("Synced", "False"), cond("Ready", "False")]),
            "b",
            "v1",
            "",
            Scope::All,
            sc,
            false,
            "t",
        )
        .err()
        .unwrap();
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"a\": .status.conditions[type=\"Ready\"].status"
        );
        // a stops applying its condition: only that item goes away.
        let dropped = apply(&b, &cfg(vec![]), "a", "v1", "", Scope::All, sc, false, "t").unwrap();
        assert_eq!(
            dropped["status"]["conditions"],
            json!([cond("Synced", "False")])
        );
        // Without a list-map schema the list is atomic.
        let atomic = apply(
            &a,
            &cfg(vec![cond("Synced", "False")]),
            "b",
            "v1",
            "",
            Scope::All,
            None,
            false,
            "t",
        );
        assert!(atomic.is_err());
    }
}
