//! Providers end to end (the providers issue's acceptance tests 2, 3, 4 and 6): a real API server, the operator as
//! its own process, the simulator. `ClusterKeyProvider`s are watched cluster-wide by every operator of this
//! binary, so the tests here run one at a time.
#![cfg(feature = "sim")]

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;
use support::{
    TestNamespace, eventually, merge,
    operator::{Operator, install_crds},
    put_secret,
    sim_env::{self, CA_SECRET},
};
use workload_key_operator::{
    api::{Capability, ClusterKeyProvider, KeyProvider, SecureWorkloadCredential, WorkloadApiKey},
    clients::{
        SecretString, TlsOptions,
        trend::{Auth, DeepSecurityClient, NewApiKey},
    },
    sim::{self, RunningSim, SimOptions},
};

const WAIT: Duration = Duration::from_secs(60);

/// One test at a time: every operator watches every `ClusterKeyProvider`.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The operator's cluster-resource namespace (with the simulator's admin Secrets), app namespaces it watches, the
/// simulator and the operator.
struct Env {
    system: TestNamespace,
    apps: Vec<TestNamespace>,
    sim: RunningSim,
    op: Operator,
    client: Client,
}

impl Env {
    async fn start(prefix: &str, apps: usize) -> Self {
        let system = TestNamespace::new(&format!("{prefix}-sys")).await;
        install_crds(&system.client).await;
        let mut namespaces = Vec::new();
        for i in 0..apps {
            namespaces.push(TestNamespace::new(&format!("{prefix}-app{i}")).await);
        }
        let sim = sim::start(SimOptions::default()).await.expect("start vendor simulator");
        sim_env::put_sim_secrets(&system, &sim).await;
        let watch: Vec<&str> = namespaces.iter().map(|n| n.name.as_str()).collect();
        let op = Operator::start_with_env(&watch.join(","), &[("WKO_CLUSTER_RESOURCE_NAMESPACE", &system.name)]);
        let client = system.client.clone();
        Env { system, apps: namespaces, sim, op, client }
    }

    fn ckps(&self) -> Api<ClusterKeyProvider> {
        Api::all(self.client.clone())
    }

    fn waks(&self, ns: usize) -> Api<WorkloadApiKey> {
        self.apps[ns].api()
    }

    fn swcs(&self, ns: usize) -> Api<SecureWorkloadCredential> {
        self.apps[ns].api()
    }

    /// A `ClusterKeyProvider` named after the test's system namespace and `suffix`; returns its name.
    async fn cluster_provider(&self, suffix: &str, spec: serde_json::Value) -> String {
        let name = format!("{}-{suffix}", self.system.name);
        sim_env::apply_cluster_key_provider(&self.client, &name, spec).await;
        sim_env::wait_provider_ready(&self.ckps(), &name).await;
        name
    }

    async fn apply_wak(&self, ns: usize, name: &str, spec: serde_json::Value) {
        let obj = sim_env::wak(name, spec);
        self.waks(ns).patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&obj)).await.expect("apply");
    }

    async fn apply_swc(&self, ns: usize, name: &str, spec: serde_json::Value) {
        let obj: SecureWorkloadCredential = serde_json::from_value(json!({
            "apiVersion": "workloadkeys.io/v1alpha1", "kind": "SecureWorkloadCredential",
            "metadata": {"name": name}, "spec": spec
        }))
        .unwrap();
        self.swcs(ns).patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&obj)).await.expect("apply");
    }

    /// Deletes the `ClusterKeyProvider`s of this test and waits until they are gone (so no later test's operator
    /// sees them).
    async fn remove_cluster_providers(&self, names: &[&str]) {
        for name in names {
            let _ = self.ckps().delete(name, &DeleteParams::default()).await;
        }
        for name in names {
            eventually(WAIT, &format!("{name} gone"), || async {
                self.ckps().get_opt(name).await.ok()?.is_none().then_some(())
            })
            .await;
        }
    }

    fn live_trend_keys(&self, uid: &str) -> Vec<workload_key_operator::sim::trend::SimApiKey> {
        let marker = format!("[workloadkeys.io/owner={uid}.");
        let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
        self.sim
            .deep_security
            .keys()
            .into_iter()
            .filter(|k| k.description.as_deref().is_some_and(|d| d.contains(&marker)) && k.is_live(now))
            .collect()
    }
}

/// The Ready condition's (status, reason, message) of `obj`.
fn ready<K: serde::Serialize>(obj: &K) -> Option<(String, String, String)> {
    let v = serde_json::to_value(obj).ok()?;
    let c = v["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?.clone();
    Some((c["status"].as_str()?.into(), c["reason"].as_str()?.into(), c["message"].as_str()?.into()))
}

/// Waits until `name`'s Ready condition has `reason` (status False unless the reason is Ready); returns its message.
async fn wait_reason<K>(api: &Api<K>, name: &str, reason: &str) -> String
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    eventually(WAIT, &format!("{name} reason={reason}"), || async {
        let (status, r, message) = ready(&api.get(name).await.ok()?)?;
        (r == reason && (status == "True") == (reason == "Ready")).then_some(message)
    })
    .await
}

