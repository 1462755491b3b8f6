//! The Trend simulator's state and rules: roles, API keys, sessions, authentication, rights and the
//! per-key rate limit. Pure of HTTP so the rules are unit-tested directly.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::{Duration, Instant},
};

use base64::Engine as _;
use rand::Rng as _;
use serde::Serialize;
use serde_json::{Value, json};

use super::search::{FieldType, FieldValue, Filter, Searchable};

/// A refusal: HTTP status and the `{"message": ...}` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
    fn key_not_found() -> Self {
        Self::new(404, "The API key does not exist.")
    }
}

/// Rights of a role over API keys (`rights.platformRights.apikeyRights`).
#[derive(Debug, Clone, Copy)]
struct KeyRights {
    create: bool,
    delete: bool,
    edit: bool,
    view: bool,
}

struct RoleDef {
    id: i64,
    name: &'static str,
    slug: &'static str,
    description: &'static str,
    full: bool,
    key_rights: KeyRights,
}

const ROLES: [RoleDef; 2] = [
    RoleDef {
        id: 1,
        name: "Full Access",
        slug: "full-access",
        description: "Full access to all computers, policies and settings.",
        full: true,
        key_rights: KeyRights { create: true, delete: true, edit: true, view: true },
    },
    RoleDef {
        id: 2,
        name: "Auditor",
        slug: "auditor",
        description: "Read-only access to all computers, policies and settings.",
        full: false,
        key_rights: KeyRights { create: false, delete: false, edit: false, view: true },
    },
];

impl RoleDef {
    fn urn(&self) -> String {
        // The URN layout is the simulator's own; DSM's real form was not found in public sources.
        format!("urn:tmds:identity:vendor-sim:0:role/{}", self.slug)
    }

    fn to_json(&self) -> Value {
        let r = self.key_rights;
        let full = self.full;
        json!({
            "name": self.name,
            "description": self.description,
            "urn": self.urn(),
            "immutable": true,
            "canOnlyManipulateUsersWithEqualOrLesserRights": false,
            "allComputers": true,
            "allPolicies": true,
            "allowUserInterface": true,
            "allowWebService": true,
            "allowManageWorkloadSecurityLink": full,
            "allowMigration": full,
            "rights": {
                "platformRights": {
                    "apikeyRights": {
                        "canCreateNewApiKeys": r.create,
                        "canDeleteApiKeys": r.delete,
                        "canEditApiKeyProperties": r.edit,
                        "canViewApiKeys": r.view,
                    },
                    "administratorRoleRights": {"canViewOtherRoles": true, "canCreateNewRoles": full,
                        "canEditRoles": full, "canDeleteRoles": full},
                },
            },
            "computerIDs": [],
            "computerGroupIDs": [],
            "policyIDs": [],
            "ID": self.id,
        })
    }
}

impl Searchable for RoleDef {
    fn field_type(name: &str) -> Option<FieldType> {
        Some(match name {
            "name" | "description" => FieldType::String,
            "canOnlyManipulateUsersWithEqualOrLesserRights"
            | "allComputers"
            | "allPolicies"
            | "allowUserInterface"
            | "allowWebService"
            | "allowManageWorkloadSecurityLink"
            | "allowMigration" => FieldType::Boolean,
            _ => return None,
        })
    }
    fn object_id(&self) -> i64 {
        self.id
    }
    fn field(&self, name: &str) -> FieldValue<'_> {
        match name {
            "name" => FieldValue::String(Some(self.name)),
            "description" => FieldValue::String(Some(self.description)),
            "canOnlyManipulateUsersWithEqualOrLesserRights" => FieldValue::Boolean(Some(false)),
            "allowManageWorkloadSecurityLink" | "allowMigration" => FieldValue::Boolean(Some(self.full)),
            _ => FieldValue::Boolean(Some(true)),
        }
    }
}

fn role(id: i64) -> Option<&'static RoleDef> {
    ROLES.iter().find(|r| r.id == id)
}

/// An API key as the simulator stores it; `Debug` and `Serialize` leave the secret out.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimApiKey {
    #[serde(rename = "ID")]
    pub id: i64,
    pub key_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub locale: String,
    #[serde(rename = "roleID")]
    pub role_id: i64,
    pub time_zone: String,
    pub active: bool,
    pub created: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sign_in: Option<i64>,
    pub unsuccessful_sign_in_attempts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry_date: Option<i64>,
    pub service_account: bool,
    #[serde(skip)]
    secret: String,
}

