//! RBAC: no wildcards, and exactly the rules the operator needs.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::cases::{DEFAULT, FULLNAME, NAMESPACE, ONE_NAMESPACE, VALID_CASES, all_of, find, render};

/// (apiGroup, resource, verb) granted by a Role or ClusterRole, with resourceNames when restricted.
fn grants(role: &Value) -> BTreeSet<(String, String, String, Vec<String>)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        let names: Vec<String> = rule["resourceNames"]
            .as_array()
            .map(|a| a.iter().map(|n| n.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        for g in rule["apiGroups"].as_array().unwrap() {
            for r in rule["resources"].as_array().unwrap() {
                for v in rule["verbs"].as_array().unwrap() {
                    let s = |x: &Value| x.as_str().unwrap().to_owned();
                    out.insert((s(g), s(r), s(v), names.clone()));
                }
            }
        }
    }
    out
}

fn expected_operator_grants() -> BTreeSet<(String, String, String, Vec<String>)> {
    let mut out = BTreeSet::new();
    let mut add = |group: &str, resources: &[&str], verbs: &[&str]| {
        for r in resources {
            for v in verbs {
                out.insert((group.to_owned(), (*r).to_owned(), (*v).to_owned(), vec![]));
            }
        }
    };
    add(
        "workloadkeys.io",
        &["workloadapikeys", "secureworkloadcredentials"],
        &["get", "list", "watch", "patch", "update"],
    );
    add(
        "workloadkeys.io",
        &["workloadapikeys/status", "secureworkloadcredentials/status"],
        &["get", "patch", "update"],
    );
    add("workloadkeys.io", &["workloadapikeys/finalizers", "secureworkloadcredentials/finalizers"], &["update"]);
    add("", &["secrets"], &["get", "list", "watch", "create", "patch", "update", "delete"]);
    add("events.k8s.io", &["events"], &["create", "patch"]);
    add("", &["events"], &["create", "patch"]);
    add("", &["namespaces"], &["get"]);
    out
}

#[test]
fn rendered_rbac_has_no_wildcards_and_exactly_the_rules_the_operator_needs() {
    for case in VALID_CASES {
        let docs = render(case);
        for role in all_of(&docs, "Role").into_iter().chain(all_of(&docs, "ClusterRole")) {
            let what = format!("{} {} ({})", role["kind"], role["metadata"]["name"], case.name);
            for rule in role["rules"].as_array().unwrap() {
                assert!(rule.get("nonResourceURLs").is_none(), "{what}: nonResourceURLs");
                for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                    for item in rule[field].as_array().into_iter().flatten() {
                        assert!(!item.as_str().unwrap().contains('*'), "{what}: wildcard in {field}: {rule}");
                    }
                }
                assert!(rule["verbs"].as_array().is_some_and(|v| !v.is_empty()), "{what}: verbs");
                let risky = ["escalate", "bind", "impersonate", "deletecollection"];
                if role["metadata"]["name"] == FULLNAME {
                    for v in rule["verbs"].as_array().unwrap() {
                        assert!(!risky.contains(&v.as_str().unwrap()), "{what}: {v}");
                    }
                }
            }
        }
    }

    // The operator's own rules: exactly these, cluster-wide or in the one watched namespace.
    let docs = render(&DEFAULT);
    assert_eq!(grants(find(&docs, "ClusterRole", FULLNAME).unwrap()), expected_operator_grants());
    let docs = render(&ONE_NAMESPACE);
    assert_eq!(grants(find(&docs, "Role", FULLNAME).unwrap()), expected_operator_grants());

    // Leader election: create any Lease (a create has no name to restrict), touch only its own, in its namespace.
    let docs = render(&DEFAULT);
    let lease_role = find(&docs, "Role", &format!("{FULLNAME}-leader-election")).unwrap();
    assert_eq!(lease_role["metadata"]["namespace"], NAMESPACE);
    let lease = |v: &str, names: &[&str]| {
        (
            "coordination.k8s.io".to_owned(),
            "leases".to_owned(),
            v.to_owned(),
            names.iter().map(|n| (*n).to_owned()).collect(),
        )
    };
    let expected = BTreeSet::from([
        lease("create", &[]),
        lease("get", &[FULLNAME]),
        lease("update", &[FULLNAME]),
        lease("patch", &[FULLNAME]),
    ]);
    assert_eq!(grants(lease_role), expected);
}
