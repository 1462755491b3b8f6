//! Trend Cloud One account API keys (the accounts API, `https://accounts.cloudone.trendmicro.com/api`):
//! `Authorization: ApiKey <id>:<secret>` with `Api-Version: v1`, cursor paging (`next`), roles by ID slug
//! (`full-access`), errors as `{"message", "fields"}`.

use std::{sync::Arc, time::Duration};

use reqwest::{
    Method,
    header::{HeaderMap, HeaderName, HeaderValue},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{
    TrendFuture,
    keys::{IssuedKey, KeyApi, KeyInfo, KeyRequest, TrendApiKind},
    retry::{Replay, RetryPolicy},
    transport::{Call, Transport, TransportOptions},
    wire::decode,
};
use crate::clients::{DEFAULT_REQUESTS_PER_MINUTE, ErrorKind, RateLimiter, SecretString, TlsOptions, VendorError};

/// What no public source confirms, in one place (docs/vendor-apis.md, Cloud One).
mod unconfirmed {
    use reqwest::Method;

    use crate::clients::{SecretString, trend::Locale};

    /// The create body takes the key's language and time zone as the key object shows them (`locale` `en`/`ja`,
    /// `timezone`): the console offers both, but the create schema was not captured.
    pub fn locale(locale: Locale) -> &'static str {
        match locale {
            Locale::EnUs => "en",
            Locale::JaJp => "ja",
        }
    }
    /// Delete is `DELETE /apikeys/{id}` (the reference's verb was not captured).
    pub const DELETE_METHOD: Method = Method::DELETE;
    /// Whether create's `secret` already starts with `<id>:` is unknown: take it whole when it does, else prefix it.
    pub fn credential(id: &str, secret: &str) -> SecretString {
        if secret.starts_with(&format!("{id}:")) {
            SecretString::new(secret)
        } else {
            SecretString::new(format!("{id}:{secret}"))
        }
    }
    /// The key ID is the credential's part before the first `:` (as Trend's own onboarding code reads it).
    pub fn key_id(credential: &str) -> Option<&str> {
        credential.split_once(':').map(|(id, _)| id).filter(|id| !id.is_empty())
    }
}

/// Keys or roles asked for per page (the API's default is 25).
const PAGE_SIZE: u32 = 100;
/// Pages followed by one listing at most.
const MAX_PAGES: usize = 100;
static API_VERSION: HeaderName = HeaderName::from_static("api-version");

/// Client of the Cloud One accounts API.
#[derive(Debug)]
pub struct CloudOneClient {
    transport: Transport,
    /// The ID part of the client's own key, for describing it.
    own_key_id: Option<String>,
}

/// An API key as list and describe show it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudOneKey {
    pub id: String,
    #[serde(default)]
    pub alias: String,
    pub description: Option<String>,
    #[serde(rename = "roleID", default)]
    pub role_id: String,
    pub locale: Option<String>,
    pub timezone: Option<String>,
    pub enabled: Option<bool>,
    pub urn: Option<String>,
    pub created: Option<String>,
    pub last_activity: Option<String>,
}

impl CloudOneKey {
    fn info(self) -> KeyInfo {
        KeyInfo {
            enabled: self.enabled != Some(false),
            id: self.id,
            name: self.alias,
            description: self.description,
            role: self.role_id,
            expires_at: None,
        }
    }
}

/// A role as `GET /roles` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct CloudOneRole {
    /// The slug keys refer to, e.g. `full-access`.
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub description: Option<String>,
    pub urn: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NewKey<'a> {
    alias: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(rename = "roleID")]
    role_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    locale: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timezone: Option<&'a str>,
}

#[derive(Deserialize)]
struct CreatedKey {
    id: String,
    secret: Option<SecretString>,
}

#[derive(Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new", alias = "apikeys", alias = "roles")]
    items: Vec<T>,
    next: Option<String>,
}

impl CloudOneClient {
    /// A client for `base_url` (e.g. `https://accounts.cloudone.trendmicro.com/api`), authenticating with the full
    /// `<id>:<secret>` key.
    pub fn new(
        base_url: &str,
        api_key: SecretString,
        tls: &TlsOptions,
        limiter: Arc<RateLimiter>,
        timeout: Duration,
    ) -> Result<Self, VendorError> {
        let own_key_id = unconfirmed::key_id(api_key.expose()).map(str::to_owned);
        let mut secrets = vec![api_key.clone()];
        if let Some((_, secret)) = api_key.expose().split_once(':') {
            secrets.push(SecretString::new(secret));
        }
        let mut fixed_headers = HeaderMap::new();
        fixed_headers.insert(&API_VERSION, HeaderValue::from_static("v1"));
        let transport = Transport::new(TransportOptions {
            what: "configure Cloud One client",
            base_url,
            authorization: SecretString::new(format!("ApiKey {}", api_key.expose())),
            secrets,
            fixed_headers,
            tls,
            limiter,
            timeout,
            error_text: error_message,
        })?;
        Ok(Self { transport, own_key_id })
    }

