//! The DropletAction controller: exactly-once, crash-safe, rate-aware.
//!
//! # Exactly once
//! DigitalOcean has no idempotency key for droplet actions: a repeated `POST .../actions` starts the action
//! again. The controller therefore never sends an initiation twice for the same attempt, even when it crashes
//! or loses a response:
//!
//! 1. Before sending, it writes the *intent* (`status.pendingInitiation`: attempt, type, droplets, time) with a
//!    `resourceVersion` precondition. If that write fails, nothing was sent. Two controller instances cannot
//!    both record the same intent: the second write conflicts (409) and re-reads.
//! 2. It sends the request. The DigitalOcean client never re-sends a request that may have been applied
//!    (timeouts, dropped connections, 5xx): it reports the outcome as *ambiguous* instead.
//! 3. Right after a response it records the returned action IDs and clears the intent.
//!
//! A reconcile that finds an intent without IDs (the process died between 1 and 3, or the response was lost)
//! *adopts* instead of re-sending: it lists the droplet's actions (for a tag: each tagged droplet's) and takes
//! over the action of the intent's type that started at or after the intent time (less a clock-skew allowance)
//! and that no DropletAction has claimed yet. Only when no such action has appeared by the end of a grace period
//! (the request timeout plus a margin, after which no request of ours can still be in flight) is it certain that
//! nothing started, and the request is sent again under a fresh intent.
//!
//! # Per-droplet ordering
//! See [`ordering`]: one DropletAction works on a droplet at a time, in creation order. A droplet busy with an
//! action started elsewhere (422 "pending event") waits with backoff (`DropletBusy`) until the deadline.
//!
//! # Few API calls
//! See [`tracker`]: completion is polled adaptively per type, and many in-flight actions are observed with one
//! `GET /v2/actions?per_page=200` call. All calls go through the client's shared per-token rate budget; polling
//! slows down as the budget runs low.
//!
//! # Structure
//! [`decide`] holds every decision as pure functions of (spec, status, clock, observations); [`reconcile`]
//! performs the IO those decisions ask for.

pub mod conditions;
pub mod decide;
pub mod ordering;
pub mod polling;
pub mod reconcile;
pub mod request;
pub mod tokens;
pub mod tracker;

use std::sync::Arc;

use futures::StreamExt;
use futures::TryStreamExt;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::crd::DropletAction;
use crate::digitalocean::{DoClient, Token};
use crate::metrics::Metrics;

/// Errors of a reconcile outside DigitalOcean (DigitalOcean errors are recorded in status instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a request.
    #[error("kubernetes API request failed: {0}")]
    Kube(#[source] kube::Error),
    /// A status could not be serialised.
    #[error("failed to serialise status: {0}")]
    Serialize(#[source] serde_json::Error),
}

impl Error {
    /// Stable, low-cardinality name for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApi",
            Error::Serialize(_) => "Serialize",
        }
    }
}

/// Shared state of all reconciles.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// DigitalOcean client (shared rate budget per token).
    pub do_client: DoClient,
    /// The operator's default token, for resources without `tokenSecretRef`.
    pub default_token: Option<Token>,
    /// Caches of every watched DropletAction (one per watched namespace).
    pub stores: Vec<Store<DropletAction>>,
    /// Batched action-status observation.
    pub tracker: tracker::Tracker,
    /// Event publisher.
    pub recorder: Recorder,
    /// Decision tunables.
    pub config: decide::DecideConfig,
    /// Wakes DropletActions queued behind one that finished.
    pub wake: mpsc::UnboundedSender<ObjectRef<DropletAction>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Whether each store holds its initial list.
    pub synced: Vec<Arc<AtomicBool>>,
    /// UIDs of resources this controller finished; the caches may lag behind their final status.
    pub finished: std::sync::Mutex<std::collections::BTreeMap<String, ObjectRef<DropletAction>>>,
}

