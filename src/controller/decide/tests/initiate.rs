//! New resources: queueing, tokens, notAfter, tags, the POST outcome (success, refusals, backoff).

use super::*;

#[test]
fn a_new_resource_records_its_intent_before_initiating() {
    let s = spec(json!({"type": "reboot", "dropletId": 101001}));
    let st = DropletActionStatus::default();
    let c = cfg();
    let init = expect_initiate(decide(&input(&s, &st, t(0), &c)));
    assert_eq!(init.target, InitTarget::Droplet(101001));
    assert_eq!(init.attempt, 1);
    let intent = init
        .intent_status
        .pending_initiation
        .as_ref()
        .expect("intent recorded");
    assert_eq!(
        (intent.type_.as_str(), intent.attempt, intent.requested_at.0),
        ("reboot", 1, t(0))
    );
    assert_eq!(init.intent_status.phase, Some(Phase::Pending));
    assert_eq!(init.intent_status.target.as_deref(), Some("droplet/101001"));
    assert_eq!(init.intent_status.start_time, Some(Time(t(0))));
    assert_eq!(cond(&init.intent_status, "Reconciling"), "True");
}

#[test]
fn a_successful_post_records_the_action_and_clears_the_intent() {
    let s = spec(json!({"type": "reboot", "dropletId": 101001}));
    let st = running(&s, t(0), "reboot");
    assert_eq!(st.phase, Some(Phase::Running));
    assert!(st.pending_initiation.is_none());
    assert_eq!(st.actions.len(), 1);
    assert_eq!(
        (
            st.actions[0].id,
            st.actions[0].droplet_id,
            st.actions[0].status.as_str()
        ),
        (500, 101001, "in-progress")
    );
    assert_eq!(st.attempts, Some(1));
    assert_eq!(st.action_summary.as_deref(), Some("500"));
}

#[test]
fn waits_for_the_droplet_when_another_resource_goes_first() {
    let s = spec(json!({"type": "snapshot", "dropletId": 7}));
    let st = DropletActionStatus::default();
    let c = cfg();
    let mut i = input(&s, &st, t(0), &c);
    i.gate = Gate::Blocked {
        by: "default/shutdown".into(),
        droplet: 7,
        why: None,
    };
    let u = expect_update(decide(&i));
    assert_eq!(u.status.phase, Some(Phase::Pending));
    assert_eq!(u.status.reason.as_deref(), Some("WaitingForDroplet"));
    assert!(
        u.status
            .message
            .as_deref()
            .unwrap()
            .contains("default/shutdown")
    );
    assert!(
        u.status.pending_initiation.is_none(),
        "nothing may be sent while waiting"
    );
    assert!(u.requeue.is_some());
}

#[test]
fn a_missing_token_keeps_the_resource_pending_without_calls() {
    let s = spec(
        json!({"type": "reboot", "dropletId": 7, "tokenSecretRef": {"name": "do", "key": "token"}}),
    );
    let st = DropletActionStatus::default();
    let c = cfg();
    let mut i = input(&s, &st, t(0), &c);
    i.token =
        TokenState::Missing("Secret default/do named by spec.tokenSecretRef was not found".into());
    let u = expect_update(decide(&i));
    assert_eq!(u.status.reason.as_deref(), Some("TokenNotFound"));
    assert_eq!(u.status.phase, Some(Phase::Pending));
    assert_eq!(u.note.as_ref().map(|n| n.reason), Some("TokenNotFound"));
    // Once the Secret exists the same resource initiates.
    let i = input(&s, &u.status, t(10), &c);
    expect_initiate(decide(&i));
}

#[test]
fn not_after_expires_only_what_was_never_sent() {
    let s = spec(json!({"type": "reboot", "dropletId": 7, "notAfter": "2020-01-01T00:00:00Z"}));
    let st = DropletActionStatus::default();
    let c = cfg();
    let u = expect_update(decide(&input(&s, &st, t(0), &c)));
    assert_eq!(u.status.phase, Some(Phase::Expired));
    assert_eq!(u.status.reason.as_deref(), Some("NotAfterPassed"));
    assert_eq!(cond(&u.status, "Stalled"), "True");
    assert!(u.status.actions.is_empty() && u.status.pending_initiation.is_none());

    // Already running when notAfter passes: keep tracking.
    let s2 = spec(json!({"type": "reboot", "dropletId": 7, "notAfter": "2027-01-15T08:00:00Z"}));
    let st = running(&s2, t(0), "reboot");
    assert!(matches!(
        decide(&input(&s2, &st, t(100_000_000), &c)),
        Next::Track(_)
    ));
}

#[test]
fn a_busy_droplet_backs_off_and_is_never_failed_for_it() {
    let s = spec(json!({"type": "reboot", "dropletId": 7}));
    let c = cfg();
    let mut st = DropletActionStatus::default();
    let mut now = t(0);
    for round in 1..=6 {
        let init = expect_initiate(decide(&input(&s, &st, now, &c)));
        let err = DoError::from_parts(
            ErrorKind::DropletBusy,
            Some(422),
            Some("unprocessable_entity"),
            "Droplet already has a pending event.",
            Some("req-1"),
            None,
        );
        let u = after_post(
            &input(&s, &init.intent_status, now, &c),
            &init,
            Err(PostError::new(err, Applied::NotApplied)),
        );
        assert_eq!(u.status.phase, Some(Phase::Pending));
        assert_eq!(u.status.reason.as_deref(), Some("DropletBusy"));
        assert!(u.status.pending_initiation.is_none());
        let retry = u.status.retry.clone().unwrap();
        assert_eq!(retry.failures, round);
        let delay = u.requeue.unwrap();
        assert!(delay <= c.busy_max, "busy backoff is capped");
        // Before the retry time nothing is sent.
        let early = decide(&input(&s, &u.status, now, &c));
        assert!(
            matches!(early, Next::Update(_)),
            "no initiation before nextAttemptTime"
        );
        st = u.status;
        now = retry.next_attempt_time.0;
    }
    assert_eq!(
        st.last_error.as_ref().unwrap().request_id.as_deref(),
        Some("req-1")
    );
}

