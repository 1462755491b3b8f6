use std::{borrow::Cow, fmt};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};

pub use crate::clients::trend::Locale;

use super::{
    common::DURATION_PATTERN,
    common::{DeletionPolicy, RoleRef, SecretRollout, SecretTemplate},
    provider::ProviderRef,
};

// The status and the larger optional parts of the spec (`rotation`, `secret`) are boxed: the operator's
// watch cache holds one WorkloadApiKey per resource, without its status (`controller::slim`), and an
// absent box costs 8 bytes where the inline structs cost hundreds (1,232 -> 560 bytes a resource). The
// schema is the same.
/// A Trend Micro API key (Workload Security / Deep Security `/api`, Cloud One accounts or Vision One, as the provider's
/// `spec.trend.api` says), created through the vendor API and kept in a Secret.
// The derive repeats `type_` across printer columns, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "workloadkeys.io",
    version = "v1alpha1",
    kind = "WorkloadApiKey",
    namespaced,
    shortname = "wak",
    category = "workloadkeys",
    status = "Box<WorkloadApiKeyStatus>",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = "1"
    ),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(name = "Key ID", type_ = "string", json_path = ".status.keyId"),
    // A future date renders as `<invalid>` with type date; show the timestamp itself.
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(name = "Last Rotated", type_ = "date", json_path = ".status.lastRotatedAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new(
    "!has(self.rotation) || !has(self.rotation.renewBefore) || (has(self.expiresAfter) && duration(self.rotation.renewBefore) < duration(self.expiresAfter))"
).message("spec.rotation.renewBefore must be shorter than spec.expiresAfter (and needs expiresAfter)").field_path(".rotation.renewBefore"))]
#[x_kube(validation = Rule::new(
    "!has(self.secret) || !has(self.secret.template) || !has(self.secret.template.mergePolicy) || self.secret.template.mergePolicy != 'Merge' || !self.secret.template.data.exists(k, k in ['api-secret-key', 'api-key', 'api-key-id', 'endpoint'])"
).message("spec.secret.template.data must not name a default key (api-secret-key, api-key, api-key-id, endpoint) with mergePolicy Merge, which keeps them").field_path(".secret.template.data"))]
#[serde(rename_all = "camelCase")]
pub struct WorkloadApiKeySpec {
    /// The provider that holds the vendor URL and the admin credential: a `KeyProvider` in this namespace or a
    /// `ClusterKeyProvider` that allows it. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.providerRef is immutable: create a new resource to use another provider"))]
    pub provider_ref: ProviderRef,
    /// Name of the key at the vendor; unique per vendor tenant. Defaults to `<namespace>-<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    #[x_kube(validation = Rule::new("self.trim() == self && self != ''").message("spec.keyName must not be empty or start/end with spaces"))]
    #[x_kube(validation = Rule::new("!self.contains('workloadkeys.io/')").message("spec.keyName must not contain 'workloadkeys.io/': that text marks which resource owns a vendor key and only the operator writes it"))]
    pub key_name: Option<String>,
    /// Free text shown in the vendor console; the operator appends a marker that says which resource owns the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 500))]
    #[x_kube(validation = Rule::new("!self.contains('workloadkeys.io/')").message("spec.description must not contain 'workloadkeys.io/': that text marks which resource owns a vendor key and only the operator writes it"))]
    pub description: Option<String>,
    /// The role of the key: by name (looked up) or by numeric ID (DeepSecurity only). Exactly one.
    pub role: RoleRef,
    /// Language of the key's API messages. DeepSecurity; CloudOne (sent as `en` / `ja`); not VisionOne.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<Locale>,
    /// IANA time zone of the key, e.g. `Asia/Tokyo`. DeepSecurity and CloudOne; not VisionOne.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$"))]
    pub time_zone: Option<String>,
    /// Lifetime of each key, e.g. `336h`. No expiry when absent. DeepSecurity: the vendor `expiryDate`. VisionOne:
    /// keys live 1, 3, 6 or 12 calendar months; the key gets the longest of these whose longest possible length
    /// (31, 92, 184, 366 days) is at most `expiresAfter`, so never more than asked; under 744h is refused. CloudOne:
    /// refused (its keys have no expiry; use `rotation.every`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('30s')").message("spec.expiresAfter must be at least 30s"))]
    pub expires_after: Option<String>,
    /// When and how keys are rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Box<Rotation>>,
    /// The Secret to write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Box<SecretTemplate>>,
    /// `Delete` revokes the key at the vendor when the resource is deleted; `Retain` leaves it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.gracePeriod) || !has(self.strategy) || self.strategy == 'Replace'").message("spec.rotation.gracePeriod applies only to strategy Replace"))]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// Rotate this long before expiry; defaults to one third of the key's lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    pub renew_before: Option<String>,
    /// Rotate each key this long after it was created (and before expiry as `renewBefore` says, whichever comes
    /// first), e.g. `720h`. For CloudOne, whose keys do not expire, the way to rotate; there the provider's
    /// `policy.maxExpiresAfter` caps it (and is its default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m')").message("spec.rotation.every must be at least 1m"))]
    pub every: Option<String>,
    /// `Replace` (new key, old one revoked after `gracePeriod`) or `RegenerateSecret` (same key, new secret;
    /// DeepSecurity only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<RotationStrategy>,
    /// `Replace` only: how long the old key stays valid after the Secret holds the new one. Default `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    pub grace_period: Option<String>,
    /// How long a replaced key waits for the rollouts of `spec.secret.rolloutRestartTargets` once its grace period
    /// is over, counted from their restart; after it the key is revoked anyway (Event `RolloutIncomplete`).
    /// Default `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("spec.rotation.rolloutTimeout must be at least 1s"))]
    pub rollout_timeout: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RotationStrategy {
    #[default]
    Replace,
    RegenerateSecret,
}

/// Observed state. Never holds secret material.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadApiKeyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Vendor ID of the current key (a number for DeepSecurity, a string for CloudOne and VisionOne).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<VendorKeyId>,
    /// Vendor name of the current key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// Name of a key about to be created (intent recorded before the vendor call, for crash recovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_key_name: Option<String>,
    /// Random value made with the first create intent and kept: the vendor description of each key this resource
    /// creates ends with a marker holding the resource UID and it, and only a key ending with exactly that marker is
    /// adopted after a crash or revoked on delete. Not a secret; text an app team writes can never hold a marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_nonce: Option<String>,
    /// DeepSecurity: the numeric ID of the current key's role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_id: Option<i64>,
    /// CloudOne and VisionOne: the role the current key was created with (Vision One role name, Cloud One role ID
    /// slug).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// CloudOne and VisionOne: digest of what the current key was created with (role, key name, description,
    /// lifetime); a spec that no longer matches it replaces the key, as these APIs cannot modify one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_attributes: Option<String>,
    /// The vendor endpoint that issued the current and retiring keys. Their IDs are never sent anywhere else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated_at: Option<Time>,
    /// Replaced keys still valid during the overlap window of `Replace`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring_keys: Vec<RetiringKey>,
    /// How many keys this resource has had; the suffix of the next rotated key name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_generation: Option<i64>,
    /// Keyed hash (HMAC-SHA256 under an operator key) of the Secret data last written; detects edits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    /// `resourceVersion` of the target Secret when its data last matched `secretHash` (written or read back): while
    /// the Secret keeps this version, the operator knows it unchanged without reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_resource_version: Option<String>,
    /// Digest of the `spec.secret.template` the Secret was last rendered with (absent without one): a changed template
    /// re-renders the Secret, with a new secret as a rotation would (the old one is never kept outside the Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template_digest: Option<String>,
    /// Last value of the `workloadkeys.io/rotate` annotation acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_annotation: Option<String>,
    /// When `rotateAnnotation` was acted upon: a new value is acted upon a minute later at the earliest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_annotation_at: Option<Time>,
    /// The restarts of `spec.secret.rolloutRestartTargets` for the current Secret data, and their rollouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<SecretRollout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_attempts: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetiringKey {
    pub key_id: VendorKeyId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    pub revoke_at: Time,
}

