//! Recorded actions: polling, completion, snapshots, the power_off fallback, retries, unknown statuses, deadlines, TTL.

use super::*;

#[test]
fn an_unknown_status_is_reported_keeps_being_polled_and_is_bounded() {
    let s = spec(json!({"type": "reboot", "dropletId": 7}));
    let c = cfg();
    let st = running(&s, t(0), "reboot");
    let odd: BTreeMap<i64, Action> = [(
        500,
        action(500, 7, "reboot", ActionStatus::Other("done".into()), t(0)),
    )]
    .into_iter()
    .collect();
    let st = after_track(&st, &odd, &BTreeMap::new(), &BTreeMap::new());
    assert_eq!(st.actions[0].status, "done");
    // Not taken as finished: polled again.
    assert!(matches!(decide(&input(&s, &st, t(5), &c)), Next::Track(_)));
    let mut i = input(&s, &st, t(5), &c);
    i.tracked = true;
    let u = expect_update(decide(&i));
    assert_eq!(u.status.phase, Some(Phase::Running));
    assert_eq!(u.status.reason.as_deref(), Some("UnknownActionStatus"));
    let n = u.note.clone().expect("a warning the first time");
    assert!(n.warning && n.text.contains("\"done\""), "{n:?}");
    let mut i = input(&s, &u.status, t(10), &c);
    i.tracked = true;
    assert!(expect_update(decide(&i)).note.is_none(), "reported once");
    // Bounded: after the limit it fails with a clear message.
    let late = t(c.unknown_status_limit.as_secs() as i64 + 1);
    let u = expect_update(decide(&input(&s, &u.status, late, &c)));
    assert_eq!(u.status.phase, Some(Phase::Failed));
    assert_eq!(u.status.reason.as_deref(), Some("UnknownActionStatus"));
}

#[test]
fn a_snapshot_whose_image_never_appears_ends_after_a_bounded_search() {
    let s = spec(json!({"type": "snapshot", "dropletId": 7, "snapshotName": "n"}));
    let c = cfg();
    let st = running(&s, t(0), "snapshot");
    let mut done = action(500, 7, "snapshot", ActionStatus::Completed, t(0));
    done.completed_at = Some(t(10));
    let st = after_track(
        &st,
        &[(500, done)].into_iter().collect(),
        &BTreeMap::new(),
        &BTreeMap::new(),
    );
    assert!(
        matches!(decide(&input(&s, &st, t(20), &c)), Next::Track(tr) if tr.snapshots.len() == 1)
    );
    let late = t(10 + c.snapshot_search_limit.as_secs() as i64);
    let u = expect_update(decide(&input(&s, &st, late, &c)));
    assert_eq!(u.status.phase, Some(Phase::Succeeded));
    assert!(u.status.message.clone().unwrap().contains("did not appear"));
    assert_eq!(
        u.note.map(|n| (n.warning, n.reason)),
        Some((true, "SnapshotImageNotFound"))
    );
}

#[test]
fn power_off_fallback_that_finds_the_droplet_already_off_succeeds() {
    let s = spec(json!({"type": "shutdown", "dropletId": 7, "powerOffAfterSeconds": 30}));
    let c = cfg();
    let st = running(&s, t(0), "shutdown");
    let init = expect_initiate(decide(&input(&s, &st, t(31), &c)));
    assert_eq!(init.type_, ActionType::PowerOff);
    let off = DoError::from_parts(
        ErrorKind::Invalid,
        Some(422),
        Some("unprocessable_entity"),
        "Droplet is already powered off.",
        None,
        None,
    );
    let u = after_post(
        &input(&s, &init.intent_status, t(32), &c),
        &init,
        Err(PostError::new(off, Applied::NotApplied)),
    );
    assert!(u.status.pending_initiation.is_none());
    let done = expect_update(decide(&input(&s, &u.status, t(32), &c)));
    assert_eq!(done.status.phase, Some(Phase::Succeeded));
}

#[test]
fn in_progress_actions_are_polled_then_rescheduled() {
    let s = spec(json!({"type": "snapshot", "dropletId": 7}));
    let st = running(&s, t(0), "snapshot");
    let c = cfg();
    let track = match decide(&input(&s, &st, t(30), &c)) {
        Next::Track(tr) => tr,
        other => panic!("expected tracking, got {other:?}"),
    };
    assert_eq!(track.in_progress, vec![(7, 500)]);
    let mut i = input(&s, &st, t(30), &c);
    i.tracked = true;
    let u = expect_update(decide(&i));
    assert_eq!(u.status.phase, Some(Phase::Running));
    let snapshot_poll = u.requeue.unwrap();
    assert!(
        snapshot_poll >= Duration::from_secs(10),
        "snapshots are polled slowly: {snapshot_poll:?}"
    );

    let p = spec(json!({"type": "power_on", "dropletId": 7}));
    let st = running(&p, t(0), "power_on");
    let mut i = input(&p, &st, t(1), &c);
    i.tracked = true;
    let power_poll = expect_update(decide(&i)).requeue.unwrap();
    assert!(
        power_poll < snapshot_poll,
        "power actions are polled faster"
    );
}

