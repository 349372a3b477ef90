//! `bench`: measures the operator against the Kubernetes API emulator and the DigitalOcean simulator.
//!
//! ```sh
//! cargo run --release --bin bench -- all                 # every scenario, one JSON line each
//! cargo run --release --bin bench -- calls_per_action    # one scenario
//! ```
//!
//! The operator runs as a child process (this binary re-executed with a hidden subcommand) so its CPU time and
//! peak RSS are its own. See BENCHMARKS.md and `droplet_bench`.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use droplet_bench::{self as bench, ChildArgs, Runner, SCENARIOS, Settings};

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Benchmarks of droplet-operator against the Kubernetes emulator and the DigitalOcean simulator"
)]
struct Cli {
    /// Scenarios to run: all, or any of lone_reboot, lone_power_cycle_60s, lone_resize, lone_snapshot,
    /// concurrent_20, concurrent_200, calls_per_action, cpu_per_action, rss_10k, latency, rate_budget.
    #[arg(default_value = "all")]
    scenarios: Vec<String>,
    /// Override the number of DropletActions of every selected scenario.
    #[arg(long)]
    n: Option<usize>,
    /// Override the simulated time scale of calls_per_action and the lag scenarios (action durations and poll
    /// intervals; the figures stay in real-time seconds).
    #[arg(long)]
    time_scale: Option<f64>,
    /// Let the operator log (RUST_LOG, default info) and log the harness too.
    #[arg(long)]
    verbose: bool,
}

#[derive(Parser)]
#[command(name = "bench __operator", hide = true)]
struct ChildCli {
    #[command(flatten)]
    args: ChildArgs,
}

fn main() -> ExitCode {
    let mut argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(bench::runner::CHILD_SUBCOMMAND) {
        argv.remove(1);
        let cli = ChildCli::parse_from(argv);
        return match bench::child_main(cli.args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench operator: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    let mut names: Vec<String> = Vec::new();
    for s in &cli.scenarios {
        if s == "all" {
            names.extend(SCENARIOS.iter().map(|s| s.to_string()));
        } else if SCENARIOS.contains(&s.as_str()) {
            names.push(s.clone());
        } else {
            eprintln!(
                "error: unknown scenario {s:?}: expected all or one of {}",
                SCENARIOS.join(", ")
            );
            return ExitCode::from(2);
        }
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find this executable to run the operator: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.verbose {
        droplet_operator::telemetry::init(droplet_operator::telemetry::LogFormat::Text);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runner = Runner::Child {
        exe,
        verbose: cli.verbose,
    };
    let mut ok = true;
    for name in names {
        let mut settings = Settings::full(&name);
        if let Some(n) = cli.n {
            settings.n = n;
        }
        let scaled = name == "calls_per_action" || bench::lag::spec(&name).is_some();
        if let (Some(t), true) = (cli.time_scale, scaled) {
            settings.time_scale = t;
        }
        eprintln!("bench: running {name} (n = {})", settings.n);
        let line = match rt.block_on(bench::run_scenario(&name, &runner, &settings)) {
            Ok(report) => report.json_line(),
            Err(e) => {
                ok = false;
                serde_json::json!({"scenario": name, "error": e}).to_string()
            }
        };
        println!("{line}");
        let _ = std::io::stdout().flush();
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
