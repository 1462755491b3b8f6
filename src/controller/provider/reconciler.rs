//! The providers' own reconciler, for both kinds. It proves the admin credential with a read-only vendor call
//! (again when the spec or a named Secret changes, and at least hourly), counts the resources that use the
//! provider, and keeps two finalizers:
//! - on the provider while resources use it: their cleanup revokes keys through it, so it stays until the last
//!   of them is gone (status names who still uses it);
//! - on each Secret it names: a namespace deleted at once (provider, admin Secret and resources together) keeps
//!   the admin credential until the provider, and so every key revocation, is done.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{controller::Action, events::EventType, reflector::Store},
};
use serde_json::json;

use super::Provider;
use crate::{
    api::{
        ClusterKeyProvider, KeyProvider, KeyProviderStatus, LABEL_REFERENCED, PROVIDER_FINALIZER, ProviderKind,
        SECRET_FINALIZER, SecureWorkloadCredential, WorkloadApiKey,
        conditions::{self, READY, reason},
    },
    controller::{
        Context, Scope,
        cache::{Cached, SecretMeta},
        context::{digest, display_name},
        error::{Error, backoff, kube_call, kube_call_on},
        reconcile::Managed,
        secret::FIELD_MANAGER,
    },
};

/// How often a Ready provider's admin credential is proven again.
pub const RECHECK: Duration = Duration::from_secs(3600);
/// How many users the status lists by name.
const USERS_LISTED: usize = 50;

/// What the provider reconciler needs beyond the shared context: who may use a provider.
#[derive(Clone)]
pub struct Users {
    pub workload_api_keys: Store<WorkloadApiKey>,
    pub credentials: Store<SecureWorkloadCredential>,
    pub scope: Scope,
}

impl Users {
    /// The resources that reference `provider`, from the watch caches (cheap; used at rest).
    fn cached(&self, provider: &Provider, provider_ns: Option<&str>) -> Vec<String> {
        let mut users = names_in(&self.workload_api_keys, provider, provider_ns);
        users.extend(names_in(&self.credentials, provider, provider_ns));
        users.sort();
        users
    }

    /// The same, read from the API server: what decides that a provider being deleted may go.
    async fn fresh(&self, ctx: &Context, provider: &Provider, provider_ns: Option<&str>) -> Result<Vec<String>, Error> {
        let namespaces: Vec<Option<String>> = match (provider_ns, &self.scope) {
            (Some(ns), _) => vec![Some(ns.to_owned())],
            (None, Scope::AllNamespaces) => vec![None],
            (None, Scope::Namespaces(list)) => list.iter().cloned().map(Some).collect(),
        };
        let mut users = Vec::new();
        for ns in namespaces {
            users.extend(list_users::<WorkloadApiKey>(ctx, ns.as_deref(), provider, provider_ns).await?);
            users.extend(list_users::<SecureWorkloadCredential>(ctx, ns.as_deref(), provider, provider_ns).await?);
        }
        users.sort();
        Ok(users)
    }
}

/// `Kind namespace/name` of the resources in `store` that use `provider`.
fn names_in<K: Managed>(store: &Store<K>, provider: &Provider, provider_ns: Option<&str>) -> Vec<String> {
    let kind = K::kind(&());
    store
        .state()
        .iter()
        .filter(|r| uses(r.as_ref(), provider, provider_ns))
        .map(|r| format!("{kind} {}", display_name(r.as_ref())))
        .collect()
}

