//! The Deep Security client against the in-process vendor simulator (over TLS, with the frame's fault
//! injection and request counts): Trend's documented flows (docs/vendor-apis.md §3-§4), rate limiting,
//! retries, TLS and redaction.
#![cfg(feature = "sim")]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::future::join_all;
use serde_json::json;
use workload_key_operator::{
    clients::{
        ErrorKind, RateLimiter, SecretString, TlsOptions, VendorError,
        trend::{
            ApiKeyChanges, Auth, DeepSecurityApi, DeepSecurityClient, IssuedApiKey, Locale, LoginCredentials,
            NewApiKey, RetryPolicy,
        },
    },
    sim::{self, DeepSecuritySimOptions, RunningSim, SimOptions, faults::FaultRule},
};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

async fn start(deep_security: DeepSecuritySimOptions) -> RunningSim {
    sim::start(SimOptions { deep_security, ..SimOptions::default() }).await.expect("start vendor-sim")
}

async fn start_default() -> RunningSim {
    start(DeepSecuritySimOptions::default()).await
}

fn tls(sim: &RunningSim) -> TlsOptions {
    TlsOptions { ca_pem: Some(sim.ca_pem.clone()), insecure_skip_verify: false }
}

/// Short waits so retry tests stay fast.
fn quick_retries() -> RetryPolicy {
    RetryPolicy::new(6, Duration::from_millis(100), Duration::from_secs(30))
}

fn client_with(sim: &RunningSim, auth: Auth, limiter: Arc<RateLimiter>) -> DeepSecurityClient {
    DeepSecurityClient::new(&sim.info.trend_url(), auth, &tls(sim), limiter)
        .expect("client")
        .with_retry_policy(quick_retries())
}

fn client(sim: &RunningSim, auth: Auth) -> DeepSecurityClient {
    client_with(sim, auth, RateLimiter::per_minute(6000))
}

fn admin(sim: &RunningSim) -> DeepSecurityClient {
    client(sim, Auth::ApiKey(SecretString::new(sim.info.trend_admin_api_key())))
}

fn login(sim: &RunningSim) -> LoginCredentials {
    let field = |k: &str| sim.info.trend[k].as_str().expect("seeded login").to_owned();
    LoginCredentials::new(field("adminUser"), field("adminPassword"))
}

