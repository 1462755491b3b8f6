//! **EXPERIMENTAL**: minting and deleting API keys through the web UI's private session API
//! (docs/vendor-apis.md §11). This is not the OpenAPI and Cisco does not support it: it is what a browser
//! does, observed in public scripts, and may change with any release. It needs a local-auth user's
//! email and password; SSO, LDAP-only and MFA accounts cannot sign in this way.
//!
//! Flow: `GET /h4_users/sign_in` (session cookie + `<meta name="csrf-token">`), form `POST
//! /h4_users/sign_in` (`authenticity_token`, `h4_user[email]`, `h4_user[password]`) answered by a
//! redirect with the signed-in session cookie, then JSON calls carrying the cookie and `X-CSRF-Token`:
//! `GET|POST /api/api_credentials.json`, `DELETE /api/api_credentials/<id>.json`.
//!
//! The shape of the list answer is UNCONFIRMED; it is parsed leniently.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::{Method, StatusCode, header};
use url::Url;

use super::{
    capability::{Capability, join_capability_names},
    client::host_root,
    credentials::{ApiCredentials, key_fingerprint},
};
use crate::clients::{
    Answer, ErrorKind, RateLimiter, Redirects, SecretString, TlsOptions, VendorError, exchange, http_client_builder,
    parse_retry_after, refused_redirect,
};

/// Label for the request metrics: the UI's private API apart from the OpenAPI.
const VENDOR: &str = "cisco-ui";

pub const SIGN_IN_PATH: &str = "/h4_users/sign_in";
pub const CREDENTIALS_PATH: &str = "/api/api_credentials.json";

/// A UI user's login (local authentication only). `Debug` redacts the password.
#[derive(Debug, Clone)]
pub struct UiLogin {
    pub email: String,
    pub password: SecretString,
}

/// An API key as the UI lists it (never its secret).
#[derive(Clone, PartialEq, Eq)]
pub struct UiCredential {
    pub id: String,
    pub api_key: Option<String>,
    pub description: Option<String>,
    /// Capability names as the UI reports them (unknown names kept verbatim).
    pub capability_names: Vec<String>,
}

impl fmt::Debug for UiCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UiCredential")
            .field("id", &self.id)
            .field("api_key", &self.api_key.as_deref().map(key_fingerprint))
            .field("description", &self.description)
            .field("capability_names", &self.capability_names)
            .finish()
    }
}

/// A key pair just minted through the UI; the only time its secret is visible.
#[derive(Debug, Clone)]
pub struct CreatedCredential {
    pub id: String,
    pub credentials: ApiCredentials,
}

/// Cookies of the session, kept by hand (reqwest's cookie store is not enabled). Values are secret.
#[derive(Default, Clone)]
struct CookieJar(BTreeMap<String, SecretString>);

impl CookieJar {
    fn update(&mut self, headers: &header::HeaderMap) {
        for value in headers.get_all(header::SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            let mut parts = text.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else { continue };
            let (name, value) = (name.trim(), value.trim().trim_matches('"'));
            let expired = parts.any(|attr| {
                let attr = attr.trim().to_ascii_lowercase();
                attr == "max-age=0" || attr.starts_with("max-age=-")
            });
            if name.is_empty() {
                continue;
            }
            if expired || value.is_empty() {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_owned(), SecretString::new(value));
            }
        }
    }

    fn values(&self) -> impl Iterator<Item = &str> {
        self.0.values().map(SecretString::expose)
    }

    fn header(&self) -> Option<String> {
        (!self.0.is_empty())
            .then(|| self.0.iter().map(|(n, v)| format!("{n}={}", v.expose())).collect::<Vec<_>>().join("; "))
    }
}

impl fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

#[derive(Debug, Default)]
struct SessionState {
    cookies: CookieJar,
    csrf_token: SecretString,
}

/// A signed-in UI session (**experimental**, see the module docs).
#[derive(Clone)]
pub struct UiSession {
    http: reqwest::Client,
    root: Url,
    email: String,
    limiter: Arc<RateLimiter>,
    state: Arc<Mutex<SessionState>>,
}

impl fmt::Debug for UiSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock().expect("session state poisoned");
        f.debug_struct("UiSession")
            .field("root", &self.root.as_str())
            .field("email", &self.email)
            .field("cookies", &state.cookies)
            .field("csrf_token", &state.csrf_token)
            .finish()
    }
}

/// An HTTP client that does not follow redirects: the sign-in answer's `Set-Cookie` sits on the 302, and
/// the few redirects of the flow are followed by hand, only within the endpoint's origin.
fn ui_http_client(tls: &TlsOptions, timeout: Duration) -> Result<reqwest::Client, VendorError> {
    // The session cookie arrives on sign-in's 302: redirects are followed by hand.
    http_client_builder(tls, timeout)?
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| VendorError::new(ErrorKind::Tls, "build HTTP client", None, e.to_string()))
}

