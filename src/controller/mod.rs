//! Where Kubernetes and the vendors meet: thin reconcilers (one folder per kind, `mod.rs` + the pure `plan.rs`), the
//! shared reconcile frame (`reconcile`), providers and their one vendor factory (`provider::connect`), the Secret
//! builder and its I/O (`secret`), rollouts, events, metrics; and the watches (`watches`) that `run` wires together.

pub mod api_client;
pub mod cache;
pub mod context;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod intent;
pub mod leader;
pub mod managed;
pub mod metrics;
pub mod provider;
pub mod reconcile;
pub mod rollout;
pub mod run;
pub mod secret;
pub mod secure_workload_credential;
pub mod server;
pub mod vendor_key;
pub mod versions;
pub mod wakeups;
pub mod watches;
pub mod workload_api_key;

pub use context::{Context, Settings};
pub use error::Error;
pub use run::run;
pub use watches::{Scope, queue_key, slim};
