//! WorkloadApiKey reconciler: thin. `reconcile` does the cross-cutting work (finalizer, metrics, error → status);
//! `apply` runs the steps [`wak_plan::next_step`] decides; `cleanup` revokes at the vendor.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{controller::Action, events::EventType, finalizer},
};
use serde_json::json;

use super::{
    context::{Context, digest, display_name, secret_key},
    error::{Error, backoff},
    metrics::{ErrorLabels, ReconcileLabels, ResourceLabels},
    secret::{FIELD_MANAGER, data_hash, data_of, desired_secret, is_owned_by},
    wak_plan::{self, Observed, SecretState, Step},
};
use crate::{
    api::{
        ANNOTATION_ROTATE, DeletionPolicy, FINALIZER, Locale, RetiringKey, RoleRef, WorkloadApiKey, WorkloadApiKeySpec,
        WorkloadApiKeyStatus,
        conditions::{self, READY, reason},
    },
    vendor::{
        ErrorKind,
        trend::{ApiKeyChanges, Auth, IssuedApiKey, LoginCredentials, NewApiKey, TrendApi, TrendClient},
    },
};

const KIND: &str = "WorkloadApiKey";
/// Keys of the Secret the operator writes.
pub const SECRET_KEY: &str = "api-secret-key";
pub const SECRET_KEY_ID: &str = "api-key-id";
pub const SECRET_ENDPOINT: &str = "endpoint";

/// Entry point for the controller runtime.
pub async fn reconcile(obj: Arc<WorkloadApiKey>, ctx: Arc<Context>) -> Result<Action, finalizer::Error<Error>> {
    let labels = ReconcileLabels { kind: KIND.into() };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    let started = std::time::Instant::now();
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<WorkloadApiKey> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, obj.clone(), |event| async {
        match event {
            finalizer::Event::Apply(o) => Ok(apply_or_report(o, ctx.clone()).await),
            finalizer::Event::Cleanup(o) => cleanup(o, ctx.clone()).await,
        }
    })
    .await;
    ctx.metrics.reconcile_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    result
}

pub fn error_policy(obj: Arc<WorkloadApiKey>, err: &finalizer::Error<Error>, ctx: Arc<Context>) -> Action {
    let reason = match err {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.reason(),
        _ => reason::KUBERNETES_ERROR,
    };
    ctx.metrics.reconcile_errors.get_or_create(&ErrorLabels { kind: KIND.into(), reason: reason.into() }).inc();
    tracing::warn!(resource = %display_name(obj.as_ref()), error = %err, "reconcile failed");
    let attempts = obj.status.as_ref().and_then(|s| s.failed_attempts).unwrap_or(0) as u32 + 1;
    Action::requeue(backoff(attempts, None, rand::random()))
}

/// Runs `apply`; a failure becomes `Ready=False` with its reason, an Event on transition, and a backoff requeue.
async fn apply_or_report(obj: Arc<WorkloadApiKey>, ctx: Arc<Context>) -> Action {
    match apply(obj.clone(), &ctx).await {
        Ok(action) => action,
        Err(err) => {
            let reason = err.reason();
            ctx.metrics.reconcile_errors.get_or_create(&ErrorLabels { kind: KIND.into(), reason: reason.into() }).inc();
            tracing::info!(resource = %display_name(obj.as_ref()), reason, error = %err, "not ready");
            // Re-read: `apply` may have recorded progress (e.g. an intent) before failing.
            let api: Api<WorkloadApiKey> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
            let latest = api.get_opt(&obj.name_any()).await.ok().flatten().unwrap_or_else(|| obj.as_ref().clone());
            let mut status = latest.status.clone().unwrap_or_default();
            let attempts = status.failed_attempts.unwrap_or(0).saturating_add(1);
            status.failed_attempts = Some(attempts);
            let changed = conditions::set_condition(
                &mut status.conditions,
                READY,
                false,
                reason,
                err.to_string(),
                latest.metadata.generation,
                Timestamp::now(),
            );
            if let Err(e) = patch_status(&ctx, &latest, &status).await {
                tracing::warn!(error = %e, "could not record failure in status");
            }
            set_ready_metric(&ctx, &latest, false);
            if changed {
                ctx.event(&latest, EventType::Warning, reason, "Reconcile", err.to_string()).await;
            }
            Action::requeue(backoff(attempts as u32, err.retry_after(), rand::random()))
        }
    }
}

