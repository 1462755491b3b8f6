//! Pure decisions for a SecureWorkloadCredential: which step comes next, how a source Secret is read, the
//! Secret that is published, what verification and readiness say. No I/O; unit-tested branch by branch.
//!
//! Two modes. `existing` imports a pair made in the UI: it is verified (liveness + one probe per capability),
//! then published; the target Secret is always rebuilt from the source, so drift is repaired without the vendor.
//! `provision` (EXPERIMENTAL: the UI's private session API) mints the pair; its secret exists only in the
//! target Secret, so a lost or edited Secret means minting a new credential and deleting the old one.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    ByteString,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

pub use super::secret::SecretState;
use super::wak_plan::shift;
use crate::{
    api::{
        Capability, SecureWorkloadCredentialSpec, SecureWorkloadCredentialStatus, conditions::reason, parse_duration,
    },
    vendor::{
        SecretString,
        cisco::{self, ApiCredentials, Liveness},
    },
};

/// Keys of the published Secret. `credentials.json` is exactly what tetpyclient's `credentials_file` reads.
pub const CREDENTIALS_JSON: &str = "credentials.json";
pub const API_KEY: &str = "api_key";
pub const API_SECRET: &str = "api_secret";
pub const ENDPOINT: &str = "endpoint";
pub const CA_CRT: &str = "ca.crt";
/// Keys under which a source Secret may hold the file the UI downloads (third-party tools call it
/// `api_credentials.json`, vendor notes §1.8).
pub const CREDENTIALS_FILE_KEYS: [&str; 2] = [CREDENTIALS_JSON, "api_credentials.json"];

pub const DEFAULT_VERIFY_INTERVAL: Duration = Duration::from_secs(3600);
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(600);

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

/// Validates every duration of the spec, so a bad one is reported before any vendor call.
pub fn check_durations(spec: &SecureWorkloadCredentialSpec) -> Result<(), String> {
    verify_interval(spec)?;
    rotation_every(spec)?;
    grace_period(spec)?;
    Ok(())
}

/// The API's capability as the vendor client names it (both enums carry the vendor's exact strings).
pub fn to_vendor(c: Capability) -> cisco::Capability {
    c.as_str().parse().expect("api::Capability and cisco::Capability hold the same names")
}

pub fn from_vendor(c: cisco::Capability) -> Capability {
    Capability::ALL.into_iter().find(|a| a.as_str() == c.as_str()).expect("cisco::Capability names an api::Capability")
}

/// Reads a pair from a Secret's data: `credentials.json` (or `api_credentials.json`) as the UI downloads it, else
/// `api_key` + `api_secret`. The error names the problem, never a value.
pub fn credentials_from_data(data: &BTreeMap<String, ByteString>) -> Result<ApiCredentials, String> {
    if let Some((key, file)) = CREDENTIALS_FILE_KEYS.iter().find_map(|k| data.get(*k).map(|v| (*k, v))) {
        return ApiCredentials::from_credentials_json(&file.0).map_err(|e| format!("{key}: {e}"));
    }
    let text = |key: &'static str| -> Result<String, String> {
        let bytes = data.get(key).ok_or_else(|| {
            format!("has neither {CREDENTIALS_JSON} nor the keys {API_KEY} and {API_SECRET} (missing {key:?})")
        })?;
        String::from_utf8(bytes.0.clone()).map_err(|_| format!("key {key:?} is not UTF-8"))
    };
    let key = text(API_KEY)?;
    let secret = SecretString::new(text(API_SECRET)?);
    ApiCredentials::new(key, secret).map_err(|e| e.to_string())
}

/// The data of the published Secret. Holds the secret: it goes into the Secret and nowhere else.
pub fn secret_data(pair: &ApiCredentials, endpoint: &str, ca_pem: Option<&str>) -> BTreeMap<String, Vec<u8>> {
    let mut data = BTreeMap::from([
        (CREDENTIALS_JSON.to_owned(), pair.to_credentials_json().expose().as_bytes().to_vec()),
        (API_KEY.to_owned(), pair.api_key().as_bytes().to_vec()),
        (API_SECRET.to_owned(), pair.api_secret().expose().as_bytes().to_vec()),
        (ENDPOINT.to_owned(), endpoint.as_bytes().to_vec()),
    ]);
    if let Some(ca) = ca_pem {
        // One trailing newline, however the CA was given (a Secret value is read trimmed).
        data.insert(CA_CRT.to_owned(), format!("{}\n", ca.trim_end()).into_bytes());
    }
    data
}

