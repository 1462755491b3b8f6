//! Scale benchmarks for the targets of docs/architecture.md §6, on a real control plane (`scripts/dev-cluster`),
//! the operator binary as its own process (one namespace each) and the in-process vendor simulator. Method and
//! recorded results: `docs/benchmarks.md`.
//!
//! ```text
//! cargo bench --features sim --bench scale -- [--n 1000] [--rss-n 10000] [--rate-n 600] [--quick]
//! ```
//!
//! - **throughput**: a plain kube-rs client makes, per resource, the API-server writes the operator makes (no
//!   vendor calls), then the operator takes as many WorkloadApiKeys to Ready; same arrival, same machine, same run.
//! - **restart**: the operator restarted with all of them Ready; vendor requests are counted for a while.
//! - **rate**: the operator at the default client limit (400/min) on more keys than one minute's budget; the
//!   largest number of vendor requests in any 60 s window.
//! - **memory**: peak RSS (`VmHWM`) of the operator process while it takes `--rss-n` resources to Ready, and
//!   after a restart with all of them Ready.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};
use futures::StreamExt;
use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{
        WatchStreamExt,
        events::{Event, EventType, Recorder, Reporter},
        watcher,
    },
};
use serde_json::json;
use support::{TestNamespace, operator::Operator};
use tokio::{sync::Semaphore, task::JoinSet};
use workload_key_operator::{
    api::{
        FINALIZER, WorkloadApiKey, WorkloadApiKeyStatus,
        conditions::{self, READY, reason},
    },
    clients::DEFAULT_REQUESTS_PER_MINUTE,
    controller::secret::{FIELD_MANAGER, data_hash, desired_secret},
    sim::{self, RunningSim, SimOptions},
};

const MIB: f64 = 1024.0;

#[derive(Debug, Parser)]
#[command(about = "Scale benchmarks for DESIGN §5 (method and results: docs/benchmarks.md)")]
struct Args {
    /// Resources of the throughput run (operator vs plain client) and of the restart run [default: 1000].
    #[arg(long)]
    n: Option<usize>,
    /// Resources of the peak-RSS run [default: 10000].
    #[arg(long)]
    rss_n: Option<usize>,
    /// Resources of the vendor-rate run at the default client limit; more than one minute's budget, or no
    /// 60 s window can exceed it [default: 600].
    #[arg(long)]
    rate_n: Option<usize>,
    /// Seconds to count vendor requests after restarting the operator with every resource Ready [default: 60].
    #[arg(long)]
    restart_secs: Option<u64>,
    /// Rounds of the throughput comparison; the verdict is on the median ratio [default: 3, 1 with --quick].
    #[arg(long)]
    rounds: Option<usize>,
    /// Creates in flight at once: how the resources arrive, the same in every phase.
    #[arg(long, default_value_t = 64)]
    create_concurrency: usize,
    /// Small sizes (n 100, rss-n 1000, rate-n 150, restart 15 s, 1 round); printed, not recorded unless --record
    /// is given.
    #[arg(long)]
    quick: bool,
    /// Run only these phases (restart implies throughput).
    #[arg(long, value_delimiter = ',')]
    only: Vec<Phase>,
    /// Markdown file whose results section is replaced [default: docs/benchmarks.md for a full run; none with
    /// --quick or --only].
    #[arg(long)]
    record: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    Throughput,
    Restart,
    Rate,
    Memory,
}

/// Sizes after `--quick` and the defaults.
struct Plan {
    n: usize,
    rss_n: usize,
    rate_n: usize,
    restart: Duration,
    rounds: usize,
    create_concurrency: usize,
    phases: Vec<Phase>,
    record: Option<PathBuf>,
}

impl Plan {
    fn from(args: Args) -> Self {
        let q = args.quick;
        let mut phases = if args.only.is_empty() {
            vec![Phase::Throughput, Phase::Restart, Phase::Rate, Phase::Memory]
        } else {
            args.only.clone()
        };
        if phases.contains(&Phase::Restart) && !phases.contains(&Phase::Throughput) {
            phases.push(Phase::Throughput);
        }
        let record = match (args.record, q) {
            (Some(p), _) => Some(p),
            // Only a full run replaces the recorded results.
            (None, false) if args.only.is_empty() => Some(support::repo_root().join("docs/benchmarks.md")),
            (None, _) => None,
        };
        Plan {
            n: args.n.unwrap_or(if q { 100 } else { 1000 }),
            rss_n: args.rss_n.unwrap_or(if q { 1000 } else { 10_000 }),
            rate_n: args.rate_n.unwrap_or(if q { 150 } else { 600 }),
            restart: Duration::from_secs(args.restart_secs.unwrap_or(if q { 15 } else { 60 })),
            rounds: args.rounds.unwrap_or(if q { 1 } else { 3 }).max(1),
            create_concurrency: args.create_concurrency.max(1),
            phases,
            record,
        }
    }

    fn runs(&self, p: Phase) -> bool {
        self.phases.contains(&p)
    }
}

