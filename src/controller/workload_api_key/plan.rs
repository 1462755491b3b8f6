//! Pure decisions for a WorkloadApiKey: which step comes next, names, timestamps. No I/O; unit-tested branch by branch.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::{
    DEFAULT_GRACE_PERIOD, DEFAULT_ROLLOUT_TIMEOUT, RotationStrategy, VendorKeyId, WorkloadApiKeySpec,
    WorkloadApiKeyStatus, parse_duration,
};
use crate::controller::vendor_key::{self, RotateRequest, shift};
pub use crate::controller::{rollout::Gate, secret::SecretState};

/// The next thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create the key named `name`. With `recover`, a key of that name carrying our UID marker may already exist
    /// (a create whose result was never recorded): Deep Security adopts it instead of creating a second one; the
    /// account APIs, which show a secret only at create, delete it and create afresh.
    Create { name: String, recover: bool },
    /// Record the intent to replace the current key with a new one named `name` (Replace rotation).
    StartReplace { name: String, generation: i64 },
    /// Give the current key a new secret (RegenerateSecret rotation), moving its expiry.
    Regenerate,
    /// The Secret is missing or edited: mint a fresh secret for the current key (Deep Security) or a new key whose
    /// predecessor is revoked at once (account APIs), and rewrite the Secret.
    Repair,
    /// The spec changed: bring the vendor key's attributes in line (Deep Security modifies the key in place).
    Update,
    /// The spec changed, but not what the key was created with (account APIs): recompute when it renews.
    Reschedule,
    /// Delete replaced keys whose grace period is over.
    RevokeRetired(Vec<VendorKeyId>),
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
    /// For an API that cannot modify a key (Cloud One, Vision One): the digest of what the spec asks the key to be
    /// created with ([`super::rules::key_attributes`]). `None`: the key is modified in place (Deep Security).
    pub attributes: Option<&'a str>,
    /// The digest of `spec.secret.template` ([`crate::controller::secret::template::digest`]; `None` without one).
    pub template: Option<&'a str>,
}

/// The key name of `generation` (1 = the first key, named exactly `base`; later ones get a rotation suffix so the
/// old and new keys are told apart in the vendor console and found by exact name after a crash).
pub fn key_name_for(base: &str, generation: i64) -> String {
    if generation <= 1 { base.to_owned() } else { format!("{base}-r{generation}") }
}

pub fn expires_after(spec: &WorkloadApiKeySpec) -> Result<Option<Duration>, String> {
    spec.expires_after.as_deref().map(parse_duration).transpose()
}

