//! A hook through which vendor clients report each HTTP attempt (for metrics), without knowing about metrics.

use std::sync::{Arc, OnceLock};

/// Receives one call per HTTP attempt: the vendor, the operation (e.g. `create API key`) and the HTTP status,
/// or `None` when no answer came. Never receives request or response bodies.
pub trait RequestObserver: Send + Sync {
    fn observe(&self, vendor: &'static str, operation: &str, status: Option<u16>);
}

static OBSERVER: OnceLock<Arc<dyn RequestObserver>> = OnceLock::new();

/// Installs the process-wide observer; only the first call wins.
pub fn set_observer(observer: Arc<dyn RequestObserver>) {
    let _ = OBSERVER.set(observer);
}

/// Reports one HTTP attempt to the observer, if one is installed.
pub fn record(vendor: &'static str, operation: &str, status: Option<u16>) {
    if let Some(o) = OBSERVER.get() {
        o.observe(vendor, operation, status);
    }
}
