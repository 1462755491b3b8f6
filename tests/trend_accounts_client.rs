//! The Trend Vision One and Cloud One clients against the in-process vendor simulator (over TLS, with fault
//! injection and request counts): the key lifecycle the controller uses, retries that never repeat a create,
//! refusals, and no secret in error text.

#![cfg(feature = "sim")]

use std::time::Duration;

use workload_key_operator::{
    clients::{
        ErrorKind, RateLimiter, SecretString, TlsOptions,
        trend::{CloudOneClient, ExpiryMonths, KeyApi, KeyRequest, RetryPolicy, VisionOneClient, VisionOneKeyChanges},
    },
    sim::{self, RunningSim, SimOptions, faults::FaultRule},
};

async fn start() -> RunningSim {
    sim::start(SimOptions::default()).await.expect("start vendor-sim")
}

fn tls(sim: &RunningSim) -> TlsOptions {
    TlsOptions { ca_pem: Some(sim.ca_pem.clone()), insecure_skip_verify: false }
}

fn quick() -> RetryPolicy {
    RetryPolicy::new(4, Duration::from_millis(50), Duration::from_secs(10))
}

fn v1(sim: &RunningSim, key: &str) -> VisionOneClient {
    VisionOneClient::new(
        &sim.info.vision_one_url(),
        SecretString::new(key),
        &tls(sim),
        RateLimiter::per_minute(6000),
        Duration::from_secs(10),
    )
    .unwrap()
    .with_retry_policy(quick())
}

fn c1(sim: &RunningSim, key: &str) -> CloudOneClient {
    CloudOneClient::new(
        &sim.info.cloud_one_url(),
        SecretString::new(key),
        &tls(sim),
        RateLimiter::per_minute(6000),
        Duration::from_secs(10),
    )
    .unwrap()
    .with_retry_policy(quick())
}

fn fault(rule: serde_json::Value) -> FaultRule {
    serde_json::from_value(rule).expect("fault rule")
}

fn request(name: &str, role: &str, expiry: Option<ExpiryMonths>) -> KeyRequest {
    KeyRequest { description: Some("wko-uid:abc".into()), expiry, ..KeyRequest::new(name, role) }
}

#[tokio::test]
async fn vision_one_key_lifecycle() {
    let sim = start().await;
    let admin = v1(&sim, &sim.info.vision_one_admin_api_key());
    assert!(admin.check_credential().await.unwrap().contains("connectivity"));

    let role = admin.find_role("Auditor").await.unwrap().expect("role");
    let issued = admin.create_key(&request("app-one", &role, Some(ExpiryMonths::Three))).await.unwrap();
    let expires = issued.expires_at.expect("three months");
    let days = (expires.as_second() - jiff::Timestamp::now().as_second()) / 86_400;
    assert!((88..=93).contains(&days), "{days} days");
    assert!(!format!("{issued:?}").contains(issued.secret.expose()));

    // The new key works, for the connectivity check, and is not allowed to manage keys.
    let app = v1(&sim, issued.secret.expose());
    app.check_credential().await.unwrap();
    assert_eq!(app.find_keys_by_name("app-one").await.unwrap_err().kind, ErrorKind::Forbidden);

    let found = admin.find_keys_by_name("app-one").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].id.as_str(), found[0].role.as_str(), found[0].enabled), (issued.id.as_str(), "Auditor", true));
    assert_eq!(found[0].description.as_deref(), Some("wko-uid:abc"));
    assert!(admin.find_keys_by_name("app-on").await.unwrap().is_empty());

    // Update with the ETag; a stale one is refused.
    let (_, etag) = admin.get_api_key(&issued.id).await.unwrap();
    let changes = VisionOneKeyChanges { description: Some("changed".into()), ..Default::default() };
    admin.update_api_key(&issued.id, &etag, &changes).await.unwrap();
    let stale = admin.update_api_key(&issued.id, &etag, &changes).await.unwrap_err();
    assert_eq!((stale.kind, stale.status), (ErrorKind::Invalid, Some(412)));

    admin.delete_key(&issued.id).await.unwrap();
    assert_eq!(admin.delete_key(&issued.id).await.unwrap_err().kind, ErrorKind::NotFound);
    let refused = app.check_credential().await.unwrap_err();
    assert_eq!(refused.kind, ErrorKind::Unauthorized);
    assert!(!refused.to_string().contains(issued.secret.expose()));
}

