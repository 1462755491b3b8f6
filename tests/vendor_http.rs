//! The vendor HTTP layer end to end: a real API server, the operator as its own process, the Trend simulator,
//! and small servers of the test's own on loopback (another origin, a CONNECT proxy). Proves the timeout
//! setting, proxies from the environment, refused cross-origin redirects, bounded bodies and redaction.
#![cfg(feature = "sim")]

mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;
use support::{TestNamespace, eventually, merge, operator::Operator, put_secret, sim_env};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use workload_key_operator::{
    api::{KeyProvider, WorkloadApiKey},
    sim::{self, RunningSim, SimOptions, faults::FaultRule},
};

const WAIT: Duration = Duration::from_secs(60);

struct Env {
    ns: TestNamespace,
    sim: RunningSim,
    op: Operator,
}

impl Env {
    /// A namespace, the simulator, the admin Secrets, a Trend `KeyProvider` naming them (Ready), and the operator
    /// with `env(&sim)` added to its environment.
    async fn start(prefix: &str, env: impl FnOnce(&RunningSim) -> Vec<(String, String)>) -> Self {
        let ns = TestNamespace::new(prefix).await;
        support::operator::install_crds(&ns.client).await;
        let sim = sim::start(SimOptions::default()).await.expect("start vendor simulator");
        put_secret(&ns, "tm-admin", &[("api-secret-key", sim.info.trend_admin_api_key().as_str())]).await;
        put_secret(&ns, "sim-ca", &[("ca.crt", sim.ca_pem.as_str())]).await;
        let vars = env(&sim);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        sim_env::apply_key_provider(
            &ns.client,
            &ns.name,
            sim_env::TREND_PROVIDER,
            sim_env::trend_provider_spec(&sim, sim_env::ADMIN_SECRET),
        )
        .await;
        let op = Operator::start_with_env(&ns.name, &vars);
        sim_env::wait_provider_ready(&ns.api::<KeyProvider>(), sim_env::TREND_PROVIDER).await;
        Env { ns, sim, op }
    }

    fn waks(&self) -> Api<WorkloadApiKey> {
        self.ns.api()
    }

    async fn apply(&self, name: &str) {
        let obj = workload_api_key(&self.sim, name);
        self.waks().patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&obj)).await.expect("apply");
    }

    /// Waits until Ready has `status` and `reason` and its message contains `needle`; returns the message.
    async fn wait_ready_condition(&self, name: &str, status: &str, reason: &str, needle: &str) -> String {
        let what = format!("{name} Ready={status} reason={reason} message containing {needle:?}");
        eventually(WAIT, &what, || async {
            let obj = self.waks().get(name).await.ok()?;
            let c = obj.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
            (c.status == status && c.reason == reason && c.message.contains(needle)).then_some(c.message)
        })
        .await
    }

    async fn wait_ready(&self, name: &str) -> WorkloadApiKey {
        support::wait_condition(&self.waks(), name, "Ready", "True", "Ready", WAIT).await
    }

    /// Live keys at the vendor whose description carries this resource's UID.
    async fn live_keys_of(&self, name: &str) -> usize {
        let wak = self.waks().get(name).await.unwrap();
        let marker = format!("[workloadkeys.io/owner={}.", wak.uid().unwrap());
        let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
        let keys = self.sim.deep_security.keys();
        keys.iter().filter(|k| k.description.as_deref().is_some_and(|d| d.contains(&marker)) && k.is_live(now)).count()
    }

    fn fault(&self, rule: serde_json::Value) -> u64 {
        let mut full = json!({"vendor": "trend"});
        merge(&mut full, &rule);
        self.sim.faults.add(serde_json::from_value::<FaultRule>(full).unwrap()).expect("valid fault")
    }

    /// Peak resident memory of the operator process (`VmHWM`), in KiB.
    fn operator_peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.op.pid().unwrap())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM line");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

