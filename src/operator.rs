//! `droplet-operator run`: wires the Kubernetes client, the DigitalOcean client, the admin server and the
//! controller together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::info;

use crate::controller::{self, RunOptions};
use crate::digitalocean::{ClientConfig, DoClient, RateLimits, Token};
use crate::metrics::Metrics;

/// Settings of the operator process.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// DigitalOcean API base URL.
    pub do_api_url: url::Url,
    /// Default token (from DIGITALOCEAN_TOKEN or --token-file).
    pub default_token: Option<Token>,
    /// Namespaces to watch (empty: all).
    pub namespaces: Vec<String>,
    /// Concurrent reconciles.
    pub concurrency: u16,
    /// Admin server address (metrics, health); None: no server.
    pub metrics_addr: Option<SocketAddr>,
    /// Timeout of one DigitalOcean request.
    pub do_timeout: Duration,
    /// Multiplies poll intervals and waits (tests against a fast simulator use less than 1).
    pub poll_scale: f64,
    /// Instance name for events (the pod name in a cluster).
    pub instance: Option<String>,
    /// Run only while holding this Lease (None: always run).
    pub leader_election: Option<LeaderElection>,
}

/// Leader election with a `coordination.k8s.io/v1` Lease: only the holder reconciles.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This instance's identity (the pod name).
    pub identity: String,
    /// Seconds a lease stays valid after its last renewal; a standby takes over after this.
    pub lease_duration_seconds: u64,
}

/// Reads the default token from a file (trimmed). The path, not the content, appears in errors.
pub fn read_token_file(path: &PathBuf) -> Result<Token, String> {
    std::fs::read_to_string(path)
        .map(Token::new)
        .map_err(|e| format!("cannot read --token-file {}: {e}", path.display()))
}

/// The DigitalOcean client for these settings, reporting to `metrics`.
pub fn do_client(cfg: &OperatorConfig, metrics: Arc<Metrics>) -> Result<DoClient, String> {
    let client_cfg = ClientConfig {
        base_url: cfg.do_api_url.clone(),
        timeout: cfg.do_timeout,
        // DigitalOcean allows 250/min and 5000/h per token. Keep a margin for other clients of the same token and
        // for the gap between reserving a slot here and the request arriving there (measured by the rate_budget
        // benchmark on a loaded machine: budgets of 240 and 230/min reached 247 and 242 requests in one 60 s
        // window at the server).
        rate_limits: RateLimits {
            per_minute: 220,
            per_hour: 4400,
        },
        observer: Some(metrics),
        ..ClientConfig::default()
    };
    DoClient::new(client_cfg).map_err(|e| format!("invalid DigitalOcean API settings: {e}"))
}

/// Runs the operator with `client` until `shutdown` resolves (or, with leader election, until the Lease is
/// lost: then it returns an error so the process exits and restarts as a standby).
pub async fn run(
    client: kube::Client,
    cfg: OperatorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), String> {
    run_with(
        client,
        cfg,
        crate::schedule::ScheduleOptions::default(),
        shutdown,
    )
    .await
}

/// [`run`], with options for the DropletActionSchedule controller (which runs beside the DropletAction
/// controller, under the same leader election and shutdown).
pub async fn run_with(
    client: kube::Client,
    cfg: OperatorConfig,
    schedule: crate::schedule::ScheduleOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    let do_client = do_client(&cfg, metrics.clone())?;
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    if let Some(addr) = cfg.metrics_addr {
        let bound = crate::admin::serve(addr, metrics.clone(), ready_rx, shutdown.clone())
            .await
            .map_err(|e| format!("cannot listen on --metrics-addr {addr}: {e}"))?;
        info!(%bound, "serving /metrics, /healthz and /readyz");
    }

    let mut lost_leadership = None;
    let mut lease_task = None;
    let mut release: Option<tokio::sync::oneshot::Sender<()>> = None;
    if let Some(le) = &cfg.leader_election {
        let duration = le.lease_duration_seconds.max(2);
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &le.lease_name)
            .with_namespace(&le.namespace)
            .with_identity(&le.identity)
            .with_duration(duration)
            .with_grace((duration / 3).max(1))
            .with_field_manager(crate::crd::FIELD_MANAGER)
            .build()
            .await
            .map_err(|e| format!("cannot use Lease {}/{}: {e}", le.namespace, le.lease_name))?;
        let (mut leader, task) = manager.watch().await;
        lease_task = Some(task);
        info!(lease = %le.lease_name, namespace = %le.namespace, identity = %le.identity, "waiting to become the leader");
        while !*leader.borrow_and_update() {
            tokio::select! {
                changed = leader.changed() => {
                    if changed.is_err() {
                        return Err("leader election stopped".into());
                    }
                }
                _ = shutdown.clone() => return Ok(()),
            }
        }
        info!(identity = %le.identity, "became the leader");
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
        let (release_tx, mut release_rx) = tokio::sync::oneshot::channel::<()>();
        lost_leadership = Some(lost_rx);
        release = Some(release_tx);
        tokio::spawn(async move {
            // Holding `leader` keeps the Lease renewed; dropping it (when this task ends) releases the Lease.
            loop {
                tokio::select! {
                    _ = &mut release_rx => return,
                    changed = leader.changed() => {
                        if changed.is_err() || !*leader.borrow_and_update() {
                            let _ = lost_tx.send(());
                            return;
                        }
                    }
                }
            }
        });
    }
    let lost = Arc::new(AtomicBool::new(false));
    let stop = {
        let lost = lost.clone();
        let shutdown = shutdown.clone();
        async move {
            match lost_leadership {
                Some(rx) => {
                    tokio::select! {
                        _ = shutdown => {}
                        r = rx => if r.is_ok() { lost.store(true, Ordering::SeqCst) },
                    }
                }
                None => shutdown.await,
            }
        }
    };

    let options = RunOptions {
        namespaces: cfg.namespaces.clone(),
        concurrency: cfg.concurrency,
        decide: controller::decide::DecideConfig::for_timeout(cfg.do_timeout, cfg.poll_scale),
        default_token: cfg.default_token.clone(),
        instance: cfg.instance.clone(),
    };
    info!(
        api = %cfg.do_api_url,
        namespaces = ?cfg.namespaces,
        default_token = cfg.default_token.as_ref().map(Token::fingerprint),
        "starting controller"
    );
    let stop = futures::future::FutureExt::shared(Box::pin(stop));
    let schedules = crate::schedule::run(
        client.clone(),
        do_client.clone(),
        cfg.namespaces.clone(),
        cfg.default_token.clone(),
        cfg.instance.clone(),
        schedule,
        stop.clone(),
    );
    let actions = controller::run(client, do_client, options, metrics, Some(ready_tx), stop);
    futures::future::join(actions, schedules).await;
    if lost.load(Ordering::SeqCst) {
        // Another instance holds the Lease now: exit so the orchestrator restarts this one as a standby.
        return Err("lost the leader Lease; exiting so another instance can take over".into());
    }
    if let (Some(release), Some(task)) = (release, lease_task) {
        // Hand the Lease over at once instead of letting a standby wait for it to expire.
        let _ = release.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), task).await;
        info!("released the leader Lease");
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
