use super::*;
use crate::schedule::crd::{DropletActionTemplate, Retention};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn spec(schedule: &str) -> DropletActionScheduleSpec {
    serde_json::from_value(serde_json::json!({
        "schedule": schedule,
        "template": {"spec": {"type": "snapshot", "dropletId": 101001}},
    }))
    .unwrap()
}

fn child(name: &str, slot: &str, phase: Phase, snaps: &[i64]) -> Child {
    Child {
        name: name.into(),
        slot: ts(slot),
        phase,
        completion_time: phase
            .is_terminal()
            .then(|| ts(slot) + SignedDuration::from_secs(30)),
        snapshot_image_ids: snaps.to_vec(),
    }
}

fn run(
    spec: &DropletActionScheduleSpec,
    status: &DropletActionScheduleStatus,
    children: &[Child],
    now: &str,
) -> Plan {
    decide(&Observed {
        name: "nightly",
        generation: 1,
        created: ts("2026-01-01T00:00:30Z"),
        spec,
        status,
        children,
        now: ts(now),
    })
}

#[test]
fn a_due_slot_creates_one_child_named_after_the_slot_with_not_after() {
    let s = spec("* * * * *");
    let p = run(&s, &Default::default(), &[], "2026-01-01T00:01:05Z");
    let c = p.create.expect("create");
    assert_eq!(c.slot, ts("2026-01-01T00:01:00Z"));
    assert_eq!(
        c.name,
        format!("nightly-{}", ts("2026-01-01T00:01:00Z").as_second() / 60)
    );
    // Default deadline: min(1h, time to the next slot) = 60 s.
    assert_eq!(c.spec.not_after.unwrap().0, ts("2026-01-01T00:02:00Z"));
    assert_eq!(p.status.last_schedule_time.unwrap().0, c.slot);
    assert_eq!(p.status.active.len(), 1);
    assert_eq!(
        p.status.next_schedule_time.unwrap().0,
        ts("2026-01-01T00:02:00Z")
    );
    assert!(p.skipped.is_empty());
}

#[test]
fn nothing_before_the_first_slot_after_creation() {
    let s = spec("0 2 * * *");
    let p = run(&s, &Default::default(), &[], "2026-01-01T01:59:00Z");
    assert!(p.create.is_none() && p.skipped.is_empty());
    assert_eq!(p.requeue_after, Some(SignedDuration::from_secs(60)));
}

#[test]
fn a_child_that_exists_but_was_not_recorded_is_not_created_again() {
    // The operator died after creating the child and before writing status.
    let s = spec("* * * * *");
    let kids = [child(
        "nightly-x",
        "2026-01-01T00:01:00Z",
        Phase::Pending,
        &[],
    )];
    let p = run(&s, &Default::default(), &kids, "2026-01-01T00:01:20Z");
    assert!(p.create.is_none());
    assert_eq!(
        p.status.last_schedule_time.unwrap().0,
        ts("2026-01-01T00:01:00Z")
    );
    assert_eq!(p.status.active_count, Some(1));
}

#[test]
fn long_downtime_creates_at_most_the_latest_slot_and_reports_the_rest() {
    let mut s = spec("*/5 * * * *");
    s.starting_deadline_seconds = Some(600);
    let p = run(&s, &Default::default(), &[], "2026-01-08T00:03:00Z");
    let c = p.create.expect("latest slot within its deadline");
    assert_eq!(c.slot, ts("2026-01-08T00:00:00Z"));
    assert_eq!(p.skipped.len(), 1);
    assert_eq!(p.skipped[0].reason, reasons::MISSED_WHILE_DOWN);
    assert!(
        p.skipped[0].note.contains("more than 1000"),
        "{}",
        p.skipped[0].note
    );
}

#[test]
fn a_slot_past_its_deadline_is_skipped_not_run_late() {
    let mut s = spec("0 2 * * *");
    s.starting_deadline_seconds = Some(300);
    let p = run(&s, &Default::default(), &[], "2026-01-01T02:06:00Z");
    assert!(p.create.is_none());
    assert_eq!(p.skipped.len(), 1);
    assert_eq!(p.skipped[0].reason, reasons::MISSED_DEADLINE);
    assert_eq!(
        p.status.last_skipped_time.as_ref().unwrap().0,
        ts("2026-01-01T02:00:00Z")
    );
    // Once skipped, it stays skipped.
    let again = run(&s, &p.status, &[], "2026-01-01T02:07:00Z");
    assert!(again.create.is_none() && again.skipped.is_empty());
    // Default deadline for a daily schedule: one hour.
    let d = spec("0 2 * * *");
    assert!(
        run(&d, &Default::default(), &[], "2026-01-01T02:59:00Z")
            .create
            .is_some()
    );
    assert!(
        run(&d, &Default::default(), &[], "2026-01-01T03:01:00Z")
            .create
            .is_none()
    );
}

