//! A stateful DigitalOcean API simulator, for tests, `droplet-operator sandbox`
//! and benchmarks. It is an independent server-side implementation with its
//! own wire types (it shares nothing with [the operator's DigitalOcean client]), so tests of
//! the client against it are meaningful.
//!
//! # What is simulated
//!
//! Served on loopback by [`Simulator::start`]:
//!
//! | endpoint | success | scopes |
//! |---|---|---|
//! | `POST /v2/droplets/{id}/actions` | 201 `{"action"}` | `droplet:update` (+ `droplet:admin` for restore/password_reset/rebuild, `droplet:create` for resize, `image:create` for snapshot) |
//! | `POST /v2/droplets/actions?tag_name=` | 201 `{"actions"}`, one per tagged droplet | `droplet:update` + `tag:read` (+ `image:create` for snapshot) |
//! | `GET /v2/droplets/{id}/actions[/{action_id}]` | 200, newest first, paged | `droplet:read` |
//! | `GET /v2/actions[/{id}]` | 200, account-wide, newest first, paged | `actions:read` |
//! | `GET /v2/droplets[?tag_name=\|name=]`, `GET /v2/droplets/{id}` | 200 | `droplet:read` (+ `tag:read` with `tag_name`) |
//! | `GET /v2/droplets/{id}/snapshots`, `/backups` | 200, paged | `droplet:read` |
//! | `DELETE /v2/snapshots/{id}` | 204 (404 when no such snapshot; backups are not deleted) | `image:delete` |
//!
//! - Every response carries `ratelimit-limit`, `ratelimit-remaining`,
//!   `ratelimit-reset` (epoch seconds) and `x-request-id`; 429s add `retry-after`.
//! - Errors are `{id, message, request_id}`: 400 `bad_request` (malformed JSON),
//!   401 `unauthorized`, 403 `forbidden` (missing scope), 404 `not_found`,
//!   422 `unprocessable_entity` (invalid body, "Droplet already has a pending
//!   event.", "there are currently blocking events processing for one or more
//!   of the droplets" for by-tag POSTs, "Droplet is already powered off." for
//!   power_off of an off droplet, "Size can not decrease size of Droplet's
//!   disk image"), 429 `too_many_requests`, 500 `server_error`.
//! - Pagination: `per_page` defaults to 20; values above 200 are clamped to
//!   200; `page`/`per_page` below 1 or non-integers are a 422. `links.pages`
//!   holds absolute `first`/`prev`/`next`/`last` URLs only when relevant, and
//!   `links` is `{}` when one page holds everything; `meta.total` is always set.
//! - Actions are `in-progress` for a per-type duration ([`ActionDurations`],
//!   scaled by `scale`) while the droplet is `locked`, then `completed` (effects
//!   applied) or `errored` (faults; no effect). Completion is computed lazily
//!   from the clock on every access, so an action is never seen completed
//!   before its duration elapsed, and its effects are visible as soon as it is.
//! - Snapshots become images whose `created_at` equals the action's `started_at`.
//! - Rate limits: sliding windows per token (default 250/min, 5000/h).
//!   `ratelimit-limit` is the hourly limit, `ratelimit-remaining` what is left
//!   of it (0 while the minute window is full), `ratelimit-reset` when the
//!   oldest request of the hour window expires. A refused request gets 429
//!   with `retry-after` = seconds until the oldest request of the full window
//!   expires; it is logged but not counted and has no effect.
//! - Faults ([`Faults`], changeable at run time with [`SimHandle::set_faults`]
//!   or `PUT /_sim/faults`): 500s, latency, 429 bursts, errored actions,
//!   "apply the POST, then close the connection without a response", and the
//!   exactly-once fault model: late commits (applied seconds after the POST
//!   arrived, possibly after the client timed out), lagging action lists,
//!   5xx after apply, clock skew of reported times (both signs), foreign
//!   actions by another client, unknown status values and actions stuck
//!   in progress forever ([`Faults::hostile`] turns them all on).
//! - The request log ([`SimHandle::requests`], [`SimHandle::post_requests`])
//!   records every request at arrival, so a POST whose client gave up (499)
//!   still counts: exactly-once is measured on POST *requests*, not on
//!   applied actions.
//! - Introspection under `/_sim/` (see [`introspect`]) and through [`SimHandle`].
//! - Not simulated: `enable_private_networking` (deprecated; 422 like any
//!   unknown type), droplet creation/deletion, the `type`/GPU filter of
//!   `GET /v2/droplets`, field hiding for tokens without `tag:read`/`image:read`.
//!   `power_on` of an active droplet and `shutdown` of an off one are accepted
//!   (no-op effect).
//!
//! # Seed data
//!
//! With `seed_examples` (default), every droplet is `ubuntu-24-04-x64`:
//!
//! | id | name | status | tags | size | region | extra |
//! |---|---|---|---|---|---|---|
//! | 101001 | web-1 | active | web, frontend | s-1vcpu-1gb | nyc3 | |
//! | 101002 | web-2 | active | web, frontend | s-1vcpu-1gb | nyc3 | |
//! | 101003 | web-3 | active | web | s-1vcpu-2gb | nyc3 | |
//! | 101004 | db-1 | active | db | s-2vcpu-4gb | sfo3 | features `[backups]` (daily policy), backup_ids `[701001, 701002]` |
//! | 101005 | db-2 | active | db | s-2vcpu-4gb | sfo3 | snapshot_ids `[702001]` |
//! | 101006 | batch-1 | off | batch | s-4vcpu-8gb | nyc3 | |
//! | 101007 | batch-2 | off | batch | s-4vcpu-8gb | nyc3 | |
//! | 101008 | cache-1 | active | cache | s-2vcpu-2gb | nyc3 | |
//! | 101009 | legacy-1 | active | legacy | s-1vcpu-1gb | nyc3 | kernel 8611 |
//! | 101010 | staging-1 | active | staging, web-staging | s-1vcpu-1gb | nyc3 | |
//! | 101011 | stage-2 | active | staging | s-1vcpu-1gb | nyc3 | |
//! | 101012 | ops-1 | active | ops | s-1vcpu-2gb | nyc3 | |
//!
//! `generated_droplets: N` adds ids 200001..=200000+N named `gen-{i}`, tagged
//! `gen` and `gen-{i % 10}`, active, s-1vcpu-1gb, nyc3. [`SimHandle::add_droplet`]
//! without an id allocates from 300001. Action ids start at 1800000001; new
//! snapshot image ids at 703001.
//!
//! Known sizes: s-1vcpu-512mb-10gb (10 GB disk), s-1vcpu-1gb (25), s-1vcpu-2gb
//! (50), s-2vcpu-2gb (60), s-2vcpu-4gb (80), s-4vcpu-8gb (160), s-8vcpu-16gb
//! (320). Image slugs: ubuntu-24-04-x64, ubuntu-22-04-x64, debian-12-x64,
//! fedora-40-x64, rockylinux-9-x64 (ids 160000001..=160000005), plus the ids
//! of existing backups and snapshots. Kernels: 8611, 8612, 8613.

