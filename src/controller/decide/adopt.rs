//! Adoption: finding the action an intent whose outcome is unknown may have started.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::util::*;
use super::*;
use crate::controller::conditions::{reasons, set_phase};
use crate::crd::{DropletActionStatus, PendingInitiation, Phase};
use crate::digitalocean::Action;

/// The annotation asking to send an uncertain initiation again (value `"true"`).
pub const RESEND_ANNOTATION: &str = "droplet-operator.dev/resend";
/// The annotation naming the DigitalOcean action an uncertain initiation started (value: the action ID).
pub const ADOPT_ANNOTATION: &str = "droplet-operator.dev/adopt-action-id";

/// What the resource's annotations ask for an uncertain initiation.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Resolution {
    /// Nothing: stay uncertain.
    #[default]
    None,
    /// `droplet-operator.dev/resend: "true"`: send the request again.
    Resend,
    /// `droplet-operator.dev/adopt-action-id: "<id>"`: the request started this action.
    Adopt(i64),
    /// An annotation with a value we cannot use; the text says which and why.
    Invalid(String),
}

impl Resolution {
    /// Reads the two annotations (adopt wins over resend: it is the more specific answer).
    pub fn from_annotations(
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Resolution {
        if let Some(v) = annotations.get(ADOPT_ANNOTATION) {
            return match v.trim().parse::<i64>() {
                Ok(id) if id > 0 => Resolution::Adopt(id),
                _ => Resolution::Invalid(format!(
                    "annotation {ADOPT_ANNOTATION} must be a DigitalOcean action ID (a positive integer), not {v:?}"
                )),
            };
        }
        match annotations.get(RESEND_ANNOTATION).map(|v| v.trim()) {
            Some("true") => Resolution::Resend,
            Some(v) => Resolution::Invalid(format!(
                "annotation {RESEND_ANNOTATION} must be \"true\" to send the request again, not {v:?}"
            )),
            None => Resolution::None,
        }
    }

    /// The annotation this resolution came from (to remove once acted on).
    pub fn annotation(&self) -> Option<&'static str> {
        match self {
            Resolution::Resend => Some(RESEND_ANNOTATION),
            Resolution::Adopt(_) => Some(ADOPT_ANNOTATION),
            _ => None,
        }
    }
}

/// The end of the window in which an action started by `intent` may still appear: [`DecideConfig::adopt_window`]
/// after the send attempt ended. When no end was recorded (the process died during the send), the request may
/// have been in flight until the request timeout after the intent.
pub fn window_end(intent: &PendingInitiation, config: &DecideConfig) -> Timestamp {
    let ended = match &intent.send_ended_at {
        Some(t) => t.0,
        None => plus(intent.requested_at.0, config.request_timeout),
    };
    plus(ended, config.adopt_window)
}

/// Actions that may have been started by a recorded intent: the intent's type, on one of its droplets, not
/// claimed by any DropletAction, and newer than the intent's watermark (DigitalOcean action IDs only grow, so
/// an action our request started has a higher ID than every action listed before it was sent). All of them,
/// by ID: [`after_adopt`] adopts only when exactly one per droplet is left at the end of the window. Intents
/// recorded before watermarks existed match by `started_at` instead.
pub fn adoption_candidates<'a>(
    intent: &PendingInitiation,
    listed: &'a [Action],
    claimed: &BTreeSet<i64>,
    skew: Duration,
) -> Vec<&'a Action> {
    let since = minus(intent.requested_at.0, skew);
    let mut found: BTreeMap<i64, &Action> = BTreeMap::new();
    for a in listed {
        let droplet = a.resource_id.unwrap_or(0);
        let new_enough = match intent.watermark {
            Some(w) => a.id > w,
            None => a.started_at.is_some_and(|t| t >= since),
        };
        if a.type_ == intent.type_
            && !claimed.contains(&a.id)
            && new_enough
            && (intent.droplet_ids.is_empty() || intent.droplet_ids.contains(&droplet))
        {
            found.insert(a.id, a);
        }
    }
    found.into_values().collect()
}

