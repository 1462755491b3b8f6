//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): only the holder runs the controllers,
//! `/readyz` follows the lease, and shutdown releases it so a standby takes over at once. A leader that has not seen
//! its own renewal for the renew deadline stops, before a standby may claim the lapsed Lease.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};

use super::{Context, Scope, server::Readiness, watches::WatchBackoff};

/// Which Lease, and who we are in it.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a claim lasts without renewal; a standby takes over after it.
    pub duration_seconds: u64,
}

impl LeaseSettings {
    /// This replica's identity when none is given: host name and process ID.
    pub fn default_identity() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    }
}

/// Waits for the Lease, runs the controllers while holding it, and releases it on shutdown. Losing the Lease
/// ends the process (after stopping the controllers), so a replica never reconciles without holding it.
pub async fn run_as_leader<F, Fut>(
    lease: &LeaseSettings,
    ctx: Arc<Context>,
    scope: Scope,
    ready: Readiness,
    stopped: F,
) -> Result<(), Box<dyn std::error::Error>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let LeaseSettings { name, namespace, identity, .. } = lease;
    tracing::info!(%identity, lease = %name, %namespace, "waiting for leadership");
    let (leader, lease_task) = loop {
        let asked_at = k8s_openapi::jiff::Timestamp::now();
        let Some(manager) = acquire(lease, &ctx.client, stopped()).await? else {
            ready.set(false);
            return Ok(());
        };
        // Held: the manager's own loop renews the Lease and reports its loss.
        let (leader, lease_task) = manager.watch().await;
        // A container restarted in the same pod has the same identity and reads its previous process's claim as its
        // own, expired or not (found by the fault suite with etcd paused: the restarted replica started its
        // controllers on a lapsed claim while the standby was taking the Lease). Ours once this process renewed it.
        let mut loss = leader.clone();
        let confirmed = tokio::select! {
            _ = claim_renewed_since(ctx.client.clone(), lease, asked_at) => true,
            _ = loss.wait_for(|is| !*is) => false,
            _ = stopped() => {
                drop(leader);
                let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
                ready.set(false);
                return Ok(());
            }
        };
        if confirmed {
            break (leader, lease_task);
        }
        tracing::info!(%identity, "the claim read as ours was an earlier process's and is gone: waiting again");
        drop(leader);
        let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
    };
    tracing::info!(%identity, version = env!("CARGO_PKG_VERSION"), scope = ?scope, "leader: starting controllers");
    ready.set(true);
    let mut watch_loss = leader.clone();
    let deadline = renew_deadline(lease.duration_seconds);
    let unconfirmed = renewals_lapse(ctx.client.clone(), lease.clone(), deadline);
    let lost_or_lapsed = async move {
        tokio::select! {
            _ = watch_loss.wait_for(|is| !*is) => {}
            // The manager reports a loss only once it reads the Lease again; while the API server cannot be reached
            // the Lease lapses all the same, and a standby may take it.
            _ = unconfirmed => {
                tracing::warn!(?deadline, "no renewal of the leader Lease seen within the renew deadline");
            }
        }
    };
    // SIGTERM stops the controllers gracefully (the Lease is still ours while they finish). A lost or unconfirmed
    // Lease aborts them at once, in-flight reconciles included, as a crash would (every step is crash-safe): a
    // graceful drain would let requests blocked on the API server land after a standby took over (found by the fault
    // suite with etcd paused: the old leader drained for a minute, past the standby's start).
    let aborted = tokio::select! {
        _ = super::run(ctx, scope, Box::pin(stopped())) => false,
        _ = lost_or_lapsed => true,
    };
    tracing::info!(%identity, aborted, "leader: controllers stopped");
    // The lease task ends only on a failure it could not recover from: as good as lost.
    let lost = aborted || !*leader.borrow() || lease_task.is_finished();
    ready.set(false);
    // Closing the channel makes the lease task release the Lease, so a standby takes over at once.
    drop(leader);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("lease released"),
        other => tracing::warn!(result = ?other.map(|r| r.map(|m| m.map(|_| ()))), "could not release the lease"),
    }
    if lost {
        return Err("lost the leader lease".into());
    }
    Ok(())
}

/// Waits until this replica holds the Lease (`Some`) or `stopped` resolves (`None`).
///
/// kube-lease-manager's standby sleeps until the expiry it last read, so on its own it sees a Lease released on
/// SIGTERM only when the old claim would have lapsed. A watch of the one Lease (by name, which the chart's Role
/// allows) notices the release; a fresh manager then reads the Lease anew and claims it at once.
async fn acquire(
    lease: &LeaseSettings,
    client: &Client,
    stopped: impl std::future::Future<Output = ()>,
) -> Result<Option<kube_lease_manager::LeaseManager>, Box<dyn std::error::Error>> {
    let api = Api::<Lease>::namespaced(client.clone(), &lease.namespace);
    let released = watcher(api, watcher::Config::default().fields(&format!("metadata.name={}", lease.name)))
        .backoff(WatchBackoff::default())
        .touched_objects()
        .filter_map(|l| async move {
            match l {
                Ok(l) => l.spec.and_then(|s| s.holder_identity).is_none().then_some(()),
                Err(e) => {
                    tracing::debug!(error = %e, "watching the Lease");
                    None
                }
            }
        });
    let mut released = std::pin::pin!(released);
    let mut stopped = std::pin::pin!(stopped);
    let mut failures = 0u32;
    loop {
        let manager = match manager(lease, client).await {
            Ok(m) => m,
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "could not read the leader Lease");
                tokio::select! {
                    _ = &mut stopped => return Ok(None),
                    _ = tokio::time::sleep(retry_after(failures)) => continue,
                }
            }
        };
        tokio::select! {
            _ = &mut stopped => return Ok(None),
            r = manager.changed() => match r {
                Ok(true) => return Ok(Some(manager)),
                Ok(false) => {}
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "could not claim the leader Lease");
                    tokio::select! {
                        _ = &mut stopped => return Ok(None),
                        _ = tokio::time::sleep(retry_after(failures)) => {}
                    }
                }
            },
            // Released: start over with a manager that reads the Lease fresh. (A watch never ends; if it did, this
            // branch would be disabled and the Lease's expiry would still hand it over.)
            Some(()) = released.next() => {
                // The Lease was read fine: later errors back off from the start again.
                failures = 0;
                tracing::debug!("leader Lease released");
            }
        }
    }
}

