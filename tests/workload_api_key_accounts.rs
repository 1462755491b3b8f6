//! WorkloadApiKey through the Trend account APIs end to end: Vision One and Cloud One providers against the
//! simulator, a real API server, the operator as its own process. Each test covers both APIs in one environment.
#![cfg(feature = "sim")]

mod support;

use std::{collections::BTreeMap, process::Command, time::Duration};

use k8s_openapi::jiff::Timestamp;
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
    api::{VendorKeyId, WorkloadApiKey},
    clients::{
        SecretString, TlsOptions,
        trend::{CloudOneClient, VisionOneClient},
    },
    sim::SimOptions,
};

const WAIT: Duration = Duration::from_secs(60);

/// The two account APIs, as the provider's `spec.trend.api` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AccountApi {
    VisionOne,
    CloudOne,
}

use AccountApi::{CloudOne, VisionOne};

impl AccountApi {
    const BOTH: [AccountApi; 2] = [VisionOne, CloudOne];

    fn name(self) -> &'static str {
        match self {
            VisionOne => "VisionOne",
            CloudOne => "CloudOne",
        }
    }

    /// The `KeyProvider` every environment of this file has for the API.
    fn provider(self) -> &'static str {
        match self {
            VisionOne => "sim-vision-one",
            CloudOne => "sim-cloud-one",
        }
    }

    /// A resource name for the API.
    fn wak(self, name: &str) -> String {
        match self {
            VisionOne => format!("v1-{name}"),
            CloudOne => format!("c1-{name}"),
        }
    }
}

impl Env {
    /// [`Env::start`] plus a Vision One and a Cloud One `KeyProvider` against the simulator, both Ready.
    async fn start_accounts(prefix: &str, operator_env: &[(&str, &str)]) -> Self {
        let env = Env::start_with(prefix, SimOptions::default(), operator_env).await;
        put_secret(&env.ns, "v1-admin", &[("api-secret-key", env.sim.info.vision_one_admin_api_key().as_str())]).await;
        put_secret(&env.ns, "c1-admin", &[("api-secret-key", env.sim.info.cloud_one_admin_api_key().as_str())]).await;
        for (api, admin) in [(VisionOne, "v1-admin"), (CloudOne, "c1-admin")] {
            env.apply_key_provider(api.provider(), sim_env::account_provider_spec(&env.sim, api.name(), admin)).await;
        }
        for api in AccountApi::BOTH {
            env.wait_key_provider_ready(api.provider()).await;
        }
        env
    }

    fn waks(&self) -> Api<WorkloadApiKey> {
        self.ns.api()
    }

    /// A spec through the API's provider (Vision One role `Auditor`, Cloud One role `Read Only`), merged with `extra`.
    fn spec(&self, api: AccountApi, extra: serde_json::Value) -> serde_json::Value {
        let role = match api {
            VisionOne => "Auditor",
            CloudOne => "Read Only",
        };
        let mut spec = json!({
            "providerRef": sim_env::key_provider_ref(api.provider()),
            "role": {"name": role},
            "description": "Read-only access"
        });
        merge(&mut spec, &extra);
        spec
    }

