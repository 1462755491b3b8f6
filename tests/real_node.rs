//! The operator's image and chart on one real node: `dev-cluster up --real-node` (kube-scheduler, containerd and a
//! kubelet, host network only), the image built without Docker by `scripts/local-image`, `helm install` of the chart.
//! The image must agree with the Dockerfile that published images are built from.
//! Skips (saying why) only where containerd cannot run (see `support::real_node_unavailable`); the packages both
//! tests need are installed once, before either uses them (`support::node_packages`).
//! The operator in the pod issues through ClusterKeyProviders pointing at the vendor simulator, which runs in this
//! test process on 127.0.0.1 (the pod shares the host's network namespace); the official SDKs use what it wrote.
#![cfg(feature = "sim")]

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{Pod, Secret},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use support::{TestNamespace, eventually, repo_root, rollout, sim_env};
use workload_key_operator::{
    api::{ClusterKeyProvider, SecureWorkloadCredential, WorkloadApiKey},
    sim::{self, RunningSim, SimOptions},
};

/// Runs `scripts/local-image` with these arguments; returns the image reference (its last line).
fn local_image(args: &[&str]) -> String {
    local_image_build(args).0
}

/// The same, and whether the image waited for a compile of the operator (a cold build cache): its own, or one by
/// the other test of this file building the same release binary at the same time (cargo then blocks on its lock).
fn local_image_build(args: &[&str]) -> (String, bool) {
    support::node_packages();
    let out =
        Command::new(repo_root().join("scripts/local-image")).args(args).output().expect("run scripts/local-image");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "local-image failed:\n{stdout}\n{stderr}");
    let compiled = stderr.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("Compiling workload-key-operator") || l.starts_with("Blocking waiting for file lock")
    });
    (stdout.lines().last().unwrap_or_default().to_owned(), compiled)
}

/// USER, ENTRYPOINT, CMD and EXPOSE of the Dockerfile's final stage.
fn dockerfile_final_stage() -> (String, Value, Value, Vec<String>) {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if cur.is_empty() && line.trim_start().starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => cur.push_str(part),
            None => {
                cur.push_str(line);
                if !cur.trim().is_empty() {
                    lines.push(cur.trim().to_owned());
                }
                cur.clear();
            }
        }
    }
    let start = lines.iter().rposition(|l| l.to_uppercase().starts_with("FROM ")).expect("a FROM");
    let (mut user, mut entrypoint, mut cmd, mut expose) = (String::new(), Value::Null, Value::Null, Vec::new());
    for l in &lines[start..] {
        let (word, rest) = l.split_once(' ').unwrap_or((l, ""));
        match word.to_uppercase().as_str() {
            "USER" => user = rest.trim().to_owned(),
            "ENTRYPOINT" => entrypoint = serde_json::from_str(rest).expect("ENTRYPOINT in exec form"),
            "CMD" => cmd = serde_json::from_str(rest).expect("CMD in exec form"),
            "EXPOSE" => {
                expose = rest
                    .split_whitespace()
                    .map(|p| if p.contains('/') { p.into() } else { format!("{p}/tcp") })
                    .collect()
            }
            _ => {}
        }
    }
    (user, entrypoint, cmd, expose)
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap())
}

