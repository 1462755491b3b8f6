//! Prometheus metrics, served as text on `/metrics`. Labels never carry secret material.

use std::sync::{Arc, Mutex};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VendorLabels {
    pub vendor: String,
    pub operation: String,
    /// HTTP status, or `error` when no answer came.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// Every metric the operator exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ReconcileLabels, Histogram>,
    pub vendor_requests: Family<VendorLabels, Counter>,
    pub expiry_timestamp: Family<ResourceLabels, Gauge>,
    pub renewal_timestamp: Family<ResourceLabels, Gauge>,
    pub ready: Family<ResourceLabels, Gauge>,
    /// Reconciles running now, and the most that ever ran at once, by kind.
    pub in_flight: Family<ReconcileLabels, Gauge>,
    pub in_flight_max: Family<ReconcileLabels, Gauge>,
}

/// Counts one running reconcile while alive (and raises the high-water mark).
pub struct InFlight {
    gauge: Gauge,
}

impl InFlight {
    pub fn start(metrics: &Metrics, labels: &ReconcileLabels) -> Self {
        let gauge = metrics.in_flight.get_or_create(labels).clone();
        let now = gauge.inc() + 1;
        metrics.in_flight_max.get_or_create(labels).inner().fetch_max(now, std::sync::atomic::Ordering::Relaxed);
        Self { gauge }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("workload_key_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = Family::<ReconcileLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        let vendor_requests = Family::<VendorLabels, Counter>::default();
        let expiry_timestamp = Family::<ResourceLabels, Gauge>::default();
        let renewal_timestamp = Family::<ResourceLabels, Gauge>::default();
        let ready = Family::<ResourceLabels, Gauge>::default();
        let in_flight = Family::<ReconcileLabels, Gauge>::default();
        let in_flight_max = Family::<ReconcileLabels, Gauge>::default();
        registry.register("reconciles_in_flight", "Reconciles running now, by kind", in_flight.clone());
        registry.register(
            "reconciles_in_flight_max",
            "The most reconciles that ran at once since start, by kind (bounded by --max-concurrent-reconciles)",
            in_flight_max.clone(),
        );
        registry.register("reconciles", "Reconciliations by resource kind", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciliations by kind and condition reason",
            reconcile_errors.clone(),
        );
        registry.register("reconcile_duration_seconds", "Duration of reconciliations", reconcile_duration.clone());
        registry.register(
            "vendor_requests",
            "Vendor API requests by vendor, operation and HTTP status",
            vendor_requests.clone(),
        );
        registry.register(
            "credential_expiry_timestamp_seconds",
            "When the current credential expires (Unix time)",
            expiry_timestamp.clone(),
        );
        registry.register(
            "credential_renewal_timestamp_seconds",
            "When the current credential will be rotated (Unix time)",
            renewal_timestamp.clone(),
        );
        registry.register("resource_ready", "1 when the resource is Ready, else 0", ready.clone());
        Self {
            registry: Arc::new(Mutex::new(registry)),
            reconciles,
            reconcile_errors,
            reconcile_duration,
            vendor_requests,
            expiry_timestamp,
            renewal_timestamp,
            ready,
            in_flight,
            in_flight_max,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry poisoned");
        encode(&mut out, &registry).expect("encoding into a String cannot fail");
        out
    }

    pub fn record_vendor_request(&self, vendor: &str, operation: &str, status: Option<u16>) {
        self.vendor_requests
            .get_or_create(&VendorLabels {
                vendor: vendor.to_owned(),
                operation: operation.to_owned(),
                status: status.map_or_else(|| "error".to_owned(), |s| s.to_string()),
            })
            .inc();
    }

    /// Drops the per-resource series of a deleted resource.
    pub fn forget_resource(&self, kind: &str, namespace: &str, name: &str) {
        let labels = ResourceLabels { kind: kind.to_owned(), namespace: namespace.to_owned(), name: name.to_owned() };
        self.expiry_timestamp.remove(&labels);
        self.renewal_timestamp.remove(&labels);
        self.ready.remove(&labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.reconciles.get_or_create(&ReconcileLabels { kind: "WorkloadApiKey".into() }).inc();
        m.record_vendor_request("trend", "create API key", Some(200));
        m.record_vendor_request("trend", "create API key", None);
        let text = m.render();
        assert!(text.contains("workload_key_operator_reconciles_total{kind=\"WorkloadApiKey\"} 1"), "{text}");
        assert!(text.contains("status=\"200\""), "{text}");
        assert!(text.contains("status=\"error\""), "{text}");
    }

    #[test]
    fn in_flight_counts_and_keeps_the_high_water_mark() {
        let m = Metrics::default();
        let labels = ReconcileLabels { kind: "WorkloadApiKey".into() };
        let a = InFlight::start(&m, &labels);
        let b = InFlight::start(&m, &labels);
        assert_eq!(m.in_flight.get_or_create(&labels).get(), 2);
        drop(a);
        drop(b);
        let _c = InFlight::start(&m, &labels);
        assert_eq!(m.in_flight.get_or_create(&labels).get(), 1);
        assert_eq!(m.in_flight_max.get_or_create(&labels).get(), 2);
    }
}
