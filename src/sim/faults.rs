//! Fault injection: per vendor and path prefix, by count or probability. Applied before the vendor's routes.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::Response,
};
use serde::{Deserialize, Serialize};

use super::counts::RequestCounts;

/// One fault rule, as posted to the control port's `/faults`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    #[serde(default)]
    pub id: u64,
    /// `trend` or `cisco`.
    pub vendor: String,
    /// Requests whose path starts with this are affected ("" or "/" for all).
    #[serde(default)]
    pub path_prefix: String,
    /// Only this method, when set.
    #[serde(default)]
    pub method: Option<String>,
    /// Answer with this status instead of routing.
    #[serde(default)]
    pub status: Option<u16>,
    /// Body for `status`; default is the vendor's usual error shape.
    #[serde(default)]
    pub body: Option<String>,
    /// `Retry-After` seconds to send with `status`.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// `Location` to send with a 3xx `status` (any URL, e.g. another origin).
    #[serde(default)]
    pub location: Option<String>,
    /// Body for `status` of exactly this many bytes, streamed in 64 KiB chunks (never held in memory at once).
    #[serde(default)]
    pub body_bytes: Option<u64>,
    /// Body for `status` that echoes the value of this request header (as a misbehaving vendor or proxy would).
    #[serde(default)]
    pub echo_header: Option<String>,
    /// Delay before answering (then routed normally unless `status` or `drop` is set).
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Close the connection without an answer.
    #[serde(default)]
    pub drop: bool,
    /// How many matching requests to affect; unlimited when absent.
    #[serde(default)]
    pub count: Option<u64>,
    /// Chance that a matching request is affected (0.0..=1.0).
    #[serde(default = "one")]
    pub probability: f64,
}

fn one() -> f64 {
    1.0
}

/// Marker a response carries when the connection must be dropped instead of answered.
#[derive(Debug, Clone, Copy)]
pub struct DropConnection;

#[derive(Debug, Default, Clone)]
pub struct Faults {
    inner: Arc<Mutex<FaultState>>,
}

#[derive(Debug, Default)]
struct FaultState {
    next_id: u64,
    rules: Vec<FaultRule>,
}

impl Faults {
    pub fn add(&self, mut rule: FaultRule) -> Result<u64, String> {
        if !(0.0..=1.0).contains(&rule.probability) {
            return Err("probability must be between 0 and 1".into());
        }
        if rule.status.is_none() && rule.latency_ms.is_none() && !rule.drop {
            return Err("a fault needs status, latencyMs or drop".into());
        }
        if let Some(s) = rule.status
            && StatusCode::from_u16(s).is_err()
        {
            return Err(format!("invalid status {s}"));
        }
        let shapes = [rule.body.is_some(), rule.body_bytes.is_some(), rule.echo_header.is_some()];
        if shapes.iter().filter(|s| **s).count() > 1 {
            return Err("body, bodyBytes and echoHeader exclude each other".into());
        }
        if (rule.location.is_some() || shapes.contains(&true)) && rule.status.is_none() {
            return Err("location, body, bodyBytes and echoHeader need a status".into());
        }
        if rule.location.is_some() && !rule.status.is_some_and(|s| (300..400).contains(&s)) {
            return Err("location needs a 3xx status".into());
        }
        if let Some(l) = &rule.location
            && HeaderValue::from_str(l).is_err()
        {
            return Err("location is not a valid header value".into());
        }
        let mut st = self.inner.lock().expect("faults poisoned");
        st.next_id += 1;
        rule.id = st.next_id;
        st.rules.push(rule);
        Ok(st.next_id)
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.inner.lock().expect("faults poisoned").rules.clone()
    }

    pub fn remove(&self, id: u64) -> bool {
        let mut st = self.inner.lock().expect("faults poisoned");
        let before = st.rules.len();
        st.rules.retain(|r| r.id != id);
        st.rules.len() != before
    }

    pub fn clear(&self) {
        self.inner.lock().expect("faults poisoned").rules.clear();
    }

