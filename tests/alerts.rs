//! The chart's alert rules and Grafana dashboard, checked by the tools that consume them: promtool (built from
//! github.com/prometheus/prometheus by `scripts/prometheus-binaries`) tests the rules and parses every dashboard
//! query; the dashboard's metrics are compared with a real scrape of the operator; a real Prometheus scrapes the
//! operator on the test control plane with the rules loaded, and the provider and key alerts fire when the
//! simulator refuses the provider's admin key, and resolve once it is fixed.
#![cfg(feature = "sim")]

mod support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use kube::api::PostParams;
use serde_json::Value;
use support::{
    eventually, put_secret, repo_root,
    sim_env::{self, ADMIN_SECRET, TREND_PROVIDER},
};
use workload_key_operator::{
    api::WorkloadApiKey,
    controller::{
        metrics::{ErrorLabels, Metrics, NamespaceLabels, ReconcileLabels},
        workload_api_key::SECRET_KEY,
    },
};

const METRIC_PREFIX: &str = "workload_key_operator_";

/// promtool and prometheus, built once per machine (cached by version).
fn prometheus_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/prometheus-binaries"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/prometheus-binaries");
        assert!(out.status.success(), "scripts/prometheus-binaries failed (it needs Go and the Go module proxy)");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

fn promtool(args: &[&str], cwd: &Path) -> String {
    let out = Command::new(prometheus_bin_dir().join("promtool")).args(args).current_dir(cwd).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn chart_file(name: &str) -> PathBuf {
    repo_root().join("charts/workload-key-operator/files").join(name)
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(chart_file("dashboard.json")).unwrap()).expect("dashboard JSON")
}

/// Every panel of the dashboard (rows' nested panels included).
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// A dashboard query as Prometheus sees it: Grafana's variables replaced by what they stand for.
fn as_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m").replace("$namespace", ".*")
}

fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find(METRIC_PREFIX) {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// The sample names a scrape can hold, from its `# TYPE` lines (counters as `_total`, histograms as `_bucket`,
/// `_sum` and `_count`): a family with no sample yet still counts.
fn exported_samples(scrape: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in scrape.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
        match kind {
            "counter" => {
                out.insert(format!("{}_total", name.trim_end_matches("_total")));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                out.insert(name.to_owned());
            }
        }
    }
    out
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let root = repo_root();
    let checked = promtool(&["check", "rules", chart_file("alerts.yaml").to_str().unwrap()], &root);
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "rules_test.yaml"], &root.join("tests/alerts"));
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert of the file is exercised by the unit tests, and each has what the runbook section needs.
    let rules: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(chart_file("alerts.yaml")).unwrap()).unwrap();
    let tests = std::fs::read_to_string(root.join("tests/alerts/rules_test.yaml")).unwrap();
    let operations = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    for rule in rules["groups"][0]["rules"].as_sequence().unwrap() {
        let alert = rule["alert"].as_str().unwrap();
        assert!(tests.contains(&format!("alertname: {alert}")), "{alert} has no promtool unit test");
        assert!(rule["labels"]["severity"].as_str().is_some(), "{alert} has a severity");
        for annotation in ["summary", "description", "runbook_url"] {
            assert!(rule["annotations"][annotation].as_str().is_some(), "{alert} has {annotation}");
        }
        let anchor = format!("docs/operations.md#{}", alert.to_lowercase());
        assert_eq!(rule["annotations"]["runbook_url"].as_str(), Some(anchor.as_str()));
        assert!(operations.contains(&format!("### {alert}")), "docs/operations.md has a section {alert}");
    }
}