impl std::fmt::Debug for SimApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimApiKey")
            .field("id", &self.id)
            .field("key_name", &self.key_name)
            .field("role_id", &self.role_id)
            .field("active", &self.active)
            .field("expiry_date", &self.expiry_date)
            .finish_non_exhaustive()
    }
}

impl SimApiKey {
    /// Whether the key can authenticate at `now_ms`: active and not expired.
    pub fn is_live(&self, now_ms: i64) -> bool {
        self.active && self.expiry_date.is_none_or(|e| e > now_ms)
    }

    /// The `ApiKey` JSON; `secret` only for create/regenerate, `current` adds `roleURN`.
    fn to_json(&self, secret: bool, current: bool) -> KeyJson {
        KeyJson {
            key_name: self.key_name.clone(),
            description: self.description.clone(),
            locale: self.locale.clone(),
            role_id: self.role_id,
            time_zone: self.time_zone.clone(),
            active: self.active,
            created: self.created,
            last_sign_in: self.last_sign_in,
            unsuccessful_sign_in_attempts: self.unsuccessful_sign_in_attempts,
            expiry_date: self.expiry_date,
            secret_key: secret.then(|| self.secret.clone()),
            service_account: self.service_account,
            role_urn: if current { role(self.role_id).map(RoleDef::urn) } else { None },
            id: self.id,
        }
    }
}

/// `ApiKey` as the API answers it: DSM's field order (Trend's documented example, docs/vendor-apis.md §3), nulls
/// omitted.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct KeyJson {
    key_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    locale: String,
    #[serde(rename = "roleID")]
    role_id: i64,
    time_zone: String,
    active: bool,
    created: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_sign_in: Option<i64>,
    unsuccessful_sign_in_attempts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry_date: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_key: Option<String>,
    service_account: bool,
    #[serde(rename = "roleURN", skip_serializing_if = "Option::is_none")]
    role_urn: Option<String>,
    #[serde(rename = "ID")]
    id: i64,
}

impl std::fmt::Debug for KeyJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyJson").field("id", &self.id).field("key_name", &self.key_name).finish_non_exhaustive()
    }
}

/// `ApiKeys`: `{"apiKeys": [...]}`.
#[derive(Serialize)]
pub(super) struct KeyList {
    #[serde(rename = "apiKeys")]
    api_keys: Vec<KeyJson>,
}

impl Searchable for SimApiKey {
    fn field_type(name: &str) -> Option<FieldType> {
        Some(match name {
            "keyName" | "description" | "timeZone" => FieldType::String,
            "roleID" | "unsuccessfulSignInAttempts" => FieldType::Numeric,
            "active" | "serviceAccount" => FieldType::Boolean,
            "created" | "lastSignIn" | "unlockTime" | "expiryDate" => FieldType::Date,
            _ => return None,
        })
    }
    fn object_id(&self) -> i64 {
        self.id
    }
    fn field(&self, name: &str) -> FieldValue<'_> {
        match name {
            "keyName" => FieldValue::String(Some(&self.key_name)),
            "description" => FieldValue::String(self.description.as_deref()),
            "timeZone" => FieldValue::String(Some(&self.time_zone)),
            "roleID" => FieldValue::Numeric(Some(self.role_id as f64)),
            "unsuccessfulSignInAttempts" => FieldValue::Numeric(Some(self.unsuccessful_sign_in_attempts as f64)),
            "active" => FieldValue::Boolean(Some(self.active)),
            "serviceAccount" => FieldValue::Boolean(Some(self.service_account)),
            "created" => FieldValue::Date(Some(self.created)),
            "lastSignIn" => FieldValue::Date(self.last_sign_in),
            "expiryDate" => FieldValue::Date(self.expiry_date),
            _ => FieldValue::Date(None),
        }
    }
}

/// Who is calling: an API key, or an administrator's session (which acts with Full Access).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Caller {
    Key(i64),
    Session(i64),
}

struct SessionRecord {
    rid: String,
    administrator_id: i64,
    last_activity: Instant,
}

/// The answer to a successful sign-in.
pub(super) struct NewSession {
    pub sid: String,
    pub body: SessionJson,
}

/// The `POST /api/sessions` body, in the field order of Trend's documented example (docs/vendor-apis.md §3).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SessionJson {
    #[serde(rename = "administratorID")]
    pub administrator_id: i64,
    pub created: i64,
    pub last_activity: i64,
    pub access_type: &'static str,
    #[serde(rename = "RID")]
    pub rid: String,
}

