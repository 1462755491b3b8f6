//! The peer: External Secrets Operator (ESO), what a user who needs generated credentials in Secrets picks today.
//! Built from its Go module by `scripts/eso-binary` (no container image), its CRDs applied to the same control
//! plane, run out of cluster like ours (one process watching one namespace, the admin kubeconfig), and taking N
//! `ExternalSecret`s, each with its data from a `Password` generator (no external call), to `Ready` — created by
//! the same driver as our resources, timed by the same watch, measured the same way.

use std::{
    collections::BTreeSet,
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::Secret, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use workload_key_operator::{api::WorkloadApiKey, controller::context::DEFAULT_MAX_CONCURRENT_RECONCILES};

use crate::{
    Plan,
    drivers::{
        Batch, Creator, NO_CLIENT_LIMIT, ReadyWatch, create_each, keep_log, log_dir, names, namespace_for, run_plain,
        start_operator, start_sim, template, wait_operator_ready,
    },
    measure::{
        ApiRequests, ProcSampler, Timing, apiserver_requests, apiserver_requests_of, per_resource, proc_status_kib,
        prometheus_labels,
    },
    results::{EsoRun, Peer, PeerRun, PeerSize, Results},
    support::{self, TestNamespace, eventually, operator::free_port},
};

/// What every ExternalSecret asks for: generated once, refreshed (regenerated) only after an hour — ESO's
/// default, longer than any run here, so nothing is regenerated while it is measured.
pub const REFRESH_INTERVAL: &str = "1h";
/// The generator every ExternalSecret of a namespace takes its data from.
pub const GENERATOR: &str = "bench-password";
/// ESO's own default for `--concurrent` (its Helm chart's too).
pub const ESO_DEFAULT_CONCURRENT: usize = 1;
/// The resources whose `apiserver_request_total` counts ESO's requests.
pub const ESO_RESOURCES: &[&str] =
    &["externalsecrets", "secrets", "events", "passwords", "generatorstates", "secretstores", "clustersecretstores"];

/// ESO's binary and CRDs, from `scripts/eso-binary`.
#[derive(Clone, Debug)]
pub struct EsoBinary {
    pub bin: PathBuf,
    pub crds: PathBuf,
    /// `v0.16.2`, from the cache directory's name.
    pub version: String,
}

/// Runs `scripts/eso-binary` (builds ESO once, several minutes; its progress goes to stderr).
pub fn eso_binary() -> Result<EsoBinary, String> {
    let script = support::repo_root().join("scripts/eso-binary");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status));
    }
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let dir = bin.parent().ok_or("scripts/eso-binary printed no path")?.to_owned();
    let version =
        dir.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("eso-")).unwrap_or("unknown").to_owned();
    Ok(EsoBinary { bin, crds: dir.join("crds"), version })
}

pub fn external_secret_resource() -> ApiResource {
    ApiResource {
        group: "external-secrets.io".into(),
        version: "v1".into(),
        api_version: "external-secrets.io/v1".into(),
        kind: "ExternalSecret".into(),
        plural: "externalsecrets".into(),
    }
}

pub fn password_resource() -> ApiResource {
    ApiResource {
        group: "generators.external-secrets.io".into(),
        version: "v1alpha1".into(),
        api_version: "generators.external-secrets.io/v1alpha1".into(),
        kind: "Password".into(),
        plural: "passwords".into(),
    }
}

/// Applies every CRD of ESO's `config/crds/bases` (its controllers for stores, cluster resources, push secrets and
/// generator states start by default and need theirs) and waits until each is served.
pub async fn install_eso_crds(client: &Client, dir: &std::path::Path) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no CRDs in {}", dir.display());
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read CRD");
        let crd: CustomResourceDefinition =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", file.display()));
        let name = crd.metadata.name.clone().expect("CRD name");
        crds.patch(&name, &PatchParams::apply("wko-bench").force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
        eventually(Duration::from_secs(30), "ESO CRD established", || {
            let (crds, name) = (crds.clone(), name.clone());
            async move {
                let crd = crds.get(&name).await.ok()?;
                crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
            }
        })
        .await;
    }
    eprintln!("bench: {} ESO CRDs applied from {}", files.len(), dir.display());
}

