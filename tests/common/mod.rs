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
    servers_with_crds(sim_config, vec![droplet_operator::crd::definition()]).await
}

/// The simulator and an emulator serving (and validating by) `crds`.
pub async fn servers_with_crds(
    sim_config: SimConfig,
    crds: Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>,
) -> (SimHandle, EmuHandle) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::start(sim_config, loopback())
        .await
        .expect("simulator");
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
        log_buffer();
        let (sim, emu) = servers(sim_config).await;
        let client = emu.client();
        let cfg = OperatorConfig {
            do_api_url: sim.url(),
            default_token,
            namespaces: vec![],
            concurrency: 16,
            metrics_addr: None,
            do_timeout: Duration::from_secs(2),
            poll_scale: POLL_SCALE,
            instance: Some("test".into()),
            leader_election: None,
        };
        let (stop, mut rx) = tokio::sync::watch::channel(false);
        let c = client.clone();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            operator::run(c, cfg, shutdown)
                .await
                .expect("operator runs");
        });
        World {
            sim,
            emu,
            client,
            stop,
            task: Some(task),
        }
    }

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

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the real operator binary as a child process against `do_url` (logs appended to `log`), with the
/// simulator's default token and `extra` arguments after `run`'s fast-test defaults.
pub fn spawn_operator(
    kubeconfig: &std::path::Path,
    do_url: &str,
    extra: &[&str],
    log: &std::path::Path,
) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    std::process::Command::new(env!("CARGO_BIN_EXE_droplet-operator"))
        .args(["run", "--do-api-url", do_url, "--log-format", "json"])
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env("DIGITALOCEAN_TOKEN", DEFAULT_SIM_TOKEN)
        .env("RUST_LOG", "droplet_operator=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(log))
        .spawn()
        .expect("spawn operator")
}

/// SIGKILL (no graceful shutdown, no flushing), then reap.
pub fn sigkill(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs the real `kubectl` against `kubeconfig`; `None` (after printing why) when kubectl is not installed.
pub fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> Option<std::process::Output> {
    let out = match std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: kubectl is not installed (not on PATH)");
            return None;
        }
        Err(e) => panic!("cannot run kubectl: {e}"),
    };
    eprintln!(
        "$ kubectl {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out)
}

/// SIGTERM `child` and wait up to `limit` for it to exit; the time it took, or `None` (it was SIGKILLed then).
pub fn sigterm_and_wait(child: &mut std::process::Child, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    while start.elapsed() < limit {
        if child.try_wait().expect("wait").is_some() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    sigkill(child);
    None
}

/// Whether the operator (not the console, not another API client) started a simulator action.
pub fn operator_started(i: &do_sim::Initiation) -> bool {
    !matches!(
        i,
        do_sim::Initiation::External | do_sim::Initiation::Foreign
    )
}

/// What a user does with a resource stopped at InitiationUncertain, as its message says: check DigitalOcean,
/// then annotate: to adopt the action the request did start (only when another client's action competed with
/// it; otherwise the operator should have adopted it), or to resend when nothing started. Returns the droplets
/// annotated to resend now (each one more initiation of the same attempt).
pub async fn resend_uncertain(
    api: &Api<DropletAction>,
    sim: &SimHandle,
    items: &[DropletAction],
) -> Vec<i64> {
    use droplet_operator::controller::decide::{ADOPT_ANNOTATION, RESEND_ANNOTATION};
    let recorded: std::collections::BTreeSet<i64> = items
        .iter()
        .flat_map(|d| d.status.iter().flat_map(|s| s.actions.iter().map(|a| a.id)))
        .collect();
    let mut annotated = Vec::new();
    for da in items {
        let Some(p) = da
            .status
            .as_ref()
            .and_then(|s| s.pending_initiation.as_ref())
            .filter(|p| p.uncertain)
        else {
            continue;
        };
        let Some(droplet) = da.spec.droplet_id else {
            continue;
        };
        let ours: Vec<i64> = sim
            .actions()
            .into_iter()
            .filter(|a| a.droplet_id == droplet && operator_started(&a.initiated))
            .filter(|a| !recorded.contains(&a.id))
            .map(|a| a.id)
            .collect();
        let message = da
            .status
            .as_ref()
            .and_then(|s| s.message.clone())
            .unwrap_or_default();
        let annotation = match ours.as_slice() {
            [] => (RESEND_ANNOTATION, "true".to_string()),
            // Ours ran, but so did another client's action of the same type: the operator may not choose, the
            // user (who can tell, here from the simulator) names it.
            [id] => {
                assert!(
                    message.contains("several"),
                    "{} stopped uncertain although DigitalOcean ran its action {id} and nothing competed: {message} (intent {p:?})",
                    da.name_any()
                );
                (ADOPT_ANNOTATION, id.to_string())
            }
            many => panic!(
                "{}: DigitalOcean ran several unrecorded actions {many:?} for it (intent {p:?})",
                da.name_any()
            ),
        };
        if da.annotations().contains_key(annotation.0) {
            continue;
        }
        let patch = serde_json::json!({"metadata": {"annotations": {annotation.0: annotation.1}}});
        api.patch(
            &da.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("annotate");
        if annotation.0 == RESEND_ANNOTATION {
            annotated.push(droplet);
        }
    }
    annotated
}
