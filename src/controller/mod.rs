//! Where Kubernetes and the vendors meet: thin reconcilers, pure decisions and builders, events, metrics.

pub mod cache;
pub mod context;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod leader;
pub mod metrics;
pub mod provider;
pub mod reconcile;
pub mod rollout;
pub mod secret;
pub mod secure_workload_credential;
pub mod server;
pub mod vendor_key;
pub mod versions;
pub mod wakeups;
pub mod workload_api_key;

use std::{collections::HashMap, sync::Arc};

use std::fmt::Debug;

use futures::{SinkExt, Stream, StreamExt, channel::mpsc, future::BoxFuture, stream::BoxStream};
use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::{DaemonSet, Deployment, StatefulSet},
        core::v1::{Namespace, Secret},
    },
};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::{PartialObjectMeta, object::HasStatus},
    runtime::{Controller, Predicate, WatchStreamExt, predicates, reflector, reflector::ObjectRef, watcher},
};
use serde::de::DeserializeOwned;

pub use context::{Context, Settings};
pub use error::Error;

use crate::api::{
    API_GROUP, ClusterKeyProvider, KeyProvider, KeyProviderStatus, LABEL_MANAGED_BY, LABEL_REFERENCED, MANAGED_BY,
    ProviderKind, RolloutTarget, SecureWorkloadCredential, WorkloadApiKey, WorkloadKind, conditions,
};
use reconcile::{Managed, ManagedStatus};

/// Which namespaces the controllers watch.
#[derive(Clone, Debug, Default)]
pub enum Scope {
    #[default]
    AllNamespaces,
    /// These namespaces only (one watch each; the operator needs no cluster-wide read of them).
    Namespaces(Vec<String>),
}

type Events<K> = BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// What a namespaced watch needs of its objects.
trait Watchable:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static
{
}

impl<K> Watchable for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static
{
}

impl Scope {
    /// The watch events of namespaced `K` in scope.
    fn watch<K: Watchable>(&self, client: &Client, config: watcher::Config) -> Events<K> {
        self.watch_observed(client, config, |_, _| {})
    }

    /// The same, with every event of each underlying watch shown to `observe` first, with that watch's namespace
    /// (`None`: all of them), relists included.
    fn watch_observed<K, F>(&self, client: &Client, config: watcher::Config, observe: F) -> Events<K>
    where
        K: Watchable,
        F: Fn(Option<&str>, &watcher::Event<K>) + Clone + Send + Sync + 'static,
    {
        let observed = move |namespace: Option<String>, events: BoxStream<'static, _>| {
            let observe = observe.clone();
            events
                .inspect(move |e: &Result<watcher::Event<K>, watcher::Error>| {
                    if let Ok(e) = e {
                        observe(namespace.as_deref(), e);
                    }
                })
                .boxed()
        };
        match self {
            Scope::AllNamespaces => observed(None, watcher(Api::all(client.clone()), config).boxed()),
            Scope::Namespaces(list) if list.len() == 1 => {
                observed(Some(list[0].clone()), watcher(Api::namespaced(client.clone(), &list[0]), config).boxed())
            }
            Scope::Namespaces(list) => {
                // Each namespace's watch lists on its own schedule, and a store takes any one list for the whole
                // of it. So the merged stream starts with one empty list and brings every object as an update.
                let each = list.iter().map(|ns| {
                    observed(Some(ns.clone()), watcher(Api::namespaced(client.clone(), ns), config.clone()).boxed())
                        .filter_map(|e| async move {
                            match e {
                                Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                                Ok(watcher::Event::InitApply(o)) => Some(Ok(watcher::Event::Apply(o))),
                                other => Some(other),
                            }
                        })
                        .boxed()
                });
                futures::stream::iter([Ok(watcher::Event::Init), Ok(watcher::Event::InitDone)])
                    .chain(futures::stream::select_all(each))
                    .boxed()
            }
        }
    }

    /// The same scope widened by `extra` (the cluster-resource namespace, whose Secrets providers name).
    fn with(&self, extra: &str) -> Scope {
        match self {
            Scope::Namespaces(list) if !list.iter().any(|n| n == extra) => {
                Scope::Namespaces(list.iter().cloned().chain([extra.to_owned()]).collect())
            }
            other => other.clone(),
        }
    }
}

