//! SecureWorkloadCredential end to end: a real API server, the operator as its own process, the Cisco simulator,
//! and the official Python SDK (tetpyclient) reading the published Secret.
#![cfg(feature = "sim")]

mod support;

use std::{collections::BTreeMap, time::Duration};

use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;
use support::{
    eventually, merge, put_secret,
    sim_env::{self, Env},
};
use workload_key_operator::{
    api::{Capability, SecureWorkloadCredential},
    clients::cisco::credentials::key_fingerprint,
    sim::cisco::SimKey,
};

const WAIT: Duration = Duration::from_secs(60);

impl Env {
    fn swcs(&self) -> Api<SecureWorkloadCredential> {
        self.ns.api()
    }

    /// A spec against the simulator through the namespace's Cisco provider (CA from a Secret), merged with `extra`.
    fn spec(&self, extra: serde_json::Value) -> serde_json::Value {
        let mut spec = json!({
            "providerRef": sim_env::key_provider_ref(sim_env::CISCO_PROVIDER),
            "capabilities": ["flow_inventory_query", "user_role_scope_management"],
        });
        merge(&mut spec, &extra);
        spec
    }

    /// A Cisco `KeyProvider` `name` against the simulator, merged with `extra`.
    async fn cisco_provider(&self, name: &str, login: Option<&str>, extra: serde_json::Value) {
        let mut spec = sim_env::cisco_provider_spec(&self.sim, login);
        merge(&mut spec, &extra);
        self.apply_key_provider(name, spec).await;
    }

    fn existing(&self, source: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut spec = self.spec(json!({"source": {"existing": {"secretRef": {"name": source}}}}));
        merge(&mut spec, &extra);
        spec
    }

    /// Provision mode with the simulator's UI user (the sign-in is the provider's `cisco.loginSecretRef`).
    async fn provision(&self, extra: serde_json::Value) -> serde_json::Value {
        let mut spec = self.spec(json!({
            "source": {"provision": {"description": "payments reporting"}},
        }));
        merge(&mut spec, &extra);
        spec
    }

    fn ui_password(&self) -> String {
        self.sim.info.cisco["uiPassword"].as_str().unwrap().to_owned()
    }

    async fn apply(&self, name: &str, spec: serde_json::Value) -> SecureWorkloadCredential {
        let obj: SecureWorkloadCredential = serde_json::from_value(json!({
            "apiVersion": "workloadkeys.io/v1alpha1", "kind": "SecureWorkloadCredential",
            "metadata": {"name": name}, "spec": spec
        }))
        .unwrap();
        self.swcs()
            .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&obj))
            .await
            .expect("apply SecureWorkloadCredential")
    }

    async fn wait_condition(&self, name: &str, status: &str, reason: &str) -> SecureWorkloadCredential {
        support::wait_condition(&self.swcs(), name, "Ready", status, reason, WAIT).await
    }

    async fn wait_ready(&self, name: &str) -> SecureWorkloadCredential {
        self.wait_condition(name, "True", "Ready").await
    }

    async fn secret_data(&self, name: &str) -> BTreeMap<String, String> {
        let s = self.secrets().get(name).await.expect("Secret");
        s.data.unwrap().into_iter().map(|(k, v)| (k, String::from_utf8(v.0).unwrap())).collect()
    }

    /// A key made "in the UI" with these capabilities: (api_key, api_secret).
    fn new_key(&self, capabilities: &[Capability]) -> (String, String) {
        let (key, secret) = self.sim.cisco.create_key("made in the UI", capabilities);
        (key, secret.expose().to_owned())
    }

    async fn put_pair(&self, name: &str, key: &str, secret: &str) {
        put_secret(&self.ns, name, &[("api_key", key), ("api_secret", secret)]).await;
    }

    /// Live credentials at the vendor whose description carries this resource's UID marker.
    fn live_credentials_of(&self, swc: &SecureWorkloadCredential) -> Vec<SimKey> {
        let marker = format!("[workloadkeys.io/owner={}.", swc.uid().unwrap());
        self.sim.cisco.keys().into_iter().filter(|k| !k.revoked && k.description.contains(&marker)).collect()
    }

    /// No API secret, UI password, session cookie or CSRF token in logs, Events, statuses or metrics.
    async fn assert_no_leaks(&self, secrets: &[String]) {
        let mut all = secrets.to_vec();
        all.push(self.sim.info.cisco_api_secret());
        all.push(self.ui_password());
        all.extend(self.sim.cisco.issued_ui_secrets());
        support::assert_no_leaks(&self.ns, &self.op, &all).await;
    }

    async fn events_with_reason(&self, reason: &str) -> Vec<String> {
        let events: Api<k8s_openapi::api::events::v1::Event> = self.ns.api();
        let list = events.list(&ListParams::default()).await.unwrap().items;
        list.into_iter().filter(|e| e.reason.as_deref() == Some(reason)).filter_map(|e| e.note).collect()
    }
}