/// Test 2: namespace allowlist (names and a label selector that follows label changes) and the Trend policy (roles,
/// longest lifetime, the cap as default lifetime). Every refusal costs zero vendor requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_and_policy_refuse_without_vendor_calls() {
    let _serial = SERIAL.lock().await;
    let env = Env::start("prov-pol", 2).await;
    let (allowed, labelled) = (0, 1);
    let label = format!("team-{}", env.system.name);
    let mut spec = sim_env::trend_provider_spec(&env.sim, sim_env::ADMIN_SECRET);
    merge(
        &mut spec,
        &json!({
            "allowedNamespaces": {"names": [env.apps[allowed].name], "selector": {"matchLabels": {label.clone(): "yes"}}},
            "policy": {"roles": [{"name": "Auditor"}, {"id": 7}], "maxExpiresAfter": "48h"}
        }),
    );
    let provider = env.cluster_provider("trend", spec).await;
    let via = |extra: serde_json::Value| {
        let mut s = sim_env::wak_spec("policy test");
        merge(&mut s, &json!({"providerRef": sim_env::cluster_provider_ref(&provider)}));
        merge(&mut s, &extra);
        s
    };

    // Refusals: none of them reaches the vendor.
    let before = env.sim.counts.total("trend", "");
    env.apply_wak(labelled, "outsider", via(json!({"expiresAfter": "24h"}))).await;
    let message = wait_reason(&env.waks(labelled), "outsider", "NamespaceNotAllowed").await;
    assert!(message.contains(&env.apps[labelled].name) && message.contains(&label), "{message}");
    env.apply_wak(allowed, "admin", via(json!({"role": {"name": "Full Access"}}))).await;
    let message = wait_reason(&env.waks(allowed), "admin", "PolicyViolation").await;
    assert!(message.contains("\"Full Access\"") && message.contains("allowed roles: \"Auditor\", ID 7"), "{message}");
    env.apply_wak(allowed, "too-long", via(json!({"expiresAfter": "72h"}))).await;
    let message = wait_reason(&env.waks(allowed), "too-long", "PolicyViolation").await;
    assert!(message.contains("72h") && message.contains("maxExpiresAfter 48h"), "{message}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.sim.counts.total("trend", ""), before, "refusals cost no vendor request");
    assert!(
        env.sim.deep_security.keys().iter().all(|k| !k.description.as_deref().unwrap_or("").contains("policy test"))
    );

    // No expiresAfter: the key gets the cap, in status and at the vendor.
    env.apply_wak(allowed, "capped", via(json!({"expiresAfter": null}))).await;
    wait_reason(&env.waks(allowed), "capped", "Ready").await;
    let capped = env.waks(allowed).get("capped").await.unwrap();
    let expected = k8s_openapi::jiff::Timestamp::now().as_millisecond() + 48 * 3600 * 1000;
    let expires_at = capped.status.as_ref().unwrap().expires_at.as_ref().expect("expiresAt").0.as_millisecond();
    assert!((expires_at - expected).abs() < 120_000, "status.expiresAt is 48h out");
    let keys = env.live_trend_keys(&capped.uid().unwrap());
    assert_eq!(keys.len(), 1);
    assert!((keys[0].expiry_date.expect("vendor expiry") - expected).abs() < 120_000, "vendor expiry is 48h out");

    // Labelling the other namespace allows it promptly, without touching the resource; unlabelling refuses again.
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let set_label = |value: serde_json::Value| {
        let namespaces = namespaces.clone();
        let (name, label) = (env.apps[labelled].name.clone(), label.clone());
        async move {
            let patch = json!({"metadata": {"labels": {label: value}}});
            namespaces.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        }
    };
    let generation = env.waks(labelled).get("outsider").await.unwrap().metadata.generation;
    set_label(json!("yes")).await;
    let labelled_at = std::time::Instant::now();
    eventually(Duration::from_secs(20), "outsider Ready after the label", || async {
        let (status, _, _) = ready(&env.waks(labelled).get("outsider").await.ok()?)?;
        (status == "True").then_some(())
    })
    .await;
    eprintln!("namespace label took effect after {:?}", labelled_at.elapsed());
    assert_eq!(env.waks(labelled).get("outsider").await.unwrap().metadata.generation, generation, "untouched");
    set_label(serde_json::Value::Null).await;
    let unlabelled_at = std::time::Instant::now();
    eventually(Duration::from_secs(20), "outsider refused after the label goes", || async {
        let (_, reason, _) = ready(&env.waks(labelled).get("outsider").await.ok()?)?;
        (reason == "NamespaceNotAllowed").then_some(())
    })
    .await;
    eprintln!("label removal took effect after {:?}", unlabelled_at.elapsed());

    for (ns, name) in [(allowed, "admin"), (allowed, "too-long"), (allowed, "capped"), (labelled, "outsider")] {
        env.waks(ns).delete(name, &DeleteParams::default()).await.unwrap();
    }
    env.remove_cluster_providers(&[&provider]).await;
    assert!(env.live_trend_keys(&capped.uid().unwrap()).is_empty());
    support::assert_no_leaks(&env.apps[allowed], &env.op, &[env.sim.info.trend_admin_api_key()]).await;
}

