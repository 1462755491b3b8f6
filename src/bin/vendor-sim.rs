//! `vendor-sim`: both vendor simulators over HTTPS on loopback, plus a plain-HTTP control port.
//! The first line on stdout is the startup JSON (URLs, seeded credentials, CA file, control URL).

use std::{io::Write, net::SocketAddr, path::PathBuf};

use clap::Parser;
use workload_key_operator::sim::{self, SimOptions};

#[derive(Debug, Parser)]
#[command(version, about = "Trend Micro and Cisco Secure Workload API simulators for tests and demos")]
struct Args {
    /// Trend Micro Workload Security listener (HTTPS); port 0 picks a free port.
    #[arg(long, env = "VENDOR_SIM_TREND_LISTEN", default_value = "127.0.0.1:0")]
    trend_listen: SocketAddr,
    /// Cisco Secure Workload listener (HTTPS); port 0 picks a free port.
    #[arg(long, env = "VENDOR_SIM_CISCO_LISTEN", default_value = "127.0.0.1:0")]
    cisco_listen: SocketAddr,
    /// Control API listener (plain HTTP): faults, counts, key revocation.
    #[arg(long, env = "VENDOR_SIM_CONTROL_LISTEN", default_value = "127.0.0.1:0")]
    control_listen: SocketAddr,
    /// Where to write the simulator's CA certificate (PEM).
    #[arg(long, env = "VENDOR_SIM_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Trend per-API-key rate limit, requests per minute (the DSM default is 500).
    #[arg(long, env = "VENDOR_SIM_TREND_RATE_LIMIT", default_value_t = 500)]
    trend_rate_limit: u32,
    /// Also write the startup JSON to this file.
    #[arg(long, env = "VENDOR_SIM_INFO_FILE")]
    info_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VENDOR_SIM_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let ca_file = args
        .ca_file
        .unwrap_or_else(|| std::env::temp_dir().join(format!("vendor-sim-{}", std::process::id())).join("ca.crt"));
    let mut opts = SimOptions {
        trend_listen: args.trend_listen,
        cisco_listen: args.cisco_listen,
        control_listen: args.control_listen,
        ca_file: Some(ca_file),
        ..SimOptions::default()
    };
    opts.deep_security.rate_limit_per_minute = args.trend_rate_limit;
    let running = sim::start(opts).await?;
    let line = serde_json::to_string(&running.info)?;
    if let Some(path) = &args.info_file {
        std::fs::write(path, format!("{line}\n"))?;
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(running);
    Ok(())
}
