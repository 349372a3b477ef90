//! `droplet-operator`: thin command-line entry point; everything lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use droplet_operator::digitalocean::Token;
use droplet_operator::operator::{self, OperatorConfig};
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
    /// Name of this instance for events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
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
        instance: args.instance,
    };
    operator::run(client, cfg, operator::shutdown_signal()).await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => {
            print!("{}", droplet_operator::crd::crd_yaml());
            Ok(())
        }
        Command::Run(args) => runtime().and_then(|rt| rt.block_on(run(args))),
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
