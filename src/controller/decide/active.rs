//! Actions are recorded: track them, retry errored ones, fall back to power_off, or finish.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::initiate::initiation;
use super::state::{DropletState, droplet_state};
use super::util::*;
use super::*;
use crate::controller::conditions::{reasons, set_phase};
use crate::crd::{ActionRecord, ActionType, DropletActionStatus, Phase};

/// The step for a resource with recorded actions, from the state of each droplet's latest attempt.
pub(crate) fn on_active(input: &Input, mut st: DropletActionStatus, token: Token) -> Next {
    let spec = input.spec;
    let now = input.now;
    let cap = |d: Duration| cap_to_deadline(input, d);
    let retry_due = st.retry.as_ref().map(|r| ts(&r.next_attempt_time));
    let may_initiate = retry_due.is_none_or(|due| now >= due);
    let droplets = droplets_of(spec, &st);
    let mut states: BTreeMap<i64, DropletState> = BTreeMap::new();
    for d in &droplets {
        let recs: Vec<&ActionRecord> = st.actions.iter().filter(|a| a.droplet_id == *d).collect();
        states.insert(*d, droplet_state(spec, &recs, now));
    }

    // Later steps, per droplet.
    let backoff_limit = spec.backoff_limit.unwrap_or(0).max(0);
    let mut in_progress: Vec<(i64, i64)> = Vec::new();
    let mut snapshots = Vec::new();
    let mut power_checks = Vec::new();
    let mut failed: Vec<(i64, i32)> = Vec::new();
    let mut want: Option<(ActionType, i32, i64)> = None;
    let mut waiting_retry = false;
    let mut unknown: Vec<(i64, String)> = Vec::new();
    let mut unknown_expired: Vec<(i64, String)> = Vec::new();
    let mut images_missing: Vec<i64> = Vec::new();
    for (d, state) in &states {
        match state {
            DropletState::Done | DropletState::NotStarted => {}
            DropletState::InProgress(ids) => in_progress.extend(ids.iter().map(|id| (*d, *id))),
            DropletState::Unknown {
                id,
                status,
                started,
            } => {
                let since = started.unwrap_or(now);
                if now >= plus(since, input.config.unknown_status_limit) {
                    unknown_expired.push((*id, status.clone()));
                } else {
                    unknown.push((*id, status.clone()));
                    in_progress.push((*d, *id));
                }
            }
            DropletState::NeedSnapshotId(id, started, completed) => {
                let since = completed.or(*started).unwrap_or(now);
                if now >= plus(since, input.config.snapshot_search_limit) {
                    images_missing.push(*id);
                } else {
                    snapshots.push((*d, *id, *started));
                }
            }
            DropletState::CheckPower(id) => power_checks.push((*d, *id)),
            DropletState::NeedFallback {
                attempt,
                in_progress: ids,
            } => {
                in_progress.extend(ids.iter().map(|id| (*d, *id)));
                if may_initiate {
                    want.get_or_insert((ActionType::PowerOff, *attempt, *d));
                } else {
                    waiting_retry = true;
                }
            }
            DropletState::Errored { attempt } => {
                if *attempt <= backoff_limit {
                    let expired = spec.not_after.as_ref().is_some_and(|na| now > ts(na));
                    if expired {
                        failed.push((*d, *attempt));
                    } else if may_initiate {
                        want.get_or_insert((spec.type_, attempt + 1, *d));
                    } else {
                        waiting_retry = true;
                    }
                } else {
                    failed.push((*d, *attempt));
                }
            }
        }
    }

    if !unknown_expired.is_empty() {
        let list: Vec<String> = unknown_expired
            .iter()
            .map(|(id, s)| format!("{id} ({s:?})"))
            .collect();
        let msg = format!(
            "DigitalOcean reported status(es) the controller does not know for action(s) {} for {}s; it cannot tell whether they finished. Check with `doctl compute action get <id>`",
            list.join(", "),
            input.config.unknown_status_limit.as_secs()
        );
        return finish(
            st,
            input,
            Phase::Failed,
            reasons::UNKNOWN_ACTION_STATUS,
            msg,
        );
    }

    if let Some((type_, attempt, droplet)) = want {
        return initiation(
            st,
            input,
            type_,
            attempt,
            InitTarget::Droplet(droplet),
            vec![droplet],
            token,
            None,
        );
    }

    let observing = !in_progress.is_empty() || !snapshots.is_empty() || !power_checks.is_empty();
    // After a failed call, wait out the backoff in status: our own status write wakes this resource at once,
    // and polling again right away would turn a rate limit or an outage into a busy loop.
    if observing && !input.tracked && !may_initiate {
        let due = retry_due.unwrap_or(now);
        return update(
            st,
            Some(cap(dur_since(due, now).max(Duration::from_millis(50)))),
            None,
        );
    }
    if observing && !input.tracked {
        let oldest = st
            .actions
            .iter()
            .filter(|a| in_progress.iter().any(|(_, id)| *id == a.id))
            .filter_map(|a| a.started_at.as_ref().map(ts))
            .min()
            .unwrap_or(now);
        if snapshots.is_empty()
            && power_checks.is_empty()
            && let Some(wait) = not_yet_due(input, oldest)
        {
            return update(st, Some(cap(wait)), None);
        }
        let interval = input.polling.interval_at(
            spec.type_,
            dur_since(now, oldest),
            input.config.poll_scale,
            input.budget_factor,
            input.now,
        );
        return Next::Track(Tracking {
            in_progress,
            snapshots,
            power_checks,
            max_age: crate::controller::polling::max_age(interval, input.config.poll_scale),
            token,
        });
    }

    if observing || waiting_retry {
        let oldest = st
            .actions
            .iter()
            .filter_map(|a| a.started_at.as_ref().map(ts))
            .min()
            .unwrap_or(now);
        let mut next = input.polling.interval_at(
            spec.type_,
            dur_since(now, oldest),
            input.config.poll_scale,
            input.budget_factor,
            input.now,
        );
        if let Some(due) = retry_due.filter(|_| waiting_retry) {
            next = next.min(dur_since(due, now).max(Duration::from_millis(50)));
        }
        // Keep the Pending/DropletBusy message while a fallback waits for the droplet; otherwise Running.
        if !waiting_retry || st.phase != Some(Phase::Pending) {
            let msg = if power_checks.is_empty() {
                running_message(&st, &in_progress, &snapshots)
            } else {
                let ids: Vec<String> = power_checks.iter().map(|(d, _)| d.to_string()).collect();
                format!(
                    "shutdown completed; waiting for droplet(s) {} to power off",
                    ids.join(", ")
                )
            };
            let reason = if states
                .values()
                .any(|s| matches!(s, DropletState::NeedFallback { .. }))
            {
                reasons::POWER_OFF_FALLBACK
            } else {
                reasons::RUNNING
            };
            set_phase(&mut st, Phase::Running, reason, msg, input.generation, now);
        }
        let mut event = None;
        if !unknown.is_empty() {
            let list: Vec<String> = unknown
                .iter()
                .map(|(id, s)| format!("{id} ({s:?})"))
                .collect();
            let msg = format!(
                "DigitalOcean reports a status the controller does not know for action(s) {}; it keeps polling and does not take it as finished (fails after {}s)",
                list.join(", "),
                input.config.unknown_status_limit.as_secs()
            );
            if input.status.reason.as_deref() != Some(reasons::UNKNOWN_ACTION_STATUS) {
                event = note(true, reasons::UNKNOWN_ACTION_STATUS, msg.clone());
            }
            set_phase(
                &mut st,
                Phase::Running,
                reasons::UNKNOWN_ACTION_STATUS,
                msg,
                input.generation,
                now,
            );
        }
        st.action_summary = action_summary(spec, &st);
        return update(st, Some(cap(next)), event);
    }

    if !failed.is_empty() {
        let list: Vec<String> = failed.iter().map(|(d, _)| d.to_string()).collect();
        let attempts = failed.iter().map(|(_, a)| *a).max().unwrap_or(1);
        let msg = format!(
            "DigitalOcean reported the {} action errored on droplet(s) {} (attempt {attempts} of {})",
            spec.type_,
            list.join(", "),
            backoff_limit + 1
        );
        return finish(st, input, Phase::Failed, reasons::ACTION_ERRORED, msg);
    }

    let ids: Vec<String> = st.actions.iter().map(|a| a.id.to_string()).collect();
    let msg = if droplets.len() == 1 {
        format!(
            "{} completed (DigitalOcean action {})",
            spec.type_,
            ids.last().cloned().unwrap_or_default()
        )
    } else {
        format!("{} completed on {} droplets", spec.type_, droplets.len())
    };
    if !images_missing.is_empty() {
        let msg = format!(
            "{msg}, but the image of snapshot action(s) {} did not appear in the droplet's snapshots within {}s; find it with `doctl compute snapshot list --resource droplet`",
            join_ids(&images_missing),
            input.config.snapshot_search_limit.as_secs()
        );
        let mut u = finished(
            st,
            input,
            Phase::Succeeded,
            reasons::SUCCEEDED,
            reasons::SNAPSHOT_IMAGE_NOT_FOUND,
            msg.clone(),
        );
        u.note = note(true, reasons::SNAPSHOT_IMAGE_NOT_FOUND, msg);
        return Next::Update(u);
    }
    finish(st, input, Phase::Succeeded, reasons::SUCCEEDED, msg)
}

