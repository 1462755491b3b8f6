//! Trend Vision One API-key simulator: `/v3.0/iam/apiKeys` (create and delete as 207 multi-status, get with an
//! `ETag`, update with `If-Match`, list with `TMV1-Filter`) and `/v3.0/healthcheck/connectivity`, with
//! `Authorization: Bearer` and `{"error": {"code", "message"}}` errors, in the shapes `pytmv1` 0.11.0 parses.
//!
//! The simulator's own choices where no public source says (docs/vendor-apis.md, Vision One): only
//! `Master Administrator` keys manage keys; `monthsToExpiration: 0` means no expiry, shown as
//! `9999-12-31T23:59:59Z`; a never-used key's `lastUsedDateTime` is `""`; names are not unique; `top` is 1..=200;
//! a missing `If-Match` is 428; the `ETag` is a quoted version counter.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Built-in roles (names as the console shows them).
pub const ROLES: [&str; 5] = ["Master Administrator", "Senior Analyst", "Analyst", "Operator", "Auditor"];
/// The role Vision One no longer lets API keys have.
const NOT_FOR_KEYS: &str = "Master Administrator";
const NEVER: &str = "9999-12-31T23:59:59Z";
const MAX_TOP: usize = 200;

/// A key as stored; `Debug` and `Serialize` leave the secret out.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VisionOneSimKey {
    pub id: String,
    pub name: String,
    pub status: String,
    pub role: String,
    pub expired_date_time: String,
    pub last_used_date_time: String,
    pub description: Option<String>,
    #[serde(skip)]
    version: u64,
    #[serde(skip)]
    created_ms: i64,
    #[serde(skip)]
    secret: String,
}

impl std::fmt::Debug for VisionOneSimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisionOneSimKey").field("id", &self.id).field("name", &self.name).finish_non_exhaustive()
    }
}

impl VisionOneSimKey {
    /// Enabled and not past its expiry.
    pub fn is_live(&self) -> bool {
        self.status == "enabled" && expired_at(&self.expired_date_time).is_none_or(|t| t > jiff::Timestamp::now())
    }

    fn view(&self) -> Value {
        serde_json::to_value(self).expect("serializable")
    }
}

fn expired_at(text: &str) -> Option<jiff::Timestamp> {
    text.parse().ok()
}

#[derive(Default)]
struct State_ {
    keys: BTreeMap<String, VisionOneSimKey>,
    next: u64,
}

/// Handle on the simulated Vision One region; clones share the state.
#[derive(Clone)]
pub struct VisionOneSim {
    state: Arc<Mutex<State_>>,
    admin_api_key: String,
}

impl std::fmt::Debug for VisionOneSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisionOneSim").finish_non_exhaustive()
    }
}

/// An error: HTTP status, Vision One code and message.
#[derive(Debug)]
struct V1Error(u16, &'static str, String);

impl V1Error {
    fn body(&self) -> Value {
        json!({"error": {"code": self.1, "message": self.2}})
    }
}

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body())).into_response()
    }
}

fn token() -> String {
    // Shaped like a JWT (three base64url parts) without being one: clients must treat it as opaque.
    let part = |n| rand::rng().sample_iter(rand::distr::Alphanumeric).take(n).map(char::from).collect::<String>();
    format!("eyJ{}.{}.{}", part(32), part(64), part(43))
}

fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl VisionOneSim {
    pub fn new(admin_api_key: Option<String>) -> Self {
        let admin_api_key = admin_api_key.unwrap_or_else(token);
        let sim = Self { state: Arc::default(), admin_api_key: admin_api_key.clone() };
        {
            let mut st = sim.lock();
            let id = st.new_id();
            st.keys.insert(
                id.clone(),
                VisionOneSimKey {
                    id,
                    name: "vendor-sim-admin".into(),
                    status: "enabled".into(),
                    role: NOT_FOR_KEYS.into(),
                    expired_date_time: NEVER.into(),
                    last_used_date_time: String::new(),
                    description: Some("Seeded administrator key".into()),
                    version: 1,
                    created_ms: 0,
                    secret: admin_api_key,
                },
            );
        }
        sim
    }

    fn lock(&self) -> MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `adminApiKey` for the startup JSON (`url` is added by the caller).
    pub fn seeded(&self) -> Value {
        json!({ "adminApiKey": self.admin_api_key })
    }

    /// Every key, oldest first (no secrets).
    pub fn keys(&self) -> Vec<VisionOneSimKey> {
        let mut keys: Vec<_> = self.lock().keys.values().cloned().collect();
        keys.sort_by_key(|k| k.created_ms);
        keys
    }

    /// Live keys named exactly `name`.
    pub fn live_keys_named(&self, name: &str) -> Vec<VisionOneSimKey> {
        self.keys().into_iter().filter(|k| k.name == name && k.is_live()).collect()
    }

    /// Disables a key, as an administrator would in the console.
    pub fn revoke_key(&self, id: &str) -> Option<VisionOneSimKey> {
        let mut st = self.lock();
        let k = st.keys.get_mut(id)?;
        k.status = "disabled".into();
        k.version += 1;
        Some(k.clone())
    }

    /// Moves a key's expiry into the past.
    pub fn expire_key(&self, id: &str) -> Option<VisionOneSimKey> {
        let mut st = self.lock();
        let k = st.keys.get_mut(id)?;
        k.expired_date_time = rfc3339(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1));
        k.version += 1;
        Some(k.clone())
    }

    pub fn delete_key(&self, id: &str) -> Option<VisionOneSimKey> {
        self.lock().keys.remove(id)
    }

    /// The `/v3.0/...` routes (no fallback: merged into the Trend listener's router).
    pub fn api_router(&self) -> Router {
        Router::new()
            .route("/v3.0/healthcheck/connectivity", get(connectivity))
            .route("/v3.0/iam/apiKeys", get(list_keys).post(create_keys))
            .route("/v3.0/iam/apiKeys/delete", post(delete_keys))
            .route("/v3.0/iam/apiKeys/{id}", get(get_key).patch(update_key))
            .with_state(self.clone())
    }

    /// Test controls, nested under `/visionone` on the control port.
    pub fn control_router(&self) -> Router {
        Router::new()
            .route("/keys", get(ctl_keys))
            .route("/keys/{id}", delete(ctl_delete))
            .route("/keys/{id}/revoke", post(ctl_revoke))
            .route("/keys/{id}/expire", post(ctl_expire))
            .with_state(self.clone())
    }

    /// The caller's key, if the bearer token is a live one; `admin` also requires a key-managing role.
    fn authenticate(&self, headers: &HeaderMap, admin: bool) -> Result<String, V1Error> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| V1Error(401, "Unauthorized", "Missing or malformed Authorization header.".into()))?;
        let mut st = self.lock();
        let now = jiff::Timestamp::now();
        let key = st
            .keys
            .values_mut()
            .find(|k| k.secret == token)
            .filter(|k| k.is_live())
            .ok_or_else(|| V1Error(401, "Unauthorized", "The API key is invalid, disabled or expired.".into()))?;
        key.last_used_date_time = rfc3339(now);
        if admin && key.role != NOT_FOR_KEYS {
            return Err(V1Error(403, "AccessDenied", "Insufficient permissions to manage API keys.".into()));
        }
        Ok(key.id.clone())
    }
}

impl State_ {
    fn new_id(&mut self) -> String {
        self.next += 1;
        let r: u64 = rand::rng().random();
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            r >> 32,
            self.next & 0xffff,
            r & 0xfff,
            (r >> 12) & 0xfff,
            self.next
        )
    }
}

fn check_role(role: &str) -> Result<(), String> {
    if role == NOT_FOR_KEYS {
        return Err(format!("The role \"{NOT_FOR_KEYS}\" cannot be assigned to API keys."));
    }
    if !ROLES.contains(&role) {
        return Err(format!("The role {role:?} does not exist."));
    }
    Ok(())
}

