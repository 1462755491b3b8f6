//! WorkloadApiKey end to end: a real API server, the operator as its own process, the Trend simulator.
#![cfg(feature = "sim")]

mod support;

use std::time::Duration;

use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{
    eventually, merge,
    operator::Operator,
    put_secret,
    sim_env::{self, Env},
};
use workload_key_operator::{
    api::WorkloadApiKey,
    clients::{
        ErrorKind, SecretString, TlsOptions,
        trend::{Auth, DeepSecurityClient},
    },
    sim::{self, SimOptions, partition::Partition},
};

const WAIT: Duration = Duration::from_secs(60);

impl Env {
    fn waks(&self) -> Api<WorkloadApiKey> {
        self.ns.api()
    }

    /// A spec against the simulator through the namespace's Trend provider, merged with `extra`.
    fn spec(&self, extra: serde_json::Value) -> serde_json::Value {
        let mut spec = sim_env::wak_spec("Read-only access");
        merge(&mut spec, &extra);
        spec
    }

    /// The same through the `KeyProvider` `provider` of the namespace.
    fn via(&self, provider: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut spec = self.spec(json!({"providerRef": sim_env::key_provider_ref(provider)}));
        merge(&mut spec, &extra);
        spec
    }

    /// A Trend `KeyProvider` `name` against the simulator whose admin key is in Secret `admin`, merged with `extra`.
    async fn trend_provider(&self, name: &str, admin: &str, extra: serde_json::Value) {
        let mut spec = sim_env::trend_provider_spec(&self.sim, admin);
        merge(&mut spec, &extra);
        self.apply_key_provider(name, spec).await;
    }

