//! `make demo` end to end: `scripts/demo up` (what `make demo` runs once the control-plane binaries and the venv
//! are there) in a state directory of its own, with the binaries this test run built, then `scripts/demo down`.
//! The demo must bring the providers (the ClusterKeyProviders, one per Trend API and Cisco, their admin Secrets in
//! the operator's cluster-resource namespace) and every sample resource (a WorkloadApiKey per Trend API) to Ready,
//! run the consumer (each generated Secret used as its vendor documents: deep-security-api, pytmv1, the Cloud One
//! API over HTTPS, tetpyclient) successfully, show a request outside the provider's policy refused with
//! `PolicyViolation` at no vendor call, print no secret value, and leave no process or state behind.
#![cfg(feature = "sim")]

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use support::repo_root;

/// The app team's namespace and the operator's cluster-resource namespace, as scripts/demo names them by default.
const APP_NS: &str = "demo";
const OPERATOR_NS: &str = "workload-key-operator";

/// Runs `scripts/demo down` when dropped, so that a failed assertion leaves nothing running.
struct Demo {
    dir: PathBuf,
}

impl Demo {
    fn run(&self, action: &str) -> Output {
        // A private copy of the binaries when WKO_TEST_BIN_DIR is set (see support::operator::operator_bin).
        let built = Path::new(env!("CARGO_BIN_EXE_workload-key-operator")).parent().unwrap().to_owned();
        let bin_dir = std::env::var_os("WKO_TEST_BIN_DIR").map(PathBuf::from).unwrap_or(built);
        Command::new(repo_root().join("scripts/demo"))
            .arg(action)
            .env("DEMO_DIR", &self.dir)
            .env("DEMO_BIN_DIR", &bin_dir)
            .output()
            .expect("run scripts/demo")
    }

    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![];
        for file in [self.dir.join("pids"), self.dir.join("cluster/pids")] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            pids.extend(text.lines().filter_map(|l| l.split_whitespace().next()?.parse::<u32>().ok()));
        }
        pids
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(support::kubectl())
            .args(["--kubeconfig", self.dir.join("cluster/kubeconfig").to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    }

    /// Names of the Secrets in a namespace.
    fn secret_names(&self, namespace: &str) -> Vec<String> {
        let out = self.kubectl(&["-n", namespace, "get", "secrets", "-o", "jsonpath={.items[*].metadata.name}"]);
        assert!(out.status.success(), "kubectl get secrets: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect()
    }

    /// Values of every Secret in the app namespace and the operator's cluster-resource namespace (the seeded
    /// vendor credentials and the generated ones).
    fn secret_values(&self) -> Vec<String> {
        let mut values = vec![];
        for namespace in [APP_NS, OPERATOR_NS] {
            values.extend(self.secret_values_in(namespace));
        }
        values
    }

    fn secret_values_in(&self, namespace: &str) -> Vec<String> {
        let out = self.kubectl(&["-n", namespace, "get", "secrets", "-o", "json"]);
        assert!(out.status.success(), "kubectl get secrets: {}", String::from_utf8_lossy(&out.stderr));
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut values = vec![];
        for item in list["items"].as_array().unwrap() {
            for (key, v) in item["data"].as_object().into_iter().flatten() {
                use base64::Engine;
                let raw = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
                let text = String::from_utf8_lossy(&raw).into_owned();
                // Identifiers, URLs and the public CA are not secret.
                if !["endpoint", "api-key-id", "ca.crt", "userName", "api_key"].contains(&key.as_str()) {
                    values.push(text);
                }
            }
        }
        values
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.dir.exists() {
            let _ = self.run("down");
        }
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn make_demo_ends_with_providers_and_resources_ready_the_consumer_succeeding_and_one_request_refused_then_demo_down_stops_everything()
 {
    let parent = tempfile::Builder::new().prefix("wko-demo-test-").tempdir().unwrap();
    let demo = Demo { dir: parent.path().join("demo") };

    let started = std::time::Instant::now();
    let up = demo.run("up");
    let output = text(&up);
    assert!(up.status.success(), "scripts/demo up failed:\n{output}");
    eprintln!("scripts/demo up took {:?}", started.elapsed());

    for resource in [
        "clusterkeyprovider.workloadkeys.io/platform-trend condition met",
        "clusterkeyprovider.workloadkeys.io/platform-vision-one condition met",
        "clusterkeyprovider.workloadkeys.io/platform-cloud-one condition met",
        "clusterkeyprovider.workloadkeys.io/platform-cisco condition met",
        "keyprovider.workloadkeys.io/team-trend-login condition met",
        "workloadapikey.workloadkeys.io/reporting-auditor condition met",
        "workloadapikey.workloadkeys.io/alert-dashboard condition met",
        "workloadapikey.workloadkeys.io/inventory-reader condition met",
        "workloadapikey.workloadkeys.io/platform-admin condition met",
        "secureworkloadcredential.workloadkeys.io/flow-reporting condition met",
    ] {
        assert!(output.contains(resource), "missing {resource:?} in:\n{output}");
    }
    // The consumer used each key: Deep Security through its SDK, Vision One through pytmv1 (the connectivity check
    // answers only to a valid key), Cloud One over HTTPS (the key describes itself, with the locale and time zone
    // of examples/workloadapikey-cloud-one.yaml), Cisco through tetpyclient.
    for line in [
        "trend deep-security: GET /api/apikeys/current -> key ",
        "trend vision-one: pytmv1 check_connectivity() (GET /v3.0/healthcheck/connectivity) -> available, with key ",
        "-> 200, alias 'inventory-reader', role read-only, locale en, time zone Asia/Tokyo",
        "cisco: GET /openapi/v1/sensors -> 200",
        "consumer: OK (every key authenticated with the operator's Secrets: Trend Deep Security, Trend Vision One, \
         Trend Cloud One, Cisco Secure Workload)",
    ] {
        assert!(output.contains(line), "missing {line:?} in:\n{output}");
    }
    let cloud_one =
        output.lines().find(|l| l.starts_with("trend cloud-one: GET ")).unwrap_or_else(|| panic!("{output}"));
    assert!(cloud_one.contains("/apikeys/") && cloud_one.contains("(the key describing itself)"), "{cloud_one}");
    // `kubectl get ckp`: every provider Ready, each used by one resource of the demo.
    for (name, vendor) in [
        ("platform-trend", "Trend"),
        ("platform-vision-one", "Trend"),
        ("platform-cloud-one", "Trend"),
        ("platform-cisco", "Cisco"),
    ] {
        let row = output.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{output}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cols[1..3], ["True", vendor], "kubectl get ckp row: {row}");
        assert_eq!(cols[4], "1", "IN USE: {row}");
    }
    assert!(output.contains(&format!("WKO_CLUSTER_RESOURCE_NAMESPACE={OPERATOR_NS}")), "{output}");
    // The request outside the policy: refused, with the reason and the provider's explanation, at no vendor call.
    assert!(output.contains("workloadapikey.workloadkeys.io/reporting-admin condition met"), "{output}");
    assert!(
        output.contains(
            r#"Ready=False PolicyViolation: ClusterKeyProvider/platform-trend refuses this request: role "Full Access" is not allowed; allowed roles: "Auditor""#
        ),
        "{output}"
    );
    assert!(output.contains("the refusal cost no vendor call"), "{output}");
    // The same request refused at admission by the chart's policy, with the same message.
    assert!(
        output.contains(
            r#"denied request: ClusterKeyProvider/platform-trend refuses this request: role "Full Access" is not allowed; allowed roles: "Auditor""#
        ),
        "{output}"
    );
    assert!(
        output.contains("done: providers and resources Ready, consumer OK, the request outside the policy refused"),
        "{output}"
    );
    assert!(output.contains("make demo-down"), "tells how to stop: {output}");
    assert!(output.contains("<redacted, "), "shows the Secrets' keys: {output}");

    // The platform team's admin keys are in the operator's namespace only; the refused resource got no Secret.
    let (app, operator) = (demo.secret_names(APP_NS), demo.secret_names(OPERATOR_NS));
    for admin in ["tm-admin", "tm-vision-one-admin", "tm-cloud-one-admin"] {
        assert!(operator.contains(&admin.to_owned()), "{admin} in {operator:?}");
        assert!(!app.contains(&admin.to_owned()), "the app namespace holds no cluster admin key: {app:?}");
    }
    assert!(operator.contains(&"vendor-ca".to_owned()), "{operator:?}");
    for secret in ["reporting-auditor", "alert-dashboard", "inventory-reader", "platform-admin", "flow-reporting"] {
        assert!(app.contains(&secret.to_owned()), "Secret {secret} in {app:?}");
    }
    assert!(!app.contains(&"reporting-admin".to_owned()), "nothing issued for the refused request: {app:?}");

    let secrets = demo.secret_values();
    assert!(secrets.len() >= 11, "seeded and generated secret values: {}", secrets.len());
    for value in secrets.iter().filter(|v| v.len() >= 8) {
        let core = value.rsplit(':').next().unwrap();
        assert!(!output.contains(core), "a secret value appears in the demo's output");
        let log = std::fs::read_to_string(demo.dir.join("operator.log")).unwrap();
        assert!(!log.contains(core), "a secret value appears in the operator's log");
    }
    assert!(!demo.dir.join("secret-files").exists() && !demo.dir.join("mnt").exists(), "no secret left in files");

    let pids = demo.pids();
    assert!(pids.len() >= 5, "operator, vendor-sim, etcd, kube-apiserver, kube-controller-manager: {pids:?}");
    // A process that died on its own (here the operator, as after a crash) must not stop `down` half-way.
    let operator = std::fs::read_to_string(demo.dir.join("pids")).unwrap();
    let operator = operator.lines().find(|l| l.ends_with(" operator")).unwrap().split(' ').next().unwrap().to_owned();
    assert!(Command::new("kill").args(["-KILL", &operator]).status().unwrap().success());
    let down = demo.run("down");
    assert!(down.status.success(), "scripts/demo down failed:\n{}", text(&down));
    assert!(!demo.dir.exists(), "demo down removes its state directory");
    for pid in pids {
        let alive = Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(!alive, "process {pid} still runs after demo down");
    }
}

#[test]
fn shellcheck_finds_nothing_in_the_demo_script() {
    let shellcheck = repo_root().join(".venv/bin/shellcheck");
    assert!(shellcheck.exists(), "{} is missing: run `make venv`", shellcheck.display());
    let out = Command::new(shellcheck).arg(repo_root().join("scripts/demo")).output().unwrap();
    assert!(out.status.success(), "shellcheck scripts/demo:\n{}", text(&out));
}
