//! Rotation that waits for the rollout (issue #13), end to end: a real control plane with kube-scheduler and kwok
//! nodes, so Deployments and StatefulSets really roll out; the vendor simulators; the operator as its own process.
//! The operator restarts the workloads of `spec.secret.rolloutRestartTargets` once per change of the Secret's data
//! and revokes a replaced key only after their rollouts complete (or `rotation.rolloutTimeout` passes). The operator
//! runs as the chart's ServiceAccount with only the chart's RBAC (default values): it is sufficient for all of this.
#![cfg(feature = "sim")]

mod support;

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::Pod,
    },
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{
    eventually, merge,
    operator::assert_nothing_forbidden,
    rollout::{self, Workload},
    sim_env::{self, Env},
};
use workload_key_operator::api::{ANNOTATION_RESTARTED_AT, SecureWorkloadCredential, WorkloadApiKey};

const WAIT: Duration = Duration::from_secs(90);

/// A workload of `kind` whose pods use Secret `secret` (env for a Deployment, a volume otherwise), merged with
/// `extra`. kwok runs the pods; the image is never pulled.
fn workload<K: serde::de::DeserializeOwned>(kind: &str, name: &str, secret: &str, extra: serde_json::Value) -> K {
    let container = if kind == "Deployment" {
        json!({"name": "app", "image": "registry.invalid/app:1", "envFrom": [{"secretRef": {"name": secret}}]})
    } else {
        json!({"name": "app", "image": "registry.invalid/app:1", "volumeMounts": [{"name": "keys", "mountPath": "/keys"}]})
    };
    let mut obj = json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container], "volumes": [{"name": "keys", "secret": {"secretName": secret}}]}
            }
        }
    });
    merge(&mut obj["spec"], &extra);
    serde_json::from_value(obj).unwrap()
}

/// The pod-template annotation the operator sets, and the workload's generation (one more per template change).
async fn restarts<K: Workload>(api: &Api<K>, name: &str) -> (Option<String>, i64) {
    let obj = api.get(name).await.unwrap();
    let value = serde_json::to_value(&obj).unwrap();
    let at = value["spec"]["template"]["metadata"]["annotations"][ANNOTATION_RESTARTED_AT].as_str().map(str::to_owned);
    (at, obj.meta().generation.unwrap())
}

/// UIDs of the pods of `app`, terminating ones included.
async fn pod_uids(pods: &Api<Pod>, app: &str) -> BTreeSet<String> {
    let list = pods.list(&ListParams::default().labels(&format!("app={app}"))).await.unwrap();
    list.items.iter().filter_map(|p| p.uid()).collect()
}

/// The notes of the Events of `reason` in the namespace.
async fn events(env: &Env, reason: &str) -> Vec<String> {
    support::event_notes(&env.ns, reason).await
}

fn ready_message<K: serde::Serialize>(obj: &K) -> String {
    let value = serde_json::to_value(obj).unwrap();
    value["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_owned()
}

async fn rotate<K>(api: &Api<K>, name: &str, value: &str)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {"annotations": {"workloadkeys.io/rotate": value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
}

impl Env {
    fn waks(&self) -> Api<WorkloadApiKey> {
        self.ns.api()
    }

    async fn apply_wak(&self, name: &str, extra: serde_json::Value) {
        let mut spec = sim_env::wak_spec("rollout test");
        merge(&mut spec, &extra);
        self.waks()
            .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&sim_env::wak(name, spec)))
            .await
            .expect("apply WorkloadApiKey");
    }

    /// Live Trend keys whose description carries the resource's UID.
    fn live_keys(&self, uid: &str) -> Vec<i64> {
        sim_env::live_trend_key_ids(&self.sim, uid)
    }
}