mod catalog;
mod config;
mod conn;
mod faults;
mod handlers;
pub mod introspect;
mod model;
mod ratelimit;
mod seed;
mod server;
mod state;
mod validate;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::net::TcpListener;
use url::Url;

pub use config::{ActionDurations, DEFAULT_SIM_TOKEN, SimConfig, TokenSpec};
pub use faults::{Fate, Faults};
pub use introspect::RequestRecord;
pub use model::{
    ActionStatus, BackupWindow, Initiation, PostRecord, SimAction, SimDroplet, SimDropletSeed,
    SimImage,
};
pub use validate::{ActionParams, BackupPolicy, ImageSpec};

use conn::{ConnHandle, SimListener};
use faults::FaultState;
use ratelimit::RateLimiter;
use seed::{seed_examples, seed_generated};
use server::{Inner, Shared};
use state::State;
use validate::ActionRequest;

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// Binds `addr` (e.g. `127.0.0.1:0` for a free port), seeds the state and
    /// serves in a background task of the current tokio runtime.
    pub async fn start(config: SimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let base_url = Url::parse(&format!("http://{local}"))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut state = State::new(config.action_durations.clone());
        if config.seed_examples {
            seed_examples(&mut state);
        }
        seed_generated(&mut state, config.generated_droplets);
        let tokens: HashMap<_, _> = config
            .tokens
            .iter()
            .map(|t| (t.token.clone(), t.scopes.clone().map(Arc::new)))
            .collect();
        let inner = Inner {
            state,
            faults: FaultState::new(config.faults.clone()),
            limiter: RateLimiter::new(config.rate_limit_per_minute, config.rate_limit_per_hour),
            log: Vec::new(),
            next_seq: 0,
        };
        let shared = Arc::new(Shared::new(inner, tokens, base_url));
        let listener = SimListener {
            inner: listener,
            closed: shared.closed.clone(),
        };
        let app =
            server::router(shared.clone()).into_make_service_with_connect_info::<ConnHandle>();
        let mut shutdown_rx = shared.shutdown_tx.subscribe();
        tokio::spawn(async move {
            let stop = async move {
                let _ = shutdown_rx.wait_for(|stop| *stop).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::warn!("DigitalOcean simulator stopped: {e}");
            }
        });
        tokio::spawn(foreign_actions(shared.clone()));
        tracing::debug!(%local, "DigitalOcean simulator listening");
        Ok(SimHandle { shared })
    }
}

