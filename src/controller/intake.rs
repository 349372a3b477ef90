//! Reading DropletActions from the watch without letting one object stop the others.
//!
//! The watch is made on loosely typed objects ([`Stored`]: metadata, and spec and status as plain JSON) and each
//! object is read into a [`DropletAction`] on its own. The CRD admits only values the operator can read, but an
//! object written under an older CRD, or by a client that bypassed validation, may still not fit: such an object is *skipped* (it never reaches the
//! cache or the reconciler, so the initial list, readiness and every other resource carry on) and *reported on
//! the object itself*: a Warning event (reason `Unreadable`) and, where the API server takes it, a status
//! condition (Ready False, Stalled True, reason `Unreadable`) whose message names the field and the fix. The
//! report is made once per object and problem (also across restarts: the status message is compared first).
//! Values beyond the CRD's bounds (for example a `deadlineSeconds` of years) count as unreadable too, so no
//! arithmetic on them can overflow.

use std::collections::HashMap;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{ApiResource, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::crd::{self, DropletAction};
use crate::events::Publisher;

/// Event reason and condition reason of an object the operator cannot read.
pub const REASON_UNREADABLE: &str = "Unreadable";

/// Why an object cannot be read: the field (JSON path such as `spec.image`) and the problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {field}: {problem}")]
pub struct Unreadable {
    /// The field, for example `spec.image`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl Unreadable {
    /// The message written on the object: the problem and what to do.
    pub fn message(&self) -> String {
        format!(
            "{self}. The operator skips this DropletAction: it was written under an older CRD or by a client that \
             bypassed validation. Delete it and create it again with a valid {} (the installed CRD checks it; \
             `kubectl explain dropletaction.{}` describes the field)",
            self.field, self.field
        )
    }
}

/// The API resource DropletActions are watched as.
pub fn api_resource() -> ApiResource {
    ApiResource::erase::<DropletAction>(&())
}

/// A stored DropletAction as the watch delivers it, before it is read: the metadata the controller uses, and
/// spec and status as plain JSON, so that one object that does not fit the type fails alone (see [`read`]).
///
/// Decoding is lean because it runs for every object of every list page and watch event: `managedFields`
/// (often most of an object), annotations (kubectl's last-applied copy of the whole object), owner references
/// and the other metadata the controller never reads from its cache are skipped while parsing, never built.
/// (The reconciler reads the annotations that resolve an uncertain initiation from a fresh GET.)
#[derive(Clone, Debug, Deserialize)]
pub struct Stored {
    /// The metadata the controller reads.
    #[serde(deserialize_with = "lean_metadata")]
    pub metadata: ObjectMeta,
    /// The spec, unread.
    #[serde(default)]
    pub spec: Value,
    /// The status, unread.
    #[serde(default)]
    pub status: Value,
}

/// The part of `metadata` the controller reads; every other key is skipped by the parser.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
}

fn lean_metadata<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = LeanMeta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        generation: m.generation,
        creation_timestamp: m.creation_timestamp,
        deletion_timestamp: m.deletion_timestamp,
        ..ObjectMeta::default()
    })
}

impl Resource for Stored {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        DropletAction::kind(dt)
    }
    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        DropletAction::group(dt)
    }
    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        DropletAction::version(dt)
    }
    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        DropletAction::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

fn unreadable(prefix: &str, e: serde_path_to_error::Error<serde_json::Error>) -> Unreadable {
    let path = e.path().to_string();
    Unreadable {
        field: if path == "." {
            prefix.to_string()
        } else {
            format!("{prefix}.{path}")
        },
        problem: e.into_inner().to_string(),
    }
}

/// Reads one stored object as a DropletAction: every field must deserialise and be within the CRD's bounds.
pub fn read(obj: &Stored) -> Result<DropletAction, Unreadable> {
    if obj.spec.is_null() {
        return Err(Unreadable {
            field: "spec".into(),
            problem: "missing field `spec`".into(),
        });
    }
    let spec: crd::DropletActionSpec =
        serde_path_to_error::deserialize(&obj.spec).map_err(|e| unreadable("spec", e))?;
    let status: Option<crd::DropletActionStatus> =
        serde_path_to_error::deserialize(&obj.status).map_err(|e| unreadable("status", e))?;
    let da = DropletAction {
        metadata: obj.metadata.clone(),
        spec,
        status,
    };
    check_bounds(&da)?;
    Ok(da)
}

