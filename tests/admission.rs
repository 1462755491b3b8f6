//! Invalid specs are refused by the real API server (schema + CEL) with messages that name the field.

mod support;

use kube::{
    Api,
    api::{DynamicObject, PostParams},
    core::GroupVersionKind,
    discovery::ApiResource,
};
use serde_json::{Value, json};
use support::TestNamespace;

fn valid_wak() -> Value {
    json!({
        "providerRef": {"kind": "ClusterKeyProvider", "name": "platform-trend"},
        "role": {"name": "Auditor"},
        "expiresAfter": "336h",
        "rotation": {"renewBefore": "112h", "every": "168h", "strategy": "Replace", "gracePeriod": "10m", "rolloutTimeout": "30m"},
        "secret": {"rolloutRestartTargets": [{"kind": "Deployment", "name": "web"}, {"kind": "StatefulSet", "name": "web"}]}
    })
}

/// The refusals of `spec.secret.rolloutRestartTargets`, the same on both kinds.
fn rollout_target_cases() -> Vec<(&'static str, Value, &'static str)> {
    let targets = |t: Value| json!({"secret": {"rolloutRestartTargets": t}});
    let many: Vec<Value> = (0..17).map(|i| json!({"kind": "Deployment", "name": format!("w{i}")})).collect();
    vec![
        (
            "unknown workload kind",
            targets(json!([{"kind": "CronJob", "name": "x"}])),
            "spec.secret.rolloutRestartTargets[0].kind",
        ),
        (
            "bad workload name",
            targets(json!([{"kind": "Deployment", "name": "Not_A_Name"}])),
            "spec.secret.rolloutRestartTargets[0].name",
        ),
        (
            "workload without name",
            targets(json!([{"kind": "Deployment"}])),
            "spec.secret.rolloutRestartTargets[0].name",
        ),
        (
            "the same workload twice",
            targets(json!([{"kind": "Deployment", "name": "web"}, {"kind": "Deployment", "name": "web"}])),
            "must not name a workload twice",
        ),
        ("more than 16 targets", targets(json!(many)), "spec.secret.rolloutRestartTargets"),
    ]
}

/// The size bounds on what an app team writes into the Secret's metadata, the same on both kinds.
fn secret_metadata_cases() -> Vec<(&'static str, Value, &'static str)> {
    let many: serde_json::Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let big = |n: usize| json!({"a": "x".repeat(n)});
    vec![
        ("more than 16 labels", json!({"secret": {"labels": many.clone()}}), "spec.secret.labels"),
        ("labels over 4096 characters", json!({"secret": {"labels": big(4096)}}), "spec.secret.labels must total"),
        ("more than 16 annotations", json!({"secret": {"annotations": many}}), "spec.secret.annotations"),
        (
            "annotations over 8192 characters",
            json!({"secret": {"annotations": big(8192)}}),
            "spec.secret.annotations must total",
        ),
    ]
}

/// The refusals of `spec.secret.template` and of template text where nothing is templated, the same on both kinds.
/// CEL checks what it can without parsing Jinja: key names, counts, sizes, the type; and that labels and annotations
/// (never templated, never secret) do not look like templates. Syntax is the operator's (`TemplateError`).
fn secret_template_cases() -> Vec<(&'static str, Value, &'static str)> {
    let template = |t: Value| json!({"secret": {"template": t}});
    let many: serde_json::Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("{{ secret }}"))).collect();
    let five: serde_json::Map<String, Value> = (0..5).map(|i| (format!("k{i}"), json!("x".repeat(16000)))).collect();
    vec![
        (
            "a secret echoed into a label",
            json!({"secret": {"labels": {"leak": "{{ secret }}"}}}),
            "spec.secret.labels are not templated",
        ),
        (
            "a secret echoed into an annotation",
            json!({"secret": {"annotations": {"leak": "key={{ secret }}"}}}),
            "spec.secret.annotations are not templated",
        ),
        (
            "a template statement in an annotation",
            json!({"secret": {"annotations": {"leak": "{% if secret %}y{% endif %}"}}}),
            "spec.secret.annotations are not templated",
        ),
        ("template without data", template(json!({"type": "Opaque"})), "spec.secret.template.data"),
        ("template with empty data", template(json!({"data": {}})), "spec.secret.template.data"),
        (
            "a key that is no Secret key",
            template(json!({"data": {"config json": "{{ secret }}"}})),
            "spec.secret.template.data keys must be valid Secret keys",
        ),
        (
            "a key with a slash",
            template(json!({"data": {"../config.json": "{{ secret }}"}})),
            "spec.secret.template.data keys must be valid Secret keys",
        ),
        ("more than 16 keys", template(json!({"data": many})), "spec.secret.template.data"),
        (
            "a template over 16384 characters",
            template(json!({"data": {"big": "x".repeat(16385)}})),
            "spec.secret.template.data",
        ),
        (
            "templates over 65536 characters together",
            template(json!({"data": five})),
            "spec.secret.template.data must total at most 65536",
        ),
        (
            "unknown merge policy",
            template(json!({"data": {"k": "{{ secret }}"}, "mergePolicy": "Append"})),
            "spec.secret.template.mergePolicy",
        ),
        ("bad type", template(json!({"data": {"k": "v"}, "type": "not a type"})), "spec.secret.template.type"),
        (
            "a type without the keys it needs",
            template(json!({"data": {"cert.pem": "{{ secret }}"}, "type": "kubernetes.io/tls"})),
            "spec.secret.template.data lacks a key its type needs",
        ),
        (
            "service-account token type",
            template(json!({"data": {"k": "v"}, "type": "kubernetes.io/service-account-token"})),
            "spec.secret.template.type must not be kubernetes.io/service-account-token",
        ),
    ]
}

