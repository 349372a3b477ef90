//! Every decision of the schedule controller, as pure functions of (spec, status, children, clock): which slot
//! is due, whether it is created or skipped (and why), which finished children to delete, which of the
//! schedule's own snapshots retention deletes, and the status that describes it all.
//!
//! # Exactly one child per slot
//! A child's name is derived from the schedule's name and its slot ([`child_name`]), so a second create for
//! the same slot (a crash between creating and recording it, a second replica) is `AlreadyExists`. The newest
//! child is never deleted by the history limits, so the children always show the last slot even when the
//! status write was lost.
//!
//! # Missed slots
//! Like CronJob, only the most recent due slot is considered: after a long downtime at most one child is
//! created, and only while that slot is within its starting deadline. Earlier missed slots are reported in one
//! Skipped event. Every slot ends either Created or Skipped (Suspended, MissedStartingDeadline,
//! ConcurrencyForbid); a skipped slot is never run later.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::crd::{
    ChildRef, ConcurrencyPolicy, DeletedSnapshot, DropletActionScheduleSpec,
    DropletActionScheduleStatus, OwnSnapshot,
};
use super::cron::{CronSchedule, SpecError};
use crate::controller::conditions::{set_condition, types};
use crate::crd::{DropletActionSpec, Phase};

/// Default starting deadline cap when spec.startingDeadlineSeconds is unset.
pub const DEFAULT_DEADLINE: SignedDuration = SignedDuration::from_secs(3600);
/// Deletions kept in status.deletedSnapshots.
pub const DELETED_KEPT: usize = 20;
/// How long a retention refused with 403 waits before trying again.
pub const FORBIDDEN_RETRY: SignedDuration = SignedDuration::from_secs(300);
/// At most this many missed slots are counted for the Skipped event.
const COUNT_CAP: usize = 1000;

/// Skip and condition reasons (stable).
pub mod reasons {
    pub const SUSPENDED: &str = "Suspended";
    pub const MISSED_DEADLINE: &str = "MissedStartingDeadline";
    pub const FORBID: &str = "ConcurrencyForbid";
    pub const MISSED_WHILE_DOWN: &str = "MissedSlots";
    pub const SCHEDULED: &str = "Scheduled";
    pub const WAITING: &str = "WaitingForPreviousChild";
    pub const RETENTION_FORBIDDEN: &str = "RetentionForbidden";
    pub const RETENTION_RETRYING: &str = "RetentionRetrying";
}

/// What the controller knows about one child DropletAction.
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    pub name: String,
    pub slot: Timestamp,
    pub phase: Phase,
    pub completion_time: Option<Timestamp>,
    pub snapshot_image_ids: Vec<i64>,
}

/// Everything a decision looks at.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub name: &'a str,
    pub generation: i64,
    pub created: Timestamp,
    pub spec: &'a DropletActionScheduleSpec,
    pub status: &'a DropletActionScheduleStatus,
    pub children: &'a [Child],
    pub now: Timestamp,
}

/// A child to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewChild {
    pub name: String,
    pub slot: Timestamp,
    pub spec: DropletActionSpec,
}

/// A skipped slot, for its event.
#[derive(Clone, Debug, PartialEq)]
pub struct Skip {
    pub slot: Timestamp,
    pub reason: &'static str,
    pub note: String,
}

/// A snapshot retention deletes, and the rule that selected it.
#[derive(Clone, Debug, PartialEq)]
pub struct Expired {
    pub snapshot: OwnSnapshot,
    pub rule: &'static str,
}

/// The next steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The status to write (assuming `create` succeeds).
    pub status: DropletActionScheduleStatus,
    /// Create this child first (AlreadyExists counts as done).
    pub create: Option<NewChild>,
    /// Skipped slots to announce.
    pub skipped: Vec<Skip>,
    /// Finished children beyond the history limits (after the status is written).
    pub delete_children: Vec<String>,
    /// Own snapshots beyond retention (after the status is written).
    pub delete_snapshots: Vec<Expired>,
    /// Reconcile again after this much schedule-clock time.
    pub requeue_after: Option<SignedDuration>,
    /// The spec cannot be used (status says Stalled; nothing is created).
    pub invalid: Option<SpecError>,
}

