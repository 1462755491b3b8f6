//! Wire types of the Deep Security / Workload Security `/api` (field names as in the official SDK
//! `deep-security-api` 20.0.463: `ID` upper-case, the rest camelCase, nulls omitted when sending).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::clients::SecretString;

// The CRD reuses this type (`spec.locale`): one definition of the vendor's vocabulary.
/// API key language. The API accepts exactly these two values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Locale {
    #[default]
    #[serde(rename = "en-US")]
    EnUs,
    #[serde(rename = "ja-JP")]
    JaJp,
}

impl Locale {
    pub fn as_str(&self) -> &'static str {
        match self {
            Locale::EnUs => "en-US",
            Locale::JaJp => "ja-JP",
        }
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Locale {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "en-US" => Ok(Locale::EnUs),
            "ja-JP" => Ok(Locale::JaJp),
            other => Err(format!("unsupported locale {other:?}: use en-US or ja-JP")),
        }
    }
}

/// An API key as the vendor describes it. Never holds the secret: see [`IssuedApiKey`].
/// Also used for `GET /apikeys/current`, which adds `roleURN`, `tenantID` and `tenantGUID`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    #[serde(rename = "ID")]
    pub id: i64,
    #[serde(default)]
    pub key_name: String,
    pub description: Option<String>,
    /// Kept as text so an unexpected value from a newer server does not make the key unreadable.
    pub locale: Option<String>,
    #[serde(rename = "roleID")]
    pub role_id: Option<i64>,
    pub time_zone: Option<String>,
    pub active: Option<bool>,
    /// Epoch milliseconds.
    pub created: Option<i64>,
    /// Epoch milliseconds of the last successful authentication.
    pub last_sign_in: Option<i64>,
    /// Epoch milliseconds when a locked-out key unlocks.
    pub unlock_time: Option<i64>,
    pub unsuccessful_sign_in_attempts: Option<i64>,
    /// Epoch milliseconds; absent when the key never expires.
    pub expiry_date: Option<i64>,
    pub service_account: Option<bool>,
    #[serde(rename = "roleURN")]
    pub role_urn: Option<String>,
    #[serde(rename = "tenantID")]
    pub tenant_id: Option<i64>,
    #[serde(rename = "tenantGUID")]
    pub tenant_guid: Option<String>,
}

impl ApiKey {
    pub fn created_at(&self) -> Option<jiff::Timestamp> {
        self.created.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
    }

    pub fn expires_at(&self) -> Option<jiff::Timestamp> {
        self.expiry_date.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
    }

    /// Whether the key can authenticate at `now`: not locked out and not past its expiry.
    pub fn is_usable_at(&self, now: jiff::Timestamp) -> bool {
        self.active != Some(false) && self.expires_at().is_none_or(|at| at > now)
    }
}

/// A key together with its secret, as returned by create and regenerate (the only times the vendor shows it).
/// `secret_key` is the complete `api-secret-key` header value; treat it as opaque.
#[derive(Debug, Clone)]
pub struct IssuedApiKey {
    pub key: ApiKey,
    pub secret_key: SecretString,
}

/// The create/regenerate response body: an `ApiKey` plus `secretKey`.
#[derive(Deserialize)]
pub(super) struct IssuedApiKeyWire {
    #[serde(flatten)]
    pub key: ApiKey,
    #[serde(rename = "secretKey")]
    pub secret_key: Option<SecretString>,
}

/// Body of `POST /apikeys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewApiKey {
    pub key_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<Locale>,
    #[serde(rename = "roleID")]
    pub role_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Epoch milliseconds; `None` for a key that does not expire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry_date: Option<i64>,
}

impl NewApiKey {
    pub fn new(key_name: impl Into<String>, role_id: i64) -> Self {
        Self { key_name: key_name.into(), description: None, locale: None, role_id, time_zone: None, expiry_date: None }
    }
}

/// Body of `POST /apikeys/{id}` (modify): unset fields are left unchanged by the vendor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyChanges {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<Locale>,
    #[serde(rename = "roleID", skip_serializing_if = "Option::is_none")]
    pub role_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// `Some(false)` locks the key out; `Some(true)` unlocks it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry_date: Option<i64>,
}

/// An administrator role (only the fields the operator reads; the rest, e.g. `rights`, is ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    #[serde(rename = "ID")]
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub urn: Option<String>,
    pub immutable: Option<bool>,
    pub all_computers: Option<bool>,
    pub all_policies: Option<bool>,
    pub allow_user_interface: Option<bool>,
    /// Whether keys with this role may call the API at all.
    pub allow_web_service: Option<bool>,
}

#[derive(Deserialize)]
pub(super) struct ApiKeyList {
    #[serde(rename = "apiKeys", default)]
    pub api_keys: Vec<ApiKey>,
}

#[derive(Deserialize)]
pub(super) struct RoleList {
    #[serde(default)]
    pub roles: Vec<Role>,
}

/// `stringTest` of a search criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StringTest {
    Equal,
    NotEqual,
}

/// `numericTest` / `idTest` of a search criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Comparison {
    LessThan,
    LessThanOrEqual,
    Equal,
    GreaterThanOrEqual,
    GreaterThan,
    NotEqual,
}

