//! Running the operator and the simulator, creating the resources, and watching them become Ready.

use std::{
    collections::HashMap,
    fmt::Debug,
    future::Future,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use clap::ValueEnum;
use futures::StreamExt;
use kube::{
    Api, Resource, ResourceExt,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    sync::Semaphore,
    task::JoinSet,
};
use workload_key_operator::{
    api::{
        WorkloadApiKey,
        conditions::{self, READY},
    },
    sim::{self, RunningSim, SimOptions},
};

use crate::{
    measure::Timing,
    plain::PlainClient,
    support::{TestNamespace, operator::Operator, sim_env},
};

/// Where the operators' logs are kept after a run (the runner deletes them when it stops the operator).
pub fn log_dir() -> PathBuf {
    std::env::temp_dir().join(format!("wko-bench-logs-{}", std::process::id()))
}

/// Keeps a copy of the operator's log as `<name>.log` in [`log_dir`].
pub fn keep_log(op: &Operator, name: &str) {
    let dir = log_dir();
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::copy(&op.log_file, dir.join(format!("{name}.log")));
}

/// Unlimited vendor requests, for the runs that measure the operator rather than its client-side limit.
pub const NO_CLIENT_LIMIT: u32 = 1_000_000;

/// Starts the operator on `namespace` as deployed: the runner defaults to trace logging (for the leak checks)
/// and 1200 vendor requests per minute; later settings win.
/// Its cluster-resource namespace is the platform namespace of the resources' simulator (see [`namespace_for`]).
pub fn start_operator(namespace: &str, rate_limit: u32) -> Operator {
    let (rate, platform) = (rate_limit.to_string(), platform_of(namespace));
    Operator::start_with_env(namespace, &operator_env(&rate, &platform))
}

pub fn restart_operator(op: &mut Operator, rate_limit: u32) {
    let (rate, platform) = (rate_limit.to_string(), platform_of(&op.namespace));
    op.restart_with_env(&operator_env(&rate, &platform));
}

/// As the chart runs it (its `allocator` values included), at log level `info`.
fn operator_env<'a>(rate: &'a str, platform: &'a str) -> [(&'static str, &'a str); 6] {
    [
        ("WKO_LOG_LEVEL", "info"),
        ("WKO_VENDOR_RATE_LIMIT", rate),
        ("WKO_CLUSTER_RESOURCE_NAMESPACE", platform),
        ("MALLOC_ARENA_MAX", "1"),
        ("MALLOC_TRIM_THRESHOLD_", "131072"),
        ("MALLOC_MMAP_THRESHOLD_", "131072"),
    ]
}

/// Workload namespace → the platform namespace of its simulator.
static PLATFORM_OF: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
/// Simulator URL → its platform namespace (also the name of its ClusterKeyProvider).
static PLATFORMS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn platform_of(namespace: &str) -> String {
    let map = PLATFORM_OF.lock().unwrap();
    map.iter().find(|(ns, _)| ns == namespace).map(|(_, p)| p.clone()).expect("namespace made by namespace_for")
}

/// The platform team's side, as in a cluster: one `ClusterKeyProvider` per simulator, its admin key and CA in a
/// namespace of their own (the operator's cluster-resource namespace), shared by every resource that uses it.
async fn platform_for(sim: &RunningSim) -> String {
    let url = sim.info.trend_url();
    if let Some((_, p)) = PLATFORMS.lock().unwrap().iter().find(|(u, _)| *u == url) {
        return p.clone();
    }
    let ns = TestNamespace::new("bench-platform").await;
    sim_env::put_sim_secrets(&ns, sim).await;
    let mut spec = sim_env::trend_provider_spec(sim, sim_env::ADMIN_SECRET);
    // Every namespace of the run (`TestNamespace` labels them), as a platform team would allow its teams'.
    spec["allowedNamespaces"] = serde_json::json!({"selector": {"matchLabels": {"workloadkeys.io/test": "true"}}});
    sim_env::apply_cluster_key_provider(&ns.client, &ns.name, spec).await;
    let name = ns.name.clone();
    // Kept with the control plane, like every namespace of the run.
    std::mem::forget(ns);
    PLATFORMS.lock().unwrap().push((url, name.clone()));
    name
}

