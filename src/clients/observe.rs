//! A hook through which vendor clients report each HTTP attempt (for metrics), without knowing about metrics.

use std::sync::{Arc, OnceLock};

/// Receives one call per HTTP attempt: the vendor, the endpoint's origin (`https://host:port`, never a path or
/// credentials), the operation (e.g. `create API key`) and the HTTP status, or `None` when no answer came; and the
/// time a request waited for its endpoint's rate limit. Never receives request or response bodies.
pub trait RequestObserver: Send + Sync {
    fn observe(&self, vendor: &'static str, endpoint: &str, operation: &str, status: Option<u16>, seconds: f64);
    fn waited(&self, vendor: &'static str, endpoint: &str, seconds: f64);
}

static OBSERVER: OnceLock<Arc<dyn RequestObserver>> = OnceLock::new();

/// Installs the process-wide observer; only the first call wins.
pub fn set_observer(observer: Arc<dyn RequestObserver>) {
    let _ = OBSERVER.set(observer);
}

/// Reports one HTTP attempt to the observer, if one is installed.
/// `seconds`: from sending the request to its answer's headers (or the failure).
pub fn record(vendor: &'static str, endpoint: &str, operation: &str, status: Option<u16>, seconds: f64) {
    if let Some(o) = OBSERVER.get() {
        o.observe(vendor, endpoint, operation, status, seconds);
    }
}

/// Reports a wait for an endpoint's rate limit to the observer, if one is installed.
pub fn waited(vendor: &'static str, endpoint: &str, seconds: f64) {
    if let Some(o) = OBSERVER.get() {
        o.waited(vendor, endpoint, seconds);
    }
}