/// Everything needed to talk to the vendor for one resource.
struct Vendor {
    client: Arc<dyn TrendApi>,
    endpoint: String,
}

async fn vendor_for(obj: &WorkloadApiKey, ctx: &Context) -> Result<Vendor, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let conn = &obj.spec.connection;
    let insecure = conn.insecure_skip_tls_verify.unwrap_or(false);
    let tls = ctx.tls_options(&ns, conn.ca_bundle.as_deref(), conn.ca_secret_ref.as_ref(), insecure).await?;
    let auth = match (&conn.api_key_secret_ref, &conn.login_secret_ref) {
        (Some(sel), _) => {
            let key = sel.key.as_deref().unwrap_or(SECRET_KEY);
            Auth::ApiKey(ctx.secret_value(&ns, &sel.name, key).await?)
        }
        (None, Some(r)) => {
            let secret = ctx.secret(&ns, &r.name).await?;
            let optional = |k: &str| secret_key(&secret, &r.name, k).ok();
            let mut login = LoginCredentials::new(
                secret_key(&secret, &r.name, "userName")?.expose().to_owned(),
                secret_key(&secret, &r.name, "password")?,
            );
            login.tenant_name = optional("tenantName").map(|s| s.expose().to_owned());
            login.mfa_code = optional("mfaCode");
            Auth::Login(login)
        }
        (None, None) => {
            return Err(Error::InvalidSpec("connection needs apiKeySecretRef or loginSecretRef".into()));
        }
    };
    let endpoint = conn.url.trim_end_matches('/').to_owned();
    let auth_material = match &auth {
        Auth::ApiKey(k) => k.expose().to_owned(),
        Auth::Login(l) => format!("{}\n{}\n{:?}", l.user_name, l.password.expose(), l.tenant_name),
    };
    let key = digest(&[
        b"trend",
        endpoint.as_bytes(),
        tls.ca_pem.as_deref().unwrap_or("").as_bytes(),
        &[u8::from(tls.insecure_skip_verify)],
        auth_material.as_bytes(),
    ]);
    let limiter = ctx.limiters.for_endpoint(&endpoint);
    let client = ctx.cached_client(&key, || Ok(TrendClient::new(&endpoint, auth, &tls, limiter)?))?;
    Ok(Vendor { client, endpoint })
}

async fn role_id(obj: &WorkloadApiKey, vendor: &Vendor, ctx: &Context) -> Result<i64, Error> {
    match &obj.spec.role {
        RoleRef { id: Some(id), .. } => Ok(*id),
        RoleRef { name: Some(name), .. } => {
            if let Some(id) = ctx.cached_role(&vendor.endpoint, name) {
                return Ok(id);
            }
            let role = vendor
                .client
                .find_role_by_name(name)
                .await?
                .ok_or_else(|| Error::RoleNotFound { name: name.clone() })?;
            ctx.cache_role(&vendor.endpoint, name, role.id);
            Ok(role.id)
        }
        RoleRef { name: None, id: None } => Err(Error::InvalidSpec("role needs name or id".into())),
    }
}

fn base_key_name(obj: &WorkloadApiKey) -> String {
    obj.spec.key_name.clone().unwrap_or_else(|| format!("{}-{}", obj.namespace().unwrap_or_default(), obj.name_any()))
}

fn secret_name(obj: &WorkloadApiKey) -> String {
    obj.spec.secret.as_ref().and_then(|s| s.name.clone()).unwrap_or_else(|| obj.name_any())
}

fn uid(obj: &WorkloadApiKey) -> Result<String, Error> {
    obj.uid().ok_or(Error::MissingObjectKey(".metadata.uid"))
}

