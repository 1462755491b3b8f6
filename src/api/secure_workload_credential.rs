use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::clients::cisco::Capability;

use super::common::{DeletionPolicy, SecretKeySelector, SecretReference, SecretTemplate};

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
    status = "SecureWorkloadCredentialStatus",
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
#[serde(rename_all = "camelCase")]
pub struct SecureWorkloadCredentialSpec {
    /// How to reach the Secure Workload cluster or SaaS tenant.
    pub connection: SecureWorkloadConnection,
    /// Where the key pair comes from: an existing Secret, or minted (experimental). Exactly one.
    pub source: CredentialSource,
    /// Capabilities the key must have; each is proven with a read-only request where a probe exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub capabilities: Vec<Capability>,
    /// How often the key is re-verified; revocation is noticed within this interval. Default `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("spec.verifyInterval must be at least 1s"))]
    pub verify_interval: Option<String>,
    /// Provision mode only: mint a new key pair every `every`, keeping the old one for `gracePeriod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<SecureWorkloadRotation>,
    /// The Secret to write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretTemplate>,
    /// Provision mode only: `Delete` (default) removes the minted key at the vendor on deletion; `Retain` keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("!(has(self.caBundle) && has(self.caSecretRef))").message("spec.connection.caBundle and spec.connection.caSecretRef are mutually exclusive"))]
#[x_kube(validation = Rule::new("self.url.startsWith('https://') || (self.url.startsWith('http://') && has(self.allowInsecureHttp) && self.allowInsecureHttp)").message("spec.connection.url must start with https:// (http:// only with allowInsecureHttp: true)").field_path(".url"))]
#[x_kube(validation = Rule::new("!(has(self.insecureSkipTlsVerify) && self.insecureSkipTlsVerify && (has(self.caBundle) || has(self.caSecretRef)))").message("spec.connection.insecureSkipTlsVerify cannot be combined with a CA"))]
#[x_kube(validation = Rule::new(r"self.url.matches('^https?://[^/\\s]+/?$')").message("spec.connection.url must be the host root without a path, e.g. https://acme.tetrationcloud.com (clients add /openapi/v1)").field_path(".url"))]
#[serde(rename_all = "camelCase")]
pub struct SecureWorkloadConnection {
    /// Host root of the cluster or tenant, e.g. `https://acme.tetrationcloud.com` (clients add `/openapi/v1`).
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// PEM CA bundle to trust instead of the system roots (published as `ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.contains('-----BEGIN CERTIFICATE-----')").message("spec.connection.caBundle must hold PEM certificates"))]
    pub ca_bundle: Option<String>,
    /// A Secret key holding the PEM CA bundle (key defaults to `ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeySelector>,
    /// Skip TLS verification. Discouraged: a Warning event is emitted while set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,
    /// Allow a plain `http://` URL (test setups only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_insecure_http: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.existing) != has(self.provision)").message("exactly one of spec.source.existing and spec.source.provision must be set"))]
#[serde(rename_all = "camelCase")]
pub struct CredentialSource {
    /// Import a key pair made in the UI: a Secret with `api_key` + `api_secret`, or `credentials.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing: Option<ExistingSource>,
    /// EXPERIMENTAL: mint key pairs through the UI's private session API (local-auth users only, no MFA/SSO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision: Option<ProvisionSource>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExistingSource {
    pub secret_ref: SecretReference,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionSource {
    /// A Secret with keys `email` and `password` of a local-authentication user.
    pub login_secret_ref: SecretReference,
    /// Description of the minted key; the operator appends a marker holding the resource UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub description: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecureWorkloadRotation {
    /// Mint a new key pair this often, e.g. `720h`.
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s')").message("spec.rotation.every must be at least 10s"))]
    pub every: String,
    /// How long the old key pair stays valid after the Secret holds the new one. Default `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub grace_period: Option<String>,
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
    /// Provision mode: when the current credential was minted; the next rotation is `rotation.every` later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_created_at: Option<Time>,
    /// Provision mode: the capabilities the current credential was minted with (a change mints a new one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_capabilities: Vec<Capability>,
    /// Provision mode: a credential is about to be minted (intent recorded first, for crash recovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_credential: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated_at: Option<Time>,
    /// Provision mode: replaced credentials kept valid until `revokeAt`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring_credentials: Vec<RetiringCredential>,
    /// Keyed hash of the Secret data last written; detects edits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    /// Last value of the `workloadkeys.io/rotate` annotation acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_annotation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_attempts: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetiringCredential {
    pub credential_id: String,
    pub revoke_at: Time,
}
