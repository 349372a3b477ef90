//! Running it like a real deployment: leader election between two operator processes, failover, metrics,
//! health and readiness endpoints, and graceful shutdown on SIGTERM.

mod common;

use std::time::Duration;

use common::{
    ProcessWorld, assert_exactly_once, droplet_action, eventually, post_requests, wait_all_final,
};
use do_sim::{ActionDurations, DEFAULT_SIM_TOKEN, SimConfig};
use droplet_operator::crd::{DropletAction, Phase};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Generous: these wait on conditions, never measure speed.
const WAIT: Duration = Duration::from_secs(60);

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    let code = resp.status().as_u16();
    Some((code, resp.text().await.unwrap_or_default()))
}

async fn create(api: &Api<DropletAction>, name: &str, spec: serde_json::Value) {
    api.create(
        &PostParams::default(),
        &droplet_action(name, "default", spec),
    )
    .await
    .unwrap();
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("droplet-operator")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

/// The value of the `droplet_operator_leader` gauge on `port`.
async fn leader_gauge(port: u16) -> Option<i64> {
    let (_, text) = get(port, "/metrics").await?;
    text.lines()
        .find_map(|l| l.strip_prefix("droplet_operator_leader "))
        .and_then(|v| v.trim().parse().ok())
}

async fn ready(port: u16) -> Option<()> {
    (get(port, "/readyz").await?.0 == 200).then_some(())
}

/// Two replicas with leader election, like `kubectl scale --replicas=2`: both report Ready (a rollout completes),
/// only the leader reconciles and says so in `droplet_operator_leader`; killing the leader mid-flight hands over
/// to the standby, which stays Ready, takes the Lease, logs it, and finishes every action without a second POST
/// request to any droplet. One replica turns leader election on with `LEADER_ELECT=1`, the other with the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_ready_one_leader_fails_over_without_duplicate_posts() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cfg = SimConfig::fast(1.0);
    cfg.generated_droplets = 20;
    cfg.action_durations = ActionDurations::uniform(Duration::from_millis(1500));
    let w = ProcessWorld::start(cfg).await;
    let (sim, emu) = (&w.sim, &w.emu);
    let (port_a, port_b) = (free_port(), free_port());
    let le = [
        "--lease-duration-seconds",
        "2",
        "--leader-election-namespace",
        "default",
    ];
    let a = w.spawn(
        port_a,
        &[&le[..], &["--leader-elect", "--instance", "op-a"]].concat(),
        &[],
    );
    let b = w.spawn(
        port_b,
        &[&le[..], &["--instance", "op-b"]].concat(),
        &[("LEADER_ELECT", "1")],
    );

    let leases: Api<Lease> = Api::namespaced(emu.client(), "default");
    let first = eventually("somebody takes the Lease", WAIT, || holder(&leases)).await;
    let (leader, leader_port, standby, standby_port, other) = if first == "op-a" {
        (a, port_a, b, port_b, "op-b")
    } else {
        (b, port_b, a, port_a, "op-a")
    };

    // Both are Ready: the standby can take over (it has listed DropletActions); leadership is reported apart.
    eventually("the leader is ready", WAIT, || ready(leader_port)).await;
    eventually("the standby is ready", WAIT, || ready(standby_port)).await;
    assert_eq!(get(standby_port, "/healthz").await.map(|r| r.0), Some(200));
    eventually("the leader reports leader=1", WAIT, || async {
        (leader_gauge(leader_port).await? == 1).then_some(())
    })
    .await;
    assert_eq!(
        leader_gauge(standby_port).await,
        Some(0),
        "standby reports leader=0"
    );

    let api: Api<DropletAction> = Api::namespaced(emu.client(), "default");
    for i in 1..=20 {
        create(
            &api,
            &format!("r{i}"),
            json!({"type": "reboot", "dropletId": 200000 + i}),
        )
        .await;
    }
    // Kill the leader while actions are in flight.
    eventually("the leader initiates", WAIT, || async {
        (sim.actions().len() >= 5).then_some(())
    })
    .await;
    let mut leader = leader;
    leader.kill().unwrap();
    leader.wait().unwrap();

    eventually("the standby takes the Lease", WAIT, || async {
        (holder(&leases).await.as_deref() == Some(other)).then_some(())
    })
    .await;
    eventually("the new leader reports leader=1", WAIT, || async {
        (leader_gauge(standby_port).await? == 1).then_some(())
    })
    .await;
    assert_eq!(
        ready(standby_port).await,
        Some(()),
        "still ready after taking over"
    );
    // A kill between recording an intent and sending it stops that resource InitiationUncertain; resolved as a
    // user would, after checking DigitalOcean.
    let (items, resent) = common::finish_after_crash(&api, sim, 20, Duration::from_secs(120)).await;
    eprintln!("{resent} uncertain initiations resent");
    assert!(
        items.iter().all(|d| d.phase() == Phase::Succeeded),
        "{items:#?}"
    );
    for i in 1..=20 {
        let posts = post_requests(sim, 200000 + i);
        assert_eq!(
            posts.len(),
            1,
            "droplet {} got {} POST requests: {posts:#?}",
            200000 + i,
            posts.len()
        );
    }
    assert_exactly_once(&items, sim);
    let logs = w.logs();
    assert!(logs.contains("became the leader"), "{logs}");
    assert!(logs.contains("standby ready"), "{logs}");
    let mut standby = standby;
    standby.kill().unwrap();
    standby.wait().unwrap();
    w.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_readiness_and_graceful_shutdown() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let w = ProcessWorld::start(SimConfig::fast(0.02)).await;
    let emu = &w.emu;
    let port = free_port();
    let mut child = w.spawn(port, &["--log-format", "json"], &[]);

    eventually("ready", WAIT, || ready(port)).await;
    assert_eq!(get(port, "/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(
        leader_gauge(port).await,
        Some(1),
        "without leader election the only instance is the active one"
    );

    let api: Api<DropletAction> = Api::namespaced(emu.client(), "default");
    create(
        &api,
        "metrics-reboot",
        json!({"type": "reboot", "dropletId": 101001}),
    )
    .await;
    create(
        &api,
        "metrics-missing",
        json!({"type": "reboot", "dropletId": 999999}),
    )
    .await;
    wait_all_final(&api, 2, WAIT).await;
    let (code, text) = get(port, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    for needle in [
        "droplet_operator_initiations_total{type=\"reboot\",result=\"ok\"} 1",
        "droplet_operator_actions_finished_total{phase=\"Succeeded\",type=\"reboot\"} 1",
        "droplet_operator_actions_finished_total{phase=\"Failed\",type=\"reboot\"} 1",
        "droplet_operator_digitalocean_requests_total{route=\"POST /v2/droplets/{id}/actions\",status=\"2xx\"} 1",
        "droplet_operator_digitalocean_rate_budget_remaining{window=\"minute\"}",
        "droplet_operator_reconcile_duration_seconds_count",
        "droplet_operator_action_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    // The missing droplet fails with one 404: on the watermark read before its initiation, or, when the other's
    // POST answer just gave a fresh watermark, on its POST.
    let not_found = |route: &str| {
        text.contains(&format!(
            "droplet_operator_digitalocean_requests_total{{route=\"{route}\",status=\"4xx\"}} 1"
        ))
    };
    assert!(
        not_found("GET /v2/droplets/{id}/actions") ^ not_found("POST /v2/droplets/{id}/actions"),
        "one 404 for the missing droplet:\n{text}"
    );
    assert!(
        !text.contains("metrics-reboot") && !text.contains("101001"),
        "no resource names or IDs in labels"
    );

    // SIGTERM: a clean, prompt exit.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = eventually("the process exits on SIGTERM", WAIT, || {
        let s = child.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "exit status {status:?}");
    let logs = w.logs();
    assert!(
        logs.lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| l.starts_with('{')),
        "JSON log lines"
    );
    assert!(
        logs.contains("\"name\":\"metrics-reboot\""),
        "reconcile spans carry the resource name"
    );
    assert!(
        logs.contains("\"action_id\":"),
        "reconcile spans carry the DigitalOcean action ID once known"
    );
    assert!(!logs.contains(DEFAULT_SIM_TOKEN));
    w.shutdown();
}

/// Start-up errors name the flag and the fix and exit 1; an empty token file is an error, an empty
/// DIGITALOCEAN_TOKEN is not (it means no default token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_errors_name_the_flag() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let w = ProcessWorld::start(SimConfig::fast(0.02)).await;
    let empty = w.log.with_file_name("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let empty = empty.to_string_lossy().into_owned();
    let exit = |extra: &[&str], env: &[(&str, &str)]| {
        let mut child = w.spawn(0, extra, env);
        let status = child.wait().unwrap();
        (status.code(), w.logs())
    };
    let (code, logs) = exit(&["--token-file", &empty], &[]);
    assert_eq!(code, Some(1), "{logs}");
    assert!(
        logs.contains("--token-file") && logs.contains("is empty"),
        "{logs}"
    );
    let (code, logs) = exit(&["--poll-scale", "0"], &[]);
    assert_eq!(code, Some(2), "clap refuses it: {logs}");
    assert!(logs.contains("--poll-scale"), "{logs}");
    let (code, logs) = exit(&[], &[("LEADER_ELECT", "maybe")]);
    assert_eq!(code, Some(2), "{logs}");
    assert!(
        logs.contains("LEADER_ELECT") || logs.contains("leader-elect"),
        "{logs}"
    );

    // An empty variable is no default token: the operator runs and becomes ready.
    let port = free_port();
    let mut child = w.spawn(port, &[], &[("DIGITALOCEAN_TOKEN", "")]);
    eventually("ready without a default token", WAIT, || ready(port)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    w.shutdown();
}
