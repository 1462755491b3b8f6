//! Scale benchmarks for the targets of docs/architecture.md §6, on a real control plane (`scripts/dev-cluster`),
//! the operator binary as its own process (one namespace each) and the in-process vendor simulator. Method and
//! recorded results: `docs/benchmarks.md`.
//!
//! ```text
//! cargo bench --features sim --bench scale -- [--n 1000] [--rss-n 10000] [--rate-n 600] [--quick]
//! cargo bench --features sim --bench scale -- --only peer [--n 2000 --rss-n 2000] [--creators client,kubectl]
//!     [--eso-concurrent 1,16]
//! ```
//!
//! - **throughput**: a plain kube-rs client makes, per resource, the API-server writes the operator makes (no
//!   vendor calls), then the operator takes as many WorkloadApiKeys to Ready; same arrival, same machine, same run.
//! - **restart**: the operator restarted with all of them Ready; vendor requests are counted for a while.
//! - **rate**: the operator at the default client limit (400/min) on more keys than one minute's budget; the
//!   largest number of vendor requests in any 60 s window.
//! - **memory**: peak RSS (`VmHWM`) of the operator process while it takes `--rss-n` resources to Ready, and
//!   after a restart with all of them Ready.
//! - **peer**: External Secrets Operator (built by `scripts/eso-binary`) takes `--n` and `--rss-n` ExternalSecrets,
//!   each from a `Password` generator, to Ready on the same control plane, beside ours at the same sizes: ESO at its
//!   default `--concurrent 1` and at our operator's reconcile concurrency (16), the resources created by the
//!   benchmark's client and by `kubectl create -f` (`--creators`).

#[path = "../../tests/support/mod.rs"]
mod support;

mod drivers;
mod measure;
mod peer;
mod phases;
mod plain;
mod report;
mod results;

