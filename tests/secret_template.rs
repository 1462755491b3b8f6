//! `spec.secret.template` end to end (issue 23): the examples of `examples/` as the user guide documents them, on
//! a real API server with kwok nodes, the vendor simulators and the operator as its own process; the applications
//! read what they render through the vendors' own SDKs from the repo's venv (deep-security-api, tetpyclient).
//! Rotation re-renders and restarts the workloads once, an edited rendered Secret is repaired, a template that does
//! not render is `TemplateError` with the old Secret and key kept, and no secret value leaks.
#![cfg(feature = "sim")]

mod support;

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Secret},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{
    eventually, merge, put_secret, repo_root,
    rollout::{self},
    sim_env::{self, Env},
};
use workload_key_operator::api::{Capability, SecureWorkloadCredential, WorkloadApiKey};

const WAIT: Duration = Duration::from_secs(90);

/// The resource of `examples/<file>`, its provider pointed at the test namespace's `KeyProvider` `provider`.
fn example(file: &str, provider: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join("examples").join(file)).expect("example");
    let mut obj: Value = serde_norway::from_str(&text).expect("example YAML");
    obj["spec"]["providerRef"] = sim_env::key_provider_ref(provider);
    obj
}

impl Env {
    fn waks(&self) -> Api<WorkloadApiKey> {
        self.ns.api()
    }

    fn swcs(&self) -> Api<SecureWorkloadCredential> {
        self.ns.api()
    }

    async fn apply_wak(&self, obj: &Value) -> WorkloadApiKey {
        let wak: WorkloadApiKey = serde_json::from_value(obj.clone()).expect("WorkloadApiKey");
        let name = wak.name_any();
        self.waks().patch(&name, &PatchParams::apply("test").force(), &Patch::Apply(&wak)).await.expect("apply")
    }

    async fn wait_wak(&self, name: &str, status: &str, reason: &str) -> WorkloadApiKey {
        support::wait_condition(&self.waks(), name, "Ready", status, reason, WAIT).await
    }

    async fn secret(&self, name: &str) -> Secret {
        self.secrets().get(name).await.expect("Secret")
    }

    async fn data(&self, name: &str) -> BTreeMap<String, String> {
        let s = self.secret(name).await;
        s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, String::from_utf8(v.0).unwrap())).collect()
    }

    fn ca_file(&self, dir: &Path) -> String {
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, &self.sim.ca_pem).unwrap();
        ca.to_string_lossy().into_owned()
    }

    /// Live Trend keys whose description carries the resource's UID.
    fn live_keys(&self, uid: &str) -> Vec<i64> {
        sim_env::live_trend_key_ids(&self.sim, uid)
    }
}

/// The official Deep Security SDK, unchanged: its `Configuration` from the environment (`DS_API_URL`,
/// `DS_API_KEY`, as `envFrom` gives a container) or from a rendered `deepsecurity.json`; the key describes itself.
/// Returns the ID of the key the SDK authenticated as.
const DEEP_SECURITY_APP: &str = r#"
import json, os, sys
import deepsecurity
mode, ca = sys.argv[1], sys.argv[2]
if mode == "env":
    host, key, version = os.environ["DS_API_URL"], os.environ["DS_API_KEY"], "v1"
else:
    with open(sys.argv[3], encoding="utf-8") as f:
        cfg = json.load(f)
    host, key, version = cfg["host"], cfg["api_key"]["api-secret-key"], cfg["api_version"]
configuration = deepsecurity.Configuration()
configuration.host = host
configuration.api_key = {"api-secret-key": key}
configuration.verify_ssl = True
configuration.ssl_ca_cert = ca
client = deepsecurity.ApiClient(configuration)
try:
    print(deepsecurity.APIKeysApi(client).describe_current_api_key(version).id)
finally:
    client.pool.close()
    client.pool.join()
"#;

fn python() -> std::path::PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run `make venv` (`make test` does)", python.display());
    python
}

/// The Deep Security SDK with the Secret's data as environment variables (what `envFrom` does): the key's ID.
fn deep_security_from_env(env: &Env, data: &BTreeMap<String, String>) -> i64 {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(DEEP_SECURITY_APP).arg("env").arg(env.ca_file(dir.path()));
    cmd.envs(data);
    run_app(cmd)
}

/// The Deep Security SDK configured from the rendered file, as the pod would read it from the mounted Secret.
fn deep_security_from_file(env: &Env, file: &str) -> i64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deepsecurity.json");
    std::fs::write(&path, file).unwrap();
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(DEEP_SECURITY_APP).arg("file").arg(env.ca_file(dir.path())).arg(&path);
    run_app(cmd)
}

