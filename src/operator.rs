//! `droplet-operator run`: wires the Kubernetes client, the DigitalOcean client, the admin server and the
//! controller together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Api;
use kube::api::ListParams;
use tracing::{info, warn};

use crate::controller::{self, RunOptions};
use crate::crd::DropletAction;
use crate::digitalocean::{ClientConfig, ConfigError, DoClient, RateLimits, Token};
use crate::metrics::Metrics;

/// Why the operator could not start or had to stop. Variant names are stable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The default token file could not be read (the path is named, never the content).
    #[error("cannot read --token-file {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The default token file is empty (or only whitespace).
    #[error("--token-file {path} is empty: put the DigitalOcean token in it, or remove the flag")]
    EmptyTokenFile {
        /// The file.
        path: PathBuf,
    },
    /// The DigitalOcean API settings are unusable (for example plain http to a non-loopback host).
    #[error("invalid DigitalOcean API settings (--do-api-url): {0}")]
    DoClient(#[source] ConfigError),
    /// The admin server (metrics, health) could not listen.
    #[error("cannot listen on --metrics-addr {addr}: {source}")]
    MetricsAddr {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The leader-election Lease could not be set up.
    #[error(
        "cannot use Lease {namespace}/{name} (check --leader-election-namespace and the Role on leases): {source}"
    )]
    Lease {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// Why.
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    /// The leader-election task ended before this instance became the leader.
    #[error("leader election stopped")]
    LeaderElectionStopped,
    /// Another instance holds the Lease now: the process exits so it restarts as a standby.
    #[error("lost the leader Lease; exiting so another instance can take over")]
    LostLease,
}

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

/// Reads the default token from a file (trimmed). The path, not the content, appears in errors. An empty file is
/// an error (a mounted Secret with an empty key is a mistake worth stopping for), unlike an empty
/// `DIGITALOCEAN_TOKEN`, which means "no default token".
pub fn read_token_file(path: &Path) -> Result<Token, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::TokenFile {
        path: path.to_path_buf(),
        source,
    })?;
    if text.trim().is_empty() {
        return Err(Error::EmptyTokenFile {
            path: path.to_path_buf(),
        });
    }
    Ok(Token::new(text))
}

/// The DigitalOcean client for these settings, reporting to `metrics`.
pub fn do_client(cfg: &OperatorConfig, metrics: Arc<Metrics>) -> Result<DoClient, Error> {
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
    DoClient::new(client_cfg).map_err(Error::DoClient)
}

/// How long in-flight work may run on after the shutdown signal. Kubernetes waits 30 s before it SIGKILLs a
/// pod; a process that stops well before that gives a new leader its turn sooner.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(7);

