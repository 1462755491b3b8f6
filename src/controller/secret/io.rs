//! Secret I/O beside the pure builder (`super`): the target Secret observed against what was last written,
//! written by server-side apply, deleted when a rename leaves it behind. A Secret the resource does not own is
//! never written or deleted.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
};

pub use super::WrittenSecret;
pub use super::template::SecretContent;
use super::{FIELD_MANAGER, SecretState, data_hash, data_of, desired_secret, is_owned_by, secret_type, template};
use crate::api::SECRET_TYPE_OPAQUE;
use crate::controller::{
    context::Context,
    error::{Error, kube_call},
    managed::{Managed, ManagedStatus, status_of, uid},
};

/// The target Secret as observed: its state, and its version when it was read and found intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub state: SecretState,
    /// Read and intact at this version (to record, see `secretResourceVersion`); `None` when not read.
    pub version: Option<String>,
}

/// The state of the target Secret, compared with what was last written (`recorded`: name, hash, version).
/// Not read when the owned-Secret watch has it, owned by `obj`, at the version recorded with the hash: nothing has
/// changed it since (an edit gives a new version, which the watch brings, and which wakes the resource).
pub async fn observe<K: Managed>(
    ctx: &Context,
    obj: &K,
    recorded_name: Option<&str>,
    recorded_hash: Option<&str>,
    recorded_version: Option<&str>,
) -> Result<Observed, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.target_secret();
    let uid = uid(obj)?;
    let state = |state| Ok(Observed { state, version: None });
    if let (Some(recorded), Some(_), Some(version)) = (recorded_name, recorded_hash, recorded_version)
        && recorded == name
        && ctx.owned_secrets.unchanged(&ns, &name, &uid, version).await
    {
        return state(SecretState::Intact);
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(secret) = api.get_opt(&name).await.map_err(kube_call("get", "Secret", &ns, &name))? else {
        return state(SecretState::Missing);
    };
    if !is_owned_by(&secret, &uid) {
        return state(SecretState::Foreign);
    }
    if recorded_name != Some(name.as_str()) {
        return state(SecretState::Missing);
    }
    let hash = data_hash(&ctx.settings.hash_key, &uid, &data_of(&secret));
    if recorded_hash != Some(hash.as_str()) {
        return state(SecretState::Edited);
    }
    Ok(Observed { state: SecretState::Intact, version: secret.resource_version() })
}

/// The keyed hash the target Secret would have with `content` (rendered by the resource's template, if any).
pub fn hash_of<K: Managed>(ctx: &Context, obj: &K, content: &SecretContent) -> Result<String, Error> {
    let data = data_for(obj, content)?.into_iter().map(|(k, v)| (k, k8s_openapi::ByteString(v))).collect();
    Ok(data_hash(&ctx.settings.hash_key, &uid(obj)?, &data))
}

/// The data of the target Secret: `content`'s default keys, or what the resource's template renders from its
/// variables and the resource's `name` and `namespace`.
pub fn data_for<K: Managed>(obj: &K, content: &SecretContent) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let Some(t) = obj.secret_template().and_then(|t| t.template.as_ref()) else { return Ok(content.data.clone()) };
    let vars =
        content.vars.clone().plain("name", obj.name_any()).plain("namespace", obj.namespace().unwrap_or_default());
    Ok(template::render(t, &SecretContent { data: content.data.clone(), vars })?)
}

