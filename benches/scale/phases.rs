//! The phases: throughput (operator vs plain client), restart, vendor rate, memory; the peer is in `peer.rs`.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kube::Client;
use workload_key_operator::{clients::DEFAULT_REQUESTS_PER_MINUTE, sim::RunningSim};

use crate::{
    Phase, Plan,
    drivers::{
        NO_CLIENT_LIMIT, keep_log, names, namespace_for, ready_gauges, restart_operator, run_operator,
        run_operator_with_timeout, run_plain, sim_default, start_operator, start_sim, wait_operator_ready,
    },
    measure::{
        ProcSampler, Timing, apiserver_requests, live_keys_of, max_in_window, per_resource, proc_status_kib,
        series_text, total, vendor_delta, window_bounds,
    },
    results::{Machine, Memory, MemoryStep, RateRun, Restart, Results, Rotation, Round, Throughput},
    support::{self, TestNamespace, operator::Operator},
};

pub async fn run(plan: &Plan) -> Results {
    let client = support::client().await;
    support::operator::install_crds(&client).await;
    let mut results = Results { machine: Machine::read(&client).await, ..Default::default() };
    // Namespaces stay until the control plane goes away with this process: deleting them would make the
    // namespace controller work (and, with no operator left to clear finalizers, never finish) during later phases.
    let mut keep: Vec<TestNamespace> = Vec::new();

    if plan.runs(Phase::Throughput) {
        let sim = start_sim(0).await;
        let (throughput, mut op, ns) = throughput(plan, &client, &sim, &mut keep).await;
        results.throughput = Some(throughput);
        if plan.runs(Phase::Restart) {
            results.restart = Some(restart(&mut op, &ns, &client, &sim, plan.n, plan.restart, 500).await);
            keep_log(&op, "throughput-and-restart");
        }
        op.kill();
        keep.push(ns);
    }
    if plan.runs(Phase::Rate) {
        results.rate = Some(rate(plan, &sim_default().await, &mut keep).await);
    }
    if plan.runs(Phase::Memory) {
        let sim = start_sim(0).await;
        results.memory = Some(memory(plan, &client, &sim, &mut keep).await);
    }
    if plan.runs(Phase::Peer) {
        results.peer = Some(crate::peer::peer(plan, &client, &results, &mut keep).await);
    }
    std::mem::forget(keep);
    results
}

/// `--rounds` times: the plain client (writes only), the operator, the plain client with the operator's reads
/// too; each in fresh namespaces. Returns the last round's operator and namespace for the restart phase.
pub async fn throughput(
    plan: &Plan,
    client: &Client,
    sim: &RunningSim,
    keep: &mut Vec<TestNamespace>,
) -> (Throughput, Operator, TestNamespace) {
    let n = plan.n;
    let names = names(n);
    // Warm-up: API-server caches for the CRD, connections, etcd, Go heap. Not measured.
    let warm = namespace_for("bench-warm", sim).await;
    run_plain(&warm, sim, &names[..n.min(200)], plan.create_concurrency, false).await;
    keep.push(warm);

    let mut rounds = Vec::new();
    let mut last = None;
    for round in 1..=plan.rounds {
        eprintln!("bench: round {round}/{}: plain client, {n} resources (writes only)", plan.rounds);
        let base_ns = namespace_for("bench-plain", sim).await;
        let before = apiserver_requests(client).await;
        let baseline = run_plain(&base_ns, sim, &names, plan.create_concurrency, false).await;
        let baseline_requests = per_resource(&before, &apiserver_requests(client).await, n);
        keep.push(base_ns);

        eprintln!("bench: round {round}/{}: operator, {n} resources", plan.rounds);
        let op_ns = namespace_for("bench-operator", sim).await;
        let op = start_operator(&op_ns.name, NO_CLIENT_LIMIT);
        wait_operator_ready(&op).await;
        let vendor_before = sim.counts.snapshot();
        let before = apiserver_requests(client).await;
        let sampler = ProcSampler::start(op.pid());
        let operator = run_operator(&op_ns, sim, &names, plan.create_concurrency).await;
        let sample = sampler.stop();
        let (sockets, api_connections, series) =
            (sample.max_sockets, sample.max_api_connections, series_text(&sample.series));
        let operator_requests = per_resource(&before, &apiserver_requests(client).await, n);
        let vendor = vendor_delta(&vendor_before, &sim.counts.snapshot());
        let live_keys = live_keys_of(sim, &op_ns.name);
        let hwm_kib = proc_status_kib(op.pid(), "VmHWM");
        keep_log(&op, &format!("throughput-{round}"));

        eprintln!(
            "bench: round {round}/{}: plain client, {n} resources (writes and the operator's reads)",
            plan.rounds
        );
        let reads_ns = namespace_for("bench-plain-reads", sim).await;
        let before = apiserver_requests(client).await;
        let baseline_reads = run_plain(&reads_ns, sim, &names, plan.create_concurrency, true).await;
        let reads_requests = per_resource(&before, &apiserver_requests(client).await, n);
        keep.push(reads_ns);

        let mut requests: BTreeMap<String, [f64; 3]> = BTreeMap::new();
        for (i, m) in [&operator_requests, &baseline_requests, &reads_requests].into_iter().enumerate() {
            for (k, v) in m {
                requests.entry(k.clone()).or_default()[i] = *v;
            }
        }
        rounds.push(Round {
            operator,
            baseline,
            baseline_reads,
            vendor,
            requests,
            hwm_kib,
            sockets,
            api_connections,
            series,
            live_keys,
        });
        if let Some((mut old_op, old_ns)) = last.replace((op, op_ns)) {
            Operator::kill(&mut old_op);
            keep.push(old_ns);
        }
    }
    let (op, op_ns) = last.expect("at least one round");
    eprintln!("bench: rotating the last round's {n} resources");
    let rotation = Some(rotation(client, &op, &op_ns, n, plan.create_concurrency).await);
    (Throughput { n, rounds, rotation }, op, op_ns)
}

