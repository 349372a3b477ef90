//! Intents whose outcome is unknown: adoption by watermark, the window, InitiationUncertain and its annotations.

use super::*;

#[test]
fn a_recorded_intent_is_adopted_not_resent() {
    let s = spec(json!({"type": "reboot", "dropletId": 7}));
    let c = cfg();
    let init = first_initiation(&s, &c);
    // The process died after recording the intent: the next reconcile must look, not post.
    match decide(&input(&s, &init.intent_status, t(5), &c)) {
        Next::Adopt(a) => assert_eq!(a.intent.type_, "reboot"),
        other => panic!("expected adoption, got {other:?}"),
    }
}

#[test]
fn adoption_takes_the_matching_unclaimed_action() {
    let intent = reboot_intent(t(100), false, None, None, false);
    let listed = vec![
        action(10, 7, "reboot", ActionStatus::Completed, t(0)), // long before the intent
        action(11, 7, "power_off", ActionStatus::InProgress, t(101)), // other type
        action(12, 7, "reboot", ActionStatus::InProgress, t(99)), // within skew, but claimed by another resource
        action(13, 7, "reboot", ActionStatus::InProgress, t(101)), // ours
        action(14, 8, "reboot", ActionStatus::InProgress, t(101)), // other droplet
    ];
    let claimed: BTreeSet<i64> = [12].into_iter().collect();
    let found = adoption_candidates(&intent, &listed, &claimed, Duration::from_secs(60));
    assert_eq!(found.iter().map(|a| a.id).collect::<Vec<_>>(), vec![13]);

    let s = spec(json!({"type": "reboot", "dropletId": 7}));
    let mut st = DropletActionStatus {
        pending_initiation: Some(Box::new(intent.clone())),
        ..Default::default()
    };
    st.phase = Some(Phase::Pending);
    let c = cfg();
    // Within the window a match is not adopted yet: another could still appear.
    assert!(matches!(
        after_adopt(&input(&s, &st, t(105), &c), &intent, &found),
        AdoptOutcome::Wait(_)
    ));
    let end = window_end(&intent, &c);
    match after_adopt(&input(&s, &st, end, &c), &intent, &found) {
        AdoptOutcome::Adopted(u) => {
            assert_eq!(
                u.status.actions.iter().map(|a| a.id).collect::<Vec<_>>(),
                vec![13]
            );
            assert!(u.status.pending_initiation.is_none());
            assert_eq!(u.status.phase, Some(Phase::Running));
            assert_eq!(u.note.map(|n| n.reason), Some("Adopted"));
        }
        other => panic!("expected adoption, got {other:?}"),
    }
}

#[test]
fn without_a_match_it_waits_out_the_window_then_stops_uncertain_and_never_resends_by_itself() {
    let s = spec(json!({"type": "reboot", "dropletId": 7}));
    let c = cfg();
    let init = first_initiation(&s, &c);
    let intent = init.intent_status.pending_initiation.clone().unwrap();
    // Within the window a request could still arrive at DigitalOcean, or a lagging list still show it.
    match after_adopt(&input(&s, &init.intent_status, t(10), &c), &intent, &[]) {
        AdoptOutcome::Wait(u) => {
            assert!(u.status.pending_initiation.is_some());
            assert_eq!(u.status.reason.as_deref(), Some("Adopting"));
        }
        other => panic!("expected to wait, got {other:?}"),
    }
    // No send end was recorded (the process died while sending): the window starts after the request timeout.
    let end = window_end(&intent, &c);
    assert_eq!(
        end,
        t((c.request_timeout + c.adopt_window).as_secs() as i64)
    );
    let later = t(end.as_second() - t(0).as_second() + 1);
    let u = match after_adopt(&input(&s, &init.intent_status, later, &c), &intent, &[]) {
        AdoptOutcome::Uncertain(u) => u,
        other => panic!("expected uncertain, got {other:?}"),
    };
    let p = u
        .status
        .pending_initiation
        .clone()
        .expect("the intent stays");
    assert!(p.uncertain);
    assert_eq!(u.status.reason.as_deref(), Some("InitiationUncertain"));
    assert_eq!(
        (cond(&u.status, "Stalled"), cond(&u.status, "Reconciling")),
        ("True", "False")
    );
    let msg = u.status.message.clone().unwrap();
    assert!(msg.contains("droplet-operator.dev/resend=true"), "{msg}");
    assert!(
        msg.contains("droplet-operator.dev/adopt-action-id"),
        "{msg}"
    );
    assert_eq!(u.note.as_ref().map(|n| n.warning), Some(true));
    assert_eq!(
        u.requeue, None,
        "without a deadline only an annotation wakes it"
    );
    // Without an annotation nothing is sent, however late.
    let next = decide(&input(&s, &u.status, t(100_000), &c));
    assert!(
        matches!(&next, Next::Update(x) if x.status.pending_initiation.as_ref().is_some_and(|p| p.uncertain)),
        "{next:?}"
    );
    // The resend annotation sends it again: the same attempt, keeping the watermark of the first request.
    let mut st = u.status.clone();
    st.pending_initiation.as_mut().unwrap().watermark = Some(40);
    let mut i = input(&s, &st, t(100_001), &c);
    i.resolution = Resolution::Resend;
    let mut again = expect_initiate(decide(&i));
    assert_eq!((again.attempt, again.resend), (1, true));
    again.set_watermark(90);
    let p = again.intent_status.pending_initiation.clone().unwrap();
    assert_eq!(
        (p.watermark, p.resend, p.uncertain),
        (Some(40), true, false)
    );
}

