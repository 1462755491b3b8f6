//! `check -f FILE`: whether the provider would accept the resources of a manifest, before they are applied. The API
//! server judges the manifest (a dry-run apply: schema, CEL rules, admission policies); the provider's rules are then
//! evaluated here with the operator's own code (`check_against` of each kind, `Provider::allows`), so the answer is
//! the one the operator would give, without a vendor call.

use std::{collections::BTreeMap, io::Read, path::PathBuf};

use clap::Args;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, ValidationDirective},
};
use serde::Deserialize;

use super::{Error, Kind, Outcome, Resource, Target, kube_call};
use crate::{
    api::{API_GROUP, ClusterKeyProvider, KeyProvider, ProviderKind, ProviderRef},
    controller::{provider::Provider, secure_workload_credential, workload_api_key},
};

/// A manifest larger than this is refused unread (a resource is a few KiB).
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
const FIELD_MANAGER: &str = "kubectl-workloadkeys-check";

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A YAML (or JSON) manifest of WorkloadApiKeys and SecureWorkloadCredentials, `---`-separated; `-` reads
    /// stdin. A resource without metadata.namespace is checked in -n (or the context's namespace).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
}

pub async fn run(target: &Target, args: CheckArgs) -> Result<Outcome, Error> {
    let path = args.file.display().to_string();
    let text = read_manifest(&args.file).map_err(|problem| Error::File { path: path.clone(), problem })?;
    let docs = parse(&text).map_err(|problem| Error::File { path: path.clone(), problem })?;
    if docs.is_empty() {
        return Err(Error::File { path, problem: "no resource in the manifest".into() });
    }
    let mut refused = false;
    for doc in docs {
        let (kind, name) = identify(&doc).map_err(|problem| Error::File { path: path.clone(), problem })?;
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or(&target.namespace).to_owned();
        let what = format!("{kind} {ns}/{name}");
        let reasons = check_one(target, kind, &ns, &name, doc).await?;
        if reasons.is_empty() {
            println!("{what}: accepted");
        } else {
            refused = true;
            println!("{what}: refused");
            for r in reasons {
                println!("  - {r}");
            }
        }
    }
    Ok(Outcome::failed_if(refused))
}

fn read_manifest(path: &std::path::Path) -> Result<String, String> {
    let mut text = String::new();
    let reader: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).map_err(|e| e.to_string())?)
    };
    let read = reader.take(MAX_MANIFEST_BYTES + 1).read_to_string(&mut text).map_err(|e| e.to_string())?;
    if read as u64 > MAX_MANIFEST_BYTES {
        return Err(format!("larger than {MAX_MANIFEST_BYTES} bytes"));
    }
    Ok(text)
}

