//! Initiation: deciding to send, recording the intent, and folding the POST's outcome back into the status.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::util::*;
use super::*;
use crate::controller::conditions::{reasons, set_phase};
use crate::controller::request::action_request;
use crate::crd::{ActionType, DropletActionStatus, PendingInitiation, Phase};
use crate::digitalocean::{Action, Applied, DoError, Droplet, ErrorKind, PostError};

/// Nothing sent yet: wait behind another DropletAction on the droplet, wait out a backoff, or initiate.
pub(crate) fn on_new(input: &Input, mut st: DropletActionStatus, token: Token) -> Next {
    let spec = input.spec;
    let now = input.now;
    if let Gate::Blocked { by, droplet, why } = &input.gate {
        // (ordering.rs, isolation) A blocker that cannot start is named with its reason, as a Warning.
        let msg = match why {
            None => format!("waiting for DropletAction {by} to finish on droplet {droplet}"),
            Some(why) => format!("Blocked by {by}: {why}"),
        };
        let first = input.status.reason.as_deref() != Some(reasons::WAITING_FOR_DROPLET)
            || (why.is_some() && input.status.message.as_deref() != Some(msg.as_str()));
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
            Some(cap_to_deadline(input, input.config.recheck)),
            if first {
                note(why.is_some(), reasons::WAITING_FOR_DROPLET, msg)
            } else {
                None
            },
        );
    }
    if let Some(due) = st.retry.as_ref().map(|r| ts(&r.next_attempt_time))
        && now < due
    {
        let wait = dur_since(due, now).max(Duration::from_millis(50));
        return update(st, Some(cap_to_deadline(input, wait)), None);
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
    let droplets = droplets_of(spec, &st);
    initiation(st, input, spec.type_, 1, target, droplets, token, None)
}

/// The next step of an initiation: the request, and the status recording its intent. `replaces`: the
/// uncertain intent this one re-sends (its watermark is kept).
#[allow(clippy::too_many_arguments)]
pub(crate) fn initiation(
    mut st: DropletActionStatus,
    input: &Input,
    type_: ActionType,
    attempt: i32,
    target: InitTarget,
    droplets: Vec<i64>,
    token: Token,
    replaces: Option<&PendingInitiation>,
) -> Next {
    let request = match action_request(input.spec, type_) {
        Ok(r) => r,
        Err(msg) => return finish(st, input, Phase::Failed, reasons::REJECTED, msg),
    };
    st.pending_initiation = Some(Box::new(PendingInitiation {
        attempt,
        type_: type_.as_str().to_string(),
        requested_at: Time(input.now),
        sent: false,
        droplet_ids: droplets,
        watermark: replaces.and_then(|p| p.watermark),
        send_ended_at: None,
        uncertain: false,
        resend: replaces.is_some(),
    }));
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
        request,
        token,
        resend: replaces.is_some(),
    })
}

/// Folds the droplets found for a tag into the status: none is a final answer (Failed, NoDropletsWithTag).
pub fn after_resolve_tag(
    input: &Input,
    tag: &str,
    st: DropletActionStatus,
    droplets: Result<Vec<Droplet>, DoError>,
) -> Update {
    match droplets {
        Ok(d) if d.is_empty() => finished(
            st,
            input,
            Phase::Failed,
            reasons::NO_DROPLETS,
            reasons::NO_DROPLETS,
            format!("no droplet has the tag {tag:?}; nothing to do"),
        ),
        Ok(d) => {
            let mut st = st;
            let mut ids: Vec<i64> = d.iter().map(|d| d.id).collect();
            ids.sort_unstable();
            st.droplet_ids = ids;
            Update {
                status: st,
                requeue: Some(Duration::ZERO),
                note: None,
            }
        }
        Err(e) => after_track_error(input, &st, &e),
    }
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
            let first_poll = input.polling.interval_at(
                init.type_,
                Duration::ZERO,
                input.config.poll_scale,
                input.budget_factor,
                input.now,
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
                p.send_ended_at = Some(Time(now));
            }
            st.last_error = Some(Box::new(last_error(&error, now)));
            let msg = format!(
                "{}; the request may have reached DigitalOcean, so the controller looks for the action it may have started and does not send it again",
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
            let wait = crate::controller::policy::ADOPT_FIRST_LOOK
                .mul_f64(input.config.poll_scale.max(0.05));
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
            let busy = error.kind() == ErrorKind::DropletBusy;
            let intent = st.pending_initiation.take();
            st.last_error = Some(Box::new(last_error(&error, now)));
            // A re-send of an uncertain intent refused because the droplet is busy: the earlier request may be
            // what keeps it busy. Look for it again instead of sending once more.
            if busy && let Some(mut p) = intent.clone().filter(|p| p.resend) {
                p.sent = true;
                p.send_ended_at = Some(Time(now));
                let msg = format!(
                    "{} after a request whose outcome is unknown: looking for the action that request may have started",
                    describe_error(&error)
                );
                st.pending_initiation = Some(p);
                let phase = st.phase.unwrap_or_default();
                set_phase(
                    &mut st,
                    phase,
                    reasons::ADOPTING,
                    msg.clone(),
                    input.generation,
                    now,
                );
                return Update {
                    status: st,
                    requeue: Some(input.config.adopt_poll),
                    note: note(true, reasons::ADOPTING, msg),
                };
            }
            // The shutdown's power_off fallback refused because the droplet is already off: the goal is reached.
            if init.type_ == ActionType::PowerOff
                && input.spec.type_ == ActionType::Shutdown
                && error
                    .message()
                    .to_ascii_lowercase()
                    .contains("already powered off")
            {
                let droplet = intent
                    .as_ref()
                    .and_then(|p| p.droplet_ids.first().copied())
                    .unwrap_or(droplet_hint);
                for rec in st.actions.iter_mut().filter(|r| {
                    r.droplet_id == droplet
                        && r.attempt == init.attempt
                        && r.type_ == ActionType::Shutdown.as_str()
                }) {
                    rec.droplet_status = Some("off".into());
                }
                st.retry = None;
                return Update {
                    status: st,
                    requeue: Some(Duration::ZERO),
                    note: None,
                };
            }
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
