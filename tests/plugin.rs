//! `kubectl workloadkeys` end to end: the plugin binary run as a process, with a kubeconfig for the test control
//! plane, against resources the operator (its own process) made from the Trend simulator.
#![cfg(feature = "sim")]

mod support;

use std::{path::PathBuf, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use support::{
    eventually, merge,
    sim_env::{self, Env},
};
use workload_key_operator::api::{Capability, SecureWorkloadCredential, WorkloadApiKey};

const WAIT: Duration = Duration::from_secs(60);

/// The plugin binary: `$WKO_TEST_BIN_DIR/kubectl-workloadkeys` when set (see `support::operator::operator_bin`),
/// else the one Cargo built for this test.
fn plugin_bin() -> PathBuf {
    match std::env::var_os("WKO_TEST_BIN_DIR") {
        Some(dir) if PathBuf::from(&dir).join("kubectl-workloadkeys").exists() => {
            PathBuf::from(dir).join("kubectl-workloadkeys")
        }
        _ => PathBuf::from(env!("CARGO_BIN_EXE_kubectl-workloadkeys")),
    }
}

/// One run of the plugin.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn text(&self) -> String {
        format!("exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs the plugin with `args` (no kubeconfig flag added).
async fn run_raw(args: &[&str]) -> Run {
    let out = tokio::process::Command::new(plugin_bin())
        .args(args)
        // Only what the flags say: no kubeconfig from the environment.
        .env_remove("KUBECONFIG")
        .env("HOME", std::env::temp_dir())
        .output()
        .await
        .expect("run kubectl-workloadkeys");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Everything the plugin printed in a test, to check that no secret value is among it.
#[derive(Default)]
struct Transcript(Vec<String>);

impl Transcript {
    /// Runs the plugin against the test control plane in the test namespace (`--kubeconfig`, `-n`).
    async fn run(&mut self, env: &Env, args: &[&str]) -> Run {
        let kubeconfig = support::control_plane().kubeconfig.display().to_string();
        let mut all = vec!["--kubeconfig", kubeconfig.as_str(), "-n", env.ns.name.as_str()];
        all.extend_from_slice(args);
        let run = run_raw(&all).await;
        self.0.push(run.text());
        run
    }

    fn assert_holds_none_of(&self, values: &[String]) {
        for v in values.iter().filter(|v| v.len() >= 8) {
            for text in &self.0 {
                assert!(!text.contains(v.as_str()), "a Secret value appears in the plugin's output:\n{text}");
            }
        }
    }
}

/// Every data value of the Secret, as text.
async fn secret_values(env: &Env, name: &str) -> Vec<String> {
    let s: Secret = env.secrets().get(name).await.expect("Secret");
    s.data.unwrap_or_default().values().map(|v| String::from_utf8_lossy(&v.0).into_owned()).collect()
}

async fn apply_wak(env: &Env, name: &str, spec: serde_json::Value) {
    env.ns
        .api::<WorkloadApiKey>()
        .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&sim_env::wak(name, spec)))
        .await
        .expect("apply WorkloadApiKey");
}

async fn wait_ready(env: &Env, name: &str) -> WorkloadApiKey {
    support::wait_condition(&env.ns.api::<WorkloadApiKey>(), name, "Ready", "True", "Ready", WAIT).await
}

fn key_id(w: &WorkloadApiKey) -> String {
    w.status.as_ref().and_then(|s| s.key_id.as_ref()).expect("a key ID").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_rotate_and_inspect_show_the_key_and_never_its_secret() {
    let mut env = Env::start("plugin-status").await;
    let mut out = Transcript::default();
    apply_wak(&env, "reporting", sim_env::wak_spec("reporting")).await;
    let first = key_id(&wait_ready(&env, "reporting").await);
    let mut secrets = secret_values(&env, "reporting").await;

    // status: the key, its role, expiry, Secret and Events.
    let status = out.run(&env, &["status", "reporting"]).await;
    assert_eq!(status.code, 0, "{}", status.text());
    for needle in [
        &format!("WorkloadApiKey {}/reporting", env.ns.name),
        "KeyProvider/sim-trend",
        "True (Ready)",
        &format!("Key ID:           {first}"),
        "Auditor (ID 2)",
        "Secret:           reporting",
        "Events (newest first):",
        "Normal KeyCreated: created key",
    ] {
        assert!(status.stdout.contains(needle), "status lacks {needle:?}:\n{}", status.text());
    }
    let all = out.run(&env, &["status", "--kind", "wak"]).await;
    assert_eq!(all.code, 0, "{}", all.text());
    assert!(all.stdout.contains(&first), "{}", all.text());
    // -A: every namespace's, here by name.
    let kubeconfig = support::control_plane().kubeconfig.display().to_string();
    let everywhere = run_raw(&["--kubeconfig", &kubeconfig, "status", "-A", "reporting", "--kind", "wak"]).await;
    out.0.push(everywhere.text());
    assert!(everywhere.stdout.contains(&format!("WorkloadApiKey {}/reporting", env.ns.name)), "{}", everywhere.text());
    // The provider: who uses it (status.users, kept by the provider reconciler) and its policy.
    let user = format!("WorkloadApiKey {}/reporting", env.ns.name);
    eventually(WAIT, "the provider lists its user", || {
        let (env, user) = (&env, &user);
        async move {
            let mut scratch = Transcript::default();
            let p = scratch.run(env, &["status", "--providers", sim_env::TREND_PROVIDER, "--events", "0"]).await;
            (p.code == 0 && p.stdout.contains(user.as_str()) && p.stdout.contains("Policy:")).then_some(())
        }
    })
    .await;

    // inspect: the owner, key ID and expiry, unchanged since recorded; key names and sizes only.
    let inspect = out.run(&env, &["inspect", "secret", "reporting"]).await;
    assert_eq!(inspect.code, 0, "{}", inspect.text());
    for needle in [
        "Owner:            WorkloadApiKey/reporting",
        &format!("Key ID:           {first}"),
        "api-secret-key (",
        "unchanged since the operator recorded it",
    ] {
        assert!(inspect.stdout.contains(needle), "inspect lacks {needle:?}:\n{}", inspect.text());
    }

    // rotate --wait: a new key ID, which status then shows.
    let rotate = out.run(&env, &["rotate", "reporting", "--wait", "--timeout", "60s"]).await;
    assert_eq!(rotate.code, 0, "{}", rotate.text());
    let second = key_id(&env.ns.api::<WorkloadApiKey>().get("reporting").await.unwrap());
    assert_ne!(second, first, "a new key");
    assert!(
        rotate
            .stdout
            .contains(&format!("rotated: WorkloadApiKey {}/reporting has key ID {second} (was {first})", env.ns.name)),
        "{}",
        rotate.text()
    );
    secrets.extend(secret_values(&env, "reporting").await);
    let status = out.run(&env, &["status", "reporting"]).await;
    assert!(status.stdout.contains(&format!("Key ID:           {second}")), "{}", status.text());

    // An edit of the Secret while the operator is down: inspect says it changed since.
    env.op.kill();
    let tampered = json!({"data": {"api-secret-key": "dGFtcGVyZWQtdmFsdWU="}});
    env.secrets().patch("reporting", &PatchParams::default(), &Patch::Merge(&tampered)).await.expect("edit Secret");
    let inspect = out.run(&env, &["inspect", "secret", "reporting"]).await;
    assert_eq!(inspect.code, 1, "{}", inspect.text());
    assert!(inspect.stdout.contains("changed since the operator recorded it"), "{}", inspect.text());
    // The operator back: it repairs the Secret, and inspect says unchanged again, with the repair.
    env.op.restart_with_env(&[]);
    eventually(WAIT, "the repaired Secret recorded", || async {
        let w = env.ns.api::<WorkloadApiKey>().get("reporting").await.ok()?;
        let s = env.secrets().get("reporting").await.ok()?;
        let data = s.data.clone()?;
        let repaired = data.get("api-secret-key").is_some_and(|v| v.0 != b"tampered-value");
        (repaired && w.status?.secret_resource_version == s.metadata.resource_version).then_some(())
    })
    .await;
    let inspect = out.run(&env, &["inspect", "secret", "reporting"]).await;
    assert_eq!(inspect.code, 0, "{}", inspect.text());
    assert!(inspect.stdout.contains("unchanged since the operator recorded it"), "{}", inspect.text());
    assert!(inspect.stdout.contains("SecretRepaired"), "{}", inspect.text());
    secrets.extend(secret_values(&env, "reporting").await);

    // A second request within a minute of the first is deferred by the operator: --wait says so.
    let again = out.run(&env, &["rotate", "reporting", "--wait", "--timeout", "8s"]).await;
    assert_eq!(again.code, 1, "{}", again.text());
    assert!(again.stdout.contains("deferred: workloadkeys.io/rotate changed within a minute"), "{}", again.text());
    assert!(again.stdout.contains("the request was deferred"), "{}", again.text());

    // A Secret the operator does not own, and a name that does not exist.
    support::put_secret(&env.ns, "foreign", &[("token", "not-from-the-operator")]).await;
    let foreign = out.run(&env, &["inspect", "secret", "foreign"]).await;
    assert_eq!(foreign.code, 1, "{}", foreign.text());
    assert!(foreign.stdout.contains("not written by the operator"), "{}", foreign.text());
    let missing = out.run(&env, &["status", "nope"]).await;
    assert_eq!(missing.code, 2, "{}", missing.text());
    assert!(missing.stderr.contains(&format!("named nope in namespace {}", env.ns.name)), "{}", missing.text());

    out.assert_holds_none_of(&secrets);
    assert!(!secrets.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_what_the_provider_forbids_and_accepts_the_rest() {
    let env = Env::start("plugin-check").await;
    let mut out = Transcript::default();
    let mut spec = sim_env::trend_provider_spec(&env.sim, sim_env::ADMIN_SECRET);
    merge(&mut spec, &json!({"policy": {"roles": [{"name": "Auditor"}], "maxExpiresAfter": "720h"}}));
    env.apply_key_provider("audited", spec).await;
    env.wait_key_provider_ready("audited").await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = |name: &str, extra: serde_json::Value| {
        let mut spec = sim_env::wak_spec("checked");
        merge(&mut spec, &json!({"providerRef": sim_env::key_provider_ref("audited")}));
        merge(&mut spec, &extra);
        let doc = json!({"apiVersion": "workloadkeys.io/v1alpha1", "kind": "WorkloadApiKey",
                         "metadata": {"name": name}, "spec": spec});
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, serde_norway::to_string(&doc).unwrap()).unwrap();
        path.display().to_string()
    };

    let bad = manifest("full-access", json!({"role": {"name": "Full Access"}}));
    let refused = out.run(&env, &["check", "-f", &bad]).await;
    assert_eq!(refused.code, 1, "{}", refused.text());
    assert!(
        refused.stdout.contains(&format!("WorkloadApiKey {}/full-access: refused", env.ns.name)),
        "{}",
        refused.text()
    );
    assert!(
        refused.stdout.contains(
            "KeyProvider/audited refuses this request: role \"Full Access\" is not allowed; allowed roles: \"Auditor\""
        ),
        "{}",
        refused.text()
    );
    let long = manifest("long-lived", json!({"expiresAfter": "1000h"}));
    let refused = out.run(&env, &["check", "-f", &long]).await;
    assert_eq!(refused.code, 1, "{}", refused.text());
    assert!(
        refused.stdout.contains("expiresAfter 1000h is longer than the provider's maxExpiresAfter 720h"),
        "{}",
        refused.text()
    );

    // What the API server refuses (the CRD's CEL rule) is refused with its message.
    let short = manifest("short-lived", json!({"expiresAfter": "10s"}));
    let refused = out.run(&env, &["check", "-f", &short]).await;
    assert_eq!(refused.code, 1, "{}", refused.text());
    assert!(refused.stdout.contains("the API server refuses it"), "{}", refused.text());
    assert!(refused.stdout.contains("spec.expiresAfter must be at least 30s"), "{}", refused.text());

    let good = manifest("auditor", json!({}));
    let accepted = out.run(&env, &["check", "-f", &good]).await;
    assert_eq!(accepted.code, 0, "{}", accepted.text());
    assert!(
        accepted.stdout.contains(&format!("WorkloadApiKey {}/auditor: accepted", env.ns.name)),
        "{}",
        accepted.text()
    );
    // A dry run: nothing was created.
    assert!(env.ns.api::<WorkloadApiKey>().get_opt("auditor").await.unwrap().is_none(), "check created nothing");

    // A ClusterKeyProvider that does not allow the namespace.
    let elsewhere = format!("{}-elsewhere", env.ns.name);
    let mut spec = sim_env::trend_provider_spec(&env.sim, sim_env::ADMIN_SECRET);
    merge(&mut spec, &json!({"allowedNamespaces": {"names": ["some-other-namespace"]}}));
    sim_env::apply_cluster_key_provider(&env.ns.client, &elsewhere, spec).await;
    let via_cluster = manifest("via-cluster", json!({"providerRef": sim_env::cluster_provider_ref(&elsewhere)}));
    let refused = out.run(&env, &["check", "-f", &via_cluster]).await;
    assert_eq!(refused.code, 1, "{}", refused.text());
    let expected = format!(
        "ClusterKeyProvider/{elsewhere} does not allow namespace {}; it allows namespaces some-other-namespace",
        env.ns.name
    );
    assert!(refused.stdout.contains(&expected), "{}", refused.text());

    // The provider's policy as status shows it.
    let shown = out.run(&env, &["status", "--providers", "audited"]).await;
    assert_eq!(shown.code, 0, "{}", shown.text());
    assert!(
        shown.stdout.contains("roles: \"Auditor\"") && shown.stdout.contains("maxExpiresAfter: 720h"),
        "{}",
        shown.text()
    );

    // A SecureWorkloadCredential: a capability the Cisco provider's policy does not allow is refused.
    let mut cisco = sim_env::cisco_provider_spec(&env.sim, None);
    merge(&mut cisco, &json!({"policy": {"capabilities": ["flow_inventory_query"]}}));
    env.apply_key_provider("cisco-limited", cisco).await;
    env.wait_key_provider_ready("cisco-limited").await;
    let swc = |name: &str, provider: &str, capabilities: serde_json::Value| {
        let doc = json!({"apiVersion": "workloadkeys.io/v1alpha1", "kind": "SecureWorkloadCredential",
                         "metadata": {"name": name},
                         "spec": {"providerRef": sim_env::key_provider_ref(provider),
                                  "source": {"existing": {"secretRef": {"name": "sw-ui-key"}}},
                                  "capabilities": capabilities}});
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, serde_norway::to_string(&doc).unwrap()).unwrap();
        path.display().to_string()
    };
    let sensors = swc("sensors", "cisco-limited", json!(["flow_inventory_query", "sensor_management"]));
    let refused = out.run(&env, &["check", "-f", &sensors]).await;
    assert_eq!(refused.code, 1, "{}", refused.text());
    assert!(
        refused
            .stdout
            .contains("KeyProvider/cisco-limited refuses this request: capabilities sensor_management are not allowed"),
        "{}",
        refused.text()
    );

    // Its status: the imported pair's fingerprint, never the pair; an imported pair cannot be rotated here.
    let (key, secret) = env.sim.cisco.create_key("made in the UI", &[Capability::FlowInventoryQuery]);
    let secret = secret.expose().to_owned();
    support::put_secret(&env.ns, "sw-ui-key", &[("api_key", key.as_str()), ("api_secret", secret.as_str())]).await;
    let inventory = swc("inventory", sim_env::CISCO_PROVIDER, json!(["flow_inventory_query"]));
    let accepted = out.run(&env, &["check", "-f", &inventory]).await;
    assert_eq!(accepted.code, 0, "{}", accepted.text());
    let manifest = std::fs::read_to_string(&inventory).unwrap();
    let obj: SecureWorkloadCredential = serde_norway::from_str(&manifest).unwrap();
    env.ns
        .api::<SecureWorkloadCredential>()
        .patch("inventory", &PatchParams::apply("test").force(), &Patch::Apply(&obj))
        .await
        .expect("apply SecureWorkloadCredential");
    let api = env.ns.api::<SecureWorkloadCredential>();
    let ready = support::wait_condition(&api, "inventory", "Ready", "True", "Ready", WAIT).await;
    let fingerprint = ready.status.unwrap().api_key_fingerprint.expect("a fingerprint");
    let status = out.run(&env, &["status", "inventory", "--kind", "swc"]).await;
    assert_eq!(status.code, 0, "{}", status.text());
    for needle in
        ["existing (imported)", &format!("Fingerprint:      {fingerprint}"), "capabilities flow_inventory_query"]
    {
        assert!(status.stdout.contains(needle), "status lacks {needle:?}:\n{}", status.text());
    }
    let inspect = out.run(&env, &["inspect", "secret", "inventory"]).await;
    assert_eq!(inspect.code, 0, "{}", inspect.text());
    assert!(inspect.stdout.contains(&format!("Fingerprint:      {fingerprint}")), "{}", inspect.text());
    let rotate = out.run(&env, &["rotate", "inventory"]).await;
    assert_eq!(rotate.code, 2, "{}", rotate.text());
    assert!(rotate.stderr.contains("imports its key pair"), "{}", rotate.text());
    let mut values = secret_values(&env, "inventory").await;
    values.extend([key, secret]);
    out.assert_holds_none_of(&values);

    // An app team's credentials (what the chart's aggregated `view` and `edit` roles and `edit` itself give, bound in
    // the namespace): the ClusterKeyProvider cannot be read, which check says instead of failing.
    let user = format!("app-team-{}", env.ns.name);
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "app-team"},
        "rules": [
            {"apiGroups": ["workloadkeys.io"], "resources": ["workloadapikeys", "secureworkloadcredentials"],
             "verbs": ["create", "update", "patch", "delete", "get", "list", "watch"]},
            {"apiGroups": ["workloadkeys.io"], "resources": ["keyproviders", "clusterkeyproviders"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["events", "secrets"], "verbs": ["get", "list", "watch"]}
        ]
    }))
    .unwrap();
    env.ns.api::<Role>().create(&PostParams::default(), &role).await.expect("create Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "app-team"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "app-team"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .unwrap();
    env.ns.api::<RoleBinding>().create(&PostParams::default(), &binding).await.expect("create RoleBinding");
    let as_app_team = support::operator::impersonating_kubeconfig(dir.path(), &user).display().to_string();
    let app = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", as_app_team.as_str(), "-n", env.ns.name.as_str()];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let args = app(&["check", "-f", &via_cluster]);
    let check = run_raw(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(check.code, 0, "{}", check.text());
    assert!(
        check.stdout.contains(&format!("ClusterKeyProvider/{elsewhere} is not readable with these credentials")),
        "{}",
        check.text()
    );
    let args = app(&["status", "--providers"]);
    let providers = run_raw(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(providers.code, 0, "{}", providers.text());
    assert!(
        providers.stdout.contains("ClusterKeyProviders not shown") && providers.stdout.contains("KeyProvider"),
        "{}",
        providers.text()
    );
    let args = app(&["status", "inventory", "--events", "3"]);
    let status = run_raw(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(status.code, 0, "{}", status.text());

    // Usage and API errors exit 2 and name what they concern.
    let kubeconfig = support::control_plane().kubeconfig.display().to_string();
    let all = run_raw(&["--kubeconfig", &kubeconfig, "-A", "rotate", "auditor"]).await;
    assert_eq!(all.code, 2, "{}", all.text());
    assert!(all.stderr.contains("rotate works in one namespace"), "{}", all.text());
    let gone = out.run(&env, &["rotate", "auditor"]).await;
    assert_eq!(gone.code, 2, "{}", gone.text());
    assert!(
        gone.stderr.contains(&format!(
            "no WorkloadApiKey or SecureWorkloadCredential named auditor in namespace {}",
            env.ns.name
        )),
        "{}",
        gone.text()
    );
    let nofile = out.run(&env, &["check", "-f", "/nonexistent/x.yaml"]).await;
    assert_eq!(nofile.code, 2, "{}", nofile.text());
    assert!(nofile.stderr.contains("/nonexistent/x.yaml"), "{}", nofile.text());
}

#[tokio::test]
async fn every_verb_has_help() {
    for args in [
        &["--help"][..],
        &["status", "--help"],
        &["rotate", "--help"],
        &["inspect", "--help"],
        &["inspect", "secret", "--help"],
        &["check", "--help"],
    ] {
        let run = run_raw(args).await;
        assert_eq!(run.code, 0, "{args:?}: {}", run.text());
        assert!(run.stdout.contains("Usage: kubectl workloadkeys"), "{args:?}: {}", run.text());
    }
    let usage = run_raw(&["rotate"]).await;
    assert_eq!(usage.code, 2, "a missing argument is a usage error: {}", usage.text());
}