async fn list_users<K>(
    ctx: &Context,
    ns: Option<&str>,
    provider: &Provider,
    provider_ns: Option<&str>,
) -> Result<Vec<String>, Error>
where
    K: Managed + Resource<Scope = NamespaceResourceScope>,
{
    let api: Api<K> = match ns {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let list =
        api.list(&ListParams::default()).await.map_err(kube_call("list", &K::kind(&()), ns.unwrap_or(""), ""))?;
    Ok(list
        .items
        .iter()
        .filter(|r| uses(*r, provider, provider_ns))
        .map(|r| format!("{} {}", K::kind(&()), display_name(r)))
        .collect())
}

/// Whether resource `r` names `provider` (a `KeyProvider` only from its own namespace).
fn uses<K: Managed>(r: &K, provider: &Provider, provider_ns: Option<&str>) -> bool {
    let p = r.provider_ref();
    p.kind == provider.kind
        && p.name == provider.name
        && (provider.kind == ProviderKind::ClusterKeyProvider || r.namespace().as_deref() == provider_ns)
}

/// The Secrets a provider names, in its Secret namespace.
fn named_secrets(provider: &Provider) -> BTreeSet<String> {
    provider.named_secrets().map(str::to_owned).collect()
}

/// Whether `provider` names the Secret `name` (of its Secret namespace).
pub fn names_secret(provider: &Provider, name: &str) -> bool {
    named_secrets(provider).contains(name)
}

/// A provider of either kind, for the one reconcile below.
pub trait ProviderObject:
    Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static
{
    fn view(&self, ctx: &Context) -> Provider;
    fn status(&self) -> KeyProviderStatus;
    fn api(&self, ctx: &Context) -> Api<Self>;
}

impl ProviderObject for ClusterKeyProvider {
    fn view(&self, ctx: &Context) -> Provider {
        Provider::from_cluster(self, &ctx.settings.cluster_resource_namespace)
    }
    fn status(&self) -> KeyProviderStatus {
        self.status.clone().unwrap_or_default()
    }
    fn api(&self, ctx: &Context) -> Api<Self> {
        Api::all(ctx.client.clone())
    }
}

impl ProviderObject for KeyProvider {
    fn view(&self, _ctx: &Context) -> Provider {
        Provider::from_namespaced(self)
    }
    fn status(&self) -> KeyProviderStatus {
        self.status.clone().unwrap_or_default()
    }
    fn api(&self, ctx: &Context) -> Api<Self> {
        Api::namespaced(ctx.client.clone(), &self.namespace().unwrap_or_default())
    }
}

/// Entry point for the controller runtime, both kinds.
pub async fn reconcile<P: ProviderObject>(obj: Arc<P>, ctx: Arc<Context>, users: Arc<Users>) -> Result<Action, Error> {
    // Decide on the provider as the API server has it now (finalizers and deletion matter here).
    let Some(obj) = obj.api(&ctx).get_opt(&obj.name_any()).await.map_err(kube_call_on("get", obj.as_ref()))? else {
        return Ok(Action::await_change());
    };
    let provider = obj.view(&ctx);
    let provider_ns = obj.namespace();
    if obj.meta().deletion_timestamp.is_some() {
        return finish_deletion(&obj, &ctx, &users, &provider, provider_ns.as_deref()).await;
    }
    add_finalizer(&obj, &ctx).await?;
    let mut status = obj.status();
    let previous = status.clone();
    hold_secrets(&ctx, &provider, &mut status).await?;
    let all_users = users.cached(&provider, provider_ns.as_deref());
    status.in_use = Some(i32::try_from(all_users.len()).unwrap_or(i32::MAX));
    status.users = all_users.into_iter().take(USERS_LISTED).collect();
    status.vendor = provider.vendor().map(str::to_owned);
    status.url = provider.url().map(str::to_owned);

    // The credential is checked again only when what it depends on changed, or an hour has passed.
    let version = credential_version(&ctx, &provider, obj.meta().generation).await;
    let due = status
        .last_checked_at
        .as_ref()
        .is_none_or(|t| Timestamp::now().duration_since(t.0).as_secs() >= RECHECK.as_secs() as i64)
        || status.checked_version.as_deref() != Some(version.as_str());
    let mut requeue = RECHECK;
    if due {
        let proven = status.checked_version.as_deref() == Some(version.as_str())
            && ready_condition(&status).is_some_and(|c| c.status == "True");
        let (ok, why, message) = match super::connect::check(&provider, &ctx).await {
            Ok(message) => (true, reason::READY, message),
            Err(e) if still_proven(proven, &e) => {
                requeue = backoff(status.failed_checks.unwrap_or(0) as u32 + 1, e.retry_after(), rand::random());
                (true, e.reason(), format!("proven before, not re-checked: {e}"))
            }
            Err(e) => {
                let why = match &e {
                    Error::Vendor(_) => reason::CREDENTIAL_CHECK_FAILED,
                    other => other.reason(),
                };
                requeue = backoff(status.failed_checks.unwrap_or(0) as u32 + 1, e.retry_after(), rand::random());
                (false, why, e.to_string())
            }
        };
        status.failed_checks = if ok { None } else { Some(status.failed_checks.unwrap_or(0).saturating_add(1)) };
        status.last_checked_at = Some(Time(Timestamp::now()));
        status.checked_version = Some(version);
        let changed = conditions::set_condition(
            &mut status.conditions,
            READY,
            ok,
            why,
            message.clone(),
            obj.meta().generation,
            Timestamp::now(),
        );
        if changed {
            let type_ = if ok { EventType::Normal } else { EventType::Warning };
            ctx.event(&obj, type_, why, "CheckCredential", message).await;
        }
    } else if let Some(n) = status.failed_checks {
        requeue = backoff(n as u32, None, rand::random());
    }
    status.observed_generation = obj.meta().generation;
    conditions::remove(&mut status.conditions, conditions::IN_USE);
    if status != previous {
        patch_status(&obj, &ctx, &status).await?;
    }
    let ready = conditions::find(&status.conditions, READY).is_some_and(|c| c.status == "True");
    let kind = P::kind(&());
    let users = i64::from(status.in_use.unwrap_or(0));
    ctx.metrics.set_provider_ready(&kind, provider_ns.as_deref().unwrap_or(""), &obj.name_any(), ready, users);
    Ok(Action::requeue(requeue))
}

/// Whether a periodic re-check that could not reach the vendor (unavailable or rate-limited) leaves the provider
/// Ready: it was proven for the same spec and Secrets, and nothing says the credential is bad. Otherwise an hourly
/// re-check during a vendor outage would turn every resource using the provider `ProviderNotReady`, working keys
/// included (the fault suite's rule: a vendor outage does not report working keys as broken).
fn still_proven(proven: bool, err: &Error) -> bool {
    use crate::clients::{ErrorKind, VendorError};
    proven
        && matches!(err, Error::Vendor(VendorError { kind: ErrorKind::Transient | ErrorKind::RateLimited { .. }, .. }))
}

/// A failure outside the credential check (Kubernetes API errors): retry with backoff.
pub fn error_policy<P: ProviderObject>(obj: Arc<P>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(provider = %obj.name_any(), error = %err, "provider reconcile failed");
    Action::requeue(backoff(3, None, rand::random()))
}

/// A digest of what the credential check depends on: the spec generation and the resource versions of the
/// Secrets the provider names (a missing Secret counts as its own version).
async fn credential_version(ctx: &Context, provider: &Provider, generation: Option<i64>) -> String {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &provider.secret_namespace);
    let mut parts = vec![generation.unwrap_or(0).to_string()];
    for name in named_secrets(provider) {
        // The watch of referenced Secrets brings each change of them, and wakes the provider with it.
        if let Cached::Present(cached) = ctx.caches.referenced_secret(&provider.secret_namespace, &name).await {
            parts.push(format!("{name}={}", cached.metadata.resource_version.clone().unwrap_or_default()));
            continue;
        }
        let rv = match api.get_metadata_opt(&name).await {
            Ok(Some(m)) => m.metadata.resource_version.unwrap_or_default(),
            Ok(None) => "missing".into(),
            Err(_) => "unreadable".into(),
        };
        parts.push(format!("{name}={rv}"));
    }
    let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    digest(&bytes)
}

