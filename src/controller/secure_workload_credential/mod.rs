//! SecureWorkloadCredential reconciler: thin, in the shape of the WorkloadApiKey one. The shared
//! [`reconcile`](super::reconcile) frame does the cross-cutting work (finalizer, metrics, error → status);
//! `apply` runs the steps [`plan::next_step`] decides; `cleanup` deletes minted credentials.
//!
//! `existing` mode imports a pair made in the UI: verified with signed read-only requests, then published.
//! `provision` mode is **EXPERIMENTAL**: it mints, rotates and deletes keys through the Secure Workload web UI's
//! private session API ([`UiSession`]), which Cisco neither documents nor supports, and which works only for a
//! local-authentication user without MFA or SSO. Crash safety follows docs/architecture.md §4.1: the intent is
//! recorded in status before a mint; after a restart the credential is found by the UID marker in its description.
//! The UI shows a secret only in the create answer, so a found credential whose pair did not reach the Secret is
//! deleted and minted again: never two live for one intent.

pub mod plan;
pub mod source;
pub mod verification;

use std::{future::Future, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action, events::EventType, finalizer},
};
use serde_json::json;

use plan::{Mode, Observed, Retire, SecretState, Step};

use super::{
    context::{Context, display_name},
    error::Error,
    failpoint,
    metrics::Series,
    provider::{
        self, Provider, connect,
        policy::{self, Overlap},
    },
    reconcile::{
        self, Managed, ManagedStatus, Pass, namespace_terminating, patch_status, set_resource_metric, settle,
        status_of, uid,
    },
    secret,
    secret::is_owned_by,
    vendor_key::{self, Owner, shift},
};
use crate::{
    api::{
        ANNOTATION_ROTATE, DEFAULT_GRACE_PERIOD, DeletionPolicy, LABEL_REFERENCED, ProviderRef, RetiringCredential,
        SecretReference, SecretTemplate, SecureWorkloadCredential, SecureWorkloadCredentialSpec,
        SecureWorkloadCredentialStatus,
    },
    clients::{
        VendorError,
        cisco::{self, ApiCredentials, CiscoClient, Liveness, UiCredential, UiSession},
    },
};

/// Shown once as a Warning Event, and in every provision-mode message.
const EXPERIMENTAL_NOTE: &str = "EXPERIMENTAL: provision mode mints keys through the Secure Workload web UI's \
                                 private session API, which Cisco does not document or support; it needs a \
                                 local-authentication user without MFA or SSO";

/// Entry point for the controller runtime.
pub async fn reconcile(
    obj: Arc<SecureWorkloadCredential>,
    ctx: Arc<Context>,
) -> Result<Action, finalizer::Error<Error>> {
    reconcile::reconcile(obj, ctx, apply, cleanup).await
}

impl Managed for SecureWorkloadCredential {
    fn target_secret(&self) -> String {
        self.spec.secret.as_ref().and_then(|s| s.name.clone()).unwrap_or_else(|| self.name_any())
    }

    fn referenced_secrets(&self) -> Vec<&str> {
        let source = &self.spec.source;
        [source.existing.as_ref().map(|e| e.secret_ref.name.as_str())].into_iter().flatten().collect()
    }

    fn provider_ref(&self) -> &ProviderRef {
        &self.spec.provider_ref
    }

    fn secret_template(&self) -> Option<&SecretTemplate> {
        self.spec.secret.as_deref()
    }

    fn secret_template_mut(&mut self) -> Option<&mut SecretTemplate> {
        self.spec.secret.as_deref_mut()
    }

    fn rollout_timeout(&self) -> Result<Duration, String> {
        plan::rollout_timeout(&self.spec)
    }
}

/// The provider's Cisco endpoint (see [`connect`]) and provision mode's sign-in (its `cisco.loginSecretRef`).
struct Connection {
    inner: connect::Connection,
    login: Option<SecretReference>,
}

impl std::ops::Deref for Connection {
    type Target = connect::Connection;
    fn deref(&self) -> &connect::Connection {
        &self.inner
    }
}

