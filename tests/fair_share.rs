//! A fair share of the vendor's budget between namespaces, end to end: a real API server, the operator as its own
//! process watching two namespaces at a client limit of 60 requests a minute, the Trend simulator counting when
//! every request arrived.
#![cfg(feature = "sim")]

mod support;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
};
use support::{
    TestNamespace, eventually,
    sim_env::{self, ADMIN_SECRET, Env, TREND_PROVIDER},
};
use workload_key_operator::api::{KeyProvider, WorkloadApiKey};

/// The operator's client limit for the run (`WKO_VENDOR_RATE_LIMIT`).
const RATE: usize = 60;
/// Namespace A's flood.
const FLOOD: usize = 300;
/// The target: B's key is Ready within this, however large A's flood.
const B_TARGET: Duration = Duration::from_secs(15);

async fn create_all(api: &Api<WorkloadApiKey>, names: &[String]) {
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let api = api.clone();
            async move {
                let obj = sim_env::wak(&name, sim_env::wak_spec("fair share"));
                api.create(&PostParams::default(), &obj).await.expect("create WorkloadApiKey");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

fn ready_at(w: &WorkloadApiKey) -> Option<Timestamp> {
    let c = w.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready")?;
    (c.status == "True").then_some(c.last_transition_time.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_namespaces_flood_does_not_starve_anothers_first_key() {
    // Namespace A (the simulator, its providers, the operator), and B with a provider of its own on the same
    // vendor endpoint: one rate limiter, one budget between them.
    let env = Env::start("fair-a").await;
    let b = TestNamespace::new("fair-b").await;
    sim_env::put_sim_secrets(&b, &env.sim).await;
    sim_env::apply_key_provider(
        &b.client,
        &b.name,
        TREND_PROVIDER,
        sim_env::trend_provider_spec(&env.sim, ADMIN_SECRET),
    )
    .await;
    let mut op = env.op;
    let both = format!("{},{}", env.ns.name, b.name);
    op.restart_with_env(&[
        ("WKO_WATCH_NAMESPACE", both.as_str()),
        ("WKO_VENDOR_RATE_LIMIT", &RATE.to_string()),
        ("WKO_LOG_LEVEL", "info"),
    ]);
    sim_env::wait_provider_ready(&Api::<KeyProvider>::namespaced(b.client.clone(), &b.name), TREND_PROVIDER).await;
    env.sim.counts.reset();

    // A: 300 keys at once.
    let a_api: Api<WorkloadApiKey> = env.ns.api();
    let names: Vec<String> = (0..FLOOD).map(|i| format!("flood-{i:03}")).collect();
    let a_started = Timestamp::now();
    create_all(&a_api, &names).await;
    // A's flood is waiting for the budget: more of its creates reached the vendor than the burst lets through.
    eventually(Duration::from_secs(60), "A's flood under way", || async {
        (env.sim.counts.total("trend", "POST /api/apikeys") >= (RATE / 10 + 3) as u64).then_some(())
    })
    .await;

    // B: one key, Ready within 15 s.
    let b_api: Api<WorkloadApiKey> = b.api();
    let b_created = Instant::now();
    b_api.create(&PostParams::default(), &sim_env::wak("first", sim_env::wak_spec("B's first key"))).await.unwrap();
    let b_wak = eventually(B_TARGET + Duration::from_secs(45), "B's key Ready", || async {
        b_api.get("first").await.ok().filter(|w| ready_at(w).is_some())
    })
    .await;
    let b_took = b_created.elapsed();
    let a_done_then =
        a_api.list(&ListParams::default()).await.unwrap().items.iter().filter(|w| ready_at(w).is_some()).count();
    eprintln!("B's key Ready {:.1} s after its create, with {a_done_then} of A's {FLOOD} Ready", b_took.as_secs_f64());
    assert!(b_took <= B_TARGET, "B's key took {b_took:?} (target {B_TARGET:?})");
    assert!(a_done_then < FLOOD / 2, "A's flood was still under way ({a_done_then} of {FLOOD} Ready)");

    // A completes at the budget's pace: 300 keys at 60 a minute take five minutes and more.
    let a_all = eventually(Duration::from_secs(600), "all of A's keys Ready", || async {
        let items = a_api.list(&ListParams::default()).await.ok()?.items;
        (items.len() == FLOOD && items.iter().all(|w| ready_at(w).is_some())).then_some(items)
    })
    .await;
    let a_last = a_all.iter().filter_map(ready_at).max().unwrap();
    let a_took = a_last.duration_since(a_started);
    let requests = env.sim.counts.total("trend", "");
    let most = env.sim.counts.max_in_window("trend", 60_000);
    let metrics = op.metrics().await;
    let deferred = metrics
        .lines()
        .find(|l| l.starts_with("workload_key_operator_reconciles_deferred_total{kind=\"WorkloadApiKey\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("0")
        .to_owned();
    eprintln!(
        "A's {FLOOD} keys Ready {:.1} s after the first create; {requests} vendor requests, at most {most} in any \
         60 s window (limit {RATE}); {deferred} WorkloadApiKey reconciles deferred",
        a_took.as_secs_f64()
    );

    // Exactly one key per resource at the vendor, and none other of ours.
    let keys = env.sim.deep_security.keys();
    let now = Timestamp::now().as_millisecond();
    let mut per_uid: HashMap<String, usize> = HashMap::new();
    for k in keys.iter().filter(|k| k.is_live(now)) {
        // The owner marker `[workloadkeys.io/owner=<uid>.<nonce>]` ends the description.
        let owner = k.description.as_deref().and_then(|d| d.rsplit_once("[workloadkeys.io/owner=")).map(|(_, o)| o);
        if let Some(uid) = owner.and_then(|o| o.split('.').next()) {
            *per_uid.entry(uid.to_owned()).or_default() += 1;
        }
    }
    for w in a_all.iter().chain([&b_wak]) {
        assert_eq!(per_uid.get(&w.uid().unwrap()), Some(&1), "{} has exactly one key", w.name_any());
    }
    assert_eq!(per_uid.len(), FLOOD + 1, "no key for anything else");
    let creates = env.sim.counts.snapshot()["trend"]["POST /api/apikeys"].total;
    assert_eq!(creates, (FLOOD + 1) as u64, "one create per key");

    // The budget held: never more than 60 requests in any 60 s, and it was what set A's pace.
    assert!(most <= RATE, "{most} vendor requests in one 60 s window (limit {RATE})");
    let paced = Duration::from_secs(60) * (FLOOD - RATE / 10) as u32 / (RATE - RATE / 10) as u32;
    assert!(Duration::try_from(a_took).unwrap() >= paced, "A took {a_took:?}: the budget was not binding");
    assert!(deferred.parse::<f64>().unwrap() > 0.0, "A's surplus reconciles were turned away");
    drop(op);
}
