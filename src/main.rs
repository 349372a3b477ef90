//! `droplet-operator`: thin command-line entry point; everything lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand};
#[cfg(feature = "sandbox")]
use do_sim::Faults;
use droplet_operator::digitalocean::Token;
use droplet_operator::operator::{self, LeaderElection, OperatorConfig};
#[cfg(feature = "sandbox")]
use droplet_operator::sandbox::{Sandbox, SandboxOptions};
use droplet_operator::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "droplet-operator",
    version,
    about = "DigitalOcean droplet actions as Kubernetes resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML (what crds/ holds): DropletAction, then DropletActionSchedule.
    Crd(CrdArgs),
    /// Run the controller against the cluster from KUBECONFIG or the in-cluster config.
    Run(RunArgs),
    #[cfg(feature = "sandbox")]
    /// A local playground: emulated Kubernetes API + simulated DigitalOcean API (+ the controller) on loopback.
    Sandbox(SandboxArgs),
    #[cfg(feature = "sandbox")]
    /// Sandbox + apply every manifest in examples/ + wait + print the table; exit 0 when each ended as documented.
    Demo(DemoArgs),
}

#[cfg(feature = "sandbox")]
#[derive(Args)]
struct SandboxArgs {
    /// Use this DigitalOcean API instead of the simulator (for example the real one, with DIGITALOCEAN_TOKEN).
    #[arg(long)]
    do_api_url: Option<url::Url>,
    /// Run only the two servers (start `droplet-operator run` yourself against them).
    #[arg(long)]
    no_controller: bool,
    /// Generated droplets on top of the example droplets: IDs 200001.., tags gen and gen-<i mod 10>.
    #[arg(long, default_value_t = 0)]
    droplets: u32,
    /// Every simulated action takes this many seconds (default: seeded per-type distributions, ~10 s power actions to minutes for resizes and snapshots; see do_sim::ActionDurations).
    #[arg(long)]
    action_seconds: Option<f64>,
    /// Fraction of simulated requests answered with 500 and no effect.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Fraction of POSTs applied but answered by dropping the connection (the ambiguous case).
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Fraction of actions that end errored.
    #[arg(long, default_value_t = 0.0)]
    errored_rate: f64,
    /// Added latency per simulated request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Fraction of accepted action POSTs that the simulator applies late (after --late-commit-ms).
    #[arg(long, default_value_t = 0.0)]
    late_commit_rate: f64,
    /// Longest late-commit delay in milliseconds (drawn uniformly from half of it to all of it).
    #[arg(long, default_value_t = 10_000)]
    late_commit_ms: u64,
    /// Action lists (per droplet and account-wide) omit actions younger than this, in milliseconds.
    #[arg(long, default_value_t = 0)]
    list_lag_ms: u64,
    /// Fraction of applied action POSTs answered with 500/502/503/504 anyway.
    #[arg(long, default_value_t = 0.0)]
    error_after_apply_rate: f64,
    /// The simulated DigitalOcean clock runs this many seconds ahead (negative: behind).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    clock_skew_secs: i64,
    /// Expected actions per minute that "another client" starts on each droplet we sent an action to.
    #[arg(long, default_value_t = 0.0)]
    foreign_action_rate: f64,
    /// Fraction of actions that report the status "done" (unknown to clients) instead of "completed".
    #[arg(long, default_value_t = 0.0)]
    unknown_status_rate: f64,
    /// Fraction of actions that stay in-progress forever.
    #[arg(long, default_value_t = 0.0)]
    stuck_rate: f64,
    /// Simulated rate limit per minute (0: off).
    #[arg(long, default_value_t = 250)]
    rate_limit_per_minute: u32,
    /// Port of the Kubernetes API (default: a free port).
    #[arg(long, default_value_t = 0)]
    kube_port: u16,
    /// Port of the DigitalOcean simulator (default: a free port).
    #[arg(long, default_value_t = 0)]
    do_port: u16,
    /// Where the kubeconfig and sandbox.env are written.
    #[arg(long, default_value = ".sandbox")]
    state_dir: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[cfg(feature = "sandbox")]
#[derive(Args)]
struct DemoArgs {
    /// Directory of DropletAction manifests, each with an `# expect: <Phase>` comment.
    #[arg(long, default_value = "examples")]
    examples: PathBuf,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 180)]
    timeout_seconds: u64,
    /// Where the kubeconfig, sandbox.env and the controller log (demo.log) are written.
    #[arg(long, default_value = ".sandbox")]
    state_dir: PathBuf,
    /// Show the controller's log on stderr instead of writing it to <state-dir>/demo.log (the live view then
    /// appends lines instead of redrawing them).
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Args)]
struct CrdArgs {
    /// Print only this kind's CRD.
    #[arg(long, value_enum)]
    kind: Option<CrdKind>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CrdKind {
    #[value(name = "DropletAction")]
    DropletAction,
    #[value(name = "DropletActionSchedule")]
    DropletActionSchedule,
}

#[derive(Args)]
struct RunArgs {
    /// DigitalOcean API base URL (plain http is refused except on loopback).
    #[arg(
        long,
        env = "DIGITALOCEAN_API_URL",
        default_value = "https://api.digitalocean.com"
    )]
    do_api_url: url::Url,
    /// File holding the default DigitalOcean token (used by DropletActions without spec.tokenSecretRef), read
    /// once at start; a missing or empty file is an error. Without it: the DIGITALOCEAN_TOKEN variable (empty or
    /// unset: no default token).
    #[arg(long, env = "DIGITALOCEAN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Namespace to watch; repeat for several. Default: all namespaces.
    #[arg(long = "namespace", env = "WATCH_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Reconciles running at once, per watched namespace: each --namespace gets its own controller with this
    /// limit (all namespaces: one controller). Values below 1 mean 1.
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Timeout of one DigitalOcean request, in seconds.
    #[arg(long, env = "DO_TIMEOUT_SECONDS", default_value_t = 30)]
    do_timeout_seconds: u64,
    /// Testing only: multiply every poll interval, backoff and wait by this factor (> 0). Tests and the sandbox
    /// use less than 1 against the fast simulator; keep 1 against DigitalOcean (smaller values poll more often and
    /// spend the rate budget faster; the 220/min budget itself does not change).
    #[arg(long, env = "POLL_SCALE", default_value_t = 1.0, value_parser = parse_poll_scale)]
    poll_scale: f64,
    /// Name of this instance for events and leader election (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Reconcile only while holding a Lease, so several replicas can run with one active (the others are Ready
    /// standbys). Losing the Lease exits the process. `--leader-elect`, `--leader-elect=true|false`, or
    /// LEADER_ELECT=1/true/yes/on (0/false/no/off: off).
    #[arg(
        long,
        env = "LEADER_ELECT",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new(),
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true"
    )]
    leader_elect: bool,
    /// Namespace of the leader-election Lease: POD_NAMESPACE when set (the Deployment sets it to the pod's
    /// namespace from the downward API), else `default`.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "LEADER_ELECTION_LEASE",
        default_value = "droplet-operator"
    )]
    leader_election_lease: String,
    /// Seconds the Lease stays valid without renewal (how long a standby waits after the leader died).
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Tests only: run the schedule controller's clock this many times faster than real time.
    #[arg(long, default_value_t = 1.0, hide = true)]
    schedule_clock_speed: f64,
    /// Tests only: the instant (RFC 3339) where the sped-up schedule clock equals real time.
    #[arg(long, hide = true)]
    schedule_clock_origin: Option<jiff::Timestamp>,
}

