//! Faults of the test control plane for the fault suite: pause, kill and restart its etcd and kube-apiserver
//! (through `scripts/dev-cluster pid|kill|start`, same port and data directory), and compact etcd's history; and a
//! restart of the controller manager for tests that need its garbage collector to know the operator's kinds.
#![allow(dead_code)]

use std::{path::Path, process::Command};

use super::{control_plane, repo_root};

/// A component of the control plane, as `scripts/dev-cluster` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Etcd,
    ApiServer,
    ControllerManager,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
            Component::ControllerManager => "kube-controller-manager",
        }
    }
}

fn dir() -> &'static Path {
    control_plane().dir.as_deref().expect("the fault suite needs a control plane of its own (not WKO_TEST_KUBECONFIG)")
}

fn dev_cluster(args: &[&str]) -> String {
    let out = Command::new(repo_root().join("scripts/dev-cluster"))
        .args(args)
        .arg("--dir")
        .arg(dir())
        .output()
        .expect("run scripts/dev-cluster");
    assert!(
        out.status.success(),
        "scripts/dev-cluster {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn pid(c: Component) -> u32 {
    dev_cluster(&["pid", c.name()]).parse().expect("a pid")
}

fn signal(c: Component, sig: &str) {
    let status = Command::new("kill").args([sig, &pid(c).to_string()]).status().expect("run kill");
    assert!(status.success(), "kill {sig} {c:?}");
}

/// SIGSTOP: the process keeps its sockets, answers nothing.
pub fn pause(c: Component) {
    signal(c, "-STOP");
}

/// SIGCONT after [`pause`].
pub fn resume(c: Component) {
    signal(c, "-CONT");
}

/// SIGKILL, waiting until the process is gone (its port then refuses connections).
pub fn kill(c: Component) {
    dev_cluster(&["kill", c.name()]);
}

/// Starts a killed component again with its command line plus `extra` arguments, and waits until it is healthy.
pub fn start(c: Component, extra: &[&str]) {
    let mut args = vec!["start", c.name()];
    for a in extra {
        args.extend(["--arg", a]);
    }
    dev_cluster(&args);
}

/// What the garbage collector logs once it watches every kind the API server serves.
const GC_SYNCED: &str = "all resource monitors have synced";

/// Restarts the controller manager and waits until its garbage collector watches every kind served now (the
/// operator's included). Until it does, it looks up the owner of every Secret a new resource owns by a GET of that
/// resource, requests that are not the operator's; it finds kinds added after its start only on its next
/// discovery, up to 30 s later.
pub async fn restart_controller_manager() {
    let log = dir().join("kube-controller-manager.log");
    let synced = || std::fs::read_to_string(&log).unwrap_or_default().matches(GC_SYNCED).count();
    let before = synced();
    kill(Component::ControllerManager);
    start(Component::ControllerManager, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while synced() <= before {
        assert!(std::time::Instant::now() < deadline, "the garbage collector did not sync within 90 s: see {log:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Compacts etcd's history up to its current revision (through etcd's HTTP gateway), so that a watch resuming
/// from any older resource version is answered `410 Gone`. Returns the revision.
pub async fn compact_etcd() -> u64 {
    let port = std::fs::read_to_string(dir().join("etcd-port")).expect("etcd-port");
    let base = format!("http://127.0.0.1:{}", port.trim());
    workload_key_operator::clients::install_crypto_provider();
    let http = reqwest::Client::new();
    let head: serde_json::Value = http
        .post(format!("{base}/v3/kv/range"))
        .json(&serde_json::json!({"key": "AA==", "limit": 1}))
        .send()
        .await
        .expect("etcd range")
        .json()
        .await
        .expect("etcd range answer");
    let revision: u64 = head["header"]["revision"].as_str().and_then(|r| r.parse().ok()).expect("a revision");
    let out = http
        .post(format!("{base}/v3/kv/compaction"))
        .json(&serde_json::json!({"revision": revision.to_string(), "physical": true}))
        .send()
        .await
        .expect("etcd compaction");
    assert!(out.status().is_success(), "etcd compaction: {}", out.status());
    revision
}
