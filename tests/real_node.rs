//! The operator's image and chart on one real node: `dev-cluster up --real-node` (kube-scheduler, containerd and a
//! kubelet, host network only), the image built without Docker by `scripts/local-image`, `helm install` of the chart.
//! The image must agree with the Dockerfile that published images are built from.
//! Skips (saying why) only where containerd cannot run (see `support::real_node_unavailable`).

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Pod},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{DeleteParams, ListParams},
};
use serde_json::{Value, json};
use support::{TestNamespace, eventually, repo_root, rollout};

/// Runs `scripts/local-image` with these arguments; returns the image reference (its last line).
fn local_image(args: &[&str]) -> String {
    let out =
        Command::new(repo_root().join("scripts/local-image")).args(args).output().expect("run scripts/local-image");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "local-image failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().last().unwrap_or_default().to_owned()
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
            .list(&ListParams::default().labels("app.kubernetes.io/name=workload-key-operator"))
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

#[tokio::test]
async fn operator_chart_runs_on_a_real_node() {
    if let Some(why) = support::real_node_unavailable() {
        eprintln!("skipping operator_chart_runs_on_a_real_node: {why}");
        return;
    }
    let start = Instant::now();
    let cp = tokio::task::spawn_blocking(support::control_plane_with_real_node).await.unwrap();
    let cluster_dir = cp.dir.clone().expect("a cluster of this test's own");
    let t_cluster = start.elapsed();
    let dir = cluster_dir.clone();
    let image = tokio::task::spawn_blocking(move || local_image(&["--dir", dir.to_str().unwrap()])).await.unwrap();
    let t_image = start.elapsed() - t_cluster;
    let (repository, tag) = image.rsplit_once(':').unwrap();
    let api_port = std::fs::read_to_string(cluster_dir.join("port")).unwrap().trim().to_owned();

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
    let release = Release::install("wko", &ns.name, &cp.kubeconfig, &values);
    let pod = release.ready_pod(&ns, None).await;
    let t_ready = start.elapsed() - t_cluster - t_image;
    eprintln!(
        "real node: cluster up {t_cluster:.1?}, image built and imported {t_image:.1?}, helm install to pod Ready \
         {t_ready:.1?}; total {:.1?}",
        start.elapsed()
    );
    let status = pod.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some("127.0.0.1"), "on the real node");

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

    // Its logs (through the API server and the kubelet) are JSON lines.
    let pod_name = pod.metadata.name.clone().unwrap();
    let logs = eventually(Duration::from_secs(30), "operator logs", || async {
        let out = Command::new(support::kubectl())
            .arg("--kubeconfig")
            .arg(&cp.kubeconfig)
            .args(["logs", "-n", &ns.name, &pod_name])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && !text.trim().is_empty()).then_some(text)
    })
    .await;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(parsed.is_object(), "{line}");
    }

    // Here, once the provider resources exist: create them in `ns` and wait for Ready through this pod.

    // The Deployment replaces a deleted pod.
    ns.api::<Pod>().delete(&pod_name, &DeleteParams::default()).await.unwrap();
    let next = release.ready_pod(&ns, Some(&pod_name)).await;
    assert_ne!(next.metadata.name, pod.metadata.name);

    // helm uninstall: no pod left, the CRDs kept (helm.sh/resource-policy: keep).
    release.helm(&["uninstall", &release.name, "--wait", "--timeout", "90s"]);
    eventually(Duration::from_secs(60), "no operator pod left", || async {
        release.pods(&ns).await.is_empty().then_some(())
    })
    .await;
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
    for crd in ["workloadapikeys.workloadkeys.io", "secureworkloadcredentials.workloadkeys.io"] {
        assert!(crds.get_opt(crd).await.unwrap().is_some(), "CRD {crd} kept after uninstall");
    }
}
