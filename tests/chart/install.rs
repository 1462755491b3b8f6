//! `helm install` into the real control plane, then the operator as the chart's ServiceAccount, issuing through
//! ClusterKeyProviders whose Secrets live in the cluster-resource namespace (the release namespace); and an app-team
//! user bound only to the built-in `edit` role.

use std::time::Duration;

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
    api::{ClusterKeyProvider, KeyProvider, SECRET_FINALIZER, SecureWorkloadCredential, WorkloadApiKey},
    clients::{
        SecretString, TlsOptions,
        trend::{Auth, DeepSecurityClient},
    },
    sim::{self, RunningSim, SimOptions},
};

use crate::{
    cases::env_of,
    chart_dir, helm, parse_docs,
    support::{
        self, TestNamespace, assert_no_leaks, eventually,
        operator::{Operator, assert_nothing_forbidden, impersonating_kubeconfig},
        put_secret, sim_env,
    },
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
    for name in CRDS {
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

const CRDS: [&str; 4] = [
    "workloadapikeys.workloadkeys.io",
    "secureworkloadcredentials.workloadkeys.io",
    "keyproviders.workloadkeys.io",
    "clusterkeyproviders.workloadkeys.io",
];

/// The two ClusterKeyProviders of a release (a Trend one with the admin key, a Cisco one), their Secrets in the
/// release's cluster-resource namespace.
struct Providers {
    trend: String,
    cisco: String,
    /// The cluster-resource namespace.
    namespace: String,
}

impl Providers {
    /// Puts the admin key and the simulator's CA into `crns` and creates both providers, allowing `allowed`, with a
    /// policy the test resources keep.
    async fn create(admin: &Client, release: &str, crns: &TestNamespace, sim: &RunningSim, allowed: &[&str]) -> Self {
        sim_env::put_sim_secrets(crns, sim).await;
        let (trend, cisco) = (format!("{release}-trend"), format!("{release}-cisco"));
        let api: Api<ClusterKeyProvider> = Api::all(admin.clone());
        let pp = PatchParams::apply("chart-test").force();
        for (name, spec) in [
            (
                &trend,
                json!({
                    "trend": {"url": sim.info.trend_url(), "caSecretRef": {"name": sim_env::CA_SECRET},
                              "apiKeySecretRef": {"name": sim_env::ADMIN_SECRET}},
                    "allowedNamespaces": {"names": allowed},
                    "policy": {"roles": [{"name": "Auditor"}], "maxExpiresAfter": "720h"}
                }),
            ),
            (
                &cisco,
                json!({
                    "cisco": {"url": sim.info.cisco_url(), "caSecretRef": {"name": sim_env::CA_SECRET}},
                    "allowedNamespaces": {"names": allowed},
                    "policy": {"capabilities": ["sensor_management", "flow_inventory_query"]}
                }),
            ),
        ] {
            let ckp: ClusterKeyProvider = serde_json::from_value(json!({
                "apiVersion": "workloadkeys.io/v1alpha1", "kind": "ClusterKeyProvider",
                "metadata": {"name": name}, "spec": spec
            }))
            .unwrap();
            api.patch(name, &pp, &Patch::Apply(&ckp)).await.unwrap();
        }
        Providers { trend, cisco, namespace: crns.name.clone() }
    }

    /// Deletes both (the operator running) and waits until they are gone and have let go of their Secrets.
    async fn delete(&self, admin: &Client, op: &Operator) {
        let api: Api<ClusterKeyProvider> = Api::all(admin.clone());
        for name in [&self.trend, &self.cisco] {
            api.delete(name, &DeleteParams::default()).await.unwrap();
        }
        for name in [&self.trend, &self.cisco] {
            let api = api.clone();
            let gone = tokio::time::timeout(WAIT, async {
                while api.get_opt(name).await.ok().flatten().is_some() {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
            .await;
            assert!(gone.is_ok(), "ClusterKeyProvider {name} not released; operator log:\n{}", op.logs());
        }
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), &self.namespace);
        for name in [sim_env::ADMIN_SECRET, sim_env::CA_SECRET] {
            let s = secrets.get(name).await.unwrap();
            assert!(!s.finalizers().iter().any(|f| f == SECRET_FINALIZER), "{name} still held: {:?}", s.finalizers());
        }
    }
}

/// One WorkloadApiKey and one SecureWorkloadCredential (imported key pair) on the ClusterKeyProviders, in `ns`.
async fn apply_one_of_each(ns: &TestNamespace, sim: &RunningSim, providers: &Providers) {
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
            "providerRef": {"kind": "ClusterKeyProvider", "name": providers.trend},
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
            "providerRef": {"kind": "ClusterKeyProvider", "name": providers.cisco},
            "source": {"existing": {"secretRef": {"name": "sw-ui-key"}}},
            "capabilities": ["sensor_management", "flow_inventory_query"]
        }
    }))
    .unwrap();
    let pp = PatchParams::apply("chart-test").force();
    ns.api::<WorkloadApiKey>().patch("reporting", &pp, &Patch::Apply(&wak)).await.unwrap();
    ns.api::<SecureWorkloadCredential>().patch("flows", &pp, &Patch::Apply(&swc)).await.unwrap();
}

