//! WorkloadApiKey reconciler: thin. The shared [`reconcile`](super::reconcile) frame does the cross-cutting
//! work (finalizer, metrics, error → status); `apply` checks what the provider's API accepts ([`rules`]) and runs
//! the steps [`plan::next_step`] decides, through a Deep Security `/api` (`deep_security`) or a Cloud One / Vision
//! One account API (`account`); `cleanup` revokes at the vendor.

mod account;
mod deep_security;
pub mod plan;
pub mod rules;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    ResourceExt,
    runtime::{controller::Action, events::EventType, finalizer},
};

use plan::{Observed, Step};

use super::{
    context::{Context, display_name},
    error::Error,
    metrics::Series,
    provider::{
        self, Provider,
        policy::{self, Overlap},
    },
    reconcile::{
        self, Managed, ManagedStatus, Pass, namespace_terminating, set_resource_metric, settle, status_of, uid,
    },
    secret::{
        self,
        io::{SecretContent, WrittenSecret},
        template::{self, Vars},
    },
    vendor_key,
};
use crate::{
    api::{
        ANNOTATION_ROTATE, DEFAULT_GRACE_PERIOD, DeletionPolicy, ProviderRef, RetiringKey, RotationStrategy,
        SecretTemplate, VendorKeyId, WorkloadApiKey, WorkloadApiKeySpec, WorkloadApiKeyStatus, conditions::reason,
    },
    clients::{ErrorKind, SecretString, VendorError, trend::TrendApiKind},
};

/// Keys of the Secret the operator writes: the credential (Deep Security: the `api-secret-key` header; Cloud One
/// and Vision One: the key sent after `ApiKey ` / `Bearer `), its vendor ID, the endpoint.
pub const SECRET_KEY: &str = "api-secret-key";
pub const SECRET_API_KEY: &str = "api-key";
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
        self.spec.secret.as_deref()
    }

    fn secret_template_mut(&mut self) -> Option<&mut SecretTemplate> {
        self.spec.secret.as_deref_mut()
    }

    fn rollout_timeout(&self) -> Result<std::time::Duration, String> {
        plan::rollout_timeout(&self.spec)
    }

    /// Its first key: generation 1, named by `spec.keyName` or `<namespace>-<name>` (`plan::next_step`).
    fn first_intent(&self) -> Option<Box<WorkloadApiKeyStatus>> {
        Some(Box::new(WorkloadApiKeyStatus {
            pending_key_name: Some(plan::key_name_for(&base_key_name(self), 1)),
            key_generation: Some(1),
            ..Default::default()
        }))
    }
}

/// Where a resource's keys are issued: a Deep Security `/api`, or an account API (Cloud One, Vision One).
enum Issuer {
    DeepSecurity(deep_security::Vendor),
    Account(account::Account),
}

impl Issuer {
    async fn of(provider: &Provider, ctx: &Context) -> Result<Self, Error> {
        Ok(match provider.trend()?.api() {
            TrendApiKind::DeepSecurity => Issuer::DeepSecurity(deep_security::vendor_for(provider, ctx).await?),
            _ => Issuer::Account(account::account_for(provider, ctx).await?),
        })
    }

    fn endpoint(&self) -> &str {
        match self {
            Issuer::DeepSecurity(v) => &v.endpoint,
            Issuer::Account(a) => &a.endpoint,
        }
    }

    /// Deletes a vendor key; one already gone counts as deleted.
    async fn delete_key(&self, id: &VendorKeyId) -> Result<(), Error> {
        match self {
            Issuer::DeepSecurity(v) => deep_security::delete_key(v, id).await,
            Issuer::Account(a) => account::delete_key(a, id).await,
        }
    }

    /// The keys a recorded but unfinished create of `name` may have left at the vendor.
    async fn pending_keys(
        &self,
        status: &WorkloadApiKeyStatus,
        name: &str,
        uid: &str,
    ) -> Result<Vec<VendorKeyId>, Error> {
        let owner = vendor_key::Owner::new(uid, status.owner_nonce.as_deref());
        match self {
            Issuer::DeepSecurity(v) => {
                Ok(deep_security::adopt(v, name, &owner).await?.into_iter().map(Into::into).collect())
            }
            Issuer::Account(a) => account::leftovers(a, status, name, &owner).await,
        }
    }
}