/// Body of every `…/search` operation. All criteria must hold; none means "everything".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchFilter {
    /// The server's default is 5000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search_criteria: Vec<SearchCriteria>,
    #[serde(rename = "sortByObjectID", skip_serializing_if = "Option::is_none")]
    pub sort_by_object_id: Option<bool>,
}

impl SearchFilter {
    pub fn matching(criteria: impl IntoIterator<Item = SearchCriteria>) -> Self {
        Self { search_criteria: criteria.into_iter().collect(), ..Self::default() }
    }
}

/// One search criterion. Which test applies follows from the fields that are set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchCriteria {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string_test: Option<StringTest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
    /// The server's default is `true`: `%` and `_` in `string_value` are wildcards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string_wildcards: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numeric_test: Option<Comparison>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numeric_value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boolean_test: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_date_value: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_date_inclusive: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_date_value: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_date_inclusive: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub null_test: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_test: Option<Comparison>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_value: Option<i64>,
}

impl SearchCriteria {
    /// `field == value` literally: wildcards off, so `%` and `_` in names match only themselves.
    pub fn string_equals(field: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            field_name: Some(field.into()),
            string_test: Some(StringTest::Equal),
            string_value: Some(value.into()),
            string_wildcards: Some(false),
            ..Self::default()
        }
    }

    /// A test on the object ID (no field name), e.g. for paging with `greater-than`.
    pub fn id(test: Comparison, value: i64) -> Self {
        Self { id_test: Some(test), id_value: Some(value), ..Self::default() }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn new_key_body_matches_the_sdk_and_omits_nulls() {
        let mut key = NewApiKey::new("reporting-auditor", 2);
        assert_eq!(serde_json::to_value(&key).unwrap(), json!({"keyName": "reporting-auditor", "roleID": 2}));
        key.description = Some("Read-only access".into());
        key.locale = Some(Locale::EnUs);
        key.time_zone = Some("Asia/Tokyo".into());
        key.expiry_date = Some(1_700_000_000_000);
        assert_eq!(
            serde_json::to_value(&key).unwrap(),
            json!({
                "keyName": "reporting-auditor", "description": "Read-only access", "locale": "en-US",
                "roleID": 2, "timeZone": "Asia/Tokyo", "expiryDate": 1_700_000_000_000i64
            })
        );
    }

    #[test]
    fn changes_send_only_what_is_set() {
        assert_eq!(serde_json::to_value(ApiKeyChanges::default()).unwrap(), json!({}));
        let c = ApiKeyChanges { active: Some(false), locale: Some(Locale::JaJp), ..Default::default() };
        assert_eq!(serde_json::to_value(&c).unwrap(), json!({"locale": "ja-JP", "active": false}));
    }

    #[test]
    fn exact_name_filter_turns_wildcards_off() {
        let f = SearchFilter::matching([SearchCriteria::string_equals("keyName", "app_1%")]);
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            json!({"searchCriteria": [{
                "fieldName": "keyName", "stringTest": "equal", "stringValue": "app_1%", "stringWildcards": false
            }]})
        );
        let page = SearchFilter {
            max_items: Some(100),
            sort_by_object_id: Some(true),
            ..SearchFilter::matching([SearchCriteria::id(Comparison::GreaterThan, 41)])
        };
        assert_eq!(
            serde_json::to_value(&page).unwrap(),
            json!({"maxItems": 100, "searchCriteria": [{"idTest": "greater-than", "idValue": 41}], "sortByObjectID": true})
        );
    }

    #[test]
    fn api_key_reads_the_seed_response() {
        let body = json!({
            "keyName": "First Key", "description": "Created using a request ID", "locale": "en-US", "roleID": 1,
            "timeZone": "America/New_York", "active": true, "created": 1540310105209i64,
            "unsuccessfulSignInAttempts": 0, "secretKey": "8:c2VjcmV0", "serviceAccount": false, "ID": 8
        });
        let wire: IssuedApiKeyWire = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(wire.key.id, 8);
        assert_eq!(wire.key.role_id, Some(1));
        assert_eq!(wire.key.created_at().unwrap().as_millisecond(), 1540310105209);
        assert_eq!(wire.secret_key.unwrap().expose(), "8:c2VjcmV0");
        // The plain type ignores the secret, so it can never print it.
        let plain: ApiKey = serde_json::from_value(body).unwrap();
        assert!(!format!("{plain:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn usable_means_active_and_unexpired() {
        let now = jiff::Timestamp::from_millisecond(1_000_000).unwrap();
        let key = |active, expiry| ApiKey {
            active,
            expiry_date: expiry,
            ..serde_json::from_value(json!({"ID": 1})).unwrap()
        };
        assert!(key(Some(true), None).is_usable_at(now));
        assert!(key(None, Some(1_000_001)).is_usable_at(now));
        assert!(!key(Some(false), None).is_usable_at(now));
        assert!(!key(Some(true), Some(1_000_000)).is_usable_at(now));
    }

    #[test]
    fn locale_round_trips() {
        assert_eq!("ja-JP".parse::<Locale>().unwrap(), Locale::JaJp);
        assert!("fr-FR".parse::<Locale>().is_err());
        assert_eq!(serde_json::to_value(Locale::EnUs).unwrap(), json!("en-US"));
    }
}
