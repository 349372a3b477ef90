//! Crash safety: the operator runs as a child process and is SIGKILLed at random moments while DigitalOcean
//! also drops responses after applying POSTs. The simulator's log must show that no droplet ever received a
//! second POST for the same DropletAction, and every resource must reach the right final phase.

mod common;

use std::process::Child;
use std::time::Duration;

use common::{ProcessWorld, assert_exactly_once, droplet_action, post_requests, wait_all_final};
use do_sim::{ActionDurations, DEFAULT_SIM_TOKEN, Faults, SimConfig};
use droplet_operator::crd::Phase;
use kube::ResourceExt;
use kube::api::{ListParams, PostParams};
use rand::{Rng, SeedableRng};
use serde_json::json;

const TRIALS: usize = 50;
const PER_TRIAL: usize = 2;

fn spawn_operator(w: &ProcessWorld) -> Child {
    w.spawn(0, &["--log-format", "json"], &[])
}

fn kill(mut child: Child) {
    // Child::kill sends SIGKILL on Unix: no graceful shutdown, no flushing.
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_never_sends_an_action_twice() {
    let mut cfg = SimConfig::fast(1.0);
    cfg.generated_droplets = (TRIALS * PER_TRIAL) as u32;
    cfg.action_durations = ActionDurations::uniform(Duration::from_millis(300));
    // A quarter of the POSTs are applied and then answered by a dropped connection.
    cfg.faults = Faults {
        drop_after_apply_rate: 0.25,
        seed: Some(7),
        ..Faults::default()
    };
    let w = ProcessWorld::start(cfg).await;
    let sim = &w.sim;
    let api = w.api();
    let types = [
        "reboot",
        "power_cycle",
        "power_off",
        "snapshot",
        "enable_ipv6",
    ];

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut killed_running = 0;
    for trial in 0..TRIALS {
        for j in 0..PER_TRIAL {
            let n = trial * PER_TRIAL + j;
            let obj = droplet_action(
                &format!("t{trial}-{j}"),
                "default",
                json!({"type": types[n % types.len()], "dropletId": 200001 + n as i64}),
            );
            api.create(&PostParams::default(), &obj)
                .await
                .expect("create");
        }
        let child = spawn_operator(&w);
        let alive = Duration::from_millis(rng.random_range(30..700));
        tokio::time::sleep(alive).await;
        kill(child);
        killed_running += 1;
    }

    // How far the killed operators got: actions they started, intents they left without recorded IDs.
    let started_before = sim.actions().len();
    let list = api.list(&ListParams::default()).await.unwrap().items;
    let open_intents = list
        .iter()
        .filter(|d| {
            d.status
                .as_ref()
                .is_some_and(|s| s.pending_initiation.is_some())
        })
        .count();
    // The hard case: an intent recorded, then killed before the request left. Those must be sent exactly once
    // later (checked per droplet below); `intent_recorded_nothing_sent_stops_uncertain_then_resends_once_on_request` below
    // builds this case deterministically.
    let nothing_sent: Vec<i64> = list
        .iter()
        .filter(|d| {
            d.status
                .as_ref()
                .is_some_and(|s| s.pending_initiation.is_some() && s.actions.is_empty())
        })
        .filter_map(|d| d.spec.droplet_id)
        .filter(|id| post_requests(sim, *id).is_empty())
        .collect();
    eprintln!(
        "killed operators started {started_before} actions and left {open_intents} intents without recorded IDs, \
         {} of them with nothing sent",
        nothing_sent.len()
    );
    assert!(
        started_before > 0,
        "the killed operators never got to initiate anything"
    );

    // A last operator finishes everything the killed ones left behind.
    let child = spawn_operator(&w);
    // A kill between recording an intent and sending it leaves an initiation whose outcome the operator cannot
    // know: it stops with InitiationUncertain instead of guessing. Resolve those as a user would (resend), after
    // checking that DigitalOcean indeed ran nothing for them.
    let (items, resent) =
        common::finish_after_crash(&api, sim, TRIALS * PER_TRIAL, Duration::from_secs(120)).await;
    eprintln!("{resent} uncertain initiations resent");
    kill(child);

    assert_eq!(killed_running, TRIALS);
    assert_eq!(items.len(), TRIALS * PER_TRIAL);
    for da in &items {
        assert_eq!(
            da.phase(),
            Phase::Succeeded,
            "{}: {:#?}",
            da.name_any(),
            da.status
        );
        let droplet = da.spec.droplet_id.unwrap();
        // POST requests, not only applied ones: a duplicate DigitalOcean refused would count too.
        let posts = post_requests(sim, droplet);
        assert_eq!(
            posts.len(),
            1,
            "{} got {} POST requests: {posts:#?}",
            da.name_any(),
            posts.len()
        );
        assert_eq!(da.status.as_ref().unwrap().actions.len(), 1);
    }
    assert_exactly_once(&items, sim);

    // The runs really exercised the hard cases: responses lost after DigitalOcean applied the POST.
    let dropped = sim
        .actions()
        .iter()
        .filter(|a| {
            sim.posts_for_droplet(a.droplet_id)
                .iter()
                .any(|p| p.response_dropped)
        })
        .count();
    assert!(dropped > 0, "no response was dropped");
    let logs = w.logs();
    let adoptions = logs.matches("\"adopted\"").count();
    eprintln!("{adoptions} adoptions, {dropped} dropped responses");
    assert!(adoptions > 0, "no action was adopted");
    assert!(
        !logs.contains(DEFAULT_SIM_TOKEN),
        "the token must never be logged"
    );
    w.shutdown();
}

/// What a process killed right after recording its intent leaves behind: `status.pendingInitiation` and no request
/// sent. The next operator must not send while a request of the dead one could still be in flight (the request
/// timeout), must look for an action to adopt first, and then send exactly one POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intent_recorded_nothing_sent_stops_uncertain_then_resends_once_on_request() {
    let mut cfg = SimConfig::fast(1.0);
    cfg.action_durations = ActionDurations::uniform(Duration::from_millis(300));
    let w = ProcessWorld::start(cfg).await;
    let sim = &w.sim;
    let api = w.api();
    let droplet = 101002;
    api.create(
        &PostParams::default(),
        &droplet_action(
            "orphan",
            "default",
            json!({"type": "reboot", "dropletId": droplet}),
        ),
    )
    .await
    .unwrap();
    let intent_time = jiff::Timestamp::now();
    api.patch_status(
        "orphan",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"status": {
            "phase": "Pending",
            "reason": "Initiating",
            "startTime": intent_time.to_string(),
            "dropletIds": [droplet],
            "pendingInitiation": {
                "attempt": 1, "type": "reboot", "requestedAt": intent_time.to_string(),
                "sent": false, "dropletIds": [droplet],
            },
        }})),
    )
    .await
    .unwrap();

    let child = spawn_operator(&w);
    // Nothing proves the dead process did not send: the operator never guesses. It looks for the action, waits
    // out the window, then stops InitiationUncertain and says how to resolve it, without sending anything.
    let stuck = common::eventually("InitiationUncertain", Duration::from_secs(60), || async {
        let da = api.get("orphan").await.ok()?;
        (da.status.as_ref()?.reason.as_deref() == Some("InitiationUncertain")).then_some(da)
    })
    .await;
    assert!(
        post_requests(sim, droplet).is_empty(),
        "nothing may be sent while the outcome is unknown"
    );
    let message = stuck
        .status
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap_or_default();
    assert!(
        message.contains(droplet_operator::controller::decide::RESEND_ANNOTATION),
        "the message says how to resend: {message}"
    );
    let looked = sim.requests().iter().any(|r| {
        r.method == "GET" && (r.path.contains(&droplet.to_string()) || r.path == "/v2/actions")
    });
    assert!(looked, "no adoption lookup: {:#?}", sim.requests());
    // The user checks DigitalOcean (nothing ran) and asks for the resend: exactly one POST follows.
    let resent = common::resend_uncertain(&api, sim, &[stuck]).await;
    assert_eq!(resent, vec![droplet]);
    let items = wait_all_final(&api, 1, Duration::from_secs(60)).await;
    kill(child);
    assert_eq!(items[0].phase(), Phase::Succeeded, "{:#?}", items[0].status);
    let posts = post_requests(sim, droplet);
    assert_eq!(posts.len(), 1, "exactly one POST request: {posts:#?}");
    let st = items[0].status.as_ref().unwrap();
    assert!(st.pending_initiation.is_none(), "the intent is closed");
    assert_eq!(st.actions.len(), 1);
    assert_eq!(
        st.actions[0].id, posts[0].action_ids[0],
        "the recorded action is the one sent"
    );
    let waited = posts[0].time.duration_since(intent_time);
    assert!(
        waited >= jiff::SignedDuration::from_secs(1),
        "sent {waited:?} after the intent, while a request of the dead process could still be in flight"
    );
    w.shutdown();
}
