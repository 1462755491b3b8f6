//! The test control plane is real: CEL admission, garbage collection, RBAC, and the human entry point.

mod support;

use std::{process::Command, time::Duration};

use k8s_openapi::{
    api::core::v1::Secret, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams},
};
use support::{TestNamespace, eventually};

/// A CRD of our own with one CEL rule, for proving the API server evaluates `x-kubernetes-validations`.
fn widget_crd(group: &str) -> CustomResourceDefinition {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {
            "group": group,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                        "x-kubernetes-validations": [{
                            "rule": "self.min <= self.max",
                            "message": "spec.min must not exceed spec.max"
                        }]
                    }}
                }}
            }]
        }
    }))
    .unwrap()
}

async fn install_widgets(client: &kube::Client, group: &str) -> ApiResource {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = widget_crd(group);
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("create CRD: {e}"),
    }
    let name = crd.metadata.name.clone().unwrap();
    eventually(Duration::from_secs(30), "CRD established", || {
        let crds = crds.clone();
        let name = name.clone();
        async move {
            let crd = crds.get(&name).await.ok()?;
            let established = crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        }
    })
    .await;
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", "Widget"), "widgets")
}

fn widget(ar: &ApiResource, name: &str, min: i64, max: i64) -> DynamicObject {
    DynamicObject::new(name, ar).data(serde_json::json!({"spec": {"min": min, "max": max}}))
}

#[tokio::test]
async fn api_server_enforces_cel_rules() {
    let ns = TestNamespace::new("cel").await;
    let ar = install_widgets(&ns.client, "cel.test.workloadkeys.io").await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ar);

    let err = widgets.create(&PostParams::default(), &widget(&ar, "bad", 5, 1)).await.unwrap_err();
    match err {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 422, "{e:?}");
            assert!(e.message.contains("spec.min must not exceed spec.max"), "message: {}", e.message);
        }
        other => panic!("expected a 422 from the API server, got {other}"),
    }
    widgets.create(&PostParams::default(), &widget(&ar, "good", 1, 5)).await.expect("valid object accepted");
}

#[tokio::test]
async fn garbage_collector_deletes_owned_secrets() {
    let ns = TestNamespace::new("gc").await;
    let ar = install_widgets(&ns.client, "gc.test.workloadkeys.io").await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ar);
    let owner = widgets.create(&PostParams::default(), &widget(&ar, "owner", 1, 2)).await.unwrap();

    let secrets: Api<Secret> = ns.api();
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "owned",
            "ownerReferences": [{
                "apiVersion": ar.api_version, "kind": "Widget",
                "name": "owner", "uid": owner.metadata.uid.clone().unwrap(),
                "controller": true, "blockOwnerDeletion": true
            }]
        },
        "stringData": {"k": "v"}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    widgets.delete("owner", &DeleteParams::default()).await.unwrap();

    eventually(Duration::from_secs(60), "owned Secret garbage-collected", || {
        let secrets = secrets.clone();
        async move { matches!(secrets.get_opt("owned").await, Ok(None)).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn rbac_refuses_a_service_account_without_rights() {
    let ns = TestNamespace::new("rbac").await;
    let who = format!("system:serviceaccount:{}:nobody", ns.name);
    let client = kube::Client::try_from(support::config_as(Some(&who)).await).unwrap();
    let secrets: Api<Secret> = Api::namespaced(client, &ns.name);
    let secret: Secret = serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
    match secrets.create(&PostParams::default(), &secret).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403, "{e:?}");
            assert_eq!(e.reason, "Forbidden");
        }
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
    // The admin identity can.
    ns.api::<Secret>().create(&PostParams::default(), &secret).await.expect("admin may create");
}

/// `scripts/dev-cluster up` prints a kubeconfig that kubectl can use; `down` leaves no process behind.
#[test]
fn dev_cluster_entry_point_up_and_down() {
    let dir = std::env::temp_dir().join(format!("wko-devcluster-test-{}", std::process::id()));
    let kubeconfig = support::dev_cluster_up(&dir, Some(std::process::id()));
    assert!(kubeconfig.is_absolute());
    let pids: Vec<u32> = std::fs::read_to_string(dir.join("pids"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(pids.len(), 3, "etcd, kube-apiserver, kube-controller-manager");

    let out =
        Command::new(support::kubectl()).arg("--kubeconfig").arg(&kubeconfig).args(["get", "ns"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "kubectl failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.lines().any(|l| l.starts_with("default ")), "no default namespace in:\n{text}");

    support::dev_cluster_down(&dir);
    for pid in pids {
        assert!(!is_running(pid), "process {pid} survived down");
    }
    assert!(!dir.exists(), "state directory removed");
}

/// Alive and not a zombie (an exited child not yet reaped by init no longer runs).
fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}
