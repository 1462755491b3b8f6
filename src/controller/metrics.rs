//! Prometheus metrics, served as text on `/metrics`. Labels never carry secret material.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, text::encode},
    metrics::{MetricType, counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
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
    /// The endpoint's origin (`https://host:port`): no path, no credentials.
    pub endpoint: String,
    pub operation: String,
    /// HTTP status, or `error` when no answer came.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub vendor: String,
    pub endpoint: String,
}

/// A provider (few: one series each, set by the provider reconciler).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub kind: String,
    pub namespace: String,
}

/// Every metric the operator exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconciles turned away before they started: their namespace's share of reconciles waiting for the vendor
    /// budget was taken (`reconcile::vendor_share`).
    pub reconciles_deferred: Family<ReconcileLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ReconcileLabels, Histogram>,
    pub vendor_requests: Family<VendorLabels, Counter>,
    /// Vendor request latency, by endpoint.
    pub vendor_request_duration: Family<EndpointLabels, Histogram>,
    /// How many resources use the provider (its `status.inUse`).
    pub provider_users: Family<ProviderLabels, Gauge>,
    /// Seconds requests spent waiting for an endpoint's rate limit (`--vendor-rate-limit`).
    pub vendor_rate_limit_wait: Family<EndpointLabels, Counter<f64>>,
    /// 1 when the provider is Ready, else 0.
    pub provider_ready: Family<ProviderLabels, Gauge>,
    /// Replaced keys revoked before the rollouts of their restart targets completed (`RolloutIncomplete`).
    pub rollouts_incomplete: Family<NamespaceLabels, Counter>,
    /// 1 while this process reconciles (it holds the Lease, or leader election is off), else 0.
    pub leader: Gauge,
    /// Per resource: ready, credential expiry and renewal.
    pub resources: Arc<ResourceSeries>,
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
        let reconciles_deferred = Family::<ReconcileLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = Family::<ReconcileLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        let vendor_requests = Family::<VendorLabels, Counter>::default();
        let vendor_rate_limit_wait = Family::<EndpointLabels, Counter<f64>>::default();
        let vendor_request_duration = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        let provider_users = Family::<ProviderLabels, Gauge>::default();
        let provider_ready = Family::<ProviderLabels, Gauge>::default();
        let rollouts_incomplete = Family::<NamespaceLabels, Counter>::default();
        let leader = Gauge::default();
        let resources = Arc::new(ResourceSeries::default());
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
            "reconciles_deferred",
            "Reconciles turned away before they started, by kind: their namespace already had its share of \
             reconciles waiting for the vendor's rate limit",
            reconciles_deferred.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciliations by kind and condition reason",
            reconcile_errors.clone(),
        );
        registry.register("reconcile_duration_seconds", "Duration of reconciliations", reconcile_duration.clone());
        registry.register(
            "vendor_requests",
            "Vendor API requests by vendor, endpoint (origin), operation and HTTP status",
            vendor_requests.clone(),
        );
        registry.register(
            "vendor_rate_limit_wait_seconds",
            "Seconds vendor requests waited for their endpoint's rate limit (--vendor-rate-limit)",
            vendor_rate_limit_wait.clone(),
        );
        registry.register(
            "vendor_request_duration_seconds",
            "Vendor API request latency (sent to answered), by vendor and endpoint",
            vendor_request_duration.clone(),
        );
        registry.register("provider_ready", "1 when the provider is Ready, else 0", provider_ready.clone());
        registry.register("provider_users", "How many resources use the provider", provider_users.clone());
        registry.register(
            "rollouts_incomplete",
            "Replaced keys revoked before the rollouts of their restart targets completed (Event RolloutIncomplete)",
            rollouts_incomplete.clone(),
        );
        registry.register(
            "leader",
            "1 while this process reconciles (it holds the Lease, or leader election is off), else 0",
            leader.clone(),
        );
        registry.register_collector(Box::new(resources.clone()));
        Self {
            registry: Arc::new(Mutex::new(registry)),
            reconciles,
            reconciles_deferred,
            reconcile_errors,
            reconcile_duration,
            vendor_requests,
            vendor_rate_limit_wait,
            vendor_request_duration,
            provider_users,
            provider_ready,
            rollouts_incomplete,
            leader,
            resources,
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

    pub fn record_vendor_request(&self, vendor: &str, endpoint: &str, operation: &str, status: Option<u16>) {
        self.vendor_requests
            .get_or_create(&VendorLabels {
                vendor: vendor.to_owned(),
                endpoint: endpoint.to_owned(),
                operation: operation.to_owned(),
                status: status.map_or_else(|| "error".to_owned(), |s| s.to_string()),
            })
            .inc();
    }

    pub fn record_rate_limit_wait(&self, vendor: &str, endpoint: &str, seconds: f64) {
        let labels = EndpointLabels { vendor: vendor.to_owned(), endpoint: endpoint.to_owned() };
        self.vendor_rate_limit_wait.get_or_create(&labels).inc_by(seconds);
    }

    pub fn record_vendor_duration(&self, vendor: &str, endpoint: &str, seconds: f64) {
        let labels = EndpointLabels { vendor: vendor.to_owned(), endpoint: endpoint.to_owned() };
        self.vendor_request_duration.get_or_create(&labels).observe(seconds);
    }

    pub fn set_provider_ready(&self, kind: &str, namespace: &str, name: &str, ready: bool, users: i64) {
        let labels = ProviderLabels { kind: kind.to_owned(), namespace: namespace.to_owned(), name: name.to_owned() };
        self.provider_ready.get_or_create(&labels).set(i64::from(ready));
        self.provider_users.get_or_create(&labels).set(users);
    }

    pub fn forget_provider(&self, kind: &str, namespace: &str, name: &str) {
        let labels = ProviderLabels { kind: kind.to_owned(), namespace: namespace.to_owned(), name: name.to_owned() };
        self.provider_ready.remove(&labels);
        self.provider_users.remove(&labels);
    }

    /// Drops the per-resource series of a deleted resource.
    pub fn forget_resource(&self, kind: &str, namespace: &str, name: &str) {
        self.resources.forget(kind, namespace, name);
    }
}