fn check_status(status: &str) -> Result<(), String> {
    if matches!(status, "enabled" | "disabled") { Ok(()) } else { Err(format!("Invalid status {status:?}.")) }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateItem {
    name: String,
    role: String,
    #[serde(default)]
    months_to_expiration: Option<i64>,
    description: Option<String>,
    status: Option<String>,
}

fn multi(items: Vec<Value>) -> Response {
    (StatusCode::MULTI_STATUS, Json(items)).into_response()
}

fn item_error(status: u16, code: &'static str, message: String) -> Value {
    json!({"status": status, "body": V1Error(status, code, message).body()})
}

fn parse_array(body: &Bytes) -> Result<Vec<Value>, V1Error> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) if !items.is_empty() => Ok(items),
        _ => Err(V1Error(400, "BadRequest", "The request body must be a non-empty JSON array.".into())),
    }
}

async fn connectivity(State(sim): State<VisionOneSim>, headers: HeaderMap) -> Response {
    match sim.authenticate(&headers, false) {
        Ok(_) => Json(json!({"status": "available"})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn create_keys(State(sim): State<VisionOneSim>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = sim.authenticate(&headers, true) {
        return e.into_response();
    }
    let items = match parse_array(&body) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    let mut st = sim.lock();
    let out = items
        .into_iter()
        .map(|raw| {
            let item: CreateItem = match serde_json::from_value(raw) {
                Ok(i) => i,
                Err(e) => return item_error(400, "BadRequest", format!("Invalid API key request: {e}")),
            };
            let months = item.months_to_expiration.unwrap_or(0);
            let problems = [
                (item.name.trim().is_empty() || item.name.len() > 64)
                    .then(|| "name must be 1 to 64 characters.".into()),
                check_role(&item.role).err(),
                (![0, 1, 3, 6, 12].contains(&months)).then(|| "monthsToExpiration must be 0, 1, 3, 6 or 12.".into()),
                item.status.as_deref().and_then(|s| check_status(s).err()),
            ];
            if let Some(message) = problems.into_iter().flatten().next() {
                return item_error(400, "BadRequest", message);
            }
            let now = jiff::Timestamp::now();
            let expired_date_time = if months == 0 {
                NEVER.to_owned()
            } else {
                let zoned = now.to_zoned(jiff::tz::TimeZone::UTC);
                rfc3339(zoned.checked_add(jiff::Span::new().months(months)).expect("in range").timestamp())
            };
            let id = st.new_id();
            let secret = token();
            let key = VisionOneSimKey {
                id: id.clone(),
                name: item.name,
                status: item.status.unwrap_or_else(|| "enabled".into()),
                role: item.role,
                expired_date_time: expired_date_time.clone(),
                last_used_date_time: String::new(),
                description: item.description,
                version: 1,
                created_ms: now.as_millisecond(),
                secret: secret.clone(),
            };
            st.keys.insert(id.clone(), key);
            json!({"status": 201, "body": {"id": id, "value": secret, "expiredDateTime": expired_date_time}})
        })
        .collect();
    multi(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    top: Option<String>,
    skip_token: Option<String>,
    #[allow(dead_code)]
    order_by: Option<String>,
}

async fn list_keys(
    State(sim): State<VisionOneSim>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Err(e) = sim.authenticate(&headers, true) {
        return e.into_response();
    }
    let top = match q.top.as_deref().map(str::parse::<usize>) {
        None => 50,
        Some(Ok(n)) if (1..=MAX_TOP).contains(&n) => n,
        _ => return V1Error(400, "BadRequest", format!("top must be between 1 and {MAX_TOP}.")).into_response(),
    };
    let filter = match headers.get("tmv1-filter").map(|v| v.to_str().map(parse_filter)) {
        None => None,
        Some(Ok(Ok(f))) => Some(f),
        Some(Ok(Err(m))) => return V1Error(400, "BadRequest", m).into_response(),
        Some(Err(_)) => return V1Error(400, "BadRequest", "Invalid TMV1-Filter header.".into()).into_response(),
    };
    let skip = q.skip_token.as_deref().and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
    let mut keys = sim.keys();
    keys.reverse(); // orderBy=createdDateTime desc
    let matching: Vec<_> = keys.into_iter().filter(|k| filter.as_ref().is_none_or(|f| f.matches(k))).collect();
    let total = matching.len();
    let page: Vec<Value> = matching.iter().skip(skip).take(top).map(VisionOneSimKey::view).collect();
    let mut body = json!({"totalCount": total, "count": page.len(), "items": page});
    if skip + top < total {
        // HTTP/2 carries the host as the URI's authority, HTTP/1.1 in `Host`.
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned))
            .unwrap_or_else(|| "localhost".into());
        body["nextLink"] = format!("https://{host}/v3.0/iam/apiKeys?top={top}&skipToken={}", skip + top).into();
    }
    Json(body).into_response()
}

async fn get_key(State(sim): State<VisionOneSim>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(e) = sim.authenticate(&headers, true) {
        return e.into_response();
    }
    let Some(key) = sim.lock().keys.get(&id).cloned() else { return not_found(&id).into_response() };
    let mut response = Json(key.view()).into_response();
    let etag = HeaderValue::from_str(&format!("\"{}\"", key.version)).expect("digits");
    response.headers_mut().insert(header::ETAG, etag);
    response
}

fn not_found(id: &str) -> V1Error {
    V1Error(404, "NotFound", format!("The API key {id:?} does not exist."))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Changes {
    name: Option<String>,
    role: Option<String>,
    status: Option<String>,
    description: Option<String>,
}

async fn update_key(
    State(sim): State<VisionOneSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(e) = sim.authenticate(&headers, true) {
        return e.into_response();
    }
    let changes: Changes = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return V1Error(400, "BadRequest", format!("Invalid request body: {e}")).into_response(),
    };
    let Some(if_match) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) else {
        return V1Error(428, "PreconditionRequired", "The If-Match header is required.".into()).into_response();
    };
    let problem = changes
        .role
        .as_deref()
        .and_then(|r| check_role(r).err())
        .or_else(|| changes.status.as_deref().and_then(|s| check_status(s).err()));
    if let Some(message) = problem {
        return V1Error(400, "BadRequest", message).into_response();
    }
    let mut st = sim.lock();
    let Some(key) = st.keys.get_mut(&id) else { return not_found(&id).into_response() };
    if if_match.trim_matches('"') != key.version.to_string() {
        return V1Error(412, "ConditionNotMet", "The resource was changed; get it again for a fresh ETag.".into())
            .into_response();
    }
    if let Some(v) = changes.name {
        key.name = v;
    }
    if let Some(v) = changes.role {
        key.role = v;
    }
    if let Some(v) = changes.status {
        key.status = v;
    }
    if let Some(v) = changes.description {
        key.description = Some(v);
    }
    key.version += 1;
    StatusCode::NO_CONTENT.into_response()
}

async fn delete_keys(State(sim): State<VisionOneSim>, headers: HeaderMap, body: Bytes) -> Response {
    let caller = match sim.authenticate(&headers, true) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let items = match parse_array(&body) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    let mut st = sim.lock();
    let out = items
        .into_iter()
        .map(|item| match item.get("id").and_then(Value::as_str) {
            None => item_error(400, "BadRequest", "Each item needs an id.".into()),
            Some(id) if id == caller => item_error(400, "BadRequest", "A key cannot delete itself.".into()),
            Some(id) => match st.keys.remove(id) {
                Some(_) => json!({"status": 204}),
                None => json!({"status": 404, "body": not_found(id).body()}),
            },
        })
        .collect();
    multi(out)
}

/// A `TMV1-Filter`: `field eq 'value'` clauses joined by one of `and` / `or`.
#[derive(Debug, PartialEq)]
struct Filter {
    any: bool,
    clauses: Vec<(String, String)>,
}

impl Filter {
    fn matches(&self, k: &VisionOneSimKey) -> bool {
        let test = |(field, value): &(String, String)| match field.as_str() {
            "id" => &k.id == value,
            "name" => &k.name == value,
            "role" => &k.role == value,
            "status" => &k.status == value,
            _ => false,
        };
        if self.any { self.clauses.iter().any(test) } else { self.clauses.iter().all(test) }
    }
}

fn parse_filter(text: &str) -> Result<Filter, String> {
    let bad = || format!("Invalid TMV1-Filter {text:?}: use field eq 'value' joined by and/or.");
    let mut rest = text.trim();
    let mut clauses = Vec::new();
    let mut op: Option<&str> = None;
    loop {
        let (field, after) = rest.split_once(" eq '").ok_or_else(bad)?;
        let field = field.trim();
        if !matches!(field, "id" | "name" | "role" | "status") {
            return Err(format!("Unsupported TMV1-Filter field {field:?}."));
        }
        // The value runs to the next lone quote; '' stands for one quote.
        let mut value = String::new();
        let mut chars = after.char_indices().peekable();
        let end = loop {
            match chars.next() {
                Some((_, '\'')) if chars.peek().map(|(_, c)| *c) == Some('\'') => {
                    chars.next();
                    value.push('\'');
                }
                Some((i, '\'')) => break i + 1,
                Some((_, c)) => value.push(c),
                None => return Err(bad()),
            }
        };
        clauses.push((field.to_owned(), value));
        rest = after[end..].trim_start();
        if rest.is_empty() {
            break;
        }
        let (word, next) = rest.split_once(' ').ok_or_else(bad)?;
        if !matches!(word, "and" | "or") || op.is_some_and(|o| o != word) {
            return Err(bad());
        }
        op = Some(if word == "and" { "and" } else { "or" });
        rest = next.trim_start();
    }
    Ok(Filter { any: op == Some("or"), clauses })
}

// ---- control ----

fn ctl_view(k: &VisionOneSimKey) -> Value {
    let mut v = k.view();
    v["live"] = json!(k.is_live());
    v
}

fn ctl_reply(k: Option<VisionOneSimKey>, id: &str) -> Response {
    match k {
        Some(k) => Json(ctl_view(&k)).into_response(),
        None => not_found(id).into_response(),
    }
}

async fn ctl_keys(State(sim): State<VisionOneSim>) -> Response {
    Json(json!({"keys": sim.keys().iter().map(ctl_view).collect::<Vec<_>>()})).into_response()
}

async fn ctl_revoke(State(sim): State<VisionOneSim>, Path(id): Path<String>) -> Response {
    ctl_reply(sim.revoke_key(&id), &id)
}

async fn ctl_expire(State(sim): State<VisionOneSim>, Path(id): Path<String>) -> Response {
    ctl_reply(sim.expire_key(&id), &id)
}

async fn ctl_delete(State(sim): State<VisionOneSim>, Path(id): Path<String>) -> Response {
    ctl_reply(sim.delete_key(&id), &id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_quotes_and_one_operator() {
        let f = parse_filter("name eq 'it''s' and role eq 'Auditor'").unwrap();
        assert_eq!(
            f,
            Filter { any: false, clauses: vec![("name".into(), "it's".into()), ("role".into(), "Auditor".into())] }
        );
        assert!(parse_filter("name eq 'a' or id eq 'b'").unwrap().any);
        assert!(parse_filter("name eq 'a' and id eq 'b' or role eq 'c'").is_err());
        assert!(parse_filter("secret eq 'x'").is_err());
        assert!(parse_filter("name eq 'unterminated").is_err());
    }

    #[test]
    fn master_administrator_is_not_for_keys() {
        assert!(check_role("Master Administrator").unwrap_err().contains("cannot be assigned"));
        assert!(check_role("Senior Analyst").is_ok());
        assert!(check_role("Root").is_err());
    }

    #[test]
    fn seeded_admin_is_live_and_its_secret_never_printed() {
        let sim = VisionOneSim::new(Some("eyJ-seed".into()));
        let keys = sim.keys();
        assert_eq!(keys.len(), 1);
        assert!(keys[0].is_live());
        assert!(!format!("{:?} {}", keys[0], keys[0].view()).contains("eyJ-seed"));
        sim.revoke_key(&keys[0].id);
        assert!(!sim.keys()[0].is_live());
    }
}