    /// The first rule matching this request whose chance hits, consuming one of its count (a rule whose chance
    /// misses lets the next matching one try, so that e.g. 25 % 429s and 33 % of the rest 500s make half the
    /// requests fail). Exhausted rules are removed.
    fn take_match(&self, vendor: &str, method: &str, path: &str) -> Option<FaultRule> {
        let mut st = self.inner.lock().expect("faults poisoned");
        let idx = st.rules.iter().position(|r| {
            r.vendor == vendor
                && path.starts_with(r.path_prefix.as_str())
                && r.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
                && (r.probability >= 1.0 || rand::random::<f64>() < r.probability)
        })?;
        let rule = st.rules[idx].clone();
        if let Some(count) = st.rules[idx].count.as_mut() {
            *count = count.saturating_sub(1);
            if *count == 0 {
                st.rules.remove(idx);
            }
        }
        Some(rule)
    }
}

/// State of the per-vendor middleware.
#[derive(Debug, Clone)]
pub struct VendorLayerState {
    pub vendor: &'static str,
    pub faults: Faults,
    pub counts: RequestCounts,
}

/// Counts every request and applies the first matching fault before the vendor's own routes see it.
pub async fn apply(State(state): State<VendorLayerState>, request: Request, next: Next) -> Response {
    state.counts.arrived(state.vendor);
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let response = match state.faults.take_match(state.vendor, &method, &path) {
        None => next.run(request).await,
        Some(rule) => {
            if let Some(ms) = rule.latency_ms {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if rule.drop {
                let mut r = Response::new(Body::empty());
                r.extensions_mut().insert(DropConnection);
                r
            } else if let Some(status) = rule.status {
                let body = match (&rule.echo_header, rule.body_bytes) {
                    (Some(name), _) => FaultBody::Text(Some(echo_body(state.vendor, name, request.headers()))),
                    (None, Some(n)) => FaultBody::Stream(n),
                    (None, None) => FaultBody::Text(rule.body.clone()),
                };
                let mut r = fault_response(error_shape(state.vendor, &path), status, body, rule.retry_after);
                if let Some(location) = rule.location.as_deref().and_then(|l| HeaderValue::from_str(l).ok()) {
                    r.headers_mut().insert(header::LOCATION, location);
                }
                r
            } else {
                next.run(request).await
            }
        }
    };
    let status = if response.extensions().get::<DropConnection>().is_some() { 0 } else { response.status().as_u16() };
    state.counts.record(state.vendor, &method, &path, status);
    response
}

/// What a fault answers with.
enum FaultBody {
    /// This text, or the vendor's usual error shape when absent.
    Text(Option<String>),
    /// This many bytes, streamed.
    Stream(u64),
}

/// An error body holding a request header's value, in the vendor's error shape.
fn echo_body(vendor: &str, name: &str, headers: &axum::http::HeaderMap) -> String {
    let value = headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default();
    let message = format!("Request rejected; it carried {name}: {value}");
    if vendor == "trend" { serde_json::json!({ "message": message }).to_string() } else { message }
}

/// `n` bytes of JSON-looking filler in 64 KiB chunks, generated as they are sent.
fn streamed(n: u64) -> Body {
    const CHUNK: usize = 64 * 1024;
    let chunk = bytes::Bytes::from(vec![b' '; CHUNK]);
    let stream = futures::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            (left > 0).then(|| {
                let take = left.min(CHUNK as u64);
                (Ok::<_, std::convert::Infallible>(chunk.slice(..take as usize)), left - take)
            })
        }
    });
    Body::from_stream(stream)
}

/// Whose error body an injected fault imitates: Vision One (`/v3.0/...` on the Trend listener) has its own.
fn error_shape<'a>(vendor: &'a str, path: &str) -> &'a str {
    if vendor == "trend" && path.starts_with("/v3.0/") { "visionone" } else { vendor }
}