fn key_client(sim: &RunningSim, issued: &IssuedApiKey) -> DeepSecurityClient {
    client(sim, Auth::ApiKey(issued.secret_key.clone()))
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn fault(rule: serde_json::Value) -> FaultRule {
    serde_json::from_value(rule).expect("fault rule")
}

/// Requests the simulator answered for `"METHOD /path"` with `status`.
fn answered(sim: &RunningSim, endpoint: &str, status: u16) -> u64 {
    sim.counts
        .snapshot()
        .get("trend")
        .and_then(|m| m.get(endpoint))
        .and_then(|c| c.by_status.get(&status).copied())
        .unwrap_or(0)
}

fn assert_kind(result: Result<impl std::fmt::Debug, VendorError>, kind: ErrorKind) -> VendorError {
    let err = result.expect_err("the call should fail");
    assert_eq!(err.kind, kind, "{err}");
    err
}

/// Trend's documented SDK flow (docs/vendor-apis.md §4): role by name, a key expiring in two weeks, its secret
/// used, regenerated, deleted.
#[tokio::test]
async fn seed_sdk_flow_role_search_create_use_regenerate_delete() {
    let sim = start_default().await;
    let admin = admin(&sim);

    let role = admin.find_role_by_name("Auditor").await.unwrap().expect("Auditor role");
    assert_eq!((role.id, role.name.as_str()), (2, "Auditor"));
    assert_eq!(admin.describe_role(role.id).await.unwrap(), role);
    assert!(admin.find_role_by_name("Audit%").await.unwrap().is_none(), "exact match, no wildcards");

    let expiry = now_ms() + 14 * DAY_MS;
    let new_key = NewApiKey {
        description: Some("Read-only access".into()),
        locale: Some(Locale::EnUs),
        time_zone: Some("Asia/Tokyo".into()),
        expiry_date: Some(expiry),
        ..NewApiKey::new("reporting-auditor", role.id)
    };
    let issued = admin.create_api_key(&new_key).await.unwrap();
    let id = issued.key.id;
    assert!(issued.secret_key.expose().starts_with(&format!("{id}:")));

    let own = key_client(&sim, &issued);
    let current = own.describe_current_api_key().await.unwrap();
    assert_eq!(current.id, id);
    assert_eq!(current.key_name, "reporting-auditor");
    assert_eq!(current.description.as_deref(), Some("Read-only access"));
    assert_eq!(current.role_id, Some(2));
    assert_eq!(current.locale.as_deref(), Some("en-US"));
    assert_eq!(current.time_zone.as_deref(), Some("Asia/Tokyo"));
    assert_eq!(current.expiry_date, Some(expiry));
    assert!(current.is_usable_at(jiff::Timestamp::now()));

    // An Auditor key reads but does not create keys.
    assert_eq!(own.find_api_keys_by_name("reporting-auditor").await.unwrap().len(), 1);
    let err = assert_kind(own.create_api_key(&NewApiKey::new("sneaky", 1)).await, ErrorKind::Forbidden);
    assert_eq!(err.message, "Not authorized to create API keys.");

    let regenerated = admin.regenerate_secret(id).await.unwrap();
    assert_eq!(regenerated.key.id, id);
    assert_ne!(regenerated.secret_key.expose(), issued.secret_key.expose());
    assert_kind(own.describe_current_api_key().await, ErrorKind::Unauthorized);
    let renewed = key_client(&sim, &regenerated);
    assert_eq!(renewed.describe_current_api_key().await.unwrap().id, id);

    admin.delete_api_key(id).await.unwrap();
    assert_kind(admin.describe_api_key(id).await, ErrorKind::NotFound);
    assert_kind(admin.delete_api_key(id).await, ErrorKind::NotFound);
    assert_kind(renewed.describe_current_api_key().await, ErrorKind::Unauthorized);
    assert!(sim.deep_security.live_keys_named("reporting-auditor").is_empty());
}

/// Trend's documented cURL flow (docs/vendor-apis.md §3): a session from user name and password, then the first
/// key created with it.
#[tokio::test]
async fn session_flow_bootstraps_the_first_key() {
    let sim = start_default().await;
    let session = client(&sim, Auth::Login(login(&sim)));
    let info = session.open_session().await.unwrap().expect("session opened");
    assert_eq!(info.administrator_id, Some(1));
    assert_eq!(info.access_type.as_deref(), Some("webService"));

    let first = NewApiKey { description: Some("Created using a request ID".into()), ..NewApiKey::new("First Key", 1) };
    let issued = session.create_api_key(&first).await.unwrap();
    assert_eq!(issued.key.role_id, Some(1));
    let own = key_client(&sim, &issued);
    assert_eq!(own.describe_current_api_key().await.unwrap().key_name, "First Key");
    // The new Full Access key can manage keys itself: one password, then keys only.
    let second = own.create_api_key(&NewApiKey::new("second", 2)).await.unwrap();
    own.delete_api_key(second.key.id).await.unwrap();

    // A session that ended on the server is reopened once, transparently.
    assert!(sim.deep_security.end_sessions() >= 1);
    assert_eq!(session.describe_api_key(issued.key.id).await.unwrap().key_name, "First Key");

    // Lazily: the first call signs in.
    let lazy = client(&sim, Auth::Login(login(&sim)));
    assert_eq!(lazy.find_api_keys_by_name("First Key").await.unwrap().len(), 1);

    let mut wrong = login(&sim);
    wrong.password = SecretString::new("not-the-password");
    let refused = client(&sim, Auth::Login(wrong));
    assert_kind(refused.open_session().await, ErrorKind::Unauthorized);
    assert_kind(refused.describe_role(1).await, ErrorKind::Unauthorized);
    // A session cannot describe "the current API key".
    assert_kind(session.describe_current_api_key().await, ErrorKind::Invalid);
}

/// The client-side limiter keeps a burst of calls under the vendor's per-key limit: none is refused.
#[tokio::test]
async fn client_rate_limit_keeps_a_burst_under_the_vendor_limit() {
    // 50 requests per 2 s window at the vendor; an unpaced burst of 60 would be refused in part.
    let sim = start(DeepSecuritySimOptions {
        rate_limit_per_minute: 50,
        rate_limit_window: Duration::from_secs(2),
        ..DeepSecuritySimOptions::default()
    })
    .await;
    // 300/min = 5/s with a burst of 30: at most 1 + 30 + 10 requests in any 2 s window.
    let limiter = RateLimiter::per_minute(300);
    let admin = client_with(&sim, Auth::ApiKey(SecretString::new(sim.info.trend_admin_api_key())), limiter);
    // Connect first, so the burst is not bunched up behind the TLS handshake.
    admin.describe_current_api_key().await.unwrap();
    let started = Instant::now();
    let results = join_all((0..60).map(|_| admin.describe_current_api_key())).await;
    assert!(results.iter().all(Result::is_ok), "every call finishes");
    assert_eq!(sim.deep_security.throttled_count(), 0, "the vendor refused nothing");
    assert_eq!(answered(&sim, "GET /api/apikeys/current", 429), 0);
    assert_eq!(answered(&sim, "GET /api/apikeys/current", 200), 61);
    assert!(started.elapsed() >= Duration::from_secs(5), "calls were paced: {:?}", started.elapsed());
}

/// When the vendor does refuse (its 429 has no Retry-After), the client backs off and every call still finishes.
#[tokio::test]
async fn vendor_429_storm_is_ridden_out_with_backoff() {
    let sim = start(DeepSecuritySimOptions {
        rate_limit_per_minute: 5,
        rate_limit_window: Duration::from_secs(1),
        ..DeepSecuritySimOptions::default()
    })
    .await;
    let admin =
        admin(&sim).with_retry_policy(RetryPolicy::new(10, Duration::from_millis(200), Duration::from_secs(30)));
    let results = join_all((0..15).map(|_| admin.describe_current_api_key())).await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(sim.deep_security.throttled_count() > 0, "the storm did hit the vendor limit");
    assert_eq!(answered(&sim, "GET /api/apikeys/current", 200), 15);
}

/// 429 with Retry-After is honoured, also for a create (a 429 means it was not processed): one key results.
#[tokio::test]
async fn retry_after_is_honoured_and_create_is_retried_only_on_429() {
    let sim = start_default().await;
    let admin = admin(&sim);
    sim.faults
        .add(fault(json!({"vendor": "trend", "pathPrefix": "/api/apikeys", "method": "POST", "status": 429,
            "retryAfter": 1, "count": 2})))
        .unwrap();
    let started = Instant::now();
    let issued = admin.create_api_key(&NewApiKey::new("after-429", 2)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2), "waited Retry-After twice: {:?}", started.elapsed());
    assert_eq!(answered(&sim, "POST /api/apikeys", 429), 2);
    assert_eq!(answered(&sim, "POST /api/apikeys", 200), 1);
    assert_eq!(sim.deep_security.live_keys_named("after-429").len(), 1);
    assert_eq!(sim.deep_security.live_keys_named("after-429")[0].id, issued.key.id);

    // A Retry-After beyond the client's budget goes back to the caller with the wait.
    sim.faults
        .add(fault(json!({"vendor": "trend", "pathPrefix": "/api/apikeys/current", "status": 429, "retryAfter": 600,
            "count": 1})))
        .unwrap();
    let err = assert_kind(
        admin.describe_current_api_key().await,
        ErrorKind::RateLimited { retry_after: Some(Duration::from_secs(600)) },
    );
    assert_eq!(err.message, "Too many API requests");
}