/// The state of the target Secret, compared with what we last wrote.
async fn observe_secret(
    obj: &WorkloadApiKey,
    ctx: &Context,
    status: &WorkloadApiKeyStatus,
) -> Result<SecretState, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let name = secret_name(obj);
    let Some(secret) = api.get_opt(&name).await? else { return Ok(SecretState::Missing) };
    let uid = uid(obj)?;
    if !is_owned_by(&secret, &uid) {
        return Ok(SecretState::Foreign);
    }
    if status.secret_name.as_deref() != Some(name.as_str()) {
        return Ok(SecretState::Missing);
    }
    let hash = data_hash(&ctx.settings.hash_key, &uid, &data_of(&secret));
    Ok(if status.secret_hash.as_deref() == Some(hash.as_str()) { SecretState::Intact } else { SecretState::Edited })
}

async fn apply(obj: Arc<WorkloadApiKey>, ctx: &Context) -> Result<Action, Error> {
    let mut obj = obj.as_ref().clone();
    if obj.spec.connection.insecure_skip_tls_verify == Some(true)
        && obj.status.as_ref().is_none_or(|s| conditions::find(&s.conditions, READY).is_none())
    {
        ctx.event(
            &obj,
            EventType::Warning,
            "InsecureTLS",
            "Configure",
            "TLS verification is disabled for this connection".into(),
        )
        .await;
    }
    // Validate durations before any vendor call (the API server already checks their shape).
    wak_plan::renew_before(&obj.spec).map_err(Error::InvalidSpec)?;
    wak_plan::grace_period(&obj.spec).map_err(Error::InvalidSpec)?;
    let vendor = vendor_for(&obj, ctx).await?;
    let base = base_key_name(&obj);

    for _ in 0..8 {
        let status = obj.status.clone().unwrap_or_default();
        let secret_state = observe_secret(&obj, ctx, &status).await?;
        if secret_state == SecretState::Foreign {
            return Err(Error::SecretConflict { name: secret_name(&obj) });
        }
        let seen = Observed {
            now: Timestamp::now(),
            generation: obj.metadata.generation,
            secret: secret_state,
            rotate_annotation: obj.annotations().get(ANNOTATION_ROTATE).map(String::as_str),
        };
        let step = wak_plan::next_step(&obj.spec, &status, &base, &seen);
        tracing::debug!(resource = %display_name(&obj), ?step, "next step");
        let new_status = match step {
            Step::Wait(until) => return finish_ready(&obj, ctx, status, until).await,
            Step::Create { name, recover } => create(&obj, ctx, &vendor, status, name, recover).await?,
            Step::StartReplace { name, generation } => {
                let mut s = status;
                s.pending_key_name = Some(name);
                s.key_generation = Some(generation);
                s.rotate_annotation = seen.rotate_annotation.map(str::to_owned).or(s.rotate_annotation);
                s
            }
            Step::Regenerate => regenerate(&obj, ctx, &vendor, status, seen.rotate_annotation).await?,
            Step::Repair => repair(&obj, ctx, &vendor, status).await?,
            Step::Update => update(&obj, ctx, &vendor, status).await?,
            Step::RevokeRetired(ids) => revoke_retired(&obj, ctx, &vendor, status, &ids).await?,
        };
        obj = patch_status(ctx, &obj, &new_status).await?;
    }
    // Still busy after several steps (e.g. a rotation right after a repair): continue promptly.
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// Creates (or, recovering, adopts) the key `name`, writes the Secret, and makes it current. The replaced key,
/// if any, is kept until its grace period ends.
async fn create(
    obj: &WorkloadApiKey,
    ctx: &Context,
    vendor: &Vendor,
    mut status: WorkloadApiKeyStatus,
    name: String,
    recover: bool,
) -> Result<WorkloadApiKeyStatus, Error> {
    let uid = uid(obj)?;
    let role_id = role_id(obj, vendor, ctx).await?;
    if !recover {
        // Intent first: after a crash the key is found by this exact name instead of being created twice.
        status.pending_key_name = Some(name.clone());
        status.key_generation.get_or_insert(1);
        patch_status(ctx, obj, &status).await?;
    }
    let adopted = if recover { adopt(vendor, &name, &uid).await? } else { None };
    let now = Timestamp::now();
    let (expires_at, renew_at) = wak_plan::lifetime_from(&obj.spec, now).map_err(Error::InvalidSpec)?;
    let issued = match adopted {
        Some(id) => {
            tracing::info!(resource = %display_name(obj), key_id = id, "adopting a key created before a restart");
            if let Some(expiry) = expires_at {
                let changes = ApiKeyChanges { expiry_date: Some(expiry.as_millisecond()), ..Default::default() };
                vendor.client.modify_api_key(id, &changes).await?;
            }
            vendor.client.regenerate_secret(id).await?
        }
        None => {
            let key = NewApiKey {
                key_name: name.clone(),
                description: Some(wak_plan::vendor_description(obj.spec.description.as_deref(), &uid)),
                locale: Some(to_vendor_locale(obj.spec.locale.unwrap_or_default())),
                role_id,
                time_zone: obj.spec.time_zone.clone(),
                expiry_date: expires_at.map(|t| t.as_millisecond()),
            };
            let issued = vendor.client.create_api_key(&key).await?;
            if ctx.settings.failpoint.as_deref() == Some("after-vendor-create") {
                tracing::error!(key_id = issued.key.id, "fail-point after-vendor-create: exiting");
                std::process::exit(97);
            }
            issued
        }
    };
    let hash = write_secret(obj, ctx, vendor, &issued).await?;
    let replaced = status.key_id.filter(|old| *old != issued.key.id);
    if let Some(old) = replaced {
        let grace = wak_plan::grace_period(&obj.spec).map_err(Error::InvalidSpec)?;
        status.retiring_keys.push(RetiringKey {
            key_id: old,
            key_name: status.key_name.clone(),
            revoke_at: Time(wak_plan::shift(now, grace, true)),
        });
        status.last_rotated_at = Some(Time(now));
    }
    status.key_id = Some(issued.key.id);
    status.key_name = Some(name.clone());
    status.pending_key_name = None;
    status.role_id = Some(role_id);
    status.secret_name = Some(secret_name(obj));
    status.secret_hash = Some(hash);
    status.created_at = Some(Time(issued.key.created_at().unwrap_or(now)));
    status.expires_at = issued.key.expires_at().or(expires_at).map(Time);
    status.renew_at = renew_at.map(Time);
    status.observed_generation = obj.metadata.generation;
    let (reason, note) = match replaced {
        Some(old) => (
            "KeyRotated",
            format!("created key {} ({name}); key {old} is revoked after the grace period", issued.key.id),
        ),
        None => ("KeyCreated", format!("created key {} ({name}) and wrote Secret {}", issued.key.id, secret_name(obj))),
    };
    ctx.event(obj, EventType::Normal, reason, "CreateKey", note).await;
    Ok(status)
}

/// A key named exactly `name` with our UID marker, from a create whose result was never recorded.
/// Extra matches (only possible through outside interference) are deleted so exactly one remains.
async fn adopt(vendor: &Vendor, name: &str, uid: &str) -> Result<Option<i64>, Error> {
    let marker = wak_plan::uid_marker(uid);
    let mut ours: Vec<i64> = vendor
        .client
        .find_api_keys_by_name(name)
        .await?
        .into_iter()
        .filter(|k| k.key_name == name && k.description.as_deref().is_some_and(|d| d.contains(&marker)))
        .map(|k| k.id)
        .collect();
    ours.sort_unstable();
    let keep = ours.pop();
    for extra in ours {
        delete_key(vendor, extra).await?;
    }
    Ok(keep)
}

async fn regenerate(
    obj: &WorkloadApiKey,
    ctx: &Context,
    vendor: &Vendor,
    mut status: WorkloadApiKeyStatus,
    annotation: Option<&str>,
) -> Result<WorkloadApiKeyStatus, Error> {
    let id = status.key_id.ok_or(Error::MissingObjectKey(".status.keyId"))?;
    let now = Timestamp::now();
    let (expires_at, renew_at) = wak_plan::lifetime_from(&obj.spec, now).map_err(Error::InvalidSpec)?;
    if let Some(expiry) = expires_at {
        let changes = ApiKeyChanges { expiry_date: Some(expiry.as_millisecond()), ..Default::default() };
        if let Err(e) = vendor.client.modify_api_key(id, &changes).await {
            return Err(lost_key_or(e, &mut status));
        }
    }
    let issued = match vendor.client.regenerate_secret(id).await {
        Ok(i) => i,
        Err(e) => return Err(lost_key_or(e, &mut status)),
    };
    status.secret_hash = Some(write_secret(obj, ctx, vendor, &issued).await?);
    status.secret_name = Some(secret_name(obj));
    status.expires_at = expires_at.map(Time);
    status.renew_at = renew_at.map(Time);
    status.last_rotated_at = Some(Time(now));
    status.rotate_annotation = annotation.map(str::to_owned).or(status.rotate_annotation);
    ctx.event(obj, EventType::Normal, "SecretRegenerated", "Rotate", format!("regenerated the secret of key {id}"))
        .await;
    Ok(status)
}

/// The Secret is missing or was edited: a fresh secret for the current key (the old one stops working at once).
async fn repair(
    obj: &WorkloadApiKey,
    ctx: &Context,
    vendor: &Vendor,
    mut status: WorkloadApiKeyStatus,
) -> Result<WorkloadApiKeyStatus, Error> {
    let id = status.key_id.ok_or(Error::MissingObjectKey(".status.keyId"))?;
    let issued = match vendor.client.regenerate_secret(id).await {
        Ok(i) => i,
        Err(e) => return Err(lost_key_or(e, &mut status)),
    };
    status.secret_hash = Some(write_secret(obj, ctx, vendor, &issued).await?);
    let previous = status.secret_name.replace(secret_name(obj));
    if let Some(old) = previous.filter(|old| *old != secret_name(obj)) {
        delete_owned_secret(obj, ctx, &old).await?;
    }
    ctx.event(
        obj,
        EventType::Normal,
        "SecretRepaired",
        "Repair",
        format!(
            "Secret {} was missing or edited: wrote a fresh secret for key {id}; the replaced one is revoked",
            secret_name(obj)
        ),
    )
    .await;
    Ok(status)
}

/// Brings the vendor key's attributes in line with a changed spec.
async fn update(
    obj: &WorkloadApiKey,
    ctx: &Context,
    vendor: &Vendor,
    mut status: WorkloadApiKeyStatus,
) -> Result<WorkloadApiKeyStatus, Error> {
    let id = status.key_id.ok_or(Error::MissingObjectKey(".status.keyId"))?;
    let uid = uid(obj)?;
    let role_id = role_id(obj, vendor, ctx).await?;
    let name = wak_plan::key_name_for(&base_key_name(obj), status.key_generation.unwrap_or(1));
    let created = status.created_at.as_ref().map(|t| t.0).unwrap_or_else(Timestamp::now);
    let (expires_at, renew_at) = wak_plan::lifetime_from(&obj.spec, created).map_err(Error::InvalidSpec)?;
    let changes = ApiKeyChanges {
        key_name: Some(name.clone()),
        description: Some(wak_plan::vendor_description(obj.spec.description.as_deref(), &uid)),
        locale: Some(to_vendor_locale(obj.spec.locale.unwrap_or_default())),
        role_id: Some(role_id),
        time_zone: obj.spec.time_zone.clone(),
        expiry_date: expires_at.map(|t| t.as_millisecond()),
        active: None,
    };
    if let Err(e) = vendor.client.modify_api_key(id, &changes).await {
        return Err(lost_key_or(e, &mut status));
    }
    status.key_name = Some(name);
    status.role_id = Some(role_id);
    status.expires_at = expires_at.map(Time);
    status.renew_at = renew_at.map(Time);
    status.observed_generation = obj.metadata.generation;
    Ok(status)
}

async fn revoke_retired(
    obj: &WorkloadApiKey,
    ctx: &Context,
    vendor: &Vendor,
    mut status: WorkloadApiKeyStatus,
    ids: &[i64],
) -> Result<WorkloadApiKeyStatus, Error> {
    for id in ids {
        delete_key(vendor, *id).await?;
        status.retiring_keys.retain(|k| k.key_id != *id);
        ctx.event(
            obj,
            EventType::Normal,
            "KeyRevoked",
            "Revoke",
            format!("deleted replaced key {id} after its grace period"),
        )
        .await;
    }
    Ok(status)
}

/// Deletes a vendor key; one already gone counts as deleted.
async fn delete_key(vendor: &Vendor, id: i64) -> Result<(), Error> {
    match vendor.client.delete_api_key(id).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A 404 on the current key means it was deleted at the vendor: forget it so the next step creates a new one.
fn lost_key_or(e: crate::vendor::VendorError, status: &mut WorkloadApiKeyStatus) -> Error {
    if e.kind == ErrorKind::NotFound {
        status.key_id = None;
        status.key_generation = Some(status.key_generation.unwrap_or(1) + 1);
    }
    e.into()
}

/// Writes the Secret by server-side apply and returns the keyed hash of its data.
async fn write_secret(
    obj: &WorkloadApiKey,
    ctx: &Context,
    vendor: &Vendor,
    issued: &IssuedApiKey,
) -> Result<String, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = secret_name(obj);
    let uid = uid(obj)?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    // Re-check right before writing: a Secret that appeared meanwhile and is not ours is never overwritten.
    if let Some(existing) = api.get_opt(&name).await?
        && !is_owned_by(&existing, &uid)
    {
        return Err(Error::SecretConflict { name });
    }
    let data = BTreeMap::from([
        (SECRET_KEY.to_owned(), issued.secret_key.expose().as_bytes().to_vec()),
        (SECRET_KEY_ID.to_owned(), issued.key.id.to_string().into_bytes()),
        (SECRET_ENDPOINT.to_owned(), vendor.endpoint.clone().into_bytes()),
    ]);
    let owner = obj.controller_owner_ref(&()).ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    let desired = desired_secret(&name, &ns, obj.spec.secret.as_ref(), owner, data);
    let hash = data_hash(&ctx.settings.hash_key, &uid, &data_of(&desired));
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired)).await?;
    Ok(hash)
}