/// The `content` of `<meta name="csrf-token" content="...">`, as Rails layouts carry it.
pub fn scrape_csrf_token(html: &str) -> Option<String> {
    let mut rest = html;
    while let Some(start) = rest.find("<meta") {
        let tag_and_after = &rest[start..];
        let end = tag_and_after.find('>')?;
        let tag = &tag_and_after[..end];
        if attribute(tag, "name").as_deref() == Some("csrf-token") {
            return attribute(tag, "content").filter(|t| !t.is_empty());
        }
        rest = &tag_and_after[end..];
    }
    None
}

/// The value of `name="..."` (or single-quoted) inside one tag, entity-decoded.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let mut search = tag;
    loop {
        let at = search.find(name)?;
        let before_ok = at == 0 || search.as_bytes()[at - 1].is_ascii_whitespace();
        let after = search[at + name.len()..].trim_start();
        search = &search[at + name.len()..];
        if !before_ok {
            continue;
        }
        let Some(after_eq) = after.strip_prefix('=') else { continue };
        let after_eq = after_eq.trim_start();
        let quote = after_eq.chars().next()?;
        if quote != '"' && quote != '\'' {
            continue;
        }
        let value = &after_eq[1..];
        let close = value.find(quote)?;
        return Some(decode_entities(&value[..close]));
    }
}

fn decode_entities(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#43;", "+")
        .replace("&#x2F;", "/")
        .replace("&#47;", "/")
        .replace("&#61;", "=")
        .replace("&amp;", "&")
}

fn sign_in_refused(status: u16) -> VendorError {
    let mut message = "sign-in refused: wrong email or password, or the user cannot sign in with a local password \
                       (SSO, LDAP and MFA users are not supported)"
        .to_owned();
    if status == 422 {
        message.push_str(", or the form's CSRF token was not accepted");
    }
    VendorError::new(ErrorKind::Unauthorized, "Secure Workload UI sign-in", Some(status), message)
}

