//! The Cisco Secure Workload client against the simulator, started in-process over TLS.
#![cfg(feature = "sim")]

use std::{sync::Arc, time::Duration};

use workload_key_operator::{
    clients::{
        ErrorKind, RateLimiter, SecretString, TlsOptions, VendorError,
        cisco::{
            ApiCredentials, Capability, CiscoClient, Liveness, Rejection, RetryPolicy, UiLogin, UiSession,
            client::DEFAULT_TIMEOUT,
            signer::{self, JSON_CONTENT_TYPE, RequestToSign},
        },
    },
    sim::{self, RunningSim, SimOptions},
};

async fn start() -> RunningSim {
    sim::start(SimOptions::default()).await.expect("simulator starts")
}

fn tls(sim: &RunningSim) -> TlsOptions {
    TlsOptions { ca_pem: Some(sim.ca_pem.clone()), insecure_skip_verify: false }
}

fn limiter() -> Arc<RateLimiter> {
    RateLimiter::per_minute(60_000)
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(2),
    }
}

fn pair(key: &str, secret: &str) -> ApiCredentials {
    ApiCredentials::new(key, SecretString::new(secret)).expect("valid pair")
}

fn seeded(sim: &RunningSim) -> ApiCredentials {
    let doc = serde_json::json!({"api_key": sim.info.cisco_api_key(), "api_secret": sim.info.cisco_api_secret()});
    ApiCredentials::from_credentials_json(doc.to_string().as_bytes()).expect("seeded credentials.json parses")
}

fn client(sim: &RunningSim, credentials: ApiCredentials) -> CiscoClient {
    CiscoClient::new(&sim.info.cisco_url(), credentials, &tls(sim), limiter())
        .expect("client builds")
        .with_retry_policy(fast_retries())
}

fn ui_login(sim: &RunningSim) -> UiLogin {
    UiLogin {
        email: sim.info.cisco["uiEmail"].as_str().unwrap().to_owned(),
        password: SecretString::new(sim.info.cisco["uiPassword"].as_str().unwrap()),
    }
}

fn fault(rule: serde_json::Value) -> sim::faults::FaultRule {
    serde_json::from_value(rule).expect("fault rule")
}

#[tokio::test]
async fn signed_get_with_query_and_post_with_body_succeed() {
    let sim = start().await;
    let c = client(&sim, seeded(&sim));

    let enabled = c.get("/users", &[]).await.unwrap();
    let all = c.get("/openapi/v1/users", &[("include_disabled", "true")]).await.unwrap();
    assert_eq!(enabled.as_array().unwrap().len() + 1, all.as_array().unwrap().len(), "the query reaches the server");

    let body = serde_json::json!({"email": "new.user@example.com", "first_name": "New", "last_name": "User"});
    let created = c.post("/users", &body).await.unwrap();
    assert_eq!(created["email"], "new.user@example.com");
    let id = created["id"].as_str().unwrap().to_owned();

    let updated = c.put(&format!("/users/{id}"), &serde_json::json!({"first_name": "Renamed"})).await.unwrap();
    assert_eq!(updated["first_name"], "Renamed");
    let disabled = c.delete(&format!("/users/{id}"), None).await.unwrap();
    assert!(disabled["disabled_at"].is_number());

    let duplicate = c.post("/users", &body).await.unwrap_err();
    assert_eq!(duplicate.kind, ErrorKind::Invalid);
    assert_eq!(duplicate.message, "Email has already been taken");
}

#[tokio::test]
async fn seeded_pair_verifies_every_probeable_capability() {
    let sim = start().await;
    let all: Vec<Capability> = Capability::ALL.to_vec();
    let v = client(&sim, seeded(&sim)).verify(&all).await.unwrap();
    assert_eq!(v.liveness, Liveness::Ok);
    assert_eq!(v.verified, Capability::ALL.into_iter().filter(|c| c.probe_path().is_some()).collect::<Vec<_>>());
    assert!(v.missing.is_empty());
    assert_eq!(v.unverified, Capability::ALL.into_iter().filter(|c| c.probe_path().is_none()).collect::<Vec<_>>());
    assert!(v.is_usable());
}

