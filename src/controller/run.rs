//! The operator's run: every watch and controller wired together. The Secrets, providers, namespaces and workloads
//! that concern the resources are each watched once and fanned out to the controllers that wake on them.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt, channel::mpsc, future::BoxFuture};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::{
    Api, Resource, ResourceExt,
    core::object::HasStatus,
    runtime::{Controller, WatchStreamExt, predicates, reflector, reflector::ObjectRef, watcher},
};

use super::{
    Context, Error, cache, provider,
    reconcile::{self, Managed},
    secure_workload_credential,
    watches::{
        NamespaceMeta, Scope, SecretMeta, WatchBackoff, WorkloadChange, changed_only, fan_out, queue_key, slim,
        slim_meta, spec_or_intent_changed, uid_key, watch_config, workload_changes,
    },
    workload_api_key,
};
use crate::api::{
    ClusterKeyProvider, KeyProvider, KeyProviderStatus, LABEL_MANAGED_BY, LABEL_REFERENCED, MANAGED_BY, ProviderKind,
    RolloutTarget, SecureWorkloadCredential, WorkloadApiKey, WorkloadKind, conditions,
};

/// Runs every controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, scope: Scope, shutdown: BoxFuture<'static, ()>) {
    let shutdown = futures::future::FutureExt::shared(shutdown);
    let client = ctx.client.clone();
    let cfg = watch_config;

    // Metadata-only watches of the Secrets that concern the operator, never of every Secret: those it owns (drift),
    // selected by its managed-by label, and those it reads (a provider's credential, an imported key pair), which
    // it labels `workloadkeys.io/referenced`. Fanned out to every controller. Providers' Secrets may live in the
    // cluster-resource namespace, outside the watched ones.
    // The referenced ones are also cached (metadata; their data by resourceVersion, see `cache`).
    let secret_scope = scope.with(&ctx.settings.cluster_resource_namespace);
    let (referenced_store, referenced_writer) = reflector::store();
    let mut secret_txs = Vec::new();
    let secret_to = Consumers::resources(&mut secret_txs);
    // The provider controllers': ClusterKeyProviders', then KeyProviders'.
    let secret_to = secret_to.and((consumer(&mut secret_txs), consumer(&mut secret_txs)));
    let versions = ctx.clone();
    let owned = secret_scope
        // Their versions, kept before anyone is woken (see `versions`).
        .watch_observed::<SecretMeta, _>(
            &client,
            cfg().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}")),
            move |ns, e| versions.owned_secrets.apply(ns, e),
        )
        .backoff(WatchBackoff::default())
        // The events of the operator's own writes: the reconcile that wrote acts on what it wrote.
        .try_filter({
            let ctx = ctx.clone();
            move |e| {
                let (ctx, applied) =
                    (ctx.clone(), if let watcher::Event::Apply(s) = e { Some(s.clone()) } else { None });
                async move {
                    match applied {
                        Some(s) => !ctx.owned_secrets.is_own_write(&s).await,
                        None => true,
                    }
                }
            }
        });
    let referenced = secret_scope
        .watch::<SecretMeta>(&client, cfg().labels(LABEL_REFERENCED))
        .backoff(WatchBackoff::default())
        .modify(slim_meta)
        .reflect(referenced_writer);
    let secrets = fan_out(
        "Secret",
        futures::stream::select(owned, referenced).touched_objects().take_until(shutdown.clone()),
        secret_txs,
    );
    // Providers and namespace labels (allowlists), cached for the reconcilers and fanned out to the controllers:
    // each cache is written before the change it reflects wakes anyone.
    let (ckp_store, ckp_writer) = reflector::store();
    let mut ckp_txs = Vec::new();
    let ckp_to = Consumers::resources(&mut ckp_txs);
    let ckp_to = ckp_to.and(consumer(&mut ckp_txs));
    let ckps = fan_out(
        "ClusterKeyProvider",
        watcher(Api::<ClusterKeyProvider>::all(client.clone()), cfg())
            .backoff(WatchBackoff::default())
            .modify(|o| o.managed_fields_mut().clear())
            .reflect(ckp_writer)
            .touched_objects()
            .take_until(shutdown.clone()),
        ckp_txs,
    );
    let (kp_store, kp_writer) = reflector::store();
    let mut kp_txs = Vec::new();
    let kp_to = Consumers::resources(&mut kp_txs);
    let kp_to = kp_to.and(consumer(&mut kp_txs));
    let kps = fan_out(
        "KeyProvider",
        scope
            .watch::<KeyProvider>(&client, cfg())
            .backoff(WatchBackoff::default())
            .modify(|o| o.managed_fields_mut().clear())
            .reflect(kp_writer)
            .touched_objects()
            .take_until(shutdown.clone()),
        kp_txs,
    );
    let (ns_store, ns_writer) = reflector::store();
    let mut ns_txs = Vec::new();
    let ns_to = Consumers::resources(&mut ns_txs);
    let namespaces = fan_out(
        "Namespace",
        watcher(Api::<NamespaceMeta>::all(client.clone()), cfg())
            .backoff(WatchBackoff::default())
            .modify(slim_meta)
            .reflect(ns_writer)
            .touched_objects()
            .predicate_filter(predicates::labels, Default::default())
            .take_until(shutdown.clone()),
        ns_txs,
    );
    ctx.caches.install(cache::Stores {
        cluster_providers: ckp_store.clone(),
        providers: kp_store.clone(),
        namespaces: ns_store,
        referenced_secrets: referenced_store,
    });
    // Rollouts progressing: metadata-only watches of the three workload kinds (every change bumps the resource
    // version, status included); nothing is cached, each change only wakes the resources waiting for its rollout.
    let mut workload_txs = Vec::new();
    let workloads_to = Consumers::<WorkloadChange>::resources(&mut workload_txs);
    let workloads = fan_out(
        "workload",
        futures::stream::select_all([
            workload_changes::<Deployment>(&scope, &client, WorkloadKind::Deployment),
            workload_changes::<StatefulSet>(&scope, &client, WorkloadKind::StatefulSet),
            workload_changes::<DaemonSet>(&scope, &client, WorkloadKind::DaemonSet),
        ])
        .take_until(shutdown.clone()),
        workload_txs,
    );
    // Resources tell the providers they use that their count of users may have changed.
    let (ckp_users_tx, ckp_users) = futures::channel::mpsc::unbounded::<ObjectRef<ClusterKeyProvider>>();
    let (kp_users_tx, kp_users) = futures::channel::mpsc::unbounded::<ObjectRef<KeyProvider>>();
    let tap = UsersTap { cluster: ckp_users_tx, namespaced: kp_users_tx };

    let (wak_store, wak_writer) = reflector::store();
    let (swc_store, swc_writer) = reflector::store();
    // What the provider controllers take: the Secrets that concern them, and their own kind's changes.
    let (ckp_secrets, kp_secrets) = secret_to.other;
    let (ckp_own, kp_own) = (ckp_to.other, kp_to.other);
    let wak = controller::<WorkloadApiKey, _, _>(
        &ctx,
        &scope,
        (wak_store.clone(), wak_writer),
        Triggers {
            secrets: secret_to.workload_api_keys,
            cluster_providers: ckp_to.workload_api_keys,
            providers: kp_to.workload_api_keys,
            namespaces: ns_to.workload_api_keys,
            workloads: workloads_to.workload_api_keys,
        },
        tap.clone(),
        shutdown.clone(),
        workload_api_key::reconcile,
    );
    let swc = controller::<SecureWorkloadCredential, _, _>(
        &ctx,
        &scope,
        (swc_store.clone(), swc_writer),
        Triggers {
            secrets: secret_to.credentials,
            cluster_providers: ckp_to.credentials,
            providers: kp_to.credentials,
            namespaces: ns_to.credentials,
            workloads: workloads_to.credentials,
        },
        tap,
        shutdown.clone(),
        secure_workload_credential::reconcile,
    );
    let users = Arc::new(provider::reconciler::Users {
        workload_api_keys: wak_store,
        credentials: swc_store,
        scope: scope.clone(),
    });
    let ckp = provider_controller::<ClusterKeyProvider>(
        &ctx,
        (ckp_store, ckp_own),
        ckp_secrets,
        ckp_users,
        users.clone(),
        shutdown.clone(),
    );
    let kp =
        provider_controller::<KeyProvider>(&ctx, (kp_store, kp_own), kp_secrets, kp_users, users, shutdown.clone());
    let outages = wake_after_outages(ctx.clone(), shutdown.clone());
    futures::join!(secrets, ckps, kps, namespaces, workloads, wak, swc, ckp, kp, outages);
}

