//! Prometheus metrics (prometheus-client), with bounded label sets: no resource names, only categories.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::DropletAction;
use crate::digitalocean::{BudgetSnapshot, PostError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InitiationLabels {
    r#type: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WindowLabels {
    window: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

fn reconcile_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.5, 12))
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconcile_errors: Family<ResultLabels, Counter>,
    reconcile_duration: Histogram,
    initiations: Family<InitiationLabels, Counter>,
    adoptions: Counter,
    finished: Family<PhaseLabels, Counter>,
    action_duration: Family<TypeLabels, Histogram, fn() -> Histogram>,
    do_requests: Family<RequestLabels, Counter>,
    budget_remaining: Family<WindowLabels, Gauge>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered under the `droplet_operator` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("droplet_operator");
        let reconcile_errors = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error category",
            reconcile_errors.clone(),
        );
        let reconcile_duration = reconcile_histogram();
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        let initiations = Family::<InitiationLabels, Counter>::default();
        registry.register(
            "initiations",
            "DigitalOcean action requests that reached DigitalOcean (or may have), by action type and result (ok or the error category)",
            initiations.clone(),
        );
        let adoptions = Counter::default();
        registry.register(
            "adoptions",
            "Actions adopted after a restart or a lost response instead of being re-sent",
            adoptions.clone(),
        );
        let finished = Family::<PhaseLabels, Counter>::default();
        registry.register(
            "actions_finished",
            "DropletActions that reached a final phase, by phase and type",
            finished.clone(),
        );
        let action_duration =
            Family::<TypeLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register(
            "action_duration_seconds",
            "From the first reconcile to the final phase, by action type",
            action_duration.clone(),
        );
        let do_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "digitalocean_requests",
            "DigitalOcean API requests, by route and status class",
            do_requests.clone(),
        );
        let budget_remaining = Family::<WindowLabels, Gauge>::default();
        registry.register(
            "digitalocean_rate_budget_remaining",
            "Requests left in DigitalOcean's rate-limit window (minute or hour) for the most recently used token",
            budget_remaining.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this instance is the active one (holds the leader Lease, or runs without leader election), 0 on a standby",
            leader.clone(),
        );
        Metrics {
            registry,
            leader,
            reconcile_errors,
            reconcile_duration,
            initiations,
            adoptions,
            finished,
            action_duration,
            do_requests,
            budget_remaining,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// This instance became the active one (`true`) or a standby (`false`).
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// A reconcile failed with `category`.
    pub fn reconcile_error(&self, category: &str) {
        self.reconcile_errors
            .get_or_create(&ResultLabels {
                result: category.to_string(),
            })
            .inc();
    }

    /// A reconcile took `d`.
    pub fn reconcile_took(&self, d: Duration) {
        self.reconcile_duration.observe(d.as_secs_f64());
    }

    /// The outcome of an initiation. Counted only when the request reached DigitalOcean or may have (a response
    /// arrived, or it may have been applied); a request the client never sent (rate budget exhausted, connection
    /// refused, invalid request) is not an initiation: it shows in status and as a `digitalocean_requests_total`
    /// `error`.
    pub fn initiation(&self, type_: &str, error: Option<&PostError>) {
        if let Some(e) = error
            && e.error.http_status().is_none()
            && e.applied == crate::digitalocean::Applied::NotApplied
        {
            return;
        }
        let result = error
            .map(|e| e.error.reason().to_string())
            .unwrap_or_else(|| "ok".into());
        self.initiations
            .get_or_create(&InitiationLabels {
                r#type: type_.to_string(),
                result,
            })
            .inc();
    }

    /// Actions were adopted.
    pub fn adopted(&self, n: usize) {
        self.adoptions.inc_by(n as u64);
    }

    /// A DropletAction reached a final phase.
    pub fn finished(&self, da: &DropletAction) {
        let type_ = da.spec.type_.as_str().to_string();
        self.finished
            .get_or_create(&PhaseLabels {
                phase: da.phase().as_str().to_string(),
                r#type: type_.clone(),
            })
            .inc();
        if let Some(st) = &da.status
            && let (Some(start), Some(end)) = (&st.start_time, &st.completion_time)
        {
            let secs = end.0.duration_since(start.0).as_secs_f64().max(0.0);
            self.action_duration
                .get_or_create(&TypeLabels { r#type: type_ })
                .observe(secs);
        }
    }

    /// A DigitalOcean response (or transport failure) on `route`.
    pub fn do_request(&self, route: &str, status_class: &str, budget: &BudgetSnapshot) {
        self.do_requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status: status_class.to_string(),
            })
            .inc();
        self.budget_remaining
            .get_or_create(&WindowLabels {
                window: "minute".into(),
            })
            .set(i64::from(budget.remaining_minute));
        self.budget_remaining
            .get_or_create(&WindowLabels {
                window: "hour".into(),
            })
            .set(i64::from(budget.remaining_hour));
    }
}

impl crate::digitalocean::RequestObserver for Metrics {
    fn on_response(
        &self,
        route: &'static str,
        status_class: &'static str,
        budget: &BudgetSnapshot,
    ) {
        self.do_request(route, status_class, budget);
    }
}
