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
        "connection": {"url": "https://dsm.example.com:4119/api", "apiKeySecretRef": {"name": "tm-admin"}},
        "role": {"name": "Auditor"},
        "expiresAfter": "336h",
        "rotation": {"renewBefore": "112h", "strategy": "Replace", "gracePeriod": "10m"}
    })
}

fn valid_swc() -> Value {
    json!({
        "connection": {"url": "https://acme.tetrationcloud.com"},
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

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "both credentials",
            json!({"connection": {"loginSecretRef": {"name": "login"}}}),
            "spec.connection.apiKeySecretRef",
        ),
        ("no credential", json!({"connection": {"apiKeySecretRef": null}}), "spec.connection.apiKeySecretRef"),
        ("role name and id", json!({"role": {"id": 2}}), "spec.role"),
        ("no role", json!({"role": {"name": null}}), "spec.role"),
        ("renewBefore >= expiresAfter", json!({"rotation": {"renewBefore": "400h"}}), "spec.rotation.renewBefore"),
        ("renewBefore without expiresAfter", json!({"expiresAfter": null}), "spec.rotation.renewBefore"),
        ("plain http", json!({"connection": {"url": "http://dsm.example.com/api"}}), "spec.connection.url"),
        ("not a URL", json!({"connection": {"url": "dsm.example.com"}}), "spec.connection.url"),
        ("bad duration", json!({"expiresAfter": "two weeks"}), "spec.expiresAfter"),
        ("too short expiry", json!({"expiresAfter": "5s", "rotation": null}), "spec.expiresAfter"),
        ("unknown locale", json!({"locale": "fr-FR"}), "spec.locale"),
        ("unknown strategy", json!({"rotation": {"strategy": "Recreate"}}), "spec.rotation.strategy"),
        ("grace with RegenerateSecret", json!({"rotation": {"strategy": "RegenerateSecret"}}), "spec.rotation"),
        (
            "CA twice",
            json!({"connection": {"caBundle": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----", "caSecretRef": {"name": "ca"}}}),
            "spec.connection.caBundle",
        ),
        ("CA not PEM", json!({"connection": {"caBundle": "hello"}}), "spec.connection.caBundle"),
        (
            "insecure with CA",
            json!({"connection": {"insecureSkipTlsVerify": true, "caSecretRef": {"name": "ca"}}}),
            "spec.connection.insecureSkipTlsVerify",
        ),
        ("bad secret name", json!({"secret": {"name": "Not_A_Name"}}), "spec.secret.name"),
        ("bad deletion policy", json!({"deletionPolicy": "Orphan"}), "spec.deletionPolicy"),
        ("negative role id", json!({"role": {"name": null, "id": 0}}), "spec.role.id"),
        ("blank key name", json!({"keyName": " padded "}), "spec.keyName"),
        ("bad time zone", json!({"timeZone": "not a zone!"}), "spec.timeZone"),
    ];
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
    let provision = json!({"source": {"existing": null, "provision": {"loginSecretRef": {"name": "sw-login"}}},
                           "rotation": {"every": "720h"}, "deletionPolicy": "Delete"});
    assert_eq!(refusal(&api, &ar, "ok2", valid_swc(), provision).await, None, "a valid provision spec is accepted");

    let cases: Vec<(&str, Value, &str)> = vec![
        ("both sources", json!({"source": {"provision": {"loginSecretRef": {"name": "l"}}}}), "spec.source"),
        ("no source", json!({"source": {"existing": null}}), "spec.source"),
        ("rotation with existing", json!({"rotation": {"every": "720h"}}), "spec.rotation"),
        ("deletionPolicy with existing", json!({"deletionPolicy": "Delete"}), "spec.deletionPolicy"),
        ("unknown capability", json!({"capabilities": ["flow_inventory_query", "root_access"]}), "spec.capabilities"),
        (
            "duplicate capability",
            json!({"capabilities": ["sensor_management", "sensor_management"]}),
            "spec.capabilities",
        ),
        ("plain http", json!({"connection": {"url": "http://acme.tetrationcloud.com"}}), "spec.connection.url"),
        (
            "URL with a path",
            json!({"connection": {"url": "https://acme.tetrationcloud.com/openapi/v1"}}),
            "spec.connection.url",
        ),
        ("bad verifyInterval", json!({"verifyInterval": "hourly"}), "spec.verifyInterval"),
        ("zero verifyInterval", json!({"verifyInterval": "0s"}), "spec.verifyInterval"),
        ("CA not PEM", json!({"connection": {"caBundle": "hello"}}), "spec.connection.caBundle"),
        (
            "missing secretRef name",
            json!({"source": {"existing": {"secretRef": {"name": null}}}}),
            "spec.source.existing.secretRef.name",
        ),
    ];
    assert!(cases.len() >= 8);
    for (i, (what, patch, field)) in cases.into_iter().enumerate() {
        let msg = refusal(&api, &ar, &format!("bad-{i}"), valid_swc(), patch)
            .await
            .unwrap_or_else(|| panic!("{what}: accepted, expected a refusal naming {field}"));
        assert!(msg.contains(field), "{what}: message does not name {field}: {msg}");
    }
}