/// Credentials presented with a request.
#[derive(Default)]
pub(super) struct Presented<'a> {
    pub api_secret_key: Option<&'a str>,
    pub sid: Option<&'a str>,
    pub rid: Option<&'a str>,
}

pub(super) struct Store {
    keys: BTreeMap<i64, SimApiKey>,
    by_secret: HashMap<String, i64>,
    next_key_id: i64,
    sessions: HashMap<String, SessionRecord>,
    session_idle_timeout: Duration,
    admin_user: String,
    admin_password: String,
    rate_limit: u32,
    rate_window: Duration,
    recent: HashMap<Caller, VecDeque<Instant>>,
    throttled: u64,
}

pub(super) const ADMINISTRATOR_ID: i64 = 1;
const DEFAULT_LOCALE: &str = "en-US";
const DEFAULT_TIME_ZONE: &str = "America/New_York";

pub(super) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn random_hex_upper(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    hex::encode_upper(buf)
}

/// A DSM-style secret: `<key ID>:<44 characters of base64>`.
fn new_secret(id: i64) -> String {
    format!("{id}:{}", base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>()))
}

impl Store {
    pub fn new(
        admin_user: String,
        admin_password: String,
        admin_secret: Option<String>,
        rate_limit: u32,
        rate_window: Duration,
        session_idle_timeout: Duration,
    ) -> (Self, String) {
        let mut store = Self {
            keys: BTreeMap::new(),
            by_secret: HashMap::new(),
            next_key_id: 1,
            sessions: HashMap::new(),
            session_idle_timeout,
            admin_user,
            admin_password,
            rate_limit,
            rate_window,
            recent: HashMap::new(),
            throttled: 0,
        };
        let id = store.insert_key("vendor-sim admin", Some("Seeded Full Access key".into()), 1, None, admin_secret);
        let secret = store.keys[&id].secret.clone();
        (store, secret)
    }

    fn insert_key(
        &mut self,
        key_name: &str,
        description: Option<String>,
        role_id: i64,
        expiry_date: Option<i64>,
        secret: Option<String>,
    ) -> i64 {
        let id = self.next_key_id;
        self.next_key_id += 1;
        let secret = secret.unwrap_or_else(|| new_secret(id));
        self.by_secret.insert(secret.clone(), id);
        self.keys.insert(
            id,
            SimApiKey {
                id,
                key_name: key_name.to_owned(),
                description,
                locale: DEFAULT_LOCALE.into(),
                role_id,
                time_zone: DEFAULT_TIME_ZONE.into(),
                active: true,
                created: now_ms(),
                last_sign_in: None,
                unsuccessful_sign_in_attempts: 0,
                expiry_date,
                service_account: false,
                secret,
            },
        );
        id
    }

    // ---- sessions and authentication ----

    /// `POST /api/sessions`.
    pub fn open_session(&mut self, body: &[u8], now: Instant) -> Result<NewSession, ApiError> {
        let refused = || ApiError::new(401, "Invalid username or password.");
        let body: Value =
            serde_json::from_slice(body).map_err(|_| ApiError::bad_request("The request body is not valid JSON."))?;
        let field = |k: &str| body.get(k).and_then(Value::as_str);
        let (Some(user), Some(password)) = (field("userName"), field("password")) else {
            return Err(ApiError::bad_request("userName and password are required."));
        };
        // One primary tenant; no MFA configured, so an mfaCode is accepted and ignored.
        if field("tenantName").is_some_and(|t| !t.is_empty()) {
            return Err(refused());
        }
        if user != self.admin_user || password != self.admin_password {
            return Err(refused());
        }
        self.sessions.retain(|_, s| now.duration_since(s.last_activity) < self.session_idle_timeout);
        let sid = random_hex_upper(16);
        let rid = random_hex_upper(16);
        let created = now_ms();
        self.sessions.insert(
            sid.clone(),
            SessionRecord { rid: rid.clone(), administrator_id: ADMINISTRATOR_ID, last_activity: now },
        );
        let body = SessionJson {
            administrator_id: ADMINISTRATOR_ID,
            created,
            last_activity: created,
            access_type: "webService",
            rid,
        };
        Ok(NewSession { sid, body })
    }

    /// Ends every session (control API); returns how many there were.
    pub fn end_sessions(&mut self) -> usize {
        let n = self.sessions.len();
        self.sessions.clear();
        n
    }

