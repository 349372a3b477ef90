//! `droplet-operator run`: wires the Kubernetes client, the DigitalOcean client, the admin server and the
//! controller together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
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
        // DigitalOcean allows 250/min and 5000/h per token; keep a margin for other clients of the same token
        // and for requests in flight when a window turns over.
        rate_limits: RateLimits {
            per_minute: 240,
            per_hour: 4800,
        },
        observer: Some(metrics),
        ..ClientConfig::default()
    };
    DoClient::new(client_cfg).map_err(|e| format!("invalid DigitalOcean API settings: {e}"))
}

/// Runs the operator with `client` until `shutdown` resolves.
pub async fn run(
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
    let options = RunOptions {
        namespaces: cfg.namespaces.clone(),
        concurrency: cfg.concurrency,
        decide: controller::default_decide_config(cfg.do_timeout, cfg.poll_scale),
        default_token: cfg.default_token.clone(),
        instance: cfg.instance.clone(),
    };
    info!(
        api = %cfg.do_api_url,
        namespaces = ?cfg.namespaces,
        default_token = cfg.default_token.as_ref().map(Token::fingerprint),
        "starting controller"
    );
    controller::run(
        client,
        do_client,
        options,
        metrics,
        Some(ready_tx),
        shutdown,
    )
    .await;
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
