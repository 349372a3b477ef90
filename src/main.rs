//! `droplet-operator`: thin command-line entry point; everything lives in the library.

use clap::{Parser, Subcommand};

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
}

fn main() {
    match Cli::parse().command {
        Command::Crd => print!("{}", droplet_operator::crd::crd_yaml()),
    }
}
