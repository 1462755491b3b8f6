//! RBAC: no wildcards, and exactly the rules the operator needs.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::cases::{Case, DEFAULT, FULLNAME, NAMESPACE, TWO_NAMESPACES, VALID_CASES, all_of, find, render};

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

type Grants = BTreeSet<(String, String, String, Vec<String>)>;

fn grant_set(rules: &[(&str, &[&str], &[&str])]) -> Grants {
    let mut out = BTreeSet::new();
    for (group, resources, verbs) in rules {
        for r in *resources {
            for v in *verbs {
                out.insert(((*group).to_owned(), (*r).to_owned(), (*v).to_owned(), vec![]));
            }
        }
    }
    out
}

/// What the operator calls in every namespace it serves (src/controller): resources and KeyProviders are watched,
/// read fresh and get finalizers by patch; status by server-side apply; owner references with blockOwnerDeletion
/// need update on the owners' /finalizers; Secrets are watched by metadata, read, server-side applied (patch, plus
/// create: an apply that creates is authorized as a create too), held with a finalizer (patch) and deleted after a
/// rename; Events are events.k8s.io/v1, created or patched as a series; the workloads of
/// `spec.secret.rolloutRestartTargets` are restarted by a patch, read, and watched by metadata. Nothing else: no
/// update on Secrets or resources, no core Events, no ReplicaSets or pods.
fn namespaced_grants() -> Grants {
    grant_set(&[
        (
            "workloadkeys.io",
            &["workloadapikeys", "secureworkloadcredentials", "keyproviders"],
            &["get", "list", "watch", "patch"],
        ),
        (
            "workloadkeys.io",
            &["workloadapikeys/status", "secureworkloadcredentials/status", "keyproviders/status"],
            &["patch"],
        ),
        ("workloadkeys.io", &["workloadapikeys/finalizers", "secureworkloadcredentials/finalizers"], &["update"]),
        ("", &["secrets"], &["get", "list", "watch", "create", "patch", "delete"]),
        ("events.k8s.io", &["events"], &["create", "patch"]),
        ("apps", &["deployments", "statefulsets", "daemonsets"], &["get", "list", "watch", "patch"]),
    ])
}

/// Cluster-scoped: ClusterKeyProviders (watch, fresh read, finalizer, status) and namespaces (labels, watched by
/// metadata; terminating or not).
fn cluster_grants() -> Grants {
    grant_set(&[
        ("workloadkeys.io", &["clusterkeyproviders"], &["get", "list", "watch", "patch"]),
        ("workloadkeys.io", &["clusterkeyproviders/status"], &["patch"]),
        ("", &["namespaces"], &["get", "list", "watch"]),
    ])
}

/// The cluster-resource namespace: the Secrets ClusterKeyProviders name (watched, read, held), and a list of the
/// KeyProviders there before a Secret's finalizer is released.
fn cluster_resource_grants() -> Grants {
    grant_set(&[
        ("", &["secrets"], &["get", "list", "watch", "patch"]),
        ("workloadkeys.io", &["keyproviders"], &["list"]),
    ])
}

