//! Cisco Secure Workload simulator: the signed OpenAPI under `/openapi/v1` behind a gateway that checks
//! key, timestamp, body checksum and signature before routing (as the real service's front end does),
//! the capability table of docs/vendor-apis.md §9.2, and the web UI's private session API for minting keys
//! (docs/vendor-apis.md §11).
//!
//! Answers follow what was recorded on a real tenant (docs/vendor-apis.md §10): 401 `text/plain`
//! `Unknown credentials` for an unknown key, 403 `text/plain` `Invalid request` for a refused
//! signature, `application/json; charset=utf-8` on success. What the service answers for a missing
//! capability is UNCONFIRMED; this simulator answers 403 with the Rails-style JSON
//! `{"error": "..."}` so clients can tell it from a refused signature.

mod control;
mod gateway;
mod openapi;
mod ui;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use rand::RngCore as _;

use crate::clients::{SecretString, cisco::Capability};

/// Default accepted difference between a request's `Timestamp` and the simulator's clock.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// What the simulator starts with. Unset values are random (key 32 hex digits, secret 40, as the
/// vendor's UI issues them).
#[derive(Debug, Clone, Default)]
pub struct CiscoSimOptions {
    pub api_key: Option<String>,
    pub api_secret: Option<SecretString>,
    pub ui_email: Option<String>,
    pub ui_password: Option<SecretString>,
    /// Accepted clock skew of signed requests; [`DEFAULT_MAX_CLOCK_SKEW`] when unset.
    pub max_clock_skew: Option<Duration>,
}

/// A handle on the simulator; clones share state.
#[derive(Clone)]
pub struct CiscoSim {
    inner: Arc<Inner>,
}

struct Inner {
    max_clock_skew: Duration,
    state: Mutex<SimState>,
}

impl std::fmt::Debug for CiscoSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CiscoSim").field("max_clock_skew", &self.inner.max_clock_skew).finish_non_exhaustive()
    }
}

/// One API key as the vendor stores it.
#[derive(Debug, Clone)]
pub(crate) struct KeyRecord {
    /// The UI's id of the key.
    pub id: String,
    pub api_key: String,
    pub api_secret: SecretString,
    pub description: String,
    pub capabilities: BTreeSet<Capability>,
    /// Revoked keys are unknown to the OpenAPI (401) and gone from the UI list.
    pub revoked: bool,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct UiUser {
    pub email: String,
    pub password: SecretString,
}

/// A browser session of the UI.
#[derive(Debug, Clone)]
pub(crate) struct UiSessionState {
    pub csrf_token: String,
    /// The signed-in user's email; `None` before sign-in.
    pub user: Option<String>,
}

/// An API key as the test handle shows it: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimKey {
    /// The UI's id of the key.
    pub id: String,
    pub api_key: String,
    pub description: String,
    pub capabilities: Vec<Capability>,
    /// Revoked keys are unknown to the OpenAPI and gone from the UI list.
    pub revoked: bool,
}

#[derive(Debug)]
pub(crate) struct SimState {
    pub keys: Vec<KeyRecord>,
    pub ui_user: UiUser,
    pub sessions: HashMap<String, UiSessionState>,
    /// Every session id and CSRF token the UI ever issued (for leak checks; sessions end on sign-in).
    pub issued_ui_secrets: Vec<String>,
    pub data: openapi::Data,
    seeded_api_key: String,
}

impl SimState {
    pub fn active_key(&self, api_key: &str) -> Option<&KeyRecord> {
        self.keys.iter().find(|k| k.api_key == api_key && !k.revoked)
    }

    /// Adds a key with fresh random values and returns it.
    pub fn mint_key(&mut self, description: &str, capabilities: BTreeSet<Capability>, created_by: &str) -> KeyRecord {
        let record = KeyRecord {
            id: random_hex(12),
            api_key: random_hex(16),
            api_secret: SecretString::new(random_hex(20)),
            description: description.to_owned(),
            capabilities,
            revoked: false,
            created_by: created_by.to_owned(),
            created_at: now_epoch(),
        };
        self.keys.push(record.clone());
        record
    }
}