fn main() {
    let plan = Plan::from(Args::parse());
    // Start the control plane before the runtime: it blocks for a while.
    let cp = support::control_plane();
    eprintln!("bench: control plane ready ({})", cp.kubeconfig.display());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let results = rt.block_on(run(&plan));
    let table = results.markdown(&plan);
    println!("{table}");
    eprintln!("bench: operator logs kept in {}", log_dir().display());
    if let Some(path) = &plan.record {
        record(path, &table);
        eprintln!("bench: results recorded in {}", path.display());
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Phases

async fn run(plan: &Plan) -> Results {
    let client = support::client().await;
    support::operator::install_crds(&client).await;
    let mut results = Results { machine: Machine::read(&client).await, ..Default::default() };
    // Namespaces stay until the control plane goes away with this process: deleting them would make the
    // namespace controller work (and, with no operator left to clear finalizers, never finish) during later phases.
    let mut keep: Vec<TestNamespace> = Vec::new();

    if plan.runs(Phase::Throughput) {
        let sim = start_sim(0).await;
        let (throughput, mut op, ns) = throughput(plan, &client, &sim, &mut keep).await;
        results.throughput = Some(throughput);
        if plan.runs(Phase::Restart) {
            results.restart = Some(restart(&mut op, &ns, &client, &sim, plan.n, plan.restart, 500).await);
            keep_log(&op, "throughput-and-restart");
        }
        op.kill();
        keep.push(ns);
    }
    if plan.runs(Phase::Rate) {
        results.rate = Some(rate(plan, &sim_default().await, &mut keep).await);
    }
    if plan.runs(Phase::Memory) {
        let sim = start_sim(0).await;
        results.memory = Some(memory(plan, &client, &sim, &mut keep).await);
    }
    std::mem::forget(keep);
    results
}

/// `--rounds` times: the plain client (writes only), the operator, the plain client with the operator's reads
/// too; each in fresh namespaces. Returns the last round's operator and namespace for the restart phase.
async fn throughput(
    plan: &Plan,
    client: &Client,
    sim: &RunningSim,
    keep: &mut Vec<TestNamespace>,
) -> (Throughput, Operator, TestNamespace) {
    let n = plan.n;
    let names = names(n);
    // Warm-up: API-server caches for the CRD, connections, etcd, Go heap. Not measured.
    let warm = namespace_for("bench-warm", sim).await;
    run_plain(&warm, sim, &names[..n.min(200)], plan.create_concurrency, false).await;
    keep.push(warm);

    let mut rounds = Vec::new();
    let mut last = None;
    for round in 1..=plan.rounds {
        eprintln!("bench: round {round}/{}: plain client, {n} resources (writes only)", plan.rounds);
        let base_ns = namespace_for("bench-plain", sim).await;
        let before = apiserver_requests(client).await;
        let baseline = run_plain(&base_ns, sim, &names, plan.create_concurrency, false).await;
        let baseline_requests = per_resource(&before, &apiserver_requests(client).await, n);
        keep.push(base_ns);

        eprintln!("bench: round {round}/{}: operator, {n} resources", plan.rounds);
        let op_ns = namespace_for("bench-operator", sim).await;
        let op = start_operator(&op_ns.name, NO_CLIENT_LIMIT);
        wait_operator_ready(&op).await;
        let vendor_before = sim.counts.snapshot();
        let before = apiserver_requests(client).await;
        let sampler = ProcSampler::start(op.pid());
        let operator = run_operator(&op_ns, sim, &names, plan.create_concurrency).await;
        let sockets = sampler.stop().max_sockets;
        let operator_requests = per_resource(&before, &apiserver_requests(client).await, n);
        let vendor = vendor_delta(&vendor_before, &sim.counts.snapshot());
        let live_keys = live_keys_of(sim, &op_ns.name);
        let hwm_kib = proc_status_kib(op.pid(), "VmHWM");
        keep_log(&op, &format!("throughput-{round}"));

        eprintln!(
            "bench: round {round}/{}: plain client, {n} resources (writes and the operator's reads)",
            plan.rounds
        );
        let reads_ns = namespace_for("bench-plain-reads", sim).await;
        let before = apiserver_requests(client).await;
        let baseline_reads = run_plain(&reads_ns, sim, &names, plan.create_concurrency, true).await;
        let reads_requests = per_resource(&before, &apiserver_requests(client).await, n);
        keep.push(reads_ns);

        let mut requests: BTreeMap<String, [f64; 3]> = BTreeMap::new();
        for (i, m) in [&operator_requests, &baseline_requests, &reads_requests].into_iter().enumerate() {
            for (k, v) in m {
                requests.entry(k.clone()).or_default()[i] = *v;
            }
        }
        rounds.push(Round { operator, baseline, baseline_reads, vendor, requests, hwm_kib, sockets, live_keys });
        if let Some((mut old_op, old_ns)) = last.replace((op, op_ns)) {
            Operator::kill(&mut old_op);
            keep.push(old_ns);
        }
    }
    let (op, op_ns) = last.expect("at least one round");
    (Throughput { n, rounds }, op, op_ns)
}

/// Restarts the operator with every resource Ready; counts vendor requests until its first reconcile of each
/// resource is done and over the whole `observe` period, and the API-server requests it made.
async fn restart(
    op: &mut Operator,
    ns: &TestNamespace,
    client: &Client,
    sim: &RunningSim,
    n: usize,
    observe: Duration,
    poll_ms: u64,
) -> Restart {
    eprintln!("bench: restarting the operator with {n} resources Ready, watching vendor calls for {observe:?}");
    op.kill();
    let vendor_before = sim.counts.snapshot();
    let api_before = apiserver_requests(client).await;
    let started = Instant::now();
    restart_operator(op, NO_CLIENT_LIMIT);
    let sampler = ProcSampler::start(op.pid());
    wait_operator_ready(op).await;
    let mut settled = None;
    let mut vendor_at_settled = 0;
    while started.elapsed() < observe.max(Duration::from_secs(600)) {
        tokio::time::sleep(Duration::from_millis(poll_ms)).await;
        if ready_gauges(op, &ns.name).await >= n {
            settled = Some(started.elapsed());
            vendor_at_settled = total(&vendor_delta(&vendor_before, &sim.counts.snapshot()));
            break;
        }
    }
    if let Some(rest) = observe.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let sockets = sampler.stop().max_sockets;
    let vendor = vendor_delta(&vendor_before, &sim.counts.snapshot());
    let api = per_resource(&api_before, &apiserver_requests(client).await, n);
    Restart { n, observed: started.elapsed(), settled, vendor_at_settled, vendor, api_requests: api, sockets }
}

/// The operator at the default client limit, on more keys than one minute's budget.
async fn rate(plan: &Plan, sim: &RunningSim, keep: &mut Vec<TestNamespace>) -> RateRun {
    let n = plan.rate_n;
    let limit = DEFAULT_REQUESTS_PER_MINUTE;
    eprintln!("bench: vendor rate, {n} resources at the default limit of {limit}/min");
    let ns = namespace_for("bench-rate", sim).await;
    let op = start_operator(&ns.name, limit);
    wait_operator_ready(&op).await;
    // Vendor request totals every 50 ms: brackets the requests in any 60 s window.
    let samples = Arc::new(Mutex::new(Vec::<(Instant, u64)>::new()));
    let sampler = {
        let (samples, counts) = (samples.clone(), sim.counts.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                let total = counts.total("trend", "");
                samples.lock().unwrap().push((Instant::now(), total));
            }
        })
    };
    let timeout = Duration::from_secs(180 + (n as u64 * 60 * 2) / u64::from(limit));
    let timing = run_operator_with_timeout(&ns, sim, &names(n), plan.create_concurrency, timeout).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sampler.abort();
    let samples = samples.lock().unwrap().clone();
    let (window_low, window_high) = window_bounds(&samples, Duration::from_secs(60));
    // Exact: the simulator stamps every key it creates (ms).
    let mut created: Vec<i64> = sim
        .trend
        .keys()
        .into_iter()
        .filter(|k| k.description.as_deref().is_some_and(|d| d.contains("workloadkeys.io/uid=")))
        .map(|k| k.created)
        .collect();
    created.sort_unstable();
    let vendor = vendor_delta(&BTreeMap::new(), &sim.counts.snapshot());
    let rejected_429 = sim
        .counts
        .snapshot()
        .get("trend")
        .map(|m| m.values().map(|c| c.by_status.get(&429).copied().unwrap_or(0)).sum())
        .unwrap_or(0);
    keep_log(&op, "rate");
    keep.push(ns);
    RateRun {
        n,
        limit,
        timing,
        vendor,
        creates_max_60s: max_in_window(&created, 60_000),
        total_max_60s: (window_low, window_high),
        throttled: sim.trend.throttled_count(),
        rejected_429,
    }
}