    /// Waits until the resource waits for its provider, with a message containing `needle`; returns the message.
    async fn wait_provider_not_ready_on(&self, name: &str, needle: &str) -> String {
        let what = format!("{name} Ready=False reason=ProviderNotReady message containing {needle:?}");
        eventually(WAIT, &what, || async {
            let w = self.waks().get(name).await.ok()?;
            let c = w.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
            (c.status == "False" && c.reason == "ProviderNotReady" && c.message.contains(needle)).then_some(c.message)
        })
        .await
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

    async fn wait_ready(&self, name: &str) -> WorkloadApiKey {
        self.wait_condition(name, "True", "Ready").await
    }

    async fn secret_value(&self, name: &str) -> String {
        let s = self.secrets().get(name).await.expect("Secret");
        String::from_utf8(s.data.unwrap()["api-secret-key"].0.clone()).unwrap()
    }

    fn client_with(&self, secret: &str) -> DeepSecurityClient {
        let tls = TlsOptions { ca_pem: Some(self.sim.ca_pem.clone()), insecure_skip_verify: false };
        DeepSecurityClient::with_default_limiter(
            &self.sim.info.trend_url(),
            Auth::ApiKey(SecretString::new(secret)),
            &tls,
        )
        .unwrap()
    }

    /// Live keys at the vendor whose description carries this resource's UID.
    fn live_keys_of(&self, wak: &WorkloadApiKey) -> Vec<i64> {
        let marker = format!("[workloadkeys.io/owner={}.", wak.uid().unwrap());
        let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
        self.sim
            .deep_security
            .keys()
            .into_iter()
            .filter(|k| k.description.as_deref().is_some_and(|d| d.contains(&marker)) && k.is_live(now))
            .map(|k| k.id)
            .collect()
    }

    /// No secret value in the operator's logs (trace level), Events, statuses or metrics.
    async fn assert_no_leaks(&self, secrets: &[String]) {
        support::assert_no_leaks(&self.ns, &self.op, secrets).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_a_key_whose_secret_works_and_revokes_it_on_delete() {
    let env = Env::start("wak-create").await;
    env.apply("reporting", env.spec(json!({"keyName": "reporting-auditor"}))).await;
    let wak = env.wait_ready("reporting").await;
    let status = wak.status.clone().unwrap();
    assert_eq!(status.key_name.as_deref(), Some("reporting-auditor"));
    assert_eq!(status.role_id, Some(2));
    assert_eq!(status.secret_name.as_deref(), Some("reporting"));

    // The Secret is what an app mounts; its key works against the vendor and is the key we asked for.
    let secret = env.secrets().get("reporting").await.unwrap();
    assert_eq!(secret.labels().get("app.kubernetes.io/managed-by").map(String::as_str), Some("workload-key-operator"));
    // Its version is recorded with the hash: while it holds, later reconciles (a restart's) need not read it.
    assert_eq!(status.secret_resource_version, secret.metadata.resource_version);
    let data = secret.data.clone().unwrap();
    assert_eq!(String::from_utf8(data["api-key-id"].0.clone()).unwrap(), status.key_id.unwrap().to_string());
    assert_eq!(String::from_utf8(data["endpoint"].0.clone()).unwrap(), env.sim.info.trend_url());
    let value = env.secret_value("reporting").await;
    let current = env.client_with(&value).describe_current_api_key().await.expect("the Secret's key works");
    assert_eq!(current.key_name, "reporting-auditor");
    assert_eq!(current.role_id, Some(2));
    assert_eq!(current.locale.as_deref(), Some("ja-JP"));
    assert_eq!(current.time_zone.as_deref(), Some("Asia/Tokyo"));
    let expiry = current.expiry_date.expect("an expiry");
    let expected = k8s_openapi::jiff::Timestamp::now().as_millisecond() + 336 * 3600 * 1000;
    assert!((expiry - expected).abs() < 120_000, "expiry is two weeks out");
    assert!(current.description.unwrap().starts_with("Read-only access [workloadkeys.io/owner="));
    assert_eq!(env.live_keys_of(&wak).len(), 1);

    // kubectl users can wait on it.
    let out = std::process::Command::new(support::kubectl())
        .arg("--kubeconfig")
        .arg(&support::control_plane().kubeconfig)
        .args(["-n", &env.ns.name, "wait", "--for=condition=Ready", "wak/reporting", "--timeout=30s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "kubectl wait: {}", String::from_utf8_lossy(&out.stderr));

    // Metrics: reconciles, vendor requests by operation and status, per-resource expiry and renewal.
    let metrics = env.op.metrics().await;
    // Requests are counted by endpoint: its origin only (no path, no credentials).
    let endpoint = url::Url::parse(&env.sim.info.trend_url()).unwrap().origin().ascii_serialization();
    let created = format!(
        "workload_key_operator_vendor_requests_total{{vendor=\"trend\",endpoint=\"{endpoint}\",operation=\"create API \
         key\",status=\"200\"}} 1"
    );
    for needle in [
        "workload_key_operator_reconciles_total{kind=\"WorkloadApiKey\"}",
        "workload_key_operator_reconcile_duration_seconds_bucket",
        created.as_str(),
        "workload_key_operator_credential_expiry_timestamp_seconds{kind=\"WorkloadApiKey\"",
        "workload_key_operator_credential_renewal_timestamp_seconds{kind=\"WorkloadApiKey\"",
        "workload_key_operator_resource_ready{kind=\"WorkloadApiKey\"",
    ] {
        assert!(metrics.contains(needle), "metric {needle} missing in:\n{metrics}");
    }

    // A healthy resource costs no vendor calls on resync.
    let before = env.sim.counts.total("trend", "");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.sim.counts.total("trend", ""), before, "no vendor calls while healthy");

    // Delete (deletionPolicy Delete): the vendor key is revoked and the Secret collected.
    env.waks().delete("reporting", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "resource gone", || async {
        env.waks().get_opt("reporting").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(env.live_keys_of(&wak).is_empty(), "vendor key deleted");
    assert_eq!(env.client_with(&value).describe_current_api_key().await.unwrap_err().kind, ErrorKind::Unauthorized);
    eventually(WAIT, "Secret garbage-collected", || async {
        env.secrets().get_opt("reporting").await.unwrap().is_none().then_some(())
    })
    .await;
    env.assert_no_leaks(&[value, env.sim.info.trend_admin_api_key()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_by_id_and_unknown_role_recovers_after_fix() {
    let env = Env::start("wak-role").await;
    env.apply("by-id", env.spec(json!({"role": {"name": null, "id": 1}}))).await;
    let w = env.wait_ready("by-id").await;
    assert_eq!(w.status.unwrap().role_id, Some(1));

    env.apply("typo", env.spec(json!({"role": {"name": "Auditorr"}}))).await;
    let w = env.wait_condition("typo", "False", "RoleNotFound").await;
    let msg = &w.status.unwrap().conditions[0].message;
    assert!(msg.contains("Auditorr"), "{msg}");
    env.apply("typo", env.spec(json!({"role": {"name": "Auditor"}}))).await;
    let w = env.wait_ready("typo").await;
    assert_eq!(w.status.unwrap().role_id, Some(2));
    // Role names are looked up once per endpoint, then cached.
    let searches = env.sim.counts.total("trend", "POST /api/roles/search");
    env.apply("same-role", env.spec(json!({}))).await;
    env.wait_ready("same-role").await;
    assert_eq!(env.sim.counts.total("trend", "POST /api/roles/search"), searches, "role lookup cached");
    // The Event for the failure was published.
    let events: Api<k8s_openapi::api::events::v1::Event> = env.ns.api();
    let evs = events.list(&ListParams::default()).await.unwrap().items;
    assert!(evs.iter().any(|e| e.reason.as_deref() == Some("RoleNotFound")), "a RoleNotFound event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_rotation_keeps_the_old_key_for_the_grace_period() {
    let env = Env::start("wak-replace").await;
    env.apply(
        "rot",
        env.spec(json!({"expiresAfter": "90s", "rotation": {"renewBefore": "75s", "strategy": "Replace", "gracePeriod": "12s"}})),
    )
    .await;
    let first = env.wait_ready("rot").await;
    let old_id = first.status.as_ref().unwrap().key_id.clone().unwrap();
    let old_secret = env.secret_value("rot").await;

    // renewAt = created + 15 s: the Secret changes to a new key with a rotation suffix.
    let rotated = eventually(Duration::from_secs(45), "rotation", || async {
        let w = env.waks().get("rot").await.ok()?;
        (w.status.as_ref()?.key_id.as_ref()? != &old_id).then_some(w)
    })
    .await;
    let status = rotated.status.clone().unwrap();
    assert_eq!(status.key_name.as_deref(), Some(format!("{}-rot-r2", env.ns.name).as_str()));
    assert_eq!(status.retiring_keys.len(), 1);
    let new_secret = eventually(WAIT, "Secret updated", || async {
        let v = env.secret_value("rot").await;
        (v != old_secret).then_some(v)
    })
    .await;
    env.client_with(&new_secret).describe_current_api_key().await.expect("new key works");
    env.client_with(&old_secret).describe_current_api_key().await.expect("old key still works during the grace period");

    // After the grace period the old key is deleted at the vendor.
    eventually(Duration::from_secs(40), "old key revoked", || async {
        let gone = env.client_with(&old_secret).describe_current_api_key().await.is_err();
        gone.then_some(())
    })
    .await;
    assert!(
        env.sim.deep_security.keys().iter().all(|k| Some(k.id) != old_id.as_number()),
        "old key deleted, not just locked"
    );
    env.client_with(&new_secret).describe_current_api_key().await.expect("new key still works");
    env.assert_no_leaks(&[old_secret, new_secret]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerate_rotation_and_the_rotate_annotation() {
    let env = Env::start("wak-regen").await;
    env.apply(
        "regen",
        env.spec(json!({"expiresAfter": "90s", "rotation": {"renewBefore": "80s", "strategy": "RegenerateSecret"}})),
    )
    .await;
    let first = env.wait_ready("regen").await;
    let id = first.status.as_ref().unwrap().key_id.clone().unwrap();
    let s1 = env.secret_value("regen").await;
    let s2 = eventually(Duration::from_secs(40), "secret regenerated", || async {
        let v = env.secret_value("regen").await;
        (v != s1).then_some(v)
    })
    .await;
    // The Secret is written before the status records the rotation: wait for the record, not just Ready.
    let w = eventually(WAIT, "rotation recorded", || async {
        let w = env.waks().get("regen").await.ok()?;
        w.status.as_ref()?.last_rotated_at.is_some().then_some(w)
    })
    .await;
    assert_eq!(w.status.as_ref().unwrap().key_id, Some(id), "same key, new secret");
    env.client_with(&s2).describe_current_api_key().await.expect("new secret works");
    assert_eq!(env.client_with(&s1).describe_current_api_key().await.unwrap_err().kind, ErrorKind::Unauthorized);

    // The annotation rotates once per new value (Replace strategy here, long lifetime).
    env.apply("anno", env.spec(json!({}))).await;
    let a = env.wait_ready("anno").await;
    let a_id = a.status.unwrap().key_id.unwrap();
    let annotate = |v: &'static str| {
        let api = env.waks();
        async move {
            api.patch(
                "anno",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"workloadkeys.io/rotate": v}}})),
            )
            .await
            .unwrap();
        }
    };
    annotate("1").await;
    let rotated = eventually(WAIT, "annotation rotation", || async {
        let w = env.waks().get("anno").await.ok()?;
        let s = w.status.clone()?;
        (s.key_id.as_ref()? != &a_id && s.rotate_annotation.as_deref() == Some("1")).then_some(s)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = env.waks().get("anno").await.unwrap().status.unwrap();
    assert_eq!(again.key_id, rotated.key_id, "the same value does not rotate again");

    // A new value within a minute of the last rotation it asked for waits for that minute, and an Event says when.
    let first = again.rotate_annotation_at.expect("when the value was acted upon").0;
    let allowed = first + k8s_openapi::jiff::SignedDuration::from_secs(60);
    annotate("2").await;
    let note = eventually(WAIT, "RotationDeferred Event", || async {
        let events: Api<k8s_openapi::api::events::v1::Event> = env.ns.api();
        let list = events.list(&ListParams::default()).await.ok()?.items;
        list.into_iter().filter(|e| e.reason.as_deref() == Some("RotationDeferred")).find_map(|e| e.note)
    })
    .await;
    assert!(note.contains(&format!("rotating at {allowed:.0}")), "{note}");
    let held = env.waks().get("anno").await.unwrap().status.unwrap();
    assert!(k8s_openapi::jiff::Timestamp::now() < allowed, "the test checks within the minute");
    assert_eq!(held.key_id, rotated.key_id, "not rotated before its moment");
    let deferred = eventually(Duration::from_secs(90), "deferred rotation", || async {
        let s = env.waks().get("anno").await.ok()?.status?;
        (s.key_id != rotated.key_id && s.rotate_annotation.as_deref() == Some("2")).then_some(s)
    })
    .await;
    let at = deferred.rotate_annotation_at.unwrap().0;
    assert!(at >= allowed, "rotated at {at}, a minute after {first}");
    env.assert_no_leaks(&[s1, s2, env.secret_value("anno").await]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_or_edited_secret_is_repaired_with_exactly_one_live_key() {
    let mut env = Env::start("wak-drift").await;
    env.apply("drift", env.spec(json!({}))).await;
    let wak = env.wait_ready("drift").await;
    let s1 = env.secret_value("drift").await;

    env.secrets().delete("drift", &DeleteParams::default()).await.unwrap();
    let s2 = eventually(Duration::from_secs(20), "Secret recreated", || async {
        let s = env.secrets().get_opt("drift").await.ok()??;
        let v = String::from_utf8(s.data?.get("api-secret-key")?.0.clone()).ok()?;
        (v != s1).then_some(v)
    })
    .await;
    env.client_with(&s2).describe_current_api_key().await.expect("repaired secret works");
    assert!(env.client_with(&s1).describe_current_api_key().await.is_err(), "replaced secret revoked");

    // Edit the data by hand: repaired too.
    env.secrets()
        .patch("drift", &PatchParams::default(), &Patch::Merge(json!({"data": {"api-secret-key": "aGFja2Vk"}})))
        .await
        .unwrap();
    let s3 = eventually(Duration::from_secs(20), "edited Secret repaired", || async {
        let v = env.secret_value("drift").await;
        (v != s2 && v != "hacked").then_some(v)
    })
    .await;
    env.client_with(&s3).describe_current_api_key().await.expect("repaired secret works");
    assert_eq!(env.live_keys_of(&wak).len(), 1, "exactly one live key for the resource");

    // Renaming the target Secret moves the credential: a fresh secret in the new one, the old Secret removed.
    env.apply("drift", env.spec(json!({"secret": {"name": "drift-renamed"}}))).await;
    eventually(Duration::from_secs(20), "old Secret removed", || async {
        env.secrets().get_opt("drift").await.ok()?.is_none().then_some(())
    })
    .await;
    let s4 = env.secret_value("drift-renamed").await;
    env.client_with(&s4).describe_current_api_key().await.expect("the moved secret works");
    assert_eq!(env.wait_ready("drift").await.status.unwrap().secret_name.as_deref(), Some("drift-renamed"));
    assert_eq!(env.live_keys_of(&wak).len(), 1, "still exactly one live key");

    // Edited while the operator is down: the restart's first look sees the new version and repairs it (the
    // recorded version spares the read of an unchanged Secret only).
    env.op.kill();
    env.secrets()
        .patch("drift-renamed", &PatchParams::default(), &Patch::Merge(json!({"data": {"api-secret-key": "aGFja2Vk"}})))
        .await
        .unwrap();
    env.op.restart_with_env(&[]);
    let s5 = eventually(Duration::from_secs(30), "Secret edited while down repaired", || async {
        let v = env.secret_value("drift-renamed").await;
        (v != s4 && v != "hacked").then_some(v)
    })
    .await;
    env.client_with(&s5).describe_current_api_key().await.expect("repaired secret works");
    assert_eq!(env.live_keys_of(&wak).len(), 1, "still exactly one live key");
    env.assert_no_leaks(&[s1, s2, s3, s4, s5]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_keeps_the_vendor_key_and_foreign_secrets_are_untouched() {
    let env = Env::start("wak-retain").await;
    env.apply("kept", env.spec(json!({"deletionPolicy": "Retain"}))).await;
    let wak = env.wait_ready("kept").await;
    env.waks().delete("kept", &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "resource gone", || async { env.waks().get_opt("kept").await.unwrap().is_none().then_some(()) })
        .await;
    assert_eq!(env.live_keys_of(&wak).len(), 1, "Retain leaves the vendor key");

    // A Secret the operator does not own is never overwritten.
    put_secret(&env.ns, "taken", &[("api-secret-key", "someone else's"), ("other", "data")]).await;
    let before = env.secrets().get("taken").await.unwrap().data;
    env.apply("taken", env.spec(json!({}))).await;
    let w = env.wait_condition("taken", "False", "SecretConflict").await;
    assert!(w.status.as_ref().unwrap().key_id.is_none(), "no vendor key made for a conflicting Secret");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.secrets().get("taken").await.unwrap().data, before, "foreign Secret byte-for-byte unchanged");
    // Removing the foreign Secret resolves the conflict.
    env.secrets().delete("taken", &DeleteParams::default()).await.unwrap();
    env.wait_ready("taken").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_faults_get_specific_reasons_and_recover() {
    let env = Env::start("wak-faults").await;
    // The provider's admin Secret missing, then created: the provider says SecretNotFound, the resource waits for
    // it (ProviderNotReady, naming the cause) and is Ready once the Secret exists.
    env.trend_provider("p-later", "later", json!({})).await;
    env.apply("nosecret", env.via("p-later", json!({}))).await;
    env.wait_provider_not_ready("p-later", "SecretNotFound", "later").await;
    env.wait_provider_not_ready_on("nosecret", "SecretNotFound").await;
    put_secret(&env.ns, "later", &[("api-secret-key", env.sim.info.trend_admin_api_key().as_str())]).await;
    env.wait_ready("nosecret").await;

    // Wrong admin key: the provider's check is refused (401); fixed: Ready.
    put_secret(&env.ns, "wrong", &[("api-secret-key", "99:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")]).await;
    env.trend_provider("p-wrong", "wrong", json!({})).await;
    env.apply("badkey", env.via("p-wrong", json!({}))).await;
    env.wait_provider_not_ready("p-wrong", "CredentialCheckFailed", "401").await;
    env.wait_provider_not_ready_on("badkey", "401").await;
    put_secret(&env.ns, "wrong", &[("api-secret-key", env.sim.info.trend_admin_api_key().as_str())]).await;
    env.wait_ready("badkey").await;

    // An Auditor key may describe itself (the provider is Ready) but not create keys: Forbidden.
    let auditor = env.secret_value("badkey").await;
    put_secret(&env.ns, "auditor", &[("api-secret-key", auditor.as_str())]).await;
    env.trend_provider("p-auditor", "auditor", json!({})).await;
    env.wait_key_provider_ready("p-auditor").await;
    env.apply("weak", env.via("p-auditor", json!({}))).await;
    let w = env.wait_condition("weak", "False", "Forbidden").await;
    assert!(w.status.unwrap().conditions[0].message.contains("403"));

    // Bad CA on the provider: its check fails with a TLS error; the provider fixed: Ready.
    put_secret(&env.ns, "bad-ca", &[("ca.crt", include_str!("support/other-ca.pem"))]).await;
    env.trend_provider("p-tls", sim_env::ADMIN_SECRET, json!({"trend": {"caSecretRef": {"name": "bad-ca"}}})).await;
    env.apply("tls", env.via("p-tls", json!({}))).await;
    let message = env.wait_provider_not_ready("p-tls", "CredentialCheckFailed", "").await;
    assert!(message.to_lowercase().contains("tls") || message.contains("certificate"), "{message}");
    env.wait_provider_not_ready_on("tls", "CredentialCheckFailed").await;
    env.trend_provider("p-tls", sim_env::ADMIN_SECRET, json!({})).await;
    env.wait_ready("tls").await;

    // 503s on create: VendorUnavailable, then Ready when they stop.
    env.sim.faults.add(fault("/api/apikeys", "POST", 503, None, Some(200))).unwrap();
    env.apply("flaky", env.spec(json!({}))).await;
    env.wait_condition("flaky", "False", "VendorUnavailable").await;
    env.sim.faults.clear();
    let flaky = env.wait_ready("flaky").await;
    assert_eq!(env.live_keys_of(&flaky).len(), 1, "no duplicate keys after failed creates");

    // A 429 storm: RateLimited, then Ready.
    env.sim.faults.add(fault("/api/apikeys", "POST", 429, Some(1), Some(500))).unwrap();
    env.apply("storm", env.spec(json!({}))).await;
    env.wait_condition("storm", "False", "RateLimited").await;
    env.sim.faults.clear();
    env.wait_ready("storm").await;

    // Errors are counted by reason.
    let metrics = env.op.metrics().await;
    for reason in ["ProviderNotReady", "Forbidden", "VendorUnavailable", "RateLimited"] {
        assert!(metrics.contains(&format!("reason=\"{reason}\"")), "reconcile_errors for {reason} missing");
    }
    // Failures back off instead of spinning: a handful of attempts per resource, not hundreds.
    let attempts = env.op.logs().matches("not ready").count();
    assert!(attempts < 120, "{attempts} failed reconciles: a tight retry loop");
    env.assert_no_leaks(&[env.sim.info.trend_admin_api_key(), auditor]).await;

    // No crash loop: the operator never exited.
    let mut op = env.op;
    assert_eq!(op.wait_exit(Duration::from_millis(100)).await, None, "operator still running");
}

fn fault(
    prefix: &str,
    method: &str,
    status: u16,
    retry_after: Option<u64>,
    count: Option<u64>,
) -> sim::faults::FaultRule {
    serde_json::from_value(json!({
        "vendor": "trend", "pathPrefix": prefix, "method": method, "status": status,
        "retryAfter": retry_after, "count": count
    }))
    .unwrap()
}

/// The first intent a new resource's finalizer patch carries is sealed to that resource: one copied onto another
/// (say, `kubectl get -o yaml` of one resource applied as another, finalizer and all) is never taken for the
/// other's own, which would look for, and create, a key under the first one's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_intent_copied_from_another_resource_is_ignored() {
    let env = Env::start("wak-intent").await;
    env.apply("original", env.spec(json!({}))).await;
    let original = env.wait_ready("original").await;
    let copied = original.metadata.annotations.clone().unwrap_or_default();
    assert!(support::first_intent(&original.metadata).is_some(), "the original carries its first intent");

    let mut copy = sim_env::wak("copy", env.spec(json!({})));
    copy.metadata.annotations = Some(copied);
    copy.metadata.finalizers = Some(vec!["workloadkeys.io/revoke".into()]);
    env.waks().create(&PostParams::default(), &copy).await.expect("create the copy");
    let copy = env.wait_ready("copy").await;
    let status = copy.status.as_ref().unwrap();
    assert_eq!(status.key_name.as_deref(), Some(format!("{}-copy", env.ns.name).as_str()), "its own key name");
    assert_eq!(env.live_keys_of(&copy).len(), 1, "one key of its own");
    assert_eq!(env.live_keys_of(&original).len(), 1, "the original's key untouched");
    let original_now = env.waks().get("original").await.unwrap();
    assert_eq!(original_now.status.unwrap().key_id, original.status.unwrap().key_id);
}

// Needs the crash points of the `failpoints` feature (`make test` enables it).
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_right_after_vendor_create_leaves_exactly_one_key() {
    let mut env =
        Env::start_with("wak-crash", SimOptions::default(), &[("WKO_FAILPOINT", "after-vendor-create")]).await;
    env.apply("crashy", env.spec(json!({}))).await;
    let code = env.op.wait_exit(WAIT).await;
    assert_eq!(code, Some(97), "the operator exited at the fail-point");
    let wak = env.waks().get("crashy").await.unwrap();
    assert_eq!(env.live_keys_of(&wak).len(), 1, "the vendor create happened");
    // A new resource's first intent is recorded with its finalizer, before the create (see `controller::intent`).
    assert!(wak.status.is_none(), "nothing recorded after the create: {:?}", wak.status);
    let intent = support::first_intent(&wak.metadata).expect("intent recorded before the create");
    assert_eq!(intent["pendingKeyName"], format!("{}-crashy", env.ns.name), "{intent}");

    env.op.restart_with_env(&[]);
    let wak = env.wait_ready("crashy").await;
    assert_eq!(env.live_keys_of(&wak).len(), 1, "recovered the key instead of creating a second");
    let v = env.secret_value("crashy").await;
    env.client_with(&v).describe_current_api_key().await.expect("the recovered key's new secret works");
    env.assert_no_leaks(&[v, env.sim.info.trend_admin_api_key()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_with_username_and_password_then_keys_only() {
    let env = Env::start("wak-boot").await;
    let user = env.sim.info.trend["adminUser"].as_str().unwrap().to_owned();
    let password = env.sim.info.trend["adminPassword"].as_str().unwrap().to_owned();
    put_secret(&env.ns, "tm-login", &[("userName", user.as_str()), ("password", password.as_str())]).await;
    env.trend_provider(
        "p-login",
        "unused",
        json!({"trend": {"apiKeySecretRef": null, "loginSecretRef": {"name": "tm-login"}}}),
    )
    .await;
    env.apply("first", env.via("p-login", json!({"role": {"name": "Full Access"}}))).await;
    let first = env.wait_ready("first").await;
    assert_eq!(first.status.unwrap().role_id, Some(1), "a Full Access key");
    assert!(env.sim.counts.total("trend", "POST /api/sessions") >= 1, "a session was opened");

    env.trend_provider("p-first", "first", json!({})).await;
    env.apply("second", env.via("p-first", json!({}))).await;
    let second = env.wait_ready("second").await;
    assert_eq!(second.status.unwrap().role_id, Some(2));
    let v = env.secret_value("second").await;
    env.client_with(&v).describe_current_api_key().await.expect("the second key works");
    env.assert_no_leaks(&[password, v, env.secret_value("first").await]).await;
}

/// Two replicas with leader election: exactly one reconciles; killing it hands over within the lease duration,
/// with no duplicate vendor keys across the handover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_elect_one_leader_and_hand_over() {
    const LEASE_SECONDS: u64 = 6;
    let lease_env =
        |id: &'static str| [("WKO_LEADER_ELECTION", "true"), ("WKO_LEASE_DURATION_SECONDS", "6"), ("POD_NAME", id)];
    let mut env = Env::start_with("wak-ha", SimOptions::default(), &lease_env("replica-a")).await;
    let mut other = Operator::start_with_env(&env.ns.name, &lease_env("replica-b"));
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = env.ns.api();
    let holder = || async {
        let l = leases.get_opt("workload-key-operator").await.ok()??;
        l.spec?.holder_identity
    };
    let first = eventually(WAIT, "a leader", || async { holder().await }).await;

    env.apply("one", env.spec(json!({}))).await;
    let one = env.wait_ready("one").await;
    let (leader, standby) = if first == "replica-a" { (&mut env.op, &mut other) } else { (&mut other, &mut env.op) };
    let readyz = |port: u16| async move {
        reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await.map(|r| r.status().as_u16()).unwrap_or(0)
    };
    workload_key_operator::clients::install_crypto_provider();
    assert_eq!(readyz(leader.metrics_port).await, 200, "the leader is ready");
    assert_eq!(readyz(standby.metrics_port).await, 503, "the standby is not ready");
    assert!(leader.logs().contains("leader: starting controllers"));
    assert!(!standby.logs().contains("leader: starting controllers"), "exactly one replica reconciles");
    assert!(!standby.logs().contains("reconciling object"), "the standby reconciled nothing");

    // Kill the leader as a crash would: the standby takes over once the lease lapses.
    leader.kill();
    let killed = std::time::Instant::now();
    let second = eventually(Duration::from_secs(3 * LEASE_SECONDS), "a new leader", || async {
        holder().await.filter(|h| *h != first)
    })
    .await;
    let handover = killed.elapsed();
    eprintln!("leader handover took {handover:?} (lease duration {LEASE_SECONDS}s)");
    assert!(handover <= Duration::from_secs(LEASE_SECONDS + 2), "handover within the lease duration: {handover:?}");
    assert_ne!(second, first);

    env.apply("two", env.spec(json!({}))).await;
    let two = env.wait_ready("two").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.live_keys_of(&one).len(), 1, "no duplicate key for the resource reconciled by both leaders");
    assert_eq!(env.live_keys_of(&two).len(), 1);
    let new_leader = if second == "replica-a" { &mut env.op } else { &mut other };
    assert!(new_leader.logs().contains("leader: starting controllers"));

    // SIGTERM releases the lease on the way out: a fresh standby takes over at once, not after the lease lapses.
    let _third = Operator::start_with_env(&env.ns.name, &lease_env("replica-c"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped_at = std::time::Instant::now();
    assert_eq!(new_leader.terminate(), Some(0), "clean exit on SIGTERM");
    let exited = stopped_at.elapsed();
    assert!(new_leader.logs().contains("lease released"));
    eventually(Duration::from_secs(LEASE_SECONDS), "replica-c leads", || async {
        holder().await.filter(|h| h == "replica-c")
    })
    .await;
    let graceful = stopped_at.elapsed();
    eprintln!("graceful handover took {graceful:?} (the old leader exited after {exited:?})");
    // The standby watches the Lease: it claims a released one at once, not when the old claim would have lapsed.
    let claimed = graceful - exited;
    assert!(claimed < Duration::from_secs(LEASE_SECONDS / 2), "a released lease is taken at once: {claimed:?}");
}

/// SIGKILL at arbitrary moments while keys are created, rotated and revoked: every resource converges, and once
/// they are deleted the vendor holds no key of theirs (no orphan, no duplicate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_at_any_point_leave_no_orphaned_keys() {
    let mut env = Env::start("wak-chaos").await;
    let names: Vec<String> = (0..8).map(|i| format!("chaos-{i}")).collect();
    for name in &names {
        // Short lifetimes and grace periods so creates, rotations and revocations all happen during the crashes.
        env.apply(
            name,
            env.spec(json!({"expiresAfter": "40s", "rotation": {"renewBefore": "32s", "gracePeriod": "3s"}})),
        )
        .await;
    }
    let kills = env.op.crash_repeatedly(Duration::from_secs(30)).await;
    // Delete half while the operator is being killed, too.
    for name in names.iter().take(4) {
        env.waks().delete(name, &DeleteParams::default()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    env.op.kill();
    env.op.restart_with_env(&[]);

    let mut uids = Vec::new();
    for name in names.iter().skip(4) {
        let w = env.wait_ready(name).await;
        let live = env.live_keys_of(&w);
        let retiring = w.status.as_ref().unwrap().retiring_keys.len();
        assert_eq!(live.len(), 1 + retiring, "{name}: one current key plus those in their grace period: {live:?}");
        uids.push(w.uid().unwrap());
    }
    for name in &names {
        let _ = env.waks().delete(name, &DeleteParams::default()).await;
    }
    eventually(WAIT, "all resources deleted", || async {
        env.waks().list(&ListParams::default()).await.ok()?.items.is_empty().then_some(())
    })
    .await;
    let ours: Vec<_> = env
        .sim
        .deep_security
        .keys()
        .into_iter()
        .filter(|k| k.description.as_deref().is_some_and(|d| d.contains("workloadkeys.io/owner=")))
        .collect();
    assert!(ours.is_empty(), "orphaned vendor keys after {kills} crashes: {ours:?}");
    let creates = env.sim.counts.snapshot()["trend"].get("POST /api/apikeys").map_or(0, |c| c.total);
    eprintln!("chaos: {kills} SIGKILLs, {creates} key creates for 8 resources, no orphans");
}

/// `--max-concurrent-reconciles` bounds how many reconciles run at once, and a low value still converges: 200
/// resources created at once all become Ready with exactly one key each, while the operator's high-water mark of
/// reconciles in flight never passes the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_reconcile_concurrency_still_converges() {
    const BOUND: usize = 2;
    const COUNT: usize = 200;
    let env = Env::start_with("wak-bound", SimOptions::default(), &[("WKO_MAX_CONCURRENT_RECONCILES", "2")]).await;
    let names: Vec<String> = (0..COUNT).map(|i| format!("bounded-{i}")).collect();
    futures::future::join_all(names.iter().map(|n| env.apply(n, env.spec(json!({}))))).await;
    eventually(Duration::from_secs(240), "200 resources Ready", || async {
        let list = env.waks().list(&ListParams::default()).await.ok()?;
        let ready = list
            .items
            .iter()
            .filter(|w| {
                w.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True") && s.key_id.is_some()
                })
            })
            .count();
        (ready == COUNT).then_some(())
    })
    .await;
    let metrics = env.op.metrics().await;
    let max = metric_value(&metrics, "workload_key_operator_reconciles_in_flight_max{kind=\"WorkloadApiKey\"}");
    eprintln!("{COUNT} resources Ready with at most {max} reconciles in flight (bound {BOUND})");
    assert!((1..=BOUND as i64).contains(&max), "high-water mark {max} within the bound {BOUND}");
    // Exactly one vendor key per resource.
    let keys = env.sim.deep_security.keys();
    for name in &names {
        let uid = env.waks().get(name).await.unwrap().uid().unwrap();
        let ours = keys.iter().filter(|k| k.description.as_deref().is_some_and(|d| d.contains(&uid))).count();
        assert_eq!(ours, 1, "{name}: one key");
    }
}

/// The value of the Prometheus sample `series` (name and labels exactly as exposed).
fn metric_value(text: &str, series: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse::<f64>().expect("a number") as i64))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// A vendor that stops answering (it accepts connections and never replies): the first request to time out puts
/// its endpoint out, so every other resource needing it says `VendorUnavailable` at once instead of after its own
/// timeouts and retries; a resource whose key works stays Ready; and once a probe is answered again the waiting
/// resources are retried at once, not at the end of a backoff that has grown during the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_vendor_is_told_at_once_and_its_return_retries_at_once() {
    let timeout = Duration::from_secs(4);
    let env = Env::start_with("wak-outage", SimOptions::default(), &[("WKO_VENDOR_TIMEOUT_SECONDS", "4")]).await;
    env.apply("steady", env.spec(json!({}))).await;
    env.wait_ready("steady").await;

    env.sim.partitions.trend.set(Partition::Hang);
    let hung = std::time::Instant::now();
    let names: Vec<String> = (0..6).map(|i| format!("new-{i}")).collect();
    for name in &names {
        env.apply(name, env.spec(json!({}))).await;
    }
    // Each reconcile searches roles and keys before its create, each retried up to five times: without the
    // endpoint put out, one reconcile holds on for several timeouts (tens of seconds) before it says anything.
    eventually(Duration::from_secs(60), "every new resource says VendorUnavailable", || async {
        let list = env.waks().list(&ListParams::default()).await.ok()?;
        let unavailable = list
            .items
            .iter()
            .filter(|w| names.contains(&w.name_any()))
            .filter(|w| w.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.reason == "VendorUnavailable")))
            .count();
        (unavailable == names.len()).then_some(())
    })
    .await;
    let told = hung.elapsed();
    assert!(told <= timeout + Duration::from_secs(8), "told {told:?} after the vendor hung (timeout {timeout:?})");
    let steady = env.waks().get("steady").await.unwrap();
    assert!(
        steady.status.unwrap().conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"),
        "a working key is not reported broken"
    );

    // Long enough for the backoffs to grow past 20 s.
    tokio::time::sleep(Duration::from_secs(25)).await;
    env.sim.partitions.trend.set(Partition::None);
    let healed = std::time::Instant::now();
    for name in &names {
        let w = env.wait_ready(name).await;
        assert_eq!(env.live_keys_of(&w).len(), 1, "{name}: one key");
    }
    let ready = healed.elapsed();
    // A probe every 5 s (each waiting at most 5 s), then the waiting resources at once.
    assert!(ready <= Duration::from_secs(20), "all Ready {ready:?} after the vendor answered again");
    let logs = env.op.logs();
    assert!(logs.contains("vendor endpoint not answering"), "the outage is logged");
    assert!(logs.contains("vendor endpoint answers again"), "the recovery is logged");
    eprintln!("outage: told after {told:?}, all Ready {ready:?} after the heal");
}
