use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const API_GROUP: &str = "workloadkeys.io";
pub const FINALIZER: &str = "workloadkeys.io/revoke";
/// Setting this annotation to a new value rotates the credential once.
pub const ANNOTATION_ROTATE: &str = "workloadkeys.io/rotate";
/// Set by the operator with its finalizer on a new resource: the intent of its first vendor create, recorded before
/// the create so that a crash cannot leave its key behind (the status records it from then on).
pub const ANNOTATION_FIRST_INTENT: &str = "workloadkeys.io/first-intent";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "workload-key-operator";
/// On a Secret the operator reads but does not own (a provider's credential, an imported key pair): its changes
/// reach the operator through a watch selected by this label, not a watch of every Secret.
pub const LABEL_REFERENCED: &str = "workloadkeys.io/referenced";
/// The pod-template annotation the operator sets to restart a workload (as `kubectl rollout restart` does with its
/// own): the time of the restart, RFC 3339.
pub const ANNOTATION_RESTARTED_AT: &str = "workloadkeys.io/restartedAt";
/// The default of `rotation.rolloutTimeout`.
pub const DEFAULT_ROLLOUT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The form of every duration field: Go-style units, as [`parse_duration`] reads them (`90s`, `10m`, `1h30m`).
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";
/// The default of `rotation.gracePeriod` (both kinds).
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10 * 60);

/// A key of a Secret. A resource's or `KeyProvider`'s Secrets are in its own namespace; a `ClusterKeyProvider`'s are
/// in the operator's cluster-resource namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
    /// Key within the Secret. Defaults depend on the field (documented there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
}

/// A whole Secret (namespace: as for [`SecretKeySelector`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}

/// The Secret the operator writes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Name of the Secret; defaults to the resource's name. The operator never overwrites a Secret it does not own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: Option<String>,
    /// Extra labels on the Secret: at most 16, keys and values together at most 4096 characters. Not templated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    #[x_kube(validation = Rule::new("self.map(k, size(k) + size(self[k])).sum() <= 4096").message("spec.secret.labels must total at most 4096 characters (keys and values)"))]
    #[x_kube(validation = Rule::new(NOT_TEMPLATED).message("spec.secret.labels are not templated: labels are not secret and can never hold a credential; template the Secret's data with spec.secret.template.data"))]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the Secret: at most 16, keys and values together at most 8192 characters. Not templated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16, "additionalProperties" = {"type": "string", "maxLength": 8192}))]
    #[x_kube(validation = Rule::new("self.map(k, size(k) + size(self[k])).sum() <= 8192").message("spec.secret.annotations must total at most 8192 characters (keys and values)"))]
    #[x_kube(validation = Rule::new(NOT_TEMPLATED).message("spec.secret.annotations are not templated: annotations are not secret and can never hold a credential; template the Secret's data with spec.secret.template.data"))]
    pub annotations: BTreeMap<String, String>,
    /// The Secret's data in the shape the application expects: keys rendered from Jinja templates, and the Secret's
    /// type. Without it the Secret holds the kind's default keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<DataTemplate>,
    /// Workloads of this namespace that use the Secret: each is restarted (as `kubectl rollout restart` does) once
    /// whenever the Secret's data changes after its first write, and a replaced key is revoked only after their
    /// rollouts complete (or `rotation.rolloutTimeout` passes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(t, self.exists_one(u, u.kind == t.kind && u.name == t.name))").message("spec.secret.rolloutRestartTargets must not name a workload twice"))]
    pub rollout_restart_targets: Vec<RolloutTarget>,
}

/// A map value that looks like a template (`{{`, `{%`): refused where nothing is templated, so that a credential is
/// never asked for in the Secret's metadata.
const NOT_TEMPLATED: &str = "self.all(k, !self[k].contains('{{') && !self[k].contains('{%'))";

