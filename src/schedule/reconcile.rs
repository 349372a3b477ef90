//! The IO of the schedule controller: read the children, ask [`decide`](super::decide) what to do, create the
//! slot's child, write status (with a resourceVersion precondition), publish events, delete old children and
//! expired own snapshots.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::crd::{DropletActionSchedule, DropletActionScheduleStatus};
use super::decide::{self, Child, Observed, Plan};
use super::{Context, Error, SCHEDULE_LABEL, SCHEDULE_UID_LABEL, SCHEDULED_AT};
use crate::controller::reconcile::merge_diff;
use crate::controller::tokens::{self, TokenLookup};
use crate::crd::{DropletAction, FIELD_MANAGER};
use crate::digitalocean::ErrorKind;

/// What the children of `uid` look like to the decisions.
pub fn child_view(uid: &str, items: &[DropletAction]) -> Vec<Child> {
    items
        .iter()
        .filter(|d| d.owner_references().iter().any(|o| o.uid == uid))
        .filter_map(|d| {
            let slot: Timestamp = d.annotations().get(SCHEDULED_AT)?.parse().ok()?;
            let st = d.status.as_ref();
            Some(Child {
                name: d.name_any(),
                slot,
                phase: d.phase(),
                completion_time: st.and_then(|s| s.completion_time.as_ref()).map(|t| t.0),
                snapshot_image_ids: st
                    .map(|s| {
                        s.actions
                            .iter()
                            .filter_map(|a| a.snapshot_image_id)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn child_object(obj: &DropletActionSchedule, c: &decide::NewChild) -> DropletAction {
    let meta = obj.spec.template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels;
    labels.insert(
        SCHEDULE_LABEL.into(),
        decide::schedule_label(&obj.name_any()),
    );
    labels.insert(SCHEDULE_UID_LABEL.into(), obj.uid().unwrap_or_default());
    let mut annotations = meta.annotations;
    annotations.insert(SCHEDULED_AT.into(), c.slot.to_string());
    let mut da = DropletAction::new(&c.name, c.spec.clone());
    da.metadata.namespace = obj.namespace();
    da.metadata.labels = Some(labels);
    da.metadata.annotations = Some(annotations);
    da.metadata.owner_references = Some(vec![OwnerReference {
        api_version: DropletActionSchedule::api_version(&()).into_owned(),
        kind: DropletActionSchedule::kind(&()).into_owned(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    da
}

async fn publish(
    ctx: &Context,
    obj: &DropletActionSchedule,
    warning: bool,
    reason: &str,
    note: String,
) {
    publish_as(ctx, obj, warning, reason, "Schedule", note).await
}

/// Events with the same reason and action are aggregated into one series by the recorder; `action` keeps
/// the different skip reasons apart.
async fn publish_as(
    ctx: &Context,
    obj: &DropletActionSchedule,
    warning: bool,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_string(),
        note: Some(note.chars().take(1024).collect()),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(error = %e, reason, "could not publish event");
    }
}

/// Writes `new` if it differs from `old`; returns the new resourceVersion (None on a conflict).
async fn write_status(
    api: &Api<DropletActionSchedule>,
    name: &str,
    rv: Option<String>,
    old: Option<&DropletActionScheduleStatus>,
    new: &DropletActionScheduleStatus,
) -> Result<Option<Option<String>>, Error> {
    if old == Some(new) {
        return Ok(Some(rv));
    }
    let old_v = serde_json::to_value(old.cloned().unwrap_or_default()).map_err(Error::Serialize)?;
    let new_v = serde_json::to_value(new).map_err(Error::Serialize)?;
    let patch = json!({
        "metadata": {"resourceVersion": rv},
        "status": if old.is_some() { merge_diff(&old_v, &new_v) } else { new_v },
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    match api.patch_status(name, &params, &Patch::Merge(&patch)).await {
        Ok(updated) => Ok(Some(updated.resource_version())),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            debug!(message = %s.message, "schedule status write conflicted; retrying");
            Ok(None)
        }
        Err(e) => Err(Error::Kube(e)),
    }
}

/// One reconcile of a DropletActionSchedule.
///
/// Before it creates a child or deletes snapshots it re-reads the schedule: the cached copy may lag behind the
/// controller's own last status write, and a child that was recorded there and then deleted
/// (ttlSecondsAfterFinished, history limits) must not be created again, nor a recorded deletion repeated. When the
/// cache is behind, the decision is made again on the object just read.
pub async fn reconcile(
    obj: Arc<DropletActionSchedule>,
    ctx: Arc<Context>,
) -> Result<Requeue, Error> {
    if let Some(done) = reconcile_with(&obj, &ctx, false).await? {
        return Ok(done);
    }
    let api: Api<DropletActionSchedule> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let fresh = api.get(&obj.name_any()).await.map_err(Error::Kube)?;
    Ok(reconcile_with(&fresh, &ctx, true)
        .await?
        .unwrap_or_else(|| Requeue::requeue(Duration::from_millis(100))))
}

/// A reconcile of `obj`; None when `obj` turned out to be older than the stored object (and `fresh` is false).
async fn reconcile_with(
    obj: &DropletActionSchedule,
    ctx: &Context,
    fresh: bool,
) -> Result<Option<Requeue>, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let uid = obj.uid().unwrap_or_default();
    let now = ctx.clock.now();
    let children_api: Api<DropletAction> = Api::namespaced(ctx.client.clone(), &ns);
    let listed = children_api
        .list(&ListParams::default().labels(&format!("{SCHEDULE_UID_LABEL}={uid}")))
        .await
        .map_err(Error::Kube)?;
    let children = child_view(&uid, &listed.items);
    let empty = DropletActionScheduleStatus::default();
    let created = obj
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let plan: Plan = decide::decide(&Observed {
        name: &name,
        generation: obj.metadata.generation.unwrap_or(1),
        created,
        spec: &obj.spec,
        status: obj.status.as_ref().unwrap_or(&empty),
        children: &children,
        now,
    });
    let api: Api<DropletActionSchedule> = Api::namespaced(ctx.client.clone(), &ns);

    if let Some(e) = &plan.invalid {
        let was_stalled = obj.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == e.reason())
                && s.observed_generation == obj.metadata.generation
        });
        write_status(
            &api,
            &name,
            obj.resource_version(),
            obj.status.as_ref(),
            &plan.status,
        )
        .await?;
        if !was_stalled {
            publish(ctx, obj, true, e.reason(), e.to_string()).await;
        }
        return Ok(Some(Requeue::await_change()));
    }

    let mut created_now = None;
    if let Some(c) = &plan.create {
        // Decide on the current status, not a cached copy that may lag our own last write: a child that was
        // recorded and then deleted (ttlSecondsAfterFinished) must not be created again.
        if !fresh
            && api
                .get(&name)
                .await
                .map_err(Error::Kube)?
                .resource_version()
                != obj.resource_version()
        {
            return Ok(None);
        }
        match children_api
            .create(&PostParams::default(), &child_object(obj, c))
            .await
        {
            Ok(_) => {
                info!(schedule = %name, child = %c.name, slot = %c.slot, "created DropletAction for slot");
                created_now = Some(c);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                debug!(child = %c.name, "child for this slot exists already (another replica or an earlier run)");
            }
            Err(e) => return Err(Error::Kube(e)),
        }
    }
    let Some(rv) = write_status(
        &api,
        &name,
        obj.resource_version(),
        obj.status.as_ref(),
        &plan.status,
    )
    .await?
    else {
        // Someone wrote the schedule since it was read (or the cache lags): decide again on the stored one.
        if let Some(c) = created_now {
            publish(
                ctx,
                obj,
                false,
                "Created",
                format!(
                    "created DropletAction {} for the slot at {}",
                    c.name, c.slot
                ),
            )
            .await;
        }
        return Ok(if fresh {
            Some(Requeue::requeue(Duration::from_millis(200)))
        } else {
            None
        });
    };
    if let Some(c) = created_now {
        publish(
            ctx,
            obj,
            false,
            "Created",
            format!(
                "created DropletAction {} for the slot at {}",
                c.name, c.slot
            ),
        )
        .await;
    }
    for s in &plan.skipped {
        publish_as(ctx, obj, false, "Skipped", s.reason, s.note.clone()).await;
    }
    for child in &plan.delete_children {
        match children_api
            .delete(child, &DeleteParams::background())
            .await
        {
            Ok(_) => debug!(child, "deleted finished child beyond the history limit"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => warn!(error = %e, child, "could not delete finished child"),
        }
    }

    let mut requeue = plan.requeue_after.map(|d| ctx.clock.real(d));
    if !plan.delete_snapshots.is_empty() {
        // The cached object may lag behind our own last write (which may have recorded these deletions):
        // delete only what the current object still lists.
        if api
            .get(&name)
            .await
            .map_err(Error::Kube)?
            .resource_version()
            != rv
        {
            return Ok(if fresh {
                Some(Requeue::requeue(Duration::from_millis(200)))
            } else {
                None
            });
        }
        let mut status = plan.status.clone();
        match tokens::lookup(
            &ctx.client,
            &ns,
            &obj.spec.template.spec,
            ctx.default_token.as_ref(),
        )
        .await
        .map_err(Error::Kube)?
        {
            TokenLookup::Missing(msg) => {
                publish(
                    ctx,
                    obj,
                    true,
                    "TokenNotFound",
                    format!("retention is waiting: {msg}"),
                )
                .await;
                requeue = Some(Duration::from_secs(60));
            }
            TokenLookup::Found(token) => {
                for e in &plan.delete_snapshots {
                    let id = e.snapshot.image_id;
                    match ctx.do_client.delete_snapshot(&token, id).await {
                        Ok(existed) => {
                            decide::record_deleted(&mut status, e, ctx.clock.now());
                            let how = if existed {
                                "deleted"
                            } else {
                                "was already gone:"
                            };
                            publish(
                                ctx,
                                obj,
                                false,
                                "RetentionDeleted",
                                format!(
                                    "snapshot {id} (made by {}) {how} by {} of spec.retention",
                                    e.snapshot.child, e.rule
                                ),
                            )
                            .await;
                        }
                        Err(err) if err.kind() == ErrorKind::Forbidden => {
                            decide::retention_forbidden(
                                &mut status,
                                id,
                                obj.metadata.generation.unwrap_or(1),
                                ctx.clock.now(),
                            );
                            publish(
                                ctx,
                                obj,
                                true,
                                decide::reasons::RETENTION_FORBIDDEN,
                                format!("DigitalOcean refused to delete snapshot {id}: the token needs the image:delete scope"),
                            )
                            .await;
                            break;
                        }
                        Err(err) => {
                            warn!(error = %err, snapshot = id, "retention deletion failed; retrying later");
                            requeue = Some(Duration::from_secs(30));
                            break;
                        }
                    }
                }
            }
        }
        if write_status(&api, &name, rv, Some(&plan.status), &status)
            .await?
            .is_none()
        {
            return Ok(Some(Requeue::requeue(Duration::from_millis(200))));
        }
    }
    Ok(Some(match requeue {
        Some(d) => Requeue::requeue(d.max(Duration::from_millis(100))),
        None => Requeue::await_change(),
    }))
}

/// Failed reconciles are retried after 5 s.
pub fn error_policy(
    _obj: Arc<DropletActionSchedule>,
    error: &Error,
    _ctx: Arc<Context>,
) -> Requeue {
    warn!(error = %error, category = error.category(), "schedule reconcile failed");
    Requeue::requeue(Duration::from_secs(5))
}
