//! What every reconcile shares: the Kubernetes client, events, metrics, vendor rate limiters and caches.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, Resource, ResourceExt, runtime::events::EventType};
use sha2::{Digest, Sha256};

use super::{
    cache::Caches,
    error::{Error, kube_call},
    events::Publisher,
    metrics::Metrics,
    versions::{OwnedSecrets, Written},
    wakeups::Wakeups,
};
use crate::{
    api::SecretKeySelector,
    clients::{RateLimiters, SecretString, TlsOptions},
};

/// Default of `--max-concurrent-reconciles`.
pub const DEFAULT_MAX_CONCURRENT_RECONCILES: u16 = 16;

/// Operator-wide settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Client-side vendor rate limit per endpoint, requests per minute.
    pub vendor_requests_per_minute: u32,
    /// Timeout of one vendor HTTP request.
    pub vendor_timeout: Duration,
    /// Key of the keyed hash that detects Secret edits (see `secret::data_hash`).
    pub hash_key: Vec<u8>,
    /// Where the Secrets named by `ClusterKeyProvider`s live (default: the operator's own namespace).
    pub cluster_resource_namespace: String,
    /// How many reconciles of one kind run at once; bounds connections and memory under a burst (e.g. a restart).
    pub max_concurrent_reconciles: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            vendor_requests_per_minute: crate::clients::DEFAULT_REQUESTS_PER_MINUTE,
            vendor_timeout: Duration::from_secs(30),
            hash_key: b"workload-key-operator/secret-hash/v1".to_vec(),
            cluster_resource_namespace: "default".to_owned(),
            max_concurrent_reconciles: DEFAULT_MAX_CONCURRENT_RECONCILES,
        }
    }
}

pub struct Context {
    pub client: Client,
    pub events: Publisher,
    pub metrics: Metrics,
    pub settings: Settings,
    pub limiters: RateLimiters,
    /// The watch caches the reconcilers read instead of the API server.
    pub caches: Caches,
    /// The versions of the Secrets the operator owns, from their watch (see `versions`).
    pub owned_secrets: OwnedSecrets,
    /// Each resource's version after the operator's last write to it.
    pub written: Written,
    /// The far wake-ups of each kind's resources at rest.
    wakeups: Mutex<HashMap<std::any::TypeId, Arc<Wakeups>>>,
    clients: Mutex<HashMap<String, Arc<dyn std::any::Any + Send + Sync>>>,
    roles: Mutex<HashMap<(String, String), (i64, Instant)>>,
}

/// How long a role name → ID lookup is trusted.
const ROLE_CACHE_TTL: Duration = Duration::from_secs(600);

impl Context {
    pub fn new(client: Client, metrics: Metrics, settings: Settings) -> Self {
        Self {
            events: Publisher::new(client.clone(), crate::api::MANAGED_BY, std::env::var("POD_NAME").ok()),
            limiters: RateLimiters::new(settings.vendor_requests_per_minute),
            caches: Caches::default(),
            owned_secrets: OwnedSecrets::default(),
            written: Written::default(),
            wakeups: Mutex::default(),
            client,
            metrics,
            settings,
            clients: Mutex::default(),
            roles: Mutex::default(),
        }
    }

