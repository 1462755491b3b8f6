//! The OpenAPI gateway: authenticates every `/openapi/` request before any routing, so an unknown path
//! with a bad signature is refused (403) and one with a good signature is not found (404).

use std::collections::BTreeSet;

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, StatusCode},
    middleware::Next,
    response::Response,
};

use super::{CiscoSim, text_response};
use crate::clients::cisco::{
    Capability,
    client::{INVALID_REQUEST_BODY, UNKNOWN_CREDENTIALS_BODY},
    signer::{self, HEADER_AUTHORIZATION, HEADER_CHECKSUM, HEADER_ID, HEADER_TIMESTAMP},
};

/// Largest body the gateway reads to check its sum.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// The key a request was signed with, for the routes' capability checks.
#[derive(Debug, Clone)]
pub(crate) struct AuthenticatedKey {
    pub capabilities: BTreeSet<Capability>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn unknown_credentials() -> Response {
    text_response(StatusCode::UNAUTHORIZED, UNKNOWN_CREDENTIALS_BODY)
}

fn invalid_request() -> Response {
    text_response(StatusCode::FORBIDDEN, INVALID_REQUEST_BODY)
}

pub(crate) async fn check(State(sim): State<CiscoSim>, request: Request, next: Next) -> Response {
    // Served at the listener's root (never nested), so the URI is the request-target as sent.
    let uri = request.uri().clone();
    if !uri.path().starts_with("/openapi/") && uri.path() != "/openapi" {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();

    // 1. The key must exist (401 otherwise, before anything else is looked at).
    let Some(api_key) = header(&parts.headers, HEADER_ID) else { return unknown_credentials() };
    let Some((secret, capabilities)) =
        sim.state().active_key(api_key).map(|k| (k.api_secret.clone(), k.capabilities.clone()))
    else {
        return unknown_credentials();
    };

    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return text_response(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    };

    // 2. A fresh timestamp.
    let Some(timestamp) = header(&parts.headers, HEADER_TIMESTAMP) else { return invalid_request() };
    let Ok(sent_at) = jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%z", timestamp) else { return invalid_request() };
    let skew = jiff::Timestamp::now().duration_since(sent_at).unsigned_abs();
    if skew > sim.max_clock_skew() {
        return invalid_request();
    }

    // 3. The body sum: required where tetpyclient sends it, checked wherever a client sends one.
    let method = parts.method.as_str();
    let checksum = header(&parts.headers, HEADER_CHECKSUM).unwrap_or("");
    let needs_checksum = !body.is_empty() && matches!(method, "POST" | "PUT" | "DELETE");
    if (needs_checksum || !checksum.is_empty()) && !checksum.eq_ignore_ascii_case(&signer::body_checksum(&body)) {
        return invalid_request();
    }

    // 4. The signature over the exact request-target.
    let target = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    let content_type = header(&parts.headers, "content-type").unwrap_or("");
    let message = signer::string_to_sign(method, target, checksum, content_type, timestamp);
    let authorization = header(&parts.headers, HEADER_AUTHORIZATION).unwrap_or("");
    if !signer::signature_matches(&secret, &message, authorization) {
        return invalid_request();
    }

    parts.extensions.insert(AuthenticatedKey { capabilities });
    next.run(Request::from_parts(parts, Body::from(body))).await
}
