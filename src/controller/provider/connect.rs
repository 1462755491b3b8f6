//! The one place a provider becomes vendor clients: its endpoint and TLS, the credential it names, the client of
//! the API it speaks, built and cached the same way for every vendor (one cache key over everything that configures
//! a client, secrets included and hashed; the endpoint's rate limiter; the vendor timeout from the settings). Both
//! kinds and the provider's own credential check start here; adding a vendor starts with [`Endpoint`], and the
//! compiler points at the rest.

use std::{future::Future, sync::Arc};

use super::{Endpoint, Provider};
use crate::{
    api::{SecretReference, TrendEndpoint},
    clients::{
        ErrorKind, SecretString, TlsOptions, VendorError,
        cisco::{self, ApiCredentials, CiscoClient, UiLogin, UiSession},
        trend::{
            Auth, CloudOneClient, DeepSecurityApi, DeepSecurityClient, KeyApi, LoginCredentials, TrendApiKind,
            VisionOneClient,
        },
    },
    controller::{
        context::{Context, digest, secret_key},
        error::Error,
    },
};

/// The Secret key of a Trend admin API key when `apiKeySecretRef.key` is not set.
const TREND_API_KEY: &str = "api-secret-key";

/// Where a provider's vendor is and how to trust it.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The endpoint as keys are bound to it: the configured URL without a trailing `/`.
    pub endpoint: String,
    pub tls: TlsOptions,
    /// The provider, for messages.
    pub provider: String,
    /// Where the Secrets the provider names live.
    pub secret_namespace: String,
}

impl Connection {
    pub async fn of(provider: &Provider, ctx: &Context) -> Result<Self, Error> {
        let url = match &provider.endpoint {
            Endpoint::Trend(t) => &t.url,
            Endpoint::Cisco(c) => &c.url,
            Endpoint::Neither => return Err(provider.neither()),
        };
        let endpoint = bound_endpoint(url);
        Ok(Connection {
            endpoint,
            tls: provider.tls(ctx).await?,
            provider: provider.display(),
            secret_namespace: provider.secret_namespace.clone(),
        })
    }

    /// The cache key of a client for this connection: a digest over what kind of client, the endpoint, the trust
    /// settings and the credential (hashed, never shown).
    fn cache_key(&self, what: &[u8], secrets: &[&[u8]]) -> String {
        let ca = self.tls.ca_pem.as_deref().unwrap_or("");
        let insecure = [u8::from(self.tls.insecure_skip_verify)];
        let mut parts: Vec<&[u8]> = vec![what, self.endpoint.as_bytes(), ca.as_bytes(), &insecure];
        parts.extend_from_slice(secrets);
        digest(&parts)
    }

    /// A cached client under `key`, or a new one from `make` (given the endpoint's rate limiter).
    fn cached<T, F>(&self, ctx: &Context, key: &str, make: F) -> Result<Arc<T>, Error>
    where
        T: Send + Sync + 'static,
        F: FnOnce(Arc<crate::clients::RateLimiter>) -> Result<T, VendorError>,
    {
        ctx.cached_client(key, || Ok(make(ctx.limiters.for_endpoint(&self.endpoint))?))
    }
}