/// The Secret's data rendered from templates (Jinja syntax, rendered by the operator; no file is ever read).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "!has(self.type) || ((self.type != 'kubernetes.io/tls' || ('tls.crt' in self.data && 'tls.key' in self.data)) && (self.type != 'kubernetes.io/basic-auth' || 'username' in self.data || 'password' in self.data) && (self.type != 'kubernetes.io/ssh-auth' || 'ssh-privatekey' in self.data) && (self.type != 'kubernetes.io/dockerconfigjson' || '.dockerconfigjson' in self.data) && (self.type != 'kubernetes.io/dockercfg' || '.dockercfg' in self.data))"
).message("spec.secret.template.data lacks a key its type needs: kubernetes.io/tls tls.crt and tls.key, kubernetes.io/basic-auth username or password, kubernetes.io/ssh-auth ssh-privatekey, kubernetes.io/dockerconfigjson .dockerconfigjson, kubernetes.io/dockercfg .dockercfg"))]
#[serde(rename_all = "camelCase")]
pub struct DataTemplate {
    /// Secret key -> template, e.g. `DS_API_KEY: "{{ secret }}"` or `config.json: '{"key": {{ secret|tojson }}}'`.
    /// At most 16 keys (each a valid Secret key), each template at most 16384 characters, together at most 65536;
    /// the rendered data at most 256 KiB. The variables are the kind's (see the user guide). A template that does
    /// not parse or uses an unknown variable is reported as `Ready=False` reason `TemplateError` before any vendor
    /// call, and nothing is written.
    #[schemars(extend("minProperties" = 1, "maxProperties" = 16, "additionalProperties" = {"type": "string", "maxLength": 16384}))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 253 && k.matches('^[-._a-zA-Z0-9]+$'))").message("spec.secret.template.data keys must be valid Secret keys: letters, digits, '-', '_' and '.', at most 253 characters"))]
    #[x_kube(validation = Rule::new("self.map(k, size(self[k])).sum() <= 65536").message("spec.secret.template.data must total at most 65536 characters of templates"))]
    pub data: BTreeMap<String, String>,
    /// `Replace` (default): the Secret holds only the templated keys. `Merge`: the kind's default keys as well (a
    /// templated key may not have a default key's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_policy: Option<MergePolicy>,
    /// The Secret's type, e.g. `Opaque` (default) or `kubernetes.io/basic-auth`; the API server checks the keys a
    /// type needs. A changed type replaces the Secret (Kubernetes cannot change a Secret's type in place).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._/a-zA-Z0-9]+$"))]
    #[x_kube(validation = Rule::new("self != 'kubernetes.io/service-account-token'").message("spec.secret.template.type must not be kubernetes.io/service-account-token: that type is the token controller's"))]
    pub type_: Option<String>,
}

impl DataTemplate {
    pub fn merge_policy(&self) -> MergePolicy {
        self.merge_policy.unwrap_or_default()
    }

    pub fn secret_type(&self) -> &str {
        self.type_.as_deref().unwrap_or(SECRET_TYPE_OPAQUE)
    }
}

/// The type of a Secret written without `template.type`.
pub const SECRET_TYPE_OPAQUE: &str = "Opaque";

/// What the templated Secret holds besides the templated keys.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MergePolicy {
    /// Only the templated keys.
    #[default]
    Replace,
    /// The kind's default keys and the templated keys.
    Merge,
}

/// A workload restarted when the Secret's data changes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTarget {
    pub kind: WorkloadKind,
    /// Name of the workload, in the resource's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}

impl std::fmt::Display for RolloutTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}/{}", self.kind, self.name)
    }
}

/// The workload kinds (group `apps`) a rollout restart applies to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// The rollout that follows a change of the target Secret's data. Never holds secret material.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRollout {
    /// Keyed hash of the Secret data the restarts are for: a resync with the same data restarts nothing.
    pub secret_hash: String,
    /// When the restarts began; absent for the first write (which restarts nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// Every target's rollout is complete (or the targets are gone, or `rolloutTimeout` passed).
    #[serde(default)]
    pub complete: bool,
    /// `rolloutTimeout` passed before every rollout completed: replaced keys were revoked anyway.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetRollout>,
}

/// One workload's restart and rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRollout {
    pub kind: WorkloadKind,
    pub name: String,
    /// When the operator restarted it (the value of its `workloadkeys.io/restartedAt` pod-template annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<Time>,
    #[serde(default)]
    pub complete: bool,
    /// The workload does not exist (a Warning Event said so; the rotation proceeds by `gracePeriod`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_found: bool,
    /// What the rollout still waits for, e.g. `replicas 3: updated 1, total 4, available 3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

impl TargetRollout {
    pub fn target(&self) -> RolloutTarget {
        RolloutTarget { kind: self.kind, name: self.name.clone() }
    }
}

/// What happens at the vendor when the resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Revoke (delete) the credential at the vendor.
    #[default]
    Delete,
    /// Leave the credential at the vendor.
    Retain,
}

/// Parses a Go-style duration (`90s`, `10m`, `336h`, `1h30m`, `500ms`), the form the CRDs accept.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {text:?}: use a number and unit, e.g. 90s, 10m, 336h, 1h30m");
    if text.is_empty() {
        return Err(err());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else {
            return Err(err());
        };
        rest = &rest[len..];
        total = total
            .checked_add(unit.checked_mul(u32::try_from(n).map_err(|_| err())?).ok_or_else(err)?)
            .ok_or_else(err)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("336h"), Ok(Duration::from_secs(336 * 3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        for bad in ["", "10", "h", "1d", "1.5h", "-1s", "1h 30m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}

/// A role by name (looked up, exact match) or by numeric ID.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.name) != has(self.id)").message("exactly one of spec.role.name and spec.role.id must be set"))]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    /// Role name, e.g. `Auditor` or `Full Access` (Cloud One: the role's name or its ID slug, e.g. `read-only`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 254))]
    #[x_kube(validation = Rule::new("!self.contains('workloadkeys.io/')").message("spec.role.name must not contain 'workloadkeys.io/': that text marks which resource owns a vendor key and only the operator writes it"))]
    pub name: Option<String>,
    /// Role ID (DeepSecurity only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub id: Option<i64>,
}