async fn connection(provider: &Provider, ctx: &Context) -> Result<Connection, Error> {
    let login = provider.cisco()?.login_secret_ref.clone();
    Ok(Connection { inner: connect::Connection::of(provider, ctx).await?, login })
}

/// Provision mode's credentials are bound to the endpoint that minted them: refuse to act when the provider now
/// points elsewhere.
fn bound_to(obj: &SecureWorkloadCredential, conn: &Connection) -> Result<(), Error> {
    let status = *status_of(obj);
    let has_credentials = status.credential_id.is_some() || !status.retiring_credentials.is_empty();
    match status.endpoint {
        Some(recorded) if has_credentials && recorded != conn.endpoint => Err(Error::EndpointChanged {
            what: format!("credential {}", status.credential_id.as_deref().unwrap_or("?")),
            provider: conn.provider.clone(),
            recorded,
            current: conn.endpoint.clone(),
        }),
        _ => Ok(()),
    }
}

impl Connection {
    fn client(&self, ctx: &Context, pair: &ApiCredentials) -> Result<Arc<CiscoClient>, Error> {
        connect::cisco_client(&self.inner, ctx, pair)
    }

    /// Runs `call` on the provider's signed-in UI session (EXPERIMENTAL), see [`connect::with_ui_session`].
    async fn ui<T, F, Fut>(&self, ctx: &Context, call: F) -> Result<T, Error>
    where
        F: Fn(Arc<UiSession>) -> Fut,
        Fut: Future<Output = Result<T, VendorError>>,
    {
        connect::with_ui_session(&self.inner, ctx, self.login.as_ref(), call).await
    }
}

/// The pair held by a Secret of the resource's namespace (source, or the target in provision mode).
async fn pair_in(ctx: &Context, namespace: &str, name: &str) -> Result<ApiCredentials, Error> {
    let secret = ctx.secret(namespace, name).await?;
    source::credentials_from_data(&secret.data.unwrap_or_default())
        .map_err(|problem| Error::InvalidSecret { name: name.to_owned(), problem })
}