/// The resources that failed because a vendor endpoint was not answering are reconciled again as soon as one
/// answers (`clients::outage`), not at the end of their backoff.
async fn wake_after_outages(ctx: Arc<Context>, shutdown: futures::future::Shared<BoxFuture<'static, ()>>) {
    let mut recoveries = ctx.limiters.recoveries();
    let wake = async {
        while recoveries.changed().await.is_ok() {
            let woken: usize = ctx.all_wakeups().iter().map(|w| w.wake_outage_waiters()).sum();
            tracing::info!(woken, "a vendor endpoint answers again: the resources that waited for it are retried now");
        }
    };
    tokio::select! {
        () = wake => {}
        () = shutdown => {}
    }
}

/// The resources of `namespace` that name `target`. Not filtered by the cached status: the cache can lag behind
/// the status write that began a rollout, and the workload's last change (rollout complete) would then be lost;
/// the reconcile reads the resource fresh and costs Kubernetes reads only.
fn waiting_on<K: Managed>(store: &[Arc<K>], namespace: &str, target: &RolloutTarget) -> Vec<ObjectRef<K>> {
    store
        .iter()
        .filter(|r| r.namespace().as_deref() == Some(namespace) && r.rollout_targets().contains(target))
        .map(|r| queue_key(r.as_ref()))
        .collect()
}

