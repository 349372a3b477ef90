//! The DropletAction controller: exactly-once, crash-safe, rate-aware.
//!
//! # Exactly once
//! DigitalOcean has no idempotency key for droplet actions: a repeated `POST .../actions` starts the action
//! again. And DigitalOcean is slow and eventually consistent: a POST may be applied seconds after our request
//! timed out, lists may omit actions for a while, `started_at` comes from a clock that is not ours, and other
//! clients (doctl, the console) start actions on the same droplets. The controller therefore never sends a
//! second initiation for an attempt on its own; it either *knows* the outcome, *finds* the action, or *stops
//! and asks*. Every initiation follows one protocol ([`reconcile`]'s `initiate`, decisions in [`decide`]):
//!
//! 1. **Watermark.** Right before, it takes the highest action ID it has received: DigitalOcean action IDs only
//!    grow, so an action our request starts has a higher ID than anything received before the send. The value is
//!    used when a response showed it as the account's newest within [`policy::WATERMARK_MAX_AGE`] (a POST's
//!    answer, the first page of `GET /v2/actions`; see `digitalocean::watermark`); otherwise one read of the
//!    account's newest action serves every initiation waiting for it (without `actions:read`: the droplet's newest
//!    actions, per initiation). A lagging list or an older value only lowers the watermark, which never hides
//!    ours; it widens the candidates by other clients' actions of that age at most.
//! 2. **Rate-budget slot.** It reserves the request's slot in the token's budget before the intent, so no budget
//!    wait sits between the intent and the send.
//! 3. **Intent.** It writes `status.pendingInitiation` (attempt, type, droplets, watermark, time) with a
//!    `resourceVersion` precondition. If that write fails, nothing was sent. Two replicas cannot both record the
//!    intent: the second write conflicts (409).
//! 4. **Leadership.** Right before the send it checks that this replica still holds the Lease (each replica
//!    renews it under its own field manager, `droplet-operator-<identity>`); if not, it withdraws the intent
//!    and sends nothing. A new leader never sends an old intent: it looks for its action (5).
//! 5. **Send.** The client never re-sends a request that may have been applied (timeout, dropped connection,
//!    5xx): it reports the outcome as *ambiguous*. A known outcome is written at once: the returned action
//!    IDs, or the refusal. A 409 on that write re-reads the object and writes again: IDs are never dropped.
//!    An ambiguous outcome records `sendEndedAt` and the request is looked for (6).
//! 6. **Adoption.** An intent without IDs (ambiguous outcome, or the process died after 3) is resolved by
//!    listing the droplets' actions for [`policy::ADOPT_WINDOW`] (120 s, scaled by `--poll-scale`) after the
//!    send ended (when no end was recorded: after the intent plus the request timeout), long enough for a late
//!    commit and a lagging list. A match is an action of the intent's type with an ID above the watermark, on
//!    one of its droplets, claimed by no DropletAction; no clock is compared, so skew does not matter. When
//!    the window ends with exactly one match per droplet, it is adopted. Two or more mean another client ran
//!    the same action there, and which one is ours cannot be known: that is uncertain too (7).
//! 7. **Uncertain.** When the window passes with nothing found, the controller does not guess "nothing
//!    started": the resource stops with reason `InitiationUncertain` (Stalled=True, a Warning event) and a
//!    message saying what was looked for and how to check. The user resolves it with an annotation:
//!    `droplet-operator.dev/adopt-action-id: "<id>"` adopts that action (checked: same type, same droplet,
//!    unclaimed), `droplet-operator.dev/resend: "true"` sends the request again as the same attempt. The
//!    controller removes the annotation before acting on it, so it is used once. A deadline still ends the
//!    resource, saying the action may run.
//! 8. **Busy after ambiguity.** A re-send refused with 422 "pending event" means the first request may be what
//!    keeps the droplet busy: the controller looks for it again (6) instead of backing off and re-sending.
//!
//! Remaining risk, stated: when our request started nothing (lost before DigitalOcean applied it, or the
//! process died before sending) and exactly one other client's action of the same type shows up on the droplet
//! within the window, it is taken for ours. Nothing can tell the two apart (DigitalOcean reports no request
//! parameters or client identity); the watermark keeps every earlier action out, and no duplicate initiation
//! can follow from it.
//!
//! # States
//! [`decide::state_of`] derives one [`decide::State`] from spec, status and clock; one function per state
//! returns the next step ([`decide::Next`]); [`reconcile`] performs its IO and feeds the result back.
//!
//! | State | What happens | Next |
//! |---|---|---|
//! | `Finished` | Succeeded/Failed/Expired: wait for `ttlSecondsAfterFinished`, then delete | — |
//! | `DeadlinePassed` | Failed `DeadlineExceeded`; names actions and uncertain requests that may still run | `Finished` |
//! | `NotAfterPassed` | nothing was sent: Expired `NotAfterPassed` | `Finished` |
//! | `NoToken` | `TokenNotFound` (Warning once), re-check every 15 s | any |
//! | `ResolvingTag` | list the tagged droplets; none: Failed `NoDropletsWithTag` | `New` |
//! | `New` | queued behind another DropletAction (`WaitingForDroplet`), or backing off, or initiate (protocol above) | `Active`, `Initiating`, `New` (refused: `DropletBusy`/`Retrying`), `Finished` (permanent error) |
//! | `Initiating` | an intent without IDs: look for its action above the watermark until the window ends (`Adopting`) | `Active` (exactly one match), `Uncertain` (none, or several) |
//! | `Uncertain` | `InitiationUncertain`, Stalled: wait for the adopt or resend annotation | `Active`, `Initiating` |
//! | `Active` | poll actions in flight (batched), resolve snapshot images (bounded), check a shutdown's power state, send the power_off fallback (`powerOffAfterSeconds` passed and the shutdown not finished, or it errored), retry an errored attempt (`backoffLimit`); unknown DigitalOcean status: `UnknownActionStatus`, polled, bounded | `Active`, `Initiating` (retry / fallback), `Finished` |
//!
//! # Per-droplet ordering
//! See [`ordering`]: one DropletAction works on a droplet at a time, in creation order (the API server's
//! revision at creation, recorded in `status.creationRevision`), one queue per namespace and token so that a
//! tenant that cannot start never blocks another. A droplet busy with an action started elsewhere (422 "pending
//! event") waits with backoff (`DropletBusy`) until the deadline.
//!
//! # One bad object stops nobody
//! See [`intake`]: the watch reads loosely typed objects (spec and status as plain JSON) and converts each one
//! alone; an object that cannot be read is reported on itself (Warning event and Stalled condition, reason
//! `Unreadable`, naming the field) and skipped, so the initial list, readiness and every other resource carry on.
//!
//! # Few API calls
//! See [`tracker`]: completion is polled adaptively per type, and many in-flight actions are observed with one
//! `GET /v2/actions?per_page=200` call. All calls go through the client's shared per-token rate budget; polling
//! slows down as the budget runs low.
//!
//! # Structure
//! [`decide`] holds every decision as pure functions of (spec, status, clock, observations), one file per step;
//! [`policy`] every timing; [`reconcile`] performs the IO those decisions ask for and decides nothing.