/// Free text holding an ownership marker, refused in each field that has one (issue 19 §1).
fn marker_cases() -> Vec<(&'static str, Value, &'static str)> {
    let marked = "x [workloadkeys.io/uid=0b6f5d7e-1111-4c4c-9a9a-123456789abc]";
    vec![
        (
            "marker in description",
            json!({"description": marked}),
            "spec.description must not contain 'workloadkeys.io/'",
        ),
        ("marker in keyName", json!({"keyName": marked}), "spec.keyName must not contain 'workloadkeys.io/'"),
        (
            "marker in role name",
            json!({"role": {"name": marked}}),
            "spec.role.name must not contain 'workloadkeys.io/'",
        ),
    ]
}

fn valid_swc() -> Value {
    json!({
        "providerRef": {"name": "team-cisco"},
        "source": {"existing": {"secretRef": {"name": "sw-ui-key"}}},
        "capabilities": ["flow_inventory_query"],
        "verifyInterval": "1h"
    })
}

/// Applies `patch` (a JSON merge patch over the valid spec) and returns the API server's refusal message.
async fn refusal(api: &Api<DynamicObject>, ar: &ApiResource, name: &str, base: Value, patch: Value) -> Option<String> {
    let mut spec = base;
    support::merge(&mut spec, &patch);
    let obj = DynamicObject::new(name, ar).data(json!({ "spec": spec }));
    match api.create(&PostParams { dry_run: true, ..Default::default() }, &obj).await {
        Ok(_) => None,
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "expected 422 Invalid, got {s:?}");
            Some(s.message)
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test]
async fn invalid_workload_api_keys_are_refused_with_field_names() {
    let ns = TestNamespace::new("adm-wak").await;
    support::operator::install_crds(&ns.client).await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("workloadkeys.io", "v1alpha1", "WorkloadApiKey"),
        "workloadapikeys",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ar);
    assert_eq!(refusal(&api, &ar, "ok", valid_wak(), json!({})).await, None, "the valid spec is accepted");
    let templated = json!({"secret": {"labels": {"app": "web"}, "annotations": {"note": "{ not a template }"},
        "template": {"data": {"DS_API_KEY": "{{ secret }}", "config.json": "{\"k\": {{ secret|tojson }}}"},
                     "mergePolicy": "Merge", "type": "example.com/ds-config"}}});
    assert_eq!(refusal(&api, &ar, "ok2", valid_wak(), templated).await, None, "a valid template is accepted");
    let broken = json!({"secret": {"template": {"data": {"k": "{{ secret "}}}});
    assert_eq!(refusal(&api, &ar, "ok3", valid_wak(), broken).await, None, "Jinja syntax is not CEL's to check");

    let cases: Vec<(&str, Value, &str)> = vec![
        ("no providerRef", json!({"providerRef": null}), "spec.providerRef"),
        ("unknown provider kind", json!({"providerRef": {"kind": "SecretStore"}}), "spec.providerRef.kind"),
        ("bad provider name", json!({"providerRef": {"name": "Not_A_Name"}}), "spec.providerRef.name"),
        ("role name and id", json!({"role": {"id": 2}}), "spec.role"),
        ("no role", json!({"role": {"name": null}}), "spec.role"),
        ("renewBefore >= expiresAfter", json!({"rotation": {"renewBefore": "400h"}}), "spec.rotation.renewBefore"),
        ("renewBefore without expiresAfter", json!({"expiresAfter": null}), "spec.rotation.renewBefore"),
        ("bad duration", json!({"expiresAfter": "two weeks"}), "spec.expiresAfter"),
        ("too short expiry", json!({"expiresAfter": "5s", "rotation": null}), "spec.expiresAfter"),
        ("unknown locale", json!({"locale": "fr-FR"}), "spec.locale"),
        ("unknown strategy", json!({"rotation": {"strategy": "Recreate"}}), "spec.rotation.strategy"),
        ("grace with RegenerateSecret", json!({"rotation": {"strategy": "RegenerateSecret"}}), "spec.rotation"),
        ("bad secret name", json!({"secret": {"name": "Not_A_Name"}}), "spec.secret.name"),
        ("bad deletion policy", json!({"deletionPolicy": "Orphan"}), "spec.deletionPolicy"),
        ("negative role id", json!({"role": {"name": null, "id": 0}}), "spec.role.id"),
        ("blank key name", json!({"keyName": " padded "}), "spec.keyName"),
        ("bad time zone", json!({"timeZone": "not a zone!"}), "spec.timeZone"),
        ("zero rolloutTimeout", json!({"rotation": {"rolloutTimeout": "0s"}}), "spec.rotation.rolloutTimeout"),
        ("bad rolloutTimeout", json!({"rotation": {"rolloutTimeout": "soon"}}), "spec.rotation.rolloutTimeout"),
        ("rotation.every under a minute", json!({"rotation": {"every": "59s"}}), "spec.rotation.every"),
        ("bad rotation.every", json!({"rotation": {"every": "weekly"}}), "spec.rotation.every"),
        (
            "Merge over a default key",
            json!({"secret": {"template": {"data": {"api-secret-key": "x"}, "mergePolicy": "Merge"}}}),
            "must not name a default key (api-secret-key, api-key, api-key-id, endpoint)",
        ),
    ]
    .into_iter()
    .chain(rollout_target_cases())
    .chain(secret_metadata_cases())
    .chain(secret_template_cases())
    .chain(marker_cases())
    .collect();
    assert!(cases.len() >= 12);
    for (i, (what, patch, field)) in cases.into_iter().enumerate() {
        let msg = refusal(&api, &ar, &format!("bad-{i}"), valid_wak(), patch)
            .await
            .unwrap_or_else(|| panic!("{what}: accepted, expected a refusal naming {field}"));
        assert!(msg.contains(field), "{what}: message does not name {field}: {msg}");
    }
}