impl UiSession {
    /// Signs in with a local-auth user (**experimental**). `timeout` bounds each request of the session
    /// (the operator passes its vendor timeout; tetpyclient's is [`super::client::DEFAULT_TIMEOUT`]).
    pub async fn sign_in(
        endpoint: &str,
        login: &UiLogin,
        tls: &TlsOptions,
        limiter: Arc<RateLimiter>,
        timeout: Duration,
    ) -> Result<Self, VendorError> {
        let session = UiSession {
            http: ui_http_client(tls, timeout)?,
            root: host_root(endpoint)?,
            email: login.email.clone(),
            limiter,
            state: Arc::default(),
        };
        let op = "Secure Workload UI sign-in";

        // 1. The sign-in page: a session cookie and the form's CSRF token.
        let page = session.page(SIGN_IN_PATH, op).await?;
        let token = scrape_csrf_token(&page).ok_or_else(|| {
            VendorError::new(ErrorKind::Invalid, op, Some(200), "the sign-in page carries no csrf-token meta tag")
        })?;
        session.state.lock().expect("session state poisoned").csrf_token = SecretString::new(token);

        // 2. The form post.
        let form = {
            let state = session.state.lock().expect("session state poisoned");
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("authenticity_token", state.csrf_token.expose())
                .append_pair("h4_user[email]", &login.email)
                .append_pair("h4_user[password]", login.password.expose())
                .finish()
        };
        let post = session
            .request(Method::POST, SIGN_IN_PATH)?
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "text/html,application/xhtml+xml")
            .body(form);
        let answer = session.exchange(op, || post).await?;
        let status = answer.status;
        let location = answer.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            let message = format!("sign-in answered HTTP {}", status.as_u16());
            return Err(VendorError::from_status(op, status.as_u16(), None, message));
        }
        if !status.is_redirection() {
            // Devise re-renders the form (200, 401, or 422 in newer releases); 422 may also be a refused CSRF token.
            return Err(sign_in_refused(status.as_u16()));
        }
        let target = location.and_then(|l| session.same_origin(&l));
        if target.as_ref().is_some_and(|u| u.path().starts_with(SIGN_IN_PATH)) {
            return Err(sign_in_refused(status.as_u16()));
        }

        // 3. Rails renews the session (and its CSRF token) on sign-in: take the token from the landing
        //    page, following a few same-origin redirects. Best effort: without one the old token stays.
        let mut next = target;
        for _ in 0..3 {
            let Some(url) = next.take() else { break };
            let (status, location, html) =
                session.fetch_page(&url[url::Position::BeforePath..url::Position::AfterQuery], op).await?;
            if status.is_redirection() {
                next = location.and_then(|l| session.same_origin(&l));
                continue;
            }
            if let Some(token) = status.is_success().then(|| scrape_csrf_token(&html)).flatten() {
                session.state.lock().expect("session state poisoned").csrf_token = SecretString::new(token);
            }
        }
        Ok(session)
    }

    /// The account the session belongs to.
    pub fn email(&self) -> &str {
        &self.email
    }

    /// Every API key of the signed-in user.
    pub async fn list_credentials(&self) -> Result<Vec<UiCredential>, VendorError> {
        let op = "Secure Workload UI list API keys";
        let value = self.json(Method::GET, CREDENTIALS_PATH, None, op).await?;
        let items = match &value {
            serde_json::Value::Array(items) => items.as_slice(),
            serde_json::Value::Object(map) => ["api_credentials", "results", "data"]
                .iter()
                .find_map(|k| map.get(*k).and_then(|v| v.as_array()))
                .map(Vec::as_slice)
                .ok_or_else(|| invalid(op, "the answer holds no list of keys"))?,
            _ => return Err(invalid(op, "the answer is not a list of keys")),
        };
        items.iter().map(|item| parse_listed(item).ok_or_else(|| invalid(op, "a listed key has no id"))).collect()
    }

    /// Mints a key with exactly these capabilities; the answer is the only copy of its secret.
    pub async fn create_credential(
        &self,
        description: &str,
        capabilities: &[Capability],
    ) -> Result<CreatedCredential, VendorError> {
        let op = "Secure Workload UI create API key";
        let body = serde_json::json!({
            "description": description,
            "capability_names": join_capability_names(capabilities),
        });
        let value = self.json(Method::POST, CREDENTIALS_PATH, Some(&body), op).await?;
        let id = value.get("id").and_then(id_text).ok_or_else(|| invalid(op, "the answer has no id"))?;
        let field = |name: &str| {
            value.get(name).and_then(|v| v.as_str()).ok_or_else(|| invalid(op, &format!("the answer has no {name}")))
        };
        let credentials = ApiCredentials::new(field("api_key")?, SecretString::new(field("api_secret")?))
            .map_err(|e| invalid(op, &e.to_string()))?;
        Ok(CreatedCredential { id, credentials })
    }

    /// Deletes a key by its UI id; a key already gone is not an error.
    pub async fn delete_credential(&self, id: &str) -> Result<(), VendorError> {
        let op = "Secure Workload UI delete API key";
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(invalid(op, "credential id must be alphanumeric"));
        }
        match self.json(Method::DELETE, &format!("/api/api_credentials/{id}.json"), None, op).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn request(&self, method: Method, path_and_query: &str) -> Result<reqwest::RequestBuilder, VendorError> {
        let url = self.root.join(path_and_query).map_err(|e| invalid("build UI URL", &e.to_string()))?;
        let mut request = self.http.request(method, url);
        if let Some(cookie) = self.state.lock().expect("session state poisoned").cookies.header() {
            request = request.header(header::COOKIE, cookie);
        }
        Ok(request)
    }

    fn keep_cookies(&self, headers: &header::HeaderMap) {
        self.state.lock().expect("session state poisoned").cookies.update(headers);
    }

    /// `location` resolved against the endpoint, when it stays on the same origin.
    fn same_origin(&self, location: &str) -> Option<Url> {
        self.root.join(location).ok().filter(|u| u.origin() == self.root.origin())
    }

    /// One exchange of the session ([`exchange`]; redirects are the session's to follow, within the origin),
    /// keeping the cookies it sets.
    async fn exchange(
        &self,
        op: &str,
        request: impl FnOnce() -> reqwest::RequestBuilder,
    ) -> Result<Answer, VendorError> {
        let answer = exchange(&self.limiter, VENDOR, op, request, Redirects::Return).await.map_err(|f| f.error)?;
        self.keep_cookies(&answer.headers);
        Ok(answer)
    }

    /// An HTML page of the UI (keeps its cookies): status, `Location`, body.
    async fn fetch_page(&self, path: &str, op: &str) -> Result<(StatusCode, Option<String>, String), VendorError> {
        let get = self.request(Method::GET, path)?.header(header::ACCEPT, "text/html,application/xhtml+xml");
        let answer = self.exchange(op, || get).await?;
        let location = answer.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok((answer.status, location, String::from_utf8_lossy(&answer.body).into_owned()))
    }

    /// An HTML page that must answer 200.
    async fn page(&self, path: &str, op: &str) -> Result<String, VendorError> {
        let (status, _, text) = self.fetch_page(path, op).await?;
        if status != StatusCode::OK {
            let status = status.as_u16();
            return Err(VendorError::from_status(op, status, None, format!("GET {path} answered HTTP {status}")));
        }
        Ok(text)
    }

    /// A JSON call of the UI's API with the session cookie and CSRF token.
    async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        op: &str,
    ) -> Result<serde_json::Value, VendorError> {
        let csrf = self.state.lock().expect("session state poisoned").csrf_token.clone();
        let mut request = self
            .request(method, path)?
            .header(header::ACCEPT, "application/json")
            .header("X-Requested-With", "XMLHttpRequest")
            .header("X-CSRF-Token", csrf.expose());
        if let Some(body) = body {
            request = request.header(header::CONTENT_TYPE, "application/json").body(body.to_string());
        }
        let Answer { status, headers, body: bytes } = self.exchange(op, || request).await?;
        if status.is_redirection() {
            let location = headers.get(header::LOCATION).and_then(|v| v.to_str().ok());
            if location.is_some_and(|l| self.same_origin(l).is_none()) {
                let from = self.root.join(path).unwrap_or_else(|_| self.root.clone());
                return Err(refused_redirect(op, status.as_u16(), &from, location));
            }
        }
        if status.is_redirection() || status == StatusCode::UNAUTHORIZED {
            // Devise answers a lapsed session with 401 (JSON) or a redirect to the sign-in page.
            return Err(VendorError::new(
                ErrorKind::Unauthorized,
                op,
                Some(status.as_u16()),
                "the UI session is not signed in (expired?)",
            ));
        }
        if !status.is_success() {
            let message = super::client::vendor_message(String::from_utf8_lossy(&bytes).trim());
            let state = self.state.lock().expect("session state poisoned");
            let secrets: Vec<&str> = state.cookies.values().chain([state.csrf_token.expose()]).collect();
            return Err(VendorError::answered(op, status.as_u16(), parse_retry_after(&headers), &message, &secrets));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| invalid(op, &format!("response is not JSON: {e}")))
    }
}

