//! Initiation: recording the intent, and folding the POST's outcome back into the status.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::util::*;
use super::*;
use crate::controller::conditions::{reasons, set_phase};
use crate::controller::policy::poll_interval;
use crate::crd::{ActionType, DropletActionStatus, PendingInitiation, Phase};
use crate::digitalocean::{Action, Applied, ErrorKind, PostError};

pub(crate) fn initiation(
    mut st: DropletActionStatus,
    input: &Input,
    type_: ActionType,
    attempt: i32,
    target: InitTarget,
    droplets: Vec<i64>,
) -> Next {
    st.pending_initiation = Some(PendingInitiation {
        attempt,
        type_: type_.as_str().to_string(),
        requested_at: Time(input.now),
        sent: false,
        droplet_ids: droplets,
    });
    let phase = st
        .phase
        .filter(|p| *p == Phase::Running)
        .unwrap_or(Phase::Pending);
    let what = match &target {
        InitTarget::Droplet(d) => format!("droplet {d}"),
        InitTarget::Tag(t) => format!("droplets tagged {t}"),
    };
    set_phase(
        &mut st,
        phase,
        reasons::INITIATING,
        format!("initiating {type_} on {what} (attempt {attempt})"),
        input.generation,
        input.now,
    );
    Next::Initiate(Initiation {
        intent_status: st,
        type_,
        attempt,
        target,
    })
}

/// Folds the outcome of an initiation's POST into the status.
pub fn after_post(
    input: &Input,
    init: &Initiation,
    result: Result<Vec<Action>, PostError>,
) -> Update {
    let now = input.now;
    let mut st = init.intent_status.clone();
    let droplet_hint = match &init.target {
        InitTarget::Droplet(d) => *d,
        InitTarget::Tag(_) => 0,
    };
    match result {
        Ok(actions) if !actions.is_empty() => {
            for a in &actions {
                st.actions
                    .push(record(a, init.attempt, init.type_.as_str(), droplet_hint));
            }
            if input.spec.tag_name.is_some() && init.attempt == 1 && init.type_ == input.spec.type_
            {
                let mut ids: Vec<i64> = st.actions.iter().map(|a| a.droplet_id).collect();
                ids.sort_unstable();
                ids.dedup();
                st.droplet_ids = ids;
            }
            st.pending_initiation = None;
            st.retry = None;
            st.attempts = Some(st.attempts.unwrap_or(0).max(init.attempt));
            let ids: Vec<String> = actions.iter().map(|a| a.id.to_string()).collect();
            let reason = if init.type_ != input.spec.type_ {
                reasons::POWER_OFF_FALLBACK
            } else {
                reasons::RUNNING
            };
            let msg = format!("DigitalOcean action(s) {} in progress", ids.join(", "));
            set_phase(&mut st, Phase::Running, reason, msg, input.generation, now);
            st.action_summary = action_summary(input.spec, &st);
            let what = match &init.target {
                InitTarget::Droplet(d) => format!("droplet {d}"),
                InitTarget::Tag(t) => format!("{} droplets tagged {t}", actions.len()),
            };
            let text = format!(
                "initiated {} on {what}: DigitalOcean action(s) {} (attempt {})",
                init.type_,
                ids.join(", "),
                init.attempt
            );
            let first_poll = poll_interval(
                init.type_,
                Duration::ZERO,
                input.config.poll_scale,
                input.budget_factor,
            );
            let event_reason = if reason == reasons::POWER_OFF_FALLBACK {
                reasons::POWER_OFF_FALLBACK
            } else {
                "Initiated"
            };
            Update {
                status: st,
                requeue: Some(first_poll),
                note: note(false, event_reason, text),
            }
        }
        Ok(_) => {
            // DigitalOcean accepted a by-tag request but no droplet had the tag any more.
            let msg = "DigitalOcean started no action: no droplet has the tag any more".to_string();
            finished(
                st,
                input,
                Phase::Failed,
                reasons::NO_DROPLETS,
                reasons::NO_DROPLETS,
                msg,
            )
        }
        Err(PostError {
            error,
            applied: Applied::Ambiguous,
        }) => {
            if let Some(p) = st.pending_initiation.as_mut() {
                p.sent = true;
            }
            st.last_error = Some(last_error(&error, now));
            let msg = format!(
                "{}; the request may have reached DigitalOcean, so the controller checks whether the action started before sending it again",
                describe_error(&error)
            );
            let phase = st.phase.unwrap_or_default();
            set_phase(
                &mut st,
                phase,
                reasons::ADOPTING,
                msg.clone(),
                input.generation,
                now,
            );
            let wait = Duration::from_secs(2).mul_f64(input.config.poll_scale.max(0.05));
            Update {
                status: st,
                requeue: Some(wait),
                note: note(true, reasons::RETRYING, msg),
            }
        }
        Err(PostError {
            error,
            applied: Applied::NotApplied,
        }) => {
            st.pending_initiation = None;
            st.last_error = Some(last_error(&error, now));
            let busy = error.kind() == ErrorKind::DropletBusy;
            if !busy && !error.is_transient() {
                return failed_by(st, input, &error);
            }
            let cap = if busy {
                input.config.busy_max
            } else {
                input.config.retry_max
            };
            let delay = schedule_retry(&mut st, input, &error, cap);
            let (reason, msg) = if busy {
                let d = match &init.target {
                    InitTarget::Droplet(d) => format!("droplet {d}"),
                    InitTarget::Tag(t) => format!("a droplet tagged {t}"),
                };
                (
                    reasons::DROPLET_BUSY,
                    format!(
                        "{d} is busy with another action on DigitalOcean ({}); retrying in {}s",
                        error.message(),
                        delay.as_secs()
                    ),
                )
            } else {
                (
                    reasons::RETRYING,
                    format!(
                        "{}; retrying in {}s",
                        describe_error(&error),
                        delay.as_secs()
                    ),
                )
            };
            let phase = if st.phase == Some(Phase::Running) {
                Phase::Running
            } else {
                Phase::Pending
            };
            set_phase(&mut st, phase, reason, msg.clone(), input.generation, now);
            Update {
                status: st,
                requeue: Some(delay),
                note: note(!busy, reason, msg),
            }
        }
    }
}
