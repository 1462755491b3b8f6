//! `inspect secret`: what the operator wrote into a Secret, and whether it was changed since. The keyed hash in the
//! owner's status (`secretHash`) is keyed with a key only the operator holds, so the data cannot be compared here;
//! the Secret's `resourceVersion` can: the owner's status records the one the Secret had when its data last matched
//! the hash (`secretResourceVersion`).

use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use super::{Error, Kind, Outcome, Resource, Target, events_of, find_resource, kube_call, opt_when, print_events};
use crate::api::{API_GROUP, LABEL_MANAGED_BY};

#[derive(Subcommand, Debug)]
pub enum InspectCommand {
    /// What the operator wrote into a Secret, and whether it changed since.
    ///
    /// Its owner, the key ID or fingerprint, the expiry, the data's key names and sizes (never a value), and whether
    /// the Secret changed since the operator recorded it (its resourceVersion against the owner's
    /// status.secretResourceVersion). Exit code 1 when it changed since, or when no resource of the operator owns it.
    Secret(SecretArgs),
}

#[derive(Args, Debug)]
pub struct SecretArgs {
    /// The Secret's name.
    pub name: String,
}

pub async fn run(target: &Target, cmd: InspectCommand) -> Result<Outcome, Error> {
    match cmd {
        InspectCommand::Secret(args) => secret(target, &args.name).await,
    }
}

async fn secret(target: &Target, name: &str) -> Result<Outcome, Error> {
    let ns = &target.namespace;
    let what = format!("Secret {ns}/{name}");
    let api: Api<Secret> = Api::namespaced(target.client.clone(), ns);
    let secret = api
        .get_opt(name)
        .await
        .map_err(kube_call("get", &what))?
        .ok_or_else(|| Error::NotFound(format!("{what} not found")))?;
    let line = |field: &str, value: &str| println!("  {:<17} {value}", format!("{field}:"));
    println!("{what}");
    line("Type", secret.type_.as_deref().unwrap_or("Opaque"));
    line("Managed by", secret.labels().get(LABEL_MANAGED_BY).map_or("-", String::as_str));
    line("Data", &describe_data(&secret));
    let version = secret.resource_version();
    line("resourceVersion", version.as_deref().unwrap_or("-"));

    // The resource of the operator that owns it (its controller owner reference).
    let owner_ref = secret.owner_references().iter().find(|r| {
        r.api_version.split('/').next() == Some(API_GROUP) && Kind::of(&r.kind).is_some() && r.controller == Some(true)
    });
    let Some(owner_ref) = owner_ref else {
        line(
            "Owner",
            "none: no WorkloadApiKey or SecureWorkloadCredential owns this Secret (not written by the operator)",
        );
        return Ok(Outcome::Failed);
    };
    let kind = Kind::of(&owner_ref.kind).expect("filtered above");
    let owner = match find_resource(target, &owner_ref.name, Some(kind)).await {
        Ok(o) if o.meta().uid.as_deref() == Some(owner_ref.uid.as_str()) => o,
        Ok(_) | Err(Error::NotFound(_)) => {
            line("Owner", &format!("{kind}/{} (gone: the garbage collector will delete this Secret)", owner_ref.name));
            return Ok(Outcome::Failed);
        }
        Err(e) => return Err(e),
    };
    line("Owner", &format!("{kind}/{}", owner_ref.name));
    let (recorded, secret_name, key_id, fingerprint, expires) = match &owner {
        Resource::Wak(o) => {
            let s = o.status.as_deref().cloned().unwrap_or_default();
            let key = s.key_id.map(|k| k.to_string());
            (s.secret_resource_version, s.secret_name, key, None, s.expires_at)
        }
        Resource::Swc(o) => {
            let s = o.status.as_deref().cloned().unwrap_or_default();
            (s.secret_resource_version, s.secret_name, s.credential_id, s.api_key_fingerprint, None)
        }
    };
    line("Key ID", key_id.as_deref().unwrap_or("-"));
    line("Fingerprint", fingerprint.as_deref().unwrap_or("-"));
    line("Expires", &opt_when(expires.as_ref()));
    if secret_name.as_deref().is_some_and(|n| n != name) {
        line(
            "Note",
            &format!("the owner now writes Secret {}; this one is no longer its target", secret_name.unwrap()),
        );
    }
    let changed = match (&recorded, &version) {
        (Some(r), Some(v)) if r == v => {
            line("Data check", &format!("unchanged since the operator recorded it (resourceVersion {v})"));
            false
        }
        (Some(r), v) => {
            line(
                "Data check",
                &format!(
                    "changed since the operator recorded it (resourceVersion {} now, {r} recorded): the operator \
                     will compare the data with its keyed hash and repair it if it differs",
                    v.as_deref().unwrap_or("-")
                ),
            );
            true
        }
        (None, _) => {
            line("Data check", "the operator has not recorded this Secret yet (the owner is not Ready yet)");
            true
        }
    };
    let m = owner.meta();
    let repairs = events_of(target, ns, kind.as_str(), &owner_ref.name, m.uid.as_deref(), 50).await?;
    let repairs: Vec<_> =
        repairs.into_iter().filter(|e| e.reason.as_deref() == Some("SecretRepaired")).take(3).collect();
    if !repairs.is_empty() {
        println!("  Repairs (newest first):");
        print_events(&repairs, "    ");
    }
    Ok(Outcome::failed_if(changed))
}

/// `api-key-id (2 bytes), api-secret-key (40 bytes)`: key names and sizes, never a value.
fn describe_data(secret: &Secret) -> String {
    let mut keys: Vec<String> =
        secret.data.iter().flatten().map(|(k, v)| format!("{k} ({} bytes)", v.0.len())).collect();
    keys.extend(secret.string_data.iter().flatten().map(|(k, v)| format!("{k} ({} bytes)", v.len())));
    if keys.is_empty() { "(empty)".into() } else { keys.join(", ") }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    #[test]
    fn data_is_described_by_key_names_and_sizes_only() {
        let secret = Secret {
            data: Some(BTreeMap::from([
                ("api-secret-key".to_owned(), ByteString(b"2:s3cr3t-value".to_vec())),
                ("endpoint".to_owned(), ByteString(b"https://x".to_vec())),
            ])),
            ..Default::default()
        };
        let text = describe_data(&secret);
        assert_eq!(text, "api-secret-key (14 bytes), endpoint (9 bytes)");
        assert!(!text.contains("s3cr3t"));
        assert_eq!(describe_data(&Secret::default()), "(empty)");
    }
}
