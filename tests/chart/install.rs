//! `helm install` into the real control plane, then the operator as the chart's ServiceAccount.

use std::{
    path::{Path, PathBuf},
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
use workload_key_operator::{
    api::{SecureWorkloadCredential, WorkloadApiKey},
    sim::{self, RunningSim, SimOptions},
};

use crate::{
    cases::env_of,
    chart_dir, helm, parse_docs,
    support::{self, TestNamespace, assert_no_leaks, eventually, operator::Operator, put_secret, sim_env},
};

const WAIT: Duration = Duration::from_secs(90);

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
    let mut kc: serde_norway::Value = serde_norway::from_str(&admin).unwrap();
    for u in kc["users"].as_sequence_mut().unwrap() {
        u["user"]["as"] = serde_norway::Value::String(user.to_owned());
    }
    let path = dir.join(format!("{}.kubeconfig", user.replace(':', "_")));
    std::fs::write(&path, serde_norway::to_string(&kc).unwrap()).unwrap();
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
    sim_env::put_sim_secrets(ns, sim).await;
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
            "connection": {"url": sim.info.trend_url(), "caSecretRef": {"name": sim_env::CA_SECRET},
                           "apiKeySecretRef": {"name": sim_env::ADMIN_SECRET}},
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
            "connection": {"url": sim.info.cisco_url(), "caSecretRef": {"name": sim_env::CA_SECRET}},
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
