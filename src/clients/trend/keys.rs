//! What the controller needs of the two account-level Trend APIs (Cloud One accounts, Vision One IAM): one
//! vocabulary of string-identified keys and roles, and the [`KeyApi`] trait both clients implement.

use std::{fmt, str::FromStr};

use super::{Locale, TrendFuture};
use crate::clients::SecretString;

/// Which Trend API a provider speaks. The CRD reuses this type (`spec.trend.api`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub enum TrendApiKind {
    /// Deep Security Manager / legacy Workload Security `/api` (`api-secret-key`).
    #[default]
    DeepSecurity,
    /// Trend Cloud One accounts API (`Authorization: ApiKey`, `Api-Version: v1`).
    CloudOne,
    /// Trend Vision One `/v3.0/iam/apiKeys` (`Authorization: Bearer`).
    VisionOne,
}

impl TrendApiKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TrendApiKind::DeepSecurity => "DeepSecurity",
            TrendApiKind::CloudOne => "CloudOne",
            TrendApiKind::VisionOne => "VisionOne",
        }
    }
}

impl fmt::Display for TrendApiKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Vision One key lifetimes (`monthsToExpiration`); the API accepts nothing in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExpiryMonths {
    One = 1,
    Three = 3,
    Six = 6,
    Twelve = 12,
}

impl ExpiryMonths {
    pub const ALL: [ExpiryMonths; 4] =
        [ExpiryMonths::One, ExpiryMonths::Three, ExpiryMonths::Six, ExpiryMonths::Twelve];

    pub fn months(self) -> u8 {
        self as u8
    }
}

impl FromStr for ExpiryMonths {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "1" => Ok(Self::One),
            "3" => Ok(Self::Three),
            "6" => Ok(Self::Six),
            "12" => Ok(Self::Twelve),
            other => Err(format!("monthsToExpiration must be 1, 3, 6 or 12, not {other:?}")),
        }
    }
}

/// A key to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRequest {
    /// Vision One `name` / Cloud One `alias`.
    pub name: String,
    pub description: Option<String>,
    /// As [`KeyApi::find_role`] returned it (Vision One: the role name; Cloud One: the role ID slug).
    pub role: String,
    /// Vision One only; `None` asks for a key that does not expire. Cloud One refuses `Some`.
    pub expiry: Option<ExpiryMonths>,
    /// Cloud One only (sent as `en` / `ja`); Vision One refuses `Some`.
    pub locale: Option<Locale>,
    /// Cloud One only (IANA name, sent as `timezone`); Vision One refuses `Some`.
    pub time_zone: Option<String>,
}

impl KeyRequest {
    /// A key named `name` with `role`, and nothing else set.
    pub fn new(name: impl Into<String>, role: impl Into<String>) -> Self {
        Self { name: name.into(), role: role.into(), description: None, expiry: None, locale: None, time_zone: None }
    }
}

/// A key as the vendor describes it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub role: String,
    /// Vision One `status == "enabled"`, Cloud One `enabled`.
    pub enabled: bool,
    pub expires_at: Option<jiff::Timestamp>,
}

/// A new key and the credential to use it with (shown only at create).
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub id: String,
    /// The whole credential, as sent after `Bearer ` / `ApiKey `.
    pub secret: SecretString,
    pub expires_at: Option<jiff::Timestamp>,
}

/// The operations the controller uses on Cloud One and Vision One. Object-safe: the provider factory
/// (`controller::provider::connect`) picks the client of the provider's API and caches it as an `Arc<dyn KeyApi>`.
/// Controller tests run against the vendor simulator over HTTPS, not a fake.
pub trait KeyApi: Send + Sync {
    fn api(&self) -> TrendApiKind;
    /// The role as create wants it, when one is named (or identified) exactly `name`.
    fn find_role<'a>(&'a self, name: &'a str) -> TrendFuture<'a, Option<String>>;
    /// Creates a key. Never repeated after a failure that may hide a created key: callers recover by name.
    fn create_key<'a>(&'a self, key: &'a KeyRequest) -> TrendFuture<'a, IssuedKey>;
    /// Every key named exactly `name` (names are not known to be unique).
    fn find_keys_by_name<'a>(&'a self, name: &'a str) -> TrendFuture<'a, Vec<KeyInfo>>;
    /// Deletes a key; `NotFound` when it is already gone.
    fn delete_key<'a>(&'a self, id: &'a str) -> TrendFuture<'a, ()>;
    /// A read-only call proving the client's own credential; a sentence describing what was proven.
    fn check_credential(&self) -> TrendFuture<'_, String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_months_are_the_four_the_api_takes() {
        assert_eq!("6".parse::<ExpiryMonths>().unwrap().months(), 6);
        assert!("2".parse::<ExpiryMonths>().is_err());
        assert!("0".parse::<ExpiryMonths>().is_err());
        assert_eq!(ExpiryMonths::ALL.map(ExpiryMonths::months), [1, 3, 6, 12]);
    }

    #[test]
    fn api_kind_serializes_as_named() {
        assert_eq!(serde_json::to_value(TrendApiKind::VisionOne).unwrap(), serde_json::json!("VisionOne"));
        assert_eq!(TrendApiKind::default(), TrendApiKind::DeepSecurity);
    }
}
