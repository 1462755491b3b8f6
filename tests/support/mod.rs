//! Test support: one real control plane (etcd + kube-apiserver + kube-controller-manager) per test binary,
//! started through `scripts/dev-cluster`, and a fresh namespace per test.
//!
//! A test binary that needs nodes asks for them before anything else touches the cluster:
//! [`control_plane_with_nodes`] (kube-scheduler + kwok simulating [`SIMULATED_NODES`] nodes) or
//! [`control_plane_with_real_node`] (kube-scheduler + containerd + one kubelet); the helpers below then use that
//! cluster. Tests that do not ask get the plain control plane, as before.
//!
//! Set `WKO_TEST_KUBECONFIG` to reuse a running cluster (e.g. the one `scripts/dev-cluster up` printed)
//! instead of starting one. We use our own small harness rather than the `envtest` crate so that tests, the
//! demo and humans share one start-up path (`scripts/dev-cluster`), including the controller manager that
//! envtest does not run (garbage collection is part of what we test).
#![allow(dead_code)]

pub mod api_requests;
pub mod disrupt;
pub mod operator;
pub mod rollout;
#[cfg(feature = "sim")]
pub mod sim_env;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Config,
    api::{DeleteParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The running control plane of this test binary.
pub struct ControlPlane {
    pub kubeconfig: PathBuf,
    pub dir: Option<PathBuf>,
    pub nodes: Nodes,
}

/// What runs pods in a test cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nodes {
    /// The control plane only: pods are created but never scheduled.
    None,
    /// kube-scheduler and kwok simulating this many nodes (`kwok-node-0`, …): pods become Running and Ready.
    Simulated(u32),
    /// kube-scheduler, containerd and one kubelet (node `127.0.0.1`, host network only).
    Real,
}

/// How many simulated nodes [`control_plane_with_nodes`] starts.
pub const SIMULATED_NODES: u32 = 2;

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// Starts the control plane on first use (blocking, ~10-30 s); later calls return the same one.
/// It stops by itself when this test process exits (`dev-cluster --owner-pid`).
pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| start_control_plane(Nodes::None))
}

/// The control plane with [`SIMULATED_NODES`] kwok nodes. Call it before anything else uses the cluster.
pub fn control_plane_with_nodes() -> &'static ControlPlane {
    control_plane_with(Nodes::Simulated(SIMULATED_NODES))
}

/// The control plane with one real node (containerd + kubelet). Call it before anything else uses the cluster;
/// see [`real_node_unavailable`] for where it cannot run.
pub fn control_plane_with_real_node() -> &'static ControlPlane {
    node_packages();
    control_plane_with(Nodes::Real)
}

fn control_plane_with(nodes: Nodes) -> &'static ControlPlane {
    let cp = CONTROL_PLANE.get_or_init(|| start_control_plane(nodes));
    assert_eq!(cp.nodes, nodes, "this test binary's cluster was started without the nodes asked for now");
    cp
}

fn start_control_plane(nodes: Nodes) -> ControlPlane {
    if nodes == Nodes::None
        && let Ok(kc) = std::env::var("WKO_TEST_KUBECONFIG")
    {
        return ControlPlane { kubeconfig: PathBuf::from(kc), dir: None, nodes };
    }
    let dir = std::env::temp_dir().join(format!("wko-test-cluster-{}", std::process::id()));
    let kubeconfig = dev_cluster_up_with(&dir, Some(std::process::id()), nodes);
    ControlPlane { kubeconfig, dir: Some(dir), nodes }
}

/// Why a real node cannot run on this machine (the real-node tests skip then, saying so), or `None`.
/// containerd, runc and the kubelet need root and cgroups; the packages are installed by [`node_packages`], which
/// fails the test (saying what is missing and how to get it) rather than skipping it when they cannot be had.
pub fn real_node_unavailable() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
    });
    if uid.as_deref() != Some("0") {
        return Some("containerd and the kubelet need root".into());
    }
    if !Path::new("/sys/fs/cgroup").is_dir() {
        return Some("no /sys/fs/cgroup".into());
    }
    None
}

/// Debian's containerd, runc, umoci and the loopback CNI plugin, which the real node and `scripts/local-image` use:
/// installed once per test binary (`scripts/dev-cluster packages`) before any test of it uses them. Every caller
/// waits for that one install; a failure panics in each with what is missing and how to install it.
pub fn node_packages() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/dev-cluster"))
            .arg("packages")
            .output()
            .map_err(|e| format!("could not run scripts/dev-cluster packages: {e}"))?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()) }
    });
    if let Err(why) = result {
        panic!("the real-node packages (containerd, runc, umoci, CNI loopback) are missing:\n{why}");
    }
}

/// Runs `scripts/dev-cluster up` and returns the kubeconfig path from its last line.
pub fn dev_cluster_up(dir: &Path, owner_pid: Option<u32>) -> PathBuf {
    dev_cluster_up_with(dir, owner_pid, Nodes::None)
}

/// `scripts/dev-cluster up` with these nodes.
pub fn dev_cluster_up_with(dir: &Path, owner_pid: Option<u32>, nodes: Nodes) -> PathBuf {
    let mut cmd = Command::new(repo_root().join("scripts/dev-cluster"));
    cmd.arg("up").arg("--dir").arg(dir);
    if let Some(pid) = owner_pid {
        cmd.arg("--owner-pid").arg(pid.to_string());
    }
    match nodes {
        Nodes::None => {}
        Nodes::Simulated(n) => {
            cmd.arg("--nodes").arg(n.to_string());
        }
        Nodes::Real => {
            cmd.arg("--real-node");
        }
    }
    let out = cmd.output().expect("run scripts/dev-cluster");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "dev-cluster up failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().unwrap_or_default();
    PathBuf::from(last.strip_prefix("KUBECONFIG=").unwrap_or_else(|| panic!("unexpected last line {last:?}")))
}

