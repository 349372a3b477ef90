//! Every transition of the decision logic, without servers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;
use crate::crd::{DropletActionSpec, DropletActionStatus, Phase};
use crate::digitalocean::{Action, ActionStatus, Applied, DoError, ErrorKind, PostError};

fn spec(v: serde_json::Value) -> DropletActionSpec {
    serde_json::from_value(v).unwrap()
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn cfg() -> DecideConfig {
    DecideConfig::default()
}

fn input<'a>(
    spec: &'a DropletActionSpec,
    status: &'a DropletActionStatus,
    now: Timestamp,
    config: &'a DecideConfig,
) -> Input<'a> {
    Input {
        spec,
        status,
        generation: 1,
        now,
        token: TokenState::Available,
        gate: Gate::Free,
        budget_factor: 1.0,
        polling: &PRIOR_POLICY,
        tracked: false,
        config,
    }
}

static PRIOR_POLICY: std::sync::LazyLock<crate::controller::polling::Policy> =
    std::sync::LazyLock::new(crate::controller::polling::Policy::prior_only);

fn action(id: i64, droplet: i64, type_: &str, status: ActionStatus, started: Timestamp) -> Action {
    Action {
        id,
        status,
        type_: type_.into(),
        started_at: Some(started),
        completed_at: None,
        resource_id: Some(droplet),
        resource_type: Some("droplet".into()),
        region_slug: Some("nyc3".into()),
    }
}

fn cond<'a>(st: &'a DropletActionStatus, type_: &str) -> &'a str {
    st.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
        .unwrap_or("absent")
}

fn expect_update(next: Next) -> Update {
    match next {
        Next::Update(u) => u,
        other => panic!("expected a status update, got {other:?}"),
    }
}

fn expect_initiate(next: Next) -> Initiation {
    match next {
        Next::Initiate(i) => i,
        other => panic!("expected an initiation, got {other:?}"),
    }
}

/// Runs a first initiation to the point where DigitalOcean accepted it.
fn running(spec: &DropletActionSpec, started: Timestamp, action_type: &str) -> DropletActionStatus {
    let c = cfg();
    let empty = DropletActionStatus::default();
    let init = expect_initiate(decide(&input(spec, &empty, started, &c)));
    let droplet = spec.droplet_id.unwrap_or(1);
    let posted = Ok(vec![action(
        500,
        droplet,
        action_type,
        ActionStatus::InProgress,
        started,
    )]);
    after_post(
        &input(spec, &init.intent_status, started, &c),
        &init,
        posted,
    )
    .status
}

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
fn a_recorded_intent_is_adopted_not_resent() {
    let s = spec(json!({"type": "reboot", "dropletId": 7}));
    let c = cfg();
    let init = expect_initiate(decide(&input(
        &s,
        &DropletActionStatus::default(),
        t(0),
        &c,
    )));
    // The process died after recording the intent: the next reconcile must look, not post.
    match decide(&input(&s, &init.intent_status, t(5), &c)) {
        Next::Adopt(a) => assert_eq!(a.intent.type_, "reboot"),
        other => panic!("expected adoption, got {other:?}"),
    }
}

#[test]
fn adoption_takes_the_matching_unclaimed_action() {
    let intent = crate::crd::PendingInitiation {
        attempt: 1,
        type_: "reboot".into(),
        requested_at: Time(t(100)),
        sent: false,
        droplet_ids: vec![7],
    };
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
        pending_initiation: Some(intent.clone()),
        ..Default::default()
    };
    st.phase = Some(Phase::Pending);
    let c = cfg();
    match after_adopt(&input(&s, &st, t(105), &c), &intent, &found) {
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
fn without_a_match_it_waits_out_the_grace_period_then_initiates_again() {
    let s = spec(json!({"type": "reboot", "dropletId": 7}));
    let c = cfg();
    let init = expect_initiate(decide(&input(
        &s,
        &DropletActionStatus::default(),
        t(0),
        &c,
    )));
    let intent = init.intent_status.pending_initiation.clone().unwrap();
    // Within the grace period a request could still arrive at DigitalOcean.
    match after_adopt(&input(&s, &init.intent_status, t(10), &c), &intent, &[]) {
        AdoptOutcome::Wait(u) => {
            assert!(u.status.pending_initiation.is_some());
            assert_eq!(u.status.reason.as_deref(), Some("Adopting"));
        }
        other => panic!("expected to wait, got {other:?}"),
    }
    // After it, nothing started for certain: clear the intent and initiate again.
    let later = t(c.adopt_grace.as_secs() as i64 + 1);
    let st = match after_adopt(&input(&s, &init.intent_status, later, &c), &intent, &[]) {
        AdoptOutcome::NothingStarted(st) => st,
        other => panic!("expected nothing started, got {other:?}"),
    };
    assert!(st.pending_initiation.is_none());
    let again = expect_initiate(decide(&input(&s, &st, later, &c)));
    assert_eq!(again.attempt, 1, "a re-sent initiation is the same attempt");
}

#[test]
fn an_ambiguous_post_keeps_the_intent_for_adoption() {
    let s = spec(json!({"type": "power_off", "dropletId": 7}));
    let c = cfg();
    let init = expect_initiate(decide(&input(
        &s,
        &DropletActionStatus::default(),
        t(0),
        &c,
    )));
    let err = DoError::from_parts(
        ErrorKind::Transport,
        None,
        None,
        "connection closed before message completed",
        None,
        None,
    );
    let u = after_post(
        &input(&s, &init.intent_status, t(1), &c),
        &init,
        Err(PostError::new(err, Applied::Ambiguous)),
    );
    let intent = u.status.pending_initiation.as_ref().expect("intent kept");
    assert!(intent.sent);
    assert_eq!(u.status.reason.as_deref(), Some("Adopting"));
    assert!(matches!(
        decide(&input(&s, &u.status, t(2), &c)),
        Next::Adopt(_)
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
    let init = expect_initiate(decide(&input(
        &s,
        &DropletActionStatus::default(),
        t(0),
        &c,
    )));
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
    // While the shutdown runs, DigitalOcean would refuse power_off (the droplet is locked): keep tracking.
    assert!(matches!(decide(&input(&s, &st, t(40), &c)), Next::Track(_)));
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
fn tags_resolve_their_droplets_then_fan_out_and_name_failures() {
    let s = spec(json!({"type": "power_cycle", "tagName": "web"}));
    let c = cfg();
    match decide(&input(&s, &DropletActionStatus::default(), t(0), &c)) {
        Next::ResolveTag { tag, status } => {
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
