//! Calls per action AND completion-detection lag, for the operator and for two reference pollers on the same
//! simulated actions.
//!
//! Lag is the time from the simulator completing an action (its exact completion instant, not the whole-second
//! `completed_at`) to the DropletAction's status showing it finished (seen through a watch on the emulator),
//! divided by the time scale so that every figure is in real-time seconds.
//!
//! Reference pollers, written here after the peers' documented behaviour, each action in its own task (as N
//! parallel `doctl compute droplet-action ... --wait` runs would):
//! - `doctl`: POST, then `GET /v2/actions/{id}` every 5 s until it is no longer in progress;
//! - `python-digitalocean` (`Action.wait(update_every_seconds=1, repeat=20)`): the same every 1 s, giving up
//!   after 20 polls (an action still running then is counted as `gave_up`, with no lag).
//!
//! The simulator draws each action's duration from (seed, droplet, its count of earlier actions), so the
//! pollers, run on a fresh simulator with the same seed and droplets, face exactly the operator's durations.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Map, Value, json};

use do_sim::{ActionStatus, DEFAULT_SIM_TOKEN, RequestRecord, SimHandle};
use droplet_operator::crd::DropletAction;

use super::{
    Check, Env, NAMESPACE, Report, Runner, Settings, Timing, check_range, count, droplet_of,
    insert_counts, insert_kube_writes, percentile, round,
};

/// One lag scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct LagSpec {
    /// Scenario name.
    pub name: &'static str,
    /// Action type.
    pub type_: &'static str,
    /// Every action this long (simulated seconds), instead of the simulator's model.
    pub fixed_seconds: Option<f64>,
    /// Targets, for the report.
    pub target: Target,
}

/// What a scenario must reach.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Calls ≤ doctl's and lag p50 ≤ doctl's.
    DominateDoctl,
    /// At most `calls` per action (lag p50 at most `lag_p50` s when given).
    Calls { calls: f64, lag_p50: Option<f64> },
}

/// The lag scenarios, in the order `all` runs them.
pub const LAG_SCENARIOS: [LagSpec; 6] = [
    LagSpec {
        name: "lone_reboot",
        type_: "reboot",
        fixed_seconds: None,
        target: Target::DominateDoctl,
    },
    LagSpec {
        name: "lone_power_cycle_60s",
        type_: "power_cycle",
        fixed_seconds: Some(60.0),
        target: Target::Calls {
            calls: 4.0,
            lag_p50: Some(2.0),
        },
    },
    LagSpec {
        name: "lone_resize",
        type_: "resize",
        fixed_seconds: None,
        target: Target::DominateDoctl,
    },
    LagSpec {
        name: "lone_snapshot",
        type_: "snapshot",
        fixed_seconds: None,
        target: Target::DominateDoctl,
    },
    LagSpec {
        name: "concurrent_20",
        type_: "reboot",
        fixed_seconds: None,
        target: Target::Calls {
            calls: 1.3,
            lag_p50: Some(1.5),
        },
    },
    LagSpec {
        name: "concurrent_200",
        type_: "reboot",
        fixed_seconds: None,
        target: Target::Calls {
            calls: 1.02,
            lag_p50: None,
        },
    },
];

/// The spec of a lag scenario by name.
pub fn spec(name: &str) -> Option<&'static LagSpec> {
    LAG_SCENARIOS.iter().find(|s| s.name == name)
}

fn timing(spec: &LagSpec, s: &Settings) -> Timing {
    match spec.fixed_seconds {
        Some(seconds) => Timing::FixedScaled {
            seconds,
            scale: s.time_scale,
        },
        None => Timing::Model {
            scale: s.time_scale,
        },
    }
}

fn object(name: &str, droplet: i64, type_: &str) -> Result<DropletAction, String> {
    let mut spec = json!({"dropletId": droplet, "type": type_});
    if type_ == "resize" {
        spec["size"] = json!("s-2vcpu-2gb");
    }
    serde_json::from_value(json!({
        "apiVersion": "droplet-operator.dev/v1alpha1",
        "kind": "DropletAction",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }))
    .map_err(|e| format!("building a DropletAction: {e}"))
}

