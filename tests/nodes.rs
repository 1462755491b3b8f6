//! Workloads on simulated nodes: a real control plane with kube-scheduler and kwok (`dev-cluster up --nodes 2`).
//! Deployments, StatefulSets and DaemonSets roll out as on a real cluster, and a `kubectl rollout restart` replaces
//! every pod of a Deployment.

mod support;

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, StatefulSet},
    core::v1::{Node, Pod},
};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use support::{SIMULATED_NODES, TestNamespace, rollout};

const ROLLOUT: Duration = Duration::from_secs(90);

fn pod_template(app: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1", "imagePullPolicy": "Never"}]}
    })
}

fn workload<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: serde_json::Value) -> K {
    let mut obj = serde_json::json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": pod_template(name)}
    });
    support::merge(&mut obj["spec"], &spec);
    serde_json::from_value(obj).unwrap()
}

#[tokio::test]
async fn deployments_statefulsets_and_daemonsets_roll_out_on_simulated_nodes() {
    support::control_plane_with_nodes();
    let ns = TestNamespace::new("nodes").await;
    let client = ns.client.clone();

    let nodes: Api<Node> = Api::all(client.clone());
    let kwok_nodes = nodes.list(&ListParams::default().labels("type=kwok")).await.unwrap().items;
    assert_eq!(kwok_nodes.len() as u32, SIMULATED_NODES);

    let pp = PostParams::default();
    ns.api::<Deployment>()
        .create(&pp, &workload("Deployment", "web", serde_json::json!({"replicas": 3})))
        .await
        .unwrap();
    ns.api::<StatefulSet>()
        .create(&pp, &workload("StatefulSet", "db", serde_json::json!({"replicas": 2, "serviceName": "db"})))
        .await
        .unwrap();
    ns.api::<DaemonSet>().create(&pp, &workload("DaemonSet", "agent", serde_json::json!({}))).await.unwrap();

    let deploy: Deployment = rollout::wait_rollout(&client, &ns.name, "web", ROLLOUT).await;
    let sts: StatefulSet = rollout::wait_rollout(&client, &ns.name, "db", ROLLOUT).await;
    let ds: DaemonSet = rollout::wait_rollout(&client, &ns.name, "agent", ROLLOUT).await;
    assert_eq!(deploy.status.unwrap().available_replicas, Some(3));
    assert_eq!(sts.status.unwrap().available_replicas, Some(2));
    assert_eq!(ds.status.unwrap().number_available, Some(SIMULATED_NODES as i32), "one pod per node");

    // The pods really were scheduled onto the simulated nodes and are Running and Ready.
    let pods = ns.api::<Pod>().list(&ListParams::default()).await.unwrap().items;
    assert_eq!(pods.len(), 3 + 2 + SIMULATED_NODES as usize);
    for pod in &pods {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        assert!(node.starts_with("kwok-node-"), "pod {:?} on node {node:?}", pod.metadata.name);
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(status.conditions.as_ref().unwrap().iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    }
    let old_pods: Vec<String> = pods
        .iter()
        .filter(|p| p.metadata.labels.as_ref().unwrap()["app"] == "web")
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();

    // `kubectl rollout restart`: the Deployment rolls out completely onto new pods.
    let generation = rollout::restart::<Deployment>(&client, &ns.name, "web").await;
    let deploy: Deployment = rollout::wait_rollout(&client, &ns.name, "web", ROLLOUT).await;
    let status = deploy.status.unwrap();
    assert!(status.observed_generation.unwrap() >= generation);
    assert_eq!((status.updated_replicas, status.available_replicas, status.replicas), (Some(3), Some(3), Some(3)));
    let pods = ns.api::<Pod>().list(&ListParams::default().labels("app=web")).await.unwrap().items;
    assert_eq!(pods.len(), 3);
    for pod in &pods {
        assert!(!old_pods.contains(pod.metadata.name.as_ref().unwrap()), "a pod from before the restart is left");
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        assert!(annotations.contains_key("kubectl.kubernetes.io/restartedAt"));
    }
}
