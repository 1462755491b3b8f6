//! The watches every controller is built from: which namespaces they cover ([`Scope`]), what the caches keep of
//! each object ([`slim`]), how a watch's events reach several controllers ([`fan_out`]), and which changes wake a
//! resource at all ([`changed_only`]).

use std::{collections::HashMap, fmt::Debug};

use futures::{SinkExt, Stream, StreamExt, channel::mpsc, stream::BoxStream};
use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::{Namespace, Secret},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{Predicate, WatchStreamExt, predicates, reflector::ObjectRef, watcher},
};
use serde::de::DeserializeOwned;

use super::{
    context,
    reconcile::{Managed, ManagedStatus},
    versions,
};
use crate::api::{ANNOTATION_FIRST_INTENT, API_GROUP, FINALIZER, RolloutTarget, WorkloadKind};

/// Which namespaces the controllers watch.
#[derive(Clone, Debug, Default)]
pub enum Scope {
    #[default]
    AllNamespaces,
    /// These namespaces only (one watch each; the operator needs no cluster-wide read of them).
    Namespaces(Vec<String>),
}

pub(super) type Events<K> = BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// Watches [`run`](super::run) opens in each watched namespace: WorkloadApiKeys, SecureWorkloadCredentials,
/// KeyProviders, owned and referenced Secrets, Deployments, StatefulSets, DaemonSets.
const WATCHES_PER_NAMESPACE: usize = 8;
/// Cluster-wide watches: ClusterKeyProviders and Namespaces, and the cluster-resource namespace's two Secret
/// watches when it is not watched anyway.
const WATCHES_BESIDE: usize = 4;

impl Scope {
    /// How many watches the operator keeps open in this scope (each an HTTP/2 stream; see `api_client`).
    pub fn watches(&self) -> usize {
        match self {
            Scope::AllNamespaces => WATCHES_PER_NAMESPACE + WATCHES_BESIDE,
            Scope::Namespaces(list) => WATCHES_PER_NAMESPACE * list.len() + WATCHES_BESIDE,
        }
    }
}

/// What a namespaced watch needs of its objects.
pub(super) trait Watchable:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static
{
}

impl<K> Watchable for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static
{
}

impl Scope {
    /// The watch events of namespaced `K` in scope.
    pub(super) fn watch<K: Watchable>(&self, client: &Client, config: watcher::Config) -> Events<K> {
        self.watch_observed(client, config, |_, _| {})
    }

    /// The same, with every event of each underlying watch shown to `observe` first, with that watch's namespace
    /// (`None`: all of them), relists included.
    pub(super) fn watch_observed<K, F>(&self, client: &Client, config: watcher::Config, observe: F) -> Events<K>
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
    pub(super) fn with(&self, extra: &str) -> Scope {
        match self {
            Scope::Namespaces(list) if !list.iter().any(|n| n == extra) => {
                Scope::Namespaces(list.iter().cloned().chain([extra.to_owned()]).collect())
            }
            other => other.clone(),
        }
    }
}

pub(super) type SecretMeta = PartialObjectMeta<Secret>;
pub(super) type NamespaceMeta = PartialObjectMeta<Namespace>;
/// A workload that changed, and its namespace.
pub(super) type WorkloadChange = (RolloutTarget, String);

/// Sends every item of `source` to each of `sinks` (bounded: a slow consumer slows the watch, nothing is lost).
pub(super) async fn fan_out<T: Clone + Send + 'static>(
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

