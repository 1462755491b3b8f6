//! `status`: what each resource holds and why it is (not) Ready; with `--providers`, the providers.

use clap::Args;
use kube::{Api, ResourceExt, api::ListParams};

use super::{
    Error, Kind, Outcome, Resource, Target, describe_ready, events_of, kube_call, opt_when, print_events,
    ready_is_current,
};
use crate::api::{
    ClusterKeyProvider, IssuePolicy, KeyProvider, KeyProviderStatus, RoleRef, SecretRollout, SecretTemplate,
    SecureWorkloadCredential, WorkloadApiKey,
};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A resource (or, with --providers, a provider) name; all of the namespace when absent.
    pub name: Option<String>,
    /// Only this kind (WorkloadApiKey or wak, SecureWorkloadCredential or swc); default both.
    #[arg(long)]
    pub kind: Option<Kind>,
    /// Show providers instead: the namespace's KeyProviders (every namespace's with -A) and the
    /// ClusterKeyProviders, with who uses them and their policy.
    #[arg(long, conflicts_with = "kind")]
    pub providers: bool,
    /// How many of each object's latest Events to show.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(0..=100))]
    pub events: u16,
}

pub async fn run(target: &Target, args: StatusArgs) -> Result<Outcome, Error> {
    if args.providers {
        return providers(target, &args).await;
    }
    let ns = target.namespace.as_str();
    let mut resources = Vec::new();
    for kind in Kind::selected(args.kind) {
        match &args.name {
            // Every namespace's resources of that name.
            Some(name) if target.all_namespaces => {
                resources
                    .extend(list(target, kind).await?.into_iter().filter(|r| r.meta().name.as_ref() == Some(name)));
            }
            Some(name) => match super::find_resource(target, name, Some(kind)).await {
                Ok(r) => resources.push(r),
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            },
            None => resources.extend(list(target, kind).await?),
        }
    }
    if resources.is_empty() {
        let kinds = Kind::selected(args.kind).into_iter().map(Kind::as_str).collect::<Vec<_>>().join(" or ");
        let place = if target.all_namespaces { "any namespace".to_owned() } else { format!("namespace {ns}") };
        return match &args.name {
            Some(name) => Err(Error::NotFound(format!("no {kinds} named {name} in {place}"))),
            None => {
                println!("No {kinds} found in {place}.");
                Ok(Outcome::Ok)
            }
        };
    }
    let mut not_ready = false;
    for (i, r) in resources.iter().enumerate() {
        if i > 0 {
            println!();
        }
        show(target, r, args.events.into()).await?;
        not_ready |= !r.is_ready();
    }
    Ok(Outcome::failed_if(not_ready))
}

async fn list(target: &Target, kind: Kind) -> Result<Vec<Resource>, Error> {
    let ns = &target.namespace;
    let place = if target.all_namespaces { "all namespaces".to_owned() } else { format!("namespace {ns}") };
    let params = ListParams::default();
    Ok(match kind {
        Kind::WorkloadApiKey => {
            let api: Api<WorkloadApiKey> =
                if target.all_namespaces { Api::all(target.client.clone()) } else { target.waks(ns) };
            let list = api.list(&params).await.map_err(kube_call("list", format!("WorkloadApiKeys in {place}")))?;
            list.items.into_iter().map(|o| Resource::Wak(Box::new(o))).collect()
        }
        Kind::SecureWorkloadCredential => {
            let api: Api<SecureWorkloadCredential> =
                if target.all_namespaces { Api::all(target.client.clone()) } else { target.swcs(ns) };
            let list =
                api.list(&params).await.map_err(kube_call("list", format!("SecureWorkloadCredentials in {place}")))?;
            list.items.into_iter().map(|o| Resource::Swc(Box::new(o))).collect()
        }
    })
}