#[tokio::test]
async fn invalid_secure_workload_credentials_are_refused_with_field_names() {
    let ns = TestNamespace::new("adm-swc").await;
    support::operator::install_crds(&ns.client).await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("workloadkeys.io", "v1alpha1", "SecureWorkloadCredential"),
        "secureworkloadcredentials",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ar);
    assert_eq!(refusal(&api, &ar, "ok", valid_swc(), json!({})).await, None, "the valid spec is accepted");
    let provision = json!({"source": {"existing": null, "provision": {"description": "payments reporting"}},
                           "rotation": {"every": "720h", "rolloutTimeout": "15m"}, "deletionPolicy": "Delete",
                           "secret": {"rolloutRestartTargets": [{"kind": "DaemonSet", "name": "agent"}]}});
    assert_eq!(
        refusal(&api, &ar, "ok2", valid_swc(), provision.clone()).await,
        None,
        "a valid provision spec is accepted"
    );
    let mut merged = provision.clone();
    merged["secret"]["template"] = json!({"data": {"config.json": "{{ credentialsJson }}"}, "mergePolicy": "Merge"});
    assert_eq!(refusal(&api, &ar, "ok3", valid_swc(), merged).await, None, "provision mode with Merge is accepted");
    let mut replaced = provision.clone();
    replaced["secret"]["template"] = json!({"data": {"config.json": "{{ credentialsJson }}"}});

    let cases: Vec<(&str, Value, &str)> = vec![
        ("both sources", json!({"source": {"provision": {"description": "d"}}}), "spec.source"),
        ("no providerRef", json!({"providerRef": null}), "spec.providerRef"),
        ("no source", json!({"source": {"existing": null}}), "spec.source"),
        ("rotation with existing", json!({"rotation": {"every": "720h"}}), "spec.rotation"),
        ("deletionPolicy with existing", json!({"deletionPolicy": "Delete"}), "spec.deletionPolicy"),
        ("unknown capability", json!({"capabilities": ["flow_inventory_query", "root_access"]}), "spec.capabilities"),
        (
            "duplicate capability",
            json!({"capabilities": ["sensor_management", "sensor_management"]}),
            "spec.capabilities",
        ),
        ("bad verifyInterval", json!({"verifyInterval": "hourly"}), "spec.verifyInterval"),
        ("zero verifyInterval", json!({"verifyInterval": "0s"}), "spec.verifyInterval"),
        (
            "missing secretRef name",
            json!({"source": {"existing": {"secretRef": {"name": null}}}}),
            "spec.source.existing.secretRef.name",
        ),
        (
            "Merge over a default key",
            json!({"secret": {"template": {"data": {"credentials.json": "x"}, "mergePolicy": "Merge"}}}),
            "must not name a default key (credentials.json, api_key, api_secret, endpoint, ca.crt)",
        ),
        (
            "provision mode with Replace",
            replaced,
            "provision mode reads the minted pair back from the Secret it writes: spec.secret.template.mergePolicy must be Merge",
        ),
    ]
    .into_iter()
    .chain(rollout_target_cases())
    .chain(secret_metadata_cases())
    .chain(secret_template_cases())
    .chain([(
        "marker in the minted key's description",
        json!({"source": {"existing": null, "provision": {"description": "[workloadkeys.io/owner=u.n]"}}}),
        "spec.source.provision.description must not contain 'workloadkeys.io/'",
    )])
    .collect();
    assert!(cases.len() >= 8);
    for (i, (what, patch, field)) in cases.into_iter().enumerate() {
        let msg = refusal(&api, &ar, &format!("bad-{i}"), valid_swc(), patch)
            .await
            .unwrap_or_else(|| panic!("{what}: accepted, expected a refusal naming {field}"));
        assert!(msg.contains(field), "{what}: message does not name {field}: {msg}");
    }
}