/// The documents of a multi-document YAML stream, empty ones skipped.
fn parse(text: &str) -> Result<Vec<serde_json::Value>, String> {
    let mut docs = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(doc).map_err(|e| format!("document {}: {e}", i + 1))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The kind and name of a document, which must be one of the operator's resources.
fn identify(doc: &serde_json::Value) -> Result<(Kind, String), String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or("");
    let kind_text = doc["kind"].as_str().unwrap_or("");
    let kind = Kind::of(kind_text).filter(|_| api_version.split('/').next() == Some(API_GROUP)).ok_or_else(|| {
        format!(
            "{} {:?}: only {API_GROUP} WorkloadApiKey and SecureWorkloadCredential are checked",
            if api_version.is_empty() { "(no apiVersion)" } else { api_version },
            kind_text
        )
    })?;
    let name = doc["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("a {kind} without metadata.name"))?;
    Ok((kind, name.to_owned()))
}

/// The reasons the resource would be refused; none when accepted.
async fn check_one(
    target: &Target,
    kind: Kind,
    ns: &str,
    name: &str,
    mut doc: serde_json::Value,
) -> Result<Vec<String>, Error> {
    let what = format!("{kind} {ns}/{name}");
    doc["metadata"]["namespace"] = serde_json::Value::String(ns.to_owned());
    // The API server first: what it refuses never reaches the operator.
    let version = doc["apiVersion"].as_str().and_then(|v| v.split_once('/')).map_or("v1alpha1", |(_, v)| v).to_owned();
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(API_GROUP, &version, kind.as_str()));
    let api: Api<DynamicObject> = Api::namespaced_with(target.client.clone(), ns, &resource);
    let object: DynamicObject =
        serde_json::from_value(doc.clone()).map_err(|e| Error::File { path: what.clone(), problem: e.to_string() })?;
    let params = PatchParams {
        dry_run: true,
        force: true,
        field_manager: Some(FIELD_MANAGER.into()),
        field_validation: Some(ValidationDirective::Strict),
    };
    let stored = match api.patch(name, &params, &Patch::Apply(&object)).await {
        Ok(stored) => stored,
        Err(kube::Error::Api(e)) if refusal(&e) => {
            return Ok(vec![format!("the API server refuses it: {}", e.message)]);
        }
        Err(e) => return Err(kube_call("dry-run apply", &what)(e)),
    };
    // Then the provider, judging the object as it would be stored (defaults applied, merged with an existing one's
    // fields), which is what the operator would read.
    let doc = serde_json::to_value(stored).map_err(|e| Error::File { path: what.clone(), problem: e.to_string() })?;
    let bad = |e: serde_json::Error| Error::File { path: what.clone(), problem: e.to_string() };
    let resource = match kind {
        Kind::WorkloadApiKey => Resource::Wak(Box::new(serde_json::from_value(doc).map_err(bad)?)),
        Kind::SecureWorkloadCredential => Resource::Swc(Box::new(serde_json::from_value(doc).map_err(bad)?)),
    };
    let provider_ref = match &resource {
        Resource::Wak(o) => o.spec.provider_ref.clone(),
        Resource::Swc(o) => o.spec.provider_ref.clone(),
    };
    let named = format!("{}/{}", provider_ref.kind.as_str(), provider_ref.name);
    let provider = match provider(target, ns, &provider_ref).await? {
        Found::Yes(p) => p,
        Found::No => {
            let place = if provider_ref.kind == ProviderKind::KeyProvider {
                format!(" in namespace {ns}")
            } else {
                String::new()
            };
            return Ok(vec![format!("{named} not found{place}")]);
        }
        // App teams bound to `edit` in a namespace cannot read ClusterKeyProviders; the chart's admission policies,
        // which the dry run ran, apply the same policy checks when installed.
        Found::Unreadable => {
            println!(
                "note: {named} is not readable with these credentials: its namespace rule and policy were not \
                 checked here (the chart's admission policies check them at admission when installed)"
            );
            return Ok(Vec::new());
        }
    };
    let mut reasons = Vec::new();
    if provider.kind == ProviderKind::ClusterKeyProvider {
        match namespace_labels(target, ns).await? {
            Some(labels) => {
                if let Err(e) = provider.allows(ns, &labels) {
                    reasons.push(e.to_string());
                }
            }
            // Allowed by name needs no labels; a selector does, and those credentials cannot read them.
            None => {
                if provider.allows(ns, &BTreeMap::new()).is_err() {
                    println!(
                        "note: Namespace {ns} is not readable with these credentials: whether {} allows it by its \
                         labels was not checked",
                        provider.display()
                    );
                }
            }
        }
    }
    let verdict = match &resource {
        Resource::Wak(o) => workload_api_key::check_against(o, &provider),
        Resource::Swc(o) => secure_workload_credential::check_against(o, &provider),
    };
    if let Err(e) = verdict {
        reasons.push(e.to_string());
    }
    if reasons.is_empty()
        && let Err(why) = provider.readiness()
    {
        // Not a refusal: the resource is accepted and waits (Ready=False, ProviderNotReady) until the provider is.
        println!("note: {} is not ready ({why}); {what} would wait for it", provider.display());
    }
    Ok(reasons)
}