fn check_bounds(da: &DropletAction) -> Result<(), Unreadable> {
    let s = &da.spec;
    let checks: [(&str, Option<i64>, i64, i64); 6] = [
        ("spec.dropletId", s.droplet_id, 1, crd::MAX_ID),
        ("spec.kernel", s.kernel, 1, crd::MAX_ID),
        (
            "spec.deadlineSeconds",
            s.deadline_seconds,
            1,
            crd::MAX_DEADLINE_SECONDS,
        ),
        (
            "spec.powerOffAfterSeconds",
            s.power_off_after_seconds,
            1,
            crd::MAX_POWER_OFF_AFTER_SECONDS,
        ),
        (
            "spec.ttlSecondsAfterFinished",
            s.ttl_seconds_after_finished,
            0,
            crd::MAX_TTL_SECONDS_AFTER_FINISHED,
        ),
        ("spec.backoffLimit", s.backoff_limit.map(i64::from), 0, 100),
    ];
    for (field, value, min, max) in checks {
        if let Some(v) = value
            && !(min..=max).contains(&v)
        {
            return Err(Unreadable {
                field: field.into(),
                problem: format!("{v} is outside the allowed range {min}..={max}"),
            });
        }
    }
    if let Some(crd::IntOrString::Int(i)) = &s.image
        && !(1..=crd::MAX_ID).contains(i)
    {
        return Err(Unreadable {
            field: "spec.image".into(),
            problem: format!("{i} is outside the allowed range 1..={}", crd::MAX_ID),
        });
    }
    Ok(())
}

/// What the watch tells the reporter.
#[derive(Debug)]
pub enum Report {
    /// This object cannot be read.
    Unreadable(Box<Stored>, Unreadable),
    /// This object is gone: forget what was reported about it.
    Deleted(String),
}

/// One watch event on untyped objects as a DropletAction event, or nothing for an object that cannot be read
/// (sent to `reports` instead).
pub fn convert(
    ev: watcher::Event<Stored>,
    reports: &mpsc::UnboundedSender<Report>,
) -> Option<watcher::Event<DropletAction>> {
    let applied = |o: Stored| match read(&o) {
        Ok(da) => Some(da),
        Err(why) => {
            let _ = reports.send(Report::Unreadable(Box::new(o), why));
            None
        }
    };
    match ev {
        watcher::Event::Apply(o) => applied(o).map(watcher::Event::Apply),
        watcher::Event::InitApply(o) => applied(o).map(watcher::Event::InitApply),
        watcher::Event::Delete(o) => {
            if let Some(uid) = o.uid() {
                let _ = reports.send(Report::Deleted(uid));
            }
            // The cache forgets by name: an unreadable object that was once readable leaves it too.
            let da = read(&o).ok().or_else(|| {
                Some(DropletAction {
                    metadata: o.metadata.clone(),
                    spec: serde_json::from_value(json!({"type": "reboot"})).ok()?,
                    status: None,
                })
            })?;
            Some(watcher::Event::Delete(da))
        }
        watcher::Event::Init => Some(watcher::Event::Init),
        watcher::Event::InitDone => Some(watcher::Event::InitDone),
    }
}

/// Reports unreadable objects on themselves until `reports` closes.
pub async fn report_unreadable(
    client: Client,
    events: Publisher,
    mut reports: mpsc::UnboundedReceiver<Report>,
) {
    let mut reported: HashMap<String, String> = HashMap::new();
    while let Some(r) = reports.recv().await {
        match r {
            Report::Deleted(uid) => {
                reported.remove(&uid);
            }
            Report::Unreadable(obj, why) => {
                let message = why.message();
                let uid = obj.uid().unwrap_or_default();
                let already = reported.get(&uid) == Some(&message)
                    || obj.status.pointer("/message").and_then(|m| m.as_str())
                        == Some(message.as_str());
                if already {
                    continue;
                }
                reported.insert(uid, message.clone());
                report(&client, &events, &obj, &message).await;
            }
        }
    }
}

