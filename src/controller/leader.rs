//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): only the holder runs the controllers,
//! `/readyz` follows the lease, and shutdown releases it so a standby takes over at once.

use std::{sync::Arc, time::Duration};

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
    let LeaseSettings { name, namespace, identity, duration_seconds } = lease;
    let duration = (*duration_seconds).max(2);
    let manager = kube_lease_manager::LeaseManagerBuilder::new(ctx.client.clone(), name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .build()
        .await?;
    let (mut leader, lease_task) = manager.watch().await;
    tracing::info!(%identity, lease = %name, %namespace, "waiting for leadership");
    let became_leader = tokio::select! {
        _ = stopped() => false,
        r = leader.wait_for(|is| *is) => r.is_ok(),
    };
    let stop = stopped();
    let mut lost = false;
    if became_leader {
        tracing::info!(%identity, version = env!("CARGO_PKG_VERSION"), scope = ?scope, "leader: starting controllers");
        ready.set(true);
        let mut watch_loss = leader.clone();
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
        let loss = tokio::spawn(async move {
            if watch_loss.wait_for(|is| !*is).await.is_ok() {
                let _ = lost_tx.send(());
            }
        });
        let shutdown = async move {
            tokio::select! {
                _ = stop => {}
                _ = lost_rx => {}
            }
        };
        super::run(ctx, scope, Box::pin(shutdown)).await;
        lost = !*leader.borrow();
        loss.abort();
    }
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