#[test]
fn completion_succeeds_and_snapshots_resolve_their_image_first() {
    let s = spec(json!({"type": "snapshot", "dropletId": 7, "name": "nightly"}));
    let st = running(&s, t(0), "snapshot");
    let done: BTreeMap<i64, Action> = [(
        500,
        action(500, 7, "snapshot", ActionStatus::Completed, t(0)),
    )]
    .into_iter()
    .collect();
    let st = after_track(&st, &done, &BTreeMap::new(), &BTreeMap::new());
    let c = cfg();
    let mut i = input(&s, &st, t(70), &c);
    i.tracked = true;
    // The image ID is not known yet: look it up rather than finishing.
    let u = expect_update(decide(&i));
    assert_eq!(u.status.phase, Some(Phase::Running));
    match decide(&input(&s, &st, t(71), &c)) {
        Next::Track(tr) => assert_eq!(tr.snapshots, vec![(7, 500, Some(t(0)))]),
        other => panic!("expected snapshot lookup, got {other:?}"),
    }
    let images: BTreeMap<i64, i64> = [(500, 703001)].into_iter().collect();
    let st = after_track(&st, &BTreeMap::new(), &images, &BTreeMap::new());
    let u = expect_update(decide(&input(&s, &st, t(72), &c)));
    assert_eq!(u.status.phase, Some(Phase::Succeeded));
    assert_eq!(u.status.actions[0].snapshot_image_id, Some(703001));
    assert_eq!(cond(&u.status, "Ready"), "True");
    assert_eq!(u.status.completion_time, Some(Time(t(72))));
    assert_eq!(u.note.map(|n| n.warning), Some(false));
}

#[test]
fn errored_actions_are_reinitiated_up_to_the_backoff_limit() {
    let s = spec(
        json!({"type": "rebuild", "dropletId": 7, "image": "debian-12-x64", "backoffLimit": 1}),
    );
    let st = running(&s, t(0), "rebuild");
    let errored: BTreeMap<i64, Action> =
        [(500, action(500, 7, "rebuild", ActionStatus::Errored, t(0)))]
            .into_iter()
            .collect();
    let st = after_track(&st, &errored, &BTreeMap::new(), &BTreeMap::new());
    let c = cfg();
    let init = expect_initiate(decide(&input(&s, &st, t(40), &c)));
    assert_eq!(
        (init.attempt, init.target.clone()),
        (2, InitTarget::Droplet(7))
    );
    let posted = Ok(vec![action(
        600,
        7,
        "rebuild",
        ActionStatus::InProgress,
        t(41),
    )]);
    let st = after_post(&input(&s, &init.intent_status, t(41), &c), &init, posted).status;
    assert_eq!(st.attempts, Some(2));
    let errored: BTreeMap<i64, Action> =
        [(600, action(600, 7, "rebuild", ActionStatus::Errored, t(41)))]
            .into_iter()
            .collect();
    let st = after_track(&st, &errored, &BTreeMap::new(), &BTreeMap::new());
    let u = expect_update(decide(&input(&s, &st, t(90), &c)));
    assert_eq!(u.status.phase, Some(Phase::Failed));
    assert_eq!(u.status.reason.as_deref(), Some("ActionErrored"));
    assert!(
        u.status
            .message
            .unwrap()
            .contains("droplet(s) 7 (attempt 2 of 2)")
    );
}