#[test]
fn dockerfile_and_local_image_agree_on_user_entrypoint_and_port() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("image.tar");
    let reference = local_image(&["--no-import", "--out", out.to_str().unwrap()]);
    assert!(reference.starts_with("localhost/workload-key-operator:"), "{reference}");

    let layout = PathBuf::from(format!("{}.d", out.display()));
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(blob(&layout, index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let config: Value =
        serde_json::from_slice(&std::fs::read(blob(&layout, manifest["config"]["digest"].as_str().unwrap())).unwrap())
            .unwrap();
    let config = &config["config"];

    let (user, entrypoint, cmd, expose) = dockerfile_final_stage();
    assert_eq!(config["User"], user, "user");
    assert_eq!(config["Entrypoint"], entrypoint, "entrypoint");
    assert_eq!(config["Cmd"], cmd, "command");
    let ports: Vec<String> = config["ExposedPorts"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(ports, expose, "exposed ports");

    // The files: the binary where the entrypoint points, its loader, CA certificates, the user's passwd entry.
    let mut files = Vec::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let listing =
            Command::new("tar").arg("-tzf").arg(blob(&layout, layer["digest"].as_str().unwrap())).output().unwrap();
        files.extend(String::from_utf8_lossy(&listing.stdout).lines().map(|l| l.trim_start_matches("./").to_owned()));
    }
    let entry = entrypoint[0].as_str().unwrap().trim_start_matches('/');
    for want in [entry, "etc/ssl/certs/ca-certificates.crt", "etc/passwd", "tmp/"] {
        assert!(files.iter().any(|f| f == want), "{want} not in the image: {files:?}");
    }
    assert!(files.iter().any(|f| f.contains("ld-linux")), "the dynamic loader is in the image");
}

/// A Helm release of the chart on the real node; `uninstall` in the test, the whole cluster goes with the process.
struct Release {
    name: String,
    namespace: String,
    kubeconfig: PathBuf,
}

impl Release {
    fn helm(&self, args: &[&str]) -> String {
        let helm = support::kubectl().with_file_name("helm");
        let out = Command::new(helm)
            .args(args)
            .args(["--namespace", &self.namespace, "--kubeconfig", self.kubeconfig.to_str().unwrap()])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "helm {args:?} failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    }

    fn install(name: &str, namespace: &str, kubeconfig: &Path, values: &Value) -> Self {
        let release = Release { name: name.into(), namespace: namespace.into(), kubeconfig: kubeconfig.into() };
        let file = std::env::temp_dir().join(format!("wko-real-node-values-{}.json", std::process::id()));
        std::fs::write(&file, values.to_string()).unwrap();
        let chart = repo_root().join("charts/workload-key-operator");
        let out = release.helm(&["install", name, chart.to_str().unwrap(), "--values", file.to_str().unwrap()]);
        let _ = std::fs::remove_file(&file);
        assert!(out.contains("STATUS: deployed"), "{out}");
        release
    }

    fn deployment_name(&self) -> String {
        format!("{}-workload-key-operator", self.name)
    }

    async fn pods(&self, ns: &TestNamespace) -> Vec<Pod> {
        ns.api::<Pod>()
            .list(&ListParams::default().labels(&format!(
                "app.kubernetes.io/name=workload-key-operator,app.kubernetes.io/instance={}",
                self.name
            )))
            .await
            .unwrap()
            .items
    }

    /// The Deployment rolled out and exactly one pod, Running and Ready, other than `not`.
    async fn ready_pod(&self, ns: &TestNamespace, not: Option<&str>) -> Pod {
        rollout::wait_rollout::<Deployment>(&ns.client, &ns.name, &self.deployment_name(), Duration::from_secs(120))
            .await;
        eventually(Duration::from_secs(60), "one Ready operator pod", || async {
            let pods = self.pods(ns).await;
            let [pod] = &pods[..] else { return None };
            let ready =
                pod.status.as_ref()?.conditions.as_ref()?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && pod.metadata.name.as_deref() != not && pod.metadata.deletion_timestamp.is_none())
                .then(|| pod.clone())
        })
        .await
    }
}

/// The container's process on this machine (via the node's containerd): its /proc directory.
fn container_proc(cluster_dir: &Path, pod: &Pod) -> PathBuf {
    let id = pod.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0].container_id.clone().unwrap();
    let id = id.strip_prefix("containerd://").unwrap();
    let sock = cluster_dir.join("containerd/containerd.sock");
    let out = Command::new("ctr").arg("--address").arg(&sock).args(["-n", "k8s.io", "tasks", "ls"]).output().unwrap();
    let tasks = String::from_utf8_lossy(&out.stdout);
    let pid = tasks
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(id)).then(|| f.next().unwrap().to_owned())
        })
        .unwrap_or_else(|| panic!("container {id} not among the tasks:\n{tasks}"));
    PathBuf::from(format!("/proc/{pid}"))
}

