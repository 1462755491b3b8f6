use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::clients::cisco::Capability;

use super::{
    common::DURATION_PATTERN,
    common::{DeletionPolicy, SecretReference, SecretRollout, SecretTemplate},
    provider::ProviderRef,
};

// The status and the larger optional parts of the spec (`rotation`, `secret`) are boxed: the operator's
// watch cache holds one SecureWorkloadCredential per resource, without its status (`controller::slim`), and an
// absent box costs 8 bytes where the inline structs cost hundreds (1,136 -> 520 bytes a resource). The
// schema is the same.
/// A Cisco Secure Workload API key pair: imported (or, experimentally, minted), verified, published in a Secret.
// The derive repeats `type_` across printer columns, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "workloadkeys.io",
    version = "v1alpha1",
    kind = "SecureWorkloadCredential",
    namespaced,
    shortname = "swc",
    category = "workloadkeys",
    status = "Box<SecureWorkloadCredentialStatus>",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = "1"
    ),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(name = "Fingerprint", type_ = "string", json_path = ".status.apiKeyFingerprint"),
    printcolumn(name = "Verified", type_ = "date", json_path = ".status.lastVerifiedAt"),
    printcolumn(name = "Last Rotated", type_ = "date", json_path = ".status.lastRotatedAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("!has(self.rotation) || has(self.source.provision)").message("spec.rotation is only allowed with spec.source.provision (an imported key cannot be rotated by the operator)").field_path(".rotation"))]
#[x_kube(validation = Rule::new("!has(self.deletionPolicy) || has(self.source.provision)").message("spec.deletionPolicy is only allowed with spec.source.provision (an imported key is never deleted at the vendor)").field_path(".deletionPolicy"))]
#[x_kube(validation = Rule::new(
    "!has(self.secret) || !has(self.secret.template) || !has(self.secret.template.mergePolicy) || self.secret.template.mergePolicy != 'Merge' || !self.secret.template.data.exists(k, k in ['credentials.json', 'api_key', 'api_secret', 'endpoint', 'ca.crt'])"
).message("spec.secret.template.data must not name a default key (credentials.json, api_key, api_secret, endpoint, ca.crt) with mergePolicy Merge, which keeps them").field_path(".secret.template.data"))]
#[x_kube(validation = Rule::new(
    "!has(self.source.provision) || !has(self.secret) || !has(self.secret.template) || (has(self.secret.template.mergePolicy) && self.secret.template.mergePolicy == 'Merge')"
).message("provision mode reads the minted pair back from the Secret it writes: spec.secret.template.mergePolicy must be Merge").field_path(".secret.template.mergePolicy"))]
#[serde(rename_all = "camelCase")]
pub struct SecureWorkloadCredentialSpec {
    /// The provider that holds the cluster's URL and CA (and, for provision mode, the sign-in): a `KeyProvider`
    /// in this namespace or a `ClusterKeyProvider` that allows it. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.providerRef is immutable: create a new resource to use another provider"))]
    pub provider_ref: ProviderRef,
    /// Where the key pair comes from: an existing Secret, or minted (experimental). Exactly one.
    pub source: CredentialSource,
    /// Capabilities the key must have; each is proven with a read-only request where a probe exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub capabilities: Vec<Capability>,
    /// How often the key is re-verified; revocation is noticed within this interval. Default `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("spec.verifyInterval must be at least 1s"))]
    pub verify_interval: Option<String>,
    /// Provision mode only: mint a new key pair every `every`, keeping the old one for `gracePeriod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Box<SecureWorkloadRotation>>,
    /// The Secret to write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Box<SecretTemplate>>,
    /// Provision mode only: `Delete` (default) removes the minted key at the vendor on deletion; `Retain` keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.existing) != has(self.provision)").message("exactly one of spec.source.existing and spec.source.provision must be set"))]
#[serde(rename_all = "camelCase")]
pub struct CredentialSource {
    /// Import a key pair made in the UI: a Secret with `api_key` + `api_secret`, or `credentials.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing: Option<ExistingSource>,
    /// EXPERIMENTAL: mint key pairs through the UI's private session API (local-auth users only, no MFA/SSO), signed
    /// in with the provider's `cisco.loginSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision: Option<ProvisionSource>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExistingSource {
    pub secret_ref: SecretReference,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionSource {
    /// Description of the minted key; the operator appends a marker that says which resource owns the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    #[x_kube(validation = Rule::new("!self.contains('workloadkeys.io/')").message("spec.source.provision.description must not contain 'workloadkeys.io/': that text marks which resource owns a vendor key and only the operator writes it"))]
    pub description: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecureWorkloadRotation {
    /// Mint a new key pair this often, e.g. `720h`.
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s')").message("spec.rotation.every must be at least 10s"))]
    pub every: String,
    /// How long the old key pair stays valid after the Secret holds the new one. Default `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    pub grace_period: Option<String>,
    /// How long a replaced key pair waits for the rollouts of `spec.secret.rolloutRestartTargets` once its grace
    /// period is over, counted from their restart; after it the pair is deleted anyway (Event `RolloutIncomplete`).
    /// Default `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("spec.rotation.rolloutTimeout must be at least 1s"))]
    pub rollout_timeout: Option<String>,
}

/// Observed state. Never holds secret material: the key is shown only as a fingerprint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecureWorkloadCredentialStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and `Verified`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `sha256:` + the first 16 hex digits of SHA-256 over the API key (never the key itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verified_capabilities: Vec<Capability>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_capabilities: Vec<Capability>,
    /// Listed capabilities that no read-only request can prove; never reported as verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unverified_capabilities: Vec<Capability>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_at: Option<Time>,
    /// Provision mode: vendor ID of the current credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    /// Provision mode: the endpoint that minted the current and retiring credentials; their IDs go nowhere else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Provision mode: when the current credential was minted; the next rotation is `rotation.every` later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_created_at: Option<Time>,
    /// Provision mode: the capabilities the current credential was minted with (a change mints a new one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_capabilities: Vec<Capability>,
    /// Provision mode: a credential is about to be minted (intent recorded first, for crash recovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_credential: Option<bool>,
    /// Random value made with the first create intent and kept: the vendor description of each key this resource
    /// creates ends with a marker holding the resource UID and it, and only a key ending with exactly that marker is
    /// adopted after a crash or revoked on delete. Not a secret; text an app team writes can never hold a marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated_at: Option<Time>,
    /// Provision mode: replaced credentials kept valid until `revokeAt`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring_credentials: Vec<RetiringCredential>,
    /// Keyed hash of the Secret data last written; detects edits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    /// `resourceVersion` of the target Secret when its data last matched `secretHash` (written or read back): while
    /// the Secret keeps this version, the operator knows it unchanged without reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_resource_version: Option<String>,
    /// Digest of the `spec.secret.template` the Secret was last rendered with (absent without one): a changed template
    /// re-renders the Secret (provision mode: with a newly minted pair, as a rotation would).
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
pub struct RetiringCredential {
    pub credential_id: String,
    pub revoke_at: Time,
}