async fn delete_owned_secret(obj: &WorkloadApiKey, ctx: &Context, name: &str) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    if let Some(s) = api.get_opt(name).await?
        && is_owned_by(&s, &uid(obj)?)
    {
        api.delete(name, &DeleteParams::default()).await?;
    }
    Ok(())
}

/// Records `Ready=True`, metrics, and requeues at the next instant something is due.
async fn finish_ready(
    obj: &WorkloadApiKey,
    ctx: &Context,
    mut status: WorkloadApiKeyStatus,
    until: Option<Timestamp>,
) -> Result<Action, Error> {
    let message = match (&status.key_id, &status.expires_at) {
        (Some(id), Some(exp)) => format!("key {id} is in Secret {}; expires {}", secret_name(obj), exp.0),
        (Some(id), None) => format!("key {id} is in Secret {}", secret_name(obj)),
        _ => "ready".into(),
    };
    let changed = conditions::set_condition(
        &mut status.conditions,
        READY,
        true,
        reason::READY,
        message.clone(),
        obj.metadata.generation,
        Timestamp::now(),
    );
    status.failed_attempts = None;
    status.observed_generation = obj.metadata.generation;
    if Some(&status) != obj.status.as_ref() {
        patch_status(ctx, obj, &status).await?;
    }
    if changed {
        ctx.event(obj, EventType::Normal, reason::READY, "Reconcile", message).await;
    }
    set_ready_metric(ctx, obj, true);
    let labels = resource_labels(obj);
    if let Some(t) = &status.expires_at {
        ctx.metrics.expiry_timestamp.get_or_create(&labels).set(t.0.as_second());
    }
    if let Some(t) = &status.renew_at {
        ctx.metrics.renewal_timestamp.get_or_create(&labels).set(t.0.as_second());
    }
    Ok(match until {
        // Wake exactly when due (a little after, so the comparison `<= now` holds).
        Some(t) => Action::requeue(
            Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO)
                + Duration::from_millis(200),
        ),
        // Nothing scheduled: watches bring us back on any change. A long safety resync catches the rest.
        None => Action::requeue(Duration::from_secs(3600)),
    })
}

