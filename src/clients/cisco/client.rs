//! Signed OpenAPI client: every request signed at send time (re-signed on each retry), a client-side
//! rate limit, and retries of idempotent calls on 429/502/503/504 and transport failures.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use reqwest::{Method, header};
use url::{Position, Url};

use super::{
    credentials::ApiCredentials,
    signer::{self, JSON_CONTENT_TYPE, RequestToSign},
};
use crate::clients::{
    ErrorKind, RateLimiter, Redirects, TlsOptions, VendorError, exchange, http_client, parse_retry_after,
    redact::redact,
};

/// Path prefix of the OpenAPI; always at the host root (tetpyclient joins it as an absolute path).
pub const OPENAPI_PREFIX: &str = "/openapi/v1";
/// tetpyclient's default request timeout; used unless [`CiscoClient::with_timeout`] sets another.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Body of the vendor's 403 for a signature it does not accept (recorded on a real tenant, docs/vendor-apis.md §10).
pub const INVALID_REQUEST_BODY: &str = "Invalid request";
/// Body of the vendor's 401 for an `Id` it does not know (recorded on a real tenant, docs/vendor-apis.md §10).
pub const UNKNOWN_CREDENTIALS_BODY: &str = "Unknown credentials";

/// How a refused OpenAPI call reflects on the key pair. Derived from an error of [`CiscoClient`] by
/// [`Rejection::of`] (not meant for errors of the UI session, whose 401 means a lapsed session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// 401 `Unknown credentials`: the API key does not exist (never made, deleted or revoked).
    UnknownKey,
    /// 403 `Invalid request`: the key exists but the signature was refused: a wrong secret, or a
    /// clock more than a few minutes off (the server's tolerance is undocumented).
    SecretRejected,
    /// Any other 403: the signature was accepted, the key lacks the capability this call needs.
    /// The real body of this answer is UNCONFIRMED (docs/vendor-apis.md §12).
    MissingCapability,
}

impl Rejection {
    /// Classifies an error made by this client (`ErrorKind` plus status tell the three apart).
    pub fn of(err: &VendorError) -> Option<Rejection> {
        match (err.status, &err.kind) {
            (Some(401), _) => Some(Rejection::UnknownKey),
            (Some(403), ErrorKind::Unauthorized) => Some(Rejection::SecretRejected),
            (Some(403), _) => Some(Rejection::MissingCapability),
            _ => None,
        }
    }
}

/// Maps a non-success answer to an error. Both credential failures are `Unauthorized` (the pair is
/// unusable as it is); a 403 with any other body is `Forbidden` (a missing capability). Every value of
/// `secrets` is removed from the vendor's text first.
pub(crate) fn error_from_answer(
    operation: &str,
    status: u16,
    headers: &header::HeaderMap,
    body: &[u8],
    secrets: &[&str],
) -> VendorError {
    let text = redact(&String::from_utf8_lossy(body), secrets);
    let text = text.trim();
    match status {
        401 => VendorError::new(
            ErrorKind::Unauthorized,
            operation,
            Some(status),
            format!("{}: the API key is not known to Secure Workload", non_empty(text, UNKNOWN_CREDENTIALS_BODY)),
        ),
        403 if text == INVALID_REQUEST_BODY => VendorError::new(
            ErrorKind::Unauthorized,
            operation,
            Some(status),
            format!("{text}: the signature was refused (wrong API secret, or the clock is off by minutes)"),
        ),
        403 => VendorError::new(
            ErrorKind::Forbidden,
            operation,
            Some(status),
            format!("{}: the API key lacks the capability this call needs", non_empty(text, "Forbidden")),
        ),
        _ => VendorError::from_status(operation, status, parse_retry_after(headers), vendor_message(text)),
    }
}

fn non_empty<'a>(text: &'a str, fallback: &'a str) -> &'a str {
    if text.is_empty() { fallback } else { text }
}

/// The message of a JSON error body (`{"error": ...}` or `{"message": ...}`), else the text itself.
pub(crate) fn vendor_message(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| ["error", "message", "errors"].iter().find_map(|k| v.get(*k).map(json_text)))
        .unwrap_or_else(|| text.to_owned())
}

fn json_text(v: &serde_json::Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
}

