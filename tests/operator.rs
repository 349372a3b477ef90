//! The real controller against the Kubernetes API emulator and the DigitalOcean simulator: what users see in
//! status and events, and which calls DigitalOcean receives (and does not receive).

mod common;

use std::time::Duration;

use common::{World, assert_exactly_once, log_buffer};
use do_sim::{ActionDurations, Faults, SimConfig, TokenSpec};
use droplet_operator::crd::{DropletAction, Phase};
use droplet_operator::digitalocean::Token;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

/// How much later than a 429 a request that was already on its way when the 429 was answered may arrive.
const IN_FLIGHT: Duration = Duration::from_millis(300);

/// After every 429 in `log` that asked to wait `retry_after`, no request arrived before that wait was over.
fn assert_no_request_before_retry_after(log: &[do_sim::RequestRecord], retry_after: Duration) {
    let mut checked = 0;
    for (i, r) in log.iter().enumerate().filter(|(_, r)| r.status == 429) {
        let until = r.at.expect("arrival instant") + retry_after;
        if let Some(next) = log[i + 1..]
            .iter()
            .find(|n| n.at.is_some_and(|at| at < until))
        {
            // The controller may have had requests in flight when the 429 arrived; only a request that arrived
            // after the 429's response could have been sent after it. Requests sent after it start later.
            assert!(
                next.at.unwrap() <= r.at.unwrap() + IN_FLIGHT,
                "request {} arrived {:?} after the 429 of request {} (Retry-After {retry_after:?})",
                next.seq,
                next.at.unwrap() - r.at.unwrap(),
                r.seq
            );
        }
        checked += 1;
    }
    assert!(checked > 0, "the storm produced 429s");
}

