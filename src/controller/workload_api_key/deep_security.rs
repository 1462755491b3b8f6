//! The steps of a WorkloadApiKey issued through a Deep Security Manager / Workload Security `/api`: keys are
//! modified in place, given a new secret on `RegenerateSecret` rotation and on repair, and adopted after a crash.

use std::sync::Arc;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::runtime::events::EventType;

use super::{
    Issued, SECRET_KEY, WrittenSecret, base_key_name, created_event, make_current, plan, secret_name, write_secret,
};
use crate::{
    api::{RoleRef, VendorKeyId, WorkloadApiKey, WorkloadApiKeyStatus},
    clients::{
        ErrorKind, VendorError,
        trend::{ApiKeyChanges, DeepSecurityApi, IssuedApiKey, NewApiKey, TrendApiKind},
    },
    controller::{
        context::{Context, display_name},
        error::Error,
        failpoint, intent,
        provider::{Provider, connect},
        reconcile::{ManagedStatus, patch_status, uid},
        vendor_key::{self, Owner},
    },
};

/// Everything needed to talk to the vendor for one resource: the provider's Deep Security client.
pub(super) struct Vendor {
    pub client: Arc<dyn DeepSecurityApi>,
    pub endpoint: String,
    /// Digest of the endpoint and the credential: what the role cache is keyed by.
    identity: String,
}

pub(super) async fn vendor_for(provider: &Provider, ctx: &Context) -> Result<Vendor, Error> {
    let ds = connect::deep_security(provider, ctx).await?;
    Ok(Vendor { client: ds.client, endpoint: ds.conn.endpoint, identity: ds.identity })
}

/// The numeric ID Deep Security gives a key; any other ID in status was not issued by it.
fn numeric(id: &VendorKeyId) -> Result<i64, Error> {
    id.as_number().ok_or_else(|| {
        Error::InvalidSpec(format!(
            "key ID {id:?} in status is not a Deep Security key ID (a number): it was issued through another Trend \
             API; point the provider back at that API, or delete and recreate the resource"
        ))
    })
}

async fn role_id(obj: &WorkloadApiKey, vendor: &Vendor, ctx: &Context) -> Result<i64, Error> {
    match &obj.spec.role {
        RoleRef { id: Some(id), .. } => Ok(*id),
        RoleRef { name: Some(name), .. } => {
            if let Some(id) = ctx.cached_role(&vendor.identity, name) {
                return Ok(id);
            }
            let role = vendor
                .client
                .find_role_by_name(name)
                .await?
                .ok_or_else(|| Error::RoleNotFound { name: name.clone() })?;
            ctx.cache_role(&vendor.identity, name, role.id);
            Ok(role.id)
        }
        RoleRef { name: None, id: None } => Err(Error::InvalidSpec("role needs name or id".into())),
    }
}

/// Creates (or, recovering, adopts) the key `name`, writes the Secret, and makes it current. The replaced key,
/// if any, is kept until its grace period ends.
pub(super) async fn create(
    obj: &WorkloadApiKey,
    ctx: &Context,
    vendor: &Vendor,
    mut status: WorkloadApiKeyStatus,
    name: String,
    recover: bool,
) -> Result<WorkloadApiKeyStatus, Error> {
    let uid = uid(obj)?;
    let role_id = role_id(obj, vendor, ctx).await?;
    if !recover {
        // Intent first: after a crash the key is found by this exact name instead of being created twice.
        status.pending_key_name = Some(name.clone());
        status.key_generation.get_or_insert(1);
        status.endpoint = Some(vendor.endpoint.clone());
        intent::record(ctx, obj, &mut status).await?;
    }
    let adopted =
        if recover { adopt(vendor, &name, &Owner::new(&uid, status.owner_nonce.as_deref())).await? } else { None };
    let now = Timestamp::now();
    let (expires_at, renew_at) = plan::lifetime_from(&obj.spec, now).map_err(Error::InvalidSpec)?;
    let issued = match adopted {
        Some(id) => {
            tracing::info!(resource = %display_name(obj), key_id = id, "adopting a key created before a restart");
            if let Some(expiry) = expires_at {
                let changes = ApiKeyChanges { expiry_date: Some(expiry.as_millisecond()), ..Default::default() };
                vendor.client.modify_api_key(id, &changes).await?;
            }
            vendor.client.regenerate_secret(id).await?
        }
        None => {
            if vendor_key::ensure_nonce(&mut status.owner_nonce) {
                // Recovering an intent recorded before nonces: the nonce is recorded before any key carries it.
                patch_status(ctx, obj, &status).await?;
            }
            let owner = Owner::new(&uid, status.owner_nonce.as_deref());
            let key = NewApiKey {
                key_name: name.clone(),
                description: Some(vendor_key::vendor_description(obj.spec.description.as_deref(), &owner)),
                locale: Some(obj.spec.locale.unwrap_or_default()),
                role_id,
                time_zone: obj.spec.time_zone.clone(),
                expiry_date: expires_at.map(|t| t.as_millisecond()),
            };
            let issued = vendor.client.create_api_key(&key).await?;
            failpoint::hit("after-vendor-create");
            issued
        }
    };
    let new_id = VendorKeyId::from(issued.key.id);
    let written = write(obj, ctx, vendor, &issued, expires_at).await?;
    let grace = plan::grace_period(&obj.spec).map_err(Error::InvalidSpec)?;
    let replaced = make_current(&mut status, &new_id, &name, &vendor.endpoint, now, grace);
    status.role_id = Some(role_id);
    status.secret_name = Some(secret_name(obj));
    status.record_written(written);
    status.created_at = Some(Time(issued.key.created_at().unwrap_or(now)));
    status.expires_at = issued.key.expires_at().or(expires_at).map(Time);
    status.renew_at = renew_at.map(Time);
    status.observed_generation = obj.metadata.generation;
    let (reason, note) = created_event(obj, &new_id, &name, replaced.as_ref());
    ctx.event(obj, EventType::Normal, reason, "CreateKey", note).await;
    Ok(status)
}

