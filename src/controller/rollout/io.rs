//! Rollout I/O beside the pure decisions (`super`): a target restarted the way `kubectl rollout restart` does it
//! (a pod-template annotation), and its rollout read. Only Deployments, StatefulSets and DaemonSets of the
//! resource's own namespace.

use k8s_openapi::{
    api::apps::v1::{DaemonSet, Deployment, StatefulSet},
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::Rollout;
use crate::{
    api::{ANNOTATION_RESTARTED_AT, RolloutTarget, WorkloadKind},
    controller::{
        context::Context,
        error::{Error, kube_call},
        secret::FIELD_MANAGER,
    },
};

/// Sets our `restartedAt` pod-template annotation to `at`, which rolls the workload out anew. `false` when the
/// workload does not exist.
pub async fn restart(ctx: &Context, namespace: &str, target: &RolloutTarget, at: Timestamp) -> Result<bool, Error> {
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {ANNOTATION_RESTARTED_AT: at.to_string()}}}}});
    let (patch, params) =
        (Patch::Merge(&patch), PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() });
    let (name, client) = (target.name.as_str(), ctx.client.clone());
    let result = match target.kind {
        WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(client, namespace).patch(name, &params, &patch).await.map(drop)
        }
        WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client, namespace).patch(name, &params, &patch).await.map(drop)
        }
        WorkloadKind::DaemonSet => {
            Api::<DaemonSet>::namespaced(client, namespace).patch(name, &params, &patch).await.map(drop)
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(kube_call("restart", &format!("{:?}", target.kind), namespace, name)(e)),
    }
}

/// The rollout of `target` as its status shows it now.
pub async fn observe(ctx: &Context, namespace: &str, target: &RolloutTarget) -> Result<Rollout, Error> {
    let name = target.name.as_str();
    let client = ctx.client.clone();
    let read = match target.kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(client, namespace)
            .get_opt(name)
            .await
            .map(|d| d.map(|d| super::deployment(&d))),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client, namespace)
            .get_opt(name)
            .await
            .map(|s| s.map(|s| super::stateful_set(&s))),
        WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(client, namespace)
            .get_opt(name)
            .await
            .map(|d| d.map(|d| super::daemon_set(&d))),
    };
    let rollout = read.map_err(kube_call("get", &format!("{:?}", target.kind), namespace, name))?;
    Ok(rollout.unwrap_or(Rollout::NotFound))
}