pub async fn start_sim(per_key_limit: u32) -> RunningSim {
    let mut opts = SimOptions::default();
    opts.deep_security.rate_limit_per_minute = per_key_limit;
    sim::start(opts).await.expect("start vendor simulator")
}

/// The simulator as shipped: DSM's default per-key limit (500 per minute).
pub async fn sim_default() -> RunningSim {
    sim::start(SimOptions::default()).await.expect("start vendor simulator")
}

pub fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("key-{i:05}")).collect()
}

/// An application team's namespace: no credential in it; its resources issue through the simulator's shared
/// `ClusterKeyProvider` (made on first use, see [`platform_for`]).
pub async fn namespace_for(prefix: &str, sim: &RunningSim) -> TestNamespace {
    let platform = platform_for(sim).await;
    let ns = TestNamespace::new(prefix).await;
    PLATFORM_OF.lock().unwrap().push((ns.name.clone(), platform));
    ns
}

/// The resource every phase creates: the spec of the integration tests, through the shared provider.
pub fn template(sim: &RunningSim) -> WorkloadApiKey {
    let mut spec = sim_env::wak_spec("benchmark key");
    let platform = PLATFORMS.lock().unwrap().iter().find(|(u, _)| *u == sim.info.trend_url()).map(|(_, p)| p.clone());
    spec["providerRef"] = sim_env::cluster_provider_ref(&platform.expect("platform made by namespace_for"));
    sim_env::wak("template", spec)
}

/// Waits until the provider of `namespace` is Ready (the operator proves its credential once, at its first start).
pub async fn wait_provider_ready(namespace: &str) {
    let client = crate::support::client().await;
    let api: Api<workload_key_operator::api::ClusterKeyProvider> = Api::all(client);
    sim_env::wait_provider_ready(&api, &platform_of(namespace)).await;
}

/// Creates every resource with at most `concurrency` creates in flight; `then` runs right after each create,
/// concurrently for all resources (the operator's controller has unbounded reconcile concurrency). Returns when
/// each resource was created, and how many creates or `then`s failed.
pub async fn create_all<F, Fut>(
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
    let template = template(sim);
    let make = move |name: &str| {
        let mut obj = template.clone();
        obj.metadata.name = Some(name.to_owned());
        obj
    };
    create_each(ns.api(), make, names, concurrency, then).await
}

/// The create driver of every phase, for any kind: `make` builds the object of each name, at most `concurrency`
/// creates are in flight, and `then` runs right after each create (concurrently for all resources).
pub async fn create_each<K, M, F, Fut>(
    api: Api<K>,
    make: M,
    names: &[String],
    concurrency: usize,
    then: F,
) -> (HashMap<String, Instant>, usize)
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug + Send + Sync + 'static,
    M: Fn(&str) -> K,
    F: Fn(K) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for name in names {
        let (api, gate, then, name) = (api.clone(), gate.clone(), then.clone(), name.clone());
        let obj = make(&name);
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

/// How the resources of a peer run arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Creator {
    /// The benchmark's kube-rs client, `--create-concurrency` creates in flight (every phase's driver).
    Client,
    /// As a user does: `kubectl create -f` of one multi-document YAML holding every object (one create at a time).
    Kubectl,
}

impl Creator {
    pub fn name(self) -> &'static str {
        match self {
            Creator::Client => "client",
            Creator::Kubectl => "kubectl",
        }
    }
}

/// What a create driver did: when each object's create returned, how many creates failed, and when the last one
/// returned (the client's last answer, or kubectl's exit): the floor under first create → last Ready.
pub struct Created {
    pub at: HashMap<String, Instant>,
    pub failed: usize,
    pub done: Instant,
}

/// `kubectl` and where it keeps its discovery cache (one directory for the run, warmed before anything is timed,
/// as a user's kubectl has it).
#[derive(Clone, Debug)]
pub struct Kubectl {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
    pub cache_dir: PathBuf,
}

