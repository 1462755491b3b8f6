//! Trend Vision One API keys (`/v3.0/iam/apiKeys`) and connectivity check, as the official `pytmv1` calls them:
//! base = the regional host root (e.g. `https://api.xdr.trendmicro.com`) + `/v3.0`, `Authorization: Bearer <key>`,
//! create and delete answer 207 multi-status, update takes the `ETag` as `If-Match`, list filters with `TMV1-Filter`.

use std::{sync::Arc, time::Duration};

use reqwest::{Method, header::HeaderMap};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{
    TrendFuture,
    keys::{ExpiryMonths, IssuedKey, KeyApi, KeyInfo, KeyRequest, TrendApiKind},
    retry::{Replay, RetryPolicy},
    transport::{Call, Transport, TransportOptions},
    wire::{decode, error_message},
};
use crate::clients::{DEFAULT_REQUESTS_PER_MINUTE, ErrorKind, RateLimiter, SecretString, TlsOptions, VendorError};

/// What no public source confirms, in one place (docs/vendor-apis.md, Vision One).
mod unconfirmed {
    /// Vision One has no role listing we rely on: keys name their role directly and create refuses an unknown
    /// one. `Master Administrator` may not be given to API keys (console, since 2025-10-27).
    pub const ROLE_NOT_FOR_KEYS: &str = "Master Administrator";
    /// `monthsToExpiration: 0` is pytmv1's default; read as "does not expire".
    pub const NEVER_EXPIRES: u8 = 0;
    /// Largest `top` a list page may ask for.
    pub const PAGE_SIZE: u32 = 200;
    /// `expiredDateTime` of a key that does not expire: absent, empty, or a far-future date.
    pub fn expiry(text: Option<&str>) -> Option<jiff::Timestamp> {
        text.filter(|t| !t.is_empty())
            .and_then(|t| t.parse().ok())
            .filter(|t: &jiff::Timestamp| t.as_second() < 253_402_300_799)
    }
}

const API_PREFIX: &str = "/v3.0";
/// Pages followed by one listing at most (200 keys each).
const MAX_PAGES: usize = 50;

/// Client of one Vision One region.
#[derive(Debug)]
pub struct VisionOneClient {
    transport: Transport,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateItem<'a> {
    name: &'a str,
    role: &'a str,
    months_to_expiration: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    status: &'static str,
}

/// One entry of a 207 multi-status answer.
#[derive(Deserialize)]
struct MultiItem {
    status: u16,
    #[serde(default)]
    body: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreatedBody {
    id: String,
    value: SecretString,
    expired_date_time: Option<String>,
}

/// An API key as list and get describe it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VisionOneKey {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub role: String,
    pub expired_date_time: Option<String>,
    pub last_used_date_time: Option<String>,
    pub description: Option<String>,
}

