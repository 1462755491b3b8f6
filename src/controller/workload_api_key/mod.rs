//! WorkloadApiKey reconciler: thin. The shared [`reconcile`](super::reconcile) frame does the cross-cutting
//! work (finalizer, metrics, error → status); `apply` runs the steps [`plan::next_step`] decides; `cleanup`
//! revokes at the vendor.

pub mod plan;

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    ResourceExt,
    runtime::{controller::Action, events::EventType, finalizer},
};

use plan::{Observed, Step};

use super::{
    context::{Context, digest, display_name, secret_key},
    error::Error,
    failpoint,
    provider::{self, Provider, policy},
    reconcile::{self, Managed, Pass, namespace_terminating, patch_status, resource_labels, settle, status_of, uid},
    secret, vendor_key,
};
use crate::{
    api::{
        ANNOTATION_ROTATE, DeletionPolicy, ProviderRef, RetiringKey, RoleRef, SecretTemplate, WorkloadApiKey,
        WorkloadApiKeySpec, WorkloadApiKeyStatus, conditions::reason,
    },
    clients::{
        ErrorKind,
        trend::{
            ApiKeyChanges, Auth, CloudOneClient, IssuedApiKey, KeyApi, LoginCredentials, NewApiKey, TrendApi,
            TrendApiKind, TrendClient, VisionOneClient,
        },
    },
};

/// Keys of the Secret the operator writes.
pub const SECRET_KEY: &str = "api-secret-key";
pub const SECRET_KEY_ID: &str = "api-key-id";
pub const SECRET_ENDPOINT: &str = "endpoint";

/// Entry point for the controller runtime.
pub async fn reconcile(obj: Arc<WorkloadApiKey>, ctx: Arc<Context>) -> Result<Action, finalizer::Error<Error>> {
    reconcile::reconcile(obj, ctx, apply, cleanup).await
}

impl Managed for WorkloadApiKey {
    fn target_secret(&self) -> String {
        secret_name(self)
    }

    fn referenced_secrets(&self) -> Vec<&str> {
        // The admin credential and CA are the provider's; a change of them reaches us through its status.
        Vec::new()
    }

    fn provider_ref(&self) -> &ProviderRef {
        &self.spec.provider_ref
    }

    fn secret_template(&self) -> Option<&SecretTemplate> {
        self.spec.secret.as_ref()
    }

    fn rollout_timeout(&self) -> Result<std::time::Duration, String> {
        plan::rollout_timeout(&self.spec)
    }
}

/// Everything needed to talk to the vendor for one resource.
struct Vendor {
    client: Arc<dyn TrendApi>,
    endpoint: String,
    /// Digest of the endpoint and the credential: what the role cache is keyed by.
    identity: String,
}

