//! Trend Micro clients: the Workload Security / Deep Security Manager `/api` with DSM-style API keys
//! ([`DeepSecurityClient`], [`DeepSecurityApi`]), and the account-level APIs of Trend Cloud One ([`CloudOneClient`]) and Trend
//! Vision One ([`VisionOneClient`]) behind one [`KeyApi`].
//!
//! DeepSecurity:
//! Authenticates with an `api-secret-key` or, to bootstrap the first key, with a session opened by user
//! name and password (`POST /sessions`, `sID` cookie and `rID` header). Every request waits for the
//! per-endpoint [`RateLimiter`](crate::clients::RateLimiter); 429 and transient failures are retried
//! within a [`RetryPolicy`], never repeating a create or regenerate the server may have processed.

mod cloud_one;
mod deep_security;
mod keys;
mod model;
mod retry;
mod transport;
mod vision_one;
mod wire;

use futures::future::BoxFuture;

pub use cloud_one::{CloudOneClient, CloudOneKey, CloudOneRole};
pub use deep_security::{Auth, DeepSecurityClient, LoginCredentials, SessionInfo};
pub use keys::{ExpiryMonths, IssuedKey, KeyApi, KeyInfo, KeyRequest, TrendApiKind};
pub use model::{
    ApiKey, ApiKeyChanges, Comparison, IssuedApiKey, Locale, NewApiKey, Role, SearchCriteria, SearchFilter, StringTest,
};
pub use retry::RetryPolicy;
pub use vision_one::{VisionOneClient, VisionOneKey, VisionOneKeyChanges};

use crate::clients::VendorError;

/// The future every [`DeepSecurityApi`] operation returns.
pub type TrendFuture<'a, T> = BoxFuture<'a, Result<T, VendorError>>;

/// What the controllers need from a Workload Security endpoint. Object-safe: the provider factory
/// (`controller::provider::connect`) caches one client per endpoint and credential as an `Arc<dyn DeepSecurityApi>`.
/// Controller tests run against the vendor simulator over HTTPS, not a fake.
pub trait DeepSecurityApi: Send + Sync {
    /// The role named exactly `name`, if any.
    fn find_role_by_name<'a>(&'a self, name: &'a str) -> TrendFuture<'a, Option<Role>>;
    fn describe_role(&self, id: i64) -> TrendFuture<'_, Role>;
    /// Creates a key; the result holds its secret (shown only now).
    fn create_api_key<'a>(&'a self, key: &'a NewApiKey) -> TrendFuture<'a, IssuedApiKey>;
    fn describe_api_key(&self, id: i64) -> TrendFuture<'_, ApiKey>;
    /// Every key named exactly `key_name`, by ascending ID.
    fn find_api_keys_by_name<'a>(&'a self, key_name: &'a str) -> TrendFuture<'a, Vec<ApiKey>>;
    fn modify_api_key<'a>(&'a self, id: i64, changes: &'a ApiKeyChanges) -> TrendFuture<'a, ApiKey>;
    /// Deletes a key; `NotFound` when it is already gone.
    fn delete_api_key(&self, id: i64) -> TrendFuture<'_, ()>;
    /// A new secret for the key; the old one stops working at once.
    fn regenerate_secret(&self, id: i64) -> TrendFuture<'_, IssuedApiKey>;
    /// The key the client authenticates with.
    fn describe_current_api_key(&self) -> TrendFuture<'_, ApiKey>;
}
