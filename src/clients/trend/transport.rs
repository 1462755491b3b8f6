//! The request loop the Cloud One and Vision One clients share: one credential header, the per-endpoint rate
//! limiter, the [`RetryPolicy`] (never replaying a create the server may have processed), bounded bodies,
//! same-origin redirects and error text with every known secret removed.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{
    Method,
    header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue},
};
use serde::Serialize;

use super::retry::{Replay, RetryPolicy};
pub(super) use crate::clients::Answer;
use crate::clients::{
    ErrorKind, RateLimiter, Redirects, SecretString, TlsOptions, VendorError, exchange, http_client, parse_retry_after,
    redact::redact,
};

/// Label for the request metrics (all Trend APIs count as one vendor).
const VENDOR: &str = "trend";

/// One API operation to perform.
pub(super) struct Call {
    pub operation: &'static str,
    pub method: Method,
    /// Path (and query) after the base URL.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Option<Vec<u8>>,
    pub replay: Replay,
}

impl Call {
    pub fn new(operation: &'static str, method: Method, path: impl Into<String>, replay: Replay) -> Self {
        Self { operation, method, path: path.into(), headers: HeaderMap::new(), body: None, replay }
    }

    pub fn json(mut self, body: &impl Serialize) -> Result<Self, VendorError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| VendorError::new(ErrorKind::Invalid, self.operation, None, format!("encode request: {e}")))?;
        self.body = Some(bytes);
        Ok(self)
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Result<Self, VendorError> {
        let value = HeaderValue::from_str(value).map_err(|_| {
            VendorError::new(ErrorKind::Invalid, self.operation, None, format!("{name} is not a valid header value"))
        })?;
        self.headers.insert(HeaderName::from_static(name), value);
        Ok(self)
    }
}

/// Turns an error answer's body into the vendor's message (each API has its own error shape).
pub(super) type ErrorText = fn(&[u8]) -> String;

/// A client's connection to one API endpoint.
pub(super) struct Transport {
    base_url: String,
    http: reqwest::Client,
    authorization: HeaderValue,
    fixed_headers: HeaderMap,
    /// The credential and its parts: removed from any vendor text before it becomes an error message.
    secrets: Vec<SecretString>,
    limiter: Arc<RateLimiter>,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    error_text: ErrorText,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("base_url", &self.base_url)
            .field("limiter", &self.limiter)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

pub(super) struct TransportOptions<'a> {
    /// For configuration errors, e.g. `configure Vision One client`.
    pub what: &'static str,
    pub base_url: &'a str,
    /// The whole `Authorization` header value, e.g. `Bearer <key>`.
    pub authorization: SecretString,
    /// Every secret value the client holds (the key, and parts of it a vendor might echo).
    pub secrets: Vec<SecretString>,
    pub fixed_headers: HeaderMap,
    pub tls: &'a TlsOptions,
    pub limiter: Arc<RateLimiter>,
    pub timeout: Duration,
    pub error_text: ErrorText,
}

impl Transport {
    pub fn new(o: TransportOptions<'_>) -> Result<Self, VendorError> {
        let parsed = url::Url::parse(o.base_url)
            .map_err(|e| VendorError::new(ErrorKind::Invalid, o.what, None, format!("invalid base URL: {e}")))?;
        if !matches!(parsed.scheme(), "https" | "http") || parsed.host().is_none() {
            return Err(VendorError::new(
                ErrorKind::Invalid,
                o.what,
                None,
                "base URL must be an http(s) URL with a host",
            ));
        }
        let mut authorization = HeaderValue::from_str(o.authorization.expose()).map_err(|_| {
            VendorError::new(ErrorKind::Invalid, o.what, None, "the API key is not a valid header value")
        })?;
        authorization.set_sensitive(true);
        Ok(Self {
            base_url: o.base_url.trim_end_matches('/').to_owned(),
            http: http_client(o.tls, o.timeout)?,
            authorization,
            fixed_headers: o.fixed_headers,
            secrets: o.secrets.into_iter().filter(|s| !s.is_empty()).collect(),
            limiter: o.limiter,
            retry: RetryPolicy::default(),
            timeout: o.timeout,
            error_text: o.error_text,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `text` without any secret this client holds, nor any of `more` (e.g. a secret just received).
    pub fn redact(&self, text: &str, more: &[&str]) -> String {
        let mut all: Vec<&str> = self.secrets.iter().map(SecretString::expose).collect();
        all.extend_from_slice(more);
        redact(text, &all)
    }

    /// Sends `call` with rate limiting and retries; the 2xx answer or the last error.
    pub async fn send(&self, call: &Call) -> Result<Answer, VendorError> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (error, unsent) = match self.attempt(call).await {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure,
            };
            self.retry.pause_or_give_up(call.operation, attempt, started.elapsed(), error, call.replay, unsent).await?;
        }
    }

    /// One HTTP exchange ([`exchange`]); a non-success answer becomes the vendor's error, in the API's own words
    /// with every known secret removed.
    async fn attempt(&self, call: &Call) -> Result<Answer, (VendorError, bool)> {
        let request = || {
            let request = self
                .http
                .request(call.method.clone(), format!("{}{}", self.base_url, call.path))
                .timeout(self.timeout)
                .header(ACCEPT, "application/json")
                .headers(self.fixed_headers.clone())
                .header(AUTHORIZATION, self.authorization.clone())
                .headers(call.headers.clone());
            match &call.body {
                Some(body) => request.header(CONTENT_TYPE, "application/json").body(body.clone()),
                None => request,
            }
        };
        let answer = exchange(&self.limiter, VENDOR, call.operation, request, Redirects::Refuse)
            .await
            .map_err(|f| (f.error, f.unsent))?;
        tracing::debug!(operation = call.operation, method = %call.method, path = %call.path, status = answer.status.as_u16(), "Trend API call");
        if answer.status.is_success() {
            return Ok(answer);
        }
        let text = self.redact(&(self.error_text)(&answer.body), &[]);
        let status = answer.status.as_u16();
        Err((VendorError::from_status(call.operation, status, parse_retry_after(&answer.headers), text), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(base: &str) -> Result<Transport, VendorError> {
        Transport::new(TransportOptions {
            what: "configure test client",
            base_url: base,
            authorization: SecretString::new("Bearer tok-123456"),
            secrets: vec![SecretString::new("tok-123456"), SecretString::new("")],
            fixed_headers: HeaderMap::new(),
            tls: &TlsOptions::default(),
            limiter: RateLimiter::per_minute(60),
            timeout: Duration::from_secs(5),
            error_text: |b| String::from_utf8_lossy(b).into_owned(),
        })
    }

    #[test]
    fn base_urls_are_checked_and_trimmed() {
        for bad in ["not a url", "ftp://x/api", "file:///api"] {
            assert_eq!(transport(bad).unwrap_err().kind, ErrorKind::Invalid, "{bad}");
        }
        assert_eq!(transport("https://api.xdr.trendmicro.com/").unwrap().base_url(), "https://api.xdr.trendmicro.com");
    }

    #[test]
    fn redaction_covers_the_credential_and_extra_values() {
        let t = transport("https://x").unwrap();
        assert_eq!(t.redact("Bearer tok-123456 and new-secret", &["new-secret"]), "Bearer <redacted> and <redacted>");
        assert!(!format!("{t:?}").contains("tok-123456"));
    }
}