/// Prints one resource: a header line, then `Field: value` lines.
async fn show(target: &Target, r: &Resource, events: usize) -> Result<(), Error> {
    println!("{}", r.display());
    let line = |field: &str, value: &str| println!("  {:<17} {value}", format!("{field}:"));
    match r {
        Resource::Wak(o) => {
            let s = o.status.as_deref().cloned().unwrap_or_default();
            line("Provider", &format!("{}/{}", o.spec.provider_ref.kind.as_str(), o.spec.provider_ref.name));
            line("Ready", &describe_ready(&s.conditions));
            line("Key ID", &s.key_id.map_or_else(|| "-".into(), |k| k.to_string()));
            line("Key name", s.key_name.as_deref().unwrap_or("-"));
            line("Role", &wak_role(&o.spec.role, s.role.as_deref(), s.role_id));
            line("Expires", &opt_when(s.expires_at.as_ref()));
            line("Next renewal", &opt_when(s.renew_at.as_ref()));
            line("Last rotated", &opt_when(s.last_rotated_at.as_ref()));
            for k in &s.retiring_keys {
                line("Retiring key", &format!("{} revoked at {}", k.key_id, super::when(&k.revoke_at)));
            }
            secret_lines(&line, s.secret_name.as_deref(), o.spec.secret.as_deref(), s.rollout.as_ref());
        }
        Resource::Swc(o) => {
            let s = o.status.as_deref().cloned().unwrap_or_default();
            let mode = if o.spec.source.provision.is_some() { "provision (minted)" } else { "existing (imported)" };
            line("Provider", &format!("{}/{}", o.spec.provider_ref.kind.as_str(), o.spec.provider_ref.name));
            line("Ready", &describe_ready(&s.conditions));
            if let Some(v) = crate::api::conditions::find(&s.conditions, crate::api::conditions::VERIFIED) {
                line("Verified", &format!("{} ({}) at {}", v.status, v.reason, opt_when(s.last_verified_at.as_ref())));
            }
            line("Mode", mode);
            line("Credential ID", s.credential_id.as_deref().unwrap_or("-"));
            line("Fingerprint", s.api_key_fingerprint.as_deref().unwrap_or("-"));
            let caps = |c: &[crate::api::Capability]| c.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ");
            line("Role", &format!("capabilities {}", or_dash(&caps(&o.spec.capabilities))));
            if !s.missing_capabilities.is_empty() {
                line("Missing", &caps(&s.missing_capabilities));
            }
            let every = o.spec.rotation.as_ref().and_then(|r| crate::api::parse_duration(&r.every).ok());
            let next = s.credential_created_at.as_ref().zip(every).and_then(|(t, every)| {
                let every = k8s_openapi::jiff::SignedDuration::try_from(every).ok()?;
                t.0.checked_add(every).ok().map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
            });
            line("Next renewal", &opt_when(next.as_ref()));
            line("Last rotated", &opt_when(s.last_rotated_at.as_ref()));
            for c in &s.retiring_credentials {
                line("Retiring", &format!("{} deleted at {}", c.credential_id, super::when(&c.revoke_at)));
            }
            secret_lines(&line, s.secret_name.as_deref(), o.spec.secret.as_deref(), s.rollout.as_ref());
        }
    }
    let m = r.meta();
    let (ns, name) = (m.namespace.as_deref().unwrap_or(""), m.name.as_deref().unwrap_or(""));
    if events > 0 {
        println!("  Events (newest first):");
        let list = events_of(target, ns, r.kind().as_str(), name, m.uid.as_deref(), events).await?;
        print_events(&list, "    ");
    }
    Ok(())
}

/// `Auditor (ID 2)`: what the spec asks for, and what the current key got when the status says.
fn wak_role(asked: &RoleRef, status_role: Option<&str>, status_id: Option<i64>) -> String {
    let asked = match (&asked.name, asked.id) {
        (Some(name), _) => name.clone(),
        (None, Some(id)) => format!("ID {id}"),
        (None, None) => "-".into(),
    };
    match (status_role, status_id) {
        (_, Some(id)) => format!("{asked} (ID {id})"),
        (Some(role), None) if role != asked => format!("{asked} ({role})"),
        _ => asked,
    }
}