/// `rotation.every`: how long after its creation a key is rotated, whatever its expiry.
pub fn every(spec: &WorkloadApiKeySpec) -> Result<Option<Duration>, String> {
    spec.rotation.as_ref().and_then(|r| r.every.as_deref()).map(parse_duration).transpose()
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
        .unwrap_or(Ok(DEFAULT_GRACE_PERIOD))
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

/// Expiry and renewal instants of a Deep Security key created (or re-secreted) at `from`: it expires
/// `expiresAfter` later.
pub fn lifetime_from(
    spec: &WorkloadApiKeySpec,
    from: Timestamp,
) -> Result<(Option<Timestamp>, Option<Timestamp>), String> {
    let expires = expires_after(spec)?.map(|life| shift(from, life, true));
    Ok((expires, renew_at(spec, from, expires)?))
}

/// When a key created at `created` and expiring at `expires` (never: `None`) is rotated: `rotation.every` after
/// its creation or `rotation.renewBefore` (default a third of its actual lifetime) before its expiry, whichever
/// comes first; never when neither applies. A `renewBefore` not shorter than the lifetime is refused.
pub fn renew_at(
    spec: &WorkloadApiKeySpec,
    created: Timestamp,
    expires: Option<Timestamp>,
) -> Result<Option<Timestamp>, String> {
    let by_age = every(spec)?.map(|every| shift(created, every, true));
    let by_expiry = match expires {
        None => None,
        Some(expires) => {
            let life = Duration::try_from(expires.duration_since(created)).unwrap_or(Duration::ZERO);
            let before = match spec.rotation.as_ref().and_then(|r| r.renew_before.as_deref()) {
                Some(text) => {
                    let before = parse_duration(text)?;
                    if before >= life {
                        return Err(format!(
                            "rotation.renewBefore ({text}) must be shorter than the key's lifetime ({}s)",
                            life.as_secs()
                        ));
                    }
                    before
                }
                None => life / 3,
            };
            Some(shift(expires, before, false))
        }
    };
    Ok(by_age.into_iter().chain(by_expiry).min())
}

/// What the `workloadkeys.io/rotate` annotation asks for now ([`vendor_key::rotate_request`]: at most one
/// rotation a minute).
pub fn rotate_request(status: &WorkloadApiKeyStatus, seen: &Observed) -> RotateRequest {
    let acted_at = status.rotate_annotation_at.as_ref().map(|t| t.0);
    vendor_key::rotate_request(seen.rotate_annotation, status.rotate_annotation.as_deref(), acted_at, seen.now)
}

/// Decides the next step. Order matters: a recorded intent first (crash recovery), then a missing key, the
/// Secret's integrity, due retirements (grace period over and the rollouts complete, see [`Gate`]), requested or
/// scheduled rotation (one requested within a minute of the last is waited for) or a changed Secret template, spec
/// changes, and finally waiting.
pub fn next_step(spec: &WorkloadApiKeySpec, status: &WorkloadApiKeyStatus, base_name: &str, seen: &Observed) -> Step {
    if let Some(name) = &status.pending_key_name {
        return Step::Create { name: name.clone(), recover: true };
    }
    let generation = status.key_generation.unwrap_or(1).max(1);
    if status.key_id.is_none() {
        return Step::Create { name: key_name_for(base_name, generation), recover: false };
    }
    if matches!(seen.secret, SecretState::Missing | SecretState::Edited) {
        return Step::Repair;
    }
    let due: Vec<VendorKeyId> = status
        .retiring_keys
        .iter()
        .filter(|k| seen.gate.may_revoke(k.revoke_at.0, seen.now))
        .map(|k| k.key_id.clone())
        .collect();
    if !due.is_empty() {
        return Step::RevokeRetired(due);
    }
    let replace = || Step::StartReplace { name: key_name_for(base_name, generation + 1), generation: generation + 1 };
    let requested = rotate_request(status, seen);
    let scheduled = status.renew_at.as_ref().is_some_and(|t| t.0 <= seen.now);
    // A changed template re-renders the Secret from a new secret, as a rotation does: the current one is kept
    // nowhere but in the Secret, which a template may not hold it whole in.
    let retemplated = seen.template != status.secret_template_digest.as_deref();
    if requested == RotateRequest::Now || scheduled || retemplated {
        return match strategy(spec) {
            RotationStrategy::Replace => replace(),
            RotationStrategy::RegenerateSecret => Step::Regenerate,
        };
    }
    // A key that cannot be modified is replaced (with the grace period) when what it was made with changed.
    if let Some(wanted) = seen.attributes
        && status.key_attributes.as_deref() != Some(wanted)
    {
        return replace();
    }
    if seen.generation.is_some() && seen.generation != status.observed_generation {
        return if seen.attributes.is_some() { Step::Reschedule } else { Step::Update };
    }
    let next = status
        .retiring_keys
        .iter()
        .map(|k| seen.gate.next_check(k.revoke_at.0))
        .chain(status.renew_at.as_ref().map(|t| t.0))
        .chain(requested.due())
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
            key_id: Some(VendorKeyId::from(7)),
            key_name: Some("k".into()),
            key_generation: Some(1),
            renew_at: Some(Time(ts(1_000))),
            ..Default::default()
        }
    }

    fn seen(now: i64, secret: SecretState) -> Observed<'static> {
        Observed {
            now: ts(now),
            generation: Some(1),
            secret,
            rotate_annotation: None,
            gate: Gate::OPEN,
            attributes: None,
            template: None,
        }
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
        regen.rotation =
            Some(Box::new(Rotation { strategy: Some(RotationStrategy::RegenerateSecret), ..Default::default() }));
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
    fn annotation_rotates_at_most_once_a_minute() {
        let mut s = seen(100, SecretState::Intact);
        s.rotate_annotation = Some("2");
        let rotated = |at| WorkloadApiKeyStatus {
            rotate_annotation: Some("1".into()),
            rotate_annotation_at: Some(Time(ts(at))),
            ..healthy()
        };
        assert_eq!(next_step(&spec(), &rotated(50), "k", &s), Step::Wait(Some(ts(110))), "waits for its moment");
        assert!(matches!(next_step(&spec(), &rotated(40), "k", &s), Step::StartReplace { .. }), "a minute on");
        // A scheduled rotation is not held back by a recent manual one.
        s.now = ts(1_000);
        assert!(matches!(next_step(&spec(), &rotated(990), "k", &s), Step::StartReplace { .. }));
    }

    #[test]
    fn retired_keys_are_revoked_when_due_and_waited_for_otherwise() {
        let status = WorkloadApiKeyStatus {
            retiring_keys: vec![
                RetiringKey { key_id: 5.into(), key_name: None, revoke_at: Time(ts(50)) },
                RetiringKey { key_id: 6.into(), key_name: None, revoke_at: Time(ts(500)) },
            ],
            ..healthy()
        };
        assert_eq!(next_step(&spec(), &status, "k", &seen(10, SecretState::Intact)), Step::Wait(Some(ts(50))));
        assert_eq!(
            next_step(&spec(), &status, "k", &seen(60, SecretState::Intact)),
            Step::RevokeRetired(vec![5.into()])
        );
    }

    #[test]
    fn retired_keys_also_wait_for_the_rollout_or_its_timeout() {
        let status = WorkloadApiKeyStatus {
            retiring_keys: vec![RetiringKey { key_id: 5.into(), key_name: None, revoke_at: Time(ts(50)) }],
            ..healthy()
        };
        let mut s = seen(60, SecretState::Intact);
        s.gate = Gate { open: false, deadline: Some(ts(300)) };
        assert_eq!(next_step(&spec(), &status, "k", &s), Step::Wait(Some(ts(300))), "grace over, rollout not");
        s.now = ts(300);
        assert_eq!(next_step(&spec(), &status, "k", &s), Step::RevokeRetired(vec![5.into()]), "timeout passed");
        let mut s = seen(60, SecretState::Intact);
        s.gate = Gate::OPEN;
        assert_eq!(next_step(&spec(), &status, "k", &s), Step::RevokeRetired(vec![5.into()]), "rollout complete");
        s.now = ts(10);
        assert_eq!(next_step(&spec(), &status, "k", &s), Step::Wait(Some(ts(50))), "rollout complete, grace not");
    }

    #[test]
    fn a_changed_template_rerenders_by_strategy_and_an_unchanged_one_waits() {
        let mut s = seen(10, SecretState::Intact);
        s.template = Some("sha256:t1");
        assert_eq!(
            next_step(&spec(), &healthy(), "k", &s),
            Step::StartReplace { name: "k-r2".into(), generation: 2 },
            "a template added to a key written without one"
        );
        let rendered = WorkloadApiKeyStatus { secret_template_digest: Some("sha256:t1".into()), ..healthy() };
        assert_eq!(next_step(&spec(), &rendered, "k", &s), Step::Wait(Some(ts(1_000))), "rendered with it");
        s.template = None;
        assert!(matches!(next_step(&spec(), &rendered, "k", &s), Step::StartReplace { .. }), "template removed");
        let mut regen = spec();
        regen.rotation =
            Some(Box::new(Rotation { strategy: Some(RotationStrategy::RegenerateSecret), ..Default::default() }));
        s.template = Some("sha256:t2");
        assert_eq!(next_step(&regen, &rendered, "k", &s), Step::Regenerate);
        // The Secret's integrity comes first: a repair renders with the new template.
        assert_eq!(next_step(&spec(), &rendered, "k", &seen(10, SecretState::Edited)), Step::Repair);
    }

    #[test]
    fn spec_change_updates_the_vendor_key() {
        let mut s = seen(10, SecretState::Intact);
        s.generation = Some(2);
        assert_eq!(next_step(&spec(), &healthy(), "k", &s), Step::Update);
    }

    #[test]
    fn account_keys_are_replaced_when_their_attributes_change_and_rescheduled_otherwise() {
        let account = WorkloadApiKeyStatus { key_attributes: Some("a1".into()), ..healthy() };
        let mut s = seen(10, SecretState::Intact);
        s.attributes = Some("a1");
        assert_eq!(next_step(&spec(), &account, "k", &s), Step::Wait(Some(ts(1_000))), "unchanged");
        s.generation = Some(2);
        assert_eq!(next_step(&spec(), &account, "k", &s), Step::Reschedule, "spec changed, attributes not");
        s.attributes = Some("a2");
        assert_eq!(
            next_step(&spec(), &account, "k", &s),
            Step::StartReplace { name: "k-r2".into(), generation: 2 },
            "role, name or description changed"
        );
    }

    #[test]
    fn rotation_every_renews_by_age_or_before_expiry_whichever_is_first() {
        let mut every = spec();
        every.rotation = Some(Box::new(Rotation { every: Some("20s".into()), ..Default::default() }));
        assert_eq!(lifetime_from(&every, ts(0)).unwrap(), (Some(ts(90)), Some(ts(20))), "every first");
        every.rotation = Some(Box::new(Rotation { every: Some("80s".into()), ..Default::default() }));
        assert_eq!(lifetime_from(&every, ts(0)).unwrap(), (Some(ts(90)), Some(ts(60))), "a third before expiry first");
        every.expires_after = None;
        assert_eq!(lifetime_from(&every, ts(0)).unwrap(), (None, Some(ts(80))), "no expiry: by age only");
        assert_eq!(renew_at(&every, ts(100), None).unwrap(), Some(ts(180)));
        // The actual lifetime (e.g. the vendor's expiry) decides the default and bounds renewBefore.
        let mut before = spec();
        before.rotation = Some(Box::new(Rotation { renew_before: Some("60s".into()), ..Default::default() }));
        assert_eq!(renew_at(&before, ts(0), Some(ts(300))).unwrap(), Some(ts(240)));
        assert!(renew_at(&before, ts(0), Some(ts(60))).unwrap_err().contains("renewBefore"));
        before.rotation = None;
        assert_eq!(renew_at(&before, ts(0), Some(ts(300))).unwrap(), Some(ts(200)));
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
