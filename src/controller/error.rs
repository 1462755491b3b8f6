//! Reconcile errors. Each knows its condition reason and whether waiting can fix it.

use std::time::Duration;

use crate::{
    api::conditions::reason,
    clients::{ErrorKind, VendorError},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Secret {name} not found in namespace {namespace}")]
    SecretNotFound { namespace: String, name: String },
    #[error("Secret {name}: {problem}")]
    InvalidSecret { name: String, problem: String },
    #[error("Secret {name} exists and is not managed by this resource; it was left untouched")]
    SecretConflict { name: String },
    #[error("role {name:?} not found at the vendor")]
    RoleNotFound { name: String },
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The vendor refused the key pair itself (unknown key, or a signature it does not accept).
    #[error("{0}")]
    CredentialsRejected(String),
    #[error(transparent)]
    Vendor(#[from] VendorError),
    /// A Kubernetes API call failed: which call, on which object (`Secret ns/name`, `WorkloadApiKey ns/name`, ...).
    #[error("Kubernetes API: {call} {object}: {source}")]
    Kube { call: &'static str, object: String, source: kube::Error },
    #[error("the resource has no {0}")]
    MissingObjectKey(&'static str),
    #[error("{provider} not found")]
    ProviderNotFound { provider: String },
    #[error("{provider} is not ready: {why}")]
    ProviderNotReady { provider: String, why: String },
    #[error("{provider} does not allow namespace {namespace}; it allows {allowed}")]
    NamespaceNotAllowed { provider: String, namespace: String, allowed: String },
    #[error("{provider} refuses this request: {problem}")]
    PolicyViolation { provider: String, problem: String },
    /// The provider now points elsewhere than the endpoint that issued the resource's keys.
    #[error(
        "{what} was issued by {recorded}, but {provider} now points at {current}; the operator never sends a key ID \
         to another endpoint. Point the provider back, or delete and recreate the resource"
    )]
    EndpointChanged { what: String, provider: String, recorded: String, current: String },
    /// `spec.secret.template` does not render; the message holds no secret value.
    #[error(transparent)]
    Template(#[from] crate::controller::secret::template::TemplateError),
}

impl Error {
    /// The `Ready=False` reason shown for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::SecretNotFound { .. } => reason::SECRET_NOT_FOUND,
            Error::InvalidSecret { .. } => reason::INVALID_SECRET,
            Error::SecretConflict { .. } => reason::SECRET_CONFLICT,
            Error::RoleNotFound { .. } => reason::ROLE_NOT_FOUND,
            Error::InvalidSpec(_) | Error::MissingObjectKey(_) => reason::INVALID_SPEC,
            Error::CredentialsRejected(_) => reason::CREDENTIALS_REJECTED,
            Error::Vendor(e) => vendor_reason(&e.kind),
            Error::Kube { .. } => reason::KUBERNETES_ERROR,
            Error::ProviderNotFound { .. } => reason::PROVIDER_NOT_FOUND,
            Error::ProviderNotReady { .. } => reason::PROVIDER_NOT_READY,
            Error::NamespaceNotAllowed { .. } => reason::NAMESPACE_NOT_ALLOWED,
            Error::PolicyViolation { .. } => reason::POLICY_VIOLATION,
            Error::EndpointChanged { .. } => reason::ENDPOINT_CHANGED,
            Error::Template(_) => reason::TEMPLATE_ERROR,
        }
    }

    /// A wait the vendor asked for (429 `Retry-After`), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Vendor(VendorError { kind: ErrorKind::RateLimited { retry_after }, .. }) => *retry_after,
            _ => None,
        }
    }
}

/// Names a failed Kubernetes call for [`Error::Kube`]: the verb and the object (`kind`, in `namespace` unless
/// empty, named `name` unless a list), e.g. `api.get_opt(name).await.map_err(kube_call("get", "Secret", ns, name))?`.
pub fn kube_call<'a>(
    call: &'static str,
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
) -> impl FnOnce(kube::Error) -> Error + 'a {
    move |source| Error::Kube { call, object: object_name(kind, namespace, name), source }
}

/// [`kube_call`] for a call on `obj` itself.
pub fn kube_call_on<'a, K>(call: &'static str, obj: &'a K) -> impl FnOnce(kube::Error) -> Error + 'a
where
    K: kube::Resource<DynamicType = ()>,
{
    move |source| {
        let meta = obj.meta();
        let (ns, name) = (meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or(""));
        Error::Kube { call, object: object_name(&K::kind(&()), ns, name), source }
    }
}

