//! HTTP client for the Deep Security / Workload Security `/api`: authentication, rate limiting, retries,
//! error mapping. Secret material only ever goes into headers marked sensitive.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use reqwest::{
    Method, StatusCode,
    header::{ACCEPT, CONTENT_TYPE, COOKIE, HeaderMap, HeaderName, HeaderValue, SET_COOKIE},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::Mutex;

use super::{
    DeepSecurityApi, TrendFuture,
    model::{
        ApiKey, ApiKeyChanges, ApiKeyList, IssuedApiKey, IssuedApiKeyWire, NewApiKey, Role, RoleList, SearchCriteria,
        SearchFilter,
    },
    retry::{Replay, RetryPolicy},
    wire::{DEFAULT_TIMEOUT, decode, error_message},
};
use crate::clients::{
    DEFAULT_REQUESTS_PER_MINUTE, ErrorKind, Failure, RateLimiter, Redirects, SecretString, TlsOptions, VendorError,
    exchange, http_client, parse_retry_after,
};

/// Label for [`observe::record`].
const VENDOR: &str = "trend";
const API_VERSION: &str = "v1";
static API_SECRET_KEY: HeaderName = HeaderName::from_static("api-secret-key");
static API_VERSION_HEADER: HeaderName = HeaderName::from_static("api-version");
static RID: HeaderName = HeaderName::from_static("rid");

/// How the client authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// The full `api-secret-key` header value (as returned by create/regenerate).
    ApiKey(SecretString),
    /// A user name and password: the client opens a session (`POST /sessions`) and sends its
    /// `sID` cookie and `rID` header. For bootstrapping the first key.
    Login(LoginCredentials),
}

impl Auth {
    pub fn kind(&self) -> &'static str {
        match self {
            Auth::ApiKey(_) => "api-key",
            Auth::Login(_) => "session",
        }
    }
}

/// Sign-in details for a session.
#[derive(Debug, Clone)]
pub struct LoginCredentials {
    pub user_name: String,
    pub password: SecretString,
    /// For a tenant of a multi-tenant manager.
    pub tenant_name: Option<String>,
    /// One-time code when the account uses multi-factor authentication.
    pub mfa_code: Option<SecretString>,
}

impl LoginCredentials {
    pub fn new(user_name: impl Into<String>, password: impl Into<SecretString>) -> Self {
        Self { user_name: user_name.into(), password: password.into(), tenant_name: None, mfa_code: None }
    }
}

/// An open session: the `sID` cookie and the request ID (`RID`) sent back as the `rID` header.
#[derive(Debug, Clone)]
struct Session {
    sid: SecretString,
    rid: SecretString,
}

/// What `POST /sessions` answers besides the cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub administrator_id: Option<i64>,
    pub created: Option<i64>,
    pub access_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionBody {
    #[serde(rename = "administratorID")]
    administrator_id: Option<i64>,
    created: Option<i64>,
    access_type: Option<String>,
    #[serde(rename = "RID", alias = "rID")]
    rid: Option<SecretString>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionRequest<'a> {
    user_name: &'a str,
    password: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mfa_code: Option<&'a str>,
}

/// One API operation to perform.
struct Call {
    operation: &'static str,
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    replay: Replay,
}

impl Call {
    fn new(operation: &'static str, method: Method, path: impl Into<String>, replay: Replay) -> Self {
        Self { operation, method, path: path.into(), body: None, replay }
    }

    fn json(mut self, body: &impl Serialize) -> Result<Self, VendorError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| VendorError::new(ErrorKind::Invalid, self.operation, None, format!("encode request: {e}")))?;
        self.body = Some(bytes);
        Ok(self)
    }
}

/// Client of one Deep Security Manager / Workload Security endpoint.
pub struct DeepSecurityClient {
    base_url: String,
    http: reqwest::Client,
    auth: Auth,
    session: Mutex<Option<Session>>,
    limiter: Arc<RateLimiter>,
    retry: RetryPolicy,
    timeout: Duration,
}

