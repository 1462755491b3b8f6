//! Network partitions of a vendor listener, as the fault suite needs them: the vendor accepting connections but
//! never answering (`hang`), or refusing them (`refuse`: the listening socket is closed, so a connect fails with
//! "connection refused", and every open connection is closed). Path-level faults are in [`super::faults`].

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// How a vendor listener treats connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Partition {
    /// Served normally.
    #[default]
    None,
    /// New connections are accepted and held without a TLS handshake; requests on open connections are never
    /// answered. When the partition ends, what was held is closed unanswered.
    Hang,
    /// Nothing listens on the port (connections are refused) and open connections are closed.
    Refuse,
}

/// One listener's partition state; clones share it.
#[derive(Debug, Clone)]
pub struct Reachability {
    tx: watch::Sender<Partition>,
}

impl Default for Reachability {
    fn default() -> Self {
        Self { tx: watch::Sender::new(Partition::None) }
    }
}

impl Reachability {
    pub fn set(&self, p: Partition) {
        self.tx.send_replace(p);
    }

    pub fn get(&self) -> Partition {
        *self.tx.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Partition> {
        self.tx.subscribe()
    }
}

/// Resolves once the partition is no longer `p` (or the state is gone).
pub async fn until_not(rx: &mut watch::Receiver<Partition>, p: Partition) {
    let _ = rx.wait_for(|now| *now != p).await;
}

/// Resolves once the partition is `p`.
pub async fn until(rx: &mut watch::Receiver<Partition>, p: Partition) {
    if rx.wait_for(|now| *now == p).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Partition;
    use crate::sim::{SimOptions, start};

    #[tokio::test]
    async fn a_partition_hangs_or_refuses_and_heals_on_the_same_port() {
        let sim = start(SimOptions::default()).await.unwrap();
        let ca = reqwest::Certificate::from_pem(sim.ca_pem.as_bytes()).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let url = format!("{}/apikeys/current", sim.info.trend_url());
        let answered = || async { client.get(&url).send().await.map(|r| r.status().as_u16()) };
        assert_eq!(answered().await.unwrap(), 400, "answered (no api-version header sent)");

        sim.partitions.trend.set(Partition::Refuse);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let refused = answered().await.unwrap_err();
        assert!(refused.is_connect(), "a refused connection: {refused:?}");
        assert_eq!(sim.partitions.cisco.get(), Partition::None, "one listener only");

        sim.partitions.trend.set(Partition::Hang);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let hung = answered().await.unwrap_err();
        assert!(hung.is_timeout(), "accepted, never answered: {hung:?}");

        sim.partitions.trend.set(Partition::None);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(answered().await.unwrap(), 400, "healed on the same port");
    }
}
