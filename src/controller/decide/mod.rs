//! The reconciler's decisions, as pure functions of (resource, observed DigitalOcean state, clock).
//!
//! [`decide`] looks at a DropletAction's spec and status (plus what the caller knows about its token, the
//! droplet queue and the rate budget) and returns the one next step: write a status, delete the resource, resolve
//! a tag, initiate an action, adopt an action whose initiation outcome is unknown, or poll actions in flight.
//! The `after_*` functions fold the result of that step's IO back into a new status. Nothing here performs IO or
//! reads the clock, so every transition is unit-tested without servers.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::conditions::{reasons, set_phase};
use super::policy::poll_interval;
use crate::crd::{
    ActionRecord, ActionType, DropletActionSpec, DropletActionStatus, PendingInitiation, Phase,
};

mod adopt;
mod initiate;
mod state;
mod track;
mod util;

pub use crate::controller::policy::DecideConfig;
pub use adopt::{AdoptOutcome, adoption_candidates, after_adopt};
pub use initiate::after_post;
use initiate::initiation;
pub use state::action_summary;
use state::{DropletState, droplet_state};
pub use track::{after_track, after_track_error};
use util::*;
pub use util::{droplets_of, finished, last_error, status_str};

/// Whether a usable DigitalOcean token is available for this resource.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenState {
    /// The token could be read.
    Available,
    /// It could not; the text says which Secret/key is missing (never the token).
    Missing(String),
}

/// Whether this resource may start an action on its droplets now.
#[derive(Clone, Debug, PartialEq)]
pub enum Gate {
    /// No other DropletAction holds or precedes it on its droplets.
    Free,
    /// Another DropletAction (namespace/name) runs or is queued first on droplet `droplet`.
    Blocked { by: String, droplet: i64 },
}

/// Everything [`decide`] looks at.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub spec: &'a DropletActionSpec,
    pub status: &'a DropletActionStatus,
    pub generation: i64,
    pub now: Timestamp,
    pub token: TokenState,
    pub gate: Gate,
    /// >= 1.0: how much to stretch polling because the rate budget runs low.
    pub budget_factor: f64,
    /// Actions were already polled in this reconcile: do not poll again, schedule the next poll.
    pub tracked: bool,
    pub config: &'a DecideConfig,
}

/// An event to publish with the step.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub text: String,
}

/// A status to write (when it differs from the stored one) and when to look again.
#[derive(Clone, Debug)]
pub struct Update {
    pub status: DropletActionStatus,
    /// None: only a change of the resource wakes it up.
    pub requeue: Option<Duration>,
    pub note: Option<Note>,
}

/// What to initiate.
#[derive(Clone, Debug, PartialEq)]
pub enum InitTarget {
    /// `POST /v2/droplets/{id}/actions`.
    Droplet(i64),
    /// `POST /v2/droplets/actions?tag_name=`.
    Tag(String),
}

/// An initiation: first write `intent_status` (which records the intent) with a resourceVersion precondition,
/// then send the request.
#[derive(Clone, Debug)]
pub struct Initiation {
    pub intent_status: DropletActionStatus,
    pub type_: ActionType,
    pub attempt: i32,
    pub target: InitTarget,
}

/// Look for the DigitalOcean action(s) a recorded intent may have started.
#[derive(Clone, Debug)]
pub struct Adoption {
    pub intent: PendingInitiation,
}

/// Poll actions in flight and resolve snapshot images.
#[derive(Clone, Debug, PartialEq)]
pub struct Tracking {
    /// (droplet, action) pairs still in progress.
    pub in_progress: Vec<(i64, i64)>,
    /// Completed snapshot actions whose image ID is unknown: (droplet, action, started_at).
    pub snapshots: Vec<(i64, i64, Option<Timestamp>)>,
    /// Completed shutdowns whose droplet must be checked for being off: (droplet, action).
    pub power_checks: Vec<(i64, i64)>,
    /// Oldest cached observation that is still acceptable.
    pub max_age: Duration,
}

/// The next step.
#[derive(Clone, Debug)]
pub enum Next {
    Update(Update),
    Delete,
    /// Resolve the droplets of a tag; `status` is the status to extend with them.
    ResolveTag {
        tag: String,
        status: DropletActionStatus,
    },
    Initiate(Initiation),
    Adopt(Adoption),
    Track(Tracking),
}

