//! What the API server counts of the requests made to it (`apiserver_request_total` from its `/metrics`), by
//! `"VERB resource[/subresource]"`: the scale benchmark's and the request-count test's measure.

use std::collections::{BTreeMap, HashMap};

use kube::Client;

pub type ApiRequests = BTreeMap<String, f64>;

/// `apiserver_request_total` for WorkloadApiKeys, Secrets and Events, by `"VERB resource[/subresource]"`.
pub async fn apiserver_requests(client: &Client) -> ApiRequests {
    apiserver_requests_of(client, &["workloadapikeys", "secrets", "events"]).await
}

/// `apiserver_request_total` for these resources (plural names), by `"VERB resource[/subresource]"`.
pub async fn apiserver_requests_of(client: &Client, resources: &[&str]) -> ApiRequests {
    let req = http::Request::get("/metrics").body(Vec::new()).expect("request");
    let text = client.request_text(req).await.unwrap_or_default();
    let mut out = ApiRequests::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let labels = prometheus_labels(labels);
        let resource = labels.get("resource").map(String::as_str).unwrap_or_default();
        if !resources.contains(&resource) {
            continue;
        }
        let sub = labels.get("subresource").map(String::as_str).unwrap_or_default();
        let verb = labels.get("verb").map(String::as_str).unwrap_or_default();
        let key = if sub.is_empty() { format!("{verb} {resource}") } else { format!("{verb} {resource}/{sub}") };
        *out.entry(key).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

pub fn prometheus_labels(s: &str) -> HashMap<String, String> {
    let inner = s.split_once('{').map(|(_, r)| r.trim_end_matches('}')).unwrap_or_default();
    let mut out = HashMap::new();
    let mut rest = inner;
    while let Some((key, after)) = rest.split_once("=\"") {
        let end = after.find('"').unwrap_or(after.len());
        out.insert(key.trim_start_matches(',').to_owned(), after[..end].to_owned());
        rest = after.get(end + 1..).unwrap_or_default();
    }
    out
}

/// Requests between two snapshots, per resource (watches and lists of the whole run are left out).
pub fn per_resource(before: &ApiRequests, after: &ApiRequests, n: usize) -> ApiRequests {
    after
        .iter()
        .filter(|(k, _)| !k.starts_with("WATCH") && !k.starts_with("LIST"))
        .map(|(k, v)| (k.clone(), (v - before.get(k).copied().unwrap_or(0.0)) / n.max(1) as f64))
        .filter(|(_, v)| *v >= 0.005)
        .collect()
}