impl CiscoSim {
    pub fn new(opts: CiscoSimOptions) -> Self {
        let ui_email = opts.ui_email.unwrap_or_else(|| "site-admin@example.com".to_owned());
        let ui_user = UiUser {
            email: ui_email.clone(),
            password: opts.ui_password.unwrap_or_else(|| SecretString::new(random_hex(12))),
        };
        let seeded = KeyRecord {
            id: random_hex(12),
            api_key: opts.api_key.unwrap_or_else(|| random_hex(16)),
            api_secret: opts.api_secret.unwrap_or_else(|| SecretString::new(random_hex(20))),
            description: "seeded by vendor-sim".to_owned(),
            capabilities: Capability::ALL.into_iter().collect(),
            revoked: false,
            created_by: ui_email.clone(),
            created_at: now_epoch(),
        };
        let state = SimState {
            seeded_api_key: seeded.api_key.clone(),
            keys: vec![seeded],
            data: openapi::Data::seeded(&ui_email),
            ui_user,
            sessions: HashMap::new(),
            issued_ui_secrets: Vec::new(),
        };
        Self {
            inner: Arc::new(Inner {
                max_clock_skew: opts.max_clock_skew.unwrap_or(DEFAULT_MAX_CLOCK_SKEW),
                state: Mutex::new(state),
            }),
        }
    }

    /// The OpenAPI and the UI, served at the HTTPS root of the vendor's listener. The gateway check
    /// wraps every `/openapi/` request, the fallback included.
    pub fn api_router(&self) -> Router {
        Router::new()
            .merge(openapi::routes())
            .merge(ui::routes())
            .fallback(openapi::not_found)
            .layer(axum::middleware::from_fn_with_state(self.clone(), gateway::check))
            .with_state(self.clone())
    }

    /// Test-only administration, nested under `/cisco` on the control port.
    pub fn control_router(&self) -> Router {
        control::routes().with_state(self.clone())
    }

    /// The vendor's part of the startup JSON (minus `url`): the seeded key pair, which holds every
    /// capability, and the UI user.
    pub fn seeded(&self) -> serde_json::Value {
        let state = self.state();
        let key = state.keys.iter().find(|k| k.api_key == state.seeded_api_key).expect("seeded key exists");
        serde_json::json!({
            "apiKey": key.api_key,
            "apiSecret": key.api_secret.expose(),
            "uiEmail": state.ui_user.email,
            "uiPassword": state.ui_user.password.expose(),
        })
    }

    /// Adds a key with the given capabilities (for tests); returns (api_key, api_secret).
    pub fn create_key(&self, description: &str, capabilities: &[Capability]) -> (String, SecretString) {
        let email = self.state().ui_user.email.clone();
        let record = self.state().mint_key(description, capabilities.iter().copied().collect(), &email);
        (record.api_key, record.api_secret)
    }

    /// Makes a key unknown to the OpenAPI, as deleting it in the UI does. False when no such key.
    pub fn revoke_key(&self, api_key: &str) -> bool {
        let mut state = self.state();
        match state.keys.iter_mut().find(|k| k.api_key == api_key && !k.revoked) {
            Some(k) => {
                k.revoked = true;
                true
            }
            None => false,
        }
    }

    /// Every key the vendor holds (revoked ones included, deleted ones not), without secrets.
    pub fn keys(&self) -> Vec<SimKey> {
        self.state()
            .keys
            .iter()
            .map(|k| SimKey {
                id: k.id.clone(),
                api_key: k.api_key.clone(),
                description: k.description.clone(),
                capabilities: k.capabilities.iter().copied().collect(),
                revoked: k.revoked,
            })
            .collect()
    }

    /// Every UI session cookie value and CSRF token issued so far: secret material for leak checks.
    pub fn issued_ui_secrets(&self) -> Vec<String> {
        self.state().issued_ui_secrets.clone()
    }