/// What the watch cache keeps of a resource: what finds it from a trigger (spec, names, the operator's own
/// annotations for the rotate request) and the failed-attempt count `reconcile::error_policy` backs off by. Not its
/// status otherwise (every reconcile reads the resource fresh, see `reconcile::reconcile`), nor who wrote which
/// field, nor `kubectl apply`'s copy of the spec: at 10,000 resources these were most of the operator's memory.
/// Nor its labels and other annotations, which nothing reads and which an app team could make up to 256 KiB a
/// resource; an operator annotation's value longer than [`CACHED_ANNOTATION`] is kept as its digest, which still
/// changes when it does (the reconcile acts on the value it reads fresh). Nor the Secret's data templates (up to
/// 64 KiB a resource): only a reconcile renders them, from the resource it reads fresh.
pub fn slim<K: Managed>(o: &mut K) {
    o.managed_fields_mut().clear();
    if let Some(secret) = o.secret_template_mut() {
        secret.template = None;
    }
    o.labels_mut().clear();
    // The first intent is read only from a fresh copy (`intent`); kept, each resource's one annotation would cost
    // the cache a map node of its own (about 0.6 KiB).
    o.annotations_mut().retain(|k, _| {
        k != ANNOTATION_FIRST_INTENT && k.strip_prefix(API_GROUP).is_some_and(|rest| rest.starts_with('/'))
    });
    for value in o.annotations_mut().values_mut() {
        if value.len() > CACHED_ANNOTATION {
            *value = context::digest(&[value.as_bytes()]);
        }
    }
    if o.annotations().is_empty() {
        o.meta_mut().annotations = None;
    }
    let attempts = o.status().and_then(|s| s.failed_attempts());
    *o.status_mut() = attempts.map(|a| {
        let mut s = K::Status::default();
        *s.failed_attempts_mut() = Some(a);
        s
    });
}

/// The same for a metadata-only watch (namespaces, Secrets): names, labels and owners are what is read.
pub(super) fn slim_meta<K>(o: &mut PartialObjectMeta<K>) {
    o.metadata.managed_fields = None;
    o.metadata.annotations = None;
}

/// The longest operator annotation value the watch cache keeps as it is (a digest is 64 characters).
pub(super) const CACHED_ANNOTATION: usize = 64;

/// Every watch's list: from the API server's watch cache, in pages of [`LIST_PAGE`]. A page is decoded whole, with
/// the who-wrote-what of each object that the caches then drop: at kube's default of 500 objects a page of
/// WorkloadApiKeys or Secrets was the largest transient of a restart with thousands of them.
pub(super) fn watch_config() -> watcher::Config {
    watcher::Config::default().any_semantic().page_size(LIST_PAGE)
}

pub(super) const LIST_PAGE: u32 = 100;

/// How long a failed watch waits before it tries again: from 0.5 s, doubling with jitter, at most 5 s; back to the
/// start once it succeeds. kube's default goes up to 30 s: after a minute without the API server (etcd killed, in
/// the fault suite), a watch could wait half a minute more after the server was back, and the operator with it.
/// At most one list every 5 s per watch while the API server is away costs it nothing.
#[derive(Debug, Default)]
pub struct WatchBackoff {
    failures: u32,
}