/// The one place a test resource is built: through the namespace's Trend provider.
fn workload_api_key(_sim: &RunningSim, name: &str) -> WorkloadApiKey {
    serde_json::from_value(json!({
        "apiVersion": "workloadkeys.io/v1alpha1", "kind": "WorkloadApiKey",
        "metadata": {"name": name},
        "spec": {
            "providerRef": sim_env::key_provider_ref(sim_env::TREND_PROVIDER),
            "role": {"name": "Auditor"},
            "expiresAfter": "336h",
            "description": "vendor HTTP test"
        }
    }))
    .unwrap()
}

fn host_port(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    format!("{}:{}", u.host_str().unwrap(), u.port_or_known_default().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_timeout_applies_and_a_timed_out_create_leaves_one_key() {
    let env = Env::start("http-timeout", |_| vec![("WKO_VENDOR_TIMEOUT_SECONDS".into(), "2".into())]).await;
    // Creates (and the search for a key whose create went unanswered) take 5 s, longer than the 2 s timeout.
    env.fault(json!({"pathPrefix": "/api/apikeys", "method": "POST", "latencyMs": 5000}));
    let started = Instant::now();
    env.apply("slow").await;
    let message = env.wait_ready_condition("slow", "False", "VendorUnavailable", "").await;
    let detected = started.elapsed();
    eprintln!("timeout detected after {detected:?}: {message}");
    assert!(detected < Duration::from_secs(10), "VendorUnavailable after {detected:?}, not within 10 s");
    assert!(message.contains("create API key") || message.contains("search API keys"), "{message}");

    env.sim.faults.clear();
    env.wait_ready("slow").await;
    assert_eq!(env.live_keys_of("slow").await, 1, "exactly one live key after a timed-out create");
}

/// A plain TCP server that counts connections (any attempt at all, TLS or not) and answers 200 to each.
async fn counting_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            });
        }
    });
    (addr, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_another_origin_are_not_followed() {
    let (other, other_hits) = counting_server().await;
    let env = Env::start("http-redirect", |_| vec![]).await;
    let other_origin = format!("http://{other}");
    let admin_key = env.sim.info.trend_admin_api_key();

    // 302 on the role lookup.
    let first = env.fault(json!({"pathPrefix": "/api/roles", "method": "POST", "status": 302,
        "location": format!("{other_origin}/api/roles/search")}));
    env.apply("moved").await;
    let message = env.wait_ready_condition("moved", "False", "VendorError", "HTTP 302").await;
    assert!(message.contains(&format!("redirect to {other_origin} not followed")), "{message}");

    // 307 (which would repeat the POST and its body) on the key create.
    env.fault(json!({"pathPrefix": "/api/apikeys", "method": "POST", "status": 307,
        "location": format!("{other_origin}/api/apikeys")}));
    env.sim.faults.remove(first);
    let message = env.wait_ready_condition("moved", "False", "VendorError", "HTTP 307").await;
    assert!(message.contains(&format!("redirect to {other_origin} not followed")), "{message}");

    env.sim.faults.clear();
    env.wait_ready("moved").await;
    assert_eq!(other_hits.load(Ordering::SeqCst), 0, "the other origin received nothing");
    assert_eq!(env.live_keys_of("moved").await, 1);
    support::assert_no_leaks(&env.ns, &env.op, &[admin_key]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_body_is_refused_with_bounded_memory() {
    let env = Env::start("http-body", |_| vec![]).await;
    env.apply("warmup").await;
    env.wait_ready("warmup").await;
    let before = env.operator_peak_rss_kib();

    // 50 MiB answer to the role lookup of a role not cached yet.
    env.fault(json!({"pathPrefix": "/api/roles", "method": "POST", "status": 200, "bodyBytes": 52_428_800}));
    let obj = {
        let mut o = serde_json::to_value(workload_api_key(&env.sim, "huge")).unwrap();
        o["spec"]["role"]["name"] = json!("Full Access");
        serde_json::from_value::<WorkloadApiKey>(o).unwrap()
    };
    env.waks().patch("huge", &PatchParams::apply("test").force(), &Patch::Apply(&obj)).await.unwrap();
    let message = env.wait_ready_condition("huge", "False", "VendorError", "response body larger than 1 MiB").await;
    assert!(message.contains("search roles"), "{message}");
    // A few more attempts (backoff 5 s, 10 s) read and drop a megabyte each.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after = env.operator_peak_rss_kib();
    eprintln!("operator VmHWM: {before} KiB before the 50 MiB bodies, {after} KiB after");
    assert!(after < 100 * 1024, "peak RSS {after} KiB");

    env.sim.faults.clear();
    env.wait_ready("huge").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_body_echoing_the_admin_key_leaks_nowhere() {
    let env = Env::start("http-echo", |_| vec![]).await;
    let admin_key = env.sim.info.trend_admin_api_key();
    env.fault(json!({"pathPrefix": "/api/roles", "method": "POST", "status": 400, "echoHeader": "api-secret-key"}));
    env.apply("echo").await;
    let message = env.wait_ready_condition("echo", "False", "VendorError", "<redacted>").await;
    assert!(message.contains("it carried api-secret-key: <redacted>"), "{message}");
    // Let a retry or two happen, so several error paths (logs, Events, metrics) have seen the body.
    tokio::time::sleep(Duration::from_secs(6)).await;

    let whole = serde_json::to_string(&env.waks().get("echo").await.unwrap()).unwrap();
    assert!(!whole.contains(&admin_key), "the admin key is in the resource");
    let secret_part = admin_key.rsplit(':').next().unwrap();
    assert!(!whole.contains(secret_part), "the admin key's secret part is in the resource");
    assert!(!env.op.logs().contains(secret_part), "the admin key is in the operator's trace log");
    support::assert_no_leaks(&env.ns, &env.op, std::slice::from_ref(&admin_key)).await;

    env.sim.faults.clear();
    env.wait_ready("echo").await;
}

/// A CONNECT proxy on loopback that records each tunnel's target `host:port`.
async fn connect_proxy() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tunnels = Arc::new(Mutex::new(Vec::new()));
    let seen = tunnels.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let _ = tunnel(client, seen).await;
            });
        }
    });
    (addr, tunnels)
}

