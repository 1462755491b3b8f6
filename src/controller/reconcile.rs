//! The reconcile frame every controller shares: the finalizer and metrics around `apply`/`cleanup`, a failure
//! turned into `Ready=False` (or, for a vendor outage while the current key still works, `Ready=True` with the
//! outage as reason: [`key_still_works`]) + an Event on transition + a backoff requeue, server-side-applied status, and the
//! step loop every kind runs on its target Secret (whose I/O is in `secret::io`).

use std::{future::Future, sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::Namespace, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{GetParams, Patch, PatchParams},
    runtime::{controller::Action, events::EventType, finalizer, reflector::ObjectRef},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

pub use super::managed::{Managed, ManagedStatus, status_of, uid};
use super::{
    context::{Context, display_name},
    error::{Error, backoff, kube_call_on},
    intent,
    metrics::{ErrorLabels, InFlight, NamespaceLabels, ReconcileLabels, Series},
    provider::Provider,
    rollout::{self, Gate, Next},
    secret::{FIELD_MANAGER, SecretState, io as secret},
    vendor_key::RotateRequest,
    versions, wakeups,
};
use crate::api::{
    ANNOTATION_ROTATE, AccessLost, DEFAULT_ROLLOUT_TIMEOUT, FINALIZER,
    conditions::{self, READY, reason},
};
use crate::clients::{ErrorKind, VendorError};

fn kind<K: Managed>() -> String {
    K::kind(&()).into_owned()
}

fn api<K: Managed>(ctx: &Context, obj: &K) -> Api<K> {
    Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default())
}

/// Entry point for the controller runtime: finalizer dispatch and metrics around `apply` and `cleanup`.
/// An `apply` failure is reported by [`report_failure`] and never reaches [`error_policy`].
pub async fn reconcile<K, A, AF, C, CF>(
    obj: Arc<K>,
    ctx: Arc<Context>,
    apply: A,
    cleanup: C,
) -> Result<Action, finalizer::Error<Error>>
where
    K: Managed,
    A: FnOnce(Arc<K>, Arc<Context>) -> AF,
    AF: Future<Output = Result<Action, Error>>,
    C: FnOnce(Arc<K>, Arc<Context>) -> CF,
    CF: Future<Output = Result<Action, Error>>,
{
    let labels = ReconcileLabels { kind: kind::<K>() };
    let namespace = obj.namespace().unwrap_or_default();
    let backlog = backlog_key::<K>(&namespace, obj.provider_ref());
    if ctx.limiters.backlog(&backlog) >= vendor_share(&ctx.settings) {
        ctx.metrics.reconciles_deferred.get_or_create(&labels).inc();
        tracing::debug!(resource = %display_name(obj.as_ref()), "its namespace's share of reconciles waiting for the vendor is taken; later");
        return Ok(Action::requeue(deferral(rand::random())));
    }
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    let _running = InFlight::start(&ctx.metrics, &labels);
    let started = std::time::Instant::now();
    let requester = ctx.limiters.requester(&namespace, &backlog);
    let result = requester
        .run(async {
            let resources = api(&ctx, obj.as_ref());
            // A new resource: our finalizer first, and the work goes on with the object the patch returns.
            let adds_finalizer =
                obj.meta().deletion_timestamp.is_none() && !obj.finalizers().iter().any(|f| f == FINALIZER);
            let obj = if adds_finalizer {
                match add_finalizer(&ctx, &resources, obj.as_ref()).await {
                    Ok(fresh) => Arc::new(fresh),
                    Err(e) => return Err(finalizer::Error::AddFinalizer(e)),
                }
            } else {
                match read_fresh(&ctx, &resources, obj.as_ref()).await {
                    Ok(Some(fresh)) => Arc::new(intent::with_first_intent(&ctx, fresh)),
                    Ok(None) => return Ok(Action::await_change()),
                    Err(e) => return Err(finalizer::Error::ApplyFailed(kube_call_on("get", obj.as_ref())(e))),
                }
            };
            let inner = ctx.clone();
            finalizer(&resources, FINALIZER, obj, move |event| async move {
                match event {
                    finalizer::Event::Apply(o) => {
                        let outcome = apply(o.clone(), inner.clone()).await;
                        Ok(report_failure(o, &inner, outcome).await)
                    }
                    finalizer::Event::Cleanup(o) => cleanup(o, inner).await,
                }
            })
            .await
        })
        .await;
    ctx.metrics.reconcile_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    result
}

