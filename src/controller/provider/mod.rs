//! Providers as the resources use them: the one place that maps `spec.providerRef` to a vendor endpoint, its TLS
//! settings and the Secrets that hold the admin credential, and that decides whether a resource may use it (its
//! namespace allowed, the provider ready, the policy kept). None of these checks costs a vendor call.
//! The providers' own reconciler (readiness, who uses them, finalizers) is in `reconciler`.

pub mod connect;
pub mod policy;
pub mod reconciler;

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, ResourceExt};

use super::{
    Context,
    cache::Cached,
    error::{Error, kube_call},
};
use crate::{
    api::{
        CiscoEndpoint, ClusterKeyProvider, DeletionPolicy, IssuePolicy, KeyProvider, KeyProviderStatus, ProviderKind,
        ProviderRef, TrendEndpoint, conditions,
    },
    clients::TlsOptions,
};

/// The vendor a provider connects to: exactly one (the CRDs refuse a provider with both or neither; `Neither` is
/// what an object stored before that rule would give, and every use refuses it).
#[derive(Clone, Debug)]
pub enum Endpoint {
    Trend(TrendEndpoint),
    Cisco(CiscoEndpoint),
    Neither,
}

impl Endpoint {
    fn of(trend: Option<&TrendEndpoint>, cisco: Option<&CiscoEndpoint>) -> Self {
        match (trend, cisco) {
            (Some(t), _) => Endpoint::Trend(t.clone()),
            (None, Some(c)) => Endpoint::Cisco(c.clone()),
            (None, None) => Endpoint::Neither,
        }
    }
}

/// A provider of either kind, as a resource sees it.
#[derive(Clone, Debug)]
pub struct Provider {
    pub kind: ProviderKind,
    pub name: String,
    /// Where the Secrets it names live: its own namespace, or the cluster-resource namespace.
    pub secret_namespace: String,
    pub endpoint: Endpoint,
    pub policy: IssuePolicy,
    allowed: Option<crate::api::AllowedNamespaces>,
    generation: Option<i64>,
    status: KeyProviderStatus,
    deleting: bool,
}

impl Provider {
    /// `ClusterKeyProvider/platform-trend` or `KeyProvider/team-trend`, for messages.
    pub fn display(&self) -> String {
        format!("{}/{}", self.kind.as_str(), self.name)
    }

    pub fn from_cluster(p: &ClusterKeyProvider, cluster_resource_namespace: &str) -> Self {
        Provider {
            kind: ProviderKind::ClusterKeyProvider,
            name: p.name_any(),
            secret_namespace: cluster_resource_namespace.to_owned(),
            endpoint: Endpoint::of(p.spec.trend.as_ref(), p.spec.cisco.as_ref()),
            policy: p.spec.policy.clone().unwrap_or_default(),
            allowed: p.spec.allowed_namespaces.clone(),
            generation: p.metadata.generation,
            status: p.status.clone().unwrap_or_default(),
            deleting: p.metadata.deletion_timestamp.is_some(),
        }
    }

    pub fn from_namespaced(p: &KeyProvider) -> Self {
        Provider {
            kind: ProviderKind::KeyProvider,
            name: p.name_any(),
            secret_namespace: p.namespace().unwrap_or_default(),
            endpoint: Endpoint::of(p.spec.trend.as_ref(), p.spec.cisco.as_ref()),
            policy: p.spec.policy.clone().unwrap_or_default(),
            allowed: None,
            generation: p.metadata.generation,
            status: p.status.clone().unwrap_or_default(),
            deleting: p.metadata.deletion_timestamp.is_some(),
        }
    }

    /// The Trend endpoint, or `InvalidSpec` when the provider is of the other vendor.
    pub fn trend(&self) -> Result<&TrendEndpoint, Error> {
        match &self.endpoint {
            Endpoint::Trend(t) => Ok(t),
            Endpoint::Cisco(_) => Err(Error::InvalidSpec(format!(
                "{} is a Cisco Secure Workload provider; a WorkloadApiKey needs a provider with spec.trend",
                self.display()
            ))),
            Endpoint::Neither => Err(self.neither()),
        }
    }