/// A bounded channel for one consumer of a fan-out: its receiver, the sender added to the fan-out's.
fn consumer<T>(senders: &mut Vec<mpsc::Sender<T>>) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel(256);
    senders.push(tx);
    rx
}

/// The consumers of a watch of the resources' triggers: each resource controller, and optionally a third (the
/// provider controllers for Secrets, the provider's own controller for its kind).
struct Consumers<T, O = ()> {
    workload_api_keys: mpsc::Receiver<T>,
    credentials: mpsc::Receiver<T>,
    other: O,
}

impl<T> Consumers<T> {
    fn resources(senders: &mut Vec<mpsc::Sender<T>>) -> Self {
        Consumers { workload_api_keys: consumer(senders), credentials: consumer(senders), other: () }
    }
}

impl<T, O> Consumers<T, O> {
    fn and<P>(self, other: P) -> Consumers<T, P> {
        Consumers { workload_api_keys: self.workload_api_keys, credentials: self.credentials, other }
    }
}

/// What, besides its own changes, wakes a resource controller.
struct Triggers {
    secrets: mpsc::Receiver<SecretMeta>,
    cluster_providers: mpsc::Receiver<ClusterKeyProvider>,
    providers: mpsc::Receiver<KeyProvider>,
    namespaces: mpsc::Receiver<NamespaceMeta>,
    /// Workloads whose rollout changed.
    workloads: mpsc::Receiver<WorkloadChange>,
}

/// Tells a provider that a resource naming it changed (so it counts its users again).
#[derive(Clone)]
struct UsersTap {
    cluster: futures::channel::mpsc::UnboundedSender<ObjectRef<ClusterKeyProvider>>,
    namespaced: futures::channel::mpsc::UnboundedSender<ObjectRef<KeyProvider>>,
}

