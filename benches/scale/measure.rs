//! Measurements: the operator process (peak RSS, sockets), vendor requests from the simulator's counters,
//! API-server requests from its metrics, and timings.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::jiff::Timestamp;
use workload_key_operator::sim::{self, RunningSim};

pub const MIB: f64 = 1024.0;

/// `VmHWM` (peak resident set) or `VmRSS` of a process, in KiB.
pub fn proc_status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Open sockets of a process (its connections to the API server and the vendor).
pub fn sockets_of(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    fds.filter_map(Result::ok)
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")))
        .count()
}

/// The API server's port, from the benchmark's kubeconfig.
fn api_server_port() -> Option<u16> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&crate::support::control_plane().kubeconfig).ok()?;
    let server = kubeconfig.clusters.first()?.cluster.as_ref()?.server.clone()?;
    url::Url::parse(&server).ok()?.port_or_known_default()
}

/// Established TCP connections of process `pid` to the local port `port` (its connections to the API server):
/// its socket inodes matched against the kernel's TCP tables.
pub fn connections_to(pid: u32, port: u16) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    let inodes: std::collections::HashSet<String> = fds
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| t.to_string_lossy().strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
        .collect();
    let port = format!("{port:04X}");
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok())
        .flat_map(|table| table.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // rem_address is field 2 (`ADDR:PORT` in hex), st field 3 (01 = established), inode field 9.
            f.len() > 9
                && f[2].rsplit_once(':').is_some_and(|(_, p)| p == port)
                && f[3] == "01"
                && inodes.contains(f[9])
        })
        .count()
}

/// Samples a process's open sockets, and its connections to the API server, every 250 ms while a phase runs;
/// keeps the most of each and one sample a second.
pub struct ProcSampler {
    pub max_sockets: Arc<AtomicUsize>,
    max_api: Arc<AtomicUsize>,
    series: Arc<std::sync::Mutex<Vec<(u64, usize, usize)>>>,
    pub task: tokio::task::JoinHandle<()>,
}

pub struct ProcSample {
    pub max_sockets: usize,
    /// Most connections to the API server at once.
    pub max_api_connections: usize,
    /// (second of the phase, sockets, API-server connections), one a second.
    pub series: Vec<(u64, usize, usize)>,
}

