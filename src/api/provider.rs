//! Providers: where the vendor URL, CA and admin credential live, owned by the platform team. A `ClusterKeyProvider`
//! (cluster-scoped; its Secrets in the operator's cluster-resource namespace) serves the namespaces it allows; a
//! `KeyProvider` (namespaced; its Secrets in its own namespace) serves its namespace. Both may carry a policy on
//! what may be issued. Resources name one with `spec.providerRef`; app teams never hold the admin credential and
//! never choose where it is sent.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    common::DURATION_PATTERN,
    common::{DeletionPolicy, RoleRef, SecretKeySelector, SecretReference},
};
use crate::clients::{cisco::Capability, trend::TrendApiKind};

/// Finalizer on a provider while resources use it (their cleanup revokes keys through it).
pub const PROVIDER_FINALIZER: &str = "workloadkeys.io/in-use";
/// Finalizer on a Secret while a provider names it: a namespace deleted at once keeps the admin credential until
/// the provider, and so every resource that needs it to revoke its key, is gone.
pub const SECRET_FINALIZER: &str = "workloadkeys.io/provider-credential";

/// A cluster-wide provider of vendor credentials, owned by the platform team.
// The derive repeats `type_` across printer columns, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "workloadkeys.io",
    version = "v1alpha1",
    kind = "ClusterKeyProvider",
    shortname = "ckp",
    category = "workloadkeys",
    status = "KeyProviderStatus",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = "1"
    ),
    printcolumn(name = "Vendor", type_ = "string", json_path = ".status.vendor"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "In Use", type_ = "integer", json_path = ".status.inUse"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("has(self.trend) != has(self.cisco)").message("exactly one of spec.trend and spec.cisco must be set"))]
#[x_kube(validation = Rule::new("!has(self.policy) || has(self.trend) || (!has(self.policy.roles) && !has(self.policy.maxExpiresAfter))").message("spec.policy.roles and spec.policy.maxExpiresAfter apply to Trend providers only").field_path(".policy"))]
#[x_kube(validation = Rule::new("!has(self.policy) || has(self.cisco) || !has(self.policy.capabilities)").message("spec.policy.capabilities applies to Cisco providers only").field_path(".policy"))]
#[x_kube(validation = Rule::new("!has(self.policy) || has(self.cisco) || !has(self.policy.minVerifyInterval)").message("spec.policy.minVerifyInterval applies to Cisco providers only").field_path(".policy"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterKeyProviderSpec {
    /// A Trend Micro Workload Security / Deep Security Manager API. Exactly one of `trend` and `cisco`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trend: Option<TrendEndpoint>,
    /// A Cisco Secure Workload cluster or SaaS tenant. Exactly one of `trend` and `cisco`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cisco: Option<CiscoEndpoint>,
    /// The namespaces whose resources may use this provider: those named, and those the selector matches.
    /// Absent: no namespace may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,
    /// What may be issued through this provider. Absent: anything the admin credential can issue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<IssuePolicy>,
}

/// A provider of vendor credentials for the resources of its own namespace.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "workloadkeys.io",
    version = "v1alpha1",
    kind = "KeyProvider",
    namespaced,
    shortname = "kp",
    category = "workloadkeys",
    status = "KeyProviderStatus",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = "1"
    ),
    printcolumn(name = "Vendor", type_ = "string", json_path = ".status.vendor"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "In Use", type_ = "integer", json_path = ".status.inUse"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("has(self.trend) != has(self.cisco)").message("exactly one of spec.trend and spec.cisco must be set"))]