/// Whether a request was refused with 403.
fn forbidden<T: std::fmt::Debug>(what: &str, r: Result<T, kube::Error>) {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// Acceptance 1: an app-team user, bound only to the built-in `edit` ClusterRole in its namespace (which the chart's
/// aggregated roles extend), creates a WorkloadApiKey on an allowed ClusterKeyProvider and gets a key that works at
/// the vendor; the same user is refused creating a KeyProvider or a ClusterKeyProvider and reading the admin Secret.
async fn app_team_gets_a_key_but_no_provider(
    admin: &Client,
    team: &TestNamespace,
    providers: &Providers,
    sim: &RunningSim,
    op: &Operator,
) {
    let user = "alice@app-team.example";
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "app-team-edit", "namespace": team.name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin.clone(), &team.name)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // The aggregation controller copies the chart's rules into `edit` asynchronously.
    let t = team.name.clone();
    eventually(Duration::from_secs(60), "built-in edit aggregates the chart's -edit role", || {
        let t = t.clone();
        async move { can(user, "create", "workloadkeys.io", "workloadapikeys", Some(&t), None).await.then_some(()) }
    })
    .await;
    assert!(!can(user, "create", "workloadkeys.io", "keyproviders", Some(&team.name), None).await);
    assert!(can(user, "list", "workloadkeys.io", "keyproviders", Some(&team.name), None).await, "view aggregates");

    let client = Client::try_from(support::config_as(Some(user)).await).unwrap();
    let waks: Api<WorkloadApiKey> = Api::namespaced(client.clone(), &team.name);
    let wak: WorkloadApiKey = serde_json::from_value(json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "WorkloadApiKey",
        "metadata": {"name": "team-key"},
        "spec": {
            "providerRef": {"kind": "ClusterKeyProvider", "name": providers.trend},
            "role": {"name": "Auditor"},
            "description": "app team, edit role only"
        }
    }))
    .unwrap();
    waks.create(&PostParams::default(), &wak).await.expect("edit may create a WorkloadApiKey");
    wait_ready(&waks, "team-key", op).await;
    let key_id = waks.get("team-key").await.unwrap().status.unwrap().key_id.and_then(|id| id.as_number()).unwrap();
    // The user reads its Secret and the key works at the vendor.
    let secret = Api::<Secret>::namespaced(client.clone(), &team.name).get("team-key").await.unwrap();
    let issued = String::from_utf8(secret.data.unwrap()["api-secret-key"].0.clone()).unwrap();
    let tls = TlsOptions { ca_pem: Some(sim.ca_pem.clone()), insecure_skip_verify: false };
    let trend =
        DeepSecurityClient::with_default_limiter(&sim.info.trend_url(), Auth::ApiKey(SecretString::new(issued)), &tls)
            .unwrap();
    let me = trend.describe_current_api_key().await.expect("the issued key authenticates at the vendor");
    assert_eq!(me.id, key_id);

    // Refused: providers of either kind, and the admin credential.
    let kp: KeyProvider = serde_json::from_value(json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "KeyProvider",
        "metadata": {"name": "mine"},
        "spec": {"trend": {"url": "https://127.0.0.1:1/api", "apiKeySecretRef": {"name": "anything"}}}
    }))
    .unwrap();
    forbidden(
        "create KeyProvider",
        Api::<KeyProvider>::namespaced(client.clone(), &team.name).create(&PostParams::default(), &kp).await,
    );
    let ckp: ClusterKeyProvider = serde_json::from_value(json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "ClusterKeyProvider",
        "metadata": {"name": "mine"},
        "spec": {"trend": {"url": "https://127.0.0.1:1/api", "apiKeySecretRef": {"name": sim_env::ADMIN_SECRET}},
                 "allowedNamespaces": {"names": [team.name]}}
    }))
    .unwrap();
    forbidden(
        "create ClusterKeyProvider",
        Api::<ClusterKeyProvider>::all(client.clone()).create(&PostParams::default(), &ckp).await,
    );
    let admin_secrets: Api<Secret> = Api::namespaced(client.clone(), &providers.namespace);
    forbidden("get the admin Secret", admin_secrets.get(sim_env::ADMIN_SECRET).await);
    forbidden("list the cluster-resource Secrets", admin_secrets.list(&Default::default()).await);

    // Gone through its finalizer (revoked), so the provider can be deleted later.
    waks.delete("team-key", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "the app team's WorkloadApiKey deleted", || {
        let waks = waks.clone();
        async move { waks.get_opt("team-key").await.ok()?.is_none().then_some(()) }
    })
    .await;
    assert!(trend.describe_current_api_key().await.is_err(), "the app team's key revoked on delete");
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

