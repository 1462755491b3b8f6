//! What both kinds share about the keys they keep at a vendor: the UID marker that crash recovery looks for, the
//! description that carries it, and the clamped time arithmetic of lifetimes and grace periods. Pure.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The marker appended to the vendor description; crash recovery adopts only keys carrying it.
pub fn uid_marker(uid: &str) -> String {
    format!("[workloadkeys.io/uid={uid}]")
}

pub fn vendor_description(user_text: Option<&str>, uid: &str) -> String {
    match user_text.map(str::trim).filter(|t| !t.is_empty()) {
        Some(text) => format!("{text} {}", uid_marker(uid)),
        None => format!("Managed by workload-key-operator {}", uid_marker(uid)),
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

    #[test]
    fn description_carries_the_uid_marker() {
        assert_eq!(vendor_description(Some("Read-only"), "u-1"), "Read-only [workloadkeys.io/uid=u-1]");
        assert!(vendor_description(None, "u-1").ends_with("[workloadkeys.io/uid=u-1]"));
    }

    #[test]
    fn shift_clamps_at_the_ends() {
        let t = Timestamp::from_second(0).unwrap();
        assert_eq!(shift(t, Duration::from_secs(5), true), Timestamp::from_second(5).unwrap());
        assert_eq!(shift(t, Duration::from_secs(5), false), Timestamp::from_second(-5).unwrap());
        assert_eq!(shift(Timestamp::MAX, Duration::from_secs(5), true), Timestamp::MAX);
    }
}
