//! Core v1 Events and `events.k8s.io/v1` Events are two views of one store (kept in core v1 form).

use serde_json::{Map, Value, json};

/// RFC 3339 with whole seconds, like `metav1.Time`.
pub fn to_seconds(t: &str) -> String {
    match t.parse::<jiff::Timestamp>() {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => t.to_string(),
    }
}

fn mv(from: &mut Map<String, Value>, to: &mut Map<String, Value>, a: &str, b: &str) {
    if let Some(v) = from.remove(a)
        && !v.is_null()
    {
        to.insert(b.to_string(), v);
    }
}

/// Storage (core v1) → `events.k8s.io/v1` view.
pub fn core_to_events_v1(core: &Value) -> Value {
    let mut src = core.as_object().cloned().unwrap_or_default();
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    out.insert("kind".into(), json!("Event"));
    src.remove("apiVersion");
    src.remove("kind");
    mv(&mut src, &mut out, "metadata", "metadata");
    mv(&mut src, &mut out, "involvedObject", "regarding");
    mv(&mut src, &mut out, "message", "note");
    mv(
        &mut src,
        &mut out,
        "reportingComponent",
        "reportingController",
    );
    mv(&mut src, &mut out, "source", "deprecatedSource");
    mv(
        &mut src,
        &mut out,
        "firstTimestamp",
        "deprecatedFirstTimestamp",
    );
    mv(
        &mut src,
        &mut out,
        "lastTimestamp",
        "deprecatedLastTimestamp",
    );
    mv(&mut src, &mut out, "count", "deprecatedCount");
    for k in [
        "reportingInstance",
        "action",
        "reason",
        "related",
        "type",
        "eventTime",
        "series",
    ] {
        mv(&mut src, &mut out, k, k);
    }
    Value::Object(out)
}

/// `events.k8s.io/v1` view → storage (core v1), filling the legacy fields `kubectl describe` shows.
pub fn events_v1_to_core(ev: &Value) -> Value {
    let mut src = ev.as_object().cloned().unwrap_or_default();
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("v1"));
    out.insert("kind".into(), json!("Event"));
    src.remove("apiVersion");
    src.remove("kind");
    let series = src.get("series").cloned().filter(|s| !s.is_null());
    let event_time = src
        .get("eventTime")
        .and_then(Value::as_str)
        .map(String::from);
    let controller = src
        .get("reportingController")
        .and_then(Value::as_str)
        .map(String::from);
    mv(&mut src, &mut out, "metadata", "metadata");
    mv(&mut src, &mut out, "regarding", "involvedObject");
    mv(&mut src, &mut out, "note", "message");
    mv(
        &mut src,
        &mut out,
        "reportingController",
        "reportingComponent",
    );
    mv(&mut src, &mut out, "deprecatedSource", "source");
    mv(
        &mut src,
        &mut out,
        "deprecatedFirstTimestamp",
        "firstTimestamp",
    );
    mv(
        &mut src,
        &mut out,
        "deprecatedLastTimestamp",
        "lastTimestamp",
    );
    mv(&mut src, &mut out, "deprecatedCount", "count");
    for k in [
        "reportingInstance",
        "action",
        "reason",
        "related",
        "type",
        "eventTime",
        "series",
    ] {
        mv(&mut src, &mut out, k, k);
    }
    if let Some(series) = &series {
        if let Some(c) = series.get("count") {
            out.insert("count".into(), c.clone());
        }
        if let Some(t) = series.get("lastObservedTime").and_then(Value::as_str) {
            out.insert("lastTimestamp".into(), json!(to_seconds(t)));
        }
    }
    if !out.contains_key("count") {
        out.insert("count".into(), json!(1));
    }
    if let Some(t) = &event_time {
        if !out.contains_key("firstTimestamp") {
            out.insert("firstTimestamp".into(), json!(to_seconds(t)));
        }
        if !out.contains_key("lastTimestamp") {
            out.insert("lastTimestamp".into(), json!(to_seconds(t)));
        }
    }
    let has_component = out
        .get("source")
        .and_then(|s| s.get("component"))
        .and_then(Value::as_str)
        .is_some();
    if !has_component && let Some(c) = controller {
        let source = out.entry("source").or_insert_with(|| json!({}));
        if let Some(m) = source.as_object_mut() {
            m.insert("component".into(), json!(c));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_legacy_fields() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Foo", "name": "x"}, "note": "hello", "reason": "Did", "type": "Normal",
            "reportingController": "ctl", "eventTime": "2026-01-01T00:00:00.123456Z",
            "series": {"count": 3, "lastObservedTime": "2026-01-01T00:01:00.000001Z"}});
        let core = events_v1_to_core(&v1);
        assert_eq!(core["involvedObject"]["name"], "x");
        assert_eq!(core["message"], "hello");
        assert_eq!(core["count"], 3);
        assert_eq!(core["source"]["component"], "ctl");
        assert_eq!(core["firstTimestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(core["lastTimestamp"], "2026-01-01T00:01:00Z");
        let back = core_to_events_v1(&core);
        assert_eq!(back["regarding"]["name"], "x");
        assert_eq!(back["note"], "hello");
        assert_eq!(back["series"]["count"], 3);
    }
}