#[test]
fn suspended_slots_are_skipped_and_not_run_after_resume() {
    let mut s = spec("* * * * *");
    s.suspend = true;
    let p = run(&s, &Default::default(), &[], "2026-01-01T00:01:01Z");
    assert!(p.create.is_none());
    assert_eq!(p.skipped[0].reason, reasons::SUSPENDED);
    s.suspend = false;
    let resumed = run(&s, &p.status, &[], "2026-01-01T00:01:30Z");
    assert!(
        resumed.create.is_none(),
        "the suspended slot does not run late"
    );
    assert!(
        run(&s, &p.status, &[], "2026-01-01T00:02:01Z")
            .create
            .is_some()
    );
}

#[test]
fn forbid_waits_for_the_running_child_then_skips_after_the_deadline() {
    let s = spec("* * * * *");
    let kids = [child(
        "nightly-a",
        "2026-01-01T00:01:00Z",
        Phase::Running,
        &[],
    )];
    let p = run(&s, &Default::default(), &kids, "2026-01-01T00:02:10Z");
    assert!(p.create.is_none() && p.skipped.is_empty());
    let r = p
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Reconciling")
        .unwrap();
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("True", reasons::WAITING)
    );
    let late = run(&s, &p.status, &kids, "2026-01-01T00:03:00.5Z");
    assert_eq!(
        late.skipped.iter().map(|s| s.reason).collect::<Vec<_>>(),
        [reasons::FORBID]
    );
    // Allow: runs alongside.
    let mut allow = spec("* * * * *");
    allow.concurrency_policy = Some(ConcurrencyPolicy::Allow);
    assert!(
        run(&allow, &Default::default(), &kids, "2026-01-01T00:02:10Z")
            .create
            .is_some()
    );
    // A finished child does not block.
    let done = [child(
        "nightly-a",
        "2026-01-01T00:01:00Z",
        Phase::Succeeded,
        &[],
    )];
    assert!(
        run(&s, &Default::default(), &done, "2026-01-01T00:02:10Z")
            .create
            .is_some()
    );
}

#[test]
fn invalid_schedule_or_zone_is_stalled_and_creates_nothing() {
    let mut s = spec("61 * * * *");
    let p = run(&s, &Default::default(), &[], "2026-01-02T00:00:00Z");
    assert!(p.create.is_none() && p.invalid.is_some());
    let st = p
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(
        (st.status.as_str(), st.reason.as_str()),
        ("True", "InvalidSchedule")
    );
    assert!(st.message.contains("spec.schedule"));
    s.schedule = "0 2 * * *".into();
    s.time_zone = Some("Europe/Nowhere".into());
    let p = run(&s, &Default::default(), &[], "2026-01-02T00:00:00Z");
    let st = p
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(st.reason, "InvalidTimeZone");
    assert!(st.message.contains("spec.timeZone"));
}

#[test]
fn dst_spring_forward_slot_is_skipped_that_day_in_the_zone() {
    let mut s = spec("30 2 * * *");
    s.time_zone = Some("Europe/Berlin".into());
    // 2026-03-29 has no 02:30 in Berlin: at 01:35Z (03:35 CEST) nothing is due since the 28th's slot.
    let st = DropletActionScheduleStatus {
        last_schedule_time: Some(Time(ts("2026-03-28T01:30:00Z"))),
        ..Default::default()
    };
    let p = run(&s, &st, &[], "2026-03-29T01:35:00Z");
    assert!(p.create.is_none() && p.skipped.is_empty());
    assert_eq!(
        p.status.next_schedule_time.unwrap().0,
        ts("2026-03-30T00:30:00Z")
    );
}

#[test]
fn history_keeps_the_limits_and_always_the_newest_child() {
    let s = spec("* * * * *");
    let kids = [
        child("c1", "2026-01-01T00:01:00Z", Phase::Succeeded, &[]),
        child("c2", "2026-01-01T00:02:00Z", Phase::Succeeded, &[]),
        child("c3", "2026-01-01T00:03:00Z", Phase::Failed, &[]),
        child("c4", "2026-01-01T00:04:00Z", Phase::Succeeded, &[]),
        child("c5", "2026-01-01T00:05:00Z", Phase::Succeeded, &[]),
        child("c6", "2026-01-01T00:06:00Z", Phase::Failed, &[]),
    ];
    let mut del = history_selection(&s, &kids);
    del.sort();
    // Succeeded: keep c5, c4, c2; Failed: keep c6 (the newest, also the one allowed).
    assert_eq!(del, ["c1", "c3"]);
    let mut zero = spec("* * * * *");
    zero.failed_history_limit = Some(0);
    zero.successful_history_limit = Some(0);
    let mut del = history_selection(&zero, &kids);
    del.sort();
    assert_eq!(
        del,
        ["c1", "c2", "c3", "c4", "c5"],
        "c6 is the newest and stays"
    );
}