/// ESO's controller as a child process on one namespace, like ours. Killed when dropped.
pub struct Eso {
    child: Child,
    pub log_file: PathBuf,
    pub metrics_port: u16,
}

/// ESO's command line (after the binary) for `namespace`, with metrics on `metrics_port` of loopback.
pub fn eso_args(namespace: &str, metrics_port: &str, concurrent: &str, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--namespace",
        namespace,
        "--metrics-addr",
        &format!("127.0.0.1:{metrics_port}"),
        "--concurrent",
        concurrent,
        "--enable-leader-election=false",
        "--loglevel",
        "info",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().cloned());
    args
}

impl Eso {
    pub fn start(bin: &EsoBinary, namespace: &str, concurrent: usize, extra: &[String]) -> Self {
        let metrics_port = free_port();
        let log_file = std::env::temp_dir().join(format!("wko-bench-eso-{namespace}.log"));
        let log = File::create(&log_file).expect("ESO log file");
        let child = Command::new(&bin.bin)
            .args(eso_args(namespace, &metrics_port.to_string(), &concurrent.to_string(), extra))
            // Out of cluster, as ours: the control plane's admin kubeconfig (controller-runtime reads $KUBECONFIG).
            .env("KUBECONFIG", &support::control_plane().kubeconfig)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.bin.display()));
        Self { child, log_file, metrics_port }
    }

    pub fn pid(&self) -> Option<u32> {
        Some(self.child.id())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// Waits until the ExternalSecret controller's workers run (controller-runtime logs "Starting workers" once
    /// its caches are synced), then lets the watches settle as for ours.
    pub async fn wait_ready(&mut self) {
        for _ in 0..600 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ESO exited ({status}) before it was ready; log {}:\n{}", self.log_file.display(), self.logs());
            }
            let logs = self.logs();
            if logs.lines().any(|l| l.contains("Starting workers") && l.contains("\"externalsecret\"")) {
                tokio::time::sleep(Duration::from_secs(2)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("ESO not ready after 60 s; log {}:\n{}", self.log_file.display(), self.logs());
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        match reqwest::get(&url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub fn keep_log(&self, name: &str) {
        let dir = log_dir();
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::copy(&self.log_file, dir.join(format!("{name}.log")));
    }
}

impl Drop for Eso {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log_file);
    }
}

/// The sum of a metric's samples whose labels include all of `want`.
pub fn metric_sum(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' '])) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let labels = prometheus_labels(labels);
        if want.iter().all(|(k, v)| labels.get(*k).is_some_and(|x| x == v)) {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    found
}

/// Addresses other than loopback that a process's TCP and UDP sockets are connected to.
pub fn foreign_peers(pid: u32) -> BTreeSet<String> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| {
            t.to_string_lossy().strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')).map(str::to_owned)
        })
        .collect();
    let mut out = BTreeSet::new();
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else { continue };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(inode)) = (cols.get(2), cols.get(9)) else { continue };
            if !inodes.contains(*inode) {
                continue;
            }
            let Some((addr, port)) = remote.split_once(':') else { continue };
            let Some(ip) = proc_net_addr(addr) else { continue };
            let local = match ip {
                IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified(),
                IpAddr::V6(v6) => {
                    v6.is_loopback() || v6.is_unspecified() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
                }
            };
            if !local {
                out.insert(format!("{table} {ip}:{}", u16::from_str_radix(port, 16).unwrap_or(0)));
            }
        }
    }
    out
}

