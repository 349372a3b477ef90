//! The reconciler's decisions, as pure functions of (resource, observed DigitalOcean state, clock).
//!
//! [`decide`] looks at a DropletAction's spec and status (plus what the caller knows about its token, the
//! droplet queue and the rate budget) and returns the one next step: write a status, delete the resource, resolve
//! a tag, initiate an action, adopt an action whose initiation outcome is unknown, or poll actions in flight.
//! The `after_*` functions fold the result of that step's IO back into a new status. Nothing here performs IO or
//! reads the clock, so every transition is unit-tested without servers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{reasons, set_phase};
use crate::crd::{
    ActionRecord, ActionType, DropletActionSpec, DropletActionStatus, LastError, PendingInitiation,
    Phase, RetryState,
};
use crate::digitalocean::{Action, ActionStatus, Applied, DoError, ErrorKind, PostError};

/// Tunables of the decision logic.
#[derive(Clone, Debug)]
pub struct DecideConfig {
    /// After recording an intent, how long a missing DigitalOcean action may still appear (the request timeout
    /// plus a margin). Only after this is it certain that nothing started, and the request is sent again.
    pub adopt_grace: Duration,
    /// Clock-skew allowance when matching an action's `started_at` against the recorded intent time.
    pub adopt_skew: Duration,
    /// Multiplies every poll interval (1.0 in production; smaller in tests against a fast simulator).
    pub poll_scale: f64,
    /// First delay after a transient failure; doubles per consecutive failure.
    pub retry_base: Duration,
    /// Cap of the transient-failure backoff.
    pub retry_max: Duration,
    /// Cap of the backoff while DigitalOcean reports the droplet busy.
    pub busy_max: Duration,
    /// How often to re-check while waiting for a token or for another DropletAction on the same droplet.
    pub recheck: Duration,
}

impl Default for DecideConfig {
    fn default() -> Self {
        DecideConfig {
            adopt_grace: Duration::from_secs(45),
            adopt_skew: Duration::from_secs(60),
            poll_scale: 1.0,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            busy_max: Duration::from_secs(60),
            recheck: Duration::from_secs(15),
        }
    }
}

impl DecideConfig {
    /// Settings for a DigitalOcean request timeout, with every wait and poll interval multiplied by `poll_scale`
    /// (1.0 against DigitalOcean; smaller against a fast simulator).
    pub fn for_timeout(request_timeout: Duration, poll_scale: f64) -> DecideConfig {
        let defaults = DecideConfig::default();
        let scale = poll_scale.clamp(0.001, 1000.0);
        DecideConfig {
            // After this long no request of ours can still be on its way to DigitalOcean.
            adopt_grace: request_timeout
                + Duration::from_secs(5)
                    .mul_f64(scale.min(1.0))
                    .max(Duration::from_millis(500)),
            poll_scale,
            recheck: defaults.recheck.mul_f64(scale),
            retry_base: defaults.retry_base.mul_f64(scale),
            retry_max: defaults.retry_max.mul_f64(scale),
            busy_max: defaults.busy_max.mul_f64(scale),
            ..defaults
        }
    }
}

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
    /// When to poll actions in flight (learned durations, sharing, budget): see [`super::polling`].
    pub polling: &'a super::polling::Policy,
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

fn ts(t: &Time) -> Timestamp {
    t.0
}

fn dur_since(now: Timestamp, then: Timestamp) -> Duration {
    let secs = now.duration_since(then).as_secs_f64();
    if secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(secs)
    }
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    let sd = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    t.checked_add(sd).unwrap_or(t)
}

