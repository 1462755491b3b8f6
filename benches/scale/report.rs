//! The results as a Markdown table, and the results section of `docs/benchmarks.md`.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use crate::{
    Plan,
    drivers::Creator,
    measure::{MIB, VendorCounts, creates_of, total},
    peer::ESO_DEFAULT_CONCURRENT,
    results::{EsoRun, Peer, PeerRun, PeerSize, Restart, Results, Round},
};

pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

pub fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "n/a".into(), |k| format!("{:.1} MiB", k as f64 / MIB))
}

/// `VmRSS` per resource after the restart with all Ready, over the process with none.
fn per_resource_kib(mem: &crate::results::Memory) -> Option<f64> {
    let none = mem.steps.first()?.rss?;
    Some((mem.rss_restart? as f64 - none as f64) / mem.n.max(1) as f64)
}

/// The cells of a timed run: Ready (and failures), time, rate, create→Ready p50, p95, max.
fn timing_cells(x: &crate::measure::Timing) -> String {
    format!(
        "{}/{}{} | {} | {:.1} | {} | {} | {}",
        x.ready,
        x.n,
        if x.failed > 0 { format!(" ({} failed)", x.failed) } else { String::new() },
        secs(x.elapsed),
        x.rate(),
        secs(x.p50),
        secs(x.p95),
        secs(x.max)
    )
}

pub fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

pub fn creates_row(n: usize, vendor: &VendorCounts, live_keys: usize, ready: usize) -> String {
    let creates = creates_of(vendor);
    format!(
        "| Vendor creates per new key ({n} keys) | {creates} creates, {} vendor requests in all; {live_keys} live keys \
         afterwards | exactly 1 per key | {} |",
        total(vendor),
        verdict(creates == n as u64 && live_keys == n && ready == n)
    )
}

pub fn restart_row(r: &Restart) -> String {
    format!(
        "| Vendor calls on restart with {} Ready (first reconcile of each, then {} in all) | {} by then, {} in all \
         ({} creates) | 0 | {} |",
        r.n,
        secs(r.observed),
        r.vendor_at_settled,
        total(&r.vendor),
        creates_of(&r.vendor),
        verdict(r.settled.is_some() && total(&r.vendor) == 0)
    )
}

/// The restart target: the first reconcile of every resource within 20 s.
pub fn restart_time_row(r: &Restart) -> String {
    format!(
        "| Restart with {} Ready: first reconcile of every resource | {} (at most {} sockets open at once) | ≤ 20 s          | {} |",
        r.n,
        r.settled.map_or_else(|| "never (timed out)".into(), secs),
        r.sockets,
        verdict(r.settled.is_some_and(|t| t <= Duration::from_secs(20)))
    )
}

pub fn vendor_list(v: &VendorCounts) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter().map(|(k, n)| format!("`{k}` {n}")).collect::<Vec<_>>().join(", ")
}