#[test]
fn the_window_runs_from_the_end_of_the_send_not_from_the_intent() {
    let c = cfg();
    let intent = reboot_intent(t(0), true, Some(10), Some(500), false);
    assert_eq!(
        window_end(&intent, &c),
        t(500 + c.adopt_window.as_secs() as i64)
    );
    let s = spec(json!({"type": "reboot", "dropletId": 7}));
    let st = DropletActionStatus {
        pending_initiation: Some(Box::new(intent.clone())),
        phase: Some(Phase::Pending),
        ..Default::default()
    };
    assert!(matches!(
        after_adopt(&input(&s, &st, t(510), &c), &intent, &[]),
        AdoptOutcome::Wait(_)
    ));
}

#[test]
fn adoption_by_watermark_ignores_older_actions_whatever_the_clocks_say() {
    let intent = reboot_intent(t(100), true, Some(20), Some(101), false);
    let listed = vec![
        // Started "after" the intent by DigitalOcean's skewed clock, but listed before the send: not ours.
        action(19, 7, "reboot", ActionStatus::Completed, t(400)),
        action(20, 7, "reboot", ActionStatus::Completed, t(400)),
        // Newer than the watermark, but DigitalOcean's clock runs 10 minutes behind: ours all the same.
        action(23, 7, "reboot", ActionStatus::InProgress, t(-500)),
        action(25, 7, "reboot", ActionStatus::InProgress, t(-400)),
    ];
    let found = adoption_candidates(&intent, &listed, &BTreeSet::new(), Duration::from_secs(60));
    assert_eq!(
        found.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![23, 25],
        "every newer action, whatever its started_at"
    );
    let claimed: BTreeSet<i64> = [23].into_iter().collect();
    let found = adoption_candidates(&intent, &listed, &claimed, Duration::from_secs(60));
    assert_eq!(
        found.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![25],
        "never a claimed one"
    );
}

#[test]
fn a_resend_refused_as_busy_looks_for_the_first_request_again() {
    let s = spec(json!({"type": "reboot", "dropletId": 7}));
    let c = cfg();
    let mut st = DropletActionStatus {
        phase: Some(Phase::Pending),
        ..Default::default()
    };
    st.pending_initiation = Some(Box::new(reboot_intent(t(0), true, Some(30), Some(1), true)));
    let mut i = input(&s, &st, t(1000), &c);
    i.resolution = Resolution::Resend;
    let mut init = expect_initiate(decide(&i));
    init.set_watermark(35);
    let busy = busy();
    let u = after_post(
        &input(&s, &init.intent_status, t(1001), &c),
        &init,
        Err(PostError::new(busy, Applied::NotApplied)),
    );
    let p = u
        .status
        .pending_initiation
        .clone()
        .expect("looks again, does not drop the intent");
    assert_eq!((p.watermark, p.uncertain, p.sent), (Some(30), false, true));
    assert_eq!(p.send_ended_at, Some(Time(t(1001))));
    assert!(u.status.retry.is_none(), "no back-off-and-resend");
    assert!(matches!(
        decide(&input(&s, &u.status, t(1002), &c)),
        Next::Adopt(_)
    ));
}