impl ProcSampler {
    pub fn start(pid: Option<u32>) -> Self {
        let (max_sockets, max_api) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let series = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (max, api, out) = (max_sockets.clone(), max_api.clone(), series.clone());
        let task = tokio::spawn(async move {
            let Some(pid) = pid else { return };
            let port = api_server_port();
            let started = Instant::now();
            let mut last_second = None;
            loop {
                let sockets = sockets_of(pid);
                let conns = port.map_or(0, |p| connections_to(pid, p));
                max.fetch_max(sockets, Ordering::Relaxed);
                api.fetch_max(conns, Ordering::Relaxed);
                let second = started.elapsed().as_secs();
                if last_second != Some(second) {
                    last_second = Some(second);
                    out.lock().expect("series").push((second, sockets, conns));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Self { max_sockets, max_api, series, task }
    }

    pub fn stop(self) -> ProcSample {
        self.task.abort();
        let series = std::mem::take(&mut *self.series.lock().expect("series"));
        ProcSample {
            max_sockets: self.max_sockets.load(Ordering::Relaxed),
            max_api_connections: self.max_api.load(Ordering::Relaxed),
            series,
        }
    }
}

/// A sampled series as text: `second: sockets/API-server connections`, one entry every `every` seconds (the most
/// of each within it) and at most 24 entries.
pub fn series_text(series: &[(u64, usize, usize)]) -> String {
    let last = series.last().map_or(0, |s| s.0);
    let every = (last / 24 + 1).max(5);
    let mut out: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    for (t, s, a) in series {
        let e = out.entry(t / every * every).or_default();
        *e = (e.0.max(*s), e.1.max(*a));
    }
    out.iter().map(|(t, (s, a))| format!("{t}s {s}/{a}")).collect::<Vec<_>>().join(", ")
}

pub type VendorCounts = BTreeMap<String, u64>;

/// Requests the Trend simulator answered between two snapshots, by `"METHOD /path"` (and status when not 200).
pub fn vendor_delta(
    before: &BTreeMap<String, BTreeMap<String, sim::counts::EndpointCount>>,
    after: &BTreeMap<String, BTreeMap<String, sim::counts::EndpointCount>>,
) -> VendorCounts {
    let empty = BTreeMap::new();
    let b = before.get("trend").unwrap_or(&empty);
    let mut out = BTreeMap::new();
    for (endpoint, count) in after.get("trend").unwrap_or(&empty) {
        for (status, total) in &count.by_status {
            let prev = b.get(endpoint).and_then(|c| c.by_status.get(status)).copied().unwrap_or(0);
            if *total > prev {
                let key = if *status == 200 { endpoint.clone() } else { format!("{endpoint} → {status}") };
                out.insert(key, total - prev);
            }
        }
    }
    out
}

pub fn total(v: &VendorCounts) -> u64 {
    v.values().sum()
}

/// Keys at the vendor that can still authenticate, named for resources of `namespace` (default key names are
/// `<namespace>-<name>`): one per resource when nothing leaked.
pub fn live_keys_of(sim: &RunningSim, namespace: &str) -> usize {
    let prefix = format!("{namespace}-");
    let now = Timestamp::now().as_millisecond();
    sim.deep_security.keys().iter().filter(|k| k.key_name.starts_with(&prefix) && k.is_live(now)).count()
}

/// Successful key creates.
pub fn creates_of(v: &VendorCounts) -> u64 {
    v.get("POST /api/apikeys").copied().unwrap_or(0)
}

pub use crate::support::api_requests::{
    ApiRequests, apiserver_requests, apiserver_requests_of, per_resource, prometheus_labels,
};

/// Most timestamps (ms) in any half-open window of `window_ms`.
pub fn max_in_window(sorted: &[i64], window_ms: i64) -> usize {
    let (mut best, mut lo) = (0, 0);
    for hi in 0..sorted.len() {
        while sorted[hi] - sorted[lo] >= window_ms {
            lo += 1;
        }
        best = best.max(hi + 1 - lo);
    }
    best
}

/// From (time, running total) samples: the most requests in any `window`, bracketed. Lower bound: sample pairs
/// at most `window` apart; upper bound: pairs at most `window` plus twice the largest sampling gap apart.
pub fn window_bounds(samples: &[(Instant, u64)], window: Duration) -> (u64, u64) {
    let gap = samples.windows(2).map(|w| w[1].0 - w[0].0).max().unwrap_or_default();
    let best = |span: Duration| {
        let (mut best, mut lo) = (0, 0);
        for hi in 0..samples.len() {
            while samples[hi].0 - samples[lo].0 > span {
                lo += 1;
            }
            best = best.max(samples[hi].1 - samples[lo].1);
        }
        best
    };
    (best(window), best(window + 2 * gap))
}

#[derive(Debug, Clone, Default)]
pub struct Timing {
    pub n: usize,
    pub ready: usize,
    pub failed: usize,
    /// First create to last Ready.
    pub elapsed: Duration,
    /// First create to the last create's answer (for kubectl, its exit): the creates alone, the floor under
    /// `elapsed`.
    pub creates_done: Duration,
    /// Create to Ready, per resource.
    pub p50: Duration,
    pub p95: Duration,
    pub max: Duration,
}

impl Timing {
    pub fn of(
        n: usize,
        t0: Instant,
        created: &HashMap<String, Instant>,
        ready: &HashMap<String, Instant>,
        failed: usize,
    ) -> Self {
        let last = ready.values().max().copied().unwrap_or(t0);
        let last_created = created.values().max().copied().unwrap_or(t0);
        let mut lat: Vec<Duration> =
            ready.iter().filter_map(|(k, r)| created.get(k).map(|c| r.saturating_duration_since(*c))).collect();
        lat.sort_unstable();
        let pct =
            |p: f64| lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or_default();
        Timing {
            n,
            ready: ready.len(),
            failed,
            elapsed: last - t0,
            creates_done: last_created.saturating_duration_since(t0),
            p50: pct(0.5),
            p95: pct(0.95),
            max: lat.last().copied().unwrap_or_default(),
        }
    }

    /// Runs one after another, as one: counts and times added, the percentiles of the slowest run.
    pub fn sum(runs: &[Timing]) -> Self {
        let most = |f: fn(&Timing) -> Duration| runs.iter().map(f).max().unwrap_or_default();
        Timing {
            n: runs.iter().map(|t| t.n).sum(),
            ready: runs.iter().map(|t| t.ready).sum(),
            failed: runs.iter().map(|t| t.failed).sum(),
            elapsed: runs.iter().map(|t| t.elapsed).sum(),
            creates_done: runs.iter().map(|t| t.creates_done).sum(),
            p50: most(|t| t.p50),
            p95: most(|t| t.p95),
            max: most(|t| t.max),
        }
    }

    pub fn complete(&self) -> bool {
        self.ready >= self.n && self.failed == 0
    }

    pub fn rate(&self) -> f64 {
        self.ready as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}
