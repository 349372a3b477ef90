//! Every transition of the decision logic, without servers: shared helpers here, the tests by step below.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;
use crate::controller::policy::{backoff, poll_interval};
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
        token: TokenState::Available(crate::digitalocean::Token::new("t")),
        gate: Gate::Free,
        budget_factor: 1.0,
        polling: &PRIOR_POLICY,
        tracked: false,
        last_observed: None,
        resolution: Resolution::None,
        config,
    }
}

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

/// The first initiation of a new resource at t(0).
fn first_initiation(spec: &DropletActionSpec, c: &DecideConfig) -> Initiation {
    expect_initiate(decide(&input(
        spec,
        &DropletActionStatus::default(),
        t(0),
        c,
    )))
}

/// DigitalOcean's 422 for a droplet that runs another action.
fn busy() -> DoError {
    DoError::from_parts(
        ErrorKind::DropletBusy,
        Some(422),
        Some("unprocessable_entity"),
        "Droplet already has a pending event.",
        None,
        None,
    )
}

/// A recorded reboot intent on droplet 7 (`ended`: seconds of `t` when the send ended).
fn reboot_intent(
    requested: Timestamp,
    sent: bool,
    watermark: Option<i64>,
    ended: Option<i64>,
    uncertain: bool,
) -> crate::crd::PendingInitiation {
    crate::crd::PendingInitiation {
        attempt: 1,
        type_: "reboot".into(),
        requested_at: Time(requested),
        sent,
        droplet_ids: vec![7],
        watermark,
        send_ended_at: ended.map(|s| Time(t(s))),
        uncertain,
        resend: false,
    }
}

/// Folds an ambiguous POST outcome (`err`, the request may have been applied) into the intent's status.
fn after_ambiguous(
    spec: &DropletActionSpec,
    init: &Initiation,
    c: &DecideConfig,
    at: Timestamp,
    err: DoError,
) -> Update {
    after_post(
        &input(spec, &init.intent_status, at, c),
        init,
        Err(PostError::new(err, Applied::Ambiguous)),
    )
}

mod active;
mod adopt;
mod initiate;

static PRIOR_POLICY: std::sync::LazyLock<crate::controller::polling::Policy> =
    std::sync::LazyLock::new(crate::controller::polling::Policy::prior_only);

/// The cache keeps a slim copy of finished resources (`controller::slim_for_cache`); deciding on that copy must
/// change nothing, or the reconciler would write the dropped fields away.
#[test]
fn a_finished_resource_slimmed_for_the_cache_decides_no_change() {
    let mut da: crate::crd::DropletAction = serde_json::from_value(json!({
        "apiVersion": "droplet-operator.dev/v1alpha1", "kind": "DropletAction",
        "metadata": {"name": "x", "namespace": "default", "uid": "u1"},
        "spec": {"type": "reboot", "dropletId": 7, "ttlSecondsAfterFinished": 60},
        "status": {"phase": "Succeeded", "reason": "Completed", "message": "done", "target": "droplet/7",
                   "actionSummary": "11", "creationRevision": "5", "dropletIds": [7],
                   "completionTime": "2026-01-01T00:00:06Z",
                   "actions": [{"id": 11, "dropletId": 7, "type": "reboot", "status": "completed",
                                "attempt": 1, "regionSlug": "nyc3"}]},
    }))
    .unwrap();
    crate::controller::slim_for_cache(&mut da);
    let st = da.status.clone().unwrap();
    assert_eq!(st.phase, Some(Phase::Succeeded));
    assert_eq!((st.actions[0].id, st.actions[0].droplet_id), (11, 7));
    assert_eq!(st.droplet_ids, vec![7]);
    assert!(st.reason.is_none() && st.target.is_none() && st.conditions.is_empty());
    let c = cfg();
    let done = Timestamp::from_second(1_767_225_606).unwrap();
    // Before the TTL: the same status, woken when the TTL is due.
    let u = expect_update(decide(&input(&da.spec, &st, done, &c)));
    assert_eq!(u.status, st);
    assert_eq!(u.requeue, Some(Duration::from_secs(60)));
    // After it: deleted, nothing written.
    let later = Timestamp::from_second(1_767_225_666).unwrap();
    assert!(matches!(
        decide(&input(&da.spec, &st, later, &c)),
        Next::Delete
    ));
}