#[tokio::test]
async fn wrong_secret_is_reported_as_secret_rejected() {
    let sim = start().await;
    let c = client(&sim, pair(&sim.info.cisco_api_key(), &"0".repeat(40)));

    let err = c.get("/app_scopes", &[]).await.unwrap_err();
    assert_eq!(err.status, Some(403));
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert_eq!(Rejection::of(&err), Some(Rejection::SecretRejected));
    assert!(err.message.starts_with("Invalid request"), "{}", err.message);

    let v = c.verify(&[Capability::UserRoleScopeManagement, Capability::SensorManagement]).await.unwrap();
    assert_eq!(v.liveness, Liveness::SecretRejected);
    assert!(v.verified.is_empty() && v.missing.is_empty());
    assert_eq!(v.unverified.len(), 2);
    let v = c.verify(&[]).await.unwrap();
    assert_eq!(v.liveness, Liveness::SecretRejected);
}

#[tokio::test]
async fn unknown_key_is_reported_as_unknown() {
    let sim = start().await;
    let c = client(&sim, pair(&"f".repeat(32), &sim.info.cisco_api_secret()));

    let err = c.get("/roles", &[]).await.unwrap_err();
    assert_eq!(err.status, Some(401));
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert_eq!(Rejection::of(&err), Some(Rejection::UnknownKey));
    assert!(err.message.starts_with("Unknown credentials"), "{}", err.message);

    let v = c.verify(&[Capability::FlowInventoryQuery]).await.unwrap();
    assert_eq!(v.liveness, Liveness::UnknownKey);
    assert_eq!(v.unverified, vec![Capability::FlowInventoryQuery]);
}

#[tokio::test]
async fn probes_sort_capabilities_into_verified_missing_and_unverified() {
    let sim = start().await;
    let (key, secret) =
        sim.cisco.create_key("probe test", &[Capability::UserRoleScopeManagement, Capability::SoftwareDownload]);
    let c = client(&sim, ApiCredentials::new(key, secret).unwrap());

    let wanted = [
        Capability::UserRoleScopeManagement,
        Capability::AppPolicyManagement,
        Capability::SoftwareDownload,
        Capability::FlowInventoryQuery,
        Capability::UserRoleScopeManagement,
    ];
    let v = c.verify(&wanted).await.unwrap();
    assert_eq!(v.liveness, Liveness::Ok);
    assert_eq!(v.verified, vec![Capability::UserRoleScopeManagement]);
    assert_eq!(v.missing, vec![Capability::AppPolicyManagement, Capability::FlowInventoryQuery]);
    assert_eq!(v.unverified, vec![Capability::SoftwareDownload]);
    assert!(!v.is_usable());

    // A missing capability is a 403 distinct from a refused signature.
    let err = c.get("/sensors", &[]).await.unwrap_err();
    assert_eq!((err.status, &err.kind), (Some(403), &ErrorKind::Forbidden));
    assert_eq!(Rejection::of(&err), Some(Rejection::MissingCapability));
}

#[tokio::test]
async fn liveness_without_probeable_capabilities_uses_app_scopes() {
    let sim = start().await;
    let (key, secret) = sim.cisco.create_key("download only", &[Capability::SoftwareDownload]);
    let c = client(&sim, ApiCredentials::new(&key, secret).unwrap());
    sim.counts.reset();
    let v = c.verify(&[Capability::SoftwareDownload]).await.unwrap();
    assert_eq!(v.liveness, Liveness::Ok, "a 403 other than `Invalid request` proves the signature");
    assert_eq!(v.unverified, vec![Capability::SoftwareDownload]);
    assert_eq!(sim.counts.total("cisco", "GET /openapi/v1/app_scopes"), 1);
    assert_eq!(sim.counts.total("cisco", ""), 1, "one call in all");
}

