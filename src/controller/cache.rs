//! What the reconcilers read from the watch caches instead of the API server: providers, namespace labels, and the
//! Secrets providers and resources reference (an admin key, a CA, an imported key pair).
//!
//! Each cache is the store of a watch the operator runs anyway (see `controller::run`), filled before the change
//! it reflects wakes anyone: a reconcile woken by a provider or namespace change reads at least that version.
//! Referenced Secrets are watched by metadata only; their data is read once per resourceVersion and kept (a few
//! Secrets: those labelled `workloadkeys.io/referenced`). Without a cache (before `run` installs them, or while a
//! watch has not listed yet) the readers fall back to the API server.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::reflector::{ObjectRef, Store},
};

use crate::api::{ClusterKeyProvider, KeyProvider};

pub type SecretMeta = PartialObjectMeta<Secret>;
pub type NamespaceMeta = PartialObjectMeta<Namespace>;

/// How long a reader waits for a watch's first list before asking the API server instead.
const FIRST_LIST_WAIT: Duration = Duration::from_secs(10);

/// Referenced Secrets kept with their data at most (they are few; past this the map starts again).
const MAX_SECRETS: usize = 256;

/// The watch caches, installed once by `controller::run`.
#[derive(Default)]
pub struct Caches {
    cluster_providers: OnceLock<Store<ClusterKeyProvider>>,
    providers: OnceLock<Store<KeyProvider>>,
    namespaces: OnceLock<Store<NamespaceMeta>>,
    referenced_secrets: OnceLock<Store<SecretMeta>>,
    /// `(namespace, name)` → the Secret as last read, by its resourceVersion.
    secret_data: Mutex<HashMap<(String, String), Arc<Secret>>>,
}

/// The stores `controller::run` fills.
pub struct Stores {
    pub cluster_providers: Store<ClusterKeyProvider>,
    pub providers: Store<KeyProvider>,
    pub namespaces: Store<NamespaceMeta>,
    pub referenced_secrets: Store<SecretMeta>,
}

/// What a cache knows of an object: `Unknown` sends the reader to the API server.
#[derive(Debug)]
pub enum Cached<T> {
    Unknown,
    Absent,
    Present(T),
}

impl Caches {
    pub fn install(&self, stores: Stores) {
        // A second `run` in one process (tests) keeps the first stores' readers working; both are filled.
        let _ = self.cluster_providers.set(stores.cluster_providers);
        let _ = self.providers.set(stores.providers);
        let _ = self.namespaces.set(stores.namespaces);
        let _ = self.referenced_secrets.set(stores.referenced_secrets);
    }

    pub async fn cluster_provider(&self, name: &str) -> Cached<Arc<ClusterKeyProvider>> {
        lookup(self.cluster_providers.get(), &ObjectRef::new(name)).await
    }

    pub async fn provider(&self, namespace: &str, name: &str) -> Cached<Arc<KeyProvider>> {
        lookup(self.providers.get(), &ObjectRef::new(name).within(namespace)).await
    }

    pub async fn namespace(&self, name: &str) -> Cached<Arc<NamespaceMeta>> {
        lookup(self.namespaces.get(), &ObjectRef::new(name)).await
    }

    /// A referenced Secret's metadata as the watch has it (`Absent` also for a Secret not labelled yet).
    pub async fn referenced_secret(&self, namespace: &str, name: &str) -> Cached<Arc<SecretMeta>> {
        lookup(self.referenced_secrets.get(), &ObjectRef::new(name).within(namespace)).await
    }

    /// The Secret's data as last read, when the watch says it has not changed since.
    pub async fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        let Cached::Present(meta) =
            lookup(self.referenced_secrets.get(), &ObjectRef::new(name).within(namespace)).await
        else {
            return None;
        };
        let map = self.secret_data.lock().expect("secret cache poisoned");
        map.get(&(namespace.to_owned(), name.to_owned()))
            .filter(|s| s.resource_version().is_some() && s.resource_version() == meta.resource_version())
            .cloned()
    }

    /// Keeps a Secret just read, if it is one the referenced-Secret watch follows.
    pub fn keep_secret(&self, secret: &Secret) {
        let Some(store) = self.referenced_secrets.get() else { return };
        let key = (secret.namespace().unwrap_or_default(), secret.name_any());
        if store.get(&ObjectRef::new(&key.1).within(&key.0)).is_none() {
            return;
        }
        let mut map = self.secret_data.lock().expect("secret cache poisoned");
        if map.len() >= MAX_SECRETS && !map.contains_key(&key) {
            map.clear();
        }
        map.insert(key, Arc::new(secret.clone()));
    }
}

async fn lookup<K>(store: Option<&Store<K>>, key: &ObjectRef<K>) -> Cached<Arc<K>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash,
{
    let Some(store) = store else { return Cached::Unknown };
    match tokio::time::timeout(FIRST_LIST_WAIT, store.wait_until_ready()).await {
        Ok(Ok(())) => store.get(key).map_or(Cached::Absent, Cached::Present),
        _ => Cached::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::{reflector, watcher};

    use super::*;

    fn meta(name: &str, rv: &str) -> SecretMeta {
        let mut m = SecretMeta::default();
        m.metadata.name = Some(name.into());
        m.metadata.namespace = Some("platform".into());
        m.metadata.resource_version = Some(rv.into());
        m
    }

    fn secret(name: &str, rv: &str, value: &str) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("platform".into());
        s.metadata.resource_version = Some(rv.into());
        s.string_data = Some([("api-secret-key".to_owned(), value.to_owned())].into());
        s
    }

    /// Caches whose referenced-Secret watch has listed `listed`.
    fn caches(listed: &[SecretMeta]) -> (Caches, reflector::store::Writer<SecretMeta>) {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        for m in listed {
            writer.apply_watcher_event(&watcher::Event::InitApply(m.clone()));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let caches = Caches::default();
        let _ = caches.referenced_secrets.set(store);
        (caches, writer)
    }

    #[tokio::test]
    async fn a_referenced_secret_is_served_while_its_resource_version_holds() {
        let (caches, mut writer) = caches(&[meta("tm-admin", "10")]);
        assert!(caches.secret("platform", "tm-admin").await.is_none(), "nothing read yet");
        caches.keep_secret(&secret("tm-admin", "10", "old"));
        let hit = caches.secret("platform", "tm-admin").await.expect("served from the cache");
        assert_eq!(hit.string_data.as_ref().unwrap()["api-secret-key"], "old");

        // The watch saw a change: the next read goes to the API server.
        writer.apply_watcher_event(&watcher::Event::Apply(meta("tm-admin", "11")));
        assert!(caches.secret("platform", "tm-admin").await.is_none());
        // Deleted: nothing is served either.
        writer.apply_watcher_event(&watcher::Event::Delete(meta("tm-admin", "11")));
        caches.keep_secret(&secret("tm-admin", "11", "new"));
        assert!(caches.secret("platform", "tm-admin").await.is_none());
    }

    #[tokio::test]
    async fn secrets_the_watch_does_not_follow_are_never_kept() {
        let (caches, _writer) = caches(&[]);
        caches.keep_secret(&secret("app-secret", "5", "x"));
        assert!(caches.secret_data.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn without_a_store_the_reader_asks_the_api_server() {
        let caches = Caches::default();
        assert!(matches!(caches.cluster_provider("p").await, Cached::Unknown));
        assert!(caches.secret("platform", "tm-admin").await.is_none());
    }
}
