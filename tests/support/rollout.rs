//! "Wait until this workload's rollout is complete", the way `kubectl rollout status` decides it, and stricter for
//! Deployments: no pod of an older ReplicaSet is left (not even a terminating one).
//! Needs a cluster whose pods run: [`super::control_plane_with_nodes`] or [`super::control_plane_with_real_node`].
#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
    core::v1::Pod,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};

/// A workload with a rollout: Deployment, StatefulSet or DaemonSet.
pub trait Workload:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + serde::Serialize
    + Send
    + Sync
    + 'static
{
    /// `None` when the rollout is complete, else what it still waits for.
    fn pending(&self) -> Option<String>;
}

fn generation_pending(meta: &kube::api::ObjectMeta, observed: Option<i64>) -> Option<String> {
    let generation = meta.generation.unwrap_or(0);
    (observed.unwrap_or(0) < generation)
        .then(|| format!("observedGeneration {} < generation {generation}", observed.unwrap_or(0)))
}

impl Workload for Deployment {
    fn pending(&self) -> Option<String> {
        let st = self.status.clone().unwrap_or_default();
        let want = self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        generation_pending(&self.metadata, st.observed_generation).or_else(|| {
            let (updated, total, available) =
                (st.updated_replicas.unwrap_or(0), st.replicas.unwrap_or(0), st.available_replicas.unwrap_or(0));
            (updated != want || total != want || available != want)
                .then(|| format!("replicas {want}: updated {updated}, total {total}, available {available}"))
        })
    }
}

impl Workload for StatefulSet {
    fn pending(&self) -> Option<String> {
        let st = self.status.clone().unwrap_or_default();
        let want = self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        generation_pending(&self.metadata, st.observed_generation).or_else(|| {
            let (ready, available, updated) =
                (st.ready_replicas.unwrap_or(0), st.available_replicas.unwrap_or(0), st.updated_replicas.unwrap_or(0));
            if ready != want || available != want || st.replicas != want {
                return Some(format!("replicas {want}: total {}, ready {ready}, available {available}", st.replicas));
            }
            let rolling = self
                .spec
                .as_ref()
                .and_then(|s| s.update_strategy.as_ref())
                .and_then(|u| u.type_.as_deref())
                .is_none_or(|t| t == "RollingUpdate");
            (rolling && (updated != want || st.current_revision != st.update_revision)).then(|| {
                format!("updated {updated} of {want}, revision {:?} → {:?}", st.current_revision, st.update_revision)
            })
        })
    }
}

impl Workload for DaemonSet {
    fn pending(&self) -> Option<String> {
        let st = self.status.clone().unwrap_or_default();
        generation_pending(&self.metadata, st.observed_generation).or_else(|| {
            let want = st.desired_number_scheduled;
            let (updated, ready, available) =
                (st.updated_number_scheduled.unwrap_or(0), st.number_ready, st.number_available.unwrap_or(0));
            (want == 0 || updated != want || ready != want || available != want)
                .then(|| format!("desired {want}: updated {updated}, ready {ready}, available {available}"))
        })
    }
}

/// Waits until the rollout of `name` is complete and returns the workload. For a Deployment, also until every pod
/// it selects belongs to its newest ReplicaSet. Panics after `timeout` saying what it still waited for.
pub async fn wait_rollout<K: Workload>(client: &Client, namespace: &str, name: &str, timeout: Duration) -> K {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let why = match api.get(name).await {
            Ok(obj) => match obj.pending() {
                None => match old_pods_left(client, namespace, &obj).await {
                    None => return obj,
                    Some(why) => why,
                },
                Some(why) => why,
            },
            Err(e) => format!("get: {e}"),
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("rollout of {} {namespace}/{name} not complete after {timeout:?}: {why}", K::kind(&()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// For a Deployment: the pods (terminating ones included) not of its newest ReplicaSet, if any.
async fn old_pods_left<K: Workload>(client: &Client, namespace: &str, obj: &K) -> Option<String> {
    let value = serde_json::to_value(obj).ok()?;
    if K::kind(&()) != "Deployment" {
        return None;
    }
    let deployment: Deployment = serde_json::from_value(value).ok()?;
    let revision = deployment.annotations().get("deployment.kubernetes.io/revision").cloned();
    let selector = label_selector(&deployment);
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(&selector);
    let sets = match sets.list(&lp).await {
        Ok(l) => l.items,
        Err(e) => return Some(format!("list ReplicaSets: {e}")),
    };
    let newest = sets.iter().find(|rs| {
        rs.owner_references().iter().any(|o| o.uid == deployment.uid().unwrap_or_default())
            && rs.annotations().get("deployment.kubernetes.io/revision") == revision.as_ref()
    });
    let Some(newest) = newest else {
        return Some(format!("no ReplicaSet of revision {revision:?} yet"));
    };
    let newest_uid = newest.uid().unwrap_or_default();
    let pods = match pods.list(&lp).await {
        Ok(l) => l.items,
        Err(e) => return Some(format!("list pods: {e}")),
    };
    let old: Vec<String> = pods
        .iter()
        .filter(|p| !p.owner_references().iter().any(|o| o.uid == newest_uid))
        .map(|p| p.name_any())
        .collect();
    (!old.is_empty()).then(|| format!("pods of an older ReplicaSet left: {old:?}"))
}

/// The Deployment's `matchLabels` as a label selector string.
pub fn label_selector(deployment: &Deployment) -> String {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

/// What `kubectl rollout restart` does: a pod-template annotation with the current time. Works for Deployments,
/// StatefulSets and DaemonSets; returns the workload's new generation.
pub async fn restart<K: Workload>(client: &Client, namespace: &str, name: &str) -> i64 {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let now = jiff::Timestamp::now().to_string();
    let patch = serde_json::json!({
        "spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}
    });
    let obj = api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("restart patch");
    obj.meta().generation.expect("generation")
}