    /// Checks the presented credentials, then the caller's rate limit.
    pub fn authenticate(&mut self, presented: &Presented<'_>, now: Instant) -> Result<Caller, ApiError> {
        let caller = if let Some(secret) = presented.api_secret_key {
            self.authenticate_key(secret)?
        } else if let Some(sid) = presented.sid {
            let timeout = self.session_idle_timeout;
            let session = self
                .sessions
                .get_mut(sid)
                .filter(|s| now.duration_since(s.last_activity) < timeout)
                .ok_or_else(|| ApiError::new(401, "The session is not valid or has timed out."))?;
            if presented.rid != Some(session.rid.as_str()) {
                return Err(ApiError::new(401, "The rID header does not match the session."));
            }
            session.last_activity = now;
            Caller::Session(session.administrator_id)
        } else {
            return Err(ApiError::new(401, "Authentication required: send an api-secret-key header or a session."));
        };
        if !self.admit(caller, now) {
            self.throttled += 1;
            return Err(ApiError::new(429, "Too many API requests"));
        }
        Ok(caller)
    }

    fn authenticate_key(&mut self, secret: &str) -> Result<Caller, ApiError> {
        let now = now_ms();
        let Some(&id) = self.by_secret.get(secret) else {
            // A wrong secret for a known key ID still counts as a failed sign-in of that key.
            if let Some(key) =
                secret.split_once(':').and_then(|(id, _)| id.parse::<i64>().ok()).and_then(|id| self.keys.get_mut(&id))
            {
                key.unsuccessful_sign_in_attempts += 1;
            }
            return Err(ApiError::new(401, "Invalid API key."));
        };
        let key = self.keys.get_mut(&id).expect("secret index matches keys");
        if !key.active {
            return Err(ApiError::new(401, "The API key is locked out."));
        }
        if key.expiry_date.is_some_and(|e| e <= now) {
            return Err(ApiError::new(401, "The API key has expired."));
        }
        key.last_sign_in = Some(now);
        key.unsuccessful_sign_in_attempts = 0;
        Ok(Caller::Key(id))
    }

    /// Sliding-window rate limit per caller; refused calls are not counted.
    fn admit(&mut self, caller: Caller, now: Instant) -> bool {
        if self.rate_limit == 0 {
            return true;
        }
        let window = self.rate_window;
        let recent = self.recent.entry(caller).or_default();
        while recent.front().is_some_and(|t| now.duration_since(*t) >= window) {
            recent.pop_front();
        }
        if recent.len() >= self.rate_limit as usize {
            return false;
        }
        recent.push_back(now);
        true
    }

    pub fn set_rate_limit(&mut self, per_window: u32, window: Duration) {
        self.rate_limit = per_window;
        self.rate_window = window;
        self.recent.clear();
    }

    pub fn rate_limit(&self) -> (u32, Duration) {
        (self.rate_limit, self.rate_window)
    }

    pub fn throttled(&self) -> u64 {
        self.throttled
    }

    fn key_rights(&self, caller: Caller) -> KeyRights {
        let role_id = match caller {
            Caller::Session(_) => 1,
            Caller::Key(id) => self.keys.get(&id).map_or(0, |k| k.role_id),
        };
        role(role_id).map_or(KeyRights { create: false, delete: false, edit: false, view: false }, |r| r.key_rights)
    }

    fn require(&self, caller: Caller, allowed: impl Fn(KeyRights) -> bool, message: &str) -> Result<(), ApiError> {
        if allowed(self.key_rights(caller)) { Ok(()) } else { Err(ApiError::new(403, message)) }
    }

    // ---- roles ----

    pub fn list_roles(&self) -> Value {
        json!({ "roles": ROLES.iter().map(RoleDef::to_json).collect::<Vec<_>>() })
    }

    pub fn search_roles(&self, body: &[u8]) -> Result<Value, ApiError> {
        let filter = Filter::parse::<RoleDef>(body).map_err(ApiError::bad_request)?;
        Ok(json!({ "roles": filter.apply(ROLES.iter()).into_iter().map(RoleDef::to_json).collect::<Vec<_>>() }))
    }

    pub fn describe_role(&self, id: &str) -> Result<Value, ApiError> {
        id.parse::<i64>()
            .ok()
            .and_then(role)
            .map(RoleDef::to_json)
            .ok_or_else(|| ApiError::new(404, "The administrator role does not exist."))
    }

    // ---- API keys ----

    const VIEW: &'static str = "Not authorized to view API keys.";

