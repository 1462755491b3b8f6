//! `provision` mode, **EXPERIMENTAL**: mints, rotates and deletes keys through the Secure Workload web UI's private
//! session API ([`UiSession`](crate::clients::cisco::UiSession)), which Cisco neither documents nor supports, and
//! which works only for a local-authentication user without MFA or SSO. Crash safety follows
//! docs/architecture.md §4.1: the intent is recorded in status before a mint; after a restart the credential is
//! found by the UID marker in its description. The UI shows a secret only in the create answer, so a found
//! credential whose pair did not reach the Secret is deleted and minted again: never two live for one intent.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    ResourceExt,
    runtime::{controller::Action, events::EventType},
};

use super::{
    Connection, bound_to, connection, pair_in, plan,
    plan::{Mode, Retire},
    rejected, source, verification, verify,
};
use crate::{
    api::{DeletionPolicy, RetiringCredential, SecureWorkloadCredential, SecureWorkloadCredentialStatus},
    clients::cisco::{ApiCredentials, Liveness, UiCredential},
    controller::{
        context::{Context, display_name},
        error::Error,
        failpoint, intent,
        managed::{Managed, ManagedStatus},
        provider::{self, Provider},
        reconcile::{self, namespace_terminating, patch_status, status_of, uid},
        secret::{self, is_owned_by},
        vendor_key::{self, Owner, shift},
    },
};

/// Shown once as a Warning Event, and in every provision-mode message.
pub(super) const EXPERIMENTAL_NOTE: &str = "EXPERIMENTAL: provision mode mints keys through the Secure Workload web UI's \
                                 private session API, which Cisco does not document or support; it needs a \
                                 local-authentication user without MFA or SSO";

/// Deletes every credential minted for a resource that lost access to `provider` ([`reconcile::access_lost`]):
/// current, retiring and an unfinished mint's. An imported pair is never touched at the vendor (its copy, the
/// Secret, is deleted by the frame). The status forgets them.
pub(super) async fn revoke_all(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    provider: &Provider,
) -> Result<reconcile::Revoked<Box<SecureWorkloadCredentialStatus>>, Error> {
    let status = *status_of(obj);
    let mut ids: Vec<String> = status
        .credential_id
        .iter()
        .cloned()
        .chain(status.retiring_credentials.iter().map(|c| c.credential_id.clone()))
        .collect();
    if !ids.is_empty() || status.pending_credential == Some(true) {
        let conn = connection(provider, ctx).await?;
        bound_to(obj, &conn)?;
        if status.pending_credential == Some(true) {
            let uid = uid(obj)?;
            let owner = Owner::new(&uid, status.owner_nonce.as_deref());
            let listed = conn.ui(ctx, |s| async move { s.list_credentials().await }).await?;
            ids.extend(listed.into_iter().filter(|c| owner.created(c.description.as_deref())).map(|c| c.id));
        }
        ids.dedup();
        for id in &ids {
            delete_credential(ctx, &conn, id).await?;
        }
    }
    let status = SecureWorkloadCredentialStatus {
        conditions: status.conditions,
        observed_generation: status.observed_generation,
        owner_nonce: status.owner_nonce,
        endpoint: status.endpoint,
        rotate_annotation: status.rotate_annotation,
        failed_attempts: status.failed_attempts,
        ..Default::default()
    };
    Ok(reconcile::Revoked { ids, status: Box::new(status) })
}

/// Provision mode: verify the minted pair the target Secret holds. A key the vendor no longer knows is
/// replaced only once the UI confirms the credential is gone (so a slow vendor never causes a mint storm).
pub(super) async fn verify_minted(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    conn: &Connection,
    mut status: SecureWorkloadCredentialStatus,
) -> Result<SecureWorkloadCredentialStatus, Error> {
    let pair = pair_in(ctx, &obj.namespace().unwrap_or_default(), &obj.target_secret()).await?;
    let checked = verify(obj, ctx, conn, &pair, &mut status).await?;
    let fingerprint = pair.key_fingerprint();
    let Some(message) = verification::rejection_message(checked.liveness, &fingerprint) else { return Ok(status) };
    let id = status.credential_id.clone().unwrap_or_default();
    if checked.liveness == Liveness::UnknownKey
        && !conn.ui(ctx, |s| async move { s.list_credentials().await }).await?.iter().any(|c| c.id == id)
    {
        status.credential_id = None;
        let note = format!(
            "EXPERIMENTAL provision mode: credential {id} (API key {fingerprint}) was deleted at the vendor; \
             minting a replacement"
        );
        ctx.event(obj, EventType::Warning, "CredentialLost", "Verify", note).await;
        return Ok(status);
    }
    Err(rejected(obj, ctx, &status, message).await)
}

