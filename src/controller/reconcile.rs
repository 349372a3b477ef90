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

use super::conditions::reasons;
use super::decide::{
    self, AdoptOutcome, Gate, InitTarget, Input, Next, Note, TokenState, Update,
    adoption_candidates,
};
use super::tokens::{self, TokenLookup};
use super::{Context, Error, ordering, request};
use crate::crd::{DropletAction, DropletActionStatus, FIELD_MANAGER, Phase};
use crate::digitalocean::{Action, BudgetSnapshot, DoError, PostError, Token};

/// Upper bound of steps in one reconcile (each step is at most one kind of DigitalOcean call).
const MAX_STEPS: usize = 16;

/// How much to stretch polling when the rate budget runs low.
pub fn budget_factor(b: &BudgetSnapshot) -> f64 {
    let frac = |rem: u32, lim: u32| {
        if lim == 0 {
            1.0
        } else {
            f64::from(rem) / f64::from(lim)
        }
    };
    let left = frac(b.remaining_minute, b.limit_minute).min(frac(b.remaining_hour, b.limit_hour));
    if left < 0.1 {
        8.0
    } else if left < 0.25 {
        4.0
    } else if left < 0.5 {
        2.0
    } else {
        1.0
    }
}

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

fn requeue(d: Option<Duration>) -> Requeue {
    match d {
        Some(d) => Requeue::requeue(d.max(Duration::from_millis(20))),
        None => Requeue::await_change(),
    }
}