fn invalid(op: &str, message: &str) -> VendorError {
    VendorError::new(ErrorKind::Invalid, op, None, message)
}

fn id_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn parse_listed(item: &serde_json::Value) -> Option<UiCredential> {
    let capability_names = match item.get("capability_names").or_else(|| item.get("capabilities")) {
        Some(serde_json::Value::String(s)) => {
            s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        }
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => vec![],
    };
    Some(UiCredential {
        id: item.get("id").and_then(id_text)?,
        api_key: item.get("api_key").and_then(|v| v.as_str()).map(str::to_owned),
        description: item.get("description").and_then(|v| v.as_str()).map(str::to_owned),
        capability_names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapes_rails_csrf_meta_tag() {
        let html = r#"<html><head><meta charset="utf-8"><meta name="csrf-param" content="authenticity_token" />
            <meta name="csrf-token" content="abc+/def==&amp;x" /></head></html>"#;
        assert_eq!(scrape_csrf_token(html).as_deref(), Some("abc+/def==&x"));
        let reversed = r#"<meta content='tok' name='csrf-token'>"#;
        assert_eq!(scrape_csrf_token(reversed).as_deref(), Some("tok"));
        assert_eq!(scrape_csrf_token("<meta name=\"viewport\" content=\"x\">"), None);
    }

    #[test]
    fn cookie_jar_tracks_set_cookie_and_redacts() {
        let mut jar = CookieJar::default();
        let mut h = header::HeaderMap::new();
        h.append(header::SET_COOKIE, "_h4_session=s3cr3tvalue; path=/; secure; HttpOnly".parse().unwrap());
        h.append(header::SET_COOKIE, "other=1; path=/".parse().unwrap());
        jar.update(&h);
        assert_eq!(jar.header().as_deref(), Some("_h4_session=s3cr3tvalue; other=1"));
        assert!(!format!("{jar:?}").contains("s3cr3tvalue"));
        let mut h = header::HeaderMap::new();
        h.append(header::SET_COOKIE, "other=; Max-Age=0; path=/".parse().unwrap());
        jar.update(&h);
        assert_eq!(jar.header().as_deref(), Some("_h4_session=s3cr3tvalue"));
    }

    #[test]
    fn listed_keys_parse_leniently() {
        let a = parse_listed(&serde_json::json!({"id": 7, "description": "d", "capability_names": "a, b"})).unwrap();
        assert_eq!(a.id, "7");
        assert_eq!(a.capability_names, vec!["a", "b"]);
        let b = parse_listed(&serde_json::json!({"id": "x1", "api_key": "k", "capabilities": ["c"]})).unwrap();
        assert_eq!(b.api_key.as_deref(), Some("k"));
        assert_eq!(b.capability_names, vec!["c"]);
        assert!(!format!("{b:?}").contains("\"k\""));
        assert!(parse_listed(&serde_json::json!({"description": "no id"})).is_none());
    }
}