    pub fn with_default_limiter(base_url: &str, api_key: SecretString, tls: &TlsOptions) -> Result<Self, VendorError> {
        let limiter = RateLimiter::per_minute(DEFAULT_REQUESTS_PER_MINUTE);
        Self::new(base_url, api_key, tls, limiter, super::wire::DEFAULT_TIMEOUT)
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.transport.retry = retry;
        self
    }

    pub fn base_url(&self) -> &str {
        self.transport.base_url()
    }

    /// Every role, all pages.
    pub async fn list_roles(&self) -> Result<Vec<CloudOneRole>, VendorError> {
        self.all_pages("list Cloud One roles", "/roles").await
    }

    /// Every API key, all pages.
    pub async fn list_api_keys(&self) -> Result<Vec<CloudOneKey>, VendorError> {
        self.all_pages("list Cloud One API keys", "/apikeys").await
    }

    pub async fn describe_api_key(&self, id: &str) -> Result<CloudOneKey, VendorError> {
        let call =
            Call::new("describe Cloud One API key", Method::GET, format!("/apikeys/{}", segment(id)), Replay::Safe);
        self.execute(call).await
    }

    /// The key this client authenticates with.
    pub async fn describe_current_api_key(&self) -> Result<CloudOneKey, VendorError> {
        let Some(id) = &self.own_key_id else {
            return Err(VendorError::new(
                ErrorKind::Invalid,
                "describe current Cloud One API key",
                None,
                "the admin API key is not of the form <id>:<secret>",
            ));
        };
        self.describe_api_key(id).await
    }

    /// `POST /apikeys`; the new key's ID and its whole `<id>:<secret>` credential.
    pub async fn create_api_key(&self, key: &KeyRequest) -> Result<IssuedKey, VendorError> {
        const OP: &str = "create Cloud One API key";
        if key.expiry.is_some() {
            return Err(VendorError::new(ErrorKind::Invalid, OP, None, "Cloud One API keys have no expiry to set"));
        }
        let body = NewKey {
            alias: &key.name,
            description: key.description.as_deref(),
            role_id: &key.role,
            locale: key.locale.map(unconfirmed::locale),
            timezone: key.time_zone.as_deref(),
        };
        let call = Call::new(OP, Method::POST, "/apikeys", Replay::OnlyIfUnprocessed).json(&body)?;
        let created: CreatedKey = self.execute(call).await?;
        match created.secret.filter(|s| !s.is_empty()) {
            Some(secret) => Ok(IssuedKey {
                secret: unconfirmed::credential(&created.id, secret.expose()),
                id: created.id,
                expires_at: None,
            }),
            None => Err(VendorError::new(ErrorKind::Invalid, OP, None, "the answer carried no secret")),
        }
    }

    /// Deletes a key; `NotFound` when it is already gone.
    pub async fn delete_api_key(&self, id: &str) -> Result<(), VendorError> {
        let call = Call::new(
            "delete Cloud One API key",
            unconfirmed::DELETE_METHOD,
            format!("/apikeys/{}", segment(id)),
            Replay::Safe,
        );
        self.transport.send(&call).await.map(drop)
    }

    /// Every key whose alias is exactly `name` (the list has no name filter).
    pub async fn find_api_keys_by_name(&self, name: &str) -> Result<Vec<KeyInfo>, VendorError> {
        let keys = self.list_api_keys().await?;
        Ok(keys.into_iter().filter(|k| k.alias == name).map(CloudOneKey::info).collect())
    }

    /// The role whose ID slug or name is exactly `name`.
    pub async fn find_role_by_name(&self, name: &str) -> Result<Option<CloudOneRole>, VendorError> {
        let roles = self.list_roles().await?;
        Ok(roles.iter().find(|r| r.id == name).or_else(|| roles.iter().find(|r| r.name == name)).cloned())
    }

    async fn all_pages<T: DeserializeOwned>(&self, operation: &'static str, path: &str) -> Result<Vec<T>, VendorError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut url = format!("{path}?limit={PAGE_SIZE}");
            if let Some(c) = &cursor {
                url.push_str("&cursor=");
                url.extend(url::form_urlencoded::byte_serialize(c.as_bytes()));
            }
            let page: Page<T> = self.execute(Call::new(operation, Method::GET, url, Replay::Safe)).await?;
            out.extend(page.items);
            match page.next.filter(|n| !n.is_empty()) {
                Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                _ => return Ok(out),
            }
        }
        Err(VendorError::new(ErrorKind::Invalid, operation, None, "too many pages"))
    }

    async fn execute<T: DeserializeOwned>(&self, call: Call) -> Result<T, VendorError> {
        let answer = self.transport.send(&call).await?;
        decode(call.operation, &answer.body)
    }
}

