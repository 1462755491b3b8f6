//! SecureWorkloadCredential reconciler: thin, in the shape of the WorkloadApiKey one. The shared
//! [`reconcile`](super::reconcile) frame does the cross-cutting work (finalizer, metrics, error → status);
//! `apply` checks the provider's policy and runs the steps [`plan::next_step`] decides, by mode: [`existing`]
//! imports a pair made in the UI, [`provision`] (**EXPERIMENTAL**) mints them through the UI session API;
//! `cleanup` deletes minted credentials.

mod existing;
pub mod plan;
mod provision;
pub mod source;
pub mod verification;

use std::{future::Future, sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{
    ResourceExt,
    runtime::{controller::Action, finalizer},
};

use plan::{Mode, Observed, Step};

use super::{
    context::{Context, display_name},
    error::Error,
    metrics::Series,
    provider::{
        self, Provider, connect,
        policy::{self, Overlap},
    },
    reconcile::{self, Managed, Pass, patch_status, set_resource_metric, settle, status_of},
    secret, vendor_key,
};
use crate::{
    api::{
        ANNOTATION_ROTATE, DEFAULT_GRACE_PERIOD, ProviderRef, SecretReference, SecretTemplate,
        SecureWorkloadCredential, SecureWorkloadCredentialSpec, SecureWorkloadCredentialStatus,
    },
    clients::{
        VendorError,
        cisco::{self, ApiCredentials, CiscoClient, UiSession},
    },
};

/// Entry point for the controller runtime.
pub async fn reconcile(
    obj: Arc<SecureWorkloadCredential>,
    ctx: Arc<Context>,
) -> Result<Action, finalizer::Error<Error>> {
    reconcile::reconcile(obj, ctx, apply, cleanup).await
}

impl Managed for SecureWorkloadCredential {
    fn target_secret(&self) -> String {
        self.spec.secret.as_ref().and_then(|s| s.name.clone()).unwrap_or_else(|| self.name_any())
    }

    fn referenced_secrets(&self) -> Vec<&str> {
        let source = &self.spec.source;
        [source.existing.as_ref().map(|e| e.secret_ref.name.as_str())].into_iter().flatten().collect()
    }

    fn provider_ref(&self) -> &ProviderRef {
        &self.spec.provider_ref
    }

    fn secret_template(&self) -> Option<&SecretTemplate> {
        self.spec.secret.as_deref()
    }

    fn secret_template_mut(&mut self) -> Option<&mut SecretTemplate> {
        self.spec.secret.as_deref_mut()
    }

    fn rollout_timeout(&self) -> Result<Duration, String> {
        plan::rollout_timeout(&self.spec)
    }

    /// Provision mode mints its first credential; an imported pair makes nothing at the vendor.
    fn first_intent(&self) -> Option<Box<SecureWorkloadCredentialStatus>> {
        self.spec
            .source
            .provision
            .as_ref()
            .map(|_| Box::new(SecureWorkloadCredentialStatus { pending_credential: Some(true), ..Default::default() }))
    }
}

/// The provider's Cisco endpoint (see [`connect`]) and provision mode's sign-in (its `cisco.loginSecretRef`).
struct Connection {
    inner: connect::Connection,
    login: Option<SecretReference>,
}

impl std::ops::Deref for Connection {
    type Target = connect::Connection;
    fn deref(&self) -> &connect::Connection {
        &self.inner
    }
}

async fn connection(provider: &Provider, ctx: &Context) -> Result<Connection, Error> {
    let login = provider.cisco()?.login_secret_ref.clone();
    Ok(Connection { inner: connect::Connection::of(provider, ctx).await?, login })
}

/// Provision mode's credentials are bound to the endpoint that minted them: refuse to act when the provider now
/// points elsewhere.
fn bound_to(obj: &SecureWorkloadCredential, conn: &Connection) -> Result<(), Error> {
    let status = *status_of(obj);
    let has_credentials = status.credential_id.is_some() || !status.retiring_credentials.is_empty();
    match status.endpoint {
        Some(recorded) if has_credentials && recorded != conn.endpoint => Err(Error::EndpointChanged {
            what: format!("credential {}", status.credential_id.as_deref().unwrap_or("?")),
            provider: conn.provider.clone(),
            recorded,
            current: conn.endpoint.clone(),
        }),
        _ => Ok(()),
    }
}

impl Connection {
    fn client(&self, ctx: &Context, pair: &ApiCredentials) -> Result<Arc<CiscoClient>, Error> {
        connect::cisco_client(&self.inner, ctx, pair)
    }

    /// Runs `call` on the provider's signed-in UI session (EXPERIMENTAL), see [`connect::with_ui_session`].
    async fn ui<T, F, Fut>(&self, ctx: &Context, call: F) -> Result<T, Error>
    where
        F: Fn(Arc<UiSession>) -> Fut,
        Fut: Future<Output = Result<T, VendorError>>,
    {
        connect::with_ui_session(&self.inner, ctx, self.login.as_ref(), call).await
    }
}

/// The pair held by a Secret of the resource's namespace (source, or the target in provision mode).
async fn pair_in(ctx: &Context, namespace: &str, name: &str) -> Result<ApiCredentials, Error> {
    let secret = ctx.secret(namespace, name).await?;
    source::credentials_from_data(&secret.data.unwrap_or_default())
        .map_err(|problem| Error::InvalidSecret { name: name.to_owned(), problem })
}

/// The provider's policy on capabilities and, for minted credentials, on how long a replaced one may live and
/// whether one may outlive its resource: refused before any vendor call.
fn within_policy(spec: &SecureWorkloadCredentialSpec, provider: &Provider) -> Result<(), Error> {
    let violation = |problem| Error::PolicyViolation { provider: provider.display(), problem };
    policy::check_capabilities(&provider.policy, &spec.capabilities).map_err(violation)?;
    if spec.source.provision.is_none() {
        return Ok(());
    }
    let rotation = spec.rotation.as_deref();
    let grace = rotation.and_then(|r| r.grace_period.as_deref());
    policy::check_overlap(&provider.policy, Overlap::GracePeriod, grace, DEFAULT_GRACE_PERIOD).map_err(violation)?;
    let rollout_timeout = rotation.and_then(|r| r.rollout_timeout.as_deref());
    let restarts = spec.secret.as_ref().is_some_and(|s| !s.rollout_restart_targets.is_empty());
    policy::check_rollout_timeout(&provider.policy, rollout_timeout, restarts).map_err(violation)?;
    policy::check_deletion_policy(&provider.policy, spec.deletion_policy.unwrap_or_default()).map_err(violation)
}

/// What `apply` checks of a resource against its provider before any vendor call: the mode, the provider's vendor,
/// the policy (capabilities, overlaps, deletion policy, verify interval), the sign-in provision mode needs, the spec's
/// durations and the Secret template. Pure: `kubectl workloadkeys check` runs it to say whether the provider would
/// accept a resource (the provider's readiness and its namespace rule, which need the API server, are the caller's).
pub fn check_against(obj: &SecureWorkloadCredential, provider: &Provider) -> Result<(), Error> {
    admit_spec(obj, provider).map(drop)
}

/// [`check_against`], returning the mode and the verify interval the policy allows (the spec itself is never
/// written). Only the policy's refusals are `PolicyViolation`s.
fn admit_spec(obj: &SecureWorkloadCredential, provider: &Provider) -> Result<(Mode, Option<String>), Error> {
    let mode = plan::mode(&obj.spec).map_err(Error::InvalidSpec)?;
    let login = provider.cisco()?.login_secret_ref.is_some();
    within_policy(&obj.spec, provider)?;
    let requested = obj.spec.verify_interval.as_deref();
    let verify_interval = policy::effective_verify_interval(&provider.policy, requested, plan::DEFAULT_VERIFY_INTERVAL)
        .map_err(|problem| Error::PolicyViolation { provider: provider.display(), problem })?;
    if mode == Mode::Provision && !login {
        return Err(Error::InvalidSpec(format!(
            "provision mode signs in with the provider's spec.cisco.loginSecretRef, and {} has none",
            provider.display()
        )));
    }
    plan::check_spec(&obj.spec).map_err(Error::InvalidSpec)?;
    secret::io::check_template(obj, &secret::template::SECURE_WORKLOAD_CREDENTIAL_VARS)?;
    if mode == Mode::Provision && obj.spec.capabilities.is_empty() {
        return Err(Error::InvalidSpec("provision mode needs at least one capability to mint a key with".into()));
    }
    Ok((mode, verify_interval))
}

async fn apply(obj: Arc<SecureWorkloadCredential>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ctx = ctx.as_ref();
    let mut obj = obj.as_ref().clone();
    let ns = obj.namespace().unwrap_or_default();
    // Everything the provider decides comes before any vendor call: a refusal costs none.
    let provider = match provider::admit(ctx, &ns, &obj.spec.provider_ref).await {
        Err(e @ Error::NamespaceNotAllowed { .. }) => {
            return Err(reconcile::access_lost(ctx, &obj, e, async |p| provision::revoke_all(&obj, ctx, p).await).await);
        }
        admitted => admitted?,
    };
    // A policy the resource no longer meets is lost access too (its keys go if the policy says so).
    let (mode, verify_interval) = match admit_spec(&obj, &provider) {
        Err(e @ Error::PolicyViolation { .. }) => {
            return Err(reconcile::access_lost(ctx, &obj, e, async |p| provision::revoke_all(&obj, ctx, p).await).await);
        }
        admitted => admitted?,
    };
    // Planned with the interval the policy allows.
    obj.spec.verify_interval = verify_interval;
    let conn = connection(&provider, ctx).await?;
    bound_to(&obj, &conn)?;
    reconcile::warn_on_first_reconcile(ctx, &obj, provider.insecure_tls(), "InsecureTLS", reconcile::INSECURE_TLS_NOTE)
        .await;
    reconcile::warn_on_first_reconcile(
        ctx,
        &obj,
        mode == Mode::Provision,
        "Experimental",
        provision::EXPERIMENTAL_NOTE,
    )
    .await;
    let template = secret::template::digest(obj.secret_template().and_then(|t| t.template.as_ref()));
    let source = match &obj.spec.source.existing {
        Some(existing) => Some(existing::read(ctx, &obj, existing, &conn).await?),
        None => None,
    };

    reconcile::run_steps(ctx, &obj, |obj, secret, gate| {
        let (conn, source, template) = (&conn, &source, template.as_deref());
        async move {
            let obj = &obj;
            let status = *status_of(obj);
            let seen = Observed {
                now: Timestamp::now(),
                generation: obj.metadata.generation,
                secret,
                desired_hash: source.as_ref().map(|s| s.hash.as_str()),
                template,
                rotate_annotation: obj.annotations().get(ANNOTATION_ROTATE).map(String::as_str),
                gate,
            };
            let step = plan::next_step(&obj.spec, mode, &status, &seen).map_err(Error::InvalidSpec)?;
            tracing::debug!(resource = %display_name(obj), ?step, "next step");
            Ok(Pass::Record(Box::new(match (step, &source) {
                (Step::Wait(until), _) => {
                    if mode == Mode::Provision {
                        reconcile::tell_rotation_deferred(ctx, obj, plan::rotate_request(&status, &seen)).await;
                    }
                    return Ok(Pass::Done(finish(obj, ctx, mode, status, until).await?));
                }
                (Step::Verify, Some(source)) => {
                    existing::verify_and_publish(obj, ctx, conn, source, status, secret).await?
                }
                (Step::Verify, None) => provision::verify_minted(obj, ctx, conn, status).await?,
                (Step::Republish, Some(source)) => existing::republish(obj, ctx, source, status).await?,
                (Step::Republish, None) => return Err(Error::InvalidSpec("nothing to republish from".into())),
                (Step::Mint { recover, retire }, _) => {
                    let (status, pair) = provision::mint(obj, ctx, conn, status, recover, retire).await?;
                    provision::verify_at_once(obj, ctx, conn, status, &pair).await?
                }
                (Step::StartRotation, _) => {
                    let mut s = status;
                    s.pending_credential = Some(true);
                    let (acted_on, acted_at) = (&mut s.rotate_annotation, &mut s.rotate_annotation_at);
                    vendor_key::record_rotate_request(acted_on, acted_at, seen.rotate_annotation, seen.now);
                    s
                }
                (Step::RevokeRetired(ids), _) => provision::revoke_retired(obj, ctx, conn, status, &ids).await?,
            })))
        }
    })
    .await
}

/// Verifies `pair` (liveness, then one probe per listed capability) and records the outcome in `status`.
/// Network, TLS and rate-limit failures come back as errors; a refused pair is in the result.
async fn verify(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    conn: &Connection,
    pair: &ApiCredentials,
    status: &mut SecureWorkloadCredentialStatus,
) -> Result<cisco::Verification, Error> {
    let wanted = &obj.spec.capabilities;
    let checked = conn.client(ctx, pair)?.verify(wanted).await?;
    verification::record_verification(
        status,
        &checked,
        &pair.key_fingerprint(),
        obj.metadata.generation,
        Timestamp::now(),
    );
    Ok(checked)
}

/// A refused pair: `Verified=False` is recorded now, `Ready=False` by the frame from the returned error.
async fn rejected(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    status: &SecureWorkloadCredentialStatus,
    message: String,
) -> Error {
    if let Err(e) = patch_status(ctx, obj, status).await {
        return e;
    }
    Error::CredentialsRejected(message)
}

/// Records the steady state (`Ready`, or `MissingCapabilities`) and requeues when the next thing is due.
async fn finish(
    obj: &SecureWorkloadCredential,
    ctx: &Context,
    mode: Mode,
    status: SecureWorkloadCredentialStatus,
    until: Timestamp,
) -> Result<Action, Error> {
    let rotate_at = match mode {
        Mode::Provision => plan::next_rotation(&status, plan::rotation_every(&obj.spec).map_err(Error::InvalidSpec)?),
        Mode::Existing => None,
    };
    if let Some(t) = rotate_at {
        set_resource_metric(ctx, obj, Series::Renewal, t.as_second());
    }
    let (ready, reason, message) = verification::readiness(mode, &status, &obj.target_secret(), rotate_at);
    settle(ctx, obj, status, ready, reason, message).await?;
    Ok(reconcile::requeue_at(ctx, obj, Some(until)))
}

/// Finalizer cleanup. An imported pair is never touched at the vendor; minted ones: [`provision::cleanup`].
async fn cleanup(obj: Arc<SecureWorkloadCredential>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconcile::forget_metrics(&ctx, obj.as_ref());
    if obj.spec.source.provision.is_none() {
        return Ok(Action::await_change());
    }
    provision::cleanup(obj, ctx).await
}