/// 503 then success: reads are retried; a create is not (the key might exist), and says so.
#[tokio::test]
async fn transient_failures_retry_reads_but_not_creates() {
    let sim = start_default().await;
    let admin = admin(&sim);
    sim.faults
        .add(fault(json!({"vendor": "trend", "pathPrefix": "/api/apikeys/search", "status": 503, "count": 2})))
        .unwrap();
    assert_eq!(admin.find_api_keys_by_name("vendor-sim admin").await.unwrap().len(), 1);
    assert_eq!(answered(&sim, "POST /api/apikeys/search", 503), 2);
    assert_eq!(answered(&sim, "POST /api/apikeys/search", 200), 1);

    sim.faults
        .add(fault(json!({"vendor": "trend", "pathPrefix": "/api/apikeys/1", "drop": true, "count": 1})))
        .unwrap();
    assert_eq!(admin.describe_api_key(1).await.unwrap().id, 1, "a dropped connection is retried for a read");

    sim.faults
        .add(fault(json!({"vendor": "trend", "pathPrefix": "/api/apikeys", "method": "POST", "status": 503,
            "count": 1})))
        .unwrap();
    let err = assert_kind(admin.create_api_key(&NewApiKey::new("not-retried", 2)).await, ErrorKind::Transient);
    assert_eq!(err.status, Some(503));
    assert_eq!(answered(&sim, "POST /api/apikeys", 503), 1);
    assert_eq!(answered(&sim, "POST /api/apikeys", 200), 0, "no second attempt");
}

