//! Pure decisions for a WorkloadApiKey: which step comes next, names, timestamps. No I/O; unit-tested branch by branch.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::{DEFAULT_ROLLOUT_TIMEOUT, RotationStrategy, WorkloadApiKeySpec, WorkloadApiKeyStatus, parse_duration};
use crate::controller::vendor_key::shift;
pub use crate::controller::{rollout::Gate, secret::SecretState};

/// The next thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create the key named `name`. With `recover`, a key of that name carrying our UID marker may already exist
    /// (a create whose result was never recorded): adopt it instead of creating a second one.
    Create { name: String, recover: bool },
    /// Record the intent to replace the current key with a new one named `name` (Replace rotation).
    StartReplace { name: String, generation: i64 },
    /// Give the current key a new secret (RegenerateSecret rotation), moving its expiry.
    Regenerate,
    /// The Secret is missing or edited: mint a fresh secret for the current key and rewrite the Secret.
    Repair,
    /// The spec changed: bring the vendor key's attributes in line.
    Update,
    /// Delete replaced keys whose grace period is over.
    RevokeRetired(Vec<i64>),
    /// Nothing to do until then (or ever, when `None`).
    Wait(Option<Timestamp>),
}

/// Inputs to [`next_step`] beyond the spec and status.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub now: Timestamp,
    pub generation: Option<i64>,
    pub secret: SecretState,
    /// Current value of the `workloadkeys.io/rotate` annotation.
    pub rotate_annotation: Option<&'a str>,
    /// Whether the rollouts of the restarted workloads let replaced keys go.
    pub gate: Gate,
}

/// The key name of `generation` (1 = the first key, named exactly `base`; later ones get a rotation suffix so the
/// old and new keys are told apart in the vendor console and found by exact name after a crash).
pub fn key_name_for(base: &str, generation: i64) -> String {
    if generation <= 1 { base.to_owned() } else { format!("{base}-r{generation}") }
}

pub fn expires_after(spec: &WorkloadApiKeySpec) -> Result<Option<Duration>, String> {
    spec.expires_after.as_deref().map(parse_duration).transpose()
}

/// How long before expiry rotation starts: `rotation.renewBefore`, default one third of `expiresAfter`.
pub fn renew_before(spec: &WorkloadApiKeySpec) -> Result<Option<Duration>, String> {
    let Some(lifetime) = expires_after(spec)? else { return Ok(None) };
    match spec.rotation.as_ref().and_then(|r| r.renew_before.as_deref()) {
        Some(text) => {
            let d = parse_duration(text)?;
            if d >= lifetime {
                return Err(format!("rotation.renewBefore ({text}) must be shorter than expiresAfter"));
            }
            Ok(Some(d))
        }
        None => Ok(Some(lifetime / 3)),
    }
}

pub fn grace_period(spec: &WorkloadApiKeySpec) -> Result<Duration, String> {
    spec.rotation
        .as_ref()
        .and_then(|r| r.grace_period.as_deref())
        .map(parse_duration)
        .unwrap_or(Ok(Duration::from_secs(600)))
}

/// `rotation.rolloutTimeout`, default 30 minutes.
pub fn rollout_timeout(spec: &WorkloadApiKeySpec) -> Result<Duration, String> {
    spec.rotation
        .as_ref()
        .and_then(|r| r.rollout_timeout.as_deref())
        .map(parse_duration)
        .unwrap_or(Ok(DEFAULT_ROLLOUT_TIMEOUT))
}

pub fn strategy(spec: &WorkloadApiKeySpec) -> RotationStrategy {
    spec.rotation.as_ref().and_then(|r| r.strategy).unwrap_or_default()
}

/// Expiry and renewal instants of a key created (or re-secreted) at `from`.
pub fn lifetime_from(
    spec: &WorkloadApiKeySpec,
    from: Timestamp,
) -> Result<(Option<Timestamp>, Option<Timestamp>), String> {
    let (Some(life), Some(before)) = (expires_after(spec)?, renew_before(spec)?) else { return Ok((None, None)) };
    let expires = shift(from, life, true);
    Ok((Some(expires), Some(shift(expires, before, false))))
}