/// Rotates every resource of `ns` at once by the `workloadkeys.io/rotate` annotation, `concurrency` patches in
/// flight, and waits until each is Ready with its new key: the time, and the API-server requests per rotation.
async fn rotation(client: &Client, op: &Operator, ns: &TestNamespace, n: usize, concurrency: usize) -> Rotation {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{ListParams, Patch, PatchParams};
    use workload_key_operator::api::WorkloadApiKey;
    let api: kube::Api<WorkloadApiKey> = ns.api();
    let names: Vec<String> = api
        .list_metadata(&ListParams::default())
        .await
        .map_or_else(|_| Vec::new(), |l| l.items.into_iter().filter_map(|m| m.metadata.name).collect());
    let stamp = format!("bench-{}", std::process::id());
    let before = apiserver_requests(client).await;
    let sampler = ProcSampler::start(op.pid());
    let started = Instant::now();
    let patch = serde_json::json!({"metadata": {"annotations": {"workloadkeys.io/rotate": stamp}}});
    let patched: Vec<()> = futures::stream::iter(names.iter())
        .map(|name| {
            let (api, patch) = (api.clone(), patch.clone());
            async move { api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop) }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
        .unwrap_or_default();
    let rotated = |w: &WorkloadApiKey| {
        w.status.as_ref().is_some_and(|s| {
            s.rotate_annotation.as_deref() == Some(stamp.as_str())
                && s.observed_generation == w.metadata.generation
                && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                && matches!((&s.last_rotated_at, &s.rotate_annotation_at), (Some(done), Some(asked)) if done.0 >= asked.0)
        })
    };
    let deadline = started + Duration::from_secs(900);
    let mut done = 0;
    while Instant::now() < deadline {
        done = api.list(&ListParams::default()).await.map_or(0, |l| l.items.iter().filter(|w| rotated(w)).count());
        if done >= names.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    // The last statuses' writes land before the counters are read.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sample = sampler.stop();
    let requests = per_resource(&before, &apiserver_requests(client).await, n);
    eprintln!("bench: {done}/{} rotated ({} patched) in {elapsed:?}", names.len(), patched.len());
    Rotation {
        n,
        elapsed,
        rotated: done,
        requests,
        sockets: sample.max_sockets,
        api_connections: sample.max_api_connections,
        series: series_text(&sample.series),
    }
}

/// Restarts the operator with every resource Ready; counts vendor requests until its first reconcile of each
/// resource is done and over the whole `observe` period, and the API-server requests it made.
pub async fn restart(
    op: &mut Operator,
    ns: &TestNamespace,
    client: &Client,
    sim: &RunningSim,
    n: usize,
    observe: Duration,
    poll_ms: u64,
) -> Restart {
    eprintln!("bench: restarting the operator with {n} resources Ready, watching vendor calls for {observe:?}");
    op.kill();
    let vendor_before = sim.counts.snapshot();
    let api_before = apiserver_requests(client).await;
    let started = Instant::now();
    restart_operator(op, NO_CLIENT_LIMIT);
    let sampler = ProcSampler::start(op.pid());
    wait_operator_ready(op).await;
    let mut settled = None;
    let mut vendor_at_settled = 0;
    while started.elapsed() < observe.max(Duration::from_secs(600)) {
        tokio::time::sleep(Duration::from_millis(poll_ms)).await;
        if ready_gauges(op, &ns.name).await >= n {
            settled = Some(started.elapsed());
            vendor_at_settled = total(&vendor_delta(&vendor_before, &sim.counts.snapshot()));
            break;
        }
    }
    if let Some(rest) = observe.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let sockets = sampler.stop().max_sockets;
    let vendor = vendor_delta(&vendor_before, &sim.counts.snapshot());
    let api = per_resource(&api_before, &apiserver_requests(client).await, n);
    Restart { n, observed: started.elapsed(), settled, vendor_at_settled, vendor, api_requests: api, sockets }
}

/// The operator at the default client limit, on more keys than one minute's budget.
pub async fn rate(plan: &Plan, sim: &RunningSim, keep: &mut Vec<TestNamespace>) -> RateRun {
    let n = plan.rate_n;
    let limit = DEFAULT_REQUESTS_PER_MINUTE;
    eprintln!("bench: vendor rate, {n} resources at the default limit of {limit}/min");
    let ns = namespace_for("bench-rate", sim).await;
    let op = start_operator(&ns.name, limit);
    wait_operator_ready(&op).await;
    // Vendor request totals every 50 ms: brackets the requests in any 60 s window.
    let samples = Arc::new(Mutex::new(Vec::<(Instant, u64)>::new()));
    let sampler = {
        let (samples, counts) = (samples.clone(), sim.counts.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                let total = counts.total("trend", "");
                samples.lock().unwrap().push((Instant::now(), total));
            }
        })
    };
    let timeout = Duration::from_secs(180 + (n as u64 * 60 * 2) / u64::from(limit));
    let timing = run_operator_with_timeout(&ns, sim, &names(n), plan.create_concurrency, timeout).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sampler.abort();
    let samples = samples.lock().unwrap().clone();
    let (window_low, window_high) = window_bounds(&samples, Duration::from_secs(60));
    // Exact: the simulator stamps every key it creates (ms).
    let mut created: Vec<i64> = sim
        .deep_security
        .keys()
        .into_iter()
        .filter(|k| k.description.as_deref().is_some_and(|d| d.contains("workloadkeys.io/owner=")))
        .map(|k| k.created)
        .collect();
    created.sort_unstable();
    let vendor = vendor_delta(&BTreeMap::new(), &sim.counts.snapshot());
    let rejected_429 = sim
        .counts
        .snapshot()
        .get("trend")
        .map(|m| m.values().map(|c| c.by_status.get(&429).copied().unwrap_or(0)).sum())
        .unwrap_or(0);
    keep_log(&op, "rate");
    keep.push(ns);
    RateRun {
        n,
        limit,
        timing,
        vendor,
        creates_max_60s: max_in_window(&created, 60_000),
        total_max_60s: (window_low, window_high),
        throttled: sim.deep_security.throttled_count(),
        rejected_429,
    }
}