/// A certificate from an unknown CA (or no CA at all: system roots) is a TLS error, not a transient one.
#[tokio::test]
async fn untrusted_certificate_is_a_tls_error() {
    let sim = start_default().await;
    let other_ca = sim::tls::generate().expect("another CA").ca_pem;
    let auth = || Auth::ApiKey(SecretString::new(sim.info.trend_admin_api_key()));
    for ca_pem in [Some(other_ca), None] {
        let tls = TlsOptions { ca_pem, insecure_skip_verify: false };
        let c = DeepSecurityClient::new(&sim.info.trend_url(), auth(), &tls, RateLimiter::per_minute(6000))
            .unwrap()
            .with_retry_policy(quick_retries());
        let err = assert_kind(c.describe_current_api_key().await, ErrorKind::Tls);
        assert!(!err.to_string().contains(&sim.info.trend_admin_api_key()));
    }
    assert_eq!(answered(&sim, "GET /api/apikeys/current", 200), 0);
    // Explicitly insecure mode connects.
    let insecure = TlsOptions { ca_pem: None, insecure_skip_verify: true };
    let c = DeepSecurityClient::new(&sim.info.trend_url(), auth(), &insecure, RateLimiter::per_minute(6000)).unwrap();
    assert_eq!(c.describe_current_api_key().await.unwrap().id, 1);
}

/// Exact-name search sends `stringWildcards: false`: `_` and `%` in a name match only themselves.
#[tokio::test]
async fn find_by_name_is_exact_and_sees_duplicates() {
    let sim = start_default().await;
    let admin = admin(&sim);
    for name in ["app_1", "appX1", "app_1", "app_10"] {
        admin.create_api_key(&NewApiKey::new(name, 2)).await.unwrap();
    }
    let found = admin.find_api_keys_by_name("app_1").await.unwrap();
    assert_eq!(found.len(), 2, "both keys named exactly app_1 (the vendor accepts duplicates)");
    assert!(found.windows(2).all(|w| w[0].id < w[1].id));
    assert!(found.iter().all(|k| k.key_name == "app_1"));
    assert!(admin.find_api_keys_by_name("app%").await.unwrap().is_empty());
}

