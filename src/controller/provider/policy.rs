//! Pure checks of a provider's rules: which namespaces may use it, which roles, lifetimes and capabilities it may
//! issue. No I/O; each refusal is a sentence that names what is allowed.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::{AllowedNamespaces, Capability, DeletionPolicy, IssuePolicy, RoleRef, parse_duration};

/// Whether a namespace with `labels` may use a `ClusterKeyProvider` with `allowed` (absent: none may).
pub fn namespace_allowed(
    allowed: Option<&AllowedNamespaces>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let Some(allowed) = allowed else { return false };
    allowed.names.iter().any(|n| n == namespace)
        || allowed.selector.as_ref().is_some_and(|s| selector_matches(s, labels))
}

/// A human summary of `allowed`, for messages.
pub fn describe_allowed(allowed: Option<&AllowedNamespaces>) -> String {
    let Some(allowed) = allowed else { return "no namespace (spec.allowedNamespaces is not set)".into() };
    let mut parts = Vec::new();
    if !allowed.names.is_empty() {
        parts.push(format!("namespaces {}", allowed.names.join(", ")));
    }
    if let Some(sel) = &allowed.selector {
        parts.push(format!("namespaces labelled {}", describe_selector(sel)));
    }
    if parts.is_empty() { "no namespace".into() } else { parts.join(" and ") }
}

/// Kubernetes label-selector semantics: every `matchLabels` pair and every `matchExpressions` requirement holds.
/// An empty selector matches every namespace, as in Kubernetes.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let exprs = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            // Unknown operators are refused by the API server; never match one here.
            _ => false,
        }
    });
    pairs && exprs
}

fn describe_selector(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector.match_labels.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            op => format!("{} {} ({values})", e.key, op.to_lowercase()),
        });
    }
    if parts.is_empty() { "(any)".into() } else { parts.join(", ") }
}

fn describe_role(r: &RoleRef) -> String {
    match (&r.name, r.id) {
        (Some(name), _) => format!("{name:?}"),
        (None, Some(id)) => format!("ID {id}"),
        (None, None) => "?".into(),
    }
}

/// Trend: a role asked for by name matches an allowed entry by name; by ID, an entry by ID. No lookup is needed,
/// so a refusal costs no vendor call.
pub fn check_role(policy: &IssuePolicy, role: &RoleRef) -> Result<(), String> {
    let Some(allowed) = &policy.roles else { return Ok(()) };
    let ok = allowed.iter().any(|a| match (&role.name, role.id) {
        (Some(name), _) => a.name.as_deref() == Some(name.as_str()),
        (None, Some(id)) => a.id == Some(id),
        (None, None) => false,
    });
    if ok {
        return Ok(());
    }
    let list: Vec<String> = allowed.iter().map(describe_role).collect();
    Err(format!(
        "role {} is not allowed; allowed roles: {}",
        describe_role(role),
        if list.is_empty() { "none".into() } else { list.join(", ") }
    ))
}

/// Trend: the lifetime a key gets. A requested one longer than `maxExpiresAfter` is refused; none requested means
/// the cap. Returns the effective `expiresAfter` text.
pub fn effective_expires_after(policy: &IssuePolicy, requested: Option<&str>) -> Result<Option<String>, String> {
    capped(policy, "expiresAfter", requested)
}

/// Trend Cloud One, whose keys do not expire: `maxExpiresAfter` caps how long a key is used instead, its
/// `rotation.every` (none requested means the cap). Returns the effective `rotation.every` text.
pub fn effective_rotation_every(policy: &IssuePolicy, requested: Option<&str>) -> Result<Option<String>, String> {
    capped(policy, "rotation.every", requested)
}

/// `requested` (the spec's `field`) within `maxExpiresAfter`, or the cap when nothing is requested.
fn capped(policy: &IssuePolicy, field: &str, requested: Option<&str>) -> Result<Option<String>, String> {
    let Some(max_text) = policy.max_expires_after.as_deref() else { return Ok(requested.map(str::to_owned)) };
    let max = parse_duration(max_text)?;
    match requested {
        None => Ok(Some(max_text.to_owned())),
        Some(text) => {
            let asked: Duration = parse_duration(text)?;
            if asked > max {
                Err(format!("{field} {text} is longer than the provider's maxExpiresAfter {max_text}"))
            } else {
                Ok(Some(text.to_owned()))
            }
        }
    }
}