fn secs(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_rotation_restarts_each_target_once_and_revokes_the_old_key_after_the_rollout() {
    support::control_plane_with_nodes();
    let env = Env::start_as_chart_service_account("ro-replace").await;
    let (client, ns) = (env.ns.client.clone(), env.ns.name.clone());
    let (deployments, sets, pods) = (env.ns.api::<Deployment>(), env.ns.api::<StatefulSet>(), env.ns.api::<Pod>());
    // Slow enough rollouts that the grace period ends long before them: one new pod at a time, each Ready a few
    // seconds before the next one starts.
    let rolling = json!({"replicas": 3, "minReadySeconds": 3,
                         "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}});
    let pp = PostParams::default();
    deployments.create(&pp, &workload("Deployment", "web", "app-keys", rolling)).await.unwrap();
    let sts = json!({"replicas": 2, "serviceName": "db", "minReadySeconds": 2});
    sets.create(&pp, &workload("StatefulSet", "db", "app-keys", sts)).await.unwrap();
    let _: Deployment = rollout::wait_rollout(&client, &ns, "web", WAIT).await;
    let _: StatefulSet = rollout::wait_rollout(&client, &ns, "db", WAIT).await;

    let grace = Duration::from_secs(4);
    env.apply_wak(
        "app",
        json!({
            "rotation": {"strategy": "Replace", "gracePeriod": "4s"},
            "secret": {"name": "app-keys", "rolloutRestartTargets": [
                {"kind": "Deployment", "name": "web"}, {"kind": "StatefulSet", "name": "db"}
            ]}
        }),
    )
    .await;
    let wak = support::wait_condition(&env.waks(), "app", "Ready", "True", "Ready", WAIT).await;
    let uid = wak.uid().unwrap();
    let status = wak.status.clone().unwrap();
    let old_key = status.key_id.and_then(|id| id.as_number()).unwrap();
    // The first write restarts nothing: nobody used the Secret before.
    let baseline = status.rollout.clone().expect("the first write is recorded");
    assert_eq!(Some(&baseline.secret_hash), status.secret_hash.as_ref());
    assert!(baseline.started_at.is_none() && baseline.complete && baseline.targets.is_empty());
    assert_eq!(restarts(&deployments, "web").await, (None, 1));
    assert_eq!(restarts(&sets, "db").await, (None, 1));
    let old_pods: BTreeSet<String> =
        pod_uids(&pods, "web").await.into_iter().chain(pod_uids(&pods, "db").await).collect();
    assert_eq!(old_pods.len(), 5);

    // Replace rotation through the annotation.
    let rotated_at = Timestamp::now();
    rotate(&env.waks(), "app", "1").await;
    let (mut revoked_at, mut old_pods_gone_at, mut rollout_done_at, mut waiting_message) = (None, None, None, None);
    let deadline = tokio::time::Instant::now() + WAIT;
    while revoked_at.is_none() || rollout_done_at.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "rotation and rollout not done in {WAIT:?}");
        let now = Timestamp::now();
        if revoked_at.is_none() && !env.live_keys(&uid).contains(&old_key) {
            revoked_at = Some(now);
        }
        let current: BTreeSet<String> =
            pod_uids(&pods, "web").await.into_iter().chain(pod_uids(&pods, "db").await).collect();
        if old_pods_gone_at.is_none() && current.is_disjoint(&old_pods) {
            old_pods_gone_at = Some(now);
        }
        let (web, db) = (deployments.get("web").await.unwrap(), sets.get("db").await.unwrap());
        if rollout_done_at.is_none() && old_pods_gone_at.is_some() && web.pending().is_none() && db.pending().is_none()
        {
            rollout_done_at = Some(now);
        }
        // Past the grace period and before the rollout ends, status says why the old key still exists.
        if revoked_at.is_none() && secs(rotated_at, now) > grace.as_secs_f64() + 1.0 && waiting_message.is_none() {
            let w = env.waks().get("app").await.unwrap();
            let message = ready_message(&w);
            if message.contains("kept until the rollout of") {
                let rollout = w.status.unwrap().rollout.unwrap();
                assert!(!rollout.complete);
                assert_eq!(rollout.targets.len(), 2);
                assert!(rollout.targets.iter().all(|t| t.restarted_at.is_some()));
                waiting_message = Some(message);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (revoked_at, old_pods_gone_at, rollout_done_at) =
        (revoked_at.unwrap(), old_pods_gone_at.unwrap(), rollout_done_at.unwrap());
    eprintln!(
        "rotation at {rotated_at}; gracePeriod {grace:?}; last old pod gone at {old_pods_gone_at} (+{:.1}s); \
         rollouts complete at {rollout_done_at} (+{:.1}s); old key {old_key} revoked at {revoked_at} (+{:.1}s)",
        secs(rotated_at, old_pods_gone_at),
        secs(rotated_at, rollout_done_at),
        secs(rotated_at, revoked_at)
    );
    eprintln!("Ready while waiting: {waiting_message:?}");
    assert!(secs(rotated_at, revoked_at) >= grace.as_secs_f64(), "revoked before the grace period ended");
    assert!(
        revoked_at >= old_pods_gone_at,
        "revoked at {revoked_at}, before the last old pod went at {old_pods_gone_at}"
    );
    assert!(secs(rotated_at, old_pods_gone_at) > grace.as_secs_f64() + 1.0, "the rollout outlasts the grace period");
    assert!(waiting_message.is_some(), "Ready's message named the rollout while the old key was kept");

    // Each target was restarted exactly once, with the time status records.
    let w = support::wait_condition(&env.waks(), "app", "Ready", "True", "Ready", WAIT).await;
    let status = w.status.unwrap();
    assert_ne!(status.key_id, Some(old_key.into()));
    assert!(status.retiring_keys.is_empty());
    let rollout = status.rollout.unwrap();
    assert!(rollout.complete && !rollout.timed_out);
    assert_eq!(Some(&rollout.secret_hash), status.secret_hash.as_ref());
    let (web_at, web_gen) = restarts(&deployments, "web").await;
    let (db_at, db_gen) = restarts(&sets, "db").await;
    assert_eq!((web_gen, db_gen), (2, 2), "one restart each");
    for (target, at) in rollout.targets.iter().zip([web_at, db_at]) {
        // Status shows whole seconds; the annotation keeps the fraction.
        let at: Timestamp = at.expect("our annotation").parse().unwrap();
        assert_eq!(target.restarted_at.as_ref().map(|t| t.0.as_second()), Some(at.as_second()), "{}", target.name);
        assert!(target.complete);
    }
    // (Events of one reason on one object are patched into a series: the generations above count the restarts.)
    assert!(!events(&env, "RolloutRestarted").await.is_empty());
    let revoked = events(&env, "KeyRevoked").await;
    assert!(revoked.iter().any(|n| n.contains(&old_key.to_string())), "{revoked:?}");
    // The chart's RBAC refused the operator nothing.
    assert_nothing_forbidden(&env.op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerate_and_drift_repair_restart_the_targets_and_resyncs_or_a_restart_do_not() {
    support::control_plane_with_nodes();
    let mut env = Env::start_as_chart_service_account("ro-regen").await;
    let (client, ns) = (env.ns.client.clone(), env.ns.name.clone());
    let deployments = env.ns.api::<Deployment>();
    deployments
        .create(&PostParams::default(), &workload("Deployment", "web", "keys", json!({"replicas": 2})))
        .await
        .unwrap();
    let _: Deployment = rollout::wait_rollout(&client, &ns, "web", WAIT).await;
    env.apply_wak(
        "app",
        json!({
            "rotation": {"strategy": "RegenerateSecret"},
            "secret": {"name": "keys", "rolloutRestartTargets": [
                {"kind": "Deployment", "name": "web"}, {"kind": "DaemonSet", "name": "absent"}
            ]}
        }),
    )
    .await;
    support::wait_condition(&env.waks(), "app", "Ready", "True", "Ready", WAIT).await;
    assert_eq!(restarts(&deployments, "web").await, (None, 1), "the first write restarts nothing");

    // Each change of the Secret's data restarts the Deployment once: RegenerateSecret, then drift repair.
    let restarted = |generation: i64, what: &'static str| {
        let deployments = deployments.clone();
        let waks = env.waks();
        async move {
            eventually(WAIT, what, || async {
                let (at, g) = restarts(&deployments, "web").await;
                let done = waks.get("app").await.ok()?.status?.rollout.is_some_and(|r| r.complete);
                (g == generation && done).then(|| at.expect("our annotation"))
            })
            .await
        }
    };
    rotate(&env.waks(), "app", "1").await;
    let first = restarted(2, "restart after RegenerateSecret").await;
    let _: Deployment = rollout::wait_rollout(&client, &ns, "web", WAIT).await;
    env.secrets().delete("keys", &DeleteParams::default()).await.unwrap();
    let second = restarted(3, "restart after drift repair (deleted Secret)").await;
    assert_ne!(first, second);
    let mut edited = env.secrets().get("keys").await.unwrap();
    edited.data.as_mut().unwrap().insert("api-secret-key".into(), k8s_openapi::ByteString(b"tampered".to_vec()));
    edited.metadata.managed_fields = None;
    env.secrets().replace("keys", &PostParams::default(), &edited).await.unwrap();
    let third = restarted(4, "restart after drift repair (edited Secret)").await;
    assert_ne!(second, third);
    let missing = events(&env, "RolloutTargetNotFound").await;
    assert!(!missing.is_empty() && missing[0].contains("DaemonSet/absent"), "{missing:?}");

    // Ten resyncs without a change of the data (an annotation that does not rotate wakes the resource each time),
    // then an operator restart: nothing is restarted.
    let before = env.waks().get("app").await.unwrap().status.unwrap();
    for i in 0..10 {
        let patch = json!({"metadata": {"annotations": {"example.com/touched": i.to_string()}}});
        env.waks().patch("app", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    env.op.restart_with_env(&[]);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = env.waks().get("app").await.unwrap().status.unwrap();
    assert_eq!(after.secret_hash, before.secret_hash);
    assert_eq!(after.rollout, before.rollout, "the rollout record is unchanged");
    assert_eq!(restarts(&deployments, "web").await, (Some(third), 4), "no further restart");
    assert!(!events(&env, "RolloutRestarted").await.is_empty());
    // The chart's RBAC refused the operator nothing.
    assert_nothing_forbidden(&env.op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_that_never_completes_keeps_the_old_credential_until_rollout_timeout() {
    support::control_plane_with_nodes();
    let env = Env::start_as_chart_service_account("ro-stuck").await;
    let swcs: Api<SecureWorkloadCredential> = env.ns.api();
    // No node matches: the pods stay Pending, so no rollout of this Deployment ever completes.
    let stuck = json!({"replicas": 1, "template": {"spec": {"nodeSelector": {"workloadkeys.io/no-such-node": "x"}}}});
    env.ns
        .api::<Deployment>()
        .create(&PostParams::default(), &workload("Deployment", "stuck", "pair", stuck))
        .await
        .unwrap();

    let timeout = Duration::from_secs(20);
    let spec = json!({
        "providerRef": sim_env::key_provider_ref(sim_env::CISCO_PROVIDER),
        "capabilities": ["flow_inventory_query"],
        "source": {"provision": {"description": "stuck rollout"}},
        "rotation": {"every": "720h", "gracePeriod": "2s", "rolloutTimeout": "20s"},
        "secret": {"name": "pair", "rolloutRestartTargets": [{"kind": "Deployment", "name": "stuck"}]}
    });
    let obj: SecureWorkloadCredential = serde_json::from_value(json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "SecureWorkloadCredential",
        "metadata": {"name": "cred"}, "spec": spec
    }))
    .unwrap();
    swcs.patch("cred", &PatchParams::apply("test").force(), &Patch::Apply(&obj)).await.unwrap();
    let swc = support::wait_condition(&swcs, "cred", "Ready", "True", "Ready", WAIT).await;
    let marker = format!("[workloadkeys.io/owner={}.", swc.uid().unwrap());
    let old = swc.status.unwrap().credential_id.unwrap();
    let live =
        |id: &str| env.sim.cisco.keys().iter().any(|k| k.id == id && !k.revoked && k.description.contains(&marker));
    assert!(live(&old));

    rotate(&swcs, "cred", "1").await;
    let started = eventually(WAIT, "rotation with its restart", || async {
        let s = swcs.get("cred").await.ok()?.status?;
        (s.credential_id.as_deref() != Some(old.as_str())).then_some(())?;
        s.rollout?.started_at.map(|t| t.0)
    })
    .await;
    // Past the grace period the old pair is kept, and status and Ready say for what.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(live(&old), "the old pair is kept while the rollout is incomplete");
    let swc = swcs.get("cred").await.unwrap();
    let message = ready_message(&swc);
    assert!(message.contains("kept until the rollout of Deployment/stuck"), "{message}");
    let rollout = swc.status.unwrap().rollout.unwrap();
    assert_eq!(rollout.targets.len(), 1);
    assert_eq!(rollout.targets[0].name, "stuck");
    assert!(!rollout.targets[0].complete && rollout.targets[0].waiting_for.is_some(), "{rollout:?}");

    let revoked_at =
        eventually(WAIT, "old pair deleted after rolloutTimeout", || async { (!live(&old)).then(Timestamp::now) })
            .await;
    eprintln!(
        "restart at {started}; rolloutTimeout {timeout:?}; old credential deleted at {revoked_at} (+{:.1}s)",
        secs(started, revoked_at)
    );
    assert!(secs(started, revoked_at) >= timeout.as_secs_f64(), "deleted before rolloutTimeout");
    let incomplete = events(&env, "RolloutIncomplete").await;
    assert!(incomplete.iter().any(|n| n.contains("Deployment/stuck")), "{incomplete:?}");
    let rollout = swcs.get("cred").await.unwrap().status.unwrap().rollout.unwrap();
    assert!(rollout.complete && rollout.timed_out);
    // The chart's RBAC refused the operator nothing.
    assert_nothing_forbidden(&env.op);
}