fn secret_lines(
    line: &impl Fn(&str, &str),
    written: Option<&str>,
    template: Option<&SecretTemplate>,
    rollout: Option<&SecretRollout>,
) {
    line("Secret", written.unwrap_or("- (not written yet)"));
    let targets = template.map(|t| t.rollout_restart_targets.as_slice()).unwrap_or_default();
    if targets.is_empty() {
        line("Restart targets", "-");
    }
    for t in targets {
        let state = rollout.and_then(|r| r.targets.iter().find(|x| x.kind == t.kind && x.name == t.name)).map(|x| {
            if x.not_found {
                "not found".to_owned()
            } else if x.complete {
                format!("rolled out (restarted {})", opt_when(x.restarted_at.as_ref()))
            } else if let Some(w) = &x.waiting_for {
                format!("rolling out: waiting for {w}")
            } else {
                "restarted, rolling out".to_owned()
            }
        });
        line("Restart target", &format!("{t}: {}", state.as_deref().unwrap_or("not restarted (no data change yet)")));
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// `status --providers [NAME]`.
async fn providers(target: &Target, args: &StatusArgs) -> Result<Outcome, Error> {
    let ns = target.namespace.as_str();
    let place = if target.all_namespaces { "all namespaces".to_owned() } else { format!("namespace {ns}") };
    let namespaced: Api<KeyProvider> = if target.all_namespaces {
        Api::all(target.client.clone())
    } else {
        Api::namespaced(target.client.clone(), ns)
    };
    let cluster: Api<ClusterKeyProvider> = Api::all(target.client.clone());
    let mut kps = namespaced
        .list(&ListParams::default())
        .await
        .map_err(kube_call("list", format!("KeyProviders in {place}")))?
        .items;
    // In a namespace, app teams read KeyProviders; ClusterKeyProviders need `view` bound cluster-wide.
    let mut ckps = match cluster.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(e)) if e.code == 403 => {
            println!("(ClusterKeyProviders not shown: your credentials may not list them)");
            Vec::new()
        }
        Err(e) => return Err(kube_call("list", "ClusterKeyProviders")(e)),
    };
    if let Some(name) = &args.name {
        kps.retain(|p| &p.name_any() == name);
        ckps.retain(|p| &p.name_any() == name);
        if kps.is_empty() && ckps.is_empty() {
            return Err(Error::NotFound(format!(
                "no KeyProvider named {name} in {place} and no ClusterKeyProvider {name}"
            )));
        }
    }
    if kps.is_empty() && ckps.is_empty() {
        println!("No KeyProvider in {place} and no ClusterKeyProvider.");
        return Ok(Outcome::Ok);
    }
    let mut not_ready = false;
    let mut first = true;
    for p in &kps {
        if !first {
            println!();
        }
        first = false;
        let title = format!("KeyProvider {}/{}", p.namespace().unwrap_or_default(), p.name_any());
        let vendor = p.spec.trend.as_ref().map(|_| "Trend").or(p.spec.cisco.as_ref().map(|_| "Cisco"));
        not_ready |= !show_provider(&title, vendor, p.metadata.generation, p.status.as_ref(), p.spec.policy.as_ref());
        let list = events_of(
            target,
            &p.namespace().unwrap_or_default(),
            "KeyProvider",
            &p.name_any(),
            p.uid().as_deref(),
            args.events.into(),
        )
        .await?;
        if args.events > 0 {
            println!("  Events (newest first):");
            print_events(&list, "    ");
        }
    }
    for p in &ckps {
        if !first {
            println!();
        }
        first = false;
        let title = format!("ClusterKeyProvider {}", p.name_any());
        let vendor = p.spec.trend.as_ref().map(|_| "Trend").or(p.spec.cisco.as_ref().map(|_| "Cisco"));
        not_ready |= !show_provider(&title, vendor, p.metadata.generation, p.status.as_ref(), p.spec.policy.as_ref());
        let allowed = crate::controller::provider::policy::describe_allowed(p.spec.allowed_namespaces.as_ref());
        println!("  {:<17} {allowed}", "Allows:");
    }
    Ok(Outcome::failed_if(not_ready))
}