/// An answer of the API server that refuses the object rather than the request: invalid (422: schema, CEL), bad
/// request (400, e.g. an unknown field under strict validation), denied by admission (403 naming a denial, not RBAC).
fn refusal(status: &kube::core::Status) -> bool {
    match status.code {
        400 | 422 => true,
        403 => status.message.contains("denied request") || status.message.contains("admission webhook"),
        _ => false,
    }
}

/// Whether a provider could be read.
enum Found {
    Yes(Box<Provider>),
    No,
    /// Forbidden to these credentials.
    Unreadable,
}

async fn provider(target: &Target, ns: &str, r: &ProviderRef) -> Result<Found, Error> {
    let what = format!("{}/{}", r.kind.as_str(), r.name);
    let found = match r.kind {
        ProviderKind::KeyProvider => {
            let api: Api<KeyProvider> = Api::namespaced(target.client.clone(), ns);
            api.get_opt(&r.name).await.map(|p| p.map(|p| Provider::from_namespaced(&p)))
        }
        ProviderKind::ClusterKeyProvider => {
            let api: Api<ClusterKeyProvider> = Api::all(target.client.clone());
            // The cluster-resource namespace only locates the provider's Secrets, which no check here reads.
            api.get_opt(&r.name).await.map(|p| p.map(|p| Provider::from_cluster(&p, "")))
        }
    };
    match found {
        Ok(Some(p)) => Ok(Found::Yes(Box::new(p))),
        Ok(None) => Ok(Found::No),
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(Found::Unreadable),
        Err(e) => Err(kube_call("get", format!("{what} (namespace {ns})"))(e)),
    }
}

/// The namespace's labels; `None` when these credentials may not read it (app teams usually may not).
async fn namespace_labels(target: &Target, ns: &str) -> Result<Option<BTreeMap<String, String>>, Error> {
    let api: Api<Namespace> = Api::all(target.client.clone());
    match api.get_metadata_opt(ns).await {
        Ok(namespace) => Ok(Some(namespace.and_then(|n| n.metadata.labels).unwrap_or_default())),
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(None),
        Err(e) => Err(kube_call("get", format!("Namespace {ns}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str) -> kube::core::Status {
        serde_json::from_value(serde_json::json!({"code": code, "message": message, "reason": "", "status": "Failure"}))
            .unwrap()
    }

    #[test]
    fn refusals_of_the_object_are_told_from_failures_of_the_request() {
        assert!(refusal(&status(422, "spec.expiresAfter must be at least 30s")));
        assert!(refusal(&status(400, "strict decoding error: unknown field \"spec.rol\"")));
        assert!(refusal(&status(
            403,
            "workloadapikeys.workloadkeys.io \"x\" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b' denied \
             request: role not allowed"
        )));
        // RBAC: the request, not the object, is refused (exit 2).
        assert!(!refusal(&status(403, "User \"dev\" cannot patch resource \"workloadapikeys\" in API group")));
        assert!(!refusal(&status(500, "etcdserver: request timed out")));
    }

    #[test]
    fn manifests_split_into_documents_and_only_our_kinds_are_checked() {
        let docs = parse(
            "---\napiVersion: workloadkeys.io/v1alpha1\nkind: WorkloadApiKey\nmetadata: {name: a}\n---\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2, "the empty document is skipped");
        assert_eq!(identify(&docs[0]).unwrap(), (Kind::WorkloadApiKey, "a".to_owned()));
        assert!(identify(&docs[1]).unwrap_err().contains("only workloadkeys.io WorkloadApiKey"));
        let nameless = parse("apiVersion: workloadkeys.io/v1alpha1\nkind: SecureWorkloadCredential\n").unwrap();
        assert!(identify(&nameless[0]).unwrap_err().contains("without metadata.name"));
        assert!(parse("a: [").is_err());
    }
}