impl VisionOneKey {
    fn info(self) -> KeyInfo {
        KeyInfo {
            expires_at: unconfirmed::expiry(self.expired_date_time.as_deref()),
            enabled: self.status == "enabled",
            id: self.id,
            name: self.name,
            description: self.description,
            role: self.role,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyPage {
    #[serde(default)]
    items: Vec<VisionOneKey>,
    next_link: Option<String>,
}

/// Fields `PATCH /iam/apiKeys/{id}` changes; unset ones stay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VisionOneKeyChanges {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `enabled` or `disabled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl VisionOneClient {
    /// A client for the region host root `base_url` (the client adds `/v3.0`), authenticating with `api_key`.
    pub fn new(
        base_url: &str,
        api_key: SecretString,
        tls: &TlsOptions,
        limiter: Arc<RateLimiter>,
        timeout: Duration,
    ) -> Result<Self, VendorError> {
        let root = base_url.trim_end_matches('/');
        let root = root.strip_suffix(API_PREFIX).unwrap_or(root);
        let transport = Transport::new(TransportOptions {
            what: "configure Vision One client",
            base_url: &format!("{root}{API_PREFIX}"),
            authorization: SecretString::new(format!("Bearer {}", api_key.expose())),
            secrets: vec![api_key],
            fixed_headers: HeaderMap::new(),
            tls,
            limiter,
            timeout,
            error_text: error_message,
        })?;
        Ok(Self { transport })
    }

    pub fn with_default_limiter(base_url: &str, api_key: SecretString, tls: &TlsOptions) -> Result<Self, VendorError> {
        let limiter = RateLimiter::per_minute(DEFAULT_REQUESTS_PER_MINUTE);
        Self::new(base_url, api_key, tls, limiter, super::wire::DEFAULT_TIMEOUT)
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.transport.retry = retry;
        self
    }

    /// The base URL requests go to (host root + `/v3.0`).
    pub fn base_url(&self) -> &str {
        self.transport.base_url()
    }

    /// `GET /healthcheck/connectivity`: the key is accepted; the service's `status` word.
    pub async fn check_connectivity(&self) -> Result<String, VendorError> {
        #[derive(Deserialize)]
        struct Connectivity {
            status: String,
        }
        let call = Call::new("check Vision One connectivity", Method::GET, "/healthcheck/connectivity", Replay::Safe);
        Ok(self.execute::<Connectivity>(call).await?.status)
    }

    /// `POST /iam/apiKeys` with one key; its ID and secret from the 207 answer.
    pub async fn create_api_key(&self, key: &KeyRequest) -> Result<IssuedKey, VendorError> {
        const OP: &str = "create Vision One API key";
        if key.locale.is_some() || key.time_zone.is_some() {
            return Err(VendorError::new(
                ErrorKind::Invalid,
                OP,
                None,
                "Vision One API keys have no locale or time zone",
            ));
        }
        if key.role == unconfirmed::ROLE_NOT_FOR_KEYS {
            return Err(VendorError::new(
                ErrorKind::Invalid,
                OP,
                None,
                format!("Vision One does not give API keys the role {:?}", key.role),
            ));
        }
        let item = CreateItem {
            name: &key.name,
            role: &key.role,
            months_to_expiration: key.expiry.map_or(unconfirmed::NEVER_EXPIRES, ExpiryMonths::months),
            description: key.description.as_deref(),
            status: "enabled",
        };
        let call = Call::new(OP, Method::POST, "/iam/apiKeys", Replay::OnlyIfUnprocessed).json(&[item])?;
        let answer = self.transport.send(&call).await?;
        let body = self.single_item(OP, &answer.body)?;
        let created: CreatedBody = serde_json::from_value(body.unwrap_or_default()).map_err(|e| {
            VendorError::new(ErrorKind::Invalid, OP, None, format!("unexpected created key ({:?} error)", e.classify()))
        })?;
        if created.value.is_empty() {
            return Err(VendorError::new(ErrorKind::Invalid, OP, None, "the answer carried no key value"));
        }
        Ok(IssuedKey {
            expires_at: unconfirmed::expiry(created.expired_date_time.as_deref()),
            id: created.id,
            secret: created.value,
        })
    }

    /// `GET /iam/apiKeys/{id}`: the key and its `ETag` (for [`Self::update_api_key`]).
    pub async fn get_api_key(&self, id: &str) -> Result<(VisionOneKey, String), VendorError> {
        let call = Call::new(
            "describe Vision One API key",
            Method::GET,
            format!("/iam/apiKeys/{}", segment(id)),
            Replay::Safe,
        );
        let answer = self.transport.send(&call).await?;
        let etag = answer.headers.get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        Ok((decode(call.operation, &answer.body)?, etag))
    }

    /// `PATCH /iam/apiKeys/{id}` guarded by `If-Match: <etag>` (a changed key fails with 412).
    pub async fn update_api_key(&self, id: &str, etag: &str, changes: &VisionOneKeyChanges) -> Result<(), VendorError> {
        let call = Call::new(
            "update Vision One API key",
            Method::PATCH,
            format!("/iam/apiKeys/{}", segment(id)),
            Replay::Safe,
        )
        .json(changes)?
        .header("if-match", etag.trim_matches('"'))?;
        self.transport.send(&call).await.map(drop)
    }

    /// `POST /iam/apiKeys/delete` with one ID; `NotFound` when it is already gone.
    pub async fn delete_api_key(&self, id: &str) -> Result<(), VendorError> {
        const OP: &str = "delete Vision One API key";
        #[derive(Serialize)]
        struct Id<'a> {
            id: &'a str,
        }
        let call = Call::new(OP, Method::POST, "/iam/apiKeys/delete", Replay::Safe).json(&[Id { id }])?;
        let answer = self.transport.send(&call).await?;
        self.single_item(OP, &answer.body).map(drop)
    }

    /// Keys matching a `TMV1-Filter` expression (e.g. `name eq 'x'`), newest first, every page.
    pub async fn list_api_keys(&self, filter: Option<&str>) -> Result<Vec<VisionOneKey>, VendorError> {
        let mut path = format!("/iam/apiKeys?orderBy=createdDateTime%20desc&top={}", unconfirmed::PAGE_SIZE);
        let mut keys = Vec::new();
        for _ in 0..MAX_PAGES {
            let mut call = Call::new("list Vision One API keys", Method::GET, path, Replay::Safe);
            if let Some(f) = filter {
                call = call.header("tmv1-filter", f)?;
            }
            let page: KeyPage = self.execute(call).await?;
            keys.extend(page.items);
            match page.next_link {
                Some(link) if !link.is_empty() => path = self.same_origin_path(&link)?,
                _ => return Ok(keys),
            }
        }
        Err(VendorError::new(ErrorKind::Invalid, "list Vision One API keys", None, "too many pages"))
    }

    /// Every key named exactly `name`.
    pub async fn find_api_keys_by_name(&self, name: &str) -> Result<Vec<KeyInfo>, VendorError> {
        let filter = format!("name eq '{}'", name.replace('\'', "''"));
        let keys = self.list_api_keys(Some(&filter)).await?;
        Ok(keys.into_iter().filter(|k| k.name == name).map(VisionOneKey::info).collect())
    }

    /// A `nextLink` as a path under the base URL; a link elsewhere is refused (the token must not follow it).
    fn same_origin_path(&self, link: &str) -> Result<String, VendorError> {
        let base = url::Url::parse(self.transport.base_url()).expect("checked at construction");
        let next = base.join(link).ok().filter(|u| u.origin() == base.origin() && u.path().starts_with(base.path()));
        let Some(next) = next else {
            return Err(VendorError::new(
                ErrorKind::Invalid,
                "list Vision One API keys",
                None,
                "nextLink leaves the API",
            ));
        };
        let rest = &next.path()[base.path().trim_end_matches('/').len()..];
        Ok(match next.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_owned(),
        })
    }