    async fn apply(&self, name: &str, spec: serde_json::Value) -> WorkloadApiKey {
        self.waks()
            .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&sim_env::wak(name, spec)))
            .await
            .expect("apply WorkloadApiKey")
    }

    async fn wait_condition(&self, name: &str, status: &str, reason: &str) -> WorkloadApiKey {
        support::wait_condition(&self.waks(), name, "Ready", status, reason, WAIT).await
    }

    /// Ready for its current spec.
    async fn wait_ready(&self, name: &str) -> WorkloadApiKey {
        eventually(WAIT, &format!("{name} Ready for its generation"), || async {
            let w = self.waks().get(name).await.ok()?;
            let s = w.status.as_ref()?;
            let ready = s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && s.observed_generation == w.metadata.generation).then_some(w)
        })
        .await
    }

    /// Waits until the resource is refused with `reason`, and returns the message.
    async fn wait_refused(&self, name: &str, reason: &str) -> String {
        let w = self.wait_condition(name, "False", reason).await;
        w.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap().message
    }

    async fn secret_data(&self, name: &str) -> BTreeMap<String, String> {
        let s = self.secrets().get(name).await.expect("Secret");
        s.data.unwrap().into_iter().map(|(k, v)| (k, String::from_utf8(v.0).unwrap())).collect()
    }

    async fn api_key(&self, name: &str) -> String {
        self.secret_data(name).await.remove("api-key").expect("api-key in the Secret")
    }

    /// Whether `credential` authenticates: the Vision One connectivity check, the Cloud One key describing itself.
    async fn key_works(&self, api: AccountApi, credential: &str) -> bool {
        let tls = TlsOptions { ca_pem: Some(self.sim.ca_pem.clone()), insecure_skip_verify: false };
        let key = SecretString::new(credential);
        match api {
            VisionOne => VisionOneClient::with_default_limiter(&self.sim.info.vision_one_url(), key, &tls)
                .unwrap()
                .check_connectivity()
                .await
                .is_ok(),
            CloudOne => CloudOneClient::with_default_limiter(&self.sim.info.cloud_one_url(), key, &tls)
                .unwrap()
                .describe_current_api_key()
                .await
                .is_ok(),
        }
    }

    /// IDs of the live vendor keys whose description carries this resource's UID marker.
    fn live_keys_of(&self, api: AccountApi, wak: &WorkloadApiKey) -> Vec<VendorKeyId> {
        let marker = format!("[workloadkeys.io/owner={}.", wak.uid().unwrap());
        let ours = |d: Option<&String>| d.is_some_and(|d| d.contains(&marker));
        match api {
            VisionOne => self
                .sim
                .vision_one
                .keys()
                .into_iter()
                .filter(|k| k.is_live() && ours(k.description.as_ref()))
                .map(|k| VendorKeyId::new(k.id))
                .collect(),
            CloudOne => self
                .sim
                .cloud_one
                .keys()
                .into_iter()
                .filter(|k| k.is_live() && ours(k.description.as_ref()))
                .map(|k| VendorKeyId::new(k.id))
                .collect(),
        }
    }

    /// Requests the simulator's Trend listener (all three Trend APIs) received so far.
    fn trend_requests(&self) -> u64 {
        self.sim.counts.total("trend", "")
    }

    async fn annotate(&self, name: &str, value: &str) {
        let patch = json!({"metadata": {"annotations": {"workloadkeys.io/rotate": value}}});
        self.waks().patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    }

    async fn delete_and_wait(&self, name: &str) {
        self.waks().delete(name, &DeleteParams::default()).await.unwrap();
        eventually(WAIT, &format!("{name} gone"), || async {
            self.waks().get_opt(name).await.unwrap().is_none().then_some(())
        })
        .await;
    }
}

fn key_id(w: &WorkloadApiKey) -> VendorKeyId {
    w.status.as_ref().and_then(|s| s.key_id.clone()).expect("status.keyId")
}

