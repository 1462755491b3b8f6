//! Pure decisions for a SecureWorkloadCredential: which step comes next, its durations and modes. No I/O;
//! unit-tested branch by branch. How Secrets are read and written is in `source`, what a verification means in
//! `verification`.
//!
//! Two modes. `existing` imports a pair made in the UI: it is verified (liveness + one probe per capability),
//! then published; the target Secret is always rebuilt from the source, so drift is repaired without the vendor.
//! `provision` (EXPERIMENTAL: the UI's private session API) mints the pair; its secret exists only in the
//! target Secret, so a lost or edited Secret means minting a new credential and deleting the old one.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

pub use crate::controller::{rollout::Gate, secret::SecretState};
use crate::{
    api::{
        Capability, DEFAULT_GRACE_PERIOD, DEFAULT_ROLLOUT_TIMEOUT, SecureWorkloadCredentialSpec,
        SecureWorkloadCredentialStatus, parse_duration,
    },
    controller::vendor_key::{self, RotateRequest, shift},
};

pub const DEFAULT_VERIFY_INTERVAL: Duration = Duration::from_secs(3600);

/// Where the key pair comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Imported from a Secret made from the UI's download.
    Existing,
    /// EXPERIMENTAL: minted through the UI's private session API.
    Provision,
}

pub fn mode(spec: &SecureWorkloadCredentialSpec) -> Result<Mode, String> {
    match (&spec.source.existing, &spec.source.provision) {
        (Some(_), None) => Ok(Mode::Existing),
        (None, Some(_)) => Ok(Mode::Provision),
        _ => Err("exactly one of spec.source.existing and spec.source.provision must be set".into()),
    }
}

pub fn verify_interval(spec: &SecureWorkloadCredentialSpec) -> Result<Duration, String> {
    spec.verify_interval.as_deref().map(parse_duration).unwrap_or(Ok(DEFAULT_VERIFY_INTERVAL))
}

/// `rotation.every`, when rotation is configured.
pub fn rotation_every(spec: &SecureWorkloadCredentialSpec) -> Result<Option<Duration>, String> {
    spec.rotation.as_ref().map(|r| parse_duration(&r.every)).transpose()
}

pub fn grace_period(spec: &SecureWorkloadCredentialSpec) -> Result<Duration, String> {
    spec.rotation
        .as_ref()
        .and_then(|r| r.grace_period.as_deref())
        .map(parse_duration)
        .unwrap_or(Ok(DEFAULT_GRACE_PERIOD))
}

/// `rotation.rolloutTimeout`, default 30 minutes.
pub fn rollout_timeout(spec: &SecureWorkloadCredentialSpec) -> Result<Duration, String> {
    spec.rotation
        .as_ref()
        .and_then(|r| r.rollout_timeout.as_deref())
        .map(parse_duration)
        .unwrap_or(Ok(DEFAULT_ROLLOUT_TIMEOUT))
}

/// Validates every duration of the spec and its free text, so a bad one is reported before any vendor call.
pub fn check_spec(spec: &SecureWorkloadCredentialSpec) -> Result<(), String> {
    // The API server refuses this since the rule exists; a resource stored before it is refused here.
    let description = spec.source.provision.as_ref().and_then(|p| p.description.as_deref());
    vendor_key::check_free_text("spec.source.provision.description", description)?;
    verify_interval(spec)?;
    rotation_every(spec)?;
    grace_period(spec)?;
    rollout_timeout(spec)?;
    Ok(())
}

/// What to do with the credential a newly minted one replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retire {
    /// Keep it valid for the grace period (rotation: consumers pick up the new Secret meanwhile).
    AfterGrace,
    /// Delete it at once: its Secret was deleted or edited, so nobody should hold it any more.
    Now,
}

/// The next thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Check the pair and each capability with the vendor; in existing mode, publish the pair when accepted.
    Verify,
    /// Existing mode: the target Secret is missing or edited; rewrite it from the source (no vendor call).
    Republish,
    /// Provision mode: mint a credential. With `recover`, an intent was recorded and the mint may already have
    /// happened (a crash): look for our UID marker at the vendor before minting again.
    Mint { recover: bool, retire: Retire },
    /// Provision mode: record the intent to replace the current credential (rotation or changed capabilities).
    StartRotation,
    /// Provision mode: delete replaced credentials whose grace period is over.
    RevokeRetired(Vec<String>),
    /// Nothing to do until then.
    Wait(Timestamp),
}