/// Peak RSS of the operator while it takes `rss_n` resources to Ready, then after a restart with all Ready.
async fn memory(plan: &Plan, client: &Client, sim: &RunningSim, keep: &mut Vec<TestNamespace>) -> Memory {
    let n = plan.rss_n;
    eprintln!("bench: memory, {n} resources");
    let ns = namespace_for("bench-memory", sim).await;
    let mut op = start_operator(&ns.name, NO_CLIENT_LIMIT);
    wait_operator_ready(&op).await;
    let vendor_before = sim.counts.snapshot();
    let timeout = Duration::from_secs(900.max(n as u64 / 4));
    let sampler = ProcSampler::start(op.pid());
    let timing = run_operator_with_timeout(&ns, sim, &names(n), plan.create_concurrency, timeout).await;
    let sockets = sampler.stop().max_sockets;
    let vendor = vendor_delta(&vendor_before, &sim.counts.snapshot());
    let live_keys = live_keys_of(sim, &ns.name);
    let hwm_create = proc_status_kib(op.pid(), "VmHWM");
    keep_log(&op, "memory");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_idle = proc_status_kib(op.pid(), "VmRSS");
    let restart = restart(&mut op, &ns, client, sim, n, plan.restart, 2_000).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let hwm_restart = proc_status_kib(op.pid(), "VmHWM");
    let rss_restart = proc_status_kib(op.pid(), "VmRSS");
    keep_log(&op, "memory-and-restart");
    op.kill();
    keep.push(ns);
    Memory { n, timing, vendor, live_keys, sockets, hwm_create, rss_idle, hwm_restart, rss_restart, restart }
}

// ---------------------------------------------------------------------------------------------------------------
// Drivers

/// Where the operators' logs are kept after a run (the runner deletes them when it stops the operator).
fn log_dir() -> PathBuf {
    std::env::temp_dir().join(format!("wko-bench-logs-{}", std::process::id()))
}

/// Keeps a copy of the operator's log as `<name>.log` in [`log_dir`].
fn keep_log(op: &Operator, name: &str) {
    let dir = log_dir();
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::copy(&op.log_file, dir.join(format!("{name}.log")));
}

/// Unlimited vendor requests, for the runs that measure the operator rather than its client-side limit.
const NO_CLIENT_LIMIT: u32 = 1_000_000;

/// Starts the operator on `namespace` as deployed: the runner defaults to trace logging (for the leak checks)
/// and 1200 vendor requests per minute; later settings win.
fn start_operator(namespace: &str, rate_limit: u32) -> Operator {
    let rate = rate_limit.to_string();
    Operator::start_with_env(namespace, &[("WKO_LOG_LEVEL", "info"), ("WKO_VENDOR_RATE_LIMIT", &rate)])
}

fn restart_operator(op: &mut Operator, rate_limit: u32) {
    let rate = rate_limit.to_string();
    op.restart_with_env(&[("WKO_LOG_LEVEL", "info"), ("WKO_VENDOR_RATE_LIMIT", &rate)]);
}

async fn start_sim(per_key_limit: u32) -> RunningSim {
    let mut opts = SimOptions::default();
    opts.trend.rate_limit_per_minute = per_key_limit;
    sim::start(opts).await.expect("start vendor simulator")
}

/// The simulator as shipped: DSM's default per-key limit (500 per minute).
async fn sim_default() -> RunningSim {
    sim::start(SimOptions::default()).await.expect("start vendor simulator")
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("key-{i:05}")).collect()
}

/// A namespace with the admin key and the simulator's CA, as `tests/workload_api_key.rs` sets one up.
async fn namespace_for(prefix: &str, sim: &RunningSim) -> TestNamespace {
    let ns = TestNamespace::new(prefix).await;
    put_secret(&ns, "tm-admin", &[("api-secret-key", sim.info.trend_admin_api_key().as_str())]).await;
    put_secret(&ns, "sim-ca", &[("ca.crt", sim.ca_pem.as_str())]).await;
    ns
}

async fn put_secret(ns: &TestNamespace, name: &str, data: &[(&str, &str)]) {
    let secret = Secret {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some(data.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect()),
        ..Default::default()
    };
    let api: Api<Secret> = ns.api();
    api.patch(name, &PatchParams::apply("bench").force(), &Patch::Apply(&secret)).await.expect("put Secret");
}

/// The resource every phase creates: the spec of the integration tests, against the simulator.
fn template(sim: &RunningSim) -> WorkloadApiKey {
    serde_json::from_value(json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "WorkloadApiKey",
        "metadata": {"name": "template"},
        "spec": {
            "connection": {
                "url": sim.info.trend_url(),
                "caSecretRef": {"name": "sim-ca"},
                "apiKeySecretRef": {"name": "tm-admin"}
            },
            "role": {"name": "Auditor"},
            "locale": "ja-JP",
            "timeZone": "Asia/Tokyo",
            "expiresAfter": "336h",
            "description": "benchmark key"
        }
    }))
    .expect("WorkloadApiKey")
}

