//! The reconcile loop: asks [`decide`](super::decide::decide) for the next step, performs its IO, folds the
//! result back, and repeats until the step is "write status and wait".

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::{Map, Value, json};
use tracing::{debug, info, warn};

use super::decide::{
    self, AdoptOutcome, Gate, InitTarget, Input, Next, Note, TokenState, Update,
    adoption_candidates,
};
use super::policy::{self, budget_factor};
use super::tokens::{self, TokenLookup};
use super::{Context, Error, ordering};
use crate::crd::{DropletAction, DropletActionStatus, FIELD_MANAGER, Phase};
use crate::digitalocean::{Action, DoError, PostError, Token};

/// Upper bound of steps in one reconcile (each step is at most one kind of DigitalOcean call).
const MAX_STEPS: usize = 16;

/// RFC 7386 merge patch that turns `old` into `new` (removed keys become null).
pub fn merge_diff(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) if ov == nv => {}
                    Some(ov) if ov.is_object() && nv.is_object() => {
                        out.insert(k.clone(), merge_diff(ov, nv));
                    }
                    _ => {
                        out.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

/// What a status write concluded.
enum Written {
    Ok(Box<DropletAction>),
    /// The object changed since it was read (409): start over from the watch's newer copy.
    Conflict,
}

/// Writes `status` if it differs from the stored one, with a resourceVersion precondition: the write fails
/// instead of overwriting a newer state (another controller instance, or a concurrent reconcile).
async fn write_status(
    api: &Api<DropletAction>,
    obj: &DropletAction,
    status: &DropletActionStatus,
) -> Result<Written, Error> {
    let old = obj.status.clone().unwrap_or_default();
    if &old == status {
        return Ok(Written::Ok(Box::new(obj.clone())));
    }
    let old_v = serde_json::to_value(&old).map_err(Error::Serialize)?;
    let new_v = serde_json::to_value(status).map_err(Error::Serialize)?;
    let patch = json!({
        "metadata": {"resourceVersion": obj.resource_version()},
        "status": if obj.status.is_some() { merge_diff(&old_v, &new_v) } else { new_v },
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    match api
        .patch_status(&obj.name_any(), &params, &Patch::Merge(&patch))
        .await
    {
        Ok(updated) => Ok(Written::Ok(Box::new(updated))),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            debug!(message = %s.message, "status write conflicted; retrying from the newer object");
            Ok(Written::Conflict)
        }
        Err(e) => Err(Error::Kube(e)),
    }
}

async fn publish(ctx: &Context, obj: &DropletAction, note: &Option<Note>) {
    let Some(n) = note else { return };
    let event = Event {
        type_: if n.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: n.reason.to_string(),
        note: Some(n.text.chars().take(1024).collect()),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(error = %e, reason = n.reason, "could not publish event");
    }
}

fn all_known(ctx: &Context) -> Vec<Arc<DropletAction>> {
    ctx.stores.iter().flat_map(|s| s.state()).collect()
}

/// Wakes DropletActions queued behind `obj` on the same droplets, once `obj` finished.
fn wake_waiters(ctx: &Context, obj: &DropletAction) {
    if let Some(uid) = &obj.metadata.uid {
        let mut finished = ctx.finished.lock().unwrap_or_else(|p| p.into_inner());
        // Forget entries the caches caught up with (final there, or gone), so the map stays small.
        finished.retain(|_, r| {
            ctx.stores
                .iter()
                .any(|s| s.get(r).is_some_and(|d| !d.phase().is_terminal()))
        });
        finished.insert(uid.clone(), ObjectRef::from_obj(obj));
    }
    for other in ordering::waiting_on(obj, &all_known(ctx)) {
        let _ = ctx.wake.send(ObjectRef::from_obj(&*other));
    }
}

/// The IDs of the resource's actions not yet seen finished.
fn in_flight_ids(status: &DropletActionStatus) -> Vec<i64> {
    status
        .actions
        .iter()
        .filter(|a| !crate::digitalocean::ActionStatus::from(a.status.as_str()).is_terminal())
        .map(|a| a.id)
        .collect()
}

fn requeue(d: Option<Duration>) -> Requeue {
    match d {
        Some(d) => Requeue::requeue(d.max(Duration::from_millis(20))),
        None => Requeue::await_change(),
    }
}

/// Reconciles one DropletAction: asks [`decide::decide`] for the next step and performs its IO, until the step
/// is "write status and wait". Every decision is made in [`decide`]; this only talks to the servers.
pub async fn reconcile(obj: Arc<DropletAction>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    // The ordering gate and adoption read every DropletAction from the caches: never decide on a partial view
    // (after a restart the first reconciles can start before the initial list is in).
    // (Store::wait_until_ready is not used: it wakes only one of several concurrent waiters.)
    if !ctx
        .synced
        .iter()
        .all(|s| s.load(std::sync::atomic::Ordering::SeqCst))
    {
        return Ok(Requeue::requeue(Duration::from_millis(200)));
    }
    let namespace = obj.namespace().unwrap_or_else(|| "default".into());
    let name = obj.name_any();
    let api: Api<DropletAction> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut obj = (*obj).clone();
    // An open intent in the cache is often our own write from a moment ago, with the outcome already stored but
    // not yet seen by the watch. Re-read before adopting: a Kubernetes GET is cheaper than a DigitalOcean list.
    // (The cache also drops annotations, which resolve uncertain intents.)
    if obj
        .status
        .as_ref()
        .is_some_and(|s| s.pending_initiation.is_some())
    {
        match api.get_opt(&name).await.map_err(Error::Kube)? {
            Some(fresh) => obj = fresh,
            None => return Ok(Requeue::await_change()),
        }
    }
    // The spec is immutable (admission enforces it), so one copy serves every step.
    let spec = obj.spec.clone();
    let generation = obj.metadata.generation.unwrap_or(1);
    let resolution = decide::Resolution::from_annotations(obj.annotations());

    // The token is needed for everything but finished resources.
    let token = if obj.phase().is_terminal() {
        TokenState::Missing(String::new())
    } else {
        match tokens::lookup(
            &ctx.client,
            &namespace,
            &obj.spec,
            ctx.default_token.as_ref(),
        )
        .await
        .map_err(Error::Kube)?
        {
            TokenLookup::Found(t) => TokenState::Available(t),
            TokenLookup::Missing(why) => TokenState::Missing(why),
        }
    };

    // `obj` is always the object as stored (the base of every status diff); `working` carries observations
    // that are not written yet (polled action statuses) into the next decision.
    let mut working: Option<DropletActionStatus> = None;
    let mut tracked = false;
    for _ in 0..MAX_STEPS {
        let mut status = working
            .take()
            .unwrap_or_else(|| obj.status.clone().unwrap_or_default());
        // (ordering.rs, creation order) Record the revision at first sight with the first status write: after that
        // write the resourceVersion no longer tells when the resource was created.
        if status.creation_revision.is_none() && !obj.phase().is_terminal() {
            status.creation_revision = obj.metadata.resource_version.clone();
        }
        if let Some(last) = status.actions.last() {
            tracing::Span::current().record("action_id", last.id);
        }
        let gate = if status.actions.is_empty() {
            let finished: BTreeSet<String> = ctx
                .finished
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .cloned()
                .collect();
            ordering::gate(&obj, &all_known(&ctx), &finished)
        } else {
            Gate::Free
        };
        let (budget, policy, last_observed) = match &token {
            TokenState::Available(t) => (
                budget_factor(&ctx.do_client.budget(t)),
                ctx.tracker.policy(t),
                ctx.tracker.last_observed(t, &in_flight_ids(&status)),
            ),
            TokenState::Missing(_) => (1.0, super::polling::Policy::prior_only(), None),
        };
        let input = Input {
            spec: &spec,
            status: &status,
            generation,
            now: Timestamp::now(),
            token: token.clone(),
            gate,
            budget_factor: budget,
            polling: &policy,
            tracked,
            last_observed,
            resolution: resolution.clone(),
            config: &ctx.config,
        };
        let next = decide::decide(&input);
        debug!(?next, "decided");
        let now = || Input {
            now: Timestamp::now(),
            ..input.clone()
        };
        match next {
            Next::Update(u) => return finish_update(&ctx, &api, &obj, u).await,
            Next::Delete => {
                info!("ttlSecondsAfterFinished elapsed; deleting");
                match api.delete(&name, &Default::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(Error::Kube(e)),
                }
                return Ok(Requeue::await_change());
            }
            Next::ResolveTag { tag, status, token } => {
                let found = ctx.do_client.list_droplets_by_tag(&token, &tag).await;
                let u = decide::after_resolve_tag(&now(), &tag, status, found);
                if u.status.droplet_ids.is_empty() || u.status.phase.is_some_and(Phase::is_terminal)
                {
                    return finish_update(&ctx, &api, &obj, u).await;
                }
                match write_status(&api, &obj, &u.status).await? {
                    Written::Ok(updated) => obj = *updated,
                    Written::Conflict => return Ok(Requeue::requeue(Duration::from_millis(200))),
                }
            }
            Next::Initiate(init) => return initiate(&ctx, &api, obj, &input, init).await,
            Next::Adopt(adoption) => {
                let intent = adoption.intent;
                let droplets = if intent.droplet_ids.is_empty() {
                    decide::droplets_of(&obj.spec, &status)
                } else {
                    intent.droplet_ids.clone()
                };
                let mut listed = Vec::new();
                for d in &droplets {
                    match ctx
                        .do_client
                        .list_all_droplet_actions(&adoption.token, *d, policy::ADOPT_LIST_PAGES)
                        .await
                    {
                        Ok(mut actions) => {
                            for a in actions.iter_mut() {
                                a.resource_id.get_or_insert(*d);
                            }
                            listed.extend(actions);
                        }
                        Err(e) => {
                            return finish_with_error(&ctx, &api, &obj, &input, &status, &e).await;
                        }
                    }
                }
                let found = adoption_candidates(
                    &intent,
                    &listed,
                    &claimed(&ctx, &status),
                    ctx.config.adopt_skew,
                );
                match decide::after_adopt(&now(), &intent, &found) {
                    AdoptOutcome::Adopted(u) => {
                        info!(actions = ?found.iter().map(|a| a.id).collect::<Vec<_>>(), "adopted");
                        ctx.metrics.adopted(found.len());
                        match write_status(&api, &obj, &u.status).await? {
                            Written::Ok(updated) => {
                                publish(&ctx, &updated, &u.note).await;
                                obj = *updated;
                            }
                            Written::Conflict => {
                                return Ok(Requeue::requeue(Duration::from_millis(200)));
                            }
                        }
                    }
                    AdoptOutcome::Wait(u) => {
                        if let Written::Ok(updated) = write_status(&api, &obj, &u.status).await? {
                            publish(&ctx, &updated, &u.note).await;
                        }
                        return Ok(requeue(u.requeue));
                    }
                    AdoptOutcome::Uncertain(u) => {
                        warn!(intent = ?intent, "no action appeared for an uncertain initiation; waiting for an annotation");
                        return finish_update(&ctx, &api, &obj, u).await;
                    }
                }
            }
            Next::AdoptGiven(given) => {
                // Consume the annotation first: once acted on, it must not resolve a later uncertainty.
                let Some(updated) = remove_annotation(&api, &obj, decide::ADOPT_ANNOTATION).await?
                else {
                    return Ok(Requeue::requeue(Duration::from_millis(200)));
                };
                obj = updated;
                let looked_up = ctx
                    .do_client
                    .get_action(&given.token, given.action_id)
                    .await;
                let u = decide::after_adopt_given(
                    &now(),
                    &given.intent,
                    given.action_id,
                    looked_up,
                    &claimed(&ctx, &status),
                );
                info!(
                    action_id = given.action_id,
                    "adopting the action named by annotation"
                );
                return finish_update(&ctx, &api, &obj, u).await;
            }
            Next::Track(t) => {
                let observed = if t.in_progress.is_empty() {
                    BTreeMap::new()
                } else {
                    match ctx
                        .tracker
                        .observe(
                            &t.token,
                            &t.in_progress,
                            t.max_age,
                            &ObjectRef::from_obj(&obj),
                        )
                        .await
                    {
                        Ok(o) => {
                            debug!(observed = ?o.values().map(|a| (a.id, a.status.clone())).collect::<Vec<_>>(), "tracked");
                            o
                        }
                        Err(e) => {
                            return finish_with_error(&ctx, &api, &obj, &input, &status, &e).await;
                        }
                    }
                };
                let mut images = BTreeMap::new();
                for (droplet, action_id, started) in &t.snapshots {
                    match find_snapshot(&ctx, &t.token, *droplet, *started).await {
                        Ok(Some(image)) => {
                            images.insert(*action_id, image);
                        }
                        Ok(None) => warn!(droplet, action_id, "snapshot image not found yet"),
                        Err(e) => {
                            return finish_with_error(&ctx, &api, &obj, &input, &status, &e).await;
                        }
                    }
                }
                let mut power = BTreeMap::new();
                for (droplet, action_id) in &t.power_checks {
                    match ctx.do_client.get_droplet(&t.token, *droplet).await {
                        Ok(d) => {
                            power.insert(*action_id, d.status.clone());
                        }
                        Err(e) => {
                            return finish_with_error(&ctx, &api, &obj, &input, &status, &e).await;
                        }
                    }
                }
                working = Some(decide::after_track(&status, &observed, &images, &power));
                tracked = true;
            }
        }
    }
    warn!("reconcile did not settle within {MAX_STEPS} steps");
    Ok(Requeue::requeue(Duration::from_secs(1)))
}

/// Action IDs no intent may adopt: every cached DropletAction's, and this one's.
fn claimed(ctx: &Context, status: &DropletActionStatus) -> BTreeSet<i64> {
    ordering::claimed_action_ids(&all_known(ctx))
        .into_iter()
        .chain(status.actions.iter().map(|a| a.id))
        .collect()
}

/// Removes one annotation (a JSON merge patch with `obj`'s resourceVersion) and returns the object as stored
/// now, the base of the next status write. None: the object changed meanwhile (or is gone); start over.
async fn remove_annotation(
    api: &Api<DropletAction>,
    obj: &DropletAction,
    key: &str,
) -> Result<Option<DropletAction>, Error> {
    let patch = json!({"metadata": {"resourceVersion": obj.resource_version(), "annotations": {key: null}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    match api
        .patch(&obj.name_any(), &params, &Patch::Merge(&patch))
        .await
    {
        Ok(updated) => Ok(Some(updated)),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(None),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// The initiation protocol (see the exactly-once section of the [controller docs](super)):
/// watermark, rate-budget slot, intent, leadership check, send, outcome.
async fn initiate(
    ctx: &Context,
    api: &Api<DropletAction>,
    mut obj: DropletAction,
    input: &Input<'_>,
    mut init: decide::Initiation,
) -> Result<Requeue, Error> {
    let token = init.token.clone();
    let at = |now: Timestamp, status| Input {
        now,
        status,
        ..input.clone()
    };
    // 1. The watermark: the newest action ID seen before the send (from a recent answer, or one read shared by
    //    the initiations of a burst; `digitalocean::watermark`).
    let droplet = match &init.target {
        InitTarget::Droplet(d) => Some(*d),
        InitTarget::Tag(_) => None,
    };
    let listed = ctx
        .do_client
        .watermark(&token, droplet, ctx.config.watermark_max_age)
        .await;
    match listed {
        Ok(highest) => init.set_watermark(highest),
        Err(e) => {
            let status = obj.status.clone().unwrap_or_default();
            return finish_with_error(ctx, api, &obj, input, &status, &e).await;
        }
    }
    // A re-send consumes its annotation before anything else: it must never trigger a second re-send.
    if init.resend {
        match remove_annotation(api, &obj, decide::RESEND_ANNOTATION).await? {
            Some(updated) => obj = updated,
            None => return Ok(Requeue::requeue(Duration::from_millis(200))),
        }
    }
    // 2. The rate-budget slot, before the intent: no budget wait sits between the intent and the send.
    let slot = match ctx.do_client.reserve_post(&token).await {
        Ok(slot) => slot,
        Err(e) => {
            let status = obj.status.clone().unwrap_or_default();
            let u = decide::after_post(
                &at(Timestamp::now(), &status),
                &init,
                Err(PostError::not_applied(e)),
            );
            return finish_update(ctx, api, &obj, u).await;
        }
    };
    // 3. The intent. If this write fails nothing was sent; if the process dies after it, the next reconcile
    //    looks for the action instead of sending again.
    let before = obj.status.clone().unwrap_or_default();
    match write_status(api, &obj, &init.intent_status).await? {
        Written::Ok(updated) => obj = *updated,
        Written::Conflict => return Ok(Requeue::requeue(Duration::from_millis(200))),
    }
    // 4. Leadership, right before the send: a replica that lost the Lease takes its intent back and sends nothing.
    if !ctx.is_leader() {
        warn!("lost the leader Lease before sending; withdrawing the intent");
        let _ = write_status(api, &obj, &before).await?;
        return Ok(Requeue::await_change());
    }
    // 5. The send. The client never re-sends a request that may have been applied.
    let result: Result<Vec<Action>, PostError> = match &init.target {
        InitTarget::Droplet(d) => ctx
            .do_client
            .post_droplet_action_in(Some(slot), &token, *d, &init.request)
            .await
            .map(|a| vec![a]),
        InitTarget::Tag(t) => {
            ctx.do_client
                .post_tag_action_in(Some(slot), &token, t, &init.request)
                .await
        }
    };
    ctx.metrics
        .initiation(init.type_.as_str(), result.as_ref().err());
    if let Ok(actions) = &result {
        // The POST's answer is an observation: the wake-up our status write causes needs no poll.
        ctx.tracker
            .record(&token, actions, &ObjectRef::from_obj(&obj))
            .await;
    }
    // 6. The outcome, action IDs first. A conflicting write is re-applied to the newer object: returned IDs are
    //    never dropped.
    let status = obj.status.clone().unwrap_or_default();
    let u = decide::after_post(&at(Timestamp::now(), &status), &init, result);
    write_outcome(ctx, api, obj, u).await
}

/// Writes the outcome of a POST. On a conflict (409) it re-reads the object and writes again, keeping every
/// action ID the POST returned: losing them would make a later reconcile look for an action it already knows.
async fn write_outcome(
    ctx: &Context,
    api: &Api<DropletAction>,
    mut obj: DropletAction,
    u: Update,
) -> Result<Requeue, Error> {
    for _ in 0..5 {
        match write_status(api, &obj, &u.status).await? {
            Written::Ok(updated) => return after_write(ctx, &obj, *updated, u).await,
            Written::Conflict => {
                let Some(fresh) = api.get_opt(&obj.name_any()).await.map_err(Error::Kube)? else {
                    return Ok(Requeue::await_change());
                };
                warn!(
                    "status write after a POST conflicted; re-applying the outcome to the newer object"
                );
                obj = fresh;
            }
        }
    }
    Ok(Requeue::requeue(Duration::from_millis(200)))
}

/// Finds the image a snapshot action created: DigitalOcean's snapshot `created_at` equals the action's
/// `started_at` (the Terraform provider relies on the same fact).
async fn find_snapshot(
    ctx: &Context,
    token: &Token,
    droplet: i64,
    started: Option<Timestamp>,
) -> Result<Option<i64>, DoError> {
    let Some(started) = started else {
        return Ok(None);
    };
    let mut page = 1;
    loop {
        let snaps = ctx
            .do_client
            .list_droplet_snapshots(token, droplet, page, 200)
            .await?;
        if let Some(s) = snaps.items.iter().find(|s| s.created_at == Some(started)) {
            return Ok(Some(s.id));
        }
        match snaps.next_page {
            Some(n) if n > page && page < policy::SNAPSHOT_SEARCH_PAGES => page = n,
            _ => return Ok(None),
        }
    }
}

async fn finish_with_error(
    ctx: &Context,
    api: &Api<DropletAction>,
    obj: &DropletAction,
    input: &Input<'_>,
    status: &DropletActionStatus,
    e: &DoError,
) -> Result<Requeue, Error> {
    let input = Input {
        now: Timestamp::now(),
        ..input.clone()
    };
    finish_update(ctx, api, obj, decide::after_track_error(&input, status, e)).await
}

/// Writes a status update, publishes its event, and wakes waiters when it is final.
async fn finish_update(
    ctx: &Context,
    api: &Api<DropletAction>,
    obj: &DropletAction,
    u: Update,
) -> Result<Requeue, Error> {
    let Written::Ok(updated) = write_status(api, obj, &u.status).await? else {
        return Ok(Requeue::requeue(Duration::from_millis(200)));
    };
    after_write(ctx, obj, *updated, u).await
}

/// After a status write: publishes the step's event, and wakes waiters when the resource just finished.
async fn after_write(
    ctx: &Context,
    before: &DropletAction,
    updated: DropletAction,
    u: Update,
) -> Result<Requeue, Error> {
    publish(ctx, &updated, &u.note).await;
    if !before.phase().is_terminal() && updated.phase().is_terminal() {
        info!(phase = updated.phase().as_str(), "finished");
        ctx.metrics.finished(&updated);
        wake_waiters(ctx, &updated);
    }
    Ok(requeue(u.requeue))
}

/// What to do when a reconcile fails outside DigitalOcean (the Kubernetes API): retry soon, with backoff.
pub fn error_policy(_obj: Arc<DropletAction>, error: &Error, ctx: Arc<Context>) -> Requeue {
    warn!(error = %error, category = error.category(), "reconcile failed");
    ctx.metrics.reconcile_error(error.category());
    Requeue::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_patches_null_out_removed_fields_and_keep_unchanged_ones_out() {
        let old = json!({"phase": "Pending", "pendingInitiation": {"attempt": 1}, "retry": {"failures": 2}, "target": "droplet/1"});
        let new = json!({"phase": "Running", "retry": {"failures": 2}, "target": "droplet/1", "actions": [{"id": 5}]});
        assert_eq!(
            merge_diff(&old, &new),
            json!({"phase": "Running", "pendingInitiation": null, "actions": [{"id": 5}]})
        );
        let nested_old = json!({"lastError": {"httpStatus": 500, "message": "x"}});
        let nested_new = json!({"lastError": {"message": "y"}});
        assert_eq!(
            merge_diff(&nested_old, &nested_new),
            json!({"lastError": {"httpStatus": null, "message": "y"}})
        );
    }
}
