//! Runs the operator binary as its own process against the test control plane, watching one namespace (or, with
//! [`Operator::start_as`], every namespace and with a kubeconfig of the test's choosing, e.g. one that impersonates
//! the chart's ServiceAccount: [`impersonating_kubeconfig`], [`chart_service_account`]).
#![allow(dead_code)]

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{Patch, PatchParams},
};

use super::{control_plane, eventually, helm_bin, kubectl, repo_root};

/// Applies the operator's CRDs once per test binary and waits until they are served.
pub async fn install_crds(client: &kube::Client) {
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.get().is_some() {
        return;
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in workload_key_operator::api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(&name, &PatchParams::apply("wko-tests").force(), &Patch::Apply(&crd)).await.expect("apply CRD");
        eventually(Duration::from_secs(30), "CRD established", || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let crd = crds.get(&name).await.ok()?;
                crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
            }
        })
        .await;
    }
    let _ = DONE.set(());
}

/// A copy of the admin kubeconfig whose user impersonates `user` (kubeconfig `as:`, honoured by kube-rs). For a
/// ServiceAccount (`system:serviceaccount:<namespace>:<name>`) the contexts' namespace is the ServiceAccount's, as a
/// pod's is (the operator's default cluster-resource namespace).
pub fn impersonating_kubeconfig(dir: &Path, user: &str) -> PathBuf {
    let admin = std::fs::read_to_string(&control_plane().kubeconfig).unwrap();
    let mut kc: serde_norway::Value = serde_norway::from_str(&admin).unwrap();
    for u in kc["users"].as_sequence_mut().unwrap() {
        u["user"]["as"] = serde_norway::Value::String(user.to_owned());
    }
    if let Some((ns, _)) = user.strip_prefix("system:serviceaccount:").and_then(|r| r.split_once(':')) {
        for c in kc["contexts"].as_sequence_mut().unwrap() {
            c["context"]["namespace"] = serde_norway::Value::String(ns.to_owned());
        }
    }
    let path = dir.join(format!("{}.kubeconfig", user.replace(':', "_")));
    std::fs::write(&path, serde_norway::to_string(&kc).unwrap()).unwrap();
    path
}

/// The chart's ServiceAccount, with the chart's RBAC (default values: every namespace) applied to the control plane.
pub struct ChartServiceAccount {
    /// The release namespace: the ServiceAccount's, and the cluster-resource namespace.
    pub namespace: String,
    /// `system:serviceaccount:<namespace>:<name>`.
    pub user: String,
    /// A kubeconfig impersonating [`Self::user`], for [`Operator::start_as`].
    pub kubeconfig: PathBuf,
}

/// Renders the chart's ServiceAccount and RBAC (`helm template --show-only`), applies them with the admin
/// kubeconfig once per test binary, and waits until the API server authorizes the ServiceAccount.
pub fn chart_service_account() -> &'static ChartServiceAccount {
    static SA: OnceLock<ChartServiceAccount> = OnceLock::new();
    SA.get_or_init(install_chart_rbac)
}

fn install_chart_rbac() -> ChartServiceAccount {
    let cp = control_plane();
    let namespace = "workload-key-operator";
    let chart = repo_root().join("charts/workload-key-operator");
    let out = Command::new(helm_bin())
        .args(["template", "wko"])
        .arg(&chart)
        .args(["--namespace", namespace])
        .args(["--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"])
        .output()
        .expect("run helm template");
    let rendered = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "helm template failed:\n{rendered}{}", String::from_utf8_lossy(&out.stderr));
    let sa = serde_norway::Deserializer::from_str(&rendered)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .find(|d: &serde_json::Value| d["kind"] == "ServiceAccount")
        .and_then(|d| d["metadata"]["name"].as_str().map(str::to_owned))
        .expect("the chart renders a ServiceAccount");
    let manifest = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n---\n{rendered}");
    let mut apply = Command::new(kubectl())
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl apply");
    apply.stdin.take().unwrap().write_all(manifest.as_bytes()).unwrap();
    let out = apply.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubectl apply of the chart's RBAC failed:\n{said}");

    let user = format!("system:serviceaccount:{namespace}:{sa}");
    let can = |args: &[&str]| {
        let out = Command::new(kubectl())
            .arg("--kubeconfig")
            .arg(&cp.kubeconfig)
            .args(["auth", "can-i", "--as", &user])
            .args(args)
            .output()
            .expect("run kubectl auth can-i");
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !can(&["patch", "deployments.apps", "-n", "default"]) {
        assert!(std::time::Instant::now() < deadline, "{user} not authorized 30 s after applying the chart's RBAC");
        std::thread::sleep(Duration::from_millis(250));
    }
    // RBAC is in force: what the chart does not grant is refused.
    assert!(!can(&["create", "pods", "-n", "default"]), "{user} may create pods: is RBAC authorization on?");

    let dir = cp.dir.clone().unwrap_or_else(std::env::temp_dir);
    let kubeconfig = impersonating_kubeconfig(&dir, &user);
    ChartServiceAccount { namespace: namespace.to_owned(), user, kubeconfig }
}

