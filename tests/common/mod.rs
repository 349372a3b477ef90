//! Test world: the Kubernetes API emulator and the DigitalOcean simulator on loopback, and the real controller.
#![allow(dead_code)]

pub mod skip;
#[allow(unused_imports)] // each test binary uses some of them
pub use skip::{on_path, require_any_tool, require_file, require_tool, skip};
pub mod crd_cases;

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
    servers_with_crds(
        sim_config,
        vec![
            droplet_operator::crd::definition(),
            droplet_operator::schedule::crd::definition(),
        ],
    )
    .await
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
        let (stop, task) = start_in_process(client.clone(), cfg, schedule);
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
pub fn start_in_process(
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
        let obj = droplet_action(name, "default", spec);
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

    /// Waits until every DropletAction in `default` is in a final phase.
    pub async fn wait_all_terminal(&self, timeout: Duration) -> Vec<DropletAction> {
        wait_all_terminal(&self.api(), timeout).await
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

    /// Every action POST request sent for `droplet` (applied, refused or failed), by type, in arrival order.
    pub fn sent_posts(&self, droplet: i64) -> Vec<String> {
        post_request_types(&self.sim, droplet)
    }

    /// Actions DigitalOcean started for the operator on `droplet` (one per applied POST; for by-tag POSTs one per
    /// tagged droplet), by type.
    pub fn applied_posts_of(&self, droplet: i64) -> Vec<String> {
        self.sim
            .posts_for_droplet(droplet)
            .into_iter()
            .filter(|p| !matches!(p.initiated, do_sim::Initiation::External))
            .map(|p| p.type_)
            .collect()
    }

    /// The HTTP statuses of the action POST requests for `droplet`, in arrival order.
    pub fn post_statuses(&self, droplet: i64) -> Vec<u16> {
        post_requests(&self.sim, droplet)
            .into_iter()
            .map(|r| r.status)
            .collect()
    }

    /// Asserts that `droplet` got POSTs refused with `refused` (at least one), then exactly one accepted POST and
    /// nothing after it: retrying a refusal is fine, a second request after an accepted one is a duplicate.
    pub fn assert_refused_then_one_accepted(&self, droplet: i64, refused: u16) {
        let statuses = self.post_statuses(droplet);
        let accepted = statuses.iter().filter(|s| (200..300).contains(*s)).count();
        assert_eq!(accepted, 1, "droplet {droplet}: POST statuses {statuses:?}");
        assert!(
            statuses.last().is_some_and(|s| (200..300).contains(s)),
            "droplet {droplet}: a POST after the accepted one: {statuses:?}"
        );
        assert!(
            statuses[..statuses.len() - 1].iter().all(|s| *s == refused),
            "droplet {droplet}: only {refused} refusals before the accepted POST: {statuses:?}"
        );
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

/// Every action POST *request* the simulator received for `droplet` (`POST /v2/droplets/{id}/actions`), whether
/// DigitalOcean applied it, refused it (422, 429, ...) or failed it. Exactly-once means one of these per attempt,
/// not merely one applied action.
pub fn post_requests(sim: &SimHandle, droplet: i64) -> Vec<do_sim::RequestRecord> {
    let path = format!("/v2/droplets/{droplet}/actions");
    sim.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .collect()
}

/// Every by-tag action POST request (`POST /v2/droplets/actions?tag_name=<tag>`), applied or not.
pub fn tag_post_requests(sim: &SimHandle, tag: &str) -> Vec<do_sim::RequestRecord> {
    let q = format!("tag_name={tag}");
    sim.requests()
        .into_iter()
        .filter(|r| {
            r.method == "POST"
                && r.path == "/v2/droplets/actions"
                && r.query
                    .as_deref()
                    .is_some_and(|s| s.split('&').any(|kv| kv == q))
        })
        .collect()
}

/// The action types of [`post_requests`] for `droplet`, in arrival order.
pub fn post_request_types(sim: &SimHandle, droplet: i64) -> Vec<String> {
    post_requests(sim, droplet)
        .into_iter()
        .map(|r| r.action_type.unwrap_or_default())
        .collect()
}

/// A DropletAction object (not yet created) named `name` in `namespace`.
pub fn droplet_action(name: &str, namespace: &str, spec: serde_json::Value) -> DropletAction {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "droplet-operator.dev/v1alpha1",
        "kind": "DropletAction",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .expect("valid DropletAction")
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after `timeout`. The timeout is a
/// generous safety net for a loaded machine, never a performance assertion.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lists the DropletActions of `api` until every one is in a final phase (and there are `count` of them).
pub async fn wait_all_final(
    api: &Api<DropletAction>,
    count: usize,
    timeout: Duration,
) -> Vec<DropletAction> {
    eventually("every DropletAction in a final phase", timeout, || async {
        let items = api.list(&ListParams::default()).await.ok()?.items;
        (items.len() == count && items.iter().all(|d| d.phase().is_terminal())).then_some(items)
    })
    .await
}

/// After a SIGKILL: lists `api` until all `count` DropletActions are final, resolving every `InitiationUncertain`
/// as its message tells a user to ([`resend_uncertain`]: resend when DigitalOcean ran nothing for it, adopt when it
/// did). A kill between recording an intent and sending it legitimately ends there. Returns the items and how many
/// resends were asked for; on timeout panics with the status of every unfinished one.
pub async fn finish_after_crash(
    api: &Api<DropletAction>,
    sim: &SimHandle,
    count: usize,
    timeout: Duration,
) -> (Vec<DropletAction>, usize) {
    let start = Instant::now();
    let mut resent = 0;
    loop {
        let items = api
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        if items.len() == count && items.iter().all(|d| d.phase().is_terminal()) {
            return (items, resent);
        }
        if start.elapsed() > timeout {
            let open: Vec<_> = items
                .iter()
                .filter(|d| !d.phase().is_terminal())
                .map(|d| (d.name_any(), &d.status))
                .collect();
            panic!(
                "timed out after {timeout:?}: {} of {count} DropletActions final; unfinished: {open:#?}",
                items.len() - open.len()
            );
        }
        resent += resend_uncertain(api, sim, &items).await.len();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The servers on loopback plus a temporary directory holding a kubeconfig for them and a log file, for tests
/// that run `droplet-operator run` as a child process.
pub struct ProcessWorld {
    pub sim: SimHandle,
    pub emu: EmuHandle,
    pub kubeconfig: std::path::PathBuf,
    pub log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl ProcessWorld {
    pub async fn start(sim_config: SimConfig) -> ProcessWorld {
        let (sim, emu) = servers(sim_config).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        emu.write_kubeconfig(&kubeconfig, "default")
            .expect("kubeconfig");
        ProcessWorld {
            sim,
            emu,
            kubeconfig,
            log: dir.path().join("operator.log"),
            _dir: dir,
        }
    }

    pub fn api(&self) -> Api<DropletAction> {
        Api::namespaced(self.emu.client(), "default")
    }

    /// Starts `droplet-operator run` against the servers with the simulator's token, a 1 s request timeout and
    /// the test poll scale, appending its stderr to `self.log`; `metrics_port` 0 picks a free port.
    pub fn spawn(
        &self,
        metrics_port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> std::process::Child {
        let metrics = format!("127.0.0.1:{metrics_port}");
        let mut args = vec![
            "--metrics-addr",
            &metrics,
            "--do-timeout-seconds",
            "1",
            "--poll-scale",
            "0.05",
        ];
        args.extend_from_slice(extra);
        spawn_operator_with(
            &self.kubeconfig,
            self.sim.url().as_str(),
            &args,
            env,
            &self.log,
        )
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn shutdown(&self) {
        self.emu.shutdown();
        self.sim.shutdown();
    }
}

/// The snapshot the simulator seeds on droplet 101005: a new snapshot must never be mistaken for it.
pub const SEEDED_SNAPSHOT: i64 = 702001;

/// Creates every example of examples/ in `namespace` (one scenario for the emulator and the real server).
pub async fn create_examples(
    api: &Api<DropletAction>,
    namespace: &str,
) -> Vec<droplet_operator::demo::Example> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let examples =
        droplet_operator::demo::load_examples(std::path::Path::new(dir)).expect("examples");
    for ex in &examples {
        let mut obj = ex.resource.clone();
        obj.metadata.namespace = Some(namespace.into());
        api.create(&PostParams::default(), &obj)
            .await
            .expect("create");
    }
    examples
}

/// Lists `api` until every DropletAction is in a final phase; panics after `timeout`.
pub async fn wait_all_terminal(api: &Api<DropletAction>, timeout: Duration) -> Vec<DropletAction> {
    eventually("every DropletAction in a final phase", timeout, || async {
        let items = api.list(&ListParams::default()).await.ok()?.items;
        items
            .iter()
            .all(|d| d.phase().is_terminal())
            .then_some(items)
    })
    .await
}

/// Every example ended in the phase its `# expect:` line documents, each action started exactly once, snapshots
/// resolved their image, tags fanned out, notAfter in the past sent nothing, and no droplet was raced.
pub fn assert_examples_ended_as_documented(
    examples: &[droplet_operator::demo::Example],
    items: &[DropletAction],
    sim: &SimHandle,
) {
    let mut types = std::collections::BTreeSet::new();
    for ex in examples {
        let name = kube::ResourceExt::name_any(&ex.resource);
        let da = items
            .iter()
            .find(|d| kube::ResourceExt::name_any(*d) == name)
            .expect("exists");
        assert_eq!(da.phase(), ex.expect, "{}: {:#?}", ex.file, da.status);
        if da.phase() == Phase::Succeeded {
            types.insert(da.spec.type_.as_str());
            let st = da.status.as_ref().unwrap();
            assert!(
                st.actions.iter().all(|a| a.status == "completed"),
                "{}",
                ex.file
            );
            let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
            assert_eq!(ready.status, "True");
            assert_eq!(ready.observed_generation, Some(1));
        }
    }
    assert_eq!(types.len(), 16, "all 16 action types succeeded: {types:?}");
    assert_exactly_once(items, sim);

    // Snapshots resolve their image.
    let snap = items
        .iter()
        .find(|d| kube::ResourceExt::name_any(*d) == "snapshot")
        .unwrap();
    let image = snap.status.as_ref().unwrap().actions[0]
        .snapshot_image_id
        .expect("snapshot image id");
    let img = sim.image(image).expect("the image exists on DigitalOcean");
    assert_ne!(
        image, SEEDED_SNAPSHOT,
        "not the snapshot the droplet already had"
    );
    assert_eq!(img.name, "db-2-nightly", "the name from spec.name");
    assert_eq!(img.resource_id, 101005, "taken of the droplet in spec");
    assert_eq!(img.type_, "snapshot");
    // Tags fan out: one action per tagged droplet, tracked individually.
    let tag = items
        .iter()
        .find(|d| kube::ResourceExt::name_any(*d) == "tag-snapshot")
        .unwrap();
    let st = tag.status.as_ref().unwrap();
    assert_eq!(st.droplet_ids, vec![101004, 101005]);
    assert_eq!(st.actions.len(), 2);
    assert_eq!(st.action_summary.as_deref(), Some("2/2"));
    let mut tag_images = std::collections::BTreeSet::new();
    for a in &st.actions {
        let id = a.snapshot_image_id.expect("snapshot image id per droplet");
        let img = sim.image(id).expect("the image exists");
        assert_eq!(img.name, "db-weekly");
        assert_eq!(img.resource_id, a.droplet_id, "each droplet's own snapshot");
        assert!(id != SEEDED_SNAPSHOT && id != image, "a new image: {id}");
        tag_images.insert(id);
    }
    assert_eq!(tag_images.len(), 2, "distinct per droplet");
    // notAfter in the past: nothing was sent for it.
    let expired = items
        .iter()
        .find(|d| kube::ResourceExt::name_any(*d) == "not-after-expired")
        .unwrap();
    assert!(expired.status.as_ref().unwrap().actions.is_empty());
    // Shared droplets ran one action at a time: DigitalOcean never had to refuse a pending event.
    let busy = sim.requests().iter().filter(|r| r.status == 422).count();
    assert_eq!(
        busy, 0,
        "no 422 pending-event answers: the controller queued per droplet"
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
    let mut args = vec!["--log-format", "json"];
    args.extend_from_slice(extra);
    spawn_operator_with(kubeconfig, do_url, &args, &[], log)
}

/// `droplet-operator run --do-api-url <do_url> <args>` with the simulator's token, `env` applied last (so a test can
/// override the defaults), stderr appended to `log`: the one place a test starts the operator binary.
pub fn spawn_operator_with(
    kubeconfig: &std::path::Path,
    do_url: &str,
    args: &[&str],
    env: &[(&str, &str)],
    log: &std::path::Path,
) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    std::process::Command::new(env!("CARGO_BIN_EXE_droplet-operator"))
        .args(["run", "--do-api-url", do_url])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("DIGITALOCEAN_TOKEN", DEFAULT_SIM_TOKEN)
        .env("RUST_LOG", "droplet_operator=info")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(log))
        .spawn()
        .expect("spawn droplet-operator")
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
                if !message.contains("several") {
                    // Conservative, not unsafe: the action landed after the adoption window (a loaded machine,
                    // a late commit behind a lagging list). Nothing was sent twice; the user adopts it.
                    eprintln!(
                        "{} stopped uncertain although DigitalOcean ran its action {id} (found after the window): {message}",
                        da.name_any()
                    );
                }
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

/// SIGKILL (Child::kill on Unix): no graceful shutdown, no flushing.
pub fn kill(mut child: std::process::Child) {
    sigkill(&mut child);
}

/// [`spawn_operator`] with the fast-test defaults: a free metrics port, a 1 s DigitalOcean timeout and the test
/// poll scale, then `extra`.
pub fn spawn_operator_process(
    kubeconfig: &std::path::Path,
    do_url: &str,
    log: &std::path::Path,
    extra: &[&str],
) -> std::process::Child {
    let mut args = vec![
        "--metrics-addr",
        "127.0.0.1:0",
        "--do-timeout-seconds",
        "1",
        "--poll-scale",
        "0.05",
    ];
    args.extend_from_slice(extra);
    spawn_operator(kubeconfig, do_url, &args, log)
}
