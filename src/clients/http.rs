use std::{sync::Once, time::Duration};

use bytes::{Bytes, BytesMut};
use url::Url;

use super::{ErrorKind, RateLimiter, VendorError, observe, proxy::ProxySettings};

/// Largest response body read from a vendor (success and error answers alike); more is an error.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Redirects followed within one request (all on the same origin).
const MAX_REDIRECTS: usize = 5;

/// How to verify a vendor's TLS certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM bundle of CA certificates to trust instead of the system roots.
    pub ca_pem: Option<String>,
    /// Accept any certificate. Discouraged; callers warn when it is set.
    pub insecure_skip_verify: bool,
}

/// Installs ring as the process-wide rustls provider (the same one kube uses). Idempotent.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only when a provider is already installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A reqwest client with rustls: system roots, or only the given CA bundle, or (explicitly) no verification.
pub fn http_client(tls: &TlsOptions, timeout: Duration) -> Result<reqwest::Client, VendorError> {
    http_client_builder(tls, timeout)?
        .build()
        .map_err(|e| VendorError::new(ErrorKind::Tls, "build HTTP client", None, error_chain(&e)))
}

/// The builder behind [`http_client`], for clients that need one more setting (e.g. no redirects).
///
/// `timeout` bounds each whole request (connect, send, answer and body). Proxies come from the environment
/// (see [`super::proxy`]). Redirects are followed only within the request's origin ([`same_origin_redirects`]).
pub fn http_client_builder(tls: &TlsOptions, timeout: Duration) -> Result<reqwest::ClientBuilder, VendorError> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("workload-key-operator/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(same_origin_redirects())
        // Not reqwest's own environment proxy: ours also honours `host:port` entries of NO_PROXY.
        .no_proxy();
    let proxies = ProxySettings::from_env()?;
    if !proxies.is_empty() {
        builder = builder.proxy(reqwest::Proxy::custom(move |url| proxies.proxy_for(url)));
    }
    if tls.insecure_skip_verify {
        builder = builder.danger_accept_invalid_certs(true);
    } else if let Some(pem) = &tls.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
            VendorError::new(ErrorKind::Tls, "load CA bundle", None, format!("invalid PEM CA bundle: {e}"))
        })?;
        if certs.is_empty() {
            return Err(VendorError::new(ErrorKind::Tls, "load CA bundle", None, "CA bundle holds no certificate"));
        }
        builder = builder.tls_certs_only(certs);
    }
    Ok(builder)
}

/// Follows a redirect only to the origin (scheme, host and port) of the request, and at most
/// [`MAX_REDIRECTS`] times. Any other redirect is handed back as the 3xx answer, which the clients turn into
/// [`refused_redirect`]: credentials sent in headers (`api-secret-key`, `rID`, signatures) and sign-in bodies
/// must never reach another host, and reqwest keeps custom headers on a cross-host redirect.
pub fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt.previous().first().is_some_and(|first| first.origin() == attempt.url().origin());
        if same_origin && attempt.previous().len() <= MAX_REDIRECTS { attempt.follow() } else { attempt.stop() }
    })
}

/// The error for a redirect that was not followed: the status and where it pointed (its origin only: the
/// rest of a `Location` may carry tokens).
pub fn refused_redirect(operation: &str, status: u16, from: &Url, location: Option<&str>) -> VendorError {
    let target = location.and_then(|l| from.join(l).ok());
    let message = match target {
        Some(t) if t.origin() == from.origin() => {
            format!("redirect loop within {} not followed (more than {MAX_REDIRECTS} redirects)", origin(from))
        }
        Some(t) => format!(
            "redirect to {} not followed: only redirects within the vendor's origin {} are followed",
            origin(&t),
            origin(from)
        ),
        None => "redirect without a usable Location not followed".to_owned(),
    };
    VendorError::new(ErrorKind::Invalid, operation, Some(status), message)
}

fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// Reads a response body of at most `limit` bytes, chunk by chunk; a longer body is an error as soon as the
/// limit is passed (nothing beyond it is buffered). A declared `Content-Length` over the limit fails at once.
/// Errors: [`body_too_large`] (with the answer's status), or a transport error (no status) when the body was cut off.
pub async fn read_body(response: reqwest::Response, operation: &str, limit: usize) -> Result<Bytes, VendorError> {
    let status = response.status().as_u16();
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(body_too_large(operation, status, limit));
    }
    let mut response = response;
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| classify_transport_error(operation, &e))? {
        if body.len() + chunk.len() > limit {
            return Err(body_too_large(operation, status, limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The error for a body over the limit: `Invalid` for a success answer; an error answer keeps the kind of its
/// status (a 503 with a huge page is still the vendor being unavailable).
pub fn body_too_large(operation: &str, status: u16, limit: usize) -> VendorError {
    let message = format!("response body larger than {}", size(limit));
    if (200..300).contains(&status) {
        VendorError::new(ErrorKind::Invalid, operation, Some(status), message)
    } else {
        VendorError::from_status(operation, status, None, message)
    }
}

fn size(bytes: usize) -> String {
    if bytes >= 1024 * 1024 && bytes.is_multiple_of(1024 * 1024) {
        format!("{} MiB", bytes / (1024 * 1024))
    } else if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

/// Maps a transport failure (no HTTP answer) to an error kind: TLS problems are `Tls`, the rest `Transient`.
pub fn classify_transport_error(operation: &str, err: &reqwest::Error) -> VendorError {
    let chain = error_chain(err);
    let lower = chain.to_ascii_lowercase();
    let tls = ["certificate", "tls", "handshake", "unknownissuer", "invalid peer", "x509"]
        .iter()
        .any(|needle| lower.contains(needle));
    let kind = if tls { ErrorKind::Tls } else { ErrorKind::Transient };
    // reqwest errors carry the URL; our URLs never hold secrets (they go in headers), so the text is safe.
    VendorError::new(kind, operation, None, chain)
}

/// `Retry-After` as seconds (the HTTP-date form is rare for APIs and treated as absent).
pub fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_ca_bundle() {
        let err = http_client(
            &TlsOptions { ca_pem: Some("not a pem".into()), insecure_skip_verify: false },
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Tls);
    }

    #[test]
    fn refused_redirects_name_status_and_target_origin_only() {
        let from = Url::parse("https://dsm.example.com:4119/api/apikeys").unwrap();
        let e = refused_redirect("create API key", 307, &from, Some("http://evil.example:8080/steal?token=s3cr3t"));
        assert_eq!((e.kind.clone(), e.status), (ErrorKind::Invalid, Some(307)));
        assert_eq!(
            e.to_string(),
            "create API key failed (HTTP 307): redirect to http://evil.example:8080 not followed: only redirects \
             within the vendor's origin https://dsm.example.com:4119 are followed"
        );
        let e = refused_redirect("op", 302, &from, Some("/api/elsewhere"));
        assert!(e.message.contains("redirect loop"), "{}", e.message);
        let e = refused_redirect("op", 302, &from, None);
        assert!(e.message.contains("without a usable Location"));
    }

    #[test]
    fn body_limit_error_reads_well() {
        assert_eq!(
            body_too_large("search roles", 200, MAX_BODY_BYTES).to_string(),
            "search roles failed (HTTP 200): response body larger than 1 MiB"
        );
        assert_eq!(body_too_large("op", 503, MAX_BODY_BYTES).kind, ErrorKind::Transient);
        assert_eq!(body_too_large("op", 404, MAX_BODY_BYTES).kind, ErrorKind::NotFound);
        assert_eq!(size(1536), "1536 bytes");
        assert_eq!(size(64 * 1024), "64 KiB");
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(reqwest::header::RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(parse_retry_after(&h), None);
    }
}

/// What a vendor answered: status, headers and the whole body (at most [`MAX_BODY_BYTES`]).
#[derive(Debug)]
pub struct Answer {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

/// An exchange that brought no usable answer.
#[derive(Debug)]
pub struct Failure {
    pub error: VendorError,
    /// The answer's headers when there was one (a refused redirect, a body over the limit): its status, not the
    /// network, decides a retry.
    pub answered: Option<reqwest::header::HeaderMap>,
    /// The request provably never left (the connection failed): safe to send again whatever it does.
    pub unsent: bool,
}

/// What to do with a 3xx that reaches the caller (the client followed the same-origin ones it could).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirects {
    /// It points off the endpoint's origin, or loops: an error.
    Refuse,
    /// Hand it to the caller (a client that follows redirects by hand, within the origin).
    Return,
}

/// One HTTP exchange with a vendor, the same for every client: wait for the endpoint's rate limiter, build the
/// request (after the wait, so that a signature's timestamp is fresh), send, record the request (`observe`),
/// classify a transport failure, refuse a redirect off the origin, and read the body within [`MAX_BODY_BYTES`].
/// What a non-success status means is the caller's (each vendor words errors its own way); the caller sets the
/// request's timeout and headers.
pub async fn exchange(
    limiter: &RateLimiter,
    vendor: &'static str,
    operation: &str,
    request: impl FnOnce() -> reqwest::RequestBuilder,
    redirects: Redirects,
) -> Result<Answer, Failure> {
    // An endpoint that answers nothing: not sent, and no budget used (the outage module's doc).
    let reach = &limiter.reach;
    let probe = reach.admit(operation).map_err(|error| Failure { error, answered: None, unsent: true })?;
    let waiting = std::time::Instant::now();
    limiter.acquire().await;
    let waited = waiting.elapsed();
    // Built after the wait, so that it carries the credentials (a session) current when it is sent.
    let (client, request) = request().build_split();
    let request = request.map_err(|e| Failure {
        error: classify_transport_error(operation, &e),
        answered: None,
        unsent: true,
    })?;
    // The origin only: the metrics label never carries a path, a query or credentials.
    let endpoint = request.url().origin().ascii_serialization();
    if waited >= std::time::Duration::from_millis(1) {
        observe::waited(vendor, &endpoint, waited.as_secs_f64());
    }
    let sent = std::time::Instant::now();
    let sent_at = tokio::time::Instant::now();
    let response = match client.execute(request).await {
        Ok(response) => response,
        Err(e) => {
            observe::record(vendor, &endpoint, operation, None, sent.elapsed().as_secs_f64());
            let error = classify_transport_error(operation, &e);
            if error.kind != ErrorKind::Transient {
                // A TLS failure is an answer of sorts: something is there.
                reach.answered();
            } else if reach.unanswered(sent_at, probe, &endpoint) {
                tracing::warn!(%endpoint, operation, error = %error, "vendor endpoint not answering; requests to it are held back until a probe is answered");
                tokio::spawn(reach.clone().probe(client, vendor, endpoint));
            }
            return Err(Failure { error, answered: None, unsent: e.is_connect() });
        }
    };
    reach.answered();
    let status = response.status();
    observe::record(vendor, &endpoint, operation, Some(status.as_u16()), sent.elapsed().as_secs_f64());
    let headers = response.headers().clone();
    if status.is_redirection() && redirects == Redirects::Refuse {
        let location = headers.get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok());
        let error = refused_redirect(operation, status.as_u16(), response.url(), location);
        return Err(Failure { error, answered: Some(headers), unsent: false });
    }
    match read_body(response, operation, MAX_BODY_BYTES).await {
        Ok(body) => Ok(Answer { status, headers, body }),
        // A body over the limit was an answer; a cut-off one was not.
        Err(error) => {
            let answered = error.status.is_some().then_some(headers);
            Err(Failure { error, answered, unsent: false })
        }
    }
}