#[x_kube(validation = Rule::new("!has(self.policy) || has(self.trend) || (!has(self.policy.roles) && !has(self.policy.maxExpiresAfter))").message("spec.policy.roles and spec.policy.maxExpiresAfter apply to Trend providers only").field_path(".policy"))]
#[x_kube(validation = Rule::new("!has(self.policy) || has(self.cisco) || !has(self.policy.capabilities)").message("spec.policy.capabilities applies to Cisco providers only").field_path(".policy"))]
#[x_kube(validation = Rule::new("!has(self.policy) || has(self.cisco) || !has(self.policy.minVerifyInterval)").message("spec.policy.minVerifyInterval applies to Cisco providers only").field_path(".policy"))]
#[serde(rename_all = "camelCase")]
pub struct KeyProviderSpec {
    /// A Trend Micro Workload Security / Deep Security Manager API. Exactly one of `trend` and `cisco`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trend: Option<TrendEndpoint>,
    /// A Cisco Secure Workload cluster or SaaS tenant. Exactly one of `trend` and `cisco`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cisco: Option<CiscoEndpoint>,
    /// What may be issued through this provider. Absent: anything the admin credential can issue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<IssuePolicy>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.apiKeySecretRef) != has(self.loginSecretRef)").message("exactly one of spec.trend.apiKeySecretRef and spec.trend.loginSecretRef must be set"))]
#[x_kube(validation = Rule::new("!has(self.loginSecretRef) || !has(self.api) || self.api == 'DeepSecurity'").message("spec.trend.loginSecretRef applies to api DeepSecurity only: CloudOne and VisionOne take the admin API key in spec.trend.apiKeySecretRef"))]
#[x_kube(validation = Rule::new("!(has(self.caBundle) && has(self.caSecretRef))").message("spec.trend.caBundle and spec.trend.caSecretRef are mutually exclusive"))]
#[x_kube(validation = Rule::new("self.url.startsWith('https://') || (self.url.startsWith('http://') && has(self.allowInsecureHttp) && self.allowInsecureHttp)").message("spec.trend.url must start with https:// (http:// only with allowInsecureHttp: true)").field_path(".url"))]
#[x_kube(validation = Rule::new("!(has(self.insecureSkipTlsVerify) && self.insecureSkipTlsVerify && (has(self.caBundle) || has(self.caSecretRef)))").message("spec.trend.insecureSkipTlsVerify cannot be combined with a CA"))]
#[serde(rename_all = "camelCase")]
pub struct TrendEndpoint {
    /// Which Trend API `url` serves: `DeepSecurity` (the default; Deep Security Manager / legacy Workload Security
    /// `/api` keys), `CloudOne` (the Cloud One accounts API) or `VisionOne` (Vision One `/v3.0/iam/apiKeys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<TrendApiKind>,
    /// DeepSecurity: the base URL including `/api`, e.g. `https://dsm.example.com:4119/api` or
    /// `https://workload.us-1.cloudone.trendmicro.com/api`. CloudOne: `https://accounts.cloudone.trendmicro.com/api`.
    /// VisionOne: the region's host root, e.g. `https://api.xdr.trendmicro.com` (the operator adds `/v3.0`).
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://[^\s/]+(/\S*)?$"))]
    pub url: String,
    /// PEM CA bundle to trust instead of the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.contains('-----BEGIN CERTIFICATE-----')").message("spec.trend.caBundle must hold PEM certificates"))]
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
    /// An API key with rights to manage API keys (key defaults to `api-secret-key`), for every API: DeepSecurity's
    /// `api-secret-key` value, Cloud One's `<id>:<secret>`, Vision One's bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeySelector>,
    /// DeepSecurity only. Username/password bootstrap: a Secret with `userName`, `password`, optional `tenantName`,
    /// `mfaCode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_secret_ref: Option<SecretReference>,
}

impl TrendEndpoint {
    /// The API it speaks (`DeepSecurity` when unset).
    pub fn api(&self) -> TrendApiKind {
        self.api.unwrap_or_default()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("!(has(self.caBundle) && has(self.caSecretRef))").message("spec.cisco.caBundle and spec.cisco.caSecretRef are mutually exclusive"))]
#[x_kube(validation = Rule::new("self.url.startsWith('https://') || (self.url.startsWith('http://') && has(self.allowInsecureHttp) && self.allowInsecureHttp)").message("spec.cisco.url must start with https:// (http:// only with allowInsecureHttp: true)").field_path(".url"))]
#[x_kube(validation = Rule::new("!(has(self.insecureSkipTlsVerify) && self.insecureSkipTlsVerify && (has(self.caBundle) || has(self.caSecretRef)))").message("spec.cisco.insecureSkipTlsVerify cannot be combined with a CA"))]
#[x_kube(validation = Rule::new(r"self.url.matches('^https?://[^/\\s]+/?$')").message("spec.cisco.url must be the host root without a path, e.g. https://acme.tetrationcloud.com (clients add /openapi/v1)").field_path(".url"))]
#[serde(rename_all = "camelCase")]
pub struct CiscoEndpoint {
    /// Host root of the cluster or tenant, e.g. `https://acme.tetrationcloud.com` (clients add `/openapi/v1`).
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// PEM CA bundle to trust instead of the system roots (published as `ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.contains('-----BEGIN CERTIFICATE-----')").message("spec.cisco.caBundle must hold PEM certificates"))]
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
    /// EXPERIMENTAL provision mode: a Secret with `email` and `password` of a local-authentication user, with
    /// which the operator signs in to the UI session API to mint key pairs. Without it, only `existing` works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_secret_ref: Option<SecretReference>,
}

/// Namespaces allowed to use a `ClusterKeyProvider`: a namespace named here or matched by the selector may.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub names: Vec<String>,
    /// Namespaces whose labels match. A label added or removed later takes effect promptly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// What a provider may issue.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuePolicy {
    /// Trend: the roles keys may get, named as resources name them (a role asked for by name matches an entry
    /// by name, one asked for by ID an entry by ID). Absent: any role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub roles: Option<Vec<RoleRef>>,
    /// Trend: the longest key lifetime, e.g. `720h`. A resource without `expiresAfter` gets this one; one that
    /// asks for more is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('30s')").message("spec.policy.maxExpiresAfter must be at least 30s"))]
    pub max_expires_after: Option<String>,
    /// Cisco: the capabilities a resource may require or mint. Absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub capabilities: Option<Vec<Capability>>,
    /// The longest `rotation.gracePeriod` a resource may ask for (a replaced key's overlap), e.g. `1h`. Its default
    /// (`10m`) counts too: over this, a resource must set a shorter one. Absent: no bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    pub max_grace_period: Option<String>,
    /// The longest `rotation.rolloutTimeout` (how long a replaced key may wait for rollouts after its grace period),
    /// e.g. `1h`. Its default (`30m`) counts too. Absent: no bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    pub max_rollout_timeout: Option<String>,
    /// The `deletionPolicy` values resources may use, e.g. `[Delete]` so that every key is revoked with its
    /// resource. A resource asking for another is refused; one deleted with a `Retain` this list no longer allows
    /// has its keys revoked all the same. Absent: both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub deletion_policies: Option<Vec<DeletionPolicy>>,
    /// What happens to the keys of a resource that loses access to this provider (its namespace no longer allowed,
    /// or its spec no longer within this policy): `Keep` (default) leaves them working until the resource is fixed
    /// or deleted; `Revoke` revokes every one of them at the vendor and deletes the Secret holding it at once, the
    /// resource staying, not Ready. Access regained, a new key is made as on a first create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_access_lost: Option<AccessLost>,
    /// Cisco: the shortest `verifyInterval` a SecureWorkloadCredential may have, e.g. `15m`; absent: `5m`. A
    /// shorter one is refused; one that sets none gets the longer of `1h` and this. Each verification costs vendor
    /// requests (one per capability) from the budget every namespace shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("spec.policy.minVerifyInterval must be at least 1s"))]
    pub min_verify_interval: Option<String>,
}

