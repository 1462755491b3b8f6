//! The Helm chart: `helm lint` and `helm template` for default and non-default values, policy checks (checkov on the
//! rendered chart and the Dockerfile, hadolint), RBAC without wildcards and exactly the rules the operator needs,
//! the chart's CRD copy, and `helm install` into the real control plane, after which the operator binary, run out of
//! cluster as the chart's ServiceAccount (kubeconfig `as:`), brings one resource of each kind to Ready: the chart's
//! RBAC is sufficient, cluster-wide and for one namespace.
#![cfg(feature = "sim")]

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use k8s_openapi::{
    api::{
        authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
        coordination::v1::Lease,
        core::v1::Secret,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{TestNamespace, assert_no_leaks, eventually, operator::Operator, put_secret, repo_root};
use workload_key_operator::{
    api::{SecureWorkloadCredential, WorkloadApiKey},
    sim::{self, RunningSim, SimOptions},
};

const WAIT: Duration = Duration::from_secs(90);

/// checkov findings that do not apply to this chart, each with the reason (also in the chart's README.md).
const CHECKOV_SKIPS: &[(&str, &str)] = &[
    ("CKV_K8S_38", "the operator is a Kubernetes API client: it needs its ServiceAccount token"),
    ("CKV_K8S_43", "no image digest exists before a release is built; set image.digest to pin one"),
    ("CKV_K8S_15", "versioned tags are immutable; Always makes every restart depend on the registry"),
    ("CKV_K8S_35", "only with secretHashKey.existingSecret: the operator reads that key from an env var only"),
];

fn chart_dir() -> PathBuf {
    repo_root().join("charts/workload-key-operator")
}

fn helm_bin() -> PathBuf {
    support::kubectl().with_file_name("helm")
}

fn venv_tool(name: &str) -> PathBuf {
    let path = repo_root().join(".venv/bin").join(name);
    assert!(path.exists(), "{} is missing: run `make venv` (tests/conformance/requirements.txt)", path.display());
    path
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"))
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// `helm <args>`, which must succeed; returns stdout.
fn helm(args: &[&str]) -> String {
    let out = run(Command::new(helm_bin()).args(args));
    assert!(out.status.success(), "helm {args:?} failed:\n{}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// Every YAML document of a stream, as JSON values (empty documents dropped).
fn parse_docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| {
            use serde::Deserialize;
            Value::deserialize(d).expect("valid YAML")
        })
        .filter(|v| !v.is_null())
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Values cases

const RELEASE: &str = "wko";
const NAMESPACE: &str = "wko-system";
const FULLNAME: &str = "wko-workload-key-operator";
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Case {
    name: &'static str,
    args: &'static [&'static str],
}

const DEFAULT: Case = Case { name: "default", args: &[] };
const ONE_NAMESPACE: Case =
    Case { name: "one namespace", args: &["--set", "watchNamespaces={apps}", "--set", "logFormat=text"] };
const SERVICE_MONITOR: Case = Case {
    name: "service monitor",
    args: &["--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.labels.release=prometheus"],
};
const NO_LEADER_ELECTION: Case = Case { name: "no leader election", args: &["--set", "leaderElection.enabled=false"] };
const BRING_YOUR_OWN: Case = Case {
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
    ],
};
const HARDENED: Case = Case {
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

const HOST_NETWORK: Case = Case {
    name: "host network",
    args: &["--set", "hostNetwork=true", "--set", "metricsPort=18080", "--set", "metricsBindAddress=127.0.0.1"],
};

const VALID_CASES: &[&Case] =
    &[&DEFAULT, &ONE_NAMESPACE, &SERVICE_MONITOR, &NO_LEADER_ELECTION, &BRING_YOUR_OWN, &HARDENED, &HOST_NETWORK];

fn template_output(args: &[&str]) -> Output {
    let chart = chart_dir();
    let mut full = vec!["template", RELEASE, chart.to_str().unwrap(), "--namespace", NAMESPACE];
    full.extend_from_slice(args);
    run(Command::new(helm_bin()).args(&full))
}

fn render(case: &Case) -> Vec<Value> {
    let out = template_output(case.args);
    assert!(out.status.success(), "helm template ({}) failed:\n{}", case.name, text(&out.stderr));
    assert!(out.stderr.is_empty(), "helm template ({}) warned:\n{}", case.name, text(&out.stderr));
    parse_docs(&text(&out.stdout))
}

fn render_yaml(case: &Case) -> String {
    let out = template_output(case.args);
    assert!(out.status.success(), "helm template ({}) failed:\n{}", case.name, text(&out.stderr));
    text(&out.stdout)
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter().map(|d| d["kind"].as_str().unwrap().to_owned()).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn all_of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn deployment(docs: &[Value]) -> &Value {
    find(docs, "Deployment", FULLNAME).expect("the Deployment")
}

fn container(docs: &[Value]) -> &Value {
    &deployment(docs)["spec"]["template"]["spec"]["containers"][0]
}

/// The container's env: name → `value` (a string) or `valueFrom` (an object).
fn env_of(container: &Value) -> BTreeMap<String, Value> {
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

fn chart_app_version() -> String {
    let chart: Value = serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap()).unwrap();
    chart["appVersion"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------------------------------
// Lint, render, values

#[test]
fn helm_lint_is_clean_for_default_and_non_default_values() {
    let chart = chart_dir();
    for case in VALID_CASES {
        let mut args = vec!["lint", "--strict", chart.to_str().unwrap(), "--namespace", NAMESPACE];
        args.extend_from_slice(case.args);
        let out = helm(&args);
        assert!(out.contains("0 chart(s) failed"), "helm lint ({}):\n{out}", case.name);
        assert!(!out.contains("[WARNING]") && !out.contains("[ERROR]"), "helm lint ({}):\n{out}", case.name);
    }
}

#[test]
fn default_values_render_a_restricted_cluster_wide_operator_with_leader_election() {
    let docs = render(&DEFAULT);
    let expected: BTreeSet<String> = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "CustomResourceDefinition",
    ]
    .map(String::from)
    .into();
    assert_eq!(kinds(&docs), expected);
    for doc in &docs {
        let cluster_scoped = ["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"];
        if !cluster_scoped.contains(&doc["kind"].as_str().unwrap()) {
            assert_eq!(doc["metadata"]["namespace"], NAMESPACE, "{} is in the release namespace", doc["kind"]);
        }
    }

    let deploy = deployment(&docs);
    assert_eq!(deploy["spec"]["replicas"], 1);
    assert_eq!(deploy["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 0, "leader election: no surge");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], FULLNAME);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let c = container(&docs);
    assert_eq!(c["image"], format!("workload-key-operator:{}", chart_app_version()), "tag defaults to appVersion");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(sc["runAsUser"].as_i64().unwrap() >= 10000);
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(c["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "http-metrics"}));
    assert_eq!(c["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "http-metrics"}));
    assert!(c["resources"]["requests"]["memory"].is_string() && c["resources"]["limits"]["memory"].is_string());

    let env = env_of(c);
    assert_eq!(env["WKO_METRICS_ADDR"], "0.0.0.0:8080");
    assert_eq!(env["WKO_LOG_LEVEL"], "info");
    assert_eq!(env["WKO_LOG_FORMAT"], "json");
    assert_eq!(env["WKO_LEADER_ELECTION"], "true");
    assert_eq!(env["WKO_LEASE_NAME"], FULLNAME);
    assert_eq!(env["WKO_LEASE_NAMESPACE"], json!({"fieldRef": {"fieldPath": "metadata.namespace"}}));
    assert_eq!(env["POD_NAME"], json!({"fieldRef": {"fieldPath": "metadata.name"}}));
    assert!(!env.contains_key("WKO_WATCH_NAMESPACE"), "all namespaces by default");
    assert!(!env.contains_key("WKO_SECRET_HASH_KEY"));

    let svc = find(&docs, "Service", &format!("{FULLNAME}-metrics")).expect("metrics Service");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http-metrics");
    assert_eq!(svc["spec"]["selector"], deploy["spec"]["selector"]["matchLabels"]);
    let pdb = find(&docs, "PodDisruptionBudget", FULLNAME).unwrap();
    assert_eq!(pdb["spec"]["maxUnavailable"], 1, "never blocks a drain with one replica");
    let netpol = find(&docs, "NetworkPolicy", FULLNAME).unwrap();
    assert_eq!(netpol["spec"]["policyTypes"], json!(["Ingress"]));
}

#[test]
fn every_env_var_the_chart_sets_is_a_flag_of_the_operator() {
    let help = run(Command::new(env!("CARGO_BIN_EXE_workload-key-operator")).arg("--help"));
    let help = text(&help.stdout);
    for case in VALID_CASES {
        let docs = render(case);
        for name in env_of(container(&docs)).keys().filter(|n| n.starts_with("WKO_") || *n == "POD_NAME") {
            assert!(help.contains(&format!("[env: {name}")), "{name} ({}) is not an operator flag:\n{help}", case.name);
        }
    }
}

#[test]
fn non_default_values_render_as_asked() {
    // One namespace: Role + RoleBinding there, no cluster-wide grant to the operator.
    let docs = render(&ONE_NAMESPACE);
    let env = env_of(container(&docs));
    assert_eq!(env["WKO_WATCH_NAMESPACE"], "apps");
    assert_eq!(env["WKO_LOG_FORMAT"], "text");
    let role = find(&docs, "Role", FULLNAME).expect("operator Role");
    assert_eq!(role["metadata"]["namespace"], "apps");
    let binding = find(&docs, "RoleBinding", FULLNAME).expect("operator RoleBinding");
    assert_eq!(binding["metadata"]["namespace"], "apps");
    assert_eq!(binding["subjects"][0], json!({"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}));
    assert!(all_of(&docs, "ClusterRoleBinding").is_empty(), "no cluster-wide binding with one namespace");
    assert!(find(&docs, "ClusterRole", FULLNAME).is_none());

    // ServiceMonitor.
    let docs = render(&SERVICE_MONITOR);
    let sm = find(&docs, "ServiceMonitor", FULLNAME).expect("ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http-metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    let svc = find(&docs, "Service", &format!("{FULLNAME}-metrics")).unwrap();
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v, "the ServiceMonitor selects the metrics Service");
    }

    // Leader election off.
    let docs = render(&NO_LEADER_ELECTION);
    let env = env_of(container(&docs));
    assert_eq!(env["WKO_LEADER_ELECTION"], "false");
    assert!(!env.keys().any(|k| k.starts_with("WKO_LEASE_")));
    assert!(find(&docs, "Role", &format!("{FULLNAME}-leader-election")).is_none());
    assert!(deployment(&docs)["spec"].get("strategy").is_none());

    // Bring your own RBAC, CRDs and ServiceAccount.
    let docs = render(&BRING_YOUR_OWN);
    assert_eq!(kinds(&docs), BTreeSet::from(["Deployment".to_owned()]));
    assert_eq!(deployment(&docs)["spec"]["template"]["spec"]["serviceAccountName"], "platform-operator");

    // Digest, replicas, scheduling, extra env, hash key, PDB, NetworkPolicy peers.
    let docs = render(&HARDENED);
    let deploy = deployment(&docs);
    let pod = &deploy["spec"]["template"]["spec"];
    let c = container(&docs);
    assert_eq!(c["image"], format!("registry.example.com/platform/workload-key-operator@{DIGEST}"));
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert!(pod["affinity"]["podAntiAffinity"].is_object());
    assert_eq!(c["resources"]["limits"]["memory"], "256Mi");
    let env = env_of(c);
    assert_eq!(env["WKO_LOG_LEVEL"], "debug");
    assert_eq!(env["WKO_LEASE_NAME"], "wko-leader");
    assert_eq!(env["WKO_LEASE_DURATION_SECONDS"], "30");
    assert_eq!(env["WKO_SECRET_HASH_KEY"], json!({"secretKeyRef": {"name": "wko-hash-key", "key": "hash-key"}}));
    assert_eq!(env["HTTPS_PROXY"], "http://proxy:3128");
    let lease_role = find(&docs, "Role", &format!("{FULLNAME}-leader-election")).unwrap();
    assert_eq!(lease_role["rules"][1]["resourceNames"], json!(["wko-leader"]));
    assert_eq!(
        find(&docs, "ServiceAccount", FULLNAME).unwrap()["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/wko"
    );
    let pdb = find(&docs, "PodDisruptionBudget", FULLNAME).unwrap();
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    assert!(pdb["spec"].get("maxUnavailable").is_none());
    let netpol = find(&docs, "NetworkPolicy", FULLNAME).unwrap();
    assert_eq!(
        netpol["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );

    // Host network (a node without a pod network): probes on 127.0.0.1, the metrics port on the node.
    let docs = render(&HOST_NETWORK);
    let pod = &deployment(&docs)["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    let c = container(&docs);
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["host"], "127.0.0.1", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "http-metrics", "{probe}");
    }
    assert_eq!(c["ports"][0]["containerPort"], 18080);
    assert_eq!(env_of(c)["WKO_METRICS_ADDR"], "127.0.0.1:18080");
    // Off by default: no host network, probes on the pod IP.
    let docs = render(&DEFAULT);
    assert!(deployment(&docs)["spec"]["template"]["spec"].get("hostNetwork").is_none());
    assert!(container(&docs)["readinessProbe"]["httpGet"].get("host").is_none());
}

#[test]
fn invalid_values_are_refused_with_a_reason() {
    for (args, reason) in [
        (&["--set", "watchNamespaces={a,b}"][..], "install one release per namespace"),
        (&["--set", "replicaCount=2", "--set", "leaderElection.enabled=false"][..], "needs leaderElection.enabled"),
        (&["--set", "logFormat=xml"][..], "logFormat must be text or json"),
        (&["--set", "serviceMonitor.enabled=true", "--set", "service.enabled=false"][..], "needs service.enabled"),
        (&["--set", "serviceAccount.create=false"][..], "serviceAccount.name is required"),
    ] {
        let out = template_output(args);
        assert!(!out.status.success(), "{args:?} should be refused");
        assert!(text(&out.stderr).contains(reason), "{args:?}: {}", text(&out.stderr));
    }
}

#[test]
fn chart_app_version_is_the_crate_version() {
    assert_eq!(chart_app_version(), env!("CARGO_PKG_VERSION"), "Chart.yaml appVersion follows Cargo.toml");
}

// ---------------------------------------------------------------------------------------------------------------
// CRDs

#[test]
fn chart_crd_copy_is_byte_identical_to_crds_dir() {
    let source = std::fs::read(repo_root().join("crds/workloadkeys.io.yaml")).unwrap();
    let copy = std::fs::read(chart_dir().join("files/crds/workloadkeys.io.yaml")).unwrap();
    assert!(source == copy, "charts/workload-key-operator/files/crds/ differs from crds/: run `make chart-crds`");
    let files: Vec<_> =
        std::fs::read_dir(chart_dir().join("files/crds")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), 1, "the chart holds exactly the CRD file of crds/: {files:?}");
}

/// Every number as a float: Helm's `fromYaml | toYaml` writes `1.0` as `1`, the same value to the API server.
fn numbers_as_floats(v: &mut Value) {
    match v {
        Value::Number(n) => *v = json!(n.as_f64().unwrap()),
        Value::Array(a) => a.iter_mut().for_each(numbers_as_floats),
        Value::Object(o) => o.values_mut().for_each(numbers_as_floats),
        _ => {}
    }
}

#[test]
fn rendered_crds_are_the_source_crds_and_kept_on_uninstall() {
    let source: Vec<Value> =
        parse_docs(&std::fs::read_to_string(repo_root().join("crds/workloadkeys.io.yaml")).unwrap());
    assert_eq!(source.len(), 2);
    let docs = render(&DEFAULT);
    let rendered = all_of(&docs, "CustomResourceDefinition");
    assert_eq!(rendered.len(), source.len());
    for src in &source {
        let name = src["metadata"]["name"].as_str().unwrap();
        let mut crd = find(&docs, "CustomResourceDefinition", name).expect("rendered CRD").clone();
        let meta = crd["metadata"].as_object_mut().unwrap();
        let annotations = meta.remove("annotations").expect("annotations");
        assert_eq!(annotations["helm.sh/resource-policy"], "keep");
        meta.remove("labels");
        let mut src = src.clone();
        numbers_as_floats(&mut crd);
        numbers_as_floats(&mut src);
        assert_eq!(crd, src, "{name}: the rendered CRD is the source CRD plus annotations and labels");
    }

    let docs = render(&Case { name: "crds not kept", args: &["--set", "crds.keep=false"] });
    for crd in all_of(&docs, "CustomResourceDefinition") {
        assert!(crd["metadata"].get("annotations").is_none());
    }
}

// ---------------------------------------------------------------------------------------------------------------
// RBAC

/// (apiGroup, resource, verb) granted by a Role or ClusterRole, with resourceNames when restricted.
fn grants(role: &Value) -> BTreeSet<(String, String, String, Vec<String>)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        let names: Vec<String> = rule["resourceNames"]
            .as_array()
            .map(|a| a.iter().map(|n| n.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        for g in rule["apiGroups"].as_array().unwrap() {
            for r in rule["resources"].as_array().unwrap() {
                for v in rule["verbs"].as_array().unwrap() {
                    let s = |x: &Value| x.as_str().unwrap().to_owned();
                    out.insert((s(g), s(r), s(v), names.clone()));
                }
            }
        }
    }
    out
}

fn expected_operator_grants() -> BTreeSet<(String, String, String, Vec<String>)> {
    let mut out = BTreeSet::new();
    let mut add = |group: &str, resources: &[&str], verbs: &[&str]| {
        for r in resources {
            for v in verbs {
                out.insert((group.to_owned(), (*r).to_owned(), (*v).to_owned(), vec![]));
            }
        }
    };
    add(
        "workloadkeys.io",
        &["workloadapikeys", "secureworkloadcredentials"],
        &["get", "list", "watch", "patch", "update"],
    );
    add(
        "workloadkeys.io",
        &["workloadapikeys/status", "secureworkloadcredentials/status"],
        &["get", "patch", "update"],
    );
    add("workloadkeys.io", &["workloadapikeys/finalizers", "secureworkloadcredentials/finalizers"], &["update"]);
    add("", &["secrets"], &["get", "list", "watch", "create", "patch", "update", "delete"]);
    add("events.k8s.io", &["events"], &["create", "patch"]);
    add("", &["events"], &["create", "patch"]);
    add("", &["namespaces"], &["get"]);
    out
}

#[test]
fn rendered_rbac_has_no_wildcards_and_exactly_the_rules_the_operator_needs() {
    for case in VALID_CASES {
        let docs = render(case);
        for role in all_of(&docs, "Role").into_iter().chain(all_of(&docs, "ClusterRole")) {
            let what = format!("{} {} ({})", role["kind"], role["metadata"]["name"], case.name);
            for rule in role["rules"].as_array().unwrap() {
                assert!(rule.get("nonResourceURLs").is_none(), "{what}: nonResourceURLs");
                for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                    for item in rule[field].as_array().into_iter().flatten() {
                        assert!(!item.as_str().unwrap().contains('*'), "{what}: wildcard in {field}: {rule}");
                    }
                }
                assert!(rule["verbs"].as_array().is_some_and(|v| !v.is_empty()), "{what}: verbs");
                let risky = ["escalate", "bind", "impersonate", "deletecollection"];
                if role["metadata"]["name"] == FULLNAME {
                    for v in rule["verbs"].as_array().unwrap() {
                        assert!(!risky.contains(&v.as_str().unwrap()), "{what}: {v}");
                    }
                }
            }
        }
    }

    // The operator's own rules: exactly these, cluster-wide or in the one watched namespace.
    let docs = render(&DEFAULT);
    assert_eq!(grants(find(&docs, "ClusterRole", FULLNAME).unwrap()), expected_operator_grants());
    let docs = render(&ONE_NAMESPACE);
    assert_eq!(grants(find(&docs, "Role", FULLNAME).unwrap()), expected_operator_grants());

    // Leader election: create any Lease (a create has no name to restrict), touch only its own, in its namespace.
    let docs = render(&DEFAULT);
    let lease_role = find(&docs, "Role", &format!("{FULLNAME}-leader-election")).unwrap();
    assert_eq!(lease_role["metadata"]["namespace"], NAMESPACE);
    let lease = |v: &str, names: &[&str]| {
        (
            "coordination.k8s.io".to_owned(),
            "leases".to_owned(),
            v.to_owned(),
            names.iter().map(|n| (*n).to_owned()).collect(),
        )
    };
    let expected = BTreeSet::from([
        lease("create", &[]),
        lease("get", &[FULLNAME]),
        lease("update", &[FULLNAME]),
        lease("patch", &[FULLNAME]),
    ]);
    assert_eq!(grants(lease_role), expected);
}

// ---------------------------------------------------------------------------------------------------------------
// Policy checks: checkov (chart and Dockerfile), hadolint

fn checkov(target_args: &[&str], framework: &str) {
    let skips: Vec<&str> = CHECKOV_SKIPS.iter().map(|(id, _)| *id).collect();
    let skips = skips.join(",");
    let mut args = vec!["--framework", framework, "--skip-download", "--compact", "--quiet", "-o", "json"];
    args.extend_from_slice(target_args);
    args.extend_from_slice(&["--skip-check", &skips]);
    let out = run(Command::new(venv_tool("checkov")).args(&args).env("BC_SKIP_MAPPING", "TRUE"));
    let stdout = text(&out.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("checkov {args:?} printed no JSON report ({e}):\n{stdout}\n{}", text(&out.stderr)));
    // One framework: an object; several: a list of them.
    let reports = if report.is_array() { report.as_array().unwrap().clone() } else { vec![report] };
    let mut passed = 0;
    for r in &reports {
        let failed = r["results"]["failed_checks"].as_array().cloned().unwrap_or_default();
        let listed: Vec<String> = failed
            .iter()
            .map(|f| format!("{} {} ({}) in {}", f["check_id"], f["check_name"], f["resource"], f["file_path"]))
            .collect();
        assert!(
            listed.is_empty(),
            "checkov failed checks (fix them, or skip with a reason in CHECKOV_SKIPS and the chart README):\n{}",
            listed.join("\n")
        );
        passed += r["summary"]["passed"].as_u64().unwrap_or(0);
    }
    assert!(passed > 0, "checkov ran no check on {target_args:?}");
    assert!(out.status.success(), "checkov exited with {:?}:\n{}", out.status, text(&out.stderr));
}

#[test]
fn checkov_finds_no_failed_check_in_the_rendered_chart_and_the_dockerfile() {
    // Not a hidden directory (tempdir's default `.tmp…`): checkov skips those.
    let dir = tempfile::Builder::new().prefix("wko-chart-").tempdir().unwrap();
    for (i, case) in [&DEFAULT, &ONE_NAMESPACE, &SERVICE_MONITOR, &HARDENED].iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i}.yaml")), render_yaml(case)).unwrap();
    }
    checkov(&["-d", dir.path().to_str().unwrap()], "kubernetes");
    let dockerfile = repo_root().join("Dockerfile");
    checkov(&["-f", dockerfile.to_str().unwrap()], "dockerfile");
}

#[test]
fn every_checkov_skip_is_justified_in_the_chart_readme() {
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    for (id, _) in CHECKOV_SKIPS {
        let line = readme.lines().find(|l| l.contains(id)).unwrap_or_else(|| panic!("{id} is not in the chart README"));
        assert!(line.len() > id.len() + 40, "{id}: the README gives no reason: {line}");
    }
}

#[test]
fn hadolint_finds_nothing_in_the_dockerfile() {
    let out = run(Command::new(venv_tool("hadolint")).arg(repo_root().join("Dockerfile")));
    assert!(out.status.success(), "hadolint:\n{}{}", text(&out.stdout), text(&out.stderr));
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(runtime.starts_with("gcr.io/distroless/"), "distroless runtime stage");
    assert!(runtime.contains("USER 65532:65532"), "numeric non-root user");
    assert!(!runtime.contains("\nRUN "), "nothing runs in the runtime stage (it has no shell)");
    assert!(
        dockerfile.contains("--bin workload-key-operator") && !dockerfile.contains("--features"),
        "release build of the operator only"
    );
}

/// The paths `.dockerignore` admits (it excludes everything, then re-admits `!path` entries).
fn docker_context_roots() -> Vec<String> {
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).unwrap();
    let mut lines = ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    assert_eq!(lines.next(), Some("*"), ".dockerignore starts by excluding everything");
    let roots: BTreeSet<String> = lines
        .map(|l| {
            let admitted = l.strip_prefix('!').unwrap_or_else(|| panic!(".dockerignore: {l} is not an exception"));
            admitted.trim_end_matches("/**").trim_end_matches('/').to_owned()
        })
        .collect();
    roots.into_iter().collect()
}

#[test]
fn the_docker_build_context_holds_every_cargo_target_the_build_needs() {
    // No Docker engine here: rebuild the builder stage's /src from the context its COPY lines see, and let cargo
    // read the manifest there (every declared target must exist) and resolve it from Cargo.lock alone.
    let roots = docker_context_roots();
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let builder = dockerfile.split("\nFROM ").nth(1).expect("a builder stage");
    let work = tempfile::Builder::new().prefix("wko-docker-context-").tempdir().unwrap();
    let mut copied = 0;
    for line in builder.lines().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        let (dest, sources) = words.split_last().unwrap();
        for src in sources {
            assert!(roots.iter().any(|r| r == src), "COPY {src}: not admitted by .dockerignore ({roots:?})");
            let from = repo_root().join(src);
            let to = work.path().join(dest.trim_start_matches("./")).join(if dest.ends_with('/') { *src } else { "" });
            let status = Command::new("cp").arg("-r").arg(&from).arg(&to).status().unwrap();
            assert!(status.success(), "cp {} {}", from.display(), to.display());
            copied += 1;
        }
    }
    assert!(copied >= 3, "Cargo.toml, Cargo.lock and src/ are copied");
    // Not `--offline`: a fresh machine's registry cache lacks crates for other targets, which `fetch` wants too.
    let out = run(Command::new(env!("CARGO")).args(["fetch", "--locked"]).current_dir(work.path()));
    assert!(out.status.success(), "cargo cannot read the image's build context:\n{}", text(&out.stderr));
    let out = run(Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--offline", "--no-deps", "--format-version", "1"])
        .current_dir(work.path()));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata");
    let bins: Vec<&str> = meta["packages"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == json!(["bin"]))
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(bins.contains(&"workload-key-operator"), "{bins:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// helm install into the real control plane, then the operator as the chart's ServiceAccount

/// A release installed into the test control plane.
struct Release {
    name: String,
    namespace: String,
    manifest: Vec<Value>,
}

impl Release {
    fn install(name: &str, namespace: &str, args: &[&str]) -> Self {
        let kubeconfig = support::control_plane().kubeconfig.to_str().unwrap().to_owned();
        let chart = chart_dir();
        let mut full =
            vec!["install", name, chart.to_str().unwrap(), "--namespace", namespace, "--kubeconfig", &kubeconfig];
        full.extend_from_slice(args);
        let out = helm(&full);
        assert!(out.contains("STATUS: deployed"), "helm install {name}:\n{out}");
        let manifest =
            parse_docs(&helm(&["get", "manifest", name, "--namespace", namespace, "--kubeconfig", &kubeconfig]));
        Release { name: name.to_owned(), namespace: namespace.to_owned(), manifest }
    }

    fn uninstall(&self) {
        let kubeconfig = support::control_plane().kubeconfig.to_str().unwrap().to_owned();
        helm(&["uninstall", &self.name, "--namespace", &self.namespace, "--kubeconfig", &kubeconfig]);
    }

    fn deployment(&self) -> &Value {
        self.manifest.iter().find(|d| d["kind"] == "Deployment").expect("Deployment in the release")
    }

    fn service_account_user(&self) -> String {
        let sa = self.deployment()["spec"]["template"]["spec"]["serviceAccountName"].as_str().unwrap();
        format!("system:serviceaccount:{}:{sa}", self.namespace)
    }

    /// The Deployment's env as the pod would see it (downward API resolved). The metrics address and log level
    /// are left to the test runner (a free port; trace, which the leak checks read).
    fn operator_env(&self, pod_name: &str) -> Vec<(String, String)> {
        let c = &self.deployment()["spec"]["template"]["spec"]["containers"][0];
        env_of(c)
            .into_iter()
            .filter(|(k, _)| k != "WKO_METRICS_ADDR" && k != "WKO_LOG_LEVEL")
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s,
                    other => match other["fieldRef"]["fieldPath"].as_str() {
                        Some("metadata.namespace") => self.namespace.clone(),
                        Some("metadata.name") => pod_name.to_owned(),
                        _ => panic!("{k}: cannot resolve {other}"),
                    },
                };
                (k, v)
            })
            .collect()
    }

    fn lease_name(&self) -> Option<String> {
        self.operator_env("-").into_iter().find(|(k, _)| k == "WKO_LEASE_NAME").map(|(_, v)| v)
    }
}

/// A copy of the admin kubeconfig whose user impersonates `user` (kubeconfig `as:`, honoured by kube-rs).
fn impersonating_kubeconfig(dir: &Path, user: &str) -> PathBuf {
    let admin = std::fs::read_to_string(&support::control_plane().kubeconfig).unwrap();
    let mut kc: serde_yaml::Value = serde_yaml::from_str(&admin).unwrap();
    for u in kc["users"].as_sequence_mut().unwrap() {
        u["user"]["as"] = serde_yaml::Value::String(user.to_owned());
    }
    let path = dir.join(format!("{}.kubeconfig", user.replace(':', "_")));
    std::fs::write(&path, serde_yaml::to_string(&kc).unwrap()).unwrap();
    path
}

/// Whether `user` may do `verb` on `resource` (`group`, `namespace`, `name` optional): a SelfSubjectAccessReview
/// made while impersonating the user.
async fn can(user: &str, verb: &str, group: &str, resource: &str, namespace: Option<&str>, name: Option<&str>) -> bool {
    let client = Client::try_from(support::config_as(Some(user)).await).unwrap();
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_owned())),
        None => (resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.to_owned()),
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                subresource,
                namespace: namespace.map(str::to_owned),
                name: name.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client).create(&PostParams::default(), &review).await.unwrap();
    answer.status.is_some_and(|s| s.allowed)
}

async fn wait_crds_established(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in ["workloadapikeys.workloadkeys.io", "secureworkloadcredentials.workloadkeys.io"] {
        eventually(Duration::from_secs(30), &format!("CRD {name} established"), || {
            let crds = crds.clone();
            async move {
                let crd = crds.get(name).await.ok()?;
                crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
            }
        })
        .await;
    }
}

/// One WorkloadApiKey and one SecureWorkloadCredential (imported key pair) against the simulator, in `ns`.
async fn apply_one_of_each(ns: &TestNamespace, sim: &RunningSim) {
    put_secret(ns, "tm-admin", &[("api-secret-key", sim.info.trend_admin_api_key().as_str())]).await;
    put_secret(ns, "sim-ca", &[("ca.crt", sim.ca_pem.as_str())]).await;
    put_secret(
        ns,
        "sw-ui-key",
        &[("api_key", sim.info.cisco_api_key().as_str()), ("api_secret", sim.info.cisco_api_secret().as_str())],
    )
    .await;
    let wak: WorkloadApiKey = serde_json::from_value(json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "WorkloadApiKey",
        "metadata": {"name": "reporting"},
        "spec": {
            "connection": {"url": sim.info.trend_url(), "caSecretRef": {"name": "sim-ca"},
                           "apiKeySecretRef": {"name": "tm-admin"}},
            "role": {"name": "Auditor"},
            "expiresAfter": "336h",
            "description": "chart RBAC test"
        }
    }))
    .unwrap();
    let swc: SecureWorkloadCredential = serde_json::from_value(json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "SecureWorkloadCredential",
        "metadata": {"name": "flows"},
        "spec": {
            "connection": {"url": sim.info.cisco_url(), "caSecretRef": {"name": "sim-ca"}},
            "source": {"existing": {"secretRef": {"name": "sw-ui-key"}}},
            "capabilities": ["sensor_management", "flow_inventory_query"]
        }
    }))
    .unwrap();
    let pp = PatchParams::apply("chart-test").force();
    ns.api::<WorkloadApiKey>().patch("reporting", &pp, &Patch::Apply(&wak)).await.unwrap();
    ns.api::<SecureWorkloadCredential>().patch("flows", &pp, &Patch::Apply(&swc)).await.unwrap();
}

fn ready_reason(conditions: Option<&Value>) -> Option<(String, String)> {
    let c = conditions?.as_array()?.iter().find(|c| c["type"] == "Ready")?;
    Some((c["status"].as_str()?.to_owned(), c["reason"].as_str().unwrap_or_default().to_owned()))
}

async fn wait_ready<K>(api: &Api<K>, name: &str, op: &Operator)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let kind = std::any::type_name::<K>().rsplit("::").next().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Ok(obj) = api.get(name).await {
            let v = serde_json::to_value(&obj).unwrap();
            last = ready_reason(v["status"].get("conditions"));
            if last.as_ref().is_some_and(|(s, _)| s == "True") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let logs = op.logs();
    let tail: Vec<&str> = logs.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
    panic!(
        "{kind} {name} not Ready within {WAIT:?} (last Ready condition {last:?}); operator log tail:\n{}",
        tail.join("\n")
    );
}

/// The API server refused nothing the operator asked for.
fn assert_nothing_forbidden(op: &Operator) {
    let logs = op.logs();
    for line in logs.lines() {
        assert!(!line.contains("is forbidden"), "the chart's RBAC refused a request of the operator:\n{line}");
        assert!(!line.contains("could not publish event"), "an Event was refused:\n{line}");
    }
}

async fn lease_holder(client: &Client, namespace: &str, name: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    leases.get_opt(name).await.ok().flatten()?.spec?.holder_identity
}

/// Runs the operator as the release's ServiceAccount, watching `watch` (None: all namespaces) and proves that both
/// kinds become Ready in `app`, that the finalizer path works, and that leader election holds and releases its Lease.
async fn prove_release_rbac(release: &Release, watch: Option<&str>, app: &TestNamespace, sim: &RunningSim) {
    let admin = app.client.clone();
    let dir = tempfile::tempdir().unwrap();
    let user = release.service_account_user();
    let kubeconfig = impersonating_kubeconfig(dir.path(), &user);
    let pod = format!("{}-pod-0", release.name);
    let env = release.operator_env(&pod);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(env.iter().find(|(k, _)| k == "WKO_WATCH_NAMESPACE").map(|(_, v)| v.as_str()), watch);

    apply_one_of_each(app, sim).await;
    let mut op = Operator::start_as(&kubeconfig, watch, &env_refs);

    let waks: Api<WorkloadApiKey> = app.api();
    let swcs: Api<SecureWorkloadCredential> = app.api();
    if let Some(lease) = release.lease_name() {
        eventually(Duration::from_secs(30), "the operator holds its Lease", || {
            let admin = admin.clone();
            let (ns, lease, pod) = (release.namespace.clone(), lease.clone(), pod.clone());
            async move { (lease_holder(&admin, &ns, &lease).await.as_deref() == Some(pod.as_str())).then_some(()) }
        })
        .await;
    }
    let secrets: Api<Secret> = app.api();
    wait_ready(&waks, "reporting", &op).await;
    let data = secrets.get("reporting").await.unwrap().data.unwrap();
    let issued = String::from_utf8(data["api-secret-key"].0.clone()).unwrap();
    wait_ready(&swcs, "flows", &op).await;
    let data = secrets.get("flows").await.unwrap().data.unwrap();
    assert!(data.contains_key("credentials.json"));
    let known = [issued, sim.info.trend_admin_api_key(), sim.info.cisco_api_secret()];
    assert_no_leaks(app, &op, &known).await;

    // Deletion goes through the finalizer (revoke at the vendor, remove the finalizer) under the same RBAC.
    let key_id = waks.get("reporting").await.unwrap().status.unwrap().key_id.unwrap();
    waks.delete("reporting", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "WorkloadApiKey deleted through its finalizer", || {
        let waks = waks.clone();
        async move { waks.get_opt("reporting").await.ok()?.is_none().then_some(()) }
    })
    .await;
    let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    assert!(!sim.trend.keys().iter().any(|k| k.id == key_id && k.is_live(now)), "vendor key {key_id} revoked");
    swcs.delete("flows", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "SecureWorkloadCredential deleted", || {
        let swcs = swcs.clone();
        async move { swcs.get_opt("flows").await.ok()?.is_none().then_some(()) }
    })
    .await;

    assert_nothing_forbidden(&op);
    // SIGTERM: stops cleanly and releases the Lease (a patch the Role must allow).
    assert_eq!(op.terminate(), Some(0), "clean exit on SIGTERM");
    if let Some(lease) = release.lease_name() {
        assert_eq!(lease_holder(&admin, &release.namespace, &lease).await, None, "Lease released on SIGTERM");
    }
    assert_nothing_forbidden(&op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_grants_the_operator_enough_rbac_cluster_wide_and_in_one_namespace() {
    let sim = sim::start(SimOptions::default()).await.expect("start vendor simulator");

    // 1. Default values: the CRDs, a ClusterRole, leader election in the release namespace.
    let system = TestNamespace::new("wko-system").await;
    let cluster_wide = Release::install("wko", &system.name, &[]);
    let admin = system.client.clone();
    wait_crds_established(&admin).await;
    let app = TestNamespace::new("chart-app").await;
    let other = TestNamespace::new("chart-other").await;
    let user = cluster_wide.service_account_user();
    let lease = cluster_wide.lease_name().unwrap();
    let (a, s, l) = (app.name.as_str(), system.name.as_str(), lease.as_str());
    for (verb, group, resource, ns, name, allowed) in [
        ("list", "", "secrets", None, None, true),
        ("watch", "workloadkeys.io", "workloadapikeys", None, None, true),
        ("patch", "workloadkeys.io", "secureworkloadcredentials/status", Some(a), Some("x"), true),
        ("update", "workloadkeys.io", "workloadapikeys/finalizers", Some(a), Some("x"), true),
        ("create", "events.k8s.io", "events", Some(a), None, true),
        ("get", "", "namespaces", None, Some(a), true),
        ("create", "coordination.k8s.io", "leases", Some(s), None, true),
        ("patch", "coordination.k8s.io", "leases", Some(s), Some(l), true),
        ("patch", "coordination.k8s.io", "leases", Some(s), Some("someone-elses"), false),
        ("create", "coordination.k8s.io", "leases", Some(a), None, false),
        ("create", "", "pods", Some(a), None, false),
        ("delete", "", "namespaces", None, Some(a), false),
        ("list", "", "configmaps", Some(a), None, false),
        ("create", "workloadkeys.io", "workloadapikeys", Some(a), None, false),
        ("delete", "workloadkeys.io", "workloadapikeys", Some(a), Some("x"), false),
        ("create", "rbac.authorization.k8s.io", "rolebindings", Some(a), None, false),
    ] {
        assert_eq!(
            can(&user, verb, group, resource, ns, name).await,
            allowed,
            "{user} {verb} {group}/{resource} in {ns:?} {name:?}"
        );
    }
    prove_release_rbac(&cluster_wide, None, &app, &sim).await;

    // 2. One namespace: Role + RoleBinding there only; the CRDs come from the first release.
    let system2 = TestNamespace::new("wko-apps-system").await;
    let app2 = TestNamespace::new("chart-app2").await;
    let watch = format!("watchNamespaces={{{}}}", app2.name);
    let namespaced = Release::install("wko-apps", &system2.name, &["--set", &watch, "--set", "crds.install=false"]);
    assert!(!namespaced.manifest.iter().any(|d| d["kind"] == "CustomResourceDefinition"));
    let user2 = namespaced.service_account_user();
    let (a2, o, s2) = (app2.name.as_str(), other.name.as_str(), system2.name.as_str());
    for (verb, resource, ns, name, allowed) in [
        ("list", "secrets", Some(a2), None, true),
        ("delete", "secrets", Some(a2), Some("x"), true),
        ("get", "namespaces", Some(a2), Some(a2), true),
        ("list", "secrets", None, None, false),
        ("get", "secrets", Some(o), Some("x"), false),
        ("get", "secrets", Some(s2), Some("x"), false),
        ("get", "namespaces", Some(o), Some(o), false),
    ] {
        assert_eq!(
            can(&user2, verb, "", resource, ns, name).await,
            allowed,
            "{user2} {verb} {resource} in {ns:?} {name:?}"
        );
    }
    prove_release_rbac(&namespaced, Some(a2), &app2, &sim).await;

    // 3. Uninstall keeps the CRDs (helm.sh/resource-policy: keep), so no custom resource is lost with a release.
    namespaced.uninstall();
    cluster_wide.uninstall();
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for name in ["workloadapikeys.workloadkeys.io", "secureworkloadcredentials.workloadkeys.io"] {
        let crd = crds.get(name).await.expect("CRD kept after helm uninstall");
        assert!(crd.metadata.deletion_timestamp.is_none(), "{name} is not being deleted");
        assert_eq!(crd.annotations().get("helm.sh/resource-policy").map(String::as_str), Some("keep"));
    }
}