/// The endpoint as published: the configured host root without a trailing slash (tetpyclient adds the path).
pub fn endpoint(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
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
    /// Current value of the `workloadkeys.io/rotate` annotation.
    pub rotate_annotation: Option<&'a str>,
}

/// When the pair is next verified: `verifyInterval` after the last positive verification, or now.
pub fn next_verification(status: &SecureWorkloadCredentialStatus, interval: Duration, now: Timestamp) -> Timestamp {
    status.last_verified_at.as_ref().map_or(now, |t| shift(t.0, interval, true))
}

/// Provision mode: when the current credential is due for rotation.
pub fn next_rotation(status: &SecureWorkloadCredentialStatus, every: Option<Duration>) -> Option<Timestamp> {
    Some(shift(status.credential_created_at.as_ref()?.0, every?, true))
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

/// Existing mode. A changed source (or endpoint, or CA), a changed spec, or a due check verifies; a failed
/// check leaves `lastVerifiedAt` alone, so retries (with backoff) keep verifying until the pair is accepted.
fn next_existing_step(status: &SecureWorkloadCredentialStatus, seen: &Observed, verify_at: Timestamp) -> Step {
    let inputs_changed = seen.desired_hash.is_some() && seen.desired_hash != status.secret_hash.as_deref();
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
/// due retirements, requested or scheduled rotation, due verification, and finally waiting.
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
        .filter(|c| c.revoke_at.0 <= seen.now)
        .map(|c| c.credential_id.clone())
        .collect();
    if !due.is_empty() {
        return Ok(Step::RevokeRetired(due));
    }
    let rotate_at = next_rotation(status, rotation_every(spec)?);
    let requested = seen.rotate_annotation.is_some_and(|v| Some(v) != status.rotate_annotation.as_deref());
    let scheduled = rotate_at.is_some_and(|t| t <= seen.now);
    if requested || scheduled || !same_set(&status.credential_capabilities, &spec.capabilities) {
        return Ok(Step::StartRotation);
    }
    if verify_at <= seen.now {
        return Ok(Step::Verify);
    }
    let next = status.retiring_credentials.iter().map(|c| c.revoke_at.0).chain(rotate_at).chain([verify_at]).min();
    Ok(Step::Wait(next.unwrap_or(verify_at)))
}

fn same_set(a: &[Capability], b: &[Capability]) -> bool {
    a.iter().all(|c| b.contains(c)) && b.iter().all(|c| a.contains(c))
}

/// The vendor's description of a minted credential: the user's text plus the UID marker crash recovery needs.
pub fn vendor_description(spec: &SecureWorkloadCredentialSpec, uid: &str) -> String {
    let text = spec.source.provision.as_ref().and_then(|p| p.description.as_deref());
    super::wak_plan::vendor_description(text, uid)
}

/// What a verification found, in the API's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub liveness: Liveness,
    pub verified: Vec<Capability>,
    pub missing: Vec<Capability>,
    pub unverified: Vec<Capability>,
}

