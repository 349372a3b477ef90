//! The reconciler's decisions, as pure functions of (resource, observed DigitalOcean state, clock).
//!
//! [`decide`] looks at a DropletAction's spec and status (plus what the caller knows about its token, the
//! droplet queue and the rate budget) and returns the one next step: write a status, delete the resource, resolve
//! a tag, initiate an action, adopt an action whose initiation outcome is unknown, or poll actions in flight.
//! The `after_*` functions fold the result of that step's IO back into a new status. Nothing here performs IO or
//! reads the clock, so every transition is unit-tested without servers.

use std::time::Duration;

use jiff::Timestamp;

use super::conditions::{reasons, set_phase};
use crate::crd::{ActionType, DropletActionSpec, DropletActionStatus, PendingInitiation, Phase};
use crate::digitalocean::{ActionRequest, Token};

mod active;
mod adopt;
mod initiate;
mod state;
mod track;
mod util;

pub use crate::controller::policy::DecideConfig;
pub use adopt::{
    ADOPT_ANNOTATION, AdoptOutcome, RESEND_ANNOTATION, Resolution, adoption_candidates,
    after_adopt, after_adopt_given, window_end,
};
pub use initiate::{after_post, after_resolve_tag};
pub use state::{State, action_summary, state_of};
pub use track::{after_track, after_track_error};
use util::*;
pub use util::{droplets_of, finished, last_error, status_str};

/// Whether a usable DigitalOcean token is available for this resource.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenState {
    /// The token could be read.
    Available(Token),
    /// It could not; the text says which Secret/key is missing (never the token).
    Missing(String),
}