async fn tunnel(mut client: TcpStream, seen: Arc<Mutex<Vec<String>>>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
        client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n").await?;
        return Ok(());
    };
    // Loopback only: this proxy never reaches beyond the machine.
    let Ok(addr) = target.parse::<SocketAddr>() else {
        client.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n").await?;
        return Ok(());
    };
    if !addr.ip().is_loopback() {
        client.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n").await?;
        return Ok(());
    }
    seen.lock().unwrap().push(target.to_owned());
    let mut upstream = TcpStream::connect(addr).await?;
    client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_from_the_environment_carries_vendor_traffic() {
    let (proxy, tunnels) = connect_proxy().await;
    let env = Env::start("http-proxy", |_| vec![("HTTPS_PROXY".into(), format!("http://{proxy}"))]).await;
    env.apply("proxied").await;
    env.wait_ready("proxied").await;
    let vendor = host_port(&env.sim.info.trend_url());
    let seen = tunnels.lock().unwrap().clone();
    assert!(seen.contains(&vendor), "a tunnel to the vendor {vendor}; the proxy saw {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_sends_vendor_traffic_direct() {
    let (proxy, tunnels) = connect_proxy().await;
    let mut vendor = String::new();
    let env = Env::start("http-noproxy", |sim| {
        vendor = host_port(&sim.info.trend_url());
        // The vendor by host:port, lower-case variable names. (Out of the cluster, kube-rs proxies the
        // API server's traffic too; its own NO_PROXY reading is not ours to test, so only the vendor's
        // address is checked below.)
        vec![("https_proxy".into(), format!("http://{proxy}")), ("no_proxy".into(), vendor.clone())]
    })
    .await;
    env.apply("direct").await;
    env.wait_ready("direct").await;
    let seen = tunnels.lock().unwrap().clone();
    assert!(!seen.contains(&vendor), "no tunnel to the vendor {vendor}; the proxy saw {seen:?}");
    eprintln!("with no_proxy={vendor} the proxy saw {seen:?}");
}
