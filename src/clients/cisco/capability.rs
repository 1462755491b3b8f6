//! API key capabilities (docs/vendor-apis.md §9.1) and the read-only request that proves each one (§9.2).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

// The CRD reuses this type (`spec.capabilities`, the status lists): one definition of the vendor's vocabulary.
/// Secure Workload OpenAPI capabilities, exactly as the vendor names them (ticked when the key is made in the UI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    SensorManagement,
    // Older Tetration releases only; not in the 3.10 list.
    HwSensorManagement,
    SoftwareDownload,
    FlowInventoryQuery,
    UserRoleScopeManagement,
    UserDataUpload,
    AppPolicyManagement,
    ExternalIntegration,
    // Site admins only.
    ApplianceManagement,
    // Site admins only.
    ApplianceMonitoring,
}

impl Capability {
    pub const ALL: [Capability; 10] = [
        Capability::SensorManagement,
        Capability::HwSensorManagement,
        Capability::SoftwareDownload,
        Capability::FlowInventoryQuery,
        Capability::UserRoleScopeManagement,
        Capability::UserDataUpload,
        Capability::AppPolicyManagement,
        Capability::ExternalIntegration,
        Capability::ApplianceManagement,
        Capability::ApplianceMonitoring,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::SensorManagement => "sensor_management",
            Capability::HwSensorManagement => "hw_sensor_management",
            Capability::SoftwareDownload => "software_download",
            Capability::FlowInventoryQuery => "flow_inventory_query",
            Capability::UserRoleScopeManagement => "user_role_scope_management",
            Capability::UserDataUpload => "user_data_upload",
            Capability::AppPolicyManagement => "app_policy_management",
            Capability::ExternalIntegration => "external_integration",
            Capability::ApplianceManagement => "appliance_management",
            Capability::ApplianceMonitoring => "appliance_monitoring",
        }
    }

    /// Path (under `/openapi/v1`) of the read-only GET that succeeds only with this capability;
    /// `None` when we know no such request, so the capability can only be reported as unverified.
    pub fn probe_path(self) -> Option<&'static str> {
        match self {
            Capability::UserRoleScopeManagement => Some("/roles"),
            Capability::AppPolicyManagement => Some("/applications"),
            Capability::SensorManagement => Some("/sensors"),
            Capability::FlowInventoryQuery => Some("/flowsearch/dimensions"),
            _ => None,
        }
    }

    /// Every capability that has a probe.
    pub fn probeable() -> impl Iterator<Item = Capability> {
        Self::ALL.into_iter().filter(|c| c.probe_path().is_some())
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown capability name (the name itself is not secret and is kept for the message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown Secure Workload capability {0:?}")]
pub struct UnknownCapability(pub String);

impl FromStr for Capability {
    type Err = UnknownCapability;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| UnknownCapability(s.to_owned()))
    }
}

/// The UI's `capability_names` form: one comma-separated string.
pub fn join_capability_names(capabilities: &[Capability]) -> String {
    capabilities.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_through_serde_and_from_str() {
        for c in Capability::ALL {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<Capability>(&json).unwrap(), c);
            assert_eq!(c.as_str().parse::<Capability>().unwrap(), c);
        }
        assert!("hw_sensor_management".parse::<Capability>().is_ok());
        assert!("appliance_monitoring".parse::<Capability>().is_ok());
        assert!("root".parse::<Capability>().is_err());
    }

    #[test]
    fn probe_table_matches_the_design() {
        let probed: Vec<_> = Capability::probeable().map(|c| (c.as_str(), c.probe_path().unwrap())).collect();
        assert_eq!(
            probed,
            vec![
                ("sensor_management", "/sensors"),
                ("flow_inventory_query", "/flowsearch/dimensions"),
                ("user_role_scope_management", "/roles"),
                ("app_policy_management", "/applications"),
            ]
        );
        assert_eq!(Capability::SoftwareDownload.probe_path(), None);
        assert_eq!(Capability::ApplianceManagement.probe_path(), None);
    }

    #[test]
    fn capability_names_are_comma_joined() {
        assert_eq!(
            join_capability_names(&[Capability::SensorManagement, Capability::FlowInventoryQuery]),
            "sensor_management,flow_inventory_query"
        );
    }
}