impl UsersTap {
    fn touched<K: Managed>(&self, obj: &K) {
        let r = obj.provider_ref();
        match r.kind {
            ProviderKind::ClusterKeyProvider => {
                let _ = self.cluster.unbounded_send(ObjectRef::new(&r.name));
            }
            ProviderKind::KeyProvider => {
                let ns = obj.namespace().unwrap_or_default();
                let _ = self.namespaced.unbounded_send(ObjectRef::new(&r.name).within(&ns));
            }
        }
    }
}

/// One controller of `K`, woken by its own changes, the Secrets that concern it, its provider and namespace.
async fn controller<K, R, RF>(
    ctx: &Arc<Context>,
    scope: &Scope,
    (store, writer): (reflector::Store<K>, reflector::store::Writer<K>),
    triggers: Triggers,
    tap: UsersTap,
    shutdown: futures::future::Shared<BoxFuture<'static, ()>>,
    reconcile: R,
) where
    K: Managed,
    R: FnMut(Arc<K>, Arc<Context>) -> RF,
    RF: futures::TryFuture<Ok = kube::runtime::controller::Action, Error = kube::runtime::finalizer::Error<Error>>
        + Send
        + 'static,
{
    let (written, forgotten) = (ctx.clone(), ctx.clone());
    let wakeups = ctx.wakeups::<K>();
    // Our own status writes must not wake the controller (a failure would otherwise retry in a tight loop):
    // only spec (generation), annotations (rotate), finalizers and deletion do.
    let events = changed_only(
        scope
            .watch::<K>(&ctx.client, watch_config())
            .backoff(WatchBackoff::default())
            // The cache keeps what the triggers need; every reconcile reads the resource fresh.
            .modify(slim::<K>)
            .reflect(writer)
            .inspect(move |e| match e {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => tap.touched(o),
                Ok(watcher::Event::Delete(o)) => {
                    tap.touched(o);
                    if let Some(uid) = o.uid() {
                        forgotten.written.forget(&uid);
                        wakeups.cancel(&uid);
                        wakeups.outage_over_for(&uid);
                    }
                }
                _ => {}
            }),
        move |o| {
            let has_finalizer = o.finalizers().iter().any(|f| f == crate::api::FINALIZER);
            o.uid().is_some_and(|uid| written.written.is_ours(&uid, o.resource_version().as_deref(), has_finalizer))
        },
    );
    let (by_secret, by_ckp, by_kp, by_ns) = (store.clone(), store.clone(), store.clone(), store.clone());
    let by_workload = store.clone();
    let rollouts = triggers
        .workloads
        .flat_map(move |(target, ns)| futures::stream::iter(waiting_on(&by_workload.state(), &ns, &target)));
    // Resources whose far wake-up fell due, found in the cache by UID.
    let by_uid = store.clone();
    let due = ctx.wakeups::<K>().due().flat_map(move |uids| {
        let uids: std::collections::HashSet<u128> = uids.into_iter().collect();
        let refs: Vec<ObjectRef<K>> = by_uid
            .state()
            .iter()
            .filter(|r| uids.contains(&uid_key(r.as_ref())))
            .map(|r| queue_key(r.as_ref()))
            .collect();
        futures::stream::iter(refs)
    });
    Controller::for_stream(events, store)
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.settings.max_concurrent_reconciles))
        .watches_stream(triggers.secrets.map(Ok::<_, watcher::Error>), move |secret| {
            let ns = secret.metadata.namespace.clone().unwrap_or_default();
            let name = secret.metadata.name.clone().unwrap_or_default();
            let owners: Vec<String> =
                secret.metadata.owner_references.unwrap_or_default().into_iter().map(|r| r.uid).collect();
            reconcile::affected_by_secret(&ns, &name, &owners, &by_secret.state())
        })
        .watches_stream(
            triggers
                .cluster_providers
                .map(Ok::<_, watcher::Error>)
                .predicate_filter(provider_state::<ClusterKeyProvider>, Default::default()),
            move |p| users_of(&by_ckp.state(), ProviderKind::ClusterKeyProvider, None, &p.name_any()),
        )
        .watches_stream(
            triggers
                .providers
                .map(Ok::<_, watcher::Error>)
                .predicate_filter(provider_state::<KeyProvider>, Default::default()),
            move |p| users_of(&by_kp.state(), ProviderKind::KeyProvider, p.namespace().as_deref(), &p.name_any()),
        )
        .watches_stream(triggers.namespaces.map(Ok::<_, watcher::Error>), move |ns| {
            // A namespace relabelled: the resources there that use a ClusterKeyProvider (allowlists).
            let name = ns.name_any();
            by_ns
                .state()
                .iter()
                .filter(|r| r.namespace().as_deref() == Some(name.as_str()))
                .filter(|r| r.provider_ref().kind == ProviderKind::ClusterKeyProvider)
                .map(|r| queue_key(r.as_ref()))
                .collect::<Vec<_>>()
        })
        .reconcile_on(futures::stream::select(rollouts, due))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, reconcile::error_policy::<K>, ctx.clone())
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::trace!(resource = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}