/// Test 3: a `ClusterKeyProvider` deleted while in use stays, with an InUse condition naming its users, until the
/// last of them is deleted and its key revoked; then it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_in_use_stays_until_its_last_user_is_revoked() {
    let _serial = SERIAL.lock().await;
    let env = Env::start("prov-inuse", 1).await;
    let mut spec = sim_env::trend_provider_spec(&env.sim, sim_env::ADMIN_SECRET);
    merge(&mut spec, &json!({"allowedNamespaces": {"names": [env.apps[0].name]}}));
    let provider = env.cluster_provider("trend", spec).await;
    let mut uids = Vec::new();
    for name in ["user-1", "user-2"] {
        let mut s = sim_env::wak_spec("in use");
        merge(&mut s, &json!({"providerRef": sim_env::cluster_provider_ref(&provider)}));
        env.apply_wak(0, name, s).await;
        wait_reason(&env.waks(0), name, "Ready").await;
        uids.push(env.waks(0).get(name).await.unwrap().uid().unwrap());
    }
    eventually(WAIT, "the provider counts 2 users", || async {
        let p = env.ckps().get(&provider).await.ok()?;
        let held = p.finalizers().iter().any(|f| f == "workloadkeys.io/in-use");
        (held && p.status?.in_use == Some(2)).then_some(())
    })
    .await;

    env.ckps().delete(&provider, &DeleteParams::default()).await.unwrap();
    let in_use = |needle: String, absent: Option<String>| {
        let ckps = env.ckps();
        let provider = provider.clone();
        async move {
            eventually(WAIT, &format!("InUse naming {needle}"), || async {
                let p = ckps.get(&provider).await.ok()?;
                p.metadata.deletion_timestamp.as_ref()?;
                let c = p.status?.conditions.into_iter().find(|c| c.type_ == "InUse")?;
                let named = c.status == "True" && c.message.contains(&needle);
                (named && absent.as_ref().is_none_or(|a| !c.message.contains(a))).then_some(c.message)
            })
            .await
        }
    };
    let ns = env.apps[0].name.clone();
    let message = in_use(format!("WorkloadApiKey {ns}/user-1"), None).await;
    assert!(message.contains(&format!("WorkloadApiKey {ns}/user-2")), "{message}");

    env.waks(0).delete("user-1", &DeleteParams::default()).await.unwrap();
    in_use(format!("WorkloadApiKey {ns}/user-2"), Some(format!("{ns}/user-1"))).await;
    assert!(env.live_trend_keys(&uids[0]).is_empty(), "user-1's key revoked through the deleting provider");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(env.ckps().get_opt(&provider).await.unwrap().is_some(), "still there while user-2 uses it");

    env.waks(0).delete("user-2", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "provider gone", || async { env.ckps().get_opt(&provider).await.ok()?.is_none().then_some(()) })
        .await;
    assert!(env.waks(0).get_opt("user-2").await.unwrap().is_none(), "its last user went first");
    assert!(env.live_trend_keys(&uids[1]).is_empty(), "user-2's key revoked before the provider went");
    // Its Secrets are released.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = env.system.api();
    eventually(WAIT, "Secret finalizers released", || async {
        let s = secrets.get(sim_env::ADMIN_SECRET).await.ok()?;
        (!s.finalizers().iter().any(|f| f == "workloadkeys.io/provider-credential")).then_some(())
    })
    .await;
}

/// Test 4: a namespace holding a `KeyProvider`, its admin Secret and 20 WorkloadApiKeys deleted at once: every key
/// is revoked at the vendor and the namespace is gone within 2 minutes, nothing left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_with_its_provider_revokes_every_key() {
    let _serial = SERIAL.lock().await;
    let env = Env::start("prov-nsdel", 1).await;
    let doomed = &env.apps[0];
    sim_env::put_sim_secrets(doomed, &env.sim).await;
    sim_env::apply_key_provider(
        &env.client,
        &doomed.name,
        "team-trend",
        sim_env::trend_provider_spec(&env.sim, sim_env::ADMIN_SECRET),
    )
    .await;
    sim_env::wait_provider_ready(&doomed.api::<KeyProvider>(), "team-trend").await;
    let names: Vec<String> = (0..20).map(|i| format!("key-{i:02}")).collect();
    for name in &names {
        let mut s = sim_env::wak_spec("namespace deletion");
        merge(&mut s, &json!({"providerRef": sim_env::key_provider_ref("team-trend")}));
        env.apply_wak(0, name, s).await;
    }
    let mut uids = Vec::new();
    for name in &names {
        wait_reason(&env.waks(0), name, "Ready").await;
        uids.push(env.waks(0).get(name).await.unwrap().uid().unwrap());
    }
    assert!(uids.iter().all(|u| env.live_trend_keys(u).len() == 1), "20 live keys");

    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    namespaces.delete(&doomed.name, &DeleteParams::default()).await.unwrap();
    let started = std::time::Instant::now();
    eventually(Duration::from_secs(120), "namespace gone", || async {
        namespaces.get_opt(&doomed.name).await.ok()?.is_none().then_some(())
    })
    .await;
    eprintln!("namespace with 20 keys gone after {:?}", started.elapsed());
    let live: usize = uids.iter().map(|u| env.live_trend_keys(u).len()).sum();
    assert_eq!(live, 0, "every key revoked at the vendor");
    let ours = env.sim.deep_security.keys().into_iter().filter(|k| k.key_name.starts_with(&doomed.name)).count();
    assert_eq!(ours, 0, "no key of the namespace left at the vendor");
    let waks: Api<WorkloadApiKey> = Api::all(env.client.clone());
    let left = waks.list(&ListParams::default()).await.unwrap().items;
    assert!(left.iter().all(|w| w.namespace().as_deref() != Some(doomed.name.as_str())), "no resource left");
}