type SecretMeta = PartialObjectMeta<Secret>;
type NamespaceMeta = PartialObjectMeta<Namespace>;
/// A workload that changed, and its namespace.
type WorkloadChange = (RolloutTarget, String);

/// Sends every item of `source` to each of `sinks` (bounded: a slow consumer slows the watch, nothing is lost).
async fn fan_out<T: Clone + Send + 'static>(
    what: &'static str,
    source: impl Stream<Item = Result<T, watcher::Error>> + Send,
    sinks: Vec<mpsc::Sender<T>>,
) {
    source
        .for_each(move |event| {
            let mut sinks = sinks.clone();
            async move {
                match event {
                    // A closed receiver means its controller has stopped: nothing left to tell it.
                    Ok(item) => {
                        for sink in &mut sinks {
                            let _ = sink.send(item.clone()).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "{what} watch error"),
                }
            }
        })
        .await;
}

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
    let (secret_txs, [wak_secrets, swc_secrets, ckp_secrets, kp_secrets]) = channels::<SecretMeta, 4>();
    let versions = ctx.clone();
    let owned = secret_scope
        // Their versions, kept before anyone is woken (see `versions`).
        .watch_observed::<SecretMeta, _>(
            &client,
            cfg().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}")),
            move |ns, e| versions.owned_secrets.apply(ns, e),
        )
        .default_backoff();
    let referenced = secret_scope
        .watch::<SecretMeta>(&client, cfg().labels(LABEL_REFERENCED))
        .default_backoff()
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
    let (ckp_txs, [wak_ckp, swc_ckp, ckp_own]) = channels::<ClusterKeyProvider, 3>();
    let ckps = fan_out(
        "ClusterKeyProvider",
        watcher(Api::<ClusterKeyProvider>::all(client.clone()), cfg())
            .default_backoff()
            .modify(|o| o.managed_fields_mut().clear())
            .reflect(ckp_writer)
            .touched_objects()
            .take_until(shutdown.clone()),
        ckp_txs,
    );
    let (kp_store, kp_writer) = reflector::store();
    let (kp_txs, [wak_kp, swc_kp, kp_own]) = channels::<KeyProvider, 3>();
    let kps = fan_out(
        "KeyProvider",
        scope
            .watch::<KeyProvider>(&client, cfg())
            .default_backoff()
            .modify(|o| o.managed_fields_mut().clear())
            .reflect(kp_writer)
            .touched_objects()
            .take_until(shutdown.clone()),
        kp_txs,
    );
    let (ns_store, ns_writer) = reflector::store();
    let (ns_txs, [wak_ns, swc_ns]) = channels::<NamespaceMeta, 2>();
    let namespaces = fan_out(
        "Namespace",
        watcher(Api::<NamespaceMeta>::all(client.clone()), cfg())
            .default_backoff()
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
    let (workload_txs, [wak_workloads, swc_workloads]) = channels::<WorkloadChange, 2>();
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
    let triggers = |secrets, ckp, kp, ns, workloads| Triggers {
        secrets,
        cluster_providers: ckp,
        providers: kp,
        namespaces: ns,
        workloads,
    };
    let wak = controller::<WorkloadApiKey, _, _>(
        &ctx,
        &scope,
        (wak_store.clone(), wak_writer),
        triggers(wak_secrets, wak_ckp, wak_kp, wak_ns, wak_workloads),
        tap.clone(),
        shutdown.clone(),
        workload_api_key::reconcile,
    );
    let swc = controller::<SecureWorkloadCredential, _, _>(
        &ctx,
        &scope,
        (swc_store.clone(), swc_writer),
        triggers(swc_secrets, swc_ckp, swc_kp, swc_ns, swc_workloads),
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
    futures::join!(secrets, ckps, kps, namespaces, workloads, wak, swc, ckp, kp);
}

/// What the watch cache keeps of a resource: what finds it from a trigger (spec, names, the operator's own
/// annotations for the rotate request) and the failed-attempt count `reconcile::error_policy` backs off by. Not its
/// status otherwise (every reconcile reads the resource fresh, see `reconcile::reconcile`), nor who wrote which
/// field, nor `kubectl apply`'s copy of the spec: at 10,000 resources these were most of the operator's memory.
/// Nor its labels and other annotations, which nothing reads and which an app team could make up to 256 KiB a
/// resource; an operator annotation's value longer than [`CACHED_ANNOTATION`] is kept as its digest, which still
/// changes when it does (the reconcile acts on the value it reads fresh).
pub fn slim<K: Managed>(o: &mut K) {
    o.managed_fields_mut().clear();
    o.labels_mut().clear();
    o.annotations_mut().retain(|k, _| k.strip_prefix(API_GROUP).is_some_and(|rest| rest.starts_with('/')));
    for value in o.annotations_mut().values_mut() {
        if value.len() > CACHED_ANNOTATION {
            *value = context::digest(&[value.as_bytes()]);
        }
    }
    let attempts = o.status().and_then(|s| s.failed_attempts());
    *o.status_mut() = attempts.map(|a| {
        let mut s = K::Status::default();
        *s.failed_attempts_mut() = Some(a);
        s
    });
}

/// The same for a metadata-only watch (namespaces, Secrets): names, labels and owners are what is read.
fn slim_meta<K>(o: &mut PartialObjectMeta<K>) {
    o.metadata.managed_fields = None;
    o.metadata.annotations = None;
}

/// The longest operator annotation value the watch cache keeps as it is (a digest is 64 characters).
const CACHED_ANNOTATION: usize = 64;

/// Every watch's list: from the API server's watch cache, in pages of [`LIST_PAGE`]. A page is decoded whole, with
/// the who-wrote-what of each object that the caches then drop: at kube's default of 500 objects a page of
/// WorkloadApiKeys or Secrets was the largest transient of a restart with thousands of them.
fn watch_config() -> watcher::Config {
    watcher::Config::default().any_semantic().page_size(LIST_PAGE)
}

const LIST_PAGE: u32 = 100;

/// The changes of one workload kind in scope, as (target, namespace).
fn workload_changes<W>(
    scope: &Scope,
    client: &Client,
    kind: WorkloadKind,
) -> BoxStream<'static, Result<WorkloadChange, watcher::Error>>
where
    W: Watchable,
{
    scope
        .watch::<PartialObjectMeta<W>>(client, watch_config())
        .default_backoff()
        .touched_objects()
        .map(move |o| o.map(|o| (RolloutTarget { kind, name: o.name_any() }, o.namespace().unwrap_or_default())))
        .boxed()
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

/// `N` bounded channels: the senders for a fan-out, the receivers for its consumers.
fn channels<T, const N: usize>() -> (Vec<mpsc::Sender<T>>, [mpsc::Receiver<T>; N]) {
    let pairs: [(mpsc::Sender<T>, mpsc::Receiver<T>); N] = std::array::from_fn(|_| mpsc::channel(256));
    let mut txs = Vec::with_capacity(N);
    let rxs = pairs.map(|(tx, rx)| {
        txs.push(tx);
        rx
    });
    (txs, rxs)
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
    let written = ctx.clone();
    let wakeups = ctx.wakeups::<K>();
    // Our own status writes must not wake the controller (a failure would otherwise retry in a tight loop):
    // only spec (generation), annotations (rotate), finalizers and deletion do.
    let events = changed_only(
        scope
            .watch::<K>(&ctx.client, watch_config())
            .default_backoff()
            // The cache keeps what the triggers need; every reconcile reads the resource fresh.
            .modify(slim::<K>)
            .reflect(writer)
            .inspect(move |e| match e {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    tap.touched(o);
                    if let Some(uid) = o.uid() {
                        written.written.seen(&uid, o.resource_version().as_deref());
                    }
                }
                Ok(watcher::Event::Delete(o)) => {
                    tap.touched(o);
                    if let Some(uid) = o.uid() {
                        written.written.forget(&uid);
                        wakeups.cancel(&uid);
                    }
                }
                _ => {}
            }),
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

/// Changes that ask for work: the spec, annotations (the rotate annotation), finalizers, deletion.
fn spec_or_intent_changed<K: Resource>() -> impl Predicate<K> + Clone {
    fn deleting<K: Resource>(obj: &K) -> Option<u64> {
        Some(u64::from(obj.meta().deletion_timestamp.is_some()))
    }
    predicates::generation.combine(predicates::annotations).combine(predicates::finalizers).combine(deleting)
}

/// Only the resources whose spec, annotations, finalizers or deletion changed (`spec_or_intent_changed`): our own
/// status writes must not wake the controller. kube's `predicate_filter` does this with a cache keyed by name,
/// namespace and UID strings (about 250 bytes a resource at 10,000); this one keeps a hash per UID (its 128 bits),
/// forgets a deleted resource, and starts afresh from each relist.
fn changed_only<K: Managed>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
) -> impl Stream<Item = Result<K, watcher::Error>> {
    let predicate = spec_or_intent_changed::<K>();
    let mut seen: HashMap<u128, u64> = HashMap::new();
    let mut relisted: HashMap<u128, u64> = HashMap::new();
    events.filter_map(move |event| {
        let out: Option<Result<K, watcher::Error>> = match event {
            Ok(watcher::Event::Apply(o)) => match predicate.hash_property(&o) {
                Some(h) => (seen.insert(uid_key(&o), h) != Some(h)).then_some(Ok(o)),
                None => Some(Ok(o)),
            },
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&uid_key(&o));
                None
            }
            Ok(watcher::Event::Init) => {
                relisted.clear();
                None
            }
            // Compared with what was seen before the relist; kept for after it.
            Ok(watcher::Event::InitApply(o)) => match predicate.hash_property(&o) {
                Some(h) => {
                    let key = uid_key(&o);
                    relisted.insert(key, h);
                    (seen.get(&key) != Some(&h)).then_some(Ok(o))
                }
                None => Some(Ok(o)),
            },
            Ok(watcher::Event::InitDone) => {
                seen = std::mem::take(&mut relisted);
                seen.shrink_to_fit();
                None
            }
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(out.map(|o| o.map(trigger_only)))
    })
}

/// The reference a trigger queues: name and namespace, which is all a cache lookup compares. (`ObjectRef::from_obj`
/// also copies the UID and version strings into each queued request: at a restart all of them are queued at once.)
pub fn queue_key<K: Resource<DynamicType = ()>>(o: &K) -> ObjectRef<K> {
    let key = ObjectRef::new(&o.name_any());
    match o.meta().namespace.as_deref() {
        Some(ns) => key.within(ns),
        None => key,
    }
}

/// The same for a changed object on its way to the controller, which queues it as `ObjectRef::from_obj` does:
/// without its UID and version, which nothing downstream reads (the cache has its own copy).
fn trigger_only<K: Resource>(mut o: K) -> K {
    o.meta_mut().uid = None;
    o.meta_mut().resource_version = None;
    o
}

/// A resource's UID as its 128 bits (see `versions::uid_bits`).
fn uid_key<K: Resource>(o: &K) -> u128 {
    versions::uid_bits(o.meta().uid.as_deref().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use kube::runtime::watcher::Event;
    use serde_json::json;

    use super::*;
    use crate::api::{ANNOTATION_ROTATE, WorkloadApiKey};

    #[test]
    fn the_cache_keeps_no_tenant_metadata_and_a_long_rotate_request_as_its_digest() {
        let mut o = wak("u1", 1, "True");
        let big = "x".repeat(200_000);
        o.metadata.labels = Some([("team".to_owned(), "payments".to_owned())].into());
        o.metadata.annotations = Some(
            [
                ("kubectl.kubernetes.io/last-applied-configuration".to_owned(), big.clone()),
                ("example.com/notes".to_owned(), big.clone()),
                ("workloadkeys.io.evil.com/x".to_owned(), big.clone()),
                (ANNOTATION_ROTATE.to_owned(), big.clone()),
            ]
            .into(),
        );
        slim(&mut o);
        assert!(o.labels().is_empty());
        let kept: Vec<&String> = o.annotations().keys().collect();
        assert_eq!(kept, [ANNOTATION_ROTATE]);
        let rotate = o.annotations()[ANNOTATION_ROTATE].clone();
        assert_eq!(rotate.len(), 64, "a digest, not 200,000 bytes");
        let mut changed = wak("u1", 1, "True");
        changed.metadata.annotations = Some([(ANNOTATION_ROTATE.to_owned(), format!("{big}y"))].into());
        slim(&mut changed);
        assert_ne!(changed.annotations()[ANNOTATION_ROTATE], rotate, "a changed request still changes the cache");
        let mut short = wak("u1", 1, "True");
        short.metadata.annotations = Some([(ANNOTATION_ROTATE.to_owned(), "2026-12-05".to_owned())].into());
        slim(&mut short);
        assert_eq!(short.annotations()[ANNOTATION_ROTATE], "2026-12-05");
        assert!(short.status.is_none(), "no status without failed attempts");
    }

    fn wak(uid: &str, generation: i64, status: &str) -> WorkloadApiKey {
        serde_json::from_value(json!({
            "apiVersion": "workloadkeys.io/v1alpha1",
            "kind": "WorkloadApiKey",
            "metadata": {"name": format!("n-{uid}"), "namespace": "ns", "uid": uid, "generation": generation},
            "spec": {"providerRef": {"name": "p"}, "role": {"name": "r"}},
            "status": {"conditions": [{"type": "Ready", "status": status, "reason": "R", "message": "",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }))
        .unwrap()
    }

    fn passed(events: Vec<Event<WorkloadApiKey>>) -> Vec<(String, i64)> {
        let out = futures::executor::block_on(
            changed_only(futures::stream::iter(events.into_iter().map(Ok))).collect::<Vec<_>>(),
        );
        let named = |o: WorkloadApiKey| {
            assert!(o.metadata.uid.is_none() && o.metadata.resource_version.is_none(), "queued without UID or version");
            (o.metadata.name.unwrap().trim_start_matches("n-").to_owned(), o.metadata.generation.unwrap())
        };
        out.into_iter().map(|o| named(o.unwrap())).collect()
    }

    #[test]
    fn only_spec_or_intent_changes_wake_a_resource_and_a_relist_compares_with_before() {
        let a = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let b = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
        let c = "not-a-uuid";
        let got = passed(vec![
            Event::Init,
            Event::InitApply(wak(a, 1, "False")),
            Event::InitApply(wak(b, 1, "False")),
            Event::InitDone,
            // Our own status write: no wake. A spec change: a wake.
            Event::Apply(wak(a, 1, "True")),
            Event::Apply(wak(a, 2, "True")),
            Event::Apply(wak(c, 1, "True")),
            Event::Apply(wak(c, 1, "False")),
            Event::Delete(wak(b, 1, "True")),
            // A relist: unchanged ones stay asleep; one not known before (here: deleted) or changed while the watch
            // was down wakes.
            Event::Init,
            Event::InitApply(wak(a, 2, "False")),
            Event::InitApply(wak(b, 1, "True")),
            Event::InitApply(wak(c, 3, "True")),
            Event::InitDone,
            Event::Apply(wak(a, 2, "True")),
            Event::Apply(wak(b, 1, "False")),
        ]);
        let want: Vec<(String, i64)> =
            [(a, 1), (b, 1), (a, 2), (c, 1), (b, 1), (c, 3)].iter().map(|(u, g)| (u.to_string(), *g)).collect();
        assert_eq!(got, want);
    }
}