fn run_app(mut cmd: Command) -> i64 {
    let out = cmd.output().expect("run the venv's python");
    assert!(out.status.success(), "the application failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a key ID")
}

/// A Deployment `name` on the kwok nodes whose container takes every key of Secret `secret` as environment.
fn deployment(name: &str, secret: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": "registry.invalid/billing:1",
                                         "envFrom": [{"secretRef": {"name": secret}}]}]}
            }
        }
    }))
    .unwrap()
}

/// How often the operator restarted the Deployment: its generation less one (nothing else changes its template).
async fn restarts(api: &Api<Deployment>, name: &str) -> i64 {
    api.get(name).await.unwrap().meta().generation.unwrap() - 1
}

/// Waits until the resource is Ready with its Secret rendered from `template_digest` other than `before` and its
/// rollout complete; returns it.
async fn wait_rerendered(
    env: &Env,
    name: &str,
    key_before: Option<i64>,
    digest_before: Option<&str>,
) -> WorkloadApiKey {
    let what =
        format!("{name} rendered again (key other than {key_before:?} or template other than {digest_before:?})");
    eventually(WAIT, &what, || async {
        let w = env.waks().get(name).await.ok()?;
        let s = w.status.as_deref()?;
        let ready = s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        let key = s.key_id.as_ref().and_then(|k| k.as_number());
        let changed = key != key_before || s.secret_template_digest.as_deref() != digest_before;
        let settled = s.rollout.as_ref().is_none_or(|r| r.complete) && s.retiring_keys.is_empty();
        (ready && changed && settled).then_some(w.clone())
    })
    .await
}

fn key_of(w: &WorkloadApiKey) -> Option<i64> {
    w.status.as_ref()?.key_id.as_ref()?.as_number()
}

fn digest_of(w: &WorkloadApiKey) -> Option<String> {
    w.status.as_ref()?.secret_template_digest.clone()
}

