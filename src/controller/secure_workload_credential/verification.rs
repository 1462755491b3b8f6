//! What a verification of a key pair means for the status: the capability lists, the `Verified` condition, the
//! words a person reads when the vendor refuses a pair, and `Ready` for a resource at rest. Pure.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use super::plan::Mode;
use crate::{
    api::{Capability, SecureWorkloadCredentialStatus, conditions::reason},
    clients::cisco::{Liveness, Verification},
};

fn names(caps: &[Capability]) -> String {
    caps.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
}

/// Why the vendor refused a pair, told apart as the vendor tells them apart (401 vs 403 `Invalid request`).
pub fn rejection_message(liveness: Liveness, fingerprint: &str) -> Option<String> {
    match liveness {
        Liveness::Ok => None,
        Liveness::UnknownKey => Some(format!(
            "Secure Workload does not know API key {fingerprint} (HTTP 401 Unknown credentials): it was deleted or \
             revoked in the UI, or never existed"
        )),
        Liveness::SecretRejected => Some(format!(
            "Secure Workload refused the signature of API key {fingerprint} (HTTP 403 Invalid request): the \
             api_secret does not belong to this key, or the operator's clock is minutes off"
        )),
    }
}

/// Records a verification in the status: the capability lists, the `Verified` condition and, when the vendor
/// accepted the pair, `lastVerifiedAt`. Returns whether `Verified` changed status or reason.
pub fn record_verification(
    status: &mut SecureWorkloadCredentialStatus,
    checked: &Verification,
    fingerprint: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    status.verified_capabilities = checked.verified.clone();
    status.missing_capabilities = checked.missing.clone();
    status.unverified_capabilities = checked.unverified.clone();
    let (ok, why, message) = match rejection_message(checked.liveness, fingerprint) {
        Some(message) => (false, reason::CREDENTIALS_REJECTED, message),
        None if !checked.missing.is_empty() => (
            false,
            reason::MISSING_CAPABILITIES,
            format!("API key {fingerprint} lacks {}: their probes were refused", names(&checked.missing)),
        ),
        None => (true, reason::VERIFIED, verified_summary(fingerprint, &checked.verified, &checked.unverified)),
    };
    if checked.liveness == Liveness::Ok {
        status.last_verified_at = Some(Time(now));
    }
    crate::api::conditions::set_condition(
        &mut status.conditions,
        crate::api::conditions::VERIFIED,
        ok,
        why,
        message,
        generation,
        now,
    )
}

fn verified_summary(fingerprint: &str, verified: &[Capability], unverified: &[Capability]) -> String {
    let mut text = format!("the vendor accepts API key {fingerprint}");
    if !verified.is_empty() {
        text.push_str(&format!("; verified: {}", names(verified)));
    }
    if !unverified.is_empty() {
        text.push_str(&format!("; unverified (no read-only probe exists): {}", names(unverified)));
    }
    text
}

/// `Ready` for a resource at rest: False `MissingCapabilities` while the published key lacks a listed
/// capability (the Secret still holds it: the key is genuine and live, and apps that need only its other
/// capabilities keep working), else True.
pub fn readiness(
    mode: Mode,
    status: &SecureWorkloadCredentialStatus,
    secret_name: &str,
    next_rotation: Option<Timestamp>,
) -> (bool, &'static str, String) {
    let fingerprint = status.api_key_fingerprint.as_deref().unwrap_or("?");
    let mut message = match mode {
        Mode::Existing => format!("API key {fingerprint} is in Secret {secret_name}"),
        Mode::Provision => format!(
            "EXPERIMENTAL provision mode (Secure Workload UI session API): credential {} (API key {fingerprint}) \
             is in Secret {secret_name}",
            status.credential_id.as_deref().unwrap_or("?")
        ),
    };
    if !status.missing_capabilities.is_empty() {
        message.push_str(&format!(
            " but lacks {} (their probes were refused); the Secret is published anyway",
            names(&status.missing_capabilities)
        ));
        return (false, reason::MISSING_CAPABILITIES, message);
    }
    if !status.verified_capabilities.is_empty() {
        message.push_str(&format!("; verified: {}", names(&status.verified_capabilities)));
    }
    if !status.unverified_capabilities.is_empty() {
        message.push_str(&format!("; unverified (no probe): {}", names(&status.unverified_capabilities)));
    }
    if let Some(t) = next_rotation {
        message.push_str(&format!("; next rotation {t}"));
    }
    (true, reason::READY, message)
}