fn fault_response(vendor: &str, status: u16, body: FaultBody, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = code.canonical_reason().unwrap_or("Error");
    let body = match body {
        FaultBody::Text(text) => text,
        FaultBody::Stream(n) => {
            let mut r = Response::new(streamed(n));
            *r.status_mut() = code;
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return r;
        }
    };
    let (content_type, body) = match (vendor, body) {
        (_, Some(b)) if b.trim_start().starts_with('{') => ("application/json", b),
        (_, Some(b)) => ("text/plain; charset=utf-8", b),
        ("trend", None) if status == 429 => ("application/json", r#"{"message":"Too many API requests"}"#.to_owned()),
        ("trend", None) => ("application/json", serde_json::json!({ "message": reason }).to_string()),
        ("visionone", None) => {
            let code = reason.replace(' ', "");
            ("application/json", serde_json::json!({ "error": { "code": code, "message": reason } }).to_string())
        }
        (_, None) => ("text/plain; charset=utf-8", reason.to_owned()),
    };
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = code;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(secs) = retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str) -> FaultRule {
        serde_json::from_value(serde_json::json!({"vendor": "trend", "pathPrefix": prefix, "status": 503, "count": 2}))
            .unwrap()
    }

    #[test]
    fn count_limited_rules_expire() {
        let f = Faults::default();
        f.add(rule("/api/apikeys")).unwrap();
        assert!(f.take_match("trend", "GET", "/api/roles").is_none());
        assert!(f.take_match("cisco", "GET", "/api/apikeys").is_none());
        assert!(f.take_match("trend", "GET", "/api/apikeys/1").is_some());
        assert!(f.take_match("trend", "POST", "/api/apikeys").is_some());
        assert!(f.take_match("trend", "POST", "/api/apikeys").is_none());
        assert!(f.list().is_empty());
    }

    #[test]
    fn a_missed_chance_falls_through_to_the_next_rule() {
        let f = Faults::default();
        let parse = |v: serde_json::Value| serde_json::from_value::<FaultRule>(v).unwrap();
        f.add(parse(serde_json::json!({"vendor": "trend", "status": 429, "probability": 0.0}))).unwrap();
        f.add(parse(serde_json::json!({"vendor": "trend", "status": 500, "count": 1}))).unwrap();
        assert_eq!(f.take_match("trend", "GET", "/api/apikeys").and_then(|r| r.status), Some(500));
        assert!(f.take_match("trend", "GET", "/api/apikeys").is_none(), "the 429 rule never hits");
    }

    #[test]
    fn body_shapes_need_a_status_and_location_a_3xx() {
        let f = Faults::default();
        let parse = |v: serde_json::Value| serde_json::from_value::<FaultRule>(v).unwrap();
        assert!(f.add(parse(serde_json::json!({"vendor": "trend", "bodyBytes": 10, "latencyMs": 1}))).is_err());
        assert!(f.add(parse(serde_json::json!({"vendor": "trend", "status": 500, "location": "http://x/"}))).is_err());
        assert!(
            f.add(parse(serde_json::json!({"vendor": "trend", "status": 500, "body": "x", "bodyBytes": 1}))).is_err()
        );
        assert!(f.add(parse(serde_json::json!({"vendor": "trend", "status": 307, "location": "http://x/"}))).is_ok());
        assert!(f.add(parse(serde_json::json!({"vendor": "trend", "status": 200, "bodyBytes": 52428800}))).is_ok());
        assert!(f.add(parse(serde_json::json!({"vendor": "cisco", "status": 400, "echoHeader": "Id"}))).is_ok());
    }

    #[tokio::test]
    async fn streamed_bodies_have_the_exact_length() {
        let body = streamed(200_000);
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert_eq!(bytes.len(), 200_000);
    }

    #[test]
    fn echo_bodies_carry_the_header_in_the_vendor_shape() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("api-secret-key", HeaderValue::from_static("1:abc"));
        let trend: serde_json::Value = serde_json::from_str(&echo_body("trend", "api-secret-key", &h)).unwrap();
        assert_eq!(trend["message"], "Request rejected; it carried api-secret-key: 1:abc");
        assert_eq!(echo_body("cisco", "x-missing", &h), "Request rejected; it carried x-missing: ");
    }

    #[test]
    fn rejects_empty_and_bad_rules() {
        let f = Faults::default();
        let mut r = rule("/");
        r.status = None;
        assert!(f.add(r).is_err());
        let mut r = rule("/");
        r.probability = 2.0;
        assert!(f.add(r).is_err());
    }
}