/// A key named exactly `name` whose description ends with exactly `owner`'s marker, from a create whose result was
/// never recorded. Extra matches (only possible through outside interference) are deleted so exactly one remains.
pub(super) async fn adopt(vendor: &Vendor, name: &str, owner: &Owner<'_>) -> Result<Option<i64>, Error> {
    let mut ours: Vec<i64> = vendor
        .client
        .find_api_keys_by_name(name)
        .await?
        .into_iter()
        .filter(|k| k.key_name == name && owner.created(k.description.as_deref()))
        .map(|k| k.id)
        .collect();
    ours.sort_unstable();
    let keep = ours.pop();
    for extra in ours {
        delete_key(vendor, &extra.into()).await?;
    }
    Ok(keep)
}

pub(super) async fn regenerate(
    obj: &WorkloadApiKey,
    ctx: &Context,
    vendor: &Vendor,
    mut status: WorkloadApiKeyStatus,
    annotation: Option<&str>,
) -> Result<WorkloadApiKeyStatus, Error> {
    let id = current(&status)?;
    let now = Timestamp::now();
    let (expires_at, renew_at) = plan::lifetime_from(&obj.spec, now).map_err(Error::InvalidSpec)?;
    if let Some(expiry) = expires_at {
        let changes = ApiKeyChanges { expiry_date: Some(expiry.as_millisecond()), ..Default::default() };
        if let Err(e) = vendor.client.modify_api_key(id, &changes).await {
            return Err(lost_key_or(e, &mut status));
        }
    }
    resecret(obj, ctx, vendor, &mut status, id, expires_at).await?;
    status.expires_at = expires_at.map(Time);
    status.renew_at = renew_at.map(Time);
    status.last_rotated_at = Some(Time(now));
    vendor_key::record_rotate_request(&mut status.rotate_annotation, &mut status.rotate_annotation_at, annotation, now);
    ctx.event(obj, EventType::Normal, "SecretRegenerated", "Rotate", format!("regenerated the secret of key {id}"))
        .await;
    Ok(status)
}

/// The Secret is missing or was edited: a fresh secret for the current key (the old one stops working at once).
pub(super) async fn repair(
    obj: &WorkloadApiKey,
    ctx: &Context,
    vendor: &Vendor,
    mut status: WorkloadApiKeyStatus,
) -> Result<WorkloadApiKeyStatus, Error> {
    let id = current(&status)?;
    let expires_at = status.expires_at.as_ref().map(|t| t.0);
    resecret(obj, ctx, vendor, &mut status, id, expires_at).await?;
    ctx.event(
        obj,
        EventType::Normal,
        "SecretRepaired",
        "Repair",
        format!(
            "Secret {} was missing or edited: wrote a fresh secret for key {id}; the replaced one is revoked",
            secret_name(obj)
        ),
    )
    .await;
    Ok(status)
}