#[test]
fn an_adopt_annotation_adopts_only_a_fitting_action() {
    let s = spec(json!({"type": "reboot", "dropletId": 7}));
    let c = cfg();
    let intent = reboot_intent(t(0), true, Some(30), Some(1), true);
    let st = DropletActionStatus {
        phase: Some(Phase::Pending),
        pending_initiation: Some(Box::new(intent.clone())),
        ..Default::default()
    };
    let mut i = input(&s, &st, t(1000), &c);
    i.resolution = Resolution::Adopt(44);
    match decide(&i) {
        Next::AdoptGiven(g) => assert_eq!(g.action_id, 44),
        other => panic!("expected adoption of the named action, got {other:?}"),
    }
    let none = BTreeSet::new();
    let ok = after_adopt_given(
        &i,
        &intent,
        44,
        Ok(action(44, 7, "reboot", ActionStatus::Completed, t(0))),
        &none,
    );
    assert_eq!(
        ok.status.actions.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![44]
    );
    assert!(ok.status.pending_initiation.is_none());
    for (a, claimed, why) in [
        (
            action(44, 8, "reboot", ActionStatus::Completed, t(0)),
            none.clone(),
            "droplet 8",
        ),
        (
            action(44, 7, "power_off", ActionStatus::Completed, t(0)),
            none.clone(),
            "power_off",
        ),
        (
            action(44, 7, "reboot", ActionStatus::Completed, t(0)),
            [44].into_iter().collect(),
            "another DropletAction",
        ),
    ] {
        let u = after_adopt_given(&i, &intent, 44, Ok(a), &claimed);
        assert!(u.status.actions.is_empty());
        assert_eq!(u.status.reason.as_deref(), Some("InitiationUncertain"));
        assert!(
            u.status.message.clone().unwrap().contains(why),
            "{:?}",
            u.status.message
        );
    }
}

#[test]
fn resolution_annotations_are_parsed_strictly() {
    let ann = |k: &str, v: &str| -> std::collections::BTreeMap<String, String> {
        [(k.to_string(), v.to_string())].into_iter().collect()
    };
    assert_eq!(
        Resolution::from_annotations(&Default::default()),
        Resolution::None
    );
    assert_eq!(
        Resolution::from_annotations(&ann(RESEND_ANNOTATION, "true")),
        Resolution::Resend
    );
    assert_eq!(
        Resolution::from_annotations(&ann(ADOPT_ANNOTATION, " 42 ")),
        Resolution::Adopt(42)
    );
    assert!(matches!(
        Resolution::from_annotations(&ann(ADOPT_ANNOTATION, "abc")),
        Resolution::Invalid(m) if m.contains(ADOPT_ANNOTATION)
    ));
    assert!(matches!(
        Resolution::from_annotations(&ann(RESEND_ANNOTATION, "yes")),
        Resolution::Invalid(_)
    ));
}

#[test]
fn a_deadline_during_an_unknown_outcome_says_an_action_may_run() {
    let s = spec(json!({"type": "reboot", "dropletId": 7, "deadlineSeconds": 60}));
    let c = cfg();
    let init = first_initiation(&s, &c);
    let err = DoError::from_parts(
        ErrorKind::Server,
        Some(503),
        None,
        "unavailable",
        None,
        None,
    );
    let u = after_ambiguous(&s, &init, &c, t(1), err);
    let done = expect_update(decide(&input(&s, &u.status, t(61), &c)));
    assert_eq!(done.status.phase, Some(Phase::Failed));
    let msg = done.status.message.unwrap();
    assert!(msg.contains("may run on droplet(s) 7"), "{msg}");
}

#[test]
fn an_ambiguous_post_keeps_the_intent_for_adoption() {
    let s = spec(json!({"type": "power_off", "dropletId": 7}));
    let c = cfg();
    let init = first_initiation(&s, &c);
    let err = DoError::from_parts(
        ErrorKind::Transport,
        None,
        None,
        "connection closed before message completed",
        None,
        None,
    );
    let u = after_ambiguous(&s, &init, &c, t(1), err);
    let intent = u.status.pending_initiation.as_ref().expect("intent kept");
    assert!(intent.sent);
    assert_eq!(u.status.reason.as_deref(), Some("Adopting"));
    assert!(matches!(
        decide(&input(&s, &u.status, t(2), &c)),
        Next::Adopt(_)
    ));
}

#[test]
fn two_unclaimed_matches_are_not_guessed_between() {
    let s = spec(json!({"type": "reboot", "dropletId": 7}));
    let c = cfg();
    let intent = reboot_intent(t(0), true, Some(20), Some(1), false);
    let st = DropletActionStatus {
        phase: Some(Phase::Pending),
        pending_initiation: Some(Box::new(intent.clone())),
        ..Default::default()
    };
    // Ours, and another client's reboot of the same droplet: which one the request started is unknowable.
    let listed = [
        action(21, 7, "reboot", ActionStatus::Completed, t(1)),
        action(24, 7, "reboot", ActionStatus::InProgress, t(5)),
    ];
    let found = adoption_candidates(&intent, &listed, &BTreeSet::new(), c.adopt_skew);
    let end = window_end(&intent, &c);
    match after_adopt(&input(&s, &st, end, &c), &intent, &found) {
        AdoptOutcome::Uncertain(u) => {
            assert!(u.status.actions.is_empty(), "nothing adopted");
            let msg = u.status.message.unwrap();
            assert!(
                msg.contains("21, 24") && msg.contains("adopt-action-id"),
                "{msg}"
            );
        }
        other => panic!("expected uncertain, got {other:?}"),
    }
}