/// examples/workloadapikey-env.yaml: the Secret holds exactly the documented environment variables, the SDK works
/// from them; a rotation renders it again and restarts the Deployment once; a changed template (here also a changed
/// Secret type) does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_example_renders_restarts_once_per_change_and_follows_a_changed_template() {
    support::control_plane_with_nodes();
    let env = Env::start_as_chart_service_account("tmpl-env").await;
    let (client, ns) = (env.ns.client.clone(), env.ns.name.clone());
    let deployments = env.ns.api::<Deployment>();
    deployments.create(&PostParams::default(), &deployment("billing", "billing-env")).await.unwrap();
    let _: Deployment = rollout::wait_rollout(&client, &ns, "billing", WAIT).await;
    let mut obj = example("workloadapikey-env.yaml", sim_env::TREND_PROVIDER);
    merge(&mut obj["spec"], &json!({"rotation": {"gracePeriod": "3s"}}));
    env.apply_wak(&obj).await;
    let wak = env.wait_wak("billing-env", "True", "Ready").await;
    let uid = wak.uid().unwrap();
    let status = wak.status.clone().unwrap();
    let first_key = key_of(&wak).unwrap();

    // As documented: these four keys and nothing else, an Opaque Secret.
    let secret = env.secret("billing-env").await;
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    let data = env.data("billing-env").await;
    assert_eq!(data.keys().collect::<Vec<_>>(), ["DS_API_KEY", "DS_API_KEY_EXPIRES", "DS_API_KEY_ID", "DS_API_URL"]);
    assert_eq!(data["DS_API_URL"], env.sim.info.trend_url());
    assert_eq!(data["DS_API_KEY_ID"], first_key.to_string());
    let expires: Timestamp = data["DS_API_KEY_EXPIRES"].parse().expect("RFC 3339");
    assert_eq!(Some(expires.as_second()), status.expires_at.as_ref().map(|t| t.0.as_second()));
    assert_eq!(deep_security_from_env(&env, &data), first_key, "the SDK authenticates with the rendered variables");
    assert_eq!(restarts(&deployments, "billing").await, 0, "the first write restarts nothing");
    let mut secrets = vec![data["DS_API_KEY"].clone()];

    // Rotation: rendered again with the new key, the Deployment restarted once, the old key revoked after grace.
    let patch = json!({"metadata": {"annotations": {"workloadkeys.io/rotate": "1"}}});
    env.waks().patch("billing-env", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let rotated = wait_rerendered(&env, "billing-env", Some(first_key), digest_of(&wak).as_deref()).await;
    let second_key = key_of(&rotated).unwrap();
    let data = env.data("billing-env").await;
    assert_eq!(data["DS_API_KEY_ID"], second_key.to_string());
    assert_ne!(data["DS_API_KEY"], secrets[0]);
    assert_eq!(deep_security_from_env(&env, &data), second_key);
    assert_eq!(env.live_keys(&uid), vec![second_key], "the replaced key is revoked once the rollout is done");
    let s = rotated.status.clone().unwrap();
    assert_eq!(s.rollout.as_ref().map(|r| &r.secret_hash), s.secret_hash.as_ref(), "the hash covers what was rendered");
    assert_eq!(restarts(&deployments, "billing").await, 1, "one restart for the rotation");
    secrets.push(data["DS_API_KEY"].clone());

    // A changed template, here with another Secret type: a new secret rendered in the new shape (Kubernetes cannot
    // change a Secret's type in place: the operator replaces its own Secret), one more restart.
    merge(
        &mut obj["spec"]["secret"]["template"],
        &json!({"type": "kubernetes.io/basic-auth",
                "data": {"username": "{{ keyId }}", "password": "{{ secret }}", "DS_API_KEY": null,
                         "DS_API_URL": null, "DS_API_KEY_ID": null, "DS_API_KEY_EXPIRES": null}}),
    );
    env.apply_wak(&obj).await;
    let retemplated = wait_rerendered(&env, "billing-env", Some(second_key), digest_of(&rotated).as_deref()).await;
    let third_key = key_of(&retemplated).unwrap();
    assert_ne!(third_key, second_key, "a new secret: the old one is kept nowhere but in the Secret");
    let secret = env.secret("billing-env").await;
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    assert!(workload_key_operator::controller::secret::is_owned_by(&secret, &uid), "still the resource's own");
    let data = env.data("billing-env").await;
    assert_eq!(data.keys().collect::<Vec<_>>(), ["password", "username"]);
    assert_eq!(data["username"], third_key.to_string());
    let as_env = BTreeMap::from([
        ("DS_API_KEY".to_owned(), data["password"].clone()),
        ("DS_API_URL".to_owned(), env.sim.info.trend_url()),
    ]);
    assert_eq!(deep_security_from_env(&env, &as_env), third_key);
    assert_eq!(env.live_keys(&uid), vec![third_key]);
    assert_eq!(restarts(&deployments, "billing").await, 2, "one restart for the changed template");
    secrets.push(data["password"].clone());
    // Resyncs and the template unchanged: nothing more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(restarts(&deployments, "billing").await, 2);
    support::operator::assert_nothing_forbidden(&env.op);
    support::assert_no_leaks(&env.ns, &env.op, &secrets).await;
}