/// Adds our finalizer to a resource as the watch cache has it, by a patch that holds only at the cached version (a
/// stale copy gets a conflict, and the newer version's event reconciles it again), and returns the resource as the
/// patch left it: fresh, so the reconcile goes on without reading it (a new resource costs no read), and recorded
/// as our write, so the watch's event of it wakes nobody (`watches::changed_only`).
async fn add_finalizer<K: Managed>(ctx: &Context, api: &Api<K>, cached: &K) -> Result<K, kube::Error> {
    let mut finalizers = cached.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    let mut patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": cached.resource_version()}});
    // A new resource's first intent comes along (`intent`): its first create then writes nothing before it.
    if let Some((key, value)) = intent::first_annotation(ctx, cached) {
        patch["metadata"]["annotations"] = json!({ key: value });
    }
    let uid = cached.uid().unwrap_or_default();
    ctx.written.adding_finalizer(&uid, true);
    let patched = api.patch(&cached.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await;
    if let Ok(patched) = &patched {
        ctx.written.record(&uid, patched.resource_version().as_deref());
    }
    ctx.written.adding_finalizer(&uid, false);
    patched
}

/// How many reconciles of one kind, namespace and provider may have waited for the vendor's budget and still run
/// before more of them are turned away: a quarter of `--max-concurrent-reconciles` (4 of 16).
///
/// The vendor's budget is shared round robin by namespace (`clients::rate`), but a reconcile waiting for it holds
/// one of the runtime's `--max-concurrent-reconciles` slots, and the runtime hands slots out in arrival order:
/// without this bound, one namespace's 1,000 creates would hold every slot while they wait, and another
/// namespace's first key would not even start until nearly all of them were done. A reconcile turned away costs
/// no API or vendor call and frees its slot at once. Reconciles that never wait (the budget has room) never
/// count, so a namespace alone, or one well within the budget, is never slowed.
pub fn vendor_share(settings: &super::context::Settings) -> usize {
    usize::from(settings.max_concurrent_reconciles / 4).max(1)
}

/// What reconciles share a vendor backlog: those of one kind (the runtime's slots are per kind), namespace and
/// provider (a provider is one endpoint: a namespace's flood against one does not hold back its work on another).
fn backlog_key<K: Managed>(namespace: &str, provider: &crate::api::ProviderRef) -> String {
    format!("{}/{namespace}/{}/{}", K::kind(&()), provider.kind.as_str(), provider.name)
}

/// When a reconcile turned away by [`vendor_share`] comes back: 1 to 3 s, spread by `jitter` (0.0..1.0) so the
/// namespace's turned-away reconciles do not all come back at once.
pub fn deferral(jitter: f64) -> Duration {
    Duration::from_secs_f64(1.0 + 2.0 * jitter.clamp(0.0, 1.0))
}

/// The resource to decide on: as the API server has it, never older than the newest version this process knows
/// of, the cached copy's or the one its own last write returned. Not the cached copy itself: under load the
/// watch cache can lag behind our own status writes, and a stale status would create a second key or repair a
/// Secret that is fine (the scale benchmark showed both at 10,000 resources).
///
/// Asked "not older than" that version, the API server answers from its own watch cache instead of a quorum read
/// of etcd (a restart with 10,000 resources makes 10,000 of these reads). Its cache can lag only by what no watch
/// of ours has shown yet, and that is a change by someone else (a spec edit, a deletion), which wakes the resource
/// again once the watch brings it. Without a version, or when the server's cache has not caught up within its
/// wait, a quorum read.
async fn read_fresh<K: Managed>(ctx: &Context, api: &Api<K>, cached: &K) -> Result<Option<K>, kube::Error> {
    let name = cached.name_any();
    let written = cached.uid().and_then(|uid| ctx.written.get(&uid));
    if let Some(at) = versions::newest(versions::version_number(cached.resource_version().as_deref()), written) {
        match api.get_with(&name, &GetParams::at(&at.to_string())).await {
            Ok(fresh) => return Ok(Some(fresh)),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
            Err(e) => tracing::debug!(resource = %name, error = %e, "read at a version failed; quorum read"),
        }
    }
    api.get_opt(&name).await
}

/// What the runtime does with an error that escaped [`reconcile`] (a cleanup failure, a finalizer patch).
pub fn error_policy<K: Managed>(obj: Arc<K>, err: &finalizer::Error<Error>, ctx: Arc<Context>) -> Action {
    let reason = match err {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.reason(),
        _ => reason::KUBERNETES_ERROR,
    };
    ctx.metrics.reconcile_errors.get_or_create(&ErrorLabels { kind: kind::<K>(), reason: reason.into() }).inc();
    tracing::warn!(resource = %display_name(obj.as_ref()), error = %err, "reconcile failed");
    if let finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) = err {
        wait_for_outage(&ctx, obj.as_ref(), e);
    }
    let attempts = obj.status().and_then(|s| s.failed_attempts()).unwrap_or(0) as u32 + 1;
    Action::requeue(backoff(attempts, None, rand::random()))
}

