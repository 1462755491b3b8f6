//! Proving a key pair works and which capabilities it has (docs/vendor-apis.md §9.2): one read-only signed GET
//! per capability that has a probe; the rest are reported as unverified, never as verified.

use reqwest::Method;

use super::{
    capability::Capability,
    client::{ApiCall, CiscoClient, Rejection},
};
use crate::clients::{ErrorKind, VendorError};

/// Probe of the pair itself when no listed capability has one: cheap, and allowed by either of two
/// capabilities (`app_policy_management` or `user_role_scope_management`).
pub const LIVENESS_PROBE_PATH: &str = "/app_scopes";

/// Whether the vendor accepts the key pair at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The signature was accepted.
    Ok,
    /// 401 `Unknown credentials`: the key does not exist (deleted or revoked in the UI).
    UnknownKey,
    /// 403 `Invalid request` on every probe: the secret is wrong (or the clock is off by minutes).
    SecretRejected,
}

/// The outcome of [`CiscoClient::verify`]. Each wanted capability is in exactly one of the three lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub liveness: Liveness,
    /// Proven by a successful probe.
    pub verified: Vec<Capability>,
    /// Its probe was refused with a signature the vendor accepted.
    pub missing: Vec<Capability>,
    /// No probe exists, the probe is not available on this release, or the pair itself was refused.
    pub unverified: Vec<Capability>,
}

impl Verification {
    /// The pair works and nothing that could be checked is missing.
    pub fn is_usable(&self) -> bool {
        self.liveness == Liveness::Ok && self.missing.is_empty()
    }

    fn refused(liveness: Liveness, wanted: &[Capability]) -> Self {
        Verification { liveness, verified: vec![], missing: vec![], unverified: wanted.to_vec() }
    }
}

/// What one probe answered.
enum ProbeResult {
    Accepted,
    /// 403 with another body: signature fine, capability missing.
    Refused,
    /// 403 `Invalid request`: bad signature, or, if another probe is accepted, the vendor's way of
    /// saying the capability is missing (its real body for that case is UNCONFIRMED).
    InvalidRequest,
    /// 404 or another client error: this release has no such endpoint; cannot tell.
    Inconclusive,
    /// 401 `Unknown credentials`.
    UnknownKey,
}

impl CiscoClient {
    /// Checks the pair and each wanted capability. `Err` only for failures worth retrying or fixing
    /// elsewhere (network, TLS, 429, 5xx); credential problems are in [`Verification::liveness`].
    pub async fn verify(&self, wanted: &[Capability]) -> Result<Verification, VendorError> {
        let mut wanted_unique: Vec<Capability> = Vec::with_capacity(wanted.len());
        for c in wanted {
            if !wanted_unique.contains(c) {
                wanted_unique.push(*c);
            }
        }
        let wanted = wanted_unique;
        let probed: Vec<(Capability, &'static str)> =
            wanted.iter().filter_map(|c| c.probe_path().map(|p| (*c, p))).collect();

        if probed.is_empty() {
            let liveness = match self.probe(LIVENESS_PROBE_PATH).await? {
                ProbeResult::Accepted | ProbeResult::Refused | ProbeResult::Inconclusive => Liveness::Ok,
                ProbeResult::InvalidRequest => Liveness::SecretRejected,
                ProbeResult::UnknownKey => Liveness::UnknownKey,
            };
            return Ok(match liveness {
                Liveness::Ok => Verification { liveness, verified: vec![], missing: vec![], unverified: wanted },
                other => Verification::refused(other, &wanted),
            });
        }

        let mut results = Vec::with_capacity(probed.len());
        for (capability, path) in &probed {
            match self.probe(path).await? {
                ProbeResult::UnknownKey => return Ok(Verification::refused(Liveness::UnknownKey, &wanted)),
                result => results.push((*capability, result)),
            }
        }
        // One accepted signature proves the secret; then an "Invalid request" elsewhere can only mean
        // that endpoint refused this key.
        let signature_accepted = results.iter().any(|(_, r)| matches!(r, ProbeResult::Accepted | ProbeResult::Refused));
        if !signature_accepted && results.iter().any(|(_, r)| matches!(r, ProbeResult::InvalidRequest)) {
            return Ok(Verification::refused(Liveness::SecretRejected, &wanted));
        }
        let mut v = Verification { liveness: Liveness::Ok, verified: vec![], missing: vec![], unverified: vec![] };
        for capability in &wanted {
            match results.iter().find(|(c, _)| c == capability).map(|(_, r)| r) {
                Some(ProbeResult::Accepted) => v.verified.push(*capability),
                Some(ProbeResult::Refused | ProbeResult::InvalidRequest) => v.missing.push(*capability),
                Some(ProbeResult::Inconclusive | ProbeResult::UnknownKey) | None => v.unverified.push(*capability),
            }
        }
        Ok(v)
    }

    async fn probe(&self, path: &str) -> Result<ProbeResult, VendorError> {
        match self.send(ApiCall { method: Method::GET, path, query: &[], body: None }).await {
            Ok(_) => Ok(ProbeResult::Accepted),
            Err(e) => match Rejection::of(&e) {
                Some(Rejection::MissingCapability) => Ok(ProbeResult::Refused),
                Some(Rejection::SecretRejected) => Ok(ProbeResult::InvalidRequest),
                Some(Rejection::UnknownKey) => Ok(ProbeResult::UnknownKey),
                None if matches!(e.kind, ErrorKind::NotFound | ErrorKind::Invalid) && e.status.is_some() => {
                    Ok(ProbeResult::Inconclusive)
                }
                None => Err(e),
            },
        }
    }
}