/// The three per-resource gauges, kept in one compact table rather than three label-keyed families: at 10,000
/// resources the families held 30,000 series, each with its own copy of the kind, namespace and name strings and
/// its own atomic. Here each resource is one row; kinds and namespaces are stored once and shared.
#[derive(Debug, Default)]
pub struct ResourceSeries {
    table: Mutex<Table>,
}

/// Which per-resource gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    /// `resource_ready`: 1 when Ready, else 0.
    Ready = 0,
    /// `credential_expiry_timestamp_seconds`.
    Expiry = 1,
    /// `credential_renewal_timestamp_seconds`.
    Renewal = 2,
}

/// Name and help of each [`Series`], in its order.
const SERIES: [(&str, &str); 3] = [
    ("resource_ready", "1 when the resource is Ready, else 0"),
    ("credential_expiry_timestamp_seconds", "When the current credential expires (Unix time)"),
    ("credential_renewal_timestamp_seconds", "When the current credential will be rotated (Unix time)"),
];

#[derive(Debug, Default)]
struct Table {
    /// Kinds and namespaces, each stored once; a namespace goes when its last row does.
    interned: HashSet<Arc<str>>,
    rows: HashMap<RowKey, [Option<i64>; 3]>,
}

#[derive(Debug, Hash, PartialEq, Eq)]
struct RowKey {
    kind: Arc<str>,
    namespace: Arc<str>,
    name: Box<str>,
}

impl Table {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.interned.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.interned.insert(a.clone());
        a
    }

    fn key(&mut self, kind: &str, namespace: &str, name: &str) -> RowKey {
        RowKey { kind: self.intern(kind), namespace: self.intern(namespace), name: name.into() }
    }

    /// Drops an interned string only the interner still holds.
    fn release(&mut self, s: Arc<str>) {
        // Two holders left: the interner and `s` itself.
        if Arc::strong_count(&s) <= 2 {
            self.interned.remove(&*s);
        }
    }
}

impl ResourceSeries {
    pub fn set(&self, kind: &str, namespace: &str, name: &str, series: Series, value: i64) {
        let mut table = self.table.lock().expect("metrics table poisoned");
        let key = table.key(kind, namespace, name);
        table.rows.entry(key).or_default()[series as usize] = Some(value);
    }

    /// The value of one gauge, if set.
    #[cfg(test)]
    pub fn get(&self, kind: &str, namespace: &str, name: &str, series: Series) -> Option<i64> {
        let mut table = self.table.lock().expect("metrics table poisoned");
        let key = table.key(kind, namespace, name);
        let value = table.rows.get(&key).and_then(|row| row[series as usize]);
        let RowKey { kind, namespace, .. } = key;
        table.release(kind);
        table.release(namespace);
        value
    }

    /// Drops every gauge of one resource.
    pub fn forget(&self, kind: &str, namespace: &str, name: &str) {
        let mut table = self.table.lock().expect("metrics table poisoned");
        let key = table.key(kind, namespace, name);
        let removed = table.rows.remove_entry(&key).map(|(k, _)| k);
        let RowKey { kind, namespace, .. } = key;
        table.release(kind);
        table.release(namespace);
        if let Some(RowKey { kind, namespace, .. }) = removed {
            table.release(kind);
            table.release(namespace);
        }
    }

