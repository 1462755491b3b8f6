//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): only the holder runs the controllers,
//! `/readyz` follows the lease, and shutdown releases it so a standby takes over at once.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};

use super::{Context, Scope, server::Readiness};

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
    let Some(manager) = acquire(lease, &ctx.client, stopped()).await? else {
        ready.set(false);
        return Ok(());
    };
    // Held: the manager's own loop renews the Lease and reports its loss.
    let (leader, lease_task) = manager.watch().await;
    tracing::info!(%identity, version = env!("CARGO_PKG_VERSION"), scope = ?scope, "leader: starting controllers");
    ready.set(true);
    let mut watch_loss = leader.clone();
    let stop = stopped();
    let shutdown = async move {
        tokio::select! {
            _ = stop => {}
            _ = watch_loss.wait_for(|is| !*is) => {}
        }
    };
    super::run(ctx, scope, Box::pin(shutdown)).await;
    // The lease task ends only on a failure it could not recover from: as good as lost.
    let lost = !*leader.borrow() || lease_task.is_finished();
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
        .default_backoff()
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

async fn manager(
    lease: &LeaseSettings,
    client: &Client,
) -> Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError> {
    let duration = lease.duration_seconds.max(2);
    kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
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
    fn retries_back_off_up_to_30_seconds() {
        let secs: Vec<u64> = (0..9).map(|f| retry_after(f).as_secs()).collect();
        assert_eq!(secs, [1, 1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