#[tokio::test]
async fn vision_one_refuses_master_administrator_and_unknown_roles() {
    let sim = start().await;
    let admin = v1(&sim, &sim.info.vision_one_admin_api_key());
    assert_eq!(admin.find_role("Master Administrator").await.unwrap(), None);
    let e = admin.create_key(&request("x", "Master Administrator", None)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    let e = admin.create_key(&request("x", "Root", None)).await.unwrap_err();
    assert_eq!((e.kind.clone(), e.status), (ErrorKind::Invalid, Some(400)));
    assert!(e.message.contains("does not exist"), "{e}");
    // No key was made by either.
    assert!(sim.vision_one.keys().iter().all(|k| k.name != "x"));
}

#[tokio::test]
async fn vision_one_create_is_not_repeated_after_a_5xx_but_reads_are() {
    let sim = start().await;
    let admin = v1(&sim, &sim.info.vision_one_admin_api_key());
    sim.faults
        .add(fault(serde_json::json!({
            "vendor": "trend", "pathPrefix": "/v3.0/iam/apiKeys", "method": "POST", "status": 502, "count": 1
        })))
        .unwrap();
    let e = admin.create_key(&request("once", "Analyst", None)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert_eq!(sim.counts.total("trend", "POST /v3.0/iam/apiKeys"), 1);

    sim.faults
        .add(fault(serde_json::json!({
            "vendor": "trend", "pathPrefix": "/v3.0/iam/apiKeys", "method": "GET", "status": 503, "count": 2
        })))
        .unwrap();
    assert!(admin.find_keys_by_name("once").await.unwrap().is_empty());

    // A 429 proves the create was not processed: it is retried.
    sim.faults
        .add(fault(serde_json::json!({
            "vendor": "trend", "pathPrefix": "/v3.0/iam/apiKeys", "method": "POST", "status": 429, "count": 1
        })))
        .unwrap();
    admin.create_key(&request("once", "Analyst", None)).await.unwrap();
    assert_eq!(sim.vision_one.live_keys_named("once").len(), 1);
}

#[tokio::test]
async fn vision_one_lists_every_page() {
    let sim = start().await;
    let admin = v1(&sim, &sim.info.vision_one_admin_api_key());
    // Two pages of 200.
    for _ in 0..210 {
        admin.create_key(&request("many", "Operator", Some(ExpiryMonths::One))).await.unwrap();
    }
    assert_eq!(admin.find_keys_by_name("many").await.unwrap().len(), 210);
    assert_eq!(admin.list_api_keys(None).await.unwrap().len(), 211);
}

#[tokio::test]
async fn cloud_one_key_lifecycle() {
    let sim = start().await;
    let admin = c1(&sim, &sim.info.cloud_one_admin_api_key());
    assert!(admin.check_credential().await.unwrap().contains("accepted by Cloud One"));

    assert_eq!(admin.find_role("Read Only").await.unwrap().as_deref(), Some("read-only"));
    assert_eq!(admin.find_role("full-access").await.unwrap().as_deref(), Some("full-access"));
    assert_eq!(admin.find_role("nobody").await.unwrap(), None);

    let issued = admin.create_key(&request("c1-app", "read-only", None)).await.unwrap();
    assert!(issued.secret.expose().starts_with(&format!("{}:", issued.id)));
    assert_eq!(issued.expires_at, None);

    let app = c1(&sim, issued.secret.expose());
    assert!(app.check_credential().await.unwrap().contains(&issued.id));
    let e = app.create_key(&request("nope", "read-only", None)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Forbidden);

    let found = admin.find_keys_by_name("c1-app").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].id.as_str(), found[0].role.as_str()), (issued.id.as_str(), "read-only"));

    // Validation errors name their fields.
    let e = admin.create_key(&request("bad", "no-such-role", None)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("roleID"), "{e}");
    // Expiry cannot be asked for.
    let e = admin.create_key(&request("bad", "read-only", Some(ExpiryMonths::One))).await.unwrap_err();
    assert_eq!((e.kind, e.status), (ErrorKind::Invalid, None));

    admin.delete_key(&issued.id).await.unwrap();
    assert_eq!(admin.delete_key(&issued.id).await.unwrap_err().kind, ErrorKind::NotFound);
    let refused = app.check_credential().await.unwrap_err();
    assert_eq!(refused.kind, ErrorKind::Unauthorized);
}

#[tokio::test]
async fn cloud_one_pages_and_never_repeats_a_create() {
    let sim = start().await;
    let admin = c1(&sim, &sim.info.cloud_one_admin_api_key());
    for i in 0..130 {
        admin.create_key(&request(&format!("k{}", i % 2), "read-only", None)).await.unwrap();
    }
    assert_eq!(admin.find_keys_by_name("k1").await.unwrap().len(), 65);
    assert_eq!(admin.list_api_keys().await.unwrap().len(), 131);

    sim.faults
        .add(fault(serde_json::json!({
            "vendor": "trend", "pathPrefix": "/cloudone/api/apikeys", "method": "POST", "status": 500, "count": 1
        })))
        .unwrap();
    sim.counts.reset();
    assert_eq!(admin.create_key(&request("x", "read-only", None)).await.unwrap_err().kind, ErrorKind::Transient);
    assert_eq!(sim.counts.total("trend", "POST /cloudone/api/apikeys"), 1);
}

#[tokio::test]
async fn cloud_one_errors_never_echo_the_key() {
    let sim = start().await;
    let key = sim.info.cloud_one_admin_api_key();
    let admin = c1(&sim, &key);
    sim.faults
        .add(fault(serde_json::json!({
            "vendor": "trend", "pathPrefix": "/cloudone/api/roles", "status": 400, "echoHeader": "Authorization"
        })))
        .unwrap();
    let e = admin.find_role("full-access").await.unwrap_err();
    let (_, secret) = key.split_once(':').unwrap();
    assert!(!e.to_string().contains(secret), "{e}");
    assert!(e.to_string().contains("<redacted>"), "{e}");
}