async fn add_finalizer<P: ProviderObject>(obj: &P, ctx: &Context) -> Result<(), Error> {
    if obj.finalizers().iter().any(|f| f == PROVIDER_FINALIZER) {
        return Ok(());
    }
    let mut finalizers = obj.finalizers().to_vec();
    finalizers.push(PROVIDER_FINALIZER.to_owned());
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}});
    obj.api(ctx)
        .patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_call_on("add the finalizer to", obj))?;
    Ok(())
}

/// Puts the Secret finalizer (and the label the operator's Secret watch selects) on every Secret the provider
/// names, and releases those it named before but no longer does (when no other provider names them).
async fn hold_secrets(ctx: &Context, provider: &Provider, status: &mut KeyProviderStatus) -> Result<(), Error> {
    let named = named_secrets(provider);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &provider.secret_namespace);
    let is_held = |secret: &SecretMeta| {
        let held = secret.finalizers().iter().any(|f| f == SECRET_FINALIZER);
        (held && secret.labels().contains_key(LABEL_REFERENCED)) || secret.metadata.deletion_timestamp.is_some()
    };
    for name in &named {
        let secret_ns = provider.secret_namespace.as_str();
        // Held already as the watch of referenced Secrets has it: nothing to read (it watches only labelled ones).
        if let Cached::Present(cached) = ctx.caches.referenced_secret(secret_ns, name).await
            && is_held(&cached)
        {
            continue;
        }
        let Some(secret) = api.get_metadata_opt(name).await.map_err(kube_call("get", "Secret", secret_ns, name))?
        else {
            continue;
        };
        if is_held(&secret) {
            continue;
        }
        let mut finalizers = secret.finalizers().to_vec();
        if !finalizers.iter().any(|f| f == SECRET_FINALIZER) {
            finalizers.push(SECRET_FINALIZER.to_owned());
        }
        let patch = json!({"metadata": {
            "finalizers": finalizers,
            "labels": {LABEL_REFERENCED: "true"},
            "resourceVersion": secret.resource_version(),
        }});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_call("hold", "Secret", secret_ns, name))?;
    }
    let dropped: Vec<String> = status.held_secrets.iter().filter(|s| !named.contains(*s)).cloned().collect();
    for name in dropped {
        release_secret(ctx, provider, &name).await?;
    }
    status.held_secrets = named.into_iter().collect();
    Ok(())
}