#[test]
fn the_chart_renders_the_same_rules_and_dashboard() {
    let chart = repo_root().join("charts/workload-key-operator");
    let helm = |args: &[&str]| {
        let out = Command::new(support::helm_bin()).arg("template").arg("wko").arg(&chart).args(args).output().unwrap();
        assert!(out.status.success(), "helm template {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let default = helm(&[]);
    assert!(!default.contains("kind: PrometheusRule") && !default.contains("grafana_dashboard"), "off by default");
    let rendered = helm(&[
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "prometheusRule.labels.release=kps",
        "--set",
        "prometheusRule.expiringSoonSeconds=86400",
        "--set",
        "prometheusRule.runbookBaseUrl=https://docs.example/operations.md",
        "--set",
        "grafanaDashboard.enabled=true",
    ]);
    let docs: Vec<serde_norway::Value> = rendered
        .split("\n---")
        .filter_map(|d| serde_norway::from_str(d).ok())
        .filter(|d: &serde_norway::Value| !d.is_null())
        .collect();
    let rule = docs.iter().find(|d| d["kind"].as_str() == Some("PrometheusRule")).expect("a PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"].as_str(), Some("kps"));
    // The spec is the rules file with the window and the runbook base substituted, and still valid rules.
    let spec = serde_norway::to_string(&rule["spec"]).unwrap();
    assert!(spec.contains("time() < 86400)") && !spec.contains("259200"), "{spec}");
    assert!(spec.contains("https://docs.example/operations.md#workloadkeynotready"), "{spec}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rendered.yaml"), &spec).unwrap();
    let checked = promtool(&["check", "rules", "rendered.yaml"], dir.path());
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let config_map = docs
        .iter()
        .find(|d| {
            d["kind"].as_str() == Some("ConfigMap")
                && d["metadata"]["labels"]["grafana_dashboard"].as_str() == Some("1")
        })
        .expect("the dashboard ConfigMap, labelled for Grafana's sidecar");
    let json = config_map["data"]["workload-key-operator.json"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(json).unwrap(), dashboard(), "the ConfigMap holds files/dashboard.json");
}