impl std::fmt::Debug for DeepSecurityClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeepSecurityClient")
            .field("base_url", &self.base_url)
            .field("auth", &self.auth.kind())
            .field("limiter", &self.limiter)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl DeepSecurityClient {
    /// A client for `base_url` (e.g. `https://dsm.example.com:4119/api`); request URL = base URL + path.
    pub fn new(base_url: &str, auth: Auth, tls: &TlsOptions, limiter: Arc<RateLimiter>) -> Result<Self, VendorError> {
        let parsed = url::Url::parse(base_url).map_err(|e| {
            VendorError::new(ErrorKind::Invalid, "configure Trend client", None, format!("invalid base URL: {e}"))
        })?;
        if !matches!(parsed.scheme(), "https" | "http") || parsed.host().is_none() {
            return Err(VendorError::new(
                ErrorKind::Invalid,
                "configure Trend client",
                None,
                "base URL must be an http(s) URL with a host",
            ));
        }
        let http = http_client(tls, DEFAULT_TIMEOUT)?;
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http,
            auth,
            session: Mutex::new(None),
            limiter,
            retry: RetryPolicy::default(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// A client with its own limiter at [`DEFAULT_REQUESTS_PER_MINUTE`]; prefer sharing one per endpoint.
    pub fn with_default_limiter(base_url: &str, auth: Auth, tls: &TlsOptions) -> Result<Self, VendorError> {
        Self::new(base_url, auth, tls, RateLimiter::per_minute(DEFAULT_REQUESTS_PER_MINUTE))
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Bounds each request (connect, send, answer, body) by `timeout` instead of
    /// [`DEFAULT_TIMEOUT`](super::wire::DEFAULT_TIMEOUT).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Signs in now (with [`Auth::Login`]); otherwise the session opens on the first call that needs it.
    /// Replaces any session already open. With [`Auth::ApiKey`] there is nothing to open.
    pub async fn open_session(&self) -> Result<Option<SessionInfo>, VendorError> {
        let Auth::Login(creds) = &self.auth else { return Ok(None) };
        let mut guard = self.session.lock().await;
        let (session, info) = self.sign_in(creds).await?;
        *guard = Some(session);
        Ok(Some(info))
    }

    /// All roles matching `filter`.
    pub async fn search_roles(&self, filter: &SearchFilter) -> Result<Vec<Role>, VendorError> {
        let call = Call::new("search roles", Method::POST, "/roles/search", Replay::Safe).json(filter)?;
        Ok(self.execute::<RoleList>(call).await?.roles)
    }

    /// All API keys matching `filter`.
    pub async fn search_api_keys(&self, filter: &SearchFilter) -> Result<Vec<ApiKey>, VendorError> {
        let call = Call::new("search API keys", Method::POST, "/apikeys/search", Replay::Safe).json(filter)?;
        Ok(self.execute::<ApiKeyList>(call).await?.api_keys)
    }

    /// The role named exactly `name` (wildcards off), if any.
    pub async fn find_role_by_name(&self, name: &str) -> Result<Option<Role>, VendorError> {
        let filter = SearchFilter::matching([SearchCriteria::string_equals("name", name)]);
        // The server already matched exactly; filtering again guards against a case-insensitive collation.
        Ok(self.search_roles(&filter).await?.into_iter().find(|r| r.name == name))
    }

    pub async fn describe_role(&self, id: i64) -> Result<Role, VendorError> {
        self.execute(Call::new("describe role", Method::GET, format!("/roles/{id}"), Replay::Safe)).await
    }

    /// Creates a key. Not repeated after an ambiguous failure (a timeout or 5xx may hide a created key);
    /// callers recover by searching for the key name.
    pub async fn create_api_key(&self, key: &NewApiKey) -> Result<IssuedApiKey, VendorError> {
        let call = Call::new("create API key", Method::POST, "/apikeys", Replay::OnlyIfUnprocessed).json(key)?;
        issued(call.operation, self.execute::<IssuedApiKeyWire>(call).await?)
    }

    pub async fn describe_api_key(&self, id: i64) -> Result<ApiKey, VendorError> {
        self.execute(Call::new("describe API key", Method::GET, format!("/apikeys/{id}"), Replay::Safe)).await
    }

    /// Every key named exactly `key_name` (names are not unique at the vendor), by ascending ID.
    pub async fn find_api_keys_by_name(&self, key_name: &str) -> Result<Vec<ApiKey>, VendorError> {
        let filter = SearchFilter {
            sort_by_object_id: Some(true),
            ..SearchFilter::matching([SearchCriteria::string_equals("keyName", key_name)])
        };
        let mut keys = self.search_api_keys(&filter).await?;
        keys.retain(|k| k.key_name == key_name);
        Ok(keys)
    }

    pub async fn modify_api_key(&self, id: i64, changes: &ApiKeyChanges) -> Result<ApiKey, VendorError> {
        let call = Call::new("modify API key", Method::POST, format!("/apikeys/{id}"), Replay::Safe).json(changes)?;
        self.execute(call).await
    }

    /// Deletes a key. A key that is already gone is reported as `NotFound`; callers that want it gone
    /// treat that as success (a retried delete whose first attempt went through ends that way too).
    pub async fn delete_api_key(&self, id: i64) -> Result<(), VendorError> {
        let call = Call::new("delete API key", Method::DELETE, format!("/apikeys/{id}"), Replay::Safe);
        self.send(call).await.map(drop)
    }

    /// Issues a new secret for a key; the old one stops working at once.
    pub async fn regenerate_secret(&self, id: i64) -> Result<IssuedApiKey, VendorError> {
        let call = Call::new(
            "regenerate API secret key",
            Method::POST,
            format!("/apikeys/{id}/secretkey"),
            Replay::OnlyIfUnprocessed,
        );
        issued(call.operation, self.execute::<IssuedApiKeyWire>(call).await?)
    }

    /// The key this client authenticates with (API-key auth only).
    pub async fn describe_current_api_key(&self) -> Result<ApiKey, VendorError> {
        self.execute(Call::new("describe current API key", Method::GET, "/apikeys/current", Replay::Safe)).await
    }

    async fn execute<T: DeserializeOwned>(&self, call: Call) -> Result<T, VendorError> {
        let operation = call.operation;
        let (_, body) = self.send(call).await?;
        decode(operation, &body)
    }

    /// Sends an authenticated call with rate limiting and retries; the 2xx response's headers and body.
    async fn send(&self, call: Call) -> Result<(HeaderMap, Bytes), VendorError> {
        self.send_as(&call, true).await
    }

    /// [`Self::send`], optionally without credentials (for signing in).
    async fn send_as(&self, call: &Call, authenticated: bool) -> Result<(HeaderMap, Bytes), VendorError> {
        let started = Instant::now();
        let mut attempt = 0;
        let mut signed_in_again = false;
        loop {
            attempt += 1;
            let headers = if authenticated { self.credential_headers().await? } else { HeaderMap::new() };
            let (error, unsent) = match self.attempt(call, &headers).await {
                Ok(ok) => return Ok(ok),
                Err(Failure { error, unsent, .. }) => (error, unsent),
            };
            // A session can end on the server side (idle timeout): sign in again, once.
            if authenticated
                && error.kind == ErrorKind::Unauthorized
                && matches!(self.auth, Auth::Login(_))
                && !signed_in_again
                && attempt < self.retry.max_attempts
            {
                signed_in_again = true;
                self.forget_session(&headers).await;
                tracing::debug!(operation = call.operation, "session refused; signing in again");
                continue;
            }
            self.retry.pause_or_give_up(call.operation, attempt, started.elapsed(), error, call.replay, unsent).await?;
        }
    }

    /// One HTTP exchange ([`exchange`]); a non-success answer becomes the vendor's error, every secret this client
    /// holds or sent removed from its text.
    async fn attempt(&self, call: &Call, credentials: &HeaderMap) -> Result<(HeaderMap, Bytes), Failure> {
        let request = || {
            let request = self
                .http
                .request(call.method.clone(), format!("{}{}", self.base_url, call.path))
                .timeout(self.timeout)
                .header(&API_VERSION_HEADER, API_VERSION)
                .header(ACCEPT, "application/json")
                .header(CONTENT_TYPE, "application/json")
                .headers(credentials.clone());
            match &call.body {
                Some(body) => request.body(body.clone()),
                None => request,
            }
        };
        let answer = exchange(&self.limiter, VENDOR, call.operation, request, Redirects::Refuse).await?;
        tracing::debug!(operation = call.operation, method = %call.method, path = %call.path, status = answer.status.as_u16(), "Trend API call");
        if answer.status.is_success() {
            Ok((answer.headers, answer.body))
        } else {
            let secrets = self.known_secrets(credentials);
            let error = status_error(call.operation, answer.status, &answer.headers, &answer.body, &secrets);
            Err(Failure { error, answered: Some(answer.headers), unsent: false })
        }
    }

    /// Every secret value this client holds or just sent: the API key (and its secret part after the ID),
    /// the password and one-time code, the session cookie and request ID. Removed from vendor error text.
    fn known_secrets<'a>(&'a self, sent: &'a HeaderMap) -> Vec<&'a str> {
        let mut secrets = Vec::new();
        match &self.auth {
            Auth::ApiKey(key) => {
                secrets.push(key.expose());
                if let Some((_, secret)) = key.expose().rsplit_once(':') {
                    secrets.push(secret);
                }
            }
            Auth::Login(creds) => {
                secrets.push(creds.password.expose());
                secrets.extend(creds.mfa_code.as_ref().map(SecretString::expose));
            }
        }
        for value in sent.values().filter(|v| v.is_sensitive()).filter_map(|v| v.to_str().ok()) {
            secrets.push(value);
            secrets.extend(value.strip_prefix("sID="));
        }
        secrets
    }

    /// The credential headers for the next attempt, signing in first when a session is needed.
    async fn credential_headers(&self) -> Result<HeaderMap, VendorError> {
        let mut headers = HeaderMap::new();
        match &self.auth {
            Auth::ApiKey(secret) => {
                headers.insert(&API_SECRET_KEY, sensitive("API key", secret.expose())?);
            }
            Auth::Login(creds) => {
                let mut guard = self.session.lock().await;
                if guard.is_none() {
                    *guard = Some(self.sign_in(creds).await?.0);
                }
                let session = guard.as_ref().expect("session just opened");
                headers.insert(COOKIE, sensitive("session ID", &format!("sID={}", session.sid.expose()))?);
                headers.insert(&RID, sensitive("request ID", session.rid.expose())?);
            }
        }
        Ok(headers)
    }

    /// Drops the session that was used for `headers` (unless another task already replaced it).
    async fn forget_session(&self, used: &HeaderMap) {
        let mut guard = self.session.lock().await;
        let same = guard.as_ref().is_some_and(|s| {
            used.get(COOKIE).and_then(|v| v.to_str().ok()) == Some(format!("sID={}", s.sid.expose()).as_str())
        });
        if same {
            *guard = None;
        }
    }

    /// `POST /sessions` with user name and password: the `sID` cookie and the `RID` from the body.
    async fn sign_in(&self, creds: &LoginCredentials) -> Result<(Session, SessionInfo), VendorError> {
        const OPERATION: &str = "open session";
        let body = SessionRequest {
            user_name: &creds.user_name,
            password: creds.password.expose(),
            tenant_name: creds.tenant_name.as_deref(),
            mfa_code: creds.mfa_code.as_ref().map(|c| c.expose()),
        };
        // An extra session left by a repeated sign-in is harmless; a lost one would stall bootstrap.
        let call = Call::new(OPERATION, Method::POST, "/sessions", Replay::Safe).json(&body)?;
        // Boxed: signing in is itself reached from `send_as`.
        let (headers, bytes) = Box::pin(self.send_as(&call, false)).await?;
        let sid = session_cookie(&headers)
            .ok_or_else(|| VendorError::new(ErrorKind::Invalid, OPERATION, None, "the response set no sID cookie"))?;
        let body: SessionBody = decode(OPERATION, &bytes)?;
        let rid = body
            .rid
            .filter(|r| !r.is_empty())
            .ok_or_else(|| VendorError::new(ErrorKind::Invalid, OPERATION, None, "the response carried no RID"))?;
        tracing::debug!(administrator_id = body.administrator_id, "Trend session opened");
        let info = SessionInfo {
            administrator_id: body.administrator_id,
            created: body.created,
            access_type: body.access_type,
        };
        Ok((Session { sid, rid }, info))
    }
}

impl DeepSecurityApi for DeepSecurityClient {
    fn find_role_by_name<'a>(&'a self, name: &'a str) -> TrendFuture<'a, Option<Role>> {
        Box::pin(DeepSecurityClient::find_role_by_name(self, name))
    }

    fn describe_role(&self, id: i64) -> TrendFuture<'_, Role> {
        Box::pin(DeepSecurityClient::describe_role(self, id))
    }

    fn create_api_key<'a>(&'a self, key: &'a NewApiKey) -> TrendFuture<'a, IssuedApiKey> {
        Box::pin(DeepSecurityClient::create_api_key(self, key))
    }

    fn describe_api_key(&self, id: i64) -> TrendFuture<'_, ApiKey> {
        Box::pin(DeepSecurityClient::describe_api_key(self, id))
    }

    fn find_api_keys_by_name<'a>(&'a self, key_name: &'a str) -> TrendFuture<'a, Vec<ApiKey>> {
        Box::pin(DeepSecurityClient::find_api_keys_by_name(self, key_name))
    }

    fn modify_api_key<'a>(&'a self, id: i64, changes: &'a ApiKeyChanges) -> TrendFuture<'a, ApiKey> {
        Box::pin(DeepSecurityClient::modify_api_key(self, id, changes))
    }

    fn delete_api_key(&self, id: i64) -> TrendFuture<'_, ()> {
        Box::pin(DeepSecurityClient::delete_api_key(self, id))
    }

    fn regenerate_secret(&self, id: i64) -> TrendFuture<'_, IssuedApiKey> {
        Box::pin(DeepSecurityClient::regenerate_secret(self, id))
    }

    fn describe_current_api_key(&self) -> TrendFuture<'_, ApiKey> {
        Box::pin(DeepSecurityClient::describe_current_api_key(self))
    }
}