/// FNV-1a, for short stable name suffixes.
fn short_hash(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// `s` if it fits in `max` characters, else its start and a hash of the whole.
fn fit(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let keep = max.saturating_sub(9);
    let prefix = s[..keep].trim_end_matches(['-', '.']);
    format!("{prefix}-{}", short_hash(s))
}

/// The child's name for a slot: `<schedule>-<unix minutes>` (253 characters at most; a long schedule name is
/// shortened with a hash of the whole).
pub fn child_name(schedule: &str, slot: Timestamp) -> String {
    let suffix = (slot.as_second().div_euclid(60)).to_string();
    format!("{}-{suffix}", fit(schedule, 253 - 1 - suffix.len()))
}

/// A label value (63 characters at most) naming the schedule.
pub fn schedule_label(schedule: &str) -> String {
    fit(schedule, 63)
}

/// Starting deadline of `slot`: spec.startingDeadlineSeconds, or the smaller of one hour and the time to the
/// following slot.
pub fn deadline(
    spec: &DropletActionScheduleSpec,
    cron: &CronSchedule,
    slot: Timestamp,
) -> SignedDuration {
    match spec.starting_deadline_seconds {
        Some(s) => SignedDuration::from_secs(s.max(1)),
        None => cron
            .next_after(slot)
            .map(|n| n.duration_since(slot).min(DEFAULT_DEADLINE))
            .unwrap_or(DEFAULT_DEADLINE),
    }
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn max_opt(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Retention: which own snapshots to delete (pure). Newest first by slot; beyond keepLast, or older than
/// maxAgeDays (never the newest one).
pub fn retention_selection(
    spec: &DropletActionScheduleSpec,
    snapshots: &[OwnSnapshot],
    now: Timestamp,
) -> Vec<Expired> {
    let Some(r) = &spec.retention else {
        return vec![];
    };
    let mut sorted: Vec<&OwnSnapshot> = snapshots.iter().collect();
    sorted.sort_by_key(|s| std::cmp::Reverse((s.scheduled_time.0, s.image_id)));
    let mut out = Vec::new();
    for (i, s) in sorted.into_iter().enumerate() {
        let rule = if r.keep_last.is_some_and(|k| i >= k.max(1) as usize) {
            Some("keepLast")
        } else if i > 0
            && r.max_age_days.is_some_and(|d| {
                now.duration_since(s.scheduled_time.0)
                    > SignedDuration::from_hours(24 * i64::from(d))
            })
        {
            Some("maxAgeDays")
        } else {
            None
        };
        if let Some(rule) = rule {
            out.push(Expired {
                snapshot: s.clone(),
                rule,
            });
        }
    }
    out
}

/// Finished children beyond the history limits; never the newest child.
pub fn history_selection(spec: &DropletActionScheduleSpec, children: &[Child]) -> Vec<String> {
    let newest = children.iter().map(|c| c.slot).max();
    let mut finished: Vec<&Child> = children
        .iter()
        .filter(|c| c.phase.is_terminal() && Some(c.slot) != newest)
        .collect();
    finished.sort_by_key(|c| std::cmp::Reverse(c.slot));
    let ok_limit = spec.successful_history_limit.unwrap_or(3).max(0) as usize;
    let failed_limit = spec.failed_history_limit.unwrap_or(1).max(0) as usize;
    // The newest child counts towards its own limit.
    let newest_child = children.iter().find(|c| Some(c.slot) == newest);
    let mut ok_seen = usize::from(newest_child.is_some_and(|c| c.phase == Phase::Succeeded));
    let mut failed_seen = usize::from(
        newest_child.is_some_and(|c| matches!(c.phase, Phase::Failed | Phase::Expired)),
    );
    let mut out = Vec::new();
    for c in finished {
        let (seen, limit) = if c.phase == Phase::Succeeded {
            (&mut ok_seen, ok_limit)
        } else {
            (&mut failed_seen, failed_limit)
        };
        *seen += 1;
        if *seen > limit {
            out.push(c.name.clone());
        }
    }
    out
}

/// The plan for one reconcile.
pub fn decide(o: &Observed<'_>) -> Plan {
    let mut status = o.status.clone();
    status.observed_generation = Some(o.generation);
    // What the children say, whatever the status recorded (a lost status write, a second replica).
    let newest_child = o.children.iter().map(|c| c.slot).max();
    let last_scheduled = max_opt(
        status.last_schedule_time.as_ref().map(|t| t.0),
        newest_child,
    );
    status.last_schedule_time = last_scheduled.map(time);
    let last_success = o
        .children
        .iter()
        .filter(|c| c.phase == Phase::Succeeded)
        .filter_map(|c| c.completion_time)
        .max();
    status.last_successful_time = max_opt(
        status.last_successful_time.as_ref().map(|t| t.0),
        last_success,
    )
    .map(time);
    let mut active: Vec<ChildRef> = o
        .children
        .iter()
        .filter(|c| !c.phase.is_terminal())
        .map(|c| ChildRef {
            name: c.name.clone(),
            scheduled_time: time(c.slot),
        })
        .collect();
    active.sort_by_key(|a| a.scheduled_time.0);
    // Snapshots made by the children, recorded before any child is deleted.
    for c in o.children {
        for id in &c.snapshot_image_ids {
            let known = status.snapshots.iter().any(|s| s.image_id == *id)
                || status.deleted_snapshots.iter().any(|s| s.image_id == *id);
            if !known {
                status.snapshots.push(OwnSnapshot {
                    image_id: *id,
                    child: c.name.clone(),
                    scheduled_time: time(c.slot),
                });
            }
        }
    }
    status
        .snapshots
        .sort_by_key(|s| (s.scheduled_time.0, s.image_id));

    let mut plan = Plan {
        status,
        create: None,
        skipped: vec![],
        delete_children: history_selection(o.spec, o.children),
        delete_snapshots: vec![],
        requeue_after: None,
        invalid: None,
    };

    let cron = match CronSchedule::parse(&o.spec.schedule, o.spec.time_zone.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            set_kstatus(
                &mut plan.status,
                Health::Stalled(e.reason(), e.to_string()),
                o,
            );
            plan.status.next_schedule_time = None;
            finish_active(&mut plan.status, active);
            plan.invalid = Some(e);
            return plan;
        }
    };

    let floor = [
        Some(o.created),
        last_scheduled,
        plan.status.last_skipped_time.as_ref().map(|t| t.0),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(o.created);

    // The most recent due slot after the floor, and how many earlier ones it hides.
    let mut health = Health::Ready(reasons::SCHEDULED);
    let due = latest_due(&cron, o.spec, floor, o.now);
    if let Some((slot, hidden)) = due {
        let dl = deadline(o.spec, &cron, slot);
        let too_late = o.now > slot + dl;
        let forbid = o.spec.concurrency_policy.unwrap_or_default() == ConcurrencyPolicy::Forbid;
        if let Some((count, first, last)) = hidden {
            let count_s = if count >= COUNT_CAP {
                format!("more than {COUNT_CAP}")
            } else {
                count.to_string()
            };
            let (reason, why) = if forbid && !active.is_empty() {
                (
                    reasons::FORBID,
                    format!(
                        "{} was still running (concurrencyPolicy Forbid)",
                        active[0].name
                    ),
                )
            } else {
                (
                    reasons::MISSED_WHILE_DOWN,
                    "the operator was not running".to_string(),
                )
            };
            plan.skipped.push(Skip {
                slot: last,
                reason,
                note: format!(
                    "{count_s} earlier slot(s) from {first} to {last} were skipped ({reason}): {why}; like a CronJob only the most recent slot is considered"
                ),
            });
        }
        let skip = |reason: &'static str, why: String| Skip {
            slot,
            reason,
            note: format!("slot {slot} skipped ({reason}): {why}"),
        };
        if o.spec.suspend {
            plan.skipped
                .push(skip(reasons::SUSPENDED, "spec.suspend is true".into()));
        } else if too_late {
            let why = format!(
                "it could not start within its starting deadline of {}s",
                dl.as_secs()
            );
            let reason = if forbid && !active.is_empty() {
                reasons::FORBID
            } else {
                reasons::MISSED_DEADLINE
            };
            plan.skipped.push(skip(reason, why));
        } else if forbid && !active.is_empty() {
            health = Health::Waiting(format!(
                "slot {slot} waits for {} to finish (concurrencyPolicy Forbid) until {}",
                active[0].name,
                slot + dl
            ));
            plan.requeue_after =
                Some((slot + dl).duration_since(o.now) + SignedDuration::from_secs(1));
        } else {
            let mut spec = o.spec.template.spec.clone();
            let not_after = slot + dl;
            let keep = spec.not_after.as_ref().is_some_and(|t| t.0 < not_after);
            if !keep {
                spec.not_after = Some(time(not_after));
            }
            let name = child_name(o.name, slot);
            active.push(ChildRef {
                name: name.clone(),
                scheduled_time: time(slot),
            });
            plan.status.last_schedule_time = Some(time(slot));
            plan.create = Some(NewChild { name, slot, spec });
        }
        if let Some(last) = plan.skipped.last() {
            plan.status.last_skipped_time = Some(time(last.slot));
            plan.status.last_skipped_reason = Some(last.reason.to_string());
        }
    }
    let next = cron.next_after(o.now);
    plan.status.next_schedule_time = next.map(time);
    if let Some(n) = next {
        let until = n.duration_since(o.now);
        plan.requeue_after = Some(plan.requeue_after.map_or(until, |r| r.min(until)));
    }

    // Retention, unless DigitalOcean refused it recently (a 403 is retried every few minutes, not hammered).
    let candidates = retention_selection(o.spec, &plan.status.snapshots, o.now);
    let refused_recently = plan.status.conditions.iter().find(|c| {
        c.type_ == types::STALLED && c.status == "True" && c.reason == reasons::RETENTION_FORBIDDEN
    });
    match refused_recently {
        Some(c)
            if !candidates.is_empty()
                && o.now.duration_since(c.last_transition_time.0) < FORBIDDEN_RETRY =>
        {
            health = Health::Stalled(reasons::RETENTION_FORBIDDEN, c.message.clone());
            let retry = (c.last_transition_time.0 + FORBIDDEN_RETRY).duration_since(o.now);
            plan.requeue_after = Some(plan.requeue_after.map_or(retry, |r| r.min(retry)));
        }
        _ => plan.delete_snapshots = candidates,
    }
    set_kstatus(&mut plan.status, health, o);
    finish_active(&mut plan.status, active);
    plan
}

fn finish_active(status: &mut DropletActionScheduleStatus, active: Vec<ChildRef>) {
    status.active_count = Some(active.len() as i32);
    status.active = active;
}

/// (most recent due slot, (count, first, last) of earlier missed slots) among slots in (floor, now].
#[allow(clippy::type_complexity)]
fn latest_due(
    cron: &CronSchedule,
    spec: &DropletActionScheduleSpec,
    floor: Timestamp,
    now: Timestamp,
) -> Option<(Timestamp, Option<(usize, Timestamp, Timestamp)>)> {
    let first = cron.next_after(floor).filter(|t| *t <= now)?;
    // Look for the latest slot only in a recent window, so a long downtime costs no long walk.
    let window = spec
        .starting_deadline_seconds
        .map(SignedDuration::from_secs)
        .unwrap_or(DEFAULT_DEADLINE)
        .max(DEFAULT_DEADLINE);
    let mut latest = first;
    let start = (now - window).max(first);
    let mut t = if start > first {
        cron.next_after(start - SignedDuration::from_secs(1))
    } else {
        Some(first)
    };
    let mut found_recent = false;
    while let Some(s) = t.filter(|s| *s <= now) {
        latest = s;
        found_recent = true;
        t = cron.next_after(s);
    }
    if !found_recent {
        // Nothing in the window: the latest due slot is older; step from the first (bounded).
        let mut s = first;
        for _ in 0..COUNT_CAP * 100 {
            match cron.next_after(s) {
                Some(n) if n <= now => s = n,
                _ => break,
            }
        }
        latest = s;
    }
    if latest == first {
        return Some((latest, None));
    }
    // Count the hidden slots (capped).
    let mut count = 0;
    let mut last_hidden = first;
    let mut s = Some(first);
    while let Some(x) = s.filter(|x| *x < latest) {
        count += 1;
        last_hidden = x;
        if count >= COUNT_CAP {
            break;
        }
        s = cron.next_after(x);
    }
    if count >= COUNT_CAP {
        last_hidden = latest;
    }
    Some((latest, Some((count, first, last_hidden))))
}

enum Health {
    Ready(&'static str),
    Waiting(String),
    Stalled(&'static str, String),
}

fn set_kstatus(status: &mut DropletActionScheduleStatus, health: Health, o: &Observed<'_>) {
    let g = o.generation;
    let now = o.now;
    let next = status
        .next_schedule_time
        .as_ref()
        .map(|t| format!("; next slot at {}", t.0))
        .unwrap_or_default();
    let (ready, reconciling, stalled, reason, message) = match health {
        Health::Ready(r) => (
            true,
            false,
            false,
            r,
            format!("schedule {:?} is active{next}", o.spec.schedule),
        ),
        Health::Waiting(m) => (true, true, false, reasons::WAITING, m),
        Health::Stalled(r, m) => (false, false, true, r, m),
    };
    let flag = |b: bool| if b { "True" } else { "False" };
    for (t, v) in [
        (types::READY, ready),
        (types::RECONCILING, reconciling),
        (types::STALLED, stalled),
    ] {
        set_condition(&mut status.conditions, t, flag(v), reason, &message, g, now);
    }
}

/// Marks a retention deletion refused (403): Stalled naming the scope.
pub fn retention_forbidden(
    status: &mut DropletActionScheduleStatus,
    image_id: i64,
    generation: i64,
    now: Timestamp,
) {
    let message = format!(
        "DigitalOcean refused to delete snapshot {image_id} (403): the token needs the image:delete scope for spec.retention; add it to the token, or remove spec.retention"
    );
    for (t, v) in [
        (types::READY, "False"),
        (types::RECONCILING, "False"),
        (types::STALLED, "True"),
    ] {
        set_condition(
            &mut status.conditions,
            t,
            v,
            reasons::RETENTION_FORBIDDEN,
            &message,
            generation,
            now,
        );
    }
}

/// Records a snapshot deleted (or found already gone) by retention.
pub fn record_deleted(status: &mut DropletActionScheduleStatus, e: &Expired, now: Timestamp) {
    status
        .snapshots
        .retain(|s| s.image_id != e.snapshot.image_id);
    status.deleted_snapshots.push(DeletedSnapshot {
        image_id: e.snapshot.image_id,
        child: e.snapshot.child.clone(),
        deleted_at: time(now),
        rule: e.rule.to_string(),
    });
    let excess = status.deleted_snapshots.len().saturating_sub(DELETED_KEPT);
    status.deleted_snapshots.drain(..excess);
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