#[test]
fn shutdown_that_leaves_the_droplet_on_falls_back_to_power_off() {
    let s = spec(json!({"type": "shutdown", "dropletId": 7, "powerOffAfterSeconds": 30}));
    let st = running(&s, t(0), "shutdown");
    let c = cfg();
    // Before powerOffAfterSeconds the shutdown is tracked.
    assert!(matches!(decide(&input(&s, &st, t(20), &c)), Next::Track(_)));
    // Still in progress after it: power_off is sent as promised. DigitalOcean refuses it while the shutdown holds
    // the droplet (422 pending event): that is a busy retry, never a failure.
    let fb = expect_initiate(decide(&input(&s, &st, t(40), &c)));
    assert_eq!((fb.type_, fb.attempt), (ActionType::PowerOff, 1));
    let busy = busy();
    let u = after_post(
        &input(&s, &fb.intent_status, t(40), &c),
        &fb,
        Err(PostError::new(busy, Applied::NotApplied)),
    );
    assert_eq!(u.status.phase, Some(Phase::Running));
    assert!(u.status.retry.is_some());
    // The refusal waits out its backoff (no call), then power_off is tried again.
    assert!(matches!(
        decide(&input(&s, &u.status, t(41), &c)),
        Next::Update(_)
    ));
    let due = u.status.retry.as_ref().unwrap().next_attempt_time.0;
    let again = expect_initiate(decide(&input(&s, &u.status, due, &c)));
    assert_eq!(again.type_, ActionType::PowerOff);
    // The shutdown completed: is the droplet really off?
    let done: BTreeMap<i64, Action> = [(
        500,
        action(500, 7, "shutdown", ActionStatus::Completed, t(0)),
    )]
    .into_iter()
    .collect();
    let st = after_track(&st, &done, &BTreeMap::new(), &BTreeMap::new());
    match decide(&input(&s, &st, t(5), &c)) {
        Next::Track(tr) => assert_eq!(tr.power_checks, vec![(7, 500)]),
        other => panic!("expected a power check, got {other:?}"),
    }
    // Still active before the timeout: wait and check again.
    let active: BTreeMap<i64, String> = [(500, "active".to_string())].into_iter().collect();
    let st = after_track(&st, &BTreeMap::new(), &BTreeMap::new(), &active);
    let mut i = input(&s, &st, t(10), &c);
    i.tracked = true;
    let u = expect_update(decide(&i));
    assert!(
        u.status
            .message
            .unwrap()
            .contains("waiting for droplet(s) 7 to power off")
    );
    // Still active after powerOffAfterSeconds: power_off, same attempt.
    let init = expect_initiate(decide(&input(&s, &st, t(31), &c)));
    assert_eq!((init.type_, init.attempt), (ActionType::PowerOff, 1));
    let posted = Ok(vec![action(
        501,
        7,
        "power_off",
        ActionStatus::InProgress,
        t(31),
    )]);
    let u = after_post(&input(&s, &init.intent_status, t(31), &c), &init, posted);
    assert_eq!(u.note.as_ref().map(|n| n.reason), Some("PowerOffFallback"));
    let st = u.status;
    assert_eq!(
        st.actions
            .iter()
            .map(|a| a.type_.as_str())
            .collect::<Vec<_>>(),
        vec!["shutdown", "power_off"]
    );
    let done: BTreeMap<i64, Action> = [(
        501,
        action(501, 7, "power_off", ActionStatus::Completed, t(31)),
    )]
    .into_iter()
    .collect();
    let st = after_track(&st, &done, &BTreeMap::new(), &BTreeMap::new());
    let u = expect_update(decide(&input(&s, &st, t(35), &c)));
    assert_eq!(u.status.phase, Some(Phase::Succeeded));
}

#[test]
fn shutdown_that_powered_the_droplet_off_needs_no_fallback() {
    let s = spec(json!({"type": "shutdown", "dropletId": 7, "powerOffAfterSeconds": 30}));
    let st = running(&s, t(0), "shutdown");
    let done: BTreeMap<i64, Action> = [(
        500,
        action(500, 7, "shutdown", ActionStatus::Completed, t(0)),
    )]
    .into_iter()
    .collect();
    let off: BTreeMap<i64, String> = [(500, "off".to_string())].into_iter().collect();
    let st = after_track(&st, &done, &BTreeMap::new(), &off);
    let c = cfg();
    let u = expect_update(decide(&input(&s, &st, t(3), &c)));
    assert_eq!(u.status.phase, Some(Phase::Succeeded));
    assert_eq!(u.status.actions.len(), 1);
}

#[test]
fn an_errored_shutdown_falls_back_to_power_off_at_once() {
    let s = spec(json!({"type": "shutdown", "dropletId": 7, "powerOffAfterSeconds": 300}));
    let st = running(&s, t(0), "shutdown");
    let errored: BTreeMap<i64, Action> =
        [(500, action(500, 7, "shutdown", ActionStatus::Errored, t(0)))]
            .into_iter()
            .collect();
    let st = after_track(&st, &errored, &BTreeMap::new(), &BTreeMap::new());
    let c = cfg();
    let init = expect_initiate(decide(&input(&s, &st, t(2), &c)));
    assert_eq!(init.type_, ActionType::PowerOff);
}

#[test]
fn the_deadline_fails_tracking_and_says_the_action_cannot_be_cancelled() {
    let s = spec(
        json!({"type": "resize", "dropletId": 7, "size": "s-2vcpu-4gb", "deadlineSeconds": 60}),
    );
    let st = running(&s, t(0), "resize");
    let c = cfg();
    let u = expect_update(decide(&input(&s, &st, t(61), &c)));
    assert_eq!(u.status.phase, Some(Phase::Failed));
    assert_eq!(u.status.reason.as_deref(), Some("DeadlineExceeded"));
    let msg = u.status.message.unwrap();
    assert!(
        msg.contains("cannot cancel") && msg.contains("500"),
        "{msg}"
    );
}