/// Creates every resource with at most `concurrency` creates in flight; `then` runs right after each create,
/// concurrently for all resources (the operator's controller has unbounded reconcile concurrency). Returns when
/// each resource was created, and how many creates or `then`s failed.
async fn create_all<F, Fut>(
    ns: &TestNamespace,
    sim: &RunningSim,
    names: &[String],
    concurrency: usize,
    then: F,
) -> (HashMap<String, Instant>, usize)
where
    F: Fn(WorkloadApiKey) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let api: Api<WorkloadApiKey> = ns.api();
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for name in names {
        let (api, gate, then, name) = (api.clone(), gate.clone(), then.clone(), name.clone());
        let mut obj = template(sim);
        obj.metadata.name = Some(name.clone());
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await.expect("semaphore");
            let created = api.create(&PostParams::default(), &obj).await.map_err(|e| format!("create {name}: {e}"))?;
            let at = Instant::now();
            drop(permit);
            then(created).await?;
            Ok::<_, String>((name, at))
        });
    }
    let (mut created, mut failed) = (HashMap::new(), 0);
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            Ok((name, at)) => {
                created.insert(name, at);
            }
            Err(e) => {
                failed += 1;
                if failed <= 5 {
                    eprintln!("bench: {e}");
                }
            }
        }
    }
    (created, failed)
}

async fn run_operator(ns: &TestNamespace, sim: &RunningSim, names: &[String], concurrency: usize) -> Timing {
    run_operator_with_timeout(ns, sim, names, concurrency, Duration::from_secs(900)).await
}

/// Creates the resources for a running operator and waits until all are Ready (or `timeout`).
async fn run_operator_with_timeout(
    ns: &TestNamespace,
    sim: &RunningSim,
    names: &[String],
    concurrency: usize,
    timeout: Duration,
) -> Timing {
    let mut watch = ReadyWatch::start(ns.api(), names.len()).await;
    let t0 = Instant::now();
    let (created, failed) = create_all(ns, sim, names, concurrency, |_| async { Ok(()) }).await;
    watch.wait(t0 + timeout).await;
    Timing::of(names.len(), t0, &created, &watch.ready(), failed)
}

/// Creates the resources and makes the operator's API-server writes for each with a plain kube-rs client.
async fn run_plain(ns: &TestNamespace, sim: &RunningSim, names: &[String], concurrency: usize, reads: bool) -> Timing {
    let plain = PlainClient::new(ns.client.clone(), sim.info.trend_url(), reads);
    let mut watch = ReadyWatch::start(ns.api(), names.len()).await;
    let t0 = Instant::now();
    let (created, failed) = create_all(ns, sim, names, concurrency, move |obj| {
        let plain = plain.clone();
        async move { plain.writes_for(obj).await }
    })
    .await;
    watch.wait(t0 + Duration::from_secs(900)).await;
    Timing::of(names.len(), t0, &created, &watch.ready(), failed)
}

/// The API-server requests the operator makes to take a new WorkloadApiKey to Ready (see
/// `src/controller/workload_api_key.rs` and `reconcile.rs`), made by a plain client without the vendor:
///
/// 1. first reconcile: the finalizer, by `kube::runtime::finalizer`'s JSON patch (test + add);
/// 2. second reconcile: status SSA with the intent (`pendingKeyName`), the vendor create (skipped here), the
///    Secret SSA, an Event `KeyCreated`, status SSA with the key, status SSA with `Ready=True`, an Event `Ready`.
///
/// With `reads`, also the GETs the operator makes on the way: the admin-key and CA Secrets (every reconcile) and
/// the target Secret (observed before each step and re-checked right before it is written).
#[derive(Clone)]
struct PlainClient {
    client: Client,
    recorder: Recorder,
    endpoint: String,
    reads: bool,
    next_id: Arc<AtomicI64>,
}

impl PlainClient {
    fn new(client: Client, endpoint: String, reads: bool) -> Self {
        let reporter = Reporter { controller: "workload-key-operator".into(), instance: None };
        let recorder = Recorder::new(client.clone(), reporter);
        Self { client, recorder, endpoint, reads, next_id: Arc::new(AtomicI64::new(1000)) }
    }

    async fn writes_for(&self, obj: WorkloadApiKey) -> Result<(), String> {
        let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
        let uid = obj.uid().unwrap_or_default();
        let err = |what: &'static str| {
            let name = name.clone();
            move |e: kube::Error| format!("{what} {name}: {e}")
        };
        let waks: Api<WorkloadApiKey> = Api::namespaced(self.client.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);

        self.add_finalizer(&waks, &name).await.map_err(err("finalizer"))?;