#[test]
fn retention_deletes_the_oldest_own_snapshots_only() {
    let mut s = spec("0 2 * * *");
    s.retention = Some(Retention {
        keep_last: Some(2),
        max_age_days: None,
    });
    let kids = [
        child("n1", "2026-01-01T02:00:00Z", Phase::Succeeded, &[11]),
        child("n2", "2026-01-02T02:00:00Z", Phase::Succeeded, &[12]),
        child("n3", "2026-01-03T02:00:00Z", Phase::Succeeded, &[13]),
        child("n4", "2026-01-04T02:00:00Z", Phase::Succeeded, &[14]),
    ];
    let p = run(&s, &Default::default(), &kids, "2026-01-04T03:30:00Z");
    let ids: Vec<i64> = p
        .delete_snapshots
        .iter()
        .map(|e| e.snapshot.image_id)
        .collect();
    assert_eq!(ids, [12, 11]);
    assert_eq!(p.status.snapshots.len(), 4, "recorded before deletion");
    // Deleted ones leave status.snapshots and are listed as deleted.
    let mut st = p.status.clone();
    for e in &p.delete_snapshots {
        record_deleted(&mut st, e, ts("2026-01-04T03:31:00Z"));
    }
    assert_eq!(
        st.snapshots.iter().map(|s| s.image_id).collect::<Vec<_>>(),
        [13, 14]
    );
    assert_eq!(st.deleted_snapshots.len(), 2);
    // Children still listing deleted IDs do not bring them back.
    let p2 = run(&s, &st, &kids, "2026-01-04T03:32:00Z");
    assert!(p2.delete_snapshots.is_empty());
    // maxAgeDays never deletes the newest.
    let mut old = spec("0 2 * * *");
    old.retention = Some(Retention {
        keep_last: None,
        max_age_days: Some(1),
    });
    let p3 = run(&old, &Default::default(), &kids, "2026-03-01T00:00:00Z");
    let ids: Vec<i64> = p3
        .delete_snapshots
        .iter()
        .map(|e| e.snapshot.image_id)
        .collect();
    assert_eq!(ids, [13, 12, 11]);
}

#[test]
fn a_refused_retention_waits_before_trying_again() {
    let mut s = spec("0 2 * * *");
    s.retention = Some(Retention {
        keep_last: Some(1),
        max_age_days: None,
    });
    let kids = [
        child("n1", "2026-01-01T02:00:00Z", Phase::Succeeded, &[11]),
        child("n2", "2026-01-02T02:00:00Z", Phase::Succeeded, &[12]),
    ];
    let p = run(&s, &Default::default(), &kids, "2026-01-02T03:30:00Z");
    assert_eq!(p.delete_snapshots.len(), 1);
    let mut st = p.status.clone();
    retention_forbidden(&mut st, 11, 1, ts("2026-01-02T03:30:00Z"));
    let soon = run(&s, &st, &kids, "2026-01-02T03:31:00Z");
    assert!(soon.delete_snapshots.is_empty());
    let stalled = soon
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", reasons::RETENTION_FORBIDDEN)
    );
    assert!(stalled.message.contains("image:delete"));
    let later = run(&s, &st, &kids, "2026-01-02T03:36:00Z");
    assert_eq!(later.delete_snapshots.len(), 1);
}

#[test]
fn long_names_fit_the_limits() {
    let long = "a".repeat(253);
    let n = child_name(&long, ts("2026-01-01T00:00:00Z"));
    assert!(n.len() <= 253, "{}", n.len());
    assert_ne!(
        child_name(&long, ts("2026-01-01T00:00:00Z")),
        child_name(&"a".repeat(252), ts("2026-01-01T00:00:00Z"))
    );
    assert_eq!(
        child_name("nightly", ts("2026-01-01T00:00:00Z")),
        format!("nightly-{}", ts("2026-01-01T00:00:00Z").as_second() / 60)
    );
    assert!(schedule_label(&long).len() <= 63);
    assert_eq!(schedule_label("nightly"), "nightly");
    let _ = DropletActionTemplate {
        metadata: None,
        spec: spec("* * * * *").template.spec,
    };
}
