//! Request counts per vendor endpoint, for tests that assert how often the operator called the vendor.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
};

use serde::Serialize;

#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointCount {
    pub total: u64,
    pub by_status: BTreeMap<u16, u64>,
}

/// How many arrival times [`RequestCounts`] keeps per vendor (the oldest go first).
pub const MAX_ARRIVALS: usize = 100_000;

/// `"METHOD /path"` (ids folded to `{id}`) → counts, per vendor; and when each request arrived.
#[derive(Debug, Default, Clone)]
pub struct RequestCounts {
    inner: Arc<Mutex<BTreeMap<String, BTreeMap<String, EndpointCount>>>>,
    arrivals: Arc<Mutex<BTreeMap<String, VecDeque<i64>>>>,
}

impl RequestCounts {
    /// A request to `vendor` arrived now (before any fault or route handles it).
    pub fn arrived(&self, vendor: &str) {
        let now = jiff::Timestamp::now().as_millisecond();
        let mut map = self.arrivals.lock().expect("arrivals poisoned");
        let times = map.entry(vendor.to_owned()).or_default();
        if times.len() == MAX_ARRIVALS {
            times.pop_front();
        }
        times.push_back(now);
    }

    /// When the requests to `vendor` arrived (Unix milliseconds, in order; the last [`MAX_ARRIVALS`]).
    pub fn arrivals(&self, vendor: &str) -> Vec<i64> {
        let map = self.arrivals.lock().expect("arrivals poisoned");
        map.get(vendor).map(|t| t.iter().copied().collect()).unwrap_or_default()
    }

    /// The most requests to `vendor` that arrived within any `window_ms` (half-open).
    pub fn max_in_window(&self, vendor: &str, window_ms: i64) -> usize {
        let times = self.arrivals(vendor);
        let mut lo = 0;
        let mut most = 0;
        for hi in 0..times.len() {
            while times[hi] - times[lo] >= window_ms {
                lo += 1;
            }
            most = most.max(hi - lo + 1);
        }
        most
    }

    pub fn record(&self, vendor: &str, method: &str, path: &str, status: u16) {
        let key = format!("{method} {}", normalize_path(path));
        let mut map = self.inner.lock().expect("counts poisoned");
        let entry = map.entry(vendor.to_owned()).or_default().entry(key).or_default();
        entry.total += 1;
        *entry.by_status.entry(status).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<String, BTreeMap<String, EndpointCount>> {
        self.inner.lock().expect("counts poisoned").clone()
    }

    /// Total requests a vendor received whose key starts with `method_and_prefix` (e.g. `"POST /api/apikeys"`).
    pub fn total(&self, vendor: &str, method_and_prefix: &str) -> u64 {
        let map = self.inner.lock().expect("counts poisoned");
        map.get(vendor)
            .map(|m| m.iter().filter(|(k, _)| k.starts_with(method_and_prefix)).map(|(_, v)| v.total).sum())
            .unwrap_or(0)
    }

    pub fn reset(&self) {
        self.inner.lock().expect("counts poisoned").clear();
        self.arrivals.lock().expect("arrivals poisoned").clear();
    }
}

/// Folds numeric segments and long hex ids into `{id}` so counts group by endpoint, not by object.
pub fn normalize_path(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    path.split('/')
        .map(|seg| {
            let (stem, ext) = seg.split_once('.').unwrap_or((seg, ""));
            let is_id = !stem.is_empty()
                && (stem.bytes().all(|b| b.is_ascii_digit())
                    || (stem.len() >= 16 && stem.bytes().all(|b| b.is_ascii_hexdigit())));
            match (is_id, ext) {
                (true, "") => "{id}".to_owned(),
                (true, ext) => format!("{{id}}.{ext}"),
                _ => seg.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_folded() {
        assert_eq!(normalize_path("/api/apikeys/42/secretkey"), "/api/apikeys/{id}/secretkey");
        assert_eq!(
            normalize_path("/api/api_credentials/5ce480db497d4f1ca1fc2b2b.json"),
            "/api/api_credentials/{id}.json"
        );
        assert_eq!(normalize_path("/openapi/v1/users?include_disabled=true"), "/openapi/v1/users");
        assert_eq!(normalize_path("/api/apikeys/current"), "/api/apikeys/current");
    }

    #[test]
    fn counts_by_endpoint_and_status() {
        let c = RequestCounts::default();
        c.record("trend", "POST", "/api/apikeys", 200);
        c.record("trend", "POST", "/api/apikeys", 429);
        c.record("trend", "GET", "/api/apikeys/3", 200);
        assert_eq!(c.total("trend", "POST /api/apikeys"), 2);
        assert_eq!(c.total("trend", "GET /api/apikeys/"), 1);
        let snap = c.snapshot();
        assert_eq!(snap["trend"]["POST /api/apikeys"].by_status[&429], 1);
        c.reset();
        assert_eq!(c.total("trend", ""), 0);
    }

    #[test]
    fn arrivals_are_kept_bounded_and_windows_counted() {
        let c = RequestCounts::default();
        for _ in 0..3 {
            c.arrived("trend");
        }
        assert_eq!(c.arrivals("trend").len(), 3);
        assert_eq!(c.max_in_window("trend", 60_000), 3);
        assert_eq!(c.max_in_window("cisco", 60_000), 0);
        let spaced = RequestCounts::default();
        spaced.arrivals.lock().unwrap().insert("t".into(), [0, 500, 1_000, 1_499, 2_600].into_iter().collect());
        assert_eq!(spaced.max_in_window("t", 1_000), 3, "1000 is outside [0, 1000)");
        for _ in 0..MAX_ARRIVALS + 5 {
            c.arrived("trend");
        }
        assert_eq!(c.arrivals("trend").len(), MAX_ARRIVALS);
        c.reset();
        assert!(c.arrivals("trend").is_empty());
    }
}
