//! `droplet-operator`: thin command-line entry point; everything lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
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
    /// Print the DropletAction CustomResourceDefinition as YAML (what crds/ holds).
    Crd,
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
    /// Where the kubeconfig and sandbox.env are written.
    #[arg(long, default_value = ".sandbox")]
    state_dir: PathBuf,
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
    /// File holding the default DigitalOcean token (used by DropletActions without spec.tokenSecretRef).
    #[arg(long, env = "DIGITALOCEAN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Namespace to watch; repeat for several. Default: all namespaces.
    #[arg(long = "namespace", env = "WATCH_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Reconciles running at once.
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
    /// Multiply poll intervals and waits by this factor (for fast simulators; keep 1 against DigitalOcean).
    #[arg(long, env = "POLL_SCALE", default_value_t = 1.0, hide = true)]
    poll_scale: f64,
    /// Name of this instance for events and leader election (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Reconcile only while holding a Lease, so several replicas can run with one active.
    #[arg(long, env = "LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the leader-election Lease (default: the pod's namespace).
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
}

/// Host name plus process id: unique per process when no pod name is given.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}-{}", std::process::id())
}

fn default_token(args: &RunArgs) -> Result<Option<Token>, String> {
    if let Some(path) = &args.token_file {
        return operator::read_token_file(path).map(Some);
    }
    // Read the env var here rather than through clap so the token never shows up in --help or errors.
    Ok(std::env::var("DIGITALOCEAN_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(Token::new))
}

async fn run(args: RunArgs) -> Result<(), String> {
    telemetry::init(args.log_format);
    let default_token = default_token(&args)?;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot reach Kubernetes (KUBECONFIG or in-cluster config): {e}"))?;
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
    operator::run(client, cfg, operator::shutdown_signal()).await
}

#[cfg(feature = "sandbox")]
async fn sandbox(args: SandboxArgs) -> Result<(), String> {
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
async fn demo(args: DemoArgs) -> Result<bool, String> {
    telemetry::init(LogFormat::Text);
    let opts = SandboxOptions {
        // Simulated actions take 5% of their modelled time and the controller's clock runs 20x faster too, so
        // the whole set finishes in seconds while keeping the relative timing of the real thing.
        duration_scale: 0.05,
        poll_scale: 0.05,
        do_timeout: Duration::from_secs(5),
        state_dir: args.state_dir,
        ..SandboxOptions::default()
    };
    droplet_operator::demo::run(
        &args.examples,
        opts,
        Duration::from_secs(args.timeout_seconds),
    )
    .await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => {
            print!("{}", droplet_operator::crd::crd_yaml());
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

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    // kube and reqwest share rustls; pick the crypto provider explicitly (see toolchain facts).
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))
}