/// Retries of idempotent calls (GET, PUT, DELETE, as tetpyclient): on 429, 502, 503, 504 and transport
/// failures, with exponential backoff and jitter; `Retry-After` is honoured up to `max_retry_after`.
/// Longer waits and exhausted attempts come back as errors for the caller's own (longer) backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, including the first (1 disables retries).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled each time.
    pub base_delay: Duration,
    /// Cap of one computed wait.
    pub max_delay: Duration,
    /// Longest `Retry-After` waited for in place.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// Wait before retry number `retry` (1-based): exponential, capped, with jitter of up to a half.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << retry.saturating_sub(1).min(16));
        let capped = exp.min(self.max_delay);
        let jitter = rand::random_range(0.5..=1.0);
        capped.mul_f64(jitter)
    }
}

fn retryable_status(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// One OpenAPI call.
#[derive(Debug, Clone)]
pub struct ApiCall<'a> {
    pub method: Method,
    /// Under `/openapi/v1`: `/sensors` and `/openapi/v1/sensors` mean the same.
    pub path: &'a str,
    /// Form-urlencoded into the query string, which is signed exactly as sent.
    pub query: &'a [(&'a str, &'a str)],
    /// JSON body bytes, sent verbatim (and summed for POST/PUT/DELETE).
    pub body: Option<Vec<u8>>,
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Bytes,
}

impl ApiResponse {
    /// The body as JSON; `null` when empty.
    pub fn json(&self, operation: &str) -> Result<serde_json::Value, VendorError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            VendorError::new(ErrorKind::Invalid, operation, Some(self.status), format!("response is not JSON: {e}"))
        })
    }
}

/// A Secure Workload OpenAPI client for one key pair.
#[derive(Clone)]
pub struct CiscoClient {
    http: reqwest::Client,
    root: Url,
    credentials: ApiCredentials,
    limiter: Arc<RateLimiter>,
    retry: RetryPolicy,
    timeout: Duration,
}

impl std::fmt::Debug for CiscoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CiscoClient")
            .field("root", &self.root.as_str())
            .field("credentials", &self.credentials)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The host root of a configured endpoint. Like tetpyclient, any path in it is ignored: the API lives