    /// How many resources have a row.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table.lock().expect("metrics table poisoned").rows.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Collector for ResourceSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let table = self.table.lock().expect("metrics table poisoned");
        for (i, (name, help)) in SERIES.iter().enumerate() {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (key, row) in &table.rows {
                if let Some(value) = row[i] {
                    let labels = [("kind", &*key.kind), ("namespace", &*key.namespace), ("name", &*key.name)];
                    metric.encode_family(&labels)?.encode_gauge(&value)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.reconciles.get_or_create(&ReconcileLabels { kind: "WorkloadApiKey".into() }).inc();
        m.record_vendor_request("trend", "https://dsm:4119", "create API key", Some(200));
        m.record_vendor_request("trend", "https://dsm:4119", "create API key", None);
        m.record_rate_limit_wait("trend", "https://dsm:4119", 0.5);
        m.set_provider_ready("ClusterKeyProvider", "", "platform", true, 3);
        m.record_vendor_duration("trend", "https://dsm:4119", 0.2);
        m.leader.set(1);
        let text = m.render();
        assert!(text.contains("workload_key_operator_reconciles_total{kind=\"WorkloadApiKey\"} 1"), "{text}");
        assert!(text.contains("status=\"200\""), "{text}");
        assert!(text.contains("status=\"error\""), "{text}");
        assert!(text.contains("endpoint=\"https://dsm:4119\""), "{text}");
        assert!(text.contains("workload_key_operator_vendor_rate_limit_wait_seconds_total{vendor=\"trend\",endpoint=\"https://dsm:4119\"} 0.5"), "{text}");
        assert!(
            text.contains(
                "workload_key_operator_provider_ready{kind=\"ClusterKeyProvider\",namespace=\"\",name=\"platform\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("workload_key_operator_leader 1"), "{text}");
        m.forget_provider("ClusterKeyProvider", "", "platform");
        assert!(!m.render().contains("name=\"platform\""));
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

    #[test]
    fn per_resource_series_render_share_strings_and_go_with_the_resource() {
        let m = Metrics::default();
        let r = &m.resources;
        r.set("WorkloadApiKey", "team-a", "one", Series::Ready, 1);
        r.set("WorkloadApiKey", "team-a", "one", Series::Expiry, 1_700_000_000);
        r.set("WorkloadApiKey", "team-a", "two", Series::Ready, 0);
        r.set("SecureWorkloadCredential", "team-b", "one", Series::Renewal, 42);
        r.set("WorkloadApiKey", "team-a", "one", Series::Ready, 0);
        assert_eq!(r.len(), 3);
        assert_eq!(r.get("WorkloadApiKey", "team-a", "one", Series::Ready), Some(0));
        assert_eq!(r.get("WorkloadApiKey", "team-a", "one", Series::Renewal), None);
        let text = m.render();
        for line in [
            "# TYPE workload_key_operator_resource_ready gauge",
            r#"workload_key_operator_resource_ready{kind="WorkloadApiKey",namespace="team-a",name="one"} 0"#,
            r#"workload_key_operator_resource_ready{kind="WorkloadApiKey",namespace="team-a",name="two"} 0"#,
            r#"workload_key_operator_credential_expiry_timestamp_seconds{kind="WorkloadApiKey",namespace="team-a",name="one"} 1700000000"#,
            r#"workload_key_operator_credential_renewal_timestamp_seconds{kind="SecureWorkloadCredential",namespace="team-b",name="one"} 42"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("credential_renewal_timestamp_seconds{kind=\"WorkloadApiKey\""), "unset: not rendered");
        // Kinds and namespaces are stored once, and released with their last row.
        assert_eq!(r.table.lock().unwrap().interned.len(), 4);
        m.forget_resource("SecureWorkloadCredential", "team-b", "one");
        m.forget_resource("WorkloadApiKey", "team-a", "two");
        m.forget_resource("WorkloadApiKey", "team-a", "absent");
        assert_eq!(r.len(), 1);
        let interned = r.table.lock().unwrap().interned.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        assert_eq!(interned, HashSet::from(["WorkloadApiKey".to_owned(), "team-a".to_owned()]));
        m.forget_resource("WorkloadApiKey", "team-a", "one");
        assert!(r.is_empty());
        assert!(r.table.lock().unwrap().interned.is_empty());
        assert!(!m.render().contains("team-a"));
    }
}