impl Kubectl {
    pub fn new(bin: PathBuf, kubeconfig: PathBuf) -> Self {
        let cache_dir = std::env::temp_dir().join(format!("wko-bench-kubectl-cache-{}", std::process::id()));
        Self { bin, kubeconfig, cache_dir }
    }

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).arg("--cache-dir").arg(&self.cache_dir);
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// Fills the discovery cache (every kind the API server serves, ours and ESO's included).
    pub async fn warm(&self) {
        let out = self.command().arg("api-resources").output().await.expect("run kubectl api-resources");
        assert!(out.status.success(), "kubectl api-resources failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Objects ready to be created by one of the creators, before the clock starts: for kubectl the YAML file is written
/// here (a user has it before running kubectl).
pub struct Batch<K> {
    api: Api<K>,
    objects: Vec<K>,
    how: How,
}

enum How {
    Client { concurrency: usize },
    Kubectl { kubectl: Kubectl, file: PathBuf, namespace: String },
}

impl<K> Batch<K>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// `kubectl` is needed (and used) only by [`Creator::Kubectl`].
    pub fn new(
        creator: Creator,
        api: Api<K>,
        namespace: &str,
        objects: Vec<K>,
        concurrency: usize,
        kubectl: Option<&Kubectl>,
    ) -> Self {
        let how = match creator {
            Creator::Client => How::Client { concurrency },
            Creator::Kubectl => {
                let kubectl = kubectl.expect("kubectl is resolved before a kubectl run").clone();
                let file = std::env::temp_dir().join(format!("wko-bench-{namespace}.yaml"));
                write_yaml(&file, &objects);
                How::Kubectl { kubectl, file, namespace: namespace.to_owned() }
            }
        };
        Self { api, objects, how }
    }

    /// Creates every object; the clock is the caller's.
    pub async fn create(self) -> Created {
        match self.how {
            How::Client { concurrency } => {
                let by_name: HashMap<String, K> = self.objects.into_iter().map(|o| (o.name_any(), o)).collect();
                let mut names: Vec<String> = by_name.keys().cloned().collect();
                names.sort();
                let (at, failed) =
                    create_each(self.api, |name| by_name[name].clone(), &names, concurrency, |_| async { Ok(()) })
                        .await;
                Created { at, failed, done: Instant::now() }
            }
            How::Kubectl { kubectl, file, namespace } => {
                let created = kubectl_create(&kubectl, &file, &namespace, self.objects.len()).await;
                let _ = std::fs::remove_file(&file);
                created
            }
        }
    }
}

/// The objects as one multi-document YAML, without namespace (`kubectl create -n` gives it).
fn write_yaml<K: Resource + Serialize>(file: &Path, objects: &[K]) {
    let mut text = String::new();
    for obj in objects {
        let mut value = serde_json::to_value(obj).expect("object as JSON");
        if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.remove("namespace");
        }
        text.push_str("---\n");
        text.push_str(&serde_norway::to_string(&value).expect("object as YAML"));
    }
    std::fs::write(file, text).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
}

/// `kubectl create -f <file> -n <namespace> -o name`: each object's create is stamped when kubectl prints its name
/// (right after the API server's answer; kubectl creates one object at a time, in file order).
async fn kubectl_create(kubectl: &Kubectl, file: &Path, namespace: &str, n: usize) -> Created {
    let mut child = kubectl
        .command()
        .arg("create")
        .arg("-f")
        .arg(file)
        .args(["-n", namespace, "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", kubectl.bin.display()));
    let mut stderr = child.stderr.take().expect("stderr");
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut at = HashMap::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let name = line.trim().rsplit('/').next().unwrap_or_default();
        if !name.is_empty() {
            at.insert(name.to_owned(), Instant::now());
        }
    }
    let status = child.wait().await.expect("wait for kubectl");
    let done = Instant::now();
    let errors = errors.await.unwrap_or_default();
    if !status.success() || !errors.trim().is_empty() {
        let head: Vec<&str> = errors.lines().take(5).collect();
        eprintln!("bench: kubectl create ({status}): {}", head.join(" / "));
    }
    Created { failed: n.saturating_sub(at.len()), at, done }
}