/// A failure because a vendor endpoint was not answering: the resource is retried as soon as the endpoint answers
/// again (`clients::outage`), besides its backoff.
fn wait_for_outage<K: Managed>(ctx: &Context, obj: &K, err: &Error) {
    if let (Error::Vendor(VendorError { kind: ErrorKind::Transient, status: None, .. }), Some(uid)) = (err, obj.uid()) {
        ctx.wakeups::<K>().wait_for_outage(&uid);
    }
}

/// Passes a successful outcome through; a failure becomes `Ready=False` with its reason, an Event on
/// transition, and a backoff requeue.
async fn report_failure<K: Managed>(obj: Arc<K>, ctx: &Context, outcome: Result<Action, Error>) -> Action {
    let created_on_first_intent = obj.uid().is_some_and(|uid| ctx.written.creating_on_first_intent(&uid, false));
    let err = match outcome {
        Ok(action) => {
            if let Some(uid) = obj.uid() {
                ctx.wakeups::<K>().outage_over_for(&uid);
            }
            return action;
        }
        Err(err) => err,
    };
    let reason = err.reason();
    ctx.metrics.reconcile_errors.get_or_create(&ErrorLabels { kind: kind::<K>(), reason: reason.into() }).inc();
    tracing::info!(resource = %display_name(obj.as_ref()), reason, error = %err, "not ready");
    wait_for_outage(ctx, obj.as_ref(), &err);
    // Re-read: `apply` may have recorded progress (e.g. an intent) before failing. Without a fresh copy, write
    // nothing: applying an older status could erase that intent and allow a second create. A first intent the
    // finalizer's patch carried is recorded if the create went ahead on it (a failure before it records none: the
    // next attempt then needs no lookup at the vendor).
    let latest = match read_fresh(ctx, &api(ctx, obj.as_ref()), obj.as_ref()).await {
        Ok(Some(latest)) if created_on_first_intent => intent::with_first_intent(ctx, latest),
        Ok(Some(latest)) => latest,
        _ => {
            let attempts = status_of(obj.as_ref()).failed_attempts().unwrap_or(0).saturating_add(1);
            return Action::requeue(backoff(attempts as u32, err.retry_after(), rand::random()));
        }
    };
    let mut status = status_of(&latest);
    let attempts = status.failed_attempts().unwrap_or(0).saturating_add(1);
    *status.failed_attempts_mut() = Some(attempts);
    let works = key_still_works(&status, latest.meta().generation, &err, Timestamp::now());
    let message = if works { format!("the current key still works; {err}") } else { err.to_string() };
    let changed = conditions::set_condition(
        status.conditions_mut(),
        READY,
        works,
        reason,
        message,
        latest.meta().generation,
        Timestamp::now(),
    );
    if let Err(e) = patch_status(ctx, &latest, &status).await {
        tracing::warn!(error = %e, "could not record failure in status");
    }
    set_ready_metric(ctx, &latest, works);
    if changed {
        ctx.event(&latest, EventType::Warning, reason, "Reconcile", err.to_string()).await;
    }
    Action::requeue(backoff(attempts as u32, err.retry_after(), rand::random()))
}