/// Checks the resource's template, if any, with placeholder values for `names` (the kind's variables): before any
/// vendor call, so that a template that cannot render never costs a key nobody could write.
pub fn check_template<K: Managed>(obj: &K, names: &[&'static str]) -> Result<(), Error> {
    match obj.secret_template().and_then(|t| t.template.as_ref()) {
        Some(t) => Ok(template::check(t, names)?),
        None => Ok(()),
    }
}

/// A resource version no stored object has (etcd revisions count up from 1 and never come near it): an apply that
/// carries it can only create the object, and an object of that name already there, ours or not, fails it with a
/// conflict. The API server ignores the version of an object it creates, and keeps the apply's field ownership.
const NO_OBJECT_HAS_THIS_VERSION: &str = "18446744073709551615";

/// Writes the target Secret by server-side apply (its data rendered by the resource's template, if any) and returns
/// the keyed hash of its data, its new version and the template's digest. A Secret of that name that is not the
/// resource's own is never touched (`SecretConflict`); a template that does not render writes nothing.
///
/// One request when nothing else wrote the Secret: the apply carries the version last recorded for it, or, when
/// none is recorded, a version no object has, so that it can only create it. Either way the API server refuses it
/// if the Secret is not exactly what we last wrote (a Secret that appeared meanwhile, an edit, a type the template
/// no longer asks for); then it is read, judged and written at the version read.
pub async fn write<K: Managed>(ctx: &Context, obj: &K, content: SecretContent) -> Result<WrittenSecret, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.target_secret();
    let uid = uid(obj)?;
    let data = data_for(obj, &content)?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let owner = obj.controller_owner_ref(&()).ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    let mut desired = desired_secret(&name, &ns, obj.secret_template(), owner, data);
    let hash = data_hash(&ctx.settings.hash_key, &uid, &data_of(&desired));
    let status = status_of(obj);
    let recorded = status.secret_version().filter(|_| status.written_secret().0 == Some(name.as_str()));
    desired.metadata.resource_version = Some(recorded.unwrap_or(NO_OBJECT_HAS_THIS_VERSION).to_owned());
    let written = match apply_at_version(ctx, &api, &desired).await {
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 422 => {
            // Not what we last wrote, or not there to be created: read it and decide.
            let version = match api.get_opt(&name).await.map_err(kube_call("get", "Secret", &ns, &name))? {
                None => NO_OBJECT_HAS_THIS_VERSION.to_owned(),
                Some(existing) if !is_owned_by(&existing, &uid) => return Err(Error::SecretConflict { name }),
                // Kubernetes cannot change a Secret's type in place: our own Secret of another type is replaced.
                Some(existing)
                    if existing.type_.as_deref().unwrap_or(SECRET_TYPE_OPAQUE)
                        != secret_type(obj.secret_template()) =>
                {
                    let precondition =
                        Preconditions { uid: existing.uid(), resource_version: existing.resource_version() };
                    let params = DeleteParams { preconditions: Some(precondition), ..Default::default() };
                    api.delete(&name, &params).await.map_err(kube_call("delete", "Secret", &ns, &name))?;
                    NO_OBJECT_HAS_THIS_VERSION.to_owned()
                }
                Some(existing) => existing.resource_version().unwrap_or_default(),
            };
            desired.metadata.resource_version = Some(version);
            // A Secret that appears or changes between that read and this write fails it: the next reconcile
            // reads it again.
            apply_at_version(ctx, &api, &desired).await
        }
        other => other,
    }
    .map_err(kube_call("apply", "Secret", &ns, &name))?;
    let template = template::digest(obj.secret_template().and_then(|t| t.template.as_ref()));
    Ok(WrittenSecret { hash, version: written.resource_version(), template })
}

/// Server-side-applies `desired`, which holds only at its `resourceVersion`, as our own write (its watch event
/// wakes nobody).
async fn apply_at_version(ctx: &Context, api: &Api<Secret>, desired: &Secret) -> Result<Secret, kube::Error> {
    let (ns, name) = (desired.namespace().unwrap_or_default(), desired.name_any());
    let own_write = ctx.owned_secrets.writing(&ns, &name);
    let written = api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(desired)).await?;
    own_write.done(written.resource_version().as_deref());
    if let Some(owner) = written.owner_references().iter().find(|r| r.controller == Some(true)) {
        ctx.owned_secrets.written_by(&ns, &name, &owner.uid, written.resource_version().as_deref());
    }
    Ok(written)
}

/// Deletes the Secret `name` if the resource owns it (a target Secret left behind by a rename).
pub async fn delete_owned<K: Managed>(ctx: &Context, obj: &K, name: &str) -> Result<(), Error> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(s) = api.get_opt(name).await.map_err(kube_call("get", "Secret", &ns, name))?
        && is_owned_by(&s, &uid(obj)?)
    {
        api.delete(name, &DeleteParams::default()).await.map_err(kube_call("delete", "Secret", &ns, name))?;
    }
    Ok(())
}