/// Runs the operator with `client` until `shutdown` resolves (or, with leader election, until the Lease is
/// lost: then it returns [`Error::LostLease`] so the process exits and restarts as a standby).
///
/// Readiness (`/readyz`) and leadership are separate: without leader election the instance is ready once its
/// DropletAction caches hold the initial list. With leader election a standby is ready once it has listed
/// DropletActions in every watched namespace (the API server answers, the CRD is installed, RBAC allows it), so
/// a rollout of several replicas completes; the leader stays ready. Leadership is the `droplet_operator_leader`
/// gauge and a log line on every change.
///
/// Once `shutdown` resolved, reconciles in flight get [`SHUTDOWN_GRACE`] to finish; then everything is dropped,
/// whatever it waits for (an unreachable API server, a DigitalOcean request that has not answered, a cache that
/// never synced, a Lease that cannot be read). Stopping there is as safe as a crash: an initiation is recorded
/// before its request is sent, so the next leader adopts it instead of sending it again.
pub async fn run(
    client: kube::Client,
    cfg: OperatorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
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
) -> Result<(), Error> {
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let hard_stop = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    tokio::select! {
        result = run_until(client, cfg, schedule, shutdown) => result,
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
    schedule: crate::schedule::ScheduleOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let metrics = Arc::new(Metrics::new());
    let do_client = do_client(&cfg, metrics.clone())?;
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    if let Some(addr) = cfg.metrics_addr {
        let bound = crate::admin::serve(addr, metrics.clone(), ready_rx, shutdown.clone())
            .await
            .map_err(|source| Error::MetricsAddr { addr, source })?;
        info!(%bound, "serving /metrics, /healthz and /readyz");
    }

    let mut lost_leadership = None;
    let mut lease_task = None;
    let mut release: Option<tokio::sync::oneshot::Sender<()>> = None;
    // Checked by the controller right before every DigitalOcean POST: a replica that lost the Lease never sends.
    let mut is_leader: Option<Arc<AtomicBool>> = None;
    if let Some(le) = &cfg.leader_election {
        metrics.set_leader(false);
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
            built = manager => built.map_err(|source| Error::Lease {
                namespace: le.namespace.clone(),
                name: le.lease_name.clone(),
                source,
            })?,
            _ = shutdown.clone() => return Ok(()),
        };
        let (mut leader, task) = tokio::select! {
            watching = manager.watch() => watching,
            _ = shutdown.clone() => return Ok(()),
        };
        lease_task = Some(task);
        info!(lease = %le.lease_name, namespace = %le.namespace, identity = %le.identity, "waiting to become the leader");
        // A standby is ready once it could take over: it can list what it would watch.
        let standby_check = tokio::spawn(standby_ready(
            client.clone(),
            cfg.namespaces.clone(),
            ready_tx.clone(),
        ));
        while !*leader.borrow_and_update() {
            tokio::select! {
                changed = leader.changed() => {
                    if changed.is_err() {
                        standby_check.abort();
                        return Err(Error::LeaderElectionStopped);
                    }
                }
                _ = shutdown.clone() => {
                    standby_check.abort();
                    return Ok(());
                }
            }
        }
        standby_check.abort();
        metrics.set_leader(true);
        info!(identity = %le.identity, leader = true, "became the leader");
        let flag = Arc::new(AtomicBool::new(true));
        is_leader = Some(flag.clone());
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
        let (release_tx, mut release_rx) = tokio::sync::oneshot::channel::<()>();
        lost_leadership = Some(lost_rx);
        release = Some(release_tx);
        let lease_metrics = metrics.clone();
        let identity = le.identity.clone();
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
                            lease_metrics.set_leader(false);
                            warn!(%identity, leader = false, "lost the leader Lease; stopping");
                            let _ = lost_tx.send(());
                            return;
                        }
                    }
                }
            }
        });
    } else {
        // Without leader election this instance is the only active one.
        metrics.set_leader(true);
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
        return Err(Error::LostLease);
    }
    if let (Some(release), Some(task)) = (release, lease_task) {
        // Hand the Lease over at once instead of letting a standby wait for it to expire.
        let _ = release.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), task).await;
        info!("released the leader Lease");
    }
    Ok(())
}

/// Marks a standby ready once one list of DropletActions succeeded in every watched namespace (all namespaces
/// when `namespaces` is empty), retrying with a capped backoff and logging each failure.
async fn standby_ready(
    client: kube::Client,
    namespaces: Vec<String>,
    ready: tokio::sync::watch::Sender<bool>,
) {
    let apis: Vec<Api<DropletAction>> = if namespaces.is_empty() {
        vec![Api::all(client)]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let mut delay = Duration::from_millis(500);
    let mut pending: Vec<usize> = (0..apis.len()).collect();
    loop {
        let mut failed = Vec::new();
        for i in pending {
            if let Err(e) = apis[i].list(&ListParams::default().limit(1)).await {
                warn!(error = %e, "standby cannot list DropletActions yet; not ready");
                failed.push(i);
            }
        }
        if failed.is_empty() {
            info!("standby ready: DropletActions can be listed");
            let _ = ready.send(true);
            return;
        }
        pending = failed;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
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