fn issued(operation: &str, wire: IssuedApiKeyWire) -> Result<IssuedApiKey, VendorError> {
    match wire.secret_key {
        Some(secret_key) if !secret_key.is_empty() => Ok(IssuedApiKey { key: wire.key, secret_key }),
        _ => Err(VendorError::new(ErrorKind::Invalid, operation, None, "the response carried no secretKey")),
    }
}

/// A header value that HTTP tooling (and reqwest's `Debug`) will not show.
fn sensitive(what: &str, value: &str) -> Result<HeaderValue, VendorError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        VendorError::new(ErrorKind::Invalid, "authenticate", None, format!("the {what} is not a valid header value"))
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// The `sID` cookie's value from the response's `Set-Cookie` headers.
fn session_cookie(headers: &HeaderMap) -> Option<SecretString> {
    headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|cookie| {
        let pair = cookie.split(';').next()?.trim();
        let (name, value) = pair.split_once('=')?;
        (name.trim() == "sID" && !value.trim().is_empty()).then(|| SecretString::new(value.trim()))
    })
}

/// The error for a non-2xx answer, with the vendor's message minus any of the `secrets` it echoes.
fn status_error(
    operation: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[&str],
) -> VendorError {
    VendorError::answered(operation, status.as_u16(), parse_retry_after(headers), &error_message(body), secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_carry_kind_message_and_retry_after() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("3"));
        let e = status_error(
            "search API keys",
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            br#"{"message":"Too many API requests"}"#,
            &[],
        );
        assert_eq!(e.kind, ErrorKind::RateLimited { retry_after: Some(Duration::from_secs(3)) });
        assert_eq!(e.message, "Too many API requests");
        let e = status_error("create API key", StatusCode::FORBIDDEN, &HeaderMap::new(), br#"{"message":"No"}"#, &[]);
        assert_eq!((e.kind, e.status), (ErrorKind::Forbidden, Some(403)));
    }

    #[test]
    fn status_errors_redact_what_the_client_sent() {
        let client = DeepSecurityClient::with_default_limiter(
            "https://dsm:4119/api",
            Auth::ApiKey(SecretString::new("7:0123456789abcdef")),
            &TlsOptions::default(),
        )
        .unwrap();
        let mut sent = HeaderMap::new();
        sent.insert(&API_SECRET_KEY, sensitive("API key", "7:0123456789abcdef").unwrap());
        let body = br#"{"message":"bad key 7:0123456789abcdef; secret part 0123456789abcdef"}"#;
        let e = status_error(
            "search roles",
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            body,
            &client.known_secrets(&sent),
        );
        assert_eq!(e.message, "bad key <redacted>; secret part <redacted>");

        let login = LoginCredentials::new("admin", "pa55word-long");
        let client = DeepSecurityClient::with_default_limiter(
            "https://dsm:4119/api",
            Auth::Login(login),
            &TlsOptions::default(),
        )
        .unwrap();
        let mut sent = HeaderMap::new();
        sent.insert(COOKIE, sensitive("session ID", "sID=SESSION0123").unwrap());
        sent.insert(&RID, sensitive("request ID", "RID0123456").unwrap());
        let body = b"echo: password=pa55word-long cookie sID=SESSION0123 rID=RID0123456";
        let e = status_error(
            "open session",
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            body,
            &client.known_secrets(&sent),
        );
        assert_eq!(e.message, "echo: password=<redacted> cookie <redacted> rID=<redacted>");
    }

    #[test]
    fn session_cookie_is_read_from_set_cookie() {
        let mut h = HeaderMap::new();
        h.append(SET_COOKIE, HeaderValue::from_static("JSESSIONID=abc; Path=/"));
        h.append(
            SET_COOKIE,
            HeaderValue::from_static("sID=D5EE2AC155601C895B33B701080D40A6; Path=/; Secure; HttpOnly"),
        );
        assert_eq!(session_cookie(&h).unwrap().expose(), "D5EE2AC155601C895B33B701080D40A6");
        assert!(session_cookie(&HeaderMap::new()).is_none());
    }

    #[test]
    fn session_request_omits_absent_fields() {
        let body = SessionRequest { user_name: "admin", password: "pw", tenant_name: None, mfa_code: None };
        assert_eq!(serde_json::to_value(&body).unwrap(), serde_json::json!({"userName": "admin", "password": "pw"}));
        let body = SessionRequest { user_name: "a", password: "p", tenant_name: Some("T1"), mfa_code: Some("123456") };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"userName": "a", "password": "p", "tenantName": "T1", "mfaCode": "123456"})
        );
    }

    #[test]
    fn issued_key_requires_a_secret() {
        let wire: IssuedApiKeyWire = serde_json::from_str(r#"{"ID": 8, "keyName": "First Key"}"#).unwrap();
        assert_eq!(issued("create API key", wire).unwrap_err().kind, ErrorKind::Invalid);
        let wire: IssuedApiKeyWire =
            serde_json::from_str(r#"{"ID": 8, "keyName": "First Key", "secretKey": "8:abc"}"#).unwrap();
        let key = issued("create API key", wire).unwrap();
        assert_eq!((key.key.id, key.secret_key.expose()), (8, "8:abc"));
    }

    #[test]
    fn rejects_unusable_base_urls() {
        let limiter = RateLimiter::per_minute(60);
        let auth = || Auth::ApiKey(SecretString::new("1:x"));
        for bad in ["not a url", "ftp://dsm:4119/api", "file:///api"] {
            let err = DeepSecurityClient::new(bad, auth(), &TlsOptions::default(), limiter.clone()).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Invalid, "{bad}");
        }
        let c = DeepSecurityClient::new("https://dsm:4119/api/", auth(), &TlsOptions::default(), limiter).unwrap();
        assert_eq!(c.base_url(), "https://dsm:4119/api");
    }
}
