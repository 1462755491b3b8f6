//! workload-key-operator: thin entry point. Parses arguments, sets up telemetry, runs the controllers.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(version, about = "Provisions Trend Micro and Cisco Secure Workload API credentials into Kubernetes Secrets")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every CustomResourceDefinition as YAML (what `crds/` holds).
    Crds,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crds) | None => print!("{}", workload_key_operator::api::crds_yaml()),
    }
}
