//! The first intent of a new resource, carried by the patch that adds its finalizer.
//!
//! A vendor create is recorded before it is made (the intent: the key's name, the nonce of its ownership marker),
//! so that after a crash the key is found instead of made twice; and the finalizer must be there before it, so that
//! a deletion waits for its revocation. Both are needed before a new resource's first create, but the status and
//! the finalizers are written through different endpoints. So the frame's first write of a new resource, the one
//! that adds the finalizer, also carries the intent of its first create in the annotation
//! [`ANNOTATION_FIRST_INTENT`]: one request instead of two.
//!
//! The annotation stands for the status only while the status has never been written: from the first status
//! write on it is ignored. It is bound to the resource's UID by an HMAC under the operator's hash key, so an
//! annotation copied from another resource, or edited, is not taken. Ownership of vendor keys is proven by their
//! marker (UID and nonce) as ever, never by the annotation.

use hmac::{Hmac, Mac};
use kube::ResourceExt;
use serde::Serialize;
use sha2::Sha256;

use super::{
    context::Context,
    error::Error,
    managed::{Managed, ManagedStatus},
    reconcile::patch_status,
    vendor_key,
};
use crate::api::ANNOTATION_FIRST_INTENT;

/// The annotation value for `intent` of the resource `uid`: the HMAC, a space, the status as JSON.
fn seal<S: ManagedStatus>(hash_key: &[u8], uid: &str, intent: &S) -> Option<String> {
    let json = serde_json::to_string(intent).ok()?;
    Some(format!("{} {json}", mac(hash_key, uid, &json)))
}

fn mac(hash_key: &[u8], uid: &str, json: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(hash_key).expect("HMAC takes keys of any length");
    mac.update(b"first-intent\0");
    mac.update(uid.as_bytes());
    mac.update(&[0]);
    mac.update(json.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The annotations the finalizer's patch of a new resource `cached` carries: its first intent with a new nonce,
/// when its status has never been written and its kind makes something at the vendor.
pub fn first_annotation<K: Managed>(ctx: &Context, cached: &K) -> Option<(String, String)> {
    if cached.status().is_some() {
        return None;
    }
    let mut intent = cached.first_intent()?;
    vendor_key::ensure_nonce(intent.owner_nonce_mut());
    let value = seal(&ctx.settings.hash_key, &cached.uid()?, &intent)?;
    Some((ANNOTATION_FIRST_INTENT.to_owned(), value))
}

/// The first intent `obj` carries, if its status has never been written and the annotation is its own.
pub fn first_intent<K: Managed>(ctx: &Context, obj: &K) -> Option<K::Status> {
    if obj.status().is_some() {
        return None;
    }
    let (sealed, json) = obj.annotations().get(ANNOTATION_FIRST_INTENT)?.split_once(' ')?;
    if mac(&ctx.settings.hash_key, &obj.uid()?, json) != sealed {
        tracing::warn!(resource = %obj.name_any(), "ignoring a first-intent annotation not made for this resource");
        return None;
    }
    serde_json::from_str(json).ok()
}

/// `obj` with the status its first intent stands for, while its status has never been written: what a reconcile
/// decides on and a cleanup revokes after the reconcile that wrote it (which may have ended anywhere, a crash
/// included), and what a failure records when its reconcile went on to the create ([`record`]).
pub fn with_first_intent<K: Managed>(ctx: &Context, mut obj: K) -> K {
    if let Some(intent) = first_intent(ctx, &obj) {
        *obj.status_mut() = Some(intent);
    }
    obj
}

/// Records `status`, the intent of a vendor create, before the create (its nonce made now if it has none). Not
/// written again when the finalizer's patch already carried this very intent (the resource's first create, in
/// the reconcile that added the finalizer): then its nonce is the one recorded there.
pub async fn record<K: Managed, S: ManagedStatus>(ctx: &Context, obj: &K, status: &mut S) -> Result<(), Error> {
    if let Some(mut first) = first_intent(ctx, obj)
        && same_create(&first, status)
    {
        *status.owner_nonce_mut() = first.owner_nonce_mut().take();
        if let Some(uid) = obj.uid() {
            ctx.written.creating_on_first_intent(&uid, true);
        }
        return Ok(());
    }
    vendor_key::ensure_nonce(status.owner_nonce_mut());
    patch_status(ctx, obj, status).await.map(drop)
}

/// Whether `status` is the create `first` announced: every field `first` sets but the nonce is the same in both.
fn same_create(first: &impl Serialize, status: &impl Serialize) -> bool {
    let (Ok(serde_json::Value::Object(first)), Ok(status)) =
        (serde_json::to_value(first), serde_json::to_value(status))
    else {
        return false;
    };
    first.iter().filter(|(k, _)| *k != "ownerNonce").all(|(k, v)| status.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WorkloadApiKeyStatus;

    fn intent(name: &str) -> WorkloadApiKeyStatus {
        WorkloadApiKeyStatus {
            pending_key_name: Some(name.into()),
            key_generation: Some(1),
            owner_nonce: Some("n1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_seal_binds_the_intent_to_the_resource_and_the_key() {
        let sealed = seal(b"k", "uid-a", &intent("a")).unwrap();
        let (m, json) = sealed.split_once(' ').unwrap();
        assert_eq!(mac(b"k", "uid-a", json), m);
        assert_ne!(mac(b"k", "uid-b", json), m, "another resource's");
        assert_ne!(mac(b"other", "uid-a", json), m, "another hash key's");
        assert_ne!(mac(b"k", "uid-a", &json.replace("\"a\"", "\"b\"")), m, "an edited intent");
    }

    #[test]
    fn a_create_is_the_announced_one_when_every_announced_field_but_the_nonce_matches() {
        let mut status = intent("a");
        status.owner_nonce = None;
        status.endpoint = Some("https://dsm".into());
        assert!(same_create(&intent("a"), &status), "the nonce and fields not announced do not count");
        assert!(!same_create(&intent("a"), &intent("b")), "another key name");
        status.key_generation = Some(2);
        assert!(!same_create(&intent("a"), &status), "another generation");
    }
}
