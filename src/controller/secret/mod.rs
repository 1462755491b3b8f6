//! The Secrets the operator writes: pure builders, the ownership predicate, and the keyed hash that detects
//! edits without keeping secret material anywhere but in the Secret itself.

pub mod io;
pub mod template;

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use sha2::Sha256;

use crate::api::{LABEL_MANAGED_BY, MANAGED_BY, SECRET_TYPE_OPAQUE, SecretTemplate};

/// A Secret just written: the keyed hash of its data, the version the write gave it, and the digest of the
/// template it was rendered with ([`template::digest`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenSecret {
    pub hash: String,
    pub version: Option<String>,
    pub template: Option<String>,
}

/// What the target Secret looks like right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretState {
    /// Absent (never written, deleted, or the spec now names another Secret).
    Missing,
    /// Ours, and its data hashes to what we last wrote.
    Intact,
    /// Ours, but its data was edited.
    Edited,
    /// Exists and is not ours: never touched.
    Foreign,
}

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "workload-key-operator";

/// Whether `secret` belongs to the resource with `owner_uid`: it has a controller owner reference to it.
/// A Secret without one (made by hand, or by another controller) is never overwritten.
pub fn is_owned_by(secret: &Secret, owner_uid: &str) -> bool {
    secret
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|r| r.controller == Some(true) && r.uid == owner_uid)
}

/// The complete desired Secret: data, the managed-by label, the user's labels/annotations, the owner reference, the
/// type the template asks for (default `Opaque`). `data` is what [`template::render`] made of a template.
pub fn desired_secret(
    name: &str,
    namespace: &str,
    template: Option<&SecretTemplate>,
    owner: OwnerReference,
    data: BTreeMap<String, Vec<u8>>,
) -> Secret {
    let mut labels = template.map(|t| t.labels.clone()).unwrap_or_default();
    labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
    let annotations = template.map(|t| t.annotations.clone()).filter(|a| !a.is_empty());
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            annotations,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some(secret_type(template).to_owned()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Default::default()
    }
}

/// The type of the Secret `template` describes.
pub fn secret_type(template: Option<&SecretTemplate>) -> &str {
    template.and_then(|t| t.template.as_ref()).map_or(SECRET_TYPE_OPAQUE, |t| t.secret_type())
}

/// HMAC-SHA256 over the Secret's data (sorted keys, length-prefixed), keyed by the operator's hash key and the
/// resource UID. Stored in status so drift is detected without storing the secret; useless for guessing it.
pub fn data_hash(hash_key: &[u8], owner_uid: &str, data: &BTreeMap<String, ByteString>) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(hash_key).expect("HMAC takes keys of any length");
    mac.update(owner_uid.as_bytes());
    mac.update(&[0]);
    for (k, v) in data {
        mac.update(&(k.len() as u64).to_be_bytes());
        mac.update(k.as_bytes());
        mac.update(&(v.0.len() as u64).to_be_bytes());
        mac.update(&v.0);
    }
    format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
}

/// The data map of a Secret as `ByteString`s (what the API returns), for hashing a desired Secret.
pub fn data_of(secret: &Secret) -> BTreeMap<String, ByteString> {
    secret.data.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "workloadkeys.io/v1alpha1".into(),
            kind: "WorkloadApiKey".into(),
            name: "x".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn ownership_needs_a_controller_reference_with_our_uid() {
        let mut s = Secret::default();
        assert!(!is_owned_by(&s, "u1"), "a hand-made Secret is foreign");
        s.metadata.owner_references = Some(vec![owner("u2")]);
        assert!(!is_owned_by(&s, "u1"), "another owner's Secret is foreign");
        let mut not_controller = owner("u1");
        not_controller.controller = Some(false);
        s.metadata.owner_references = Some(vec![not_controller]);
        assert!(!is_owned_by(&s, "u1"), "a non-controller reference does not make it ours");
        s.metadata.owner_references = Some(vec![owner("u1")]);
        assert!(is_owned_by(&s, "u1"));
    }

    #[test]
    fn desired_secret_carries_label_owner_and_template() {
        let template = SecretTemplate {
            name: None,
            labels: BTreeMap::from([("team".into(), "a".into())]),
            annotations: BTreeMap::from([("note".into(), "n".into())]),
            ..Default::default()
        };
        let s = desired_secret("s", "ns", Some(&template), owner("u1"), BTreeMap::from([("k".into(), b"v".to_vec())]));
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_MANAGED_BY], MANAGED_BY);
        assert_eq!(labels["team"], "a");
        assert_eq!(s.metadata.annotations.as_ref().unwrap()["note"], "n");
        assert!(is_owned_by(&s, "u1"));
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(s.data.as_ref().unwrap()["k"].0, b"v");
    }

    #[test]
    fn hash_changes_with_data_uid_and_key_and_hides_the_value() {
        let d1 = BTreeMap::from([("api-secret-key".to_owned(), ByteString(b"2:abc".to_vec()))]);
        let d2 = BTreeMap::from([("api-secret-key".to_owned(), ByteString(b"2:abd".to_vec()))]);
        let h = data_hash(b"k", "u1", &d1);
        assert_eq!(h, data_hash(b"k", "u1", &d1));
        assert_ne!(h, data_hash(b"k", "u1", &d2));
        assert_ne!(h, data_hash(b"k", "u2", &d1));
        assert_ne!(h, data_hash(b"other", "u1", &d1));
        assert!(!h.contains("abc"));
        // Key/value boundaries are unambiguous.
        let a = BTreeMap::from([("ab".to_owned(), ByteString(b"c".to_vec()))]);
        let b = BTreeMap::from([("a".to_owned(), ByteString(b"bc".to_vec()))]);
        assert_ne!(data_hash(b"k", "u", &a), data_hash(b"k", "u", &b));
    }
}