/// Inputs to [`next_step`] beyond the spec and status.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub now: Timestamp,
    pub generation: Option<i64>,
    pub secret: SecretState,
    /// Existing mode: the keyed hash of the Secret data the source yields now.
    pub desired_hash: Option<&'a str>,
    /// The digest of `spec.secret.template` ([`crate::controller::secret::template::digest`]; `None` without one).
    pub template: Option<&'a str>,
    /// Current value of the `workloadkeys.io/rotate` annotation.
    pub rotate_annotation: Option<&'a str>,
    /// Whether the rollouts of the restarted workloads let replaced credentials go.
    pub gate: Gate,
}

/// When the pair is next verified: `verifyInterval` after the last positive verification, or now.
pub fn next_verification(status: &SecureWorkloadCredentialStatus, interval: Duration, now: Timestamp) -> Timestamp {
    status.last_verified_at.as_ref().map_or(now, |t| shift(t.0, interval, true))
}

/// Provision mode: when the current credential is due for rotation.
pub fn next_rotation(status: &SecureWorkloadCredentialStatus, every: Option<Duration>) -> Option<Timestamp> {
    Some(shift(status.credential_created_at.as_ref()?.0, every?, true))
}

/// Provision mode: what the `workloadkeys.io/rotate` annotation asks for now ([`vendor_key::rotate_request`]: at
/// most one rotation a minute).
pub fn rotate_request(status: &SecureWorkloadCredentialStatus, seen: &Observed) -> RotateRequest {
    let acted_at = status.rotate_annotation_at.as_ref().map(|t| t.0);
    vendor_key::rotate_request(seen.rotate_annotation, status.rotate_annotation.as_deref(), acted_at, seen.now)
}

/// Decides the next step (the caller refuses a foreign target Secret first).
pub fn next_step(
    spec: &SecureWorkloadCredentialSpec,
    mode: Mode,
    status: &SecureWorkloadCredentialStatus,
    seen: &Observed,
) -> Result<Step, String> {
    let interval = verify_interval(spec)?;
    let verify_at = next_verification(status, interval, seen.now);
    match mode {
        Mode::Existing => Ok(next_existing_step(status, seen, verify_at)),
        Mode::Provision => next_provision_step(spec, status, seen, verify_at),
    }
}

/// Existing mode. A changed source (or endpoint, or CA, or Secret template), a changed spec, or a due check verifies;
/// a failed check leaves `lastVerifiedAt` alone, so retries (with backoff) keep verifying until the pair is accepted.
fn next_existing_step(status: &SecureWorkloadCredentialStatus, seen: &Observed, verify_at: Timestamp) -> Step {
    let inputs_changed = (seen.desired_hash.is_some() && seen.desired_hash != status.secret_hash.as_deref())
        || seen.template != status.secret_template_digest.as_deref();
    let spec_changed = seen.generation.is_some() && seen.generation != status.observed_generation;
    if inputs_changed || spec_changed || verify_at <= seen.now {
        return Step::Verify;
    }
    if matches!(seen.secret, SecretState::Missing | SecretState::Edited) {
        return Step::Republish;
    }
    Step::Wait(verify_at)
}

