//! Crash safety: the operator runs as a child process and is SIGKILLed at random moments while DigitalOcean
//! also drops responses after applying POSTs. The simulator's log must show that no droplet ever received a
//! second POST for the same DropletAction, and every resource must reach the right final phase.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::{assert_exactly_once, kill, servers};
use do_sim::{ActionDurations, DEFAULT_SIM_TOKEN, Faults, SimConfig};
use droplet_operator::crd::{DropletAction, Phase};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use rand::{Rng, SeedableRng};
use serde_json::json;

const TRIALS: usize = 50;
const PER_TRIAL: usize = 2;

fn spawn_operator(kubeconfig: &std::path::Path, do_url: &str, log: &std::path::Path) -> Child {
    common::spawn_operator_process(kubeconfig, do_url, log, &[])
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
    let (sim, emu) = servers(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig, "default").unwrap();
    let log = dir.path().join("operator.log");
    let api: Api<DropletAction> = Api::namespaced(emu.client(), "default");
    let do_url = sim.url().to_string();
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
            let obj: DropletAction = serde_json::from_value(json!({
                "apiVersion": "droplet-operator.dev/v1alpha1", "kind": "DropletAction",
                "metadata": {"name": format!("t{trial}-{j}")},
                "spec": {"type": types[n % types.len()], "dropletId": 200001 + n as i64},
            }))
            .unwrap();
            api.create(&PostParams::default(), &obj)
                .await
                .expect("create");
        }
        let child = spawn_operator(&kubeconfig, &do_url, &log);
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
    eprintln!(
        "killed operators started {started_before} actions and left {open_intents} intents without recorded IDs"
    );
    assert!(
        started_before > 0,
        "the killed operators never got to initiate anything"
    );

    // A last operator finishes everything the killed ones left behind.
    let child = spawn_operator(&kubeconfig, &do_url, &log);
    let start = Instant::now();
    let items = loop {
        let items = api.list(&ListParams::default()).await.unwrap().items;
        if items.iter().all(|d| d.phase().is_terminal())
            || start.elapsed() > Duration::from_secs(120)
        {
            break items;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
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
        let posts = sim.posts_for_droplet(droplet);
        assert_eq!(
            posts.len(),
            1,
            "{} was initiated {} times: {posts:#?}",
            da.name_any(),
            posts.len()
        );
        assert_eq!(da.status.as_ref().unwrap().actions.len(), 1);
    }
    assert_exactly_once(&items, &sim);

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
    let logs = std::fs::read_to_string(&log).unwrap();
    let adoptions = logs.matches("\"adopted\"").count();
    eprintln!("{adoptions} adoptions, {dropped} dropped responses");
    assert!(adoptions > 0, "no action was adopted");
    assert!(
        !logs.contains(DEFAULT_SIM_TOKEN),
        "the token must never be logged"
    );
    emu.shutdown();
    sim.shutdown();
}