/// The official Vision One SDK (`pytmv1`, unchanged, from the repo's venv) with `token` passes
/// `check_connectivity()` against the simulator. pytmv1 sends through requests' `HTTPAdapter.send` without a
/// `Session`, so requests' default bundle decides what is trusted: it is rebuilt as certifi's roots plus the
/// simulator's CA, for this one process.
fn pytmv1_check_connectivity(env: &Env, token: &str) {
    let python = support::repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make venv` (`make test` does) to create the Python venv with pytmv1",
        python.display()
    );
    const SCRIPT: &str = r#"
import os, sys, tempfile
import certifi, requests.adapters, pytmv1
with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as bundle:
    bundle.write(open(certifi.where()).read() + "\n" + open(os.environ["SIM_CA_FILE"]).read())
requests.adapters.DEFAULT_CA_BUNDLE_PATH = bundle.name
try:
    client = pytmv1.init("workload-key-operator-e2e", os.environ["TMV1_TOKEN"], os.environ["TMV1_URL"])
    result = client.system.check_connectivity()
finally:
    os.unlink(bundle.name)
if result.result_code != pytmv1.ResultCode.SUCCESS:
    sys.exit(f"check_connectivity failed: {result.error}")
print(result.response.status)
"#;
    let out = Command::new(&python)
        .args(["-c", SCRIPT])
        .env("TMV1_TOKEN", token)
        .env("TMV1_URL", env.sim.info.vision_one_url())
        .env("SIM_CA_FILE", &env.sim.info.ca_file)
        .output()
        .expect("run the venv's python");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pytmv1 with the operator's Secret failed:\n{said}");
    assert_eq!(said.trim(), "available", "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_both_apis_work_and_are_revoked_on_delete() {
    let env = Env::start_accounts("acct-create", &[]).await;
    // Vision One: 800h is at least 31 days but under 92: a one-month key. Cloud One: language and time zone go to
    // the key, and rotation.every says when it is replaced (its keys do not expire).
    env.apply("v1-app", env.spec(VisionOne, json!({"expiresAfter": "800h"}))).await;
    env.apply(
        "c1-app",
        env.spec(CloudOne, json!({"locale": "ja-JP", "timeZone": "Asia/Tokyo", "rotation": {"every": "720h"}})),
    )
    .await;
    let v1 = env.wait_ready("v1-app").await;
    let c1 = env.wait_ready("c1-app").await;

    // Vision One: the key, its role, and its expiry as the vendor set it; renewal a third of the lifetime before.
    let status = v1.status.clone().unwrap();
    let id = key_id(&v1);
    let vendor = env.sim.vision_one.keys().into_iter().find(|k| k.id == id.as_str()).expect("the vendor key");
    assert_eq!((vendor.name.as_str(), vendor.role.as_str()), (format!("{}-v1-app", env.ns.name).as_str(), "Auditor"));
    assert!(vendor.description.as_deref().unwrap().starts_with("Read-only access [workloadkeys.io/owner="));
    assert_eq!((status.role.as_deref(), status.role_id), (Some("Auditor"), None));
    let expires = status.expires_at.as_ref().expect("expiresAt").0;
    assert_eq!(expires, vendor.expired_date_time.parse::<Timestamp>().unwrap(), "the vendor's expiredDateTime");
    let created = status.created_at.as_ref().unwrap().0;
    let days = expires.duration_since(created).as_secs() / 86_400;
    assert!((27..=31).contains(&days), "a one-month key: {days} days");
    let renew = status.renew_at.as_ref().unwrap().0;
    let third = expires.duration_since(created).as_secs() / 3;
    assert!((expires.duration_since(renew).as_secs() - third).abs() <= 1, "renews a third of the lifetime early");

    // Its Secret: the key, its ID, the endpoint; the key works, also through Trend's own SDK.
    let data = env.secret_data("v1-app").await;
    assert_eq!(data.keys().collect::<Vec<_>>(), ["api-key", "api-key-id", "endpoint"]);
    assert_eq!(data["api-key-id"], id.as_str());
    assert_eq!(data["endpoint"], env.sim.info.vision_one_url());
    let v1_key = data["api-key"].clone();
    assert!(env.key_works(VisionOne, &v1_key).await, "the Vision One key in the Secret works");
    pytmv1_check_connectivity(&env, &v1_key);

    // Cloud One: the role by name becomes its slug; language and time zone reached the key; no expiry.
    let status = c1.status.clone().unwrap();
    let id = key_id(&c1);
    let vendor = env.sim.cloud_one.keys().into_iter().find(|k| k.id == id.as_str()).expect("the vendor key");
    assert_eq!(
        (vendor.role_id.as_str(), vendor.locale.as_str(), vendor.timezone.as_str()),
        ("read-only", "ja", "Asia/Tokyo")
    );
    assert_eq!(status.role.as_deref(), Some("read-only"));
    assert!(status.expires_at.is_none(), "Cloud One keys do not expire");
    let created = status.created_at.as_ref().unwrap().0;
    assert_eq!(status.renew_at.as_ref().unwrap().0.duration_since(created).as_secs(), 720 * 3600, "rotation.every");
    let data = env.secret_data("c1-app").await;
    assert_eq!(data.keys().collect::<Vec<_>>(), ["api-key", "api-key-id", "endpoint"]);
    assert_eq!(data["endpoint"], env.sim.info.cloud_one_url());
    let c1_key = data["api-key"].clone();
    assert!(c1_key.starts_with(&format!("{}:", id.as_str())), "the whole <id>:<secret> credential");
    assert!(env.key_works(CloudOne, &c1_key).await, "the Cloud One key in the Secret works");

    // A healthy resource costs no vendor calls on resync.
    let before = env.trend_requests();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.trend_requests(), before, "no vendor calls while healthy");

    // Delete: the keys are deleted at the vendor.
    for (api, wak) in [(VisionOne, &v1), (CloudOne, &c1)] {
        env.delete_and_wait(&wak.name_any()).await;
        assert!(env.live_keys_of(api, wak).is_empty(), "{api:?}: no live key left");
    }
    assert!(!env.key_works(VisionOne, &v1_key).await && !env.key_works(CloudOne, &c1_key).await, "revoked");
    let admin = [env.sim.info.vision_one_admin_api_key(), env.sim.info.cloud_one_admin_api_key()];
    support::assert_no_leaks(&env.ns, &env.op, &[&[v1_key, c1_key][..], &admin[..]].concat()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_rotation_attribute_changes_and_drift_repair_replace_the_key() {
    let env = Env::start_accounts("acct-rotate", &[]).await;
    let spec = |api| env.spec(api, json!({"rotation": {"gracePeriod": "10s"}}));
    for api in AccountApi::BOTH {
        env.apply(&api.wak("rot"), spec(api)).await;
    }
    let mut seen = Vec::new();
    for api in AccountApi::BOTH {
        let name = api.wak("rot");
        let w = env.wait_ready(&name).await;
        let old_id = key_id(&w);
        let old_key = env.api_key(&name).await;
        seen.push(old_key.clone());

        // Rotate now (Replace): a new key in the Secret, the old one still valid for the grace period, then deleted.
        env.annotate(&name, "1").await;
        let rotated = eventually(WAIT, "rotation", || async {
            let w = env.waks().get(&name).await.ok()?;
            (w.status.as_ref()?.key_id.as_ref()? != &old_id).then_some(w)
        })
        .await;
        let status = rotated.status.clone().unwrap();
        assert_eq!(status.key_name.as_deref(), Some(format!("{}-{name}-r2", env.ns.name).as_str()));
        let new_key = env.api_key(&name).await;
        assert_ne!(new_key, old_key);
        assert!(env.key_works(api, &new_key).await, "{api:?}: the new key works");
        assert_eq!(status.retiring_keys.len(), 1, "{api:?}: the old key is retiring");
        assert!(env.key_works(api, &old_key).await, "{api:?}: the old key works during the grace period");
        eventually(Duration::from_secs(30), "old key revoked after the grace period", || async {
            let w = env.waks().get(&name).await.ok()?;
            let done = w.status.as_ref()?.retiring_keys.is_empty() && !env.key_works(api, &old_key).await;
            done.then_some(())
        })
        .await;
        assert_eq!(env.live_keys_of(api, &rotated), vec![key_id(&rotated)], "{api:?}: one live key, the new one");
        seen.push(new_key.clone());

        // A change the key was not made with (the Secret's labels) keeps it ...
        let rotated_id = key_id(&rotated);
        env.apply(&name, merged(spec(api), json!({"secret": {"labels": {"team": "reporting"}}}))).await;
        let w = env.wait_ready(&name).await;
        assert_eq!(key_id(&w), rotated_id, "{api:?}: unrelated change, same key");
        // ... a new description replaces it (these APIs cannot modify a key).
        env.apply(
            &name,
            merged(spec(api), json!({"secret": {"labels": {"team": "reporting"}}, "description": "Reporting job"})),
        )
        .await;
        let replaced = eventually(WAIT, "replaced for the new description", || async {
            let w = env.waks().get(&name).await.ok()?;
            (w.status.as_ref()?.key_id.as_ref()? != &rotated_id).then_some(w)
        })
        .await;
        let description = match api {
            VisionOne => {
                env.sim.vision_one.keys().into_iter().find(|k| k.id == key_id(&replaced).as_str()).unwrap().description
            }
            CloudOne => {
                env.sim.cloud_one.keys().into_iter().find(|k| k.id == key_id(&replaced).as_str()).unwrap().description
            }
        };
        assert!(description.unwrap().starts_with("Reporting job [workloadkeys.io/owner="), "{api:?}");
        let current = eventually(WAIT, "Secret holds the replacement", || async {
            let v = env.api_key(&name).await;
            (v != new_key).then_some(v)
        })
        .await;
        seen.push(current.clone());

        // Drift: the Secret deleted. The old key's secret cannot be shown again: a new key, the old one revoked.
        env.secrets().delete(&name, &DeleteParams::default()).await.unwrap();
        let repaired = eventually(WAIT, "Secret recreated with a new key", || async {
            let s = env.secrets().get_opt(&name).await.ok()??;
            let v = String::from_utf8(s.data?.get("api-key")?.0.clone()).ok()?;
            (v != current).then_some(v)
        })
        .await;
        assert!(env.key_works(api, &repaired).await, "{api:?}: the repaired Secret's key works");
        let w = eventually(WAIT, "the replaced key revoked", || async {
            let w = env.waks().get(&name).await.ok()?;
            let gone = w.status.as_ref()?.retiring_keys.is_empty() && !env.key_works(api, &current).await;
            gone.then_some(w)
        })
        .await;
        assert_eq!(env.live_keys_of(api, &w), vec![key_id(&w)], "{api:?}: exactly one live key after repair");
        seen.push(repaired);
    }
    let events: Api<k8s_openapi::api::events::v1::Event> = env.ns.api();
    let evs = events.list(&ListParams::default()).await.unwrap().items;
    let repaired = evs.iter().filter(|e| e.reason.as_deref() == Some("SecretRepaired")).count();
    assert!(repaired >= 2, "a SecretRepaired Event per API");
    assert!(
        evs.iter().any(|e| e.note.as_deref().is_some_and(|n| n.contains("cannot show or regenerate a key's secret"))),
        "the Event says why a new key was made"
    );
    support::assert_no_leaks(&env.ns, &env.op, &seen).await;
}

fn merged(mut spec: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    merge(&mut spec, &extra);
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_an_api_lacks_and_the_policy_are_refused_without_a_vendor_call() {
    let env = Env::start_accounts("acct-refuse", &[]).await;
    // A Cloud One provider whose policy caps a key's life at 24h: for Cloud One that caps rotation.every.
    let mut capped = sim_env::account_provider_spec(&env.sim, "CloudOne", "c1-admin");
    capped["policy"] = json!({"maxExpiresAfter": "24h"});
    env.apply_key_provider("c1-capped", capped).await;
    env.wait_key_provider_ready("c1-capped").await;
    let via_capped = json!({"providerRef": sim_env::key_provider_ref("c1-capped")});

    let before = env.trend_requests();
    let cases = [
        (
            "v1-locale",
            env.spec(VisionOne, json!({"locale": "en-US", "timeZone": "UTC"})),
            "InvalidSpec",
            vec!["spec.locale is not accepted by Trend VisionOne", "spec.timeZone is not accepted by Trend VisionOne"],
        ),
        (
            "v1-short",
            env.spec(VisionOne, json!({"expiresAfter": "100h"})),
            "InvalidSpec",
            vec!["Vision One keys live 1, 3, 6 or 12 months; expiresAfter 100h is shorter than one month (744h)"],
        ),
        (
            "v1-role-id",
            env.spec(VisionOne, json!({"role": {"name": null, "id": 2}})),
            "InvalidSpec",
            vec!["spec.role.id is not accepted by Trend VisionOne: use role.name"],
        ),
        (
            "c1-expiry",
            env.spec(CloudOne, json!({"expiresAfter": "744h"})),
            "InvalidSpec",
            vec!["spec.expiresAfter is not accepted by Trend CloudOne", "use rotation.every"],
        ),
        (
            "c1-regenerate",
            env.spec(CloudOne, json!({"rotation": {"strategy": "RegenerateSecret"}})),
            "InvalidSpec",
            vec!["spec.rotation.strategy RegenerateSecret is not accepted by Trend CloudOne: rotate by Replace"],
        ),
        (
            "c1-every",
            env.spec(CloudOne, merged(via_capped.clone(), json!({"rotation": {"every": "48h"}}))),
            "PolicyViolation",
            vec!["rotation.every 48h is longer than the provider's maxExpiresAfter 24h"],
        ),
    ];
    for (name, spec, _, _) in &cases {
        env.apply(name, spec.clone()).await;
    }
    for (name, _, reason, needles) in &cases {
        let message = env.wait_refused(name, reason).await;
        for needle in needles {
            assert!(message.contains(needle), "{name}: {needle:?} not in {message:?}");
        }
    }
    assert_eq!(env.trend_requests(), before, "refused before any vendor request");

    // Within the cap, a Cloud One key without rotation.every is replaced after the cap.
    env.apply("c1-default", env.spec(CloudOne, via_capped)).await;
    let w = env.wait_ready("c1-default").await;
    let s = w.status.unwrap();
    let created = s.created_at.unwrap().0;
    assert_eq!(s.renew_at.unwrap().0.duration_since(created).as_secs(), 24 * 3600, "the cap is the default every");
    assert!(env.live_keys_of(CloudOne, &env.waks().get("c1-default").await.unwrap()).len() == 1);
}

// Needs the crash points of the `failpoints` feature (`make test` enables it).
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_right_after_vendor_create_leaves_exactly_one_live_key() {
    const CRASH: [(&str, &str); 1] = [("WKO_FAILPOINT", "after-vendor-create")];
    let mut env = Env::start_accounts("acct-crash", &[]).await;
    let mut secrets = Vec::new();
    for api in AccountApi::BOTH {
        let name = api.wak("crashy");
        env.op.restart_with_env(&CRASH);
        env.apply(&name, env.spec(api, json!({}))).await;
        assert_eq!(env.op.wait_exit(WAIT).await, Some(97), "{api:?}: the operator exited at the fail-point");
        let wak = env.waks().get(&name).await.unwrap();
        let created = env.live_keys_of(api, &wak);
        assert_eq!(created.len(), 1, "{api:?}: the vendor create happened");
        // A new resource's first intent is recorded with its finalizer, before the create.
        assert!(wak.status.is_none(), "{api:?}: nothing recorded after the create");
        let intent = support::first_intent(&wak.metadata).expect("intent recorded before the create");
        assert_eq!(intent["pendingKeyName"], format!("{}-{name}", env.ns.name), "{api:?}: {intent}");

        env.op.restart_with_env(&[]);
        let wak = env.wait_ready(&name).await;
        let live = env.live_keys_of(api, &wak);
        assert_eq!(live, vec![key_id(&wak)], "{api:?}: exactly one live key, the current one");
        assert_ne!(live, created, "{api:?}: the key whose secret was lost was deleted and made afresh");
        let key = env.api_key(&name).await;
        assert!(env.key_works(api, &key).await, "{api:?}: the recovered key works");
        secrets.push(key);
    }
    support::assert_no_leaks(&env.ns, &env.op, &secrets).await;
}