/// Decides the next step for a DropletAction.
pub fn decide(input: &Input) -> Next {
    let spec = input.spec;
    let now = input.now;

    // Finished: only the TTL is left to honour.
    if let Some(phase) = input.status.phase
        && phase.is_terminal()
    {
        let st = input.status.clone();
        return match (spec.ttl_seconds_after_finished, &st.completion_time) {
            (Some(ttl), Some(done)) => {
                let due = plus(ts(done), Duration::from_secs(ttl.max(0) as u64));
                if now >= due {
                    Next::Delete
                } else {
                    update(st, Some(dur_since(due, now)), None)
                }
            }
            _ => update(st, None, None),
        };
    }

    let mut st = base_status(input);
    let started = st.start_time.as_ref().map(ts).unwrap_or(now);

    if let Some(deadline) = spec.deadline_seconds {
        let due = plus(started, Duration::from_secs(deadline.max(0) as u64));
        if now >= due {
            let running: Vec<String> = st
                .actions
                .iter()
                .filter(|a| a.status != "completed" && a.status != "errored")
                .map(|a| a.id.to_string())
                .collect();
            let tail = if running.is_empty() {
                String::new()
            } else {
                format!(
                    "; DigitalOcean cannot cancel actions, so action(s) {} may still complete on DigitalOcean",
                    running.join(", ")
                )
            };
            return finish(
                st,
                input,
                Phase::Failed,
                reasons::DEADLINE_EXCEEDED,
                format!("deadline of {deadline}s exceeded{tail}"),
            );
        }
    }
    let deadline_in = spec
        .deadline_seconds
        .map(|d| dur_since(plus(started, Duration::from_secs(d.max(0) as u64)), now));
    let cap = |d: Duration| -> Duration {
        match deadline_in {
            Some(left) => d.min(left.max(Duration::from_millis(50))),
            None => d,
        }
    };

    let nothing_sent = st.actions.is_empty() && st.pending_initiation.is_none();
    if nothing_sent
        && let Some(not_after) = &spec.not_after
        && now > ts(not_after)
    {
        return finish(
            st,
            input,
            Phase::Expired,
            reasons::NOT_AFTER_PASSED,
            format!(
                "notAfter {} passed before the action was initiated; nothing was sent to DigitalOcean",
                not_after.0
            ),
        );
    }

    if let TokenState::Missing(why) = &input.token {
        let phase = st.phase.unwrap_or_default();
        set_phase(
            &mut st,
            phase,
            reasons::TOKEN_NOT_FOUND,
            why.clone(),
            input.generation,
            now,
        );
        let first = input.status.reason.as_deref() != Some(reasons::TOKEN_NOT_FOUND);
        return update(
            st,
            Some(cap(input.config.recheck)),
            if first {
                note(true, reasons::TOKEN_NOT_FOUND, why.clone())
            } else {
                None
            },
        );
    }

    if let Some(intent) = &st.pending_initiation {
        return Next::Adopt(Adoption {
            intent: intent.clone(),
        });
    }

    // Tag: find the droplets first so the per-droplet queue can see them.
    if let Some(tag) = &spec.tag_name
        && st.droplet_ids.is_empty()
        && st.actions.is_empty()
    {
        return Next::ResolveTag {
            tag: tag.clone(),
            status: st,
        };
    }

    let retry_due = st.retry.as_ref().map(|r| ts(&r.next_attempt_time));
    let may_initiate = retry_due.is_none_or(|due| now >= due);

    let droplets = droplets_of(spec, &st);
    let mut states: BTreeMap<i64, DropletState> = BTreeMap::new();
    for d in &droplets {
        let recs: Vec<&ActionRecord> = st.actions.iter().filter(|a| a.droplet_id == *d).collect();
        states.insert(*d, droplet_state(spec, &recs, now));
    }

    // First initiation.
    if st.actions.is_empty() {
        if let Gate::Blocked { by, droplet } = &input.gate {
            let msg = format!("waiting for DropletAction {by} to finish on droplet {droplet}");
            let first = input.status.reason.as_deref() != Some(reasons::WAITING_FOR_DROPLET);
            set_phase(
                &mut st,
                Phase::Pending,
                reasons::WAITING_FOR_DROPLET,
                msg.clone(),
                input.generation,
                now,
            );
            return update(
                st,
                Some(cap(input.config.recheck)),
                if first {
                    note(false, reasons::WAITING_FOR_DROPLET, msg)
                } else {
                    None
                },
            );
        }
        if !may_initiate {
            let due = retry_due.unwrap_or(now);
            return update(
                st,
                Some(cap(dur_since(due, now).max(Duration::from_millis(50)))),
                None,
            );
        }
        let target = match (&spec.droplet_id, &spec.tag_name) {
            (Some(id), _) => InitTarget::Droplet(*id),
            (None, Some(tag)) => InitTarget::Tag(tag.clone()),
            (None, None) => {
                return finish(
                    st,
                    input,
                    Phase::Failed,
                    reasons::REJECTED,
                    "spec names no target".into(),
                );
            }
        };
        return initiation(st, input, spec.type_, 1, target, droplets.clone());
    }

    // Later steps, per droplet.
    let backoff_limit = spec.backoff_limit.unwrap_or(0).max(0);
    let mut in_progress: Vec<(i64, i64)> = Vec::new();
    let mut snapshots = Vec::new();
    let mut power_checks = Vec::new();
    let mut failed: Vec<(i64, i32)> = Vec::new();
    let mut want: Option<(ActionType, i32, i64)> = None;
    let mut waiting_retry = false;
    for (d, state) in &states {
        match state {
            DropletState::Done | DropletState::NotStarted => {}
            DropletState::InProgress(ids) => in_progress.extend(ids.iter().map(|id| (*d, *id))),
            DropletState::NeedSnapshotId(id, started) => snapshots.push((*d, *id, *started)),
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

    if let Some((type_, attempt, droplet)) = want {
        return initiation(
            st,
            input,
            type_,
            attempt,
            InitTarget::Droplet(droplet),
            vec![droplet],
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
        let interval = poll_interval(
            spec.type_,
            dur_since(now, oldest),
            input.config.poll_scale,
            input.budget_factor,
        );
        return Next::Track(Tracking {
            in_progress,
            snapshots,
            power_checks,
            max_age: interval.mul_f64(0.9),
        });
    }

    if observing || waiting_retry {
        let oldest = st
            .actions
            .iter()
            .filter_map(|a| a.started_at.as_ref().map(ts))
            .min()
            .unwrap_or(now);
        let mut next = poll_interval(
            spec.type_,
            dur_since(now, oldest),
            input.config.poll_scale,
            input.budget_factor,
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
        st.action_summary = action_summary(spec, &st);
        return update(st, Some(cap(next)), None);
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

#[cfg(test)]
mod tests;