impl Results {
    pub fn markdown(&self, plan: &Plan) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        line(format!(
            "Run {} on commit `{}`: {} CPUs ({}), {:.1} GiB, Linux {}, Kubernetes {}, {}. Release build \
             (`cargo bench`), operator at log level `info`, resources created {} at a time.",
            m.date,
            m.commit,
            m.cpus,
            m.cpu_model,
            m.memory_gib,
            m.kernel,
            m.kubernetes,
            m.rustc,
            plan.create_concurrency
        ));
        line(String::new());
        line("| Target (docs/architecture.md §6) | Measured | Limit | Result |".into());
        line("| --- | --- | --- | --- |".into());
        if let Some(t) = &self.throughput {
            let ratio = t.median_ratio();
            let ok = t.rounds.iter().all(Round::complete) && ratio <= 1.1;
            let each: Vec<String> = t.rounds.iter().map(|r| format!("{:.2}", r.ratio())).collect();
            let mut times: Vec<(Duration, Duration)> =
                t.rounds.iter().map(|r| (r.operator.elapsed, r.baseline.elapsed)).collect();
            times.sort_by(|a, b| {
                (a.0.as_secs_f64() / a.1.as_secs_f64()).total_cmp(&(b.0.as_secs_f64() / b.1.as_secs_f64()))
            });
            let (op, base) = times[times.len() / 2];
            line(format!(
                "| {} WorkloadApiKeys to Ready, operator / plain client ({}) | **{ratio:.2}×** \
                 (median round: operator {} vs plain {}; rounds {}) | ≤ 1.1× | {} |",
                t.n,
                match t.rounds.len() {
                    1 => "1 round".to_owned(),
                    r => format!("median of {r} rounds"),
                },
                secs(op),
                secs(base),
                each.join(", "),
                verdict(ok)
            ));
            let live: usize = t.rounds.iter().map(|r| r.live_keys).sum();
            let ready: usize = t.rounds.iter().map(|r| r.operator.ready).sum();
            line(creates_row(t.n * t.rounds.len(), &t.creates(), live, ready));
            if let Some(r) = t.rounds.first() {
                // The operator reads no new resource (its finalizer's patch returns it): the GETs of resources
                // counted cluster-wide are the controller manager's garbage collector looking up the owners of new
                // Secrets, which the plain client's run, making none itself, shows too.
                let owner_gets = |i: usize| r.requests.get("GET workloadapikeys").map_or(0.0, |v| v[i]);
                let per_key: f64 = r.requests.values().map(|v| v[0]).sum();
                line(format!(
                    "| API-server requests per new key, the user's create included (round 1) | {:.2} without the \
                     controller manager's owner lookups (`GET workloadapikeys` {:.2}; {:.2} in the plain client's run, \
                     which makes none); {per_key:.2} cluster-wide | ≤ 6 | {} |",
                    per_key - owner_gets(0),
                    owner_gets(0),
                    owner_gets(1),
                    verdict(per_key - owner_gets(0) <= 6.0)
                ));
            }
            if let Some(r) = &t.rotation {
                let per: f64 = r.requests.values().sum();
                line(format!(
                    "| API-server requests per rotation, the user's annotation included ({} at once) | {per:.2} ({}/{} rotated in {}) | — | {} |",
                    r.n,
                    r.rotated,
                    r.n,
                    secs(r.elapsed),
                    verdict(r.rotated == r.n)
                ));
            }
            let most = t.rounds.iter().map(|r| r.api_connections).chain(t.rotation.iter().map(|r| r.api_connections));
            let most = most.max().unwrap_or(0);
            line(format!(
                "| Most connections to the API server at once (throughput rounds and rotation, {} resources) | {most} | ≤ 2 | {} |",
                t.n,
                verdict(most <= 2)
            ));
        }
        if let Some(r) = &self.restart {
            line(restart_row(r));
        }
        if let Some(r) = &self.rate {
            let worst = r.creates_max_60s.max(r.total_max_60s.1 as usize);
            line(format!(
                "| Most vendor requests in any 60 s window, client limit {}/min ({} keys) | {} creates (exact); {}–{} requests in all | ≤ {} | {} |",
                r.limit,
                r.n,
                r.creates_max_60s,
                r.total_max_60s.0,
                r.total_max_60s.1,
                r.limit,
                verdict(r.timing.complete() && worst <= r.limit as usize)
            ));
        }
        if let Some(mem) = &self.memory {
            line(creates_row(mem.n, &mem.vendor, mem.live_keys, mem.timing.ready));
            line(restart_row(&mem.restart));
            line(restart_time_row(&mem.restart));
            let most = [mem.sockets, mem.restart.sockets]
                .into_iter()
                .chain(self.throughput.iter().flat_map(|t| t.rounds.iter().map(|r| r.sockets)))
                .chain(self.restart.iter().map(|r| r.sockets))
                .max()
                .unwrap_or(0);
            line(format!(
                "| Most sockets the operator held at once, any phase (restart with {} included) | {most} | ≤ 64 | {} |",
                mem.n,
                verdict(most <= 64)
            ));
            let peak = mem.hwm_create.max(mem.hwm_restart);
            line(format!(
                "| Operator peak RSS with {} resources | {} (`VmHWM`; {} while creating, {} after a restart) | ≤ 40 MiB | {} |",
                mem.n,
                mib(peak),
                mib(mem.hwm_create),
                mib(mem.hwm_restart),
                verdict(mem.timing.complete() && peak.is_some_and(|k| k as f64 <= 40.0 * MIB))
            ));
            if let Some(per) = per_resource_kib(mem) {
                line(format!(
                    "| Operator memory per resource (`VmRSS` with {} Ready after a restart, over none) | {per:.1} KiB                      | ≤ 3 KiB | {} |",
                    mem.n,
                    verdict(per <= 3.0)
                ));
            }
        }
        if let Some(p) = &self.peer {
            for size in &p.sizes {
                line(peer_summary_row(p, size, plan));
            }
        }