/// What an adoption lookup concluded.
#[derive(Clone, Debug)]
pub enum AdoptOutcome {
    /// Matching actions were found and recorded: track them (nothing is sent again).
    Adopted(Update),
    /// Nothing matched yet, but the action may still appear: look again later.
    Wait(Update),
    /// The window passed without a match. The controller does not guess: it stops (InitiationUncertain) until
    /// an annotation says what happened.
    Uncertain(Update),
}

fn uncertain_message(intent: &PendingInitiation, config: &DecideConfig) -> String {
    let droplets = join_ids(&intent.droplet_ids);
    let watermark = intent
        .watermark
        .map(|w| format!(" newer than action {w}"))
        .unwrap_or_default();
    format!(
        "the outcome of the {type_} request (attempt {attempt}) to droplet(s) {droplets} is unknown: no unclaimed {type_} action{watermark} appeared within {window}s after the request, so it probably did not start, but DigitalOcean may still apply it. The controller will not send it again on its own. Check with `doctl compute droplet-action list <droplet>`, then annotate this resource with {ADOPT_ANNOTATION}=<action id> if the action exists, or {RESEND_ANNOTATION}=true to send the request again",
        type_ = intent.type_,
        attempt = intent.attempt,
        window = config.adopt_window.as_secs(),
    )
}