async fn lease_holder(client: &Client, namespace: &str, name: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    leases.get_opt(name).await.ok().flatten()?.spec?.holder_identity
}

/// Runs the operator as the release's ServiceAccount, watching `watch` (None: all namespaces), and proves that the
/// providers and both kinds in every `apps` namespace become Ready, (with `team`) that an app-team user gets a key but
/// no provider, that deletion goes through every finalizer, and that leader election holds and releases its Lease.
async fn prove_release_rbac(
    release: &Release,
    watch: Option<&str>,
    apps: &[&TestNamespace],
    team: Option<&TestNamespace>,
    providers: &Providers,
    sim: &RunningSim,
) {
    let admin = apps[0].client.clone();
    let dir = tempfile::tempdir().unwrap();
    let user = release.service_account_user();
    let kubeconfig = impersonating_kubeconfig(dir.path(), &user);
    let pod = format!("{}-pod-0", release.name);
    let env = release.operator_env(&pod);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(env.iter().find(|(k, _)| k == "WKO_WATCH_NAMESPACE").map(|(_, v)| v.as_str()), watch);
    assert_eq!(
        env.iter().find(|(k, _)| k == "WKO_CLUSTER_RESOURCE_NAMESPACE").map(|(_, v)| v.as_str()),
        Some(providers.namespace.as_str())
    );

    for app in apps {
        apply_one_of_each(app, sim, providers).await;
    }
    let mut op = Operator::start_as(&kubeconfig, watch, &env_refs);

    if let Some(lease) = release.lease_name() {
        eventually(Duration::from_secs(30), "the operator holds its Lease", || {
            let admin = admin.clone();
            let (ns, lease, pod) = (release.namespace.clone(), lease.clone(), pod.clone());
            async move { (lease_holder(&admin, &ns, &lease).await.as_deref() == Some(pod.as_str())).then_some(()) }
        })
        .await;
    }
    let ckps: Api<ClusterKeyProvider> = Api::all(admin.clone());
    wait_ready(&ckps, &providers.trend, &op).await;
    wait_ready(&ckps, &providers.cisco, &op).await;
    for app in apps {
        let (waks, swcs, secrets): (Api<WorkloadApiKey>, Api<SecureWorkloadCredential>, Api<Secret>) =
            (app.api(), app.api(), app.api());
        wait_ready(&waks, "reporting", &op).await;
        let data = secrets.get("reporting").await.unwrap().data.unwrap();
        let issued = String::from_utf8(data["api-secret-key"].0.clone()).unwrap();
        wait_ready(&swcs, "flows", &op).await;
        let data = secrets.get("flows").await.unwrap().data.unwrap();
        assert!(data.contains_key("credentials.json"));
        let known = [issued, sim.info.trend_admin_api_key(), sim.info.cisco_api_secret()];
        assert_no_leaks(app, &op, &known).await;
    }
    // The providers hold their Secrets in the cluster-resource namespace.
    let held: Api<Secret> = Api::namespaced(admin.clone(), &providers.namespace);
    eventually(Duration::from_secs(30), "the providers' Secrets carry the finalizer", || {
        let held = held.clone();
        async move {
            let s = held.get(sim_env::ADMIN_SECRET).await.ok()?;
            s.finalizers().iter().any(|f| f == SECRET_FINALIZER).then_some(())
        }
    })
    .await;
    if let Some(team) = team {
        app_team_gets_a_key_but_no_provider(&admin, team, providers, sim, &op).await;
    }

    // Deletion goes through the finalizers (revoke at the vendor, remove the finalizer) under the same RBAC.
    for app in apps {
        let (waks, swcs): (Api<WorkloadApiKey>, Api<SecureWorkloadCredential>) = (app.api(), app.api());
        let key_id = waks.get("reporting").await.unwrap().status.unwrap().key_id.and_then(|id| id.as_number()).unwrap();
        waks.delete("reporting", &DeleteParams::default()).await.unwrap();
        eventually(WAIT, "WorkloadApiKey deleted through its finalizer", || {
            let waks = waks.clone();
            async move { waks.get_opt("reporting").await.ok()?.is_none().then_some(()) }
        })
        .await;
        let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
        assert!(
            !sim.deep_security.keys().iter().any(|k| k.id == key_id && k.is_live(now)),
            "vendor key {key_id} revoked"
        );
        swcs.delete("flows", &DeleteParams::default()).await.unwrap();
        eventually(WAIT, "SecureWorkloadCredential deleted", || {
            let swcs = swcs.clone();
            async move { swcs.get_opt("flows").await.ok()?.is_none().then_some(()) }
        })
        .await;
    }
    // Unused now, the providers go and let go of their Secrets.
    providers.delete(&admin, &op).await;

    assert_nothing_forbidden(&op);
    // SIGTERM: stops cleanly and releases the Lease (a patch the Role must allow).
    assert_eq!(op.terminate(), Some(0), "clean exit on SIGTERM");
    if let Some(lease) = release.lease_name() {
        assert_eq!(lease_holder(&admin, &release.namespace, &lease).await, None, "Lease released on SIGTERM");
    }
    assert_nothing_forbidden(&op);
}

