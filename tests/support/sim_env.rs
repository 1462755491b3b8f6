//! What the end-to-end tests and the scale benchmark set up around the vendor simulator: a fresh namespace with
//! the simulator's Secrets, providers pointing at the simulator, the operator watching the namespace, and the
//! WorkloadApiKey spec they create.

use std::{path::Path, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use workload_key_operator::{
    api::{ClusterKeyProvider, KeyProvider, WorkloadApiKey},
    controller::workload_api_key::SECRET_KEY,
    sim::{self, RunningSim, SimOptions},
};

use super::{
    TestNamespace,
    operator::{Operator, chart_service_account},
    put_secret_in,
};

/// The Secret with the Trend admin API key.
pub const ADMIN_SECRET: &str = "tm-admin";
/// The Secret with the simulator's CA (`ca.crt`).
pub const CA_SECRET: &str = "sim-ca";
/// The Secret with the Cisco UI user's sign-in (`email`, `password`), for provision mode.
pub const LOGIN_SECRET: &str = "sw-login";
/// The `KeyProvider` every [`Env`] has: Trend, with the admin key and the simulator's CA.
pub const TREND_PROVIDER: &str = "sim-trend";
/// The `KeyProvider` every [`Env`] has: Cisco, with the simulator's CA and the UI sign-in (provision mode).
pub const CISCO_PROVIDER: &str = "sim-cisco";

const PROVIDER_WAIT: Duration = Duration::from_secs(60);

/// A fresh namespace (CRDs installed), a simulator and its Secrets there, a Trend and a Cisco `KeyProvider`
/// pointing at it (Ready), and the operator watching the namespace.
/// Each test binary adds the helpers of its kind in an `impl Env` of its own.
pub struct Env {
    pub ns: TestNamespace,
    pub sim: RunningSim,
    pub op: Operator,
}

impl Env {
    pub async fn start(prefix: &str) -> Self {
        Self::start_with(prefix, SimOptions::default(), &[]).await
    }

    /// With these simulator options, and `env` added to the operator's environment.
    pub async fn start_with(prefix: &str, opts: SimOptions, env: &[(&str, &str)]) -> Self {
        Self::launch(prefix, opts, env, None).await
    }

    /// As [`Self::start`], the operator running as the chart's ServiceAccount with only the chart's RBAC
    /// ([`chart_service_account`]).
    pub async fn start_as_chart_service_account(prefix: &str) -> Self {
        let sa = chart_service_account();
        Self::launch(prefix, SimOptions::default(), &[], Some(&sa.kubeconfig)).await
    }

    async fn launch(prefix: &str, opts: SimOptions, env: &[(&str, &str)], kubeconfig: Option<&Path>) -> Self {
        let ns = TestNamespace::new(prefix).await;
        super::operator::install_crds(&ns.client).await;
        let sim = sim::start(opts).await.expect("start vendor simulator");
        put_sim_secrets(&ns, &sim).await;
        apply_key_provider(&ns.client, &ns.name, TREND_PROVIDER, trend_provider_spec(&sim, ADMIN_SECRET)).await;
        apply_key_provider(&ns.client, &ns.name, CISCO_PROVIDER, cisco_provider_spec(&sim, Some(LOGIN_SECRET))).await;
        let op = match kubeconfig {
            Some(kubeconfig) => Operator::start_as(kubeconfig, Some(&ns.name), env),
            None => Operator::start_with_env(&ns.name, env),
        };
        let env = Env { ns, sim, op };
        env.wait_key_provider_ready(TREND_PROVIDER).await;
        env.wait_key_provider_ready(CISCO_PROVIDER).await;
        env
    }

    pub fn secrets(&self) -> Api<Secret> {
        self.ns.api()
    }

    pub fn key_providers(&self) -> Api<KeyProvider> {
        self.ns.api()
    }

    /// Creates or replaces the `KeyProvider` `name` of the test namespace with `spec`.
    pub async fn apply_key_provider(&self, name: &str, spec: serde_json::Value) -> KeyProvider {
        apply_key_provider(&self.ns.client, &self.ns.name, name, spec).await
    }

    pub async fn wait_key_provider_ready(&self, name: &str) -> KeyProvider {
        wait_provider_ready(&self.key_providers(), name).await
    }

    /// Waits until the `KeyProvider`'s Ready condition is False with `reason` and a message containing `needle`.
    pub async fn wait_provider_not_ready(&self, name: &str, reason: &str, needle: &str) -> String {
        let what = format!("provider {name} Ready=False reason={reason} message containing {needle:?}");
        super::eventually(PROVIDER_WAIT, &what, || async {
            let p = self.key_providers().get(name).await.ok()?;
            let c = p.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
            (c.status == "False" && c.reason == reason && c.message.contains(needle)).then_some(c.message)
        })
        .await
    }
}

/// The IDs of the live Deep Security keys at the simulator whose description carries the resource's UID marker.
pub fn live_trend_key_ids(sim: &RunningSim, uid: &str) -> Vec<i64> {
    let marker = format!("[workloadkeys.io/owner={uid}.");
    let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    let keys = sim.deep_security.keys().into_iter();
    keys.filter(|k| k.description.as_deref().is_some_and(|d| d.contains(&marker)) && k.is_live(now))
        .map(|k| k.id)
        .collect()
}

/// The Trend admin key as [`ADMIN_SECRET`], the simulator's CA as [`CA_SECRET`] and the Cisco UI sign-in as
/// [`LOGIN_SECRET`].
pub async fn put_sim_secrets(ns: &TestNamespace, sim: &RunningSim) {
    put_sim_secrets_in(&ns.client, &ns.name, sim).await;
}

/// The same in namespace `ns` (e.g. the operator's cluster-resource namespace, for `ClusterKeyProvider`s).
pub async fn put_sim_secrets_in(client: &Client, ns: &str, sim: &RunningSim) {
    put_secret_in(client, ns, ADMIN_SECRET, &[(SECRET_KEY, sim.info.trend_admin_api_key().as_str())]).await;
    put_secret_in(client, ns, CA_SECRET, &[("ca.crt", sim.ca_pem.as_str())]).await;
    let email = sim.info.cisco["uiEmail"].as_str().unwrap().to_owned();
    let password = sim.info.cisco["uiPassword"].as_str().unwrap().to_owned();
    put_secret_in(client, ns, LOGIN_SECRET, &[("email", email.as_str()), ("password", password.as_str())]).await;
}

/// A Trend provider spec against the simulator: its CA from [`CA_SECRET`], the admin key from `admin_secret`.
pub fn trend_provider_spec(sim: &RunningSim, admin_secret: &str) -> serde_json::Value {
    json!({"trend": {
        "url": sim.info.trend_url(),
        "caSecretRef": {"name": CA_SECRET},
        "apiKeySecretRef": {"name": admin_secret}
    }})
}

/// A Trend provider spec against the simulator's Vision One (`api` `VisionOne`) or Cloud One (`CloudOne`) accounts
/// API: its CA from [`CA_SECRET`], the admin key (put there from the simulator's startup JSON) from `admin_secret`.
pub fn account_provider_spec(sim: &RunningSim, api: &str, admin_secret: &str) -> serde_json::Value {
    let url = match api {
        "VisionOne" => sim.info.vision_one_url(),
        "CloudOne" => sim.info.cloud_one_url(),
        other => panic!("{other} is not an account API"),
    };
    json!({"trend": {
        "api": api,
        "url": url,
        "caSecretRef": {"name": CA_SECRET},
        "apiKeySecretRef": {"name": admin_secret}
    }})
}

/// A Cisco provider spec against the simulator: its CA from [`CA_SECRET`], and with `login` the UI sign-in
/// Secret that enables provision mode.
pub fn cisco_provider_spec(sim: &RunningSim, login: Option<&str>) -> serde_json::Value {
    let mut cisco = json!({"url": sim.info.cisco_url(), "caSecretRef": {"name": CA_SECRET}});
    if let Some(login) = login {
        cisco["loginSecretRef"] = json!({"name": login});
    }
    json!({ "cisco": cisco })
}

/// Creates or replaces (server-side apply) the `KeyProvider` `ns/name` with `spec`.
pub async fn apply_key_provider(client: &Client, ns: &str, name: &str, spec: serde_json::Value) -> KeyProvider {
    let obj: KeyProvider = serde_json::from_value(json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "KeyProvider",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("KeyProvider");
    Api::<KeyProvider>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&obj))
        .await
        .expect("apply KeyProvider")
}