/// Peak RSS of the operator while it takes `rss_n` resources to Ready, then after a restart with all Ready.
pub async fn memory(plan: &Plan, client: &Client, sim: &RunningSim, keep: &mut Vec<TestNamespace>) -> Memory {
    let n = plan.rss_n;
    eprintln!("bench: memory, {n} resources");
    let ns = namespace_for("bench-memory", sim).await;
    let mut op = start_operator(&ns.name, NO_CLIENT_LIMIT);
    wait_operator_ready(&op).await;
    let vendor_before = sim.counts.snapshot();
    // With no resource yet (the watches listed, the provider checked), then at each step of the table.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut steps =
        vec![MemoryStep { n: 0, rss: proc_status_kib(op.pid(), "VmRSS"), hwm: proc_status_kib(op.pid(), "VmHWM") }];
    let api_before = apiserver_requests(client).await;
    let sampler = ProcSampler::start(op.pid());
    let all = names(n);
    let mut timings = Vec::new();
    for size in memory_steps(n) {
        let from = steps.last().map_or(0, |s| s.n);
        let timeout = Duration::from_secs(900.max((size - from) as u64 / 4));
        timings.push(run_operator_with_timeout(&ns, sim, &all[from..size], plan.create_concurrency, timeout).await);
        steps.push(MemoryStep {
            n: size,
            rss: proc_status_kib(op.pid(), "VmRSS"),
            hwm: proc_status_kib(op.pid(), "VmHWM"),
        });
    }
    let timing = Timing::sum(&timings);
    let sockets = sampler.stop().max_sockets;
    let api_requests = per_resource(&api_before, &apiserver_requests(client).await, n);
    let vendor = vendor_delta(&vendor_before, &sim.counts.snapshot());
    let live_keys = live_keys_of(sim, &ns.name);
    let hwm_create = proc_status_kib(op.pid(), "VmHWM");
    keep_log(&op, "memory");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_idle = proc_status_kib(op.pid(), "VmRSS");
    let restart = restart(&mut op, &ns, client, sim, n, plan.restart, 2_000).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let hwm_restart = proc_status_kib(op.pid(), "VmHWM");
    let rss_restart = proc_status_kib(op.pid(), "VmRSS");
    keep_log(&op, "memory-and-restart");
    op.kill();
    keep.push(ns);
    Memory {
        n,
        timing,
        vendor,
        live_keys,
        sockets,
        api_requests,
        hwm_create,
        rss_idle,
        hwm_restart,
        rss_restart,
        restart,
        steps,
    }
}

/// The sizes the memory table is read at: 1,000 and 3,000 on the way to `n`, and `n`.
fn memory_steps(n: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = [1_000, 3_000].into_iter().filter(|s| *s < n).collect();
    sizes.push(n);
    sizes
}