/// at `/openapi/v1` on the host.
pub fn host_root(endpoint: &str) -> Result<Url, VendorError> {
    let invalid = |msg: &str| VendorError::new(ErrorKind::Invalid, "parse Secure Workload URL", None, msg);
    let url = Url::parse(endpoint.trim()).map_err(|e| invalid(&format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(invalid("expected an http(s) URL with a host, e.g. https://acme.tetrationcloud.com"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials do not belong in the URL"));
    }
    let mut root = url;
    root.set_path("/");
    root.set_query(None);
    root.set_fragment(None);
    Ok(root)
}

/// `/openapi/v1` + path, as tetpyclient prefixes it.
fn openapi_path(path: &str) -> String {
    if path.starts_with(OPENAPI_PREFIX) {
        path.to_owned()
    } else if path.starts_with('/') {
        format!("{OPENAPI_PREFIX}{path}")
    } else {
        format!("{OPENAPI_PREFIX}/{path}")
    }
}

/// The full URL of a call; the signed request-target is taken back from it, so it is what goes on the wire.
pub(crate) fn call_url(root: &Url, path: &str, query: &[(&str, &str)]) -> Result<Url, VendorError> {
    let mut target = openapi_path(path);
    if !query.is_empty() {
        target.push('?');
        target.push_str(&url::form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish());
    }
    root.join(&target)
        .map_err(|e| VendorError::new(ErrorKind::Invalid, "build request URL", None, format!("bad path {path:?}: {e}")))
}

/// The request-target (path and query) of a URL, as it is sent.
pub(crate) fn request_target(url: &Url) -> &str {
    &url[Position::BeforePath..Position::AfterQuery]
}

impl CiscoClient {
    /// A client for `endpoint` (host root; a path part is ignored) with its own HTTP client.
    pub fn new(
        endpoint: &str,
        credentials: ApiCredentials,
        tls: &TlsOptions,
        limiter: Arc<RateLimiter>,
    ) -> Result<Self, VendorError> {
        Ok(Self::with_http_client(host_root(endpoint)?, credentials, http_client(tls, DEFAULT_TIMEOUT)?, limiter))
    }

    /// A client sharing an existing HTTP client (one per endpoint and CA is enough).
    pub fn with_http_client(
        root: Url,
        credentials: ApiCredentials,
        http: reqwest::Client,
        limiter: Arc<RateLimiter>,
    ) -> Self {
        Self { http, root, credentials, limiter, retry: RetryPolicy::default(), timeout: DEFAULT_TIMEOUT }
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Bounds each request (connect, send, answer, body) by `timeout` instead of [`DEFAULT_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The host root requests go to.
    pub fn root(&self) -> &Url {
        &self.root
    }

    pub fn credentials(&self) -> &ApiCredentials {
        &self.credentials
    }

    /// `GET`, with the query signed as sent; the answer as JSON.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<serde_json::Value, VendorError> {
        self.json_call(ApiCall { method: Method::GET, path, query, body: None }).await
    }

    /// `POST` of a JSON body (never retried: it may not be idempotent).
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, VendorError> {
        self.json_call(ApiCall { method: Method::POST, path, query: &[], body: Some(to_bytes(body)) }).await
    }

    /// `PUT` of a JSON body.
    pub async fn put(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, VendorError> {
        self.json_call(ApiCall { method: Method::PUT, path, query: &[], body: Some(to_bytes(body)) }).await
    }

    /// `DELETE`, with an optional JSON body (some endpoints, e.g. `remove_role`, take one).
    pub async fn delete(&self, path: &str, body: Option<&serde_json::Value>) -> Result<serde_json::Value, VendorError> {
        self.json_call(ApiCall { method: Method::DELETE, path, query: &[], body: body.map(to_bytes) }).await
    }

    async fn json_call(&self, call: ApiCall<'_>) -> Result<serde_json::Value, VendorError> {
        let operation = operation_name(&call.method, call.path);
        self.send(call).await?.json(&operation)
    }

    /// Sends one call, signing each attempt afresh, and returns the successful answer.
    pub async fn send(&self, call: ApiCall<'_>) -> Result<ApiResponse, VendorError> {
        let operation = operation_name(&call.method, call.path);
        let url = call_url(&self.root, call.path, call.query)?;
        let body = call.body.map(Bytes::from).unwrap_or_default();
        let idempotent = matches!(call.method, Method::GET | Method::PUT | Method::DELETE);
        let attempts = if idempotent { self.retry.max_attempts.max(1) } else { 1 };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= attempts;
            let request = || self.signed_request(&call.method, &url, &body, jiff::Timestamp::now());
            let (err, wait) = match self.attempt(request, &operation).await {
                Ok(answer) => return Ok(answer),
                // A failure without an answer (connection, timeout, body cut off); TLS will not heal.
                Err((err, None)) if err.kind != ErrorKind::Tls && !err.held_back => {
                    let wait = self.retry.backoff(attempt);
                    (err, Some(wait))
                }
                Err((err, None)) => (err, None),
                Err((err, Some(headers))) => {
                    let retryable = err.status.is_some_and(retryable_status);
                    let wait = parse_retry_after(&headers).unwrap_or_else(|| self.retry.backoff(attempt));
                    (err, (retryable && wait <= self.retry.max_retry_after).then_some(wait))
                }
            };
            match wait {
                Some(wait) if !last => {
                    tracing::debug!(%operation, attempt, error = %err, "Secure Workload call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                _ => return Err(err),
            }
        }
    }

    /// One attempt ([`exchange`]): the successful answer, or the error with the answer's headers when there was
    /// one; the error text has the key pair removed.
    async fn attempt(
        &self,
        request: impl FnOnce() -> reqwest::RequestBuilder,
        operation: &str,
    ) -> Result<ApiResponse, (VendorError, Option<header::HeaderMap>)> {
        let answer = exchange(&self.limiter, "cisco", operation, request, Redirects::Refuse)
            .await
            .map_err(|f| (f.error, f.answered))?;
        let status = answer.status.as_u16();
        if answer.status.is_success() {
            return Ok(ApiResponse { status, body: answer.body });
        }
        let secrets = [self.credentials.api_key(), self.credentials.api_secret().expose()];
        Err((error_from_answer(operation, status, &answer.headers, &answer.body, &secrets), Some(answer.headers)))
    }

    /// The request with the tetpyclient header set, signed at `now`.
    fn signed_request(
        &self,
        method: &Method,
        url: &Url,
        body: &Bytes,
        now: jiff::Timestamp,
    ) -> reqwest::RequestBuilder {
        let to_sign = RequestToSign {
            method: method.as_str(),
            path_and_query: request_target(url),
            content_type: Some(JSON_CONTENT_TYPE),
            body,
        };
        let signed = signer::sign(self.credentials.api_key(), self.credentials.api_secret(), &to_sign, now);
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .timeout(self.timeout)
            .header(header::CONTENT_TYPE, JSON_CONTENT_TYPE)
            // Unsigned; we send tetpyclient's so the service sees the one client shape it documents.
            .header(header::USER_AGENT, signer::USER_AGENT)
            .header(header::ACCEPT, "application/json");
        for (name, value) in signed.pairs() {
            request = request.header(name, value);
        }
        if !body.is_empty() {
            request = request.body(body.clone());
        }
        request
    }
}

fn to_bytes(body: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(body).expect("a JSON value serialises")
}

/// `GET /openapi/v1/roles`: names the call in errors and logs, without the query.
fn operation_name(method: &Method, path: &str) -> String {
    format!("Secure Workload {method} {}", openapi_path(path.split('?').next().unwrap_or(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_root_drops_any_path() {
        assert_eq!(host_root("https://acme.tetrationcloud.com").unwrap().as_str(), "https://acme.tetrationcloud.com/");
        assert_eq!(host_root("https://h:8443/some/prefix?x=1").unwrap().as_str(), "https://h:8443/");
        assert!(host_root("ftp://h").is_err());
        assert!(host_root("not a url").is_err());
        assert!(host_root("https://user:pw@h").is_err());
    }

    #[test]
    fn paths_get_the_openapi_prefix_once() {
        let root = host_root("https://h").unwrap();
        let url = call_url(&root, "/sensors", &[]).unwrap();
        assert_eq!(request_target(&url), "/openapi/v1/sensors");
        let url = call_url(&root, "/openapi/v1/sensors", &[]).unwrap();
        assert_eq!(request_target(&url), "/openapi/v1/sensors");
        let url = call_url(&root, "/users", &[("include_disabled", "true")]).unwrap();
        assert_eq!(request_target(&url), "/openapi/v1/users?include_disabled=true");
        let url = call_url(&root, "/users", &[("email", "a b@c.d")]).unwrap();
        assert_eq!(request_target(&url), "/openapi/v1/users?email=a+b%40c.d", "form-urlencoded like requests");
    }

    #[test]
    fn answers_map_to_rejections() {
        let h = header::HeaderMap::new();
        let unknown = error_from_answer("op", 401, &h, b"Unknown credentials", &[]);
        assert_eq!(unknown.kind, ErrorKind::Unauthorized);
        assert_eq!(Rejection::of(&unknown), Some(Rejection::UnknownKey));
        let bad_sig = error_from_answer("op", 403, &h, b"Invalid request", &[]);
        assert_eq!(bad_sig.kind, ErrorKind::Unauthorized);
        assert_eq!(Rejection::of(&bad_sig), Some(Rejection::SecretRejected));
        let no_cap = error_from_answer("op", 403, &h, br#"{"error":"forbidden"}"#, &[]);
        assert_eq!(no_cap.kind, ErrorKind::Forbidden);
        assert_eq!(Rejection::of(&no_cap), Some(Rejection::MissingCapability));
        let not_found = error_from_answer("op", 404, &h, br#"{"error":"Not found"}"#, &[]);
        assert_eq!(not_found.kind, ErrorKind::NotFound);
        assert_eq!(not_found.message, "Not found");
        assert_eq!(Rejection::of(&not_found), None);
        let mut h = header::HeaderMap::new();
        h.insert(header::RETRY_AFTER, "3".parse().unwrap());
        let limited = error_from_answer("op", 429, &h, b"", &[]);
        assert_eq!(limited.kind, ErrorKind::RateLimited { retry_after: Some(Duration::from_secs(3)) });
    }

    #[test]
    fn answers_echoing_the_key_pair_are_redacted() {
        let h = header::HeaderMap::new();
        let secrets = ["0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"];
        let body = br#"{"error":"key 0123456789abcdef0123456789abcdef secret fedcba9876543210fedcba9876543210"}"#;
        let e = error_from_answer("op", 400, &h, body, &secrets);
        assert_eq!(e.message, "key <redacted> secret <redacted>");
        let e = error_from_answer("op", 403, &h, b"no: fedcba9876543210fedcba9876543210", &secrets);
        assert!(e.message.starts_with("no: <redacted>: the API key lacks"), "{}", e.message);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            ..Default::default()
        };
        let first = p.backoff(1);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let third = p.backoff(3);
        assert!(third >= Duration::from_millis(150) && third <= Duration::from_millis(300));
        assert!(p.backoff(40) <= Duration::from_millis(300));
    }
}
