use std::{fmt, time::Duration};

use super::redact::redact;

/// What kind of failure a vendor call had; decides whether to retry and which condition reason to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// Network trouble, timeouts, 5xx: retry with backoff.
    Transient,
    /// 429: retry after the given wait (from `Retry-After` when the vendor sent one).
    RateLimited { retry_after: Option<Duration> },
    /// The credential is unknown, expired or locked out (401, or the vendor's equivalent).
    Unauthorized,
    /// The credential is valid but not allowed to do this (403).
    Forbidden,
    /// The object does not exist (404).
    NotFound,
    /// The request was rejected as malformed, or the response could not be understood (400, 422, bad JSON).
    Invalid,
    /// The TLS handshake failed: unknown CA, bad certificate, wrong host name.
    Tls,
}

impl ErrorKind {
    /// Whether the same request may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::RateLimited { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            ErrorKind::Transient => "Transient",
            ErrorKind::RateLimited { .. } => "RateLimited",
            ErrorKind::Unauthorized => "Unauthorized",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::Invalid => "Invalid",
            ErrorKind::Tls => "Tls",
        }
    }
}

/// A failed vendor call. Its text never carries secret material: only the operation, the status and the
/// vendor's own error message. A vendor (or a proxy) may echo a request back, so text taken from an answer
/// goes through [`VendorError::answered`] or [`VendorError::new_redacted`], which remove every secret the
/// client knows before the message is cut to length.
#[derive(Debug, Clone, thiserror::Error)]
pub struct VendorError {
    pub kind: ErrorKind,
    /// What was being done, e.g. `create API key`.
    pub operation: String,
    /// HTTP status when the vendor answered.
    pub status: Option<u16>,
    /// The vendor's message, or a description of the transport failure.
    pub message: String,
    /// The request was not sent: its endpoint is not answering ([`super::outage`]). Not retried by the clients;
    /// the operator retries the resource once the endpoint answers again.
    pub held_back: bool,
}

impl VendorError {
    pub fn new(kind: ErrorKind, operation: impl Into<String>, status: Option<u16>, message: impl Into<String>) -> Self {
        let mut message = message.into();
        // Vendor bodies can be large HTML pages; keep conditions and events readable.
        if message.len() > 300 {
            let mut cut = 300;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        Self { kind, operation: operation.into(), status, message, held_back: false }
    }

    /// [`VendorError::new`] with every value of `secrets` replaced by `<redacted>` in `message`.
    pub fn new_redacted(
        kind: ErrorKind,
        operation: impl Into<String>,
        status: Option<u16>,
        message: &str,
        secrets: &[&str],
    ) -> Self {
        Self::new(kind, operation, status, redact(message, secrets))
    }

    /// [`VendorError::from_status`] for the vendor's text of an answer, with every value of `secrets` (the
    /// client's credentials, anything secret it just received) replaced by `<redacted>`.
    pub fn answered(
        operation: impl Into<String>,
        status: u16,
        retry_after: Option<Duration>,
        vendor_text: &str,
        secrets: &[&str],
    ) -> Self {
        Self::from_status(operation, status, retry_after, redact(vendor_text, secrets))
    }

    /// Kind from an HTTP status: 401 Unauthorized, 403 Forbidden, 404 NotFound, 429 RateLimited,
    /// 408/5xx Transient, other 4xx Invalid.
    pub fn from_status(
        operation: impl Into<String>,
        status: u16,
        retry_after: Option<Duration>,
        message: impl Into<String>,
    ) -> Self {
        let kind = match status {
            401 => ErrorKind::Unauthorized,
            403 => ErrorKind::Forbidden,
            404 => ErrorKind::NotFound,
            429 => ErrorKind::RateLimited { retry_after },
            408 | 500..=599 => ErrorKind::Transient,
            _ => ErrorKind::Invalid,
        };
        Self::new(kind, operation, Some(status), message)
    }
}

impl fmt::Display for VendorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed", self.operation)?;
        if let Some(status) = self.status {
            write!(f, " (HTTP {status})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_maps_to_kind() {
        let k = |s| VendorError::from_status("op", s, None, "").kind;
        assert_eq!(k(401), ErrorKind::Unauthorized);
        assert_eq!(k(403), ErrorKind::Forbidden);
        assert_eq!(k(404), ErrorKind::NotFound);
        assert_eq!(k(429), ErrorKind::RateLimited { retry_after: None });
        assert_eq!(k(503), ErrorKind::Transient);
        assert_eq!(k(400), ErrorKind::Invalid);
        assert!(k(502).is_retryable());
        assert!(!k(403).is_retryable());
    }

    #[test]
    fn display_names_operation_status_and_message() {
        let e = VendorError::from_status("create API key", 403, None, "Not authorized to create API keys.");
        assert_eq!(e.to_string(), "create API key failed (HTTP 403): Not authorized to create API keys.");
    }

    #[test]
    fn answered_errors_redact_known_secrets() {
        let e = VendorError::answered(
            "search roles",
            400,
            None,
            "bad header api-secret-key: 1:s3cr3t-admin-key (again: 1:s3cr3t-admin-key)",
            &["1:s3cr3t-admin-key", "s3cr3t-admin-key"],
        );
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(e.message, "bad header api-secret-key: <redacted> (again: <redacted>)");
        assert!(!e.to_string().contains("s3cr3t"));
        let e = VendorError::new_redacted(ErrorKind::Unauthorized, "sign in", Some(401), "pw=hunter22", &["hunter22"]);
        assert_eq!((e.kind, e.status, e.message.as_str()), (ErrorKind::Unauthorized, Some(401), "pw=<redacted>"));
    }

    #[test]
    fn redaction_happens_before_the_cut() {
        // A secret straddling the 300-character cut must not leave its first half behind.
        let text = format!("{}{}", "x".repeat(290), "SECRETVALUE-0123456789");
        let e = VendorError::answered("op", 500, None, &text, &["SECRETVALUE-0123456789"]);
        assert!(!e.message.contains("SECRET"), "{}", e.message);
        assert!(e.message.ends_with("<redacted>"));
    }

    #[test]
    fn long_messages_are_cut() {
        let e = VendorError::new(ErrorKind::Invalid, "op", None, "é".repeat(400));
        assert!(e.message.len() <= 304);
        assert!(e.message.ends_with('…'));
    }
}
