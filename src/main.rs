//! workload-key-operator: thin entry point. Parses arguments, sets up telemetry, runs the controllers and the
//! `/metrics`, `/healthz`, `/readyz` server.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use workload_key_operator::{
    api,
    controller::{self, Context, Scope, Settings, metrics::Metrics, server::Readiness},
    vendor::{self, observe::RequestObserver},
};

#[derive(Debug, Parser)]
#[command(version, about = "Provisions Trend Micro and Cisco Secure Workload API credentials into Kubernetes Secrets")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controllers (the default).
    Run,
    /// Print every CustomResourceDefinition as YAML (what `crds/` holds).
    Crds,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "WKO_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WKO_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Log filter, e.g. `info` or `workload_key_operator=debug,kube=info`.
    #[arg(long, env = "WKO_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, env = "WKO_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Client-side limit of vendor requests per minute, per vendor endpoint.
    #[arg(long, env = "WKO_VENDOR_RATE_LIMIT", default_value_t = vendor::DEFAULT_REQUESTS_PER_MINUTE)]
    vendor_rate_limit: u32,
    /// Timeout of one vendor request, in seconds.
    #[arg(long, env = "WKO_VENDOR_TIMEOUT_SECONDS", default_value_t = 30)]
    vendor_timeout_seconds: u64,
    /// Elect a leader through a coordination.k8s.io Lease: only the holder reconciles (for replicas > 1).
    #[arg(long, env = "WKO_LEADER_ELECTION", default_value_t = false)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "WKO_LEASE_NAME", default_value = "workload-key-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: the watched namespace, else `default`).
    #[arg(long, env = "WKO_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// How long a leader's claim lasts without renewal, in seconds; a standby takes over after it.
    #[arg(long, env = "WKO_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// This replica's identity in the Lease (default: $POD_NAME, else host name and process ID).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Key of the keyed hash that detects edits of written Secrets. Keep it stable across restarts.
    #[arg(
        long,
        env = "WKO_SECRET_HASH_KEY",
        hide_env_values = true,
        default_value = "workload-key-operator/secret-hash/v1"
    )]
    secret_hash_key: String,
}

struct MetricsObserver(Metrics);

impl RequestObserver for MetricsObserver {
    fn observe(&self, vendor: &'static str, operation: &str, status: Option<u16>) {
        self.0.record_vendor_request(vendor, operation, status);
    }
}

fn init_tracing(args: &RunArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    if let Some(Command::Crds) = cli.command {
        print!("{}", api::crds_yaml());
        return Ok(());
    }
    let args = cli.run;
    init_tracing(&args);
    vendor::install_crypto_provider();

    let client = kube::Client::try_default().await?;
    let metrics = Metrics::default();
    vendor::observe::set_observer(Arc::new(MetricsObserver(metrics.clone())));
    let settings = Settings {
        vendor_requests_per_minute: args.vendor_rate_limit,
        vendor_timeout: Duration::from_secs(args.vendor_timeout_seconds),
        hash_key: args.secret_hash_key.clone().into_bytes(),
        failpoint: std::env::var("WKO_FAILPOINT").ok().filter(|v| !v.is_empty()),
    };
    let ctx = Arc::new(Context::new(client, metrics.clone(), settings));
    let scope = args.watch_namespace.clone().map_or(Scope::AllNamespaces, Scope::Namespace);
    let ready = Readiness::default();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    };
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let server = tokio::spawn(controller::server::serve(args.metrics_addr, metrics, ready.clone(), stopped()));
    let outcome = if args.leader_election {
        run_as_leader(&args, ctx, scope, ready.clone(), stopped).await
    } else {
        tracing::info!(version = env!("CARGO_PKG_VERSION"), scope = ?scope, "starting controllers");
        ready.set(true);
        controller::run(ctx, scope, Box::pin(stopped())).await;
        Ok(())
    };
    ready.set(false);
    server.abort();
    outcome
}

/// Waits for the Lease, runs the controllers while holding it, and releases it on shutdown. Losing the Lease
/// ends the process (after stopping the controllers), so a replica never reconciles without holding it.
async fn run_as_leader<F, Fut>(
    args: &RunArgs,
    ctx: Arc<Context>,
    scope: Scope,
    ready: Readiness,
    stopped: F,
) -> Result<(), Box<dyn std::error::Error>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let namespace =
        args.lease_namespace.clone().or_else(|| args.watch_namespace.clone()).unwrap_or_else(|| "default".to_owned());
    let duration = args.lease_duration_seconds.max(2);
    let manager = kube_lease_manager::LeaseManagerBuilder::new(ctx.client.clone(), &args.lease_name)
        .with_namespace(&namespace)
        .with_identity(&identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .build()
        .await?;
    let (mut leader, lease_task) = manager.watch().await;
    tracing::info!(identity, lease = %args.lease_name, namespace, "waiting for leadership");
    let became_leader = tokio::select! {
        _ = stopped() => false,
        r = leader.wait_for(|is| *is) => r.is_ok(),
    };
    let stop = stopped();
    let mut lost = false;
    if became_leader {
        tracing::info!(identity, version = env!("CARGO_PKG_VERSION"), scope = ?scope, "leader: starting controllers");
        ready.set(true);
        let mut watch_loss = leader.clone();
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
        let loss = tokio::spawn(async move {
            if watch_loss.wait_for(|is| !*is).await.is_ok() {
                let _ = lost_tx.send(());
            }
        });
        let shutdown = async move {
            tokio::select! {
                _ = stop => {}
                _ = lost_rx => {}
            }
        };
        controller::run(ctx, scope, Box::pin(shutdown)).await;
        lost = !*leader.borrow();
        loss.abort();
    }
    ready.set(false);
    // Closing the channel makes the lease task release the Lease, so a standby takes over at once.
    drop(leader);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("lease released"),
        other => tracing::warn!(result = ?other.map(|r| r.map(|m| m.map(|_| ()))), "could not release the lease"),
    }
    if lost {
        return Err("lost the leader lease".into());
    }
    Ok(())
}