    /// The Cisco endpoint, or `InvalidSpec` when the provider is of the other vendor.
    pub fn cisco(&self) -> Result<&CiscoEndpoint, Error> {
        match &self.endpoint {
            Endpoint::Cisco(c) => Ok(c),
            Endpoint::Trend(_) => Err(Error::InvalidSpec(format!(
                "{} is a Trend Micro provider; a SecureWorkloadCredential needs a provider with spec.cisco",
                self.display()
            ))),
            Endpoint::Neither => Err(self.neither()),
        }
    }

    fn neither(&self) -> Error {
        Error::InvalidSpec(format!("{} has neither spec.trend nor spec.cisco", self.display()))
    }

    /// `Trend` or `Cisco`, for its status; `None` for neither.
    pub fn vendor(&self) -> Option<&'static str> {
        match &self.endpoint {
            Endpoint::Trend(_) => Some("Trend"),
            Endpoint::Cisco(_) => Some("Cisco"),
            Endpoint::Neither => None,
        }
    }

    /// The vendor URL as the provider names it.
    pub fn url(&self) -> Option<&str> {
        match &self.endpoint {
            Endpoint::Trend(t) => Some(&t.url),
            Endpoint::Cisco(c) => Some(&c.url),
            Endpoint::Neither => None,
        }
    }

    /// The Secrets the provider names (credential, login, CA), in its Secret namespace.
    pub fn named_secrets(&self) -> impl Iterator<Item = &str> {
        let refs: Vec<&str> = match &self.endpoint {
            Endpoint::Trend(t) => [
                t.api_key_secret_ref.as_ref().map(|r| r.name.as_str()),
                t.login_secret_ref.as_ref().map(|r| r.name.as_str()),
                t.ca_secret_ref.as_ref().map(|r| r.name.as_str()),
            ]
            .into_iter()
            .flatten()
            .collect(),
            Endpoint::Cisco(c) => [
                c.login_secret_ref.as_ref().map(|r| r.name.as_str()),
                c.ca_secret_ref.as_ref().map(|r| r.name.as_str()),
            ]
            .into_iter()
            .flatten()
            .collect(),
            Endpoint::Neither => Vec::new(),
        };
        refs.into_iter()
    }

    /// TLS settings from the provider's CA fields (a CA Secret is read in the provider's Secret namespace).
    pub async fn tls(&self, ctx: &Context) -> Result<TlsOptions, Error> {
        let (bundle, secret, insecure) = match &self.endpoint {
            Endpoint::Trend(t) => (t.ca_bundle.as_deref(), t.ca_secret_ref.as_ref(), t.insecure_skip_tls_verify),
            Endpoint::Cisco(c) => (c.ca_bundle.as_deref(), c.ca_secret_ref.as_ref(), c.insecure_skip_tls_verify),
            Endpoint::Neither => return Err(self.neither()),
        };
        ctx.tls_options(&self.secret_namespace, bundle, secret, insecure.unwrap_or(false)).await
    }

    pub fn insecure_tls(&self) -> bool {
        match &self.endpoint {
            Endpoint::Trend(t) => t.insecure_skip_tls_verify,
            Endpoint::Cisco(c) => c.insecure_skip_tls_verify,
            Endpoint::Neither => None,
        }
        .unwrap_or(false)
    }

    /// Whether a resource of `namespace` (whose labels are `labels`) may use it: always for a `KeyProvider` (a
    /// resource names one of its own namespace), as `spec.allowedNamespaces` says for a `ClusterKeyProvider`.
    pub fn allows(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Result<(), Error> {
        if self.kind == ProviderKind::KeyProvider || policy::namespace_allowed(self.allowed.as_ref(), namespace, labels)
        {
            return Ok(());
        }
        Err(Error::NamespaceNotAllowed {
            provider: self.display(),
            namespace: namespace.to_owned(),
            allowed: policy::describe_allowed(self.allowed.as_ref()),
        })
    }

    /// Whether its admin credential was proven for the current spec; the provider's own words otherwise.
    pub fn readiness(&self) -> Result<(), String> {
        if self.deleting {
            return Err("it is being deleted".into());
        }
        match conditions::find(&self.status.conditions, conditions::READY) {
            Some(c) if c.status == "True" && self.status.observed_generation == self.generation => Ok(()),
            Some(c) if c.status == "True" => Err("its changed spec has not been checked yet".into()),
            Some(c) => Err(format!("{}: {}", c.reason, c.message)),
            None => Err("its admin credential has not been checked yet".into()),
        }
    }
}