fn ready_message(swc: &SecureWorkloadCredential) -> String {
    let status = swc.status.as_ref().unwrap();
    status.conditions.iter().find(|c| c.type_ == "Ready").unwrap().message.clone()
}

fn condition(swc: &SecureWorkloadCredential, type_: &str) -> (String, String, String) {
    let c = swc.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == type_).unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// The official Python SDK, unchanged: `RestClient(endpoint, credentials_file=..., verify=<CA file>)` built from
/// the published Secret alone (its `endpoint`, `credentials.json` and `ca.crt`); returns the status of `GET path`.
fn tetpyclient_get(data: &BTreeMap<String, String>, path: &str) -> u16 {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials.json");
    let ca = dir.path().join("ca.crt");
    std::fs::write(&credentials, &data["credentials.json"]).unwrap();
    std::fs::write(&ca, &data["ca.crt"]).unwrap();
    let script = "import sys\nfrom tetpyclient import RestClient\n\
                  rc = RestClient(sys.argv[1], credentials_file=sys.argv[2], verify=sys.argv[3])\n\
                  print(rc.get(sys.argv[4]).status_code)\n";
    let out = std::process::Command::new(support::repo_root().join(".venv/bin/python"))
        .arg("-c")
        .arg(script)
        .arg(&data["endpoint"])
        .arg(&credentials)
        .arg(&ca)
        .arg(path)
        .output()
        .expect("run .venv/bin/python (make venv)");
    assert!(out.status.success(), "tetpyclient failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a status code")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_pair_is_verified_published_and_works_with_tetpyclient() {
    let env = Env::start("swc-existing").await;
    let (key, secret) = env.new_key(&[
        Capability::FlowInventoryQuery,
        Capability::UserRoleScopeManagement,
        Capability::SensorManagement,
    ]);
    env.put_pair("sw-ui-key", &key, &secret).await;
    env.apply("reporting", env.existing("sw-ui-key", json!({}))).await;
    let swc = env.wait_ready("reporting").await;
    let status = swc.status.clone().unwrap();
    assert_eq!(status.api_key_fingerprint.as_deref(), Some(key_fingerprint(&key).as_str()));
    assert_eq!(status.verified_capabilities, vec![Capability::FlowInventoryQuery, Capability::UserRoleScopeManagement]);
    assert!(status.missing_capabilities.is_empty() && status.unverified_capabilities.is_empty());
    assert!(status.last_verified_at.is_some() && status.secret_hash.is_some());
    assert_eq!(status.secret_name.as_deref(), Some("reporting"));
    assert_eq!(condition(&swc, "Verified").0, "True");
    assert!(!serde_json::to_string(&status).unwrap().contains(&key), "status shows a fingerprint, never the key");

    // The Secret holds every form clients use, is labelled and owned.
    let target = env.secrets().get("reporting").await.unwrap();
    assert_eq!(target.labels().get("app.kubernetes.io/managed-by").map(String::as_str), Some("workload-key-operator"));
    assert_eq!(target.owner_references()[0].uid, swc.uid().unwrap());
    let data = env.secret_data("reporting").await;
    let doc: serde_json::Value = serde_json::from_str(&data["credentials.json"]).unwrap();
    assert_eq!(doc, json!({"api_key": key, "api_secret": secret}));
    assert_eq!((data["api_key"].as_str(), data["api_secret"].as_str()), (key.as_str(), secret.as_str()));
    assert_eq!(data["endpoint"], env.sim.info.cisco_url());
    assert_eq!(data["ca.crt"].trim_end(), env.sim.ca_pem.trim_end());

    // The official SDK works from the Secret with no code change.
    assert_eq!(tetpyclient_get(&data, "/app_scopes"), 200);
    assert_eq!(tetpyclient_get(&data, "/sensors"), 200);

    // `credentials.json` as the UI downloads it is accepted as the source too.
    let file = json!({"api_key": key, "api_secret": secret}).to_string();
    put_secret(&env.ns, "sw-ui-file", &[("credentials.json", file.as_str())]).await;
    env.apply("from-file", env.existing("sw-ui-file", json!({}))).await;
    env.wait_ready("from-file").await;
    assert_eq!(env.secret_data("from-file").await["credentials.json"], data["credentials.json"]);

    // Healthy: no vendor calls between verifications (verifyInterval defaults to 1h).
    let before = env.sim.counts.total("cisco", "");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.sim.counts.total("cisco", ""), before, "no vendor calls while healthy");

    // A deleted or edited target is rewritten from the source, still without the vendor.
    env.secrets().delete("reporting", &DeleteParams::default()).await.unwrap();
    eventually(Duration::from_secs(20), "Secret rewritten", || async {
        let s = env.secrets().get_opt("reporting").await.ok()??;
        (s.data?.get("api_secret")?.0 == secret.as_bytes()).then_some(())
    })
    .await;
    env.secrets()
        .patch("reporting", &PatchParams::default(), &Patch::Merge(json!({"data": {"api_secret": "aGFja2Vk"}})))
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "edited Secret repaired", || async {
        (env.secret_data("reporting").await["api_secret"] == secret).then_some(())
    })
    .await;
    assert_eq!(env.sim.counts.total("cisco", ""), before, "drift repaired from the source alone");
    assert!(!env.events_with_reason("SecretRepaired").await.is_empty());

    // Metrics, as for WorkloadApiKey.
    let metrics = env.op.metrics().await;
    let endpoint = url::Url::parse(&env.sim.info.cisco_url()).unwrap().origin().ascii_serialization();
    let probed = format!(
        "workload_key_operator_vendor_requests_total{{vendor=\"cisco\",endpoint=\"{endpoint}\",operation=\"Secure \
         Workload GET /openapi/v1/roles\",status=\"200\"}}"
    );
    for needle in [
        "workload_key_operator_reconciles_total{kind=\"SecureWorkloadCredential\"}",
        "workload_key_operator_resource_ready{kind=\"SecureWorkloadCredential\",namespace=",
        probed.as_str(),
    ] {
        assert!(metrics.contains(needle), "metric {needle} missing in:\n{metrics}");
    }

    // A Secret the operator does not own is never overwritten.
    put_secret(&env.ns, "taken", &[("api_key", "someone else's")]).await;
    env.apply("taken", env.existing("sw-ui-key", json!({}))).await;
    env.wait_condition("taken", "False", "SecretConflict").await;
    assert_eq!(env.secret_data("taken").await, BTreeMap::from([("api_key".into(), "someone else's".into())]));

    // Deleting an imported credential never touches the vendor key; the Secret is garbage-collected.
    env.swcs().delete("reporting", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "resource gone", || async {
        env.swcs().get_opt("reporting").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(env.sim.cisco.key_is_active(&key), "an imported key stays at the vendor");
    eventually(WAIT, "Secret garbage-collected", || async {
        env.secrets().get_opt("reporting").await.unwrap().is_none().then_some(())
    })
    .await;
    env.assert_no_leaks(&[secret]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_unprobeable_capabilities_are_reported() {
    let env = Env::start("swc-caps").await;
    let (key, secret) = env.new_key(&[Capability::FlowInventoryQuery, Capability::SoftwareDownload]);
    env.put_pair("sw-ui-key", &key, &secret).await;
    let caps = json!({"capabilities": ["flow_inventory_query", "sensor_management", "software_download"]});
    env.apply("partial", env.existing("sw-ui-key", caps)).await;
    let swc = env.wait_condition("partial", "False", "MissingCapabilities").await;
    let status = swc.status.clone().unwrap();
    assert_eq!(status.missing_capabilities, vec![Capability::SensorManagement]);
    assert_eq!(status.verified_capabilities, vec![Capability::FlowInventoryQuery]);
    assert_eq!(status.unverified_capabilities, vec![Capability::SoftwareDownload], "no probe: unverified");
    let message = ready_message(&swc);
    assert!(message.contains("sensor_management"), "{message}");
    assert_eq!(condition(&swc, "Verified").1, "MissingCapabilities");
    // Published anyway: the key is genuine and live; apps needing only its other capabilities keep working.
    assert_eq!(env.secret_data("partial").await["api_key"], key);
    assert!(env.events_with_reason("MissingCapabilities").await.iter().any(|n| n.contains("sensor_management")));

    // A capability no read-only request can prove is reported as unverified, never as verified.
    env.apply("unprobeable", env.existing("sw-ui-key", json!({"capabilities": ["software_download"]}))).await;
    let swc = env.wait_ready("unprobeable").await;
    let status = swc.status.unwrap();
    assert!(status.verified_capabilities.is_empty());
    assert_eq!(status.unverified_capabilities, vec![Capability::SoftwareDownload]);
    env.assert_no_leaks(&[secret]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_interval_under_the_providers_floor_is_refused_without_a_vendor_call() {
    let env = Env::start("swc-floor").await;
    let (key, secret) = env.new_key(&[Capability::FlowInventoryQuery, Capability::UserRoleScopeManagement]);
    env.put_pair("sw-ui-key", &key, &secret).await;
    // The default floor (5m) refuses a verification every second, before any request reaches the vendor.
    let before = env.sim.counts.total("cisco", "");
    env.apply("eager", env.existing("sw-ui-key", json!({"verifyInterval": "1s"}))).await;
    let swc = env.wait_condition("eager", "False", "PolicyViolation").await;
    let message = ready_message(&swc);
    assert!(message.contains("verifyInterval 1s is shorter than the default minVerifyInterval 5m"), "{message}");
    assert_eq!(env.sim.counts.total("cisco", ""), before, "no vendor call");
    assert!(env.secrets().get_opt("eager").await.unwrap().is_none(), "nothing published");
    // The provider's own floor: a shorter one is refused with it, a longer interval is fine.
    let login = Some(sim_env::LOGIN_SECRET);
    env.cisco_provider(sim_env::CISCO_PROVIDER, login, json!({"policy": {"minVerifyInterval": "10m"}})).await;
    env.wait_key_provider_ready(sim_env::CISCO_PROVIDER).await;
    let before = env.sim.counts.total("cisco", "");
    env.apply("eager", env.existing("sw-ui-key", json!({"verifyInterval": "5m"}))).await;
    let swc = eventually(WAIT, "refused with the provider's floor", || async {
        let swc = env.swcs().get("eager").await.ok()?;
        ready_message(&swc).contains("the provider's minVerifyInterval 10m").then_some(swc)
    })
    .await;
    assert_eq!(condition(&swc, "Ready").1, "PolicyViolation");
    assert_eq!(env.sim.counts.total("cisco", ""), before, "still no vendor call");
    env.apply("eager", env.existing("sw-ui-key", json!({"verifyInterval": "15m"}))).await;
    env.wait_ready("eager").await;
    env.assert_no_leaks(&[secret]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_key_is_noticed_within_verify_interval() {
    const INTERVAL: Duration = Duration::from_secs(3);
    let env = Env::start("swc-revoke").await;
    // A verifyInterval of seconds needs a provider that allows it (the default floor is 5m).
    let login = Some(sim_env::LOGIN_SECRET);
    env.cisco_provider(sim_env::CISCO_PROVIDER, login, json!({"policy": {"minVerifyInterval": "1s"}})).await;
    env.wait_key_provider_ready(sim_env::CISCO_PROVIDER).await;
    let (key, secret) = env.new_key(&[Capability::FlowInventoryQuery, Capability::UserRoleScopeManagement]);
    env.put_pair("sw-ui-key", &key, &secret).await;
    env.apply("watched", env.existing("sw-ui-key", json!({"verifyInterval": "3s"}))).await;
    env.wait_ready("watched").await;
    // Re-verified every interval while healthy.
    let probes = env.sim.counts.total("cisco", "GET /openapi/v1/roles");
    tokio::time::sleep(INTERVAL * 2 + Duration::from_millis(500)).await;
    assert!(env.sim.counts.total("cisco", "GET /openapi/v1/roles") > probes, "re-verified within the interval");

    assert!(env.sim.cisco.revoke_key(&key));
    let revoked = std::time::Instant::now();
    let swc = env.wait_condition("watched", "False", "CredentialsRejected").await;
    let noticed = revoked.elapsed();
    eprintln!("revocation noticed after {noticed:?} (verifyInterval {INTERVAL:?})");
    assert!(noticed <= INTERVAL + Duration::from_secs(2), "noticed within verifyInterval: {noticed:?}");
    assert!(ready_message(&swc).contains("401"), "{}", ready_message(&swc));
    assert_eq!(condition(&swc, "Verified").1, "CredentialsRejected");
    assert!(!env.events_with_reason("CredentialsRejected").await.is_empty(), "an Event on the transition");

    // No retry storm while rejected: backoff, and the operator keeps running.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let attempts = env.op.logs().matches("not ready").count();
    assert!(attempts < 10, "{attempts} failed reconciles in ~6 s: a tight retry loop");
    let mut op = env.op;
    assert_eq!(op.wait_exit(Duration::from_millis(100)).await, None, "operator still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_source_is_republished_and_rejections_are_told_apart() {
    let env = Env::start("swc-change").await;
    let caps = [Capability::FlowInventoryQuery, Capability::UserRoleScopeManagement];
    let (key1, secret1) = env.new_key(&caps);
    env.put_pair("sw-ui-key", &key1, &secret1).await;
    env.apply("follows", env.existing("sw-ui-key", json!({}))).await;
    env.wait_ready("follows").await;

    // A new pair in the source is verified and published promptly (the Secret watch, not the 1h interval).
    let (key2, secret2) = env.new_key(&caps);
    env.put_pair("sw-ui-key", &key2, &secret2).await;
    let changed = std::time::Instant::now();
    eventually(Duration::from_secs(15), "target follows the source", || async {
        (env.secret_data("follows").await["api_key"] == key2).then_some(())
    })
    .await;
    eprintln!("source change published after {:?}", changed.elapsed());
    let swc = env.wait_ready("follows").await;
    assert_eq!(swc.status.unwrap().api_key_fingerprint, Some(key_fingerprint(&key2)));
    assert_eq!(env.secret_data("follows").await["api_secret"], secret2);

    // Wrong secret for a known key: 403 Invalid request.
    env.put_pair("sw-ui-key", &key2, &"0".repeat(40)).await;
    let wrong = env.wait_condition("follows", "False", "CredentialsRejected").await;
    let wrong_message = ready_message(&wrong);
    assert!(wrong_message.contains("403") && wrong_message.contains("signature"), "{wrong_message}");
    assert_eq!(env.secret_data("follows").await["api_secret"], secret2, "a refused pair is never published");

    // Unknown key: 401 Unknown credentials, a different message.
    env.put_pair("sw-ui-key", &"f".repeat(32), &"1".repeat(40)).await;
    let unknown = eventually(WAIT, "401 rejection", || async {
        let swc = env.swcs().get("follows").await.ok()?;
        let message = ready_message(&swc);
        message.contains("401").then_some(message)
    })
    .await;
    assert!(unknown.contains("does not know"), "{unknown}");
    assert_ne!(unknown, wrong_message);

    // Fixed: Ready again.
    env.put_pair("sw-ui-key", &key2, &secret2).await;
    env.wait_ready("follows").await;
    env.assert_no_leaks(&[secret1, secret2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_mints_rotates_and_deletes() {
    let env = Env::start("swc-mint").await;
    let spec = env
        .provision(json!({
            "capabilities": ["sensor_management", "flow_inventory_query"],
            "rotation": {"every": "20s", "gracePeriod": "8s"}
        }))
        .await;
    env.apply("minted", spec).await;
    let swc = env.wait_ready("minted").await;
    let status = swc.status.clone().unwrap();
    assert!(ready_message(&swc).starts_with("EXPERIMENTAL"), "{}", ready_message(&swc));
    assert!(!env.events_with_reason("Experimental").await.is_empty(), "experimental mode is announced");
    let live = env.live_credentials_of(&swc);
    assert_eq!(live.len(), 1, "exactly one credential at the vendor");
    let first = live[0].clone();
    assert_eq!(status.credential_id.as_deref(), Some(first.id.as_str()));
    assert_eq!(first.capabilities, vec![Capability::SensorManagement, Capability::FlowInventoryQuery]);
    assert!(first.description.starts_with("payments reporting [workloadkeys.io/owner="), "{}", first.description);
    assert_eq!(status.verified_capabilities, vec![Capability::SensorManagement, Capability::FlowInventoryQuery]);
    let data = env.secret_data("minted").await;
    assert_eq!(data["api_key"], first.api_key);
    assert_eq!(tetpyclient_get(&data, "/sensors"), 200, "the minted pair works with the SDK");
    let first_secret = data["api_secret"].clone();
    // Healthy between verifications and rotations: no vendor calls (neither the OpenAPI nor the UI).
    let calls = env.sim.counts.total("cisco", "");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.sim.counts.total("cisco", ""), calls, "no vendor calls while healthy");

    // Rotation: a new pair is published; the old one lives through the grace period, then is deleted.
    let rotated = eventually(Duration::from_secs(45), "rotation", || async {
        let swc = env.swcs().get("minted").await.ok()?;
        (swc.status.as_ref()?.credential_id.as_deref()? != first.id).then_some(swc)
    })
    .await;
    let status = rotated.status.clone().unwrap();
    assert_eq!(status.retiring_credentials.len(), 1);
    assert!(status.last_rotated_at.is_some());
    let data = eventually(WAIT, "Secret holds the new pair", || async {
        let d = env.secret_data("minted").await;
        (d["api_key"] != first.api_key).then_some(d)
    })
    .await;
    assert!(env.sim.cisco.key_is_active(&first.api_key), "the old pair stays valid during the grace period");
    assert!(env.sim.cisco.key_is_active(&data["api_key"]));
    eventually(Duration::from_secs(30), "old credential deleted after the grace period", || async {
        (!env.sim.cisco.keys().iter().any(|k| k.id == first.id)).then_some(())
    })
    .await;
    assert!(env.sim.cisco.key_is_active(&data["api_key"]), "the new pair still works");
    assert_eq!(env.live_credentials_of(&rotated).len(), 1);
    let second_secret = data["api_secret"].clone();

    // Delete (deletionPolicy defaults to Delete in provision mode): every credential of the resource goes.
    env.swcs().delete("minted", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "resource gone", || async { env.swcs().get_opt("minted").await.unwrap().is_none().then_some(()) })
        .await;
    assert!(env.live_credentials_of(&swc).is_empty(), "credential deleted at the vendor");
    let metrics = env.op.metrics().await;
    assert!(
        metrics.lines().any(|l| l
            .starts_with("workload_key_operator_vendor_requests_total{vendor=\"cisco-ui\",endpoint=\"https://")
            && l.contains(",operation=\"Secure Workload UI create API key\"")),
        "{metrics}"
    );
    env.assert_no_leaks(&[first_secret, second_secret]).await;
}

// Needs the crash points of the `failpoints` feature (`make test` enables it).
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_crash_after_mint_repair_annotation_and_retain() {
    let mut env = Env::start_with(
        "swc-crash",
        workload_key_operator::sim::SimOptions::default(),
        &[("WKO_FAILPOINT", "after-vendor-create")],
    )
    .await;
    let spec = env.provision(json!({})).await;
    env.apply("crashy", spec.clone()).await;
    assert_eq!(env.op.wait_exit(WAIT).await, Some(97), "the operator exited at the fail-point");
    let swc = env.swcs().get("crashy").await.unwrap();
    // A new resource's first intent is recorded with its finalizer, before the mint.
    assert!(swc.status.is_none(), "nothing recorded after the mint: {:?}", swc.status);
    let intent = support::first_intent(&swc.metadata).expect("intent recorded before the mint");
    assert_eq!(intent["pendingCredential"], true, "{intent}");
    assert_eq!(env.live_credentials_of(&swc).len(), 1, "the mint happened");

    env.op.restart_with_env(&[]);
    let swc = env.wait_ready("crashy").await;
    let live = env.live_credentials_of(&swc);
    assert_eq!(live.len(), 1, "still exactly one credential after the restart");
    let data = env.secret_data("crashy").await;
    assert_eq!(data["api_key"], live[0].api_key, "the Secret holds the one live credential");
    assert_eq!(swc.status.as_ref().unwrap().pending_credential, None);
    let mut seen_secrets = vec![data["api_secret"].clone()];

    // A deleted Secret cannot be re-read from the vendor: a new credential is minted, the old deleted at once.
    let before = live[0].clone();
    env.secrets().delete("crashy", &DeleteParams::default()).await.unwrap();
    eventually(Duration::from_secs(30), "Secret repaired with a new credential", || async {
        let s = env.secrets().get_opt("crashy").await.ok()??;
        let key = String::from_utf8(s.data?.get("api_key")?.0.clone()).ok()?;
        (key != before.api_key).then_some(())
    })
    .await;
    eventually(Duration::from_secs(20), "replaced credential deleted", || async {
        (env.live_credentials_of(&swc).len() == 1 && !env.sim.cisco.key_is_active(&before.api_key)).then_some(())
    })
    .await;
    seen_secrets.push(env.secret_data("crashy").await["api_secret"].clone());

    // The rotate annotation mints once per new value (the old credential is kept for the 10m default grace).
    let current = env.wait_ready("crashy").await.status.unwrap().credential_id.unwrap();
    env.swcs()
        .patch(
            "crashy",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"workloadkeys.io/rotate": "1"}}})),
        )
        .await
        .unwrap();
    let rotated = eventually(WAIT, "annotation rotation", || async {
        let s = env.swcs().get("crashy").await.ok()?.status?;
        (s.credential_id.as_deref()? != current && s.rotate_annotation.as_deref() == Some("1")).then_some(s)
    })
    .await;
    env.wait_ready("crashy").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = env.swcs().get("crashy").await.unwrap().status.unwrap();
    assert_eq!(again.credential_id, rotated.credential_id, "the same value does not rotate again");
    assert_eq!(env.live_credentials_of(&swc).len(), 2, "old and new during the grace period");
    seen_secrets.push(env.secret_data("crashy").await["api_secret"].clone());

    // Retain keeps the vendor credential; Delete removes all of them, the one in its grace period too.
    let mut retained = spec.clone();
    merge(&mut retained, &json!({"deletionPolicy": "Retain", "secret": {"name": "kept-secret"}}));
    env.apply("kept", retained).await;
    let kept = env.wait_ready("kept").await;
    seen_secrets.push(env.secret_data("kept-secret").await["api_secret"].clone());
    for name in ["kept", "crashy"] {
        env.swcs().delete(name, &DeleteParams::default()).await.unwrap();
    }
    eventually(WAIT, "resources gone", || async {
        let left = env.swcs().list(&ListParams::default()).await.unwrap().items;
        left.is_empty().then_some(())
    })
    .await;
    assert_eq!(env.live_credentials_of(&kept).len(), 1, "Retain leaves the credential");
    assert!(env.live_credentials_of(&swc).is_empty(), "Delete removes every credential of the resource");
    env.assert_no_leaks(&seen_secrets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_faults_get_specific_reasons_and_recover() {
    let env = Env::start("swc-faults").await;
    let (key, secret) = env.new_key(&[Capability::FlowInventoryQuery, Capability::UserRoleScopeManagement]);

    // Source Secret missing, then created.
    env.apply("nosource", env.existing("later", json!({}))).await;
    let swc = env.wait_condition("nosource", "False", "SecretNotFound").await;
    assert!(ready_message(&swc).contains("later"));
    env.put_pair("later", &key, &secret).await;
    env.wait_ready("nosource").await;

    // Malformed credentials.json: the message names the problem, never the secret; fixed: Ready.
    let broken = format!(r#"{{"api_key": "{key}", "api_secret": "{secret}""#);
    put_secret(&env.ns, "broken", &[("credentials.json", broken.as_str())]).await;
    env.apply("malformed", env.existing("broken", json!({}))).await;
    let swc = env.wait_condition("malformed", "False", "InvalidSecret").await;
    let message = ready_message(&swc);
    assert!(message.contains("credentials.json") && message.contains("not valid JSON"), "{message}");
    assert!(!message.contains(&secret));
    let fixed = json!({"api_key": key, "api_secret": secret}).to_string();
    put_secret(&env.ns, "broken", &[("credentials.json", fixed.as_str())]).await;
    env.wait_ready("malformed").await;

    // A provider whose CA did not sign the vendor's certificate: its check fails with a TLS error and the resource
    // waits for it; the CA Secret fixed: Ready.
    put_secret(&env.ns, "bad-ca", &[("ca.crt", include_str!("support/other-ca.pem"))]).await;
    env.cisco_provider("p-tls", None, json!({"cisco": {"caSecretRef": {"name": "bad-ca"}}})).await;
    env.apply("tls", env.existing("later", json!({"providerRef": sim_env::key_provider_ref("p-tls")}))).await;
    let message = env.wait_provider_not_ready("p-tls", "CredentialCheckFailed", "").await;
    assert!(message.to_lowercase().contains("tls") || message.contains("certificate"), "{message}");
    let swc = env.wait_condition("tls", "False", "ProviderNotReady").await;
    assert!(ready_message(&swc).contains("KeyProvider/p-tls"), "{}", ready_message(&swc));
    put_secret(&env.ns, "bad-ca", &[("ca.crt", env.sim.ca_pem.as_str())]).await;
    env.wait_ready("tls").await;

    // Provision mode through a provider with a wrong UI password: its sign-in is refused, nothing minted.
    put_secret(&env.ns, "wrong-login", &[("email", "site-admin@example.com"), ("password", "not-the-password")]).await;
    env.cisco_provider("p-badlogin", Some("wrong-login"), json!({})).await;
    let mut spec = env.provision(json!({})).await;
    merge(&mut spec, &json!({"providerRef": sim_env::key_provider_ref("p-badlogin")}));
    env.apply("badlogin", spec).await;
    env.wait_provider_not_ready("p-badlogin", "CredentialCheckFailed", "").await;
    let swc = env.wait_condition("badlogin", "False", "ProviderNotReady").await;
    assert!(env.live_credentials_of(&swc).is_empty());

    let metrics = env.op.metrics().await;
    for reason in ["SecretNotFound", "InvalidSecret", "ProviderNotReady"] {
        assert!(metrics.contains(&format!("reason=\"{reason}\"")), "reconcile_errors for {reason} missing");
    }
    let attempts = env.op.logs().matches("not ready").count();
    assert!(attempts < 60, "{attempts} failed reconciles: a tight retry loop");
    env.assert_no_leaks(&[secret, "not-the-password".into()]).await;
    // No crash loop: the operator never exited.
    let mut op = env.op;
    assert_eq!(op.wait_exit(Duration::from_millis(100)).await, None, "operator still running");
}

/// A crash after the minted pair reached the Secret but before the status recorded it: the credential is adopted
/// from the Secret, not deleted and minted again.
// Needs the crash points of the `failpoints` feature (`make test` enables it).
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_crash_after_secret_write_adopts_the_credential() {
    let mut env = Env::start_with(
        "swc-adopt",
        workload_key_operator::sim::SimOptions::default(),
        &[("WKO_FAILPOINT", "after-secret-write")],
    )
    .await;
    let spec = env.provision(json!({})).await;
    env.apply("adopted", spec).await;
    assert_eq!(env.op.wait_exit(WAIT).await, Some(97), "the operator exited at the fail-point");
    let swc = env.swcs().get("adopted").await.unwrap();
    // Nothing recorded after the mint: the first intent is on the resource (see `controller::intent`).
    assert!(swc.status.as_ref().is_none_or(|s| s.credential_id.is_none()), "the mint was never recorded");
    assert!(support::first_intent(&swc.metadata).is_some(), "the intent was recorded before the mint");
    let written = env.secret_data("adopted").await;

    env.op.restart_with_env(&[]);
    let swc = env.wait_ready("adopted").await;
    let live = env.live_credentials_of(&swc);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].api_key, written["api_key"], "the credential in the Secret was adopted");
    assert_eq!(swc.status.as_ref().unwrap().credential_id.as_deref(), Some(live[0].id.as_str()));
    assert_eq!(env.sim.counts.total("cisco", "POST /api/api_credentials"), 1, "minted once");
    assert!(!env.events_with_reason("CredentialAdopted").await.is_empty());
    env.assert_no_leaks(&[written["api_secret"].clone()]).await;
}

/// docs/architecture.md §4.1, §6: SIGKILL at random points during mints, rotations, retirements and deletions
/// leaves no orphaned credential, and every resource converges to its current credential plus those in their
/// grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_survives_random_crashes_without_orphans() {
    let mut env = Env::start("swc-chaos").await;
    let names: Vec<String> = (0..6).map(|i| format!("chaos-{i}")).collect();
    for name in &names {
        let spec = env.provision(json!({"rotation": {"every": "10s", "gracePeriod": "3s"}})).await;
        env.apply(name, spec).await;
    }
    let kills = env.op.crash_repeatedly(Duration::from_secs(25)).await;
    for name in names.iter().take(3) {
        env.swcs().delete(name, &DeleteParams::default()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    env.op.kill();
    env.op.restart_with_env(&[]);

    let mut survivors = Vec::new();
    for name in names.iter().skip(3) {
        let swc = env.wait_ready(name).await;
        // Converged: every live credential of the resource is its current one or one in its grace period.
        eventually(WAIT, &format!("{name}: no credential unknown to its status"), || async {
            let live = env.live_credentials_of(&swc);
            let status = env.swcs().get(name).await.ok()?.status?;
            let current = status.credential_id.clone()?;
            let known =
                |id: &String| *id == current || status.retiring_credentials.iter().any(|c| c.credential_id == *id);
            (live.iter().any(|k| k.id == current) && live.iter().all(|k| known(&k.id))).then_some(())
        })
        .await;
        let data = env.secret_data(name).await;
        assert!(env.sim.cisco.key_is_active(&data["api_key"]), "{name}: the Secret's pair works");
        survivors.push(swc);
    }
    for name in &names {
        let _ = env.swcs().delete(name, &DeleteParams::default()).await;
    }
    eventually(WAIT, "all resources deleted", || async {
        env.swcs().list(&ListParams::default()).await.ok()?.items.is_empty().then_some(())
    })
    .await;
    let orphans: Vec<SimKey> = env
        .sim
        .cisco
        .keys()
        .into_iter()
        .filter(|k| !k.revoked && k.description.contains("workloadkeys.io/owner="))
        .collect();
    assert!(orphans.is_empty(), "orphaned credentials after {kills} crashes: {orphans:?}");
    let mints = env.sim.counts.total("cisco", "POST /api/api_credentials");
    eprintln!("chaos: {kills} SIGKILLs, {mints} mints for 6 resources, no orphans");
}
