//! The results as a Markdown table, and the results section of `docs/benchmarks.md`.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use crate::{
    Plan,
    measure::{MIB, VendorCounts, creates_of, total},
    results::{Peer, PeerSize, Restart, Results, Round},
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
            let ok = t.rounds.iter().all(Round::complete) && ratio <= 1.25;
            let each: Vec<String> = t.rounds.iter().map(|r| format!("{:.2}", r.ratio())).collect();
            let mut times: Vec<(Duration, Duration)> =
                t.rounds.iter().map(|r| (r.operator.elapsed, r.baseline.elapsed)).collect();
            times.sort_by(|a, b| {
                (a.0.as_secs_f64() / a.1.as_secs_f64()).total_cmp(&(b.0.as_secs_f64() / b.1.as_secs_f64()))
            });
            let (op, base) = times[times.len() / 2];
            line(format!(
                "| {} WorkloadApiKeys to Ready, operator / plain client ({}) | **{ratio:.2}×** \
                 (median round: operator {} vs plain {}; rounds {}) | ≤ 1.25× | {} |",
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
                line(peer_summary_row(&p.version, size));
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
                     peak RSS {}, at most {} sockets open at once; vendor requests: {}; live keys afterwards: {}.",
                    i + 1,
                    r.ratio(),
                    r.operator.elapsed.as_secs_f64() / r.baseline_reads.elapsed.as_secs_f64().max(1e-9),
                    mib(r.hwm_kib),
                    r.sockets,
                    vendor_list(&r.vendor),
                    r.live_keys
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

pub fn peer_summary_row(version: &str, p: &PeerSize) -> String {
    let (e, o) = (&p.eso.run, &p.ours);
    format!(
        "| Peer: ESO {version} beside ours, {} resources to Ready (ESO / ours) | time {} vs {} (**{}**); peak RSS {} \
         vs {} ({}); most sockets {} vs {} ({}); API-server requests per resource {:.2} vs {:.2} ({}) | comparison \
         | ESO {}/{} Ready, ours {}/{} |",
        p.n,
        secs(e.timing.elapsed),
        secs(o.timing.elapsed),
        ratio(e.timing.elapsed.as_secs_f64(), o.timing.elapsed.as_secs_f64()),
        mib(e.hwm_kib),
        mib(o.hwm_kib),
        ratio(kib_f(e.hwm_kib), kib_f(o.hwm_kib)),
        e.sockets,
        o.sockets,
        ratio(e.sockets as f64, o.sockets as f64),
        e.requests_per_resource(),
        o.requests_per_resource(),
        ratio(e.requests_per_resource(), o.requests_per_resource()),
        e.timing.ready,
        e.timing.n,
        o.timing.ready,
        o.timing.n,
    )
}

pub fn peer_section(p: &Peer, plan: &Plan) -> Vec<String> {
    let mut out = vec![
        String::new(),
        format!("#### Peer: External Secrets Operator {}, same control plane, same run", p.version),
        String::new(),
        format!(
            "ESO built from its Go module (`scripts/eso-binary`), run out of cluster with the admin kubeconfig as \
             `{}`. Each `ExternalSecret` (`external-secrets.io/v1`, `refreshInterval: {}`) takes its data from the \
             namespace's one `Password` generator (`generators.external-secrets.io/v1alpha1`, 44 characters); created \
             {} at a time by the same driver as ours, the time is first create to the last `Ready=True` seen by the \
             same watch. Ratios are ESO / ours: above 1, ESO took longer or used more.",
            p.command, p.refresh_interval, plan.create_concurrency
        ),
        String::new(),
        "| Resources | Controller | Ready | Time | Resources/s | Create→Ready p50 | p95 | max | Peak RSS (`VmHWM`) | \
         Most sockets | API-server requests / resource |"
            .into(),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |".into(),
    ];
    for size in &p.sizes {
        for (name, r) in [("ours (WorkloadApiKeys)", &size.ours), ("ESO (ExternalSecrets)", &size.eso.run)] {
            let x = &r.timing;
            out.push(format!(
                "| {} | {name} | {} | {} | {} | {:.2} |",
                size.n,
                timing_cells(x),
                mib(r.hwm_kib),
                r.sockets,
                r.requests_per_resource()
            ));
        }
    }
    out.push(String::new());
    for size in &p.sizes {
        let e = &size.eso;
        out.push(format!(
            "- {}: ours from the {}. ESO: concurrency of its ExternalSecret controller {} (its \
             `controller_runtime_max_concurrent_reconciles`), {} reconciles ({} errors), {} Secrets with a generated \
             password; connections beyond loopback: {}.",
            size.n,
            size.ours_from,
            e.concurrent.map_or_else(|| "n/a".into(), |c| c.to_string()),
            e.reconciles,
            e.reconcile_errors,
            e.secrets_written,
            if e.foreign.is_empty() {
                "none".into()
            } else {
                e.foreign.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
            }
        ));
    }
    out.push(String::new());
    out.push(
        "API-server requests per resource (`apiserver_request_total` deltas, no watches or lists; cluster-wide):"
            .into(),
    );
    out.push(String::new());
    let mut header = "| Request |".to_owned();
    let mut rule = "| --- |".to_owned();
    for size in &p.sizes {
        header.push_str(&format!(" Ours ({}) | ESO ({}) |", size.n, size.n));
        rule.push_str(" --- | --- |");
    }
    out.push(header);
    out.push(rule);
    let keys: BTreeSet<&String> =
        p.sizes.iter().flat_map(|s| s.ours.requests.keys().chain(s.eso.run.requests.keys())).collect();
    for k in keys {
        let mut row = format!("| `{k}` |");
        for size in &p.sizes {
            for r in [&size.ours, &size.eso.run] {
                row.push_str(&format!(" {:.2} |", r.requests.get(k).copied().unwrap_or(0.0)));
            }
        }
        out.push(row);
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