async fn vendor_for(provider: &Provider, ctx: &Context) -> Result<Vendor, Error> {
    let ns = &provider.secret_namespace;
    let conn = provider.trend()?;
    let tls = provider.tls(ctx).await?;
    let auth = match (&conn.api_key_secret_ref, &conn.login_secret_ref) {
        (Some(sel), _) => {
            let key = sel.key.as_deref().unwrap_or(SECRET_KEY);
            Auth::ApiKey(ctx.secret_value(ns, &sel.name, key).await?)
        }
        (None, Some(r)) => {
            let secret = ctx.secret(ns, &r.name).await?;
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
            return Err(Error::InvalidSpec(format!(
                "{} needs spec.trend.apiKeySecretRef or spec.trend.loginSecretRef",
                provider.display()
            )));
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
    let timeout = ctx.settings.vendor_timeout;
    let client =
        ctx.cached_client(&key, || Ok(TrendClient::new(&endpoint, auth, &tls, limiter)?.with_timeout(timeout)))?;
    Ok(Vendor { client, endpoint, identity: key })
}

/// The Cloud One or Vision One client for a provider with `spec.trend.api` other than DeepSecurity (the admin key
/// from `apiKeySecretRef`; a `loginSecretRef` is DeepSecurity-only, which the CRD also enforces).
async fn account_client(provider: &Provider, ctx: &Context) -> Result<Arc<dyn KeyApi>, Error> {
    let conn = provider.trend()?;
    let api = conn.api();
    let Some(sel) = &conn.api_key_secret_ref else {
        return Err(Error::InvalidSpec(format!(
            "{} uses api {api}, which needs the admin API key in spec.trend.apiKeySecretRef (loginSecretRef is \
             DeepSecurity only)",
            provider.display()
        )));
    };
    let tls = provider.tls(ctx).await?;
    let key = ctx.secret_value(&provider.secret_namespace, &sel.name, sel.key.as_deref().unwrap_or(SECRET_KEY)).await?;
    let endpoint = conn.url.trim_end_matches('/').to_owned();
    let identity = digest(&[
        api.as_str().as_bytes(),
        endpoint.as_bytes(),
        tls.ca_pem.as_deref().unwrap_or("").as_bytes(),
        &[u8::from(tls.insecure_skip_verify)],
        key.expose().as_bytes(),
    ]);
    let limiter = ctx.limiters.for_endpoint(&endpoint);
    let timeout = ctx.settings.vendor_timeout;
    Ok(match api {
        TrendApiKind::VisionOne => ctx
            .cached_client(&identity, || Ok(VisionOneClient::new(&endpoint, key, &tls, limiter, timeout)?))?
            as Arc<dyn KeyApi>,
        TrendApiKind::CloudOne => {
            ctx.cached_client(&identity, || Ok(CloudOneClient::new(&endpoint, key, &tls, limiter, timeout)?))?
        }
        TrendApiKind::DeepSecurity => {
            return Err(Error::InvalidSpec(format!("{} speaks DeepSecurity, not an account API", provider.display())));
        }
    })
}

async fn role_id(obj: &WorkloadApiKey, vendor: &Vendor, ctx: &Context) -> Result<i64, Error> {
    match &obj.spec.role {
        RoleRef { id: Some(id), .. } => Ok(*id),
        RoleRef { name: Some(name), .. } => {
            if let Some(id) = ctx.cached_role(&vendor.identity, name) {
                return Ok(id);
            }
            let role = vendor
                .client
                .find_role_by_name(name)
                .await?
                .ok_or_else(|| Error::RoleNotFound { name: name.clone() })?;
            ctx.cache_role(&vendor.identity, name, role.id);
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

async fn apply(obj: Arc<WorkloadApiKey>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ctx = ctx.as_ref();
    let ns = obj.namespace().unwrap_or_default();
    // Everything the provider decides comes before any vendor call: a refusal costs none.
    let provider = provider::admit(ctx, &ns, &obj.spec.provider_ref).await?;
    let api = provider.trend()?.api();
    if api != TrendApiKind::DeepSecurity {
        // Refused before any vendor call: keys through these APIs are not issued by this version yet.
        return Err(Error::InvalidSpec(format!(
            "{} uses api {api}: issuing WorkloadApiKeys through Trend {api} is not implemented yet (only the \
             provider's credential check is); use a DeepSecurity provider",
            provider.display()
        )));
    }
    let expires_after = within_policy(&obj.spec, &provider)?;
    let obj = &with_expiry(obj.as_ref().clone(), &expires_after);
    reconcile::warn_on_first_reconcile(ctx, obj, provider.insecure_tls(), "InsecureTLS", reconcile::INSECURE_TLS_NOTE)
        .await;
    // Validate durations before any vendor call (the API server already checks their shape).
    plan::renew_before(&obj.spec).map_err(Error::InvalidSpec)?;
    plan::grace_period(&obj.spec).map_err(Error::InvalidSpec)?;
    plan::rollout_timeout(&obj.spec).map_err(Error::InvalidSpec)?;
    let vendor = vendor_for(&provider, ctx).await?;
    bound_to(obj, &vendor, &provider)?;
    let base = base_key_name(obj);

    reconcile::run_steps(ctx, obj, |obj, secret, gate| {
        let (vendor, base, expires_after) = (&vendor, &base, &expires_after);
        async move {
            let obj = &with_expiry(obj, expires_after);
            let status = status_of(obj);
            let seen = Observed {
                now: Timestamp::now(),
                generation: obj.metadata.generation,
                secret,
                rotate_annotation: obj.annotations().get(ANNOTATION_ROTATE).map(String::as_str),
                gate,
            };
            let step = plan::next_step(&obj.spec, &status, base, &seen);
            tracing::debug!(resource = %display_name(obj), ?step, "next step");
            Ok(Pass::Record(match step {
                Step::Wait(until) => return Ok(Pass::Done(finish_ready(obj, ctx, status, until).await?)),
                Step::Create { name, recover } => create(obj, ctx, vendor, status, name, recover).await?,
                Step::StartReplace { name, generation } => {
                    let mut s = status;
                    s.pending_key_name = Some(name);
                    s.key_generation = Some(generation);
                    s.rotate_annotation = seen.rotate_annotation.map(str::to_owned).or(s.rotate_annotation);
                    s
                }
                Step::Regenerate => regenerate(obj, ctx, vendor, status, seen.rotate_annotation).await?,
                Step::Repair => repair(obj, ctx, vendor, status).await?,
                Step::Update => update(obj, ctx, vendor, status).await?,
                Step::RevokeRetired(ids) => revoke_retired(obj, ctx, vendor, status, &ids).await?,
            }))
        }
    })
    .await
}

/// A Trend provider's read-only check: the admin API key describes itself (`GET /apikeys/current`); a sign-in
/// (session) credential proves itself by reading the role list.
pub(crate) async fn check_provider(provider: &Provider, ctx: &Context) -> Result<String, Error> {
    if provider.trend()?.api() != TrendApiKind::DeepSecurity {
        // Cloud One: describe the admin key itself; Vision One: the connectivity check. Both read-only.
        return Ok(account_client(provider, ctx).await?.check_credential().await?);
    }
    let vendor = vendor_for(provider, ctx).await?;
    let conn = provider.trend()?;
    if conn.api_key_secret_ref.is_some() {
        let key = vendor.client.describe_current_api_key().await?;
        Ok(format!("the admin API key {} ({:?}) is accepted by {}", key.id, key.key_name, vendor.endpoint))
    } else {
        vendor.client.find_role_by_name("Full Access").await?;
        Ok(format!("signed in to {} with the login", vendor.endpoint))
    }
}

/// The provider's policy on the role and lifetime; returns the effective `expiresAfter` (the cap when none is asked).
fn within_policy(spec: &WorkloadApiKeySpec, provider: &Provider) -> Result<Option<String>, Error> {
    let violation = |problem| Error::PolicyViolation { provider: provider.display(), problem };
    policy::check_role(&provider.policy, &spec.role).map_err(violation)?;
    policy::effective_expires_after(&provider.policy, spec.expires_after.as_deref()).map_err(violation)
}

/// The resource as planned: its spec with the effective lifetime.
fn with_expiry(mut obj: WorkloadApiKey, expires_after: &Option<String>) -> WorkloadApiKey {
    obj.spec.expires_after.clone_from(expires_after);
    obj
}

/// Keys are bound to the endpoint that issued them: refuse to act when the provider now points elsewhere.
fn bound_to(obj: &WorkloadApiKey, vendor: &Vendor, provider: &Provider) -> Result<(), Error> {
    let status = status_of(obj);
    let has_keys = status.key_id.is_some() || !status.retiring_keys.is_empty() || status.pending_key_name.is_some();
    match status.endpoint {
        Some(recorded) if has_keys && recorded != vendor.endpoint => Err(Error::EndpointChanged {
            what: match status.key_id {
                Some(id) => format!("key {id}"),
                None => "the resource's key".into(),
            },
            provider: provider.display(),
            recorded,
            current: vendor.endpoint.clone(),
        }),
        _ => Ok(()),
    }
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
        status.endpoint = Some(vendor.endpoint.clone());
        patch_status(ctx, obj, &status).await?;
    }
    let adopted = if recover { adopt(vendor, &name, &uid).await? } else { None };
    let now = Timestamp::now();
    let (expires_at, renew_at) = plan::lifetime_from(&obj.spec, now).map_err(Error::InvalidSpec)?;
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
                description: Some(vendor_key::vendor_description(obj.spec.description.as_deref(), &uid)),
                locale: Some(obj.spec.locale.unwrap_or_default()),
                role_id,
                time_zone: obj.spec.time_zone.clone(),
                expiry_date: expires_at.map(|t| t.as_millisecond()),
            };
            let issued = vendor.client.create_api_key(&key).await?;
            failpoint::hit("after-vendor-create");
            issued
        }
    };
    let hash = write_secret(obj, ctx, vendor, &issued).await?;
    let replaced = status.key_id.filter(|old| *old != issued.key.id);
    if let Some(old) = replaced {
        let grace = plan::grace_period(&obj.spec).map_err(Error::InvalidSpec)?;
        status.retiring_keys.push(RetiringKey {
            key_id: old,
            key_name: status.key_name.clone(),
            revoke_at: Time(vendor_key::shift(now, grace, true)),
        });
        status.last_rotated_at = Some(Time(now));
    }
    status.key_id = Some(issued.key.id);
    status.endpoint = Some(vendor.endpoint.clone());
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
    let marker = vendor_key::uid_marker(uid);
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
    let (expires_at, renew_at) = plan::lifetime_from(&obj.spec, now).map_err(Error::InvalidSpec)?;
    if let Some(expiry) = expires_at {
        let changes = ApiKeyChanges { expiry_date: Some(expiry.as_millisecond()), ..Default::default() };
        if let Err(e) = vendor.client.modify_api_key(id, &changes).await {
            return Err(lost_key_or(e, &mut status));
        }
    }
    resecret(obj, ctx, vendor, &mut status, id).await?;
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
    resecret(obj, ctx, vendor, &mut status, id).await?;
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

/// A new secret for key `id` (the old one stops working at once), written to the Secret; a Secret left behind by a
/// renamed `spec.secret.name` is removed.
async fn resecret(
    obj: &WorkloadApiKey,
    ctx: &Context,
    vendor: &Vendor,
    status: &mut WorkloadApiKeyStatus,
    id: i64,
) -> Result<(), Error> {
    let issued = match vendor.client.regenerate_secret(id).await {
        Ok(i) => i,
        Err(e) => return Err(lost_key_or(e, status)),
    };
    status.secret_hash = Some(write_secret(obj, ctx, vendor, &issued).await?);
    let previous = status.secret_name.replace(secret_name(obj));
    if let Some(old) = previous.filter(|old| *old != secret_name(obj)) {
        secret::io::delete_owned(ctx, obj, &old).await?;
    }
    Ok(())
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
    let name = plan::key_name_for(&base_key_name(obj), status.key_generation.unwrap_or(1));
    let created = status.created_at.as_ref().map(|t| t.0).unwrap_or_else(Timestamp::now);
    let (expires_at, renew_at) = plan::lifetime_from(&obj.spec, created).map_err(Error::InvalidSpec)?;
    let changes = ApiKeyChanges {
        key_name: Some(name.clone()),
        description: Some(vendor_key::vendor_description(obj.spec.description.as_deref(), &uid)),
        locale: Some(obj.spec.locale.unwrap_or_default()),
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
            format!("deleted replaced key {id} after its grace period (and the rollout of the restarted workloads)"),
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
fn lost_key_or(e: crate::clients::VendorError, status: &mut WorkloadApiKeyStatus) -> Error {
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
    let data = BTreeMap::from([
        (SECRET_KEY.to_owned(), issued.secret_key.expose().as_bytes().to_vec()),
        (SECRET_KEY_ID.to_owned(), issued.key.id.to_string().into_bytes()),
        (SECRET_ENDPOINT.to_owned(), vendor.endpoint.clone().into_bytes()),
    ]);
    secret::io::write(ctx, obj, data).await
}

/// Records `Ready=True`, metrics, and requeues at the next instant something is due.
async fn finish_ready(
    obj: &WorkloadApiKey,
    ctx: &Context,
    status: WorkloadApiKeyStatus,
    until: Option<Timestamp>,
) -> Result<Action, Error> {
    let message = match (&status.key_id, &status.expires_at) {
        (Some(id), Some(exp)) => format!("key {id} is in Secret {}; expires {}", secret_name(obj), exp.0),
        (Some(id), None) => format!("key {id} is in Secret {}", secret_name(obj)),
        _ => "ready".into(),
    };
    let labels = resource_labels(obj);
    if let Some(t) = &status.expires_at {
        ctx.metrics.expiry_timestamp.get_or_create(&labels).set(t.0.as_second());
    }
    if let Some(t) = &status.renew_at {
        ctx.metrics.renewal_timestamp.get_or_create(&labels).set(t.0.as_second());
    }
    settle(ctx, obj, status, true, reason::READY, message).await?;
    Ok(reconcile::requeue_at(until))
}

/// Finalizer cleanup: revoke every key of the resource (Delete), or leave them (Retain).
async fn cleanup(obj: Arc<WorkloadApiKey>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconcile::forget_metrics(&ctx, obj.as_ref());
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
    let status = status_of(obj.as_ref());
    if status.key_id.is_none() && status.retiring_keys.is_empty() && status.pending_key_name.is_none() {
        return Ok(Action::await_change());
    }
    let ns = obj.namespace().unwrap_or_default();
    let revoke_skipped = async |why: String| {
        ctx.event(
            obj.as_ref(),
            EventType::Warning,
            "RevokeSkipped",
            "Delete",
            format!("could not revoke the vendor key: {why}; it stays valid until it expires"),
        )
        .await;
        Ok(Action::await_change())
    };
    // The provider's finalizer keeps it while we use it; one that is gone anyway cannot revoke anything.
    let provider = match provider::fetch(&ctx, &ns, &obj.spec.provider_ref).await {
        Ok(p) => p,
        Err(e @ Error::ProviderNotFound { .. }) => return revoke_skipped(e.to_string()).await,
        Err(e) => return Err(e),
    };
    let vendor = match vendor_for(&provider, &ctx).await {
        Ok(v) => v,
        // The namespace is going away and took the admin credential with it: nothing can revoke the key now.
        Err(e @ (Error::SecretNotFound { .. } | Error::InvalidSecret { .. }))
            if namespace_terminating(&ctx, obj.as_ref()).await =>
        {
            return revoke_skipped(e.to_string()).await;
        }
        Err(e) => return Err(e),
    };
    if let Err(e) = bound_to(obj.as_ref(), &vendor, &provider) {
        return revoke_skipped(e.to_string()).await;
    }
    let mut ids: Vec<i64> = status.key_id.into_iter().chain(status.retiring_keys.iter().map(|k| k.key_id)).collect();
    if let Some(pending) = &status.pending_key_name
        && let Some(id) = adopt(&vendor, pending, &uid(obj.as_ref())?).await?
    {
        ids.push(id);
    }
    for id in &ids {
        delete_key(&vendor, *id).await?;
    }
    ctx.event(obj.as_ref(), EventType::Normal, "KeyRevoked", "Delete", format!("deleted vendor key(s) {ids:?}")).await;
    Ok(Action::await_change())
}
