//! Faults with figures: etcd, the API server, the vendor and the leader fail under load, and nothing is lost.
//!
//! One control plane of this binary's own, the vendor simulator in this process, and the operator as the chart
//! runs it: two replicas on one Lease, with the chart's environment (rendered by `helm template`), as the chart's
//! ServiceAccount with the chart's RBAC. A process that exits is started again as the kubelet would (after 1 s,
//! then 10 s, 20 s, ...), and counted. The load: WorkloadApiKeys across three namespaces through two
//! ClusterKeyProviders (Deep Security and Vision One) and SecureWorkloadCredentials minted through a Cisco one.
//! Each fault starts with a batch of creates, requested rotations (Replace, short grace) and deletes, is injected
//! while that batch is under way, lasts its time, heals, and then the invariants are checked:
//! every resource Ready with exactly one current key at the simulator (plus retiring keys within their grace), no
//! vendor key of ours that no resource holds (orphans), every deleted resource's keys revoked, every Secret's data
//! matching its recorded hash and authenticating at the simulator, no secret value in logs, Events or statuses,
//! no crash loop, peak RSS within the chart's memory limit, the vendor budget kept; while a vendor fault lasts,
//! the resources that need the vendor say so (`VendorUnavailable`, `RateLimited`) within the vendor timeout and
//! resources whose keys still work stay Ready.
//!
//! `cargo test --test faults` (part of `make test`) runs the short form: faults 1 (etcd paused), 3 (vendor hangs)
//! and 5 (leader killed) at a small load. `make faults` (`WKO_FAULTS=full`) runs every fault at the load
//! and writes the table of docs/reliability.md from what it measured; `WKO_FAULTS=<name>,<name>` runs those
//! faults at the full load without recording (names: see [`Fault::name`]).
#![cfg(feature = "sim")]

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use support::{
    TestNamespace, disrupt,
    disrupt::Component,
    operator::{Operator, chart_service_account, install_crds},
    put_secret_in, repo_root,
    sim_env::{self, LOGIN_SECRET},
};
use workload_key_operator::{
    api::{ANNOTATION_ROTATE, SecureWorkloadCredential, WorkloadApiKey},
    clients::{
        RateLimiter, SecretString, TlsOptions,
        cisco::{CiscoClient, credentials::ApiCredentials},
        trend::{Auth, DeepSecurityClient, VisionOneClient},
    },
    controller::secret::data_hash,
    sim::{self, RunningSim, SimOptions, faults::FaultRule, partition::Partition},
};

/// The operator's default secret hash key (the chart sets none unless `secretHashKey.existingSecret`).
const HASH_KEY: &[u8] = b"workload-key-operator/secret-hash/v1";
const DS_PROVIDER: &str = "faults-deep-security";
const V1_PROVIDER: &str = "faults-vision-one";
const CISCO_PROVIDER: &str = "faults-cisco";
const V1_ADMIN: &str = "v1-admin";
/// Reasons a resource that needs an unavailable vendor may show.
const VENDOR_REASONS: [&str; 3] = ["VendorUnavailable", "RateLimited", "ProviderNotReady"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    EtcdPaused,
    EtcdKilled,
    ApiServerRestarted,
    ApiServerDown,
    VendorHang,
    VendorRefused,
    VendorErrors,
    VendorSlow,
    LeaderKilled,
    RestartVendorDown,
    WatchesClosed,
    WatchGone,
}

use Fault::*;

impl Fault {
    const ALL: [Fault; 12] = [
        EtcdPaused,
        EtcdKilled,
        ApiServerRestarted,
        ApiServerDown,
        VendorHang,
        VendorRefused,
        VendorErrors,
        VendorSlow,
        LeaderKilled,
        RestartVendorDown,
        WatchesClosed,
        WatchGone,
    ];
    /// The short form in `make test`: faults 1, 3 and 5.
    const SHORT: [Fault; 3] = [EtcdPaused, VendorHang, LeaderKilled];

    fn name(self) -> &'static str {
        match self {
            EtcdPaused => "etcd-paused",
            EtcdKilled => "etcd-killed",
            ApiServerRestarted => "apiserver-restarted",
            ApiServerDown => "apiserver-down",
            VendorHang => "vendor-hang",
            VendorRefused => "vendor-refused",
            VendorErrors => "vendor-errors",
            VendorSlow => "vendor-slow",
            LeaderKilled => "leader-killed",
            RestartVendorDown => "restart-vendor-down",
            WatchesClosed => "watches-closed",
            WatchGone => "watch-gone",
        }
    }

    /// What was done, for the table.
    fn what(self, d: Duration) -> String {
        let s = d.as_secs();
        match self {
            EtcdPaused => format!("1. etcd SIGSTOPped for {s} s"),
            EtcdKilled => format!("1. etcd SIGKILLed, started again after {s} s"),
            ApiServerRestarted => "2. kube-apiserver SIGKILLed and started again at once".into(),
            ApiServerDown => format!("2. kube-apiserver SIGKILLed, its port refusing for {s} s"),
            VendorHang => format!("3. vendors accept connections, never answer, for {s} s"),
            VendorRefused => format!("3. vendors refuse connections for {s} s"),
            VendorErrors => format!("4. 50 % of vendor requests 500 or 429 + Retry-After for {s} s"),
            VendorSlow => format!("4. every vendor answer 5 s late for {s} s"),
            LeaderKilled => "5. leader SIGKILLed during a batch of rotations".into(),
            RestartVendorDown => format!("6. both replicas restarted, everything Ready, vendors refusing for {s} s"),
            WatchesClosed => format!("7. kube-apiserver with --min-request-timeout=5 closing every watch for {s} s"),
            WatchGone => "7. etcd compacted while kube-apiserver is down: watches resume into 410 Gone".into(),
        }
    }

    fn is_vendor(self) -> bool {
        matches!(self, VendorHang | VendorRefused | VendorErrors | VendorSlow | RestartVendorDown)
    }
}

/// The load and how long each fault lasts.
#[derive(Debug, Clone)]
struct Size {
    waks: usize,
    swcs: usize,
    /// Per fault: WorkloadApiKeys created, deleted, and rotated (the `workloadkeys.io/rotate` annotation), and
    /// SecureWorkloadCredentials rotated.
    create: usize,
    delete: usize,
    rotate: usize,
    rotate_swc: usize,
    control_plane: Duration,
    partition: Duration,
    errors: Duration,
    slow: Duration,
    watches: Duration,
    restart: Duration,
}