async fn delete_credential(ctx: &Context, conn: &Connection, id: &str) -> Result<(), Error> {
    conn.ui(ctx, |s| async move { s.delete_credential(id).await }).await
}

/// Provision mode: mint a credential (recording the intent first), write the Secret, make it current. Returns the
/// status to record and the pair now in the Secret.
pub(super) async fn mint(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    conn: &Connection,
    mut status: SecureWorkloadCredentialStatus,
    recover: bool,
    retire: Retire,
) -> Result<(SecureWorkloadCredentialStatus, ApiCredentials), Error> {
    let uid = uid(obj)?;
    if recover {
        let owner = Owner::new(&uid, status.owner_nonce.as_deref());
        if let Some(adopted) = recover_mint(obj, ctx, conn, &status, &owner).await? {
            let note = format!(
                "EXPERIMENTAL provision mode: recovered credential {} (API key {}) minted before a restart",
                adopted.id, adopted.fingerprint
            );
            ctx.event(obj, EventType::Normal, "CredentialAdopted", "Mint", note).await;
            return complete_mint(obj, status, adopted, retire);
        }
    } else {
        // Intent first: after a crash the credential is found by its UID marker instead of being minted twice.
        status.pending_credential = Some(true);
        status.endpoint = Some(conn.endpoint.clone());
        intent::record(ctx, obj, &mut status).await?;
    }
    if vendor_key::ensure_nonce(&mut status.owner_nonce) {
        // Recovering an intent recorded before nonces: the nonce is recorded before any credential carries it.
        patch_status(ctx, obj, &status).await?;
    }
    let description = plan::vendor_description(&obj.spec, &Owner::new(&uid, status.owner_nonce.as_deref()));
    let wanted = &obj.spec.capabilities;
    let (description, wanted) = (description.as_str(), wanted.as_slice());
    let created = conn.ui(ctx, |s| async move { s.create_credential(description, wanted).await }).await?;
    failpoint::hit("after-vendor-create");
    let data = source::secret_data(&created.credentials, &conn.endpoint, conn.tls.ca_pem.as_deref());
    let secret = secret::io::write(ctx, obj, data).await?;
    failpoint::hit("after-secret-write");
    let minted = Minted {
        id: created.id,
        fingerprint: created.credentials.key_fingerprint(),
        secret,
        pair: created.credentials,
    };
    let replaced = status.credential_id.clone().filter(|old| *old != minted.id);
    let name = obj.target_secret();
    let (reason, note) = match (&replaced, retire) {
        (None, _) => ("CredentialMinted", format!("wrote Secret {name}")),
        (Some(old), Retire::AfterGrace) => {
            ("CredentialRotated", format!("wrote Secret {name}; credential {old} is deleted after the grace period"))
        }
        (Some(old), Retire::Now) => (
            "SecretRepaired",
            format!("Secret {name} was missing or edited: wrote it anew; credential {old} is deleted at once"),
        ),
    };
    let note = format!(
        "EXPERIMENTAL provision mode: minted credential {} (API key {}) through the UI session API; {note}",
        minted.id, minted.fingerprint
    );
    ctx.event(obj, EventType::Normal, reason, "Mint", note).await;
    complete_mint(obj, status, minted, retire)
}

/// A credential that is now current: its UI id, key fingerprint, pair, and the Secret holding it as written.
struct Minted {
    id: String,
    fingerprint: String,
    secret: secret::io::WrittenSecret,
    pair: ApiCredentials,
}

