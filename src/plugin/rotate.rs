//! `rotate`: asks the operator for a rotation through the `workloadkeys.io/rotate` annotation and, with `--wait`,
//! follows it to the new key.

use std::time::Duration;

use clap::Args;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};

use super::{Error, Kind, Outcome, Resource, Target, describe_ready, events_of, find_resource, kube_call};
use crate::api::{ANNOTATION_ROTATE, parse_duration};

/// The reason of the Event the operator records when a request comes within a minute of the last one.
const ROTATION_DEFERRED: &str = "RotationDeferred";

#[derive(Args, Debug)]
pub struct RotateArgs {
    /// The resource to rotate.
    pub name: String,
    /// Its kind (WorkloadApiKey or wak, SecureWorkloadCredential or swc) when both kinds have one by that name.
    #[arg(long)]
    pub kind: Option<Kind>,
    /// Wait until the operator has rotated: Ready again with a new key; prints the new key ID.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, e.g. 90s, 5m, 1h.
    #[arg(long, default_value = "5m", value_parser = parse_duration, requires = "wait")]
    pub timeout: Duration,
}

/// What tells one key from the next: every field a rotation changes.
#[derive(Debug, PartialEq, Eq)]
struct KeyMark {
    key_id: Option<String>,
    generation: Option<i64>,
    last_rotated_at: Option<Timestamp>,
}

fn mark(r: &Resource) -> KeyMark {
    match r {
        Resource::Wak(o) => {
            let s = o.status.as_deref();
            KeyMark {
                key_id: r.key_id(),
                generation: s.and_then(|s| s.key_generation),
                last_rotated_at: s.and_then(|s| s.last_rotated_at.as_ref().map(|t| t.0)),
            }
        }
        Resource::Swc(o) => KeyMark {
            key_id: r.key_id(),
            generation: None,
            last_rotated_at: o.status.as_deref().and_then(|s| s.last_rotated_at.as_ref().map(|t| t.0)),
        },
    }
}

/// The annotation value the operator last acted upon.
fn acted_upon(r: &Resource) -> Option<&str> {
    match r {
        Resource::Wak(o) => o.status.as_deref()?.rotate_annotation.as_deref(),
        Resource::Swc(o) => o.status.as_deref()?.rotate_annotation.as_deref(),
    }
}

pub async fn run(target: &Target, args: RotateArgs) -> Result<Outcome, Error> {
    let before = find_resource(target, &args.name, args.kind).await?;
    let what = before.display();
    if let Resource::Swc(o) = &before
        && o.spec.source.provision.is_none()
    {
        return Err(Error::Usage(format!(
            "{what} imports its key pair (spec.source.existing): the operator cannot rotate it. Make a new pair in \
             the Secure Workload UI and put it in Secret {}",
            o.spec.source.existing.as_ref().map_or("?", |e| e.secret_ref.name.as_str())
        )));
    }
    let old = mark(&before);
    let requested_at = Timestamp::now();
    let value = requested_at.to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_ROTATE: value}}});
    let params = PatchParams::default();
    let ns = &target.namespace;
    match before.kind() {
        Kind::WorkloadApiKey => target.waks(ns).patch(&args.name, &params, &Patch::Merge(&patch)).await.map(drop),
        Kind::SecureWorkloadCredential => {
            target.swcs(ns).patch(&args.name, &params, &Patch::Merge(&patch)).await.map(drop)
        }
    }
    .map_err(kube_call("annotate", &what))?;
    println!("rotation requested: {what} annotated {ANNOTATION_ROTATE}={value}");
    if !args.wait {
        return Ok(Outcome::Ok);
    }
    println!("waiting up to {} for the new key (current key ID {})", humantime(args.timeout), show(&old.key_id));
    let deadline = tokio::time::Instant::now() + args.timeout;
    let uid = before.meta().uid.clone();
    // Event times may be whole seconds: an Event of this request is at most a second older than it.
    let since = requested_at.saturating_sub(Duration::from_secs(1)).unwrap_or(requested_at);
    let mut told_deferred = false;
    let mut last_ready = String::new();
    loop {
        let now = find_resource(target, &args.name, Some(before.kind())).await?;
        if now.meta().uid != uid {
            return Err(Error::NotFound(format!("{what} was deleted (or replaced) while waiting")));
        }
        let ready = describe_ready(now.conditions());
        let new = mark(&now);
        if acted_upon(&now) == Some(value.as_str()) && new != old && now.is_ready() {
            println!("rotated: {what} has key ID {} (was {})", show(&new.key_id), show(&old.key_id));
            return Ok(Outcome::Ok);
        }
        if ready != last_ready {
            println!("  Ready: {ready}");
            last_ready = ready;
        }
        if !told_deferred {
            let events = events_of(target, ns, before.kind().as_str(), &args.name, uid.as_deref(), 20).await?;
            let deferred = events.iter().find(|e| {
                e.reason.as_deref() == Some(ROTATION_DEFERRED) && super::event_time(e).is_some_and(|t| t >= since)
            });
            if let Some(e) = deferred {
                println!("  deferred: {}", e.message.as_deref().unwrap_or("").trim());
                told_deferred = true;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let why = if told_deferred {
                " (the request was deferred: at most one rotation on request a minute per resource)"
            } else {
                ""
            };
            println!(
                "not rotated within {}{why}: {what} still has key ID {}; Ready: {last_ready}",
                humantime(args.timeout),
                show(&new.key_id)
            );
            return Ok(Outcome::Failed);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn show(id: &Option<String>) -> &str {
    id.as_deref().unwrap_or("-")
}

fn humantime(d: Duration) -> String {
    super::relative(k8s_openapi::jiff::SignedDuration::try_from(d).unwrap_or(k8s_openapi::jiff::SignedDuration::MAX))
}