fn valid_trend_provider() -> Value {
    json!({
        "trend": {"url": "https://dsm.example.com:4119/api", "caSecretRef": {"name": "dsm-ca"}, "apiKeySecretRef": {"name": "tm-admin"}},
        "allowedNamespaces": {"names": ["team-a"], "selector": {"matchLabels": {"workloadkeys.io/trend": "allowed"}}},
        "policy": {"roles": [{"name": "Auditor"}, {"id": 7}], "maxExpiresAfter": "720h"}
    })
}

fn valid_cisco_provider() -> Value {
    json!({
        "cisco": {"url": "https://acme.tetrationcloud.com", "loginSecretRef": {"name": "sw-login"}},
        "allowedNamespaces": {"names": ["team-a"]},
        "policy": {"capabilities": ["flow_inventory_query", "sensor_management"]}
    })
}

/// The provider CEL rules, for both kinds (a `KeyProvider` has no `allowedNamespaces`).
#[tokio::test]
async fn invalid_providers_are_refused_with_field_names() {
    let ns = TestNamespace::new("adm-prov").await;
    support::operator::install_crds(&ns.client).await;
    for (kind, plural, namespaced) in
        [("ClusterKeyProvider", "clusterkeyproviders", false), ("KeyProvider", "keyproviders", true)]
    {
        let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("workloadkeys.io", "v1alpha1", kind), plural);
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(ns.client.clone(), &ns.name, &ar)
        } else {
            Api::all_with(ns.client.clone(), &ar)
        };
        let (mut trend, mut cisco) = (valid_trend_provider(), valid_cisco_provider());
        if namespaced {
            trend.as_object_mut().unwrap().remove("allowedNamespaces");
            cisco.as_object_mut().unwrap().remove("allowedNamespaces");
        }
        let name = |what: &str| format!("{}-{what}", ns.name);
        assert_eq!(refusal(&api, &ar, &name("t"), trend.clone(), json!({})).await, None, "{kind}: valid Trend spec");
        assert_eq!(refusal(&api, &ar, &name("c"), cisco.clone(), json!({})).await, None, "{kind}: valid Cisco spec");
        let cisco_endpoint = valid_cisco_provider()["cisco"].clone();
        let pem = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----";
        let trend_cases: Vec<(&str, Value, &str)> = vec![
            ("both vendors", json!({"cisco": cisco_endpoint}), "exactly one of spec.trend and spec.cisco"),
            ("no vendor", json!({"trend": null, "policy": null}), "exactly one of spec.trend and spec.cisco"),
            ("both credentials", json!({"trend": {"loginSecretRef": {"name": "l"}}}), "spec.trend.apiKeySecretRef"),
            ("no credential", json!({"trend": {"apiKeySecretRef": null}}), "spec.trend.apiKeySecretRef"),
            ("plain http", json!({"trend": {"url": "http://dsm.example.com/api"}}), "spec.trend.url"),
            (
                "http with allowInsecureHttp false",
                json!({"trend": {"url": "http://dsm.example.com/api", "allowInsecureHttp": false}}),
                "spec.trend.url",
            ),
            ("not a URL", json!({"trend": {"url": "dsm.example.com"}}), "spec.trend.url"),
            ("CA twice", json!({"trend": {"caBundle": pem}}), "spec.trend.caBundle"),
            ("CA not PEM", json!({"trend": {"caSecretRef": null, "caBundle": "hello"}}), "spec.trend.caBundle"),
            ("insecure with CA", json!({"trend": {"insecureSkipTlsVerify": true}}), "spec.trend.insecureSkipTlsVerify"),
            (
                "capabilities on Trend",
                json!({"policy": {"capabilities": ["sensor_management"]}}),
                "spec.policy.capabilities applies to Cisco providers only",
            ),
            ("role name and id", json!({"policy": {"roles": [{"name": "Auditor", "id": 2}]}}), "spec.policy.roles"),
            ("bad maxExpiresAfter", json!({"policy": {"maxExpiresAfter": "a month"}}), "spec.policy.maxExpiresAfter"),
            ("too short maxExpiresAfter", json!({"policy": {"maxExpiresAfter": "5s"}}), "spec.policy.maxExpiresAfter"),
        ];
        let cisco_cases: Vec<(&str, Value, &str)> = vec![
            ("plain http", json!({"cisco": {"url": "http://acme.tetrationcloud.com"}}), "spec.cisco.url"),
            (
                "URL with a path",
                json!({"cisco": {"url": "https://acme.tetrationcloud.com/openapi/v1"}}),
                "spec.cisco.url",
            ),
            ("CA not PEM", json!({"cisco": {"caBundle": "hello"}}), "spec.cisco.caBundle"),
            ("CA twice", json!({"cisco": {"caBundle": pem, "caSecretRef": {"name": "ca"}}}), "spec.cisco.caBundle"),
            (
                "roles on Cisco",
                json!({"policy": {"roles": [{"name": "Auditor"}]}}),
                "spec.policy.roles and spec.policy.maxExpiresAfter apply to Trend providers only",
            ),
            (
                "maxExpiresAfter on Cisco",
                json!({"policy": {"maxExpiresAfter": "720h"}}),
                "spec.policy.roles and spec.policy.maxExpiresAfter apply to Trend providers only",
            ),
            ("unknown capability", json!({"policy": {"capabilities": ["root_access"]}}), "spec.policy.capabilities"),
        ];
        for (base, cases) in [(&trend, trend_cases), (&cisco, cisco_cases)] {
            for (i, (what, patch, field)) in cases.into_iter().enumerate() {
                let msg = refusal(&api, &ar, &name(&format!("bad-{i}")), base.clone(), patch)
                    .await
                    .unwrap_or_else(|| panic!("{kind} {what}: accepted, expected a refusal naming {field}"));
                assert!(msg.contains(field), "{kind} {what}: message does not name {field}: {msg}");
            }
        }
    }
}