/// Makes `minted` current. The credential it replaces is kept for the grace period (rotation), or deleted by
/// the very next step (`Retire::Now`: its Secret was lost or edited); either way through `retiringCredentials`,
/// so a crash cannot forget it.
fn complete_mint(
    obj: &SecureWorkloadCredential,
    mut status: SecureWorkloadCredentialStatus,
    minted: Minted,
    retire: Retire,
) -> Result<(SecureWorkloadCredentialStatus, ApiCredentials), Error> {
    let now = Timestamp::now();
    if let Some(old) = status.credential_id.take().filter(|old| *old != minted.id) {
        let grace = match retire {
            Retire::AfterGrace => plan::grace_period(&obj.spec).map_err(Error::InvalidSpec)?,
            Retire::Now => Duration::ZERO,
        };
        status
            .retiring_credentials
            .push(RetiringCredential { credential_id: old, revoke_at: Time(shift(now, grace, true)) });
        status.last_rotated_at = Some(Time(now));
    }
    status.credential_id = Some(minted.id);
    status.pending_credential = None;
    status.credential_created_at = Some(Time(now));
    status.credential_capabilities = obj.spec.capabilities.clone();
    status.api_key_fingerprint = Some(minted.fingerprint);
    status.record_written(minted.secret);
    status.secret_name = Some(obj.target_secret());
    // The new pair is verified before the Secret is said to hold a working one ([`verify_at_once`], or the next
    // step).
    status.last_verified_at = None;
    Ok((status, minted.pair))
}

/// A pair just minted (or adopted) and in the Secret, verified at once with the pair in hand, so that the mint's
/// own status write records the verification and, when that makes the resource Ready, `Ready` too: no read of the
/// Secret to get the pair back, two status writes and the `Ready` Event fewer per new credential (the mint's Event
/// tells). Anything short of a clean pass (a refusal, a vendor error) is left to the `Verify` step, which reads the
/// pair back and reports it as it always has; missing capabilities are recorded, and told by the step that settles.
pub(super) async fn verify_at_once(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    conn: &Connection,
    status: SecureWorkloadCredentialStatus,
    pair: &ApiCredentials,
) -> Result<SecureWorkloadCredentialStatus, Error> {
    let mut verified = status.clone();
    match verify(obj, ctx, conn, pair, &mut verified).await {
        Ok(checked) if checked.liveness == Liveness::Ok => {}
        Ok(_) => return Ok(status),
        Err(e) => {
            tracing::debug!(resource = %display_name(obj), error = %e, "verifying a new pair at once failed; the next step verifies it");
            return Ok(status);
        }
    }
    // As the API server will keep it, so that the message `finish` builds is the same.
    let mut verified = reconcile::as_stored(verified);
    let every = plan::rotation_every(&obj.spec).map_err(Error::InvalidSpec)?;
    let (ready, _, message) = verification::readiness(
        Mode::Provision,
        &verified,
        &obj.target_secret(),
        plan::next_rotation(&verified, every),
    );
    if ready {
        reconcile::ready_in(obj, &mut verified, message);
    }
    Ok(verified)
}

/// After a crash between recording the intent and recording its result: credentials whose description ends with
/// exactly `owner`'s marker that the status does not know. One whose pair the target Secret already holds (the crash came after the write) is
/// adopted; the secrets of the others were only ever in a lost create answer, so they are deleted.
async fn recover_mint(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    conn: &Connection,
    status: &SecureWorkloadCredentialStatus,
    owner: &Owner<'_>,
) -> Result<Option<Minted>, Error> {
    let uid = uid(obj)?;
    let known: Vec<&str> = status
        .credential_id
        .iter()
        .map(String::as_str)
        .chain(status.retiring_credentials.iter().map(|c| c.credential_id.as_str()))
        .collect();
    let listed = conn.ui(ctx, |s| async move { s.list_credentials().await }).await?;
    let orphans: Vec<UiCredential> = listed
        .into_iter()
        .filter(|c| owner.created(c.description.as_deref()) && !known.contains(&c.id.as_str()))
        .collect();
    if orphans.is_empty() {
        return Ok(None);
    }
    let held = held_pair(obj, ctx, &uid).await?;
    let mut adopted = None;
    for orphan in orphans {
        match &held {
            Some((pair, held)) if adopted.is_none() && orphan.api_key.as_deref() == Some(pair.api_key()) => {
                adopted = Some(Minted {
                    id: orphan.id,
                    fingerprint: pair.key_fingerprint(),
                    secret: held.clone(),
                    pair: pair.clone(),
                });
            }
            _ => {
                tracing::info!(resource = %display_name(obj), credential_id = %orphan.id,
                    "deleting a credential minted before a restart whose secret was lost");
                delete_credential(ctx, conn, &orphan.id).await?;
            }
        }
    }
    Ok(adopted)
}