#[test]
fn ttl_deletes_finished_resources_when_due() {
    let s = spec(json!({"type": "reboot", "dropletId": 7, "ttlSecondsAfterFinished": 60}));
    let mut st = DropletActionStatus {
        phase: Some(Phase::Succeeded),
        completion_time: Some(Time(t(0))),
        ..Default::default()
    };
    st.conditions.clear();
    let c = cfg();
    let u = expect_update(decide(&input(&s, &st, t(30), &c)));
    assert_eq!(u.requeue, Some(Duration::from_secs(30)));
    assert!(matches!(decide(&input(&s, &st, t(60), &c)), Next::Delete));
    let keep = spec(json!({"type": "reboot", "dropletId": 7}));
    assert!(
        expect_update(decide(&input(&keep, &st, t(1_000_000), &c)))
            .requeue
            .is_none()
    );
}

#[test]
fn polling_slows_down_as_time_passes_and_as_the_budget_runs_low() {
    let fast = poll_interval(ActionType::Snapshot, Duration::from_secs(10), 1.0, 1.0);
    let slow = poll_interval(ActionType::Snapshot, Duration::from_secs(1200), 1.0, 1.0);
    assert!(slow > fast);
    let pressed = poll_interval(ActionType::Snapshot, Duration::from_secs(10), 1.0, 4.0);
    assert_eq!(pressed, fast * 4);
    assert!(
        backoff(30, Duration::from_secs(5), Duration::from_secs(300)) == Duration::from_secs(300)
    );
}

#[test]
fn a_failed_poll_is_not_retried_before_its_backoff_even_when_woken() {
    let s = spec(json!({"type": "reboot", "dropletId": 7}));
    let st = running(&s, t(0), "reboot");
    let c = cfg();
    let err = DoError::from_parts(
        ErrorKind::RateLimited,
        Some(429),
        Some("too_many_requests"),
        "API rate limit exceeded.",
        None,
        Some(Duration::from_secs(30)),
    );
    let u = after_track_error(&input(&s, &st, t(5), &c), &st, &err);
    assert_eq!(u.requeue, Some(Duration::from_secs(30)));
    assert_eq!(
        u.status.phase,
        Some(Phase::Running),
        "a transient error does not fail the resource"
    );
    // The status write wakes the resource immediately: it must not poll again yet.
    match decide(&input(&s, &u.status, t(6), &c)) {
        Next::Update(w) => {
            assert_eq!(w.status, u.status, "nothing changes while waiting");
            assert_eq!(w.requeue, Some(Duration::from_secs(29)));
        }
        other => panic!("expected to wait for the backoff, got {other:?}"),
    }
    assert!(matches!(
        decide(&input(&s, &u.status, t(36), &c)),
        Next::Track(_)
    ));
}

#[test]
fn a_wake_up_before_the_stretched_poll_waits_instead_of_polling() {
    let s = spec(json!({"type": "reboot", "dropletId": 7}));
    let c = cfg();
    let st = running(&s, t(0), "reboot");
    let p = &PRIOR_POLICY;
    let first = p.interval_at(ActionType::Reboot, Duration::ZERO, 1.0, 1.0, t(0));
    let woken = t(first.as_secs() as i64 + 1);
    // Without an observation time (a restart, a busy cache) a wake-up polls.
    assert!(matches!(decide(&input(&s, &st, woken, &c)), Next::Track(_)));
    // Observed at the POST with the budget idle: the poll scheduled then is due at the wake-up.
    let mut i = input(&s, &st, woken, &c);
    i.last_observed = Some(t(0));
    assert!(matches!(decide(&i), Next::Track(_)));
    // The budget ran low since (a burst of POSTs): the same wake-up waits for the stretched schedule, and says
    // nothing new.
    i.budget_factor = 4.0;
    let stretched = p.interval_at(ActionType::Reboot, Duration::ZERO, 1.0, 4.0, t(0));
    let u = expect_update(decide(&i));
    let expected = stretched.as_secs_f64() - (first.as_secs() + 1) as f64;
    let got = u.requeue.expect("a timer").as_secs_f64();
    assert!((got - expected).abs() < 0.01, "{got} vs {expected}");
    assert_eq!(u.status, st);
    assert!(u.note.is_none());
    // Once that time comes it polls.
    let mut i = input(&s, &st, plus(t(0), stretched), &c);
    i.last_observed = Some(t(0));
    i.budget_factor = 4.0;
    assert!(matches!(decide(&i), Next::Track(_)));
}
