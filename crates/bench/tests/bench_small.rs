//! Small versions of every benchmark scenario, with the operator in-process: checks the harness and the
//! operator's correctness under it (every action Succeeded, exactly one POST per droplet per DropletAction, no
//! Failed, the request window within the simulator's limit, finite positive figures), not time or memory targets.

use droplet_bench::{self as bench, Report, Runner, Settings};

async fn run(name: &str) -> Report {
    let settings = Settings::small(name);
    match bench::run_scenario(name, &Runner::InProcess, &settings).await {
        Ok(r) => {
            eprintln!("{}", r.json_line());
            r
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

fn positive(r: &Report, key: &str) -> f64 {
    let v = r
        .get(key)
        .unwrap_or_else(|| panic!("{}: no figure {key} in {}", r.scenario, r.json_line()));
    assert!(
        v.is_finite() && v > 0.0,
        "{}: {key} = {v} in {}",
        r.scenario,
        r.json_line()
    );
    v
}

fn assert_all_succeeded_once(r: &Report) {
    let c = &r.check;
    let line = r.json_line();
    assert_eq!(c.succeeded, c.expected, "every action Succeeded: {line}");
    assert_eq!(c.failed, 0, "no Failed: {line}");
    assert_eq!(c.unfinished, 0, "none left unfinished: {line}");
    assert_eq!(
        c.droplets_with_one_post, c.expected,
        "exactly one POST per droplet: {line}"
    );
    assert_eq!(c.duplicate_posts, 0, "no duplicate POST: {line}");
    assert_eq!(
        c.droplets_without_post, 0,
        "no droplet without a POST: {line}"
    );
    assert!(!line.contains("\"stalled\""), "{line}");
    // The output is one JSON object with the scenario name first.
    let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
    assert_eq!(v["scenario"], r.scenario.as_str());
    assert!(line.starts_with(&format!("{{\"scenario\":\"{}\"", r.scenario)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_calls_per_action() {
    let r = run("calls_per_action").await;
    assert_all_succeeded_once(&r);
    let per_action = positive(&r, "calls_per_action");
    // At least the POST; the polls are shared.
    assert!(per_action >= 1.0, "{}", r.json_line());
    assert_eq!(r.get("posts"), Some(r.check.expected as f64));
    assert_eq!(
        r.get("time_scale"),
        Some(Settings::small("calls_per_action").time_scale)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_cpu_per_action() {
    let r = run("cpu_per_action").await;
    assert_all_succeeded_once(&r);
    positive(&r, "cpu_per_action_ms");
    positive(&r, "cpu_total_s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_rss() {
    let r = run("rss_10k").await;
    let s = Settings::small("rss_10k");
    assert_eq!(r.check.succeeded, s.n, "{}", r.json_line());
    assert_eq!(r.get("objects"), Some(s.n as f64));
    positive(&r, "rss_mib");
    positive(&r, "rss_idle_mib");
    // The operator has nothing to do with finished DropletActions: it writes nothing.
    assert_eq!(
        r.get("operator_kube_writes"),
        Some(0.0),
        "{}",
        r.json_line()
    );
    assert_eq!(r.get("posts"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_latency() {
    let r = run("latency").await;
    assert_all_succeeded_once(&r);
    let p50 = positive(&r, "p50_ms");
    let p99 = positive(&r, "p99_ms");
    assert!(p50 <= p99, "{}", r.json_line());
    assert_eq!(r.get("samples"), Some(r.check.expected as f64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_rate_budget() {
    let r = run("rate_budget").await;
    assert_all_succeeded_once(&r);
    let s = Settings::small("rate_budget");
    let limit = f64::from(s.sim_rate_limit.expect("a limit"));
    let max = positive(&r, "max_requests_per_60s");
    assert!(
        max <= limit,
        "window max within the limit: {}",
        r.json_line()
    );
    assert!(
        positive(&r, "max_accepted_per_60s") <= limit,
        "{}",
        r.json_line()
    );
    assert_eq!(r.get("failed"), Some(0.0));
}

/// A lag scenario: every action finished exactly once, the operator's and both reference pollers' figures are
/// there, and the operator read each action at least once after its POST.
fn assert_lag_figures(r: &Report) {
    assert_all_succeeded_once(r);
    let line = r.json_line();
    assert!(positive(r, "calls_per_action") >= 1.0, "{line}");
    let p50 = r.get("lag_p50_s").expect("lag p50");
    let p99 = r.get("lag_p99_s").expect("lag p99");
    assert!(p50 >= 0.0 && p50 <= p99, "{line}");
    let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
    for peer in ["doctl", "python_digitalocean"] {
        let calls = v[peer]["calls_per_action"].as_f64().expect("peer calls");
        // The peers POST and poll at least once.
        assert!(calls >= 2.0, "{peer}: {line}");
    }
    assert!(v["ratio_calls_vs_doctl"].as_f64().is_some(), "{line}");
    assert!(r.get("posts") == Some(r.check.expected as f64), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_lone_reboot() {
    assert_lag_figures(&run("lone_reboot").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_lone_snapshot() {
    assert_lag_figures(&run("lone_snapshot").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_concurrent() {
    assert_lag_figures(&run("concurrent_20").await);
}

#[test]
fn window_and_names() {
    use std::time::{Duration, Instant};
    let t = Instant::now();
    let mut times: Vec<Instant> = [0u64, 10, 59_999, 60_000, 60_001, 200_000]
        .iter()
        .map(|ms| t + Duration::from_millis(*ms))
        .collect();
    // [10, 59_999, 60_000, 60_001] lie within one 60 s window.
    assert_eq!(bench::max_in_window(&mut times, Duration::from_secs(60)), 4);
    assert_eq!(bench::SCENARIOS.len(), 11);
    for s in bench::SCENARIOS {
        let (full, small) = (Settings::full(s), Settings::small(s));
        assert!(full.n > 0, "{s}");
        assert!(small.n * small.trials < full.n * full.trials, "{s}");
    }
}