fn event_grants() -> Grants {
    grant_set(&[("events.k8s.io", &["events"], &["create", "patch"])])
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

    // The operator's own rules, cluster-wide: one ClusterRole with exactly the namespaced and cluster-scoped ones,
    // bound to the ServiceAccount; no other ClusterRoleBinding.
    let docs = render(&DEFAULT);
    let all: Grants = namespaced_grants().union(&cluster_grants()).cloned().collect();
    assert_eq!(grants(find(&docs, "ClusterRole", FULLNAME).unwrap()), all);
    assert_eq!(all_of(&docs, "ClusterRoleBinding").len(), 1);
    assert_eq!(all_of(&docs, "Role").len(), 1, "only leader election besides the ClusterRole");

    // Two namespaces: a Role in each with the namespaced rules, a ClusterRole with the cluster-scoped ones only, a
    // Role for the cluster-resource namespace (the release namespace by default) and one for Events in `default`.
    let docs = render(&TWO_NAMESPACES);
    let sa = json!({"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE});
    let roles: Vec<&Value> = all_of(&docs, "Role").into_iter().filter(|r| r["metadata"]["name"] == FULLNAME).collect();
    let namespaces: BTreeSet<&str> = roles.iter().map(|r| r["metadata"]["namespace"].as_str().unwrap()).collect();
    assert_eq!(namespaces, BTreeSet::from(["apps", "billing"]));
    for role in roles {
        assert_eq!(grants(role), namespaced_grants());
        let ns = role["metadata"]["namespace"].as_str().unwrap();
        let binding = all_of(&docs, "RoleBinding")
            .into_iter()
            .find(|b| b["metadata"]["name"] == FULLNAME && b["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("RoleBinding in {ns}"));
        assert_eq!(binding["roleRef"]["name"], FULLNAME);
        assert_eq!(binding["subjects"], json!([sa]));
    }
    assert!(find(&docs, "ClusterRole", FULLNAME).is_none(), "no cluster-wide namespaced rules");
    let cluster = find(&docs, "ClusterRole", &format!("{FULLNAME}-cluster")).expect("cluster-scoped ClusterRole");
    assert_eq!(grants(cluster), cluster_grants());
    let crb: Vec<&Value> = all_of(&docs, "ClusterRoleBinding");
    assert_eq!(crb.len(), 1);
    assert_eq!(crb[0]["roleRef"]["name"], format!("{FULLNAME}-cluster"));
    assert_eq!(crb[0]["subjects"], json!([sa]));
    let crr = find(&docs, "Role", &format!("{FULLNAME}-cluster-resources")).expect("cluster-resource Role");
    assert_eq!(crr["metadata"]["namespace"], NAMESPACE);
    assert_eq!(grants(crr), cluster_resource_grants());
    let events = find(&docs, "Role", &format!("{FULLNAME}-cluster-events")).expect("Events of cluster-scoped objects");
    assert_eq!(events["metadata"]["namespace"], "default");
    assert_eq!(grants(events), event_grants());
    for name in ["cluster-resources", "cluster-events"] {
        let b = find(&docs, "RoleBinding", &format!("{FULLNAME}-{name}")).unwrap();
        assert_eq!(b["roleRef"]["name"], format!("{FULLNAME}-{name}"));
        assert_eq!(b["subjects"], json!([sa]));
    }

    // A served namespace needs no extra Role: the cluster-resource namespace and `default` among the watched ones.
    let docs = render(&Case {
        name: "serving the cluster-resource namespace and default",
        args: &["--set", "watchNamespaces={keys,default}", "--set", "clusterResourceNamespace=keys"],
    });
    assert!(find(&docs, "Role", &format!("{FULLNAME}-cluster-resources")).is_none());
    assert!(find(&docs, "Role", &format!("{FULLNAME}-cluster-events")).is_none());
    assert_eq!(all_of(&docs, "Role").iter().filter(|r| r["metadata"]["name"] == FULLNAME).count(), 2);

    // Elsewhere: the cluster-resource Role follows clusterResourceNamespace.
    let docs = render(&Case {
        name: "cluster-resource namespace",
        args: &["--set", "watchNamespaces={apps}", "--set", "clusterResourceNamespace=platform-keys"],
    });
    let crr = find(&docs, "Role", &format!("{FULLNAME}-cluster-resources")).unwrap();
    assert_eq!(crr["metadata"]["namespace"], "platform-keys");

    // Leader election: create any Lease (a create has no name to restrict), touch only its own, in its namespace; a
    // standby lists and watches it by name (a `metadata.name` field selector) to see it released.
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
        lease("list", &[FULLNAME]),
        lease("watch", &[FULLNAME]),
        lease("update", &[FULLNAME]),
        lease("patch", &[FULLNAME]),
    ]);
    assert_eq!(grants(lease_role), expected);
}

#[test]
fn aggregated_roles_give_app_teams_the_resources_and_never_providers() {
    let docs = render(&DEFAULT);
    let label =
        |role: &Value, key: &str| role["metadata"]["labels"][format!("rbac.authorization.k8s.io/{key}")].clone();

    let edit = find(&docs, "ClusterRole", &format!("{FULLNAME}-edit")).expect("the -edit ClusterRole");
    assert_eq!(label(edit, "aggregate-to-edit"), "true");
    assert_eq!(label(edit, "aggregate-to-admin"), "true");
    assert!(label(edit, "aggregate-to-view").is_null(), "writes are not for view");
    assert_eq!(
        grants(edit),
        grant_set(&[(
            "workloadkeys.io",
            &["workloadapikeys", "secureworkloadcredentials"],
            &["create", "update", "patch", "delete", "get", "list", "watch",]
        )])
    );
    // Creating a provider is as powerful as reading the Secrets it names: never in edit, in no verb.
    for (_, resource, _, _) in grants(edit) {
        assert!(!resource.contains("keyprovider"), "edit grants {resource}");
    }

    let view = find(&docs, "ClusterRole", &format!("{FULLNAME}-view")).expect("the -view ClusterRole");
    assert_eq!(label(view, "aggregate-to-view"), "true");
    assert_eq!(
        grants(view),
        grant_set(&[(
            "workloadkeys.io",
            &["workloadapikeys", "secureworkloadcredentials", "keyproviders", "clusterkeyproviders"],
            &["get", "list", "watch"]
        )])
    );
    // No aggregated role touches Secrets or anything outside the group.
    for role in [edit, view] {
        assert!(grants(role).iter().all(|(g, _, _, _)| g == "workloadkeys.io"));
    }

    // Off with a value; and rbac.create=false makes no role at all.
    let docs = render(&Case { name: "no aggregated roles", args: &["--set", "rbac.aggregateToDefaultRoles=false"] });
    assert!(find(&docs, "ClusterRole", &format!("{FULLNAME}-edit")).is_none());
    assert!(find(&docs, "ClusterRole", &format!("{FULLNAME}-view")).is_none());
    assert!(find(&docs, "ClusterRole", FULLNAME).is_some());
}
