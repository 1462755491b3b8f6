//! `existing` mode: a pair made in the Secure Workload UI, imported from a Secret of the resource's namespace,
//! verified with signed read-only requests, then published. Nothing is ever created or deleted at the vendor.

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::EventType,
};
use serde_json::json;

use super::{Connection, pair_in, plan::SecretState, rejected, source, verification, verify};
use crate::{
    api::{ExistingSource, LABEL_REFERENCED, SecureWorkloadCredential, SecureWorkloadCredentialStatus},
    clients::cisco::ApiCredentials,
    controller::{
        context::Context,
        error::{Error, kube_call},
        managed::{Managed, ManagedStatus},
        secret,
    },
};

/// The source pair, labelled so that a new pair put there is picked up at once, and the Secret data it yields.
pub(super) async fn read(
    ctx: &Context,
    obj: &SecureWorkloadCredential,
    existing: &ExistingSource,
    conn: &Connection,
) -> Result<Source, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let pair = pair_in(ctx, &ns, &existing.secret_ref.name).await?;
    watch_source(ctx, &ns, &existing.secret_ref.name).await?;
    let data = source::secret_data(&pair, &conn.endpoint, conn.tls.ca_pem.as_deref());
    let hash = secret::io::hash_of(ctx, obj, &data)?;
    Ok(Source { pair, data, hash })
}

/// Existing mode: the imported pair's Secret gets the label the operator's Secret watch selects, so a new pair
/// put there is picked up at once (its data is never written).
async fn watch_source(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    if let Some(s) = api.get_metadata_opt(name).await.map_err(kube_call("get", "Secret", namespace, name))?
        && !s.labels().contains_key(LABEL_REFERENCED)
        && s.metadata.deletion_timestamp.is_none()
    {
        let patch = json!({"metadata": {"labels": {LABEL_REFERENCED: "true"}}});
        api.patch_metadata(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_call("label", "Secret", namespace, name))?;
    }
    Ok(())
}

/// Existing mode: the source pair and the Secret data it yields, read on every pass (Kubernetes reads only).
pub(super) struct Source {
    pair: ApiCredentials,
    data: secret::io::SecretContent,
    pub(super) hash: String,
}

/// Existing mode: verify the source pair; when the vendor accepts it, publish it (also with a missing
/// capability, which `Ready` reports; see [`verification::readiness`]).
pub(super) async fn verify_and_publish(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    conn: &Connection,
    source: &Source,
    mut status: SecureWorkloadCredentialStatus,
    secret_state: SecretState,
) -> Result<SecureWorkloadCredentialStatus, Error> {
    let checked = verify(obj, ctx, conn, &source.pair, &mut status).await?;
    let fingerprint = source.pair.key_fingerprint();
    if let Some(message) = verification::rejection_message(checked.liveness, &fingerprint) {
        return Err(rejected(obj, ctx, &status, message).await);
    }
    let template = secret::template::digest(obj.secret_template().and_then(|t| t.template.as_ref()));
    let changed =
        status.secret_hash.as_deref() != Some(source.hash.as_str()) || status.secret_template_digest != template;
    if changed || secret_state != SecretState::Intact {
        publish(obj, ctx, source.data.clone(), fingerprint.clone(), &mut status).await?;
    }
    if changed {
        let note = format!("published API key {fingerprint} in Secret {}", obj.target_secret());
        ctx.event(obj, EventType::Normal, "SecretPublished", "Publish", note).await;
    }
    status.observed_generation = obj.metadata.generation;
    Ok(status)
}

/// Existing mode: the target Secret was deleted or edited; rebuild it from the source (no vendor call).
pub(super) async fn republish(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    source: &Source,
    mut status: SecureWorkloadCredentialStatus,
) -> Result<SecureWorkloadCredentialStatus, Error> {
    publish(obj, ctx, source.data.clone(), source.pair.key_fingerprint(), &mut status).await?;
    let note = format!("Secret {} was missing or edited: rewrote it from the source Secret", obj.target_secret());
    ctx.event(obj, EventType::Normal, "SecretRepaired", "Repair", note).await;
    Ok(status)
}

/// Writes the target Secret and records it; a Secret left behind under a previous name is deleted.
async fn publish(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    data: secret::io::SecretContent,
    fingerprint: String,
    status: &mut SecureWorkloadCredentialStatus,
) -> Result<(), Error> {
    let written = secret::io::write(ctx, obj, data).await?;
    let name = obj.target_secret();
    if let Some(old) = status.secret_name.replace(name.clone()).filter(|old| *old != name) {
        secret::io::delete_owned(ctx, obj, &old).await?;
    }
    status.record_written(written);
    status.api_key_fingerprint = Some(fingerprint);
    Ok(())
}
