//! Where Kubernetes and the vendors meet: thin reconcilers, pure decisions and builders, events, metrics.

pub mod context;
pub mod error;
pub mod metrics;
pub mod secret;
pub mod server;
pub mod wak_plan;
pub mod workload_api_key;

use std::sync::Arc;

use futures::{StreamExt, future::BoxFuture};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource,
    core::PartialObjectMeta,
    runtime::{Controller, Predicate, WatchStreamExt, predicates, reflector, watcher},
};

pub use context::{Context, Settings};
pub use error::Error;

use crate::api::WorkloadApiKey;

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

/// Runs every controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, scope: Scope, shutdown: BoxFuture<'static, ()>) {
    let client = ctx.client.clone();
    let shutdown = futures::future::FutureExt::shared(shutdown);

    let waks: Api<WorkloadApiKey> = scope.api(client.clone());
    let secrets: Api<PartialObjectMeta<Secret>> = scope.api(client.clone());
    let (wak_store, writer) = reflector::store();
    // Our own status writes must not wake the controller (a failure would otherwise retry in a tight loop):
    // only spec (generation), annotations (rotate), finalizers and deletion do.
    let wak_events = watcher(waks, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(spec_or_intent_changed(), Default::default());
    let wak_controller = Controller::for_stream(wak_events, wak_store.clone());
    // One metadata-only watch of Secrets: owned ones (drift) and referenced ones (credentials fixed or rotated).
    let secret_events = watcher(secrets, watcher::Config::default().any_semantic()).touched_objects();
    let wak_controller = wak_controller
        .watches_stream(secret_events, move |secret| {
            let ns = secret.metadata.namespace.clone().unwrap_or_default();
            let name = secret.metadata.name.clone().unwrap_or_default();
            let owners: Vec<String> =
                secret.metadata.owner_references.unwrap_or_default().into_iter().map(|r| r.uid).collect();
            workload_api_key::affected_by_secret(&ns, &name, &owners, &wak_store.state())
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(workload_api_key::reconcile, workload_api_key::error_policy, ctx.clone())
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::trace!(resource = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        });
    wak_controller.await;
}

/// Changes that ask for work: the spec, annotations (the rotate annotation), finalizers, deletion.
fn spec_or_intent_changed<K: Resource>() -> impl Predicate<K> + Clone {
    fn deleting<K: Resource>(obj: &K) -> Option<u64> {
        Some(u64::from(obj.meta().deletion_timestamp.is_some()))
    }
    predicates::generation.combine(predicates::annotations).combine(predicates::finalizers).combine(deleting)
}