/// An address of `/proc/net/{tcp,udp}[6]`: the kernel prints each 32-bit word of it as a native-endian number.
fn proc_net_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok().map(u32::to_ne_bytes);
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Every second: the addresses other than loopback the process is connected to.
pub struct PeerWatch {
    pub seen: Arc<Mutex<BTreeSet<String>>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl PeerWatch {
    pub fn start(pid: u32) -> Self {
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let found = foreign_peers(pid);
                s.lock().unwrap().extend(found);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Self { seen, task }
    }

    pub fn stop(self) -> BTreeSet<String> {
        self.task.abort();
        self.seen.lock().unwrap().clone()
    }
}

pub fn es_ready(obj: &DynamicObject) -> bool {
    obj.data["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// The ExternalSecret every run creates: its data from the namespace's `Password` generator.
pub fn external_secret(name: &str) -> DynamicObject {
    let mut obj = DynamicObject::new(name, &external_secret_resource());
    obj.data = json!({
        "spec": {
            "refreshInterval": REFRESH_INTERVAL,
            "dataFrom": [{
                "sourceRef": {
                    "generatorRef": {
                        "apiVersion": "generators.external-secrets.io/v1alpha1",
                        "kind": "Password",
                        "name": GENERATOR,
                    }
                }
            }]
        }
    });
    obj
}

/// A namespace with the `Password` generator (a 44-character password, as long as our keys' secret part).
pub async fn eso_namespace(prefix: &str) -> TestNamespace {
    let ns = TestNamespace::new(prefix).await;
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &password_resource());
    let mut generator = DynamicObject::new(GENERATOR, &password_resource());
    generator.data = json!({"spec": {"length": 44, "digits": 10, "symbols": 0, "noUpper": false, "allowRepeat": true}});
    api.create(&PostParams::default(), &generator).await.expect("create the Password generator");
    ns
}

fn es_api(ns: &TestNamespace) -> Api<DynamicObject> {
    Api::namespaced_with(ns.client.clone(), &ns.name, &external_secret_resource())
}

/// Creates ExternalSecrets with no controller watching: API-server caches and etcd for the new kind. Not measured.
pub async fn warm_eso(plan: &Plan, keep: &mut Vec<TestNamespace>) {
    let ns = eso_namespace("bench-eso-warm").await;
    let (_, failed) =
        create_each(es_api(&ns), external_secret, &names(200), plan.create_concurrency, |_| async { Ok(()) }).await;
    assert_eq!(failed, 0, "warm-up creates of ExternalSecrets failed");
    keep.push(ns);
}

/// Our operator's reconciles in flight per kind, as the bench starts it: `WKO_MAX_CONCURRENT_RECONCILES` when the
/// environment (which the operator inherits) sets it, else its default.
pub fn ours_concurrency() -> usize {
    std::env::var("WKO_MAX_CONCURRENT_RECONCILES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(usize::from(DEFAULT_MAX_CONCURRENT_RECONCILES))
}

fn timeout_for(n: usize) -> Duration {
    Duration::from_secs(900.max(n as u64 / 4))
}

/// Creates `objects` with `creator` while `watch` looks for them Ready: first create to last Ready, and to the
/// creates' end (the client's last answer, kubectl's exit).
async fn create_and_wait<K>(
    plan: &Plan,
    creator: Creator,
    api: Api<K>,
    namespace: &str,
    objects: Vec<K>,
    mut watch: ReadyWatch,
) -> Timing
where
    K: kube::Resource
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let n = objects.len();
    let batch = Batch::new(creator, api, namespace, objects, plan.create_concurrency, plan.kubectl.as_ref());
    let t0 = Instant::now();
    let created = batch.create().await;
    watch.wait(t0 + timeout_for(n)).await;
    let mut timing = Timing::of(n, t0, &created.at, &watch.ready(), created.failed);
    timing.creates_done = created.done - t0;
    timing
}

/// A fresh ESO process at `--concurrent concurrency` on a fresh namespace takes `n` ExternalSecrets to Ready.
pub async fn eso_at(
    plan: &Plan,
    client: &Client,
    bin: &EsoBinary,
    n: usize,
    creator: Creator,
    concurrency: usize,
    keep: &mut Vec<TestNamespace>,
) -> EsoRun {
    eprintln!(
        "bench: peer: ESO {} --concurrent {concurrency}, {n} ExternalSecrets created by {}",
        bin.version,
        creator.name()
    );
    let ns = eso_namespace("bench-eso").await;
    let mut eso = Eso::start(bin, &ns.name, concurrency, &plan.eso_args);
    eso.wait_ready().await;
    let pid = eso.pid().expect("pid");
    let before = apiserver_requests_of(client, ESO_RESOURCES).await;
    let sampler = ProcSampler::start(Some(pid));
    let peers = PeerWatch::start(pid);
    let watch = ReadyWatch::start_with(es_api(&ns), n, es_ready).await;
    let objects: Vec<DynamicObject> = names(n).iter().map(|name| external_secret(name)).collect();
    let timing = create_and_wait(plan, creator, es_api(&ns), &ns.name, objects, watch).await;
    let sockets = sampler.stop().max_sockets;
    let requests = per_resource(&before, &apiserver_requests_of(client, ESO_RESOURCES).await, n);
    let hwm_kib = proc_status_kib(Some(pid), "VmHWM");
    let foreign = peers.stop();
    let metrics = eso.metrics().await;
    let ext = [("controller", "externalsecret")];
    let reported_concurrency =
        metric_sum(&metrics, "controller_runtime_max_concurrent_reconciles", &ext).map(|v| v as usize);
    let reconciles = metric_sum(&metrics, "controller_runtime_reconcile_total", &ext).unwrap_or(0.0) as u64;
    let reconcile_errors =
        metric_sum(&metrics, "controller_runtime_reconcile_errors_total", &ext).unwrap_or(0.0) as u64;
    eso.keep_log(&format!("eso-{n}-{}-concurrent-{concurrency}", creator.name()));
    drop(eso);
    // What ESO wrote: one Secret per ExternalSecret with the generated password.
    let secrets: Api<Secret> = ns.api();
    let lp = ListParams::default().labels("reconcile.external-secrets.io/managed=true");
    let secrets_written = secrets
        .list(&lp)
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|s| s.data.as_ref().and_then(|d| d.get("password")).is_some_and(|p| p.0.len() == 44))
                .count()
        })
        .unwrap_or(0);
    keep.push(ns);
    EsoRun {
        concurrency,
        run: PeerRun { timing, hwm_kib, sockets, requests },
        foreign,
        reported_concurrency,
        reconciles,
        reconcile_errors,
        secrets_written,
    }
}