/// Decides the next step. Order matters: a recorded intent first (crash recovery), then a missing key, the
/// Secret's integrity, due retirements (grace period over and the rollouts complete, see [`Gate`]), requested or scheduled rotation, spec changes, and finally waiting.
pub fn next_step(spec: &WorkloadApiKeySpec, status: &WorkloadApiKeyStatus, base_name: &str, seen: &Observed) -> Step {
    if let Some(name) = &status.pending_key_name {
        return Step::Create { name: name.clone(), recover: true };
    }
    if status.key_id.is_none() {
        let generation = status.key_generation.unwrap_or(1).max(1);
        return Step::Create { name: key_name_for(base_name, generation), recover: false };
    }
    if matches!(seen.secret, SecretState::Missing | SecretState::Edited) {
        return Step::Repair;
    }
    let due: Vec<i64> = status
        .retiring_keys
        .iter()
        .filter(|k| seen.gate.may_revoke(k.revoke_at.0, seen.now))
        .map(|k| k.key_id)
        .collect();
    if !due.is_empty() {
        return Step::RevokeRetired(due);
    }
    let requested = seen.rotate_annotation.is_some_and(|v| Some(v) != status.rotate_annotation.as_deref());
    let scheduled = status.renew_at.as_ref().is_some_and(|t| t.0 <= seen.now);
    if requested || scheduled {
        return match strategy(spec) {
            RotationStrategy::Replace => {
                let generation = status.key_generation.unwrap_or(1).max(1) + 1;
                Step::StartReplace { name: key_name_for(base_name, generation), generation }
            }
            RotationStrategy::RegenerateSecret => Step::Regenerate,
        };
    }
    if seen.generation.is_some() && seen.generation != status.observed_generation {
        return Step::Update;
    }
    let next = status
        .retiring_keys
        .iter()
        .map(|k| seen.gate.next_check(k.revoke_at.0))
        .chain(status.renew_at.as_ref().map(|t| t.0))
        .min();
    Step::Wait(next)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{RetiringKey, Rotation};

    fn spec() -> WorkloadApiKeySpec {
        serde_json::from_value(serde_json::json!({
            "providerRef": {"kind": "ClusterKeyProvider", "name": "dsm"},
            "role": {"name": "Auditor"},
            "expiresAfter": "90s",
            "rotation": {"renewBefore": "60s"}
        }))
        .unwrap()
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn healthy() -> WorkloadApiKeyStatus {
        WorkloadApiKeyStatus {
            observed_generation: Some(1),
            key_id: Some(7),
            key_name: Some("k".into()),
            key_generation: Some(1),
            renew_at: Some(Time(ts(1_000))),
            ..Default::default()
        }
    }

    fn seen(now: i64, secret: SecretState) -> Observed<'static> {
        Observed { now: ts(now), generation: Some(1), secret, rotate_annotation: None, gate: Gate::OPEN }
    }

    #[test]
    fn first_key_is_named_exactly_and_later_ones_get_a_suffix() {
        assert_eq!(key_name_for("reporting", 1), "reporting");
        assert_eq!(key_name_for("reporting", 2), "reporting-r2");
        assert_eq!(
            next_step(&spec(), &WorkloadApiKeyStatus::default(), "reporting", &seen(0, SecretState::Missing)),
            Step::Create { name: "reporting".into(), recover: false }
        );
    }

    #[test]
    fn recorded_intent_is_recovered_first() {
        let status = WorkloadApiKeyStatus { pending_key_name: Some("reporting-r3".into()), ..healthy() };
        assert_eq!(
            next_step(&spec(), &status, "reporting", &seen(0, SecretState::Intact)),
            Step::Create { name: "reporting-r3".into(), recover: true }
        );
    }

    #[test]
    fn missing_or_edited_secret_is_repaired() {
        assert_eq!(next_step(&spec(), &healthy(), "k", &seen(0, SecretState::Missing)), Step::Repair);
        assert_eq!(next_step(&spec(), &healthy(), "k", &seen(0, SecretState::Edited)), Step::Repair);
    }

    #[test]
    fn healthy_key_waits_until_renewal() {
        assert_eq!(next_step(&spec(), &healthy(), "k", &seen(10, SecretState::Intact)), Step::Wait(Some(ts(1_000))));
    }

    #[test]
    fn renewal_time_rotates_by_strategy() {
        assert_eq!(
            next_step(&spec(), &healthy(), "k", &seen(1_000, SecretState::Intact)),
            Step::StartReplace { name: "k-r2".into(), generation: 2 }
        );
        let mut regen = spec();
        regen.rotation = Some(Rotation { strategy: Some(RotationStrategy::RegenerateSecret), ..Default::default() });
        assert_eq!(next_step(&regen, &healthy(), "k", &seen(1_000, SecretState::Intact)), Step::Regenerate);
    }

    #[test]
    fn annotation_rotates_once_per_value() {
        let mut s = seen(10, SecretState::Intact);
        s.rotate_annotation = Some("now");
        assert!(matches!(next_step(&spec(), &healthy(), "k", &s), Step::StartReplace { .. }));
        let done = WorkloadApiKeyStatus { rotate_annotation: Some("now".into()), ..healthy() };
        assert_eq!(next_step(&spec(), &done, "k", &s), Step::Wait(Some(ts(1_000))));
    }

    #[test]
    fn retired_keys_are_revoked_when_due_and_waited_for_otherwise() {
        let status = WorkloadApiKeyStatus {
            retiring_keys: vec![
                RetiringKey { key_id: 5, key_name: None, revoke_at: Time(ts(50)) },
                RetiringKey { key_id: 6, key_name: None, revoke_at: Time(ts(500)) },
            ],
            ..healthy()
        };
        assert_eq!(next_step(&spec(), &status, "k", &seen(10, SecretState::Intact)), Step::Wait(Some(ts(50))));
        assert_eq!(next_step(&spec(), &status, "k", &seen(60, SecretState::Intact)), Step::RevokeRetired(vec![5]));
    }

    #[test]
    fn retired_keys_also_wait_for_the_rollout_or_its_timeout() {
        let status = WorkloadApiKeyStatus {
            retiring_keys: vec![RetiringKey { key_id: 5, key_name: None, revoke_at: Time(ts(50)) }],
            ..healthy()
        };
        let mut s = seen(60, SecretState::Intact);
        s.gate = Gate { open: false, deadline: Some(ts(300)) };
        assert_eq!(next_step(&spec(), &status, "k", &s), Step::Wait(Some(ts(300))), "grace over, rollout not");
        s.now = ts(300);
        assert_eq!(next_step(&spec(), &status, "k", &s), Step::RevokeRetired(vec![5]), "timeout passed");
        let mut s = seen(60, SecretState::Intact);
        s.gate = Gate::OPEN;
        assert_eq!(next_step(&spec(), &status, "k", &s), Step::RevokeRetired(vec![5]), "rollout complete");
        s.now = ts(10);
        assert_eq!(next_step(&spec(), &status, "k", &s), Step::Wait(Some(ts(50))), "rollout complete, grace not");
    }

    #[test]
    fn spec_change_updates_the_vendor_key() {
        let mut s = seen(10, SecretState::Intact);
        s.generation = Some(2);
        assert_eq!(next_step(&spec(), &healthy(), "k", &s), Step::Update);
    }

    #[test]
    fn lifetimes_and_defaults() {
        let (exp, renew) = lifetime_from(&spec(), ts(0)).unwrap();
        assert_eq!(exp, Some(ts(90)));
        assert_eq!(renew, Some(ts(30)));
        let mut default_renew = spec();
        default_renew.rotation = None;
        assert_eq!(lifetime_from(&default_renew, ts(0)).unwrap(), (Some(ts(90)), Some(ts(60))));
        let mut no_expiry = spec();
        no_expiry.expires_after = None;
        no_expiry.rotation = None;
        assert_eq!(lifetime_from(&no_expiry, ts(0)).unwrap(), (None, None));
        assert_eq!(grace_period(&spec()).unwrap(), Duration::from_secs(600));
        assert_eq!(rollout_timeout(&spec()).unwrap(), Duration::from_secs(1800));
    }
}