/// Completes `count` actions of `type_` started outside the operator on droplets `0..count` (the account's
/// history the operator learns from after a start).
async fn history(
    sim: &SimHandle,
    type_: &str,
    count: usize,
    timeout: Duration,
) -> Result<(), String> {
    let ids: Vec<i64> = (0..count)
        .map(|i| sim.start_external_action(droplet_of(i), type_))
        .collect();
    let deadline = Instant::now() + timeout;
    while ids.iter().any(|id| {
        sim.action(*id)
            .is_none_or(|a| a.status == ActionStatus::InProgress)
    }) {
        if Instant::now() > deadline {
            return Err("the history actions did not complete".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// When each DropletAction was first seen terminal, by name.
type Seen = Arc<Mutex<BTreeMap<String, (Instant, i64)>>>;

fn watch_terminal(api: Api<DropletAction>) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let out = seen.clone();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).applied_objects());
        while let Some(ev) = stream.next().await {
            let Ok(obj) = ev else { continue };
            if !obj.phase().is_terminal() {
                continue;
            }
            let at = Instant::now();
            let name = obj.metadata.name.clone().unwrap_or_default();
            let id = obj
                .status
                .as_ref()
                .and_then(|s| s.actions.last())
                .map_or(0, |a| a.id);
            out.lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(name)
                .or_insert((at, id));
        }
    });
    (seen, task)
}

