//! Recurring actions: the `DropletActionSchedule` controller (CronJob is to Job what this is to DropletAction).
//!
//! - [`crd`]: the resource (spec, status, CEL admission rules).
//! - [`cron`]: cron expressions and time zones, with CronJob's daylight-saving behaviour.
//! - [`decide`]: every decision as a pure function of (spec, status, children, clock).
//! - [`reconcile`]: the IO those decisions ask for.
//!
//! Children are DropletActions named `<schedule>-<slot in unix minutes>`, labelled
//! `droplet-operator.dev/schedule` and `droplet-operator.dev/schedule-uid`, annotated with their slot, and owned
//! by the schedule (so deleting the schedule deletes them). The DropletAction controller runs them unchanged.

pub mod crd;
pub mod cron;
pub mod decide;
#[cfg(feature = "sandbox")]
pub mod demo;
pub mod reconcile;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client};
use tracing::{info, warn};

use crate::crd::DropletAction;
use crate::digitalocean::{DoClient, Token};
use crd::DropletActionSchedule;

/// Label with the schedule's name (shortened with a hash beyond 63 characters).
pub const SCHEDULE_LABEL: &str = "droplet-operator.dev/schedule";
/// Label with the schedule's UID (how the controller finds the children).
pub const SCHEDULE_UID_LABEL: &str = "droplet-operator.dev/schedule-uid";
/// Annotation with the child's slot (RFC 3339).
pub const SCHEDULED_AT: &str = "droplet-operator.dev/scheduled-at";

/// Errors of a schedule reconcile: the same as the DropletAction controller's (Kubernetes API, serialisation);
/// DigitalOcean errors are reported in status and events instead.
pub use crate::controller::Error;

/// The schedule controller's clock: real time, or (tests and the demo only) real time sped up by `speed`
/// around a fixed `origin`, so that per-minute slots come every second without changing cron semantics. The
/// origin is fixed (not the process start) so restarted operators agree on the time.
#[derive(Clone, Copy, Debug)]
pub struct ScheduleClock {
    /// Where sped-up time equals real time.
    pub origin: Timestamp,
    /// 1 = real time.
    pub speed: f64,
}

impl Default for ScheduleClock {
    fn default() -> Self {
        ScheduleClock {
            origin: Timestamp::UNIX_EPOCH,
            speed: 1.0,
        }
    }
}

impl ScheduleClock {
    /// Sped up `speed` times from `origin`.
    pub fn sped_up(origin: Timestamp, speed: f64) -> Self {
        ScheduleClock {
            origin,
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                1.0
            },
        }
    }

    /// The schedule controller's now.
    pub fn now(&self) -> Timestamp {
        let real = Timestamp::now();
        if self.speed == 1.0 {
            return real;
        }
        let elapsed = real.duration_since(self.origin).as_secs_f64() * self.speed;
        self.origin
            .checked_add(SignedDuration::from_secs_f64(elapsed))
            .unwrap_or(real)
    }

    /// Real time for a schedule-clock duration.
    pub fn real(&self, d: SignedDuration) -> Duration {
        Duration::from_secs_f64((d.as_secs_f64() / self.speed).max(0.0))
    }
}

/// Shared state of all schedule reconciles.
pub struct Context {
    pub client: Client,
    pub do_client: DoClient,
    pub default_token: Option<Token>,
    pub recorder: Recorder,
    pub clock: ScheduleClock,
}

/// How to run the schedule controller.
#[derive(Clone, Debug, Default)]
pub struct ScheduleOptions {
    /// The clock (real time unless a test speeds it up).
    pub clock: ScheduleClock,
}

/// Runs the schedule controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    do_client: DoClient,
    namespaces: Vec<String>,
    default_token: Option<Token>,
    instance: Option<String>,
    options: ScheduleOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "droplet-operator".into(),
            instance,
        },
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        do_client,
        default_token,
        recorder,
        clock: options.clock,
    });
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let children_only = watcher::Config::default().labels(SCHEDULE_UID_LABEL);
    let mut runs = Vec::new();
    for ns in scopes {
        let (schedules, children): (Api<DropletActionSchedule>, Api<DropletAction>) = match &ns {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let run = Controller::new(schedules, watcher::Config::default().any_semantic())
            .owns(children, children_only.clone())
            .with_config(ControllerConfig::default().concurrency(4))
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
            .for_each(|res| async move {
                if let Err(e) = res {
                    match e {
                        kube::runtime::controller::Error::ObjectNotFound(_) => {}
                        other => warn!(error = %other, "schedule controller error"),
                    }
                }
            });
        runs.push(run);
    }
    futures::future::join_all(runs).await;
    info!("schedule controller stopped");
}