/// How to run the controller.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Namespaces to watch; empty = all.
    pub namespaces: Vec<String>,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// Decision tunables.
    pub decide: decide::DecideConfig,
    /// Default token.
    pub default_token: Option<Token>,
    /// Reporter instance (pod name) for events.
    pub instance: Option<String>,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    do_client: DoClient,
    options: RunOptions,
    metrics: Arc<Metrics>,
    ready: Option<tokio::sync::watch::Sender<bool>>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let apis: Vec<Api<DropletAction>> = if options.namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        options
            .namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let (wake_tx, wake_rx) = mpsc::unbounded_channel::<ObjectRef<DropletAction>>();
    let (fanout_tx, _) = tokio::sync::broadcast::channel::<ObjectRef<DropletAction>>(4096);
    let config = ControllerConfig::default().concurrency(options.concurrency);
    // Each namespace gets its own reflector. We run the reflectors ourselves (rather than Controller::new) to
    // learn exactly when each cache holds the initial list (readiness), and to drop managedFields before
    // caching (the controller never reads them; they are most of an object's size).
    let synced: Vec<Arc<AtomicBool>> = apis
        .iter()
        .map(|_| Arc::new(AtomicBool::new(false)))
        .collect();
    let ready_signal = ready.map(Arc::new);
    let mut controllers = Vec::new();
    let mut stores = Vec::new();
    for (api, flag) in apis.into_iter().zip(synced.iter().cloned()) {
        let (reader, writer) = reflector::store::<DropletAction>();
        let all_flags = synced.clone();
        let ready_signal = ready_signal.clone();
        let stream = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(slim_for_cache)
            .reflect(writer)
            .inspect_ok(move |ev| {
                let first_sync =
                    matches!(ev, watcher::Event::InitDone) && !flag.swap(true, Ordering::SeqCst);
                if first_sync && all_flags.iter().all(|f| f.load(Ordering::SeqCst)) {
                    info!("caches synced");
                    if let Some(r) = &ready_signal {
                        let _ = r.send(true);
                    }
                }
            })
            .applied_objects();
        stores.push(reader.clone());
        controllers.push(Controller::for_stream(stream, reader).with_config(config.clone()));
    }
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "droplet-operator".into(),
            instance: options.instance.clone(),
        },
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        tracker: tracker::Tracker::new(do_client.clone(), options.decide.poll_scale),
        do_client,
        default_token: options.default_token.clone(),
        stores: stores.clone(),
        synced: synced.clone(),
        recorder,
        config: options.decide.clone(),
        wake: wake_tx,
        metrics: metrics.clone(),
        finished: Default::default(),
    });

    // Fan wake-ups out to every namespace's controller; each picks its own.
    let fanout = fanout_tx.clone();
    tokio::spawn(async move {
        let mut rx = wake_rx;
        while let Some(r) = rx.recv().await {
            let _ = fanout.send(r);
        }
    });

    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let namespaces = options.namespaces.clone();
    let mut runs = Vec::new();
    for (i, controller) in controllers.into_iter().enumerate() {
        let ns = namespaces.get(i).cloned();
        let wake = tokio_stream::wrappers::BroadcastStream::new(fanout_tx.subscribe()).filter_map(
            move |r| {
                let ns = ns.clone();
                async move {
                    let r = r.ok()?;
                    match &ns {
                        Some(ns) if r.namespace.as_deref() != Some(ns.as_str()) => None,
                        _ => Some(r),
                    }
                }
            },
        );
        let ctx = ctx.clone();
        let run = controller
            .reconcile_on(wake)
            .graceful_shutdown_on(shutdown.clone())
            .run(timed_reconcile, reconcile::error_policy, ctx)
            .for_each(|res| async move {
                if let Err(e) = res {
                    match e {
                        kube::runtime::controller::Error::ObjectNotFound(_) => {}
                        other => warn!(error = %other, "controller error"),
                    }
                }
            });
        runs.push(run);
    }
    futures::future::join_all(runs).await;
    info!("controller stopped");
}

/// What the controller keeps of a DropletAction in its cache (10,000 cached resources must stay cheap).
/// managedFields and annotations (kubectl's last-applied copy of the spec) are never read. A finished resource
/// only needs its phase, completion time, action IDs and droplets: decisions on it never change its status, so
/// the write-only-if-changed comparison against this copy stays exact.
pub fn slim_for_cache(da: &mut DropletAction) {
    da.managed_fields_mut().clear();
    da.metadata.annotations = None;
    if let Some(st) = da.status.as_mut()
        && st.phase.is_some_and(crate::crd::Phase::is_terminal)
    {
        st.conditions = Vec::new();
        st.message = None;
        st.last_error = None;
        for a in st.actions.iter_mut() {
            a.region_slug = None;
            a.droplet_status = None;
        }
    }
}

async fn timed_reconcile(
    obj: Arc<DropletAction>,
    ctx: Arc<Context>,
) -> Result<kube::runtime::controller::Action, Error> {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "reconcile",
        namespace = obj.metadata.namespace.as_deref().unwrap_or(""),
        name = obj.metadata.name.as_deref().unwrap_or(""),
        r#type = obj.spec.type_.as_str(),
        action_id = tracing::field::Empty,
    );
    let start = std::time::Instant::now();
    let result = reconcile::reconcile(obj, ctx.clone())
        .instrument(span)
        .await;
    ctx.metrics.reconcile_took(start.elapsed());
    result
}
