//! What each phase measured, and the machine it ran on.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use k8s_openapi::jiff::Timestamp;
use kube::Client;

use crate::{
    drivers::Creator,
    measure::{ApiRequests, MIB, Timing, VendorCounts},
    peer::ESO_DEFAULT_CONCURRENT,
    support,
};

#[derive(Default)]
pub struct Results {
    pub machine: Machine,
    pub throughput: Option<Throughput>,
    pub restart: Option<Restart>,
    pub rate: Option<RateRun>,
    pub memory: Option<Memory>,
    pub peer: Option<Peer>,
}

pub struct Throughput {
    pub n: usize,
    pub rounds: Vec<Round>,
    pub rotation: Option<Rotation>,
}

/// One round of the throughput phase.
pub struct Round {
    pub operator: Timing,
    /// The plain client, the operator's writes.
    pub baseline: Timing,
    /// The plain client, the operator's writes and reads (informational).
    pub baseline_reads: Timing,
    pub vendor: VendorCounts,
    /// Per resource: operator, plain client (writes), plain client (writes + reads).
    pub requests: BTreeMap<String, [f64; 3]>,
    /// Operator peak RSS.
    pub hwm_kib: Option<u64>,
    /// Most sockets the operator had open at once (connections to the API server and the vendor).
    pub sockets: usize,
    /// Most connections to the API server it had at once.
    pub api_connections: usize,
    /// Its sockets / API-server connections over the round ([`crate::measure::series_text`]).
    pub series: String,
    /// Live vendor keys of the operator's resources afterwards.
    pub live_keys: usize,
}

/// Every resource of the last throughput round rotated at once (the `workloadkeys.io/rotate` annotation).
pub struct Rotation {
    pub n: usize,
    /// First annotation to the last resource Ready with its new key.
    pub elapsed: Duration,
    pub rotated: usize,
    /// Per rotation, the user's annotation included.
    pub requests: ApiRequests,
    pub sockets: usize,
    pub api_connections: usize,
    pub series: String,
}

impl Round {
    pub fn ratio(&self) -> f64 {
        self.operator.elapsed.as_secs_f64() / self.baseline.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn complete(&self) -> bool {
        self.operator.complete() && self.baseline.complete()
    }
}

impl Throughput {
    /// The round whose operator time is the median (the lower one of an even count), with its index.
    pub fn median_operator_round(&self) -> Option<(usize, &Round)> {
        let mut r: Vec<(usize, &Round)> = self.rounds.iter().enumerate().collect();
        r.sort_by_key(|a| a.1.operator.elapsed);
        r.get(r.len().saturating_sub(1) / 2).copied()
    }

    /// Median over the rounds of operator time / plain-client time.
    pub fn median_ratio(&self) -> f64 {
        let mut r: Vec<f64> = self.rounds.iter().map(Round::ratio).collect();
        r.sort_by(f64::total_cmp);
        match r.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => r[n / 2],
            n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
        }
    }

    pub fn creates(&self) -> VendorCounts {
        let mut all = VendorCounts::new();
        for r in &self.rounds {
            for (k, v) in &r.vendor {
                *all.entry(k.clone()).or_default() += v;
            }
        }
        all
    }
}

pub struct Restart {
    pub n: usize,
    pub observed: Duration,
    pub settled: Option<Duration>,
    pub vendor_at_settled: u64,
    pub vendor: VendorCounts,
    pub api_requests: ApiRequests,
    /// Most sockets the restarted operator had open at once.
    pub sockets: usize,
}

pub struct RateRun {
    pub n: usize,
    pub limit: u32,
    pub timing: Timing,
    pub vendor: VendorCounts,
    pub creates_max_60s: usize,
    pub total_max_60s: (u64, u64),
    pub throttled: u64,
    pub rejected_429: u64,
}

pub struct Memory {
    pub n: usize,
    pub timing: Timing,
    pub vendor: VendorCounts,
    pub live_keys: usize,
    pub sockets: usize,
    /// API-server requests per resource while the resources were created and taken to Ready.
    pub api_requests: ApiRequests,
    pub hwm_create: Option<u64>,
    pub rss_idle: Option<u64>,
    pub hwm_restart: Option<u64>,
    pub rss_restart: Option<u64>,
    pub restart: Restart,
    /// `VmRSS` and `VmHWM` (KiB) with none, then 1,000, 3,000 and all of the resources Ready.
    pub steps: Vec<MemoryStep>,
}