pub async fn run_operator(ns: &TestNamespace, sim: &RunningSim, names: &[String], concurrency: usize) -> Timing {
    run_operator_with_timeout(ns, sim, names, concurrency, Duration::from_secs(900)).await
}

/// Creates the resources for a running operator and waits until all are Ready (or `timeout`).
pub async fn run_operator_with_timeout(
    ns: &TestNamespace,
    sim: &RunningSim,
    names: &[String],
    concurrency: usize,
    timeout: Duration,
) -> Timing {
    // The namespace may already hold resources (the memory phase creates in steps): wait for those and these, and
    // time only these.
    let api: Api<WorkloadApiKey> = ns.api();
    let already = api.list_metadata(&Default::default()).await.map_or(0, |l| l.items.len());
    let mut watch = ReadyWatch::start(ns.api(), already + names.len()).await;
    let t0 = Instant::now();
    let (created, failed) = create_all(ns, sim, names, concurrency, |_| async { Ok(()) }).await;
    watch.wait(t0 + timeout).await;
    let ready: HashMap<String, Instant> = watch.ready().into_iter().filter(|(k, _)| created.contains_key(k)).collect();
    Timing::of(names.len(), t0, &created, &ready, failed)
}

/// Creates the resources and makes the operator's API-server writes for each with a plain kube-rs client.
pub async fn run_plain(
    ns: &TestNamespace,
    sim: &RunningSim,
    names: &[String],
    concurrency: usize,
    reads: bool,
) -> Timing {
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

/// Watches a namespace's WorkloadApiKeys and notes when each first shows `Ready=True`.
pub struct ReadyWatch {
    pub n: usize,
    pub ready: Arc<Mutex<HashMap<String, Instant>>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl ReadyWatch {
    pub async fn start(api: Api<WorkloadApiKey>, n: usize) -> Self {
        Self::start_with(api, n, |obj: &WorkloadApiKey| {
            obj.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, READY))
        })
        .await
    }

    /// The same for any kind, with its own test of `Ready=True`.
    pub async fn start_with<K>(api: Api<K>, n: usize, is_ready: fn(&K) -> bool) -> Self
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        let ready = Arc::new(Mutex::new(HashMap::new()));
        let seen = ready.clone();
        let task = tokio::spawn(async move {
            let mut events =
                std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff().applied_objects());
            while let Some(ev) = events.next().await {
                let Ok(obj) = ev else { continue };
                if is_ready(&obj) {
                    seen.lock().unwrap().entry(obj.name_any()).or_insert_with(Instant::now);
                }
            }
        });
        // Let the watch start before anything is created.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Self { n, ready, task }
    }

    pub fn count(&self) -> usize {
        self.ready.lock().unwrap().len()
    }

    /// Waits until all `n` are Ready or `deadline`, reporting progress every 15 s.
    pub async fn wait(&mut self, deadline: Instant) {
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

    pub fn ready(&self) -> HashMap<String, Instant> {
        self.ready.lock().unwrap().clone()
    }
}

pub async fn wait_operator_ready(op: &Operator) {
    workload_key_operator::clients::install_crypto_provider();
    let url = format!("http://127.0.0.1:{}/readyz", op.metrics_port);
    for _ in 0..300 {
        if reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
            // The watches start right after readiness; give them their initial list, and the provider its check.
            tokio::time::sleep(Duration::from_secs(2)).await;
            wait_provider_ready(&op.namespace).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("operator not ready after 30 s; log: {}", op.logs());
}

/// How many resources of `namespace` the operator has settled since it started (its `resource_ready` series).
pub async fn ready_gauges(op: &Operator, namespace: &str) -> usize {
    let needle = format!("namespace=\"{namespace}\"");
    op.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("workload_key_operator_resource_ready{") && l.contains(&needle))
        .count()
}