fn segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>().replace('+', "%20")
}

/// `message`, then each of `fields` as `name: problem`; the trimmed text when the body is not that shape.
pub(super) fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Body {
        message: Option<String>,
        #[serde(default)]
        fields: Option<serde_json::Map<String, serde_json::Value>>,
    }
    let Ok(Body { message: Some(message), fields }) = serde_json::from_slice::<Body>(body) else {
        return super::wire::error_message(body);
    };
    let mut text = message.trim().to_owned();
    let fields: Vec<String> = fields
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| format!("{k}: {}", v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
        .collect();
    if !fields.is_empty() {
        text.push_str(&format!(" ({})", fields.join("; ")));
    }
    text
}

impl KeyApi for CloudOneClient {
    fn api(&self) -> TrendApiKind {
        TrendApiKind::CloudOne
    }

    fn find_role<'a>(&'a self, name: &'a str) -> TrendFuture<'a, Option<String>> {
        Box::pin(async move { Ok(self.find_role_by_name(name).await?.map(|r| r.id)) })
    }

    fn create_key<'a>(&'a self, key: &'a KeyRequest) -> TrendFuture<'a, IssuedKey> {
        Box::pin(self.create_api_key(key))
    }

    fn find_keys_by_name<'a>(&'a self, name: &'a str) -> TrendFuture<'a, Vec<KeyInfo>> {
        Box::pin(self.find_api_keys_by_name(name))
    }

    fn delete_key<'a>(&'a self, id: &'a str) -> TrendFuture<'a, ()> {
        Box::pin(self.delete_api_key(id))
    }

    fn check_credential(&self) -> TrendFuture<'_, String> {
        Box::pin(async move {
            let key = self.describe_current_api_key().await?;
            if key.enabled == Some(false) {
                return Err(VendorError::new(
                    ErrorKind::Unauthorized,
                    "describe current Cloud One API key",
                    None,
                    format!("the admin API key {} is disabled", key.id),
                ));
            }
            Ok(format!("the admin API key {} ({:?}, role {}) is accepted by Cloud One", key.id, key.alias, key.role_id))
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::clients::trend::Locale;

    #[test]
    fn credential_is_id_colon_secret_either_way() {
        assert_eq!(unconfirmed::credential("2abc", "s3cr3t").expose(), "2abc:s3cr3t");
        assert_eq!(unconfirmed::credential("2abc", "2abc:s3cr3t").expose(), "2abc:s3cr3t");
        assert_eq!(unconfirmed::key_id("2abc:s3cr3t"), Some("2abc"));
        assert_eq!(unconfirmed::key_id("nocolon"), None);
    }

    #[test]
    fn errors_list_their_fields() {
        let body = br#"{"message": "Invalid request.", "fields": {"roleID": "must be a role ID"}}"#;
        assert_eq!(error_message(body), "Invalid request. (roleID: must be a role ID)");
        assert_eq!(error_message(br#"{"message": "Unauthorized"}"#), "Unauthorized");
        assert_eq!(error_message(b"<html>oops</html>"), "<html>oops</html>");
    }

    #[test]
    fn pages_read_both_lists() {
        let keys: Page<CloudOneKey> = serde_json::from_value(
            json!({"next": "c2", "apikeys": [{"id": "k", "alias": "a", "roleID": "full-access"}]}),
        )
        .unwrap();
        assert_eq!((keys.items.len(), keys.next.as_deref()), (1, Some("c2")));
        let roles: Page<CloudOneRole> =
            serde_json::from_value(json!({"roles": [{"id": "full-access", "name": "Full Access"}]})).unwrap();
        assert_eq!(roles.items[0].id, "full-access");
        assert!(roles.next.is_none());
    }

    #[test]
    fn new_key_body_uses_the_accounts_field_names() {
        let body = NewKey { alias: "app", description: Some("d"), role_id: "read-only", locale: None, timezone: None };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"alias": "app", "description": "d", "roleID": "read-only"})
        );
        let body = NewKey { locale: Some(unconfirmed::locale(Locale::JaJp)), timezone: Some("Asia/Tokyo"), ..body };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"alias": "app", "description": "d", "roleID": "read-only", "locale": "ja", "timezone": "Asia/Tokyo"})
        );
        assert_eq!(unconfirmed::locale(Locale::EnUs), "en");
    }

    #[tokio::test]
    async fn expiry_is_refused_without_a_call() {
        let c = CloudOneClient::with_default_limiter(
            "https://127.0.0.1:9/api",
            SecretString::new("id:secret"),
            &TlsOptions::default(),
        )
        .unwrap();
        let req =
            KeyRequest { expiry: Some(super::super::keys::ExpiryMonths::One), ..KeyRequest::new("n", "full-access") };
        assert_eq!(c.create_api_key(&req).await.unwrap_err().kind, ErrorKind::Invalid);
        assert!(!format!("{c:?}").contains("secret\""));
    }
}