/// The pair in the target Secret when the resource owns it, with the hash of the Secret's data and its version.
async fn held_pair(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    uid: &str,
) -> Result<Option<(ApiCredentials, secret::io::WrittenSecret)>, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let secret = match ctx.secret(&ns, &obj.target_secret()).await {
        Ok(s) if is_owned_by(&s, uid) => s,
        Ok(_) | Err(Error::SecretNotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let data = secret.data.clone().unwrap_or_default();
    let Ok(pair) = source::credentials_from_data(&data) else { return Ok(None) };
    let hash = super::secret::data_hash(&ctx.settings.hash_key, uid, &data);
    // Written by the mint being recovered, with the template the resource has now (or a later step renders anew).
    let template = secret::template::digest(obj.secret_template().and_then(|t| t.template.as_ref()));
    Ok(Some((pair, secret::io::WrittenSecret { hash, version: secret.resource_version(), template })))
}

pub(super) async fn revoke_retired(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    conn: &Connection,
    mut status: SecureWorkloadCredentialStatus,
    ids: &[String],
) -> Result<SecureWorkloadCredentialStatus, Error> {
    for id in ids {
        delete_credential(ctx, conn, id).await?;
        status.retiring_credentials.retain(|c| c.credential_id != *id);
        let note = format!("EXPERIMENTAL provision mode: deleted replaced credential {id} at the vendor");
        ctx.event(obj, EventType::Normal, "CredentialDeleted", "Revoke", note).await;
    }
    Ok(status)
}

/// Finalizer cleanup of a minted credential. With `deletionPolicy: Delete` (the default) deletes every credential
/// carrying the resource's UID marker: the current one, those in their grace period, and any minted before a crash.
/// `Retain` leaves them, unless the provider's policy forbids it.
pub(super) async fn cleanup(obj: Arc<SecureWorkloadCredential>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    if obj.spec.deletion_policy == Some(DeletionPolicy::Retain) {
        match provider::retain_forbidden(&ctx, &ns, &obj.spec.provider_ref).await? {
            Some(note) => ctx.event(obj.as_ref(), EventType::Warning, "RetainRefused", "Delete", note).await,
            None => {
                let note = "deletionPolicy Retain: the minted credential is left at the vendor".to_owned();
                ctx.event(obj.as_ref(), EventType::Normal, "CredentialRetained", "Delete", note).await;
                return Ok(Action::await_change());
            }
        }
    }
    let uid = uid(obj.as_ref())?;
    let status = status_of(obj.as_ref());
    let owner = Owner::new(&uid, status.owner_nonce.as_deref());
    let revoke_skipped = async |why: String| {
        let note = format!("could not delete the minted credential: {why}; delete it in the Secure Workload UI");
        ctx.event(obj.as_ref(), EventType::Warning, "RevokeSkipped", "Delete", note).await;
        Ok(Action::await_change())
    };
    // The provider's finalizer keeps it while we use it; one that is gone anyway cannot delete anything.
    let provider = match provider::fetch(&ctx, &ns, &obj.spec.provider_ref).await {
        Ok(p) => p,
        Err(e @ Error::ProviderNotFound { .. }) => return revoke_skipped(e.to_string()).await,
        Err(e) => return Err(e),
    };
    let listed = async {
        let conn = connection(&provider, &ctx).await?;
        bound_to(&obj, &conn)?;
        let listed = conn.ui(&ctx, |s| async move { s.list_credentials().await }).await?;
        Ok::<_, Error>((conn, listed))
    };
    let (conn, listed) = match listed.await {
        Ok(found) => found,
        Err(e @ (Error::SecretNotFound { .. } | Error::InvalidSecret { .. }))
            if namespace_terminating(&ctx, obj.as_ref()).await =>
        {
            // The namespace is going away and took the login with it: nothing can delete the credential now.
            return revoke_skipped(e.to_string()).await;
        }
        Err(e @ Error::EndpointChanged { .. }) => return revoke_skipped(e.to_string()).await,
        Err(e) => return Err(e),
    };
    let ours: Vec<String> = listed.into_iter().filter(|c| owner.owns(c.description.as_deref())).map(|c| c.id).collect();
    for id in &ours {
        delete_credential(&ctx, &conn, id).await?;
    }
    let note = format!("EXPERIMENTAL provision mode: deleted credential(s) {ours:?} at the vendor");
    ctx.event(obj.as_ref(), EventType::Normal, "CredentialDeleted", "Delete", note).await;
    Ok(Action::await_change())
}