/// Whether a failed reconcile leaves the resource Ready: the vendor was unavailable or rate-limited (nothing
/// says the key is bad), the resource was Ready for its current spec, and its current key has not expired. A
/// rotation, a retiring key's revocation or a verification that could not reach the vendor then waits without
/// reporting a working key as broken (found by the fault suite: a retiring key's revocation during a vendor
/// partition turned Ready resources False); the condition's reason and message still say what failed.
pub fn key_still_works<S: ManagedStatus>(status: &S, generation: Option<i64>, err: &Error, now: Timestamp) -> bool {
    let unavailable =
        matches!(err, Error::Vendor(VendorError { kind: ErrorKind::Transient | ErrorKind::RateLimited { .. }, .. }));
    let ready = status
        .conditions()
        .iter()
        .any(|c| c.type_ == READY && c.status == "True" && c.observed_generation == generation);
    unavailable && ready && status.current_key_expires_at().is_none_or(|t| t > now)
}

/// Server-side-applies the whole status and returns the updated object.
pub async fn patch_status<K: Managed>(ctx: &Context, obj: &K, status: &impl Serialize) -> Result<K, Error> {
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patched = api(ctx, obj)
        .patch_status(&obj.name_any(), &params, &Patch::Apply(&patch))
        .await
        .map_err(kube_call_on("patch the status of", obj))?;
    if let Some(uid) = patched.uid() {
        ctx.written.record(&uid, patched.resource_version().as_deref());
    }
    Ok(patched)
}

/// Records the steady state: `Ready` (True, or False with `reason` for a state waiting cannot fix), no failed
/// attempts, the generation seen. Patches only when something changed; an Event on a transition.
pub async fn settle<K: Managed>(
    ctx: &Context,
    obj: &K,
    status: impl Into<K::Status>,
    ready: bool,
    reason: &str,
    mut message: String,
) -> Result<(), Error> {
    let mut status = status.into();
    let timeout = obj.rollout_timeout().unwrap_or(DEFAULT_ROLLOUT_TIMEOUT);
    if let Some(waiting) = rollout::waiting_message(status.rollout(), status.retiring(), timeout) {
        message = format!("{message}; {waiting}");
    }
    let changed = conditions::set_condition(
        status.conditions_mut(),
        READY,
        ready,
        reason,
        message.clone(),
        obj.meta().generation,
        Timestamp::now(),
    );
    *status.failed_attempts_mut() = None;
    *status.observed_generation_mut() = obj.meta().generation;
    if Some(&status) != obj.status() {
        patch_status(ctx, obj, &status).await?;
    }
    if changed {
        let type_ = if ready { EventType::Normal } else { EventType::Warning };
        ctx.event(obj, type_, reason, "Reconcile", message).await;
    }
    set_ready_metric(ctx, obj, ready);
    Ok(())
}

/// `status` as the API server keeps it (times to the second): what a step records is compared with what the next
/// pass reads back, so a message built from it must be built from the stored form.
pub fn as_stored<S: Serialize + DeserializeOwned>(status: S) -> S {
    serde_json::to_value(&status).ok().and_then(|v| serde_json::from_value(v).ok()).unwrap_or(status)
}

/// `status` as [`settle`] records a resource Ready with `message`, for a step that has just made it ready (a key
/// created and in its Secret): its status write then says so too, and the next pass's `settle` finds nothing left
/// to write. One status write less per new key; no `Ready` Event either: the step's own (`KeyCreated`) tells.
pub fn ready_in<K: Managed, S: ManagedStatus>(obj: &K, status: &mut S, message: String) {
    let generation = obj.meta().generation;
    conditions::set_condition(
        status.conditions_mut(),
        READY,
        true,
        reason::READY,
        message,
        generation,
        Timestamp::now(),
    );
    *status.failed_attempts_mut() = None;
    *status.observed_generation_mut() = generation;
}

