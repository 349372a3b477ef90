//! The states a DropletAction can be in ([`State`], derived from its status), and the state of each droplet's
//! latest attempt ([`DropletState`], derived from the recorded actions).

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;

use super::util::{dur_since, plus, record_status, ts};
use super::{Input, TokenState};
use crate::crd::{
    ActionRecord, ActionType, DropletActionSpec, DropletActionStatus, PendingInitiation,
};
use crate::digitalocean::{ActionStatus, Token};

/// The states a DropletAction can be in, derived from spec, status and clock alone. The table in the
/// [controller docs](crate::controller) says what each does and what follows.
#[derive(Clone, Debug)]
pub enum State {
    /// Succeeded, Failed or Expired.
    Finished,
    /// `deadlineSeconds` passed before it finished.
    DeadlinePassed { deadline: i64 },
    /// `notAfter` passed before anything was sent.
    NotAfterPassed,
    /// The token Secret is missing.
    NoToken { why: String },
    /// An intent whose action did not appear within the window: waits for an annotation.
    Uncertain {
        intent: PendingInitiation,
        token: Token,
    },
    /// An intent is recorded without action IDs: its request may have started an action.
    Initiating {
        intent: PendingInitiation,
        token: Token,
    },
    /// tagName: the tagged droplets are not known yet.
    ResolvingTag { tag: String, token: Token },
    /// Nothing sent yet: queued behind another DropletAction, backing off, or ready to send.
    New { token: Token },
    /// Actions are recorded: track them, retry errored ones, fall back to power_off, or finish.
    Active { token: Token },
}

/// The [`State`] of a resource whose status (with defaults filled in) is `st`.
pub fn state_of(input: &Input, st: &DropletActionStatus) -> State {
    let spec = input.spec;
    if input.status.phase.is_some_and(|p| p.is_terminal()) {
        return State::Finished;
    }
    if let Some(deadline) = spec.deadline_seconds {
        let started = st.start_time.as_ref().map(ts).unwrap_or(input.now);
        if input.now >= plus(started, Duration::from_secs(deadline.max(0) as u64)) {
            return State::DeadlinePassed { deadline };
        }
    }
    let nothing_sent = st.actions.is_empty() && st.pending_initiation.is_none();
    if nothing_sent && spec.not_after.as_ref().is_some_and(|na| input.now > ts(na)) {
        return State::NotAfterPassed;
    }
    let token = match &input.token {
        TokenState::Missing(why) => return State::NoToken { why: why.clone() },
        TokenState::Available(t) => t.clone(),
    };
    if let Some(intent) = &st.pending_initiation {
        let intent = PendingInitiation::clone(intent);
        return if intent.uncertain {
            State::Uncertain { intent, token }
        } else {
            State::Initiating { intent, token }
        };
    }
    if let Some(tag) = &spec.tag_name
        && st.droplet_ids.is_empty()
        && st.actions.is_empty()
    {
        return State::ResolvingTag {
            tag: tag.clone(),
            token,
        };
    }
    if st.actions.is_empty() {
        State::New { token }
    } else {
        State::Active { token }
    }
}

/// Per-droplet state of the latest attempt.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum DropletState {
    NotStarted,
    InProgress(Vec<i64>),
    /// DigitalOcean reports a status we do not know: kept polling (bounded), never taken as finished.
    Unknown {
        id: i64,
        status: String,
        started: Option<Timestamp>,
    },
    Done,
    /// A completed snapshot whose image is not known yet: (action, started_at, completed_at).
    NeedSnapshotId(i64, Option<Timestamp>, Option<Timestamp>),
    Errored {
        attempt: i32,
    },
    NeedFallback {
        attempt: i32,
        in_progress: Vec<i64>,
    },
    /// A shutdown completed; whether the droplet is really off must be checked.
    CheckPower(i64),
}

