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
        FINALIZER, MANAGED_BY, WorkloadApiKey, WorkloadApiKeyStatus,
        conditions::{self, READY, reason},
    },
    controller::{
        events::Publisher,
        secret::{FIELD_MANAGER, data_hash, desired_secret},
        workload_api_key::{SECRET_ENDPOINT, SECRET_KEY, SECRET_KEY_ID},
    },
};

/// The API-server requests the operator makes to take a new WorkloadApiKey to Ready (see
/// `src/controller/workload_api_key/` and `reconcile.rs`), made by a plain client without the vendor:
///
/// 1. first reconcile: the finalizer, by `kube::runtime::finalizer`'s JSON patch (test + add);
/// 2. second reconcile: status SSA with the intent (`pendingKeyName`), the vendor create (skipped here), the
///    Secret SSA, an Event `KeyCreated`, status SSA with the key, status SSA with `Ready=True`, an Event `Ready`.
///
/// With `reads`, also the GETs the operator makes on the way: the resource (read fresh by every reconcile: the
/// two above and a third that the new Secret's watch event causes; the operator's are "not older than" reads the
/// API server answers from its watch cache, these are quorum reads) and the target Secret (observed before the
/// create, re-checked right before it is written; the third reconcile knows it unchanged by its version). The
/// provider, the namespace and the provider's admin-key and CA Secrets come from the operator's watch caches: no
/// read.
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

        self.read_resource(&waks, &name).await?;
        self.add_finalizer(&waks, &name).await.map_err(err("finalizer"))?;

        self.read_resource(&waks, &name).await?;
        self.read(&secrets, &[&name]).await?;
        let key_name = format!("{ns}-{name}");
        let mut status = WorkloadApiKeyStatus {
            pending_key_name: Some(key_name.clone()),
            key_generation: Some(1),
            ..Default::default()
        };
        apply_status(&waks, &name, &status).await.map_err(err("intent"))?;

        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let data = BTreeMap::from([
            (SECRET_KEY.to_owned(), format!("{id}:{}", "A".repeat(44)).into_bytes()),
            (SECRET_KEY_ID.to_owned(), id.to_string().into_bytes()),
            (SECRET_ENDPOINT.to_owned(), self.endpoint.clone().into_bytes()),
        ]);
        let owner = obj.controller_owner_ref(&()).ok_or("no owner reference")?;
        let desired = desired_secret(&name, &ns, None, owner, data);
        let hash = data_hash(b"bench", &uid, desired.data.as_ref().ok_or("no data")?);
        self.read(&secrets, &[&name]).await?;
        secrets
            .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired))
            .await
            .map_err(err("Secret"))?;
        self.event(&obj, "KeyCreated", "CreateKey", format!("created key {id} ({key_name}) and wrote Secret {name}"))
            .await;

        let now = Timestamp::now();
        status.key_id = Some(id.into());
        status.key_name = Some(key_name);
        status.pending_key_name = None;
        status.role_id = Some(2);
        status.secret_name = Some(name.clone());
        status.secret_hash = Some(hash);
        status.created_at = Some(Time(now));
        status.expires_at = Some(Time(now + SignedDuration::from_hours(336)));
        status.renew_at = Some(Time(now + SignedDuration::from_hours(224)));
        status.observed_generation = obj.metadata.generation;
        apply_status(&waks, &name, &status).await.map_err(err("status"))?;

        let message = format!("key {id} is in Secret {name}");
        conditions::set_condition(
            &mut status.conditions,
            READY,
            true,
            reason::READY,
            &message,
            obj.metadata.generation,
            now,
        );
        apply_status(&waks, &name, &status).await.map_err(err("Ready"))?;
        self.event(&obj, reason::READY, "Reconcile", message).await;
        self.read_resource(&waks, &name).await?;
        Ok(())
    }

    /// `kube::runtime::finalizer` adds the finalizer with this JSON patch (the `json_patch` types are not ours
    /// to depend on here, so the same bytes go out by hand).
    pub async fn add_finalizer(&self, api: &Api<WorkloadApiKey>, name: &str) -> kube::Result<WorkloadApiKey> {
        let body = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ]);
        let request = http::Request::patch(format!("{}/{name}?", api.resource_url()))
            .header(http::header::CONTENT_TYPE, "application/json-patch+json")
            .body(serde_json::to_vec(&body).expect("JSON"))
            .expect("request");
        self.client.request(request).await
    }

    pub async fn read_resource(&self, api: &Api<WorkloadApiKey>, name: &str) -> Result<(), String> {
        if self.reads {
            api.get_opt(name).await.map_err(|e| format!("get WorkloadApiKey {name}: {e}"))?;
        }
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