pub fn dev_cluster_down(dir: &Path) {
    let status = Command::new(repo_root().join("scripts/dev-cluster"))
        .arg("down")
        .arg("--dir")
        .arg(dir)
        .status()
        .expect("run scripts/dev-cluster down");
    assert!(status.success());
}

/// A kube config for the admin identity, optionally impersonating `user` (e.g. a ServiceAccount).
pub async fn config_as(user: Option<&str>) -> Config {
    let cp = control_plane();
    let kc = Kubeconfig::read_from(&cp.kubeconfig).expect("read kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("kube config");
    if let Some(user) = user {
        config.auth_info.impersonate = Some(user.to_owned());
    }
    config
}

pub async fn client() -> Client {
    Client::try_from(config_as(None).await).expect("kube client")
}

/// Path to a `kubectl` matching the control plane (from scripts/k8s-binaries).
pub fn kubectl() -> PathBuf {
    let out = Command::new(repo_root().join("scripts/k8s-binaries")).output().expect("run scripts/k8s-binaries");
    assert!(out.status.success(), "k8s-binaries failed: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("kubectl")
}

/// Path to the `helm` that comes with `kubectl` (scripts/k8s-binaries).
pub fn helm_bin() -> PathBuf {
    kubectl().with_file_name("helm")
}

/// A namespace of its own for one test; deleted (without waiting) when dropped.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    pub async fn new(prefix: &str) -> Self {
        let client = client().await;
        let name = format!("{prefix}-{:08x}", rand::random::<u32>());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"workloadkeys.io/test": "true"}}
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
        Self { name, client }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let client = self.client.clone();
        let name = self.name.clone();
        // Best effort and non-blocking; the whole cluster goes away with the test process anyway.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = Api::<Namespace>::all(client).delete(&name, &DeleteParams::background()).await;
            });
        }
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates or replaces a Secret holding these string values (server-side apply, so a key left out is removed).
pub async fn put_secret(ns: &TestNamespace, name: &str, data: &[(&str, &str)]) {
    put_secret_in(&ns.client, &ns.name, name, data).await;
}

/// The same in namespace `ns`.
pub async fn put_secret_in(client: &Client, ns: &str, name: &str, data: &[(&str, &str)]) {
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), k8s_openapi::ByteString(v.as_bytes().to_vec())))
                .collect::<std::collections::BTreeMap<_, _>>(),
        ),
        ..Default::default()
    };
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
    api.patch(name, &kube::api::PatchParams::apply("test").force(), &kube::api::Patch::Apply(&secret))
        .await
        .expect("put Secret");
}

/// Deep-merges `patch` into `target`; a `null` in the patch removes that key.
pub fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Waits until the object's condition `type_` has `status` and `reason`, and returns the object.
pub async fn wait_condition<K>(
    api: &Api<K>,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
    timeout: Duration,
) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    eventually(timeout, &format!("{name} {type_}={status} reason={reason}"), || {
        let api = api.clone();
        async move {
            let obj = api.get(name).await.ok()?;
            let value = serde_json::to_value(&obj).ok()?;
            let found = value["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == type_ && c["status"] == status && c["reason"] == reason);
            found.then_some(obj)
        }
    })
    .await
}

/// No secret value in the operator's logs (at trace level), Events, the statuses of every resource of the
/// namespace, or metrics. For `<id>:<secret>` values only the part after the last `:` is looked for.
pub async fn assert_no_leaks(ns: &TestNamespace, op: &operator::Operator, secrets: &[String]) {
    use kube::api::ListParams;
    use workload_key_operator::api::{SecureWorkloadCredential, WorkloadApiKey};
    let logs = op.logs();
    let metrics = op.metrics().await;
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let events = serde_json::to_string(&events.list(&ListParams::default()).await.unwrap().items).unwrap();
    let core_events: Api<k8s_openapi::api::core::v1::Event> = ns.api();
    let core_events = serde_json::to_string(&core_events.list(&ListParams::default()).await.unwrap().items).unwrap();
    let waks: Api<WorkloadApiKey> = ns.api();
    let swcs: Api<SecureWorkloadCredential> = ns.api();
    let statuses = format!(
        "{}{}",
        serde_json::to_string(&waks.list(&ListParams::default()).await.unwrap().items).unwrap(),
        serde_json::to_string(&swcs.list(&ListParams::default()).await.unwrap().items).unwrap()
    );
    assert!(logs.contains("TRACE") || logs.contains("DEBUG"), "the operator ran at trace level");
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        let core = s.rsplit(':').next().unwrap();
        for (what, text) in [
            ("logs", &logs),
            ("metrics", &metrics),
            ("events", &events),
            ("events", &core_events),
            ("status", &statuses),
        ] {
            assert!(!text.contains(core), "a secret value appears in the operator's {what}");
        }
    }
}

/// The notes of the Events of `reason` in the namespace.
pub async fn event_notes(ns: &TestNamespace, reason: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let list = api.list(&kube::api::ListParams::default()).await.expect("list Events");
    list.items.into_iter().filter(|e| e.reason.as_deref() == Some(reason)).filter_map(|e| e.note).collect()
}

/// The first intent the operator recorded with its finalizer on a new resource (`workloadkeys.io/first-intent`:
/// an HMAC, a space, the intended status as JSON), while its status has never been written.
pub fn first_intent(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<serde_json::Value> {
    let value = meta.annotations.as_ref()?.get("workloadkeys.io/first-intent")?;
    serde_json::from_str(value.split_once(' ')?.1).ok()
}