    pub fn list_keys(&self, caller: Caller) -> Result<KeyList, ApiError> {
        self.require(caller, |r| r.view, Self::VIEW)?;
        Ok(KeyList { api_keys: self.keys.values().map(|k| k.to_json(false, false)).collect() })
    }

    pub fn search_keys(&self, caller: Caller, body: &[u8]) -> Result<KeyList, ApiError> {
        self.require(caller, |r| r.view, Self::VIEW)?;
        let filter = Filter::parse::<SimApiKey>(body).map_err(ApiError::bad_request)?;
        let found = filter.apply(self.keys.values());
        Ok(KeyList { api_keys: found.into_iter().map(|k| k.to_json(false, false)).collect() })
    }

    pub fn describe_key(&self, caller: Caller, id: &str) -> Result<KeyJson, ApiError> {
        self.require(caller, |r| r.view, Self::VIEW)?;
        Ok(self.key(id)?.to_json(false, false))
    }

    pub fn create_key(&mut self, caller: Caller, body: &[u8]) -> Result<KeyJson, ApiError> {
        self.require(caller, |r| r.create, "Not authorized to create API keys.")?;
        let fields = KeyFields::parse(body)?;
        let key_name = fields.key_name.ok_or_else(|| ApiError::bad_request("keyName is required."))?;
        let role_id = fields.role_id.ok_or_else(|| ApiError::bad_request("roleID is required."))?;
        let id = self.insert_key(&key_name, fields.description.flatten(), role_id, fields.expiry_date, None);
        let key = self.keys.get_mut(&id).expect("just inserted");
        if let Some(l) = fields.locale {
            key.locale = l;
        }
        if let Some(tz) = fields.time_zone {
            key.time_zone = tz;
        }
        if let Some(a) = fields.active {
            key.active = a;
        }
        Ok(key.to_json(true, false))
    }

    pub fn modify_key(&mut self, caller: Caller, id: &str, body: &[u8]) -> Result<KeyJson, ApiError> {
        self.require(caller, |r| r.edit, "Not authorized to edit API keys.")?;
        let id = self.key(id)?.id;
        let fields = KeyFields::parse(body)?;
        let key = self.keys.get_mut(&id).expect("checked");
        fields.apply(key, true);
        Ok(key.to_json(false, false))
    }

    pub fn delete_key(&mut self, caller: Caller, id: &str) -> Result<(), ApiError> {
        self.require(caller, |r| r.delete, "Not authorized to delete API keys.")?;
        let id = self.key(id)?.id;
        self.remove_key(id);
        Ok(())
    }

    pub fn regenerate_key(&mut self, caller: Caller, id: &str) -> Result<KeyJson, ApiError> {
        self.require(caller, |r| r.create, "Not authorized to generate API secret keys.")?;
        let id = self.key(id)?.id;
        Ok(self.regenerate(id))
    }

    pub fn describe_current(&self, caller: Caller) -> Result<KeyJson, ApiError> {
        let id = current_key(caller)?;
        Ok(self.keys.get(&id).ok_or_else(ApiError::key_not_found)?.to_json(false, true))
    }

    pub fn modify_current(&mut self, caller: Caller, body: &[u8]) -> Result<KeyJson, ApiError> {
        let id = current_key(caller)?;
        let fields = KeyFields::parse(body)?;
        let key = self.keys.get_mut(&id).ok_or_else(ApiError::key_not_found)?;
        // Only keyName, description, locale and timeZone are writable through /current.
        fields.apply(key, false);
        Ok(key.to_json(false, true))
    }

    pub fn regenerate_current(&mut self, caller: Caller) -> Result<KeyJson, ApiError> {
        let id = current_key(caller)?;
        if !self.keys.contains_key(&id) {
            return Err(ApiError::key_not_found());
        }
        Ok(self.regenerate(id))
    }

    fn regenerate(&mut self, id: i64) -> KeyJson {
        let key = self.keys.get_mut(&id).expect("checked");
        self.by_secret.remove(&key.secret);
        key.secret = new_secret(id);
        self.by_secret.insert(key.secret.clone(), id);
        key.to_json(true, false)
    }

    fn key(&self, id: &str) -> Result<&SimApiKey, ApiError> {
        id.parse::<i64>().ok().and_then(|id| self.keys.get(&id)).ok_or_else(ApiError::key_not_found)
    }

    fn remove_key(&mut self, id: i64) -> Option<SimApiKey> {
        let key = self.keys.remove(&id)?;
        self.by_secret.remove(&key.secret);
        self.recent.remove(&Caller::Key(id));
        Some(key)
    }