        self.read(&secrets, &["tm-admin", "sim-ca", &name]).await?;
        let key_name = format!("{ns}-{name}");
        let mut status = WorkloadApiKeyStatus {
            pending_key_name: Some(key_name.clone()),
            key_generation: Some(1),
            ..Default::default()
        };
        apply_status(&waks, &name, &status).await.map_err(err("intent"))?;

        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let data = BTreeMap::from([
            ("api-secret-key".to_owned(), format!("{id}:{}", "A".repeat(44)).into_bytes()),
            ("api-key-id".to_owned(), id.to_string().into_bytes()),
            ("endpoint".to_owned(), self.endpoint.clone().into_bytes()),
        ]);
        let owner = obj.controller_owner_ref(&()).ok_or("no owner reference")?;
        let desired = desired_secret(&name, &ns, None, owner, data);
        let hash = data_hash(b"bench", &uid, desired.data.as_ref().ok_or("no data")?);
        self.read(&secrets, &[&name]).await?;
        secrets
            .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired))
            .await
            .map_err(err("Secret"))?;
        self.event(&obj, "KeyCreated", "CreateKey", format!("created key {id} ({key_name}) and wrote Secret {name}"))
            .await;

        let now = Timestamp::now();
        status.key_id = Some(id);
        status.key_name = Some(key_name);
        status.pending_key_name = None;
        status.role_id = Some(2);
        status.secret_name = Some(name.clone());
        status.secret_hash = Some(hash);
        status.created_at = Some(Time(now));
        status.expires_at = Some(Time(now + SignedDuration::from_hours(336)));
        status.renew_at = Some(Time(now + SignedDuration::from_hours(224)));
        status.observed_generation = obj.metadata.generation;
        apply_status(&waks, &name, &status).await.map_err(err("status"))?;

        self.read(&secrets, &[&name]).await?;
        let message = format!("key {id} is in Secret {name}");
        conditions::set_condition(
            &mut status.conditions,
            READY,
            true,
            reason::READY,
            &message,
            obj.metadata.generation,
            now,
        );
        apply_status(&waks, &name, &status).await.map_err(err("Ready"))?;
        self.event(&obj, reason::READY, "Reconcile", message).await;
        Ok(())
    }

    /// `kube::runtime::finalizer` adds the finalizer with this JSON patch (the `json_patch` types are not ours
    /// to depend on here, so the same bytes go out by hand).
    async fn add_finalizer(&self, api: &Api<WorkloadApiKey>, name: &str) -> kube::Result<WorkloadApiKey> {
        let body = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ]);
        let request = http::Request::patch(format!("{}/{name}?", api.resource_url()))
            .header(http::header::CONTENT_TYPE, "application/json-patch+json")
            .body(serde_json::to_vec(&body).expect("JSON"))
            .expect("request");
        self.client.request(request).await
    }

    async fn read(&self, secrets: &Api<Secret>, names: &[&str]) -> Result<(), String> {
        if self.reads {
            for name in names {
                secrets.get_opt(name).await.map_err(|e| format!("get Secret {name}: {e}"))?;
            }
        }
        Ok(())
    }

    async fn event(&self, obj: &WorkloadApiKey, reason: &str, action: &str, note: String) {
        let ev = Event {
            type_: EventType::Normal,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        // As in the operator: events are advisory, a failure is not fatal.
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            eprintln!("bench: event: {e}");
        }
    }
}

/// The operator's `patch_status`: server-side apply of the whole status under its field manager.
async fn apply_status(
    api: &Api<WorkloadApiKey>,
    name: &str,
    status: &WorkloadApiKeyStatus,
) -> kube::Result<WorkloadApiKey> {
    let patch = json!({
        "apiVersion": WorkloadApiKey::api_version(&()),
        "kind": WorkloadApiKey::kind(&()),
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await
}

/// Watches a namespace's WorkloadApiKeys and notes when each first shows `Ready=True`.
struct ReadyWatch {
    n: usize,
    ready: Arc<Mutex<HashMap<String, Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadyWatch {
    async fn start(api: Api<WorkloadApiKey>, n: usize) -> Self {
        let ready = Arc::new(Mutex::new(HashMap::new()));
        let seen = ready.clone();
        let task = tokio::spawn(async move {
            let mut events =
                std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff().applied_objects());
            while let Some(ev) = events.next().await {
                let Ok(obj) = ev else { continue };
                let is_ready = obj.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, READY));
                if is_ready {
                    seen.lock().unwrap().entry(obj.name_any()).or_insert_with(Instant::now);
                }
            }
        });
        // Let the watch start before anything is created.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Self { n, ready, task }
    }

    fn count(&self) -> usize {
        self.ready.lock().unwrap().len()
    }

    /// Waits until all `n` are Ready or `deadline`, reporting progress every 15 s.
    async fn wait(&mut self, deadline: Instant) {
        let mut last_report = Instant::now();
        while self.count() < self.n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if last_report.elapsed() > Duration::from_secs(15) {
                eprintln!("bench:   {} of {} Ready", self.count(), self.n);
                last_report = Instant::now();
            }
        }
        self.task.abort();
    }

    fn ready(&self) -> HashMap<String, Instant> {
        self.ready.lock().unwrap().clone()
    }
}

