//! The operator's connections to the API server: every watch and request multiplexed over HTTP/2
//! (`controller::api_client`). A real API server (which offers `h2`), the operator as its own process at its
//! default 16 concurrent reconciles, 200 WorkloadApiKeys created at once and brought to Ready; the operator's TCP
//! connections to the API server's port are sampled from `/proc` every 50 ms throughout.
#![cfg(feature = "sim")]

mod support;

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use kube::api::{ListParams, PostParams};
use support::{eventually, sim_env};
use workload_key_operator::api::WorkloadApiKey;

const RESOURCES: usize = 200;
/// At most this many connections to the API server at any moment (issue: "at most 2").
const MOST_CONNECTIONS: usize = 2;
/// At most this many sockets in all (API server, vendor, the metrics listener and its scrapes).
const MOST_SOCKETS: usize = 20;

/// The socket inodes a process holds.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return HashSet::new() };
    fds.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| t.to_string_lossy().strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

/// The process's TCP connections (any state but LISTEN) whose remote port is `port`, from `/proc/<pid>/net/tcp`
/// and `tcp6` (the tables of its network namespace, matched to its own sockets by inode).
fn connections_to(pid: u32, port: u16) -> usize {
    let ours = socket_inodes(pid);
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let remote_port = u16::from_str_radix(f.get(2)?.rsplit(':').next()?, 16).ok()?;
                    let state = *f.get(3)?;
                    let inode: u64 = f.get(9)?.parse().ok()?;
                    // 0A is LISTEN; a closed socket (TIME_WAIT) has inode 0 and is no longer the process's.
                    (remote_port == port && state != "0A" && ours.contains(&inode)).then_some(())
                })
                .collect::<Vec<_>>()
        })
        .count()
}

fn ready(w: &WorkloadApiKey) -> bool {
    w.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_and_requests_share_at_most_two_connections_to_the_api_server() {
    // Before `api_client` (kube's HTTP/1.1 stack), the same run peaked at 35 connections to the API server.
    let env = sim_env::Env::start("h2").await;
    let port = support::config_as(None).await.cluster_url.port_u16().expect("API server port");
    let pid = env.op.pid().expect("operator pid");

    let most = Arc::new(AtomicUsize::new(0));
    let most_sockets = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (most, most_sockets, samples, done) = (most.clone(), most_sockets.clone(), samples.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                most.fetch_max(connections_to(pid, port), Ordering::Relaxed);
                most_sockets.fetch_max(socket_inodes(pid).len(), Ordering::Relaxed);
                samples.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let api = env.ns.api::<WorkloadApiKey>();
    futures::stream::iter(0..RESOURCES)
        .map(|i| {
            let api = api.clone();
            async move {
                let obj = sim_env::wak(&format!("h2-{i:03}"), sim_env::wak_spec("multiplexed"));
                api.create(&PostParams::default(), &obj).await.expect("create WorkloadApiKey");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    eventually(Duration::from_secs(300), "every WorkloadApiKey Ready", || async {
        let items = api.list(&ListParams::default()).await.ok()?.items;
        (items.len() == RESOURCES && items.iter().all(ready)).then_some(())
    })
    .await;
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();

    let (most, samples) = (most.load(Ordering::Relaxed), samples.load(Ordering::Relaxed));
    let most_sockets = most_sockets.load(Ordering::Relaxed);
    eprintln!(
        "{RESOURCES} WorkloadApiKeys Ready; at most {most} connection(s) to the API server and {most_sockets} \
         sockets in all, in {samples} samples"
    );
    assert!(samples > 10, "the sampler ran ({samples} samples)");
    assert!(most >= 1, "the operator's connection to the API server was seen");
    assert!(most <= MOST_CONNECTIONS, "at most {MOST_CONNECTIONS} connections to the API server, saw {most}");
    assert!(most_sockets <= MOST_SOCKETS, "at most {MOST_SOCKETS} sockets in all, saw {most_sockets}");
}