/// Resolves once this replica has seen no renewal of its own claim on the Lease for `deadline` (counted from now,
/// when it holds a fresh claim, then from each renewal it sees). Seen through a watch of the one Lease: what the
/// API server stored, not what the renewal loop attempted.
async fn renewals_lapse(client: Client, lease: LeaseSettings, deadline: Duration) {
    let api = Api::<Lease>::namespaced(client, &lease.namespace);
    let identity = lease.identity.clone();
    let renewals = watcher(api, watcher::Config::default().fields(&format!("metadata.name={}", lease.name)))
        .backoff(WatchBackoff::default())
        .touched_objects()
        .filter_map(move |l| {
            let ours = l.ok().and_then(|l| l.spec).filter(|s| s.holder_identity.as_deref() == Some(identity.as_str()));
            async move { ours.map(|s| s.renew_time) }
        });
    let mut renewals = std::pin::pin!(renewals);
    let mut last = None;
    let mut confirmed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(confirmed + deadline) => return,
            seen = renewals.next() => match seen {
                Some(renewed) if renewed != last => {
                    last = renewed;
                    confirmed = tokio::time::Instant::now();
                }
                Some(_) => {}
                // A watch never ends; if it did, the manager's own loss report still applies.
                None => std::future::pending::<()>().await,
            },
        }
    }
}

/// Resolves once the Lease shows a claim of `lease.identity` renewed at or after `since` (by this host's clock,
/// which also wrote the renewal).
async fn claim_renewed_since(client: Client, lease: &LeaseSettings, since: k8s_openapi::jiff::Timestamp) {
    let api = Api::<Lease>::namespaced(client, &lease.namespace);
    let identity = lease.identity.clone();
    let renewed = watcher(api, watcher::Config::default().fields(&format!("metadata.name={}", lease.name)))
        .backoff(WatchBackoff::default())
        .touched_objects()
        .filter_map(move |l| {
            let fresh = l.ok().and_then(|l| l.spec).is_some_and(|s| {
                s.holder_identity.as_deref() == Some(identity.as_str()) && s.renew_time.is_some_and(|t| t.0 >= since)
            });
            async move { fresh.then_some(()) }
        });
    let mut renewed = std::pin::pin!(renewed);
    if renewed.next().await.is_none() {
        std::future::pending::<()>().await;
    }
}

/// The claim is renewed every third of its duration (kube-lease-manager renews `grace` before expiry)...
fn renew_grace(duration_seconds: u64) -> u64 {
    (duration_seconds.max(2) * 2 / 3).max(1)
}

/// ...and a leader that has seen no renewal for two thirds of it stops: two renewals missed, and a third of the
/// duration left before a standby may claim the Lease (client-go's leader election: 10 s of a 15 s lease).
fn renew_deadline(duration_seconds: u64) -> Duration {
    Duration::from_secs(duration_seconds.max(2)) * 2 / 3
}

async fn manager(
    lease: &LeaseSettings,
    client: &Client,
) -> Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError> {
    let duration = lease.duration_seconds.max(2);
    kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(duration)
        .with_grace(renew_grace(duration))
        .build()
        .await
}

/// 1 s, 2 s, 4 s … at most 30 s between attempts after API errors.
fn retry_after(failures: u32) -> Duration {
    Duration::from_secs((1u64 << (failures.clamp(1, 6) - 1)).min(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_stops_before_a_standby_may_claim_its_lapsed_lease() {
        for duration in [2u64, 6, 15, 60] {
            let renew_every = Duration::from_secs(duration - renew_grace(duration));
            let deadline = renew_deadline(duration);
            assert!(renew_grace(duration) < duration, "kube-lease-manager needs grace < duration");
            assert!(deadline > renew_every, "{duration} s: one late renewal does not stop the leader");
            assert!(deadline < Duration::from_secs(duration), "{duration} s: stopped before the Lease lapses");
        }
        assert_eq!(renew_deadline(15), Duration::from_secs(10));
        assert_eq!(15 - renew_grace(15), 5, "renewed every 5 s");
    }

    #[test]
    fn retries_back_off_up_to_30_seconds() {
        let secs: Vec<u64> = (0..9).map(|f| retry_after(f).as_secs()).collect();
        assert_eq!(secs, [1, 1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