use std::{path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

use crate::{
    drivers::{Creator, Kubectl, log_dir},
    phases::run,
    report::record,
};

#[derive(Debug, Parser)]
#[command(about = "Scale benchmarks for docs/architecture.md §6 (method and results: docs/benchmarks.md)")]
struct Args {
    /// Resources of the throughput run (operator vs plain client) and of the restart run [default: 1000].
    #[arg(long)]
    n: Option<usize>,
    /// Resources of the peak-RSS run [default: 10000].
    #[arg(long)]
    rss_n: Option<usize>,
    /// Resources of the vendor-rate run at the default client limit; more than one minute's budget, or no
    /// 60 s window can exceed it [default: 600].
    #[arg(long)]
    rate_n: Option<usize>,
    /// Seconds to count vendor requests after restarting the operator with every resource Ready [default: 60].
    #[arg(long)]
    restart_secs: Option<u64>,
    /// Rounds of the throughput comparison; the verdict is on the median ratio [default: 3, 1 with --quick].
    #[arg(long)]
    rounds: Option<usize>,
    /// Creates in flight at once: how the resources arrive, the same in every phase.
    #[arg(long, default_value_t = 64)]
    create_concurrency: usize,
    /// Small sizes (n 100, rss-n 1000, rate-n 150, restart 15 s, 1 round); printed, not recorded unless --record
    /// is given.
    #[arg(long)]
    quick: bool,
    /// ESO's `--concurrent` settings in the peer phase (reconciles of its ExternalSecret controller in flight), one
    /// fresh ESO run per setting; the ratios are against the one equal to our operator's reconcile concurrency
    /// (`--max-concurrent-reconciles`, 16 unless WKO_MAX_CONCURRENT_RECONCILES says otherwise), else the highest
    /// [default: 1,16: ESO's own default and ours].
    #[arg(long, value_delimiter = ',')]
    eso_concurrent: Vec<usize>,
    /// How the peer phase creates the resources of ours and ESO: `client` (the benchmark's kube-rs client,
    /// `--create-concurrency` creates in flight, as every phase) or `kubectl` (`kubectl create -f` of one
    /// multi-document YAML, as a user does); both with a comma, each run at every size [default: client,kubectl;
    /// client with --quick].
    #[arg(long, visible_alias = "creators", value_delimiter = ',')]
    creator: Vec<Creator>,
    /// More arguments for ESO in the peer phase (repeat for several), e.g. `--eso-arg=--client-qps=500`.
    #[arg(long, allow_hyphen_values = true)]
    eso_arg: Vec<String>,
    /// Run only these phases (restart implies throughput).
    #[arg(long, value_delimiter = ',')]
    only: Vec<Phase>,
    /// Markdown file whose results section is replaced [default: docs/benchmarks.md for a full run; none with
    /// --quick or --only].
    #[arg(long)]
    record: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    Throughput,
    Restart,
    Rate,
    Memory,
    Peer,
}

/// Sizes after `--quick` and the defaults.
struct Plan {
    n: usize,
    rss_n: usize,
    rate_n: usize,
    restart: Duration,
    rounds: usize,
    create_concurrency: usize,
    phases: Vec<Phase>,
    record: Option<PathBuf>,
    /// ESO's `--concurrent` settings, each run at every size.
    eso_concurrent: Vec<usize>,
    /// Our operator's reconcile concurrency: the ESO setting the ratios are against.
    ours_concurrency: usize,
    eso_args: Vec<String>,
    /// How the peer phase creates the resources.
    creators: Vec<Creator>,
    /// ESO's binary and CRDs, resolved (built if need be) before the control plane starts when the peer phase runs.
    eso: Option<peer::EsoBinary>,
    /// `kubectl`, resolved once the control plane runs when a peer run uses it.
    kubectl: Option<Kubectl>,
}

impl Plan {
    fn from(args: Args) -> Self {
        let q = args.quick;
        let mut phases = if args.only.is_empty() {
            vec![Phase::Throughput, Phase::Restart, Phase::Rate, Phase::Memory, Phase::Peer]
        } else {
            args.only.clone()
        };
        if phases.contains(&Phase::Restart) && !phases.contains(&Phase::Throughput) {
            phases.push(Phase::Throughput);
        }
        let record = match (args.record, q) {
            (Some(p), _) => Some(p),
            // Only a full run replaces the recorded results.
            (None, false) if args.only.is_empty() => Some(support::repo_root().join("docs/benchmarks.md")),
            (None, _) => None,
        };
        let ours_concurrency = peer::ours_concurrency();
        let mut eso_concurrent: Vec<usize> = if args.eso_concurrent.is_empty() {
            vec![peer::ESO_DEFAULT_CONCURRENT, ours_concurrency]
        } else {
            args.eso_concurrent.iter().map(|c| (*c).max(1)).collect()
        };
        dedup_keep_order(&mut eso_concurrent);
        let mut creators = if args.creator.is_empty() {
            if q { vec![Creator::Client] } else { vec![Creator::Client, Creator::Kubectl] }
        } else {
            args.creator
        };
        dedup_keep_order(&mut creators);
        Plan {
            n: args.n.unwrap_or(if q { 100 } else { 1000 }),
            rss_n: args.rss_n.unwrap_or(if q { 1000 } else { 10_000 }),
            rate_n: args.rate_n.unwrap_or(if q { 150 } else { 600 }),
            restart: Duration::from_secs(args.restart_secs.unwrap_or(if q { 15 } else { 60 })),
            rounds: args.rounds.unwrap_or(if q { 1 } else { 3 }).max(1),
            create_concurrency: args.create_concurrency.max(1),
            phases,
            record,
            eso_concurrent,
            ours_concurrency,
            eso_args: args.eso_arg,
            creators,
            eso: None,
            kubectl: None,
        }
    }

    fn runs(&self, p: Phase) -> bool {
        self.phases.contains(&p)
    }
}

fn dedup_keep_order<T: PartialEq + Copy>(v: &mut Vec<T>) {
    let mut seen = Vec::new();
    v.retain(|x| {
        let new = !seen.contains(x);
        seen.push(*x);
        new
    });
}

fn main() {
    let mut plan = Plan::from(Args::parse());
    if plan.runs(Phase::Peer) {
        // Before anything else: a failed build stops the run here, not after the other phases.
        plan.eso = Some(peer::eso_binary().unwrap_or_else(|e| panic!("the peer phase needs ESO: {e}")));
    }
    // Start the control plane before the runtime: it blocks for a while.
    let cp = support::control_plane();
    eprintln!("bench: control plane ready ({})", cp.kubeconfig.display());
    if plan.runs(Phase::Peer) && plan.creators.contains(&Creator::Kubectl) {
        plan.kubectl = Some(Kubectl::new(support::kubectl(), cp.kubeconfig.clone()));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let results = rt.block_on(run(&plan));
    let table = results.markdown(&plan);
    println!("{table}");
    eprintln!("bench: operator logs kept in {}", log_dir().display());
    if let Some(path) = &plan.record {
        record(path, &table);
        eprintln!("bench: results recorded in {}", path.display());
    }
}