/// A delete answered `NotFound` found the key already gone: deleted all the same.
fn gone_is_deleted(result: Result<(), VendorError>) -> Result<(), Error> {
    match result {
        Err(e) if e.kind != ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
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
    // Everything the provider, its API and its policy decide comes before any vendor call: a refusal costs none.
    let provider = match provider::admit(ctx, &ns, &obj.spec.provider_ref).await {
        Err(e @ Error::NamespaceNotAllowed { .. }) => {
            return Err(reconcile::access_lost(ctx, obj.as_ref(), e, async |p| revoke_all(&obj, ctx, p).await).await);
        }
        admitted => admitted?,
    };
    // A policy the resource no longer meets is lost access too (its keys go if the policy says so).
    let Admitted { effective, obj, base, terms } = match admit_spec(&obj, &provider) {
        Err(e @ Error::PolicyViolation { .. }) => {
            return Err(reconcile::access_lost(ctx, obj.as_ref(), e, async |p| revoke_all(&obj, ctx, p).await).await);
        }
        admitted => admitted?,
    };
    let obj = &obj;
    reconcile::warn_on_first_reconcile(ctx, obj, provider.insecure_tls(), "InsecureTLS", reconcile::INSECURE_TLS_NOTE)
        .await;
    let issuer = Issuer::of(&provider, ctx).await?;
    bound_to(obj, issuer.endpoint(), &provider)?;
    let template = template::digest(obj.secret_template().and_then(|t| t.template.as_ref()));

    reconcile::run_steps(ctx, obj, |obj, secret, gate| {
        let (issuer, base, effective, terms, template) = (&issuer, &base, &effective, &terms, template.as_deref());
        async move {
            let obj = &effective.apply_to(obj);
            let status = *status_of(obj);
            let seen = Observed {
                now: Timestamp::now(),
                generation: obj.metadata.generation,
                secret,
                rotate_annotation: obj.annotations().get(ANNOTATION_ROTATE).map(String::as_str),
                gate,
                attributes: terms.attributes.as_deref(),
                template,
            };
            let step = plan::next_step(&obj.spec, &status, base, &seen);
            tracing::debug!(resource = %display_name(obj), ?step, "next step");
            let annotation = seen.rotate_annotation;
            Ok(Pass::Record(Box::new(match (step, issuer) {
                (Step::Wait(until), _) => {
                    reconcile::tell_rotation_deferred(ctx, obj, plan::rotate_request(&status, &seen)).await;
                    return Ok(Pass::Done(finish_ready(obj, ctx, status, until).await?));
                }
                (Step::StartReplace { name, generation }, _) => {
                    let mut s = status;
                    s.pending_key_name = Some(name);
                    s.key_generation = Some(generation);
                    let (acted_on, acted_at) = (&mut s.rotate_annotation, &mut s.rotate_annotation_at);
                    vendor_key::record_rotate_request(acted_on, acted_at, annotation, seen.now);
                    s
                }
                (Step::RevokeRetired(ids), _) => revoke_retired(obj, ctx, issuer, status, &ids).await?,
                (Step::Create { name, recover }, Issuer::DeepSecurity(v)) => {
                    ready(obj, deep_security::create(obj, ctx, v, status, name, recover).await?)
                }
                (Step::Regenerate, Issuer::DeepSecurity(v)) => {
                    ready(obj, deep_security::regenerate(obj, ctx, v, status, annotation).await?)
                }
                (Step::Repair, Issuer::DeepSecurity(v)) => {
                    ready(obj, deep_security::repair(obj, ctx, v, status).await?)
                }
                (Step::Update | Step::Reschedule, Issuer::DeepSecurity(v)) => {
                    deep_security::update(obj, ctx, v, status).await?
                }
                (Step::Create { name, recover }, Issuer::Account(a)) => ready(
                    obj,
                    account::create(obj, ctx, a, terms, status, name, recover, account::Occasion::Issue).await?,
                ),
                (Step::Repair, Issuer::Account(a)) => ready(obj, account::repair(obj, ctx, a, terms, status).await?),
                (Step::Reschedule, Issuer::Account(_)) => account::reschedule(obj, status)?,
                // Refused by `rules::check_fields` before any of this; never planned for these APIs.
                (Step::Regenerate | Step::Update, Issuer::Account(a)) => {
                    return Err(Error::InvalidSpec(format!(
                        "Trend {} can neither regenerate a key's secret nor modify a key",
                        a.api
                    )));
                }
            })))
        }
    })
    .await
}

/// What `apply` checks of a resource against its provider before any vendor call, in its order: the provider's
/// vendor and API, the fields that API accepts, the Secret template, the policy, the durations and the key's terms.
/// Pure: `kubectl workloadkeys check` runs it to say whether the provider would accept a resource (the provider's
/// readiness and its namespace rule, which need the API server, are the caller's).
pub fn check_against(obj: &WorkloadApiKey, provider: &Provider) -> Result<(), Error> {
    admit_spec(obj, provider).map(drop)
}

/// A resource as its provider admits it: with the lifetime the policy makes effective, its base key name and the
/// terms of its keys.
struct Admitted {
    effective: Effective,
    obj: WorkloadApiKey,
    base: String,
    terms: rules::Terms,
}

/// [`check_against`], keeping what it worked out. Only the policy's refusals are `PolicyViolation`s.
fn admit_spec(obj: &WorkloadApiKey, provider: &Provider) -> Result<Admitted, Error> {
    let api = provider.trend()?.api();
    rules::check_fields(api, &obj.spec).map_err(Error::InvalidSpec)?;
    secret::io::check_template(obj, &template::WORKLOAD_API_KEY_VARS)?;
    let effective = within_policy(&obj.spec, provider, api)?;
    let obj = effective.apply_to(obj.clone());
    // Durations are validated here, before any vendor call (the API server already checks their shape).
    plan::renew_before(&obj.spec).map_err(Error::InvalidSpec)?;
    plan::every(&obj.spec).map_err(Error::InvalidSpec)?;
    plan::grace_period(&obj.spec).map_err(Error::InvalidSpec)?;
    plan::rollout_timeout(&obj.spec).map_err(Error::InvalidSpec)?;
    let base = base_key_name(&obj);
    let terms = rules::terms(api, &obj.spec, &base).map_err(|e| Error::InvalidSpec(effective.explain(e)))?;
    Ok(Admitted { effective, obj, base, terms })
}

/// What the provider's policy makes of a spec's lifetime.
struct Effective {
    /// `expiresAfter`, capped by `maxExpiresAfter` and defaulting to it.
    expires_after: Option<String>,
    /// `rotation.every`; on Cloud One, whose keys do not expire, capped by `maxExpiresAfter` and defaulting to it.
    every: Option<String>,
    /// `expiresAfter` is the provider's cap, the resource having asked for none.
    expiry_from_policy: bool,
}

impl Effective {
    /// The resource as planned: its spec with the effective lifetime.
    fn apply_to(&self, mut obj: WorkloadApiKey) -> WorkloadApiKey {
        obj.spec.expires_after.clone_from(&self.expires_after);
        if let Some(every) = &self.every {
            obj.spec.rotation.get_or_insert_default().every = Some(every.clone());
        }
        obj
    }

    /// A refusal of the lifetime, saying where it came from.
    fn explain(&self, problem: String) -> String {
        if self.expiry_from_policy {
            format!("{problem} (this expiresAfter is the provider's policy.maxExpiresAfter: the resource sets none)")
        } else {
            problem
        }
    }
}

/// The provider's policy on the role and lifetime (for Cloud One, `maxExpiresAfter` caps `rotation.every`).
fn within_policy(spec: &WorkloadApiKeySpec, provider: &Provider, api: TrendApiKind) -> Result<Effective, Error> {
    let violation = |problem| Error::PolicyViolation { provider: provider.display(), problem };
    policy::check_role(&provider.policy, &spec.role).map_err(violation)?;
    let rotation = spec.rotation.as_deref();
    if plan::strategy(spec) == RotationStrategy::Replace {
        let grace = rotation.and_then(|r| r.grace_period.as_deref());
        policy::check_overlap(&provider.policy, Overlap::GracePeriod, grace, DEFAULT_GRACE_PERIOD)
            .map_err(violation)?;
    }
    let rollout_timeout = rotation.and_then(|r| r.rollout_timeout.as_deref());
    let restarts = spec.secret.as_ref().is_some_and(|s| !s.rollout_restart_targets.is_empty());
    policy::check_rollout_timeout(&provider.policy, rollout_timeout, restarts).map_err(violation)?;
    policy::check_deletion_policy(&provider.policy, spec.deletion_policy).map_err(violation)?;
    let every = spec.rotation.as_ref().and_then(|r| r.every.as_deref());
    if api == TrendApiKind::CloudOne {
        let every = policy::effective_rotation_every(&provider.policy, every).map_err(violation)?;
        return Ok(Effective { expires_after: spec.expires_after.clone(), every, expiry_from_policy: false });
    }
    let expires_after =
        policy::effective_expires_after(&provider.policy, spec.expires_after.as_deref()).map_err(violation)?;
    let expiry_from_policy = spec.expires_after.is_none() && expires_after.is_some();
    Ok(Effective { expires_after, every: every.map(str::to_owned), expiry_from_policy })
}

/// Revokes every key of a resource that lost access to `provider` ([`reconcile::access_lost`]): current, retiring
/// and an unfinished create's. The status forgets them; the next key, once access is regained, is made as on a first
/// create, under a new name beside the revoked ones.
async fn revoke_all(
    obj: &WorkloadApiKey,
    ctx: &Context,
    provider: &Provider,
) -> Result<reconcile::Revoked<Box<WorkloadApiKeyStatus>>, Error> {
    let status = *status_of(obj);
    let mut ids: Vec<VendorKeyId> =
        status.key_id.iter().chain(status.retiring_keys.iter().map(|k| &k.key_id)).cloned().collect();
    if !ids.is_empty() || status.pending_key_name.is_some() {
        let issuer = Issuer::of(provider, ctx).await?;
        bound_to(obj, issuer.endpoint(), provider)?;
        if let Some(pending) = &status.pending_key_name {
            ids.extend(issuer.pending_keys(&status, pending, &uid(obj)?).await?);
        }
        for id in &ids {
            issuer.delete_key(id).await?;
        }
    }
    let generation = status.key_generation.unwrap_or(1).max(1);
    let status = WorkloadApiKeyStatus {
        conditions: status.conditions,
        observed_generation: status.observed_generation,
        owner_nonce: status.owner_nonce,
        endpoint: status.endpoint,
        key_generation: Some(generation + 1),
        rotate_annotation: status.rotate_annotation,
        failed_attempts: status.failed_attempts,
        ..Default::default()
    };
    Ok(reconcile::Revoked { ids: ids.iter().map(VendorKeyId::to_string).collect(), status: Box::new(status) })
}

/// Keys are bound to the endpoint that issued them: refuse to act when the provider now points elsewhere.
fn bound_to(obj: &WorkloadApiKey, endpoint: &str, provider: &Provider) -> Result<(), Error> {
    let status = *status_of(obj);
    let has_keys = status.key_id.is_some() || !status.retiring_keys.is_empty() || status.pending_key_name.is_some();
    match status.endpoint {
        Some(recorded) if has_keys && recorded != endpoint => Err(Error::EndpointChanged {
            what: match status.key_id {
                Some(id) => format!("key {id}"),
                None => "the resource's key".into(),
            },
            provider: provider.display(),
            recorded,
            current: endpoint.to_owned(),
        }),
        _ => Ok(()),
    }
}

async fn revoke_retired(
    obj: &WorkloadApiKey,
    ctx: &Context,
    issuer: &Issuer,
    mut status: WorkloadApiKeyStatus,
    ids: &[VendorKeyId],
) -> Result<WorkloadApiKeyStatus, Error> {
    for id in ids {
        issuer.delete_key(id).await?;
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

/// A key just issued, as its Secret shows it.
struct Issued<'a> {
    endpoint: &'a str,
    api: TrendApiKind,
    /// The default key holding the credential (`api-secret-key`, or `api-key` for the account APIs).
    credential_key: &'static str,
    credential: &'a SecretString,
    id: &'a str,
    expires_at: Option<Timestamp>,
}

/// What the Secret holds for `issued`: the default keys (`credential_key` holding the credential, `api-key-id`,
/// `endpoint`) and the variables of `spec.secret.template` (see [`template::WORKLOAD_API_KEY_VARS`]).
fn secret_content(obj: &WorkloadApiKey, issued: &Issued) -> SecretContent {
    let data = BTreeMap::from([
        (issued.credential_key.to_owned(), issued.credential.expose().as_bytes().to_vec()),
        (SECRET_KEY_ID.to_owned(), issued.id.as_bytes().to_vec()),
        (SECRET_ENDPOINT.to_owned(), issued.endpoint.as_bytes().to_vec()),
    ]);
    let role = obj.spec.role.name.clone().or_else(|| obj.spec.role.id.map(|id| id.to_string())).unwrap_or_default();
    let vars = Vars::default()
        .secret("secret", issued.credential.clone())
        .plain("keyId", issued.id)
        .plain("endpoint", issued.endpoint)
        .plain("api", issued.api.as_str())
        .plain("role", role)
        .plain("expiresAt", issued.expires_at.map(|t| format!("{t:.0}")).unwrap_or_default());
    SecretContent { data, vars }
}

/// Writes the Secret by server-side apply (rendered by `spec.secret.template`, if any) and returns the keyed hash of
/// its data and its version.
async fn write_secret(obj: &WorkloadApiKey, ctx: &Context, issued: Issued<'_>) -> Result<WrittenSecret, Error> {
    secret::io::write(ctx, obj, secret_content(obj, &issued)).await
}

/// Makes `new` (named `name`, issued by `endpoint` at `now`) the current key and clears the intent; the key it
/// replaces, if any, retires and is revoked `grace` after `now`. Returns the replaced key.
fn make_current(
    status: &mut WorkloadApiKeyStatus,
    new: &VendorKeyId,
    name: &str,
    endpoint: &str,
    now: Timestamp,
    grace: Duration,
) -> Option<VendorKeyId> {
    let replaced = status.key_id.take().filter(|old| old != new);
    if let Some(old) = &replaced {
        status.retiring_keys.push(RetiringKey {
            key_id: old.clone(),
            key_name: status.key_name.clone(),
            revoke_at: Time(vendor_key::shift(now, grace, true)),
        });
        status.last_rotated_at = Some(Time(now));
    }
    status.key_id = Some(new.clone());
    status.endpoint = Some(endpoint.to_owned());
    status.key_name = Some(name.to_owned());
    status.pending_key_name = None;
    replaced
}

/// The Event of a key created: the first (`KeyCreated`) or one replacing `replaced` (`KeyRotated`).
fn created_event(
    obj: &WorkloadApiKey,
    new: &VendorKeyId,
    name: &str,
    replaced: Option<&VendorKeyId>,
) -> (&'static str, String) {
    match replaced {
        Some(old) => ("KeyRotated", format!("created key {new} ({name}); key {old} is revoked after the grace period")),
        None => ("KeyCreated", format!("created key {new} ({name}) and wrote Secret {}", secret_name(obj))),
    }
}

/// Records the Secret just written (its hash and version); a Secret left behind by a renamed `spec.secret.name` is
/// removed.
async fn record_secret(
    obj: &WorkloadApiKey,
    ctx: &Context,
    status: &mut WorkloadApiKeyStatus,
    written: WrittenSecret,
) -> Result<(), Error> {
    status.record_written(written);
    let previous = status.secret_name.replace(secret_name(obj));
    if let Some(old) = previous.filter(|old| *old != secret_name(obj)) {
        secret::io::delete_owned(ctx, obj, &old).await?;
    }
    Ok(())
}

/// What `Ready=True` says of a resource with `status`.
fn ready_message(obj: &WorkloadApiKey, status: &WorkloadApiKeyStatus) -> String {
    match (&status.key_id, &status.expires_at) {
        (Some(id), Some(exp)) => format!("key {id} is in Secret {}; expires {}", secret_name(obj), exp.0),
        (Some(id), None) => format!("key {id} is in Secret {}", secret_name(obj)),
        _ => "ready".into(),
    }
}

/// A key just created, or given a new secret, and written to the Secret: `status` Ready already (see
/// [`reconcile::ready_in`]).
fn ready(obj: &WorkloadApiKey, status: WorkloadApiKeyStatus) -> WorkloadApiKeyStatus {
    // As the API server will keep it, so that the next pass's message is the same.
    let mut status = reconcile::as_stored(status);
    let message = ready_message(obj, &status);
    reconcile::ready_in(obj, &mut status, message);
    status
}

/// Records `Ready=True`, metrics, and requeues at the next instant something is due.
async fn finish_ready(
    obj: &WorkloadApiKey,
    ctx: &Context,
    status: WorkloadApiKeyStatus,
    until: Option<Timestamp>,
) -> Result<Action, Error> {
    let message = ready_message(obj, &status);
    if let Some(t) = &status.expires_at {
        set_resource_metric(ctx, obj, Series::Expiry, t.0.as_second());
    }
    if let Some(t) = &status.renew_at {
        set_resource_metric(ctx, obj, Series::Renewal, t.0.as_second());
    }
    settle(ctx, obj, status, true, reason::READY, message).await?;
    Ok(reconcile::requeue_at(ctx, obj, until))
}

/// Finalizer cleanup: revoke every key of the resource (Delete), or leave them (Retain).
async fn cleanup(obj: Arc<WorkloadApiKey>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconcile::forget_metrics(&ctx, obj.as_ref());
    let ns = obj.namespace().unwrap_or_default();
    if obj.spec.deletion_policy == DeletionPolicy::Retain {
        match provider::retain_forbidden(&ctx, &ns, &obj.spec.provider_ref).await? {
            Some(note) => ctx.event(obj.as_ref(), EventType::Warning, "RetainRefused", "Delete", note).await,
            None => {
                let note = "deletionPolicy Retain: vendor key left in place".to_owned();
                ctx.event(obj.as_ref(), EventType::Normal, "KeyRetained", "Delete", note).await;
                return Ok(Action::await_change());
            }
        }
    }
    let status = *status_of(obj.as_ref());
    if status.key_id.is_none() && status.retiring_keys.is_empty() && status.pending_key_name.is_none() {
        return Ok(Action::await_change());
    }
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
    let issuer = match Issuer::of(&provider, &ctx).await {
        Ok(i) => i,
        // The namespace is going away and took the admin credential with it: nothing can revoke the key now.
        Err(e @ (Error::SecretNotFound { .. } | Error::InvalidSecret { .. }))
            if namespace_terminating(&ctx, obj.as_ref()).await =>
        {
            return revoke_skipped(e.to_string()).await;
        }
        Err(e) => return Err(e),
    };
    if let Err(e) = bound_to(obj.as_ref(), issuer.endpoint(), &provider) {
        return revoke_skipped(e.to_string()).await;
    }
    let mut ids: Vec<VendorKeyId> =
        status.key_id.iter().chain(status.retiring_keys.iter().map(|k| &k.key_id)).cloned().collect();
    if let Some(pending) = &status.pending_key_name {
        ids.extend(issuer.pending_keys(&status, pending, &uid(obj.as_ref())?).await?);
    }
    for id in &ids {
        issuer.delete_key(id).await?;
    }
    let list: Vec<String> = ids.iter().map(VendorKeyId::to_string).collect();
    ctx.event(obj.as_ref(), EventType::Normal, "KeyRevoked", "Delete", format!("deleted vendor key(s) {list:?}")).await;
    Ok(Action::await_change())
}