pub struct MemoryStep {
    pub n: usize,
    pub rss: Option<u64>,
    pub hwm: Option<u64>,
}

/// One controller taking `n` resources to Ready in the peer comparison.
pub struct PeerRun {
    /// First create to last Ready; its `creates_done` is what the user waited for the creates alone (the
    /// client's last answer, or kubectl's exit).
    pub timing: Timing,
    /// Peak RSS of the controller process.
    pub hwm_kib: Option<u64>,
    /// Most sockets it had open at once.
    pub sockets: usize,
    /// API-server requests per resource (no watches or lists).
    pub requests: ApiRequests,
}

impl PeerRun {
    pub fn requests_per_resource(&self) -> f64 {
        self.requests.values().sum()
    }
}

/// ESO's run at one size and one `--concurrent`, and what else it showed.
pub struct EsoRun {
    /// The `--concurrent` it ran with.
    pub concurrency: usize,
    pub run: PeerRun,
    /// Addresses other than loopback its sockets were connected to (sampled every second).
    pub foreign: BTreeSet<String>,
    /// `controller_runtime_max_concurrent_reconciles` of its ExternalSecret controller (what it reported).
    pub reported_concurrency: Option<usize>,
    pub reconciles: u64,
    pub reconcile_errors: u64,
    /// Secrets it wrote with a 44-character generated password.
    pub secrets_written: usize,
}

/// Ours and ESO (at each `--concurrent` of the run) at one size, the resources created one way.
pub struct PeerSize {
    pub n: usize,
    pub creator: Creator,
    pub ours: PeerRun,
    /// Which run of ours this is.
    pub ours_from: String,
    /// In the order run (`--eso-concurrent`).
    pub eso: Vec<EsoRun>,
}

impl PeerSize {
    /// The ESO run the ratios are against: at our operator's reconcile concurrency, else the most concurrent one.
    pub fn matched(&self, ours_concurrency: usize) -> Option<&EsoRun> {
        self.eso
            .iter()
            .find(|e| e.concurrency == ours_concurrency)
            .or_else(|| self.eso.iter().max_by_key(|e| e.concurrency))
    }

    /// ESO at its own default (`--concurrent 1`), when that is not the matched run.
    pub fn default_setting(&self, ours_concurrency: usize) -> Option<&EsoRun> {
        let matched = self.matched(ours_concurrency).map(|e| e.concurrency);
        self.eso.iter().find(|e| e.concurrency == ESO_DEFAULT_CONCURRENT && Some(e.concurrency) != matched)
    }
}

/// External Secrets Operator beside ours, same control plane, same run.
pub struct Peer {
    pub version: String,
    /// ESO's command line, `<concurrent>` for each `--concurrent` of the run.
    pub command: String,
    pub refresh_interval: &'static str,
    /// Our operator's reconciles in flight per kind (`--max-concurrent-reconciles`): the matched ESO setting.
    pub ours_concurrency: usize,
    pub sizes: Vec<PeerSize>,
}

#[derive(Default)]
pub struct Machine {
    pub date: String,
    pub commit: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub kubernetes: String,
    pub rustc: String,
}

impl Machine {
    pub async fn read(client: &Client) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let cmd = |prog: &str, args: &[&str]| {
            std::process::Command::new(prog)
                .args(args)
                .current_dir(support::repo_root())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let commit = std::env::var("WKO_BENCH_COMMIT").ok().or_else(|| {
            let head = cmd("git", &["rev-parse", "--short", "HEAD"])?;
            // Only the operator's own code counts: the benchmark and its results file are usually being changed.
            let dirty =
                cmd("git", &["status", "--porcelain", "--untracked-files=no", "--", "src", "Cargo.toml", "Cargo.lock"])
                    .is_some_and(|s| !s.is_empty());
            Some(if dirty { format!("{head} + uncommitted changes in src/") } else { head })
        });
        Machine {
            date: Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string(),
            commit: commit.unwrap_or_else(|| "unknown".into()),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map_or_else(|| "unknown".into(), |(_, v)| v.trim().to_owned()),
            memory_gib: mem_kib / MIB / MIB,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
            kubernetes: client.apiserver_version().await.map(|v| v.git_version).unwrap_or_default(),
            rustc: cmd("rustc", &["--version"]).unwrap_or_default(),
        }
    }
}
