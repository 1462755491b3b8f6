//! The chart's ValidatingAdmissionPolicies on the real API server (issue 19 §3 and §5): `helm install` of the chart,
//! then an app-team user bound only to the built-in `edit` role. What the named provider's `allowedNamespaces` and
//! `policy` refuse is refused at admission (and by `kubectl apply --dry-run=server`) with the message the runtime's
//! `PolicyViolation` condition shows; the operator's finalizer cannot be removed from a resource recording a live key
//! except by the operator and the override groups. This binary has its own control plane: the chart's policies
//! apply cluster-wide.

mod support;

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use k8s_openapi::{
    api::rbac::v1::RoleBinding, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{TestNamespace, config_as, eventually, helm_bin, kubectl};
use workload_key_operator::{
    api::{ClusterKeyProvider, IssuePolicy, KeyProvider, RoleRef, SecureWorkloadCredential, WorkloadApiKey},
    controller::provider::policy::{self, Overlap},
};

const ALICE: &str = "alice@app-team";

async fn client_as(user: &str) -> Client {
    let config: Config = config_as(Some(user)).await;
    Client::try_from(config).unwrap()
}

fn wak(name: &str, spec: Value) -> WorkloadApiKey {
    serde_json::from_value(json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "WorkloadApiKey", "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

fn via(kind: &str, provider: &str, extra: Value) -> Value {
    let mut spec = json!({"providerRef": {"kind": kind, "name": provider}, "role": {"name": "Auditor"},
                          "rotation": {"gracePeriod": "1m"}});
    support::merge(&mut spec, &extra);
    spec
}

/// A server-side dry-run create as `api`'s user: `Ok` when admitted, else the refusal's message.
async fn dry_run(api: &Api<WorkloadApiKey>, obj: &WorkloadApiKey) -> Result<(), String> {
    let pp = PostParams { dry_run: true, ..Default::default() };
    match api.create(&pp, obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) => Err(e.message),
        Err(e) => panic!("dry run: {e}"),
    }
}

/// `kubectl apply --dry-run=server -f -` of `doc` as `user`: (success, stderr).
fn kubectl_dry_run(kubeconfig: &std::path::Path, user: &str, doc: &Value) -> (bool, String) {
    let mut child = Command::new(kubectl())
        .args(["--kubeconfig", kubeconfig.to_str().unwrap(), "--as", user, "apply", "--dry-run=server", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child.stdin.take().unwrap().write_all(doc.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_refuses_at_admission_what_the_provider_refuses_and_keeps_the_finalizer() {
    let cp = tokio::task::spawn_blocking(support::control_plane).await.unwrap();
    let system = TestNamespace::new("vap-system").await;
    let admin = system.client.clone();
    let out = Command::new(helm_bin())
        .args(["install", "wko", support::repo_root().join("charts/workload-key-operator").to_str().unwrap()])
        .args(["--namespace", &system.name, "--kubeconfig", cp.kubeconfig.to_str().unwrap()])
        .output()
        .expect("run helm");
    assert!(out.status.success(), "helm install:\n{}", String::from_utf8_lossy(&out.stderr));
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    eventually(Duration::from_secs(30), "CRDs established", || async {
        let crd = crds.get("workloadapikeys.workloadkeys.io").await.ok()?;
        let established = crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;

    // The app team: `edit` in its namespace (the chart aggregates the resources into it), nothing else.
    let app = TestNamespace::new("vap-app").await;
    let other = TestNamespace::new("vap-other").await;
    for ns in [&app, &other] {
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "app-team-edit"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": ALICE}]
        }))
        .unwrap();
        ns.api::<RoleBinding>().create(&PostParams::default(), &binding).await.unwrap();
    }

    // The platform's provider and its policy.
    let provider = format!("{}-shared", system.name);
    let policy = json!({
        "roles": [{"name": "Auditor"}, {"id": 7}], "maxExpiresAfter": "48h", "maxGracePeriod": "5m",
        "maxRolloutTimeout": "10m", "deletionPolicies": ["Delete"]
    });
    let ckp: ClusterKeyProvider = serde_json::from_value(json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "ClusterKeyProvider", "metadata": {"name": provider},
        "spec": {"trend": {"url": "https://127.0.0.1:9/api", "apiKeySecretRef": {"name": "admin"}},
                 "allowedNamespaces": {"names": [app.name]}, "policy": policy}
    }))
    .unwrap();
    Api::<ClusterKeyProvider>::all(admin.clone())
        .patch(&provider, &PatchParams::apply("vap-test"), &Patch::Apply(&ckp))
        .await
        .unwrap();
    let policy: IssuePolicy = serde_json::from_value(policy).unwrap();
    let violation = |problem: String| format!("ClusterKeyProvider/{provider} refuses this request: {problem}");

    // Each refusal: the message the runtime's PolicyViolation condition shows (the same pure checks make it).
    let alice = client_as(ALICE).await;
    let waks: Api<WorkloadApiKey> = Api::namespaced(alice.clone(), &app.name);
    // The chart's roles reach `edit` through aggregation, a moment after the install.
    eventually(Duration::from_secs(30), "alice may create WorkloadApiKeys", || async {
        dry_run(&waks, &wak("w", via("ClusterKeyProvider", &provider, json!({})))).await.ok()
    })
    .await;
    let full_access = RoleRef { name: Some("Full Access".into()), id: None };
    let cases = [
        (json!({"role": {"name": "Full Access"}}), violation(policy::check_role(&policy, &full_access).unwrap_err())),
        (json!({"expiresAfter": "72h"}), violation(policy::effective_expires_after(&policy, Some("72h")).unwrap_err())),
        (
            json!({"rotation": {"gracePeriod": "1h"}}),
            violation(
                policy::check_overlap(&policy, Overlap::GracePeriod, Some("1h"), Duration::from_secs(600)).unwrap_err(),
            ),
        ),
        (
            json!({"rotation": {"gracePeriod": null}}),
            violation(
                policy::check_overlap(&policy, Overlap::GracePeriod, None, Duration::from_secs(600)).unwrap_err(),
            ),
        ),
        (
            json!({"rotation": {"rolloutTimeout": "1h"}}),
            violation(
                policy::check_overlap(&policy, Overlap::RolloutTimeout, Some("1h"), Duration::from_secs(1800))
                    .unwrap_err(),
            ),
        ),
        (
            json!({"deletionPolicy": "Retain"}),
            violation(
                policy::check_deletion_policy(&policy, workload_key_operator::api::DeletionPolicy::Retain).unwrap_err(),
            ),
        ),
    ];
    // The apiserver reads policy parameters from an informer: the new provider is in force a moment later.
    eventually(Duration::from_secs(30), "the provider's policy in force", || async {
        dry_run(&waks, &wak("w", via("ClusterKeyProvider", &provider, cases[0].0.clone()))).await.err()
    })
    .await;
    for (extra, expected) in &cases {
        let message = dry_run(&waks, &wak("w", via("ClusterKeyProvider", &provider, extra.clone())))
            .await
            .expect_err(&format!("{extra} must be refused"));
        assert!(message.ends_with(expected.as_str()), "{extra}:\n{message}\nwanted: {expected}");
    }
    dry_run(&waks, &wak("w", via("ClusterKeyProvider", &provider, json!({})))).await.expect("within the policy");
    // Another provider's policy does not apply; a namespace the provider does not allow is refused.
    dry_run(&waks, &wak("w", via("ClusterKeyProvider", "no-such-provider", json!({"expiresAfter": "72h"}))))
        .await
        .expect("no such provider: the operator reports it at runtime");
    let elsewhere: Api<WorkloadApiKey> = Api::namespaced(alice.clone(), &other.name);
    let message = dry_run(&elsewhere, &wak("w", via("ClusterKeyProvider", &provider, json!({})))).await.unwrap_err();
    let runtime_prefix = format!("ClusterKeyProvider/{provider} does not allow namespace {}", other.name);
    assert!(message.contains(&runtime_prefix) && message.contains(&app.name), "{message}");

    // `kubectl apply --dry-run=server` is how an app team checks a request.
    let mut doc =
        serde_json::to_value(wak("w", via("ClusterKeyProvider", &provider, json!({"expiresAfter": "72h"})))).unwrap();
    doc["metadata"]["namespace"] = json!(app.name);
    let (ok, stderr) = kubectl_dry_run(&cp.kubeconfig, ALICE, &doc);
    assert!(!ok && stderr.contains(&cases[1].1), "{stderr}");
    doc["spec"]["expiresAfter"] = json!("24h");
    let (ok, stderr) = kubectl_dry_run(&cp.kubeconfig, ALICE, &doc);
    assert!(ok, "{stderr}");

    // A Cisco provider's floor on verifyInterval, for a SecureWorkloadCredential.
    let cisco = format!("{}-cisco", system.name);
    let ckp: ClusterKeyProvider = serde_json::from_value(json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "ClusterKeyProvider", "metadata": {"name": cisco},
        "spec": {"cisco": {"url": "https://127.0.0.1:9"}, "allowedNamespaces": {"names": [app.name]},
                 "policy": {"minVerifyInterval": "15m"}}
    }))
    .unwrap();
    Api::<ClusterKeyProvider>::all(admin.clone())
        .patch(&cisco, &PatchParams::apply("vap-test"), &Patch::Apply(&ckp))
        .await
        .unwrap();
    let swcs: Api<SecureWorkloadCredential> = Api::namespaced(alice.clone(), &app.name);
    let swc = |interval: &str| -> SecureWorkloadCredential {
        serde_json::from_value(json!({
            "apiVersion": "workloadkeys.io/v1alpha1", "kind": "SecureWorkloadCredential", "metadata": {"name": "s"},
            "spec": {"providerRef": {"kind": "ClusterKeyProvider", "name": cisco},
                     "source": {"existing": {"secretRef": {"name": "ui-key"}}}, "verifyInterval": interval}
        }))
        .unwrap()
    };
    let pp = PostParams { dry_run: true, ..Default::default() };
    let message = eventually(Duration::from_secs(30), "verifyInterval 10m refused", || async {
        match swcs.create(&pp, &swc("10m")).await {
            Err(kube::Error::Api(e)) => Some(e.message),
            Ok(_) => None,
            Err(e) => panic!("dry run: {e}"),
        }
    })
    .await;
    let floor = IssuePolicy { min_verify_interval: Some("15m".into()), ..Default::default() };
    let problem = policy::effective_verify_interval(&floor, Some("10m"), Duration::from_secs(3600)).unwrap_err();
    let expected = format!("ClusterKeyProvider/{cisco} refuses this request: {problem}");
    assert!(message.ends_with(&expected), "{message}\nwanted: {expected}");
    swcs.create(&pp, &swc("20m")).await.expect("a verifyInterval above the floor");

    // A KeyProvider of the namespace is the parameter for resources naming it.
    let kp: KeyProvider = serde_json::from_value(json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "KeyProvider", "metadata": {"name": "team"},
        "spec": {"trend": {"url": "https://127.0.0.1:9/api", "apiKeySecretRef": {"name": "admin"}},
                 "policy": {"roles": [{"name": "Auditor"}]}}
    }))
    .unwrap();
    app.api::<KeyProvider>().patch("team", &PatchParams::apply("vap-test"), &Patch::Apply(&kp)).await.unwrap();
    let message = eventually(Duration::from_secs(30), "the KeyProvider's policy in force", || async {
        dry_run(&waks, &wak("w", via("KeyProvider", "team", json!({"role": {"name": "Full Access"}})))).await.err()
    })
    .await;
    let only_auditor =
        IssuePolicy { roles: Some(vec![RoleRef { name: Some("Auditor".into()), id: None }]), ..Default::default() };
    let expected = format!(
        "KeyProvider/team refuses this request: {}",
        policy::check_role(&only_auditor, &full_access).unwrap_err()
    );
    assert!(message.ends_with(&expected), "{message}");
    dry_run(&waks, &wak("w", via("KeyProvider", "team", json!({})))).await.expect("within the KeyProvider's policy");

    // The finalizer: a resource recording a live key keeps it against the app team; an operator and an
    // administrator may remove it.
    let admin_waks: Api<WorkloadApiKey> = app.api();
    let mut live = wak("live", via("ClusterKeyProvider", &provider, json!({})));
    live.metadata.finalizers = Some(vec!["workloadkeys.io/revoke".into()]);
    admin_waks.create(&PostParams::default(), &live).await.unwrap();
    let status = json!({"status": {"keyId": 42, "keyName": "live"}});
    admin_waks.patch_status("live", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    let drop_finalizer = json!({"metadata": {"finalizers": null}});
    let refused = waks.patch("live", &PatchParams::default(), &Patch::Merge(&drop_finalizer)).await;
    let message = match refused {
        Err(kube::Error::Api(e)) => e.message,
        other => panic!("the app team removed the finalizer: {other:?}"),
    };
    assert!(
        message
            .contains("the finalizer workloadkeys.io/revoke stays while WorkloadApiKey live records a live vendor key"),
        "{message}"
    );
    // Other edits by the app team still go through.
    let label = json!({"metadata": {"labels": {"team": "payments"}}});
    waks.patch("live", &PatchParams::default(), &Patch::Merge(&label)).await.expect("a label is fine");
    let operator_sa = format!("system:serviceaccount:{}:wko-workload-key-operator", system.name);
    let operator = client_as(&operator_sa).await;
    let as_operator: Api<WorkloadApiKey> = Api::namespaced(operator, &app.name);
    as_operator.patch("live", &PatchParams::default(), &Patch::Merge(&drop_finalizer)).await.expect("the operator may");
    let restore = json!({"metadata": {"finalizers": ["workloadkeys.io/revoke"]}});
    admin_waks.patch("live", &PatchParams::default(), &Patch::Merge(&restore)).await.unwrap();
    admin_waks
        .patch("live", &PatchParams::default(), &Patch::Merge(&drop_finalizer))
        .await
        .expect("system:masters may");
    // Without a live key (nothing recorded) the finalizer is the app team's to remove.
    admin_waks.patch("live", &PatchParams::default(), &Patch::Merge(&restore)).await.unwrap();
    let cleared = json!({"status": {"keyId": null, "keyName": null}});
    admin_waks.patch_status("live", &PatchParams::default(), &Patch::Merge(&cleared)).await.unwrap();
    waks.patch("live", &PatchParams::default(), &Patch::Merge(&drop_finalizer)).await.expect("no live key");
}
