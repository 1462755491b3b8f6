//! Vendor clients. Nothing here knows about Kubernetes: no `kube` or `k8s-openapi` imports.
//!
//! Shared pieces: the error type whose [`ErrorKind`] decides retry and the condition reason,
//! [`SecretString`] for secret material, the HTTP client builder (rustls with the ring provider,
//! custom CA or explicit insecure mode, proxies from the environment, same-origin redirects only, bounded
//! bodies), [`redact::redact`] for vendor text that may echo a credential, and the per-endpoint client-side
//! [`RateLimiter`].

pub mod cisco;
mod error;
mod http;
pub mod observe;
pub mod outage;
pub mod proxy;
mod rate;
pub mod redact;
mod secret;
pub mod trend;

pub use error::{ErrorKind, VendorError};
pub use http::{
    Answer, Failure, MAX_BODY_BYTES, Redirects, TlsOptions, body_too_large, classify_transport_error, exchange,
    http_client, http_client_builder, install_crypto_provider, parse_retry_after, read_body, refused_redirect,
    same_origin_redirects,
};
pub use rate::{DEFAULT_REQUESTS_PER_MINUTE, RateLimiter, RateLimiters, Requester};
pub use secret::SecretString;