/// The `Verified` condition, if any.
pub fn verified_condition(status: &SecureWorkloadCredentialStatus) -> Option<&Condition> {
    crate::api::conditions::find(&status.conditions, crate::api::conditions::VERIFIED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn checked(liveness: Liveness, missing: Vec<Capability>) -> Verification {
        Verification {
            liveness,
            verified: vec![Capability::FlowInventoryQuery],
            missing,
            unverified: vec![Capability::SoftwareDownload],
        }
    }

    #[test]
    fn verification_is_recorded_with_distinct_rejections() {
        let mut status = SecureWorkloadCredentialStatus::default();
        assert!(record_verification(&mut status, &checked(Liveness::Ok, vec![]), "sha256:ab", Some(1), ts(5)));
        let c = verified_condition(&status).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Verified"));
        assert!(c.message.contains("unverified (no read-only probe exists): software_download"), "{}", c.message);
        assert_eq!(status.last_verified_at, Some(Time(ts(5))));
        assert_eq!(status.unverified_capabilities, vec![Capability::SoftwareDownload]);
        assert!(!status.verified_capabilities.contains(&Capability::SoftwareDownload));

        record_verification(&mut status, &checked(Liveness::UnknownKey, vec![]), "sha256:ab", Some(1), ts(9));
        let unknown = verified_condition(&status).unwrap().clone();
        assert_eq!((unknown.status.as_str(), unknown.reason.as_str()), ("False", "CredentialsRejected"));
        assert_eq!(status.last_verified_at, Some(Time(ts(5))), "a rejection does not count as verified");
        record_verification(&mut status, &checked(Liveness::SecretRejected, vec![]), "sha256:ab", Some(1), ts(9));
        let bad_secret = verified_condition(&status).unwrap().clone();
        assert_eq!(bad_secret.reason, "CredentialsRejected");
        assert_ne!(unknown.message, bad_secret.message);
        assert!(unknown.message.contains("401") && bad_secret.message.contains("403"));

        record_verification(
            &mut status,
            &checked(Liveness::Ok, vec![Capability::SensorManagement]),
            "sha256:ab",
            Some(1),
            ts(12),
        );
        let c = verified_condition(&status).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "MissingCapabilities"));
        assert!(c.message.contains("sensor_management"));
    }

    #[test]
    fn readiness_names_missing_capabilities_and_marks_provision_experimental() {
        let mut status = SecureWorkloadCredentialStatus {
            api_key_fingerprint: Some("sha256:ab".into()),
            verified_capabilities: vec![Capability::FlowInventoryQuery],
            unverified_capabilities: vec![Capability::SoftwareDownload],
            ..Default::default()
        };
        let (ready, why, message) = readiness(Mode::Existing, &status, "s", None);
        assert!(ready);
        assert_eq!(why, "Ready");
        assert!(message.contains("verified: flow_inventory_query") && message.contains("software_download"));
        let (_, _, message) = readiness(Mode::Provision, &status, "s", Some(ts(100)));
        assert!(message.starts_with("EXPERIMENTAL") && message.contains("next rotation"), "{message}");
        status.missing_capabilities = vec![Capability::SensorManagement, Capability::AppPolicyManagement];
        let (ready, why, message) = readiness(Mode::Existing, &status, "s", None);
        assert!(!ready);
        assert_eq!(why, "MissingCapabilities");
        assert!(message.contains("sensor_management, app_policy_management"), "{message}");
    }
}