/// The configured URL without surrounding space or a trailing slash: what keys are bound to, and what a Cisco Secret
/// publishes (tetpyclient adds the path).
fn bound_endpoint(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

/// A Deep Security client: the connection, the client, and the digest of endpoint and credential that the role
/// cache is keyed by.
pub struct DeepSecurity {
    pub conn: Connection,
    pub client: Arc<dyn DeepSecurityApi>,
    pub identity: String,
}

/// The Deep Security client of a Trend provider, signed in with its API key or its login.
pub async fn deep_security(provider: &Provider, ctx: &Context) -> Result<DeepSecurity, Error> {
    let trend = provider.trend()?;
    let conn = Connection::of(provider, ctx).await?;
    let ns = &conn.secret_namespace;
    let (auth, material) = match (&trend.api_key_secret_ref, &trend.login_secret_ref) {
        (Some(sel), _) => {
            let key = ctx.secret_value(ns, &sel.name, sel.key.as_deref().unwrap_or(TREND_API_KEY)).await?;
            let material = key.expose().to_owned();
            (Auth::ApiKey(key), material)
        }
        (None, Some(r)) => {
            let secret = ctx.secret(ns, &r.name).await?;
            let optional = |k: &str| secret_key(&secret, &r.name, k).ok();
            let mut login = LoginCredentials::new(
                secret_key(&secret, &r.name, "userName")?.expose().to_owned(),
                secret_key(&secret, &r.name, "password")?,
            );
            login.tenant_name = optional("tenantName").map(|s| s.expose().to_owned());
            login.mfa_code = optional("mfaCode");
            let material = format!("{}\n{}\n{:?}", login.user_name, login.password.expose(), login.tenant_name);
            (Auth::Login(login), material)
        }
        (None, None) => {
            return Err(Error::InvalidSpec(format!(
                "{} needs spec.trend.apiKeySecretRef or spec.trend.loginSecretRef",
                provider.display()
            )));
        }
    };
    let identity = conn.cache_key(b"trend", &[material.as_bytes()]);
    let timeout = ctx.settings.vendor_timeout;
    let client: Arc<DeepSecurityClient> = conn.cached(ctx, &identity, |limiter| {
        Ok(DeepSecurityClient::new(&conn.endpoint, auth, &conn.tls, limiter)?.with_timeout(timeout))
    })?;
    Ok(DeepSecurity { conn, client, identity })
}

/// A Trend account API client (Cloud One accounts, Vision One IAM).
pub struct Account {
    pub conn: Connection,
    pub client: Arc<dyn KeyApi>,
    pub api: TrendApiKind,
}

/// The account API client of a Trend provider whose `spec.trend.api` is not DeepSecurity (the admin key from
/// `apiKeySecretRef`; a `loginSecretRef` is DeepSecurity-only, which the CRD also enforces).
pub async fn account(provider: &Provider, ctx: &Context) -> Result<Account, Error> {
    let trend: &TrendEndpoint = provider.trend()?;
    let api = trend.api();
    let Some(sel) = &trend.api_key_secret_ref else {
        return Err(Error::InvalidSpec(format!(
            "{} uses api {api}, which needs the admin API key in spec.trend.apiKeySecretRef (loginSecretRef is \
             DeepSecurity only)",
            provider.display()
        )));
    };
    let conn = Connection::of(provider, ctx).await?;
    let key: SecretString =
        ctx.secret_value(&conn.secret_namespace, &sel.name, sel.key.as_deref().unwrap_or(TREND_API_KEY)).await?;
    let identity = conn.cache_key(api.as_str().as_bytes(), &[key.expose().as_bytes()]);
    let timeout = ctx.settings.vendor_timeout;
    let client: Arc<dyn KeyApi> = match api {
        TrendApiKind::VisionOne => {
            conn.cached(ctx, &identity, |l| VisionOneClient::new(&conn.endpoint, key, &conn.tls, l, timeout))?
        }
        TrendApiKind::CloudOne => {
            conn.cached(ctx, &identity, |l| CloudOneClient::new(&conn.endpoint, key, &conn.tls, l, timeout))?
        }
        TrendApiKind::DeepSecurity => {
            return Err(Error::InvalidSpec(format!("{} speaks DeepSecurity, not an account API", provider.display())));
        }
    };
    Ok(Account { conn, client, api })
}

/// A Cisco OpenAPI client for a key pair (an imported or a minted one) at the provider's endpoint.
pub fn cisco_client(conn: &Connection, ctx: &Context, pair: &ApiCredentials) -> Result<Arc<CiscoClient>, Error> {
    let key = conn.cache_key(b"cisco", &[pair.api_key().as_bytes(), pair.api_secret().expose().as_bytes()]);
    let timeout = ctx.settings.vendor_timeout;
    conn.cached(ctx, &key, |limiter| {
        Ok(CiscoClient::new(&conn.endpoint, pair.clone(), &conn.tls, limiter)?.with_timeout(timeout))
    })
}

/// Runs `call` on a signed-in Cisco UI session (EXPERIMENTAL) of the provider's `cisco.loginSecretRef`, signing in
/// when none is cached. A session the vendor ended (401, or a redirect to the sign-in page) is dropped and signed in
/// again, once.
pub async fn with_ui_session<T, F, Fut>(
    conn: &Connection,
    ctx: &Context,
    login: Option<&SecretReference>,
    call: F,
) -> Result<T, Error>
where
    F: Fn(Arc<UiSession>) -> Fut,
    Fut: Future<Output = Result<T, VendorError>>,
{
    let r = login.ok_or_else(|| {
        Error::InvalidSpec(format!("{} has no spec.cisco.loginSecretRef to sign in with", conn.provider))
    })?;
    let secret = ctx.secret(&conn.secret_namespace, &r.name).await?;
    let login = UiLogin {
        email: secret_key(&secret, &r.name, "email")?.expose().to_owned(),
        password: secret_key(&secret, &r.name, "password")?,
    };
    let key = conn.cache_key(b"cisco-ui", &[login.email.as_bytes(), login.password.expose().as_bytes()]);
    let mut fresh = false;
    loop {
        let session = match ctx.cached::<UiSession>(&key) {
            Some(s) => s,
            None => {
                let limiter = ctx.limiters.for_endpoint(&conn.endpoint);
                let timeout = ctx.settings.vendor_timeout;
                let s = Arc::new(UiSession::sign_in(&conn.endpoint, &login, &conn.tls, limiter, timeout).await?);
                ctx.cache(&key, s.clone());
                fresh = true;
                s
            }
        };
        match call(session).await {
            Err(e) if e.kind == ErrorKind::Unauthorized && !fresh => {
                tracing::debug!(provider = %conn.provider, "UI session ended; signing in again");
                ctx.forget_client(&key);
                fresh = true;
            }
            other => return Ok(other?),
        }
    }
}

/// The provider's read-only check of its credential; the message says what was proven.
/// - Trend Deep Security: the admin API key describes itself (`GET /apikeys/current`); a sign-in reads the role
///   list. Cloud One: the admin key describes itself; Vision One: the connectivity check.
/// - Cisco: with a sign-in, the UI session opens and lists the credentials; without one, the OpenAPI answers over
///   TLS (an unsigned read, refused with 401).
pub async fn check(provider: &Provider, ctx: &Context) -> Result<String, Error> {
    match &provider.endpoint {
        Endpoint::Trend(t) if t.api() == TrendApiKind::DeepSecurity => {
            let ds = deep_security(provider, ctx).await?;
            if t.api_key_secret_ref.is_some() {
                let key = ds.client.describe_current_api_key().await?;
                Ok(format!("the admin API key {} ({:?}) is accepted by {}", key.id, key.key_name, ds.conn.endpoint))
            } else {
                ds.client.find_role_by_name("Full Access").await?;
                Ok(format!("signed in to {} with the login", ds.conn.endpoint))
            }
        }
        Endpoint::Trend(_) => Ok(account(provider, ctx).await?.client.check_credential().await?),
        Endpoint::Cisco(c) => {
            let conn = Connection::of(provider, ctx).await?;
            if c.login_secret_ref.is_some() {
                let login = c.login_secret_ref.as_ref();
                let listed = with_ui_session(&conn, ctx, login, |s| async move { s.list_credentials().await }).await?;
                Ok(format!(
                    "signed in to {} (EXPERIMENTAL UI session API); {} API key(s) listed",
                    conn.endpoint,
                    listed.len()
                ))
            } else {
                let status = cisco::reach::reachable(&conn.endpoint, &conn.tls, ctx.settings.vendor_timeout).await?;
                Ok(format!(
                    "{} answers over TLS (HTTP {status} to an unsigned read); no sign-in configured",
                    conn.endpoint
                ))
            }
        }
        Endpoint::Neither => Err(provider.neither()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_url_without_space_or_trailing_slash() {
        assert_eq!(bound_endpoint(" https://sw.example.com/ "), "https://sw.example.com");
        assert_eq!(bound_endpoint("https://dsm:4119/api/"), "https://dsm:4119/api");
        assert_eq!(bound_endpoint("https://dsm:4119/api"), "https://dsm:4119/api");
    }
}