    /// The far wake-ups of `K`'s resources.
    pub fn wakeups<K: 'static>(&self) -> Arc<Wakeups> {
        let mut map = self.wakeups.lock().expect("wake-ups poisoned");
        map.entry(std::any::TypeId::of::<K>()).or_default().clone()
    }

    /// Every kind's wake-ups.
    pub fn all_wakeups(&self) -> Vec<Arc<Wakeups>> {
        self.wakeups.lock().expect("wake-ups poisoned").values().cloned().collect()
    }

    /// Publishes an Event on `obj`. Failures are logged, never fatal: events are advisory.
    pub async fn event<K>(&self, obj: &K, type_: EventType, reason: &str, action: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        if let Err(e) = self.events.publish(obj.object_ref(&()), type_, reason, action, note).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    /// A cached vendor client for `key` (a digest of everything that configures it, secrets included), or a new
    /// one from `make`. Reusing clients keeps connections, sessions and TLS setup across reconciles.
    pub fn cached_client<T, F>(&self, key: &str, make: F) -> Result<Arc<T>, Error>
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> Result<T, Error>,
    {
        if let Some(c) = self.cached(key) {
            return Ok(c);
        }
        let c = Arc::new(make()?);
        self.cache(key, c.clone());
        Ok(c)
    }

    /// The client cached under `key`, if any (for clients made asynchronously, e.g. a signed-in session).
    pub fn cached<T: Send + Sync + 'static>(&self, key: &str) -> Option<Arc<T>> {
        let map = self.clients.lock().expect("client cache poisoned");
        map.get(key).and_then(|c| c.clone().downcast::<T>().ok())
    }

    pub fn cache<T: Send + Sync + 'static>(&self, key: &str, client: Arc<T>) {
        let mut map = self.clients.lock().expect("client cache poisoned");
        // The cache is bounded by the number of distinct credentials in use; drop everything past a sane size.
        if map.len() > 1024 {
            map.clear();
        }
        map.insert(key.to_owned(), client);
    }

    /// Drops a cached client (e.g. a session the vendor ended).
    pub fn forget_client(&self, key: &str) {
        self.clients.lock().expect("client cache poisoned").remove(key);
    }

    pub fn cached_role(&self, endpoint: &str, name: &str) -> Option<i64> {
        let map = self.roles.lock().expect("role cache poisoned");
        map.get(&(endpoint.to_owned(), name.to_owned()))
            .filter(|(_, at)| at.elapsed() < ROLE_CACHE_TTL)
            .map(|(id, _)| *id)
    }

    pub fn cache_role(&self, endpoint: &str, name: &str, id: i64) {
        self.roles
            .lock()
            .expect("role cache poisoned")
            .insert((endpoint.to_owned(), name.to_owned()), (id, Instant::now()));
    }

    /// Reads one key of a Secret in `namespace`. The value is secret material.
    pub async fn secret_value(&self, namespace: &str, name: &str, key: &str) -> Result<SecretString, Error> {
        let secret = self.secret(namespace, name).await?;
        secret_key(&secret, name, key)
    }

    /// A Secret the operator reads (a provider's credential or CA, an imported key pair): from the cache while its
    /// watched resourceVersion is the one last read, from the API server otherwise.
    pub async fn secret(&self, namespace: &str, name: &str) -> Result<Secret, Error> {
        if let Some(cached) = self.caches.secret(namespace, name).await {
            return Ok(cached.as_ref().clone());
        }
        let secret = Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(kube_call("get", "Secret", namespace, name))?
            .ok_or_else(|| Error::SecretNotFound { namespace: namespace.to_owned(), name: name.to_owned() })?;
        self.caches.keep_secret(&secret);
        Ok(secret)
    }

    /// TLS settings from a connection's CA fields: inline bundle, or a Secret key (default `ca.crt`).
    pub async fn tls_options(
        &self,
        namespace: &str,
        ca_bundle: Option<&str>,
        ca_secret_ref: Option<&SecretKeySelector>,
        insecure: bool,
    ) -> Result<TlsOptions, Error> {
        let ca_pem = match (ca_bundle, ca_secret_ref) {
            (Some(pem), _) => Some(pem.to_owned()),
            (None, Some(sel)) => {
                let key = sel.key.as_deref().unwrap_or("ca.crt");
                Some(self.secret_value(namespace, &sel.name, key).await?.expose().to_owned())
            }
            (None, None) => None,
        };
        Ok(TlsOptions { ca_pem, insecure_skip_verify: insecure })
    }
}

/// One key of a Secret's data (or stringData already merged by the API server), as UTF-8.
pub fn secret_key(secret: &Secret, name: &str, key: &str) -> Result<SecretString, Error> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| Error::InvalidSecret { name: name.to_owned(), problem: format!("has no key {key:?}") })?;
    let text = String::from_utf8(bytes.0.clone())
        .map_err(|_| Error::InvalidSecret { name: name.to_owned(), problem: format!("key {key:?} is not UTF-8") })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::InvalidSecret { name: name.to_owned(), problem: format!("key {key:?} is empty") });
    }
    Ok(SecretString::new(text))
}

/// Hex SHA-256 over the parts, each length-prefixed: a cache key that never shows the secrets it covers.
pub fn digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// `namespace/name` for logs.
pub fn display_name<K: ResourceExt>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}