impl From<&cisco::Verification> for Checked {
    fn from(v: &cisco::Verification) -> Self {
        let map = |l: &[cisco::Capability]| l.iter().copied().map(from_vendor).collect();
        Checked {
            liveness: v.liveness,
            verified: map(&v.verified),
            missing: map(&v.missing),
            unverified: map(&v.unverified),
        }
    }
}

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
    checked: &Checked,
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
    use crate::api::RetiringCredential;

    fn existing() -> SecureWorkloadCredentialSpec {
        serde_json::from_value(serde_json::json!({
            "connection": {"url": "https://sw.example.com"},
            "source": {"existing": {"secretRef": {"name": "ui-key"}}},
            "capabilities": ["flow_inventory_query", "software_download"],
            "verifyInterval": "60s"
        }))
        .unwrap()
    }

    fn provision() -> SecureWorkloadCredentialSpec {
        serde_json::from_value(serde_json::json!({
            "connection": {"url": "https://sw.example.com"},
            "source": {"provision": {"loginSecretRef": {"name": "login"}, "description": "payments"}},
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
        Observed { now: ts(now), generation: Some(1), secret, desired_hash: None, rotate_annotation: None }
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
        assert!(check_durations(&bare).is_err());
    }

    #[test]
    fn capabilities_map_between_api_and_vendor_by_name() {
        for c in Capability::ALL {
            assert_eq!(to_vendor(c).as_str(), c.as_str());
            assert_eq!(from_vendor(to_vendor(c)), c);
        }
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

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect()
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef";
    const SECRET: &str = "fedcba9876543210fedcba9876543210deadbeef";

    #[test]
    fn source_is_read_from_the_two_keys_or_the_downloaded_file() {
        let pair = credentials_from_data(&data(&[(API_KEY, KEY), (API_SECRET, &format!("{SECRET}\n"))])).unwrap();
        assert_eq!((pair.api_key(), pair.api_secret().expose()), (KEY, SECRET));
        let file = format!(r#"{{"api_key": "{KEY}", "api_secret": "{SECRET}"}}"#);
        for name in CREDENTIALS_FILE_KEYS {
            let pair = credentials_from_data(&data(&[(name, &file)])).unwrap();
            assert_eq!((pair.api_key(), pair.api_secret().expose()), (KEY, SECRET));
        }
    }

    #[test]
    fn source_problems_are_named_without_values() {
        let cases = [
            (data(&[(API_KEY, KEY)]), "missing \"api_secret\""),
            (data(&[]), "has neither credentials.json"),
            (
                data(&[(CREDENTIALS_JSON, &format!(r#"{{"api_key": "{KEY}", "api_secret": "{SECRET}""#))]),
                "not valid JSON",
            ),
            (
                data(&[(CREDENTIALS_JSON, &format!(r#"{{"api_key": "{KEY}", "secret": "{SECRET}"}}"#))]),
                "no \"api_secret\"",
            ),
            (data(&[(API_KEY, KEY), (API_SECRET, "has space")]), "printable ASCII"),
        ];
        for (input, expected) in cases {
            let problem = credentials_from_data(&input).unwrap_err();
            assert!(problem.contains(expected), "{problem:?} should contain {expected:?}");
            assert!(!problem.contains(SECRET) && !problem.contains(KEY), "{problem}");
        }
        let not_utf8 = BTreeMap::from([
            (API_KEY.to_owned(), ByteString(KEY.into())),
            (API_SECRET.to_owned(), ByteString(vec![0xff, 0xfe])),
        ]);
        assert!(credentials_from_data(&not_utf8).unwrap_err().contains("not UTF-8"));
    }

    #[test]
    fn published_secret_is_what_tetpyclient_reads() {
        let pair = ApiCredentials::new(KEY, SecretString::new(SECRET)).unwrap();
        let d = secret_data(&pair, "https://sw.example.com", None);
        let doc: serde_json::Value = serde_json::from_slice(&d[CREDENTIALS_JSON]).unwrap();
        assert_eq!(doc, serde_json::json!({"api_key": KEY, "api_secret": SECRET}));
        assert_eq!(d[API_KEY], KEY.as_bytes());
        assert_eq!(d[API_SECRET], SECRET.as_bytes());
        assert_eq!(d[ENDPOINT], b"https://sw.example.com");
        assert!(!d.contains_key(CA_CRT), "ca.crt only when a CA is configured");
        for ca in ["-----BEGIN CERTIFICATE-----", "-----BEGIN CERTIFICATE-----\n\n"] {
            let with_ca = secret_data(&pair, "https://sw.example.com", Some(ca));
            assert_eq!(with_ca[CA_CRT], b"-----BEGIN CERTIFICATE-----\n");
        }
        assert_eq!(endpoint(" https://sw.example.com/ "), "https://sw.example.com");
    }

    fn checked(liveness: Liveness, missing: Vec<Capability>) -> Checked {
        Checked {
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

    #[test]
    fn description_carries_the_uid_marker() {
        assert_eq!(vendor_description(&provision(), "u-1"), "payments [workloadkeys.io/uid=u-1]");
    }
}
