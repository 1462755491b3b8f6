//! What both kinds share about the keys they keep at a vendor: the ownership marker that crash recovery and cleanup
//! look for, the description that carries it, and the clamped time arithmetic of lifetimes and grace periods. Pure.
//!
//! Ownership: nothing an app team writes is proof of it. A key belongs to a resource only when its vendor
//! description *ends with* exactly that resource's marker, which holds the resource's UID and a random nonce made
//! when the resource first records a create intent and kept in its status (`ownerNonce`). Free-text fields may not
//! contain [`MARKER_PREFIX`] (refused at admission and again at runtime), and every description the operator writes
//! ends with its own resource's marker, so no resource can make a key that another would read as its own.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rand::RngCore as _;

/// What every ownership marker starts with; refused in every free-text field an app team writes.
pub const MARKER_PREFIX: &str = "workloadkeys.io/";

/// The owner of the keys a resource keeps at a vendor: its UID and the nonce recorded in its status.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    uid: &'a str,
    /// `None` for a resource whose last create intent was recorded by an operator before nonces existed.
    nonce: Option<&'a str>,
}

impl<'a> Owner<'a> {
    pub fn new(uid: &'a str, nonce: Option<&'a str>) -> Self {
        Self { uid, nonce }
    }

    /// The marker appended to the vendor description of every key this owner creates.
    pub fn marker(&self) -> String {
        match self.nonce {
            Some(nonce) => format!("[{MARKER_PREFIX}owner={}.{nonce}]", self.uid),
            None => self.legacy_marker(),
        }
    }

    /// The marker written before nonces existed: still matched (as the exact ending) so that keys made then are
    /// found after an upgrade.
    fn legacy_marker(&self) -> String {
        format!("[{MARKER_PREFIX}uid={}]", self.uid)
    }

    /// Whether a key with this vendor description was created for this owner's current intent: the description
    /// ends with exactly [`Owner::marker`]. Never a substring match: text before the end is the app team's.
    pub fn created(&self, description: Option<&str>) -> bool {
        description.is_some_and(|d| d.ends_with(&self.marker()))
    }

    /// Whether a key with this description was created by this owner at any time: its current marker, or the marker
    /// an operator without nonces gave it. For cleanup, which must also find keys made before an upgrade.
    pub fn owns(&self, description: Option<&str>) -> bool {
        self.created(description) || description.is_some_and(|d| d.ends_with(&self.legacy_marker()))
    }
}

/// A fresh owner nonce: 128 random bits, hex.
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The nonce in `slot`, made now if there is none; `true` when it was made now (and so must be recorded in status
/// before any key carries it).
pub fn ensure_nonce(slot: &mut Option<String>) -> bool {
    if slot.is_some() {
        return false;
    }
    *slot = Some(new_nonce());
    true
}

pub fn vendor_description(user_text: Option<&str>, owner: &Owner) -> String {
    match user_text.map(str::trim).filter(|t| !t.is_empty()) {
        Some(text) => format!("{text} {}", owner.marker()),
        None => format!("Managed by workload-key-operator {}", owner.marker()),
    }
}

/// Refuses free text that holds an ownership marker's prefix: `field` names it in the message.
pub fn check_free_text(field: &str, text: Option<&str>) -> Result<(), String> {
    match text {
        Some(t) if t.contains(MARKER_PREFIX) => Err(format!(
            "{field} must not contain '{MARKER_PREFIX}': that text marks which resource owns a vendor key and only \
             the operator writes it"
        )),
        _ => Ok(()),
    }
}

/// `t` moved by `d`, forwards or backwards, clamped to the representable range.
pub fn shift(t: Timestamp, d: Duration, forward: bool) -> Timestamp {
    let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    let d = if forward { d } else { -d };
    t.checked_add(d).unwrap_or(if forward { Timestamp::MAX } else { Timestamp::MIN })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b6f5d7e-1111-4c4c-9a9a-123456789abc";

    #[test]
    fn description_ends_with_the_owner_marker() {
        let owner = Owner::new("u-1", Some("n1"));
        assert_eq!(vendor_description(Some("Read-only"), &owner), "Read-only [workloadkeys.io/owner=u-1.n1]");
        assert!(vendor_description(None, &owner).ends_with("[workloadkeys.io/owner=u-1.n1]"));
        let legacy = Owner::new("u-1", None);
        assert_eq!(vendor_description(Some("Read-only"), &legacy), "Read-only [workloadkeys.io/uid=u-1]");
    }

    #[test]
    fn only_the_exact_trailing_marker_proves_ownership() {
        let victim = Owner::new(UID, Some("aaaa"));
        let ours = vendor_description(Some("payments"), &victim);
        assert!(victim.created(Some(&ours)) && victim.owns(Some(&ours)));
        // Another resource's key whose free text names the victim's marker: it still ends with its own marker.
        let attacker = Owner::new("u-attacker", Some("bbbb"));
        let forged = vendor_description(Some(&victim.marker()), &attacker);
        assert!(forged.contains(&victim.marker()));
        assert!(!victim.created(Some(&forged)) && !victim.owns(Some(&forged)));
        assert!(attacker.created(Some(&forged)));
        // The same UID with another nonce (a guess) is not the victim's.
        let guess = vendor_description(None, &Owner::new(UID, Some("cccc")));
        assert!(!victim.created(Some(&guess)));
        assert!(!victim.created(None) && !victim.created(Some("")));
        assert!(!victim.created(Some(&format!("{ours} trailing"))));
    }

    #[test]
    fn cleanup_also_finds_keys_made_before_nonces() {
        let old = vendor_description(Some("x"), &Owner::new(UID, None));
        let owner = Owner::new(UID, Some("aaaa"));
        assert!(owner.owns(Some(&old)), "a key made before the upgrade is still revoked on delete");
        assert!(!owner.created(Some(&old)), "but never adopted as the answer to an intent made with a nonce");
        let not_trailing = format!("[workloadkeys.io/uid={UID}] [workloadkeys.io/owner=other.n]");
        assert!(!owner.owns(Some(&not_trailing)));
    }

    #[test]
    fn nonces_are_random_and_kept() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        let mut slot = None;
        assert!(ensure_nonce(&mut slot));
        let made = slot.clone();
        assert!(!ensure_nonce(&mut slot));
        assert_eq!(slot, made);
    }

    #[test]
    fn free_text_may_not_carry_a_marker() {
        assert!(check_free_text("spec.description", Some("payments team")).is_ok());
        assert!(check_free_text("spec.description", None).is_ok());
        let err = check_free_text("spec.description", Some("x [workloadkeys.io/uid=u]")).unwrap_err();
        assert!(err.starts_with("spec.description must not contain 'workloadkeys.io/'"), "{err}");
    }

    #[test]
    fn shift_clamps_at_the_ends() {
        let t = Timestamp::from_second(0).unwrap();
        assert_eq!(shift(t, Duration::from_secs(5), true), Timestamp::from_second(5).unwrap());
        assert_eq!(shift(t, Duration::from_secs(5), false), Timestamp::from_second(-5).unwrap());
        assert_eq!(shift(Timestamp::MAX, Duration::from_secs(5), true), Timestamp::MAX);
    }
}