/// What losing access to a provider does to a resource's keys.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AccessLost {
    /// The keys keep working; the resource is not Ready until access is regained.
    #[default]
    Keep,
    /// Every key of the resource is revoked at the vendor and its Secret deleted.
    Revoke,
}

/// Observed state of a provider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyProviderStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the admin credential was proven by a read-only vendor call (re-checked when the provider or its
    /// Secrets change, and at least hourly). `InUse` while it is being deleted and resources still use it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `Trend` or `Cisco`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How many resources reference this provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_use: Option<i32>,
    /// The resources that reference it (`Kind namespace/name`, the first 50).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// When the admin credential was last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Digest of what that check depended on (the spec generation, the named Secrets' versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_version: Option<String>,
    /// Consecutive failed checks (drives the retry backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_checks: Option<i32>,
    /// The Secrets that carry this provider's finalizer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_secrets: Vec<String>,
}

/// Which provider a resource uses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderRef {
    /// `KeyProvider` (in the resource's namespace, the default) or `ClusterKeyProvider`.
    #[serde(default)]
    pub kind: ProviderKind,
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ProviderKind {
    #[default]
    KeyProvider,
    ClusterKeyProvider,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::KeyProvider => "KeyProvider",
            ProviderKind::ClusterKeyProvider => "ClusterKeyProvider",
        }
    }
}
