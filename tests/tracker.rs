//! The action tracker against the DigitalOcean simulator: one list serves every resource waiting on the
//! token, a resource whose action such a list saw finish is woken to read it, and reading a finished action
//! never costs another call.

use std::time::{Duration, Instant};

use do_sim::{ActionDurations, DEFAULT_SIM_TOKEN, SimConfig, Simulator};
use droplet_operator::controller::tracker::Tracker;
use droplet_operator::crd::DropletAction;
use droplet_operator::digitalocean::{ActionRequest, ActionStatus, ClientConfig, DoClient, Token};
use kube::runtime::reflector::ObjectRef;

fn owner(name: &str) -> ObjectRef<DropletAction> {
    ObjectRef::new(name).within("default")
}

#[tokio::test]
async fn a_list_for_one_resource_wakes_the_others_it_saw_finish_and_reading_them_is_free() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cfg = SimConfig::fast(1.0);
    cfg.generated_droplets = 2;
    cfg.action_durations = ActionDurations::uniform(Duration::from_millis(200));
    let sim = Simulator::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator");
    let client = DoClient::new(ClientConfig {
        base_url: sim.url(),
        ..ClientConfig::default()
    })
    .unwrap();
    let token = Token::new(DEFAULT_SIM_TOKEN);
    let (wake_tx, mut wake_rx) = tokio::sync::mpsc::unbounded_channel();
    let tracker = Tracker::new(client.clone(), 1.0).with_wake(wake_tx);

    let (a, b) = (owner("a"), owner("b"));
    let first = client
        .post_droplet_action(&token, 200_001, &ActionRequest::Reboot)
        .await
        .unwrap();
    let second = client
        .post_droplet_action(&token, 200_002, &ActionRequest::Reboot)
        .await
        .unwrap();
    let posted_at = Instant::now();
    tracker
        .record(&token, std::slice::from_ref(&first), &a)
        .await;
    tracker
        .record(&token, std::slice::from_ref(&second), &b)
        .await;
    // In flight and cached: the POST's answer is the last observation, so a wake-up can tell whether a poll is due.
    let seen = tracker
        .last_observed(&token, &[second.id])
        .expect("observed");
    assert!(seen <= jiff::Timestamp::now());
    assert!(tracker.last_observed(&token, &[999_999]).is_none());

    tokio::time::sleep(Duration::from_millis(600).saturating_sub(posted_at.elapsed())).await;
    sim.reset_log();
    // `a` polls: one list, which also shows `b`'s action finished.
    let got = tracker
        .observe(
            &token,
            &[(200_001, first.id)],
            Duration::from_millis(10),
            &a,
        )
        .await
        .unwrap();
    assert_eq!(got[&first.id].status, ActionStatus::Completed);
    assert_eq!(sim.requests().len(), 1, "{:?}", sim.requests());
    // `b` is woken (not `a`, which has its answer), and nothing is due for it to wait on any more.
    assert_eq!(wake_rx.try_recv().ok(), Some(b.clone()));
    assert!(wake_rx.try_recv().is_err());
    assert!(tracker.last_observed(&token, &[second.id]).is_none());
    // Reading `b`'s finished action, however strict the freshness asked for, makes no call.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let got = tracker
        .observe(&token, &[(200_002, second.id)], Duration::ZERO, &b)
        .await
        .unwrap();
    assert_eq!(got[&second.id].status, ActionStatus::Completed);
    assert_eq!(sim.requests().len(), 1, "{:?}", sim.requests());
}