/// Lags (real-time seconds) of the seen actions.
fn lags(sim: &SimHandle, seen: &BTreeMap<String, (Instant, i64)>, scale: f64) -> Vec<f64> {
    let mut out: Vec<f64> = seen
        .values()
        .filter_map(|(at, id)| {
            let due = sim.action(*id)?.due?;
            Some(at.saturating_duration_since(due).as_secs_f64() / scale)
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

/// What one poller achieved.
struct Outcome {
    calls: usize,
    actions: usize,
    lags: Vec<f64>,
    gave_up: usize,
}

impl Outcome {
    fn calls_per_action(&self) -> f64 {
        self.calls as f64 / self.actions.max(1) as f64
    }

    fn p(&self, q: f64) -> f64 {
        percentile(&self.lags, q)
    }

    fn json(&self) -> Value {
        json!({
            "calls_per_action": round(self.calls_per_action(), 3),
            "lag_p50_s": round(self.p(50.0), 3),
            "lag_p99_s": round(self.p(99.0), 3),
            "gave_up": self.gave_up,
        })
    }
}

/// The droplets of trial `t` (after `history` droplets).
fn trial_droplets(s: &Settings, t: usize) -> std::ops::Range<usize> {
    let first = s.history + t * s.n;
    first..first + s.n
}

/// The operator, `s.trials` rounds of `s.n` concurrent actions one after another.
async fn operator_run(
    spec: &LagSpec,
    runner: &Runner,
    s: &Settings,
) -> Result<(Outcome, Check, Map<String, Value>), String> {
    let droplets = s.history + s.n * s.trials;
    let env = Env::start_timed(droplets, timing(spec, s), s.sim_rate_limit).await?;
    let result = async {
        history(&env.sim, spec.type_, s.history, s.timeout).await?;
        env.sim.reset_log();
        let (seen, watch) = watch_terminal(env.api.clone());
        let op = env.start_operator(runner, s.time_scale).await?;
        let t0 = Instant::now();
        let mut names = Vec::new();
        for t in 0..s.trials {
            let batch: Vec<String> = trial_droplets(s, t)
                .map(|i| format!("lag-{t}-{i}"))
                .collect();
            let created: Vec<Result<(), String>> = futures::stream::iter(trial_droplets(s, t))
                .map(|i| {
                    let api = env.api.clone();
                    let name = format!("lag-{t}-{i}");
                    async move {
                        let obj = object(&name, droplet_of(i), spec.type_)?;
                        api.create(&PostParams::default(), &obj)
                            .await
                            .map(|_| ())
                            .map_err(|e| format!("create {name}: {e}"))
                    }
                })
                .buffer_unordered(32)
                .collect()
                .await;
            created.into_iter().collect::<Result<(), String>>()?;
            let deadline = Instant::now() + s.timeout;
            loop {
                let done = {
                    let g = seen.lock().unwrap_or_else(|p| p.into_inner());
                    batch.iter().filter(|n| g.contains_key(*n)).count()
                };
                if done == batch.len() || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            names.extend(batch);
        }
        let elapsed = t0.elapsed();
        let usage = op.stop().await?;
        watch.abort();
        let items = env
            .api
            .list(&Default::default())
            .await
            .map_err(|e| format!("list DropletActions: {e}"))?
            .items;
        let c = check_range(&env.sim, &items, s.history..droplets);
        let reqs = env.sim.requests();
        trace_requests(spec, &reqs);
        let counts = count(&reqs);
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let out = Outcome {
            calls: counts.total,
            actions: names.len(),
            lags: lags(&env.sim, &seen, s.time_scale),
            gave_up: 0,
        };
        let mut f = Map::new();
        insert_counts(&mut f, &counts, s);
        insert_kube_writes(&mut f, &env);
        f.insert("elapsed_s".into(), json!(round(elapsed.as_secs_f64(), 2)));
        f.insert("operator_cpu_s".into(), json!(round(usage.cpu_s(), 3)));
        Ok((out, c, f))
    }
    .await;
    env.stop().await;
    result
}

/// With `BENCH_TRACE` set, prints the operator's DigitalOcean requests of a lag scenario to stderr (time
/// since the first one, method, path, query): to see when the polls happen, not a figure.
fn trace_requests(spec: &LagSpec, reqs: &[RequestRecord]) {
    if std::env::var_os("BENCH_TRACE").is_none() {
        return;
    }
    let Some(t0) = reqs.first().map(|r| r.time) else {
        return;
    };
    for r in reqs {
        let at = r.time.duration_since(t0).as_secs_f64();
        eprintln!(
            "trace {} {at:9.3} {} {} {}",
            spec.name,
            r.method,
            r.path,
            r.query.as_deref().unwrap_or("")
        );
    }
}

/// One reference-polled action: calls made, action ID, when it was seen finished (None: gave up).
type Polled = (usize, i64, Option<Instant>);

/// A reference poller: POST, then `GET /v2/actions/{id}` every `every` (scaled) until done or `give_up` polls.
async fn reference_run(
    spec: &LagSpec,
    s: &Settings,
    every: Duration,
    give_up: Option<usize>,
) -> Result<Outcome, String> {
    let droplets = s.history + s.n * s.trials;
    let env = Env::start_timed(droplets, timing(spec, s), s.sim_rate_limit).await?;
    let result = async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let base = env.sim.url();
        let every = every.mul_f64(s.time_scale);
        // Every action of every trial at once: each is independent of the others (its own poller), and its
        // duration depends only on its droplet.
        let tasks = (0..s.trials).flat_map(|t| trial_droplets(s, t)).map(|i| {
            let http = http.clone();
            let base = base.clone();
            async move {
                let droplet = droplet_of(i);
                let mut body = json!({"type": spec.type_});
                if spec.type_ == "resize" {
                    body["size"] = json!("s-2vcpu-2gb");
                }
                let posted: Value = http
                    .post(format!("{base}v2/droplets/{droplet}/actions"))
                    .bearer_auth(DEFAULT_SIM_TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| format!("POST: {e}"))?
                    .json()
                    .await
                    .map_err(|e| format!("POST body: {e}"))?;
                let id = posted["action"]["id"]
                    .as_i64()
                    .ok_or_else(|| format!("POST answered {posted}"))?;
                let mut calls = 1;
                let mut polls = 0;
                loop {
                    if give_up.is_some_and(|g| polls >= g) {
                        return Ok::<_, String>((calls, id, None));
                    }
                    tokio::time::sleep(every).await;
                    let got: Value = http
                        .get(format!("{base}v2/actions/{id}"))
                        .bearer_auth(DEFAULT_SIM_TOKEN)
                        .send()
                        .await
                        .map_err(|e| format!("GET: {e}"))?
                        .json()
                        .await
                        .map_err(|e| format!("GET body: {e}"))?;
                    calls += 1;
                    polls += 1;
                    if got["action"]["status"].as_str() != Some("in-progress") {
                        return Ok((calls, id, Some(Instant::now())));
                    }
                }
            }
        });
        let results: Vec<Result<Polled, String>> = futures::future::join_all(tasks).await;
        let mut out = Outcome {
            calls: 0,
            actions: 0,
            lags: Vec::new(),
            gave_up: 0,
        };
        for r in results {
            let (calls, id, seen) = r?;
            out.calls += calls;
            out.actions += 1;
            match (seen, env.sim.action(id).and_then(|a| a.due)) {
                (Some(at), Some(due)) => out
                    .lags
                    .push(at.saturating_duration_since(due).as_secs_f64() / s.time_scale),
                _ => out.gave_up += 1,
            }
        }
        out.lags.sort_by(f64::total_cmp);
        Ok(out)
    }
    .await;
    env.stop().await;
    result
}

fn ratio(a: f64, b: f64) -> Value {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        json!(round(a / b, 3))
    } else {
        Value::Null
    }
}

/// Runs one lag scenario: the operator, then both reference pollers on the same durations.
pub async fn run(spec: &LagSpec, runner: &Runner, s: &Settings) -> Result<Report, String> {
    let (op, c, counts) = operator_run(spec, runner, s).await?;
    let doctl = reference_run(spec, s, Duration::from_secs(5), None).await?;
    let pydo = reference_run(spec, s, Duration::from_secs(1), Some(20)).await?;
    let calls = op.calls_per_action();
    let (p50, p99) = (op.p(50.0), op.p(99.0));
    let mut f = Map::new();
    f.insert("calls_per_action".into(), json!(round(calls, 3)));
    f.insert("lag_p50_s".into(), json!(round(p50, 3)));
    f.insert("lag_p99_s".into(), json!(round(p99, 3)));
    f.insert("action_type".into(), json!(spec.type_));
    f.insert("concurrent".into(), json!(s.n));
    f.insert("trials".into(), json!(s.trials));
    f.insert("history_actions".into(), json!(s.history));
    f.insert("time_scale".into(), json!(s.time_scale));
    match spec.fixed_seconds {
        Some(secs) => f.insert("action_seconds_simulated".into(), json!(secs)),
        None => f.insert("durations".into(), json!("do-sim model, seed 1")),
    };
    f.insert("doctl".into(), doctl.json());
    f.insert("python_digitalocean".into(), pydo.json());
    f.insert(
        "ratio_calls_vs_doctl".into(),
        ratio(calls, doctl.calls_per_action()),
    );
    f.insert("ratio_lag_p50_vs_doctl".into(), ratio(p50, doctl.p(50.0)));
    f.insert(
        "ratio_calls_vs_python_digitalocean".into(),
        ratio(calls, pydo.calls_per_action()),
    );
    f.insert(
        "ratio_lag_p50_vs_python_digitalocean".into(),
        ratio(p50, pydo.p(50.0)),
    );
    let dominates = calls <= doctl.calls_per_action() && p50 <= doctl.p(50.0);
    let all_ok = c.succeeded == c.expected;
    let (text, met) = match spec.target {
        Target::DominateDoctl => (
            "calls <= doctl's and lag p50 <= doctl's".to_string(),
            dominates,
        ),
        Target::Calls {
            calls: cap,
            lag_p50: Some(l),
        } => (
            format!("<= {cap} calls per action, lag p50 <= {l} s"),
            calls <= cap && p50 <= l,
        ),
        Target::Calls {
            calls: cap,
            lag_p50: None,
        } => (format!("<= {cap} calls per action"), calls <= cap),
    };
    f.insert("target".into(), json!(text));
    f.insert("target_met".into(), json!(met && all_ok));
    for (k, v) in counts {
        f.entry(k).or_insert(v);
    }
    super::insert_check(&mut f, &c, false);
    Ok(Report {
        scenario: spec.name.to_string(),
        figures: f,
        check: c,
    })
}