/// Folds the result of an adoption lookup into the status.
pub fn after_adopt(input: &Input, intent: &PendingInitiation, found: &[&Action]) -> AdoptOutcome {
    let now = input.now;
    let mut st = input.status.clone();
    let end = window_end(intent, input.config);
    let window_over = now >= end;
    if found.is_empty() {
        let phase = st.phase.unwrap_or_default();
        if window_over {
            let msg = uncertain_message(intent, input.config);
            if let Some(p) = st.pending_initiation.as_mut() {
                p.uncertain = true;
            }
            set_phase(
                &mut st,
                phase,
                reasons::INITIATION_UNCERTAIN,
                msg.clone(),
                input.generation,
                now,
            );
            let requeue = input
                .spec
                .deadline_seconds
                .map(|_| cap_to_deadline(input, Duration::MAX));
            return AdoptOutcome::Uncertain(Update {
                status: st,
                requeue,
                note: note(true, reasons::INITIATION_UNCERTAIN, msg),
            });
        }
        let msg = "the outcome of the last request to DigitalOcean is unknown; looking for the action it may have started (it is never sent twice)".to_string();
        set_phase(
            &mut st,
            phase,
            reasons::ADOPTING,
            msg,
            input.generation,
            now,
        );
        let poll = input
            .config
            .adopt_poll
            .min(dur_since(end, now).max(Duration::from_millis(50)));
        return AdoptOutcome::Wait(Update {
            status: st,
            requeue: Some(cap_to_deadline(input, poll)),
            note: None,
        });
    }
    // Every action the request may have started shows within the window; another client's action of the same
    // type may show too. Adopt only an unambiguous match, once the window is over (or when the user named it).
    let mut per_droplet: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for a in found {
        per_droplet
            .entry(a.resource_id.unwrap_or(0))
            .or_default()
            .push(a.id);
    }
    if !window_over {
        let msg = format!(
            "the outcome of the last request to DigitalOcean is unknown; found unclaimed {} action(s) {}, looking until the window ends that no other could be the one it started",
            intent.type_,
            found
                .iter()
                .map(|a| a.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let phase = st.phase.unwrap_or_default();
        set_phase(
            &mut st,
            phase,
            reasons::ADOPTING,
            msg,
            input.generation,
            now,
        );
        let poll = input
            .config
            .adopt_poll
            .min(dur_since(end, now).max(Duration::from_millis(50)));
        return AdoptOutcome::Wait(Update {
            status: st,
            requeue: Some(cap_to_deadline(input, poll)),
            note: None,
        });
    }
    if let Some((droplet, ids)) = per_droplet.iter().find(|(_, ids)| ids.len() > 1) {
        let msg = format!(
            "several unclaimed {} actions appeared on droplet {droplet} after the request whose outcome is unknown ({}): another client runs the same action there, and the controller cannot tell which, if any, this request started; {}",
            intent.type_,
            join_ids(ids),
            uncertain_message(intent, input.config)
        );
        if let Some(p) = st.pending_initiation.as_mut() {
            p.uncertain = true;
        }
        let phase = st.phase.unwrap_or_default();
        set_phase(
            &mut st,
            phase,
            reasons::INITIATION_UNCERTAIN,
            msg.clone(),
            input.generation,
            now,
        );
        return AdoptOutcome::Uncertain(Update {
            status: st,
            requeue: input
                .spec
                .deadline_seconds
                .map(|_| cap_to_deadline(input, Duration::MAX)),
            note: note(true, reasons::INITIATION_UNCERTAIN, msg),
        });
    }
    adopted(input, st, intent, found)
}

/// Records the adopted actions (nothing is sent again).
fn adopted(
    input: &Input,
    mut st: DropletActionStatus,
    intent: &PendingInitiation,
    found: &[&Action],
) -> AdoptOutcome {
    let now = input.now;
    let window_over = now >= window_end(intent, input.config);
    let fallback_droplet = intent.droplet_ids.first().copied().unwrap_or(0);
    for a in found {
        st.actions
            .push(record(a, intent.attempt, &intent.type_, fallback_droplet));
    }
    let found_droplets: BTreeSet<i64> = found.iter().filter_map(|a| a.resource_id).collect();
    let remaining: Vec<i64> = intent
        .droplet_ids
        .iter()
        .copied()
        .filter(|d| !found_droplets.contains(d))
        .collect();
    // Droplets of a by-tag request not seen yet keep their intent until the window is over.
    st.pending_initiation =
        if !remaining.is_empty() && !window_over && found_droplets.len() < intent.droplet_ids.len()
        {
            Some(Box::new(PendingInitiation {
                droplet_ids: remaining,
                ..intent.clone()
            }))
        } else {
            None
        };
    st.attempts = Some(st.attempts.unwrap_or(0).max(intent.attempt));
    st.retry = None;
    if input.spec.tag_name.is_some()
        && intent.attempt == 1
        && intent.type_ == input.spec.type_.as_str()
    {
        let mut ids: Vec<i64> = st.actions.iter().map(|a| a.droplet_id).collect();
        ids.sort_unstable();
        ids.dedup();
        st.droplet_ids = ids;
    }
    let ids: Vec<String> = found.iter().map(|a| a.id.to_string()).collect();
    let msg = format!("DigitalOcean action(s) {} in progress", ids.join(", "));
    set_phase(
        &mut st,
        Phase::Running,
        reasons::RUNNING,
        msg,
        input.generation,
        now,
    );
    st.action_summary = action_summary(input.spec, &st);
    let text = format!(
        "adopted DigitalOcean action(s) {} started by an earlier request whose response was lost; not sending it again",
        ids.join(", ")
    );
    AdoptOutcome::Adopted(Update {
        status: st,
        requeue: Some(Duration::ZERO),
        note: note(false, "Adopted", text),
    })
}

/// An uncertain intent: act on the annotation that resolves it, or wait for one (until the deadline).
pub(crate) fn on_uncertain(
    input: &Input,
    mut st: DropletActionStatus,
    intent: PendingInitiation,
    token: Token,
) -> Next {
    match &input.resolution {
        Resolution::Resend => {
            let target = match (&input.spec.droplet_id, &input.spec.tag_name) {
                (Some(id), _) => InitTarget::Droplet(*id),
                (None, Some(tag)) if intent.type_ == input.spec.type_.as_str() => {
                    InitTarget::Tag(tag.clone())
                }
                _ => InitTarget::Droplet(intent.droplet_ids.first().copied().unwrap_or(0)),
            };
            let Some(type_) = crate::crd::ActionType::parse(&intent.type_) else {
                return finish(
                    st,
                    input,
                    Phase::Failed,
                    reasons::REJECTED,
                    format!(
                        "the recorded intent names an unknown action type {:?}",
                        intent.type_
                    ),
                );
            };
            super::initiate::initiation(
                st,
                input,
                type_,
                intent.attempt,
                target,
                intent.droplet_ids.clone(),
                token,
                Some(&intent),
            )
        }
        Resolution::Adopt(id) => Next::AdoptGiven(AdoptGiven {
            intent,
            action_id: *id,
            token,
        }),
        Resolution::Invalid(why) => {
            let phase = st.phase.unwrap_or_default();
            let msg = format!("{why}; {}", uncertain_message(&intent, input.config));
            set_phase(
                &mut st,
                phase,
                reasons::INITIATION_UNCERTAIN,
                msg,
                input.generation,
                input.now,
            );
            let first = input.status.message != st.message;
            let requeue = input
                .spec
                .deadline_seconds
                .map(|_| cap_to_deadline(input, Duration::MAX));
            update(
                st,
                requeue,
                if first {
                    note(true, reasons::INITIATION_UNCERTAIN, why.clone())
                } else {
                    None
                },
            )
        }
        Resolution::None => {
            let requeue = input
                .spec
                .deadline_seconds
                .map(|_| cap_to_deadline(input, Duration::MAX));
            update(st, requeue, None)
        }
    }
}

/// Folds the action an adopt annotation named (as DigitalOcean reported it) into the status. It must be on one of
/// the intent's droplets, of the intent's type, and claimed by no other DropletAction.
pub fn after_adopt_given(
    input: &Input,
    intent: &PendingInitiation,
    action_id: i64,
    looked_up: Result<Action, crate::digitalocean::DoError>,
    claimed: &BTreeSet<i64>,
) -> Update {
    let problem = match &looked_up {
        Err(e) => Some(format!(
            "action {action_id} named by {ADOPT_ANNOTATION} could not be read: {}",
            describe_error(e)
        )),
        Ok(a) if a.type_ != intent.type_ => Some(format!(
            "action {action_id} named by {ADOPT_ANNOTATION} is a {} action, not {}",
            a.type_, intent.type_
        )),
        Ok(a)
            if !intent.droplet_ids.is_empty()
                && !a
                    .resource_id
                    .is_some_and(|d| intent.droplet_ids.contains(&d)) =>
        {
            Some(format!(
                "action {action_id} named by {ADOPT_ANNOTATION} runs on droplet {}, not on droplet(s) {}",
                a.resource_id.unwrap_or(0),
                join_ids(&intent.droplet_ids)
            ))
        }
        Ok(_) if claimed.contains(&action_id) => Some(format!(
            "action {action_id} named by {ADOPT_ANNOTATION} already belongs to another DropletAction"
        )),
        Ok(_) => None,
    };
    match (problem, looked_up) {
        (None, Ok(a)) => match adopted(input, input.status.clone(), intent, &[&a]) {
            AdoptOutcome::Adopted(u) | AdoptOutcome::Wait(u) | AdoptOutcome::Uncertain(u) => u,
        },
        (problem, _) => {
            let why = problem.unwrap_or_default();
            let mut st = input.status.clone();
            let phase = st.phase.unwrap_or_default();
            let msg = format!("{why}; {}", uncertain_message(intent, input.config));
            set_phase(
                &mut st,
                phase,
                reasons::INITIATION_UNCERTAIN,
                msg,
                input.generation,
                input.now,
            );
            Update {
                status: st,
                requeue: input
                    .spec
                    .deadline_seconds
                    .map(|_| cap_to_deadline(input, Duration::MAX)),
                note: note(true, reasons::INITIATION_UNCERTAIN, why),
            }
        }
    }
}
