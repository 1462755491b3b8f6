//! `helm lint` and `helm template`: default and non-default values render as asked, invalid ones are refused.

use std::{collections::BTreeSet, process::Command};

use serde_json::json;

use crate::{
    cases::{
        BRING_YOUR_OWN, DEFAULT, DIGEST, FULLNAME, HARDENED, HOST_NETWORK, NAMESPACE, NO_LEADER_ELECTION,
        SERVICE_MONITOR, TWO_NAMESPACES, VALID_CASES, all_of, chart_app_version, container, deployment, env_of, find,
        kinds, render, template_output,
    },
    chart_dir, helm, run, text,
};

#[test]
fn helm_lint_is_clean_for_default_and_non_default_values() {
    let chart = chart_dir();
    for case in VALID_CASES {
        let mut args = vec!["lint", "--strict", chart.to_str().unwrap(), "--namespace", NAMESPACE];
        args.extend_from_slice(case.args);
        let out = helm(&args);
        assert!(out.contains("0 chart(s) failed"), "helm lint ({}):\n{out}", case.name);
        assert!(!out.contains("[WARNING]") && !out.contains("[ERROR]"), "helm lint ({}):\n{out}", case.name);
    }
}

#[test]
fn default_values_render_a_restricted_cluster_wide_operator_with_leader_election() {
    let docs = render(&DEFAULT);
    let expected: BTreeSet<String> = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "CustomResourceDefinition",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    .map(String::from)
    .into();
    assert_eq!(kinds(&docs), expected);
    // The admission policies: the finalizer guard and one per provider kind, each with its binding.
    for suffix in ["finalizer", "clusterkeyprovider-policy", "keyprovider-policy"] {
        let name = format!("{FULLNAME}-{suffix}");
        let policy = find(&docs, "ValidatingAdmissionPolicy", &name).unwrap_or_else(|| panic!("{name}"));
        let failure = if suffix == "finalizer" { "Fail" } else { "Ignore" };
        assert_eq!(policy["spec"]["failurePolicy"], failure, "{name}: the runtime refuses the same");
        let binding =
            find(&docs, "ValidatingAdmissionPolicyBinding", &name).unwrap_or_else(|| panic!("{name} binding"));
        assert_eq!(binding["spec"]["policyName"], name.as_str());
        assert_eq!(binding["spec"]["validationActions"], serde_json::json!(["Deny"]));
    }
    let guard = find(&docs, "ValidatingAdmissionPolicy", &format!("{FULLNAME}-finalizer")).unwrap();
    let exempt = guard["spec"]["matchConditions"][0]["expression"].as_str().unwrap();
    assert!(exempt.contains(r#"["system:masters"]"#), "{exempt}");
    for doc in &docs {
        let cluster_scoped = [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ];
        if !cluster_scoped.contains(&doc["kind"].as_str().unwrap()) {
            assert_eq!(doc["metadata"]["namespace"], NAMESPACE, "{} is in the release namespace", doc["kind"]);
        }
    }

    let deploy = deployment(&docs);
    assert_eq!(deploy["spec"]["replicas"], 1);
    assert_eq!(deploy["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 0, "leader election: no surge");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], FULLNAME);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let c = container(&docs);
    assert_eq!(c["image"], format!("workload-key-operator:{}", chart_app_version()), "tag defaults to appVersion");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(sc["runAsUser"].as_i64().unwrap() >= 10000);
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(c["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "http-metrics"}));
    assert_eq!(c["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "http-metrics"}));
    assert!(c["resources"]["requests"]["memory"].is_string() && c["resources"]["limits"]["memory"].is_string());

    let env = env_of(c);
    assert_eq!(env["WKO_METRICS_ADDR"], "0.0.0.0:8080");
    assert_eq!(env["WKO_LOG_LEVEL"], "info");
    assert_eq!(env["WKO_LOG_FORMAT"], "json");
    assert_eq!(env["WKO_LEADER_ELECTION"], "true");
    assert_eq!(env["WKO_LEASE_NAME"], FULLNAME);
    assert_eq!(env["WKO_LEASE_NAMESPACE"], json!({"fieldRef": {"fieldPath": "metadata.namespace"}}));
    assert_eq!(env["POD_NAME"], json!({"fieldRef": {"fieldPath": "metadata.name"}}));
    assert!(!env.contains_key("WKO_WATCH_NAMESPACE"), "all namespaces by default");
    assert_eq!(env["WKO_CLUSTER_RESOURCE_NAMESPACE"], NAMESPACE, "the release namespace by default");
    assert!(!env.contains_key("WKO_SECRET_HASH_KEY"));

    let svc = find(&docs, "Service", &format!("{FULLNAME}-metrics")).expect("metrics Service");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http-metrics");
    assert_eq!(svc["spec"]["selector"], deploy["spec"]["selector"]["matchLabels"]);
    let pdb = find(&docs, "PodDisruptionBudget", FULLNAME).unwrap();
    assert_eq!(pdb["spec"]["maxUnavailable"], 1, "never blocks a drain with one replica");
    let netpol = find(&docs, "NetworkPolicy", FULLNAME).unwrap();
    assert_eq!(netpol["spec"]["policyTypes"], json!(["Ingress"]));
}

#[test]
fn every_env_var_the_chart_sets_is_a_flag_of_the_operator() {
    let help = run(Command::new(env!("CARGO_BIN_EXE_workload-key-operator")).arg("--help"));
    let help = text(&help.stdout);
    for case in VALID_CASES {
        let docs = render(case);
        for name in env_of(container(&docs)).keys().filter(|n| n.starts_with("WKO_") || *n == "POD_NAME") {
            assert!(help.contains(&format!("[env: {name}")), "{name} ({}) is not an operator flag:\n{help}", case.name);
        }
    }
}

#[test]
fn non_default_values_render_as_asked() {
    // Two namespaces: comma-joined, a Role + RoleBinding in each; cluster-wide only the cluster-scoped ClusterRole.
    let docs = render(&TWO_NAMESPACES);
    let env = env_of(container(&docs));
    assert_eq!(env["WKO_WATCH_NAMESPACE"], "apps,billing");
    assert_eq!(env["WKO_CLUSTER_RESOURCE_NAMESPACE"], NAMESPACE);
    assert_eq!(env["WKO_LOG_FORMAT"], "text");
    assert_eq!(env["WKO_MAX_CONCURRENT_RECONCILES"], "16", "the default bound");
    assert_eq!(env["MALLOC_ARENA_MAX"], "1", "the allocator settings the benchmark measured");
    assert_eq!(env["MALLOC_TRIM_THRESHOLD_"], "131072");
    let defaults = render(&crate::cases::Case { name: "glibc defaults", args: &["--set", "allocator=null"] });
    assert!(!env_of(container(&defaults)).keys().any(|k| k.starts_with("MALLOC_")), "allocator=null: none set");
    for ns in ["apps", "billing"] {
        let in_ns = |kind: &str| {
            all_of(&docs, kind)
                .into_iter()
                .any(|d| d["metadata"]["name"] == FULLNAME && d["metadata"]["namespace"] == ns)
        };
        assert!(in_ns("Role") && in_ns("RoleBinding"), "Role and RoleBinding in {ns}");
    }
    let binding = all_of(&docs, "RoleBinding").into_iter().find(|b| b["metadata"]["name"] == FULLNAME).unwrap();
    assert_eq!(binding["subjects"][0], json!({"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}));
    assert!(find(&docs, "ClusterRole", FULLNAME).is_none(), "no cluster-wide namespaced rules");
    assert!(find(&docs, "ClusterRoleBinding", &format!("{FULLNAME}-cluster")).is_some());
    // Duplicates and empty entries are dropped.
    let docs = render(&crate::cases::Case { name: "duplicates", args: &["--set", "watchNamespaces={apps,,apps,b}"] });
    assert_eq!(env_of(container(&docs))["WKO_WATCH_NAMESPACE"], "apps,b");
    assert_eq!(all_of(&docs, "Role").iter().filter(|r| r["metadata"]["name"] == FULLNAME).count(), 2);

    // ServiceMonitor.
    let docs = render(&SERVICE_MONITOR);
    let sm = find(&docs, "ServiceMonitor", FULLNAME).expect("ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http-metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    let svc = find(&docs, "Service", &format!("{FULLNAME}-metrics")).unwrap();
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v, "the ServiceMonitor selects the metrics Service");
    }

    // Leader election off.
    let docs = render(&NO_LEADER_ELECTION);
    let env = env_of(container(&docs));
    assert_eq!(env["WKO_LEADER_ELECTION"], "false");
    assert!(!env.keys().any(|k| k.starts_with("WKO_LEASE_")));
    assert!(find(&docs, "Role", &format!("{FULLNAME}-leader-election")).is_none());
    assert!(deployment(&docs)["spec"].get("strategy").is_none());

    // The groups that may remove the operator's finalizer from a resource recording a live key.
    let args = &["--set-json", r#"admissionPolicy.finalizerOverrideGroups=["platform:key-admins"]"#];
    let docs = render(&crate::cases::Case { name: "finalizer override groups", args });
    let guard = find(&docs, "ValidatingAdmissionPolicy", &format!("{FULLNAME}-finalizer")).unwrap();
    let exempt = guard["spec"]["matchConditions"][0]["expression"].as_str().unwrap();
    assert!(exempt.contains(r#"["platform:key-admins"]"#) && !exempt.contains("system:masters"), "{exempt}");

    // Bring your own RBAC, CRDs and ServiceAccount.
    let docs = render(&BRING_YOUR_OWN);
    assert_eq!(kinds(&docs), BTreeSet::from(["Deployment".to_owned()]));
    assert_eq!(deployment(&docs)["spec"]["template"]["spec"]["serviceAccountName"], "platform-operator");

    // Digest, replicas, scheduling, extra env, hash key, PDB, NetworkPolicy peers.
    let docs = render(&HARDENED);
    let deploy = deployment(&docs);
    let pod = &deploy["spec"]["template"]["spec"];
    let c = container(&docs);
    assert_eq!(c["image"], format!("registry.example.com/platform/workload-key-operator@{DIGEST}"));
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert!(pod["affinity"]["podAntiAffinity"].is_object());
    assert_eq!(c["resources"]["limits"]["memory"], "256Mi");
    let env = env_of(c);
    assert_eq!(env["WKO_LOG_LEVEL"], "debug");
    assert_eq!(env["WKO_LEASE_NAME"], "wko-leader");
    assert_eq!(env["WKO_LEASE_DURATION_SECONDS"], "30");
    assert_eq!(env["WKO_CLUSTER_RESOURCE_NAMESPACE"], "platform-keys");
    assert_eq!(env["WKO_SECRET_HASH_KEY"], json!({"secretKeyRef": {"name": "wko-hash-key", "key": "hash-key"}}));
    assert_eq!(env["HTTPS_PROXY"], "http://proxy:3128");
    let lease_role = find(&docs, "Role", &format!("{FULLNAME}-leader-election")).unwrap();
    assert_eq!(lease_role["rules"][1]["resourceNames"], json!(["wko-leader"]));
    assert_eq!(
        find(&docs, "ServiceAccount", FULLNAME).unwrap()["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/wko"
    );
    let pdb = find(&docs, "PodDisruptionBudget", FULLNAME).unwrap();
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    assert!(pdb["spec"].get("maxUnavailable").is_none());
    let netpol = find(&docs, "NetworkPolicy", FULLNAME).unwrap();
    assert_eq!(
        netpol["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );

    // Host network (a node without a pod network): probes on 127.0.0.1, the metrics port on the node.
    let docs = render(&HOST_NETWORK);
    let pod = &deployment(&docs)["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    let c = container(&docs);
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["host"], "127.0.0.1", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "http-metrics", "{probe}");
    }
    assert_eq!(c["ports"][0]["containerPort"], 18080);
    assert_eq!(env_of(c)["WKO_METRICS_ADDR"], "127.0.0.1:18080");
    // Off by default: no host network, probes on the pod IP.
    let docs = render(&DEFAULT);
    assert!(deployment(&docs)["spec"]["template"]["spec"].get("hostNetwork").is_none());
    assert!(container(&docs)["readinessProbe"]["httpGet"].get("host").is_none());
}

#[test]
fn invalid_values_are_refused_with_a_reason() {
    for (args, reason) in [
        (&["--set", "replicaCount=2", "--set", "leaderElection.enabled=false"][..], "needs leaderElection.enabled"),
        (&["--set", "logFormat=xml"][..], "logFormat must be text or json"),
        (&["--set", "serviceMonitor.enabled=true", "--set", "service.enabled=false"][..], "needs service.enabled"),
        (&["--set", "serviceAccount.create=false"][..], "serviceAccount.name is required"),
    ] {
        let out = template_output(args);
        assert!(!out.status.success(), "{args:?} should be refused");
        assert!(text(&out.stderr).contains(reason), "{args:?}: {}", text(&out.stderr));
    }
}

#[test]
fn chart_app_version_is_the_crate_version() {
    assert_eq!(chart_app_version(), env!("CARGO_PKG_VERSION"), "Chart.yaml appVersion follows Cargo.toml");
}