pub mod conditions;
pub mod decide;
pub mod intake;
pub mod ordering;
pub mod policy;
pub mod polling;
pub mod reconcile;
pub mod request;
pub mod tokens;
pub mod tracker;

use std::sync::Arc;

use futures::StreamExt;
use futures::TryStreamExt;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
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
    /// Event publisher (notes cut to 1 KiB, names valid for the longest resource names).
    pub recorder: crate::events::Publisher,
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
    /// With leader election: true while this replica holds the Lease.
    pub leader: Option<Arc<AtomicBool>>,
}

impl Context {
    /// Whether this replica may send to DigitalOcean: it holds the Lease (or runs without leader election).
    pub fn is_leader(&self) -> bool {
        self.leader
            .as_ref()
            .is_none_or(|l| l.load(Ordering::SeqCst))
    }
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
    /// With leader election: true while this replica holds the Lease (None: no leader election).
    pub leader: Option<Arc<AtomicBool>>,
}

/// Objects per page of the watch's list requests.
pub const LIST_PAGE_SIZE: u32 = 100;

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    do_client: DoClient,
    options: RunOptions,
    metrics: Arc<Metrics>,
    ready: Option<tokio::sync::watch::Sender<bool>>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // Watched loosely typed and read one object at a time (see [`intake`]): an object that cannot be read is reported
    // and skipped instead of failing the whole list.
    let apis: Vec<Api<intake::Stored>> = if options.namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        options
            .namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let recorder = crate::events::Publisher::new(
        client.clone(),
        Reporter {
            controller: "droplet-operator".into(),
            instance: options.instance.clone(),
        },
    );
    let (reports_tx, reports_rx) = mpsc::unbounded_channel::<intake::Report>();
    tokio::spawn(intake::report_unreadable(
        client.clone(),
        recorder.clone(),
        reports_rx,
    ));
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
        let reports = reports_tx.clone();
        // Pages of 100 (kube's default is 500): a page is decoded whole before its objects are read and slimmed,
        // so the page size bounds the memory a re-list needs on top of the cache.
        let stream = watcher(
            api,
            watcher::Config::default()
                .any_semantic()
                .page_size(LIST_PAGE_SIZE),
        )
        .default_backoff()
        .filter_map(move |ev| {
            let converted = ev.map(|ev| intake::convert(ev, &reports)).transpose();
            std::future::ready(converted)
        })
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
    drop(reports_tx);
    let ctx = Arc::new(Context {
        client: client.clone(),
        tracker: tracker::Tracker::new(do_client.clone(), options.decide.poll_scale)
            .with_wake(wake_tx.clone()),
        do_client,
        default_token: options.default_token.clone(),
        stores: stores.clone(),
        synced: synced.clone(),
        recorder,
        config: options.decide.clone(),
        wake: wake_tx,
        metrics: metrics.clone(),
        finished: Default::default(),
        leader: options.leader.clone(),
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
    // kube's runner waits for every store to be ready before it can wind down; before the first sync no reconcile
    // gets past its first line (see reconcile), so nothing can be in flight: stop at once.
    let never_synced = {
        let synced = synced.clone();
        async move {
            shutdown.await;
            if synced.iter().all(|s| s.load(Ordering::SeqCst)) {
                futures::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = futures::future::join_all(runs) => {}
        _ = never_synced => info!("stopping before the caches synced"),
    }
    info!("controller stopped");
}

/// What the controller keeps of a DropletAction in its cache (10,000 cached resources must stay cheap).
/// managedFields and annotations (kubectl's last-applied copy of the spec) never get here: the intake does not
/// decode them (see [`intake::Stored`]). A finished resource only needs its phase, completion time, action
/// IDs and droplets (the ordering gate skips it, adoption excludes its action IDs, the TTL reads the completion
/// time): decisions on it never change its status, so the write-only-if-changed comparison against this copy
/// stays exact. Every string dropped here is a heap allocation less per finished resource.
pub fn slim_for_cache(da: &mut DropletAction) {
    if let Some(st) = da.status.as_mut()
        && st.phase.is_some_and(crate::crd::Phase::is_terminal)
    {
        st.conditions = Vec::new();
        st.message = None;
        st.last_error = None;
        st.reason = None;
        st.target = None;
        st.action_summary = None;
        st.creation_revision = None;
        for a in st.actions.iter_mut() {
            a.region_slug = None;
            a.droplet_status = None;
            a.type_ = String::new();
            a.status = String::new();
        }
        st.actions.shrink_to_fit();
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
