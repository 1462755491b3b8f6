//! workload-key-operator: thin entry point. Parses arguments, sets up telemetry, runs the controllers and the
//! `/metrics`, `/healthz`, `/readyz` server.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use workload_key_operator::{
    api,
    clients::{self, observe::RequestObserver},
    controller::{
        self, Context, Scope, Settings,
        leader::{self, LeaseSettings},
        metrics::Metrics,
        server::Readiness,
    },
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
    /// Watch only these namespaces, comma-separated (default: all namespaces).
    #[arg(long = "watch-namespace", env = "WKO_WATCH_NAMESPACE", value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// Where the Secrets named by ClusterKeyProviders live (default: the namespace the operator runs in, from its
    /// ServiceAccount, else the kubeconfig's namespace).
    #[arg(long, env = "WKO_CLUSTER_RESOURCE_NAMESPACE")]
    cluster_resource_namespace: Option<String>,
    /// Log filter, e.g. `info` or `workload_key_operator=debug,kube=info`.
    #[arg(long, env = "WKO_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, env = "WKO_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Client-side limit of vendor requests per minute, per vendor endpoint.
    #[arg(long, env = "WKO_VENDOR_RATE_LIMIT", default_value_t = clients::DEFAULT_REQUESTS_PER_MINUTE)]
    vendor_rate_limit: u32,
    /// How many reconciles of each kind run at once (at least 1). Bounds the sockets and memory a burst takes.
    #[arg(long, env = "WKO_MAX_CONCURRENT_RECONCILES", default_value_t = controller::context::DEFAULT_MAX_CONCURRENT_RECONCILES, value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_reconciles: u16,
    /// Timeout of one vendor request, in seconds.
    #[arg(long, env = "WKO_VENDOR_TIMEOUT_SECONDS", default_value_t = 30)]
    vendor_timeout_seconds: u64,
    /// Elect a leader through a coordination.k8s.io Lease: only the holder reconciles (for replicas > 1).
    #[arg(long, env = "WKO_LEADER_ELECTION", default_value_t = false)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "WKO_LEASE_NAME", default_value = "workload-key-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: the first watched namespace, else `default`).
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
    fn observe(&self, vendor: &'static str, endpoint: &str, operation: &str, status: Option<u16>, seconds: f64) {
        self.0.record_vendor_request(vendor, endpoint, operation, status);
        self.0.record_vendor_duration(vendor, endpoint, seconds);
    }

    fn waited(&self, vendor: &'static str, endpoint: &str, seconds: f64) {
        self.0.record_rate_limit_wait(vendor, endpoint, seconds);
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
    clients::install_crypto_provider();

    let watched: Vec<String> = args.watch_namespaces.iter().filter(|n| !n.is_empty()).cloned().collect();
    let scope = if watched.is_empty() { Scope::AllNamespaces } else { Scope::Namespaces(watched.clone()) };
    let client = controller::api_client::client(kube::Config::infer().await?, scope.watches())?;
    let metrics = Metrics::default();
    clients::observe::set_observer(Arc::new(MetricsObserver(metrics.clone())));
    let settings = Settings {
        vendor_requests_per_minute: args.vendor_rate_limit,
        vendor_timeout: Duration::from_secs(args.vendor_timeout_seconds),
        hash_key: args.secret_hash_key.clone().into_bytes(),
        max_concurrent_reconciles: args.max_concurrent_reconciles,
        cluster_resource_namespace: args
            .cluster_resource_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned()),
    };
    let ctx = Arc::new(Context::new(client, metrics.clone(), settings));
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
        let lease = LeaseSettings {
            name: args.lease_name.clone(),
            namespace: args
                .lease_namespace
                .clone()
                .or_else(|| watched.first().cloned())
                .unwrap_or_else(|| "default".to_owned()),
            identity: args.identity.clone().unwrap_or_else(LeaseSettings::default_identity),
            duration_seconds: args.lease_duration_seconds,
        };
        leader::run_as_leader(&lease, ctx, scope, ready.clone(), stopped).await
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