/// On deleting a resource whose `deletionPolicy` is `Retain`: the note saying why its keys are revoked all the same
/// when its provider's `policy.deletionPolicies` no longer allows `Retain`; `None` when `Retain` stands (allowed, or
/// the provider is gone, so nothing could revoke them anyway).
pub async fn retain_forbidden(ctx: &Context, namespace: &str, r: &ProviderRef) -> Result<Option<String>, Error> {
    let provider = match fetch(ctx, namespace, r).await {
        Ok(p) => p,
        Err(Error::ProviderNotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(policy::check_deletion_policy(&provider.policy, DeletionPolicy::Retain)
        .err()
        .map(|problem| format!("{problem} by {}: the resource's keys are revoked with it", provider.display())))
}

/// The provider a resource in `namespace` names, whatever its state.
pub async fn fetch(ctx: &Context, namespace: &str, r: &ProviderRef) -> Result<Provider, Error> {
    // From the watch cache: a provider change reaches the cache before it wakes the resources that use it.
    let not_found = || Error::ProviderNotFound { provider: format!("{}/{}", r.kind.as_str(), r.name) };
    match r.kind {
        ProviderKind::ClusterKeyProvider => {
            let cached = ctx.caches.cluster_provider(&r.name).await;
            let p = cached_or_read(cached, Api::all(ctx.client.clone()), &r.name).await?.ok_or_else(not_found)?;
            Ok(Provider::from_cluster(&p, &ctx.settings.cluster_resource_namespace))
        }
        ProviderKind::KeyProvider => {
            let cached = ctx.caches.provider(namespace, &r.name).await;
            let api = Api::namespaced(ctx.client.clone(), namespace);
            let p = cached_or_read(cached, api, &r.name).await?.ok_or_else(not_found)?;
            Ok(Provider::from_namespaced(&p))
        }
    }
}

/// What the cache knows of `name`, or, when it knows nothing yet, the API server's answer.
async fn cached_or_read<K>(cached: Cached<Arc<K>>, api: Api<K>, name: &str) -> Result<Option<Arc<K>>, Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(match cached {
        Cached::Present(p) => Some(p),
        Cached::Absent => None,
        Cached::Unknown => {
            let ns = api.namespace().unwrap_or("").to_owned();
            api.get_opt(name).await.map_err(kube_call("get", &K::kind(&()), &ns, name))?.map(Arc::new)
        }
    })
}

/// The provider a resource in `namespace` may issue through now: it exists, allows the namespace, and is ready.
/// (A resource being deleted uses [`fetch`]: its keys are revoked through the provider whatever these say.)
pub async fn admit(ctx: &Context, namespace: &str, r: &ProviderRef) -> Result<Provider, Error> {
    let provider = fetch(ctx, namespace, r).await?;
    if provider.kind == ProviderKind::ClusterKeyProvider {
        provider.allows(namespace, &namespace_labels(ctx, namespace).await?)?;
    }
    provider.readiness().map_err(|why| Error::ProviderNotReady { provider: provider.display(), why })?;
    Ok(provider)
}

async fn namespace_labels(ctx: &Context, namespace: &str) -> Result<BTreeMap<String, String>, Error> {
    let labels = match ctx.caches.namespace(namespace).await {
        Cached::Present(m) => m.metadata.labels.clone(),
        Cached::Absent => None,
        Cached::Unknown => Api::<Namespace>::all(ctx.client.clone())
            .get_metadata_opt(namespace)
            .await
            .map_err(kube_call("get", "Namespace", "", namespace))?
            .and_then(|m| m.metadata.labels),
    };
    Ok(labels.unwrap_or_default())
}