/// Creates or replaces (server-side apply) the `ClusterKeyProvider` `name` with `spec`.
pub async fn apply_cluster_key_provider(client: &Client, name: &str, spec: serde_json::Value) -> ClusterKeyProvider {
    let obj: ClusterKeyProvider = serde_json::from_value(json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "ClusterKeyProvider",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("ClusterKeyProvider");
    Api::<ClusterKeyProvider>::all(client.clone())
        .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&obj))
        .await
        .expect("apply ClusterKeyProvider")
}

/// Waits until the provider `name` (either kind) is Ready for its current spec.
pub async fn wait_provider_ready<K>(api: &Api<K>, name: &str) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    super::eventually(PROVIDER_WAIT, &format!("provider {name} Ready"), || async move {
        let obj = api.get(name).await.ok()?;
        let value = serde_json::to_value(&obj).ok()?;
        let status = &value["status"];
        let ready = status["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True" && c["reason"] == "Ready");
        (ready && status["observedGeneration"] == value["metadata"]["generation"]).then_some(obj)
    })
    .await
}

/// A `providerRef` to the `KeyProvider` `name`.
pub fn key_provider_ref(name: &str) -> serde_json::Value {
    json!({"kind": "KeyProvider", "name": name})
}

/// A `providerRef` to the `ClusterKeyProvider` `name`.
pub fn cluster_provider_ref(name: &str) -> serde_json::Value {
    json!({"kind": "ClusterKeyProvider", "name": name})
}

/// The WorkloadApiKey spec of the tests: an Auditor key from the Trend simulator through [`TREND_PROVIDER`], with a
/// non-default locale and time zone.
pub fn wak_spec(description: &str) -> serde_json::Value {
    json!({
        "providerRef": key_provider_ref(TREND_PROVIDER),
        "role": {"name": "Auditor"},
        "locale": "ja-JP",
        "timeZone": "Asia/Tokyo",
        "expiresAfter": "336h",
        "description": description
    })
}

/// A WorkloadApiKey `name` with `spec`.
pub fn wak(name: &str, spec: serde_json::Value) -> WorkloadApiKey {
    serde_json::from_value(json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "WorkloadApiKey",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("WorkloadApiKey")
}