/// examples/workloadapikey-sdk-config.yaml: the SDK configured from the rendered file; an edit of the rendered
/// Secret is repaired; a template that does not render is `TemplateError` with the old Secret and key kept and no
/// vendor call, also when the template would echo the secret, and no secret value in any message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_config_example_works_is_repaired_and_a_broken_template_keeps_the_old_secret() {
    support::control_plane_with_nodes();
    let env = Env::start("tmpl-sdk").await;
    let obj = example("workloadapikey-sdk-config.yaml", sim_env::TREND_PROVIDER);
    env.apply_wak(&obj).await;
    let wak = env.wait_wak("inventory-sdk", "True", "Ready").await;
    let uid = wak.uid().unwrap();
    let key = key_of(&wak).unwrap();
    let data = env.data("inventory-sdk").await;
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["api-key-id", "api-secret-key", "deepsecurity.json", "endpoint"],
        "Merge keeps the default keys beside the file"
    );
    let file: Value = serde_json::from_str(&data["deepsecurity.json"]).expect("the rendered file is JSON");
    assert_eq!(file["api_key"]["api-secret-key"], data["api-secret-key"]);
    assert_eq!(file["host"], env.sim.info.trend_url());
    assert_eq!(file["key_id"], key.to_string());
    assert_eq!(file["role"], "Auditor");
    assert_eq!(file["expires_at"].as_str().map(|t| t.parse::<Timestamp>().is_ok()), Some(true));
    assert_eq!(deep_security_from_file(&env, &data["deepsecurity.json"]), key, "the SDK from the rendered file");
    let mut secrets = vec![data["api-secret-key"].clone()];

    // Someone edits the rendered file: repaired (a fresh secret for the key, in the template's shape).
    let edited = json!({"data": {"deepsecurity.json": base64(b"{\"host\": \"https://elsewhere.invalid\"}")}});
    env.secrets().patch("inventory-sdk", &PatchParams::default(), &Patch::Merge(&edited)).await.unwrap();
    let repaired = eventually(WAIT, "the edited Secret repaired", || async {
        let data = env.data("inventory-sdk").await;
        let file: Value = serde_json::from_str(&data["deepsecurity.json"]).ok()?;
        (file["host"] == env.sim.info.trend_url() && data["api-secret-key"] != secrets[0]).then_some(data)
    })
    .await;
    let file: Value = serde_json::from_str(&repaired["deepsecurity.json"]).unwrap();
    assert_eq!(file["api_key"]["api-secret-key"], repaired["api-secret-key"]);
    assert_eq!(deep_security_from_file(&env, &repaired["deepsecurity.json"]), key, "same key, fresh secret");
    assert!(!support::event_notes(&env.ns, "SecretRepaired").await.is_empty());
    secrets.push(repaired["api-secret-key"].clone());
    let wak = env.wait_wak("inventory-sdk", "True", "Ready").await;

    // Templates that do not render: TemplateError naming the key, nothing written, no vendor call, the key kept.
    let before = env.secret("inventory-sdk").await;
    let status_before = wak.status.clone().unwrap();
    for (template, expect) in [
        ("{\"key\": {{ secret | tojson }", "syntax error"),
        ("{{ secret | int }}", "invalid operation"),
        ("{{ secret | upper | nosuchfilter }}", "unknown filter"),
        ("{{ api_key }}", "undefined value (line 1); the variables are api, endpoint, expiresAt, keyId, name"),
    ] {
        let calls = env.sim.counts.total("trend", "");
        let mut broken = obj.clone();
        broken["spec"]["secret"]["template"]["data"]["deepsecurity.json"] = json!(template);
        env.apply_wak(&broken).await;
        let message = eventually(WAIT, &format!("TemplateError for {template}"), || async {
            let (status, reason, message) = ready(&env.waks().get("inventory-sdk").await.ok()?);
            (status == "False" && reason == "TemplateError" && message.contains(expect)).then_some(message)
        })
        .await;
        assert!(message.starts_with("spec.secret.template.data[\"deepsecurity.json\"]: "), "{template}: {message}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = env.secret("inventory-sdk").await;
        assert_eq!(after.resource_version(), before.resource_version(), "{template}: the old Secret is kept");
        let w = env.waks().get("inventory-sdk").await.unwrap();
        let s = w.status.unwrap();
        assert_eq!((s.key_id, s.secret_hash), (status_before.key_id.clone(), status_before.secret_hash.clone()));
        assert_eq!(env.live_keys(&uid), vec![key], "{template}: the key is kept");
        assert_eq!(env.sim.counts.total("trend", ""), calls, "{template}: no vendor call");
    }
    let notes = support::event_notes(&env.ns, "TemplateError").await;
    assert!(!notes.is_empty());
    // Fixed again: back to Ready, rendered as before (the template is the same again: nothing to re-render).
    env.apply_wak(&obj).await;
    let w = env.wait_wak("inventory-sdk", "True", "Ready").await;
    assert_eq!(key_of(&w), Some(key));
    assert_eq!(env.secret("inventory-sdk").await.resource_version(), before.resource_version());

    // A new resource whose template cannot render never costs a vendor key.
    let mut fresh = obj.clone();
    fresh["metadata"]["name"] = json!("never-rendered");
    fresh["spec"]["secret"]["template"]["data"]["deepsecurity.json"] = json!("{{ secret }");
    let calls = env.sim.counts.total("trend", "");
    let never = env.apply_wak(&fresh).await;
    env.wait_wak("never-rendered", "False", "TemplateError").await;
    assert!(env.live_keys(&never.uid().unwrap()).is_empty(), "no key was made");
    assert_eq!(env.sim.counts.total("trend", ""), calls, "no vendor call");
    assert!(env.secrets().get_opt("never-rendered").await.unwrap().is_none());
    support::assert_no_leaks(&env.ns, &env.op, &secrets).await;
}

