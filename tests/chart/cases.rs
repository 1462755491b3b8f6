//! The values cases the tests render, and helpers to read what `helm template` made of them.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::{Command, Output},
};

use serde_json::Value;

use crate::{chart_dir, helm_bin, parse_docs, run, text};

pub const RELEASE: &str = "wko";
pub const NAMESPACE: &str = "wko-system";
pub const FULLNAME: &str = "wko-workload-key-operator";
pub const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

pub struct Case {
    pub name: &'static str,
    pub args: &'static [&'static str],
}

pub const DEFAULT: Case = Case { name: "default", args: &[] };
pub const TWO_NAMESPACES: Case =
    Case { name: "two namespaces", args: &["--set", "watchNamespaces={apps,billing}", "--set", "logFormat=text"] };
pub const SERVICE_MONITOR: Case = Case {
    name: "service monitor",
    args: &["--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.labels.release=prometheus"],
};
pub const MONITORING: Case = Case {
    name: "alert rules and dashboard",
    args: &[
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "prometheusRule.labels.release=prometheus",
        "--set",
        "grafanaDashboard.enabled=true",
    ],
};
pub const NO_LEADER_ELECTION: Case =
    Case { name: "no leader election", args: &["--set", "leaderElection.enabled=false"] };
pub const BRING_YOUR_OWN: Case = Case {
    name: "no rbac, no crds, no service account",
    args: &[
        "--set",
        "rbac.create=false",
        "--set",
        "crds.install=false",
        "--set",
        "serviceAccount.create=false",
        "--set",
        "serviceAccount.name=platform-operator",
        "--set",
        "service.enabled=false",
        "--set",
        "podDisruptionBudget.enabled=false",
        "--set",
        "networkPolicy.enabled=false",
        "--set",
        "admissionPolicy.enabled=false",
    ],
};
pub const HARDENED: Case = Case {
    name: "digest, replicas, scheduling, extra env",
    args: &[
        "--set",
        "image.repository=registry.example.com/platform/workload-key-operator",
        "--set",
        "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "--set",
        "image.pullPolicy=Always",
        "--set",
        "replicaCount=3",
        "--set",
        "logLevel=debug",
        "--set",
        "clusterResourceNamespace=platform-keys",
        "--set",
        "leaderElection.leaseName=wko-leader",
        "--set",
        "leaderElection.leaseDurationSeconds=30",
        "--set",
        "secretHashKey.existingSecret=wko-hash-key",
        "--set",
        "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/wko",
        "--set",
        "podDisruptionBudget.minAvailable=2",
        "--set-json",
        r#"networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]"#,
        "--set-json",
        r#"nodeSelector={"kubernetes.io/os":"linux"}"#,
        "--set-json",
        r#"tolerations=[{"key":"dedicated","operator":"Equal","value":"platform","effect":"NoSchedule"}]"#,
        "--set-json",
        r#"affinity={"podAntiAffinity":{"preferredDuringSchedulingIgnoredDuringExecution":[{"weight":100,"podAffinityTerm":{"topologyKey":"kubernetes.io/hostname","labelSelector":{"matchLabels":{"app.kubernetes.io/name":"workload-key-operator"}}}}]}}"#,
        "--set-json",
        r#"extraEnv=[{"name":"WKO_VENDOR_TIMEOUT_SECONDS","value":"10"},{"name":"HTTPS_PROXY","value":"http://proxy:3128"}]"#,
        "--set-json",
        r#"resources={"requests":{"cpu":"100m","memory":"96Mi"},"limits":{"cpu":"1","memory":"256Mi"}}"#,
    ],
};

pub const HOST_NETWORK: Case = Case {
    name: "host network",
    args: &["--set", "hostNetwork=true", "--set", "metricsPort=18080", "--set", "metricsBindAddress=127.0.0.1"],
};

pub const VALID_CASES: &[&Case] = &[
    &DEFAULT,
    &TWO_NAMESPACES,
    &SERVICE_MONITOR,
    &MONITORING,
    &NO_LEADER_ELECTION,
    &BRING_YOUR_OWN,
    &HARDENED,
    &HOST_NETWORK,
];

pub fn template_output(args: &[&str]) -> Output {
    let chart = chart_dir();
    let mut full = vec!["template", RELEASE, chart.to_str().unwrap(), "--namespace", NAMESPACE];
    full.extend_from_slice(args);
    run(Command::new(helm_bin()).args(&full))
}

pub fn render(case: &Case) -> Vec<Value> {
    let out = template_output(case.args);
    assert!(out.status.success(), "helm template ({}) failed:\n{}", case.name, text(&out.stderr));
    assert!(out.stderr.is_empty(), "helm template ({}) warned:\n{}", case.name, text(&out.stderr));
    parse_docs(&text(&out.stdout))
}

pub fn render_yaml(case: &Case) -> String {
    let out = template_output(case.args);
    assert!(out.status.success(), "helm template ({}) failed:\n{}", case.name, text(&out.stderr));
    text(&out.stdout)
}

pub fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter().map(|d| d["kind"].as_str().unwrap().to_owned()).collect()
}

pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

pub fn all_of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

pub fn deployment(docs: &[Value]) -> &Value {
    find(docs, "Deployment", FULLNAME).expect("the Deployment")
}

pub fn container(docs: &[Value]) -> &Value {
    &deployment(docs)["spec"]["template"]["spec"]["containers"][0]
}

/// The container's env: name → `value` (a string) or `valueFrom` (an object).
pub fn env_of(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_owned();
            let v = if e.get("valueFrom").is_some() { e["valueFrom"].clone() } else { e["value"].clone() };
            (name, v)
        })
        .collect()
}

pub fn chart_app_version() -> String {
    let chart: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap()).unwrap();
    chart["appVersion"].as_str().unwrap().to_owned()
}