    // ---- control API ----

    pub fn all_keys(&self) -> Vec<SimApiKey> {
        self.keys.values().cloned().collect()
    }

    pub fn revoke(&mut self, id: i64) -> Option<SimApiKey> {
        let key = self.keys.get_mut(&id)?;
        key.active = false;
        Some(key.clone())
    }

    pub fn expire(&mut self, id: i64) -> Option<SimApiKey> {
        let key = self.keys.get_mut(&id)?;
        key.expiry_date = Some(now_ms() - 1);
        Some(key.clone())
    }

    pub fn delete(&mut self, id: i64) -> Option<SimApiKey> {
        self.remove_key(id)
    }
}

fn current_key(caller: Caller) -> Result<i64, ApiError> {
    match caller {
        Caller::Key(id) => Ok(id),
        Caller::Session(_) => Err(ApiError::bad_request("Authentication must be done via an API secret key.")),
    }
}

/// The writable `ApiKey` fields of a create or modify body; read-only ones (`ID`, `created`, ...) are ignored.
#[derive(Default)]
struct KeyFields {
    key_name: Option<String>,
    description: Option<Option<String>>,
    locale: Option<String>,
    role_id: Option<i64>,
    time_zone: Option<String>,
    active: Option<bool>,
    expiry_date: Option<i64>,
}