fn minus(t: Timestamp, d: Duration) -> Timestamp {
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

/// Poll interval for an action type that has been running for `elapsed`: short for power actions, long for
/// snapshots, growing with the elapsed time (a long action is polled less often).
pub fn poll_interval(
    type_: ActionType,
    elapsed: Duration,
    scale: f64,
    budget_factor: f64,
) -> Duration {
    // First poll after `min`; then half the time the action has run so far (an action that took 20 s is
    // unlikely to finish in the next second), capped at `max`. One list call observes every in-flight action of
    // a token, so this schedule is paid once per token, not once per action.
    let (min, max) = match type_ {
        ActionType::PowerOn
        | ActionType::PowerOff
        | ActionType::Shutdown
        | ActionType::Reboot
        | ActionType::PowerCycle => (3.0, 15.0),
        ActionType::Resize | ActionType::Rebuild | ActionType::Restore => (5.0, 30.0),
        ActionType::Snapshot => (10.0, 120.0),
        _ => (3.0, 20.0),
    };
    let secs = (elapsed.as_secs_f64() / 2.0).clamp(min, max) * scale * budget_factor.max(1.0);
    Duration::from_secs_f64(secs.max(0.05))
}

/// Capped exponential backoff for the `failures`-th consecutive failure, with deterministic spread.
pub fn backoff(failures: i32, base: Duration, cap: Duration) -> Duration {
    let exp = failures.clamp(1, 20) - 1;
    let d = base.as_secs_f64() * 2f64.powi(exp);
    Duration::from_secs_f64(d.min(cap.as_secs_f64()))
}

/// Per-droplet state of the latest attempt.
#[derive(Clone, Debug, PartialEq)]
enum DropletState {
    NotStarted,
    InProgress(Vec<i64>),
    Done,
    NeedSnapshotId(i64, Option<Timestamp>),
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

fn droplet_state(
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
    let primary_done = primary.is_some_and(|p| p.status == "completed");
    if let Some(fb) = fallback {
        return match fb.status.as_str() {
            "completed" => DropletState::Done,
            _ if primary_done => DropletState::Done,
            "errored" => DropletState::Errored { attempt },
            _ => DropletState::InProgress(vec![fb.id]),
        };
    }
    let Some(p) = primary else {
        return DropletState::NotStarted;
    };
    let overdue = match (spec.power_off_after_seconds, &p.started_at) {
        (Some(secs), Some(started)) => {
            dur_since(now, ts(started)) >= Duration::from_secs(secs as u64)
        }
        _ => false,
    };
    match p.status.as_str() {
        // A completed shutdown only says the command was issued: with a fallback configured, the droplet must
        // be seen off, else power_off follows once powerOffAfterSeconds passed.
        "completed"
            if spec.type_ == ActionType::Shutdown && spec.power_off_after_seconds.is_some() =>
        {
            match p.droplet_status.as_deref() {
                Some("off") => DropletState::Done,
                Some(_) if overdue => DropletState::NeedFallback {
                    attempt,
                    in_progress: vec![],
                },
                _ => DropletState::CheckPower(p.id),
            }
        }
        "completed" => {
            if spec.type_ == ActionType::Snapshot && p.snapshot_image_id.is_none() {
                DropletState::NeedSnapshotId(p.id, p.started_at.as_ref().map(ts))
            } else {
                DropletState::Done
            }
        }
        "errored" if spec.power_off_after_seconds.is_some() => DropletState::NeedFallback {
            attempt,
            in_progress: vec![],
        },
        "errored" => DropletState::Errored { attempt },
        // While the shutdown runs DigitalOcean refuses other actions on the droplet (422): keep tracking it.
        _ => DropletState::InProgress(vec![p.id]),
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

fn base_status(input: &Input) -> DropletActionStatus {
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

fn update(status: DropletActionStatus, requeue: Option<Duration>, note: Option<Note>) -> Next {
    Next::Update(Update {
        status,
        requeue,
        note,
    })
}

fn note(warning: bool, reason: &'static str, text: impl Into<String>) -> Option<Note> {
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

fn finish(
    st: DropletActionStatus,
    input: &Input,
    phase: Phase,
    reason: &'static str,
    message: String,
) -> Next {
    Next::Update(finished(st, input, phase, reason, reason, message))
}

/// A permanent DigitalOcean error (401, 403, 404, invalid request): Failed with DigitalOcean's words, no retry.
fn failed_by(mut st: DropletActionStatus, input: &Input, error: &DoError) -> Update {
    st.last_error = Some(last_error(error, input.now));
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
fn schedule_retry(
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
        let interval = input.polling.interval_at(
            spec.type_,
            dur_since(now, oldest),
            input.config.poll_scale,
            input.budget_factor,
            now,
        );
        return Next::Track(Tracking {
            in_progress,
            snapshots,
            power_checks,
            max_age: super::polling::max_age(interval, input.config.poll_scale),
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
            now,
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

fn initiation(
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

fn record(a: &Action, attempt: i32, type_: &str, fallback_droplet: i64) -> ActionRecord {
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
    match s {
        ActionStatus::InProgress => "in-progress".into(),
        ActionStatus::Completed => "completed".into(),
        ActionStatus::Errored => "errored".into(),
        ActionStatus::Other(o) => o.clone(),
    }
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

fn describe_error(e: &DoError) -> String {
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
                now,
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

/// Actions that may have been started by a recorded intent: the intent's type, started at or after the intent
/// time (less the skew allowance), on one of its droplets, and not already claimed by any DropletAction.
pub fn adoption_candidates<'a>(
    intent: &PendingInitiation,
    listed: &'a [Action],
    claimed: &BTreeSet<i64>,
    skew: Duration,
) -> Vec<&'a Action> {
    let since = minus(intent.requested_at.0, skew);
    let mut by_droplet: BTreeMap<i64, &Action> = BTreeMap::new();
    for a in listed {
        let droplet = a.resource_id.unwrap_or(0);
        let matches = a.type_ == intent.type_
            && !claimed.contains(&a.id)
            && a.started_at.is_some_and(|t| t >= since)
            && (intent.droplet_ids.is_empty() || intent.droplet_ids.contains(&droplet));
        if matches {
            // The earliest matching action per droplet is the one the intent started.
            let keep = by_droplet.get(&droplet).is_none_or(|prev| a.id < prev.id);
            if keep {
                by_droplet.insert(droplet, a);
            }
        }
    }
    by_droplet.into_values().collect()
}

/// What an adoption lookup concluded.
#[derive(Clone, Debug)]
pub enum AdoptOutcome {
    /// Matching actions were found and recorded: track them (nothing is sent again).
    Adopted(Update),
    /// Nothing matched yet, but a request may still arrive at DigitalOcean: look again later.
    Wait(Update),
    /// The grace period passed without a match: nothing started. The intent is cleared and the reconcile goes
    /// on to initiate again.
    NothingStarted(DropletActionStatus),
}

/// Folds the result of an adoption lookup into the status.
pub fn after_adopt(input: &Input, intent: &PendingInitiation, found: &[&Action]) -> AdoptOutcome {
    let now = input.now;
    let mut st = input.status.clone();
    let fallback_droplet = intent.droplet_ids.first().copied().unwrap_or(0);
    let grace_over = now >= plus(intent.requested_at.0, input.config.adopt_grace);
    if found.is_empty() {
        if grace_over {
            st.pending_initiation = None;
            return AdoptOutcome::NothingStarted(st);
        }
        let wait_left = dur_since(plus(intent.requested_at.0, input.config.adopt_grace), now);
        let msg = "the outcome of the last request to DigitalOcean is unknown; waiting to see whether the action started before sending it again".to_string();
        let phase = st.phase.unwrap_or_default();
        set_phase(
            &mut st,
            phase,
            reasons::ADOPTING,
            msg,
            input.generation,
            now,
        );
        let poll = Duration::from_secs(3)
            .mul_f64(input.config.poll_scale.max(0.05))
            .min(wait_left.max(Duration::from_millis(50)));
        return AdoptOutcome::Wait(Update {
            status: st,
            requeue: Some(poll),
            note: None,
        });
    }
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
    // Droplets of a by-tag request not seen yet keep their intent until the grace period is over.
    st.pending_initiation = if !remaining.is_empty()
        && !grace_over
        && found_droplets.len() < intent.droplet_ids.len()
    {
        Some(PendingInitiation {
            droplet_ids: remaining,
            ..intent.clone()
        })
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

/// Folds polled actions and resolved snapshot images into the status.
pub fn after_track(
    status: &DropletActionStatus,
    observed: &BTreeMap<i64, Action>,
    snapshot_images: &BTreeMap<i64, i64>,
    droplet_statuses: &BTreeMap<i64, String>,
) -> DropletActionStatus {
    let mut st = status.clone();
    for rec in st.actions.iter_mut() {
        if let Some(a) = observed.get(&rec.id) {
            rec.status = status_str(&a.status);
            if a.started_at.is_some() {
                rec.started_at = a.started_at.map(Time);
            }
            rec.completed_at = a.completed_at.map(Time);
            if rec.region_slug.is_none() {
                rec.region_slug = a.region_slug.clone();
            }
        }
        if let Some(image) = snapshot_images.get(&rec.id) {
            rec.snapshot_image_id = Some(*image);
        }
        if let Some(power) = droplet_statuses.get(&rec.id) {
            rec.droplet_status = Some(power.clone());
        }
    }
    st
}

/// Folds a failed poll into the status: transient errors back off (the backoff survives restarts because it
/// lives in status), permanent ones fail the resource.
pub fn after_track_error(input: &Input, status: &DropletActionStatus, error: &DoError) -> Update {
    let mut st = status.clone();
    if !error.is_transient() && error.kind() != ErrorKind::DropletBusy {
        return failed_by(st, input, error);
    }
    st.last_error = Some(last_error(error, input.now));
    let delay = schedule_retry(&mut st, input, error, input.config.retry_max);
    let msg = format!(
        "checking the action's progress failed: {}; retrying in {}s",
        describe_error(error),
        delay.as_secs()
    );
    let phase = st.phase.unwrap_or_default();
    set_phase(
        &mut st,
        phase,
        reasons::RETRYING,
        msg.clone(),
        input.generation,
        input.now,
    );
    Update {
        status: st,
        requeue: Some(delay),
        note: note(true, reasons::RETRYING, msg),
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
