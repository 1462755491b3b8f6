use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::clients::trend::Locale;

use super::{
    common::{DeletionPolicy, SecretRollout, SecretTemplate},
    provider::ProviderRef,
};

/// A Trend Micro Workload Security / Deep Security API key, created through the vendor API and kept in a Secret.
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
    status = "WorkloadApiKeyStatus",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = "1"
    ),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(name = "Key ID", type_ = "integer", json_path = ".status.keyId"),
    // A future date renders as `<invalid>` with type date; show the timestamp itself.
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(name = "Last Rotated", type_ = "date", json_path = ".status.lastRotatedAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new(
    "!has(self.rotation) || !has(self.rotation.renewBefore) || (has(self.expiresAfter) && duration(self.rotation.renewBefore) < duration(self.expiresAfter))"
).message("spec.rotation.renewBefore must be shorter than spec.expiresAfter (and needs expiresAfter)").field_path(".rotation.renewBefore"))]
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
    pub key_name: Option<String>,
    /// Free text shown in the vendor console; the operator appends a marker holding the resource UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 500))]
    pub description: Option<String>,
    /// The administrator role of the key: by name (looked up) or by numeric ID. Exactly one.
    pub role: RoleRef,
    /// Language of the key's API messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<Locale>,
    /// IANA time zone of the key, e.g. `Asia/Tokyo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$"))]
    pub time_zone: Option<String>,
    /// Lifetime of each key, e.g. `336h`; becomes the vendor `expiryDate`. No expiry when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('30s')").message("spec.expiresAfter must be at least 30s"))]
    pub expires_after: Option<String>,
    /// When and how keys are rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
    /// The Secret to write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretTemplate>,
    /// `Delete` revokes the key at the vendor when the resource is deleted; `Retain` leaves it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// A role by name (looked up, exact match) or by numeric ID.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.name) != has(self.id)").message("exactly one of spec.role.name and spec.role.id must be set"))]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    /// Role name, e.g. `Auditor` or `Full Access`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 254))]
    pub name: Option<String>,
    /// Role ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub id: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.gracePeriod) || !has(self.strategy) || self.strategy == 'Replace'").message("spec.rotation.gracePeriod applies only to strategy Replace"))]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// Rotate this long before expiry; defaults to one third of `expiresAfter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub renew_before: Option<String>,
    /// `Replace` (new key, old one revoked after `gracePeriod`) or `RegenerateSecret` (same key, new secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<RotationStrategy>,
    /// `Replace` only: how long the old key stays valid after the Secret holds the new one. Default `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub grace_period: Option<String>,
    /// How long a replaced key waits for the rollouts of `spec.secret.rolloutRestartTargets` once its grace period
    /// is over, counted from their restart; after it the key is revoked anyway (Event `RolloutIncomplete`).
    /// Default `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
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
    /// Vendor ID of the current key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<i64>,
    /// Vendor name of the current key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// Name of a key about to be created (intent recorded before the vendor call, for crash recovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_key_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_id: Option<i64>,
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
    /// Last value of the `workloadkeys.io/rotate` annotation acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_annotation: Option<String>,
    /// The restarts of `spec.secret.rolloutRestartTargets` for the current Secret data, and their rollouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<SecretRollout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_attempts: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetiringKey {
    pub key_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    pub revoke_at: Time,
}