fn ready(w: &WorkloadApiKey) -> (String, String, String) {
    let c = w.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// tetpyclient, unchanged, as the Python job of examples/secureworkloadcredential-config-json.yaml: `config.json`
/// says where to connect and which credentials file to use; the status of `GET path`.
fn flow_export_job(env: &Env, data: &BTreeMap<String, String>, path: &str) -> u16 {
    let dir = tempfile::tempdir().unwrap();
    for (k, v) in data {
        std::fs::write(dir.path().join(k), v).unwrap();
    }
    let script = "import json, os, sys\nfrom tetpyclient import RestClient\n\
                  mounted, ca, path = sys.argv[1], sys.argv[2], sys.argv[3]\n\
                  cfg = json.load(open(os.path.join(mounted, 'config.json')))\n\
                  creds = os.path.join(mounted, os.path.basename(cfg['credentials_file']))\n\
                  rc = RestClient(cfg['endpoint'], credentials_file=creds, verify=ca)\n\
                  print(rc.get(path).status_code)\n";
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(dir.path())
        .arg(env.ca_file(dir.path()))
        .arg(path)
        .output()
        .expect("run the venv's python");
    assert!(out.status.success(), "tetpyclient failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a status code")
}

/// examples/secureworkloadcredential-config-json.yaml: `config.json` and a templated `credentials.json` that
/// tetpyclient reads; a changed source pair is rendered again without the vendor minting anything; provision mode
/// renders beside the default keys it reads its pair back from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cisco_config_json_example_works_with_tetpyclient() {
    support::control_plane_with_nodes();
    let env = Env::start("tmpl-swc").await;
    // The job lists sensors (sensor_management); the resource asks only for what the example lists.
    let capabilities = [Capability::FlowInventoryQuery, Capability::SensorManagement];
    let (key, secret) = env.sim.cisco.create_key("made in the UI", &capabilities);
    put_secret(&env.ns, "sw-ui-key", &[("api_key", key.as_str()), ("api_secret", secret.expose())]).await;
    let obj = example("secureworkloadcredential-config-json.yaml", sim_env::CISCO_PROVIDER);
    let swc: SecureWorkloadCredential = serde_json::from_value(obj).unwrap();
    env.swcs().patch("flow-export", &PatchParams::apply("test").force(), &Patch::Apply(&swc)).await.unwrap();
    support::wait_condition(&env.swcs(), "flow-export", "Ready", "True", "Ready", WAIT).await;
    let data = env.data("flow-export").await;
    assert_eq!(data.keys().collect::<Vec<_>>(), ["config.json", "credentials.json"], "only the templated keys");
    let config: Value = serde_json::from_str(&data["config.json"]).unwrap();
    assert_eq!(config["endpoint"], env.sim.info.cisco_url());
    assert_eq!(config["namespace"], env.ns.name.as_str());
    let creds: Value = serde_json::from_str(&data["credentials.json"]).unwrap();
    assert_eq!(creds, json!({"api_key": key, "api_secret": secret.expose()}));
    assert_eq!(flow_export_job(&env, &data, "/openapi/v1/sensors"), 200, "tetpyclient with the rendered files");
    let mut secrets = vec![secret.expose().to_owned()];

    // A new pair in the source Secret: rendered again, with no mint at the vendor.
    let (key2, secret2) = env.sim.cisco.create_key("made in the UI again", &capabilities);
    put_secret(&env.ns, "sw-ui-key", &[("api_key", key2.as_str()), ("api_secret", secret2.expose())]).await;
    let data = eventually(WAIT, "the new pair rendered", || async {
        let data = env.data("flow-export").await;
        data["credentials.json"].contains(&key2).then_some(data)
    })
    .await;
    assert_eq!(flow_export_job(&env, &data, "/openapi/v1/sensors"), 200);
    secrets.push(secret2.expose().to_owned());

    // Provision mode: Merge keeps the default keys it reads its minted pair back from; the template beside them.
    let provision: SecureWorkloadCredential = serde_json::from_value(json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "SecureWorkloadCredential",
        "metadata": {"name": "minted"},
        "spec": {
            "providerRef": sim_env::key_provider_ref(sim_env::CISCO_PROVIDER),
            "source": {"provision": {"description": "templated"}},
            "capabilities": ["flow_inventory_query", "sensor_management"],
            "secret": {"template": {"mergePolicy": "Merge", "data": {
                "config.json": "{\"endpoint\": {{ endpoint | tojson }}, \"credentials_file\": \"credentials.json\"}"
            }}}
        }
    }))
    .unwrap();
    env.swcs().patch("minted", &PatchParams::apply("test").force(), &Patch::Apply(&provision)).await.unwrap();
    support::wait_condition(&env.swcs(), "minted", "Ready", "True", "Ready", WAIT).await;
    let data = env.data("minted").await;
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["api_key", "api_secret", "ca.crt", "config.json", "credentials.json", "endpoint"]
    );
    assert_eq!(flow_export_job(&env, &data, "/openapi/v1/sensors"), 200, "the minted pair through config.json");
    secrets.push(data["api_secret"].clone());
    support::assert_no_leaks(&env.ns, &env.op, &secrets).await;
}