pub(crate) fn droplet_state(
    spec: &DropletActionSpec,
    records: &[&ActionRecord],
    now: Timestamp,
) -> DropletState {
    let Some(attempt) = records.iter().map(|r| r.attempt).max() else {
        return DropletState::NotStarted;
    };
    let current: Vec<&&ActionRecord> = records.iter().filter(|r| r.attempt == attempt).collect();
    let primary = current.iter().find(|r| r.type_ == spec.type_.as_str());
    let fallback = if spec.type_ == ActionType::Shutdown {
        current
            .iter()
            .find(|r| r.type_ == ActionType::PowerOff.as_str())
    } else {
        None
    };
    // shutdown: a droplet seen off is the goal reached, whatever the actions report.
    if spec.type_ == ActionType::Shutdown
        && primary.is_some_and(|p| p.droplet_status.as_deref() == Some("off"))
    {
        return DropletState::Done;
    }
    let primary_done = primary.is_some_and(|p| record_status(p) == ActionStatus::Completed);
    if let Some(fb) = fallback {
        return match record_status(fb) {
            ActionStatus::Completed => DropletState::Done,
            _ if primary_done => DropletState::Done,
            ActionStatus::Errored => DropletState::Errored { attempt },
            ActionStatus::Other(status) => DropletState::Unknown {
                id: fb.id,
                status,
                started: fb.started_at.as_ref().map(ts),
            },
            ActionStatus::InProgress => DropletState::InProgress(vec![fb.id]),
        };
    }
    let Some(p) = primary else {
        return DropletState::NotStarted;
    };
    let overdue = match (spec.power_off_after_seconds, &p.started_at) {
        (Some(secs), Some(started)) => {
            dur_since(now, ts(started)) >= Duration::from_secs(secs.max(0) as u64)
        }
        _ => false,
    };
    let fallback_configured =
        spec.type_ == ActionType::Shutdown && spec.power_off_after_seconds.is_some();
    match record_status(p) {
        // A completed shutdown only says the command was issued: with a fallback configured, the droplet must
        // be seen off, else power_off follows once powerOffAfterSeconds passed.
        ActionStatus::Completed if fallback_configured => match p.droplet_status.as_deref() {
            Some(_) if overdue => DropletState::NeedFallback {
                attempt,
                in_progress: vec![],
            },
            _ => DropletState::CheckPower(p.id),
        },
        ActionStatus::Completed => {
            if spec.type_ == ActionType::Snapshot && p.snapshot_image_id.is_none() {
                DropletState::NeedSnapshotId(
                    p.id,
                    p.started_at.as_ref().map(ts),
                    p.completed_at.as_ref().map(ts),
                )
            } else {
                DropletState::Done
            }
        }
        ActionStatus::Errored if fallback_configured => DropletState::NeedFallback {
            attempt,
            in_progress: vec![],
        },
        ActionStatus::Errored => DropletState::Errored { attempt },
        ActionStatus::Other(status) => DropletState::Unknown {
            id: p.id,
            status,
            started: p.started_at.as_ref().map(ts),
        },
        // powerOffAfterSeconds promises power_off when the shutdown has not completed in time: send it while the
        // shutdown still runs. DigitalOcean locks a droplet while an action runs, so that power_off is refused
        // (422 pending event, retried as DropletBusy) until the shutdown ends; then it goes through, unless the
        // droplet is already off (which ends the resource Succeeded).
        ActionStatus::InProgress if fallback_configured && overdue => DropletState::NeedFallback {
            attempt,
            in_progress: vec![p.id],
        },
        ActionStatus::InProgress => DropletState::InProgress(vec![p.id]),
    }
}

/// The `Action` column: the action ID for one droplet, completed/total for several.
pub fn action_summary(spec: &DropletActionSpec, status: &DropletActionStatus) -> Option<String> {
    if status.actions.is_empty() {
        return None;
    }
    let droplets: BTreeSet<i64> = status.actions.iter().map(|a| a.droplet_id).collect();
    if spec.tag_name.is_none() && droplets.len() == 1 {
        return status.actions.last().map(|a| a.id.to_string());
    }
    let done = droplets
        .iter()
        .filter(|d| {
            let recs: Vec<&ActionRecord> = status
                .actions
                .iter()
                .filter(|a| a.droplet_id == **d)
                .collect();
            matches!(
                droplet_state(spec, &recs, Timestamp::UNIX_EPOCH),
                DropletState::Done
            )
        })
        .count();
    Some(format!("{done}/{}", droplets.len()))
}
