//! Conditions and their reasons. Reasons are part of the API: documented in docs/operations.md's table of conditions.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

pub const READY: &str = "Ready";
pub const VERIFIED: &str = "Verified";
/// A provider being deleted while resources still use it.
pub const IN_USE: &str = "InUse";

/// Reasons for `Ready` (and `Verified`). `Ready=True` uses [`reason::READY`].
pub mod reason {
    pub const READY: &str = "Ready";
    pub const PROVISIONING: &str = "Provisioning";
    pub const ROTATING: &str = "Rotating";
    pub const DELETING: &str = "Deleting";
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const INVALID_SECRET: &str = "InvalidSecret";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const ROLE_NOT_FOUND: &str = "RoleNotFound";
    pub const UNAUTHORIZED: &str = "Unauthorized";
    pub const FORBIDDEN: &str = "Forbidden";
    pub const TLS_ERROR: &str = "TLSError";
    pub const RATE_LIMITED: &str = "RateLimited";
    pub const VENDOR_UNAVAILABLE: &str = "VendorUnavailable";
    pub const VENDOR_ERROR: &str = "VendorError";
    pub const CREDENTIALS_REJECTED: &str = "CredentialsRejected";
    pub const MISSING_CAPABILITIES: &str = "MissingCapabilities";
    /// `Verified=True`: the vendor accepted the key pair and every capability that has a probe was proven.
    pub const VERIFIED: &str = "Verified";
    pub const KUBERNETES_ERROR: &str = "KubernetesError";
    /// The `providerRef` names no provider.
    pub const PROVIDER_NOT_FOUND: &str = "ProviderNotFound";
    /// The provider's admin credential is not proven (or it is being deleted).
    pub const PROVIDER_NOT_READY: &str = "ProviderNotReady";
    /// A `ClusterKeyProvider` that does not allow the resource's namespace.
    pub const NAMESPACE_NOT_ALLOWED: &str = "NamespaceNotAllowed";
    /// The request breaks the provider's policy (role, lifetime, capabilities).
    pub const POLICY_VIOLATION: &str = "PolicyViolation";
    /// The provider's URL changed after it issued the resource's keys.
    pub const ENDPOINT_CHANGED: &str = "EndpointChanged";
    /// `spec.secret.template` does not render (the message names the key); nothing was written.
    pub const TEMPLATE_ERROR: &str = "TemplateError";
    /// A provider: the admin credential failed its read-only check.
    pub const CREDENTIAL_CHECK_FAILED: &str = "CredentialCheckFailed";
    /// A provider being deleted while resources still use it.
    pub const IN_USE: &str = "InUse";
}

/// Sets (or replaces) the condition of `type_`. `lastTransitionTime` changes only when the status changes.
/// Returns whether the status or reason changed (a transition worth an Event).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let status_str = if status { "True" } else { "False" };
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let changed = c.status != status_str || c.reason != reason;
            if c.status != status_str {
                c.last_transition_time = Time(now);
            }
            c.status = status_str.to_owned();
            c.reason = reason.to_owned();
            c.message = message;
            c.observed_generation = observed_generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_owned(),
                status: status_str.to_owned(),
                reason: reason.to_owned(),
                message,
                observed_generation,
                last_transition_time: Time(now),
            });
            true
        }
    }
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Removes the condition of `type_`, if any.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let t2 = Timestamp::from_second(3_000).unwrap();
        let mut cs = vec![];
        assert!(set_condition(&mut cs, READY, false, reason::PROVISIONING, "creating", Some(1), t0));
        assert!(!set_condition(&mut cs, READY, false, reason::PROVISIONING, "still creating", Some(1), t1));
        assert_eq!(cs[0].last_transition_time, Time(t0));
        assert_eq!(cs[0].message, "still creating");
        assert!(set_condition(&mut cs, READY, true, reason::READY, "ok", Some(2), t2));
        assert_eq!(cs[0].last_transition_time, Time(t2));
        assert!(is_true(&cs, READY));
        assert_eq!(cs.len(), 1);
    }

    #[test]
    fn reason_change_is_a_transition_without_moving_time() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let mut cs = vec![];
        set_condition(&mut cs, READY, false, reason::UNAUTHORIZED, "a", None, t0);
        assert!(set_condition(&mut cs, READY, false, reason::FORBIDDEN, "b", None, Timestamp::from_second(5).unwrap()));
        assert_eq!(cs[0].last_transition_time, Time(t0));
    }
}