/// Whether this resource may start an action on its droplets now.
#[derive(Clone, Debug, PartialEq)]
pub enum Gate {
    /// No other DropletAction holds or precedes it on its droplets.
    Free,
    /// Another DropletAction (namespace/name) runs or is queued first on droplet `droplet`. `why` is set when
    /// that one cannot start (its status message, e.g. its token is missing): then the wait is reported as
    /// "Blocked by ns/name: why" with a Warning event (see `ordering`).
    Blocked {
        by: String,
        droplet: i64,
        why: Option<String>,
    },
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
    /// When to poll actions in flight (learned durations, sharing, budget): see [`crate::controller::polling`].
    pub polling: &'a crate::controller::polling::Policy,
    /// Actions were already polled in this reconcile: do not poll again, schedule the next poll.
    pub tracked: bool,
    /// When the tracker last observed this resource's actions in flight (the POST's answer counts), if it has
    /// them cached: a wake-up before the poll that observation makes due under the current rate budget does
    /// not poll (see `on_active`). None: poll when woken.
    pub last_observed: Option<Timestamp>,
    /// What the resource's annotations ask for an uncertain initiation.
    pub resolution: Resolution,
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

/// An initiation: read the watermark ([`Initiation::set_watermark`]), reserve a rate-budget slot, write
/// `intent_status` (which records the intent) with a resourceVersion precondition, check leadership, then send
/// `request`.
#[derive(Clone, Debug)]
pub struct Initiation {
    pub intent_status: DropletActionStatus,
    pub type_: ActionType,
    pub attempt: i32,
    pub target: InitTarget,
    pub request: ActionRequest,
    pub token: Token,
    /// Re-sends an uncertain intent (the resend annotation, which the caller removes before sending).
    pub resend: bool,
}

impl Initiation {
    /// Records the highest action ID DigitalOcean listed before the send. A re-send keeps the watermark of
    /// the intent it replaces, so the earlier request's action (should it appear late) is still found.
    pub fn set_watermark(&mut self, highest: i64) {
        if let Some(p) = self.intent_status.pending_initiation.as_mut() {
            p.watermark = Some(p.watermark.map_or(highest, |w| w.min(highest)));
        }
    }
}

/// Look for the DigitalOcean action(s) a recorded intent may have started.
#[derive(Clone, Debug)]
pub struct Adoption {
    pub intent: PendingInitiation,
    pub token: Token,
}

/// Adopt the action an annotation names for an uncertain intent (after checking it with DigitalOcean).
#[derive(Clone, Debug)]
pub struct AdoptGiven {
    pub intent: PendingInitiation,
    pub action_id: i64,
    pub token: Token,
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
    pub token: Token,
}

/// The next step.
#[derive(Clone, Debug)]
pub enum Next {
    Update(Update),
    Delete,
    /// Resolve the droplets of a tag; fold the answer in with [`after_resolve_tag`].
    ResolveTag {
        tag: String,
        status: DropletActionStatus,
        token: Token,
    },
    Initiate(Initiation),
    Adopt(Adoption),
    /// Remove the annotation `annotation`, then adopt the action it named.
    AdoptGiven(AdoptGiven),
    Track(Tracking),
}

/// Decides the next step for a DropletAction: derives its [`State`] and asks that state's function.
pub fn decide(input: &Input) -> Next {
    let st = base_status(input);
    match state_of(input, &st) {
        State::Finished => on_finished(input),
        State::DeadlinePassed { deadline } => on_deadline(input, st, deadline),
        State::NotAfterPassed => on_not_after(input, st),
        State::NoToken { why } => on_no_token(input, st, why),
        State::Uncertain { intent, token } => adopt::on_uncertain(input, st, intent, token),
        State::Initiating { intent, token } => Next::Adopt(Adoption { intent, token }),
        State::ResolvingTag { tag, token } => Next::ResolveTag {
            tag,
            status: st,
            token,
        },
        State::New { token } => initiate::on_new(input, st, token),
        State::Active { token } => active::on_active(input, st, token),
    }
}

/// Finished: only the TTL is left to honour.
fn on_finished(input: &Input) -> Next {
    let st = input.status.clone();
    match (input.spec.ttl_seconds_after_finished, &st.completion_time) {
        (Some(ttl), Some(done)) => {
            let due = plus(ts(done), Duration::from_secs(ttl.max(0) as u64));
            if input.now >= due {
                Next::Delete
            } else {
                update(st, Some(dur_since(due, input.now)), None)
            }
        }
        _ => update(st, None, None),
    }
}

/// The deadline passed: Failed, saying what may still run on DigitalOcean.
fn on_deadline(input: &Input, st: DropletActionStatus, deadline: i64) -> Next {
    let running: Vec<String> = st
        .actions
        .iter()
        .filter(|a| !record_status(a).is_terminal())
        .map(|a| a.id.to_string())
        .collect();
    let mut tail = if running.is_empty() {
        String::new()
    } else {
        format!(
            "; DigitalOcean cannot cancel actions, so action(s) {} may still complete on DigitalOcean",
            running.join(", ")
        )
    };
    if let Some(p) = &st.pending_initiation
        && (p.sent || p.uncertain || p.send_ended_at.is_some())
    {
        tail.push_str(&format!(
            "; the outcome of the last {} request (attempt {}) is unknown, so that action may run on droplet(s) {}: check with `doctl compute droplet-action list <droplet>`",
            p.type_,
            p.attempt,
            join_ids(&p.droplet_ids)
        ));
    }
    finish(
        st,
        input,
        Phase::Failed,
        reasons::DEADLINE_EXCEEDED,
        format!("deadline of {deadline}s exceeded{tail}"),
    )
}

/// notAfter passed before anything was sent: Expired.
fn on_not_after(input: &Input, st: DropletActionStatus) -> Next {
    let when = input
        .spec
        .not_after
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    finish(
        st,
        input,
        Phase::Expired,
        reasons::NOT_AFTER_PASSED,
        format!(
            "notAfter {when} passed before the action was initiated; nothing was sent to DigitalOcean"
        ),
    )
}

/// No token: say which Secret is missing, look again later.
fn on_no_token(input: &Input, mut st: DropletActionStatus, why: String) -> Next {
    let phase = st.phase.unwrap_or_default();
    set_phase(
        &mut st,
        phase,
        reasons::TOKEN_NOT_FOUND,
        why.clone(),
        input.generation,
        input.now,
    );
    let first = input.status.reason.as_deref() != Some(reasons::TOKEN_NOT_FOUND);
    update(
        st,
        Some(cap_to_deadline(input, input.config.recheck)),
        if first {
            note(true, reasons::TOKEN_NOT_FOUND, why)
        } else {
            None
        },
    )
}

#[cfg(test)]
mod tests;