/// `spec.providerRef` cannot be changed on either resource: keys are bound to the provider that issued them.
#[tokio::test]
async fn provider_ref_is_immutable() {
    let ns = TestNamespace::new("adm-ref").await;
    support::operator::install_crds(&ns.client).await;
    for (kind, plural, spec) in [
        ("WorkloadApiKey", "workloadapikeys", valid_wak()),
        ("SecureWorkloadCredential", "secureworkloadcredentials", valid_swc()),
    ] {
        let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("workloadkeys.io", "v1alpha1", kind), plural);
        let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ar);
        let obj = DynamicObject::new("fixed", &ar).data(json!({ "spec": spec }));
        let created = api.create(&PostParams::default(), &obj).await.expect("create");
        let mut changed = created.clone();
        changed.data["spec"]["providerRef"] = json!({"kind": "KeyProvider", "name": "elsewhere"});
        match api.replace("fixed", &PostParams::default(), &changed).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422, "{kind}: {s:?}");
                assert!(s.message.contains("spec.providerRef is immutable"), "{kind}: {}", s.message);
            }
            other => panic!("{kind}: providerRef changed: {other:?}"),
        }
        // Other fields stay editable.
        let mut edited = api.get("fixed").await.unwrap();
        edited.data["spec"]["capabilities"] = json!(["sensor_management"]);
        if kind == "WorkloadApiKey" {
            edited.data["spec"].as_object_mut().unwrap().remove("capabilities");
            edited.data["spec"]["description"] = json!("edited");
        }
        api.replace("fixed", &PostParams::default(), &edited).await.expect("other fields stay editable");
    }
}