fn object_name(kind: &str, namespace: &str, name: &str) -> String {
    match (namespace, name) {
        ("", "") => format!("{kind} (all namespaces)"),
        (ns, "") => format!("{kind} in namespace {ns}"),
        ("", name) => format!("{kind} {name}"),
        (ns, name) => format!("{kind} {ns}/{name}"),
    }
}

pub fn vendor_reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Unauthorized => reason::UNAUTHORIZED,
        ErrorKind::Forbidden => reason::FORBIDDEN,
        ErrorKind::Tls => reason::TLS_ERROR,
        ErrorKind::RateLimited { .. } => reason::RATE_LIMITED,
        ErrorKind::Transient => reason::VENDOR_UNAVAILABLE,
        ErrorKind::NotFound | ErrorKind::Invalid => reason::VENDOR_ERROR,
    }
}

/// Exponential backoff with jitter between 5 s and 5 min, by consecutive failures; a vendor's `Retry-After`
/// wins when longer. `jitter` is in 0.0..1.0 (random in production, fixed in tests).
pub fn backoff(failed_attempts: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    const MIN: f64 = 5.0;
    const MAX: f64 = 300.0;
    let exp = MIN * 2f64.powi(failed_attempts.saturating_sub(1).min(16) as i32);
    // Full jitter over the upper half keeps retries spread without ever dropping below half the step.
    let secs = (exp * (0.5 + 0.5 * jitter.clamp(0.0, 1.0))).clamp(MIN, MAX);
    let wait = Duration::from_secs_f64(secs);
    match retry_after {
        Some(r) if r > wait => r.min(Duration::from_secs(MAX as u64)),
        _ => wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_errors_name_the_call_and_the_object() {
        let conflict = || {
            let status =
                serde_json::json!({"code": 409, "reason": "Conflict", "message": "the object has been modified"});
            kube::Error::Api(Box::new(serde_json::from_value(status).unwrap()))
        };
        let e = kube_call("apply", "Secret", "team-a", "reporting-key")(conflict());
        assert_eq!(e.reason(), reason::KUBERNETES_ERROR);
        let text = e.to_string();
        assert!(text.starts_with("Kubernetes API: apply Secret team-a/reporting-key: "), "{text}");
        assert!(text.contains("the object has been modified"), "{text}");
        let listed = kube_call("list", "ClusterKeyProvider", "", "")(conflict()).to_string();
        assert!(listed.starts_with("Kubernetes API: list ClusterKeyProvider (all namespaces): "), "{listed}");
        let ns = k8s_openapi::api::core::v1::Namespace {
            metadata: kube::api::ObjectMeta { name: Some("team-b".into()), ..Default::default() },
            ..Default::default()
        };
        let on = kube_call_on("get", &ns)(conflict()).to_string();
        assert!(on.starts_with("Kubernetes API: get Namespace team-b: "), "{on}");
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert_eq!(backoff(1, None, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(2, None, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(3, None, 1.0), Duration::from_secs(20));
        assert_eq!(backoff(30, None, 1.0), Duration::from_secs(300));
        assert_eq!(backoff(1, None, 0.0), Duration::from_secs(5), "never below 5 s");
        assert_eq!(backoff(4, None, 0.0), Duration::from_secs(20));
    }

    #[test]
    fn retry_after_wins_when_longer() {
        assert_eq!(backoff(1, Some(Duration::from_secs(42)), 0.5), Duration::from_secs(42));
        assert_eq!(backoff(6, Some(Duration::from_secs(1)), 1.0), Duration::from_secs(160));
        assert_eq!(backoff(1, Some(Duration::from_secs(9999)), 0.5), Duration::from_secs(300));
    }

    #[test]
    fn reasons_are_specific() {
        let v = |kind| Error::Vendor(VendorError::new(kind, "op", None, ""));
        assert_eq!(v(ErrorKind::Unauthorized).reason(), "Unauthorized");
        assert_eq!(v(ErrorKind::Forbidden).reason(), "Forbidden");
        assert_eq!(v(ErrorKind::Tls).reason(), "TLSError");
        assert_eq!(v(ErrorKind::RateLimited { retry_after: None }).reason(), "RateLimited");
        assert_eq!(v(ErrorKind::Transient).reason(), "VendorUnavailable");
        assert_eq!(Error::RoleNotFound { name: "x".into() }.reason(), "RoleNotFound");
        assert_eq!(Error::SecretConflict { name: "x".into() }.reason(), "SecretConflict");
        assert_eq!(Error::CredentialsRejected("x".into()).reason(), "CredentialsRejected");
    }
}