/// The API server refused nothing the operator asked for (its log has no "is forbidden" line, and no Event was
/// refused).
pub fn assert_nothing_forbidden(op: &Operator) {
    let logs = op.logs();
    for line in logs.lines() {
        assert!(!line.contains("is forbidden"), "the chart's RBAC refused a request of the operator:\n{line}");
        assert!(!line.contains("could not publish event"), "an Event was refused:\n{line}");
    }
}

/// The operator binary: `$WKO_TEST_BIN_DIR/workload-key-operator` when set (a private copy, safe from other
/// checkouts rebuilding a shared `CARGO_TARGET_DIR` mid-run), else the one Cargo built for this test.
pub fn operator_bin() -> PathBuf {
    match std::env::var_os("WKO_TEST_BIN_DIR") {
        Some(dir) => PathBuf::from(dir).join("workload-key-operator"),
        None => PathBuf::from(env!("CARGO_BIN_EXE_workload-key-operator")),
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The operator as a child process. Killed (SIGKILL) when dropped.
pub struct Operator {
    child: Option<Child>,
    pub namespace: String,
    pub metrics_port: u16,
    pub log_file: PathBuf,
    extra_env: Vec<(String, String)>,
    /// A kubeconfig other than the control plane's admin one (e.g. one that impersonates a ServiceAccount).
    kubeconfig: Option<PathBuf>,
    /// Watch every namespace: no `WKO_WATCH_NAMESPACE`.
    all_namespaces: bool,
}

impl Operator {
    pub fn start(namespace: &str) -> Self {
        Self::start_with_env(namespace, &[])
    }

    pub fn start_with_env(namespace: &str, env: &[(&str, &str)]) -> Self {
        Self::launch(Some(namespace), None, env)
    }

    /// Runs with `kubeconfig`, watching `namespace` or, with `None`, every namespace.
    pub fn start_as(kubeconfig: &Path, namespace: Option<&str>, env: &[(&str, &str)]) -> Self {
        Self::launch(namespace, Some(kubeconfig), env)
    }

    fn launch(namespace: Option<&str>, kubeconfig: Option<&Path>, env: &[(&str, &str)]) -> Self {
        let label = namespace.unwrap_or("all-namespaces");
        let log_file = std::env::temp_dir().join(format!("wko-operator-{label}-{}.log", rand::random::<u32>()));
        let mut op = Operator {
            child: None,
            namespace: namespace.unwrap_or_default().to_owned(),
            metrics_port: free_port(),
            log_file,
            extra_env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            kubeconfig: kubeconfig.map(Path::to_owned),
            all_namespaces: namespace.is_none(),
        };
        op.spawn();
        op
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_file).unwrap();
        let mut cmd = Command::new(operator_bin());
        cmd.env("KUBECONFIG", self.kubeconfig.as_deref().unwrap_or(&control_plane().kubeconfig))
            .env("WKO_METRICS_ADDR", format!("127.0.0.1:{}", self.metrics_port))
            // Everything, at the most verbose level: the leak checks read these logs.
            .env("WKO_LOG_LEVEL", "trace")
            .env("WKO_VENDOR_RATE_LIMIT", "1200")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        if !self.all_namespaces {
            cmd.env("WKO_WATCH_NAMESPACE", &self.namespace);
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start operator"));
    }

    /// Process ID of the running operator (benchmarks read its peak RSS from `/proc/<pid>/status`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as Kubernetes stops a pod; waits up to 20 s for a clean exit and returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        for _ in 0..200 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// SIGKILL and restart (with no extra env) at random intervals of 0.3 to 2.8 s for `period`, as a chaos test
    /// does; returns how many times it was killed.
    pub async fn crash_repeatedly(&mut self, period: Duration) -> usize {
        let mut kills = 0;
        let started = std::time::Instant::now();
        while started.elapsed() < period {
            tokio::time::sleep(Duration::from_millis(300 + rand::random::<u64>() % 2_500)).await;
            self.kill();
            kills += 1;
            self.restart_with_env(&[]);
        }
        kills
    }

    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        self.kill();
        self.extra_env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.spawn();
    }

    /// Waits for the process to exit by itself (e.g. at a fail-point) and returns its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return status.code();
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    pub async fn metrics(&self) -> String {
        workload_key_operator::clients::install_crypto_provider();
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        for _ in 0..50 {
            if let Ok(r) = reqwest::get(&url).await
                && let Ok(t) = r.text().await
            {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no /metrics from the operator at {url}");
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        // Keep the log of a failed test for inspection; drop the others.
        if std::thread::panicking() {
            eprintln!("operator log kept at {}", self.log_file.display());
        } else {
            let _ = std::fs::remove_file(&self.log_file);
        }
    }
}