/// Finalizer cleanup: revoke every key of the resource (Delete), or leave them (Retain).
async fn cleanup(obj: Arc<WorkloadApiKey>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.forget_resource(KIND, &obj.namespace().unwrap_or_default(), &obj.name_any());
    if obj.spec.deletion_policy == DeletionPolicy::Retain {
        ctx.event(
            obj.as_ref(),
            EventType::Normal,
            "KeyRetained",
            "Delete",
            "deletionPolicy Retain: vendor key left in place".into(),
        )
        .await;
        return Ok(Action::await_change());
    }
    let status = obj.status.clone().unwrap_or_default();
    let vendor = match vendor_for(&obj, &ctx).await {
        Ok(v) => v,
        Err(e @ (Error::SecretNotFound { .. } | Error::InvalidSecret { .. }))
            if namespace_terminating(&obj, &ctx).await =>
        {
            // The namespace is going away and took the admin credential with it: nothing can revoke the key now.
            ctx.event(
                obj.as_ref(),
                EventType::Warning,
                "RevokeSkipped",
                "Delete",
                format!("could not revoke the vendor key: {e}; it stays valid until it expires"),
            )
            .await;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    };
    let mut ids: Vec<i64> = status.key_id.into_iter().chain(status.retiring_keys.iter().map(|k| k.key_id)).collect();
    if let Some(pending) = &status.pending_key_name
        && let Some(id) = adopt(&vendor, pending, &uid(&obj)?).await?
    {
        ids.push(id);
    }
    for id in &ids {
        delete_key(&vendor, *id).await?;
    }
    ctx.event(obj.as_ref(), EventType::Normal, "KeyRevoked", "Delete", format!("deleted vendor key(s) {ids:?}")).await;
    Ok(Action::await_change())
}

async fn namespace_terminating(obj: &WorkloadApiKey, ctx: &Context) -> bool {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ctx.client.clone());
    match api.get_opt(&obj.namespace().unwrap_or_default()).await {
        Ok(Some(ns)) => ns.metadata.deletion_timestamp.is_some(),
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Server-side-applies the whole status and returns the updated object.
async fn patch_status(
    ctx: &Context,
    obj: &WorkloadApiKey,
    status: &WorkloadApiKeyStatus,
) -> Result<WorkloadApiKey, Error> {
    let api: Api<WorkloadApiKey> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": WorkloadApiKey::api_version(&()),
        "kind": WorkloadApiKey::kind(&()),
        "status": status,
    });
    let updated =
        api.patch_status(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    // Keep our local copy's spec/metadata (the patch returns the latest anyway).
    Ok(updated)
}

fn resource_labels(obj: &WorkloadApiKey) -> ResourceLabels {
    ResourceLabels { kind: KIND.into(), namespace: obj.namespace().unwrap_or_default(), name: obj.name_any() }
}

fn set_ready_metric(ctx: &Context, obj: &WorkloadApiKey, ready: bool) {
    ctx.metrics.ready.get_or_create(&resource_labels(obj)).set(i64::from(ready));
}

fn to_vendor_locale(l: Locale) -> crate::vendor::trend::Locale {
    match l {
        Locale::EnUs => crate::vendor::trend::Locale::EnUs,
        Locale::JaJp => crate::vendor::trend::Locale::JaJp,
    }
}

/// Which WorkloadApiKeys a Secret concerns: the one that owns it, and those whose connection references it.
pub fn affected_by_secret(
    secret_ns: &str,
    secret_name: &str,
    owner_uids: &[String],
    resources: &[Arc<WorkloadApiKey>],
) -> Vec<kube::runtime::reflector::ObjectRef<WorkloadApiKey>> {
    resources
        .iter()
        .filter(|r| r.namespace().as_deref() == Some(secret_ns))
        .filter(|r| {
            let s: &WorkloadApiKeySpec = &r.spec;
            let c = &s.connection;
            r.uid().is_some_and(|u| owner_uids.contains(&u))
                || c.api_key_secret_ref.as_ref().is_some_and(|x| x.name == secret_name)
                || c.login_secret_ref.as_ref().is_some_and(|x| x.name == secret_name)
                || c.ca_secret_ref.as_ref().is_some_and(|x| x.name == secret_name)
                || secret_name_matches(r, secret_name)
        })
        .map(|r| kube::runtime::reflector::ObjectRef::from_obj(r.as_ref()))
        .collect()
}

/// A resource cares about a Secret at its target name too (a foreign Secret removed clears a conflict).
fn secret_name_matches(r: &WorkloadApiKey, name: &str) -> bool {
    secret_name(r) == name
}
