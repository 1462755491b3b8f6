//! What both kinds share about the keys they keep at a vendor: the ownership marker that crash recovery and cleanup
//! look for, the description that carries it, the clamped time arithmetic of lifetimes and grace periods, and when a
//! rotation asked for with `workloadkeys.io/rotate` may happen. Pure.
//!
//! Ownership: nothing an app team writes is proof of it. A key belongs to a resource only when its vendor
//! description *ends with* exactly that resource's marker, which holds the resource's UID and a random nonce made
//! when the resource first records a create intent and kept in its status (`ownerNonce`). Free-text fields may not
//! contain [`MARKER_PREFIX`] (refused at admission and again at runtime), and every description the operator writes
//! ends with its own resource's marker, so no resource can make a key that another would read as its own.

use std::time::Duration;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};
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

/// The least time between two rotations of one resource asked for with `workloadkeys.io/rotate`: each costs vendor
/// requests, and an annotation changed in a loop must not spend the budget every namespace shares.
pub const MANUAL_ROTATION_SPACING: Duration = Duration::from_secs(60);

/// What the `workloadkeys.io/rotate` annotation asks for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateRequest {
    /// Nothing: no annotation, or a value already acted upon.
    None,
    /// A new value: rotate now.
    Now,
    /// A new value within [`MANUAL_ROTATION_SPACING`] of the last one acted upon: rotate at this instant.
    At(Timestamp),
}

impl RotateRequest {
    /// The instant a deferred request falls due.
    pub fn due(self) -> Option<Timestamp> {
        match self {
            RotateRequest::At(t) => Some(t),
            _ => None,
        }
    }
}

/// What the annotation's current value (`annotation`) asks for, given the value last acted upon (`acted_on`) and
/// when (`acted_at`): a new value rotates now, or [`MANUAL_ROTATION_SPACING`] after the last one acted upon.
pub fn rotate_request(
    annotation: Option<&str>,
    acted_on: Option<&str>,
    acted_at: Option<Timestamp>,
    now: Timestamp,
) -> RotateRequest {
    let Some(value) = annotation else { return RotateRequest::None };
    if acted_on == Some(value) {
        return RotateRequest::None;
    }
    match acted_at.map(|t| shift(t, MANUAL_ROTATION_SPACING, true)) {
        Some(allowed) if allowed > now => RotateRequest::At(allowed),
        _ => RotateRequest::Now,
    }
}

/// Records that a rotation starting `now` answers the annotation's current value: `acted_on` becomes it, and
/// `acted_at` moves when it is a new value.
pub fn record_rotate_request(
    acted_on: &mut Option<String>,
    acted_at: &mut Option<Time>,
    annotation: Option<&str>,
    now: Timestamp,
) {
    if let Some(value) = annotation
        && acted_on.as_deref() != Some(value)
    {
        *acted_on = Some(value.to_owned());
        *acted_at = Some(Time(now));
    }
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
    fn a_new_rotate_value_rotates_at_most_once_a_minute() {
        let ts = |s| Timestamp::from_second(s).unwrap();
        assert_eq!(rotate_request(None, Some("1"), Some(ts(0)), ts(10)), RotateRequest::None, "no annotation");
        assert_eq!(rotate_request(Some("1"), Some("1"), Some(ts(0)), ts(10)), RotateRequest::None, "acted upon");
        assert_eq!(rotate_request(Some("1"), None, None, ts(10)), RotateRequest::Now, "the first one");
        assert_eq!(rotate_request(Some("2"), Some("1"), None, ts(10)), RotateRequest::Now, "acted upon before times");
        assert_eq!(rotate_request(Some("2"), Some("1"), Some(ts(0)), ts(10)), RotateRequest::At(ts(60)), "too soon");
        assert_eq!(rotate_request(Some("2"), Some("1"), Some(ts(0)), ts(59)).due(), Some(ts(60)));
        assert_eq!(rotate_request(Some("2"), Some("1"), Some(ts(0)), ts(60)), RotateRequest::Now, "a minute on");
        assert_eq!(rotate_request(Some("2"), Some("1"), Some(ts(0)), ts(600)), RotateRequest::Now);
        assert_eq!(RotateRequest::Now.due(), None);
    }

    #[test]
    fn acting_on_a_rotate_value_moves_its_time_only_when_it_is_new() {
        let ts = |s| Timestamp::from_second(s).unwrap();
        let (mut value, mut at) = (None, None);
        record_rotate_request(&mut value, &mut at, None, ts(5));
        assert_eq!((value.as_deref(), at.clone()), (None, None), "a scheduled rotation, no annotation");
        record_rotate_request(&mut value, &mut at, Some("1"), ts(10));
        assert_eq!((value.as_deref(), at.clone()), (Some("1"), Some(Time(ts(10)))));
        record_rotate_request(&mut value, &mut at, Some("1"), ts(500));
        assert_eq!(at, Some(Time(ts(10))), "the same value: a scheduled rotation, the time stays");
        record_rotate_request(&mut value, &mut at, Some("2"), ts(600));
        assert_eq!((value.as_deref(), at), (Some("2"), Some(Time(ts(600)))));
    }

    #[test]
    fn shift_clamps_at_the_ends() {
        let t = Timestamp::from_second(0).unwrap();
        assert_eq!(shift(t, Duration::from_secs(5), true), Timestamp::from_second(5).unwrap());
        assert_eq!(shift(t, Duration::from_secs(5), false), Timestamp::from_second(-5).unwrap());
        assert_eq!(shift(Timestamp::MAX, Duration::from_secs(5), true), Timestamp::MAX);
    }
}
