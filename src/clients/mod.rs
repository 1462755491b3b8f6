//! Vendor clients. Nothing here knows about Kubernetes: no `kube` or `k8s-openapi` imports.
//!
//! Shared pieces: the error type whose [`ErrorKind`] decides retry and the condition reason,
//! [`SecretString`] for secret material, the HTTP client builder (rustls with the ring provider,
//! custom CA or explicit insecure mode) and the per-endpoint client-side [`RateLimiter`].

pub mod cisco;
mod error;
mod http;
pub mod observe;
mod rate;
mod secret;
pub mod trend;

pub use error::{ErrorKind, VendorError};
pub use http::{
    TlsOptions, classify_transport_error, http_client, http_client_builder, install_crypto_provider, parse_retry_after,
};
pub use rate::{DEFAULT_REQUESTS_PER_MINUTE, RateLimiter, RateLimiters};
pub use secret::SecretString;
