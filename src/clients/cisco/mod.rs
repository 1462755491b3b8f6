//! Cisco Secure Workload (formerly Tetration) client.
//!
//! The OpenAPI cannot mint keys (docs/vendor-apis.md §8), so the operator imports a key pair made in the UI
//! and proves it: [`signer`] signs exactly as the official `tetpyclient` 1.0.8 does, [`CiscoClient`]
//! sends signed calls under `/openapi/v1`, and [`CiscoClient::verify`] checks the pair and each
//! capability with read-only probes ([`Verification`]). [`ApiCredentials`] reads and writes the
//! `credentials.json` tetpyclient loads.
//!
//! [`ui`] is **experimental**: it mints and deletes keys through the web UI's private session API,
//! which Cisco does not document or support.
//!
//! Answers to a refused pair (recorded on a real tenant): 401 `Unknown credentials` for an unknown key,
//! 403 `Invalid request` for a signature the service does not accept. The answer for a missing
//! capability is UNCONFIRMED; any other 403 is read as that.

pub mod capability;
pub mod client;
pub mod credentials;
pub mod reach;
pub mod signer;
pub mod ui;
pub mod verify;

pub use capability::{Capability, UnknownCapability};
pub use client::{ApiCall, ApiResponse, CiscoClient, Rejection, RetryPolicy};
pub use credentials::{ApiCredentials, CredentialsError};
pub use ui::{CreatedCredential, UiCredential, UiLogin, UiSession};
pub use verify::{Liveness, Verification};