impl Size {
    fn full() -> Self {
        Size {
            waks: 200,
            swcs: 20,
            create: 15,
            delete: 15,
            rotate: 30,
            rotate_swc: 4,
            control_plane: Duration::from_secs(60),
            partition: Duration::from_secs(120),
            errors: Duration::from_secs(300),
            slow: Duration::from_secs(120),
            watches: Duration::from_secs(60),
            restart: Duration::from_secs(60),
        }
    }

    fn short() -> Self {
        Size {
            waks: 24,
            swcs: 3,
            create: 3,
            delete: 3,
            rotate: 6,
            rotate_swc: 1,
            control_plane: Duration::from_secs(20),
            partition: Duration::from_secs(40),
            errors: Duration::from_secs(40),
            slow: Duration::from_secs(30),
            watches: Duration::from_secs(20),
            restart: Duration::from_secs(20),
        }
    }

    fn duration(&self, f: Fault) -> Duration {
        match f {
            EtcdPaused | EtcdKilled | ApiServerDown => self.control_plane,
            VendorHang | VendorRefused => self.partition,
            VendorErrors => self.errors,
            VendorSlow => self.slow,
            RestartVendorDown => self.restart,
            WatchesClosed => self.watches,
            ApiServerRestarted | LeaderKilled | WatchGone => Duration::ZERO,
        }
    }

    fn load(&self) -> String {
        format!(
            "{} WAK + {} SWC; {} created, {} rotated, {} deleted",
            self.waks,
            self.swcs,
            self.create,
            self.rotate + self.rotate_swc,
            self.delete
        )
    }
}

/// What `WKO_FAULTS` asks for.
struct Plan {
    faults: Vec<Fault>,
    size: Size,
    record: bool,
}

impl Plan {
    fn from_env() -> Self {
        match std::env::var("WKO_FAULTS").unwrap_or_default().as_str() {
            "" | "short" => Plan { faults: Fault::SHORT.to_vec(), size: Size::short(), record: false },
            "full" => Plan { faults: Fault::ALL.to_vec(), size: Size::full(), record: true },
            list => Plan {
                faults: list
                    .split(',')
                    .map(|n| {
                        *Fault::ALL.iter().find(|f| f.name() == n.trim()).unwrap_or_else(|| panic!("no fault {n:?}"))
                    })
                    .collect(),
                size: if std::env::var("WKO_FAULTS_SIZE").as_deref() == Ok("short") {
                    Size::short()
                } else {
                    Size::full()
                },
                record: false,
            },
        }
    }
}

/// One fault's figures: a row of docs/reliability.md.
#[derive(Debug, Clone)]
struct Row {
    fault: Fault,
    duration: Duration,
    heal_to_ready: Duration,
    requests_during: u64,
    requests_after: u64,
    keys_created: u64,
    keys_needed: usize,
    orphans: usize,
    restarts: u32,
    peak_rss_mib: f64,
    /// For vendor faults: how long after the fault began the first, and the last, resource needing the vendor
    /// said so, and how many of how many did.
    told: Option<(Duration, Duration, usize, usize)>,
    /// Resources Ready before the fault, with nothing asked of them, that were shown not Ready during it.
    flipped: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    DeepSecurity,
    VisionOne,
    Cisco,
}

/// One resource of the load.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Res {
    kind: Kind,
    ns: usize,
    name: String,
}

impl Res {
    fn is_wak(&self) -> bool {
        self.kind != Kind::Cisco
    }
}

/// A replica of the operator and what the suite saw of it.
struct Replica {
    op: Operator,
    identity: String,
    restarts: u32,
    /// When it may be started again after an exit (kubelet-style backoff), if it is down.
    down_since: Option<Instant>,
    peak_rss_kib: u64,
}

impl Replica {
    /// SIGKILL by the suite (the fault itself, not counted as a crash); started again like an exited one.
    fn kill(&mut self) {
        if let Some(pid) = self.op.pid()
            && let Some(hwm) = peak_rss_kib(pid)
        {
            self.peak_rss_kib = self.peak_rss_kib.max(hwm);
        }
        self.op.kill();
        self.down_since = Some(Instant::now());
    }
}

