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

/// How long in-flight work may run on after the shutdown signal. Kubernetes waits 30 s before it SIGKILLs a
/// pod; a process that stops well before that gives a new leader its turn sooner.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(7);

/// Runs the operator with `client` until `shutdown` resolves (or, with leader election, until the Lease is
/// lost: then it returns an error so the process exits and restarts as a standby).
///
/// Once `shutdown` resolved, reconciles in flight get [`SHUTDOWN_GRACE`] to finish; then everything is dropped,
/// whatever it waits for (an unreachable API server, a DigitalOcean request that has not answered, a cache that
/// never synced, a Lease that cannot be read). Stopping there is as safe as a crash: an initiation is recorded
/// before its request is sent, so the next leader adopts it instead of sending it again.
pub async fn run(
    client: kube::Client,
    cfg: OperatorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), String> {
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let hard_stop = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    tokio::select! {
        result = run_until(client, cfg, shutdown) => result,
        _ = hard_stop => {
            tracing::warn!(
                grace_seconds = SHUTDOWN_GRACE.as_secs(),
                "work in flight did not finish within the shutdown grace period; stopping anyway (recorded \
                 initiations are adopted, never re-sent, by the next leader)"
            );
            Ok(())
        }
    }
}

async fn run_until(
    client: kube::Client,
    cfg: OperatorConfig,
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
    // Checked by the controller right before every DigitalOcean POST: a replica that lost the Lease never sends.
    let mut is_leader: Option<Arc<AtomicBool>> = None;
    if let Some(le) = &cfg.leader_election {
        let duration = le.lease_duration_seconds.max(2);
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &le.lease_name)
            .with_namespace(&le.namespace)
            .with_identity(&le.identity)
            .with_duration(duration)
            .with_grace((duration / 3).max(1))
            // Each replica its own field manager: with a shared one, two replicas could both take an expired Lease.
            .with_field_manager(format!("{}-{}", crate::crd::FIELD_MANAGER, le.identity))
            .build();
        // The Lease may never be read (API server silent): a shutdown must not wait for it.
        let manager = tokio::select! {
            built = manager => built
                .map_err(|e| format!("cannot use Lease {}/{}: {e}", le.namespace, le.lease_name))?,
            _ = shutdown.clone() => return Ok(()),
        };
        let (mut leader, task) = tokio::select! {
            watching = manager.watch() => watching,
            _ = shutdown.clone() => return Ok(()),
        };
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
        let flag = Arc::new(AtomicBool::new(true));
        is_leader = Some(flag.clone());
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
        let (release_tx, mut release_rx) = tokio::sync::oneshot::channel::<()>();
        lost_leadership = Some(lost_rx);
        release = Some(release_tx);
        tokio::spawn(async move {
            // Holding `leader` keeps the Lease renewed; dropping it (when this task ends) releases the Lease.
            loop {
                tokio::select! {
                    _ = &mut release_rx => {
                        flag.store(false, Ordering::SeqCst);
                        return;
                    }
                    changed = leader.changed() => {
                        if changed.is_err() || !*leader.borrow_and_update() {
                            flag.store(false, Ordering::SeqCst);
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
        leader: is_leader,
    };
    info!(
        api = %cfg.do_api_url,
        namespaces = ?cfg.namespaces,
        default_token = cfg.default_token.as_ref().map(Token::fingerprint),
        "starting controller"
    );
    controller::run(client, do_client, options, metrics, Some(ready_tx), stop).await;
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