fn fast() -> SimConfig {
    SimConfig::fast(0.02)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_ends_as_documented_with_each_action_started_once() {
    let world = World::start(fast()).await;
    let examples = common::create_examples(&world.api(), "default").await;
    let items = world.wait_all_terminal(Duration::from_secs(60)).await;
    common::assert_examples_ended_as_documented(&examples, &items, &world.sim);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_actions_on_one_droplet_run_in_creation_order() {
    let world = World::start(fast()).await;
    // Created in this order (and named so that a creationTimestamp tie sorts the same way).
    world
        .create(
            "a-shutdown",
            json!({"type": "shutdown", "dropletId": 101008}),
        )
        .await;
    world
        .create(
            "b-snapshot",
            json!({"type": "snapshot", "dropletId": 101008}),
        )
        .await;
    world
        .create(
            "c-power-on",
            json!({"type": "power_on", "dropletId": 101008}),
        )
        .await;
    for name in ["a-shutdown", "b-snapshot", "c-power-on"] {
        world.wait_phase(name, Phase::Succeeded, T).await;
    }
    assert_eq!(
        world.sent_posts(101008),
        vec!["shutdown", "snapshot", "power_on"]
    );
    assert!(
        world.sim.requests().iter().all(|r| r.status != 422),
        "never raced DigitalOcean's droplet lock"
    );
    let events = world.events("b-snapshot").await;
    assert!(
        events
            .iter()
            .any(|(r, n)| r == "WaitingForDroplet" && n.contains("a-shutdown")),
        "{events:?}"
    );
    assert_eq!(
        world.sim.droplet(101008).unwrap().status,
        "active",
        "power_on ran last"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errored_actions_fail_after_the_backoff_limit() {
    let mut cfg = fast();
    cfg.faults = Faults {
        errored_droplets: vec![101003],
        ..Faults::default()
    };
    let world = World::start(cfg).await;
    world
        .create(
            "flaky",
            json!({"type": "power_cycle", "dropletId": 101003, "backoffLimit": 1}),
        )
        .await;
    world
        .create("once", json!({"type": "reboot", "dropletId": 101002}))
        .await;
    let da = world.wait_phase("flaky", Phase::Failed, T).await;
    let st = da.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some("ActionErrored"));
    assert_eq!(st.attempts, Some(2));
    assert_eq!(
        st.actions
            .iter()
            .map(|a| (a.attempt, a.status.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "errored"), (2, "errored")]
    );
    assert!(
        st.message
            .unwrap()
            .contains("droplet(s) 101003 (attempt 2 of 2)")
    );
    assert_eq!(
        st.conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .unwrap()
            .status,
        "True"
    );
    assert_eq!(
        world.sent_posts(101003),
        vec!["power_cycle", "power_cycle"],
        "exactly backoffLimit+1 initiations"
    );
    world.wait_phase("once", Phase::Succeeded, T).await;
    assert_eq!(world.sent_posts(101002), vec!["reboot"]);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_droplet_busy_with_an_outside_action_waits_then_succeeds() {
    let mut cfg = fast();
    cfg.action_durations = ActionDurations::uniform(Duration::from_millis(200))
        .with("rebuild", Duration::from_secs(2));
    let world = World::start(cfg).await;
    world.sim.start_external_action(101001, "rebuild");
    world
        .create("reboot", json!({"type": "reboot", "dropletId": 101001}))
        .await;
    world
        .wait_for("reboot", T, |d| {
            d.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("DropletBusy")
        })
        .await;
    let da = world.wait_phase("reboot", Phase::Succeeded, T).await;
    assert!(
        da.status
            .unwrap()
            .last_error
            .is_some_and(|e| e.message.contains("pending event"))
    );
    // 422 "pending event" refusals while the outside action runs, then one accepted POST and nothing after it.
    world.assert_refused_then_one_accepted(101001, 422);
    assert!(
        world
            .events("reboot")
            .await
            .iter()
            .any(|(r, _)| r == "DropletBusy")
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_fails_an_action_that_takes_too_long() {
    let mut cfg = fast();
    cfg.action_durations = ActionDurations::uniform(Duration::from_secs(60));
    let world = World::start(cfg).await;
    world.create("slow", json!({"type": "resize", "dropletId": 101007, "size": "s-8vcpu-16gb", "deadlineSeconds": 2})).await;
    let da = world.wait_phase("slow", Phase::Failed, T).await;
    let st = da.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some("DeadlineExceeded"));
    assert!(st.message.unwrap().contains("cannot cancel"));
    assert_eq!(world.sent_posts(101007), vec!["resize"]);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_errored_shutdown_falls_back_to_power_off() {
    let mut cfg = fast();
    cfg.faults = Faults {
        errored_types: vec!["shutdown".into()],
        ..Faults::default()
    };
    let world = World::start(cfg).await;
    world
        .create(
            "stop",
            json!({"type": "shutdown", "dropletId": 101008, "powerOffAfterSeconds": 60}),
        )
        .await;
    let da = world.wait_phase("stop", Phase::Succeeded, T).await;
    let kinds: Vec<(String, String)> = da
        .status
        .unwrap()
        .actions
        .iter()
        .map(|a| (a.type_.clone(), a.status.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("shutdown".into(), "errored".into()),
            ("power_off".into(), "completed".into())
        ]
    );
    assert_eq!(world.sent_posts(101008), vec!["shutdown", "power_off"]);
    assert_eq!(world.sim.droplet(101008).unwrap().status, "off");
    assert!(
        world
            .events("stop")
            .await
            .iter()
            .any(|(r, _)| r == "PowerOffFallback")
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_checks_power_and_needs_no_fallback() {
    let world = World::start(fast()).await;
    world
        .create(
            "stop",
            json!({"type": "shutdown", "dropletId": 101008, "powerOffAfterSeconds": 60}),
        )
        .await;
    let da = world.wait_phase("stop", Phase::Succeeded, T).await;
    let st = da.status.unwrap();
    assert_eq!(st.actions.len(), 1);
    assert_eq!(st.actions[0].droplet_status.as_deref(), Some("off"));
    assert_eq!(world.sent_posts(101008), vec!["shutdown"]);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_slows_the_controller_down_but_everything_completes_once() {
    let mut cfg = fast();
    cfg.faults = Faults {
        burst_429: 25,
        burst_retry_after_secs: 2,
        ..Faults::default()
    };
    let world = World::start(cfg).await;
    for (i, d) in [101001, 101002, 101003, 101008, 101012].iter().enumerate() {
        world
            .create(&format!("r{i}"), json!({"type": "reboot", "dropletId": d}))
            .await;
    }
    let items = world.wait_all_terminal(Duration::from_secs(60)).await;
    assert!(
        items.iter().all(|d| d.phase() == Phase::Succeeded),
        "{items:#?}"
    );
    for d in [101001, 101002, 101003, 101008, 101012] {
        let statuses = world.post_statuses(d);
        if statuses.len() > 1 {
            world.assert_refused_then_one_accepted(d, 429);
        } else {
            assert_eq!(world.sent_posts(d), vec!["reboot"]);
        }
    }
    // Retry-After was honoured: after each 429 no request with that token arrived before the wait it asked for.
    assert_no_request_before_retry_after(&world.sim.requests(), Duration::from_secs(2));
    assert!(
        world
            .sim
            .requests()
            .iter()
            .filter(|r| r.status == 429)
            .count()
            >= 20
    );
    assert_exactly_once(&items, &world.sim);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_secret_keeps_the_resource_pending_until_it_appears() {
    let world = World::start(fast()).await;
    world
        .create("with-secret", json!({"type": "power_on", "dropletId": 101006, "tokenSecretRef": {"name": "do-token"}}))
        .await;
    let da = world
        .wait_for("with-secret", T, |d| {
            d.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("TokenNotFound")
        })
        .await;
    assert_eq!(da.phase(), Phase::Pending);
    assert!(
        da.status
            .unwrap()
            .message
            .unwrap()
            .contains("Secret default/do-token")
    );
    assert!(
        world.sent_posts(101006).is_empty(),
        "nothing sent without a token"
    );
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "do-token", "namespace": "default"},
        "stringData": {"token": do_sim::DEFAULT_SIM_TOKEN},
    }))
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(world.client.clone(), "default");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    world.wait_phase("with-secret", Phase::Succeeded, T).await;
    assert_eq!(world.sent_posts(101006), vec!["power_on"]);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_fail_with_digitaloceans_words_and_the_token_never_leaks() {
    let good = "dop_v1_1eaf0000000000000000000000000000000000000000000000000000c0ffee11";
    let wrong = "dop_v1_badbadbadbad00000000000000000000000000000000000000000000000bad22";
    let limited = "dop_v1_11m17ed000000000000000000000000000000000000000000000000000aaa33";
    let mut cfg = fast();
    cfg.tokens = vec![
        TokenSpec::full(good),
        TokenSpec::scoped(limited, &["droplet:read", "droplet:update", "actions:read"]),
    ];
    let world = World::start_with_token(cfg, Some(Token::new(good))).await;
    let secrets: Api<Secret> = Api::namespaced(world.client.clone(), "default");
    for (name, token) in [("wrong", wrong), ("limited", limited)] {
        let s: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": {"token": token},
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    world
        .create(
            "unauthorized",
            json!({"type": "reboot", "dropletId": 101001, "tokenSecretRef": {"name": "wrong"}}),
        )
        .await;
    world.create("forbidden", json!({"type": "restore", "dropletId": 101004, "image": 701001, "tokenSecretRef": {"name": "limited"}})).await;
    world
        .create(
            "missing-droplet",
            json!({"type": "reboot", "dropletId": 999999}),
        )
        .await;
    world
        .create("fine", json!({"type": "reboot", "dropletId": 101002}))
        .await;

    let da = world.wait_phase("unauthorized", Phase::Failed, T).await;
    let le = da.status.as_ref().unwrap().last_error.clone().unwrap();
    assert_eq!(
        (le.http_status, le.reason.as_deref()),
        (Some(401), Some("Unauthorized"))
    );
    let da = world.wait_phase("forbidden", Phase::Failed, T).await;
    let st = da.status.as_ref().unwrap();
    assert_eq!(st.last_error.as_ref().unwrap().http_status, Some(403));
    assert!(
        st.message.as_ref().unwrap().contains("droplet:admin"),
        "scope hint: {:?}",
        st.message
    );
    assert!(st.last_error.as_ref().unwrap().request_id.is_some());
    let da = world.wait_phase("missing-droplet", Phase::Failed, T).await;
    assert_eq!(
        da.status.as_ref().unwrap().reason.as_deref(),
        Some("NotFound")
    );
    world.wait_phase("fine", Phase::Succeeded, T).await;

    // Permanent errors are not retried: once every resource is final (a final phase is never re-initiated), the
    // 401 was answered to exactly one POST.
    world.wait_all_terminal(T).await;
    // (The 401 arrives on the watermark read that precedes every initiation: nothing is POSTed with that token.)
    let posts_401 = world
        .sim
        .requests()
        .iter()
        .filter(|r| r.status == 401)
        .count();
    let r401: Vec<_> = world
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.status == 401)
        .map(|r| (r.method, r.path, r.time))
        .collect();
    assert_eq!(posts_401, 1, "a 401 is not retried: {r401:?}");

    // The token appears nowhere users or log collectors can see.
    let all = world.wait_all_terminal(T).await;
    let status_text = serde_json::to_string(&all).unwrap();
    let events_api: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(world.client.clone(), "default");
    let events_text =
        serde_json::to_string(&events_api.list(&Default::default()).await.unwrap().items).unwrap();
    let logs = String::from_utf8_lossy(&log_buffer().lock().unwrap()).to_string();
    assert!(!logs.is_empty(), "logs were captured");
    for token in [good, wrong, limited] {
        assert!(!status_text.contains(token), "token in status");
        assert!(!events_text.contains(token), "token in events");
        assert!(!logs.contains(token), "token in logs");
    }
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_responses_are_adopted_not_resent() {
    let mut cfg = fast();
    // Every POST is applied, then the connection is dropped before the response.
    cfg.faults = Faults {
        drop_after_apply_rate: 1.0,
        ..Faults::default()
    };
    let world = World::start(cfg).await;
    world
        .create("lost", json!({"type": "power_off", "dropletId": 101011}))
        .await;
    world
        .create("lost-tag", json!({"type": "power_cycle", "tagName": "web"}))
        .await;
    let da = world.wait_phase("lost", Phase::Succeeded, T).await;
    assert_eq!(world.sent_posts(101011), vec!["power_off"], "never re-sent");
    assert!(
        world
            .events("lost")
            .await
            .iter()
            .any(|(r, _)| r == "Adopted")
    );
    assert_eq!(da.status.unwrap().actions.len(), 1);
    let da = world.wait_phase("lost-tag", Phase::Succeeded, T).await;
    assert_eq!(da.status.unwrap().actions.len(), 3);
    for d in [101001, 101002, 101003] {
        assert_eq!(world.applied_posts_of(d), vec!["power_cycle"]);
    }
    assert_eq!(
        common::tag_post_requests(&world.sim, "web").len(),
        1,
        "one POST request for the tag, never re-sent"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_deletes_finished_resources_and_not_after_sends_nothing() {
    let world = World::start(fast()).await;
    world
        .create(
            "short-lived",
            json!({"type": "reboot", "dropletId": 101012, "ttlSecondsAfterFinished": 1}),
        )
        .await;
    world
        .create(
            "too-late",
            json!({"type": "reboot", "dropletId": 101001, "notAfter": "2001-01-01T00:00:00Z"}),
        )
        .await;
    // Succeeded, then deleted 1 s later: a poll can miss the short Succeeded window, so wait for the deletion and
    // check the Succeeded event and the one POST afterwards.
    common::eventually("deleted after its TTL", T, || async {
        world
            .api()
            .get_opt("short-lived")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    common::eventually("a Succeeded event for short-lived", T, || async {
        let events = world.events("short-lived").await;
        events
            .iter()
            .any(|(reason, _)| reason == "Succeeded")
            .then_some(())
    })
    .await;
    assert_eq!(world.sent_posts(101012), vec!["reboot".to_string()]);
    let da = world.wait_phase("too-late", Phase::Expired, T).await;
    assert_eq!(
        da.status
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .unwrap()
            .status,
        "True"
    );
    assert!(world.sent_posts(101001).is_empty());
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_actions_are_tracked_with_few_calls() {
    let mut cfg = SimConfig::fast(0.02);
    cfg.generated_droplets = 40;
    // With the test poll scale the list interval is ~0.1 s, so a 1 s action costs ~10 list polls in total,
    // whatever the number of actions.
    cfg.action_durations = ActionDurations::uniform(Duration::from_secs(1));
    let world = World::start(cfg).await;
    for i in 1..=40 {
        world
            .create(
                &format!("r{i}"),
                json!({"type": "power_cycle", "dropletId": 200000 + i}),
            )
            .await;
    }
    let items = world.wait_all_terminal(Duration::from_secs(60)).await;
    assert!(items.iter().all(|d| d.phase() == Phase::Succeeded));
    let requests = world.sim.requests();
    let posts = requests.iter().filter(|r| r.method == "POST").count();
    // An initiation reads the account's newest action ID for its exactly-once watermark only when no answer
    // showed it recently, and initiations starting together share that read: a burst costs a few, not 40.
    let watermark_reads = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/v2/actions")
        .filter(|r| {
            r.query
                .as_deref()
                .is_some_and(|q| q.split('&').any(|kv| kv == "per_page=1"))
        })
        .count();
    let polls = requests.len() - posts - watermark_reads;
    assert_eq!(posts, 40);
    assert!(
        (1..=10).contains(&watermark_reads),
        "{watermark_reads} watermark reads for {posts} initiations in one burst"
    );
    // One list call observes every action; per-action polling would need several calls per action.
    let mut by_path = std::collections::BTreeMap::new();
    for r in requests.iter().filter(|r| r.method != "POST") {
        let key = if r.path.starts_with("/v2/droplets/") {
            "/v2/droplets/{id}/..."
        } else {
            r.path.as_str()
        };
        *by_path.entry(key.to_string()).or_insert(0) += 1;
    }
    assert!(
        polls < 40,
        "{polls} status calls for 40 actions: {by_path:?}"
    );
    assert!(requests.iter().any(|r| {
        r.path == "/v2/actions"
            && r.query
                .as_deref()
                .is_some_and(|q| q.contains("per_page=200"))
    }));
    world.stop().await;
}

/// The event reasons README.md lists under "Events (reasons)", read from the README itself so the list and this
/// test cannot drift apart.
fn documented_event_reasons() -> Vec<String> {
    let readme = include_str!("../README.md");
    let start = readme
        .find("Events (reasons):")
        .expect("README lists event reasons")
        + "Events (reasons):".len();
    let end = start + readme[start..].find("\n\n").expect("end of the list");
    readme[start..end]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Every event reason the README documents is published as a Kubernetes Event by a real run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_event_reason_is_published() {
    let mut cfg = fast();
    cfg.action_durations = ActionDurations::uniform(Duration::from_millis(200))
        .with("rebuild", Duration::from_secs(2))
        .with("snapshot", Duration::from_secs(30));
    cfg.faults = Faults {
        drop_after_apply_next: 1,
        errored_droplets: vec![101003],
        errored_types: vec!["shutdown".into()],
        ..Faults::default()
    };
    let world = World::start(cfg).await;
    // Adopted: the first applied POST loses its response.
    world
        .create("lost", json!({"type": "reboot", "dropletId": 101001}))
        .await;
    world.wait_phase("lost", Phase::Succeeded, T).await;
    world.sim.start_external_action(101007, "rebuild");
    let specs = [
        ("ok", json!({"type": "reboot", "dropletId": 101002})),
        ("first", json!({"type": "power_cycle", "dropletId": 101012})),
        ("second", json!({"type": "reboot", "dropletId": 101012})),
        ("busy", json!({"type": "reboot", "dropletId": 101007})),
        (
            "errored",
            json!({"type": "reboot", "dropletId": 101003, "backoffLimit": 1}),
        ),
        (
            "fallback",
            json!({"type": "shutdown", "dropletId": 101008, "powerOffAfterSeconds": 30}),
        ),
        ("missing", json!({"type": "reboot", "dropletId": 999999})),
        (
            "deadline",
            json!({"type": "snapshot", "dropletId": 101005, "deadlineSeconds": 1}),
        ),
        (
            "too-late",
            json!({"type": "reboot", "dropletId": 101004, "notAfter": "2001-01-01T00:00:00Z"}),
        ),
        (
            "no-tag",
            json!({"type": "power_cycle", "tagName": "no-such-tag"}),
        ),
        (
            "no-secret",
            json!({"type": "reboot", "dropletId": 101006, "tokenSecretRef": {"name": "absent"}}),
        ),
    ];
    for (name, spec) in &specs {
        world.create(name, spec.clone()).await;
    }
    for (name, _) in specs.iter().filter(|(n, _)| *n != "no-secret") {
        world.wait_for(name, T, |d| d.phase().is_terminal()).await;
    }
    let documented = documented_event_reasons();
    assert!(documented.len() >= 12, "{documented:?}");
    let seen = common::eventually("every documented reason as an Event", T, || async {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(world.client.clone(), "default");
        let seen: std::collections::BTreeSet<String> = api
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        documented.iter().all(|r| seen.contains(r)).then_some(seen)
    })
    .await;
    assert!(
        seen.contains("Adopted") && seen.contains("TokenNotFound"),
        "{seen:?}"
    );
    world.stop().await;
}

/// `tokenSecretRef` names a Secret in the DropletAction's own namespace: two namespaces with a Secret of the same
/// name use their own tokens, and a Secret of another namespace is never used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_secret_refs_resolve_in_the_resources_own_namespace() {
    let full = "dop_v1_a000000000000000000000000000000000000000000000000000000000000aa1";
    let read_only = "dop_v1_b000000000000000000000000000000000000000000000000000000000000bb2";
    let mut cfg = fast();
    cfg.tokens = vec![
        TokenSpec::full(full),
        TokenSpec::scoped(read_only, &["droplet:read", "actions:read"]),
    ];
    // No default token: every resource must find its own.
    let world = World::start_with_token(cfg, None).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(world.client.clone());
    for ns in ["team-a", "team-b"] {
        let n = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .unwrap();
        namespaces.create(&PostParams::default(), &n).await.unwrap();
    }
    for (ns, name, token) in [
        ("team-a", "do-token", full),
        ("team-b", "do-token", read_only),
        ("team-a", "a-only", full),
    ] {
        let s: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": ns},
            "stringData": {"token": token},
        }))
        .unwrap();
        Api::<Secret>::namespaced(world.client.clone(), ns)
            .create(&PostParams::default(), &s)
            .await
            .unwrap();
    }
    let a: Api<DropletAction> = Api::namespaced(world.client.clone(), "team-a");
    let b: Api<DropletAction> = Api::namespaced(world.client.clone(), "team-b");
    for (ns, name, droplet, secret) in [
        ("team-a", "reboot", 101001, "do-token"),
        ("team-b", "reboot", 101002, "do-token"),
        ("team-b", "borrow", 101003, "a-only"),
    ] {
        let spec =
            json!({"type": "reboot", "dropletId": droplet, "tokenSecretRef": {"name": secret}});
        Api::<DropletAction>::namespaced(world.client.clone(), ns)
            .create(
                &PostParams::default(),
                &common::droplet_action(name, ns, spec),
            )
            .await
            .unwrap();
    }
    let wait = |api: Api<DropletAction>, name: &'static str, pred: fn(&DropletAction) -> bool| async move {
        common::eventually(name, T, || {
            let api = api.clone();
            async move { api.get(name).await.ok().filter(pred) }
        })
        .await
    };
    wait(a.clone(), "reboot", |d| d.phase() == Phase::Succeeded).await;
    let da = wait(b.clone(), "reboot", |d| d.phase() == Phase::Failed).await;
    let le = da.status.unwrap().last_error.unwrap();
    assert_eq!(
        (le.http_status, le.reason.as_deref()),
        (Some(403), Some("Forbidden")),
        "team-b used its own (read-only) token, not team-a's"
    );
    let da = wait(b.clone(), "borrow", |d| {
        d.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("TokenNotFound")
    })
    .await;
    assert!(
        da.status
            .unwrap()
            .message
            .unwrap()
            .contains("team-b/a-only"),
        "looked for the Secret in its own namespace"
    );
    assert_eq!(world.sent_posts(101001), vec!["reboot"]);
    assert!(
        world.sent_posts(101003).is_empty(),
        "nothing sent without its own token"
    );
    world.stop().await;
}

/// More work than 220 requests in a minute: the operator keeps to its budget of 220 requests in any 60 s at
/// DigitalOcean (measured at the simulator, by arrival time) and never meets a 429, so DigitalOcean's own limit
/// (250/min) stays free for other clients of the token. Takes a little over a minute of wall time by nature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_work_than_the_rate_budget_stays_under_220_a_minute_without_429() {
    const N: i64 = 240;
    let mut cfg = SimConfig::fast(0.02);
    cfg.generated_droplets = N as u32;
    cfg.action_durations = ActionDurations::uniform(Duration::from_millis(200));
    cfg.rate_limit_per_minute = Some(250);
    cfg.rate_limit_per_hour = Some(5000);
    let world = World::start(cfg).await;
    for i in 1..=N {
        world
            .create(
                &format!("r{i}"),
                json!({"type": "reboot", "dropletId": 200000 + i}),
            )
            .await;
    }
    let items = common::wait_all_final(&world.api(), N as usize, Duration::from_secs(300)).await;
    assert!(items.iter().all(|d| d.phase() == Phase::Succeeded));
    let log = world.sim.requests();
    assert!(
        log.len() > 220,
        "the work needed more than one minute's budget: {}",
        log.len()
    );
    let busiest = world.sim.max_requests_in_window(Duration::from_secs(60));
    assert!(
        busiest <= 220,
        "{busiest} requests arrived within one 60 s window"
    );
    let limited: Vec<_> = log.iter().filter(|r| r.status == 429).collect();
    assert!(limited.is_empty(), "429s: {limited:#?}");
    for i in 1..=N {
        assert_eq!(world.sent_posts(200000 + i), vec!["reboot"]);
    }
    world.stop().await;
}
