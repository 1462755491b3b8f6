//! Trend Cloud One accounts API simulator (API keys and roles), served under `/cloudone/api` on the Trend listener:
//! `Authorization: ApiKey <id>:<secret>`, a required `Api-Version: v1`, cursor paging (`next`), roles by slug,
//! `{"message", "fields"}` errors.
//!
//! The simulator's own choices where no public source says (docs/vendor-apis.md, Cloud One): create answers 201
//! with `secret` holding only the part after `<id>:`; delete is `DELETE /apikeys/{id}` answering 204; keys have no
//! expiry; only `full-access` keys change keys; the `/cloudone` path prefix (the real API has its own host).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use base64::Engine as _;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Where the accounts API is mounted on the Trend listener.
pub const PREFIX: &str = "/cloudone/api";
const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-1";
/// `(id, name, may change keys)`.
const ROLES: [(&str, &str, bool); 2] = [("full-access", "Full Access", true), ("read-only", "Read Only", false)];

/// A key as stored; `Debug` and `Serialize` leave the secret out.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudOneSimKey {
    pub id: String,
    pub alias: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "roleID")]
    pub role_id: String,
    pub locale: String,
    pub timezone: String,
    pub enabled: bool,
    pub urn: String,
    pub created: String,
    pub last_modified: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<String>,
    #[serde(skip)]
    secret: String,
    #[serde(skip)]
    seq: u64,
}

impl std::fmt::Debug for CloudOneSimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudOneSimKey").field("id", &self.id).field("alias", &self.alias).finish_non_exhaustive()
    }
}

impl CloudOneSimKey {
    pub fn is_live(&self) -> bool {
        self.enabled
    }
}

#[derive(Default)]
struct Keys {
    by_id: BTreeMap<String, CloudOneSimKey>,
    seq: u64,
}

/// Handle on the simulated Cloud One account; clones share the state.
#[derive(Clone)]
pub struct CloudOneSim {
    keys: Arc<Mutex<Keys>>,
    admin_api_key: String,
}

impl std::fmt::Debug for CloudOneSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudOneSim").finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct C1Error(u16, String, Option<Value>);

impl IntoResponse for C1Error {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = json!({"message": self.1});
        if let Some(fields) = self.2 {
            body["fields"] = fields;
        }
        (status, Json(body)).into_response()
    }
}

fn alnum(n: usize) -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(n).map(char::from).collect()
}

fn now_text() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl CloudOneSim {
    pub fn new() -> Self {
        let sim = Self { keys: Arc::default(), admin_api_key: String::new() };
        let (id, secret) =
            sim.lock().insert("vendor-sim-admin", Some("Seeded administrator key".into()), "full-access");
        Self { admin_api_key: format!("{id}:{secret}"), ..sim }
    }

    fn lock(&self) -> MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `adminApiKey` for the startup JSON (`url` is added by the caller).
    pub fn seeded(&self) -> Value {
        json!({ "adminApiKey": self.admin_api_key })
    }

    /// Every key, oldest first (no secrets).
    pub fn keys(&self) -> Vec<CloudOneSimKey> {
        let mut keys: Vec<_> = self.lock().by_id.values().cloned().collect();
        keys.sort_by_key(|k| k.seq);
        keys
    }

    pub fn live_keys_named(&self, alias: &str) -> Vec<CloudOneSimKey> {
        self.keys().into_iter().filter(|k| k.alias == alias && k.is_live()).collect()
    }

    /// Disables a key (`enabled: false`), as an administrator would in the console.
    pub fn revoke_key(&self, id: &str) -> Option<CloudOneSimKey> {
        let mut st = self.lock();
        let k = st.by_id.get_mut(id)?;
        k.enabled = false;
        Some(k.clone())
    }

    pub fn delete_key(&self, id: &str) -> Option<CloudOneSimKey> {
        self.lock().by_id.remove(id)
    }

    /// The accounts routes under [`PREFIX`] (no fallback: merged into the Trend listener's router).
    pub fn api_router(&self) -> Router {
        let api = Router::new()
            .route("/roles", get(list_roles))
            .route("/apikeys", get(list_keys).post(create_key))
            .route("/apikeys/{id}", get(describe_key).delete(delete_key))
            .with_state(self.clone());
        Router::new().nest(PREFIX, api)
    }

    /// Test controls, nested under `/cloudone` on the control port.
    pub fn control_router(&self) -> Router {
        Router::new()
            .route("/keys", get(ctl_keys))
            .route("/keys/{id}", delete(ctl_delete))
            .route("/keys/{id}/revoke", post(ctl_revoke))
            .with_state(self.clone())
    }

    /// `Api-Version`, then the key; a write also needs a role that may change keys.
    fn authenticate(&self, headers: &HeaderMap, method: &Method) -> Result<(), C1Error> {
        match headers.get("api-version").and_then(|v| v.to_str().ok()) {
            Some("v1") => {}
            Some(other) => return Err(C1Error(400, format!("Unsupported Api-Version {other:?}."), None)),
            None => return Err(C1Error(400, "The Api-Version header is required.".into(), None)),
        }
        let unauthorized = || C1Error(401, "Unauthorized".into(), None);
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("ApiKey "))
            .ok_or_else(unauthorized)?;
        let (id, secret) = presented.split_once(':').ok_or_else(unauthorized)?;
        let mut st = self.lock();
        let key = st.by_id.get_mut(id).filter(|k| k.secret == secret && k.enabled).ok_or_else(unauthorized)?;
        key.last_activity = Some(now_text());
        let may_write = ROLES.iter().any(|(r, _, w)| *r == key.role_id && *w);
        if *method != Method::GET && !may_write {
            return Err(C1Error(403, "Forbidden".into(), None));
        }
        Ok(())
    }
}