#[tokio::test]
async fn revoked_key_becomes_unknown() {
    let sim = start().await;
    let (key, secret) = sim.cisco.create_key("to revoke", &[Capability::SensorManagement]);
    let c = client(&sim, ApiCredentials::new(&key, secret).unwrap());
    assert_eq!(c.verify(&[Capability::SensorManagement]).await.unwrap().liveness, Liveness::Ok);

    let control = reqwest::Client::new();
    let listed: serde_json::Value =
        control.get(format!("{}/cisco/credentials", sim.info.control_url)).send().await.unwrap().json().await.unwrap();
    let entry = listed.as_array().unwrap().iter().find(|k| k["apiKey"] == key.as_str()).expect("listed").clone();
    assert_eq!(entry["capabilities"], serde_json::json!(["sensor_management"]));
    assert!(!listed.to_string().contains(c.credentials().api_secret().expose()), "no secrets on the list");

    let revoked = control.post(format!("{}/cisco/keys/{key}/revoke", sim.info.control_url)).send().await.unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(c.verify(&[Capability::SensorManagement]).await.unwrap().liveness, Liveness::UnknownKey);
}

/// A raw request signed with our signer, then optionally spoiled.
struct Raw<'a> {
    method: &'a str,
    target: &'a str,
    body: &'a [u8],
    sign_body: &'a [u8],
    sign_target: &'a str,
    at: jiff::Timestamp,
    send_checksum: bool,
    secret: Option<&'a str>,
}

