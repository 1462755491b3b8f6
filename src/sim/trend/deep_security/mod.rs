//! Trend Micro Deep Security / Workload Security `/api` simulator: roles, API keys and sessions, with
//! DSM's authentication (`api-secret-key`, or `sID` cookie + `rID` header), rights (Full Access, Auditor),
//! `{"message": ...}` errors and the per-key rate limit (429 "Too many API requests").
//!
//! Wire details follow the official SDK `deep-security-api` 20.0.463 and Trend's documented flows
//! (docs/vendor-apis.md §3-§4); what no public source shows (401 texts, the role URN layout, the status of a
//! session calling `/apikeys/current`) is the simulator's own choice and marked so in `store.rs`.

mod search;
mod store;

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use rand::Rng as _;
use serde::Deserialize;
use serde_json::{Value, json};

pub use store::SimApiKey;
use store::{ApiError, Caller, Presented, Store, now_ms};

/// How the Trend simulator behaves.
#[derive(Clone)]
pub struct DeepSecuritySimOptions {
    /// Requests each API key (or administrator session) may make per `rate_limit_window`; 0 disables.
    pub rate_limit_per_minute: u32,
    /// The sliding window of the rate limit: 60 s like DSM; tests may shorten it.
    pub rate_limit_window: Duration,
    /// Administrator sign-in for `POST /api/sessions`; random when absent.
    pub admin_user: Option<String>,
    pub admin_password: Option<String>,
    /// The seeded Full Access key's secret; a random DSM-shaped `1:<base64>` when absent.
    pub admin_api_key: Option<String>,
    /// Sessions end after this long without a request.
    pub session_idle_timeout: Duration,
}

impl Default for DeepSecuritySimOptions {
    fn default() -> Self {
        Self {
            rate_limit_per_minute: 500,
            rate_limit_window: Duration::from_secs(60),
            admin_user: None,
            admin_password: None,
            admin_api_key: None,
            session_idle_timeout: Duration::from_secs(30 * 60),
        }
    }
}

impl std::fmt::Debug for DeepSecuritySimOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeepSecuritySimOptions")
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("rate_limit_window", &self.rate_limit_window)
            .field("admin_user", &self.admin_user)
            .field("admin_password", &self.admin_password.as_ref().map(|_| "[redacted]"))
            .field("admin_api_key", &self.admin_api_key.as_ref().map(|_| "[redacted]"))
            .field("session_idle_timeout", &self.session_idle_timeout)
            .finish()
    }
}

/// Handle on one simulated manager; clones share the state.
#[derive(Clone)]
pub struct DeepSecuritySim {
    inner: Arc<Inner>,
}

struct Inner {
    store: Mutex<Store>,
    admin_user: String,
    admin_password: String,
    admin_api_key: String,
}

impl std::fmt::Debug for DeepSecuritySim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeepSecuritySim").field("admin_user", &self.inner.admin_user).finish_non_exhaustive()
    }
}

fn random_alphanumeric(len: usize) -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(len).map(char::from).collect()
}