/// A child process killed (and reaped) when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kubectl logs` of the operator pod `pod` (through the API server and the kubelet), when it answers.
fn pod_logs(kubeconfig: &Path, namespace: &str, pod: &str) -> Option<String> {
    let out = Command::new(support::kubectl())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["logs", "-n", namespace, pod])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && !text.trim().is_empty()).then_some(text)
}

/// Every non-empty line is a JSON object.
fn assert_json_lines(logs: &str) {
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(parsed.is_object(), "{line}");
    }
}

/// None of these values (for `<id>:<secret>`, the part after the last `:`) appears in `logs`.
fn assert_no_secret(logs: &str, values: &[(&str, String)]) {
    for (what, value) in values {
        let core = value.rsplit(':').next().unwrap();
        assert!(core.len() >= 8, "{what} is too short to look for");
        assert!(!logs.contains(core), "{what} appears in the operator's logs");
    }
}

const RESOURCE_WAIT: Duration = Duration::from_secs(90);

/// Waits until `name` is Ready=True; on timeout, panics with the operator pod's log tail (`logs`).
async fn wait_ready<K>(api: &Api<K>, name: &str, logs: impl Fn() -> String) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + RESOURCE_WAIT;
    let mut last = Value::Null;
    while tokio::time::Instant::now() < deadline {
        if let Ok(obj) = api.get(name).await {
            let v = serde_json::to_value(&obj).unwrap();
            let ready = v["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
            if ready.is_some_and(|c| c["status"] == "True") {
                return obj;
            }
            last = ready.cloned().unwrap_or(Value::Null);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let logs = logs();
    let tail: Vec<&str> = logs.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
    panic!(
        "{name} not Ready within {RESOURCE_WAIT:?} (last Ready condition {last}); operator log tail:\n{}",
        tail.join("\n")
    );
}

async fn secret_data(api: &Api<Secret>, name: &str) -> BTreeMap<String, String> {
    let secret = api.get(name).await.unwrap();
    secret.data.unwrap().into_iter().map(|(k, v)| (k, String::from_utf8(v.0).unwrap())).collect()
}

/// `examples/consumer.py`: the official SDKs (deep-security-api, tetpyclient), unchanged, with the two Secrets as
/// a pod sees them mounted (one file per key); the Trend endpoint's CA from `ca_pem`. Returns what it printed.
fn consumer(trend: &BTreeMap<String, String>, cisco: &BTreeMap<String, String>, ca_pem: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    for (sub, data) in [("trend", trend), ("cisco", cisco)] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        for (k, v) in data {
            std::fs::write(dir.path().join(sub).join(k), v).unwrap();
        }
    }
    std::fs::write(dir.path().join("ca.crt"), ca_pem).unwrap();
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("examples/consumer.py"))
        .arg("--trend-secret")
        .arg(dir.path().join("trend"))
        .arg("--cisco-secret")
        .arg(dir.path().join("cisco"))
        .arg("--trend-ca")
        .arg(dir.path().join("ca.crt"))
        .output()
        .expect("run .venv/bin/python (make venv)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "consumer failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

async fn lease_holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases.get_opt(name).await.ok().flatten()?.spec?.holder_identity
}

/// A ClusterKeyProvider for each vendor, allowing `app`, with their Secrets (admin key, CA) in `crns`, the
/// operator's cluster-resource namespace. Returns their names (Trend, Cisco).
async fn cluster_providers(crns: &TestNamespace, app: &TestNamespace, sim: &RunningSim) -> (String, String) {
    sim_env::put_sim_secrets_in(&crns.client, &crns.name, sim).await;
    let allowed = json!({"names": [app.name]});
    let (trend, cisco) = (format!("{}-trend", crns.name), format!("{}-cisco", crns.name));
    let mut trend_spec = sim_env::trend_provider_spec(sim, sim_env::ADMIN_SECRET);
    trend_spec["allowedNamespaces"] = allowed.clone();
    let mut cisco_spec = sim_env::cisco_provider_spec(sim, None);
    cisco_spec["allowedNamespaces"] = allowed;
    sim_env::apply_cluster_key_provider(&crns.client, &trend, trend_spec).await;
    sim_env::apply_cluster_key_provider(&crns.client, &cisco, cisco_spec).await;
    (trend, cisco)
}

fn wak_on(name: &str, provider: &str) -> WorkloadApiKey {
    sim_env::wak(
        name,
        json!({
            "providerRef": sim_env::cluster_provider_ref(provider),
            "role": {"name": "Auditor"},
            "expiresAfter": "336h",
            "description": "real node"
        }),
    )
}

/// A SecureWorkloadCredential `name` publishing the simulator's UI key pair (Secret `sw-ui-key`) through `provider`.
fn swc_on(name: &str, provider: &str) -> SecureWorkloadCredential {
    serde_json::from_value(json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "SecureWorkloadCredential",
        "metadata": {"name": name},
        "spec": {
            "providerRef": sim_env::cluster_provider_ref(provider),
            "source": {"existing": {"secretRef": {"name": "sw-ui-key"}}},
            "capabilities": ["sensor_management", "flow_inventory_query"]
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_chart_runs_on_a_real_node() {
    if let Some(why) = support::real_node_unavailable() {
        eprintln!("skipping operator_chart_runs_on_a_real_node: {why}");
        return;
    }
    let start = Instant::now();
    let cp = tokio::task::spawn_blocking(support::control_plane_with_real_node).await.unwrap();
    let cluster_dir = cp.dir.clone().expect("a cluster of this test's own");
    let kubeconfig = cp.kubeconfig.clone();
    let t_cluster = start.elapsed();
    let dir = cluster_dir.clone();
    let (image, compiled) =
        tokio::task::spawn_blocking(move || local_image_build(&["--dir", dir.to_str().unwrap()])).await.unwrap();
    let t_image = start.elapsed() - t_cluster;
    let (repository, tag) = image.rsplit_once(':').unwrap();
    let api_port = std::fs::read_to_string(cluster_dir.join("port")).unwrap().trim().to_owned();

    // The release namespace is the operator's cluster-resource namespace (the chart's default); it watches all
    // namespaces (the default) and elects a leader (the default: one replica, readiness follows the Lease).
    let ns = TestNamespace::new("real-node").await;
    let metrics_port = support::operator::free_port();
    let values = json!({
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "hostNetwork": true,
        "metricsPort": metrics_port,
        // In the host's network namespace: listen on loopback only (the probes target 127.0.0.1).
        "metricsBindAddress": "127.0.0.1",
        "logFormat": "json",
        "extraEnv": [
            // No kube-proxy: the API server's own address instead of the kubernetes Service's.
            {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
            {"name": "KUBERNETES_SERVICE_PORT", "value": api_port},
        ],
    });
    let release = Release::install("wko", &ns.name, &kubeconfig, &values);
    let pod = release.ready_pod(&ns, None).await;
    let t_ready = start.elapsed() - t_cluster - t_image;
    let t_setup = start.elapsed();
    eprintln!(
        "real node: cluster up {t_cluster:.1?}, image built and imported {t_image:.1?} ({}), helm install to pod \
         Ready {t_ready:.1?}; setup total {t_setup:.1?}",
        if compiled { "cold: cargo compiled the operator" } else { "warm: nothing to compile" }
    );
    if !compiled {
        assert!(t_setup < Duration::from_secs(120), "setup with a warm cache took {t_setup:.1?}");
    }
    let status = pod.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some("127.0.0.1"), "on the real node");
    let deployment: Deployment = ns.api().get(&release.deployment_name()).await.unwrap();
    assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(1), "the chart's default: one replica");
    let env = deployment.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap_or_default();
    let env_value = |name: &str| env.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
    assert_eq!(env_value("WKO_LEADER_ELECTION").as_deref(), Some("true"), "leader election on (the default)");
    assert_eq!(env_value("WKO_CLUSTER_RESOURCE_NAMESPACE").as_deref(), Some(ns.name.as_str()));
    assert_eq!(env_value("WKO_WATCH_NAMESPACE"), None, "all namespaces (the default)");
    let lease = env_value("WKO_LEASE_NAME").expect("a Lease name");
    let lease_duration = Duration::from_secs(env_value("WKO_LEASE_DURATION_SECONDS").unwrap().parse().unwrap());

    // The process itself: uid and gid 65532, root filesystem mounted read-only.
    let proc_dir = container_proc(&cluster_dir, &pod);
    let proc_status = std::fs::read_to_string(proc_dir.join("status")).unwrap();
    for key in ["Uid:", "Gid:"] {
        let line = proc_status.lines().find(|l| l.starts_with(key)).unwrap();
        assert!(line.split_whitespace().skip(1).all(|id| id == "65532"), "{line}");
    }
    let mountinfo = std::fs::read_to_string(proc_dir.join("mountinfo")).unwrap();
    let root = mountinfo.lines().find(|l| l.split_whitespace().nth(4) == Some("/")).expect("a root mount");
    let options = root.split_whitespace().nth(5).unwrap();
    assert!(options.split(',').any(|o| o == "ro"), "root filesystem mounted {options}: {root}");

    // Ready means leader: the pod holds the release's Lease.
    let pod_name = pod.metadata.name.clone().unwrap();
    let leases: Api<Lease> = ns.api();
    assert_eq!(lease_holder(&leases, &lease).await.as_deref(), Some(pod_name.as_str()), "the Ready pod leads");

    // Issuing through ClusterKeyProviders: their Secrets in the release namespace, the resources in an app
    // namespace; the simulator listens on 127.0.0.1 in this process, which the pod reaches through the host network.
    let sim = sim::start(SimOptions::default()).await.expect("start vendor simulator");
    let app = TestNamespace::new("real-node-app").await;
    let (trend, cisco) = cluster_providers(&ns, &app, &sim).await;
    let ckps: Api<ClusterKeyProvider> = Api::all(ns.client.clone());
    let current_logs = |pod: &str| {
        let (kubeconfig, ns, pod) = (kubeconfig.clone(), ns.name.clone(), pod.to_owned());
        move || pod_logs(&kubeconfig, &ns, &pod).unwrap_or_default()
    };
    wait_ready(&ckps, &trend, current_logs(&pod_name)).await;
    wait_ready(&ckps, &cisco, current_logs(&pod_name)).await;
    support::put_secret(
        &app,
        "sw-ui-key",
        &[("api_key", sim.info.cisco_api_key().as_str()), ("api_secret", sim.info.cisco_api_secret().as_str())],
    )
    .await;
    let (waks, swcs, secrets): (Api<WorkloadApiKey>, Api<SecureWorkloadCredential>, Api<Secret>) =
        (app.api(), app.api(), app.api());
    let pp = PatchParams::apply("real-node-test").force();
    waks.patch("reporting", &pp, &Patch::Apply(&wak_on("reporting", &trend))).await.unwrap();
    swcs.patch("flows", &pp, &Patch::Apply(&swc_on("flows", &cisco))).await.unwrap();
    wait_ready(&waks, "reporting", current_logs(&pod_name)).await;
    wait_ready(&swcs, "flows", current_logs(&pod_name)).await;
    eprintln!(
        "real node: ClusterKeyProviders, WorkloadApiKey and SecureWorkloadCredential Ready {:.1?} after start",
        start.elapsed()
    );

    // The Secrets work with the official SDKs.
    let trend_data = secret_data(&secrets, "reporting").await;
    let cisco_data = secret_data(&secrets, "flows").await;
    let issued = trend_data["api-secret-key"].clone();
    let ca_pem = sim.ca_pem.clone();
    let said = tokio::task::spawn_blocking(move || consumer(&trend_data, &cisco_data, &ca_pem)).await.unwrap();
    assert!(said.contains("consumer: OK"), "{said}");

    // Its logs (through the API server and the kubelet) are JSON lines and hold no secret value.
    let logs = eventually(Duration::from_secs(30), "operator logs", || {
        let logs = current_logs(&pod_name);
        async move { Some(logs()).filter(|l| !l.trim().is_empty()) }
    })
    .await;
    assert_json_lines(&logs);
    assert!(logs.contains("leader: starting controllers"), "{logs}");
    let secret_values = [
        ("the Trend admin key", sim.info.trend_admin_api_key()),
        ("the issued Trend secret", issued.clone()),
        ("the Cisco api_secret", sim.info.cisco_api_secret()),
    ];
    assert_no_secret(&logs, &secret_values);

    // Handover: the Deployment replaces a deleted pod, which takes the Lease the old one released on SIGTERM and
    // reconciles what was created meanwhile. The old pod's log is followed from before the delete to its end.
    let followed = tempfile::NamedTempFile::new().unwrap();
    let mut follow = Killed(
        Command::new(support::kubectl())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["logs", "-f", "-n", &ns.name, &pod_name])
            .stdout(followed.reopen().unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually(Duration::from_secs(30), "kubectl logs -f streaming", || async {
        (std::fs::metadata(followed.path()).ok()?.len() > 0).then_some(())
    })
    .await;
    let t_delete = Instant::now();
    ns.api::<Pod>().delete(&pod_name, &DeleteParams::default()).await.unwrap();
    // Created once the old pod has let go of the Lease: only the next leader can bring it to Ready.
    eventually(Duration::from_secs(30), "the old pod lets go of the Lease", || async {
        (lease_holder(&leases, &lease).await.as_deref() != Some(pod_name.as_str())).then_some(())
    })
    .await;
    let t_released = t_delete.elapsed();
    waks.patch("meanwhile", &pp, &Patch::Apply(&wak_on("meanwhile", &trend))).await.unwrap();
    let next = release.ready_pod(&ns, Some(&pod_name)).await;
    let t_next_ready = t_delete.elapsed();
    let next_name = next.metadata.name.clone().unwrap();
    assert_ne!(next_name, pod_name);
    assert_eq!(lease_holder(&leases, &lease).await.as_deref(), Some(next_name.as_str()), "the new pod leads");
    wait_ready(&waks, "meanwhile", current_logs(&next_name)).await;
    let t_handover = t_delete.elapsed();
    eprintln!(
        "real node: pod deleted -> Lease released {t_released:.1?}, -> next pod Ready (leader) {t_next_ready:.1?}, \
         -> a resource created meanwhile Ready {t_handover:.1?} (lease duration {lease_duration:?}, first start-up \
         {t_ready:.1?})"
    );
    assert!(
        t_handover < lease_duration + t_ready,
        "handover took {t_handover:.1?}: more than the lease duration plus a start-up ({t_ready:.1?})"
    );
    // `kubectl logs -f` ends with the old container; stop it anyway after a while and read what it got.
    let deadline = Instant::now() + Duration::from_secs(30);
    while follow.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(follow);
    let old_logs = std::fs::read_to_string(followed.path()).unwrap();
    assert_json_lines(&old_logs);
    assert!(old_logs.contains("lease released"), "the old pod released the Lease on SIGTERM:\n{old_logs}");
    assert_no_secret(&old_logs, &secret_values);

    // A standby. Two replicas of one Deployment cannot share one node's network namespace (the same metrics port),
    // so a second release of the chart in the same namespace, on the same Lease, on another port: Running but not
    // Ready while the first leads; when the first stops, it takes the Lease and reconciles.
    let mut standby_values = values.clone();
    let standby_port = support::operator::free_port();
    standby_values["metricsPort"] = json!(standby_port);
    standby_values["leaderElection"] = json!({"leaseName": lease});
    standby_values["crds"] = json!({"install": false});
    let standby = Release::install("wko-standby", &ns.name, &kubeconfig, &standby_values);
    let standby_pod = eventually(Duration::from_secs(60), "the standby waiting for leadership", || async {
        let pods = standby.pods(&ns).await;
        let [pod] = &pods[..] else { return None };
        let name = pod.metadata.name.clone()?;
        pod_logs(&kubeconfig, &ns.name, &name)?.contains("waiting for leadership").then_some(name)
    })
    .await;
    // Its /readyz (on the host's loopback) answers 503 while another replica holds the Lease, so the pod stays
    // not Ready through several readiness probes.
    let readyz = format!("http://127.0.0.1:{standby_port}/readyz");
    let code = eventually(Duration::from_secs(30), "the standby's /readyz answers", || async {
        reqwest::get(&readyz).await.ok().map(|r| r.status().as_u16())
    })
    .await;
    assert_eq!(code, 503, "a standby is not ready");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let pod = ns.api::<Pod>().get(&standby_pod).await.unwrap();
    let status = pod.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let ready = status.conditions.unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True");
    assert!(!ready, "a standby is not Ready");
    assert_eq!(lease_holder(&leases, &lease).await.as_deref(), Some(next_name.as_str()), "the first release leads");
    let t_stop = Instant::now();
    Command::new(support::kubectl())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["scale", "-n", &ns.name, "deployment", &release.deployment_name(), "--replicas=0"])
        .status()
        .unwrap();
    eventually(Duration::from_secs(30), "the leader lets go of the Lease", || async {
        (lease_holder(&leases, &lease).await.as_deref() != Some(next_name.as_str())).then_some(())
    })
    .await;
    waks.patch("standby", &pp, &Patch::Apply(&wak_on("standby", &trend))).await.unwrap();
    let took_over = standby.ready_pod(&ns, None).await;
    assert_eq!(took_over.metadata.name.as_deref(), Some(standby_pod.as_str()), "the standby itself, not a new pod");
    assert_eq!(lease_holder(&leases, &lease).await.as_deref(), Some(standby_pod.as_str()), "the standby leads");
    wait_ready(&waks, "standby", current_logs(&standby_pod)).await;
    let t_takeover = t_stop.elapsed();
    eprintln!("real node: leader scaled to 0 -> standby Ready and a resource created meanwhile Ready {t_takeover:.1?}");
    assert!(t_takeover < lease_duration, "a standby takes over within the lease duration: {t_takeover:.1?}");
    let standby_logs = pod_logs(&kubeconfig, &ns.name, &standby_pod).unwrap();
    assert_json_lines(&standby_logs);
    assert_no_secret(&standby_logs, &secret_values);

    // helm uninstall: no pod left, the CRDs kept (helm.sh/resource-policy: keep).
    for r in [&standby, &release] {
        r.helm(&["uninstall", &r.name, "--wait", "--timeout", "90s"]);
        eventually(Duration::from_secs(60), "no operator pod left", || async {
            r.pods(&ns).await.is_empty().then_some(())
        })
        .await;
    }
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
    for crd in ["workloadapikeys.workloadkeys.io", "secureworkloadcredentials.workloadkeys.io"] {
        assert!(crds.get_opt(crd).await.unwrap().is_some(), "CRD {crd} kept after uninstall");
    }
}