impl WatchBackoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(500);
    const MAX: std::time::Duration = std::time::Duration::from_secs(5);
}

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<std::time::Duration> {
        let step = Self::FIRST.saturating_mul(1 << self.failures.min(10)).min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        // Jitter over the upper half, so that the watches of a restarted API server do not all come back at once.
        Some(step.mul_f64(0.5 + 0.5 * rand::random::<f64>()))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The changes of one workload kind in scope, as (target, namespace).
pub(super) fn workload_changes<W>(
    scope: &Scope,
    client: &Client,
    kind: WorkloadKind,
) -> BoxStream<'static, Result<WorkloadChange, watcher::Error>>
where
    W: Watchable,
{
    scope
        .watch::<PartialObjectMeta<W>>(client, watch_config())
        .backoff(WatchBackoff::default())
        .touched_objects()
        .map(move |o| o.map(|o| (RolloutTarget { kind, name: o.name_any() }, o.namespace().unwrap_or_default())))
        .boxed()
}

/// Changes that ask for work: the spec, annotations (the rotate annotation), finalizers, deletion.
pub(super) fn spec_or_intent_changed<K: Resource>() -> impl Predicate<K> + Clone {
    fn deleting<K: Resource>(obj: &K) -> Option<u64> {
        Some(u64::from(obj.meta().deletion_timestamp.is_some()))
    }
    predicates::generation.combine(predicates::annotations).combine(predicates::finalizers).combine(deleting)
}

/// Only the resources whose spec, annotations, finalizers or deletion changed (`spec_or_intent_changed`), by
/// someone else: our own status writes must not wake the controller, nor our own finalizer (the reconcile that
/// added it went on with the object the patch returned; a change that only adds it never wakes one, even when the
/// watch brings it after our later writes, as it does under load). `ours` says whether a resource seen by the watch is
/// exactly our last write (it is asked of every resource the watch brings). kube's `predicate_filter` does this
/// with a cache keyed by name, namespace and UID strings (about 250 bytes a resource at 10,000); this one keeps a
/// hash per UID (its 128 bits), forgets a deleted resource, and starts afresh from each relist.
pub(super) fn changed_only<K: Managed>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    mut ours: impl FnMut(&K) -> bool,
) -> impl Stream<Item = Result<K, watcher::Error>> {
    let predicate = spec_or_intent_changed::<K>();
    let mut seen: HashMap<u128, u64> = HashMap::new();
    let mut relisted: HashMap<u128, u64> = HashMap::new();
    events.filter_map(move |event| {
        let out: Option<Result<K, watcher::Error>> = match event {
            Ok(watcher::Event::Apply(o)) => {
                let ours = ours(&o);
                match predicate.hash_property(&o) {
                    Some(h) => {
                        let before = seen.insert(uid_key(&o), h);
                        let finalizer_only = || {
                            let mut without = o.clone();
                            without.finalizers_mut().retain(|f| f != FINALIZER);
                            o.finalizers().iter().any(|f| f == FINALIZER)
                                && before.is_some()
                                && predicate.hash_property(&without) == before
                        };
                        (before != Some(h) && !ours && !finalizer_only()).then_some(Ok(o))
                    }
                    None => Some(Ok(o)),
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&uid_key(&o));
                None
            }
            Ok(watcher::Event::Init) => {
                relisted.clear();
                None
            }
            // Compared with what was seen before the relist; kept for after it.
            Ok(watcher::Event::InitApply(o)) => match (ours(&o), predicate.hash_property(&o)).1 {
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
pub(super) fn trigger_only<K: Resource>(mut o: K) -> K {
    o.meta_mut().uid = None;
    o.meta_mut().resource_version = None;
    o
}

/// A resource's UID as its 128 bits (see `versions::uid_bits`).
pub(super) fn uid_key<K: Resource>(o: &K) -> u128 {
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
                (ANNOTATION_FIRST_INTENT.to_owned(), big.clone()),
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
        let mut new = wak("u1", 1, "True");
        new.metadata.annotations = Some([(ANNOTATION_FIRST_INTENT.to_owned(), "mac {}".to_owned())].into());
        slim(&mut new);
        assert!(new.metadata.annotations.is_none(), "no map kept for a new resource's first intent");
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
            changed_only(futures::stream::iter(events.into_iter().map(Ok)), |_| false).collect::<Vec<_>>(),
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

    #[test]
    fn our_finalizer_alone_wakes_nobody_but_its_removal_and_a_spec_change_with_it_do() {
        let a = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let with = |g: i64, finalizers: &[&str]| {
            let mut o = wak(a, g, "False");
            o.metadata.finalizers = Some(finalizers.iter().map(|f| (*f).to_owned()).collect());
            o
        };
        let got = passed(vec![
            Event::Init,
            Event::InitDone,
            Event::Apply(with(1, &[])),
            // Ours added (the watch bringing it late, after our later writes, as under load): no wake.
            Event::Apply(with(1, &[FINALIZER])),
            // Removed by someone: a wake (it is added again).
            Event::Apply(with(1, &[])),
            // Someone else's finalizer: a wake; ours and a spec change at once: a wake.
            Event::Apply(with(1, &["example.com/other"])),
            Event::Apply(with(2, &["example.com/other", FINALIZER])),
        ]);
        let want: Vec<(String, i64)> = [1, 1, 1, 2].iter().map(|g| (a.to_owned(), *g)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn watch_backoff_grows_to_five_seconds_and_resets() {
        use kube::runtime::utils::Backoff;
        let mut b = WatchBackoff::default();
        let waits: Vec<_> = (&mut b).take(8).collect();
        assert!(waits[0] >= std::time::Duration::from_millis(250) && waits[0] <= std::time::Duration::from_millis(500));
        assert!(waits.iter().all(|w| *w <= std::time::Duration::from_secs(5)));
        assert!(waits[7] >= std::time::Duration::from_millis(2500), "{waits:?}");
        b.reset();
        assert!(b.next().unwrap() <= std::time::Duration::from_millis(500));
    }
}