    /// The only item of a 207 answer: its body on success, its error (kind from its own status) otherwise.
    fn single_item(&self, operation: &str, body: &[u8]) -> Result<Option<serde_json::Value>, VendorError> {
        let items: Vec<MultiItem> = decode(operation, body)?;
        let Some(item) = items.into_iter().next() else {
            return Err(VendorError::new(ErrorKind::Invalid, operation, None, "empty multi-status answer"));
        };
        if (200..300).contains(&item.status) {
            return Ok(item.body);
        }
        let text = item.body.as_ref().map(|b| error_message(b.to_string().as_bytes())).unwrap_or_default();
        Err(VendorError::from_status(operation, item.status, None, self.transport.redact(&text, &[])))
    }

    async fn execute<T: DeserializeOwned>(&self, call: Call) -> Result<T, VendorError> {
        let answer = self.transport.send(&call).await?;
        decode(call.operation, &answer.body)
    }
}

/// An ID as one path segment (IDs are UUID-like; anything else is escaped rather than trusted).
fn segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>().replace('+', "%20")
}

impl KeyApi for VisionOneClient {
    fn api(&self) -> TrendApiKind {
        TrendApiKind::VisionOne
    }

    fn find_role<'a>(&'a self, name: &'a str) -> TrendFuture<'a, Option<String>> {
        // Roles are named directly on create (see `unconfirmed`); only the one keys may never have is refused here.
        Box::pin(
            async move { Ok((name != unconfirmed::ROLE_NOT_FOR_KEYS && !name.is_empty()).then(|| name.to_owned())) },
        )
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
            let status = self.check_connectivity().await?;
            Ok(format!("the admin API key passes the Vision One connectivity check ({status})"))
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn client(base: &str) -> VisionOneClient {
        VisionOneClient::with_default_limiter(base, SecretString::new("eyJ-admin-token"), &TlsOptions::default())
            .unwrap()
    }

    #[test]
    fn base_is_the_host_root_plus_version() {
        assert_eq!(client("https://api.xdr.trendmicro.com").base_url(), "https://api.xdr.trendmicro.com/v3.0");
        assert_eq!(client("https://api.xdr.trendmicro.com/v3.0/").base_url(), "https://api.xdr.trendmicro.com/v3.0");
    }

    #[test]
    fn create_body_is_an_array_in_camel_case() {
        let item =
            CreateItem { name: "k", role: "Auditor", months_to_expiration: 3, description: None, status: "enabled" };
        assert_eq!(
            serde_json::to_value([item]).unwrap(),
            json!([{"name": "k", "role": "Auditor", "monthsToExpiration": 3, "status": "enabled"}])
        );
    }

    #[test]
    fn multi_status_items_carry_their_own_errors() {
        let c = client("https://x");
        let ok = br#"[{"status": 201, "body": {"id": "a", "value": "s", "expiredDateTime": "2030-01-01T00:00:00Z"}}]"#;
        assert!(c.single_item("op", ok).unwrap().is_some());
        let bad = br#"[{"status": 400, "body": {"error": {"code": "BadRequest", "message": "Invalid role eyJ-admin-token"}}}]"#;
        let e = c.single_item("op", bad).unwrap_err();
        assert_eq!((e.kind, e.status), (ErrorKind::Invalid, Some(400)));
        assert_eq!(e.message, "Invalid role <redacted>");
        assert_eq!(c.single_item("op", br#"[{"status": 404}]"#).unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(c.single_item("op", b"[]").unwrap_err().kind, ErrorKind::Invalid);
    }

    #[test]
    fn next_links_stay_under_the_api() {
        let c = client("https://api.xdr.trendmicro.com");
        assert_eq!(
            c.same_origin_path("https://api.xdr.trendmicro.com/v3.0/iam/apiKeys?skipToken=abc&top=200").unwrap(),
            "/iam/apiKeys?skipToken=abc&top=200"
        );
        assert!(c.same_origin_path("https://evil.example/v3.0/iam/apiKeys?skipToken=abc").is_err());
        assert!(c.same_origin_path("https://api.xdr.trendmicro.com/other").is_err());
    }

    #[test]
    fn key_info_reads_status_and_expiry() {
        let key: VisionOneKey = serde_json::from_value(json!({
            "id": "k1", "name": "n", "status": "disabled", "role": "Auditor",
            "expiredDateTime": "2030-01-02T03:04:05Z", "lastUsedDateTime": "", "description": null
        }))
        .unwrap();
        let info = key.info();
        assert!(!info.enabled);
        assert_eq!(info.expires_at.unwrap().to_string(), "2030-01-02T03:04:05Z");
        assert_eq!(unconfirmed::expiry(Some("")), None);
        assert_eq!(unconfirmed::expiry(Some("9999-12-31T23:59:59Z")), None);
    }

    #[tokio::test]
    async fn master_administrator_is_refused_before_any_call() {
        let c = client("https://127.0.0.1:9");
        assert_eq!(KeyApi::find_role(&c, "Master Administrator").await.unwrap(), None);
        assert_eq!(KeyApi::find_role(&c, "Auditor").await.unwrap().as_deref(), Some("Auditor"));
        let req = KeyRequest::new("n", "Master Administrator");
        assert_eq!(c.create_api_key(&req).await.unwrap_err().kind, ErrorKind::Invalid);
        let req = KeyRequest { time_zone: Some("UTC".into()), ..KeyRequest::new("n", "Auditor") };
        assert_eq!(c.create_api_key(&req).await.unwrap_err().kind, ErrorKind::Invalid, "no time zone on Vision One");
    }

    #[test]
    fn ids_are_escaped_as_one_segment() {
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        assert_eq!(segment("0b2f-11"), "0b2f-11");
    }
}
