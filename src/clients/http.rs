use std::{sync::Once, time::Duration};

use super::{ErrorKind, VendorError};

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
pub fn http_client_builder(tls: &TlsOptions, timeout: Duration) -> Result<reqwest::ClientBuilder, VendorError> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("workload-key-operator/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(60))
        .no_proxy();
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
    fn retry_after_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(reqwest::header::RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(parse_retry_after(&h), None);
    }
}