/// Test 6: Cisco through `ClusterKeyProvider`s: `existing` mode, provision mode, and a provision asking for a
/// capability outside `policy.capabilities` refused with nothing minted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cisco_existing_and_provision_through_cluster_providers() {
    let _serial = SERIAL.lock().await;
    let env = Env::start("prov-cisco", 1).await;
    let allow = json!({"allowedNamespaces": {"names": [env.apps[0].name]}});
    let mut spec = sim_env::cisco_provider_spec(&env.sim, None);
    merge(&mut spec, &allow);
    let import = env.cluster_provider("import", spec).await;
    let mut spec = sim_env::cisco_provider_spec(&env.sim, Some(sim_env::LOGIN_SECRET));
    merge(&mut spec, &allow);
    merge(&mut spec, &json!({"policy": {"capabilities": ["flow_inventory_query", "user_role_scope_management"]}}));
    let mint = env.cluster_provider("mint", spec).await;

    // Existing: a pair made in the UI, in the app's namespace.
    let caps = [Capability::FlowInventoryQuery, Capability::UserRoleScopeManagement];
    let (key, secret) = env.sim.cisco.create_key("made in the UI", &caps);
    put_secret(&env.apps[0], "sw-ui-key", &[("api_key", key.as_str()), ("api_secret", secret.expose())]).await;
    env.apply_swc(
        0,
        "imported",
        json!({
            "providerRef": sim_env::cluster_provider_ref(&import),
            "source": {"existing": {"secretRef": {"name": "sw-ui-key"}}},
            "capabilities": ["flow_inventory_query", "user_role_scope_management"]
        }),
    )
    .await;
    wait_reason(&env.swcs(0), "imported", "Ready").await;
    let data = env.apps[0].api::<k8s_openapi::api::core::v1::Secret>().get("imported").await.unwrap().data.unwrap();
    assert_eq!(data["api_key"].0, key.as_bytes());
    assert_eq!(String::from_utf8_lossy(&data["endpoint"].0), env.sim.info.cisco_url());
    assert_eq!(String::from_utf8_lossy(&data["ca.crt"].0).trim_end(), env.sim.ca_pem.trim_end(), "the provider's CA");
    let _ = CA_SECRET;

    // Provision within the policy: one credential minted.
    let provision = |caps: serde_json::Value| {
        json!({
            "providerRef": sim_env::cluster_provider_ref(&mint),
            "source": {"provision": {"description": "through a ClusterKeyProvider"}},
            "capabilities": caps
        })
    };
    env.apply_swc(0, "minted", provision(json!(["flow_inventory_query"]))).await;
    wait_reason(&env.swcs(0), "minted", "Ready").await;
    let minted = env.swcs(0).get("minted").await.unwrap();
    let marker = format!("[workloadkeys.io/owner={}.", minted.uid().unwrap());
    let live = |marker: String| {
        env.sim.cisco.keys().into_iter().filter(|k| !k.revoked && k.description.contains(&marker)).count()
    };
    assert_eq!(live(marker.clone()), 1, "one credential minted");

    // Provision outside the policy: refused before any vendor request, nothing minted.
    let mints = env.sim.counts.total("cisco", "POST /api/api_credentials");
    let calls = env.sim.counts.total("cisco", "");
    env.apply_swc(0, "greedy", provision(json!(["flow_inventory_query", "sensor_management"]))).await;
    let message = wait_reason(&env.swcs(0), "greedy", "PolicyViolation").await;
    assert!(message.contains("sensor_management"), "{message}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let greedy = env.swcs(0).get("greedy").await.unwrap();
    assert_eq!(live(format!("[workloadkeys.io/owner={}.", greedy.uid().unwrap())), 0, "nothing minted");
    assert_eq!(env.sim.counts.total("cisco", "POST /api/api_credentials"), mints, "no mint request");
    assert_eq!(env.sim.counts.total("cisco", ""), calls, "no vendor request at all");
    assert!(greedy.status.as_ref().unwrap().credential_id.is_none());

    for name in ["imported", "minted", "greedy"] {
        env.swcs(0).delete(name, &DeleteParams::default()).await.unwrap();
    }
    env.remove_cluster_providers(&[&import, &mint]).await;
    assert_eq!(live(marker), 0, "the minted credential deleted with its resource");
    assert!(env.sim.cisco.key_is_active(&key), "an imported key stays at the vendor");
    let mut leaks = vec![secret.expose().to_owned(), env.sim.info.cisco["uiPassword"].as_str().unwrap().to_owned()];
    leaks.extend(env.sim.cisco.issued_ui_secrets());
    support::assert_no_leaks(&env.apps[0], &env.op, &leaks).await;
}