/// The cluster, the simulator, the load and the two replicas.
struct Bed {
    client: Client,
    sim: RunningSim,
    apps: Vec<TestNamespace>,
    replicas: Vec<Replica>,
    chart_env: Vec<(String, String)>,
    memory_limit_mib: u64,
    rate_limit: usize,
    vendor_timeout: Duration,
    lease_seconds: u64,
    size: Size,
    live: BTreeSet<Res>,
    /// Deleted resources' UIDs and kinds: none of their keys may stay live.
    deleted: Vec<(Kind, String)>,
    next: usize,
    /// Every secret value seen in a Secret so far (none may appear in logs, Events or statuses).
    secrets_seen: BTreeSet<String>,
    /// Restarts of the current fault (reset per fault).
    fault_restarts: u32,
    /// When a rotation was last requested of a resource.
    rotated_at: BTreeMap<Res, Instant>,
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl Bed {
    async fn start(size: Size) -> Self {
        let sa = chart_service_account();
        let client = support::client().await;
        install_crds(&client).await;
        let sim = sim::start(SimOptions::default()).await.expect("start vendor simulator");
        let system = sa.namespace.clone();
        sim_env::put_sim_secrets_in(&client, &system, &sim).await;
        put_secret_in(&client, &system, V1_ADMIN, &[("api-secret-key", sim.info.vision_one_admin_api_key().as_str())])
            .await;
        let mut apps = Vec::new();
        for i in 0..3 {
            apps.push(TestNamespace::new(&format!("faults{i}")).await);
        }
        let allowed = json!({"allowedNamespaces": {"selector": {"matchLabels": {"workloadkeys.io/test": "true"}}}});
        for (name, mut spec) in [
            (DS_PROVIDER, sim_env::trend_provider_spec(&sim, sim_env::ADMIN_SECRET)),
            (V1_PROVIDER, sim_env::account_provider_spec(&sim, "VisionOne", V1_ADMIN)),
            (CISCO_PROVIDER, sim_env::cisco_provider_spec(&sim, Some(LOGIN_SECRET))),
        ] {
            support::merge(&mut spec, &allowed);
            sim_env::apply_cluster_key_provider(&client, name, spec).await;
        }

        let (chart_env, memory_limit_mib) = chart_settings(&system);
        let get = |k: &str| chart_env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
        let rate_limit = get("WKO_VENDOR_RATE_LIMIT").parse().expect("the chart's rate limit");
        let vendor_timeout = Duration::from_secs(get("WKO_VENDOR_TIMEOUT_SECONDS").parse().expect("vendor timeout"));
        let lease_seconds = get("WKO_LEASE_DURATION_SECONDS").parse().expect("lease duration");
        let mut bed = Bed {
            client,
            sim,
            apps,
            replicas: Vec::new(),
            chart_env,
            memory_limit_mib,
            rate_limit,
            vendor_timeout,
            lease_seconds,
            size,
            live: BTreeSet::new(),
            deleted: Vec::new(),
            next: 0,
            secrets_seen: BTreeSet::new(),
            fault_restarts: 0,
            rotated_at: BTreeMap::new(),
        };
        for id in ["wko-a", "wko-b"] {
            let env = bed.env_for(id);
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let op = Operator::start_as(&sa.kubeconfig, None, &env);
            bed.replicas.push(Replica { op, identity: id.into(), restarts: 0, down_since: None, peak_rss_kib: 0 });
        }
        for name in [DS_PROVIDER, V1_PROVIDER, CISCO_PROVIDER] {
            let api: Api<workload_key_operator::api::ClusterKeyProvider> = Api::all(bed.client.clone());
            sim_env::wait_provider_ready(&api, name).await;
        }
        bed
    }

    /// The chart's environment for replica `id`, with what a pod would get from its downward API, a free metrics
    /// port of its own (the test runs both on one host), and debug logs (the leak checks read them).
    fn env_for(&self, id: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> =
            self.chart_env.iter().filter(|(k, _)| k != "WKO_METRICS_ADDR" && k != "WKO_LOG_LEVEL").cloned().collect();
        env.push(("POD_NAME".into(), id.into()));
        env.push(("WKO_LOG_LEVEL".into(), "debug".into()));
        env
    }

    fn wak_api(&self, ns: usize) -> Api<WorkloadApiKey> {
        self.apps[ns].api()
    }

    fn swc_api(&self, ns: usize) -> Api<SecureWorkloadCredential> {
        self.apps[ns].api()
    }

    fn spec(kind: Kind) -> Value {
        let provider = |name: &str| json!({"kind": "ClusterKeyProvider", "name": name});
        match kind {
            Kind::DeepSecurity => json!({
                "providerRef": provider(DS_PROVIDER), "role": {"name": "Auditor"}, "expiresAfter": "336h",
                "rotation": {"strategy": "Replace", "gracePeriod": "20s"}, "description": "fault suite"
            }),
            Kind::VisionOne => json!({
                "providerRef": provider(V1_PROVIDER), "role": {"name": "Auditor"}, "expiresAfter": "800h",
                "rotation": {"strategy": "Replace", "gracePeriod": "20s"}, "description": "fault suite"
            }),
            Kind::Cisco => json!({
                "providerRef": provider(CISCO_PROVIDER), "capabilities": ["flow_inventory_query"],
                "source": {"provision": {"description": "fault suite"}},
                "rotation": {"every": "720h", "gracePeriod": "20s"}
            }),
        }
    }

    async fn create(&mut self, kind: Kind) -> Res {
        self.next += 1;
        let ns = self.next % self.apps.len();
        let res = Res { kind, ns, name: format!("load-{:04}", self.next) };
        let pp = PatchParams::apply("fault-suite").force();
        let spec = Self::spec(kind);
        if res.is_wak() {
            let obj = sim_env::wak(&res.name, spec);
            self.wak_api(ns).patch(&res.name, &pp, &Patch::Apply(&obj)).await.expect("apply WorkloadApiKey");
        } else {
            let obj: SecureWorkloadCredential = serde_json::from_value(json!({
                "apiVersion": "workloadkeys.io/v1alpha1", "kind": "SecureWorkloadCredential",
                "metadata": {"name": res.name}, "spec": spec
            }))
            .unwrap();
            self.swc_api(ns).patch(&res.name, &pp, &Patch::Apply(&obj)).await.expect("apply SWC");
        }
        self.live.insert(res.clone());
        res
    }

    async fn get(&self, r: &Res) -> Option<Value> {
        let v = if r.is_wak() {
            serde_json::to_value(self.wak_api(r.ns).get_opt(&r.name).await.ok()??).ok()?
        } else {
            serde_json::to_value(self.swc_api(r.ns).get_opt(&r.name).await.ok()??).ok()?
        };
        Some(v)
    }

    /// Every resource of both kinds in the load's namespaces (`None` while the API server does not answer).
    async fn list_all(&self) -> Option<BTreeMap<Res, Value>> {
        let mut all = BTreeMap::new();
        for ns in 0..self.apps.len() {
            for w in self.wak_api(ns).list(&ListParams::default()).await.ok()?.items {
                let kind = match w.spec.provider_ref.name.as_str() {
                    V1_PROVIDER => Kind::VisionOne,
                    _ => Kind::DeepSecurity,
                };
                all.insert(Res { kind, ns, name: w.name_any() }, serde_json::to_value(&w).ok()?);
            }
            for s in self.swc_api(ns).list(&ListParams::default()).await.ok()?.items {
                all.insert(Res { kind: Kind::Cisco, ns, name: s.name_any() }, serde_json::to_value(&s).ok()?);
            }
        }
        Some(all)
    }

    async fn delete(&mut self, r: &Res) {
        let uid = self.get(r).await.and_then(|v| v["metadata"]["uid"].as_str().map(str::to_owned));
        let dp = DeleteParams::default();
        if r.is_wak() {
            self.wak_api(r.ns).delete(&r.name, &dp).await.expect("delete WorkloadApiKey");
        } else {
            self.swc_api(r.ns).delete(&r.name, &dp).await.expect("delete SWC");
        }
        self.live.remove(r);
        if let Some(uid) = uid {
            self.deleted.push((r.kind, uid));
        }
    }

    async fn rotate(&self, r: &Res, value: &str) {
        let patch = json!({"metadata": {"annotations": {ANNOTATION_ROTATE: value}}});
        let pp = PatchParams::default();
        if r.is_wak() {
            self.wak_api(r.ns).patch(&r.name, &pp, &Patch::Merge(&patch)).await.expect("annotate");
        } else {
            self.swc_api(r.ns).patch(&r.name, &pp, &Patch::Merge(&patch)).await.expect("annotate");
        }
    }

    /// Supervises the replicas as the kubelet would: an exited one is counted and started again after a backoff
    /// (1 s, then 10 s, 20 s, ...); and samples their peak RSS.
    fn tick(&mut self) {
        for i in 0..self.replicas.len() {
            let env = self.env_for(&self.replicas[i].identity);
            let r = &mut self.replicas[i];
            if let Some(pid) = r.op.pid() {
                if let Some(hwm) = peak_rss_kib(pid) {
                    r.peak_rss_kib = r.peak_rss_kib.max(hwm);
                }
                let exited = futures::executor::block_on(r.op.wait_exit(Duration::ZERO));
                if exited.is_some() || r.op.pid().is_none() {
                    r.restarts += 1;
                    self.fault_restarts += 1;
                    r.down_since = Some(Instant::now());
                    eprintln!("faults: replica {} exited ({exited:?}); restart {}", r.identity, r.restarts);
                }
            } else if let Some(since) = r.down_since {
                let backoff = match r.restarts {
                    0 | 1 => Duration::from_secs(1),
                    n => Duration::from_secs(10 << (n - 2).min(5)),
                };
                if since.elapsed() >= backoff {
                    // The same log file, appended to, as a pod's previous log stays readable.
                    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    r.op.restart_with_env(&env);
                    r.down_since = None;
                }
            }
        }
    }

    async fn sleep(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.tick();
            tokio::time::sleep(Duration::from_millis(500).min(until - Instant::now())).await;
        }
    }