/// Provision mode. Order: a recorded intent (crash recovery), no credential yet, the Secret's integrity,
/// due retirements (grace period over and the rollouts complete, see [`Gate`]), requested or scheduled rotation (one
/// requested within a minute of the last is waited for) or a changed Secret template, due verification, and finally
/// waiting.
fn next_provision_step(
    spec: &SecureWorkloadCredentialSpec,
    status: &SecureWorkloadCredentialStatus,
    seen: &Observed,
    verify_at: Timestamp,
) -> Result<Step, String> {
    if status.pending_credential == Some(true) {
        return Ok(Step::Mint { recover: true, retire: Retire::AfterGrace });
    }
    if status.credential_id.is_none() {
        return Ok(Step::Mint { recover: false, retire: Retire::AfterGrace });
    }
    if matches!(seen.secret, SecretState::Missing | SecretState::Edited) {
        return Ok(Step::Mint { recover: false, retire: Retire::Now });
    }
    let due: Vec<String> = status
        .retiring_credentials
        .iter()
        .filter(|c| seen.gate.may_revoke(c.revoke_at.0, seen.now))
        .map(|c| c.credential_id.clone())
        .collect();
    if !due.is_empty() {
        return Ok(Step::RevokeRetired(due));
    }
    let rotate_at = next_rotation(status, rotation_every(spec)?);
    let requested = rotate_request(status, seen);
    let scheduled = rotate_at.is_some_and(|t| t <= seen.now);
    // A changed Secret template is rendered from a newly minted pair, as a rotation does.
    let retemplated = seen.template != status.secret_template_digest.as_deref();
    let capabilities_changed = !same_set(&status.credential_capabilities, &spec.capabilities);
    if requested == RotateRequest::Now || scheduled || capabilities_changed || retemplated {
        return Ok(Step::StartRotation);
    }
    if verify_at <= seen.now {
        return Ok(Step::Verify);
    }
    let next = status
        .retiring_credentials
        .iter()
        .map(|c| seen.gate.next_check(c.revoke_at.0))
        .chain(rotate_at)
        .chain(requested.due())
        .chain([verify_at])
        .min();
    Ok(Step::Wait(next.unwrap_or(verify_at)))
}

fn same_set(a: &[Capability], b: &[Capability]) -> bool {
    a.iter().all(|c| b.contains(c)) && b.iter().all(|c| a.contains(c))
}