#[test]
fn permanent_errors_fail_with_digitaloceans_words() {
    let s = spec(json!({"type": "restore", "dropletId": 7, "image": 5}));
    let c = cfg();
    let init = first_initiation(&s, &c);
    let err = DoError::from_parts(
        ErrorKind::Forbidden,
        Some(403),
        Some("forbidden"),
        "You are not authorized to perform this operation",
        Some("abc-123"),
        None,
    );
    let u = after_post(
        &input(&s, &init.intent_status, t(1), &c),
        &init,
        Err(PostError::new(err, Applied::NotApplied)),
    );
    assert_eq!(u.status.phase, Some(Phase::Failed));
    assert_eq!(cond(&u.status, "Stalled"), "True");
    assert_eq!(cond(&u.status, "Ready"), "False");
    let msg = u.status.message.clone().unwrap();
    assert!(
        msg.contains("403") && msg.contains("not authorized") && msg.contains("abc-123"),
        "{msg}"
    );
    let le = u.status.last_error.unwrap();
    assert_eq!(
        (le.http_status, le.id.as_deref(), le.reason.as_deref()),
        (Some(403), Some("forbidden"), Some("Forbidden"))
    );
    assert!(u.requeue.is_none(), "no retry loop for permanent errors");
}

#[test]
fn transient_errors_back_off_exponentially_from_status() {
    let s = spec(json!({"type": "reboot", "dropletId": 7}));
    let c = cfg();
    let mut st = DropletActionStatus::default();
    let mut delays = vec![];
    let mut now = t(0);
    for _ in 0..4 {
        let init = expect_initiate(decide(&input(&s, &st, now, &c)));
        let err = DoError::from_parts(
            ErrorKind::Server,
            Some(503),
            Some("server_error"),
            "Unexpected server-side error",
            None,
            None,
        );
        // A 503 on a POST is ambiguous in general; the client reports NotApplied only when it is certain.
        let u = after_post(
            &input(&s, &init.intent_status, now, &c),
            &init,
            Err(PostError::new(err, Applied::NotApplied)),
        );
        assert_eq!(u.status.reason.as_deref(), Some("Retrying"));
        delays.push(u.requeue.unwrap());
        now = u.status.retry.as_ref().unwrap().next_attempt_time.0;
        st = u.status;
    }
    assert!(
        delays
            .windows(2)
            .all(|w| w[1] >= w[0] * 2 || w[1] == c.retry_max),
        "{delays:?}"
    );
}

#[test]
fn tags_resolve_their_droplets_then_fan_out_and_name_failures() {
    let s = spec(json!({"type": "power_cycle", "tagName": "web"}));
    let c = cfg();
    match decide(&input(&s, &DropletActionStatus::default(), t(0), &c)) {
        Next::ResolveTag { tag, status, .. } => {
            assert_eq!(tag, "web");
            assert_eq!(status.target.as_deref(), Some("tag/web"));
        }
        other => panic!("expected tag resolution, got {other:?}"),
    }
    let resolved = DropletActionStatus {
        droplet_ids: vec![1, 2, 3],
        ..Default::default()
    };
    let init = expect_initiate(decide(&input(&s, &resolved, t(0), &c)));
    assert_eq!(init.target, InitTarget::Tag("web".into()));
    assert_eq!(
        init.intent_status
            .pending_initiation
            .as_ref()
            .unwrap()
            .droplet_ids,
        vec![1, 2, 3]
    );
    let posted = Ok(vec![
        action(11, 1, "power_cycle", ActionStatus::InProgress, t(0)),
        action(12, 2, "power_cycle", ActionStatus::InProgress, t(0)),
        action(13, 3, "power_cycle", ActionStatus::InProgress, t(0)),
    ]);
    let st = after_post(&input(&s, &init.intent_status, t(0), &c), &init, posted).status;
    assert_eq!(st.action_summary.as_deref(), Some("0/3"));
    let observed: BTreeMap<i64, Action> = [
        (
            11,
            action(11, 1, "power_cycle", ActionStatus::Completed, t(0)),
        ),
        (
            12,
            action(12, 2, "power_cycle", ActionStatus::Errored, t(0)),
        ),
        (
            13,
            action(13, 3, "power_cycle", ActionStatus::Completed, t(0)),
        ),
    ]
    .into_iter()
    .collect();
    let st = after_track(&st, &observed, &BTreeMap::new(), &BTreeMap::new());
    let u = expect_update(decide(&input(&s, &st, t(10), &c)));
    assert_eq!(u.status.phase, Some(Phase::Failed));
    assert!(
        u.status
            .message
            .as_deref()
            .unwrap()
            .contains("droplet(s) 2")
    );
    assert_eq!(u.status.action_summary.as_deref(), Some("2/3"));
}

#[test]
fn statuses_are_stable_when_nothing_changed() {
    // Same inputs, same output: the reconciler writes status only when something changed.
    let s = spec(json!({"type": "reboot", "dropletId": 7}));
    let st = running(&s, t(0), "reboot");
    let c = cfg();
    let mut i = input(&s, &st, t(3), &c);
    i.tracked = true;
    let a = expect_update(decide(&i)).status;
    let i2 = Input {
        status: &a,
        now: t(4),
        ..i
    };
    let b = expect_update(decide(&i2)).status;
    assert_eq!(a, b);
}