/// What Grafana needs of a dashboard to load it as is (its JSON model, schemaVersion 39): checked offline.
#[test]
fn the_dashboard_is_a_complete_grafana_model() {
    let d = dashboard();
    assert_eq!(d["uid"], "workload-key-operator");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "a schemaVersion Grafana 9+ loads without migration");
    let variables = d["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus")
    );
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "panel ids are unique ({title})");
        assert!(!title.is_empty(), "every panel has a title");
        let grid = &p["gridPos"];
        for k in ["h", "w", "x", "y"] {
            assert!(grid[k].as_u64().is_some(), "{title}: gridPos.{k}");
        }
        assert!(grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24, "{title} fits the 24-column grid");
        let kind = p["type"].as_str().unwrap();
        assert!(["row", "stat", "table", "timeseries", "bargauge"].contains(&kind), "{title}: a built-in panel type");
        if kind == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title} uses the datasource variable");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has a query");
        for t in targets {
            assert!(t["refId"].as_str().is_some() && t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_parse_and_use_only_metrics_the_operator_exports() {
    // Every query through promtool, as a recording rule.
    let d = dashboard();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut used = BTreeSet::new();
    for (i, p) in panels(&d).into_iter().enumerate() {
        for (j, t) in p["targets"].as_array().into_iter().flatten().enumerate() {
            let expr = as_promql(t["expr"].as_str().unwrap());
            used.extend(metric_names(&expr));
            rules.push_str(&format!(
                "      - record: dashboard:panel_{i}_{j}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            ));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard-rules.yaml"), &rules).unwrap();
    let checked = promtool(&["check", "rules", "dashboard-rules.yaml"], dir.path());
    assert!(checked.contains("SUCCESS"), "{checked}");

    // ... and the alert rules' metrics, against what a real operator serves.
    let alerts = std::fs::read_to_string(chart_file("alerts.yaml")).unwrap();
    used.extend(metric_names(&alerts));
    let env = sim_env::Env::start("dash").await;
    let api = env.ns.api::<WorkloadApiKey>();
    api.create(&PostParams::default(), &sim_env::wak("dash", sim_env::wak_spec("dashboard"))).await.unwrap();
    support::wait_condition(&api, "dash", "Ready", "True", "Ready", Duration::from_secs(60)).await;
    let scrape = env.op.metrics().await;
    let mut exported = exported_samples(&scrape);
    // A labelled family shows in a scrape only once it has a sample; those that need a rare event (an error, a
    // deferral, an incomplete rollout, a wait for the rate limit) come from the operator's own registry, given
    // one sample each.
    let registry = Metrics::default();
    let (kind, namespace) = ("WorkloadApiKey".to_owned(), "team-a".to_owned());
    registry
        .reconcile_errors
        .get_or_create(&ErrorLabels { kind: kind.clone(), reason: "VendorUnavailable".into() })
        .inc();
    registry.reconciles_deferred.get_or_create(&ReconcileLabels { kind: kind.clone() }).inc();
    registry.rollouts_incomplete.get_or_create(&NamespaceLabels { kind, namespace }).inc();
    registry.record_rate_limit_wait("trend", "https://dsm.example:4119", 0.5);
    exported.extend(exported_samples(&registry.render()));
    let missing: Vec<&String> = used.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(missing.is_empty(), "used but not exported: {missing:?}\nexported: {exported:?}");
    assert!(used.len() >= 12, "the dashboard and rules use the operator's metrics: {used:?}");
}

struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// A real Prometheus on loopback scraping `target` every second, with the chart's rules (their `for:` cut to
    /// `for_`) evaluated every second.
    fn start(target: &str, for_: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rules = std::fs::read_to_string(chart_file("alerts.yaml")).unwrap();
        let rules: String = rules
            .lines()
            .map(|l| if l.trim_start().starts_with("for: ") { format!("        for: {for_}") } else { l.to_owned() })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.path().join("alerts.yaml"), rules).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yaml\n\
             scrape_configs:\n  - job_name: workload-key-operator\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = support::operator::free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(prometheus_bin_dir().join("prometheus"))
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Self { child, url: format!("http://127.0.0.1:{port}"), _dir: dir }
    }

    /// `(alertname, kind, name)` of every firing alert.
    async fn firing(&self) -> Option<BTreeSet<(String, String, String)>> {
        let body: Value = reqwest::get(format!("{}/api/v1/alerts", self.url)).await.ok()?.json().await.ok()?;
        let alerts = body["data"]["alerts"].as_array()?;
        Some(
            alerts
                .iter()
                .filter(|a| a["state"] == "firing")
                .map(|a| {
                    let l = &a["labels"];
                    let s = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
                    (s("alertname"), s("kind"), s("name"))
                })
                .collect(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_fires_and_resolves_provider_and_key_alerts() {
    workload_key_operator::clients::install_crypto_provider();
    let env = sim_env::Env::start("prom").await;
    let api = env.ns.api::<WorkloadApiKey>();
    api.create(&PostParams::default(), &sim_env::wak("watched", sim_env::wak_spec("alerts"))).await.unwrap();
    support::wait_condition(&api, "watched", "Ready", "True", "Ready", Duration::from_secs(60)).await;
    let prometheus = Prometheus::start(&format!("127.0.0.1:{}", env.op.metrics_port), "5s");
    let provider = ("WorkloadKeyProviderNotReady".to_owned(), "KeyProvider".to_owned(), TREND_PROVIDER.to_owned());
    let key = ("WorkloadKeyNotReady".to_owned(), "WorkloadApiKey".to_owned(), "watched".to_owned());
    // Healthy: scraped, with a leader, and nothing firing.
    eventually(Duration::from_secs(60), "Prometheus scraping the operator, nothing firing", || async {
        let up: Value = reqwest::get(format!("{}/api/v1/query?query=workload_key_operator_leader", prometheus.url))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let scraped = up["data"]["result"].as_array().is_some_and(|r| !r.is_empty());
        (scraped && prometheus.firing().await?.is_empty()).then_some(())
    })
    .await;

    // The simulator refuses the provider's admin key.
    put_secret(&env.ns, ADMIN_SECRET, &[(SECRET_KEY, "1:refused-by-the-simulator")]).await;
    let fired = eventually(Duration::from_secs(120), "provider and key alerts firing", || async {
        let firing = prometheus.firing().await?;
        (firing.contains(&provider) && firing.contains(&key)).then_some(firing)
    })
    .await;
    eprintln!("firing: {fired:?}");

    // Fixed: both resolve.
    put_secret(&env.ns, ADMIN_SECRET, &[(SECRET_KEY, env.sim.info.trend_admin_api_key().as_str())]).await;
    eventually(Duration::from_secs(120), "provider and key alerts resolved", || async {
        let firing = prometheus.firing().await?;
        (!firing.contains(&provider) && !firing.contains(&key)).then_some(())
    })
    .await;
}