async fn report(client: &Client, events: &Publisher, obj: &Stored, message: &str) {
    let namespace = obj.namespace().unwrap_or_else(|| "default".into());
    let name = obj.name_any();
    warn!(%namespace, %name, %message, "skipping a DropletAction that cannot be read");
    let reference = ObjectReference {
        api_version: Some(DropletAction::api_version(&()).into_owned()),
        kind: Some(DropletAction::kind(&()).into_owned()),
        name: Some(name.clone()),
        namespace: Some(namespace.clone()),
        uid: obj.uid(),
        resource_version: obj.resource_version(),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: REASON_UNREADABLE.into(),
        note: Some(message.to_string()),
        action: "Read".into(),
        secondary: None,
    };
    if let Err(e) = events.publish(&event, &reference).await {
        warn!(error = %e, %namespace, %name, "could not publish the Unreadable event");
    }
    let now = jiff::Timestamp::now().to_string();
    let generation = obj.metadata.generation.unwrap_or(1);
    let condition = |type_: &str, status: &str| {
        json!({"type": type_, "status": status, "reason": REASON_UNREADABLE, "message": message,
               "lastTransitionTime": now, "observedGeneration": generation})
    };
    let patch = json!({"status": {
        "reason": REASON_UNREADABLE,
        "message": message,
        "observedGeneration": generation,
        "conditions": [condition("Ready", "False"), condition("Reconciling", "False"), condition("Stalled", "True")],
    }});
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &api_resource());
    let params = PatchParams {
        field_manager: Some(crd::FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    match api
        .patch_status(&name, &params, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => info!(%namespace, %name, "reported the unreadable field in status"),
        // The API server may refuse the status of an object that does not match the CRD: the event stands.
        Err(e) => warn!(error = %e, %namespace, %name, "could not write the Unreadable condition"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(spec: serde_json::Value) -> Stored {
        serde_json::from_value(json!({
            "apiVersion": "droplet-operator.dev/v1alpha1", "kind": "DropletAction",
            "metadata": {"name": "x", "namespace": "default", "uid": "u1"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn a_large_image_id_is_read() {
        let da = read(&obj(
            json!({"type": "rebuild", "dropletId": 1, "image": 3_000_000_000i64}),
        ))
        .unwrap();
        assert_eq!(da.spec.image, Some(crd::IntOrString::Int(3_000_000_000)));
    }

    #[test]
    fn an_unreadable_field_is_named() {
        let e = read(&obj(
            json!({"type": "rebuild", "dropletId": 1, "image": 1.5}),
        ))
        .unwrap_err();
        assert_eq!(e.field, "spec.image");
        let e = read(&obj(json!({"type": "explode", "dropletId": 1}))).unwrap_err();
        assert_eq!(e.field, "spec.type");
        let e = read(&obj(json!({"type": "reboot", "dropletId": "one"}))).unwrap_err();
        assert_eq!(e.field, "spec.dropletId");
        let e = read(&obj(
            json!({"type": "reboot", "dropletId": 1, "deadlineSeconds": i64::MAX}),
        ))
        .unwrap_err();
        assert_eq!(e.field, "spec.deadlineSeconds");
        assert!(
            e.message().contains("spec.deadlineSeconds"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn metadata_the_controller_never_reads_is_not_decoded() {
        // Watch events as the emulator writes them (keys sorted: "object" before "type") and with the metadata
        // a real API server adds; managedFields in a shape ObjectMeta could not even read are skipped unparsed.
        let line = r#"{"object":{"apiVersion":"droplet-operator.dev/v1alpha1","kind":"DropletAction",
            "metadata":{"name":"x","namespace":"default","uid":"u1","resourceVersion":"7","generation":1,
              "creationTimestamp":"2026-01-01T00:00:00Z","labels":{"a":"b"},
              "annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}"},
              "managedFields":[{"manager":"kubectl","fieldsV1":{"f:spec":{}}}, 42]},
            "spec":{"type":"reboot","dropletId":1},"status":{"phase":"Pending"}},"type":"ADDED"}"#;
        let ev: kube::api::WatchEvent<Stored> = serde_json::from_str(line).unwrap();
        let kube::api::WatchEvent::Added(o) = ev else {
            panic!("expected ADDED")
        };
        assert_eq!(o.metadata.resource_version.as_deref(), Some("7"));
        assert!(o.metadata.managed_fields.is_none() && o.metadata.annotations.is_none());
        let da = read(&o).unwrap();
        assert_eq!(da.spec.droplet_id, Some(1));
        assert_eq!(da.phase(), crd::Phase::Pending);
        assert_eq!(da.metadata.uid.as_deref(), Some("u1"));
    }

    #[test]
    fn a_missing_spec_or_a_bad_status_is_named() {
        let mut o = obj(json!({"type": "reboot", "dropletId": 1}));
        o.status = json!({"phase": "Exploded"});
        assert_eq!(read(&o).unwrap_err().field, "status.phase");
        o.spec = Value::Null;
        assert_eq!(read(&o).unwrap_err().field, "spec");
    }

    #[test]
    fn unreadable_objects_are_skipped_and_reported() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let bad = obj(json!({"type": "reboot", "dropletId": "one"}));
        assert!(convert(watcher::Event::InitApply(bad), &tx).is_none());
        assert!(matches!(rx.try_recv(), Ok(Report::Unreadable(_, _))));
        let good = obj(json!({"type": "reboot", "dropletId": 1}));
        assert!(matches!(
            convert(watcher::Event::InitApply(good), &tx),
            Some(watcher::Event::InitApply(_))
        ));
        assert!(matches!(
            convert(watcher::Event::InitDone, &tx),
            Some(watcher::Event::InitDone)
        ));
    }
}