    /// The replica holding the Lease, once one does.
    async fn leader(&mut self) -> usize {
        self.leader_other_than(None).await
    }

    /// The replica holding the Lease, once one other than `not` does.
    async fn leader_other_than(&mut self, not: Option<usize>) -> usize {
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), &chart_service_account().namespace);
        let name = self.chart_env.iter().find(|(k, _)| k == "WKO_LEASE_NAME").map(|(_, v)| v.clone()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            self.tick();
            let holder = leases.get_opt(&name).await.ok().flatten().and_then(|l| l.spec?.holder_identity);
            if let Some(i) = holder.and_then(|h| self.replicas.iter().position(|r| r.identity == h))
                && self.replicas[i].op.pid().is_some()
                && Some(i) != not
            {
                return i;
            }
            assert!(Instant::now() < deadline, "no replica leads after 120 s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the load has converged: every resource Ready for its generation (rotations asked for acted
    /// upon), every deleted one gone. Returns how long it took.
    async fn wait_converged(&mut self, rotations: &BTreeMap<Res, String>, timeout: Duration) -> Duration {
        let started = Instant::now();
        let mut last = String::new();
        loop {
            self.tick();
            if let Some(all) = self.list_all().await {
                let mut waiting = Vec::new();
                for r in &self.live {
                    match all.get(r) {
                        Some(v) if is_ready(v) && rotations.get(r).is_none_or(|want| rotated(v, want)) => {}
                        Some(v) => waiting.push(format!("{}/{} {}", r.ns, r.name, ready_reason(v))),
                        None => waiting.push(format!("{}/{} missing", r.ns, r.name)),
                    }
                }
                let extra: Vec<_> = all.keys().filter(|r| !self.live.contains(r)).collect();
                if waiting.is_empty() && extra.is_empty() {
                    return started.elapsed();
                }
                last = format!(
                    "{} not converged ({:?}...), {} deleted not gone",
                    waiting.len(),
                    &waiting[..waiting.len().min(5)],
                    extra.len()
                );
            }
            assert!(started.elapsed() < timeout, "not converged after {timeout:?}: {last}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Creates the initial load and waits until it is Ready.
    async fn fill(&mut self) {
        let kinds: Vec<Kind> = (0..self.size.waks)
            .map(|i| if i % 2 == 0 { Kind::DeepSecurity } else { Kind::VisionOne })
            .chain((0..self.size.swcs).map(|_| Kind::Cisco))
            .collect();
        for k in kinds {
            self.create(k).await;
        }
        let took = self.wait_converged(&BTreeMap::new(), Duration::from_secs(600)).await;
        eprintln!("faults: {} resources Ready in {}", self.live.len(), secs(took));
    }

    fn vendor_requests(&self) -> u64 {
        let c = &self.sim.counts;
        c.total("trend", "") + c.total("cisco", "")
    }

    fn keys_created(&self) -> u64 {
        let snap = self.sim.counts.snapshot();
        let ok = |vendor: &str, key: &str| {
            snap.get(vendor).and_then(|m| m.get(key)).map_or(0, |c| {
                c.by_status.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| *n).sum::<u64>()
            })
        };
        ok("trend", "POST /api/apikeys")
            + ok("trend", "POST /v3.0/iam/apiKeys")
            + ok("cisco", "POST /api/api_credentials.json")
    }

    /// Runs one fault under load and returns its row, after checking every invariant.
    async fn run(&mut self, fault: Fault) -> Row {
        let d = self.size.duration(fault);
        eprintln!("faults: --- {} ({})", fault.name(), fault.what(d));
        self.fault_restarts = 0;
        for r in &mut self.replicas {
            r.restarts = 0;
        }
        let before = self.list_all().await.expect("list the load");
        self.sim.counts.reset();

        // The batch: rotations, deletes and creates, all under way when the fault strikes.
        let stamp = format!("{}-{}", fault.name(), rand::random::<u32>());
        // The operator acts on one requested rotation a resource a minute: pick resources not rotated lately.
        // Counted from when the operator acted on the last request (a fault can delay that by minutes), not from
        // when it was asked: a rotation within a minute of the last one waits for its minute, and the heal time
        // would measure that wait.
        let now = k8s_openapi::jiff::Timestamp::now();
        let rested = |r: &Res| {
            let acted = before.get(r).and_then(|v| {
                let s = &v["status"];
                let at = |f: &str| s[f].as_str().and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
                at("rotateAnnotationAt").max(at("lastRotatedAt"))
            });
            self.rotated_at.get(r).is_none_or(|t| t.elapsed() > Duration::from_secs(70))
                && acted.is_none_or(|t| now.duration_since(t).as_secs() > 70)
        };
        let wak_pool: Vec<Res> = self.live.iter().filter(|r| r.is_wak() && rested(r)).cloned().collect();
        let swc_pool: Vec<Res> = self.live.iter().filter(|r| !r.is_wak() && rested(r)).cloned().collect();
        let mut picked =
            rand::seq::index::sample(&mut rand::rng(), wak_pool.len(), self.size.rotate + self.size.delete)
                .into_iter()
                .map(|i| wak_pool[i].clone());
        let mut rotations = BTreeMap::new();
        for _ in 0..self.size.rotate {
            rotations.insert(picked.next().unwrap(), stamp.clone());
        }
        for i in rand::seq::index::sample(&mut rand::rng(), swc_pool.len(), self.size.rotate_swc) {
            rotations.insert(swc_pool[i].clone(), stamp.clone());
        }
        let to_delete: Vec<Res> = picked.collect();
        if fault == RestartVendorDown {
            // Fault 6 needs everything Ready and untouched: no batch.
            rotations.clear();
        } else {
            for r in rotations.keys() {
                self.rotate(r, &stamp).await;
                self.rotated_at.insert(r.clone(), Instant::now());
            }
            for r in &to_delete {
                // Their UIDs join `deleted`: none of their keys may stay live.
                self.delete(r).await;
            }
            for i in 0..self.size.create {
                self.create(if i % 2 == 0 { Kind::DeepSecurity } else { Kind::VisionOne }).await;
            }
        }
        // Who needs the vendor during the fault, and who must stay Ready.
        let needy: BTreeSet<Res> =
            self.live.iter().filter(|r| !before.contains_key(*r) || rotations.contains_key(*r)).cloned().collect();
        let stable: BTreeSet<Res> =
            self.live.iter().filter(|r| !needy.contains(*r) && before.get(*r).is_some_and(is_ready)).cloned().collect();
        let keys_needed = needy.len();

        // The fault.
        let started = Instant::now();
        let mut observed = Observed::default();
        match fault {
            EtcdPaused => {
                disrupt::pause(Component::Etcd);
                self.sleep(d).await;
                disrupt::resume(Component::Etcd);
            }
            EtcdKilled => {
                disrupt::kill(Component::Etcd);
                self.sleep(d).await;
                disrupt::start(Component::Etcd, &[]);
            }
            ApiServerRestarted => {
                disrupt::kill(Component::ApiServer);
                disrupt::start(Component::ApiServer, &[]);
            }
            ApiServerDown => {
                disrupt::kill(Component::ApiServer);
                self.sleep(d).await;
                disrupt::start(Component::ApiServer, &[]);
            }
            WatchesClosed => {
                disrupt::kill(Component::ApiServer);
                disrupt::start(Component::ApiServer, &["--min-request-timeout=5"]);
                self.sleep(d).await;
                disrupt::kill(Component::ApiServer);
                disrupt::start(Component::ApiServer, &[]);
            }
            WatchGone => {
                let gone = |b: &Bed| {
                    let lines = |r: &Replica| {
                        let logs = r.op.logs();
                        logs.lines()
                            .filter(|l| l.contains("watch error") && (l.contains("410") || l.contains("too old")))
                            .count()
                    };
                    b.replicas.iter().map(lines).sum::<usize>()
                };
                let before_gone = gone(self);
                disrupt::kill(Component::ApiServer);
                let revision = disrupt::compact_etcd().await;
                eprintln!("faults: etcd compacted at revision {revision}");
                disrupt::start(Component::ApiServer, &[]);
                // The replicas' watches resumed into 410 Gone and listed again.
                let deadline = Instant::now() + Duration::from_secs(60);
                while gone(self) == before_gone {
                    assert!(Instant::now() < deadline, "no watch resumed into 410 Gone within 60 s");
                    self.sleep(Duration::from_secs(1)).await;
                }
                eprintln!("faults: {} watch errors 410 Gone in the replicas' logs", gone(self) - before_gone);
            }
            VendorHang | VendorRefused => {
                let p = if fault == VendorHang { Partition::Hang } else { Partition::Refuse };
                self.sim.partitions.trend.set(p);
                self.sim.partitions.cisco.set(p);
                self.observe(d, started, (&needy, &rotations), &stable, &mut observed).await;
                self.sim.partitions.trend.set(Partition::None);
                self.sim.partitions.cisco.set(Partition::None);
            }
            VendorErrors => {
                for vendor in ["trend", "cisco"] {
                    // 25 % 429 with Retry-After, a third of the rest 500: half of all requests fail.
                    self.sim
                        .faults
                        .add(rule(json!({"vendor": vendor, "status": 429, "retryAfter": 5, "probability": 0.25})))
                        .unwrap();
                    self.sim.faults.add(rule(json!({"vendor": vendor, "status": 500, "probability": 0.3333}))).unwrap();
                }
                self.observe(d, started, (&needy, &rotations), &stable, &mut observed).await;
                self.sim.faults.clear();
            }
            VendorSlow => {
                for vendor in ["trend", "cisco"] {
                    self.sim.faults.add(rule(json!({"vendor": vendor, "latencyMs": 5000}))).unwrap();
                }
                self.observe(d, started, (&needy, &rotations), &stable, &mut observed).await;
                self.sim.faults.clear();
            }
            LeaderKilled => {
                let leader = self.leader().await;
                // In the middle of the batch: some rotations done, others not.
                self.sleep(Duration::from_millis(1500)).await;
                eprintln!("faults: SIGKILL to the leader {}", self.replicas[leader].identity);
                self.replicas[leader].kill();
                // Kept down until the standby leads (as a pod replaced on another node would be): started again at
                // once under the same identity, it would simply resume its own unexpired claim.
                self.replicas[leader].down_since = None;
                let standby = self.leader_other_than(Some(leader)).await;
                self.replicas[leader].down_since = Some(Instant::now());
                eprintln!(
                    "faults: {} leads {} after the kill",
                    self.replicas[standby].identity,
                    secs(started.elapsed())
                );
                assert_ne!(standby, leader, "the standby took over");
                let bound = Duration::from_secs(self.lease_seconds + 5);
                assert!(
                    started.elapsed() <= bound,
                    "handover took {:?} (lease {} s)",
                    started.elapsed(),
                    self.lease_seconds
                );
            }
            RestartVendorDown => {
                self.sim.partitions.trend.set(Partition::Refuse);
                self.sim.partitions.cisco.set(Partition::Refuse);
                for r in &mut self.replicas {
                    r.kill();
                }
                self.observe(d, started, (&needy, &rotations), &stable, &mut observed).await;
                self.sim.partitions.trend.set(Partition::None);
                self.sim.partitions.cisco.set(Partition::None);
            }
        }
        let duration = started.elapsed();
        let requests_during = self.vendor_requests();
        let budget_during = self.most_in_a_minute();
        let created_during = self.keys_created();
        self.sim.counts.reset();

        // Heal: all Ready.
        let heal_to_ready = self.wait_converged(&rotations, Duration::from_secs(900)).await;
        eprintln!("faults: all Ready {} after the heal", secs(heal_to_ready));
        // Grace periods of the batch's rotations run out, deleted resources' keys go.
        let requests_after = self.vendor_requests();
        let budget_after = self.most_in_a_minute();
        let keys_created = created_during + self.keys_created();

        let orphans = self.check_invariants().await;
        let restarts = self.fault_restarts;
        let peak_rss_kib = self.replicas.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0);
        let peak_rss_mib = peak_rss_kib as f64 / 1024.0;
        let budget = self.rate_limit * 2;
        assert!(
            budget_during <= budget && budget_after <= budget,
            "vendor budget: {budget_during} / {budget_after} requests in one minute at one listener (budget {budget})"
        );
        assert!(peak_rss_mib <= self.memory_limit_mib as f64, "peak RSS {peak_rss_mib:.1} MiB over the chart's limit");
        for r in &self.replicas {
            assert!(r.restarts <= 1, "replica {} exited {} times: a crash loop", r.identity, r.restarts);
        }
        if fault.is_vendor() {
            assert!(
                observed.flipped.is_empty(),
                "resources whose keys still work were reported not Ready during the fault: {:?}",
                observed.flipped
            );
            if fault != RestartVendorDown && fault != VendorSlow {
                let (first, _, _, _) =
                    observed.told.unwrap_or_else(|| panic!("no resource said the vendor was unavailable"));
                let bound = self.vendor_timeout + Duration::from_secs(15);
                assert!(first <= bound, "the first condition came {first:?} after the fault began (bound {bound:?})");
                // Every resource waiting for the vendor says so while the fault lasts (found by this suite: those
                // queued behind reconciles held for the vendor's timeout and retries said nothing for minutes).
                assert!(
                    observed.untold.is_empty(),
                    "resources needing the vendor said nothing about it while the fault lasted: {:?}",
                    observed.untold
                );
                // Every request already sent to a host when it hung waits out its timeout, and so does every request
                // sent to it before the first of them fails: up to twice the timeout. Refused connections fail at once.
                if fault != VendorErrors {
                    let (_, last, _, _) = observed.told.unwrap();
                    let bound = if fault == VendorHang { bound + self.vendor_timeout } else { bound };
                    assert!(last <= bound, "the last condition came {last:?} after the fault began (bound {bound:?})");
                }
            }
        }
        let row = Row {
            fault,
            duration: if d.is_zero() { duration } else { d },
            heal_to_ready,
            requests_during,
            requests_after,
            keys_created,
            keys_needed,
            orphans,
            restarts,
            peak_rss_mib,
            told: observed.told,
            flipped: observed.flipped.len(),
        };
        eprintln!("faults: {row:?}");
        row
    }

    fn most_in_a_minute(&self) -> usize {
        self.sim.counts.max_in_window("trend", 60_000).max(self.sim.counts.max_in_window("cisco", 60_000))
    }

    /// While a vendor fault lasts: when each resource that needs the vendor first says why it waits, and any
    /// resource whose key still works shown not Ready.
    async fn observe(
        &mut self,
        d: Duration,
        started: Instant,
        (needy, rotations): (&BTreeSet<Res>, &BTreeMap<Res, String>),
        stable: &BTreeSet<Res>,
        seen: &mut Observed,
    ) {
        let mut told: BTreeMap<Res, Duration> = BTreeMap::new();
        // The needy ones whose work was done at the last sample (created and Ready, or rotated as asked).
        let mut done: BTreeSet<Res> = BTreeSet::new();
        let mut shown: BTreeMap<String, BTreeSet<Res>> = BTreeMap::new();
        while started.elapsed() < d {
            self.tick();
            if let Some(all) = self.list_all().await {
                done.clear();
                for (r, v) in &all {
                    let finished = match rotations.get(r) {
                        Some(stamp) => rotated(v, stamp),
                        None => is_ready(v),
                    };
                    if needy.contains(r) && finished {
                        done.insert(r.clone());
                    }
                    let reason = ready_reason(v);
                    if needy.contains(r) {
                        shown.entry(reason.clone()).or_default().insert(r.clone());
                    }
                    if needy.contains(r) && VENDOR_REASONS.contains(&reason.as_str()) {
                        told.entry(r.clone()).or_insert_with(|| started.elapsed());
                    }
                    if stable.contains(r) && !is_ready(v) && !seen.flipped.contains_key(r) {
                        seen.flipped.insert(r.clone(), reason);
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        seen.untold = needy.iter().filter(|r| !told.contains_key(*r) && !done.contains(*r)).cloned().collect();
        let shown: BTreeMap<&String, usize> = shown.iter().map(|(k, v)| (k, v.len())).collect();
        eprintln!("faults: Ready reasons shown by the resources needing the vendor: {shown:?}");
        if !told.is_empty() {
            let first = *told.values().min().unwrap();
            let last = *told.values().max().unwrap();
            seen.told = Some((first, last, told.len(), needy.len()));
            eprintln!(
                "faults: {} of {} resources needing the vendor said so, the first after {}, the last after {}",
                told.len(),
                needy.len(),
                secs(first),
                secs(last)
            );
        }
    }

    /// The invariants after a fault healed; returns the orphans found (asserted zero).
    async fn check_invariants(&mut self) -> usize {
        let all = self.list_all().await.expect("list");
        let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
        // Every live vendor key of ours, by owner UID.
        let mut by_owner: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for k in self.sim.deep_security.keys().into_iter().filter(|k| k.is_live(now)) {
            if let Some(uid) = owner(k.description.as_deref()) {
                by_owner.entry(uid).or_default().push(k.id.to_string());
            }
        }
        for k in self.sim.vision_one.keys().into_iter().filter(|k| k.is_live()) {
            if let Some(uid) = owner(k.description.as_deref()) {
                by_owner.entry(uid).or_default().push(k.id.clone());
            }
        }
        for k in self.sim.cisco.keys().into_iter().filter(|k| !k.revoked) {
            if let Some(uid) = owner(Some(&k.description)) {
                by_owner.entry(uid).or_default().push(k.id.clone());
            }
        }
        let mut held: BTreeSet<String> = BTreeSet::new();
        let mut checks = Vec::new();
        for (r, v) in &all {
            let uid = v["metadata"]["uid"].as_str().unwrap().to_owned();
            let status = &v["status"];
            let (current, retiring) = if r.is_wak() {
                (status["keyId"].as_str().map(str::to_owned), ids(&status["retiringKeys"], "keyId"))
            } else {
                (
                    status["credentialId"].as_str().map(str::to_owned),
                    ids(&status["retiringCredentials"], "credentialId"),
                )
            };
            let current = current.unwrap_or_else(|| panic!("{r:?} has no current key"));
            let live = by_owner.get(&uid).cloned().unwrap_or_default();
            assert!(
                live.contains(&current),
                "{r:?}: its current key {current} is not live at the simulator ({live:?})"
            );
            for id in &live {
                assert!(
                    *id == current || retiring.contains(id),
                    "{r:?}: live key {id} is neither current ({current}) nor retiring ({retiring:?})"
                );
            }
            held.insert(uid.clone());
            let secret_name = status["secretName"].as_str().map(str::to_owned).unwrap_or_else(|| r.name.clone());
            checks.push((r.clone(), uid, status["secretHash"].as_str().map(str::to_owned), secret_name));
        }
        // Orphans: live keys of ours that no resource holds; deleted resources' keys among them.
        let orphans: Vec<(&String, &Vec<String>)> = by_owner.iter().filter(|(uid, _)| !held.contains(*uid)).collect();
        let deleted_live: Vec<_> = self.deleted.iter().filter(|(_, uid)| by_owner.contains_key(uid)).collect();
        assert!(deleted_live.is_empty(), "keys of deleted resources still live: {deleted_live:?}");
        assert!(orphans.is_empty(), "orphaned vendor keys: {orphans:?}");

        // Every Secret matches its recorded hash and authenticates at the simulator.
        let tls = TlsOptions { ca_pem: Some(self.sim.ca_pem.clone()), insecure_skip_verify: false };
        let limiter = RateLimiter::per_minute(100_000);
        let results = futures::stream::iter(checks.into_iter().map(|(r, uid, hash, secret_name)| {
            let secrets: Api<Secret> = self.apps[r.ns].api();
            let tls = tls.clone();
            let limiter = limiter.clone();
            let sim = &self.sim;
            async move {
                let s = secrets.get(&secret_name).await.unwrap_or_else(|e| panic!("{r:?}: Secret {secret_name}: {e}"));
                let data: BTreeMap<String, ByteString> = s.data.unwrap_or_default();
                assert_eq!(
                    Some(data_hash(HASH_KEY, &uid, &data)),
                    hash,
                    "{r:?}: the Secret's data does not match its recorded hash"
                );
                let text = |k: &str| String::from_utf8(data.get(k).map(|b| b.0.clone()).unwrap_or_default()).unwrap();
                let (secret, works) = match r.kind {
                    Kind::DeepSecurity => {
                        let v = text("api-secret-key");
                        let c = DeepSecurityClient::with_default_limiter(
                            &sim.info.trend_url(),
                            Auth::ApiKey(SecretString::new(v.clone())),
                            &tls,
                        )
                        .unwrap();
                        (v, c.describe_current_api_key().await.is_ok())
                    }
                    Kind::VisionOne => {
                        let v = text("api-key");
                        let c = VisionOneClient::with_default_limiter(
                            &sim.info.vision_one_url(),
                            SecretString::new(v.clone()),
                            &tls,
                        )
                        .unwrap();
                        (v, c.check_connectivity().await.is_ok())
                    }
                    Kind::Cisco => {
                        let creds = ApiCredentials::from_credentials_json(&data["credentials.json"].0).unwrap();
                        let c = CiscoClient::new(&sim.info.cisco_url(), creds, &tls, limiter).unwrap();
                        let ok = c.get("/openapi/v1/flowsearch/dimensions", &[]).await.is_ok();
                        (text("api_secret"), ok)
                    }
                };
                assert!(works, "{r:?}: the key in its Secret does not authenticate at the simulator");
                secret
            }
        }))
        .buffer_unordered(8)
        .collect::<Vec<String>>()
        .await;
        self.secrets_seen.extend(results);
        self.assert_no_leaks().await;
        self.assert_one_leader_at_a_time();
        orphans.len()
    }

    /// From the replicas' logs: no two replicas ran their controllers at the same time. A leader's time runs from
    /// "leader: starting controllers" to "leader: controllers stopped", or to its last line when it was killed.
    fn assert_one_leader_at_a_time(&self) {
        use k8s_openapi::jiff::Timestamp;
        let ts =
            |line: &str| line.get(14..).and_then(|l| l.split('"').next()).and_then(|t| t.parse::<Timestamp>().ok());
        let mut terms: Vec<(String, Timestamp, Timestamp)> = Vec::new();
        for r in &self.replicas {
            let logs = r.op.logs();
            let mut open: Option<Timestamp> = None;
            let mut last: Option<&str> = None;
            for line in logs.lines().filter(|l| l.starts_with("{\"timestamp\":")) {
                if line.contains("\"waiting for leadership\"") {
                    // A new process: the previous one ended with its last line.
                    if let (Some(start), Some(end)) = (open.take(), last.and_then(ts)) {
                        terms.push((r.identity.clone(), start, end));
                    }
                } else if line.contains("\"leader: starting controllers\"") {
                    open = ts(line);
                } else if line.contains("\"leader: controllers stopped\"")
                    && let (Some(start), Some(end)) = (open.take(), ts(line))
                {
                    terms.push((r.identity.clone(), start, end));
                }
                last = Some(line);
            }
            if let Some(start) = open {
                let end = if r.op.pid().is_some() { Timestamp::MAX } else { last.and_then(ts).unwrap_or(start) };
                terms.push((r.identity.clone(), start, end));
            }
        }
        for (i, a) in terms.iter().enumerate() {
            for b in &terms[i + 1..] {
                let overlap = a.0 != b.0 && a.1 < b.2 && b.1 < a.2;
                assert!(
                    !overlap,
                    "two leaders at once: {} from {} to {}, {} from {} to {}",
                    a.0, a.1, a.2, b.0, b.1, b.2
                );
            }
        }
    }

    /// No secret value seen in any Secret, nor the admin credentials, in the replicas' logs, the Events of the
    /// load's and the operator's namespaces, or the resources' statuses.
    async fn assert_no_leaks(&self) {
        let mut haystacks: Vec<(String, String)> = Vec::new();
        for r in &self.replicas {
            haystacks.push((format!("log of {}", r.identity), r.op.logs()));
        }
        let mut namespaces: Vec<String> = self.apps.iter().map(|a| a.name.clone()).collect();
        namespaces.push(chart_service_account().namespace.clone());
        for ns in &namespaces {
            let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.client.clone(), ns);
            let list = events.list(&ListParams::default()).await.expect("list Events");
            haystacks.push((format!("Events of {ns}"), serde_json::to_string(&list.items).unwrap()));
        }
        haystacks.push((
            "statuses".into(),
            serde_json::to_string(&self.list_all().await.unwrap().values().collect::<Vec<_>>()).unwrap(),
        ));
        assert!(haystacks[0].1.contains("DEBUG"), "the operator logged at debug level");
        let mut secrets: Vec<String> = self.secrets_seen.iter().cloned().collect();
        secrets.push(self.sim.info.trend_admin_api_key());
        secrets.push(self.sim.info.vision_one_admin_api_key());
        secrets.push(self.sim.info.cisco["uiPassword"].as_str().unwrap_or_default().to_owned());
        // The logs of a long run are hundreds of MB: each is cut once into its distinct runs of the characters
        // secrets are made of, and a secret is looked for in the runs at least as long as itself.
        let secret_char = |c: char| c.is_ascii_alphanumeric() || "+/=._-".contains(c);
        for (what, text) in &haystacks {
            let runs: BTreeSet<&str> = text.split(|c: char| !secret_char(c)).filter(|t| t.len() >= 8).collect();
            for s in secrets.iter().filter(|s| s.len() >= 8) {
                let core = s.rsplit(':').next().unwrap();
                let found = runs.iter().any(|t| t.len() >= core.len() && t.contains(core));
                assert!(!found, "a secret value appears in the {what}");
            }
        }
    }
}

#[derive(Default)]
struct Observed {
    told: Option<(Duration, Duration, usize, usize)>,
    /// Resources needing the vendor that neither said why they waited nor were done when the fault ended.
    untold: Vec<Res>,
    flipped: BTreeMap<Res, String>,
}

fn rule(v: Value) -> FaultRule {
    serde_json::from_value(v).expect("fault rule")
}

fn ids(list: &Value, field: &str) -> Vec<String> {
    list.as_array().map(|a| a.iter().filter_map(|k| k[field].as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// The owner UID of a vendor key description ending in `[workloadkeys.io/owner=<uid>.<nonce>]`.
fn owner(description: Option<&str>) -> Option<String> {
    let (_, rest) = description?.rsplit_once("[workloadkeys.io/owner=")?;
    Some(rest.split('.').next()?.trim_end_matches(']').to_owned())
}

fn ready_condition(v: &Value) -> Option<&Value> {
    v["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")
}

fn is_ready(v: &Value) -> bool {
    ready_condition(v).is_some_and(|c| c["status"] == "True")
        && v["status"]["observedGeneration"] == v["metadata"]["generation"]
}

fn ready_reason(v: &Value) -> String {
    ready_condition(v).and_then(|c| c["reason"].as_str()).unwrap_or("none").to_owned()
}

/// The rotation asked for with `want` was acted upon and has finished (a rotation keeps the resource Ready while
/// its new key is made, so Ready alone does not tell).
fn rotated(v: &Value, want: &str) -> bool {
    let s = &v["status"];
    let at = |f: &str| s[f].as_str().and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    s["rotateAnnotation"].as_str() == Some(want)
        && matches!((at("lastRotatedAt"), at("rotateAnnotationAt")), (Some(done), Some(asked)) if done >= asked)
}

/// VmHWM of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The operator container's environment as the chart renders it with default values (those set by value), and
/// its memory limit in MiB.
fn chart_settings(namespace: &str) -> (Vec<(String, String)>, u64) {
    let out = std::process::Command::new(support::helm_bin())
        .args(["template", "wko"])
        .arg(repo_root().join("charts/workload-key-operator"))
        .args(["--namespace", namespace, "--show-only", "templates/deployment.yaml"])
        .output()
        .expect("run helm template");
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let d: Value = serde_norway::from_slice(&out.stdout).expect("the Deployment");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    let mut env: Vec<(String, String)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_str()?.to_owned())))
        .collect();
    // From the downward API in a pod: the Lease's namespace is the pod's.
    env.push(("WKO_LEASE_NAMESPACE".into(), namespace.into()));
    let limit = c["resources"]["limits"]["memory"].as_str().expect("a memory limit");
    let mib = limit.strip_suffix("Mi").and_then(|n| n.parse().ok()).expect("a limit in Mi");
    assert_eq!(d["spec"]["replicas"], 1, "the chart's default replicas");
    (env, mib)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_under_load_lose_nothing() {
    let plan = Plan::from_env();
    let started = Instant::now();
    let mut bed = Bed::start(plan.size.clone()).await;
    bed.fill().await;
    let mut rows = Vec::new();
    for f in &plan.faults {
        rows.push(bed.run(*f).await);
    }
    let total = started.elapsed();
    let table = table(&rows, &plan.size);
    eprintln!("{table}\nfault suite: {} faults in {}", rows.len(), secs(total));
    if plan.record {
        record(&table, &plan.size, total);
    }
}

fn table(rows: &[Row], size: &Size) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| fault | load | lasted | heal → all Ready | vendor requests during / after | keys created / needed | orphans | restarts | peak RSS | told within (how many) | Ready flips |"
    );
    let _ = writeln!(t, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in rows {
        let told = match r.told {
            Some((first, last, n, of)) => format!("{} ({n} of {of}; last {})", secs(first), secs(last)),
            None if r.fault.is_vendor() => "–".into(),
            None => "n/a".into(),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} / {} | {} / {} | {} | {} | {:.1} MiB | {} | {} |",
            r.fault.what(r.duration),
            size.load(),
            secs(r.duration),
            secs(r.heal_to_ready),
            r.requests_during,
            r.requests_after,
            r.keys_created,
            r.keys_needed,
            r.orphans,
            r.restarts,
            r.peak_rss_mib,
            told,
            r.flipped
        );
    }
    t
}

/// Replaces the table between the markers of docs/reliability.md.
fn record(table: &str, size: &Size, total: Duration) {
    let path = repo_root().join("docs/reliability.md");
    let doc = std::fs::read_to_string(&path).expect("docs/reliability.md");
    let (head, rest) = doc.split_once("<!-- faults:begin -->").expect("begin marker");
    let (_, tail) = rest.split_once("<!-- faults:end -->").expect("end marker");
    let when = k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC");
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(repo_root())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let body = format!(
        "<!-- faults:begin -->\nRecorded by `make faults` on {when} at commit {commit} ({} WorkloadApiKeys and {} \
         SecureWorkloadCredentials; the whole run took {:.1} min):\n\n{table}<!-- faults:end -->",
        size.waks,
        size.swcs,
        total.as_secs_f64() / 60.0
    );
    std::fs::write(&path, format!("{head}{body}{tail}")).expect("write docs/reliability.md");
}