/// The resources in `store` that name the provider (`namespace`: a `KeyProvider`'s own).
fn users_of<K: Managed>(
    store: &[Arc<K>],
    kind: ProviderKind,
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<K>> {
    store
        .iter()
        .filter(|r| {
            let p = r.provider_ref();
            p.kind == kind && p.name == name && (namespace.is_none() || r.namespace().as_deref() == namespace)
        })
        .map(|r| queue_key(r.as_ref()))
        .collect()
}

/// What a resource controller cares about in a provider: spec, readiness, deletion (not its count of users).
fn provider_state<P: Resource + HasStatus<Status = KeyProviderStatus>>(p: &P) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.meta().generation.hash(&mut h);
    p.meta().deletion_timestamp.is_some().hash(&mut h);
    if let Some(s) = p.status() {
        s.observed_generation.hash(&mut h);
        if let Some(c) = conditions::find(&s.conditions, conditions::READY) {
            (&c.status, &c.reason, &c.message).hash(&mut h);
        }
    }
    Some(h.finish())
}

/// The controller of one provider kind.
async fn provider_controller<P>(
    ctx: &Arc<Context>,
    (store, changes): (reflector::Store<P>, mpsc::Receiver<P>),
    secrets: mpsc::Receiver<SecretMeta>,
    users_changed: futures::channel::mpsc::UnboundedReceiver<ObjectRef<P>>,
    users: Arc<provider::reconciler::Users>,
    shutdown: futures::future::Shared<BoxFuture<'static, ()>>,
) where
    P: provider::reconciler::ProviderObject + HasStatus<Status = KeyProviderStatus>,
{
    let events = changes.map(Ok::<_, watcher::Error>).predicate_filter(spec_or_intent_changed(), Default::default());
    let by_secret = store.clone();
    let ctx_for_view = ctx.clone();
    Controller::for_stream(events, store)
        .with_config(kube::runtime::controller::Config::default().debounce(std::time::Duration::from_secs(1)))
        .watches_stream(secrets.map(Ok::<_, watcher::Error>), move |secret| {
            // A Secret a provider names changed: check its credential again.
            let ns = secret.metadata.namespace.clone().unwrap_or_default();
            let name = secret.metadata.name.clone().unwrap_or_default();
            by_secret
                .state()
                .iter()
                .filter(|p| {
                    let view = p.view(&ctx_for_view);
                    view.secret_namespace == ns && provider::reconciler::names_secret(&view, &name)
                })
                .map(|p| queue_key(p.as_ref()))
                .collect::<Vec<_>>()
        })
        .reconcile_on(users_changed)
        .graceful_shutdown_on(shutdown)
        .run(
            move |obj, ctx| provider::reconciler::reconcile(obj, ctx, users.clone()),
            |obj, err, ctx| provider::reconciler::error_policy(obj, err, ctx),
            ctx.clone(),
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "provider reconcile error");
            }
        })
        .await;
}
