//! `meta.k8s.io/v1` Table and PartialObjectMetadata renderings.

use serde_json::{Value, json};

use super::resource::ResourceInfo;

/// What representation the client asked for in `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum As {
    /// The object itself.
    Object,
    /// `as=Table`.
    Table,
    /// `as=PartialObjectMetadata` / `PartialObjectMetadataList`.
    Metadata,
}

/// Parses the Accept header (first recognised media type wins).
pub fn negotiate(accept: &str) -> As {
    for part in accept.split(',') {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        let get = |k: &str| {
            params
                .iter()
                .find_map(|p| p.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
        };
        match (get("as"), get("g")) {
            (Some("Table"), Some("meta.k8s.io")) => return As::Table,
            (Some("PartialObjectMetadata" | "PartialObjectMetadataList"), Some("meta.k8s.io")) => {
                return As::Metadata;
            }
            (None, _) if params[0].starts_with("application/json") || params[0] == "*/*" => {
                return As::Object;
            }
            _ => {}
        }
    }
    As::Object
}

/// `k8s.io/apimachinery/pkg/util/duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{}h", hours / 24, h)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{}d", hours / 24 / 365, dy)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Evaluates a simple JSONPath: `.a.b`, `.a[0].b`, `.a[*].b`, `.a[?(@.k=="v")].b`, `{.a.b}`.
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut cur: Vec<&Value> = vec![obj];
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if !key.is_empty() {
                cur = cur.into_iter().filter_map(|v| v.get(key)).collect();
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return Vec::new();
            };
            let sel = &r[..end];
            rest = &r[end + 1..];
            if sel == "*" {
                cur = cur
                    .into_iter()
                    .filter_map(Value::as_array)
                    .flatten()
                    .collect();
            } else if let Ok(i) = sel.parse::<i64>() {
                cur = cur
                    .into_iter()
                    .filter_map(Value::as_array)
                    .filter_map(|a| {
                        let idx = if i < 0 { a.len() as i64 + i } else { i };
                        usize::try_from(idx).ok().and_then(|i| a.get(i))
                    })
                    .collect();
            } else if let Some(f) = sel.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let Some((k, v)) = f.split_once("==") else {
                    return Vec::new();
                };
                let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
                let k = k.trim();
                cur = cur
                    .into_iter()
                    .filter_map(Value::as_array)
                    .flatten()
                    .filter(|item| match item.get(k) {
                        Some(Value::String(s)) => s == v,
                        Some(other) => *other == v,
                        None => false,
                    })
                    .collect();
            } else {
                let key = sel.trim_matches(|c| c == '\'' || c == '"');
                cur = cur.into_iter().filter_map(|v| v.get(key)).collect();
            }
        } else {
            return Vec::new();
        }
    }
    cur
}

fn age_secs(ts: &str, now: jiff::Timestamp) -> Option<i64> {
    let t: jiff::Timestamp = ts.parse().ok()?;
    Some(now.as_second() - t.as_second())
}

/// PartialObjectMetadata for an object.
pub fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn cell(col: &super::resource::PrinterColumn, obj: &Value, now: jiff::Timestamp) -> Value {
    if matches!(col.json_path.as_str(), ".involvedObject" | ".regarding") {
        // Events: `kind/name` like the real server's printer.
        let r = json_path(obj, &col.json_path);
        let Some(r) = r.first() else {
            return Value::Null;
        };
        let kind = r
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_lowercase();
        let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
        return json!(format!("{kind}/{name}"));
    }
    let found = json_path(obj, &col.json_path);
    let Some(first) = found.first() else {
        // Built-in "Data" columns count keys: none is 0, not <none>.
        return if col.name == "Data" {
            json!(0)
        } else {
            Value::Null
        };
    };
    match col.type_.as_str() {
        "date" => match first.as_str().and_then(|s| age_secs(s, now)) {
            Some(secs) => json!(human_duration(secs)),
            None => Value::Null,
        },
        "integer" | "number" => match first {
            Value::Object(m) => json!(m.len()),
            Value::Array(a) => json!(a.len()),
            Value::Number(_) => (*first).clone(),
            Value::String(s) => s.parse::<f64>().map(|f| json!(f)).unwrap_or(Value::Null),
            _ => Value::Null,
        },
        "boolean" => match first {
            Value::Bool(_) => (*first).clone(),
            _ => Value::Null,
        },
        _ => {
            let parts: Vec<String> = found
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            json!(parts.join(","))
        }
    }
}

/// Builds a Table from objects (already in their served form).
pub fn table(
    res: &ResourceInfo,
    objs: &[&Value],
    rv: &str,
    cont: Option<&str>,
    include: &str,
) -> Value {
    let now = jiff::Timestamp::now();
    let mut defs = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
    })];
    for c in &res.printer_columns {
        defs.push(json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority}));
    }
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            cells.extend(res.printer_columns.iter().map(|c| cell(c, o, now)));
            let object = match include {
                "None" => Value::Null,
                "Object" => (*o).clone(),
                _ => partial(o),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(20 * 3600), "20h");
        assert_eq!(human_duration(3 * 86400), "3d");
        assert_eq!(human_duration(3 * 86400 + 7200), "3d2h");
        assert_eq!(human_duration(30 * 86400), "30d");
    }

    #[test]
    fn json_paths() {
        let o = json!({"status": {"actions": [{"id": 7}], "conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(json_path(&o, ".status.actions[0].id"), vec![&json!(7)]);
        assert_eq!(
            json_path(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![&json!("True")]
        );
        assert!(json_path(&o, ".spec.x").is_empty());
    }

    #[test]
    fn accept_negotiation() {
        assert_eq!(
            negotiate(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
            ),
            As::Table
        );
        assert_eq!(
            negotiate("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
            As::Metadata
        );
        assert_eq!(negotiate("application/json"), As::Object);
        assert_eq!(negotiate(""), As::Object);
    }
}