/// Removes the Secret finalizer and label from `name` unless another live provider names it.
async fn release_secret(ctx: &Context, provider: &Provider, name: &str) -> Result<(), Error> {
    if named_elsewhere(ctx, provider, name).await? {
        return Ok(());
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &provider.secret_namespace);
    let secret_ns = provider.secret_namespace.as_str();
    let Some(secret) = api.get_metadata_opt(name).await.map_err(kube_call("get", "Secret", secret_ns, name))? else {
        return Ok(());
    };
    if !secret.finalizers().iter().any(|f| f == SECRET_FINALIZER) && !secret.labels().contains_key(LABEL_REFERENCED) {
        return Ok(());
    }
    let finalizers: Vec<&String> = secret.finalizers().iter().filter(|f| *f != SECRET_FINALIZER).collect();
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "labels": {LABEL_REFERENCED: null},
        "resourceVersion": secret.resource_version(),
    }});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_call("release", "Secret", secret_ns, name))?;
    Ok(())
}

/// Whether a provider other than `provider`, not being deleted, names the Secret `name` of the same namespace.
async fn named_elsewhere(ctx: &Context, provider: &Provider, name: &str) -> Result<bool, Error> {
    let ns = &provider.secret_namespace;
    let mut others = live_providers(ctx, Api::<KeyProvider>::namespaced(ctx.client.clone(), ns)).await?;
    if *ns == ctx.settings.cluster_resource_namespace {
        others.extend(live_providers(ctx, Api::<ClusterKeyProvider>::all(ctx.client.clone())).await?);
    }
    Ok(others
        .iter()
        .filter(|p| !(p.kind == provider.kind && p.name == provider.name && p.secret_namespace == *ns))
        .any(|p| named_secrets(p).contains(name)))
}