/// What one pass of a kind's step loop did.
pub enum Pass<S> {
    /// A step ran: record this status and decide again.
    Record(S),
    /// At rest (or waiting): the action for the runtime.
    Done(Action),
}

/// How often a resource looks at an incomplete rollout besides the workload watch.
const ROLLOUT_POLL: Duration = Duration::from_secs(5);

/// How many steps one reconcile takes before yielding (e.g. a rotation right after a repair).
const MAX_STEPS: usize = 8;

/// The step loop every kind runs: observe the target Secret (a foreign one stops everything with
/// `SecretConflict`), restart the workloads that use it when its data changed ([`rollout_pass`]), let `step`
/// decide and act on the latest object (replaced keys only when `Gate` allows), record the status it returns, and
/// go again.
pub async fn run_steps<K, F, Fut>(ctx: &Context, obj: &K, mut step: F) -> Result<Action, Error>
where
    K: Managed,
    F: FnMut(K, SecretState, Gate) -> Fut,
    Fut: Future<Output = Result<Pass<K::Status>, Error>>,
{
    let mut obj = obj.clone();
    // The Secret a step of this reconcile wrote (name, hash): intact without reading it back. An edit right after
    // our write is seen by the owned-Secret watch, which reconciles again.
    let mut just_written: Option<(String, String)> = None;
    for _ in 0..MAX_STEPS {
        let status = status_of(&obj);
        let (name, hash) = status.written_secret();
        let observed = match (&just_written, name, hash) {
            (Some((n, h)), Some(name), Some(hash)) if n == name && h == hash => {
                secret::Observed { state: SecretState::Intact, version: None }
            }
            _ => secret::observe(ctx, &obj, name, hash, status.secret_version()).await?,
        };
        let state = observed.state;
        if state == SecretState::Foreign {
            return Err(Error::SecretConflict { name: obj.target_secret() });
        }
        // Read and intact at a version not recorded yet (a change of its metadata only, or a status from before
        // versions were recorded): recorded, so that the next look needs no read.
        if let Some(version) = observed.version.filter(|v| status.secret_version() != Some(v.as_str())) {
            let mut recorded = status.clone();
            *recorded.secret_version_mut() = Some(version);
            obj = patch_status(ctx, &obj, &recorded).await?;
        }
        if let Some(status) = rollout_pass(ctx, &obj, state).await? {
            obj = patch_status(ctx, &obj, &status).await?;
            continue;
        }
        let timeout = obj.rollout_timeout().map_err(Error::InvalidSpec)?;
        let gate = Gate::of(obj.rollout_targets(), hash, status.rollout(), timeout);
        match step(obj.clone(), state, gate).await? {
            // A rollout in progress: the workload watch wakes us as it progresses; this short requeue is the safety
            // net for a change missed while this very reconcile ran (the gate keeps every revocation until then).
            Pass::Done(_) if status_of(&obj).rollout().is_some_and(|r| !r.complete) => {
                return Ok(Action::requeue(ROLLOUT_POLL));
            }
            Pass::Done(action) => return Ok(action),
            Pass::Record(new) => {
                if let (Some(n), Some(h)) = new.written_secret()
                    && new.written_secret() != (name, hash)
                {
                    just_written = Some((n.to_owned(), h.to_owned()));
                }
                obj = patch_status(ctx, &obj, &new).await?;
            }
        }
    }
    // Still busy after several steps: continue promptly.
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// The restarts and rollouts that follow a change of the target Secret's data ([`rollout::next`]); returns the
/// status to record when something was done or learnt. Kubernetes calls only, never a vendor one.
async fn rollout_pass<K: Managed>(ctx: &Context, obj: &K, state: SecretState) -> Result<Option<K::Status>, Error> {
    let mut status = status_of(obj);
    // The annotation keeps sub-second precision (status shows whole seconds): two restarts within one second
    // must still change the pod template.
    let now = Timestamp::now();
    let ns = obj.namespace().unwrap_or_default();
    let next = rollout::next(obj.rollout_targets(), status.written_secret().1, state, status.rollout(), now);
    let record = match next {
        Next::Idle => return Ok(None),
        Next::Record(record) => record,
        Next::Restart(target) => {
            let found = rollout::io::restart(ctx, &ns, &target, now).await?;
            let mut record = status.rollout().cloned().unwrap_or_default();
            if let Some(entry) = record.targets.iter_mut().find(|t| t.target() == target) {
                entry.restarted_at = found.then_some(Time(now));
                entry.not_found = !found;
                entry.complete = !found;
            }
            let secret = obj.target_secret();
            if found {
                let note = format!("restarted {target} because the data of Secret {secret} changed");
                ctx.event(obj, EventType::Normal, "RolloutRestarted", "Restart", note).await;
            } else {
                let note = format!(
                    "{target} named in spec.secret.rolloutRestartTargets does not exist; replaced keys go after \
                     gracePeriod without waiting for it"
                );
                ctx.event(obj, EventType::Warning, "RolloutTargetNotFound", "Restart", note).await;
            }
            record
        }
        Next::Observe => {
            let Some(recorded) = status.rollout().cloned() else { return Ok(None) };
            let mut seen = Vec::with_capacity(recorded.targets.len());
            for t in &recorded.targets {
                seen.push(rollout::io::observe(ctx, &ns, &t.target()).await?);
            }
            let timeout = obj.rollout_timeout().map_err(Error::InvalidSpec)?;
            let (record, late) = rollout::observed(&recorded, &seen, timeout, now);
            if !late.is_empty() {
                let labels = NamespaceLabels { kind: kind::<K>(), namespace: ns.clone() };
                ctx.metrics.rollouts_incomplete.get_or_create(&labels).inc();
                let note = format!(
                    "rollout not complete after rolloutTimeout ({}): {}; replaced keys are no longer kept for it",
                    humantime(timeout),
                    late.join("; ")
                );
                ctx.event(obj, EventType::Warning, "RolloutIncomplete", "Revoke", note).await;
            }
            if record == recorded {
                return Ok(None);
            }
            record
        }
    };
    *status.rollout_mut() = Some(record);
    Ok(Some(status))
}

fn humantime(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// Requeue exactly when something is due (a little after, so the comparison `<= now` holds); with nothing
/// scheduled, watches bring the resource back on any change and a long safety resync catches the rest. A wake-up
/// [`wakeups::FAR`] or more ahead is kept by the kind's compact heap rather than the runtime's queue.
pub fn requeue_at<K: Managed>(ctx: &Context, obj: &K, until: Option<Timestamp>) -> Action {
    let after = match until {
        Some(t) => {
            Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO)
                + Duration::from_millis(200)
        }
        None => SAFETY_RESYNC,
    };
    if after >= wakeups::FAR
        && let Some(uid) = obj.uid()
    {
        ctx.wakeups::<K>().at(&uid, std::time::SystemTime::now() + after);
        return Action::await_change();
    }
    Action::requeue(after)
}

/// How long a resource at rest with nothing due waits before it is looked at anyway.
const SAFETY_RESYNC: Duration = Duration::from_secs(3600);

/// The note of the `InsecureTLS` Warning Event.
pub const INSECURE_TLS_NOTE: &str = "TLS verification is disabled for this connection";

/// A Warning Event on the first reconcile only (before any `Ready` condition exists), for a lasting choice
/// the user made on purpose (insecure TLS, an experimental mode).
pub async fn warn_on_first_reconcile<K: Managed>(ctx: &Context, obj: &K, when: bool, reason: &str, note: &str) {
    let first = obj.status().is_none_or(|s| conditions::find(s.conditions(), READY).is_none());
    if when && first {
        ctx.event(obj, EventType::Warning, reason, "Configure", note.to_owned()).await;
    }
}

/// The Event of a `workloadkeys.io/rotate` change that came within a minute of the last one acted upon: when it
/// will be (the resource is requeued for then).
pub async fn tell_rotation_deferred<K: Managed>(ctx: &Context, obj: &K, request: RotateRequest) {
    if let Some(at) = request.due() {
        let note = format!(
            "{ANNOTATION_ROTATE} changed within a minute of the last rotation it asked for; one resource rotates on \
             request at most once a minute: rotating at {at:.0}"
        );
        ctx.event(obj, EventType::Normal, "RotationDeferred", "Rotate", note).await;
    }
}

/// Sets one per-resource gauge of `obj`.
pub fn set_resource_metric<K: Managed>(ctx: &Context, obj: &K, series: Series, value: i64) {
    let namespace = obj.meta().namespace.as_deref().unwrap_or_default();
    ctx.metrics.resources.set(&K::kind(&()), namespace, obj.meta().name.as_deref().unwrap_or_default(), series, value);
}

pub fn set_ready_metric<K: Managed>(ctx: &Context, obj: &K, ready: bool) {
    set_resource_metric(ctx, obj, Series::Ready, i64::from(ready));
}

/// What a kind revoked at the vendor for a resource that lost access: the key IDs, and the status to record, which
/// knows no key any more.
pub struct Revoked<S> {
    pub ids: Vec<String>,
    pub status: S,
}

/// The resource lost access to its provider (`lost`: its namespace is no longer allowed, or its spec no longer
/// within the policy). With the provider's `policy.onAccessLost: Revoke`, `revoke` revokes every key the resource
/// has at the vendor; then the Secret it wrote is deleted, the status `revoke` made is recorded and an Event names
/// the revoked keys, before `lost` is reported. A failure on the way is reported instead (and retried); with `Keep`
/// nothing is done.
pub async fn access_lost<K, F>(ctx: &Context, obj: &K, lost: Error, revoke: F) -> Error
where
    K: Managed,
    F: AsyncFnOnce(&Provider) -> Result<Revoked<K::Status>, Error>,
{
    match offboard(ctx, obj, &lost, revoke).await {
        Ok(()) => lost,
        Err(e) => e,
    }
}

async fn offboard<K, F>(ctx: &Context, obj: &K, lost: &Error, revoke: F) -> Result<(), Error>
where
    K: Managed,
    F: AsyncFnOnce(&Provider) -> Result<Revoked<K::Status>, Error>,
{
    let provider = super::provider::fetch(ctx, &obj.namespace().unwrap_or_default(), obj.provider_ref()).await?;
    if provider.policy.on_access_lost != Some(AccessLost::Revoke) {
        return Ok(());
    }
    let secret = status_of(obj).written_secret().0.map(str::to_owned);
    let Revoked { ids, status } = revoke(&provider).await?;
    if ids.is_empty() && secret.is_none() {
        return Ok(());
    }
    if let Some(name) = &secret {
        secret::delete_owned(ctx, obj, name).await?;
    }
    patch_status(ctx, obj, &status).await?;
    forget_metrics(ctx, obj);
    let note = format!(
        "access to {} lost ({lost}); policy.onAccessLost Revoke: revoked vendor key(s) {ids:?} and deleted Secret {}",
        provider.display(),
        secret.as_deref().unwrap_or("(none)")
    );
    ctx.event(obj, EventType::Warning, "KeysRevoked", "Offboard", note).await;
    Ok(())
}

/// Drops the per-resource metric series of a resource being deleted.
pub fn forget_metrics<K: Managed>(ctx: &Context, obj: &K) {
    ctx.metrics.forget_resource(&kind::<K>(), &obj.namespace().unwrap_or_default(), &obj.name_any());
}

/// Whether the resource's namespace is being deleted (then the credentials a cleanup needs may be gone).
pub async fn namespace_terminating<K: Managed>(ctx: &Context, obj: &K) -> bool {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api.get_opt(&obj.namespace().unwrap_or_default()).await {
        Ok(Some(ns)) => ns.metadata.deletion_timestamp.is_some(),
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Which resources a Secret concerns: the one that owns it, those that reference it, and those whose target
/// it is (a foreign Secret removed clears a conflict).
pub fn affected_by_secret<K: Managed>(
    secret_ns: &str,
    secret_name: &str,
    owner_uids: &[String],
    resources: &[Arc<K>],
) -> Vec<ObjectRef<K>> {
    resources
        .iter()
        .filter(|r| r.namespace().as_deref() == Some(secret_ns))
        .filter(|r| {
            r.uid().is_some_and(|u| owner_uids.contains(&u))
                || r.referenced_secrets().contains(&secret_name)
                || r.target_secret() == secret_name
        })
        .map(|r| super::queue_key(r.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ProviderKind, ProviderRef, SecureWorkloadCredential, WorkloadApiKey};

    #[test]
    fn a_vendor_outage_leaves_a_working_key_ready() {
        use crate::{
            api::WorkloadApiKeyStatus,
            clients::{ErrorKind, VendorError},
        };
        let now = Timestamp::now();
        let ready_at = |generation: i64, expires: Option<Timestamp>| {
            let mut s = WorkloadApiKeyStatus::default();
            conditions::set_condition(&mut s.conditions, READY, true, reason::READY, "", Some(generation), now);
            s.expires_at = expires.map(Time);
            s
        };
        let vendor = |kind| Error::Vendor(VendorError::new(kind, "delete API key", None, "connection refused"));
        let later = now + k8s_openapi::jiff::SignedDuration::from_hours(1);
        let earlier = now - k8s_openapi::jiff::SignedDuration::from_hours(1);
        assert!(key_still_works(&ready_at(3, Some(later)), Some(3), &vendor(ErrorKind::Transient), now));
        assert!(key_still_works(
            &ready_at(3, None),
            Some(3),
            &vendor(ErrorKind::RateLimited { retry_after: None }),
            now
        ));
        assert!(!key_still_works(&ready_at(3, Some(earlier)), Some(3), &vendor(ErrorKind::Transient), now), "expired");
        assert!(!key_still_works(&ready_at(3, None), Some(3), &vendor(ErrorKind::Unauthorized), now), "refused key");
        assert!(!key_still_works(&ready_at(2, None), Some(3), &vendor(ErrorKind::Transient), now), "older spec");
        let never_ready = WorkloadApiKeyStatus::default();
        assert!(!key_still_works(&never_ready, Some(1), &vendor(ErrorKind::Transient), now), "no key yet");
        let kube = Error::InvalidSpec("x".into());
        assert!(!key_still_works(&ready_at(3, None), Some(3), &kube, now), "not the vendor");
    }

    #[test]
    fn a_namespace_may_hold_a_quarter_of_the_slots_waiting_for_the_vendor() {
        let with = |n| super::super::context::Settings { max_concurrent_reconciles: n, ..Default::default() };
        assert_eq!(vendor_share(&with(16)), 4);
        assert_eq!(vendor_share(&with(2)), 1, "at least one");
        assert_eq!(vendor_share(&with(1)), 1);
        assert_eq!(deferral(0.0), Duration::from_secs(1));
        assert_eq!(deferral(1.0), Duration::from_secs(3));
        assert_eq!(deferral(7.0), Duration::from_secs(3), "jitter is clamped");
    }

    #[test]
    fn backlogs_are_per_kind_namespace_and_provider() {
        let p = |kind, name: &str| ProviderRef { kind, name: name.into() };
        let a = backlog_key::<WorkloadApiKey>("a", &p(ProviderKind::ClusterKeyProvider, "dsm"));
        assert_eq!(a, "WorkloadApiKey/a/ClusterKeyProvider/dsm");
        assert_ne!(a, backlog_key::<WorkloadApiKey>("b", &p(ProviderKind::ClusterKeyProvider, "dsm")));
        assert_ne!(a, backlog_key::<WorkloadApiKey>("a", &p(ProviderKind::KeyProvider, "dsm")));
        assert_ne!(a, backlog_key::<SecureWorkloadCredential>("a", &p(ProviderKind::ClusterKeyProvider, "dsm")));
    }
}