    /// Whether the OpenAPI accepts this key id (not revoked, not deleted).
    pub fn key_is_active(&self, api_key: &str) -> bool {
        self.state().active_key(api_key).is_some()
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, SimState> {
        self.inner.state.lock().expect("cisco sim state poisoned")
    }

    pub(crate) fn max_clock_skew(&self) -> Duration {
        self.inner.max_clock_skew
    }
}

/// `n` random bytes as lower-case hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A Rails-like token: base64 of 32 random bytes (so it holds `+`, `/`, `=` that must be form-encoded).
pub(crate) fn random_token() -> String {
    let mut buf = [0u8; 32];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::STANDARD.encode(buf)
}

pub(crate) fn now_epoch() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A JSON answer with the headers the real service sends (`application/json; charset=utf-8`, Rails'
/// `x-request-id` and `x-runtime`).
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    headers.insert("x-request-id", HeaderValue::from_str(&random_hex(16)).expect("hex is a valid header"));
    headers.insert("x-runtime", HeaderValue::from_static("0.012345"));
    response
}

/// A plain-text answer (the gateway's 401 and 403).
pub(crate) fn text_response(status: StatusCode, body: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The Rails-style error body `{"error": message}`.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response {
    json_response(status, &serde_json::json!({ "error": message }))
}

/// A refusal answered with [`json_error`]; small, so handlers can return it with `?`.
#[derive(Debug)]
pub(crate) struct JsonError(pub StatusCode, pub String);

impl JsonError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, message.into())
    }
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        json_error(self.0, &self.1)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;
    use crate::clients::cisco::signer::{self, JSON_CONTENT_TYPE, RequestToSign};

    fn sim() -> CiscoSim {
        CiscoSim::new(CiscoSimOptions {
            api_key: Some("a".repeat(32)),
            api_secret: Some(SecretString::new("b".repeat(40))),
            ..Default::default()
        })
    }

    fn signed(method: &str, target: &str, body: &'static [u8], secret: &str) -> Request<Body> {
        let to_sign = RequestToSign { method, path_and_query: target, content_type: Some(JSON_CONTENT_TYPE), body };
        let s = signer::sign(&"a".repeat(32), &SecretString::new(secret), &to_sign, jiff::Timestamp::now());
        let mut builder = Request::builder()
            .method(method)
            .uri(target)
            .header("content-type", JSON_CONTENT_TYPE)
            .header("id", s.id)
            .header("timestamp", s.timestamp)
            .header("authorization", s.authorization);
        if let Some(cksum) = s.checksum {
            builder = builder.header("x-tetration-cksum", cksum);
        }
        builder.body(Body::from(body)).unwrap()
    }

    async fn answer(sim: &CiscoSim, request: Request<Body>) -> (u16, String, String) {
        let response = sim.api_router().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, content_type, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn gateway_checks_key_then_signature_then_routes() {
        let sim = sim();
        let unknown = Request::builder().uri("/openapi/v1/nowhere").header("id", "nobody").body(Body::empty()).unwrap();
        assert_eq!(
            answer(&sim, unknown).await,
            (401, "text/plain; charset=utf-8".into(), "Unknown credentials".into())
        );
        let bad = signed("GET", "/openapi/v1/nowhere", b"", &"c".repeat(40));
        assert_eq!(answer(&sim, bad).await, (403, "text/plain; charset=utf-8".into(), "Invalid request".into()));
        let good = signed("GET", "/openapi/v1/nowhere", b"", &"b".repeat(40));
        assert_eq!(answer(&sim, good).await.0, 404);
        let ok = answer(&sim, signed("GET", "/openapi/v1/app_scopes", b"", &"b".repeat(40))).await;
        assert_eq!((ok.0, ok.1.as_str()), (200, "application/json; charset=utf-8"));
        // The UI is not behind the gateway.
        let page = Request::builder().uri("/h4_users/sign_in").body(Body::empty()).unwrap();
        let (status, _, html) = answer(&sim, page).await;
        assert_eq!(status, 200);
        assert!(html.contains("<meta name=\"csrf-token\" content=\""));
    }

    #[tokio::test]
    async fn seeded_values_and_capabilities() {
        let sim = sim();
        let seeded = sim.seeded();
        assert_eq!(seeded["apiKey"], "a".repeat(32));
        assert_eq!(seeded["apiSecret"], "b".repeat(40));
        let random = CiscoSim::new(CiscoSimOptions::default()).seeded();
        assert_eq!(random["apiKey"].as_str().unwrap().len(), 32);
        assert_eq!(random["apiSecret"].as_str().unwrap().len(), 40);
        assert!(random["uiPassword"].as_str().is_some_and(|p| !p.is_empty()));
        let (key, _) = sim.create_key("t", &[Capability::SensorManagement]);
        assert!(sim.key_is_active(&key));
        assert!(sim.revoke_key(&key));
        assert!(!sim.key_is_active(&key));
        assert!(!sim.revoke_key(&key));
    }

    #[tokio::test]
    async fn ui_json_api_needs_a_signed_in_session() {
        let sim = sim();
        let list = Request::builder().uri("/api/api_credentials.json").body(Body::empty()).unwrap();
        assert_eq!(answer(&sim, list).await.0, 401);
    }
}