impl DeepSecuritySim {
    pub fn new(opts: DeepSecuritySimOptions) -> Self {
        let admin_user = opts.admin_user.unwrap_or_else(|| format!("admin-{}", random_alphanumeric(6).to_lowercase()));
        let admin_password = opts.admin_password.unwrap_or_else(|| random_alphanumeric(24));
        let (store, admin_api_key) = Store::new(
            admin_user.clone(),
            admin_password.clone(),
            opts.admin_api_key,
            opts.rate_limit_per_minute,
            opts.rate_limit_window,
            opts.session_idle_timeout,
        );
        Self { inner: Arc::new(Inner { store: Mutex::new(store), admin_user, admin_password, admin_api_key }) }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.inner.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `adminApiKey`, `adminUser`, `adminPassword` for the startup JSON.
    pub fn seeded(&self) -> Value {
        json!({
            "adminApiKey": self.inner.admin_api_key,
            "adminUser": self.inner.admin_user,
            "adminPassword": self.inner.admin_password,
        })
    }

    /// Every key (no secrets), by ID.
    pub fn keys(&self) -> Vec<SimApiKey> {
        self.store().all_keys()
    }

    /// Keys named exactly `key_name` that can authenticate now.
    pub fn live_keys_named(&self, key_name: &str) -> Vec<SimApiKey> {
        let now = now_ms();
        self.keys().into_iter().filter(|k| k.key_name == key_name && k.is_live(now)).collect()
    }

    /// Locks a key out (`active: false`), as an administrator would in the console.
    pub fn revoke_key(&self, id: i64) -> Option<SimApiKey> {
        self.store().revoke(id)
    }

    /// Moves a key's expiry into the past.
    pub fn expire_key(&self, id: i64) -> Option<SimApiKey> {
        self.store().expire(id)
    }

    pub fn delete_key(&self, id: i64) -> Option<SimApiKey> {
        self.store().delete(id)
    }

    /// Ends every session, as an idle timeout would; returns how many ended.
    pub fn end_sessions(&self) -> usize {
        self.store().end_sessions()
    }

    /// Changes the per-key rate limit: `per_window` requests per sliding `window` (0 disables).
    pub fn set_rate_limit(&self, per_window: u32, window: Duration) {
        self.store().set_rate_limit(per_window, window);
    }

    /// How many requests were refused with 429 by the simulator's own rate limit (not by injected faults).
    pub fn throttled_count(&self) -> u64 {
        self.store().throttled()
    }

    /// The `/api/...` routes, served at the root of the Trend listener.
    pub fn api_router(&self) -> Router {
        let authenticated = Router::new()
            .route("/api/roles", get(list_roles))
            .route("/api/roles/search", post(search_roles))
            .route("/api/roles/{id}", get(describe_role))
            .route("/api/apikeys", get(list_keys).post(create_key))
            .route("/api/apikeys/search", post(search_keys))
            .route("/api/apikeys/current", get(describe_current).post(modify_current))
            .route("/api/apikeys/current/secretkey", post(regenerate_current))
            .route("/api/apikeys/{id}", get(describe_key).post(modify_key).delete(delete_key))
            .route("/api/apikeys/{id}/secretkey", post(regenerate_key))
            .route_layer(middleware::from_fn_with_state(self.clone(), authenticate));
        Router::new()
            .route("/api/sessions", post(open_session))
            .merge(authenticated)
            .fallback(|| async { error(ApiError::new(404, "The requested resource does not exist.")) })
            .with_state(self.clone())
    }

    /// Test controls, nested under `/trend` on the control port.
    pub fn control_router(&self) -> Router {
        Router::new()
            .route("/keys", get(ctl_keys))
            .route("/keys/{id}", delete(ctl_delete_key))
            .route("/keys/{id}/revoke", post(ctl_revoke_key))
            .route("/keys/{id}/expire", post(ctl_expire_key))
            .route("/sessions", delete(ctl_end_sessions))
            .route("/rate-limit", get(ctl_rate_limit).put(ctl_set_rate_limit))
            .with_state(self.clone())
    }
}

// ---- API ----

fn error(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(json!({ "message": e.message }))).into_response()
}

fn reply(result: Result<impl serde::Serialize, ApiError>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(e),
    }
}

fn require_api_version(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get("api-version").and_then(|v| v.to_str().ok()) {
        Some("v1") => Ok(()),
        Some(other) => Err(ApiError::new(400, format!("Unsupported api-version: {other}."))),
        None => Err(ApiError::new(400, "The api-version header is required.")),
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().split_once('=').filter(|(n, _)| *n == name).map(|(_, v)| v))
}