/// Existing mode: the imported pair's Secret gets the label the operator's Secret watch selects, so a new pair
/// put there is picked up at once (its data is never written).
async fn watch_source(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    if let Some(s) = api.get_metadata_opt(name).await?
        && !s.labels().contains_key(LABEL_REFERENCED)
        && s.metadata.deletion_timestamp.is_none()
    {
        let patch = json!({"metadata": {"labels": {LABEL_REFERENCED: "true"}}});
        api.patch_metadata(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    Ok(())
}

/// Existing mode: the source pair and the Secret data it yields, read on every pass (Kubernetes reads only).
struct Source {
    pair: ApiCredentials,
    data: secret::io::SecretContent,
    hash: String,
}

/// The provider's policy on capabilities and, for minted credentials, on how long a replaced one may live and
/// whether one may outlive its resource: refused before any vendor call.
fn within_policy(spec: &SecureWorkloadCredentialSpec, provider: &Provider) -> Result<(), Error> {
    let violation = |problem| Error::PolicyViolation { provider: provider.display(), problem };
    policy::check_capabilities(&provider.policy, &spec.capabilities).map_err(violation)?;
    if spec.source.provision.is_none() {
        return Ok(());
    }
    let rotation = spec.rotation.as_deref();
    let grace = rotation.and_then(|r| r.grace_period.as_deref());
    policy::check_overlap(&provider.policy, Overlap::GracePeriod, grace, DEFAULT_GRACE_PERIOD).map_err(violation)?;
    let rollout_timeout = rotation.and_then(|r| r.rollout_timeout.as_deref());
    let restarts = spec.secret.as_ref().is_some_and(|s| !s.rollout_restart_targets.is_empty());
    policy::check_rollout_timeout(&provider.policy, rollout_timeout, restarts).map_err(violation)?;
    policy::check_deletion_policy(&provider.policy, spec.deletion_policy.unwrap_or_default()).map_err(violation)
}

/// Deletes every credential minted for a resource that lost access to `provider` ([`reconcile::access_lost`]):
/// current, retiring and an unfinished mint's. An imported pair is never touched at the vendor (its copy, the
/// Secret, is deleted by the frame). The status forgets them.
async fn revoke_all(
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

async fn apply(obj: Arc<SecureWorkloadCredential>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ctx = ctx.as_ref();
    let mut obj = obj.as_ref().clone();
    let mode = plan::mode(&obj.spec).map_err(Error::InvalidSpec)?;
    let ns = obj.namespace().unwrap_or_default();
    // Everything the provider decides comes before any vendor call: a refusal costs none.
    let provider = match provider::admit(ctx, &ns, &obj.spec.provider_ref).await {
        Err(e @ Error::NamespaceNotAllowed { .. }) => {
            return Err(reconcile::access_lost(ctx, &obj, e, async |p| revoke_all(&obj, ctx, p).await).await);
        }
        admitted => admitted?,
    };
    if let Err(e) = within_policy(&obj.spec, &provider) {
        return Err(reconcile::access_lost(ctx, &obj, e, async |p| revoke_all(&obj, ctx, p).await).await);
    }
    // Planned with the interval the policy allows (the spec itself is never written; `within_policy` refused one
    // too short).
    let requested = obj.spec.verify_interval.as_deref();
    obj.spec.verify_interval =
        policy::effective_verify_interval(&provider.policy, requested, plan::DEFAULT_VERIFY_INTERVAL)
            .map_err(|problem| Error::PolicyViolation { provider: provider.display(), problem })?;
    let conn = connection(&provider, ctx).await?;
    if mode == Mode::Provision && conn.login.is_none() {
        return Err(Error::InvalidSpec(format!(
            "provision mode signs in with the provider's spec.cisco.loginSecretRef, and {} has none",
            provider.display()
        )));
    }
    bound_to(&obj, &conn)?;
    reconcile::warn_on_first_reconcile(ctx, &obj, provider.insecure_tls(), "InsecureTLS", reconcile::INSECURE_TLS_NOTE)
        .await;
    reconcile::warn_on_first_reconcile(ctx, &obj, mode == Mode::Provision, "Experimental", EXPERIMENTAL_NOTE).await;
    plan::check_spec(&obj.spec).map_err(Error::InvalidSpec)?;
    secret::io::check_template(&obj, &secret::template::SECURE_WORKLOAD_CREDENTIAL_VARS)?;
    let template = secret::template::digest(obj.secret_template().and_then(|t| t.template.as_ref()));
    if mode == Mode::Provision && obj.spec.capabilities.is_empty() {
        return Err(Error::InvalidSpec("provision mode needs at least one capability to mint a key with".into()));
    }
    let source = match &obj.spec.source.existing {
        Some(existing) => {
            let ns = obj.namespace().unwrap_or_default();
            let pair = pair_in(ctx, &ns, &existing.secret_ref.name).await?;
            watch_source(ctx, &ns, &existing.secret_ref.name).await?;
            let data = source::secret_data(&pair, &conn.endpoint, conn.tls.ca_pem.as_deref());
            let hash = secret::io::hash_of(ctx, &obj, &data)?;
            Some(Source { pair, data, hash })
        }
        None => None,
    };

    reconcile::run_steps(ctx, &obj, |obj, secret, gate| {
        let (conn, source, template) = (&conn, &source, template.as_deref());
        async move {
            let obj = &obj;
            let status = *status_of(obj);
            let seen = Observed {
                now: Timestamp::now(),
                generation: obj.metadata.generation,
                secret,
                desired_hash: source.as_ref().map(|s| s.hash.as_str()),
                template,
                rotate_annotation: obj.annotations().get(ANNOTATION_ROTATE).map(String::as_str),
                gate,
            };
            let step = plan::next_step(&obj.spec, mode, &status, &seen).map_err(Error::InvalidSpec)?;
            tracing::debug!(resource = %display_name(obj), ?step, "next step");
            Ok(Pass::Record(Box::new(match (step, &source) {
                (Step::Wait(until), _) => {
                    if mode == Mode::Provision {
                        reconcile::tell_rotation_deferred(ctx, obj, plan::rotate_request(&status, &seen)).await;
                    }
                    return Ok(Pass::Done(finish(obj, ctx, mode, status, until).await?));
                }
                (Step::Verify, Some(source)) => verify_and_publish(obj, ctx, conn, source, status, secret).await?,
                (Step::Verify, None) => verify_minted(obj, ctx, conn, status).await?,
                (Step::Republish, Some(source)) => republish(obj, ctx, source, status).await?,
                (Step::Republish, None) => return Err(Error::InvalidSpec("nothing to republish from".into())),
                (Step::Mint { recover, retire }, _) => mint(obj, ctx, conn, status, recover, retire).await?,
                (Step::StartRotation, _) => {
                    let mut s = status;
                    s.pending_credential = Some(true);
                    let (acted_on, acted_at) = (&mut s.rotate_annotation, &mut s.rotate_annotation_at);
                    vendor_key::record_rotate_request(acted_on, acted_at, seen.rotate_annotation, seen.now);
                    s
                }
                (Step::RevokeRetired(ids), _) => revoke_retired(obj, ctx, conn, status, &ids).await?,
            })))
        }
    })
    .await
}

/// Verifies `pair` (liveness, then one probe per listed capability) and records the outcome in `status`.
/// Network, TLS and rate-limit failures come back as errors; a refused pair is in the result.
async fn verify(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    conn: &Connection,
    pair: &ApiCredentials,
    status: &mut SecureWorkloadCredentialStatus,
) -> Result<cisco::Verification, Error> {
    let wanted = &obj.spec.capabilities;
    let checked = conn.client(ctx, pair)?.verify(wanted).await?;
    verification::record_verification(
        status,
        &checked,
        &pair.key_fingerprint(),
        obj.metadata.generation,
        Timestamp::now(),
    );
    Ok(checked)
}

/// A refused pair: `Verified=False` is recorded now, `Ready=False` by the frame from the returned error.
async fn rejected(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    status: &SecureWorkloadCredentialStatus,
    message: String,
) -> Error {
    if let Err(e) = patch_status(ctx, obj, status).await {
        return e;
    }
    Error::CredentialsRejected(message)
}

/// Existing mode: verify the source pair; when the vendor accepts it, publish it (also with a missing
/// capability, which `Ready` reports; see [`verification::readiness`]).
async fn verify_and_publish(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    conn: &Connection,
    source: &Source,
    mut status: SecureWorkloadCredentialStatus,
    secret_state: SecretState,
) -> Result<SecureWorkloadCredentialStatus, Error> {
    let checked = verify(obj, ctx, conn, &source.pair, &mut status).await?;
    let fingerprint = source.pair.key_fingerprint();
    if let Some(message) = verification::rejection_message(checked.liveness, &fingerprint) {
        return Err(rejected(obj, ctx, &status, message).await);
    }
    let template = secret::template::digest(obj.secret_template().and_then(|t| t.template.as_ref()));
    let changed =
        status.secret_hash.as_deref() != Some(source.hash.as_str()) || status.secret_template_digest != template;
    if changed || secret_state != SecretState::Intact {
        publish(obj, ctx, source.data.clone(), fingerprint.clone(), &mut status).await?;
    }
    if changed {
        let note = format!("published API key {fingerprint} in Secret {}", obj.target_secret());
        ctx.event(obj, EventType::Normal, "SecretPublished", "Publish", note).await;
    }
    status.observed_generation = obj.metadata.generation;
    Ok(status)
}

/// Existing mode: the target Secret was deleted or edited; rebuild it from the source (no vendor call).
async fn republish(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    source: &Source,
    mut status: SecureWorkloadCredentialStatus,
) -> Result<SecureWorkloadCredentialStatus, Error> {
    publish(obj, ctx, source.data.clone(), source.pair.key_fingerprint(), &mut status).await?;
    let note = format!("Secret {} was missing or edited: rewrote it from the source Secret", obj.target_secret());
    ctx.event(obj, EventType::Normal, "SecretRepaired", "Repair", note).await;
    Ok(status)
}

/// Writes the target Secret and records it; a Secret left behind under a previous name is deleted.
async fn publish(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    data: secret::io::SecretContent,
    fingerprint: String,
    status: &mut SecureWorkloadCredentialStatus,
) -> Result<(), Error> {
    let written = secret::io::write(ctx, obj, data).await?;
    let name = obj.target_secret();
    if let Some(old) = status.secret_name.replace(name.clone()).filter(|old| *old != name) {
        secret::io::delete_owned(ctx, obj, &old).await?;
    }
    status.record_written(written);
    status.api_key_fingerprint = Some(fingerprint);
    Ok(())
}

/// Provision mode: verify the minted pair the target Secret holds. A key the vendor no longer knows is
/// replaced only once the UI confirms the credential is gone (so a slow vendor never causes a mint storm).
async fn verify_minted(
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

/// Provision mode: mint a credential (recording the intent first), write the Secret, make it current.
async fn mint(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    conn: &Connection,
    mut status: SecureWorkloadCredentialStatus,
    recover: bool,
    retire: Retire,
) -> Result<SecureWorkloadCredentialStatus, Error> {
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
        vendor_key::ensure_nonce(&mut status.owner_nonce);
        status.endpoint = Some(conn.endpoint.clone());
        patch_status(ctx, obj, &status).await?;
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
    let minted = Minted { id: created.id, fingerprint: created.credentials.key_fingerprint(), secret };
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

/// A credential that is now current: its UI id, key fingerprint, and the Secret holding it as written.
struct Minted {
    id: String,
    fingerprint: String,
    secret: secret::io::WrittenSecret,
}

/// Makes `minted` current. The credential it replaces is kept for the grace period (rotation), or deleted by
/// the very next step (`Retire::Now`: its Secret was lost or edited); either way through `retiringCredentials`,
/// so a crash cannot forget it.
fn complete_mint(
    obj: &SecureWorkloadCredential,
    mut status: SecureWorkloadCredentialStatus,
    minted: Minted,
    retire: Retire,
) -> Result<SecureWorkloadCredentialStatus, Error> {
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
    // The new pair is verified by the next step.
    status.last_verified_at = None;
    Ok(status)
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
                adopted = Some(Minted { id: orphan.id, fingerprint: pair.key_fingerprint(), secret: held.clone() });
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

async fn revoke_retired(
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

/// Records the steady state (`Ready`, or `MissingCapabilities`) and requeues when the next thing is due.
async fn finish(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    mode: Mode,
    status: SecureWorkloadCredentialStatus,
    until: Timestamp,
) -> Result<Action, Error> {
    let rotate_at = match mode {
        Mode::Provision => plan::next_rotation(&status, plan::rotation_every(&obj.spec).map_err(Error::InvalidSpec)?),
        Mode::Existing => None,
    };
    if let Some(t) = rotate_at {
        set_resource_metric(ctx, obj, Series::Renewal, t.as_second());
    }
    let (ready, reason, message) = verification::readiness(mode, &status, &obj.target_secret(), rotate_at);
    settle(ctx, obj, status, ready, reason, message).await?;
    Ok(reconcile::requeue_at(ctx, obj, Some(until)))
}

/// Finalizer cleanup. Imported keys are never touched at the vendor. Provision mode with `deletionPolicy: Delete`
/// (the default) deletes every credential carrying the resource's UID marker: the current one, those in their
/// grace period, and any minted before a crash. `Retain` leaves them.
async fn cleanup(obj: Arc<SecureWorkloadCredential>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconcile::forget_metrics(&ctx, obj.as_ref());
    if obj.spec.source.provision.is_none() {
        return Ok(Action::await_change());
    }
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