fn running_message(
    st: &DropletActionStatus,
    in_progress: &[(i64, i64)],
    snapshots: &[(i64, i64, Option<Timestamp>)],
) -> String {
    if !in_progress.is_empty() {
        let ids: Vec<String> = in_progress.iter().map(|(_, id)| id.to_string()).collect();
        format!("DigitalOcean action(s) {} in progress", ids.join(", "))
    } else if !snapshots.is_empty() {
        "snapshot completed; looking up the new image ID".to_string()
    } else {
        st.message.clone().unwrap_or_default()
    }
}

/// A wake-up (a requeue timer, a watch event) before the next poll is due: how long until it is. The poll is
/// due one interval after the tracker's last observation of the actions (`input.last_observed`), the interval
/// taken from the policy and rate budget as they are *now*: a resource that scheduled its poll while the
/// budget was idle, before a burst of initiations used it up, waits for the stretched schedule instead of
/// polling on the old one (`bench concurrent_200`: 200 POSTs in under a second, then one list for all).
/// None: poll now (due, or the observation time is unknown).
fn not_yet_due(input: &Input, oldest_start: Timestamp) -> Option<Duration> {
    let observed = input.last_observed?;
    let interval = input.polling.interval_at(
        input.spec.type_,
        dur_since(observed, oldest_start),
        input.config.poll_scale,
        input.budget_factor,
        observed,
    );
    let wait = dur_since(plus(observed, interval), input.now);
    // Within a grid step of being due is due: the schedule computed right after the observation may land on
    // the next grid point of a recomputation a few milliseconds off.
    let slack = crate::controller::polling::due_slack(input.config.poll_scale);
    (wait > slack).then_some(wait)
}