/// The foreign-action fault: another API client (a person with doctl, a
/// cron job) repeats the action last posted to a droplet, at random moments
/// while the droplet is idle. Runs until the simulator shuts down.
async fn foreign_actions(shared: Arc<Shared>) {
    const TICK: Duration = Duration::from_millis(200);
    let mut shutdown_rx = shared.shutdown_tx.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown_rx.wait_for(|stop| *stop) => return,
        }
        let mut g = shared.lock();
        if g.faults.faults.foreign_action_rate <= 0.0 {
            continue;
        }
        let now = Instant::now();
        for (droplet_id, req) in g.state.idle_posted_droplets() {
            if g.faults.foreign_action(TICK) {
                let fate = g.faults.fate(droplet_id, &req.type_);
                g.state
                    .create_action(droplet_id, req, Initiation::Foreign, fate, None, now);
            }
        }
    }
}

/// A running simulator. Cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("url", &self.shared.base_url.as_str())
            .finish()
    }
}

impl SimHandle {
    /// `http://127.0.0.1:PORT` (no trailing path).
    pub fn url(&self) -> Url {
        self.shared.base_url.clone()
    }

    /// Every `/v2` request received so far, in arrival order (`status` 0
    /// while in flight, 499 when the client gave up before the answer).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().log.clone()
    }

    /// Every action POST *request* received (`POST /v2/droplets/{id}/actions`
    /// and `POST /v2/droplets/actions?tag_name=`), whatever its outcome:
    /// refused ones (422, 429, 5xx), applied ones, late ones and those whose
    /// client went away. What exactly-once is measured on.
    pub fn post_requests(&self) -> Vec<RequestRecord> {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/actions"))
            .cloned()
            .collect()
    }

    /// Actions initiated through POSTs (single or by tag) for `droplet_id`,
    /// oldest first. Actions from [`Self::start_external_action`] are not included.
    pub fn posts_for_droplet(&self, droplet_id: i64) -> Vec<PostRecord> {
        self.shared.lock().state.posts_for(droplet_id)
    }

    /// All actions, oldest first.
    pub fn actions(&self) -> Vec<SimAction> {
        self.shared.lock().state.all_actions().to_vec()
    }

    pub fn action(&self, id: i64) -> Option<SimAction> {
        self.shared.lock().state.action(id).cloned()
    }

    pub fn droplet(&self, id: i64) -> Option<SimDroplet> {
        self.shared.lock().state.droplet(id).cloned()
    }

    pub fn droplets(&self) -> Vec<SimDroplet> {
        self.shared.lock().state.all_droplets()
    }

    /// Every image (snapshots and backups).
    pub fn images(&self) -> Vec<SimImage> {
        self.shared
            .lock()
            .state
            .all_images()
            .into_iter()
            .cloned()
            .collect()
    }

    pub fn image(&self, id: i64) -> Option<SimImage> {
        self.shared.lock().state.image(id).cloned()
    }

    /// Replaces the faults (and re-seeds the fault RNG).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults = FaultState::new(faults);
    }

    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.faults.clone()
    }

    /// Adds (or replaces, with an explicit id) a droplet; returns its id.
    pub fn add_droplet(&self, d: SimDropletSeed) -> i64 {
        let created =
            Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH);
        self.shared.lock().state.add_droplet(d, created)
    }

    /// Starts an action "outside the operator" (e.g. from the DO console): the
    /// droplet is locked until it completes. No validation; actions needing
    /// parameters complete without effect. Returns the action id, or 0 if the
    /// droplet does not exist.
    pub fn start_external_action(&self, droplet_id: i64, type_: &str) -> i64 {
        let mut g = self.shared.lock();
        let params = match type_ {
            "snapshot" => ActionParams::Snapshot { name: None },
            "enable_backups" => ActionParams::Backups { policy: None },
            _ => ActionParams::None,
        };
        let req = ActionRequest {
            type_: type_.to_string(),
            params,
        };
        let fate = g.faults.fate(droplet_id, type_);
        g.state
            .create_action(
                droplet_id,
                req,
                Initiation::External,
                fate,
                None,
                Instant::now(),
            )
            .map_or(0, |a| a.id)
    }

    /// Number of `/v2` requests received (including refused ones).
    pub fn request_count(&self) -> u64 {
        self.shared.lock().log.len() as u64
    }

    /// The largest number of `/v2` requests that arrived within any sliding
    /// `window` (for checking client-side rate limiting in benchmarks).
    pub fn max_requests_in_window(&self, window: Duration) -> u64 {
        if window.is_zero() {
            return 0;
        }
        let mut times: Vec<Instant> = self.shared.lock().log.iter().filter_map(|r| r.at).collect();
        times.sort_unstable();
        let mut best = 0usize;
        let mut lo = 0usize;
        for hi in 0..times.len() {
            while lo < hi && times[hi].duration_since(times[lo]) >= window {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best as u64
    }

    /// Clears the request log and the post records (state is kept).
    pub fn reset_log(&self) {
        let mut g = self.shared.lock();
        g.log.clear();
        g.state.clear_posts();
    }

    /// Stops accepting connections and closes the open ones.
    pub fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let _ = self.shared.shutdown_tx.send(true);
    }
}