fn parse_poll_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a positive number (1 = DigitalOcean's pace)"
        )),
    }
}

/// Why a subcommand failed. Printed as `error: <message>`; the exit code is 1.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Operator(#[from] operator::Error),
    #[error("cannot reach Kubernetes (KUBECONFIG or in-cluster config): {0}")]
    Kube(#[source] kube::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[cfg(feature = "sandbox")]
    #[error(transparent)]
    Sandbox(#[from] droplet_operator::sandbox::Error),
    #[cfg(feature = "sandbox")]
    #[error("{0}")]
    Demo(String),
}

/// Host name plus process id: unique per process when no pod name is given.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}-{}", std::process::id())
}

/// The default token: --token-file (an empty file is an error), else DIGITALOCEAN_TOKEN (empty or unset: no default
/// token; DropletActions then need spec.tokenSecretRef).
fn default_token(args: &RunArgs) -> Result<Option<Token>, CliError> {
    if let Some(path) = &args.token_file {
        return Ok(Some(operator::read_token_file(path)?));
    }
    // Read the env var here rather than through clap so the token never shows up in --help or errors.
    Ok(std::env::var("DIGITALOCEAN_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(Token::new))
}

async fn run(args: RunArgs) -> Result<(), CliError> {
    telemetry::init(args.log_format);
    let default_token = default_token(&args)?;
    let client = kube::Client::try_default().await.map_err(CliError::Kube)?;
    let cfg = OperatorConfig {
        do_api_url: args.do_api_url,
        default_token,
        namespaces: args.namespaces,
        concurrency: args.concurrency.max(1),
        metrics_addr: Some(args.metrics_addr),
        do_timeout: Duration::from_secs(args.do_timeout_seconds.max(1)),
        poll_scale: args.poll_scale,
        leader_election: args.leader_elect.then(|| LeaderElection {
            namespace: args.leader_election_namespace.clone(),
            lease_name: args.leader_election_lease.clone(),
            identity: args.instance.clone().unwrap_or_else(default_identity),
            lease_duration_seconds: args.lease_duration_seconds,
        }),
        instance: args.instance,
    };
    let schedule = droplet_operator::schedule::ScheduleOptions {
        clock: droplet_operator::schedule::ScheduleClock::sped_up(
            args.schedule_clock_origin
                .unwrap_or_else(jiff::Timestamp::now),
            args.schedule_clock_speed,
        ),
    };
    Ok(operator::run_with(client, cfg, schedule, operator::shutdown_signal()).await?)
}

#[cfg(feature = "sandbox")]
async fn sandbox(args: SandboxArgs) -> Result<(), CliError> {
    telemetry::init(args.log_format);
    let do_token = if args.do_api_url.is_some() {
        std::env::var("DIGITALOCEAN_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(Token::new)
    } else {
        None
    };
    let faults = Faults {
        server_error_rate: args.error_rate,
        drop_after_apply_rate: args.drop_rate,
        errored_rate: args.errored_rate,
        latency: Duration::from_millis(args.latency_ms),
        late_commit_rate: args.late_commit_rate,
        late_commit_delay_min: Duration::from_millis(args.late_commit_ms / 2),
        late_commit_delay_max: Duration::from_millis(args.late_commit_ms),
        list_lag: Duration::from_millis(args.list_lag_ms),
        error_after_apply_rate: args.error_after_apply_rate,
        clock_skew_secs: args.clock_skew_secs,
        foreign_action_rate: args.foreign_action_rate,
        unknown_status_rate: args.unknown_status_rate,
        stuck_rate: args.stuck_rate,
        ..Faults::default()
    };
    let opts = SandboxOptions {
        do_api_url: args.do_api_url,
        do_token,
        controller: !args.no_controller,
        droplets: args.droplets,
        action_seconds: args.action_seconds,
        faults,
        rate_limit_per_minute: (args.rate_limit_per_minute > 0)
            .then_some(args.rate_limit_per_minute),
        kube_port: args.kube_port,
        do_port: args.do_port,
        state_dir: args.state_dir,
        ..SandboxOptions::default()
    };
    let sandbox = Sandbox::start(opts).await?;
    println!("droplet-operator sandbox is running (Ctrl-C to stop).");
    print!("{}", sandbox.env_contents());
    println!(
        "Written to {}. In another shell:",
        sandbox.env_file.display()
    );
    println!("  set -a; source {}; set +a", sandbox.env_file.display());
    println!("  kubectl apply -f crds/ -f examples/reboot.yaml && kubectl get dropletactions -w");
    operator::shutdown_signal().await;
    sandbox.stop().await;
    Ok(())
}

#[cfg(feature = "sandbox")]
async fn demo(args: DemoArgs) -> Result<bool, CliError> {
    let log_file = if args.verbose {
        telemetry::init(LogFormat::Text);
        None
    } else {
        let path = droplet_operator::sandbox::state_dir(&args.state_dir)?.join("demo.log");
        telemetry::init_file(LogFormat::Text, &path).map_err(CliError::Demo)?;
        Some(path)
    };
    let opts = SandboxOptions {
        // Simulated actions take 5% of their modelled time and the controller's clock runs 20x faster too, so
        // the whole set finishes in seconds while keeping the relative timing of the real thing.
        duration_scale: 0.05,
        poll_scale: 0.05,
        do_timeout: Duration::from_secs(5),
        state_dir: args.state_dir,
        // Schedules: the clock runs 60x faster, so a `* * * * *` schedule's first slot comes within a second.
        schedule: droplet_operator::schedule::ScheduleOptions {
            clock: droplet_operator::schedule::ScheduleClock::sped_up(jiff::Timestamp::now(), 60.0),
        },
        ..SandboxOptions::default()
    };
    droplet_operator::demo::run(
        &args.examples,
        opts,
        Duration::from_secs(args.timeout_seconds),
        droplet_operator::demo::DemoOutput {
            verbose: args.verbose,
            log_file,
        },
    )
    .await
    .map_err(CliError::Demo)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd(args) => {
            match args.kind {
                Some(CrdKind::DropletAction) => print!("{}", droplet_operator::crd::crd_yaml()),
                Some(CrdKind::DropletActionSchedule) => {
                    print!("{}", droplet_operator::schedule::crd::crd_yaml())
                }
                None => print!(
                    "{}---\n{}",
                    droplet_operator::crd::crd_yaml(),
                    droplet_operator::schedule::crd::crd_yaml()
                ),
            }
            Ok(())
        }
        Command::Run(args) => runtime().and_then(|rt| rt.block_on(run(args))),
        #[cfg(feature = "sandbox")]
        Command::Sandbox(args) => runtime().and_then(|rt| rt.block_on(sandbox(args))),
        #[cfg(feature = "sandbox")]
        Command::Demo(args) => match runtime().and_then(|rt| rt.block_on(demo(args))) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    // kube and reqwest share rustls; pick the crypto provider explicitly (see toolchain facts).
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}