/// Reconciles one DropletAction.
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
    let was_terminal = obj.phase().is_terminal();
    let mut tracked = false;

    // The token is needed for everything but finished resources.
    let token: Option<Token>;
    let token_state = if was_terminal {
        token = None;
        TokenState::Available
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
            TokenLookup::Found(t) => {
                token = Some(t);
                TokenState::Available
            }
            TokenLookup::Missing(why) => {
                token = None;
                TokenState::Missing(why)
            }
        }
    };

    // `obj` is always the object as stored (the base of every status diff); `working` carries observations
    // that are not written yet (polled action statuses) into the next decision.
    let mut working: Option<DropletActionStatus> = None;
    for _ in 0..MAX_STEPS {
        let status = working
            .take()
            .unwrap_or_else(|| obj.status.clone().unwrap_or_default());
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
        let budget = token
            .as_ref()
            .map(|t| budget_factor(&ctx.do_client.budget(t)))
            .unwrap_or(1.0);
        let policy = token
            .as_ref()
            .map(|t| ctx.tracker.policy(t))
            .unwrap_or_else(super::polling::Policy::prior_only);
        let input = Input {
            spec: &spec,
            status: &status,
            generation,
            now: Timestamp::now(),
            token: token_state.clone(),
            gate,
            budget_factor: budget,
            polling: &policy,
            tracked,
            config: &ctx.config,
        };
        let next = decide::decide(&input);
        debug!(?next, "decided");
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
            Next::ResolveTag { tag, status: st } => {
                let Some(token) = &token else {
                    return Ok(Requeue::requeue(ctx.config.recheck));
                };
                let mut st = st;
                match ctx.do_client.list_droplets_by_tag(token, &tag).await {
                    Ok(droplets) if droplets.is_empty() => {
                        let msg = format!("no droplet has the tag {tag:?}; nothing to do");
                        let input = Input {
                            now: Timestamp::now(),
                            ..input
                        };
                        let u = decide::finished(
                            st,
                            &input,
                            Phase::Failed,
                            reasons::NO_DROPLETS,
                            reasons::NO_DROPLETS,
                            msg,
                        );
                        return finish_update(&ctx, &api, &obj, u).await;
                    }
                    Ok(droplets) => {
                        let mut ids: Vec<i64> = droplets.iter().map(|d| d.id).collect();
                        ids.sort_unstable();
                        st.droplet_ids = ids;
                        match write_status(&api, &obj, &st).await? {
                            Written::Ok(updated) => obj = *updated,
                            Written::Conflict => {
                                return Ok(Requeue::requeue(Duration::from_millis(200)));
                            }
                        }
                    }
                    Err(e) => {
                        return finish_with_error(&ctx, &api, &obj, &input, &status, &e).await;
                    }
                }
            }
            Next::Initiate(init) => {
                let Some(token) = &token else {
                    return Ok(Requeue::requeue(ctx.config.recheck));
                };
                let req = match request::action_request(&obj.spec, init.type_) {
                    Ok(r) => r,
                    Err(msg) => {
                        let input = Input {
                            now: Timestamp::now(),
                            ..input
                        };
                        let u = decide::finished(
                            status.clone(),
                            &input,
                            Phase::Failed,
                            reasons::REJECTED,
                            reasons::REJECTED,
                            msg,
                        );
                        return finish_update(&ctx, &api, &obj, u).await;
                    }
                };
                // 1. Record the intent. If this write fails nothing was sent; if the process dies after it, the
                //    next reconcile adopts instead of re-sending.
                match write_status(&api, &obj, &init.intent_status).await? {
                    Written::Ok(updated) => obj = *updated,
                    Written::Conflict => return Ok(Requeue::requeue(Duration::from_millis(200))),
                }
                // 2. Send it. The client never retries a request that may have been applied.
                let result: Result<Vec<Action>, PostError> = match &init.target {
                    InitTarget::Droplet(d) => ctx
                        .do_client
                        .post_droplet_action(token, *d, &req)
                        .await
                        .map(|a| vec![a]),
                    InitTarget::Tag(t) => ctx.do_client.post_tag_action(token, t, &req).await,
                };
                ctx.metrics
                    .initiation(init.type_.as_str(), result.as_ref().err());
                if let Ok(actions) = &result {
                    // The POST's answer is an observation: the wake-up our status write causes needs no poll.
                    ctx.tracker.record(token, actions).await;
                }
                // 3. Record the outcome (action IDs right away).
                let input = Input {
                    status: obj.status.as_ref().unwrap_or(&status),
                    now: Timestamp::now(),
                    ..input
                };
                let u = decide::after_post(&input, &init, result);
                // If this write fails, the intent stays and the next reconcile adopts the action(s).
                return finish_update(&ctx, &api, &obj, u).await;
            }
            Next::Adopt(adoption) => {
                let Some(token) = &token else {
                    return Ok(Requeue::requeue(ctx.config.recheck));
                };
                let intent = adoption.intent;
                let droplets = if intent.droplet_ids.is_empty() {
                    decide::droplets_of(&obj.spec, &status)
                } else {
                    intent.droplet_ids.clone()
                };
                let mut listed = Vec::new();
                for d in &droplets {
                    match ctx.do_client.list_all_droplet_actions(token, *d, 2).await {
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
                let claimed = ordering::claimed_action_ids(&all_known(&ctx))
                    .into_iter()
                    .chain(status.actions.iter().map(|a| a.id))
                    .collect();
                let found = adoption_candidates(&intent, &listed, &claimed, ctx.config.adopt_skew);
                match decide::after_adopt(&input, &intent, &found) {
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
                    AdoptOutcome::NothingStarted(st) => {
                        info!("no action matches the recorded initiation; it did not start");
                        match write_status(&api, &obj, &st).await? {
                            Written::Ok(updated) => obj = *updated,
                            Written::Conflict => {
                                return Ok(Requeue::requeue(Duration::from_millis(200)));
                            }
                        }
                    }
                }
            }
            Next::Track(t) => {
                let Some(token) = &token else {
                    return Ok(Requeue::requeue(ctx.config.recheck));
                };
                let observed = if t.in_progress.is_empty() {
                    BTreeMap::new()
                } else {
                    match ctx.tracker.observe(token, &t.in_progress, t.max_age).await {
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
                    match find_snapshot(&ctx, token, *droplet, *started).await {
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
                    match ctx.do_client.get_droplet(token, *droplet).await {
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
            Some(n) if n > page && page < 10 => page = n,
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
    publish(ctx, &updated, &u.note).await;
    if !obj.phase().is_terminal() && updated.phase().is_terminal() {
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

    fn budget(remaining_minute: u32, remaining_hour: u32) -> BudgetSnapshot {
        BudgetSnapshot {
            remaining_minute,
            remaining_hour,
            limit_minute: 240,
            limit_hour: 4800,
            blocked_until: None,
            server_reset: None,
        }
    }

    #[test]
    fn polling_stretches_as_either_rate_window_runs_low() {
        assert_eq!(budget_factor(&budget(240, 4800)), 1.0);
        assert_eq!(budget_factor(&budget(100, 4800)), 2.0);
        assert_eq!(budget_factor(&budget(50, 4800)), 4.0);
        assert_eq!(budget_factor(&budget(10, 4800)), 8.0);
        assert_eq!(
            budget_factor(&budget(240, 400)),
            8.0,
            "the hourly window counts too"
        );
    }

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