/// Modify changes only what it is given; locking out and expiry make a key unusable.
#[tokio::test]
async fn modify_lock_out_revoke_and_expire() {
    let sim = start_default().await;
    let admin = admin(&sim);
    let new_key = NewApiKey { description: Some("before".into()), ..NewApiKey::new("mutable", 2) };
    let issued = admin.create_api_key(&new_key).await.unwrap();
    let id = issued.key.id;
    let own = key_client(&sim, &issued);

    let changed = admin
        .modify_api_key(id, &ApiKeyChanges { locale: Some(Locale::JaJp), active: Some(false), ..Default::default() })
        .await
        .unwrap();
    assert_eq!((changed.locale.as_deref(), changed.description.as_deref()), (Some("ja-JP"), Some("before")));
    assert_eq!(changed.active, Some(false));
    assert_kind(own.describe_current_api_key().await, ErrorKind::Unauthorized);

    admin.modify_api_key(id, &ApiKeyChanges { active: Some(true), ..Default::default() }).await.unwrap();
    assert_eq!(own.describe_current_api_key().await.unwrap().id, id);

    sim.deep_security.revoke_key(id).unwrap();
    assert_kind(own.describe_current_api_key().await, ErrorKind::Unauthorized);
    admin.modify_api_key(id, &ApiKeyChanges { active: Some(true), ..Default::default() }).await.unwrap();
    sim.deep_security.expire_key(id).unwrap();
    assert_kind(own.describe_current_api_key().await, ErrorKind::Unauthorized);
    assert!(!admin.describe_api_key(id).await.unwrap().is_usable_at(jiff::Timestamp::now()));

    let err = assert_kind(
        admin.modify_api_key(id, &ApiKeyChanges { role_id: Some(99), ..Default::default() }).await,
        ErrorKind::Invalid,
    );
    assert_eq!(err.status, Some(400));
    assert_kind(admin.regenerate_secret(9999).await, ErrorKind::NotFound);
}

/// The trait is object-safe: a controller can hold the client as `Arc<dyn DeepSecurityApi>`.
#[tokio::test]
async fn client_works_behind_the_trait_object() {
    let sim = start_default().await;
    let api: Arc<dyn DeepSecurityApi> = Arc::new(admin(&sim));
    let role = api.find_role_by_name("Full Access").await.unwrap().unwrap();
    let issued = api.create_api_key(&NewApiKey::new("via-trait", role.id)).await.unwrap();
    assert_eq!(api.find_api_keys_by_name("via-trait").await.unwrap()[0].id, issued.key.id);
    api.delete_api_key(issued.key.id).await.unwrap();
}

/// No secret (API key, password, issued secret, session material) shows in any Debug or error text.
#[tokio::test]
async fn debug_output_never_shows_secrets() {
    let sim = start_default().await;
    let admin_secret = sim.info.trend_admin_api_key();
    let creds = login(&sim);
    let password = creds.password.expose().to_owned();
    let mut with_mfa = creds.clone();
    with_mfa.mfa_code = Some(SecretString::new("918273"));
    with_mfa.tenant_name = Some("T1".into());

    let admin = admin(&sim);
    let issued = admin.create_api_key(&NewApiKey::new("debug-check", 2)).await.unwrap();
    let issued_secret = issued.secret_key.expose().to_owned();
    let regenerated = admin.regenerate_secret(issued.key.id).await.unwrap();
    let session = client(&sim, Auth::Login(creds.clone()));
    let info = session.open_session().await.unwrap();
    let refused = client(&sim, Auth::ApiKey(SecretString::new(issued_secret.clone())));
    let refusal = refused.describe_current_api_key().await.unwrap_err();

    let printed = [
        format!("{:?}", Auth::ApiKey(SecretString::new(admin_secret.clone()))),
        format!("{:?}", Auth::Login(with_mfa.clone())),
        format!("{with_mfa:?}"),
        format!("{admin:?}"),
        format!("{session:?}"),
        format!("{info:?}"),
        format!("{issued:?}"),
        format!("{regenerated:?}"),
        format!("{:?}", regenerated.key),
        format!("{refusal:?} {refusal}"),
        format!("{:?}", sim.deep_security.keys()),
        format!(
            "{:?}",
            DeepSecuritySimOptions {
                admin_password: Some(password.clone()),
                admin_api_key: Some(admin_secret.clone()),
                ..DeepSecuritySimOptions::default()
            }
        ),
    ];
    for text in &printed {
        for secret in [&admin_secret, &password, &issued_secret, regenerated.secret_key.expose(), "918273"] {
            assert!(!text.contains(secret), "secret leaked in {text}");
        }
    }
}