/// Issue 19 §1: ownership a tenant cannot forge. Two namespaces share one `ClusterKeyProvider`; the attacker knows
/// the victim's UID and key name (cluster-wide `view` shows both). Free text naming an ownership marker is refused at
/// admission; the attacker's own resource takes the victim's key name (names are free text); and, as the strongest
/// forgeries an older operator could have left, keys of that name whose descriptions hold the victim's markers
/// (the UID marker of old, and the victim's nonce marker read from its status) but not as their exact ending are
/// planted at the vendor. The victim's create then fails once, so its recovery searches by name: it adopts none of
/// them, and each resource ends with exactly its own key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_make_another_adopt_its_key() {
    let _serial = SERIAL.lock().await;
    let env = Env::start("prov-own", 2).await;
    let (victim_ns, attacker_ns) = (0, 1);
    let mut spec = sim_env::trend_provider_spec(&env.sim, sim_env::ADMIN_SECRET);
    merge(&mut spec, &json!({"allowedNamespaces": {"names": [env.apps[victim_ns].name, env.apps[attacker_ns].name]}}));
    let provider = env.cluster_provider("trend", spec).await;
    let via = |extra: serde_json::Value| {
        let mut s = sim_env::wak_spec("tenant");
        merge(&mut s, &json!({"providerRef": sim_env::cluster_provider_ref(&provider)}));
        merge(&mut s, &extra);
        s
    };
    let shared_name = format!("{}-payments", env.system.name);

    // Admission refuses every free-text field that names a marker, saying which field.
    for (field, extra) in [
        ("spec.description", json!({"description": "x [workloadkeys.io/uid=0b6f5d7e-1111-4c4c-9a9a-123456789abc]"})),
        ("spec.keyName", json!({"keyName": "k[workloadkeys.io/owner=u.n]"})),
        ("spec.role.name", json!({"role": {"name": "Auditor workloadkeys.io/"}})),
    ] {
        let obj = sim_env::wak("forger", via(extra));
        let err = env.waks(attacker_ns).patch("forger", &PatchParams::apply("test"), &Patch::Apply(&obj)).await;
        let message = match err {
            Err(kube::Error::Api(e)) => e.message,
            other => panic!("{field}: expected a refusal, got {other:?}"),
        };
        assert!(message.contains(&format!("{field} must not contain 'workloadkeys.io/'")), "{message}");
    }

    // The attacker's own resource takes the key name the victim will use.
    env.apply_wak(attacker_ns, "squatter", via(json!({"keyName": shared_name, "description": "looks harmless"}))).await;
    wait_reason(&env.waks(attacker_ns), "squatter", "Ready").await;
    let squatter = env.waks(attacker_ns).get("squatter").await.unwrap();
    let squatter_key = squatter.status.as_ref().unwrap().key_id.clone().expect("attacker's key id");

    // The victim's first create fails (the vendor refuses it once): the intent, with its nonce, is recorded first.
    let before_fault = env.sim.counts.total("trend", "");
    env.sim
        .faults
        .add(
            serde_json::from_value(json!({
                "vendor": "trend", "pathPrefix": "/api/apikeys", "method": "POST", "status": 400, "count": 1
            }))
            .unwrap(),
        )
        .unwrap();
    env.apply_wak(victim_ns, "payments", via(json!({"keyName": shared_name}))).await;
    let failed = eventually(WAIT, "the victim's create failed with its intent recorded", || async {
        let w = env.waks(victim_ns).get("payments").await.ok()?;
        let (status, _, _) = ready(&w)?;
        let s = w.status.as_ref()?;
        (status == "False" && s.pending_key_name.is_some() && s.owner_nonce.is_some()).then_some(w)
    })
    .await;
    assert!(env.sim.counts.total("trend", "") > before_fault, "the create reached the vendor");
    let victim_uid = failed.uid().unwrap();
    let nonce = failed.status.as_ref().unwrap().owner_nonce.clone().unwrap();
    let pending = failed.status.as_ref().unwrap().pending_key_name.clone().unwrap();
    assert_eq!(pending, shared_name);

    // Before the victim retries (5 s backoff), keys of its pending name holding its markers, not as their ending.
    let admin = DeepSecurityClient::with_default_limiter(
        &env.sim.info.trend_url(),
        Auth::ApiKey(SecretString::new(env.sim.info.trend_admin_api_key())),
        &TlsOptions { ca_pem: Some(env.sim.ca_pem.clone()), insecure_skip_verify: false },
    )
    .unwrap();
    let attacker_uid = squatter.uid().unwrap();
    let forgeries = [
        format!("old style [workloadkeys.io/uid={victim_uid}] [workloadkeys.io/uid={attacker_uid}]"),
        format!("[workloadkeys.io/owner={victim_uid}.{nonce}] [workloadkeys.io/owner={attacker_uid}.0000]"),
        format!("a guess [workloadkeys.io/owner={victim_uid}.00000000000000000000000000000000]"),
    ];
    let mut planted = Vec::new();
    for description in &forgeries {
        let key = NewApiKey { description: Some(description.clone()), ..NewApiKey::new(&pending, 2) };
        planted.push(admin.create_api_key(&key).await.expect("plant a forged key").key.id);
    }

    // The victim recovers by name and adopts none of them: it creates its own key.
    wait_reason(&env.waks(victim_ns), "payments", "Ready").await;
    let victim = env.waks(victim_ns).get("payments").await.unwrap();
    let victim_key = victim.status.as_ref().unwrap().key_id.clone().expect("victim's key id");
    assert_ne!(victim_key, squatter_key, "the victim never holds the attacker's key");
    for id in &planted {
        assert_ne!(victim_key.to_string(), id.to_string(), "the victim adopted a forged key");
    }
    let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    let live: Vec<_> = env.sim.deep_security.keys().into_iter().filter(|k| k.is_live(now)).collect();
    let victim_marker = format!("[workloadkeys.io/owner={victim_uid}.{nonce}]");
    let victims: Vec<i64> = live
        .iter()
        .filter(|k| k.description.as_deref().is_some_and(|d| d.ends_with(&victim_marker)))
        .map(|k| k.id)
        .collect();
    assert_eq!(victims.len(), 1, "exactly one key is the victim's: {victims:?}");
    assert_eq!(victims[0].to_string(), victim_key.to_string());
    let attackers: Vec<i64> = live
        .iter()
        .filter(|k| k.description.as_deref().is_some_and(|d| d.contains(&format!("owner={attacker_uid}."))))
        .filter(|k| k.description.as_deref().is_some_and(|d| d.starts_with("looks harmless")))
        .map(|k| k.id)
        .collect();
    assert_eq!(attackers.len(), 1, "the attacker keeps exactly its own key: {attackers:?}");
    assert_eq!(attackers[0].to_string(), squatter_key.to_string());
    for id in &planted {
        assert!(live.iter().any(|k| k.id == *id), "recovery deleted planted key {id}, which was not the victim's");
    }

    // Deleting the attacker's resource revokes its own key only; the victim's Secret still works.
    env.waks(attacker_ns).delete("squatter", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "squatter gone", || async {
        env.waks(attacker_ns).get_opt("squatter").await.ok()?.is_none().then_some(())
    })
    .await;
    let secret = env.apps[victim_ns].api::<k8s_openapi::api::core::v1::Secret>().get("payments").await.unwrap();
    let value = String::from_utf8(secret.data.unwrap()["api-secret-key"].0.clone()).unwrap();
    let tls = TlsOptions { ca_pem: Some(env.sim.ca_pem.clone()), insecure_skip_verify: false };
    let as_victim = DeepSecurityClient::with_default_limiter(
        &env.sim.info.trend_url(),
        Auth::ApiKey(SecretString::new(value)),
        &tls,
    )
    .unwrap();
    let current = as_victim.describe_current_api_key().await.expect("the victim's key still works");
    assert_eq!(current.id.to_string(), victim_key.to_string());

    env.waks(victim_ns).delete("payments", &DeleteParams::default()).await.unwrap();
    env.remove_cluster_providers(&[&provider]).await;
    let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    let live: Vec<i64> = env.sim.deep_security.keys().into_iter().filter(|k| k.is_live(now)).map(|k| k.id).collect();
    assert!(!live.iter().any(|id| id.to_string() == victim_key.to_string()), "the victim's key is revoked on delete");
    for id in &planted {
        assert!(live.contains(id), "the victim's delete revoked planted key {id}, which was never its own");
    }
}