/// Prints a provider; returns whether it is Ready.
fn show_provider(
    title: &str,
    vendor: Option<&str>,
    generation: Option<i64>,
    status: Option<&KeyProviderStatus>,
    policy: Option<&IssuePolicy>,
) -> bool {
    let s = status.cloned().unwrap_or_default();
    let line = |field: &str, value: &str| println!("  {:<17} {value}", format!("{field}:"));
    println!("{title}");
    line("Vendor", vendor.unwrap_or("-"));
    line("URL", s.url.as_deref().unwrap_or("-"));
    line("Ready", &describe_ready(&s.conditions));
    line("Last checked", &opt_when(s.last_checked_at.as_ref()));
    line("In use by", &format!("{} resource(s)", s.in_use.unwrap_or(0)));
    for u in &s.users {
        println!("    {u}");
    }
    match policy {
        None => line("Policy", "none (anything the admin credential can issue)"),
        Some(p) => {
            line("Policy", "");
            for (field, value) in describe_policy(p) {
                println!("    {field}: {value}");
            }
        }
    }
    ready_is_current(&s.conditions, generation)
}

/// The policy's set fields, as `(field, value)`.
fn describe_policy(p: &IssuePolicy) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(roles) = &p.roles {
        let list: Vec<String> = roles
            .iter()
            .map(|r| match (&r.name, r.id) {
                (Some(n), _) => format!("{n:?}"),
                (None, Some(id)) => format!("ID {id}"),
                _ => "?".into(),
            })
            .collect();
        out.push(("roles", if list.is_empty() { "none".into() } else { list.join(", ") }));
    }
    if let Some(v) = &p.max_expires_after {
        out.push(("maxExpiresAfter", v.clone()));
    }
    if let Some(caps) = &p.capabilities {
        out.push(("capabilities", caps.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")));
    }
    if let Some(v) = &p.max_grace_period {
        out.push(("maxGracePeriod", v.clone()));
    }
    if let Some(v) = &p.max_rollout_timeout {
        out.push(("maxRolloutTimeout", v.clone()));
    }
    if let Some(d) = &p.deletion_policies {
        out.push(("deletionPolicies", d.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>().join(", ")));
    }
    if let Some(a) = &p.on_access_lost {
        out.push(("onAccessLost", format!("{a:?}")));
    }
    if let Some(v) = &p.min_verify_interval {
        out.push(("minVerifyInterval", v.clone()));
    }
    if out.is_empty() {
        out.push(("(empty)", "anything the admin credential can issue".into()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Capability, DeletionPolicy};

    #[test]
    fn the_role_shows_what_was_asked_and_what_the_key_got() {
        let by_name = RoleRef { name: Some("Auditor".into()), id: None };
        assert_eq!(wak_role(&by_name, None, Some(2)), "Auditor (ID 2)");
        assert_eq!(wak_role(&by_name, Some("Auditor"), None), "Auditor");
        assert_eq!(wak_role(&by_name, Some("auditor"), None), "Auditor (auditor)");
        assert_eq!(wak_role(&RoleRef { name: None, id: Some(7) }, None, None), "ID 7");
    }

    #[test]
    fn a_policy_shows_each_rule_it_sets() {
        let policy = IssuePolicy {
            roles: Some(vec![RoleRef { name: Some("Auditor".into()), id: None }, RoleRef { name: None, id: Some(7) }]),
            max_expires_after: Some("720h".into()),
            capabilities: Some(vec![Capability::FlowInventoryQuery]),
            deletion_policies: Some(vec![DeletionPolicy::Delete]),
            ..Default::default()
        };
        assert_eq!(
            describe_policy(&policy),
            vec![
                ("roles", "\"Auditor\", ID 7".to_owned()),
                ("maxExpiresAfter", "720h".to_owned()),
                ("capabilities", "flow_inventory_query".to_owned()),
                ("deletionPolicies", "Delete".to_owned()),
            ]
        );
        assert_eq!(describe_policy(&IssuePolicy::default())[0].0, "(empty)");
    }
}