/// A vendor's key ID: Deep Security numbers them, Cloud One and Vision One use strings. Written as a JSON string;
/// read from a string or an integer (what versions before the account APIs wrote).
#[derive(Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VendorKeyId(String);

impl VendorKeyId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The numeric ID a Deep Security key has; `None` for any other.
    pub fn as_number(&self) -> Option<i64> {
        self.0.parse().ok()
    }
}

impl From<i64> for VendorKeyId {
    fn from(id: i64) -> Self {
        Self(id.to_string())
    }
}

impl From<String> for VendorKeyId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl fmt::Display for VendorKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for VendorKeyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum IntOrString {
            Int(i64),
            String(String),
        }
        Ok(match IntOrString::deserialize(d)? {
            IntOrString::Int(n) => Self::from(n),
            IntOrString::String(s) => Self(s),
        })
    }
}

impl JsonSchema for VendorKeyId {
    fn schema_name() -> Cow<'static, str> {
        "VendorKeyId".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "x-kubernetes-int-or-string": true })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn key_ids_read_integers_and_strings_and_write_strings() {
        let old: VendorKeyId = serde_json::from_value(json!(42)).unwrap();
        assert_eq!(old, VendorKeyId::from(42));
        assert_eq!(old.as_number(), Some(42));
        assert_eq!(serde_json::to_value(&old).unwrap(), json!("42"));
        let new: VendorKeyId = serde_json::from_value(json!("1q7OVkm2HNIkTWNsFxxUcjIlQnP")).unwrap();
        assert_eq!(new.as_str(), "1q7OVkm2HNIkTWNsFxxUcjIlQnP");
        assert_eq!(new.as_number(), None);
        assert!(serde_json::from_value::<VendorKeyId>(json!(1.5)).is_err());
        assert!(serde_json::from_value::<VendorKeyId>(json!({"id": 1})).is_err());
    }

    #[test]
    fn statuses_written_by_older_versions_still_read() {
        let status: WorkloadApiKeyStatus = serde_json::from_value(json!({
            "keyId": 7,
            "retiringKeys": [{"keyId": 5, "revokeAt": "2030-01-01T00:00:00Z"}]
        }))
        .unwrap();
        assert_eq!(status.key_id, Some(VendorKeyId::from(7)));
        assert_eq!(status.retiring_keys[0].key_id, VendorKeyId::from(5));
        let written = serde_json::to_value(&status).unwrap();
        assert_eq!(written["keyId"], json!("7"));
        assert_eq!(written["retiringKeys"][0]["keyId"], json!("5"));
    }

    #[test]
    fn key_id_schema_is_int_or_string() {
        let schema = schemars::schema_for!(VendorKeyId);
        assert_eq!(schema.get("x-kubernetes-int-or-string"), Some(&json!(true)));
    }
}