impl KeyFields {
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|_| ApiError::bad_request("The request body is not a valid ApiKey."))?;
        let obj = value.as_object().ok_or_else(|| ApiError::bad_request("The request body is not a valid ApiKey."))?;
        let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
        let invalid = |k: &str| ApiError::bad_request(format!("Invalid value for {k}."));
        let mut f = KeyFields::default();
        if let Some(v) = get("keyName") {
            let name = v.as_str().map(str::trim).filter(|s| !s.is_empty()).ok_or_else(|| invalid("keyName"))?;
            f.key_name = Some(name.to_owned());
        }
        if let Some(v) = get("description") {
            f.description = Some(Some(v.as_str().ok_or_else(|| invalid("description"))?.to_owned()));
        }
        if let Some(v) = get("locale") {
            match v.as_str() {
                Some(l @ ("en-US" | "ja-JP")) => f.locale = Some(l.to_owned()),
                _ => return Err(ApiError::bad_request("Invalid locale: use en-US or ja-JP.")),
            }
        }
        if let Some(v) = get("roleID") {
            // The official sample sends the role ID as a string ("2"); accept numeric strings too.
            let id = v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| invalid("roleID"))?;
            if role(id).is_none() {
                return Err(ApiError::bad_request(format!("The role with ID {id} does not exist.")));
            }
            f.role_id = Some(id);
        }
        if let Some(v) = get("timeZone") {
            let tz = v.as_str().filter(|s| !s.trim().is_empty()).ok_or_else(|| invalid("timeZone"))?;
            f.time_zone = Some(tz.to_owned());
        }
        if let Some(v) = get("active") {
            f.active = Some(v.as_bool().ok_or_else(|| invalid("active"))?);
        }
        if let Some(v) = get("expiryDate") {
            let at = v.as_i64().ok_or_else(|| invalid("expiryDate"))?;
            if at <= now_ms() {
                return Err(ApiError::bad_request("The expiry date must be in the future."));
            }
            f.expiry_date = Some(at);
        }
        Ok(f)
    }

    /// Sets what was given; `all` also allows roleID, active and expiryDate (not writable through /current).
    fn apply(self, key: &mut SimApiKey, all: bool) {
        if let Some(v) = self.key_name {
            key.key_name = v;
        }
        if let Some(v) = self.description {
            key.description = v;
        }
        if let Some(v) = self.locale {
            key.locale = v;
        }
        if let Some(v) = self.time_zone {
            key.time_zone = v;
        }
        if !all {
            return;
        }
        if let Some(v) = self.role_id {
            key.role_id = v;
        }
        if let Some(v) = self.active {
            key.active = v;
        }
        if let Some(v) = self.expiry_date {
            key.expiry_date = Some(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (Store, String) {
        Store::new("admin".into(), "pw".into(), None, 0, Duration::from_secs(60), Duration::from_secs(1800))
    }

    fn key_auth<'a>(secret: &'a str) -> Presented<'a> {
        Presented { api_secret_key: Some(secret), ..Default::default() }
    }

    fn create(s: &mut Store, caller: Caller, body: Value) -> Result<Value, ApiError> {
        s.create_key(caller, body.to_string().as_bytes()).map(v)
    }

    fn v(x: impl Serialize) -> Value {
        serde_json::to_value(x).unwrap()
    }

    #[test]
    fn seeded_admin_key_has_dsm_shaped_secret_and_full_access() {
        let (mut s, secret) = store();
        let (id, rest) = secret.split_once(':').unwrap();
        assert_eq!(id, "1");
        assert_eq!(rest.len(), 44);
        let caller = s.authenticate(&key_auth(&secret), Instant::now()).unwrap();
        assert_eq!(caller, Caller::Key(1));
        let current = v(s.describe_current(caller).unwrap());
        assert_eq!(current["roleID"], 1);
        assert!(current["roleURN"].as_str().unwrap().ends_with("role/full-access"));
        assert!(current.get("secretKey").is_none());
    }

    #[test]
    fn create_validates_and_returns_the_secret_once() {
        let (mut s, _) = store();
        let admin = Caller::Key(1);
        let err = create(&mut s, admin, json!({"keyName": "k", "roleID": 2, "locale": "fr-FR"})).unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(create(&mut s, admin, json!({"roleID": 2})).unwrap_err().status, 400);
        assert_eq!(create(&mut s, admin, json!({"keyName": "k", "roleID": 9})).unwrap_err().status, 400);
        let created = create(&mut s, admin, json!({"keyName": "k", "roleID": "2", "timeZone": "Asia/Tokyo"})).unwrap();
        assert_eq!(created["roleID"], 2);
        assert_eq!(created["locale"], "en-US");
        assert_eq!(created["timeZone"], "Asia/Tokyo");
        assert_eq!(created["active"], true);
        assert!(created.get("expiryDate").is_none());
        let secret = created["secretKey"].as_str().unwrap();
        assert!(secret.starts_with(&format!("{}:", created["ID"])));
        let id = created["ID"].to_string();
        assert!(v(s.describe_key(admin, &id).unwrap()).get("secretKey").is_none());
        // Duplicate names are accepted.
        assert!(create(&mut s, admin, json!({"keyName": "k", "roleID": 2})).is_ok());
    }

    #[test]
    fn auditor_reads_but_does_not_write() {
        let (mut s, _) = store();
        let created = create(&mut s, Caller::Key(1), json!({"keyName": "aud", "roleID": 2})).unwrap();
        let auditor = s.authenticate(&key_auth(created["secretKey"].as_str().unwrap()), Instant::now()).unwrap();
        assert!(s.list_keys(auditor).is_ok());
        assert!(s.search_keys(auditor, b"{}").is_ok());
        let err = create(&mut s, auditor, json!({"keyName": "x", "roleID": 1})).unwrap_err();
        assert_eq!(err, ApiError::new(403, "Not authorized to create API keys."));
        assert_eq!(s.regenerate_key(auditor, "1").unwrap_err().message, "Not authorized to generate API secret keys.");
        assert_eq!(s.delete_key(auditor, "1").unwrap_err().status, 403);
        assert_eq!(s.modify_key(auditor, "1", b"{}").unwrap_err().status, 403);
    }

    #[test]
    fn regenerate_revokes_the_old_secret_at_once() {
        let (mut s, _) = store();
        let created = create(&mut s, Caller::Key(1), json!({"keyName": "k", "roleID": 2})).unwrap();
        let old = created["secretKey"].as_str().unwrap().to_owned();
        let id = created["ID"].to_string();
        let new = v(s.regenerate_key(Caller::Key(1), &id).unwrap())["secretKey"].as_str().unwrap().to_owned();
        assert_ne!(old, new);
        assert_eq!(s.authenticate(&key_auth(&old), Instant::now()).unwrap_err().status, 401);
        assert!(s.authenticate(&key_auth(&new), Instant::now()).is_ok());
        assert_eq!(v(s.describe_key(Caller::Key(1), &id).unwrap())["unsuccessfulSignInAttempts"], 0);
    }

    #[test]
    fn locked_expired_unknown_and_deleted_keys_are_refused() {
        let (mut s, _) = store();
        let created = create(&mut s, Caller::Key(1), json!({"keyName": "k", "roleID": 2})).unwrap();
        let secret = created["secretKey"].as_str().unwrap().to_owned();
        let id = created["ID"].as_i64().unwrap();
        s.revoke(id).unwrap();
        assert_eq!(
            s.authenticate(&key_auth(&secret), Instant::now()).unwrap_err().message,
            "The API key is locked out."
        );
        s.modify_key(Caller::Key(1), &id.to_string(), br#"{"active": true}"#).unwrap();
        assert!(s.authenticate(&key_auth(&secret), Instant::now()).is_ok());
        s.expire(id).unwrap();
        assert_eq!(s.authenticate(&key_auth(&secret), Instant::now()).unwrap_err().status, 401);
        s.delete_key(Caller::Key(1), &id.to_string()).unwrap();
        assert_eq!(s.authenticate(&key_auth(&secret), Instant::now()).unwrap_err().status, 401);
        assert_eq!(s.describe_key(Caller::Key(1), &id.to_string()).err(), Some(ApiError::key_not_found()));
        assert_eq!(s.authenticate(&Presented::default(), Instant::now()).unwrap_err().status, 401);
    }

    #[test]
    fn sessions_need_the_matching_rid_and_act_with_full_access() {
        let (mut s, _) = store();
        let now = Instant::now();
        assert_eq!(s.open_session(br#"{"userName": "admin", "password": "nope"}"#, now).err().unwrap().status, 401);
        let session = s.open_session(br#"{"userName": "admin", "password": "pw"}"#, now).unwrap();
        assert_eq!(session.sid.len(), 32);
        assert_eq!(session.body.access_type, "webService");
        let rid = session.body.rid.clone();
        let wrong = Presented { sid: Some(&session.sid), rid: Some("0000"), ..Default::default() };
        assert_eq!(s.authenticate(&wrong, now).unwrap_err().status, 401);
        let right = Presented { sid: Some(&session.sid), rid: Some(&rid), ..Default::default() };
        let caller = s.authenticate(&right, now).unwrap();
        assert!(create(&mut s, caller, json!({"keyName": "First Key", "roleID": 1})).is_ok());
        assert_eq!(s.describe_current(caller).unwrap_err().status, 400);
        assert_eq!(s.authenticate(&right, now + Duration::from_secs(1801)).unwrap_err().status, 401);
    }

    #[test]
    fn rate_limit_uses_a_sliding_window_and_ignores_refused_calls() {
        let (mut s, secret) = store();
        s.set_rate_limit(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(s.authenticate(&key_auth(&secret), t0 + Duration::from_secs(i)).is_ok());
        }
        let err = s.authenticate(&key_auth(&secret), t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(err, ApiError::new(429, "Too many API requests"));
        assert_eq!(s.throttled(), 1);
        // The first call leaves the window at t0+60 s; the refused one never counted.
        assert!(s.authenticate(&key_auth(&secret), t0 + Duration::from_secs(60)).is_ok());
        assert!(s.authenticate(&key_auth(&secret), t0 + Duration::from_millis(60_500)).is_err());
    }

    #[test]
    fn modify_changes_only_given_fields_and_current_only_its_own() {
        let (mut s, _) = store();
        let created = create(&mut s, Caller::Key(1), json!({"keyName": "k", "description": "d", "roleID": 2})).unwrap();
        let id = created["ID"].as_i64().unwrap();
        let m = v(s.modify_key(Caller::Key(1), &id.to_string(), br#"{"locale": "ja-JP", "ID": 99}"#).unwrap());
        assert_eq!(
            (m["locale"].as_str(), m["description"].as_str(), m["ID"].as_i64()),
            (Some("ja-JP"), Some("d"), Some(id))
        );
        let m = v(s.modify_current(Caller::Key(id), br#"{"keyName": "renamed", "roleID": 1}"#).unwrap());
        assert_eq!((m["keyName"].as_str(), m["roleID"].as_i64()), (Some("renamed"), Some(2)));
    }

    #[test]
    fn role_search_finds_by_exact_name() {
        let (s, _) = store();
        let body = json!({"searchCriteria": [{"fieldName": "name", "stringTest": "equal", "stringValue": "Auditor",
            "stringWildcards": false}]});
        let found = s.search_roles(body.to_string().as_bytes()).unwrap();
        assert_eq!(found["roles"].as_array().unwrap().len(), 1);
        assert_eq!(found["roles"][0]["ID"], 2);
        assert_eq!(s.describe_role("1").unwrap()["name"], "Full Access");
        assert_eq!(s.describe_role("7").unwrap_err().status, 404);
    }

    #[test]
    fn debug_of_a_stored_key_leaves_the_secret_out() {
        let (s, secret) = store();
        let keys = s.all_keys();
        assert!(!format!("{keys:?}").contains(&secret));
        assert!(!serde_json::to_string(&keys).unwrap().contains(&secret));
    }
}
