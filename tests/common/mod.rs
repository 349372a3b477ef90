//! Test world: the Kubernetes API emulator and the DigitalOcean simulator on loopback, and the real controller.
#![allow(dead_code)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use do_sim::{DEFAULT_SIM_TOKEN, SimConfig, SimHandle, Simulator};
use droplet_operator::crd::{DropletAction, Phase};
use droplet_operator::digitalocean::Token;
use droplet_operator::operator::{self, OperatorConfig};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use kube_emu::validation::CrdAdmission;
use kube_emu::{EmuConfig, EmuHandle, KubeEmulator};

/// Everything the controller logs in this test process (for "the token never appears" checks).
pub fn log_buffer() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer_buf = buf.clone();
        let make_writer = move || LogWriter(writer_buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "droplet_operator=debug,kube=info",
            ))
            .with_writer(make_writer)
            .with_ansi(false)
            .try_init();
        buf
    })
    .clone()
}

pub struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct World {
    pub sim: SimHandle,
    pub emu: EmuHandle,
    pub client: kube::Client,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub fn loopback() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub async fn servers(sim_config: SimConfig) -> (SimHandle, EmuHandle) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::start(sim_config, loopback())
        .await
        .expect("simulator");
    let crds = vec![
        droplet_operator::crd::definition(),
        droplet_operator::schedule::crd::definition(),
    ];
    let emu = KubeEmulator::start(
        EmuConfig {
            admission: Arc::new(CrdAdmission::new(&crds)),
            crds,
            ..EmuConfig::default()
        },
        loopback(),
    )
    .await
    .expect("emulator");
    (sim, emu)
}

/// Poll intervals and waits of the controller are multiplied by this in tests.
pub const POLL_SCALE: f64 = 0.05;

impl World {
    /// Servers plus an in-process controller with the simulator's default token.
    pub async fn start(sim_config: SimConfig) -> World {
        Self::start_with_token(sim_config, Some(Token::new(DEFAULT_SIM_TOKEN))).await
    }

    pub async fn start_with_token(sim_config: SimConfig, default_token: Option<Token>) -> World {
        Self::start_with(sim_config, default_token, Default::default()).await
    }

    /// Servers plus an in-process operator whose schedule controller uses `schedule` (for example a sped-up
    /// clock).
    pub async fn start_with(
        sim_config: SimConfig,
        default_token: Option<Token>,
        schedule: droplet_operator::schedule::ScheduleOptions,
    ) -> World {
        log_buffer();
        let (sim, emu) = servers(sim_config).await;
        let client = emu.client();
        let cfg = operator_config(&sim, default_token);
        let (stop, task) = spawn_operator(client.clone(), cfg, schedule);
        World {
            sim,
            emu,
            client,
            stop,
            task: Some(task),
        }
    }
}

/// The in-process operator's settings for tests.
pub fn operator_config(sim: &SimHandle, default_token: Option<Token>) -> OperatorConfig {
    OperatorConfig {
        do_api_url: sim.url(),
        default_token,
        namespaces: vec![],
        concurrency: 16,
        metrics_addr: None,
        do_timeout: Duration::from_secs(2),
        poll_scale: POLL_SCALE,
        instance: Some("test".into()),
        leader_election: None,
    }
}

/// Runs an operator in this process until the returned sender says stop.
pub fn spawn_operator(
    client: kube::Client,
    cfg: OperatorConfig,
    schedule: droplet_operator::schedule::ScheduleOptions,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        operator::run_with(client, cfg, schedule, shutdown)
            .await
            .expect("operator runs");
    });
    (stop, task)
}

impl World {
    pub fn api(&self) -> Api<DropletAction> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub async fn create(&self, name: &str, spec: serde_json::Value) -> DropletAction {
        let obj: DropletAction = serde_json::from_value(serde_json::json!({
            "apiVersion": "droplet-operator.dev/v1alpha1",
            "kind": "DropletAction",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }))
        .expect("valid DropletAction");
        self.api()
            .create(&PostParams::default(), &obj)
            .await
            .expect("created")
    }

    /// Waits until `name` satisfies `pred`, or panics with its last status.
    pub async fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&DropletAction) -> bool,
    ) -> DropletAction {
        let start = Instant::now();
        loop {
            let da = self.api().get(name).await.expect("get");
            if pred(&da) {
                return da;
            }
            if start.elapsed() > timeout {
                panic!(
                    "{name} did not reach the expected state within {timeout:?}: {:#?}",
                    da.status
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_phase(&self, name: &str, phase: Phase, timeout: Duration) -> DropletAction {
        self.wait_for(name, timeout, |d| d.phase() == phase).await
    }

    pub async fn wait_all_terminal(&self, timeout: Duration) -> Vec<DropletAction> {
        let start = Instant::now();
        loop {
            let items = self
                .api()
                .list(&ListParams::default())
                .await
                .expect("list")
                .items;
            if items.iter().all(|d| d.phase().is_terminal()) || start.elapsed() > timeout {
                return items;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Events recorded about `name` (events.k8s.io/v1), as (reason, note).
    pub async fn events(&self, name: &str) -> Vec<(String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), "default");
        api.list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    /// POSTs DigitalOcean applied (initiated an action), per droplet, by type.
    pub fn applied_posts(&self, droplet: i64) -> Vec<String> {
        self.sim
            .posts_for_droplet(droplet)
            .into_iter()
            .filter(|p| !matches!(p.initiated, do_sim::Initiation::External))
            .map(|p| p.type_)
            .collect()
    }

    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        self.emu.shutdown();
        self.sim.shutdown();
    }
}

/// Every action ID recorded in any status appears once, and every action DigitalOcean started for the
/// operator is recorded by exactly one DropletAction: nothing ran twice, nothing was lost.
pub fn assert_exactly_once(items: &[DropletAction], sim: &SimHandle) {
    let mut recorded = std::collections::BTreeMap::new();
    for da in items {
        for a in da.status.iter().flat_map(|s| s.actions.iter()) {
            assert!(
                recorded.insert(a.id, da.name_any()).is_none(),
                "action {} recorded twice",
                a.id
            );
        }
    }
    let started: Vec<i64> = sim
        .actions()
        .into_iter()
        .filter(|a| !matches!(a.initiated, do_sim::Initiation::External))
        .map(|a| a.id)
        .collect();
    for id in &started {
        assert!(
            recorded.contains_key(id),
            "DigitalOcean action {id} was started but no DropletAction records it"
        );
    }
    assert_eq!(
        started.len(),
        recorded.len(),
        "recorded actions that DigitalOcean never started"
    );
}

/// Runs `droplet-operator run` as a child process against the test servers (JSON logs appended to `log`), with
/// `extra` arguments.
pub fn spawn_operator_process(
    kubeconfig: &std::path::Path,
    do_url: &str,
    log: &std::path::Path,
    extra: &[&str],
) -> std::process::Child {
    use std::process::{Command, Stdio};
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_droplet-operator"))
        .args([
            "run",
            "--do-api-url",
            do_url,
            "--metrics-addr",
            "127.0.0.1:0",
            "--do-timeout-seconds",
            "1",
            "--poll-scale",
            "0.05",
            "--log-format",
            "json",
        ])
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env("DIGITALOCEAN_TOKEN", DEFAULT_SIM_TOKEN)
        .env("RUST_LOG", "droplet_operator=info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn operator")
}

/// SIGKILL (Child::kill on Unix): no graceful shutdown, no flushing.
pub fn kill(mut child: std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}