async fn wait_operator_ready(op: &Operator) {
    workload_key_operator::clients::install_crypto_provider();
    let url = format!("http://127.0.0.1:{}/readyz", op.metrics_port);
    for _ in 0..300 {
        if reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
            // The watches start right after readiness; give them their initial list.
            tokio::time::sleep(Duration::from_secs(2)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("operator not ready after 30 s; log: {}", op.logs());
}

/// How many resources of `namespace` the operator has settled since it started (its `resource_ready` series).
async fn ready_gauges(op: &Operator, namespace: &str) -> usize {
    let needle = format!("namespace=\"{namespace}\"");
    op.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("workload_key_operator_resource_ready{") && l.contains(&needle))
        .count()
}

// ---------------------------------------------------------------------------------------------------------------
// Measurements

/// `VmHWM` (peak resident set) or `VmRSS` of a process, in KiB.
fn proc_status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Open sockets of a process (its connections to the API server and the vendor).
fn sockets_of(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    fds.filter_map(Result::ok)
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")))
        .count()
}

/// Samples a process's open sockets every 250 ms while a phase runs.
struct ProcSampler {
    max_sockets: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

struct ProcSample {
    max_sockets: usize,
}

impl ProcSampler {
    fn start(pid: Option<u32>) -> Self {
        let max_sockets = Arc::new(AtomicUsize::new(0));
        let max = max_sockets.clone();
        let task = tokio::spawn(async move {
            let Some(pid) = pid else { return };
            loop {
                max.fetch_max(sockets_of(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Self { max_sockets, task }
    }

    fn stop(self) -> ProcSample {
        self.task.abort();
        ProcSample { max_sockets: self.max_sockets.load(Ordering::Relaxed) }
    }
}

type VendorCounts = BTreeMap<String, u64>;

/// Requests the Trend simulator answered between two snapshots, by `"METHOD /path"` (and status when not 200).
fn vendor_delta(
    before: &BTreeMap<String, BTreeMap<String, sim::counts::EndpointCount>>,
    after: &BTreeMap<String, BTreeMap<String, sim::counts::EndpointCount>>,
) -> VendorCounts {
    let empty = BTreeMap::new();
    let b = before.get("trend").unwrap_or(&empty);
    let mut out = BTreeMap::new();
    for (endpoint, count) in after.get("trend").unwrap_or(&empty) {
        for (status, total) in &count.by_status {
            let prev = b.get(endpoint).and_then(|c| c.by_status.get(status)).copied().unwrap_or(0);
            if *total > prev {
                let key = if *status == 200 { endpoint.clone() } else { format!("{endpoint} → {status}") };
                out.insert(key, total - prev);
            }
        }
    }
    out
}

fn total(v: &VendorCounts) -> u64 {
    v.values().sum()
}

/// Keys at the vendor that can still authenticate, named for resources of `namespace` (default key names are
/// `<namespace>-<name>`): one per resource when nothing leaked.
fn live_keys_of(sim: &RunningSim, namespace: &str) -> usize {
    let prefix = format!("{namespace}-");
    let now = Timestamp::now().as_millisecond();
    sim.trend.keys().iter().filter(|k| k.key_name.starts_with(&prefix) && k.is_live(now)).count()
}

/// Successful key creates.
fn creates_of(v: &VendorCounts) -> u64 {
    v.get("POST /api/apikeys").copied().unwrap_or(0)
}

type ApiRequests = BTreeMap<String, f64>;

/// `apiserver_request_total` for WorkloadApiKeys, Secrets and Events, by `"VERB resource[/subresource]"`.
async fn apiserver_requests(client: &Client) -> ApiRequests {
    let req = http::Request::get("/metrics").body(Vec::new()).expect("request");
    let text = client.request_text(req).await.unwrap_or_default();
    let mut out = ApiRequests::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let labels = prometheus_labels(labels);
        let resource = labels.get("resource").map(String::as_str).unwrap_or_default();
        if !matches!(resource, "workloadapikeys" | "secrets" | "events") {
            continue;
        }
        let sub = labels.get("subresource").map(String::as_str).unwrap_or_default();
        let verb = labels.get("verb").map(String::as_str).unwrap_or_default();
        let key = if sub.is_empty() { format!("{verb} {resource}") } else { format!("{verb} {resource}/{sub}") };
        *out.entry(key).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

fn prometheus_labels(s: &str) -> HashMap<String, String> {
    let inner = s.split_once('{').map(|(_, r)| r.trim_end_matches('}')).unwrap_or_default();
    let mut out = HashMap::new();
    let mut rest = inner;
    while let Some((key, after)) = rest.split_once("=\"") {
        let end = after.find('"').unwrap_or(after.len());
        out.insert(key.trim_start_matches(',').to_owned(), after[..end].to_owned());
        rest = after.get(end + 1..).unwrap_or_default();
    }
    out
}

/// Requests between two snapshots, per resource (watches and lists of the whole run are left out).
fn per_resource(before: &ApiRequests, after: &ApiRequests, n: usize) -> ApiRequests {
    after
        .iter()
        .filter(|(k, _)| !k.starts_with("WATCH") && !k.starts_with("LIST"))
        .map(|(k, v)| (k.clone(), (v - before.get(k).copied().unwrap_or(0.0)) / n.max(1) as f64))
        .filter(|(_, v)| *v >= 0.005)
        .collect()
}

/// Most timestamps (ms) in any half-open window of `window_ms`.
fn max_in_window(sorted: &[i64], window_ms: i64) -> usize {
    let (mut best, mut lo) = (0, 0);
    for hi in 0..sorted.len() {
        while sorted[hi] - sorted[lo] >= window_ms {
            lo += 1;
        }
        best = best.max(hi + 1 - lo);
    }
    best
}

/// From (time, running total) samples: the most requests in any `window`, bracketed. Lower bound: sample pairs
/// at most `window` apart; upper bound: pairs at most `window` plus twice the largest sampling gap apart.
fn window_bounds(samples: &[(Instant, u64)], window: Duration) -> (u64, u64) {
    let gap = samples.windows(2).map(|w| w[1].0 - w[0].0).max().unwrap_or_default();
    let best = |span: Duration| {
        let (mut best, mut lo) = (0, 0);
        for hi in 0..samples.len() {
            while samples[hi].0 - samples[lo].0 > span {
                lo += 1;
            }
            best = best.max(samples[hi].1 - samples[lo].1);
        }
        best
    };
    (best(window), best(window + 2 * gap))
}

#[derive(Debug, Clone, Default)]
struct Timing {
    n: usize,
    ready: usize,
    failed: usize,
    /// First create to last Ready.
    elapsed: Duration,
    /// Create to Ready, per resource.
    p50: Duration,
    p95: Duration,
    max: Duration,
}

impl Timing {
    fn of(
        n: usize,
        t0: Instant,
        created: &HashMap<String, Instant>,
        ready: &HashMap<String, Instant>,
        failed: usize,
    ) -> Self {
        let last = ready.values().max().copied().unwrap_or(t0);
        let mut lat: Vec<Duration> =
            ready.iter().filter_map(|(k, r)| created.get(k).map(|c| r.saturating_duration_since(*c))).collect();
        lat.sort_unstable();
        let pct =
            |p: f64| lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or_default();
        Timing {
            n,
            ready: ready.len(),
            failed,
            elapsed: last - t0,
            p50: pct(0.5),
            p95: pct(0.95),
            max: lat.last().copied().unwrap_or_default(),
        }
    }

    fn complete(&self) -> bool {
        self.ready >= self.n && self.failed == 0
    }

    fn rate(&self) -> f64 {
        self.ready as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Results

#[derive(Default)]
struct Results {
    machine: Machine,
    throughput: Option<Throughput>,
    restart: Option<Restart>,
    rate: Option<RateRun>,
    memory: Option<Memory>,
}

struct Throughput {
    n: usize,
    rounds: Vec<Round>,
}

/// One round of the throughput phase.
struct Round {
    operator: Timing,
    /// The plain client, the operator's writes.
    baseline: Timing,
    /// The plain client, the operator's writes and reads (informational).
    baseline_reads: Timing,
    vendor: VendorCounts,
    /// Per resource: operator, plain client (writes), plain client (writes + reads).
    requests: BTreeMap<String, [f64; 3]>,
    /// Operator peak RSS.
    hwm_kib: Option<u64>,
    /// Most sockets the operator had open at once (connections to the API server and the vendor).
    sockets: usize,
    /// Live vendor keys of the operator's resources afterwards.
    live_keys: usize,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.operator.elapsed.as_secs_f64() / self.baseline.elapsed.as_secs_f64().max(1e-9)
    }

    fn complete(&self) -> bool {
        self.operator.complete() && self.baseline.complete()
    }
}

impl Throughput {
    /// Median over the rounds of operator time / plain-client time.
    fn median_ratio(&self) -> f64 {
        let mut r: Vec<f64> = self.rounds.iter().map(Round::ratio).collect();
        r.sort_by(f64::total_cmp);
        match r.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => r[n / 2],
            n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
        }
    }

    fn creates(&self) -> VendorCounts {
        let mut all = VendorCounts::new();
        for r in &self.rounds {
            for (k, v) in &r.vendor {
                *all.entry(k.clone()).or_default() += v;
            }
        }
        all
    }
}

struct Restart {
    n: usize,
    observed: Duration,
    settled: Option<Duration>,
    vendor_at_settled: u64,
    vendor: VendorCounts,
    api_requests: ApiRequests,
    /// Most sockets the restarted operator had open at once.
    sockets: usize,
}

struct RateRun {
    n: usize,
    limit: u32,
    timing: Timing,
    vendor: VendorCounts,
    creates_max_60s: usize,
    total_max_60s: (u64, u64),
    throttled: u64,
    rejected_429: u64,
}

struct Memory {
    n: usize,
    timing: Timing,
    vendor: VendorCounts,
    live_keys: usize,
    sockets: usize,
    hwm_create: Option<u64>,
    rss_idle: Option<u64>,
    hwm_restart: Option<u64>,
    rss_restart: Option<u64>,
    restart: Restart,
}

#[derive(Default)]
struct Machine {
    date: String,
    commit: String,
    cpus: usize,
    cpu_model: String,
    memory_gib: f64,
    kernel: String,
    kubernetes: String,
    rustc: String,
}

impl Machine {
    async fn read(client: &Client) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let cmd = |prog: &str, args: &[&str]| {
            std::process::Command::new(prog)
                .args(args)
                .current_dir(support::repo_root())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let commit = std::env::var("WKO_BENCH_COMMIT").ok().or_else(|| {
            let head = cmd("git", &["rev-parse", "--short", "HEAD"])?;
            // Only the operator's own code counts: the benchmark and its results file are usually being changed.
            let dirty =
                cmd("git", &["status", "--porcelain", "--untracked-files=no", "--", "src", "Cargo.toml", "Cargo.lock"])
                    .is_some_and(|s| !s.is_empty());
            Some(if dirty { format!("{head} + uncommitted changes in src/") } else { head })
        });
        Machine {
            date: Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string(),
            commit: commit.unwrap_or_else(|| "unknown".into()),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map_or_else(|| "unknown".into(), |(_, v)| v.trim().to_owned()),
            memory_gib: mem_kib / MIB / MIB,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
            kubernetes: client.apiserver_version().await.map(|v| v.git_version).unwrap_or_default(),
            rustc: cmd("rustc", &["--version"]).unwrap_or_default(),
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "n/a".into(), |k| format!("{:.1} MiB", k as f64 / MIB))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

fn creates_row(n: usize, vendor: &VendorCounts, live_keys: usize, ready: usize) -> String {
    let creates = creates_of(vendor);
    format!(
        "| Vendor creates per new key ({n} keys) | {creates} creates, {} vendor requests in all; {live_keys} live keys \
         afterwards | exactly 1 per key | {} |",
        total(vendor),
        verdict(creates == n as u64 && live_keys == n && ready == n)
    )
}

fn restart_row(r: &Restart) -> String {
    format!(
        "| Vendor calls on restart with {} Ready (first reconcile of each, then {} in all) | {} by then, {} in all \
         ({} creates) | 0 | {} |",
        r.n,
        secs(r.observed),
        r.vendor_at_settled,
        total(&r.vendor),
        creates_of(&r.vendor),
        verdict(r.settled.is_some() && total(&r.vendor) == 0)
    )
}

fn vendor_list(v: &VendorCounts) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter().map(|(k, n)| format!("`{k}` {n}")).collect::<Vec<_>>().join(", ")
}

impl Results {
    fn markdown(&self, plan: &Plan) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        line(format!(
            "Run {} on commit `{}`: {} CPUs ({}), {:.1} GiB, Linux {}, Kubernetes {}, {}. Release build \
             (`cargo bench`), operator at log level `info`, resources created {} at a time.",
            m.date,
            m.commit,
            m.cpus,
            m.cpu_model,
            m.memory_gib,
            m.kernel,
            m.kubernetes,
            m.rustc,
            plan.create_concurrency
        ));
        line(String::new());
        line("| Target (DESIGN §5) | Measured | Limit | Result |".into());
        line("| --- | --- | --- | --- |".into());
        if let Some(t) = &self.throughput {
            let ratio = t.median_ratio();
            let ok = t.rounds.iter().all(Round::complete) && ratio <= 1.5;
            let each: Vec<String> = t.rounds.iter().map(|r| format!("{:.2}", r.ratio())).collect();
            let mut times: Vec<(Duration, Duration)> =
                t.rounds.iter().map(|r| (r.operator.elapsed, r.baseline.elapsed)).collect();
            times.sort_by(|a, b| {
                (a.0.as_secs_f64() / a.1.as_secs_f64()).total_cmp(&(b.0.as_secs_f64() / b.1.as_secs_f64()))
            });
            let (op, base) = times[times.len() / 2];
            line(format!(
                "| {} WorkloadApiKeys to Ready, operator / plain client ({}) | **{ratio:.2}×** \
                 (median round: operator {} vs plain {}; rounds {}) | ≤ 1.5× | {} |",
                t.n,
                match t.rounds.len() {
                    1 => "1 round".to_owned(),
                    r => format!("median of {r} rounds"),
                },
                secs(op),
                secs(base),
                each.join(", "),
                verdict(ok)
            ));
            let live: usize = t.rounds.iter().map(|r| r.live_keys).sum();
            let ready: usize = t.rounds.iter().map(|r| r.operator.ready).sum();
            line(creates_row(t.n * t.rounds.len(), &t.creates(), live, ready));
        }
        if let Some(r) = &self.restart {
            line(restart_row(r));
        }
        if let Some(r) = &self.rate {
            let worst = r.creates_max_60s.max(r.total_max_60s.1 as usize);
            line(format!(
                "| Most vendor requests in any 60 s window, client limit {}/min ({} keys) | {} creates (exact); {}–{} requests in all | ≤ {} | {} |",
                r.limit,
                r.n,
                r.creates_max_60s,
                r.total_max_60s.0,
                r.total_max_60s.1,
                r.limit,
                verdict(r.timing.complete() && worst <= r.limit as usize)
            ));
        }
        if let Some(mem) = &self.memory {
            line(creates_row(mem.n, &mem.vendor, mem.live_keys, mem.timing.ready));
            line(restart_row(&mem.restart));
            let peak = mem.hwm_create.max(mem.hwm_restart);
            line(format!(
                "| Operator peak RSS with {} resources | {} (`VmHWM`; {} while creating, {} after a restart) | ≤ 40 MiB | {} |",
                mem.n,
                mib(peak),
                mib(mem.hwm_create),
                mib(mem.hwm_restart),
                verdict(mem.timing.complete() && peak.is_some_and(|k| k as f64 <= 40.0 * MIB))
            ));
        }

        if let Some(t) = &self.throughput {
            line(String::new());
            line(format!("#### Throughput: {} resources, first create to last Ready", t.n));
            line(String::new());
            line("| Round | Run | Ready | Time | Resources/s | Create→Ready p50 | p95 | max |".into());
            line("| --- | --- | --- | --- | --- | --- | --- | --- |".into());
            for (i, r) in t.rounds.iter().enumerate() {
                for (name, x) in [
                    ("Plain client: the operator's writes", &r.baseline),
                    ("Operator (vendor simulator, client limit off)", &r.operator),
                    ("Plain client: writes and the operator's reads", &r.baseline_reads),
                ] {
                    line(format!(
                        "| {} | {name} | {}/{}{} | {} | {:.1} | {} | {} | {} |",
                        i + 1,
                        x.ready,
                        x.n,
                        if x.failed > 0 { format!(" ({} failed)", x.failed) } else { String::new() },
                        secs(x.elapsed),
                        x.rate(),
                        secs(x.p50),
                        secs(x.p95),
                        secs(x.max)
                    ));
                }
            }
            line(String::new());
            for (i, r) in t.rounds.iter().enumerate() {
                line(format!(
                    "- Round {}: operator / plain writes **{:.2}×**, operator / plain writes + reads {:.2}×; operator \
                     peak RSS {}, at most {} sockets open at once; vendor requests: {}; live keys afterwards: {}.",
                    i + 1,
                    r.ratio(),
                    r.operator.elapsed.as_secs_f64() / r.baseline_reads.elapsed.as_secs_f64().max(1e-9),
                    mib(r.hwm_kib),
                    r.sockets,
                    vendor_list(&r.vendor),
                    r.live_keys
                ));
            }
            line(String::new());
            line(
                "API-server requests per resource in round 1 (`apiserver_request_total` deltas; cluster-wide, so the \
                  controller manager's share is in every column):"
                    .into(),
            );
            line(String::new());
            line("| Request | Operator | Plain: writes | Plain: writes + reads |".into());
            line("| --- | --- | --- | --- |".into());
            if let Some(r) = t.rounds.first() {
                for (k, v) in &r.requests {
                    line(format!("| `{k}` | {:.2} | {:.2} | {:.2} |", v[0], v[1], v[2]));
                }
            }
        }
        if let Some(r) = &self.restart {
            line(String::new());
            line(format!("#### Restart with {} resources Ready", r.n));
            line(String::new());
            line(format!(
                "Every resource's first reconcile done after {} (at most {} sockets open at once); vendor requests \
                 by then: {}; over {}: {}. API-server requests per resource over the period: {}.",
                r.settled.map_or_else(|| "never (timed out)".into(), secs),
                r.sockets,
                r.vendor_at_settled,
                secs(r.observed),
                vendor_list(&r.vendor),
                r.api_requests.iter().map(|(k, v)| format!("`{k}` {v:.2}")).collect::<Vec<_>>().join(", ")
            ));
        }
        if let Some(r) = &self.rate {
            line(String::new());
            line(format!("#### Vendor rate: {} resources at the default client limit ({}/min)", r.n, r.limit));
            line(String::new());
            line(format!(
                "{}/{} Ready in {} ({:.1} keys/min overall). Vendor requests: {}. Most in any 60 s window: {} key \
                 creates (exact, from the simulator's creation stamps), {}–{} requests of any kind (from totals \
                 sampled every 50 ms). The simulator's own per-key limit (DSM default, 500/min) refused {} \
                 requests; 429s seen: {}.",
                r.timing.ready,
                r.n,
                secs(r.timing.elapsed),
                r.timing.ready as f64 * 60.0 / r.timing.elapsed.as_secs_f64().max(1e-9),
                vendor_list(&r.vendor),
                r.creates_max_60s,
                r.total_max_60s.0,
                r.total_max_60s.1,
                r.throttled,
                r.rejected_429
            ));
        }
        if let Some(mem) = &self.memory {
            line(String::new());
            line(format!("#### Memory: {} resources", mem.n));
            line(String::new());
            line(format!(
                "{}/{} Ready in {} ({:.1}/s; at most {} sockets open at once); vendor requests: {}. Operator \
                 `VmHWM` after all were Ready: {}; `VmRSS` 10 s later: {}. Restarted with all Ready: first reconcile \
                 of each done after {} (at most {} sockets open at once), `VmHWM` {}, `VmRSS` {}; vendor requests: {}.",
                mem.timing.ready,
                mem.n,
                secs(mem.timing.elapsed),
                mem.timing.rate(),
                mem.sockets,
                vendor_list(&mem.vendor),
                mib(mem.hwm_create),
                mib(mem.rss_idle),
                mem.restart.settled.map_or_else(|| "never (timed out)".into(), secs),
                mem.restart.sockets,
                mib(mem.hwm_restart),
                mib(mem.rss_restart),
                vendor_list(&mem.restart.vendor)
            ));
        }
        s
    }
}

const BEGIN: &str = "<!-- BEGIN RESULTS (written by `cargo bench --bench scale`) -->";
const END: &str = "<!-- END RESULTS -->";

/// Replaces the results section of `path` (or writes a file that is only that section).
fn record(path: &PathBuf, table: &str) {
    let section = format!("{BEGIN}\n{table}{END}");
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if e > b => format!("{}{section}{}", &old[..b], &old[e + END.len()..]),
        _ => format!("# Benchmarks\n\n{section}\n"),
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(path, new).expect("write the results file");
}
