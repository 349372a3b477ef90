//! Running it like a real deployment: leader election between two operator processes, failover, metrics,
//! health and readiness endpoints, and graceful shutdown on SIGTERM.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_exactly_once, servers};
use do_sim::{ActionDurations, DEFAULT_SIM_TOKEN, SimConfig};
use droplet_operator::crd::{DropletAction, Phase};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(
    kubeconfig: &std::path::Path,
    do_url: &str,
    port: u16,
    extra: &[&str],
    log: &std::path::Path,
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let metrics = format!("127.0.0.1:{port}");
    let mut args = vec![
        "run",
        "--do-api-url",
        do_url,
        "--metrics-addr",
        &metrics,
        "--do-timeout-seconds",
        "1",
        "--poll-scale",
        "0.05",
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_droplet-operator"))
        .args(&args)
        .env("KUBECONFIG", kubeconfig)
        .env("DIGITALOCEAN_TOKEN", DEFAULT_SIM_TOKEN)
        .env("RUST_LOG", "droplet_operator=info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    let code = resp.status().as_u16();
    Some((code, resp.text().await.unwrap_or_default()))
}

async fn create(api: &Api<DropletAction>, name: &str, spec: serde_json::Value) {
    let obj: DropletAction = serde_json::from_value(json!({
        "apiVersion": "droplet-operator.dev/v1alpha1", "kind": "DropletAction",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_fails_over_without_duplicate_posts() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cfg = SimConfig::fast(1.0);
    cfg.generated_droplets = 20;
    cfg.action_durations = ActionDurations::uniform(Duration::from_millis(1500));
    let (sim, emu) = servers(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig, "default").unwrap();
    let log = dir.path().join("ops.log");
    let do_url = sim.url().to_string();
    let (port_a, port_b) = (free_port(), free_port());
    let le = [
        "--leader-elect",
        "--lease-duration-seconds",
        "2",
        "--leader-election-namespace",
        "default",
    ];
    let a = spawn(
        &kubeconfig,
        &do_url,
        port_a,
        &[&le[..], &["--instance", "op-a"]].concat(),
        &log,
    );
    let b = spawn(
        &kubeconfig,
        &do_url,
        port_b,
        &[&le[..], &["--instance", "op-b"]].concat(),
        &log,
    );

    let leases: Api<Lease> = Api::namespaced(emu.client(), "default");
    let start = Instant::now();
    let first = loop {
        if let Some(h) = holder(&leases).await {
            break h;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nobody took the Lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (leader, leader_port, standby, standby_port, other) = if first == "op-a" {
        (a, port_a, b, port_b, "op-b")
    } else {
        (b, port_b, a, port_a, "op-a")
    };

    let api: Api<DropletAction> = Api::namespaced(emu.client(), "default");
    for i in 1..=20 {
        create(
            &api,
            &format!("r{i}"),
            json!({"type": "reboot", "dropletId": 200000 + i}),
        )
        .await;
    }
    // The leader is ready (caches synced); the standby is alive but not ready: it does not reconcile.
    let start = Instant::now();
    while get(leader_port, "/readyz").await.map(|r| r.0) != Some(200) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "leader never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(standby_port, "/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(get(standby_port, "/readyz").await.map(|r| r.0), Some(503));

    // Kill the leader while actions are in flight.
    let start = Instant::now();
    while sim.actions().len() < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the leader did not initiate anything"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut leader = leader;
    leader.kill().unwrap();
    leader.wait().unwrap();

    let start = Instant::now();
    while holder(&leases).await.as_deref() != Some(other) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the standby never took over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = Instant::now();
    let items = loop {
        let items = api.list(&ListParams::default()).await.unwrap().items;
        if items.iter().all(|d| d.phase().is_terminal())
            || start.elapsed() > Duration::from_secs(60)
        {
            break items;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        items.iter().all(|d| d.phase() == Phase::Succeeded),
        "{items:#?}"
    );
    for i in 1..=20 {
        assert_eq!(
            sim.posts_for_droplet(200000 + i).len(),
            1,
            "droplet {} got a duplicate POST",
            200000 + i
        );
    }
    assert_exactly_once(&items, &sim);
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("became the leader"));
    let mut standby = standby;
    standby.kill().unwrap();
    standby.wait().unwrap();
    emu.shutdown();
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_readiness_and_graceful_shutdown() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (sim, emu) = servers(SimConfig::fast(0.02)).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig, "default").unwrap();
    let port = free_port();
    let log = dir.path().join("op.log");
    let mut child = spawn(
        &kubeconfig,
        sim.url().as_str(),
        port,
        &["--log-format", "json"],
        &log,
    );

    let start = Instant::now();
    while get(port, "/readyz").await.map(|r| r.0) != Some(200) {
        assert!(start.elapsed() < Duration::from_secs(20), "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(port, "/healthz").await.map(|r| r.0), Some(200));

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
    let start = Instant::now();
    loop {
        let items = api.list(&ListParams::default()).await.unwrap().items;
        if items.len() == 2 && items.iter().all(|d| d.phase().is_terminal()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not finished: {items:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, text) = get(port, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    for needle in [
        "droplet_operator_initiations_total{type=\"reboot\",result=\"ok\"} 1",
        // The missing droplet fails on the watermark read that precedes its initiation: nothing is POSTed.
        "droplet_operator_digitalocean_requests_total{route=\"GET /v2/droplets/{id}/actions\",status=\"4xx\"} 1",
        "droplet_operator_actions_finished_total{phase=\"Succeeded\",type=\"reboot\"} 1",
        "droplet_operator_actions_finished_total{phase=\"Failed\",type=\"reboot\"} 1",
        "droplet_operator_digitalocean_requests_total{route=\"POST /v2/droplets/{id}/actions\",status=\"2xx\"} 1",
        "droplet_operator_digitalocean_rate_budget_remaining{window=\"minute\"}",
        "droplet_operator_reconcile_duration_seconds_count",
        "droplet_operator_action_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    assert!(
        !text.contains("metrics-reboot") && !text.contains("101001"),
        "no resource names or IDs in labels"
    );

    // SIGTERM: a clean, prompt exit.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    let logs = std::fs::read_to_string(&log).unwrap();
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
    emu.shutdown();
    sim.shutdown();
}
