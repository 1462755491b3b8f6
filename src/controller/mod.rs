//! Where Kubernetes and the vendors meet: thin reconcilers, pure decisions and builders, events, metrics.

pub mod context;
pub mod error;
pub mod failpoint;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod secret;
pub mod secure_workload_credential;
pub mod server;
pub mod vendor_key;
pub mod workload_api_key;

use std::sync::Arc;

use futures::{SinkExt, Stream, StreamExt, channel::mpsc, future::BoxFuture};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource,
    core::PartialObjectMeta,
    runtime::{Controller, Predicate, WatchStreamExt, predicates, reflector, watcher},
};

pub use context::{Context, Settings};
pub use error::Error;

use crate::api::{SecureWorkloadCredential, WorkloadApiKey};
use reconcile::Managed;

/// Which namespaces the controllers watch.
#[derive(Clone, Debug, Default)]
pub enum Scope {
    #[default]
    AllNamespaces,
    Namespace(String),
}

impl Scope {
    fn api<K>(&self, client: Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match self {
            Scope::AllNamespaces => Api::all(client),
            Scope::Namespace(ns) => Api::namespaced(client, ns),
        }
    }
}

type SecretMeta = PartialObjectMeta<Secret>;

/// Runs every controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, scope: Scope, shutdown: BoxFuture<'static, ()>) {
    let shutdown = futures::future::FutureExt::shared(shutdown);
    // One metadata-only watch of Secrets, fanned out to every controller: owned Secrets (drift) and referenced
    // ones (credentials fixed or rotated, a CA replaced).
    let secrets: Api<SecretMeta> = scope.api(ctx.client.clone());
    let (wak_tx, wak_secrets) = mpsc::channel(256);
    let (swc_tx, swc_secrets) = mpsc::channel(256);
    let fan_out = watcher(secrets, watcher::Config::default().any_semantic())
        .default_backoff()
        .touched_objects()
        .take_until(shutdown.clone())
        .for_each(move |event| {
            let (mut wak_tx, mut swc_tx) = (wak_tx.clone(), swc_tx.clone());
            async move {
                match event {
                    // A closed receiver means its controller has stopped: nothing left to tell it.
                    Ok(secret) => {
                        let _ = wak_tx.send(secret.clone()).await;
                        let _ = swc_tx.send(secret).await;
                    }
                    Err(e) => tracing::warn!(error = %e, "Secret watch error"),
                }
            }
        });
    let wak =
        controller::<WorkloadApiKey, _, _, _>(&ctx, &scope, wak_secrets, shutdown.clone(), workload_api_key::reconcile);
    let swc = controller::<SecureWorkloadCredential, _, _, _>(
        &ctx,
        &scope,
        swc_secrets,
        shutdown.clone(),
        secure_workload_credential::reconcile,
    );
    futures::join!(fan_out, wak, swc);
}

/// One controller of `K`, woken by its own changes and by the Secrets that concern it.
async fn controller<K, S, R, RF>(
    ctx: &Arc<Context>,
    scope: &Scope,
    secrets: S,
    shutdown: futures::future::Shared<BoxFuture<'static, ()>>,
    reconcile: R,
) where
    K: Managed,
    S: Stream<Item = SecretMeta> + Send + 'static,
    R: FnMut(Arc<K>, Arc<Context>) -> RF,
    RF: futures::TryFuture<Ok = kube::runtime::controller::Action, Error = kube::runtime::finalizer::Error<Error>>
        + Send
        + 'static,
{
    let resources: Api<K> = scope.api(ctx.client.clone());
    let (store, writer) = reflector::store();
    // Our own status writes must not wake the controller (a failure would otherwise retry in a tight loop):
    // only spec (generation), annotations (rotate), finalizers and deletion do.
    let events = watcher(resources, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(spec_or_intent_changed(), Default::default());
    let mapping_store = store.clone();
    Controller::for_stream(events, store)
        .watches_stream(secrets.map(Ok::<_, watcher::Error>), move |secret| {
            let ns = secret.metadata.namespace.clone().unwrap_or_default();
            let name = secret.metadata.name.clone().unwrap_or_default();
            let owners: Vec<String> =
                secret.metadata.owner_references.unwrap_or_default().into_iter().map(|r| r.uid).collect();
            reconcile::affected_by_secret(&ns, &name, &owners, &mapping_store.state())
        })
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

/// Changes that ask for work: the spec, annotations (the rotate annotation), finalizers, deletion.
fn spec_or_intent_changed<K: Resource>() -> impl Predicate<K> + Clone {
    fn deleting<K: Resource>(obj: &K) -> Option<u64> {
        Some(u64::from(obj.meta().deletion_timestamp.is_some()))
    }
    predicates::generation.combine(predicates::annotations).combine(predicates::finalizers).combine(deleting)
}