/// The vendor's description of a minted credential: the user's text plus the UID marker crash recovery needs.
pub fn vendor_description(spec: &SecureWorkloadCredentialSpec, owner: &vendor_key::Owner) -> String {
    let text = spec.source.provision.as_ref().and_then(|p| p.description.as_deref());
    vendor_key::vendor_description(text, owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use crate::api::RetiringCredential;

    fn existing() -> SecureWorkloadCredentialSpec {
        serde_json::from_value(serde_json::json!({
            "providerRef": {"kind": "ClusterKeyProvider", "name": "sw"},
            "source": {"existing": {"secretRef": {"name": "ui-key"}}},
            "capabilities": ["flow_inventory_query", "software_download"],
            "verifyInterval": "60s"
        }))
        .unwrap()
    }

    fn provision() -> SecureWorkloadCredentialSpec {
        serde_json::from_value(serde_json::json!({
            "providerRef": {"kind": "ClusterKeyProvider", "name": "sw"},
            "source": {"provision": {"description": "payments"}},
            "capabilities": ["sensor_management"],
            "verifyInterval": "60s",
            "rotation": {"every": "100s", "gracePeriod": "5s"}
        }))
        .unwrap()
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn seen(now: i64, secret: SecretState) -> Observed<'static> {
        Observed {
            now: ts(now),
            generation: Some(1),
            secret,
            desired_hash: None,
            template: None,
            rotate_annotation: None,
            gate: Gate::OPEN,
        }
    }

    fn published() -> SecureWorkloadCredentialStatus {
        SecureWorkloadCredentialStatus {
            observed_generation: Some(1),
            secret_hash: Some("h1".into()),
            secret_name: Some("s".into()),
            last_verified_at: Some(Time(ts(1_000))),
            ..Default::default()
        }
    }

    fn minted() -> SecureWorkloadCredentialStatus {
        SecureWorkloadCredentialStatus {
            credential_id: Some("c1".into()),
            credential_created_at: Some(Time(ts(1_000))),
            credential_capabilities: vec![Capability::SensorManagement],
            ..published()
        }
    }

    fn step(spec: &SecureWorkloadCredentialSpec, status: &SecureWorkloadCredentialStatus, seen: &Observed) -> Step {
        next_step(spec, mode(spec).unwrap(), status, seen).unwrap()
    }

    #[test]
    fn modes_and_defaults() {
        assert_eq!(mode(&existing()), Ok(Mode::Existing));
        assert_eq!(mode(&provision()), Ok(Mode::Provision));
        let mut both = existing();
        both.source.provision = provision().source.provision;
        assert!(mode(&both).is_err());
        let mut bare = existing();
        bare.verify_interval = None;
        assert_eq!(verify_interval(&bare), Ok(DEFAULT_VERIFY_INTERVAL));
        assert_eq!(grace_period(&bare), Ok(DEFAULT_GRACE_PERIOD));
        assert_eq!(rotation_every(&bare), Ok(None));
        assert_eq!(rotation_every(&provision()), Ok(Some(Duration::from_secs(100))));
        assert_eq!(grace_period(&provision()), Ok(Duration::from_secs(5)));
        bare.verify_interval = Some("1d".into());
        assert!(check_spec(&bare).is_err());
        let mut marked = provision();
        marked.source.provision.as_mut().unwrap().description = Some("x [workloadkeys.io/owner=u.n]".into());
        let e = check_spec(&marked).unwrap_err();
        assert!(e.starts_with("spec.source.provision.description must not contain 'workloadkeys.io/'"), "{e}");
    }

    #[test]
    fn existing_first_pass_and_changed_source_verify() {
        let mut s = seen(10, SecretState::Missing);
        s.desired_hash = Some("h1");
        assert_eq!(step(&existing(), &SecureWorkloadCredentialStatus::default(), &s), Step::Verify);
        s.desired_hash = Some("h2");
        s.now = ts(1_010);
        s.secret = SecretState::Intact;
        assert_eq!(step(&existing(), &published(), &s), Step::Verify, "a changed source is verified, then published");
    }

    #[test]
    fn existing_healthy_waits_until_the_next_verification_then_verifies() {
        let mut s = seen(1_010, SecretState::Intact);
        s.desired_hash = Some("h1");
        assert_eq!(step(&existing(), &published(), &s), Step::Wait(ts(1_060)));
        s.now = ts(1_060);
        assert_eq!(step(&existing(), &published(), &s), Step::Verify);
    }

    #[test]
    fn existing_spec_change_verifies_again() {
        let mut s = seen(1_010, SecretState::Intact);
        s.desired_hash = Some("h1");
        s.generation = Some(2);
        assert_eq!(step(&existing(), &published(), &s), Step::Verify);
    }

    #[test]
    fn existing_drift_is_rewritten_from_the_source_without_the_vendor() {
        for state in [SecretState::Missing, SecretState::Edited] {
            let mut s = seen(1_010, state);
            s.desired_hash = Some("h1");
            assert_eq!(step(&existing(), &published(), &s), Step::Republish);
        }
    }

    #[test]
    fn existing_failed_check_keeps_verifying() {
        // A rejected pair never moves lastVerifiedAt, so the check stays due.
        let mut s = seen(1_100, SecretState::Intact);
        s.desired_hash = Some("h1");
        assert_eq!(step(&existing(), &published(), &s), Step::Verify);
        s.now = ts(1_105);
        assert_eq!(step(&existing(), &published(), &s), Step::Verify);
    }

    #[test]
    fn provision_mints_first_and_recovers_a_recorded_intent() {
        assert_eq!(
            step(&provision(), &SecureWorkloadCredentialStatus::default(), &seen(0, SecretState::Missing)),
            Step::Mint { recover: false, retire: Retire::AfterGrace }
        );
        let pending = SecureWorkloadCredentialStatus { pending_credential: Some(true), ..minted() };
        assert_eq!(
            step(&provision(), &pending, &seen(1_010, SecretState::Intact)),
            Step::Mint { recover: true, retire: Retire::AfterGrace }
        );
    }

    #[test]
    fn provision_lost_or_edited_secret_mints_anew_and_deletes_the_old_at_once() {
        for state in [SecretState::Missing, SecretState::Edited] {
            assert_eq!(
                step(&provision(), &minted(), &seen(1_010, state)),
                Step::Mint { recover: false, retire: Retire::Now }
            );
        }
    }

    #[test]
    fn provision_healthy_waits_for_the_earliest_of_verify_rotate_retire() {
        assert_eq!(step(&provision(), &minted(), &seen(1_010, SecretState::Intact)), Step::Wait(ts(1_060)));
        let retiring = SecureWorkloadCredentialStatus {
            retiring_credentials: vec![RetiringCredential { credential_id: "c0".into(), revoke_at: Time(ts(1_020)) }],
            ..minted()
        };
        assert_eq!(step(&provision(), &retiring, &seen(1_010, SecretState::Intact)), Step::Wait(ts(1_020)));
        assert_eq!(
            step(&provision(), &retiring, &seen(1_020, SecretState::Intact)),
            Step::RevokeRetired(vec!["c0".into()])
        );
        let verified_late = SecureWorkloadCredentialStatus { last_verified_at: Some(Time(ts(1_090))), ..minted() };
        assert_eq!(step(&provision(), &verified_late, &seen(1_095, SecretState::Intact)), Step::Wait(ts(1_100)));
    }

    #[test]
    fn provision_retired_credentials_also_wait_for_the_rollout_or_its_timeout() {
        let retiring = SecureWorkloadCredentialStatus {
            retiring_credentials: vec![RetiringCredential { credential_id: "c0".into(), revoke_at: Time(ts(1_020)) }],
            ..minted()
        };
        let mut s = seen(1_030, SecretState::Intact);
        s.gate = Gate { open: false, deadline: Some(ts(1_050)) };
        assert_eq!(step(&provision(), &retiring, &s), Step::Wait(ts(1_050)));
        s.now = ts(1_050);
        assert_eq!(step(&provision(), &retiring, &s), Step::RevokeRetired(vec!["c0".into()]));
    }

    #[test]
    fn provision_rotates_when_due_requested_once_or_capabilities_change() {
        assert_eq!(step(&provision(), &minted(), &seen(1_100, SecretState::Intact)), Step::StartRotation);
        let mut s = seen(1_010, SecretState::Intact);
        s.rotate_annotation = Some("now");
        assert_eq!(step(&provision(), &minted(), &s), Step::StartRotation);
        let done = SecureWorkloadCredentialStatus { rotate_annotation: Some("now".into()), ..minted() };
        assert_eq!(step(&provision(), &done, &s), Step::Wait(ts(1_060)), "the same value rotates only once");
        let mut more = provision();
        more.capabilities.push(Capability::FlowInventoryQuery);
        assert_eq!(step(&more, &minted(), &seen(1_010, SecretState::Intact)), Step::StartRotation);
    }

    #[test]
    fn a_changed_template_republishes_existing_and_rotates_provision() {
        let mut s = seen(1_010, SecretState::Intact);
        s.desired_hash = Some("h1");
        s.template = Some("sha256:t1");
        assert_eq!(step(&existing(), &published(), &s), Step::Verify, "existing: rendered again from the source");
        let rendered =
            SecureWorkloadCredentialStatus { secret_template_digest: Some("sha256:t1".into()), ..published() };
        assert_eq!(step(&existing(), &rendered, &s), Step::Wait(ts(1_060)));
        let mut s = seen(1_010, SecretState::Intact);
        s.template = Some("sha256:t1");
        assert_eq!(step(&provision(), &minted(), &s), Step::StartRotation, "provision: a new pair, rendered");
        let rendered = SecureWorkloadCredentialStatus { secret_template_digest: Some("sha256:t1".into()), ..minted() };
        assert_eq!(step(&provision(), &rendered, &s), Step::Wait(ts(1_060)));
    }

    #[test]
    fn provision_rotates_on_request_at_most_once_a_minute() {
        let mut s = seen(1_010, SecretState::Intact);
        s.rotate_annotation = Some("2");
        let rotated = |at| SecureWorkloadCredentialStatus {
            rotate_annotation: Some("1".into()),
            rotate_annotation_at: Some(Time(ts(at))),
            ..minted()
        };
        assert_eq!(step(&provision(), &rotated(1_000), &s), Step::Wait(ts(1_060)), "the earlier of verify and then");
        assert_eq!(step(&provision(), &rotated(990), &s), Step::Wait(ts(1_050)), "waits for its moment");
        assert_eq!(step(&provision(), &rotated(950), &s), Step::StartRotation, "a minute on");
    }

    #[test]
    fn provision_verifies_when_due_or_never_verified() {
        assert_eq!(step(&provision(), &minted(), &seen(1_060, SecretState::Intact)), Step::Verify);
        let fresh = SecureWorkloadCredentialStatus { last_verified_at: None, ..minted() };
        assert_eq!(step(&provision(), &fresh, &seen(1_001, SecretState::Intact)), Step::Verify);
    }

    #[test]
    fn provision_without_rotation_never_rotates() {
        let mut spec = provision();
        spec.rotation = None;
        assert_eq!(step(&spec, &minted(), &seen(99_999, SecretState::Intact)), Step::Verify);
    }

    #[test]
    fn description_ends_with_the_owner_marker() {
        let owner = vendor_key::Owner::new("u-1", Some("n1"));
        assert_eq!(vendor_description(&provision(), &owner), "payments [workloadkeys.io/owner=u-1.n1]");
    }
}