/// Acceptance 7 (and 1, in the cluster-wide release): `helm install`, then the operator as the chart's ServiceAccount
/// brings a WorkloadApiKey and a SecureWorkloadCredential to Ready through ClusterKeyProviders, cluster-wide and with
/// `watchNamespaces` of two namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_grants_the_operator_enough_rbac_cluster_wide_and_in_two_namespaces() {
    let sim = sim::start(SimOptions::default()).await.expect("start vendor simulator");

    // 1. Default values: the CRDs, a ClusterRole, leader election in the release namespace, the aggregated roles.
    let system = TestNamespace::new("wko-system").await;
    let cluster_wide = Release::install("wko", &system.name, &[]);
    let admin = system.client.clone();
    wait_crds_established(&admin).await;
    let app = TestNamespace::new("chart-app").await;
    let team = TestNamespace::new("chart-team").await;
    let other = TestNamespace::new("chart-other").await;
    let user = cluster_wide.service_account_user();
    let lease = cluster_wide.lease_name().unwrap();
    let (a, s, l) = (app.name.as_str(), system.name.as_str(), lease.as_str());
    for (verb, group, resource, ns, name, allowed) in [
        ("list", "", "secrets", None, None, true),
        ("patch", "", "secrets", Some(s), Some("x"), true),
        ("watch", "workloadkeys.io", "workloadapikeys", None, None, true),
        ("patch", "workloadkeys.io", "secureworkloadcredentials/status", Some(a), Some("x"), true),
        ("update", "workloadkeys.io", "workloadapikeys/finalizers", Some(a), Some("x"), true),
        ("patch", "workloadkeys.io", "clusterkeyproviders", None, Some("x"), true),
        ("patch", "workloadkeys.io", "clusterkeyproviders/status", None, Some("x"), true),
        ("patch", "workloadkeys.io", "keyproviders/status", Some(a), Some("x"), true),
        ("watch", "", "namespaces", None, None, true),
        ("create", "events.k8s.io", "events", Some(a), None, true),
        ("get", "", "namespaces", None, Some(a), true),
        ("create", "coordination.k8s.io", "leases", Some(s), None, true),
        ("patch", "coordination.k8s.io", "leases", Some(s), Some(l), true),
        ("patch", "coordination.k8s.io", "leases", Some(s), Some("someone-elses"), false),
        ("create", "coordination.k8s.io", "leases", Some(a), None, false),
        ("create", "", "pods", Some(a), None, false),
        ("create", "", "secrets", Some(a), None, true),
        ("update", "", "secrets", Some(a), Some("x"), false),
        ("delete", "", "namespaces", None, Some(a), false),
        ("list", "", "configmaps", Some(a), None, false),
        ("create", "workloadkeys.io", "workloadapikeys", Some(a), None, false),
        ("delete", "workloadkeys.io", "workloadapikeys", Some(a), Some("x"), false),
        ("create", "workloadkeys.io", "clusterkeyproviders", None, None, false),
        ("create", "workloadkeys.io", "keyproviders", Some(a), None, false),
        ("create", "rbac.authorization.k8s.io", "rolebindings", Some(a), None, false),
    ] {
        assert_eq!(
            can(&user, verb, group, resource, ns, name).await,
            allowed,
            "{user} {verb} {group}/{resource} in {ns:?} {name:?}"
        );
    }
    let providers = Providers::create(&admin, "wko", &system, &sim, &[a, team.name.as_str()]).await;
    prove_release_rbac(&cluster_wide, None, &[&app], Some(&team), &providers, &sim).await;

    // 2. Two namespaces: a Role + RoleBinding in each, the cluster-scoped ClusterRole, the cluster-resource Role in
    //    the release namespace; the CRDs come from the first release.
    let system2 = TestNamespace::new("wko-apps-system").await;
    let app2 = TestNamespace::new("chart-app2").await;
    let app3 = TestNamespace::new("chart-app3").await;
    let watch = format!("{},{}", app2.name, app3.name);
    let set = format!("watchNamespaces={{{watch}}}");
    let namespaced = Release::install("wko-apps", &system2.name, &["--set", &set, "--set", "crds.install=false"]);
    assert!(!namespaced.manifest.iter().any(|d| d["kind"] == "CustomResourceDefinition"));
    let user2 = namespaced.service_account_user();
    let (a2, a3, o, s2) = (app2.name.as_str(), app3.name.as_str(), other.name.as_str(), system2.name.as_str());
    for (verb, group, resource, ns, name, allowed) in [
        ("list", "", "secrets", Some(a2), None, true),
        ("list", "", "secrets", Some(a3), None, true),
        ("delete", "", "secrets", Some(a3), Some("x"), true),
        ("patch", "workloadkeys.io", "keyproviders", Some(a2), Some("x"), true),
        ("get", "", "namespaces", None, Some(o), true),
        ("watch", "workloadkeys.io", "clusterkeyproviders", None, None, true),
        ("get", "", "secrets", Some(s2), Some("x"), true),
        ("patch", "", "secrets", Some(s2), Some("x"), true),
        ("delete", "", "secrets", Some(s2), Some("x"), false),
        ("create", "", "secrets", Some(s2), None, false),
        ("list", "workloadkeys.io", "keyproviders", Some(s2), None, true),
        ("create", "events.k8s.io", "events", Some("default"), None, true),
        ("create", "events.k8s.io", "events", Some(o), None, false),
        ("list", "", "secrets", None, None, false),
        ("get", "", "secrets", Some(o), Some("x"), false),
        ("get", "", "secrets", Some(s), Some("x"), false),
        ("list", "workloadkeys.io", "workloadapikeys", None, None, false),
        ("list", "workloadkeys.io", "workloadapikeys", Some(o), None, false),
    ] {
        assert_eq!(
            can(&user2, verb, group, resource, ns, name).await,
            allowed,
            "{user2} {verb} {group}/{resource} in {ns:?} {name:?}"
        );
    }
    let providers2 = Providers::create(&admin, "wko-apps", &system2, &sim, &[a2, a3]).await;
    prove_release_rbac(&namespaced, Some(&watch), &[&app2, &app3], None, &providers2, &sim).await;

    // 3. Uninstall keeps the CRDs (helm.sh/resource-policy: keep), so no custom resource is lost with a release.
    namespaced.uninstall();
    cluster_wide.uninstall();
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for name in CRDS {
        let crd = crds.get(name).await.expect("CRD kept after helm uninstall");
        assert!(crd.metadata.deletion_timestamp.is_none(), "{name} is not being deleted");
        assert_eq!(crd.annotations().get("helm.sh/resource-policy").map(String::as_str), Some("keep"));
    }
}
