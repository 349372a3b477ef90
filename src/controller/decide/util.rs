//! Small helpers shared by the per-state decisions: clock arithmetic, status building, error wording.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::state::action_summary;
use super::{Input, Next, Note, Update};
use crate::controller::conditions::{reasons, set_phase};
use crate::controller::policy::backoff;
use crate::crd::{
    ActionRecord, DropletActionSpec, DropletActionStatus, LastError, Phase, RetryState,
};
use crate::digitalocean::{Action, ActionStatus, DoError};

pub(crate) fn ts(t: &Time) -> Timestamp {
    t.0
}

pub(crate) fn dur_since(now: Timestamp, then: Timestamp) -> Duration {
    let secs = now.duration_since(then).as_secs_f64();
    if secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(secs)
    }
}

pub(crate) fn plus(t: Timestamp, d: Duration) -> Timestamp {
    let sd = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    t.checked_add(sd).unwrap_or(t)
}

pub(crate) fn minus(t: Timestamp, d: Duration) -> Timestamp {
    let sd = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    t.checked_sub(sd).unwrap_or(t)
}

/// The droplets a resource acts on, as far as known.
pub fn droplets_of(spec: &DropletActionSpec, status: &DropletActionStatus) -> Vec<i64> {
    match spec.droplet_id {
        Some(id) => vec![id],
        None => status.droplet_ids.clone(),
    }
}

pub(crate) fn base_status(input: &Input) -> DropletActionStatus {
    let mut st = input.status.clone();
    if st.start_time.is_none() {
        st.start_time = Some(Time(input.now));
    }
    if st.target.is_none() {
        st.target = Some(input.spec.target());
    }
    if st.phase.is_none() {
        set_phase(
            &mut st,
            Phase::Pending,
            reasons::CREATED,
            "accepted; waiting to initiate",
            input.generation,
            input.now,
        );
    }
    st
}

pub(crate) fn update(
    status: DropletActionStatus,
    requeue: Option<Duration>,
    note: Option<Note>,
) -> Next {
    Next::Update(Update {
        status,
        requeue,
        note,
    })
}

pub(crate) fn note(warning: bool, reason: &'static str, text: impl Into<String>) -> Option<Note> {
    Some(Note {
        warning,
        reason,
        text: text.into(),
    })
}

/// Writes a final phase (Succeeded, Failed or Expired) with its reason and message, and schedules the TTL.
pub fn finished(
    mut st: DropletActionStatus,
    input: &Input,
    phase: Phase,
    reason: &'static str,
    event_reason: &'static str,
    message: String,
) -> Update {
    set_phase(
        &mut st,
        phase,
        reason,
        message.clone(),
        input.generation,
        input.now,
    );
    st.completion_time = Some(Time(input.now));
    st.pending_initiation = None;
    st.retry = None;
    st.action_summary = action_summary(input.spec, &st);
    let requeue = input
        .spec
        .ttl_seconds_after_finished
        .map(|s| Duration::from_secs(s.max(0) as u64));
    Update {
        status: st,
        requeue,
        note: note(phase != Phase::Succeeded, event_reason, message),
    }
}

pub(crate) fn finish(
    st: DropletActionStatus,
    input: &Input,
    phase: Phase,
    reason: &'static str,
    message: String,
) -> Next {
    Next::Update(finished(st, input, phase, reason, reason, message))
}

/// A permanent DigitalOcean error (401, 403, 404, invalid request): Failed with DigitalOcean's words, no retry.
pub(crate) fn failed_by(mut st: DropletActionStatus, input: &Input, error: &DoError) -> Update {
    st.last_error = Some(Box::new(last_error(error, input.now)));
    finished(
        st,
        input,
        Phase::Failed,
        error.reason(),
        "Failed",
        describe_error(error),
    )
}

/// Records one more transient failure in status and returns how long to wait (capped exponential backoff,
/// at least DigitalOcean's retry-after).
pub(crate) fn schedule_retry(
    st: &mut DropletActionStatus,
    input: &Input,
    error: &DoError,
    cap: Duration,
) -> Duration {
    let failures = st.retry.as_ref().map(|r| r.failures).unwrap_or(0) + 1;
    let mut delay = backoff(failures, input.config.retry_base, cap);
    if let Some(after) = error.retry_after() {
        delay = delay.max(after);
    }
    st.retry = Some(RetryState {
        failures,
        next_attempt_time: Time(plus(input.now, delay)),
    });
    delay
}

pub(crate) fn record(a: &Action, attempt: i32, type_: &str, fallback_droplet: i64) -> ActionRecord {
    ActionRecord {
        id: a.id,
        droplet_id: a.resource_id.unwrap_or(fallback_droplet),
        type_: if a.type_.is_empty() {
            type_.to_string()
        } else {
            a.type_.clone()
        },
        status: status_str(&a.status),
        attempt,
        started_at: a.started_at.map(Time),
        completed_at: a.completed_at.map(Time),
        region_slug: a.region_slug.clone(),
        snapshot_image_id: None,
        droplet_status: None,
    }
}

/// DigitalOcean's status string.
pub fn status_str(s: &ActionStatus) -> String {
    s.as_str().to_string()
}

/// The recorded DigitalOcean status of an action, as the client's enum (an unknown one is `Other`).
pub(crate) fn record_status(r: &ActionRecord) -> ActionStatus {
    ActionStatus::from(r.status.as_str())
}

/// `d`, but no later than the deadline (so a deadline is noticed when it passes).
pub(crate) fn cap_to_deadline(input: &Input, d: Duration) -> Duration {
    let Some(deadline) = input.spec.deadline_seconds else {
        return d;
    };
    let started = input
        .status
        .start_time
        .as_ref()
        .map(ts)
        .unwrap_or(input.now);
    let left = dur_since(
        plus(started, Duration::from_secs(deadline.max(0) as u64)),
        input.now,
    );
    d.min(left.max(Duration::from_millis(50)))
}

/// "1, 2, 3".
pub(crate) fn join_ids(ids: &[i64]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// DigitalOcean's words for status.lastError.
pub fn last_error(e: &DoError, now: Timestamp) -> LastError {
    LastError {
        http_status: e.http_status().map(i32::from),
        id: e.api_id().map(str::to_string),
        message: e.message().to_string(),
        request_id: e.request_id().map(str::to_string),
        reason: Some(e.reason().to_string()),
        time: Some(Time(now)),
    }
}

pub(crate) fn describe_error(e: &DoError) -> String {
    let mut s = match e.http_status() {
        Some(code) => format!(
            "DigitalOcean answered {code} {}: {}",
            e.reason(),
            e.message()
        ),
        None => format!(
            "DigitalOcean request failed ({}): {}",
            e.reason(),
            e.message()
        ),
    };
    if let Some(scope) = e.scope_hint() {
        s.push_str(&format!(" (the token needs the {scope} scope)"));
    }
    if let Some(id) = e.request_id() {
        s.push_str(&format!(" [request id {id}]"));
    }
    s
}