/// Our operator at `n` when no other phase of this run measured it: the same as the throughput phase's operator run
/// (a fresh operator on a fresh namespace, after a warm-up of our kind), the resources created by `creator`.
pub async fn ours_at(
    plan: &Plan,
    client: &Client,
    n: usize,
    creator: Creator,
    warm: &mut bool,
    keep: &mut Vec<TestNamespace>,
) -> PeerRun {
    eprintln!("bench: peer: our operator, {n} WorkloadApiKeys created by {}", creator.name());
    let sim = start_sim(0).await;
    if !*warm {
        let ns = namespace_for("bench-peer-warm", &sim).await;
        run_plain(&ns, &sim, &names(n.min(200)), plan.create_concurrency, false).await;
        keep.push(ns);
        *warm = true;
    }
    let ns = namespace_for("bench-peer-ours", &sim).await;
    let template = template(&sim);
    let objects: Vec<WorkloadApiKey> = names(n)
        .into_iter()
        .map(|name| {
            let mut obj = template.clone();
            obj.metadata.name = Some(name);
            obj
        })
        .collect();
    let mut op = start_operator(&ns.name, NO_CLIENT_LIMIT);
    wait_operator_ready(&op).await;
    let before = apiserver_requests(client).await;
    let sampler = ProcSampler::start(op.pid());
    let watch = ReadyWatch::start(ns.api(), n).await;
    let timing = create_and_wait(plan, creator, ns.api(), &ns.name, objects, watch).await;
    let sockets = sampler.stop().max_sockets;
    let requests = per_resource(&before, &apiserver_requests(client).await, n);
    let hwm_kib = proc_status_kib(op.pid(), "VmHWM");
    keep_log(&op, &format!("peer-ours-{n}-{}", creator.name()));
    op.kill();
    keep.push(ns);
    PeerRun { timing, hwm_kib, sockets, requests }
}