/// `api-version`, credentials and rate limit, before any authenticated route.
async fn authenticate(State(sim): State<DeepSecuritySim>, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    if let Err(e) = require_api_version(headers) {
        return error(e);
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let presented = Presented { api_secret_key: text("api-secret-key"), sid: cookie(headers, "sID"), rid: text("rID") };
    let caller = sim.store().authenticate(&presented, Instant::now());
    match caller {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => error(e),
    }
}

async fn open_session(State(sim): State<DeepSecuritySim>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = require_api_version(&headers) {
        return error(e);
    }
    let session = match sim.store().open_session(&body, Instant::now()) {
        Ok(s) => s,
        Err(e) => return error(e),
    };
    let mut response = Json(session.body).into_response();
    let h = response.headers_mut();
    h.insert("X-Frame-Options", HeaderValue::from_static("SAMEORIGIN"));
    h.insert("X-XSS-Protection", HeaderValue::from_static("1;mode=block"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache,no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    let cookie = format!("sID={}; Path=/; Secure; HttpOnly", session.sid);
    h.insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("hex cookie is a valid header"));
    response
}

async fn list_roles(State(sim): State<DeepSecuritySim>) -> Response {
    reply(Ok(sim.store().list_roles()))
}

async fn search_roles(State(sim): State<DeepSecuritySim>, body: Bytes) -> Response {
    reply(sim.store().search_roles(&body))
}

async fn describe_role(State(sim): State<DeepSecuritySim>, Path(id): Path<String>) -> Response {
    reply(sim.store().describe_role(&id))
}

async fn list_keys(State(sim): State<DeepSecuritySim>, Extension(caller): Extension<Caller>) -> Response {
    reply(sim.store().list_keys(caller))
}

async fn create_key(State(sim): State<DeepSecuritySim>, Extension(caller): Extension<Caller>, body: Bytes) -> Response {
    reply(sim.store().create_key(caller, &body))
}

async fn search_keys(
    State(sim): State<DeepSecuritySim>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    reply(sim.store().search_keys(caller, &body))
}

async fn describe_key(
    State(sim): State<DeepSecuritySim>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    reply(sim.store().describe_key(caller, &id))
}

async fn modify_key(
    State(sim): State<DeepSecuritySim>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    reply(sim.store().modify_key(caller, &id, &body))
}

async fn delete_key(
    State(sim): State<DeepSecuritySim>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match sim.store().delete_key(caller, &id) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => error(e),
    }
}

async fn regenerate_key(
    State(sim): State<DeepSecuritySim>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    reply(sim.store().regenerate_key(caller, &id))
}

async fn describe_current(State(sim): State<DeepSecuritySim>, Extension(caller): Extension<Caller>) -> Response {
    reply(sim.store().describe_current(caller))
}

async fn modify_current(
    State(sim): State<DeepSecuritySim>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    reply(sim.store().modify_current(caller, &body))
}

async fn regenerate_current(State(sim): State<DeepSecuritySim>, Extension(caller): Extension<Caller>) -> Response {
    reply(sim.store().regenerate_current(caller))
}

// ---- control ----

fn key_view(key: &SimApiKey, now: i64) -> Value {
    let mut v = serde_json::to_value(key).expect("serializable");
    v["live"] = json!(key.is_live(now));
    v
}

fn control_key_reply(key: Option<SimApiKey>) -> Response {
    match key {
        Some(k) => Json(key_view(&k, now_ms())).into_response(),
        None => error(ApiError::new(404, "The API key does not exist.")),
    }
}

async fn ctl_keys(State(sim): State<DeepSecuritySim>) -> Response {
    let now = now_ms();
    Json(json!({ "keys": sim.keys().iter().map(|k| key_view(k, now)).collect::<Vec<_>>() })).into_response()
}

async fn ctl_revoke_key(State(sim): State<DeepSecuritySim>, Path(id): Path<i64>) -> Response {
    control_key_reply(sim.revoke_key(id))
}

async fn ctl_expire_key(State(sim): State<DeepSecuritySim>, Path(id): Path<i64>) -> Response {
    control_key_reply(sim.expire_key(id))
}

async fn ctl_delete_key(State(sim): State<DeepSecuritySim>, Path(id): Path<i64>) -> Response {
    control_key_reply(sim.delete_key(id))
}

async fn ctl_end_sessions(State(sim): State<DeepSecuritySim>) -> Response {
    Json(json!({ "ended": sim.end_sessions() })).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RateLimitBody {
    per_minute: u32,
    /// Window length; 60 000 when absent.
    window_ms: Option<u64>,
}

async fn ctl_rate_limit(State(sim): State<DeepSecuritySim>) -> Response {
    let (per, window) = sim.store().rate_limit();
    Json(json!({ "perMinute": per, "windowMs": window.as_millis() as u64 })).into_response()
}

async fn ctl_set_rate_limit(State(sim): State<DeepSecuritySim>, Json(body): Json<RateLimitBody>) -> Response {
    sim.set_rate_limit(body.per_minute, Duration::from_millis(body.window_ms.unwrap_or(60_000).max(1)));
    ctl_rate_limit(State(sim)).await
}