/// Issue 19 §3: what lengthens a key's life is the platform's to bound. `maxGracePeriod`, `maxRolloutTimeout` and
/// `deletionPolicies` refuse, with no vendor call, what exceeds them (a default over the bound included); a `Retain`
/// the provider stopped allowing does not keep the key: deleting the resource revokes it all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetime_bounds_refuse_without_vendor_calls_and_a_forbidden_retain_revokes() {
    let _serial = SERIAL.lock().await;
    let env = Env::start("prov-life", 1).await;
    let mut spec = sim_env::trend_provider_spec(&env.sim, sim_env::ADMIN_SECRET);
    merge(
        &mut spec,
        &json!({
            "allowedNamespaces": {"names": [env.apps[0].name]},
            "policy": {"maxGracePeriod": "5m", "maxRolloutTimeout": "10m", "deletionPolicies": ["Delete"]}
        }),
    );
    let provider = env.cluster_provider("trend", spec.clone()).await;
    let via = |extra: serde_json::Value| {
        let mut s = sim_env::wak_spec("lifetime bounds");
        merge(&mut s, &json!({"providerRef": sim_env::cluster_provider_ref(&provider)}));
        merge(&mut s, &extra);
        s
    };
    let before = env.sim.counts.total("trend", "");
    let cases = [
        (
            "long-grace",
            json!({"rotation": {"gracePeriod": "1h"}}),
            "spec.rotation.gracePeriod 1h is longer than the provider's maxGracePeriod 5m",
        ),
        (
            "default-grace",
            json!({}),
            "spec.rotation.gracePeriod is not set and its default 10m is longer than the provider's maxGracePeriod 5m: set one of at most 5m",
        ),
        (
            "long-rollout",
            json!({"rotation": {"gracePeriod": "1m", "rolloutTimeout": "1h"}}),
            "spec.rotation.rolloutTimeout 1h is longer than the provider's maxRolloutTimeout 10m",
        ),
        (
            "retained",
            json!({"rotation": {"gracePeriod": "1m"}, "deletionPolicy": "Retain"}),
            "spec.deletionPolicy Retain is not allowed; allowed deletion policies: Delete",
        ),
    ];
    for (name, extra, expected) in &cases {
        env.apply_wak(0, name, via(extra.clone())).await;
        let message = wait_reason(&env.waks(0), name, "PolicyViolation").await;
        assert!(message.contains(expected), "{name}: {message}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.sim.counts.total("trend", ""), before, "refusals cost no vendor request");

    // Within the bounds: Ready. Retain allowed for a while, then the platform narrows the policy again.
    env.apply_wak(0, "within", via(json!({"rotation": {"gracePeriod": "5m", "rolloutTimeout": "10m"}}))).await;
    wait_reason(&env.waks(0), "within", "Ready").await;
    merge(&mut spec, &json!({"policy": {"deletionPolicies": ["Delete", "Retain"]}}));
    sim_env::apply_cluster_key_provider(&env.client, &provider, spec.clone()).await;
    wait_reason(&env.waks(0), "retained", "Ready").await;
    let retained = env.waks(0).get("retained").await.unwrap();
    let retained_key = retained.status.as_ref().unwrap().key_id.clone().expect("a key");
    assert_eq!(env.live_trend_keys(&retained.uid().unwrap()).len(), 1);
    merge(&mut spec, &json!({"policy": {"deletionPolicies": ["Delete"]}}));
    sim_env::apply_cluster_key_provider(&env.client, &provider, spec.clone()).await;
    wait_reason(&env.waks(0), "retained", "PolicyViolation").await;
    assert_eq!(
        env.live_trend_keys(&retained.uid().unwrap()).len(),
        1,
        "a refused spec keeps the key it has (onAccessLost Keep)"
    );
    env.waks(0).delete("retained", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "retained gone", || async { env.waks(0).get_opt("retained").await.ok()?.is_none().then_some(()) })
        .await;
    assert!(env.live_trend_keys(&retained.uid().unwrap()).is_empty(), "key {retained_key} revoked despite Retain");
    let note = eventually(WAIT, "a RetainRefused Event", || async {
        support::event_notes(&env.apps[0], "RetainRefused").await.into_iter().next()
    })
    .await;
    assert!(note.contains("spec.deletionPolicy Retain is not allowed") && note.contains(&provider), "{note}");

    for (name, _, _) in &cases {
        if *name != "retained" {
            env.waks(0).delete(name, &DeleteParams::default()).await.unwrap();
        }
    }
    env.waks(0).delete("within", &DeleteParams::default()).await.unwrap();
    env.remove_cluster_providers(&[&provider]).await;
    support::assert_no_leaks(&env.apps[0], &env.op, &[env.sim.info.trend_admin_api_key()]).await;
}

/// Issue 19 §4: offboarding that revokes. With `onAccessLost` unset (Keep) a namespace that loses its label keeps a
/// working key; with `Revoke`, within 60 s of the label's removal the key is revoked at the vendor and the Secret
/// deleted (the resource stays, not Ready, with an Event naming the key); allowed again, a new key; a role the
/// narrowed policy no longer allows revokes likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lost_keeps_or_revokes_as_the_provider_says() {
    let _serial = SERIAL.lock().await;
    let env = Env::start("prov-off", 1).await;
    let label = format!("tenant-{}", env.system.name);
    let mut spec = sim_env::trend_provider_spec(&env.sim, sim_env::ADMIN_SECRET);
    merge(&mut spec, &json!({"allowedNamespaces": {"selector": {"matchLabels": {label.clone(): "yes"}}}}));
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let set_label = |value: serde_json::Value| {
        let namespaces = namespaces.clone();
        let (name, label) = (env.apps[0].name.clone(), label.clone());
        async move {
            let patch = json!({"metadata": {"labels": {label: value}}});
            namespaces.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        }
    };
    set_label(json!("yes")).await;
    let provider = env.cluster_provider("trend", spec.clone()).await;
    let mut wak = sim_env::wak_spec("offboarding");
    merge(&mut wak, &json!({"providerRef": sim_env::cluster_provider_ref(&provider)}));
    env.apply_wak(0, "tenant", wak).await;
    wait_reason(&env.waks(0), "tenant", "Ready").await;
    let uid = env.waks(0).get("tenant").await.unwrap().uid().unwrap();
    let key_of = |w: &WorkloadApiKey| w.status.as_ref().and_then(|s| s.key_id.clone()).map(|k| k.to_string());
    let first = key_of(&env.waks(0).get("tenant").await.unwrap()).expect("a key");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = env.apps[0].api();

    // Keep (the default): not Ready, but the key and its Secret stay.
    set_label(serde_json::Value::Null).await;
    wait_reason(&env.waks(0), "tenant", "NamespaceNotAllowed").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.live_trend_keys(&uid).len(), 1, "Keep: the key still works");
    assert!(secrets.get_opt("tenant").await.unwrap().is_some(), "Keep: the Secret stays");
    set_label(json!("yes")).await;
    wait_reason(&env.waks(0), "tenant", "Ready").await;
    assert_eq!(key_of(&env.waks(0).get("tenant").await.unwrap()).as_deref(), Some(first.as_str()), "same key");

    // Revoke: the label's removal revokes the key and deletes the Secret within 60 s.
    merge(&mut spec, &json!({"policy": {"onAccessLost": "Revoke", "roles": [{"name": "Auditor"}]}}));
    sim_env::apply_cluster_key_provider(&env.client, &provider, spec.clone()).await;
    set_label(serde_json::Value::Null).await;
    let removed = std::time::Instant::now();
    eventually(Duration::from_secs(60), "key revoked and Secret deleted", || async {
        let gone = env.live_trend_keys(&uid).is_empty() && secrets.get_opt("tenant").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    eprintln!("access loss to revocation: {:?}", removed.elapsed());
    let message = wait_reason(&env.waks(0), "tenant", "NamespaceNotAllowed").await;
    assert!(message.contains(&env.apps[0].name), "{message}");
    let note = eventually(WAIT, "a KeysRevoked Event", || async {
        support::event_notes(&env.apps[0], "KeysRevoked").await.into_iter().next()
    })
    .await;
    assert!(note.contains(&first) && note.contains("onAccessLost Revoke"), "{note}");
    let status = env.waks(0).get("tenant").await.unwrap().status.unwrap();
    assert!(status.key_id.is_none() && status.retiring_keys.is_empty() && status.secret_hash.is_none(), "{status:?}");

    // Allowed again: a new key, as on a first create.
    set_label(json!("yes")).await;
    wait_reason(&env.waks(0), "tenant", "Ready").await;
    let second = key_of(&env.waks(0).get("tenant").await.unwrap()).expect("a new key");
    assert_ne!(second, first);
    assert_eq!(env.live_trend_keys(&uid).len(), 1);
    assert!(secrets.get_opt("tenant").await.unwrap().is_some(), "the Secret is written again");

    // A narrowed policy (the role no longer allowed) revokes likewise.
    merge(&mut spec, &json!({"policy": {"roles": [{"name": "Full Access"}]}}));
    sim_env::apply_cluster_key_provider(&env.client, &provider, spec.clone()).await;
    eventually(Duration::from_secs(60), "key revoked after the role was narrowed", || async {
        let gone = env.live_trend_keys(&uid).is_empty() && secrets.get_opt("tenant").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    wait_reason(&env.waks(0), "tenant", "PolicyViolation").await;

    env.waks(0).delete("tenant", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "tenant gone", || async { env.waks(0).get_opt("tenant").await.ok()?.is_none().then_some(()) })
        .await;
    env.remove_cluster_providers(&[&provider]).await;
    support::assert_no_leaks(&env.apps[0], &env.op, &[env.sim.info.trend_admin_api_key()]).await;
}

/// Issue 19 §4 for Cisco: a minted credential of a namespace dropped from `allowedNamespaces` is deleted at the
/// vendor with its Secret under `onAccessLost: Revoke`; added back, a new one is minted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lost_deletes_minted_cisco_credentials() {
    let _serial = SERIAL.lock().await;
    let env = Env::start("prov-offc", 1).await;
    let mut spec = sim_env::cisco_provider_spec(&env.sim, Some(sim_env::LOGIN_SECRET));
    merge(
        &mut spec,
        &json!({"allowedNamespaces": {"names": [env.apps[0].name]}, "policy": {"onAccessLost": "Revoke"}}),
    );
    let mint = env.cluster_provider("mint", spec.clone()).await;
    env.apply_swc(
        0,
        "minted",
        json!({
            "providerRef": sim_env::cluster_provider_ref(&mint),
            "source": {"provision": {"description": "offboarding"}},
            "capabilities": ["flow_inventory_query"]
        }),
    )
    .await;
    wait_reason(&env.swcs(0), "minted", "Ready").await;
    let swc = env.swcs(0).get("minted").await.unwrap();
    let marker = format!("[workloadkeys.io/owner={}.", swc.uid().unwrap());
    let live = || env.sim.cisco.keys().into_iter().filter(|k| !k.revoked && k.description.contains(&marker)).count();
    assert_eq!(live(), 1);
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = env.apps[0].api();

    merge(&mut spec, &json!({"allowedNamespaces": {"names": ["somewhere-else"]}}));
    sim_env::apply_cluster_key_provider(&env.client, &mint, spec.clone()).await;
    eventually(Duration::from_secs(60), "credential deleted and Secret gone", || async {
        (live() == 0 && secrets.get_opt("minted").await.ok()?.is_none()).then_some(())
    })
    .await;
    wait_reason(&env.swcs(0), "minted", "NamespaceNotAllowed").await;
    let note = eventually(WAIT, "a KeysRevoked Event", || async {
        support::event_notes(&env.apps[0], "KeysRevoked").await.into_iter().next()
    })
    .await;
    assert!(note.contains(swc.status.as_ref().unwrap().credential_id.as_deref().unwrap()), "{note}");

    merge(&mut spec, &json!({"allowedNamespaces": {"names": [env.apps[0].name]}}));
    sim_env::apply_cluster_key_provider(&env.client, &mint, spec).await;
    wait_reason(&env.swcs(0), "minted", "Ready").await;
    assert_eq!(live(), 1, "a new credential");
    assert!(secrets.get_opt("minted").await.unwrap().is_some());

    env.swcs(0).delete("minted", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "minted gone", || async { env.swcs(0).get_opt("minted").await.ok()?.is_none().then_some(()) })
        .await;
    assert_eq!(live(), 0);
    env.remove_cluster_providers(&[&mint]).await;
}