/// Ours at `n` from the phases that already ran in this process, if one measured that size (created by the client).
fn ours_from(results: &Results, n: usize) -> Option<(PeerRun, String)> {
    if let Some(t) = results.throughput.as_ref().filter(|t| t.n == n)
        && let Some((i, r)) = t.median_operator_round()
    {
        let requests: ApiRequests =
            r.requests.iter().filter(|(_, v)| v[0] > 0.0).map(|(k, v)| (k.clone(), v[0])).collect();
        let run = PeerRun { timing: r.operator.clone(), hwm_kib: r.hwm_kib, sockets: r.sockets, requests };
        return Some((run, format!("throughput phase, round {} (median operator time)", i + 1)));
    }
    if let Some(m) = results.memory.as_ref().filter(|m| m.n == n) {
        let run = PeerRun {
            timing: m.timing.clone(),
            hwm_kib: m.hwm_create,
            sockets: m.sockets,
            requests: m.api_requests.clone(),
        };
        return Some((run, "memory phase (while creating)".into()));
    }
    None
}

/// The peer phase: at the throughput size and at the memory size, for each creator, ours and ESO at each
/// `--concurrent` setting.
pub async fn peer(plan: &Plan, client: &Client, results: &Results, keep: &mut Vec<TestNamespace>) -> Peer {
    let bin = plan.eso.clone().expect("the ESO binary is resolved before the phases run");
    install_eso_crds(client, &bin.crds).await;
    let installed = Instant::now();
    warm_eso(plan, keep).await;
    if let Some(kubectl) = &plan.kubectl {
        kubectl.warm().await;
    }
    // The controller manager's garbage collector looks for new kinds every 30 s; until it watches ExternalSecrets it
    // GETs the owner of every new Secret ESO writes (cluster-wide requests, counted here). Ours had that time too.
    tokio::time::sleep(Duration::from_secs(35).saturating_sub(installed.elapsed())).await;
    let mut sizes: Vec<usize> = vec![plan.n, plan.rss_n];
    sizes.dedup();
    let mut warm = false;
    let mut out = Vec::new();
    for n in sizes {
        for &creator in &plan.creators {
            let found = if creator == Creator::Client { ours_from(results, n) } else { None };
            let (ours, ours_from) = match found {
                Some(found) => found,
                None => {
                    (ours_at(plan, client, n, creator, &mut warm, keep).await, "peer phase (a run of its own)".into())
                }
            };
            let mut eso = Vec::new();
            for &concurrency in &plan.eso_concurrent {
                eso.push(eso_at(plan, client, &bin, n, creator, concurrency, keep).await);
            }
            out.push(PeerSize { n, creator, ours, ours_from, eso });
        }
    }
    let settings: Vec<String> = plan.eso_concurrent.iter().map(usize::to_string).collect();
    Peer {
        version: bin.version.clone(),
        command: format!(
            "external-secrets {}",
            eso_args("<namespace>", "<port>", &settings.join("|"), &plan.eso_args).join(" ")
        ),
        refresh_interval: REFRESH_INTERVAL,
        ours_concurrency: plan.ours_concurrency,
        sizes: out,
    }
}
