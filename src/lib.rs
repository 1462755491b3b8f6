//! workload-key-operator: provisions vendor API credentials from custom resources into Secrets.
pub mod api;
pub mod clients;
pub mod controller;
/// The `kubectl workloadkeys` plugin (binary `kubectl-workloadkeys`).
pub mod plugin;
#[cfg(feature = "sim")]
pub mod sim;