/// A new secret for key `id` (the old one stops working at once), written to the Secret; a Secret left behind by a
/// renamed `spec.secret.name` is removed.
async fn resecret(
    obj: &WorkloadApiKey,
    ctx: &Context,
    vendor: &Vendor,
    status: &mut WorkloadApiKeyStatus,
    id: i64,
    expires_at: Option<Timestamp>,
) -> Result<(), Error> {
    let issued = match vendor.client.regenerate_secret(id).await {
        Ok(i) => i,
        Err(e) => return Err(lost_key_or(e, status)),
    };
    let hash = write(obj, ctx, vendor, &issued, expires_at).await?;
    super::record_secret(obj, ctx, status, hash).await
}

/// Brings the vendor key's attributes in line with a changed spec.
pub(super) async fn update(
    obj: &WorkloadApiKey,
    ctx: &Context,
    vendor: &Vendor,
    mut status: WorkloadApiKeyStatus,
) -> Result<WorkloadApiKeyStatus, Error> {
    let id = current(&status)?;
    let uid = uid(obj)?;
    let role_id = role_id(obj, vendor, ctx).await?;
    let name = plan::key_name_for(&base_key_name(obj), status.key_generation.unwrap_or(1));
    let created = status.created_at.as_ref().map(|t| t.0).unwrap_or_else(Timestamp::now);
    let (expires_at, renew_at) = plan::lifetime_from(&obj.spec, created).map_err(Error::InvalidSpec)?;
    let changes = ApiKeyChanges {
        key_name: Some(name.clone()),
        description: Some(vendor_key::vendor_description(
            obj.spec.description.as_deref(),
            &Owner::new(&uid, status.owner_nonce.as_deref()),
        )),
        locale: Some(obj.spec.locale.unwrap_or_default()),
        role_id: Some(role_id),
        time_zone: obj.spec.time_zone.clone(),
        expiry_date: expires_at.map(|t| t.as_millisecond()),
        active: None,
    };
    if let Err(e) = vendor.client.modify_api_key(id, &changes).await {
        return Err(lost_key_or(e, &mut status));
    }
    status.key_name = Some(name);
    status.role_id = Some(role_id);
    status.expires_at = expires_at.map(Time);
    status.renew_at = renew_at.map(Time);
    status.observed_generation = obj.metadata.generation;
    Ok(status)
}

/// Deletes a vendor key; one already gone counts as deleted.
pub(super) async fn delete_key(vendor: &Vendor, id: &VendorKeyId) -> Result<(), Error> {
    super::gone_is_deleted(vendor.client.delete_api_key(numeric(id)?).await)
}

/// The numeric ID of the current key.
fn current(status: &WorkloadApiKeyStatus) -> Result<i64, Error> {
    numeric(status.key_id.as_ref().ok_or(Error::MissingObjectKey(".status.keyId"))?)
}

/// A 404 on the current key means it was deleted at the vendor: forget it so the next step creates a new one.
fn lost_key_or(e: VendorError, status: &mut WorkloadApiKeyStatus) -> Error {
    if e.kind == ErrorKind::NotFound {
        status.key_id = None;
        status.key_generation = Some(status.key_generation.unwrap_or(1) + 1);
    }
    e.into()
}

/// Writes the Secret (`api-secret-key`, `api-key-id`, `endpoint`, or what the template renders) and returns the
/// keyed hash of its data and its version. `expires_at`: the expiry asked for, when the vendor's answer has none.
async fn write(
    obj: &WorkloadApiKey,
    ctx: &Context,
    vendor: &Vendor,
    issued: &IssuedApiKey,
    expires_at: Option<Timestamp>,
) -> Result<WrittenSecret, Error> {
    let id = issued.key.id.to_string();
    let issued = Issued {
        endpoint: &vendor.endpoint,
        api: TrendApiKind::DeepSecurity,
        credential_key: SECRET_KEY,
        credential: &issued.secret_key,
        id: &id,
        expires_at: issued.key.expires_at().or(expires_at),
    };
    write_secret(obj, ctx, issued).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_numeric_ids_reach_deep_security() {
        assert_eq!(numeric(&VendorKeyId::from(42)).unwrap(), 42);
        let e = numeric(&VendorKeyId::new("1q7OVkm2HNIkTWNsFxxUcjIlQnP")).unwrap_err();
        assert!(e.to_string().contains("not a Deep Security key ID"), "{e}");
        let none = WorkloadApiKeyStatus::default();
        assert!(matches!(current(&none), Err(Error::MissingObjectKey(_))));
    }
}