impl Default for CloudOneSim {
    fn default() -> Self {
        Self::new()
    }
}

impl Keys {
    /// A new key's ID and secret part.
    fn insert(&mut self, alias: &str, description: Option<String>, role: &str) -> (String, String) {
        self.seq += 1;
        // 27 base62 characters, like the documented IDs.
        let id = alnum(27);
        let secret = alnum(66);
        let now = now_text();
        self.by_id.insert(
            id.clone(),
            CloudOneSimKey {
                id: id.clone(),
                alias: alias.to_owned(),
                description,
                role_id: role.to_owned(),
                locale: "en".into(),
                timezone: "UTC".into(),
                enabled: true,
                urn: format!("urn:cloudone:identity:{REGION}:{ACCOUNT}:apikey/{id}"),
                created: now.clone(),
                last_modified: now,
                last_activity: None,
                secret: secret.clone(),
                seq: self.seq,
            },
        );
        (id, secret)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageQuery {
    cursor: Option<String>,
    limit: Option<i64>,
    #[serde(rename = "roleID")]
    role_id: Option<String>,
}

/// One page of `items` under `name`, with `next` when more follow.
fn page(name: &str, items: Vec<Value>, q: &PageQuery) -> Result<Value, C1Error> {
    let limit = match q.limit.unwrap_or(0) {
        n if n < 0 => {
            return Err(C1Error(400, "Invalid request.".into(), Some(json!({"limit": "must not be negative"}))));
        }
        0 => 25,
        n => n as usize,
    };
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let start = match &q.cursor {
        None => 0,
        Some(c) => engine
            .decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("o:").and_then(|n| n.parse().ok()))
            .ok_or_else(|| C1Error(400, "Invalid request.".into(), Some(json!({"cursor": "is not valid"}))))?,
    };
    let total = items.len();
    let mut body = json!({ name: items.into_iter().skip(start).take(limit).collect::<Vec<_>>() });
    if start + limit < total {
        body["next"] = engine.encode(format!("o:{}", start + limit)).into();
    }
    Ok(body)
}

fn reply(r: Result<Value, C1Error>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_roles(State(sim): State<CloudOneSim>, headers: HeaderMap, Query(q): Query<PageQuery>) -> Response {
    if let Err(e) = sim.authenticate(&headers, &Method::GET) {
        return e.into_response();
    }
    let roles = ROLES
        .iter()
        .map(|(id, name, _)| {
            json!({
                "id": id, "name": name, "description": format!("Built-in role {name}."),
                "serviceRoleURNs": [format!("urn:cloudone:application:{REGION}:{ACCOUNT}:role/{id}")],
                "created": "2021-08-04T00:00:00Z", "lastModified": "2021-08-04T00:00:00Z",
                "urn": format!("urn:cloudone:identity:{REGION}:{ACCOUNT}:role/{id}"),
            })
        })
        .collect();
    reply(page("roles", roles, &q))
}

async fn list_keys(State(sim): State<CloudOneSim>, headers: HeaderMap, Query(q): Query<PageQuery>) -> Response {
    if let Err(e) = sim.authenticate(&headers, &Method::GET) {
        return e.into_response();
    }
    if let Some(r) = &q.role_id
        && !r.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return C1Error(400, "Invalid request.".into(), Some(json!({"roleID": "must match ^[a-z0-9-]+$"})))
            .into_response();
    }
    let keys = sim
        .keys()
        .into_iter()
        .filter(|k| q.role_id.as_ref().is_none_or(|r| &k.role_id == r))
        .map(|k| serde_json::to_value(k).expect("serializable"))
        .collect();
    reply(page("apikeys", keys, &q))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewKey {
    alias: Option<String>,
    description: Option<String>,
    #[serde(rename = "roleID")]
    role_id: Option<String>,
    locale: Option<String>,
    timezone: Option<String>,
    #[serde(rename = "allowedIPs")]
    allowed_ips: Option<Vec<String>>,
    #[serde(rename = "allowedCIDRs")]
    allowed_cidrs: Option<Vec<String>>,
}

async fn create_key(State(sim): State<CloudOneSim>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = sim.authenticate(&headers, &Method::POST) {
        return e.into_response();
    }
    let new: NewKey = match serde_json::from_slice(&body) {
        Ok(k) => k,
        Err(e) => return C1Error(400, format!("Invalid request body: {e}"), None).into_response(),
    };
    let _ = (&new.allowed_ips, &new.allowed_cidrs);
    let mut fields = serde_json::Map::new();
    let alias = new.alias.unwrap_or_default();
    if alias.trim().is_empty() || alias.len() > 254 {
        fields.insert("alias".into(), "is required (1 to 254 characters)".into());
    }
    let role = new.role_id.unwrap_or_default();
    if !ROLES.iter().any(|(id, _, _)| *id == role) {
        fields.insert("roleID".into(), "must be the ID of an existing role".into());
    }
    if new.locale.as_deref().is_some_and(|l| !matches!(l, "en" | "ja")) {
        fields.insert("locale".into(), "must be en or ja".into());
    }
    if !fields.is_empty() {
        return C1Error(400, "Invalid request.".into(), Some(Value::Object(fields))).into_response();
    }
    let mut st = sim.lock();
    let (id, secret) = st.insert(&alias, new.description, &role);
    let key = st.by_id.get_mut(&id).expect("just inserted");
    if let Some(l) = new.locale {
        key.locale = l;
    }
    if let Some(t) = new.timezone {
        key.timezone = t;
    }
    let mut body = serde_json::to_value(&*key).expect("serializable");
    body["secret"] = secret.into();
    (StatusCode::CREATED, Json(body)).into_response()
}

fn not_found() -> C1Error {
    C1Error(404, "The API key does not exist.".into(), None)
}

async fn describe_key(State(sim): State<CloudOneSim>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(e) = sim.authenticate(&headers, &Method::GET) {
        return e.into_response();
    }
    match sim.lock().by_id.get(&id) {
        Some(k) => Json(serde_json::to_value(k).expect("serializable")).into_response(),
        None => not_found().into_response(),
    }
}

async fn delete_key(State(sim): State<CloudOneSim>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(e) = sim.authenticate(&headers, &Method::DELETE) {
        return e.into_response();
    }
    match sim.delete_key(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found().into_response(),
    }
}

// ---- control ----

fn ctl_view(k: &CloudOneSimKey) -> Value {
    let mut v = serde_json::to_value(k).expect("serializable");
    v["live"] = json!(k.is_live());
    v
}

fn ctl_reply(k: Option<CloudOneSimKey>) -> Response {
    match k {
        Some(k) => Json(ctl_view(&k)).into_response(),
        None => not_found().into_response(),
    }
}

async fn ctl_keys(State(sim): State<CloudOneSim>) -> Response {
    Json(json!({"keys": sim.keys().iter().map(ctl_view).collect::<Vec<_>>()})).into_response()
}

async fn ctl_revoke(State(sim): State<CloudOneSim>, Path(id): Path<String>) -> Response {
    ctl_reply(sim.revoke_key(&id))
}

async fn ctl_delete(State(sim): State<CloudOneSim>, Path(id): Path<String>) -> Response {
    ctl_reply(sim.delete_key(&id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_hands_out_opaque_cursors() {
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let q = |cursor: Option<String>, limit| PageQuery { cursor, limit: Some(limit), role_id: None };
        let first = page("apikeys", items.clone(), &q(None, 2)).unwrap();
        assert_eq!(first["apikeys"], json!([0, 1]));
        let next = first["next"].as_str().unwrap().to_owned();
        let last = page("apikeys", items.clone(), &q(Some(next), 10)).unwrap();
        assert_eq!(last["apikeys"], json!([2, 3, 4]));
        assert!(last.get("next").is_none());
        assert!(page("apikeys", items.clone(), &q(None, -1)).is_err());
        assert!(page("apikeys", items, &q(Some("garbage".into()), 1)).is_err());
    }

    #[test]
    fn seeded_admin_key_is_id_colon_secret_and_never_printed() {
        let sim = CloudOneSim::new();
        let admin = sim.seeded()["adminApiKey"].as_str().unwrap().to_owned();
        let (id, secret) = admin.split_once(':').unwrap();
        let keys = sim.keys();
        assert_eq!((keys.len(), keys[0].id.as_str(), keys[0].role_id.as_str()), (1, id, "full-access"));
        assert!(!format!("{:?} {}", keys[0], ctl_view(&keys[0])).contains(secret));
    }
}