/// Cisco: every capability a resource requires or mints must be allowed.
pub fn check_capabilities(policy: &IssuePolicy, wanted: &[Capability]) -> Result<(), String> {
    let Some(allowed) = &policy.capabilities else { return Ok(()) };
    let refused: Vec<&str> = wanted.iter().filter(|c| !allowed.contains(c)).map(|c| c.as_str()).collect();
    if refused.is_empty() {
        return Ok(());
    }
    let allowed: Vec<&str> = allowed.iter().map(|c| c.as_str()).collect();
    Err(format!(
        "capabilities {} are not allowed; allowed capabilities: {}",
        refused.join(", "),
        if allowed.is_empty() { "none".into() } else { allowed.join(", ") }
    ))
}

/// The longest time a resource can keep a key alive beyond its lifetime, each bounded by the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlap {
    /// `rotation.gracePeriod`, bounded by `maxGracePeriod`.
    GracePeriod,
    /// `rotation.rolloutTimeout`, bounded by `maxRolloutTimeout`.
    RolloutTimeout,
}

impl Overlap {
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Overlap::GracePeriod => ("spec.rotation.gracePeriod", "maxGracePeriod"),
            Overlap::RolloutTimeout => ("spec.rotation.rolloutTimeout", "maxRolloutTimeout"),
        }
    }
}

/// A resource's `what` (`requested`, or `default` when it sets none) within the provider's bound. The default
/// counts: a provider that bounds below it requires the resource to set a shorter value, so the refusal says so.
pub fn check_overlap(
    policy: &IssuePolicy,
    what: Overlap,
    requested: Option<&str>,
    default: Duration,
) -> Result<(), String> {
    let (field, bound) = what.names();
    let max_text = match what {
        Overlap::GracePeriod => policy.max_grace_period.as_deref(),
        Overlap::RolloutTimeout => policy.max_rollout_timeout.as_deref(),
    };
    let Some(max_text) = max_text else { return Ok(()) };
    let max = parse_duration(max_text)?;
    match requested {
        Some(text) if parse_duration(text)? > max => {
            Err(format!("{field} {text} is longer than the provider's {bound} {max_text}"))
        }
        Some(_) => Ok(()),
        None if default > max => Err(format!(
            "{field} is not set and its default {} is longer than the provider's {bound} {max_text}: set one of at \
             most {max_text}",
            go_duration(default)
        )),
        None => Ok(()),
    }
}

/// `rotation.rolloutTimeout` within `maxRolloutTimeout`: the one set, or its default where it matters, when the
/// resource restarts workloads (`restarts`) whose rollouts a replaced key waits for.
pub fn check_rollout_timeout(policy: &IssuePolicy, requested: Option<&str>, restarts: bool) -> Result<(), String> {
    if requested.is_none() && !restarts {
        return Ok(());
    }
    check_overlap(policy, Overlap::RolloutTimeout, requested, crate::api::DEFAULT_ROLLOUT_TIMEOUT)
}

