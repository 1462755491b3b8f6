//! The baseline: a plain kube-rs client that makes the operator's API-server requests, without the vendor.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
};

use k8s_openapi::{
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::EventType,
};
use serde_json::json;
use workload_key_operator::{
    api::{
        ANNOTATION_FIRST_INTENT, FINALIZER, MANAGED_BY, WorkloadApiKey, WorkloadApiKeyStatus,
        conditions::{self, READY, reason},
    },
    controller::{
        events::Publisher,
        secret::{FIELD_MANAGER, data_hash, desired_secret},
        workload_api_key::{SECRET_ENDPOINT, SECRET_KEY, SECRET_KEY_ID},
    },
};

/// The API-server requests the operator makes to take a new WorkloadApiKey to Ready (see
/// `src/controller/workload_api_key/`, `reconcile.rs` and `intent.rs`), made by a plain client without the vendor:
/// the finalizer with the first create's intent (one merge patch), the vendor create (skipped here), the Secret's
/// create-only server-side apply, the status with the key and `Ready=True` (one SSA), an Event `KeyCreated`.
///
/// With `reads`, also the one GET the operator makes on the way: the target Secret, before the vendor create (a
/// foreign Secret costs no key). The resource is not read (the finalizer's patch returns it), and the provider, the
/// namespace and the provider's Secrets come from the operator's watch caches.
#[derive(Clone)]
pub struct PlainClient {
    pub client: Client,
    pub events: Publisher,
    pub endpoint: String,
    pub reads: bool,
    pub next_id: Arc<AtomicI64>,
}

impl PlainClient {
    pub fn new(client: Client, endpoint: String, reads: bool) -> Self {
        // The operator reports Events under its own name, the managed-by value.
        let events = Publisher::new(client.clone(), MANAGED_BY, None);
        Self { client, events, endpoint, reads, next_id: Arc::new(AtomicI64::new(1000)) }
    }

    pub async fn writes_for(&self, obj: WorkloadApiKey) -> Result<(), String> {
        let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
        let uid = obj.uid().unwrap_or_default();
        let err = |what: &'static str| {
            let name = name.clone();
            move |e: kube::Error| format!("{what} {name}: {e}")
        };
        let waks: Api<WorkloadApiKey> = Api::namespaced(self.client.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);

        let key_name = format!("{ns}-{name}");
        let intent = format!(
            "{:064x} {{\"keyGeneration\":1,\"ownerNonce\":\"{:032x}\",\"pendingKeyName\":\"{key_name}\"}}",
            0, 0
        );
        let patch = json!({"metadata": {
            "finalizers": [FINALIZER],
            "annotations": {ANNOTATION_FIRST_INTENT: intent},
            "resourceVersion": obj.resource_version(),
        }});
        waks.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(err("finalizer"))?;

        self.read(&secrets, &[&name]).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let data = BTreeMap::from([
            (SECRET_KEY.to_owned(), format!("{id}:{}", "A".repeat(44)).into_bytes()),
            (SECRET_KEY_ID.to_owned(), id.to_string().into_bytes()),
            (SECRET_ENDPOINT.to_owned(), self.endpoint.clone().into_bytes()),
        ]);
        let owner = obj.controller_owner_ref(&()).ok_or("no owner reference")?;
        let mut desired = desired_secret(&name, &ns, None, owner, data);
        let hash = data_hash(b"bench", &uid, desired.data.as_ref().ok_or("no data")?);
        // The operator's create-only apply (`secret::io::write`): a version no object has.
        desired.metadata.resource_version = Some(u64::MAX.to_string());
        secrets
            .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired))
            .await
            .map_err(err("Secret"))?;

        let now = Timestamp::now();
        let message = format!("key {id} is in Secret {name}");
        let mut status = WorkloadApiKeyStatus {
            key_id: Some(id.into()),
            key_name: Some(key_name.clone()),
            key_generation: Some(1),
            owner_nonce: Some(format!("{:032x}", 0)),
            role_id: Some(2),
            secret_name: Some(name.clone()),
            secret_hash: Some(hash),
            created_at: Some(Time(now)),
            expires_at: Some(Time(now + SignedDuration::from_hours(336))),
            renew_at: Some(Time(now + SignedDuration::from_hours(224))),
            observed_generation: obj.metadata.generation,
            ..Default::default()
        };
        conditions::set_condition(
            &mut status.conditions,
            READY,
            true,
            reason::READY,
            &message,
            obj.metadata.generation,
            now,
        );
        apply_status(&waks, &name, &status).await.map_err(err("status"))?;
        self.event(&obj, "KeyCreated", "CreateKey", format!("created key {id} ({key_name}) and wrote Secret {name}"))
            .await;
        Ok(())
    }

    pub async fn read(&self, secrets: &Api<Secret>, names: &[&str]) -> Result<(), String> {
        if self.reads {
            for name in names {
                secrets.get_opt(name).await.map_err(|e| format!("get Secret {name}: {e}"))?;
            }
        }
        Ok(())
    }

    pub async fn event(&self, obj: &WorkloadApiKey, reason: &str, action: &str, note: String) {
        // As in the operator: events are advisory, a failure is not fatal.
        if let Err(e) = self.events.publish(obj.object_ref(&()), EventType::Normal, reason, action, note).await {
            eprintln!("bench: event: {e}");
        }
    }
}

/// The operator's `patch_status`: server-side apply of the whole status under its field manager.
pub async fn apply_status(
    api: &Api<WorkloadApiKey>,
    name: &str,
    status: &WorkloadApiKeyStatus,
) -> kube::Result<WorkloadApiKey> {
    let patch = json!({
        "apiVersion": WorkloadApiKey::api_version(&()),
        "kind": WorkloadApiKey::kind(&()),
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await
}