/// The providers `api` lists that are not being deleted.
async fn live_providers<P: ProviderObject>(ctx: &Context, api: Api<P>) -> Result<Vec<Provider>, Error> {
    let list = api.list(&ListParams::default()).await.map_err(kube_call("list", &P::kind(&()), "", ""))?;
    Ok(list.items.iter().filter(|p| p.meta().deletion_timestamp.is_none()).map(|p| p.view(ctx)).collect())
}

/// A provider being deleted goes only when no resource uses it any more; then it lets go of its Secrets.
async fn finish_deletion<P: ProviderObject>(
    obj: &P,
    ctx: &Context,
    users: &Users,
    provider: &Provider,
    provider_ns: Option<&str>,
) -> Result<Action, Error> {
    if !obj.finalizers().iter().any(|f| f == PROVIDER_FINALIZER) {
        return Ok(Action::await_change());
    }
    let still = users.fresh(ctx, provider, provider_ns).await?;
    if !still.is_empty() {
        let mut status = obj.status();
        let previous = status.clone();
        let listed: Vec<&str> = still.iter().take(USERS_LISTED).map(String::as_str).collect();
        let message = format!(
            "being deleted; kept until the {} resource(s) that use it are deleted and their keys revoked: {}",
            still.len(),
            listed.join(", ")
        );
        status.in_use = Some(i32::try_from(still.len()).unwrap_or(i32::MAX));
        status.users = listed.iter().map(|s| (*s).to_owned()).collect();
        let changed = conditions::set_condition(
            &mut status.conditions,
            conditions::IN_USE,
            true,
            reason::IN_USE,
            message.clone(),
            obj.meta().generation,
            Timestamp::now(),
        );
        if status != previous {
            patch_status(obj, ctx, &status).await?;
        }
        if changed {
            ctx.event(obj, EventType::Warning, reason::IN_USE, "Delete", message).await;
        }
        // Deletions of the users wake us; this is a safety net.
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    for name in named_secrets(provider) {
        release_secret(ctx, provider, &name).await?;
    }
    let finalizers: Vec<&String> = obj.finalizers().iter().filter(|f| *f != PROVIDER_FINALIZER).collect();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}});
    obj.api(ctx)
        .patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_call_on("remove the finalizer from", obj))?;
    ctx.metrics.forget_provider(&P::kind(&()), provider_ns.unwrap_or(""), &obj.name_any());
    tracing::info!(provider = %provider.display(), "no resource uses it any more: released");
    Ok(Action::await_change())
}

async fn patch_status<P: ProviderObject>(obj: &P, ctx: &Context, status: &KeyProviderStatus) -> Result<(), Error> {
    let patch = json!({"apiVersion": P::api_version(&()), "kind": P::kind(&()), "status": status});
    obj.api(ctx)
        .patch_status(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(kube_call_on("patch the status of", obj))?;
    Ok(())
}

/// The `Ready` condition of a provider, if any (for tests and tools).
pub fn ready_condition(status: &KeyProviderStatus) -> Option<&Condition> {
    conditions::find(&status.conditions, READY)
}

#[cfg(test)]
mod still_proven_tests {
    use super::*;
    use crate::clients::{ErrorKind, VendorError};

    #[test]
    fn a_vendor_outage_does_not_unprove_a_proven_credential() {
        let vendor = |kind| Error::Vendor(VendorError::new(kind, "describe the current API key", None, ""));
        assert!(still_proven(true, &vendor(ErrorKind::Transient)));
        assert!(still_proven(true, &vendor(ErrorKind::RateLimited { retry_after: None })));
        assert!(!still_proven(false, &vendor(ErrorKind::Transient)), "never proven, or proven for another spec");
        assert!(!still_proven(true, &vendor(ErrorKind::Unauthorized)), "the vendor refused the credential");
        assert!(
            !still_proven(true, &Error::SecretNotFound { namespace: "n".into(), name: "x".into() }),
            "a Secret went missing"
        );
    }
}