async fn raw(sim: &RunningSim, r: Raw<'_>) -> (u16, String, String) {
    let http = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(sim.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let secret = SecretString::new(r.secret.map(str::to_owned).unwrap_or_else(|| sim.info.cisco_api_secret()));
    let to_sign = RequestToSign {
        method: r.method,
        path_and_query: r.sign_target,
        content_type: Some(JSON_CONTENT_TYPE),
        body: r.sign_body,
    };
    let signed = signer::sign(&sim.info.cisco_api_key(), &secret, &to_sign, r.at);
    let mut request = http
        .request(r.method.parse().unwrap(), format!("{}{}", sim.info.cisco_url(), r.target))
        .header("Content-Type", JSON_CONTENT_TYPE)
        .header("Id", &signed.id)
        .header("Timestamp", &signed.timestamp)
        .header("Authorization", &signed.authorization)
        .body(r.body.to_vec());
    if let (true, Some(cksum)) = (r.send_checksum, &signed.checksum) {
        request = request.header("X-Tetration-Cksum", cksum);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test]
async fn gateway_refuses_tampered_body_stale_timestamp_and_bad_signatures() {
    let sim = start().await;
    let now = jiff::Timestamp::now();
    let body = br#"{"email":"raw@example.com","first_name":"R","last_name":"W"}"#;
    let ok = Raw {
        method: "POST",
        target: "/openapi/v1/users",
        body,
        sign_body: body,
        sign_target: "/openapi/v1/users",
        at: now,
        send_checksum: true,
        secret: None,
    };
    let invalid = (403, "text/plain; charset=utf-8".to_owned(), "Invalid request".to_owned());

    let (status, content_type, _) = raw(&sim, Raw { ..ok }).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json; charset=utf-8"));

    let tampered = br#"{"email":"evil@example.com","first_name":"R","last_name":"W"}"#;
    assert_eq!(raw(&sim, Raw { body: tampered, ..ok }).await, invalid, "body changed after signing");
    assert_eq!(raw(&sim, Raw { send_checksum: false, ..ok }).await, invalid, "POST body without checksum");

    let stale = now.checked_sub(jiff::SignedDuration::from_secs(6 * 60)).unwrap();
    let get = Raw {
        method: "GET",
        target: "/openapi/v1/roles",
        body: b"",
        sign_body: b"",
        sign_target: "/openapi/v1/roles",
        ..ok
    };
    assert_eq!(raw(&sim, Raw { at: stale, ..get }).await, invalid, "six minutes old");
    let future = now.checked_add(jiff::SignedDuration::from_secs(6 * 60)).unwrap();
    assert_eq!(raw(&sim, Raw { at: future, ..get }).await, invalid, "six minutes ahead");
    let recent = now.checked_sub(jiff::SignedDuration::from_secs(4 * 60)).unwrap();
    assert_eq!(raw(&sim, Raw { at: recent, ..get }).await.0, 200, "four minutes old is tolerated");

    let query = Raw { target: "/openapi/v1/users?include_disabled=true", sign_target: "/openapi/v1/users", ..get };
    assert_eq!(raw(&sim, query).await, invalid, "the query is part of the signature");
    assert_eq!(raw(&sim, Raw { secret: Some(&"0".repeat(40)), ..get }).await, invalid, "wrong secret");

    let unknown_path = Raw { target: "/openapi/v1/no_such_thing", sign_target: "/openapi/v1/no_such_thing", ..get };
    assert_eq!(raw(&sim, Raw { ..unknown_path }).await.0, 404, "good signature, unknown path");
    assert_eq!(
        raw(&sim, Raw { secret: Some(&"0".repeat(40)), ..unknown_path }).await,
        invalid,
        "checked before routing"
    );
}

#[tokio::test]
async fn server_errors_are_retried_on_idempotent_calls_only() {
    let sim = start().await;
    let c = client(&sim, seeded(&sim));

    sim.faults
        .add(fault(
            serde_json::json!({"vendor": "cisco", "pathPrefix": "/openapi/v1/roles", "status": 503, "count": 2}),
        ))
        .unwrap();
    sim.counts.reset();
    c.get("/roles", &[]).await.expect("succeeds after two 503s");
    assert_eq!(sim.counts.total("cisco", "GET /openapi/v1/roles"), 3, "each attempt re-signed and accepted");

    sim.faults.add(fault(serde_json::json!({"vendor": "cisco", "pathPrefix": "/openapi/v1/users", "method": "POST", "status": 503, "count": 1}))).unwrap();
    let err = c
        .post("/users", &serde_json::json!({"email": "x@example.com", "first_name": "X", "last_name": "Y"}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(sim.counts.total("cisco", "POST /openapi/v1/users"), 1, "POST is never retried");

    sim.faults
        .add(fault(serde_json::json!({"vendor": "cisco", "pathPrefix": "/openapi/v1/sensors", "status": 502})))
        .unwrap();
    let err = c.get("/sensors", &[]).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(sim.counts.total("cisco", "GET /openapi/v1/sensors"), 3, "bounded attempts");
    sim.faults.clear();

    sim.faults.add(fault(serde_json::json!({"vendor": "cisco", "pathPrefix": "/openapi/v1/app_scopes", "status": 429, "retryAfter": 600, "count": 1}))).unwrap();
    let err = c.get("/app_scopes", &[]).await.unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::RateLimited { retry_after: Some(Duration::from_secs(600)) },
        "long waits go back to the caller"
    );
    sim.faults.add(fault(serde_json::json!({"vendor": "cisco", "pathPrefix": "/openapi/v1/app_scopes", "status": 429, "retryAfter": 1, "count": 1}))).unwrap();
    c.get("/app_scopes", &[]).await.expect("a short Retry-After is waited for");
}

#[tokio::test]
async fn dropped_connection_is_retried() {
    let sim = start().await;
    let c = client(&sim, seeded(&sim));
    sim.faults
        .add(fault(
            serde_json::json!({"vendor": "cisco", "pathPrefix": "/openapi/v1/flowsearch", "drop": true, "count": 1}),
        ))
        .unwrap();
    c.get("/flowsearch/dimensions", &[]).await.expect("second attempt succeeds");
}

#[tokio::test]
async fn untrusted_certificate_is_a_tls_error() {
    let sim = start().await;
    let other_ca = sim::tls::generate().unwrap().ca_pem;
    for tls in [TlsOptions { ca_pem: Some(other_ca), insecure_skip_verify: false }, TlsOptions::default()] {
        let c = CiscoClient::new(&sim.info.cisco_url(), seeded(&sim), &tls, limiter())
            .unwrap()
            .with_retry_policy(fast_retries());
        let err = c.verify(&[Capability::SensorManagement]).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Tls, "{err}");
        let ui = UiSession::sign_in(&sim.info.cisco_url(), &ui_login(&sim), &tls, limiter(), DEFAULT_TIMEOUT)
            .await
            .unwrap_err();
        assert_eq!(ui.kind, ErrorKind::Tls, "{ui}");
    }
    let insecure = TlsOptions { ca_pem: None, insecure_skip_verify: true };
    let c = CiscoClient::new(&sim.info.cisco_url(), seeded(&sim), &insecure, limiter()).unwrap();
    assert_eq!(c.verify(&[]).await.unwrap().liveness, Liveness::Ok);
}

#[tokio::test]
async fn ui_session_mints_lists_and_deletes_credentials() {
    let sim = start().await;
    let url = sim.info.cisco_url();
    let session =
        UiSession::sign_in(&url, &ui_login(&sim), &tls(&sim), limiter(), DEFAULT_TIMEOUT).await.expect("sign-in");

    let created = session
        .create_credential("payments reporting", &[Capability::FlowInventoryQuery, Capability::SensorManagement])
        .await
        .unwrap();
    let c = client(&sim, created.credentials.clone());
    let v = c
        .verify(&[Capability::FlowInventoryQuery, Capability::SensorManagement, Capability::UserRoleScopeManagement])
        .await
        .unwrap();
    assert_eq!(v.liveness, Liveness::Ok);
    assert_eq!(v.verified, vec![Capability::FlowInventoryQuery, Capability::SensorManagement]);
    assert_eq!(v.missing, vec![Capability::UserRoleScopeManagement]);

    let listed = session.list_credentials().await.unwrap();
    let mine = listed.iter().find(|k| k.id == created.id).expect("the new key is listed");
    assert_eq!(mine.description.as_deref(), Some("payments reporting"));
    assert_eq!(mine.api_key.as_deref(), Some(created.credentials.api_key()));
    assert_eq!(mine.capability_names, vec!["sensor_management", "flow_inventory_query"]);

    session.delete_credential(&created.id).await.unwrap();
    session.delete_credential(&created.id).await.expect("deleting again is not an error");
    assert!(session.list_credentials().await.unwrap().iter().all(|k| k.id != created.id));
    assert_eq!(c.verify(&[Capability::FlowInventoryQuery]).await.unwrap().liveness, Liveness::UnknownKey);
}

#[tokio::test]
async fn ui_sign_in_with_wrong_password_is_refused() {
    let sim = start().await;
    let login = UiLogin { password: SecretString::new("not-the-password"), ..ui_login(&sim) };
    let err =
        UiSession::sign_in(&sim.info.cisco_url(), &login, &tls(&sim), limiter(), DEFAULT_TIMEOUT).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert!(!err.to_string().contains("not-the-password"));
}

#[tokio::test]
async fn debug_output_of_secret_bearing_types_has_no_secret() {
    let sim = start().await;
    let key = sim.info.cisco_api_key();
    let secret = sim.info.cisco_api_secret();
    let password = sim.info.cisco["uiPassword"].as_str().unwrap().to_owned();

    let credentials = seeded(&sim);
    let c = client(&sim, credentials.clone());
    let session = UiSession::sign_in(&sim.info.cisco_url(), &ui_login(&sim), &tls(&sim), limiter(), DEFAULT_TIMEOUT)
        .await
        .unwrap();
    let created = session.create_credential("debug test", &[Capability::SensorManagement]).await.unwrap();
    let listed = session.list_credentials().await.unwrap();
    let wrong_secret: VendorError = client(&sim, pair(&key, &"0".repeat(40))).get("/roles", &[]).await.unwrap_err();
    let signed = signer::sign(
        &key,
        &SecretString::new(secret.clone()),
        &RequestToSign { method: "GET", path_and_query: "/openapi/v1/roles", content_type: None, body: b"" },
        jiff::Timestamp::now(),
    );
    let options = sim::CiscoSimOptions {
        api_secret: Some(SecretString::new(secret.clone())),
        ui_password: Some(SecretString::new(password.clone())),
        ..Default::default()
    };

    let printed = [
        format!("{credentials:?}"),
        format!("{c:?}"),
        format!("{:?}", ui_login(&sim)),
        format!("{session:?}"),
        format!("{created:?}"),
        format!("{listed:?}"),
        format!("{wrong_secret:?} {wrong_secret}"),
        format!("{signed:?}"),
        format!("{options:?}"),
        format!("{:?}", sim.cisco),
    ];
    let created_secret = created.credentials.api_secret().expose().to_owned();
    for text in &printed {
        for needle in [&key, &secret, &password, &created_secret, &created.credentials.api_key().to_owned()] {
            assert!(!text.contains(needle.as_str()), "leak in {text}");
        }
        assert!(!text.contains(&signed.authorization), "signature in {text}");
    }
    assert!(printed[3].contains("_h4_session"), "cookie names are shown, values are not: {}", printed[3]);
}

/// A plain TCP listener on loopback that counts connections (a redirect target that must stay untouched).
async fn counting_listener() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = hits.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(tcp);
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn redirects_off_the_origin_are_refused_and_not_retried() {
    let sim = start().await;
    let (other, hits) = counting_listener().await;
    let c = client(&sim, seeded(&sim));
    for status in [302, 307] {
        sim.faults
            .add(fault(serde_json::json!({"vendor": "cisco", "pathPrefix": "/openapi/v1/users", "status": status,
                "location": format!("https://{other}/openapi/v1/users")})))
            .unwrap();
        let before = sim.counts.total("cisco", "");
        let err = c.get("/users", &[]).await.unwrap_err();
        assert_eq!((err.kind.clone(), err.status), (ErrorKind::Invalid, Some(status)));
        assert!(err.message.contains(&format!("redirect to https://{other} not followed")), "{err}");
        assert_eq!(sim.counts.total("cisco", "") - before, 1, "a refused redirect is not retried");
        sim.faults.clear();
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "the other origin received nothing");
}

#[tokio::test]
async fn bodies_over_a_mebibyte_are_refused() {
    let sim = start().await;
    let c = client(&sim, seeded(&sim));
    sim.faults
        .add(fault(serde_json::json!({"vendor": "cisco", "pathPrefix": "/openapi/v1/users", "status": 200,
            "bodyBytes": 10_485_760})))
        .unwrap();
    let err = c.get("/users", &[]).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid);
    assert!(err.to_string().ends_with("response body larger than 1 MiB"), "{err}");
    sim.faults.clear();
    // An error body is bounded too, and the answer keeps its status's meaning (a 503 is retried).
    sim.faults
        .add(fault(serde_json::json!({"vendor": "cisco", "pathPrefix": "/openapi/v1/users", "status": 503,
            "bodyBytes": 2_097_152, "count": 1})))
        .unwrap();
    c.get("/users", &[]).await.expect("the retry after a 503 with a huge body succeeds");
}

#[tokio::test]
async fn error_bodies_echoing_the_key_pair_are_redacted() {
    let sim = start().await;
    let c = client(&sim, seeded(&sim)).with_retry_policy(RetryPolicy::none());
    for header in ["Id", "Authorization"] {
        sim.faults
            .add(fault(serde_json::json!({"vendor": "cisco", "pathPrefix": "/openapi/v1/users", "status": 400,
                "echoHeader": header, "count": 1})))
            .unwrap();
        let err = c.get("/users", &[]).await.unwrap_err();
        let text = err.to_string();
        assert!(!text.contains(&sim.info.cisco_api_key()), "{text}");
        assert!(!text.contains(&sim.info.cisco_api_secret()), "{text}");
        if header == "Id" {
            assert!(text.contains(&format!("it carried {header}: <redacted>")), "{text}");
        }
    }
}

#[tokio::test]
async fn the_timeout_bounds_each_request() {
    let sim = start().await;
    let c = client(&sim, seeded(&sim)).with_retry_policy(RetryPolicy::none()).with_timeout(Duration::from_millis(500));
    sim.faults
        .add(fault(serde_json::json!({"vendor": "cisco", "pathPrefix": "/openapi/v1/users", "latencyMs": 3000})))
        .unwrap();
    let started = std::time::Instant::now();
    let err = c.get("/users", &[]).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "timed out after {:?}", started.elapsed());
}
