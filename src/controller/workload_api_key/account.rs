//! The steps of a WorkloadApiKey issued through a Trend account API (Cloud One accounts, Vision One IAM). Their
//! keys are created and deleted, never modified, and their secret is shown only once, at create: so a rotation, a
//! repaired Secret and a changed role, name or description all create a new key and retire the old one, and a
//! create interrupted by a crash is undone (every marked key of that name deleted) and done again.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::runtime::events::EventType;

use super::{
    Issued, SECRET_API_KEY, base_key_name, created_event, make_current, plan,
    rules::{self, Terms},
    secret_name, write_secret,
};
use crate::{
    api::{VendorKeyId, WorkloadApiKey, WorkloadApiKeyStatus},
    clients::trend::{KeyApi, KeyRequest, TrendApiKind},
    controller::{
        context::Context,
        error::Error,
        failpoint, intent,
        provider::{Provider, connect},
        reconcile::{patch_status, uid},
        vendor_key::{self, Owner},
    },
};

/// The account API of a provider.
pub(super) struct Account {
    pub client: Arc<dyn KeyApi>,
    pub endpoint: String,
    pub api: TrendApiKind,
}

/// The provider's Cloud One or Vision One client.
pub(super) async fn account_for(provider: &Provider, ctx: &Context) -> Result<Account, Error> {
    let a = connect::account(provider, ctx).await?;
    Ok(Account { client: a.client, endpoint: a.conn.endpoint, api: a.api })
}

/// Why a key is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Occasion {
    /// The first key, or a rotation (the replaced key is kept for the grace period).
    Issue,
    /// The Secret was missing or edited: the replaced key, whose secret cannot be shown again, goes at once
    /// (still after the rollout of the restarted workloads).
    Repair,
}

/// The role as create wants it: Vision One takes the name as given, Cloud One the slug of the role so named.
async fn role(obj: &WorkloadApiKey, account: &Account) -> Result<String, Error> {
    let Some(name) = obj.spec.role.name.as_deref() else {
        return Err(Error::InvalidSpec(format!("spec.role.name is required by Trend {}", account.api)));
    };
    account.client.find_role(name).await?.ok_or_else(|| Error::RoleNotFound { name: name.to_owned() })
}

/// Creates the key `name` (with `recover`, first deleting what an interrupted create of that name left), writes
/// the Secret, and makes it current; the replaced key, if any, is retired as `occasion` says.
#[allow(clippy::too_many_arguments)]
pub(super) async fn create(
    obj: &WorkloadApiKey,
    ctx: &Context,
    account: &Account,
    terms: &Terms,
    mut status: WorkloadApiKeyStatus,
    name: String,
    recover: bool,
    occasion: Occasion,
) -> Result<WorkloadApiKeyStatus, Error> {
    let uid = uid(obj)?;
    let role = role(obj, account).await?;
    let grace = match occasion {
        Occasion::Issue => plan::grace_period(&obj.spec).map_err(Error::InvalidSpec)?,
        Occasion::Repair => Duration::ZERO,
    };
    if recover {
        // The secret of a key whose create was not recorded exists nowhere else and cannot be shown again.
        for id in leftovers(account, &status, &name, &Owner::new(&uid, status.owner_nonce.as_deref())).await? {
            tracing::info!(key_id = %id, "deleting a key whose create was interrupted; creating it again");
            delete_key(account, &id).await?;
        }
    } else {
        // Intent first: after a crash the key is found by this exact name instead of being left behind.
        status.pending_key_name = Some(name.clone());
        status.key_generation.get_or_insert(1);
        status.endpoint = Some(account.endpoint.clone());
        intent::record(ctx, obj, &mut status).await?;
    }
    if vendor_key::ensure_nonce(&mut status.owner_nonce) {
        // Recovering an intent recorded before nonces: the nonce is recorded before any key carries it.
        patch_status(ctx, obj, &status).await?;
    }
    let cloud_one = account.api == TrendApiKind::CloudOne;
    let request = KeyRequest {
        name: name.clone(),
        description: Some(vendor_key::vendor_description(
            obj.spec.description.as_deref(),
            &Owner::new(&uid, status.owner_nonce.as_deref()),
        )),
        role: role.clone(),
        expiry: terms.months,
        locale: obj.spec.locale.filter(|_| cloud_one),
        time_zone: obj.spec.time_zone.clone().filter(|_| cloud_one),
    };
    let issued = account.client.create_key(&request).await?;
    failpoint::hit("after-vendor-create");
    let now = Timestamp::now();
    let new_id = VendorKeyId::new(issued.id.clone());
    let expires_at = issued.expires_at.or_else(|| terms.months.map(|m| rules::months_after(now, m)));
    let written = write_secret(
        obj,
        ctx,
        Issued {
            endpoint: &account.endpoint,
            api: account.api,
            credential_key: SECRET_API_KEY,
            credential: &issued.secret,
            id: &issued.id,
            expires_at,
        },
    )
    .await?;
    let replaced = make_current(&mut status, &new_id, &name, &account.endpoint, now, grace);
    status.role = Some(role);
    status.key_attributes.clone_from(&terms.attributes);
    super::record_secret(obj, ctx, &mut status, written).await?;
    status.created_at = Some(Time(now));
    status.expires_at = expires_at.map(Time);
    status.renew_at = renewal(obj, now, expires_at).map(Time);
    status.observed_generation = obj.metadata.generation;
    let api = account.api;
    let (reason, action, note) = match (&replaced, occasion) {
        (Some(old), Occasion::Repair) => (
            "SecretRepaired",
            "Repair",
            format!(
                "Secret {} was missing or edited: Trend {api} cannot show or regenerate a key's secret, so created \
                 key {new_id} ({name}); key {old} is revoked as soon as the rollout allows",
                secret_name(obj)
            ),
        ),
        _ => {
            let (reason, note) = created_event(obj, &new_id, &name, replaced.as_ref());
            (reason, "CreateKey", note)
        }
    };
    ctx.event(obj, EventType::Normal, reason, action, note).await;
    Ok(status)
}

