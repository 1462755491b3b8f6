//! What the end-to-end tests and the scale benchmark set up around the vendor simulator: a fresh namespace with
//! the simulator's Secrets, the operator watching it, and the WorkloadApiKey spec they create.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::json;
use workload_key_operator::{
    api::WorkloadApiKey,
    controller::workload_api_key::SECRET_KEY,
    sim::{self, RunningSim, SimOptions},
};

use super::{TestNamespace, operator::Operator, put_secret};

/// The Secret with the Trend admin API key.
pub const ADMIN_SECRET: &str = "tm-admin";
/// The Secret with the simulator's CA (`ca.crt`).
pub const CA_SECRET: &str = "sim-ca";

/// A fresh namespace (CRDs installed), a simulator and its Secrets there, and the operator watching the namespace.
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
        let ns = TestNamespace::new(prefix).await;
        super::operator::install_crds(&ns.client).await;
        let sim = sim::start(opts).await.expect("start vendor simulator");
        put_sim_secrets(&ns, &sim).await;
        let op = Operator::start_with_env(&ns.name, env);
        Env { ns, sim, op }
    }

    pub fn secrets(&self) -> Api<Secret> {
        self.ns.api()
    }
}

/// The Trend admin key as [`ADMIN_SECRET`] and the simulator's CA as [`CA_SECRET`].
pub async fn put_sim_secrets(ns: &TestNamespace, sim: &RunningSim) {
    put_secret(ns, ADMIN_SECRET, &[(SECRET_KEY, sim.info.trend_admin_api_key().as_str())]).await;
    put_secret(ns, CA_SECRET, &[("ca.crt", sim.ca_pem.as_str())]).await;
}

/// The WorkloadApiKey spec of the tests: an Auditor key from the Trend simulator with the admin key, with a
/// non-default locale and time zone.
pub fn wak_spec(sim: &RunningSim, description: &str) -> serde_json::Value {
    json!({
        "connection": {
            "url": sim.info.trend_url(),
            "caSecretRef": {"name": CA_SECRET},
            "apiKeySecretRef": {"name": ADMIN_SECRET}
        },
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