/// `d` as the CRDs write durations (`10m`, `1h`, `90s`).
fn go_duration(d: Duration) -> String {
    match d.as_secs() {
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Whether the provider allows `asked` as the resource's `deletionPolicy`.
pub fn check_deletion_policy(policy: &IssuePolicy, asked: DeletionPolicy) -> Result<(), String> {
    let Some(allowed) = &policy.deletion_policies else { return Ok(()) };
    if allowed.contains(&asked) {
        return Ok(());
    }
    let list: Vec<String> = allowed.iter().map(|p| format!("{p:?}")).collect();
    Err(format!("spec.deletionPolicy {asked:?} is not allowed; allowed deletion policies: {}", list.join(", ")))
}

/// Cisco: `policy.minVerifyInterval` when the provider sets none.
pub const DEFAULT_MIN_VERIFY_INTERVAL: &str = "5m";

/// Cisco: the `verifyInterval` a SecureWorkloadCredential gets. One shorter than `minVerifyInterval` (default
/// [`DEFAULT_MIN_VERIFY_INTERVAL`]) is refused; none requested means the longer of `default` and the minimum.
/// Returns the effective `verifyInterval` text (`None`: `default`).
pub fn effective_verify_interval(
    policy: &IssuePolicy,
    requested: Option<&str>,
    default: Duration,
) -> Result<Option<String>, String> {
    let min_text = policy.min_verify_interval.as_deref().unwrap_or(DEFAULT_MIN_VERIFY_INTERVAL);
    let min = parse_duration(min_text)?;
    match requested {
        None if min > default => Ok(Some(min_text.to_owned())),
        None => Ok(None),
        Some(text) if parse_duration(text)? < min => {
            let whose = if policy.min_verify_interval.is_some() { "the provider's" } else { "the default" };
            Err(format!("verifyInterval {text} is shorter than {whose} minVerifyInterval {min_text}"))
        }
        Some(text) => Ok(Some(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn role_name(n: &str) -> RoleRef {
        RoleRef { name: Some(n.into()), id: None }
    }

    #[test]
    fn namespaces_by_name_or_selector_and_none_when_absent() {
        let allowed = AllowedNamespaces {
            names: vec!["payments".into()],
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("team".into(), "platform".into())])),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["sandbox".into()]),
                }]),
            }),
        };
        assert!(namespace_allowed(Some(&allowed), "payments", &labels(&[])));
        assert!(namespace_allowed(Some(&allowed), "x", &labels(&[("team", "platform")])));
        assert!(!namespace_allowed(Some(&allowed), "x", &labels(&[("team", "platform"), ("tier", "sandbox")])));
        assert!(!namespace_allowed(Some(&allowed), "x", &labels(&[("team", "other")])));
        assert!(!namespace_allowed(None, "payments", &labels(&[])), "absent allows no namespace");
        assert!(describe_allowed(Some(&allowed)).contains("payments"));
        assert!(describe_allowed(Some(&allowed)).contains("team=platform"));
    }

    #[test]
    fn selector_operators() {
        let req = |op: &str, values: &[&str]| LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "k".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
        };
        let l = labels(&[("k", "a")]);
        assert!(selector_matches(&req("In", &["a", "b"]), &l));
        assert!(!selector_matches(&req("In", &["b"]), &l));
        assert!(selector_matches(&req("Exists", &[]), &l));
        assert!(!selector_matches(&req("DoesNotExist", &[]), &l));
        assert!(selector_matches(&req("DoesNotExist", &[]), &labels(&[])));
        assert!(selector_matches(&req("NotIn", &["b"]), &labels(&[])));
        assert!(!selector_matches(&req("Bogus", &[]), &l));
        assert!(selector_matches(&LabelSelector::default(), &l), "empty selector matches everything");
    }

    #[test]
    fn roles_match_like_for_like_and_the_refusal_names_the_allowed() {
        let policy = IssuePolicy {
            roles: Some(vec![role_name("Auditor"), RoleRef { name: None, id: Some(7) }]),
            ..Default::default()
        };
        assert!(check_role(&policy, &role_name("Auditor")).is_ok());
        assert!(check_role(&policy, &RoleRef { name: None, id: Some(7) }).is_ok());
        let err = check_role(&policy, &role_name("Full Access")).unwrap_err();
        assert!(err.contains("\"Full Access\"") && err.contains("\"Auditor\", ID 7"), "{err}");
        assert!(check_role(&policy, &RoleRef { name: None, id: Some(1) }).is_err());
        assert!(check_role(&IssuePolicy::default(), &role_name("Full Access")).is_ok(), "absent: any role");
        let none = IssuePolicy { roles: Some(vec![]), ..Default::default() };
        assert!(check_role(&none, &role_name("Auditor")).unwrap_err().contains("allowed roles: none"));
    }

    #[test]
    fn lifetime_is_capped_and_defaults_to_the_cap() {
        let policy = IssuePolicy { max_expires_after: Some("720h".into()), ..Default::default() };
        assert_eq!(effective_expires_after(&policy, None), Ok(Some("720h".into())));
        assert_eq!(effective_expires_after(&policy, Some("336h")), Ok(Some("336h".into())));
        assert_eq!(effective_expires_after(&policy, Some("720h")), Ok(Some("720h".into())));
        let err = effective_expires_after(&policy, Some("721h")).unwrap_err();
        assert!(err.contains("721h") && err.contains("720h"), "{err}");
        assert_eq!(effective_expires_after(&IssuePolicy::default(), None), Ok(None));
    }

    #[test]
    fn cloud_one_rotation_every_is_capped_and_defaults_to_the_cap() {
        let policy = IssuePolicy { max_expires_after: Some("720h".into()), ..Default::default() };
        assert_eq!(effective_rotation_every(&policy, None), Ok(Some("720h".into())));
        assert_eq!(effective_rotation_every(&policy, Some("24h")), Ok(Some("24h".into())));
        let err = effective_rotation_every(&policy, Some("800h")).unwrap_err();
        assert!(err.starts_with("rotation.every 800h") && err.contains("maxExpiresAfter 720h"), "{err}");
        assert_eq!(effective_rotation_every(&IssuePolicy::default(), Some("1h")), Ok(Some("1h".into())));
    }

    #[test]
    fn overlaps_are_bounded_and_the_default_counts() {
        let open = IssuePolicy::default();
        let ten_min = Duration::from_secs(600);
        assert!(check_overlap(&open, Overlap::GracePeriod, Some("100h"), ten_min).is_ok(), "no bound, no refusal");
        let policy = IssuePolicy {
            max_grace_period: Some("5m".into()),
            max_rollout_timeout: Some("1h".into()),
            ..Default::default()
        };
        assert!(check_overlap(&policy, Overlap::GracePeriod, Some("5m"), ten_min).is_ok());
        let e = check_overlap(&policy, Overlap::GracePeriod, Some("6m"), ten_min).unwrap_err();
        assert_eq!(e, "spec.rotation.gracePeriod 6m is longer than the provider's maxGracePeriod 5m");
        let e = check_overlap(&policy, Overlap::GracePeriod, None, ten_min).unwrap_err();
        assert_eq!(
            e,
            "spec.rotation.gracePeriod is not set and its default 10m is longer than the provider's maxGracePeriod \
             5m: set one of at most 5m"
        );
        assert!(check_overlap(&policy, Overlap::RolloutTimeout, None, Duration::from_secs(1800)).is_ok());
        let short = IssuePolicy { max_rollout_timeout: Some("10m".into()), ..Default::default() };
        assert!(check_rollout_timeout(&short, None, false).is_ok(), "no restarts: its default does not matter");
        let e = check_rollout_timeout(&short, None, true).unwrap_err();
        assert!(e.starts_with("spec.rotation.rolloutTimeout is not set and its default 30m"), "{e}");
        assert!(check_rollout_timeout(&short, Some("1h"), false).is_err(), "one set is bounded all the same");
        let e = check_overlap(&policy, Overlap::RolloutTimeout, Some("2h"), Duration::from_secs(1800)).unwrap_err();
        assert_eq!(e, "spec.rotation.rolloutTimeout 2h is longer than the provider's maxRolloutTimeout 1h");
    }

    #[test]
    fn deletion_policies_must_be_allowed() {
        assert!(check_deletion_policy(&IssuePolicy::default(), DeletionPolicy::Retain).is_ok());
        let policy = IssuePolicy { deletion_policies: Some(vec![DeletionPolicy::Delete]), ..Default::default() };
        assert!(check_deletion_policy(&policy, DeletionPolicy::Delete).is_ok());
        let e = check_deletion_policy(&policy, DeletionPolicy::Retain).unwrap_err();
        assert_eq!(e, "spec.deletionPolicy Retain is not allowed; allowed deletion policies: Delete");
    }

    #[test]
    fn verify_interval_has_a_floor_defaulting_to_five_minutes() {
        let hour = Duration::from_secs(3600);
        let default = IssuePolicy::default();
        assert_eq!(effective_verify_interval(&default, None, hour), Ok(None), "the resource's default stands");
        assert_eq!(effective_verify_interval(&default, Some("5m"), hour), Ok(Some("5m".into())));
        let err = effective_verify_interval(&default, Some("1s"), hour).unwrap_err();
        assert_eq!(err, "verifyInterval 1s is shorter than the default minVerifyInterval 5m");
        let policy = IssuePolicy { min_verify_interval: Some("15m".into()), ..Default::default() };
        let err = effective_verify_interval(&policy, Some("10m"), hour).unwrap_err();
        assert_eq!(err, "verifyInterval 10m is shorter than the provider's minVerifyInterval 15m");
        assert_eq!(effective_verify_interval(&policy, Some("20m"), hour), Ok(Some("20m".into())));
        let lax = IssuePolicy { min_verify_interval: Some("1s".into()), ..Default::default() };
        assert_eq!(effective_verify_interval(&lax, Some("3s"), hour), Ok(Some("3s".into())));
        // A floor above the resource's default becomes its interval.
        let strict = IssuePolicy { min_verify_interval: Some("2h".into()), ..Default::default() };
        assert_eq!(effective_verify_interval(&strict, None, hour), Ok(Some("2h".into())));
    }

    #[test]
    fn capabilities_must_be_allowed() {
        let policy = IssuePolicy { capabilities: Some(vec![Capability::FlowInventoryQuery]), ..Default::default() };
        assert!(check_capabilities(&policy, &[Capability::FlowInventoryQuery]).is_ok());
        let err =
            check_capabilities(&policy, &[Capability::FlowInventoryQuery, Capability::SensorManagement]).unwrap_err();
        assert!(err.contains("sensor_management") && err.contains("allowed capabilities: flow_inventory_query"));
        assert!(check_capabilities(&IssuePolicy::default(), &[Capability::SensorManagement]).is_ok());
    }
}