/// When the key created at `now` is rotated. Its lifetime was checked before the create against the shortest one
/// the vendor could grant; should the vendor still grant less than `renewBefore`, a third of it is used instead
/// of failing with a created key on hand.
fn renewal(obj: &WorkloadApiKey, now: Timestamp, expires_at: Option<Timestamp>) -> Option<Timestamp> {
    plan::renew_at(&obj.spec, now, expires_at).unwrap_or_else(|why| {
        tracing::warn!(%why, "renewing a third of the key's lifetime before its expiry instead");
        let mut spec = obj.spec.clone();
        if let Some(r) = spec.rotation.as_mut() {
            r.renew_before = None;
        }
        plan::renew_at(&spec, now, expires_at).unwrap_or(None)
    })
}

/// The Secret is missing or was edited: a new key (the API cannot give the current one a new secret), the current
/// one retired at once.
pub(super) async fn repair(
    obj: &WorkloadApiKey,
    ctx: &Context,
    account: &Account,
    terms: &Terms,
    mut status: WorkloadApiKeyStatus,
) -> Result<WorkloadApiKeyStatus, Error> {
    let generation = status.key_generation.unwrap_or(1).max(1) + 1;
    status.key_generation = Some(generation);
    let name = plan::key_name_for(&base_key_name(obj), generation);
    create(obj, ctx, account, terms, status, name, false, Occasion::Repair).await
}

/// The spec changed but not what the key was made with: only when it renews moves.
pub(super) fn reschedule(
    obj: &WorkloadApiKey,
    mut status: WorkloadApiKeyStatus,
) -> Result<WorkloadApiKeyStatus, Error> {
    let created = status.created_at.as_ref().map_or_else(Timestamp::now, |t| t.0);
    let expires = status.expires_at.as_ref().map(|t| t.0);
    status.renew_at = plan::renew_at(&obj.spec, created, expires).map_err(Error::InvalidSpec)?.map(Time);
    status.observed_generation = obj.metadata.generation;
    Ok(status)
}

/// Keys named exactly `name` whose description ends with exactly `owner`'s marker that status does not know: what
/// creates of that name left behind.
pub(super) async fn leftovers(
    account: &Account,
    status: &WorkloadApiKeyStatus,
    name: &str,
    owner: &Owner<'_>,
) -> Result<Vec<VendorKeyId>, Error> {
    let known: Vec<&VendorKeyId> = status.key_id.iter().chain(status.retiring_keys.iter().map(|k| &k.key_id)).collect();
    Ok(account
        .client
        .find_keys_by_name(name)
        .await?
        .into_iter()
        .filter(|k| k.name == name && owner.created(k.description.as_deref()))
        .map(|k| VendorKeyId::new(k.id))
        .filter(|id| !known.contains(&id))
        .collect())
}

/// Deletes a vendor key; one already gone counts as deleted.
pub(super) async fn delete_key(account: &Account, id: &VendorKeyId) -> Result<(), Error> {
    super::gone_is_deleted(account.client.delete_key(id.as_str()).await)
}
