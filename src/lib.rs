//! workload-key-operator: provisions vendor API credentials from custom resources into Secrets.
pub mod api;
pub mod clients;
pub mod controller;
#[cfg(feature = "sim")]
pub mod sim;