        if let Some(t) = &self.throughput {
            line(String::new());
            line(format!("#### Throughput: {} resources, first create to last Ready", t.n));
            line(String::new());
            line("| Round | Run | Ready | Time | Resources/s | Create→Ready p50 | p95 | max |".into());
            line("| --- | --- | --- | --- | --- | --- | --- | --- |".into());
            for (i, r) in t.rounds.iter().enumerate() {
                for (name, x) in [
                    ("Plain client: the operator's writes", &r.baseline),
                    ("Operator (vendor simulator, client limit off)", &r.operator),
                    ("Plain client: writes and the operator's reads", &r.baseline_reads),
                ] {
                    line(format!("| {} | {name} | {} |", i + 1, timing_cells(x)));
                }
            }
            line(String::new());
            for (i, r) in t.rounds.iter().enumerate() {
                line(format!(
                    "- Round {}: operator / plain writes **{:.2}×**, operator / plain writes + reads {:.2}×; operator \
                     peak RSS {}, at most {} sockets open at once, {} of them to the API server; vendor requests: {}; \
                     live keys afterwards: {}. Sockets / API-server connections over the round: {}.",
                    i + 1,
                    r.ratio(),
                    r.operator.elapsed.as_secs_f64() / r.baseline_reads.elapsed.as_secs_f64().max(1e-9),
                    mib(r.hwm_kib),
                    r.sockets,
                    r.api_connections,
                    vendor_list(&r.vendor),
                    r.live_keys,
                    r.series
                ));
            }
            line(String::new());
            line(
                "API-server requests per resource in round 1 (`apiserver_request_total` deltas; cluster-wide, so the \
                  controller manager's share is in every column):"
                    .into(),
            );
            line(String::new());
            line("| Request | Operator | Plain: writes | Plain: writes + reads |".into());
            line("| --- | --- | --- | --- |".into());
            if let Some(r) = t.rounds.first() {
                for (k, v) in &r.requests {
                    line(format!("| `{k}` | {:.2} | {:.2} | {:.2} |", v[0], v[1], v[2]));
                }
            }
            if let Some(r) = &t.rotation {
                line(String::new());
                line(format!(
                    "Rotation of the last round's {} resources at once (`workloadkeys.io/rotate`): {}/{} Ready with \
                     a new key after {}; at most {} sockets open at once, {} of them to the API server (over the \
                     rotation: {}). API-server requests per rotation, the user's annotation included: **{:.2}**: {}.",
                    r.n,
                    r.rotated,
                    r.n,
                    secs(r.elapsed),
                    r.sockets,
                    r.api_connections,
                    r.series,
                    r.requests.values().sum::<f64>(),
                    r.requests.iter().map(|(k, v)| format!("`{k}` {v:.2}")).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if let Some(r) = &self.restart {
            line(String::new());
            line(format!("#### Restart with {} resources Ready", r.n));
            line(String::new());
            line(format!(
                "Every resource's first reconcile done after {} (at most {} sockets open at once); vendor requests \
                 by then: {}; over {}: {}. API-server requests per resource over the period: {}.",
                r.settled.map_or_else(|| "never (timed out)".into(), secs),
                r.sockets,
                r.vendor_at_settled,
                secs(r.observed),
                vendor_list(&r.vendor),
                r.api_requests.iter().map(|(k, v)| format!("`{k}` {v:.2}")).collect::<Vec<_>>().join(", ")
            ));
        }
        if let Some(r) = &self.rate {
            line(String::new());
            line(format!("#### Vendor rate: {} resources at the default client limit ({}/min)", r.n, r.limit));
            line(String::new());
            line(format!(
                "{}/{} Ready in {} ({:.1} keys/min overall). Vendor requests: {}. Most in any 60 s window: {} key \
                 creates (exact, from the simulator's creation stamps), {}–{} requests of any kind (from totals \
                 sampled every 50 ms). The simulator's own per-key limit (DSM default, 500/min) refused {} \
                 requests; 429s seen: {}.",
                r.timing.ready,
                r.n,
                secs(r.timing.elapsed),
                r.timing.ready as f64 * 60.0 / r.timing.elapsed.as_secs_f64().max(1e-9),
                vendor_list(&r.vendor),
                r.creates_max_60s,
                r.total_max_60s.0,
                r.total_max_60s.1,
                r.throttled,
                r.rejected_429
            ));
        }
        if let Some(mem) = &self.memory {
            line(String::new());
            line(format!("#### Memory: {} resources", mem.n));
            line(String::new());
            line(format!(
                "{}/{} Ready in {} ({:.1}/s; at most {} sockets open at once); vendor requests: {}. Operator \
                 `VmHWM` after all were Ready: {}; `VmRSS` 10 s later: {}. Restarted with all Ready: first reconcile \
                 of each done after {} (at most {} sockets open at once), `VmHWM` {}, `VmRSS` {}; vendor requests: {}.",
                mem.timing.ready,
                mem.n,
                secs(mem.timing.elapsed),
                mem.timing.rate(),
                mem.sockets,
                vendor_list(&mem.vendor),
                mib(mem.hwm_create),
                mib(mem.rss_idle),
                mem.restart.settled.map_or_else(|| "never (timed out)".into(), secs),
                mem.restart.sockets,
                mib(mem.hwm_restart),
                mib(mem.rss_restart),
                vendor_list(&mem.restart.vendor)
            ));
            line(String::new());
            line("| Resources Ready | `VmRSS` | `VmHWM` | Per resource over none (`VmRSS`) |".into());
            line("| --- | --- | --- | --- |".into());
            let none = mem.steps.first().and_then(|s| s.rss);
            let per = |n: usize, rss: Option<u64>| match (none, rss) {
                (Some(base), Some(rss)) if n > 0 => format!("{:.1} KiB", (rss as f64 - base as f64) / n as f64),
                _ => "–".into(),
            };
            for step in &mem.steps {
                line(format!("| {} | {} | {} | {} |", step.n, mib(step.rss), mib(step.hwm), per(step.n, step.rss)));
            }
            line(format!(
                "| {} after a restart | {} | {} | {} |",
                mem.n,
                mib(mem.rss_restart),
                mib(mem.hwm_restart),
                per(mem.n, mem.rss_restart)
            ));
        }
        if let Some(p) = &self.peer {
            for l in peer_section(p, plan) {
                line(l);
            }
        }
        s
    }
}

/// `a / b` as `1.23×`, or `n/a`.
pub fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b > 0.0 { format!("{:.2}×", a / b) } else { "n/a".into() }
}

fn kib_f(k: Option<u64>) -> f64 {
    k.map_or(f64::NAN, |k| k as f64)
}

/// How the resources of a peer run were created, in words.
fn creator_words(creator: Creator, plan: &Plan) -> String {
    match creator {
        Creator::Client => format!("the benchmark's client, {} creates in flight", plan.create_concurrency),
        Creator::Kubectl => "`kubectl create -f` of one multi-document YAML".into(),
    }
}

/// ESO at one setting, as a table's row name.
fn eso_label(e: &EsoRun, p: &Peer) -> String {
    let why = if e.concurrency == p.ours_concurrency {
        " (our concurrency)"
    } else if e.concurrency == ESO_DEFAULT_CONCURRENT {
        " (its default)"
    } else {
        ""
    };
    format!("ESO `--concurrent {}`{why}", e.concurrency)
}

/// One figure of a peer comparison: how to read it from a run, and how to print it.
struct Figure {
    /// In a sentence.
    name: &'static str,
    /// As a column's header.
    header: &'static str,
    value: fn(&PeerRun) -> f64,
    show: fn(&PeerRun) -> String,
}

const FIGURES: [Figure; 4] = [
    Figure {
        name: "first create → last Ready",
        header: "First create → last Ready",
        value: |r| r.timing.elapsed.as_secs_f64(),
        show: |r| secs(r.timing.elapsed),
    },
    Figure { name: "peak RSS", header: "Peak RSS", value: |r| kib_f(r.hwm_kib), show: |r| mib(r.hwm_kib) },
    Figure {
        name: "most sockets",
        header: "Most sockets",
        value: |r| r.sockets as f64,
        show: |r| r.sockets.to_string(),
    },
    Figure {
        name: "API-server requests per resource",
        header: "API-server requests / resource",
        value: PeerRun::requests_per_resource,
        show: |r| format!("{:.2}", r.requests_per_resource()),
    },
];

/// The summary row of one size and creator: ours against ESO at our concurrency, ESO at its default beside.
pub fn peer_summary_row(p: &Peer, size: &PeerSize, plan: &Plan) -> String {
    let o = &size.ours;
    let matched = size.matched(p.ours_concurrency);
    let default = size.default_setting(p.ours_concurrency);
    let mut figures = Vec::new();
    for (i, f) in FIGURES.iter().enumerate() {
        let mut cell = format!("{}: ours {}", f.name, (f.show)(o));
        if let Some(m) = matched {
            let r = ratio((f.value)(o), (f.value)(&m.run));
            let r = if i == 0 { format!("**{r}**") } else { r };
            cell.push_str(&format!(" vs ESO {} ({r})", (f.show)(&m.run)));
        }
        if let Some(d) = default {
            cell.push_str(&format!(
                ", ESO at {}: {} ({})",
                d.concurrency,
                (f.show)(&d.run),
                ratio((f.value)(o), (f.value)(&d.run))
            ));
        }
        figures.push(cell);
    }
    let ready: Vec<String> = size
        .eso
        .iter()
        .map(|e| format!("ESO `--concurrent {}` {}/{}", e.concurrency, e.run.timing.ready, e.run.timing.n))
        .collect();
    format!(
        "| Peer: ESO {} beside ours, {} resources to Ready, created by {} (ours / ESO `--concurrent {}`{}) | {} | \
         comparison | ours {}/{} Ready, {} |",
        p.version,
        size.n,
        creator_words(size.creator, plan),
        matched.map_or(p.ours_concurrency, |m| m.concurrency),
        default.map_or_else(String::new, |d| format!("; ESO at its default `--concurrent {}` beside", d.concurrency)),
        figures.join("; "),
        o.timing.ready,
        o.timing.n,
        ready.join(", ")
    )
}

/// Ready, first create → last Ready, creates done, rate, create→Ready p50, p95, max, peak RSS, sockets, requests.
fn peer_cells(r: &PeerRun) -> String {
    let x = &r.timing;
    format!(
        "{}/{}{} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {:.2}",
        x.ready,
        x.n,
        if x.failed > 0 { format!(" ({} failed)", x.failed) } else { String::new() },
        secs(x.elapsed),
        secs(x.creates_done),
        x.rate(),
        secs(x.p50),
        secs(x.p95),
        secs(x.max),
        mib(r.hwm_kib),
        r.sockets,
        r.requests_per_resource()
    )
}

pub fn peer_section(p: &Peer, plan: &Plan) -> Vec<String> {
    let settings: Vec<String> = {
        let mut c: Vec<usize> = p.sizes.iter().flat_map(|s| s.eso.iter().map(|e| e.concurrency)).collect();
        c.sort_unstable();
        c.dedup();
        c.iter().map(|c| format!("`--concurrent {c}`")).collect()
    };
    let mut out = vec![
        String::new(),
        format!("#### Peer: External Secrets Operator {}, same control plane, same run", p.version),
        String::new(),
        format!(
            "ESO built from its Go module (`scripts/eso-binary`), run out of cluster with the admin kubeconfig as \
             `{}`, a fresh process on a fresh namespace for each of {} (ESO's default is 1; ours runs {} reconciles \
             of each kind at once). Each `ExternalSecret` (`external-secrets.io/v1`, `refreshInterval: {}`) takes its \
             data from the namespace's one `Password` generator (`generators.external-secrets.io/v1alpha1`, 44 \
             characters). Ours and ESO get their resources the same way, by the benchmark's client ({} creates in \
             flight) or by `kubectl create -f` of one multi-document YAML (one create at a time, as a user does); the \
             time is first create to the last `Ready=True` seen by the same watch, and *creates done* is first \
             create to the last create's answer (kubectl: its exit), the floor a user sees. Ratios are ours / ESO: \
             below 1, ours took less time or used less.",
            p.command,
            settings.join(" and "),
            p.ours_concurrency,
            p.refresh_interval,
            plan.create_concurrency
        ),
        String::new(),
        "| Resources | Created by | Controller | Ready | First create → last Ready | Creates done | Resources/s | \
         Create→Ready p50 | p95 | max | Peak RSS (`VmHWM`) | Most sockets | API-server requests / resource |"
            .into(),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |".into(),
    ];
    for size in &p.sizes {
        let rows = std::iter::once(("ours (WorkloadApiKeys)".to_owned(), &size.ours))
            .chain(size.eso.iter().map(|e| (eso_label(e, p), &e.run)));
        for (name, r) in rows {
            out.push(format!("| {} | {} | {name} | {} |", size.n, size.creator.name(), peer_cells(r)));
        }
    }
    out.push(String::new());
    out.push("Ours / ESO, per size and creator (the row at our concurrency first):".into());
    out.push(String::new());
    let headers: Vec<&str> = FIGURES.iter().map(|f| f.header).collect();
    out.push(format!("| Resources | Created by | Against | {} |", headers.join(" | ")));
    out.push("| --- | --- | --- | --- | --- | --- | --- |".into());
    for size in &p.sizes {
        let against = size.matched(p.ours_concurrency).into_iter().chain(size.default_setting(p.ours_concurrency));
        for (i, e) in against.enumerate() {
            let cells: Vec<String> = FIGURES
                .iter()
                .enumerate()
                .map(|(j, f)| {
                    let r = ratio((f.value)(&size.ours), (f.value)(&e.run));
                    if i == 0 && j == 0 { format!("**{r}**") } else { r }
                })
                .collect();
            out.push(format!("| {} | {} | {} | {} |", size.n, size.creator.name(), eso_label(e, p), cells.join(" | ")));
        }
    }
    out.push(String::new());
    out.push(
        "ESO's reported concurrency is `controller_runtime_max_concurrent_reconciles` of its ExternalSecret \
         controller; its reconciles and errors are that controller's."
            .into(),
    );
    out.push(String::new());
    for size in &p.sizes {
        let eso: Vec<String> = size
            .eso
            .iter()
            .map(|e| {
                format!(
                    "`--concurrent {}`: reported concurrency {}, {} reconciles ({} errors), {} Secrets with a \
                     generated password, connections beyond loopback: {}",
                    e.concurrency,
                    e.reported_concurrency.map_or_else(|| "n/a".into(), |c| c.to_string()),
                    e.reconciles,
                    e.reconcile_errors,
                    e.secrets_written,
                    if e.foreign.is_empty() {
                        "none".into()
                    } else {
                        e.foreign.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
                    }
                )
            })
            .collect();
        out.push(format!(
            "- {}, created by {}: ours from the {}. ESO {}.",
            size.n,
            size.creator.name(),
            size.ours_from,
            eso.join("; ")
        ));
    }
    out.push(String::new());
    out.push(
        "API-server requests per resource (`apiserver_request_total` deltas, no watches or lists; cluster-wide; \
         ours counts WorkloadApiKeys, Secrets and Events, ESO its own kinds, Secrets and Events; ESO *c* is ESO at \
         `--concurrent c`):"
            .into(),
    );
    out.push(String::new());
    let columns: Vec<(String, &PeerRun)> = p
        .sizes
        .iter()
        .flat_map(|s| {
            std::iter::once((format!("Ours ({}, {})", s.n, s.creator.name()), &s.ours)).chain(
                s.eso.iter().map(move |e| (format!("ESO {} ({}, {})", e.concurrency, s.n, s.creator.name()), &e.run)),
            )
        })
        .collect();
    out.push(format!("| Request | {} |", columns.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>().join(" | ")));
    out.push(format!("| --- |{}", " --- |".repeat(columns.len())));
    let keys: BTreeSet<&String> = columns.iter().flat_map(|(_, r)| r.requests.keys()).collect();
    for k in keys {
        let cells: Vec<String> =
            columns.iter().map(|(_, r)| format!("{:.2}", r.requests.get(k).copied().unwrap_or(0.0))).collect();
        out.push(format!("| `{k}` | {} |", cells.join(" | ")));
    }
    out
}

pub const BEGIN: &str = "<!-- BEGIN RESULTS (written by `cargo bench --bench scale`) -->";
pub const END: &str = "<!-- END RESULTS -->";

/// Replaces the results section of `path` (or writes a file that is only that section).
pub fn record(path: &PathBuf, table: &str) {
    let section = format!("{BEGIN}\n{table}{END}");
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if e > b => format!("{}{section}{}", &old[..b], &old[e + END.len()..]),
        _ => format!("# Benchmarks\n\n{section}\n"),
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(path, new).expect("write the results file");
}
